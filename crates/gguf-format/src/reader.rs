//! Parsing a whole file into an index of offsets, and the views handed out from it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use crate::cursor::Cursor;
use crate::error::GgufError;
use crate::ggml_type::{GgmlType, removed_type_name};
use crate::value::{Array, StrIter, Value, ValueType, parse_value};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";

/// ggml's `GGML_MAX_NAME`: tensor names must be shorter than this many bytes.
pub(crate) const MAX_NAME_BYTES: usize = 64;

/// ggml's `GGML_MAX_DIMS`.
pub(crate) const MAX_DIMS: u32 = 4;

/// Counts have been checked against the bytes left, but an index entry is several times
/// larger than the fewest bytes its encoding can take; capping the up-front reservation keeps
/// memory proportional to what is actually parsed, not to what a header claims.
fn prealloc(count: u64) -> usize {
    count.min(4096) as usize
}

/// Fewest bytes one metadata entry occupies: key length, type, a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// Fewest bytes one tensor info occupies: name length, dimension count, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

mod sealed {
    pub trait Sealed {}
}

/// Byte storage a [`Gguf`] can own or borrow: `&[u8]`, `Vec<u8>` or a [`Mapping`].
///
/// Sealed, because the index relies on the bytes never changing after parsing.
pub trait Storage: sealed::Sealed {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl sealed::Sealed for &[u8] {}
impl Storage for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl sealed::Sealed for Vec<u8> {}
impl Storage for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A read-only memory map of a GGUF file; see [`GgufFile::open`].
#[derive(Debug)]
pub struct Mapping {
    map: memmap2::Mmap,
}

impl sealed::Sealed for Mapping {}
impl Storage for Mapping {
    fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// A GGUF file on disk, memory-mapped. Share it as `Arc<GgufFile>`; tensor data is borrowed
/// straight from the map.
pub type GgufFile = Gguf<Mapping>;

impl Gguf<Mapping> {
    /// Maps the file at `path` read-only and parses it.
    ///
    /// # The memory-mapping contract
    ///
    /// The tensor and metadata slices this type hands out point into the page cache. They stay
    /// valid and unchanged only as long as nobody truncates or rewrites the file while it is
    /// mapped; this crate cannot enforce that. Model files are written once (by the converter,
    /// to a temporary name, then renamed into place), so a mapped file is never modified in
    /// place by this project. A process that overwrites a model file in place while another
    /// process maps it breaks the contract: reads may see torn data or fault (SIGBUS).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |error| GgufError::Io {
            path: path.to_owned(),
            error,
        };
        // Asked before opening: opening a FIFO would wait for a writer, and mapping a directory
        // or a device fails with a bare "No such device".
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            let what = if meta.is_dir() { "is a directory, not a GGUF file" } else { "is not a regular file" };
            return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what)));
        }
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: this is the one place the crate maps a file, and it upholds the contract
        // documented above: the map is read-only, and model files are never modified in place
        // while mapped (they are written to a temporary name and renamed). Everything read
        // through the map is bounds-checked against the length captured here, so a map of a
        // file that is still valid cannot be read out of bounds.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Gguf::parse(Mapping { map })
    }
}

/// A parsed GGUF file: its bytes plus an index of every key and tensor.
///
/// Parsing validates the whole header (every value, including every string in every array)
/// and every tensor's data range, so later accessors only decode and never fail on the file's
/// account. The index holds offsets, not references, which lets one type own a memory map
/// and still hand out borrowed views.
pub struct Gguf<S: Storage> {
    storage: S,
    index: Index,
}

/// A summary: the bytes and the vocabulary are far too long to print.
impl<S: Storage> std::fmt::Debug for Gguf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("len", &self.bytes().len())
            .field("version", &self.version())
            .field("alignment", &self.alignment())
            .field("data_offset", &self.data_offset())
            .field("metadata_len", &self.metadata_len())
            .field("tensor_count", &self.tensor_count())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Index {
    version: u32,
    alignment: u64,
    data_offset: u64,
    kvs: Vec<KvEntry>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorEntry>,
    names: HashMap<String, usize>,
}

#[derive(Debug)]
struct KvEntry {
    key: String,
    ty: ValueType,
    /// The encoded value, type tag excluded.
    value: Range<usize>,
}

#[derive(Debug)]
struct TensorEntry {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    /// Absolute byte range of the data.
    data: Range<usize>,
}

