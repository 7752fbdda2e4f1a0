//! write -> parse -> identical, for every value type, nested arrays and every tensor type.

use gguf_format::{GgmlType, Gguf, GgufWriter, OwnedArray, OwnedValue, Value, ValueType};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::support::rewrite;

fn scalar() -> impl Strategy<Value = OwnedValue> {
    prop_oneof![
        any::<u8>().prop_map(OwnedValue::U8),
        any::<i8>().prop_map(OwnedValue::I8),
        any::<u16>().prop_map(OwnedValue::U16),
        any::<i16>().prop_map(OwnedValue::I16),
        any::<u32>().prop_map(OwnedValue::U32),
        any::<i32>().prop_map(OwnedValue::I32),
        any::<f32>().prop_map(OwnedValue::F32),
        any::<bool>().prop_map(OwnedValue::Bool),
        any::<String>().prop_map(OwnedValue::Str),
        any::<u64>().prop_map(OwnedValue::U64),
        any::<i64>().prop_map(OwnedValue::I64),
        any::<f64>().prop_map(OwnedValue::F64),
    ]
}

fn array() -> impl Strategy<Value = OwnedArray> {
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..6).prop_map(OwnedArray::U8),
        vec(any::<i8>(), 0..6).prop_map(OwnedArray::I8),
        vec(any::<u16>(), 0..6).prop_map(OwnedArray::U16),
        vec(any::<i16>(), 0..6).prop_map(OwnedArray::I16),
        vec(any::<u32>(), 0..6).prop_map(OwnedArray::U32),
        vec(any::<i32>(), 0..6).prop_map(OwnedArray::I32),
        vec(any::<f32>(), 0..6).prop_map(OwnedArray::F32),
        vec(any::<bool>(), 0..6).prop_map(OwnedArray::Bool),
        vec(any::<String>(), 0..6).prop_map(OwnedArray::Str),
        vec(any::<u64>(), 0..6).prop_map(OwnedArray::U64),
        vec(any::<i64>(), 0..6).prop_map(OwnedArray::I64),
        vec(any::<f64>(), 0..6).prop_map(OwnedArray::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        vec(inner, 0..4).prop_map(OwnedArray::Array)
    })
}

fn value() -> impl Strategy<Value = OwnedValue> {
    prop_oneof![3 => scalar(), 1 => array().prop_map(OwnedValue::Array)]
}

#[derive(Debug, Clone)]
struct Tensor {
    shape: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        0..GgmlType::ALL.len(),
        0u64..3,
        vec(1u64..4, 0..4),
        any::<u8>(),
    )
        .prop_map(|(t, blocks, rest, fill)| {
            let ggml_type = GgmlType::ALL[t];
            // A zero-dimensional tensor is one element, which only block-less types can hold.
            let shape = if rest.is_empty() && ggml_type.block_elems() == 1 && blocks == 0 {
                Vec::new()
            } else {
                let mut s = vec![ggml_type.block_elems() * blocks];
                s.extend(rest.into_iter().take(3));
                s
            };
            let n = ggml_type.tensor_bytes(&shape).unwrap() as usize;
            let data = (0..n).map(|i| fill.wrapping_add(i as u8)).collect();
            Tensor {
                shape,
                ggml_type,
                data,
            }
        })
}

fn build(metadata: &[OwnedValue], tensors: &[Tensor]) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (i, v) in metadata.iter().enumerate() {
        w.add_metadata(format!("key.{i}"), v.clone()).unwrap();
    }
    for (i, t) in tensors.iter().enumerate() {
        w.add_tensor(format!("blk.{i}.weight"), &t.shape, t.ggml_type)
            .unwrap();
    }
    let data: Vec<&[u8]> = tensors.iter().map(|t| &t.data[..]).collect();
    w.to_bytes(&data).unwrap()
}

/// Equality that treats two floats as equal when their bits are (NaN included).
fn same(a: &OwnedValue, b: &OwnedValue) -> bool {
    format!("{a:?}") == format!("{b:?}") && a.value_type() == b.value_type()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_parse_rewrite_is_identity(metadata in vec(value(), 0..8), tensors in vec(tensor(), 0..6)) {
        let bytes = build(&metadata, &tensors);
        let file = Gguf::parse(&bytes[..]).unwrap();
        prop_assert_eq!(file.version(), 3);
        prop_assert_eq!(file.metadata_len(), metadata.len());
        for ((i, (key, got)), want) in file.metadata().enumerate().zip(&metadata) {
            prop_assert_eq!(key, format!("key.{i}"));
            prop_assert!(same(&got.to_owned_value(), want), "{:?} != {:?}", got, want);
        }
        prop_assert_eq!(file.tensor_count(), tensors.len());
        for (i, (view, want)) in file.tensors().zip(&tensors).enumerate() {
            prop_assert_eq!(view.name, format!("blk.{i}.weight"));
            prop_assert_eq!(view.shape, &want.shape[..]);
            prop_assert_eq!(view.ggml_type, want.ggml_type);
            prop_assert_eq!(view.data, &want.data[..]);
            prop_assert_eq!(view.offset % 32, 0);
            prop_assert_eq!(file.tensor(view.name), Some(view));
        }
        prop_assert!(rewrite(&file) == bytes, "re-writing the parsed file changed its bytes");
    }
}

