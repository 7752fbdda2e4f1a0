//! The crate's one error type.

use crate::QuantType;

/// Everything that can go wrong when a caller hands this crate bytes or shapes.
///
/// Kernels never panic on bad input: shapes and byte lengths are checked at the API boundary and
/// reported here. Once a [`crate::PackedMatrix`] exists, its shape is known to be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A row length is not a whole number of blocks of the format.
    #[error("{ty:?}: {elems} elements is not a multiple of the block size {block}")]
    RaggedRow {
        /// The format.
        ty: QuantType,
        /// The requested number of elements.
        elems: usize,
        /// The format's elements per block.
        block: usize,
    },
    /// A byte buffer does not have the length the format and element count imply.
    #[error("{ty:?}: expected {expected} bytes, got {actual}")]
    ByteLength {
        /// The format.
        ty: QuantType,
        /// Bytes the shape implies.
        expected: usize,
        /// Bytes supplied.
        actual: usize,
    },
    /// An output or input slice of elements has the wrong length.
    #[error("{what}: expected {expected} elements, got {actual}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements supplied.
        actual: usize,
    },
    /// The format has no implementation for the requested operation.
    #[error("{ty:?} is not supported for {op}")]
    Unsupported {
        /// The format.
        ty: QuantType,
        /// The operation (`"dequantize"`, `"matmul weights"`...).
        op: &'static str,
    },
    /// A row index lies outside the tensor.
    #[error("row {row} out of range for a tensor of {rows} rows")]
    RowOutOfRange {
        /// The requested row.
        row: usize,
        /// Rows in the tensor.
        rows: usize,
    },
    /// An offset or column index that must fall on a packed panel boundary does not.
    #[error("{what}: {value} is not a multiple of {align}")]
    Unaligned {
        /// Which argument.
        what: &'static str,
        /// The value supplied.
        value: usize,
        /// The multiple it must be.
        align: usize,
    },
    /// A shape whose element count overflows `usize` or is otherwise unusable.
    #[error("invalid shape {rows}x{cols}")]
    Shape {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
}