/// One tensor: its metadata and its bytes, borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TensorView<'a> {
    /// The tensor name.
    pub name: &'a str,
    /// Dimensions in ggml order: `shape[0]` (`ne0`) is the contiguous one.
    pub shape: &'a [u64],
    /// Element type.
    pub ggml_type: GgmlType,
    /// The data, exactly `ggml_type.tensor_bytes(shape)` bytes.
    pub data: &'a [u8],
    /// Absolute file offset of `data`.
    pub offset: u64,
}

impl TensorView<'_> {
    /// Number of elements (1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        // Parsing checked that the product fits in an i64.
        self.shape.iter().product()
    }

    /// Absolute byte range of the data within the file, for callers that keep an
    /// `Arc<GgufFile>` and slice [`Gguf::bytes`] later.
    pub fn data_range(&self) -> Range<usize> {
        let start = self.offset as usize;
        start..start + self.data.len()
    }
}

impl<S: Storage> Gguf<S> {
    /// Parses `storage` as a GGUF v2 or v3 file. Does no I/O.
    pub fn parse(storage: S) -> Result<Self, GgufError> {
        let index = Index::parse(storage.bytes())?;
        Ok(Gguf { storage, index })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.index.version
    }

    /// Alignment of tensor data (`general.alignment`, else 32).
    pub fn alignment(&self) -> u64 {
        self.index.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.index.data_offset
    }

    /// Number of metadata entries.
    pub fn metadata_len(&self) -> usize {
        self.index.kvs.len()
    }

    /// Every metadata entry in file order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, Value<'_>)> + '_ {
        self.index
            .kvs
            .iter()
            .map(|kv| (kv.key.as_str(), self.value_of(kv)))
    }

    fn value_of(&self, kv: &KvEntry) -> Value<'_> {
        let bytes = &self.bytes()[kv.value.clone()];
        let mut cur = Cursor::with_base(bytes, kv.value.start as u64);
        match parse_value(&mut cur, kv.ty, 0, false) {
            Ok(v) => v,
            Err(e) => {
                unreachable!("metadata was validated at parse time, yet re-decoding failed: {e}")
            }
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        let &i = self.index.keys.get(key)?;
        Some(self.value_of(&self.index.kvs[i]))
    }

    fn require(&self, key: &str) -> Result<Value<'_>, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<T, GgufError> {
        let v = self.require(key)?;
        let wide = v.as_i128().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: v.value_type(),
        })?;
        T::try_from(wide).map_err(|_| GgufError::OutOfRange {
            key: key.to_owned(),
            value: wide,
            expected,
        })
    }

    /// `key` as `u32`; any integer type is accepted if the value fits, since writers differ
    /// in the width they choose.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.integer(key, "u32")
    }

    /// `key` as `i32`; any integer type is accepted if the value fits.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.integer(key, "i32")
    }

    /// `key` as `u64`; any non-negative integer is accepted.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.integer(key, "u64")
    }

    /// `key` as `f32`; `FLOAT64` values are narrowed.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "f32",
            found: v.value_type(),
        })
    }

    /// `key` as `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "bool",
            found: v.value_type(),
        })
    }

    /// `key` as a string borrowed from the file.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "string",
            found: v.value_type(),
        })
    }

    /// `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<Array<'_>, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "array",
            found: v.value_type(),
        })
    }

    fn array_of(
        &self,
        key: &str,
        expected: &'static str,
        ok: impl Fn(ValueType) -> bool,
    ) -> Result<Array<'_>, GgufError> {
        let a = self.get_array(key)?;
        if ok(a.elem_type()) {
            Ok(a)
        } else {
            Err(GgufError::WrongType {
                key: key.to_owned(),
                expected,
                found: a.elem_type(),
            })
        }
    }

    /// `key` as an array of strings, each borrowed from the file (the vocabulary is read this
    /// way without a copy per token).
    pub fn get_str_array(&self, key: &str) -> Result<StrIter<'_>, GgufError> {
        let a = self.array_of(key, "array of string", |t| t == ValueType::String)?;
        a.strings().ok_or_else(|| GgufError::WrongType {
            key: key.to_owned(),
            expected: "array of string",
            found: a.elem_type(),
        })
    }

    /// `key` as an array of `f32` (copied; `FLOAT64` elements are narrowed).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let a = self.array_of(key, "array of f32", |t| {
            matches!(t, ValueType::F32 | ValueType::F64)
        })?;
        Ok(a.iter().filter_map(|v| v.as_f32()).collect())
    }

    /// `key` as an array of `i32` (copied); elements of any integer type are accepted if
    /// every one fits.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let a = self.array_of(key, "array of i32", |t| {
            matches!(
                t,
                ValueType::U8
                    | ValueType::I8
                    | ValueType::U16
                    | ValueType::I16
                    | ValueType::U32
                    | ValueType::I32
                    | ValueType::U64
                    | ValueType::I64
            )
        })?;
        a.iter()
            .map(|v| {
                let wide = v.as_i128().unwrap_or_default();
                i32::try_from(wide).map_err(|_| GgufError::OutOfRange {
                    key: key.to_owned(),
                    value: wide,
                    expected: "i32",
                })
            })
            .collect()
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.index.tensors.len()
    }

    /// Every tensor in file order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> + '_ {
        self.index.tensors.iter().map(|t| self.view(t))
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let &i = self.index.names.get(name)?;
        Some(self.view(&self.index.tensors[i]))
    }

    fn view<'a>(&'a self, t: &'a TensorEntry) -> TensorView<'a> {
        TensorView {
            name: &t.name,
            shape: &t.shape,
            ggml_type: t.ggml_type,
            data: &self.bytes()[t.data.clone()],
            offset: t.data.start as u64,
        }
    }
}

