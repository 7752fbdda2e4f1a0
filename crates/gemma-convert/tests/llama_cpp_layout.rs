//! Our conversions of the real model against what llama.cpp's converter wrote
//! (`shared/reference/gguf-layout-q8_0.txt`, `quant-blocks.json`) and what `llama-quantize
//! Q4_K_M` wrote (`gguf-layout-q4_k_m.txt`), and the F32/F16/BF16 outputs against each other.

use std::path::PathBuf;

use gemma_convert::{ConvertOptions, EMBEDDINGGEMMA_MODEL_ID, OutType, convert_with};
use gguf_format::{GgmlType, GgufFile, Value};
use model_fetch::testing;

/// `shared/reference`, beside the repository checkout (override: `GGUFEMBED_REFERENCE`).
fn reference(name: &str) -> PathBuf {
    model_fetch::testing::reference_file(name)
}

/// A Python list literal of numbers or simply quoted strings, as the layout file prints them.
fn parse_list(s: &str) -> Vec<String> {
    let inner = s.trim().strip_prefix('[').and_then(|s| s.strip_suffix(']')).expect("list literal");
    if inner.starts_with('\'') {
        inner
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .expect("quoted items")
            .split("', '")
            .map(str::to_owned)
            .collect()
    } else {
        inner.split(", ").map(str::to_owned).collect()
    }
}

/// Renders one of our values the way the layout file does: `TYPE | value`.
fn render(v: &Value<'_>) -> String {
    let scalar = |v: &Value<'_>| -> String {
        match v {
            Value::Str(s) => format!("'{s}'"),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Value::F32(x) => format_py_float(f64::from(*x)),
            Value::U32(x) => x.to_string(),
            Value::I32(x) => x.to_string(),
            other => format!("{other:?}"),
        }
    };
    match v {
        Value::Array(a) => {
            let items: Vec<String> = a.iter().take(5).map(|e| scalar(&e)).collect();
            format!("ARRAY[{}] | len={} first5=[{}]", a.elem_type(), a.len(), items.join(", "))
        }
        other => format!("{} | {}", other.value_type(), scalar(other)),
    }
}