#[test]
fn version_2_parses_like_version_3() {
    let mut bytes = build(&[OwnedValue::U32(7)], &[]);
    bytes[4] = 2;
    let file = Gguf::parse(&bytes[..]).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.get_u32("key.0").unwrap(), 7);
}

#[test]
fn typed_getters() {
    let mut w = GgufWriter::new();
    w.add_metadata("u8", 200u8).unwrap();
    w.add_metadata("i64", -5i64).unwrap();
    w.add_metadata("big", u64::MAX).unwrap();
    w.add_metadata("f", 0.5f32).unwrap();
    w.add_metadata("d", 0.25f64).unwrap();
    w.add_metadata("b", true).unwrap();
    w.add_metadata("s", "gemma").unwrap();
    w.add_metadata("toks", vec!["<pad>", "\u{2581}the"])
        .unwrap();
    w.add_metadata("scores", vec![0.0f32, -1.5]).unwrap();
    w.add_metadata("types", vec![1u8, 3]).unwrap();
    w.add_metadata("neg", vec![-1i64]).unwrap();
    w.add_metadata(
        "nested",
        OwnedArray::Array(vec![
            OwnedArray::I32(vec![1]),
            OwnedArray::Str(vec!["x".into()]),
        ]),
    )
    .unwrap();
    let bytes = w.to_bytes(&[]).unwrap();
    let f = Gguf::parse(bytes).unwrap();

    assert_eq!(f.get_u32("u8").unwrap(), 200);
    assert_eq!(f.get_i32("i64").unwrap(), -5);
    assert_eq!(f.get_u64("big").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("f").unwrap(), 0.5);
    assert_eq!(f.get_f32("d").unwrap(), 0.25);
    assert!(f.get_bool("b").unwrap());
    assert_eq!(f.get_str("s").unwrap(), "gemma");
    assert_eq!(
        f.get_str_array("toks").unwrap().collect::<Vec<_>>(),
        ["<pad>", "\u{2581}the"]
    );
    assert_eq!(f.get_str_array("toks").unwrap().len(), 2);
    assert_eq!(f.get_f32_array("scores").unwrap(), [0.0, -1.5]);
    assert_eq!(f.get_i32_array("types").unwrap(), [1, 3]);
    assert_eq!(f.get_i32_array("neg").unwrap(), [-1]);
    let nested = f.get_array("nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    let inner: Vec<Value<'_>> = nested.iter().collect();
    assert_eq!(inner[0].as_array().unwrap().get(0), Some(Value::I32(1)));
    assert_eq!(
        inner[1].as_array().unwrap().strings().unwrap().next(),
        Some("x")
    );

    // Missing and mistyped keys are distinct errors.
    let missing = f.get_u32("nope").unwrap_err();
    assert!(missing.is_missing_key(), "{missing}");
    assert_eq!(missing.to_string(), "metadata key \"nope\" is missing");
    let wrong = f.get_u32("s").unwrap_err();
    assert!(
        matches!(
            &wrong,
            gguf_format::GgufError::WrongType {
                expected: "u32",
                found: ValueType::String,
                ..
            }
        ),
        "{wrong}"
    );
    assert!(matches!(
        f.get_u32("big"),
        Err(gguf_format::GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        f.get_u32("i64"),
        Err(gguf_format::GgufError::OutOfRange { value: -5, .. })
    ));
    assert!(matches!(
        f.get_str("u8"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_bool("u8"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f32("u8"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_str_array("scores"),
        Err(gguf_format::GgufError::WrongType {
            found: ValueType::F32,
            ..
        })
    ));
    assert!(matches!(
        f.get_f32_array("toks"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_i32_array("scores"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_array("s"),
        Err(gguf_format::GgufError::WrongType { .. })
    ));
}

#[test]
fn mapped_file_matches_borrowed_parse() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "gemma-embedding")
        .unwrap();
    w.add_tensor("token_embd.weight", &[32, 3], GgmlType::Q8_0)
        .unwrap();
    let data: Vec<u8> = (0..102).map(|i| i as u8).collect();
    let bytes = w.to_bytes(&[&data]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();

    let file = std::sync::Arc::new(gguf_format::GgufFile::open(&path).unwrap());
    let t = file.tensor("token_embd.weight").unwrap();
    assert_eq!(t.data, &data[..]);
    assert_eq!(t.n_elements(), 96);
    assert_eq!(&file.bytes()[t.data_range()], &data[..]);
    let debug = format!("{file:?}");
    assert!(
        debug.contains("tensor_count: 1") && debug.len() < 200,
        "{debug}"
    );
    // The map is page-aligned and offsets are 32-aligned, so the data is 32-aligned in memory.
    assert_eq!(t.data.as_ptr() as usize % 32, 0);

    let err = gguf_format::GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(err, gguf_format::GgufError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.gguf"), "{err}");

    // A directory is named as one (mapping it says only "No such device"); a FIFO is refused
    // before it is opened (opening would wait for a writer forever).
    let err = gguf_format::GgufFile::open(dir.path()).unwrap_err();
    assert!(err.to_string().ends_with("is a directory, not a GGUF file"), "{err}");
    #[cfg(unix)]
    {
        let fifo = dir.path().join("pipe.gguf");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err = gguf_format::GgufFile::open(&fifo).unwrap_err();
        assert!(err.to_string().ends_with("is not a regular file"), "{err}");
    }
}