impl Index {
    fn parse(bytes: &[u8]) -> Result<Index, GgufError> {
        let mut cur = Cursor::new(bytes);
        let magic: [u8; 4] = cur.array("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = cur.u32("version")?;
        match version {
            2 | 3 => {}
            // A big-endian writer's small version number reads as 0xVV000000 here.
            v if v != 0 && v & 0xFFFF == 0 => return Err(GgufError::BigEndian { version: v }),
            v => return Err(GgufError::UnsupportedVersion { version: v }),
        }
        let n_tensors_offset = cur.offset();
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.count("metadata count", MIN_KV_BYTES)?;

        let mut kvs = Vec::with_capacity(prealloc(n_kv));
        let mut keys = HashMap::with_capacity(prealloc(n_kv));
        for _ in 0..n_kv {
            let key_offset = cur.offset();
            let key = cur.string("metadata key")?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { offset: key_offset });
            }
            if keys.contains_key(key) {
                return Err(GgufError::DuplicateKey {
                    key: key.to_owned(),
                    offset: key_offset,
                });
            }
            let type_offset = cur.offset();
            let id = cur.u32("metadata value type")?;
            let ty = ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
                id,
                offset: type_offset,
            })?;
            let start = cur.position();
            parse_value(&mut cur, ty, 0, true)?;
            keys.insert(key.to_owned(), kvs.len());
            kvs.push(KvEntry {
                key: key.to_owned(),
                ty,
                value: start..cur.position(),
            });
        }

        let alignment = match keys.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let kv = &kvs[i];
                if kv.ty != ValueType::U32 {
                    return Err(GgufError::AlignmentType { found: kv.ty });
                }
                let mut c = Cursor::new(&bytes[kv.value.clone()]);
                u64::from(c.u32("general.alignment")?)
            }
        };
        if !alignment.is_power_of_two() {
            return Err(GgufError::InvalidAlignment { alignment });
        }

        // Checked only now, against the bytes left after the metadata.
        let available = cur.remaining();
        let needed = n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES);
        if needed > available {
            return Err(GgufError::TooLong {
                what: "tensor count",
                offset: n_tensors_offset,
                count: n_tensors,
                needed,
                available,
            });
        }
        let mut infos = Vec::with_capacity(prealloc(n_tensors));
        let mut names = HashMap::with_capacity(prealloc(n_tensors));
        for _ in 0..n_tensors {
            let info = parse_tensor_info(&mut cur)?;
            if names.contains_key(info.name) {
                return Err(GgufError::DuplicateTensor {
                    name: info.name.to_owned(),
                    offset: info.offset,
                });
            }
            names.insert(info.name.to_owned(), infos.len());
            infos.push(info);
        }

        let header_end = cur.offset();
        let data_offset = header_end.next_multiple_of(alignment);
        let file_len = bytes.len() as u64;
        if n_tensors > 0 && data_offset > file_len {
            return Err(GgufError::Truncated {
                what: "padding before tensor data",
                offset: header_end,
                needed: data_offset - header_end,
                available: file_len - header_end,
            });
        }

        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            if info.data_offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor {
                    name: info.name.to_owned(),
                    data_offset: info.data_offset,
                    alignment,
                });
            }
            let start = data_offset.checked_add(info.data_offset);
            let end = start.and_then(|s| s.checked_add(info.n_bytes));
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if e <= file_len => (s as usize, e as usize),
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: info.name.to_owned(),
                        start: data_offset.saturating_add(info.data_offset),
                        end: data_offset
                            .saturating_add(info.data_offset)
                            .saturating_add(info.n_bytes),
                        file_len,
                    });
                }
            };
            tensors.push(TensorEntry {
                name: info.name.to_owned(),
                shape: info.shape,
                ggml_type: info.ggml_type,
                data: start..end,
            });
        }
        check_overlaps(&tensors)?;

        Ok(Index {
            version,
            alignment,
            data_offset,
            kvs,
            keys,
            tensors,
            names,
        })
    }
}

