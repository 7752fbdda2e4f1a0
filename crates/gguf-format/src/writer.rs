//! Writing GGUF v3 files in the layout llama.cpp's own writer produces.
//!
//! The layout is: header, metadata in the order given, tensor infos in the order given,
//! zero padding to the alignment, then each tensor's data followed by zero padding to the
//! alignment (the last one included). Tensor offsets are assigned densely in declaration
//! order, which is what llama.cpp's reader insists on.

use std::collections::HashSet;
use std::io::Write;

use crate::error::GgufError;
use crate::ggml_type::GgmlType;
use crate::reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_BYTES, checked_tensor_bytes,
};
use crate::value::{MAX_ARRAY_DEPTH, OwnedArray, OwnedValue};

/// The version this writer produces.
const WRITE_VERSION: u32 = 3;

/// Collects metadata and tensor declarations, then writes the file.
///
/// Two ways to write: [`GgufWriter::to_bytes`] / [`GgufWriter::write_with_data`] when every
/// tensor's bytes are at hand, or [`GgufWriter::write_header`], which returns a
/// [`TensorDataWriter`] that takes each tensor's bytes in declaration order (in pieces, if
/// need be), so a model larger than memory can be streamed out.
///
/// ```
/// use gguf_format::{GgmlType, Gguf, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", "demo")?;
/// w.add_tensor("w", &[4, 2], GgmlType::F32)?;
/// let bytes = w.to_bytes(&[&[0u8; 32]])?;
/// let file = Gguf::parse(&bytes[..])?;
/// assert_eq!(file.get_str("general.architecture")?, "demo");
/// assert_eq!(file.tensor("w").unwrap().shape, &[4, 2]);
/// # Ok::<(), gguf_format::GgufError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, OwnedValue)>,
    keys: HashSet<String>,
    alignment: Option<u64>,
    tensors: Vec<PlannedTensor>,
    names: HashSet<String>,
}

#[derive(Debug, Clone)]
struct PlannedTensor {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    n_bytes: u64,
}

/// Where everything lands in the file a [`GgufWriter`] will write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    /// Bytes of header, metadata and tensor infos, before padding.
    pub header_len: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Each tensor's offset relative to the data section, in declaration order.
    pub tensor_offsets: Vec<u64>,
    /// Each tensor's size in bytes, in declaration order.
    pub tensor_sizes: Vec<u64>,
    /// Total file length, padding after the last tensor included.
    pub file_len: u64,
}

