//! The contract between the generic GEMM drivers and the per-ISA microkernels: packed layouts
//! and the argument blocks a microkernel receives.
//!
//! # Int8 panel layout
//! Weights are cut into panels of [`PANEL`] = 16 output columns. Within a panel, K is cut into
//! kernel blocks of `kb` elements (32, or 16 for Q6_K). One (panel, block) cell is
//! `block_stride` bytes:
//!
//! ```text
//! [quants: kb/4 steps × 16 columns × 4 bytes][dw: 16 × f32][mw: 16 × f32, affine formats only]
//! ```
//!
//! Step `s` holds, for each column, the 4 consecutive K values `4s..4s+4` of that column, so one
//! 64-byte load feeds `vpdpbusd` (16 lanes × 4 bytes). Quants are stored unsigned:
//! `u = w + 128` for symmetric formats (Q8_0, Q4_0, Q5_0, Q6_K) and `u = q` for affine formats
//! (Q4_1, Q5_1, Q4_K, Q5_K), whose quants are unsigned already. `vpdpbusd` multiplies unsigned
//! by signed bytes, so the weight side is the unsigned one and the activation (signed int8,
//! broadcast) the other; for symmetric formats the `+128` is removed by starting each block's
//! i32 sum at `-128 * sum(a)`, precomputed per activation block. Affine formats add
//! `mw * sa` per block instead, with `sa = d_a * sum(a)`.
//!
//! # The reduction every ISA performs (the specification)
//! For output `(i, j)`: `acc = 0` (or C's current value when continuing a K chunk), then for each
//! block `b` in order: `isum` = exact i32 dot of the block, `acc = fma(d_a[i,b] * dw[j,b], isum
//! as f32, acc)`, and for affine formats `acc = fma(mw[j,b], sa[i,b], acc)`. Every ISA and tile
//! shape performs exactly these roundings, so results are bit-identical across ISAs, tile sizes,
//! batch sizes and thread counts.
//!
//! # Residual blocks
//! A matrix with residual blocks (`PackedMatrix::with_residual_blocks`) reduces, after its `nb`
//! packed blocks, `R` more *logical* blocks: logical block `nb + j` pairs activation block
//! `nb + j` (the residual of activation block `res[j]`) with the packed cell `res[j]` — the same
//! weights, stored once and re-read while still in cache. The reduction above runs over the
//! `nb + R` logical blocks in that order, with `dw[j, res[j]]` (and `mw`) for the extra ones.
//!
//! # Exact channels
//! A matrix with exact channels (`PackedMatrix::with_outliers`) has those input channels zeroed
//! before its activations are quantized; after the last logical block of a tile, for each exact
//! channel `c_s` in increasing order, `acc = fma(x[i, c_s], w[j, c_s], acc)` with the f32 input
//! and the dequantized weight (`gemm/exact.rs`). The reduction is otherwise unchanged.
//!
//! # f32 panel layout
//! Panels of 16 columns; for each k, the 16 column values (64 bytes). For output `(i, j)`:
//! `acc = fma(a[i,k], w[j,k], acc)` for k in order.

/// Output columns per packed panel.
pub const PANEL: usize = 16;

/// Geometry of an int8-packed matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Layout {
    /// Elements per kernel block (32, or 16 for Q6_K).
    pub kb: usize,
    /// Whether cells carry a min term (`mw`).
    pub affine: bool,
    /// Bytes per (panel, block) cell.
    pub block_stride: usize,
    /// Kernel blocks per row (`k / kb`).
    pub nb: usize,
    /// Bytes per panel (`nb * block_stride`).
    pub panel_stride: usize,
    /// Symmetric formats store `w` as i8 instead of `w + 128` as u8 (for kernels with a
    /// signed × signed instruction, AMX `tdpbssd`); no `-128 * sum(a)` correction is applied.
    pub signed: bool,
}

impl Int8Layout {
    pub fn new(kb: usize, affine: bool, k: usize) -> Self {
        let block_stride = kb * PANEL + 64 + if affine { 64 } else { 0 };
        let nb = k / kb;
        Int8Layout { kb, affine, block_stride, nb, panel_stride: nb * block_stride, signed: false }
    }
    /// Byte offset of the scales within a cell.
    pub fn dw_offset(&self) -> usize {
        self.kb * PANEL
    }
    /// Byte offset of the mins within a cell.
    pub fn mw_offset(&self) -> usize {
        self.kb * PANEL + 64
    }
}