struct RawTensorInfo<'a> {
    name: &'a str,
    offset: u64,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    n_bytes: u64,
    data_offset: u64,
}

fn parse_tensor_info<'a>(cur: &mut Cursor<'a>) -> Result<RawTensorInfo<'a>, GgufError> {
    let offset = cur.offset();
    let name = cur.string("tensor name")?;
    if name.len() >= MAX_NAME_BYTES {
        return Err(GgufError::NameTooLong {
            name: name.to_owned(),
            offset,
            len: name.len(),
        });
    }
    let dims_offset = cur.offset();
    let n_dims = cur.u32("tensor dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            name: name.to_owned(),
            offset: dims_offset,
            n_dims,
        });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for dim in 0..n_dims as usize {
        let dim_offset = cur.offset();
        let value = cur.u64("tensor dimension")?;
        if value > i64::MAX as u64 {
            return Err(GgufError::DimTooLarge {
                name: name.to_owned(),
                offset: dim_offset,
                dim,
                value,
            });
        }
        shape.push(value);
    }
    let type_offset = cur.offset();
    let id = cur.u32("tensor type")?;
    let ggml_type = match GgmlType::from_id(id) {
        Some(t) => t,
        None => {
            return Err(match removed_type_name(id) {
                Some(type_name) => GgufError::RemovedTensorType {
                    name: name.to_owned(),
                    id,
                    type_name,
                    offset: type_offset,
                },
                None => GgufError::UnknownTensorType {
                    name: name.to_owned(),
                    id,
                    offset: type_offset,
                },
            });
        }
    };
    let n_bytes = checked_tensor_bytes(name, offset, &shape, ggml_type)?;
    let data_offset = cur.u64("tensor data offset")?;
    Ok(RawTensorInfo {
        name,
        offset,
        shape,
        ggml_type,
        n_bytes,
        data_offset,
    })
}

/// Validates a shape for `ggml_type` as llama.cpp does and returns its size in bytes.
pub(crate) fn checked_tensor_bytes(
    name: &str,
    offset: u64,
    shape: &[u64],
    ggml_type: GgmlType,
) -> Result<u64, GgufError> {
    let elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if !matches!(elements, Some(n) if n <= i64::MAX as u64) {
        return Err(GgufError::ElementCountOverflow {
            name: name.to_owned(),
            offset,
            shape: shape.to_vec(),
        });
    }
    let ne0 = shape.first().copied().unwrap_or(1);
    if ne0 % ggml_type.block_elems() != 0 {
        return Err(GgufError::PartialBlock {
            name: name.to_owned(),
            offset,
            ne0,
            ggml_type,
            block: ggml_type.block_elems(),
        });
    }
    ggml_type
        .tensor_bytes(shape)
        .ok_or_else(|| GgufError::TensorSizeOverflow {
            name: name.to_owned(),
            offset,
        })
}

fn check_overlaps(tensors: &[TensorEntry]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorEntry> = tensors.iter().filter(|t| !t.data.is_empty()).collect();
    order.sort_by_key(|t| t.data.start);
    let mut furthest: Option<&TensorEntry> = None;
    for t in order {
        if let Some(prev) = furthest
            && t.data.start < prev.data.end
        {
            return Err(GgufError::OverlappingTensors {
                name: t.name.clone(),
                other: prev.name.clone(),
                start: t.data.start as u64,
                end: t.data.end as u64,
            });
        }
        if furthest.is_none_or(|p| t.data.end > p.data.end) {
            furthest = Some(t);
        }
    }
    Ok(())
}