impl GgufWriter {
    /// An empty writer (alignment 32).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a metadata entry. Setting `general.alignment` (as a `u32` power of two)
    /// changes the alignment of tensor data.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<OwnedValue>,
    ) -> Result<&mut Self, GgufError> {
        let key = key.into();
        let value = value.into();
        if key.is_empty() {
            return Err(GgufError::EmptyKey { offset: 0 });
        }
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key, offset: 0 });
        }
        if let OwnedValue::Array(a) = &value {
            check_depth(a, 1)?;
        }
        if key == ALIGNMENT_KEY {
            let OwnedValue::U32(a) = value else {
                return Err(GgufError::AlignmentType {
                    found: value.value_type(),
                });
            };
            if !a.is_power_of_two() {
                return Err(GgufError::InvalidAlignment {
                    alignment: a.into(),
                });
            }
            self.alignment = Some(a.into());
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Declares a tensor; its data is written later, in declaration order.
    ///
    /// `shape` is in ggml order (`ne0` first). The checks are llama.cpp's: a name shorter than
    /// 64 bytes, at most 4 dimensions, an element count that fits an `i64`, and `ne0` a whole
    /// number of blocks.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        ggml_type: GgmlType,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        if name.len() >= MAX_NAME_BYTES {
            let len = name.len();
            return Err(GgufError::NameTooLong {
                name,
                offset: 0,
                len,
            });
        }
        if shape.len() > MAX_DIMS as usize {
            return Err(GgufError::TooManyDims {
                name,
                offset: 0,
                n_dims: u32::try_from(shape.len()).unwrap_or(u32::MAX),
            });
        }
        if let Some((dim, &value)) = shape
            .iter()
            .enumerate()
            .find(|(_, d)| **d > i64::MAX as u64)
        {
            return Err(GgufError::DimTooLarge {
                name,
                offset: 0,
                dim,
                value,
            });
        }
        let n_bytes = checked_tensor_bytes(&name, 0, shape, ggml_type)?;
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name, offset: 0 });
        }
        self.names.insert(name.clone());
        self.tensors.push(PlannedTensor {
            name,
            shape: shape.to_vec(),
            ggml_type,
            n_bytes,
        });
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.alignment.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Where everything will land, computed without writing.
    pub fn layout(&self) -> Result<Layout, GgufError> {
        let overflow = || GgufError::Unrepresentable {
            detail: "file size overflows u64".into(),
        };
        let mut header_len: u64 = 4 + 4 + 8 + 8;
        for (key, value) in &self.metadata {
            header_len += 8 + key.len() as u64 + 4 + value_len(value);
        }
        for t in &self.tensors {
            header_len += 8 + t.name.len() as u64 + 4 + 8 * t.shape.len() as u64 + 4 + 8;
        }
        let alignment = self.alignment();
        let data_offset = header_len.next_multiple_of(alignment);
        let mut pos = 0u64;
        let mut tensor_offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            tensor_offsets.push(pos);
            pos = pos
                .checked_add(t.n_bytes)
                .and_then(|p| p.checked_next_multiple_of(alignment))
                .ok_or_else(overflow)?;
        }
        Ok(Layout {
            header_len,
            data_offset,
            tensor_sizes: self.tensors.iter().map(|t| t.n_bytes).collect(),
            tensor_offsets,
            file_len: data_offset.checked_add(pos).ok_or_else(overflow)?,
        })
    }

    /// Encodes header, metadata, tensor infos and the padding after them.
    fn header_bytes(&self, layout: &Layout) -> Vec<u8> {
        let mut out = Vec::with_capacity(layout.data_offset as usize);
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        for (t, &offset) in self.tensors.iter().zip(&layout.tensor_offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, layout.header_len);
        out.resize(layout.data_offset as usize, 0);
        out
    }

    /// Writes header, metadata, tensor infos and padding to `out`, and returns the writer
    /// that takes the tensor data.
    pub fn write_header<W: Write>(self, mut out: W) -> Result<TensorDataWriter<W>, GgufError> {
        let layout = self.layout()?;
        out.write_all(&self.header_bytes(&layout))
            .map_err(GgufError::Write)?;
        Ok(TensorDataWriter {
            out,
            alignment: self.alignment(),
            tensors: self.tensors,
            current: 0,
            written: 0,
        })
    }

    /// Writes the whole file; `data[i]` is the bytes of the `i`-th declared tensor.
    pub fn write_with_data<W: Write>(self, out: W, data: &[&[u8]]) -> Result<W, GgufError> {
        if data.len() != self.tensors.len() {
            return Err(GgufError::Unrepresentable {
                detail: format!(
                    "{} tensors declared but data given for {}",
                    self.tensors.len(),
                    data.len()
                ),
            });
        }
        let mut w = self.write_header(out)?;
        for d in data {
            w.write_tensor(d)?;
        }
        w.finish()
    }

    /// The whole file in memory; `data[i]` is the bytes of the `i`-th declared tensor.
    pub fn to_bytes(self, data: &[&[u8]]) -> Result<Vec<u8>, GgufError> {
        let len = self.layout()?.file_len;
        let out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        self.write_with_data(out, data)
    }
}

/// Takes tensor data, in declaration order, after [`GgufWriter::write_header`].
#[derive(Debug)]
pub struct TensorDataWriter<W: Write> {
    out: W,
    alignment: u64,
    tensors: Vec<PlannedTensor>,
    current: usize,
    /// Bytes of the current tensor written so far.
    written: u64,
}

impl<W: Write> TensorDataWriter<W> {
    /// Name and size in bytes of the tensor the next bytes belong to, if any remain.
    pub fn next_tensor(&self) -> Option<(&str, u64)> {
        self.tensors
            .get(self.current)
            .map(|t| (t.name.as_str(), t.n_bytes))
    }

