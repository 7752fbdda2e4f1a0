//! The crate's one error type.

use std::path::PathBuf;

use crate::value::ValueType;

/// Everything that can go wrong reading or writing GGUF.
///
/// Parse errors carry the absolute byte `offset` of the field that failed, so a report on a
/// hostile or damaged file says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    // The io::Errors below are shown in the message and deliberately not exposed as
    // `source()`, so that printing the whole error chain does not repeat them.
    /// Opening or mapping a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Writing to the output of a [`GgufWriter`](crate::GgufWriter) failed.
    #[error("writing gguf data failed: {0}")]
    Write(std::io::Error),
    /// A fixed-size field runs past the end of the input.
    #[error("truncated at byte {offset}: {what} needs {needed} bytes, {available} remain")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the input from `offset`.
        available: u64,
    },
    /// A length or count needs more bytes than the input has left.
    #[error(
        "{what} at byte {offset} declares {count}, which needs at least {needed} bytes, but {available} remain"
    )]
    TooLong {
        /// What the length or count belongs to.
        what: &'static str,
        /// Where the length or count field starts.
        offset: u64,
        /// The declared length or count.
        count: u64,
        /// The least number of bytes that many items occupy (saturating).
        needed: u64,
        /// Bytes left after the field.
        available: u64,
    },
    /// The file does not start with `GGUF`.
    #[error("not a gguf file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version other than 2 or 3.
    #[error("unsupported gguf version {version} at byte 4 (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// The version field reads as a byte-swapped small number: a big-endian file.
    #[error(
        "gguf version field {version:#010x} at byte 4 looks byte-swapped; big-endian files are not supported"
    )]
    BigEndian {
        /// The version field as read little-endian.
        version: u32,
    },
    /// A string is not valid UTF-8.
    #[error("{what} at byte {offset} is not valid utf-8")]
    InvalidUtf8 {
        /// What the string is.
        what: &'static str,
        /// Where its bytes start.
        offset: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("unknown metadata value type {id} at byte {offset}")]
    UnknownValueType {
        /// The type id.
        id: u32,
        /// Where the type field starts.
        offset: u64,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::MAX_ARRAY_DEPTH).
    #[error("array at byte {offset} is nested deeper than {max} levels")]
    NestingTooDeep {
        /// Where the too-deep array's type field starts.
        offset: u64,
        /// The limit.
        max: u32,
    },
    /// An empty metadata key.
    #[error("metadata key at byte {offset} is empty")]
    EmptyKey {
        /// Where the key starts.
        offset: u64,
    },
    /// Two metadata entries with the same key.
    #[error("duplicate metadata key {key:?} at byte {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second occurrence starts (0 from the writer).
        offset: u64,
    },
    /// Two tensors with the same name.
    #[error("duplicate tensor name {name:?} at byte {offset}")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Where the second occurrence starts (0 from the writer).
        offset: u64,
    },
    /// `general.alignment` is not a `u32`.
    #[error("general.alignment has type {found}, expected UINT32")]
    AlignmentType {
        /// The type found.
        found: ValueType,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment is {alignment}, not a non-zero power of two")]
    InvalidAlignment {
        /// The value found.
        alignment: u64,
    },
    /// A tensor name of 64 bytes or more, which ggml cannot hold.
    #[error("tensor name {name:?} at byte {offset} is {len} bytes; ggml allows at most 63")]
    NameTooLong {
        /// The name.
        name: String,
        /// Where it starts (0 from the writer).
        offset: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// More than four dimensions.
    #[error("tensor {name:?} at byte {offset} has {n_dims} dimensions; at most 4 are allowed")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Where the dimension count starts (0 from the writer).
        offset: u64,
        /// The dimension count.
        n_dims: u32,
    },
    /// A dimension above `i64::MAX` (negative as ggml's signed `ne`).
    #[error("tensor {name:?} dimension {dim} at byte {offset} is {value}, beyond i64::MAX")]
    DimTooLarge {
        /// The tensor.
        name: String,
        /// Where the dimension starts.
        offset: u64,
        /// Which dimension (0 = ne0).
        dim: usize,
        /// The raw value.
        value: u64,
    },
    /// The element count overflows `i64`.
    #[error(
        "tensor {name:?} at byte {offset} has shape {shape:?} whose element count overflows i64"
    )]
    ElementCountOverflow {
        /// The tensor.
        name: String,
        /// Where the tensor info starts (0 from the writer).
        offset: u64,
        /// The shape, ne0 first.
        shape: Vec<u64>,
    },
    /// A tensor type id that llama.cpp does not define.
    #[error("tensor {name:?} has unknown ggml type {id} at byte {offset}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id.
        id: u32,
        /// Where the type field starts.
        offset: u64,
    },
    /// A tensor type id that llama.cpp has removed.
    #[error("tensor {name:?} has removed ggml type {id} ({type_name}) at byte {offset}")]
    RemovedTensorType {
        /// The tensor.
        name: String,
        /// The type id.
        id: u32,
        /// The type's old name.
        type_name: &'static str,
        /// Where the type field starts.
        offset: u64,
    },
    /// `ne0` is not a whole number of blocks of the tensor's type.
    #[error(
        "tensor {name:?} at byte {offset}: row of {ne0} elements is not a multiple of the {ggml_type} block of {block}"
    )]
    PartialBlock {
        /// The tensor.
        name: String,
        /// Where the tensor info starts (0 from the writer).
        offset: u64,
        /// Elements per row.
        ne0: u64,
        /// The type.
        ggml_type: crate::GgmlType,
        /// Elements per block.
        block: u64,
    },
    /// The tensor's size in bytes overflows `u64`.
    #[error("tensor {name:?} at byte {offset}: size in bytes overflows")]
    TensorSizeOverflow {
        /// The tensor.
        name: String,
        /// Where the tensor info starts (0 from the writer).
        offset: u64,
    },
    /// A tensor's data offset is not a multiple of the alignment.
    #[error(
        "tensor {name:?} data offset {data_offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor.
        name: String,
        /// Its offset relative to the data section.
        data_offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data lies (partly) beyond the end of the file.
    #[error(
        "tensor {name:?} data spans bytes {start}..{end}, beyond the end of the file at {file_len}"
    )]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start (saturating).
        start: u64,
        /// Absolute end (saturating).
        end: u64,
        /// The file length.
        file_len: u64,
    },
    /// Two tensors' data overlap.
    #[error("tensor {name:?} data at bytes {start}..{end} overlaps tensor {other:?}")]
    OverlappingTensors {
        /// The later tensor (by offset).
        name: String,
        /// The tensor it overlaps.
        other: String,
        /// Absolute start of `name`'s data.
        start: u64,
        /// Absolute end of `name`'s data.
        end: u64,
    },
    /// A getter found no such metadata key.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A getter found the key with a type it cannot convert.
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the getter accepts.
        expected: &'static str,
        /// What the file has.
        found: ValueType,
    },
    /// A getter found an integer that does not fit the requested type.
    #[error("metadata key {key:?} value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value found.
        value: i128,
        /// The requested type.
        expected: &'static str,
    },
    /// The writer was given tensor data of the wrong length or in the wrong order.
    #[error("tensor {name:?}: {detail}")]
    TensorData {
        /// The tensor.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// The writer was given something the GGUF format cannot represent.
    #[error("cannot write: {detail}")]
    Unrepresentable {
        /// What was wrong.
        detail: String,
    },
}

impl GgufError {
    /// Whether this is [`GgufError::MissingKey`], for callers treating a key as optional.
    pub fn is_missing_key(&self) -> bool {
        matches!(self, GgufError::MissingKey { .. })
    }
}
