//! Weight matrices prepared for the GEMM, and the token embedding table.

use std::sync::Arc;

use gguf_format::GgufFile;
use quant_kernels::QuantType;

pub use shim::{GemmScratch, ParallelFor, Serial};

/// Stand-ins until quant-kernels publishes its GEMM API.
mod shim {
    /// Splits work over threads.
    pub trait ParallelFor: Sync {
        /// Runs `f(0..n)`.
        fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync));
    }
    /// Runs everything on the calling thread.
    #[derive(Debug, Clone, Copy)]
    pub struct Serial;
    impl ParallelFor for Serial {
        fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            (0..n).for_each(f)
        }
    }
    /// GEMM packing buffers.
    #[derive(Debug, Default)]
    pub struct GemmScratch;
    impl GemmScratch {
        /// Empty buffers.
        pub fn new() -> Self {
            GemmScratch
        }
    }
}

use crate::attention::DenseGemm;

/// The parallel-for and GEMM scratch of one forward pass.
pub(crate) struct Exec<'a> {
    pub par: &'a dyn ParallelFor,
    pub gemm: &'a mut GemmScratch,
}

/// A weight matrix of `rows` outputs by `cols` inputs (ggml shape `[cols, rows]`).
#[derive(Debug)]
pub(crate) struct Linear {
    rows: usize,
    cols: usize,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Plain f32 rows, multiplied by the portable loops.
    F32(Vec<f32>),
}

impl Linear {
    /// A matrix from f32 rows (`rows × cols`, row-major).
    pub(crate) fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Linear {
        assert_eq!(data.len(), rows * cols);
        Linear { rows, cols, inner: Inner::F32(data) }
    }

    /// Output width.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// `c[m × rows] = a[m × cols] · Wᵀ`.
    pub(crate) fn forward(&self, a: &[f32], m: usize, c: &mut [f32], exec: &mut Exec<'_>) {
        let _ = &exec;
        match &self.inner {
            Inner::F32(w) => {
                crate::attention::PortableGemm.gemm_nt(a, w, c, m, self.rows, self.cols)
            }
        }
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
        TokenEmbedding { file, start, row_bytes, ty, dim, vocab }
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