/// Python's `repr(float)` for the values in the layout file (shortest round-trip digits, with
/// `.0` on integers and exponent form below 1e-4).
fn format_py_float(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-4 {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent");
        let exp: i32 = exp.parse().expect("exponent value");
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let s = format!("{x}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// A header number of a layout file (`file_size_bytes: N` ...).
fn layout_header(layout: &str, key: &str) -> u64 {
    let line = layout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in layout"));
    line[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

/// The lines of a `== TITLE` section of a layout file, without comments.
fn layout_section<'a>(layout: &'a str, title: &str) -> Vec<&'a str> {
    layout
        .lines()
        .skip_while(|l| !l.starts_with(title))
        .skip(1)
        .take_while(|l| !l.starts_with("==") && !l.is_empty() && !l.starts_with("tensor type counts"))
        .filter(|l| !l.starts_with('#'))
        .collect()
}

/// File size, data offset, version, alignment, and every tensor in order: name, ggml shape,
/// type, size, offsets.
fn assert_layout(layout: &str, file: &GgufFile) {
    assert_eq!(file.bytes().len() as u64, layout_header(layout, "file_size_bytes:"));
    assert_eq!(
        file.data_offset(),
        layout_header(layout, "tensor_data_offset (absolute file offset of data section start):")
    );
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert!(file.get("general.alignment").is_none());
    let expected_tensors = layout_section(layout, "== TENSORS");
    assert_eq!(expected_tensors.len(), 316);
    assert_eq!(file.tensor_count(), expected_tensors.len());
    for (line, t) in expected_tensors.iter().zip(file.tensors()) {
        let cols: Vec<&str> = line.split(" | ").map(str::trim).collect();
        assert_eq!(cols[1], t.name);
        let shape: Vec<u64> = parse_list(cols[2]).iter().map(|d| d.parse().unwrap()).collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        assert_eq!(cols[3], t.ggml_type.name(), "{}", t.name);
        assert_eq!(cols[4].parse::<usize>().unwrap(), t.data.len(), "{}", t.name);
        assert_eq!(cols[5].parse::<u64>().unwrap(), t.offset - file.data_offset(), "{}", t.name);
        assert_eq!(cols[6].parse::<u64>().unwrap(), t.offset, "{}", t.name);
    }
}

#[test]
fn q8_0_file_matches_llama_cpp_layout_exactly() {
    let layout = std::fs::read_to_string(reference("gguf-layout-q8_0.txt")).expect("reference layout");
    let file = GgufFile::open(testing::gguf(OutType::Q8_0)).expect("our Q8_0 GGUF");
    assert_layout(&layout, &file);

    // Every key, in order, with its type and value (arrays: type, length and first five).
    let expected_kv = layout_section(&layout, "== METADATA");
    assert_eq!(expected_kv.len(), 41);
    let ours: Vec<(String, String)> = file.metadata().map(|(k, v)| (k.to_owned(), render(&v))).collect();
    assert_eq!(ours.len(), expected_kv.len(), "metadata count");
    for (line, (key, rendered)) in expected_kv.iter().zip(&ours) {
        let (ref_key, ref_rest) = line.split_once(" | ").unwrap();
        assert_eq!(key, ref_key, "key order");
        if let Some(arr) = ref_rest.strip_prefix("ARRAY[") {
            // Compare element lists structurally: string quoting in the reference is Python's.
            let (head, first5) = arr.split_once(" first5=").unwrap();
            let (our_head, our_first5) = rendered.strip_prefix("ARRAY[").unwrap().split_once(" first5=").unwrap();
            assert_eq!(our_head, head, "{key}");
            assert_eq!(parse_list(our_first5), parse_list(first5), "{key}");
        } else {
            assert_eq!(rendered, ref_rest, "{key}");
        }
    }
}

/// SHA-256 of the file llama.cpp's `llama_model_quantize` (llama-cpp-python 0.3.36,
/// `LLAMA_FTYPE_MOSTLY_Q4_K_M`, default parameters, no importance matrix) wrote from our F32
/// conversion; our Q4_K_M conversion was byte-identical to it.
const LLAMA_CPP_Q4_K_M_SHA256: &str = "089ffef2f058e9ffbd5088ed95cd75a26fea6fb224747368082f3d7b4d924c22";

#[test]
fn q4_k_m_file_matches_llama_quantize_exactly() {
    use sha2::Digest;
    let layout = std::fs::read_to_string(reference("gguf-layout-q4_k_m.txt")).expect("reference layout");
    let file = GgufFile::open(testing::gguf(OutType::Q4_K_M)).expect("our Q4_K_M GGUF");
    assert_layout(&layout, &file);
    let count = |ty: GgmlType| file.tensors().filter(|t| t.ggml_type == ty).count();
    assert_eq!(
        [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::F32].map(count),
        [134, 13, 12, 12, 145]
    );
    assert_eq!(file.get_u32("general.file_type").unwrap(), 15);

    // The F32 file's keys and values, with the two keys llama-quantize sets moved to the end.
    let f32_file = GgufFile::open(testing::gguf(OutType::F32)).unwrap();
    let mut expected: Vec<&str> = f32_file.metadata().map(|(k, _)| k).collect();
    expected.retain(|k| *k != "general.quantization_version" && *k != "general.file_type");
    expected.extend(["general.quantization_version", "general.file_type"]);
    assert_eq!(file.metadata().map(|(k, _)| k).collect::<Vec<_>>(), expected);
    for (k, v) in file.metadata() {
        if k != "general.file_type" {
            // Arrays are views into their file: compare what `render` shows (type, len, head).
            assert_eq!(Some(render(&v)), f32_file.get(k).map(|f| render(&f)), "{k}");
        }
    }

    let digest = hex::encode(sha2::Sha256::digest(file.bytes()));
    assert_eq!(digest, LLAMA_CPP_Q4_K_M_SHA256, "whole file byte-identical to llama.cpp's");
}

#[test]
fn q8_0_blocks_match_llama_cpp() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("quant-blocks.json")).expect("quant-blocks.json")).unwrap();
    let q8 = &json["types"]["Q8_0"];
    assert_eq!(q8["tensor"], "blk.0.attn_q.weight");
    let file = GgufFile::open(testing::gguf(OutType::Q8_0)).unwrap();
    let t = file.tensor("blk.0.attn_q.weight").unwrap();
    let blocks = q8["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 8);
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(hex::encode(&t.data[i * 34..(i + 1) * 34]), b["hex"].as_str().unwrap(), "block {i}");
    }
}

