//! Weight matrices prepared for the GEMM, and the token embedding table.

use std::sync::Arc;

use gguf_format::GgufFile;
use quant_kernels::{GemmScratch, PackedMatrix, ParallelFor, QuantType, RowPrologue};

/// The parallel-for and GEMM scratch of one forward pass.
pub(crate) struct Exec<'a> {
    pub par: &'a dyn ParallelFor,
    pub gemm: &'a mut GemmScratch,
}

/// A weight matrix of `n` outputs by `k` inputs (ggml shape `[k, n]`), packed once at load.
#[derive(Debug)]
pub(crate) struct Linear {
    packed: PackedMatrix,
}

impl Linear {
    pub(crate) fn new(packed: PackedMatrix) -> Linear {
        Linear { packed }
    }

    /// `c[m × n] = a[m × k] · Wᵀ`.
    pub(crate) fn forward(&self, a: &[f32], m: usize, c: &mut [f32], exec: &mut Exec<'_>) {
        debug_assert!(a.len() == m * self.packed.k() && c.len() == m * self.packed.n());
        if let Err(e) = self.packed.matmul(a, m, c, exec.gemm, exec.par) {
            // The forward pass sizes every operand from the shapes checked at load.
            unreachable!("matmul operands are sized from validated shapes: {e}");
        }
    }

    /// `outs[i] = rows · W_iᵀ` for matrices reading the same activations, which `rows` computes
    /// row by row inside the matmul's parallel region (`rows.out` holds them afterwards);
    /// quantized once and run in one parallel region when the formats allow, bit-identical to
    /// separate [`Linear::forward`]s of the finished rows.
    pub(crate) fn forward_many_with<const N: usize>(
        mats: [&Linear; N],
        rows: RowPrologue<'_>,
        m: usize,
        mut outs: [&mut [f32]; N],
        exec: &mut Exec<'_>,
    ) {
        let packed = mats.map(|l| &l.packed);
        if let Err(e) = PackedMatrix::matmul_many_with(&packed, rows, m, &mut outs, exec.gemm, exec.par) {
            unreachable!("matmul operands are sized from validated shapes: {e}");
        }
    }

    /// The reduction length the kernels run (with residual blocks, more than the input width).
    pub(crate) fn packed_k(&self) -> usize {
        self.packed.packed_k()
    }

    /// Bytes of packed weights.
    pub(crate) fn packed_bytes(&self) -> usize {
        self.packed.packed_bytes()
    }
}

/// The token embedding table, left in the file in its own format; a lookup dequantizes one row.
#[derive(Debug)]
pub(crate) struct TokenEmbedding {
    file: Arc<GgufFile>,
    /// Absolute byte offset of row 0.
    start: usize,
    row_bytes: usize,
    ty: QuantType,
    dim: usize,
    vocab: usize,
}

impl TokenEmbedding {
    pub(crate) fn new(
        file: Arc<GgufFile>,
        start: usize,
        ty: QuantType,
        dim: usize,
        vocab: usize,
        row_bytes: usize,
    ) -> TokenEmbedding {
        TokenEmbedding {
            file,
            start,
            row_bytes,
            ty,
            dim,
            vocab,
        }
    }

    /// Vocabulary size.
    pub(crate) fn vocab(&self) -> usize {
        self.vocab
    }

    /// Writes the embedding of token `id` (checked by the caller to be `< vocab`) to `out`.
    pub(crate) fn row(&self, id: u32, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.dim);
        let at = self.start + id as usize * self.row_bytes;
        let bytes = &self.file.bytes()[at..at + self.row_bytes];
        if let Err(e) = quant_kernels::dequantize_row(self.ty, bytes, out) {
            // Load checked the type and the row length, so this is unreachable.
            unreachable!("embedding row geometry was validated at load: {e}");
        }
    }
}