    /// The sink, as written so far (right after [`GgufWriter::write_header`]: exactly the
    /// header, metadata, tensor infos and padding).
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes the current tensor's data in one piece (`data` must be all of it).
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let t = self.current_tensor()?;
        if self.written != 0 || data.len() as u64 != t.n_bytes {
            return Err(GgufError::TensorData {
                name: t.name.clone(),
                detail: format!(
                    "expected {} bytes in one piece, got {} after {} already written",
                    t.n_bytes,
                    data.len(),
                    self.written
                ),
            });
        }
        self.write_tensor_part(data)
    }

    /// Appends part of the current tensor's data. When the tensor is complete, its padding is
    /// written and the next tensor becomes current.
    pub fn write_tensor_part(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let t = self.current_tensor()?;
        let n_bytes = t.n_bytes;
        let left = n_bytes - self.written;
        if data.len() as u64 > left {
            return Err(GgufError::TensorData {
                name: t.name.clone(),
                detail: format!(
                    "{} bytes given but only {left} of {n_bytes} remain",
                    data.len()
                ),
            });
        }
        self.out.write_all(data).map_err(GgufError::Write)?;
        self.written += data.len() as u64;
        if self.written == n_bytes {
            let pad = n_bytes.next_multiple_of(self.alignment) - n_bytes;
            write_zeros(&mut self.out, pad)?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    fn current_tensor(&self) -> Result<&PlannedTensor, GgufError> {
        self.tensors
            .get(self.current)
            .ok_or_else(|| GgufError::Unrepresentable {
                detail: format!(
                    "data given for more than the {} declared tensors",
                    self.tensors.len()
                ),
            })
    }

    /// Checks every tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(GgufError::TensorData {
                name: t.name.clone(),
                detail: format!(
                    "finished with {} of {} bytes written",
                    self.written, t.n_bytes
                ),
            });
        }
        self.out.flush().map_err(GgufError::Write)?;
        Ok(self.out)
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> Result<(), GgufError> {
    const ZEROS: [u8; 256] = [0; 256];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k]).map_err(GgufError::Write)?;
        n -= k as u64;
    }
    Ok(())
}

fn check_depth(a: &OwnedArray, depth: u32) -> Result<(), GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::Unrepresentable {
            detail: format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
        });
    }
    if let OwnedArray::Array(inner) = a {
        for i in inner {
            check_depth(i, depth + 1)?;
        }
    }
    Ok(())
}

fn value_len(v: &OwnedValue) -> u64 {
    match v {
        OwnedValue::Str(s) => 8 + s.len() as u64,
        OwnedValue::Array(a) => array_len(a),
        other => other.value_type().fixed_size().map_or(0, |n| n as u64),
    }
}

