//! Helpers shared by the test modules.

use gguf_format::{Gguf, GgufWriter, Storage};

/// Writes `file` again from what the parser reports: metadata, tensor infos and data.
pub fn rewrite<S: Storage>(file: &Gguf<S>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata() {
        w.add_metadata(key, value.to_owned_value()).unwrap();
    }
    for t in file.tensors() {
        w.add_tensor(t.name, t.shape, t.ggml_type).unwrap();
    }
    let data: Vec<&[u8]> = file.tensors().map(|t| t.data).collect();
    w.to_bytes(&data).unwrap()
}
