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

/// Builds GGUF bytes field by field, including the malformed ones the writer refuses.
#[derive(Debug, Default, Clone)]
pub struct Raw {
    pub bytes: Vec<u8>,
}

impl Raw {
    /// Magic, version and the two counts.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }

    /// Offset of the next byte.
    pub fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// A length-prefixed byte string (not necessarily UTF-8).
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).raw(s)
    }

    /// A `u32` metadata entry.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }

    /// A tensor info with a raw type id.
    pub fn tensor(&mut self, name: &str, shape: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(shape.len() as u32);
        for &d in shape {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }

    /// Zero padding up to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        let n = self.bytes.len().next_multiple_of(align);
        self.bytes.resize(n, 0);
        self
    }

    /// `n` zero bytes (tensor data).
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, 0);
        self
    }
}