/// Encoded length of an array value: element type, count, elements.
fn array_len(a: &OwnedArray) -> u64 {
    let elems = match a {
        OwnedArray::Str(v) => v.iter().map(|s| 8 + s.len() as u64).sum(),
        OwnedArray::Array(v) => v.iter().map(array_len).sum(),
        other => other.len() as u64 * other.elem_type().fixed_size().map_or(0, |n| n as u64),
    };
    4 + 8 + elems
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &OwnedValue) {
    match v {
        OwnedValue::U8(x) => out.push(*x),
        OwnedValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::Bool(x) => out.push(u8::from(*x)),
        OwnedValue::Str(s) => put_str(out, s),
        OwnedValue::Array(a) => put_array(out, a),
        OwnedValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        OwnedValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &OwnedArray) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        OwnedArray::U8(v) => out.extend_from_slice(v),
        OwnedArray::I8(v) => le!(v),
        OwnedArray::U16(v) => le!(v),
        OwnedArray::I16(v) => le!(v),
        OwnedArray::U32(v) => le!(v),
        OwnedArray::I32(v) => le!(v),
        OwnedArray::F32(v) => le!(v),
        OwnedArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        OwnedArray::Str(v) => {
            for s in v {
                put_str(out, s);
            }
        }
        OwnedArray::Array(v) => {
            for inner in v {
                put_array(out, inner);
            }
        }
        OwnedArray::U64(v) => le!(v),
        OwnedArray::I64(v) => le!(v),
        OwnedArray::F64(v) => le!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gguf, ValueType};

    #[test]
    fn layout_matches_what_is_written() {
        let mut w = GgufWriter::new();
        w.add_metadata("a", 1u8).unwrap();
        w.add_metadata("b", vec!["x", "yz"]).unwrap();
        w.add_metadata(
            "c",
            OwnedArray::Array(vec![OwnedArray::U16(vec![1, 2]), OwnedArray::Str(vec![])]),
        )
        .unwrap();
        w.add_tensor("t0", &[3], GgmlType::F32).unwrap();
        w.add_tensor("t1", &[32, 2], GgmlType::Q8_0).unwrap();
        let layout = w.layout().unwrap();
        let bytes = w.to_bytes(&[&[1; 12], &[2; 68]]).unwrap();
        assert_eq!(bytes.len() as u64, layout.file_len);
        assert_eq!(layout.data_offset % 32, 0);
        assert_eq!(layout.tensor_offsets, [0, 32]);
        assert_eq!(layout.file_len, layout.data_offset + 32 + 96);
        let f = Gguf::parse(&bytes[..]).unwrap();
        assert_eq!(f.data_offset(), layout.data_offset);
        assert_eq!(f.tensor("t1").unwrap().data, &[2; 68]);
    }

    #[test]
    fn alignment_key_changes_padding() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.alignment", 64u32).unwrap();
        w.add_tensor("t", &[1], GgmlType::F32).unwrap();
        w.add_tensor("u", &[1], GgmlType::F32).unwrap();
        let layout = w.layout().unwrap();
        assert_eq!(layout.tensor_offsets, [0, 64]);
        assert_eq!(layout.data_offset % 64, 0);
        let bytes = w.to_bytes(&[&[0; 4], &[0; 4]]).unwrap();
        assert_eq!(Gguf::parse(&bytes[..]).unwrap().alignment(), 64);
    }

    #[test]
    fn rejects_what_llama_cpp_would_reject() {
        let mut w = GgufWriter::new();
        assert!(matches!(
            w.add_metadata("general.alignment", 48u32),
            Err(GgufError::InvalidAlignment { alignment: 48 })
        ));
        assert!(matches!(
            w.add_metadata("general.alignment", 32u64),
            Err(GgufError::AlignmentType {
                found: ValueType::U64
            })
        ));
        assert!(matches!(
            w.add_metadata("", 1u8),
            Err(GgufError::EmptyKey { .. })
        ));
        w.add_metadata("k", 1u8).unwrap();
        assert!(matches!(
            w.add_metadata("k", 2u8),
            Err(GgufError::DuplicateKey { .. })
        ));
        assert!(matches!(
            w.add_tensor("x".repeat(64), &[1], GgmlType::F32),
            Err(GgufError::NameTooLong { len: 64, .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[1, 1, 1, 1, 1], GgmlType::F32),
            Err(GgufError::TooManyDims { n_dims: 5, .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[30], GgmlType::Q8_0),
            Err(GgufError::PartialBlock { ne0: 30, .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[1 << 62, 4], GgmlType::F32),
            Err(GgufError::ElementCountOverflow { .. })
        ));
        assert!(matches!(
            w.add_tensor("t", &[1 << 62], GgmlType::F32),
            Err(GgufError::TensorSizeOverflow { .. })
        ));
        w.add_tensor("t", &[2], GgmlType::F32).unwrap();
        assert!(matches!(
            w.add_tensor("t", &[2], GgmlType::F32),
            Err(GgufError::DuplicateTensor { .. })
        ));
    }

    #[test]
    fn streaming_checks_sizes_and_order() {
        let mut w = GgufWriter::new();
        w.add_tensor("a", &[4], GgmlType::F32).unwrap();
        w.add_tensor("b", &[0], GgmlType::F32).unwrap();
        w.add_tensor("c", &[2], GgmlType::F16).unwrap();
        let mut s = w.write_header(Vec::new()).unwrap();
        assert_eq!(s.next_tensor(), Some(("a", 16)));
        assert!(matches!(
            s.write_tensor(&[0; 15]),
            Err(GgufError::TensorData { .. })
        ));
        s.write_tensor_part(&[1; 10]).unwrap();
        assert!(matches!(
            s.write_tensor_part(&[1; 7]),
            Err(GgufError::TensorData { .. })
        ));
        s.write_tensor_part(&[1; 6]).unwrap();
        s.write_tensor(&[]).unwrap();
        assert_eq!(s.next_tensor(), Some(("c", 4)));
        let err = s.finish().unwrap_err();
        assert!(
            matches!(&err, GgufError::TensorData { name, .. } if name == "c"),
            "{err}"
        );
    }
}