/// One int8 microkernel call: `mr` rows × `ncols` columns (at most two panels) over `nblocks`
/// consecutive packed blocks, then `nres` residual blocks (see the module docs). All pointers
/// are positioned at the tile's first row / panel / block.
pub struct Int8Tile {
    /// Quantized activations, row 0 of the tile at the first block.
    pub a: *const i8,
    /// Bytes between activation rows.
    pub lda: usize,
    /// Activation scales `d_a`, one per (row, block).
    pub ad: *const f32,
    /// Symmetric formats: `-128 * sum(a)` per (row, block).
    pub ac: *const i32,
    /// Affine formats: `sa` per (row, block).
    pub asum: *const f32,
    /// Elements between rows of `ad` / `ac` / `asum`.
    pub lds: usize,
    /// The first panel's cell for the first block.
    pub w: *const u8,
    /// Consecutive packed blocks to reduce, from `w` on.
    pub nblocks: usize,
    /// The first panel's first cell: residual blocks address their cells from it.
    pub panel: *const u8,
    /// Packed block index of each residual block reduced after the `nblocks` (`nres` entries);
    /// residual block `j` is activation block `nblocks + j` of the tile.
    pub res: *const u32,
    /// Residual blocks to reduce.
    pub nres: usize,
    /// Output, row 0 column 0 of the tile.
    pub c: *mut f32,
    /// Elements between output rows.
    pub ldc: usize,
    /// Rows (1..=the kernel's MR).
    pub mr: usize,
    /// Valid columns (1..=the kernel's NR).
    pub ncols: usize,
    /// Continue from C's current values instead of starting from zero.
    pub accumulate: bool,
    /// The next column tile's first cell (same blocks as `w`), which a kernel may prefetch
    /// into L2 while it works on this one, or null. Only a hint: never dereferenced.
    pub prefetch: *const u8,
}

/// One f32 microkernel call.
pub struct F32Tile {
    /// Activations, row 0 of the tile at the first k.
    pub a: *const f32,
    /// Elements between activation rows.
    pub lda: usize,
    /// The first panel at the first k.
    pub w: *const f32,
    /// Elements between panels.
    pub panel_stride: usize,
    /// K values to reduce.
    pub kc: usize,
    /// Output, row 0 column 0 of the tile.
    pub c: *mut f32,
    /// Elements between output rows.
    pub ldc: usize,
    /// Rows (1..=the kernel's MR).
    pub mr: usize,
    /// Valid columns (1..=the kernel's NR).
    pub ncols: usize,
    /// Continue from C's current values instead of starting from zero.
    pub accumulate: bool,
}

/// An int8 microkernel: `tile` computes [`Int8Tile`]s of up to `mr` × `nr`.
#[derive(Clone, Copy)]
pub struct Int8Kernel {
    /// Largest row count per call.
    pub mr: usize,
    /// Largest column count per call (a multiple of [`PANEL`]).
    pub nr: usize,
    /// K elements per call (the K cache block).
    pub kc: usize,
    /// Whether symmetric formats are packed signed (see [`Int8Layout::signed`]).
    pub signed_weights: bool,
    /// # Safety
    /// The ISA must be supported, and the tile's pointers valid for the extents it describes
    /// (packed weights: `ncols.div_ceil(16)` whole panels of 16 columns, holding the `nblocks`
    /// cells from `w` and the cells `res` names; activations and their per-block arrays: `mr`
    /// rows rounded up to the kernel's MR, which the scratch provides, over `nblocks + nres`
    /// blocks).
    pub tile: unsafe fn(&Int8Tile, &Int8Layout),
}

/// An f32 microkernel.
#[derive(Clone, Copy)]
pub struct F32Kernel {
    /// Largest row count per call.
    pub mr: usize,
    /// Largest column count per call (a multiple of [`PANEL`]).
    pub nr: usize,
    /// # Safety
    /// As for [`Int8Kernel::tile`].
    pub tile: unsafe fn(&F32Tile),
}
