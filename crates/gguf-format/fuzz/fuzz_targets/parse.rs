//! Parses arbitrary bytes; whatever parses must be fully readable and must survive a
//! write -> parse round trip unchanged.
#![no_main]

use gguf_format::{Gguf, GgufWriter, Storage, Value};
use libfuzzer_sys::fuzz_target;

/// Visits every element, however deeply nested, so lazy decoding is exercised too.
fn touch(v: Value<'_>) {
    match v {
        Value::Array(a) => {
            if let Some(strings) = a.strings() {
                strings.for_each(|s| {
                    std::hint::black_box(s);
                });
            }
            a.iter().for_each(touch);
            if let Some(last) = a.len().checked_sub(1).and_then(|i| a.get(i)) {
                touch(last);
            }
        }
        other => {
            std::hint::black_box(other);
        }
    }
}

fn rewrite<S: Storage>(file: &Gguf<S>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        w.add_metadata(key, value.to_owned_value()).expect("parsed metadata must be writable");
    }
    for t in file.tensors() {
        w.add_tensor(t.name, t.shape, t.ggml_type).expect("parsed tensor info must be writable");
    }
    let data: Vec<&[u8]> = file.tensors().map(|t| t.data).collect();
    w.to_bytes(&data).expect("parsed tensors must be writable")
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = Gguf::parse(data) else { return };
    for (key, value) in file.metadata() {
        touch(value);
        std::hint::black_box((
            file.get_u32(key).ok(),
            file.get_i32(key).ok(),
            file.get_u64(key).ok(),
            file.get_f32(key).ok(),
            file.get_bool(key).ok(),
            file.get_str(key).ok(),
            file.get_f32_array(key).ok(),
            file.get_i32_array(key).ok(),
            file.get_str_array(key).map(|v| v.count()).ok(),
        ));
    }
    for t in file.tensors() {
        assert_eq!(t.ggml_type.tensor_bytes(t.shape), Some(t.data.len() as u64));
        assert_eq!(&file.bytes()[t.data_range()], t.data);
        assert_eq!((t.offset - file.data_offset()) % file.alignment(), 0);
        assert_eq!(file.tensor(t.name), Some(t));
        std::hint::black_box(t.n_elements());
    }

    let once = rewrite(&file);
    let again = Gguf::parse(&once[..]).expect("rewritten file must parse");
    assert_eq!(again.metadata_len(), file.metadata_len());
    assert_eq!(again.tensor_count(), file.tensor_count());
    assert_eq!(rewrite(&again), once, "rewrite is not a fixed point");
});
