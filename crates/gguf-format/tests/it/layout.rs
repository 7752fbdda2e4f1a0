//! The writer reproduces the layout llama.cpp's converter wrote for EmbeddingGemma Q8_0
//! (`tests/data/gguf-layout-q8_0.txt`, a copy of the project's reference file).
//!
//! A layout depends on metadata only through encoded lengths. Every key and value is in the
//! reference file except the 262,144 vocabulary strings, of which it lists the first five.
//! Their total length is a property of the model's vocabulary: 2,316,356 bytes of
//! SentencePiece pieces (the same in `tokenizer.model` and `tokenizer.json`), less 990 bytes
//! because llama.cpp's converter rewrites U+2581 (3 bytes) as a space (1 byte) in the 30
//! non-special added tokens that contain it (495 occurrences). The test fills the rest of the
//! vocabulary with placeholder strings of exactly that total length.
//!
//! The reader, in turn, must report exactly that layout for the project's own Q8_0
//! conversion, which claims to match llama.cpp's.

use gguf_format::{GgmlType, Gguf, GgufFile, GgufWriter, OwnedArray, OwnedValue, Value};

const REFERENCE: &str = include_str!("../data/gguf-layout-q8_0.txt");
const VOCAB_BYTES: usize = 2_316_356 - 990;

struct Reference {
    file_len: u64,
    data_offset: u64,
    metadata: Vec<(String, OwnedValue)>,
    /// key, type name, value as printed
    printed: Vec<(String, String, String)>,
    /// name, shape, type, size, relative offset, absolute offset
    tensors: Vec<(String, Vec<u64>, GgmlType, u64, u64, u64)>,
}

fn field<'a>(line: &'a str, prefix: &str) -> &'a str {
    let start = line
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} missing in {line}"))
        + prefix.len();
    line[start..].split_whitespace().next().unwrap()
}

fn py_str(s: &str) -> String {
    let s = s.trim();
    assert!(
        s.starts_with('\'') && s.ends_with('\''),
        "not a python string: {s}"
    );
    s[1..s.len() - 1].to_owned()
}

fn py_str_list(s: &str) -> Vec<String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    inner.split(", ").map(py_str).collect()
}

fn parse_reference() -> Reference {
    let mut lines = REFERENCE.lines();
    let mut r = Reference {
        file_len: 0,
        data_offset: 0,
        metadata: Vec::new(),
        printed: Vec::new(),
        tensors: Vec::new(),
    };
    let mut section = "";
    for line in lines.by_ref() {
        if line.starts_with("file_size_bytes:") {
            r.file_len = field(line, "file_size_bytes:").parse().unwrap();
        } else if line.starts_with("tensor_data_offset") {
            r.data_offset = line.rsplit(' ').next().unwrap().parse().unwrap();
        } else if line.starts_with("== METADATA") {
            section = "meta";
        } else if line.starts_with("== TENSORS") {
            section = "tensors";
        } else if line.starts_with('#') || line.trim().is_empty() || !line.contains(" | ") {
            continue;
        } else if section == "meta" {
            let mut parts = line.splitn(3, " | ");
            let (key, ty, value) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            r.metadata
                .push((key.to_owned(), reference_value(key, ty, value)));
            r.printed
                .push((key.to_owned(), ty.to_owned(), value.to_owned()));
        } else if section == "tensors" {
            let p: Vec<&str> = line.split('|').map(str::trim).collect();
            let shape = p[2]
                .trim_matches(['[', ']'])
                .split(", ")
                .map(|d| d.parse().unwrap())
                .collect();
            r.tensors.push((
                p[1].to_owned(),
                shape,
                GgmlType::from_name(p[3]).unwrap(),
                p[4].parse().unwrap(),
                p[5].parse().unwrap(),
                p[6].parse().unwrap(),
            ));
        }
    }
    r
}

fn reference_value(key: &str, ty: &str, value: &str) -> OwnedValue {
    match ty {
        "STRING" => OwnedValue::Str(py_str(value)),
        "UINT32" => OwnedValue::U32(value.parse().unwrap()),
        "INT32" => OwnedValue::I32(value.parse().unwrap()),
        "FLOAT32" => OwnedValue::F32(value.parse::<f64>().unwrap() as f32),
        "BOOL" => OwnedValue::Bool(value == "True"),
        _ => {
            let len: usize = field(value, "len=").parse().unwrap();
            let first = &value[value.find("first5=").unwrap() + 7..];
            match ty {
                "ARRAY[STRING]" => {
                    let mut items = py_str_list(first);
                    if items.len() < len {
                        assert_eq!(key, "tokenizer.ggml.tokens");
                        fill_vocab(&mut items, len, VOCAB_BYTES);
                    }
                    OwnedValue::Array(OwnedArray::Str(items))
                }
                "ARRAY[FLOAT32]" => OwnedValue::Array(OwnedArray::F32(vec![-1000.0; len])),
                "ARRAY[INT32]" => OwnedValue::Array(OwnedArray::I32(vec![3; len])),
                other => panic!("type {other} not expected in the reference"),
            }
        }
    }
}