#[test]
fn f16_and_bf16_round_the_f32_file_and_keep_vectors_f32() {
    let src = testing::source_dir();
    let f32_file = GgufFile::open(testing::gguf(OutType::F32)).unwrap();
    let q8_file = GgufFile::open(testing::gguf(OutType::Q8_0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = ConvertOptions { model_id: Some(EMBEDDINGGEMMA_MODEL_ID.into()) };
    for (out, ty, file_type) in [(OutType::F16, GgmlType::F16, 1), (OutType::BF16, GgmlType::Bf16, 32)] {
        let path = dir.path().join(format!("{out}.gguf"));
        let report = convert_with(&src, &path, out, &options, &mut |_, _| {}).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(report.file_size, file.bytes().len() as u64);
        assert_eq!(file.get_u32("general.file_type").unwrap(), file_type);
        // Same keys and values as the Q8_0 file apart from the file type.
        let keys: Vec<&str> = file.metadata().map(|(k, _)| k).collect();
        let q8_keys: Vec<&str> = q8_file.metadata().map(|(k, _)| k).collect();
        assert_eq!(keys, q8_keys);
        for ((k, v), (_, q)) in file.metadata().zip(q8_file.metadata()) {
            if k != "general.file_type" {
                assert_eq!(v, q, "{k}");
            }
        }
        for (t, r) in file.tensors().zip(f32_file.tensors()) {
            assert_eq!((t.name, t.shape), (r.name, r.shape));
            let f32s = r.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if t.shape.len() == 1 {
                assert_eq!(t.ggml_type, GgmlType::F32, "{}", t.name);
                assert_eq!(t.data, r.data, "{}", t.name);
                continue;
            }
            assert_eq!(t.ggml_type, ty, "{}", t.name);
            // Every 997th value: the rounding of the F32 file's value.
            for (i, x) in f32s.enumerate().step_by(997) {
                let got = u16::from_le_bytes([t.data[2 * i], t.data[2 * i + 1]]);
                let want = match out {
                    OutType::F16 => half::f16::from_f32(x).to_bits(),
                    _ => half::bf16::from_f32(x).to_bits(),
                };
                assert_eq!(got, want, "{} element {i}", t.name);
            }
        }
    }
}

/// Reads tensor `name` of a safetensors file as f32 (the checkpoint is all F32).
fn safetensors_f32(path: &std::path::Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let info = &header[name];
    assert_eq!(info["dtype"], "F32");
    let (s, e) = (info["data_offsets"][0].as_u64().unwrap() as usize, info["data_offsets"][1].as_u64().unwrap() as usize);
    bytes[8 + n + s..8 + n + e].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn gguf_f32(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn f32_file_holds_source_values_with_norms_shifted() {
    let src = testing::source_dir();
    let file = GgufFile::open(testing::gguf(OutType::F32)).unwrap();
    assert_eq!(file.bytes().len(), 1_236_857_248);
    assert_eq!(file.get_u32("general.file_type").unwrap(), 0);
    assert!(file.tensors().all(|t| t.ggml_type == GgmlType::F32));
    // Gemma's RMSNorm scales by 1 + w; llama.cpp stores w + 1 (computed in f32).
    let model = src.join("model.safetensors");
    for (hf, gguf, shift) in [
        ("norm.weight", "output_norm.weight", 1.0f32),
        ("layers.3.self_attn.k_norm.weight", "blk.3.attn_k_norm.weight", 1.0),
        ("layers.7.mlp.up_proj.weight", "blk.7.ffn_up.weight", 0.0),
    ] {
        let want: Vec<f32> = safetensors_f32(&model, hf).iter().map(|w| w + shift).collect();
        assert_eq!(gguf_f32(file.tensor(gguf).unwrap().data), want, "{gguf}");
    }
    let dense = safetensors_f32(&src.join("3_Dense/model.safetensors"), "linear.weight");
    assert_eq!(gguf_f32(file.tensor("dense_3.weight").unwrap().data), dense);
}
