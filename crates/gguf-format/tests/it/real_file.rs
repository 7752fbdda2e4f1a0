//! Gemma 3 270M Q4_K_M as written by llama.cpp: every key and tensor parses, the writer
//! reproduces the file byte for byte, and truncating it anywhere is an error.

use std::collections::BTreeMap;

use gguf_format::{GgmlType, Gguf, GgufFile, GgufWriter, Value};
use sha2::{Digest, Sha256};

use crate::files;

/// Visits every element of a value; returns how many scalars it holds.
fn count(v: Value<'_>) -> usize {
    match v {
        Value::Array(a) => a.iter().map(count).sum(),
        _ => 1,
    }
}

#[test]
fn every_key_and_tensor_parses() {
    let file = GgufFile::open(files::gemma3_270m()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset(), 6_525_120);
    assert_eq!(file.metadata_len(), 33);
    assert_eq!(file.tensor_count(), 236);

    let scalars: usize = file.metadata().map(|(_, v)| count(v)).sum();
    assert_eq!(scalars, 3 * 262_144 + 4 + 29);
    assert_eq!(file.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(file.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(file.get_u32("gemma3.embedding_length").unwrap(), 640);
    assert_eq!(file.get_f32("gemma3.rope.freq_base").unwrap(), 1_000_000.0);
    assert!(file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    let tokens: Vec<&str> = file
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .collect();
    assert_eq!(tokens.len(), 262_144);
    assert_eq!(&tokens[..5], ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]);
    assert_eq!(
        file.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        262_144
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type").unwrap()[..3],
        [3, 3, 3]
    );

    let mut histogram = BTreeMap::new();
    // llama.cpp's reader insists on dense offsets: each tensor starts where the previous one's
    // padded data ends. Checking that confirms the data offset is the one llama.cpp computes.
    let mut expected_offset = file.data_offset();
    for t in file.tensors() {
        *histogram.entry(t.ggml_type.name()).or_insert(0) += 1;
        assert_eq!(t.offset, expected_offset, "{}", t.name);
        assert_eq!(Some(t.data.len() as u64), t.ggml_type.tensor_bytes(t.shape));
        expected_offset += (t.data.len() as u64).next_multiple_of(32);
    }
    assert_eq!(expected_offset, file.bytes().len() as u64);
    let want = BTreeMap::from([
        ("F32", 109),
        ("Q4_K", 27),
        ("Q5_0", 81),
        ("Q6_K", 9),
        ("Q8_0", 10),
    ]);
    assert_eq!(histogram, want);

    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.shape, embd.ggml_type),
        (&[640, 262_144][..], GgmlType::Q8_0)
    );
    assert_eq!(
        file.tensor("blk.0.attn_k.weight").unwrap().ggml_type,
        GgmlType::Q5_0
    );
}

/// Rebuilding the file from what the reader reports, streamed through the writer, yields
/// llama.cpp's exact bytes (checked by hash, so nothing is held in memory twice).
#[test]
fn writer_reproduces_the_file_byte_for_byte() {
    let file = GgufFile::open(files::gemma3_270m()).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        w.add_metadata(key, value.to_owned_value()).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name, t.shape, t.ggml_type).unwrap();
    }
    let layout = w.layout().unwrap();
    assert_eq!(layout.data_offset, file.data_offset());
    assert_eq!(layout.file_len, file.bytes().len() as u64);

    let mut s = w.write_header(Sha256::new()).unwrap();
    for t in file.tensors() {
        // In pieces, as the converter streams large tensors.
        for chunk in t.data.chunks(1 << 20) {
            s.write_tensor_part(chunk).unwrap();
        }
    }
    let digest = hex::encode(s.finish().unwrap().finalize());
    assert_eq!(digest, files::GEMMA3_SHA256);
}

#[test]
fn truncation_anywhere_is_an_error() {
    let file = GgufFile::open(files::gemma3_270m()).unwrap();
    let bytes = file.bytes();
    let header = file.data_offset() as usize;
    let len = bytes.len();
    // 2000 cuts spread over the header (denser at the start, where the small fields are),
    // plus 200 in the data section and the last few bytes.
    let mut cuts: Vec<usize> = (0..1000)
        .chain((0..1000).map(|i| i * header / 1000 + i % 7))
        .collect();
    cuts.extend((0..200).map(|i| header + i * (len - header) / 200 + 13));
    cuts.extend(len - 4..len);
    // Each parse of a long prefix re-reads the vocabulary, so spread the cuts over the cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for k in 0..threads {
            let cuts = &cuts;
            scope.spawn(move || {
                for &cut in cuts.iter().skip(k).step_by(threads) {
                    match Gguf::parse(&bytes[..cut]) {
                        Ok(_) => panic!("parsed when truncated to {cut} of {len} bytes"),
                        Err(e) => {
                            let msg = e.to_string();
                            assert!(!msg.is_empty() && !msg.contains('\n'), "{msg}");
                        }
                    }
                }
            });
        }
    });
}