/// Appends placeholder strings until there are `len` of them totalling `total` bytes.
fn fill_vocab(items: &mut Vec<String>, len: usize, total: usize) {
    let used: usize = items.iter().map(String::len).sum();
    let missing = len - items.len();
    let (each, extra) = ((total - used) / missing, (total - used) % missing);
    for i in 0..missing {
        items.push("x".repeat(each + usize::from(i < extra)));
    }
    assert_eq!(items.iter().map(String::len).sum::<usize>(), total);
}

#[test]
fn writer_reproduces_llama_cpp_q8_0_layout() {
    let r = parse_reference();
    assert_eq!(r.metadata.len(), 41);
    assert_eq!(r.tensors.len(), 316);

    let mut w = GgufWriter::new();
    for (key, value) in &r.metadata {
        w.add_metadata(key.clone(), value.clone()).unwrap();
    }
    for (name, shape, ty, ..) in &r.tensors {
        w.add_tensor(name.clone(), shape, *ty).unwrap();
    }
    let layout = w.layout().unwrap();
    assert_eq!(layout.data_offset, 6_530_464);
    assert_eq!(layout.data_offset, r.data_offset);
    assert_eq!(layout.file_len, r.file_len);
    for (i, (name, _, _, size, rel, _)) in r.tensors.iter().enumerate() {
        assert_eq!(
            (layout.tensor_sizes[i], layout.tensor_offsets[i]),
            (*size, *rel),
            "{name}"
        );
    }

    // Write the header for real and read it back over a zero-filled data section (calloc'd,
    // so the 333 MB are never touched).
    let header = w.write_header(Vec::new()).unwrap().get_ref().clone();
    assert_eq!(header.len() as u64, r.data_offset);
    let mut file = vec![0u8; r.file_len as usize];
    file[..header.len()].copy_from_slice(&header);
    let parsed = Gguf::parse(&file[..]).unwrap();
    assert_eq!(parsed.version(), 3);
    assert_eq!(parsed.alignment(), 32);
    assert_eq!(parsed.data_offset(), r.data_offset);
    let keys: Vec<&str> = parsed.metadata().map(|(k, _)| k).collect();
    let want: Vec<&str> = r.metadata.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, want);
    for ((key, got), (_, want)) in parsed.metadata().zip(&r.metadata) {
        assert_eq!(got.value_type(), want.value_type(), "{key}");
    }
    assert_eq!(
        parsed.get_str("general.architecture").unwrap(),
        "gemma-embedding"
    );
    assert_eq!(parsed.get_u32("gemma-embedding.block_count").unwrap(), 24);
    for (t, (name, shape, ty, size, _, abs)) in parsed.tensors().zip(&r.tensors) {
        assert_eq!(t.name, name);
        assert_eq!(t.shape, &shape[..]);
        assert_eq!(t.ggml_type, *ty);
        assert_eq!(t.data.len() as u64, *size);
        assert_eq!(t.offset, *abs, "{name}");
    }
}

/// The value as the reference prints it (Python reprs of the values gguf-py reads).
fn printed(v: &Value<'_>) -> String {
    fn scalar(v: &Value<'_>) -> String {
        match v {
            Value::Str(s) => format!("'{s}'"),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Value::F32(x) => python_float(f64::from(*x)),
            other => other
                .as_i32()
                .map(|i| i.to_string())
                .unwrap_or_else(|| format!("{other:?}")),
        }
    }
    match v {
        Value::Array(a) => {
            let first: Vec<String> = a.iter().take(5).map(|e| scalar(&e)).collect();
            format!("len={} first5=[{}]", a.len(), first.join(", "))
        }
        other => scalar(other),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, always with a decimal point or exponent.
fn python_float(x: f64) -> String {
    let s = format!("{x:?}");
    match s.split_once('e') {
        Some((m, e)) => format!("{m}e-{:0>2}", e.trim_start_matches('-')),
        None => s,
    }
}

#[test]
fn reader_reports_the_reference_layout_of_the_converted_q8_0() {
    let r = parse_reference();
    let path = crate::files::embeddinggemma_q8_0();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(file.bytes().len() as u64, r.file_len);
    assert_eq!(
        (file.version(), file.alignment(), file.data_offset()),
        (3, 32, r.data_offset)
    );
    assert_eq!(file.metadata_len(), r.printed.len());
    for ((key, value), (want_key, want_type, want_value)) in file.metadata().zip(&r.printed) {
        assert_eq!(key, want_key);
        let ty = match &value {
            Value::Array(a) => format!("ARRAY[{}]", a.elem_type()),
            other => other.value_type().to_string(),
        };
        assert_eq!(&ty, want_type, "{key}");
        assert_eq!(&printed(&value), want_value, "{key}");
    }
    assert_eq!(file.tensor_count(), r.tensors.len());
    for (t, (name, shape, ty, size, rel, abs)) in file.tensors().zip(&r.tensors) {
        assert_eq!(t.name, name);
        assert_eq!((t.shape, t.ggml_type), (&shape[..], *ty), "{name}");
        assert_eq!(t.data.len() as u64, *size, "{name}");
        assert_eq!(
            (t.offset - file.data_offset(), t.offset),
            (*rel, *abs),
            "{name}"
        );
    }
}
