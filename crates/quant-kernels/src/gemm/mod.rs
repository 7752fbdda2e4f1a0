//! GEMM `C[m×n] = A[m×k] · W[n×k]^T` with f32 activations and weights of any format.
//!
//! Weights are repacked once at load ([`PackedMatrix`]); each call quantizes the activations
//! once into [`GemmScratch`] and then runs a Goto-style blocked loop nest (row chunks × K chunks
//! × column panels × row tiles) around the ISA's register-tiled microkernel. Tiling, packing
//! and the loop nest are generic; only the microkernel differs per ISA.
//!
//! **Determinism:** every output element is one sequential reduction over K in a fixed order
//! (see `tile`), and work is split over tasks only along M and N, never along K. So a row of C
//! is bit-identical whatever the batch size, its neighbours, the thread count or the ISA.

pub(crate) mod act;
mod exact;
pub(crate) mod pack;
mod prepacked;
pub(crate) mod tile;

pub use prepacked::{F32PackBuf, F32Panels, gemm_f32_prepacked, pack_f32_nn_panels, pack_f32_nt_rows};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::aligned::AlignedBuf;
use crate::dispatch::Kernels;
use crate::parallel::{ParallelFor, SyncPtr};
use crate::arena::WeightSlot;
use crate::{KernelError, QuantType};
use act::ActFormat;
use exact::{ExactChannels, ExactTile};
use tile::{F32Tile, Int8Layout, Int8Tile, PANEL};

/// Rows per cache block of the int8 kernels (rounded up to the kernel's MR). Both x86 kernels
/// take K in chunks of 768 (`Int8Kernel::kc`), so the model's K = 768 matmuls (and their
/// residual tail) are one microkernel call per tile with no C round trips: the activation block
/// (24 × 768 bytes) and the weight tile no longer share L1, and the weights are re-read from L2
/// every 24 rows, a few bytes per cycle. On this Zen 4 class VM that measured faster end to end
/// than the VNNI kernel's earlier kc of 256, tuned on a Sapphire Rapids guest with a 48 KiB L1
/// (+5 % batch 32 coarse, +2 % fine, 18 paired rounds, 2026-12-01); 12 and 48 rows measured the
/// same as 24.
const MC_INT8: usize = 24;
/// Packed weight bytes per column block of the int8 kernels, re-read by each row block. This
/// VM's L2 is 1 MiB per core (lscpu's "2 MiB" counts both), yet 256 KiB, 512 KiB and 1 MiB
/// measured the same on the model's shapes at M = 32 and 256 (`gemm_table`, 2026-12-01): the
/// kernel's reads are prefetched well enough from L3 that the block size does not matter here.
const NC_INT8_BYTES: usize = 1 << 20;
/// Rows per cache block of the f32 kernels (a multiple of every f32 MR).
const MC_F32: usize = 96;
/// K elements per cache block for the f32 kernels: a 32-column weight tile is 32 KiB.
const KC_F32: usize = 256;

#[derive(Clone, Debug)]
enum Repr {
    Int8 { lay: Int8Layout, act: ActFormat },
    F32,
}

/// A weight matrix `W` (`n` rows × `k` columns, row-major as GGUF stores it) repacked for the
/// GEMM kernels of one [`Kernels`] table.
///
/// Memory: quantized formats become int8 panels of 16 columns with an f32 scale (and for Q4_1,
/// Q5_1, Q4_K, Q5_K an f32 min) per 16 columns × block: 1.125 bytes/weight for 32-element
/// symmetric blocks (Q8_0, Q4_0, Q5_0; Q8_0 on disk is 1.0625), 1.25 for affine formats and
/// Q6_K. F32/F16/BF16 weights and [`PackedMatrix::new_f32`] hold f32 panels: 4 bytes/weight.
#[derive(Clone)]
pub struct PackedMatrix {
    kernels: &'static Kernels,
    ty: QuantType,
    n: usize,
    k: usize,
    /// K-blocks (of 32) whose activations' quantization residual is multiplied too, after the
    /// last column, by the same packed weights (see [`PackedMatrix::with_residual_blocks`]).
    residual: Box<[u32]>,
    /// Input channels multiplied in f32 instead of int8 (see [`PackedMatrix::with_outliers`]).
    exact: ExactChannels,
    repr: Repr,
    data: Storage,
}

/// Where a matrix's activations get more precision than one int8 scale per 32 values (see
/// [`PackedMatrix::with_outliers`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outliers<'a> {
    /// 32-element K-blocks whose quantization residual is multiplied too, in this order.
    pub residual_blocks: &'a [usize],
    /// Input channels taken out of the int8 product and multiplied in f32, strictly increasing.
    pub exact_channels: &'a [usize],
}

/// Where a matrix's packed bytes live: its own heap buffer, or its slot of a model's shared
/// huge-page mapping ([`crate::weight_slots`]).
enum Storage {
    Heap(AlignedBuf),
    Slot(WeightSlot),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Heap(b) => b.bytes(),
            Storage::Slot(s) => s.bytes(),
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(b) => b.bytes_mut(),
            Storage::Slot(s) => s.bytes_mut(),
        }
    }
    fn as_f32(&self) -> &[f32] {
        let b = self.bytes();
        bytemuck::cast_slice(&b[..b.len() / 4 * 4])
    }
    fn len(&self) -> usize {
        self.bytes().len()
    }
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        // A slot has one owner; a clone gets its own heap copy.
        let mut b = AlignedBuf::zeroed(self.len());
        b.bytes_mut().copy_from_slice(self.bytes());
        Storage::Heap(b)
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("isa", &self.kernels.isa())
            .field("ty", &self.ty)
            .field("n", &self.n)
            .field("k", &self.k)
            .field("residual_blocks", &self.residual.len())
            .field("exact_channels", &self.exact.len())
            .field("repr", &self.repr)
            .field("packed_bytes", &self.data.len())
            .finish()
    }
}

fn check_shape(ty: QuantType, n: usize, k: usize, bytes: usize) -> Result<(), KernelError> {
    if !ty.is_weight_format() {
        return Err(KernelError::Unsupported {
            ty,
            op: "matmul weights",
        });
    }
    if n == 0 || k == 0 {
        return Err(KernelError::Shape { rows: n, cols: k });
    }
    let expected = ty
        .row_bytes(k)?
        .checked_mul(n)
        .ok_or(KernelError::Shape { rows: n, cols: k })?;
    if bytes != expected {
        return Err(KernelError::ByteLength {
            ty,
            expected,
            actual: bytes,
        });
    }
    Ok(())
}

impl PackedMatrix {
    /// Packs `W` (`n_rows` × `k_cols` elements of format `ty`, GGUF's `ne1` × `ne0`) for fast
    /// GEMM: quantized formats run the int8 kernels against activations quantized to the
    /// format's `vec_dot_type`; F32, F16 and BF16 run the f32 kernels.
    pub fn new(
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
    ) -> Result<Self, KernelError> {
        Self::with_outliers(kernels, ty, n_rows, k_cols, bytes, Outliers::default())
    }

    /// Packs `W` dequantized to f32: the GEMM then runs in f32 on f32 activations (the accuracy
    /// reference mode; 4 bytes per weight).
    pub fn new_f32(
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
    ) -> Result<Self, KernelError> {
        Self::build(kernels, ty, n_rows, k_cols, bytes, Outliers::default(), true, Self::heap)
    }

    /// Packs `W` like [`PackedMatrix::new`] and marks the 32-element K-blocks `blocks` (indices
    /// below `k_cols / 32`, each at most once) for a second product. Every call then multiplies
    /// those input channels twice: their quantized activations, and the quantization's residual
    /// (`x − dequantize(quantize(x))`) quantized again, after the last column and in the order
    /// of `blocks`. Those channels get about 15 bits of precision instead of 8, for the cost of
    /// `32 × blocks.len()` more columns of K in the kernel but no more packed bytes: the second
    /// product re-reads the block's packed weights (see [`Int8Tile`]), which a batch-1 call,
    /// bound by streaming weights from memory, finds still in cache.
    ///
    /// This is how a model keeps int8 speed where its activations have outlier channels: the
    /// few blocks whose scale dwarfs the rest carry most of the quantization error.
    ///
    /// Only formats of 32-element blocks with symmetric or Q8_1 activations (Q8_0, Q4_0, Q5_0,
    /// Q4_1, Q5_1) support it; others are [`KernelError::Unsupported`].
    pub fn with_residual_blocks(
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
        blocks: &[usize],
    ) -> Result<Self, KernelError> {
        let outliers = Outliers { residual_blocks: blocks, exact_channels: &[] };
        Self::with_outliers(kernels, ty, n_rows, k_cols, bytes, outliers)
    }

    /// [`PackedMatrix::with_residual_blocks`] with, besides residual blocks, *exact channels*:
    /// input channels whose activations skip the int8 quantization altogether. Each call zeroes
    /// them before quantizing (so their blocks' scales come from the remaining values) and, once
    /// a tile of the output is reduced, adds `x[i, c] · W[j, c]` in f32 for each exact channel
    /// `c` in increasing order, one fused multiply-add each, with `W[j, c]` dequantized at
    /// packing (held in f32 beside the packed weights: 4 bytes per row and channel).
    ///
    /// An activation block's rounding error is set by its largest value, and in transformer
    /// activations that is often one outlier channel: taking it out gives the rest of its block
    /// a finer scale, for `n` f32 multiply-adds per row instead of a residual block's `32 × n`
    /// int8 ones.
    ///
    /// Channels must be strictly increasing, below `k_cols`, and at most two per 32 inputs on
    /// average (`exact_channels.len() <= k_cols / 16`); the formats are those of residual
    /// blocks.
    pub fn with_outliers(
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
        outliers: Outliers<'_>,
    ) -> Result<Self, KernelError> {
        Self::build(kernels, ty, n_rows, k_cols, bytes, outliers, false, Self::heap)
    }

    /// A zeroed heap buffer of `len` bytes.
    fn heap(len: usize) -> Result<Storage, KernelError> {
        Ok(Storage::Heap(AlignedBuf::zeroed(len)))
    }

    /// Every constructor: checks the shape and the block list, then packs into the zeroed
    /// storage `dest` gives for the packed length (asked for only once the shape is known to
    /// match `bytes`, so a malformed shape never sizes an allocation). Quantized formats take
    /// the int8 kernels unless `f32`; float formats always take the f32 ones, which accept no
    /// residual blocks.
    #[allow(clippy::too_many_arguments)]
    fn build(
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
        outliers: Outliers<'_>,
        f32: bool,
        dest: impl FnOnce(usize) -> Result<Storage, KernelError>,
    ) -> Result<Self, KernelError> {
        check_shape(ty, n_rows, k_cols, bytes.len())?;
        let (blocks, channels) = (outliers.residual_blocks, outliers.exact_channels);
        if !channels.is_empty() {
            if f32 || !Self::supports_residual_blocks(ty, k_cols) {
                return Err(KernelError::Unsupported {
                    ty,
                    op: "exact channels",
                });
            }
            let increasing = channels.windows(2).all(|p| p[0] < p[1]);
            if !increasing || channels.len() > k_cols / 16 || channels[channels.len() - 1] >= k_cols {
                return Err(KernelError::Shape { rows: n_rows, cols: k_cols });
            }
        }
        if !blocks.is_empty() {
            if f32 || !Self::supports_residual_blocks(ty, k_cols) {
                return Err(KernelError::Unsupported {
                    ty,
                    op: "residual blocks",
                });
            }
            let nb = k_cols / 32;
            let mut seen = vec![false; nb];
            for &b in blocks {
                if b >= nb || std::mem::replace(&mut seen[b], true) {
                    return Err(KernelError::Shape { rows: n_rows, cols: b });
                }
            }
        }
        let repr = match pack::int8_format(ty, k_cols) {
            Some((mut lay, act)) if !f32 => {
                lay.signed = kernels.int8_kernel().signed_weights;
                Repr::Int8 { lay, act }
            }
            _ => Repr::F32,
        };
        let mut data = dest(Self::packed_len(ty, n_rows, k_cols, f32))?;
        // Exact channels read their weights from the packed cells (refused above for f32).
        let exact = match &repr {
            Repr::Int8 { lay, .. } => {
                pack::pack_int8_into(data.bytes_mut(), ty, n_rows, k_cols, bytes, lay);
                ExactChannels::new(data.bytes(), lay, n_rows, channels)
            }
            Repr::F32 => {
                pack::pack_f32_from_into(bytemuck::cast_slice_mut(data.bytes_mut()), ty, n_rows, k_cols, bytes)?;
                ExactChannels::default()
            }
        };
        Ok(PackedMatrix {
            kernels,
            ty,
            n: n_rows,
            k: k_cols,
            residual: blocks.iter().map(|&b| b as u32).collect(),
            exact,
            repr,
            data,
        })
    }

    /// Bytes the packed form of an `n_rows × k_cols` matrix of format `ty` takes: what
    /// [`PackedMatrix::new`] and [`PackedMatrix::with_residual_blocks`] (`f32 = false`) or
    /// [`PackedMatrix::new_f32`] (`f32 = true`) hold, and the slot size
    /// [`PackedMatrix::pack_in`] needs. Residual blocks add no bytes; exact channels are held apart.
    pub fn packed_len(ty: QuantType, n_rows: usize, k_cols: usize, f32: bool) -> usize {
        match pack::int8_format(ty, k_cols) {
            Some((lay, _)) if !f32 => pack::int8_len(n_rows, &lay),
            _ => pack::f32_len(n_rows, k_cols) * 4,
        }
    }

    /// Whether [`PackedMatrix::with_residual_blocks`] accepts a non-empty block list for this
    /// format and width.
    pub fn supports_residual_blocks(ty: QuantType, k_cols: usize) -> bool {
        matches!(pack::int8_format(ty, k_cols), Some((lay, ActFormat::Q8_0 | ActFormat::Q8_1)) if lay.kb == 32 && ty.block_elems() == 32)
    }

    /// [`PackedMatrix::with_outliers`] (`f32 = false`) or [`PackedMatrix::new_f32`]
    /// (`f32 = true`, no outliers), packed into `slot` (of [`PackedMatrix::packed_len`] bytes, from
    /// [`crate::weight_slots`]) instead of a buffer of its own: same bytes, same results.
    #[allow(clippy::too_many_arguments)]
    pub fn pack_in(
        slot: WeightSlot,
        kernels: &'static Kernels,
        ty: QuantType,
        n_rows: usize,
        k_cols: usize,
        bytes: &[u8],
        outliers: Outliers<'_>,
        f32: bool,
    ) -> Result<Self, KernelError> {
        Self::build(kernels, ty, n_rows, k_cols, bytes, outliers, f32, |len| {
            check_len("weight slot", len, slot.len())?;
            Ok(Storage::Slot(slot))
        })
    }

    /// Packs an f32 matrix given as values (`n_rows` × `k_cols`, row-major).
    pub fn from_f32(
        kernels: &'static Kernels,
        n_rows: usize,
        k_cols: usize,
        w: &[f32],
    ) -> Result<Self, KernelError> {
        Self::new_f32(
            kernels,
            QuantType::F32,
            n_rows,
            k_cols,
            bytemuck::cast_slice(w),
        )
    }

    /// Output columns (`W`'s rows).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction length (`W`'s columns).
    pub fn k(&self) -> usize {
        self.k
    }
    /// K-blocks whose activation residual is multiplied too ([`PackedMatrix::with_residual_blocks`]).
    pub fn residual_blocks(&self) -> usize {
        self.residual.len()
    }
    /// Input channels multiplied in f32 ([`PackedMatrix::with_outliers`]).
    pub fn exact_channels(&self) -> usize {
        self.exact.len()
    }
    /// The reduction length the kernels run: `k` plus 32 per residual block.
    pub fn packed_k(&self) -> usize {
        self.k + 32 * self.residual.len()
    }
    /// The source format.
    pub fn ty(&self) -> QuantType {
        self.ty
    }
    /// Whether this matrix multiplies in f32 (float formats and [`PackedMatrix::new_f32`]).
    pub fn is_f32(&self) -> bool {
        matches!(self.repr, Repr::F32)
    }
    /// The kernel table this matrix was packed for.
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }
    /// Bytes of packed weights held.
    pub fn packed_bytes(&self) -> usize {
        self.data.len()
    }

    /// `C = A · W^T` for `a` (`m` × `k`, row-major) into `c` (`m` × `n`, row-major, overwritten).
    pub fn matmul(
        &self,
        a: &[f32],
        m: usize,
        c: &mut [f32],
        scratch: &mut GemmScratch,
        par: &dyn ParallelFor,
    ) -> Result<(), KernelError> {
        check_len("a", m * self.k, a.len())?;
        check_len("c", m * self.n, c.len())?;
        if m == 0 {
            return Ok(());
        }
        match &self.repr {
            Repr::Int8 { lay, act } => {
                let mut src = Src::Ready { a, k: self.k };
                let stage = scratch.quant_stage(self.kernels, *act, lay, &mut src, m, self.k, (&self.residual, &self.exact.idx), par);
                run_int8(
                    self.kernels,
                    &[Some(self.int8_job(lay, m, c, par.num_threads()))],
                    (scratch, &Prologue::new(stage)),
                    m,
                    self.packed_k(),
                    par,
                );
            }
            Repr::F32 => run_f32(
                self.kernels,
                &[Some(self.f32_job(m, c, par.num_threads()))],
                (a, self.k),
                m,
                self.k,
                par,
            ),
        }
        Ok(())
    }

    /// `outs[i] = A · W_iᵀ` for several matrices that read the same activations (the Q, K and V
    /// projections, or gate and up): when they share a kernel table, a representation and an
    /// activation format, `a` is quantized once and all products run in one parallel region,
    /// so a fine-grained caller pays one barrier instead of one per matrix. Each output is
    /// bit-identical to [`PackedMatrix::matmul`] of its own matrix.
    pub fn matmul_many(
        mats: &[&PackedMatrix],
        a: &[f32],
        m: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut GemmScratch,
        par: &dyn ParallelFor,
    ) -> Result<(), KernelError> {
        let k = a.len().checked_div(m).unwrap_or(0);
        Self::matmul_many_src(mats, Src::Ready { a, k }, m, outs, scratch, par)
    }

    /// [`PackedMatrix::matmul_many`] of the activations `rows` computes row by row (see
    /// [`RowPrologue`]): the per-row work runs inside the GEMM's parallel region, on every
    /// thread, where a caller computing the rows first would run it on one thread between two
    /// parallel regions. Outputs, and `rows.out` afterwards, are bit-identical to computing
    /// the rows first and calling [`PackedMatrix::matmul_many`] on them.
    pub fn matmul_many_with(
        mats: &[&PackedMatrix],
        rows: RowPrologue<'_>,
        m: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut GemmScratch,
        par: &dyn ParallelFor,
    ) -> Result<(), KernelError> {
        let state_width = rows.state.len().checked_div(m).unwrap_or(0);
        check_len("rows.state", m * state_width, rows.state.len())?;
        let k = rows.out.len().checked_div(m).unwrap_or(0);
        let src = Src::Computed {
            state: rows.state,
            state_width,
            out: rows.out,
            k,
            f: rows.f,
        };
        Self::matmul_many_src(mats, src, m, outs, scratch, par)
    }

    fn matmul_many_src(
        mats: &[&PackedMatrix],
        src: Src<'_>,
        m: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut GemmScratch,
        par: &dyn ParallelFor,
    ) -> Result<(), KernelError> {
        check_len("outputs", mats.len(), outs.len())?;
        for w in mats {
            check_len("a", m * w.k, src.len())?;
        }
        let Some(first) = mats.first() else {
            // Nothing reads the rows, but a prologue's caller still gets them (and its state).
            src.materialize(m, par);
            return Ok(());
        };
        for (w, c) in mats.iter().zip(outs.iter()) {
            check_len("c", m * w.n, c.len())?;
        }
        if m == 0 {
            return Ok(());
        }
        let fusable = mats.len() <= MAX_FUSED
            && mats.iter().all(|w| {
                std::ptr::eq(w.kernels, first.kernels)
                    && w.residual == first.residual
                    && w.exact.idx == first.exact.idx
                    && match (&w.repr, &first.repr) {
                        (Repr::F32, Repr::F32) => true,
                        (Repr::Int8 { lay, act }, Repr::Int8 { lay: l0, act: a0 }) => {
                            act == a0 && lay.kb == l0.kb
                        }
                        _ => false,
                    }
            });
        if !fusable {
            let a = src.materialize(m, par);
            for (w, c) in mats.iter().zip(outs.iter_mut()) {
                w.matmul(a, m, c, scratch, par)?;
            }
            return Ok(());
        }
        let threads = par.num_threads();
        // Fixed-size job lists keep the call allocation-free.
        match &first.repr {
            Repr::Int8 { lay, act } => {
                let mut src = src;
                let stage = scratch.quant_stage(first.kernels, *act, lay, &mut src, m, first.k, (&first.residual, &first.exact.idx), par);
                let mut jobs: [Option<Int8Job<'_>>; MAX_FUSED] = [None, None, None, None];
                for ((slot, w), c) in jobs.iter_mut().zip(mats).zip(outs.iter_mut()) {
                    if let Repr::Int8 { lay, .. } = &w.repr {
                        *slot = Some(w.int8_job(lay, m, c, threads));
                    }
                }
                run_int8(first.kernels, &jobs[..mats.len()], (scratch, &Prologue::new(stage)), m, first.packed_k(), par);
            }
            Repr::F32 => {
                let a = src.materialize(m, par);
                let mut jobs: [Option<F32Job>; MAX_FUSED] = [None, None, None, None];
                for ((slot, w), c) in jobs.iter_mut().zip(mats).zip(outs.iter_mut()) {
                    *slot = Some(w.f32_job(m, c, threads));
                }
                run_f32(first.kernels, &jobs[..mats.len()], (a, first.k), m, first.k, par);
            }
        }
        Ok(())
    }

    fn int8_job<'l>(
        &'l self,
        lay: &'l Int8Layout,
        m: usize,
        c: &mut [f32],
        threads: usize,
    ) -> Int8Job<'l> {
        let kern = self.kernels.int8_kernel();
        Int8Job {
            lay,
            res: &self.residual,
            exact: (self.exact.len(), SyncPtr(self.exact.w.as_ptr().cast_mut())),
            w: SyncPtr(self.data.bytes().as_ptr().cast_mut()),
            c: SyncPtr(c.as_mut_ptr()),
            n: self.n,
            plan: Plan::new(m, self.n, kern.mr, kern.nr, threads),
        }
    }

    fn f32_job(&self, m: usize, c: &mut [f32], threads: usize) -> F32Job {
        let kern = self.kernels.f32_kernel();
        F32Job {
            w: SyncPtr(self.data.as_f32().as_ptr().cast_mut()),
            panel_stride: self.k * PANEL,
            c: SyncPtr(c.as_mut_ptr()),
            n: self.n,
            plan: Plan::new(m, self.n, kern.mr, kern.nr, threads),
        }
    }
}

/// One product of a (possibly fused) int8 GEMM call: its packed weights, its output and how it
/// is cut into tasks. The pointers come from live borrows held by the caller for the whole call.
struct Int8Job<'l> {
    lay: &'l Int8Layout,
    /// The packed blocks whose cells the residual blocks re-read (see `tile`).
    res: &'l [u32],
    /// Exact channels: how many, and their f32 weights per panel.
    exact: (usize, SyncPtr<f32>),
    w: SyncPtr<u8>,
    c: SyncPtr<f32>,
    n: usize,
    plan: Plan,
}

/// One product of a (possibly fused) f32 GEMM call; see [`Int8Job`].
struct F32Job {
    /// The first column's panel at the first reduced k.
    w: SyncPtr<f32>,
    /// Elements between panels: the packed operand's whole K, which a K sub-range does not
    /// change.
    panel_stride: usize,
    c: SyncPtr<f32>,
    n: usize,
    plan: Plan,
}

/// Most matrices [`PackedMatrix::matmul_many`] fuses into one parallel region.
const MAX_FUSED: usize = 4;

/// The job owning global task `t`, and `t`'s index within it.
fn locate<J>(jobs: &[Option<J>], plan: impl Fn(&J) -> &Plan, mut t: usize) -> (&J, usize) {
    for j in jobs.iter().flatten() {
        let n = plan(j).n_tasks();
        if t < n {
            return (j, t);
        }
        t -= n;
    }
    unreachable!("task index below the total task count")
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), KernelError> {
    if expected != actual {
        return Err(KernelError::Length {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

/// `f(r, state_r, out_r)` of a [`RowPrologue`].
pub type RowFn<'a> = dyn Fn(usize, &mut [f32], &mut [f32]) + Sync + 'a;

/// Per-row work that produces a GEMM's activations, for [`PackedMatrix::matmul_many_with`]:
/// `f(r, state_r, out_r)` is called once for every row `r < m`, on some thread, with row `r`
/// of `state` (`m` rows of equal width, which it may update: a residual stream, say) and row
/// `r` of `out` (`m × k`, holding whatever the caller left there), which it must overwrite with
/// the activations. `out` then holds them all, as if the caller had computed them first.
/// `f` must not itself run work on the call's [`ParallelFor`]: other tasks of the region wait
/// for the rows it computes.
pub struct RowPrologue<'a> {
    /// Per-row state the prologue reads and may update (`m` rows).
    pub state: &'a mut [f32],
    /// The activations, `m × k`, written by the prologue.
    pub out: &'a mut [f32],
    /// The per-row work.
    pub f: &'a RowFn<'a>,
}

/// Where a GEMM call's activation rows come from.
enum Src<'a> {
    /// `m × k`, ready.
    Ready { a: &'a [f32], k: usize },
    /// Computed row by row by a [`RowPrologue`] (lengths checked by the caller).
    Computed {
        state: &'a mut [f32],
        state_width: usize,
        out: &'a mut [f32],
        k: usize,
        f: &'a RowFn<'a>,
    },
}

impl<'a> Src<'a> {
    /// Tasks that may call [`RowSrc::row`] concurrently, each for its own rows.
    fn rows(&mut self) -> RowSrc<'_> {
        match self {
            Src::Ready { a, k } => RowSrc::Ready { a, k: *k },
            Src::Computed { state, state_width, out, k, f } => RowSrc::Computed {
                state: SyncPtr(state.as_mut_ptr()),
                state_width: *state_width,
                out: SyncPtr(out.as_mut_ptr()),
                k: *k,
                f: *f,
            },
        }
    }

    /// Values held: `m × k` when the call is well-formed.
    fn len(&self) -> usize {
        match self {
            Src::Ready { a, .. } => a.len(),
            Src::Computed { out, .. } => out.len(),
        }
    }

    /// Whether computing a row costs more than quantizing it: then even a small call is worth
    /// spreading over the threads.
    fn computed(&self) -> bool {
        matches!(self, Src::Computed { .. })
    }

    /// All `m` rows, computing them (in one parallel region) if they are not ready.
    fn materialize(mut self, m: usize, par: &dyn ParallelFor) -> &'a [f32] {
        if self.computed() {
            let rows = self.rows();
            let per_task = par.items_per_task(m);
            par.run(m.div_ceil(per_task), &|t| {
                for r in t * per_task..((t + 1) * per_task).min(m) {
                    // SAFETY: task t alone asks for rows t·per_task.., each once.
                    unsafe { rows.row(r) };
                }
            });
        }
        match self {
            Src::Ready { a, .. } => a,
            Src::Computed { out, .. } => out,
        }
    }
}

/// [`Src`] as tasks share it.
#[derive(Clone, Copy)]
enum RowSrc<'s> {
    Ready { a: &'s [f32], k: usize },
    Computed {
        state: SyncPtr<f32>,
        state_width: usize,
        out: SyncPtr<f32>,
        k: usize,
        f: &'s RowFn<'s>,
    },
}

impl<'s> RowSrc<'s> {
    /// Row `r` of the activations (`k` values), computed first if need be.
    ///
    /// # Safety
    /// `r < m`, and while this call's result lives no other call may ask for row `r`: each row
    /// is computed once, by the one task that owns it.
    unsafe fn row(self, r: usize) -> &'s [f32] {
        match self {
            RowSrc::Ready { a, k } => &a[r * k..(r + 1) * k],
            RowSrc::Computed { state, state_width, out, k, f } => {
                // SAFETY: both buffers hold m rows (checked when the prologue was accepted) and
                // the caller gives row r to one task only, so these views alias nothing.
                let (st, o) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(state.ptr().add(r * state_width), state_width),
                        std::slice::from_raw_parts_mut(out.ptr().add(r * k), k),
                    )
                };
                f(r, st, o);
                o
            }
        }
    }
}

/// Reusable per-caller buffers for [`PackedMatrix::matmul`] and the unpacked f32 GEMMs: the
/// quantized activations and a weight pack. Grows to the largest call seen, then stops
/// allocating.
#[derive(Clone, Default)]
pub struct GemmScratch {
    q: AlignedBuf,
    ad: AlignedBuf,
    ac: AlignedBuf,
    asum: AlignedBuf,
    wpack: AlignedBuf,
    /// Per quantization task, one row: its copy with the exact channels zeroed, then its
    /// residual blocks (f32, before their quantization).
    wide: AlignedBuf,
    /// The exact channels' f32 inputs, per row.
    xs: AlignedBuf,
}

impl std::fmt::Debug for GemmScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmScratch")
            .field("bytes", &self.allocated_bytes())
            .finish()
    }
}

impl GemmScratch {
    /// Empty scratch; the first calls size it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently reserved.
    pub fn allocated_bytes(&self) -> usize {
        [&self.q, &self.ad, &self.ac, &self.asum, &self.wpack, &self.wide, &self.xs]
            .iter()
            .map(|b| b.capacity_bytes())
            .sum()
    }

    /// Reserves room for quantizing activations of up to `m` rows × `k` columns (for a matrix
    /// with residual blocks, its [`PackedMatrix::packed_k`]), so that later
    /// [`PackedMatrix::matmul`] calls up to that size never allocate (callers whose row counts
    /// vary with scheduling use this to keep a steady state allocation-free).
    pub fn reserve_activations(&mut self, m: usize, k: usize) {
        // Rows rounded up past any kernel's MR; the smallest block length (Q6_K's 16) gives
        // the most per-block values.
        self.ensure_activations(m.next_multiple_of(64), k, k.div_ceil(16));
    }

    /// Room for `rows` quantized activation rows of `k` values in `nb` blocks each.
    fn ensure_activations(&mut self, rows: usize, k: usize, nb: usize) {
        self.q.ensure(rows * k);
        for b in [&mut self.ad, &mut self.ac, &mut self.asum] {
            b.ensure(rows * nb * 4);
        }
        // A matrix has at most two exact channels per block of its input.
        self.xs.ensure(rows * 2 * nb * 4);
        // A task's row copy and residual tail together are the widened row.
        self.wide.ensure(MAX_QUANT_TASKS * k * 4);
    }

    /// Reserves room for packing the right-hand operand of [`gemm_f32_nt`] (`n × k`) or
    /// [`gemm_f32_nn`] (`k × n`).
    pub fn reserve_f32_operand(&mut self, n: usize, k: usize) {
        self.wpack.ensure(n.div_ceil(PANEL) * k * PANEL * 4);
    }

    /// Prepares the quantization of `src` (`m × k`) for a matrix packed with `lay`, to be run
    /// by [`Prologue::ready`] inside the GEMM's own parallel region; with residual blocks, each
    /// row is widened to `k + 32·residual.len()` quantized values: the row, then for each
    /// residual block `x − q·d` of that block's own quantization, quantized in turn. The
    /// quantizers work block by block, so the row and its residual tail are quantized separately
    /// (no widened f32 copy of the row) with the same bits as one pass over the widened row.
    /// With exact channels, a copy of the row with those channels zeroed is quantized instead,
    /// and their values go to `xs`.
    #[allow(clippy::too_many_arguments)]
    fn quant_stage<'s>(
        &mut self,
        kernels: &'s Kernels,
        fmt: ActFormat,
        lay: &'s Int8Layout,
        src: &'s mut Src<'_>,
        m: usize,
        k_in: usize,
        (residual, exact): (&'s [u32], &'s [u32]),
        par: &dyn ParallelFor,
    ) -> QuantStage<'s> {
        let k = k_in + 32 * residual.len();
        // Room for whole row tiles: a kernel may read (and discard) rows up to MR - 1 past m.
        self.ensure_activations(m.next_multiple_of(kernels.int8_kernel().mr), k, k / lay.kb);
        // Below this many elements splitting costs more than the quantization it splits.
        const SERIAL_QUANT_ELEMS: usize = 32 * 1024;
        // Rows computed here (norms, say) make even a small call worth spreading.
        let rows_per_task = if par.num_threads() <= 1 {
            m
        } else if src.computed() {
            par.items_per_task(m)
        } else if m * k <= SERIAL_QUANT_ELEMS {
            m
        } else {
            par.items_per_task(m).max(8)
        }
        .max(m.div_ceil(MAX_QUANT_TASKS));
        QuantStage {
            kernels,
            fmt,
            lay,
            residual,
            exact,
            m,
            k_in,
            rows_per_task,
            n_tasks: m.div_ceil(rows_per_task),
            wide: SyncPtr(self.wide.as_f32_mut().as_mut_ptr()),
            xs: SyncPtr(self.xs.as_f32_mut().as_mut_ptr()),
            q: SyncPtr(self.q.bytes_mut().as_mut_ptr().cast::<i8>()),
            ad: SyncPtr(self.ad.as_f32_mut().as_mut_ptr()),
            ac: SyncPtr(self.ac.as_i32_mut().as_mut_ptr()),
            asum: SyncPtr(self.asum.as_f32_mut().as_mut_ptr()),
            rows: src.rows(),
        }
    }
}

/// One activation quantization (and the per-row work that computes its rows), cut into tasks
/// of whole rows; see [`GemmScratch::quant_stage`]. The pointers were sized for it there.
struct QuantStage<'s> {
    kernels: &'s Kernels,
    fmt: ActFormat,
    lay: &'s Int8Layout,
    residual: &'s [u32],
    exact: &'s [u32],
    m: usize,
    k_in: usize,
    rows_per_task: usize,
    n_tasks: usize,
    wide: SyncPtr<f32>,
    xs: SyncPtr<f32>,
    q: SyncPtr<i8>,
    ad: SyncPtr<f32>,
    ac: SyncPtr<i32>,
    asum: SyncPtr<f32>,
    rows: RowSrc<'s>,
}

impl QuantStage<'_> {
    /// Quantizes task `t`'s rows.
    ///
    /// # Safety
    /// `t < n_tasks`, and each `t` is run at most once (tasks own disjoint rows and scratch).
    unsafe fn run(&self, t: usize) {
        let (kernels, fmt, lay, residual, exact) = (self.kernels, self.fmt, self.lay, self.residual, self.exact);
        let k_in = self.k_in;
        let k = k_in + 32 * residual.len();
        let (nb_in, nb) = (k_in / lay.kb, k / lay.kb);
        let s_n = exact.len();
        let (r0, r1) = (t * self.rows_per_task, ((t + 1) * self.rows_per_task).min(self.m));
        for r in r0..r1 {
            // SAFETY: the buffers were sized for m rows by `quant_stage`; tasks own disjoint row
            // ranges, so these mutable views never alias.
            let (qr, adr, acr, asr) = unsafe {
                (
                    std::slice::from_raw_parts_mut(self.q.ptr().add(r * k), k),
                    std::slice::from_raw_parts_mut(self.ad.ptr().add(r * nb), nb),
                    std::slice::from_raw_parts_mut(self.ac.ptr().add(r * nb), nb),
                    std::slice::from_raw_parts_mut(self.asum.ptr().add(r * nb), nb),
                )
            };
            // SAFETY: `wide` holds MAX_QUANT_TASKS rows of k values (ensured by `quant_stage`)
            // and task t < MAX_QUANT_TASKS alone uses row t; `xs` holds s_n <= 2·nb values for
            // each of the m rows, and this task alone owns row r.
            let (zrow, res, xsr) = unsafe {
                let w = std::slice::from_raw_parts_mut(self.wide.ptr().add(t * k), k);
                let (z, res) = w.split_at_mut(k_in);
                (z, res, std::slice::from_raw_parts_mut(self.xs.ptr().add(r * s_n), s_n))
            };
            // SAFETY: r < m, and this task alone owns row r.
            let mut x = unsafe { self.rows.row(r) };
            if s_n > 0 {
                zrow.copy_from_slice(x);
                for (v, &c) in xsr.iter_mut().zip(exact) {
                    *v = std::mem::take(&mut zrow[c as usize]);
                }
                x = zrow;
            }
            let (q_in, q_res) = qr.split_at_mut(k_in);
            let (ad_in, ad_res) = adr.split_at_mut(nb_in);
            let (ac_in, ac_res) = acr.split_at_mut(nb_in);
            let (as_in, as_res) = asr.split_at_mut(nb_in);
            act::quantize_row(kernels, fmt, lay, x, q_in, ad_in, ac_in, as_in);
            if residual.is_empty() {
                continue;
            }
            residual_tail(x, q_in, ad_in, residual, res);
            act::quantize_row(kernels, fmt, lay, res, q_res, ad_res, ac_res, as_res);
        }
    }
}

/// A [`QuantStage`] run by the tasks of the GEMM that reads it, in the same parallel region:
/// each task first takes quantization tasks until none is left, then waits for the ones other
/// threads took, and only then multiplies. One region per matmul instead of two (a
/// quantization region, then the GEMM's) takes a barrier out of every matmul, most of the
/// time it costs at batch 1, where a layer is a string of short regions. Waiting is safe: a
/// quantization task is only ever waited for while the thread that took it is running it, and
/// it runs to its end without waiting for anything (a [`RowPrologue`] runs no parallel work).
struct Prologue<'s> {
    stage: QuantStage<'s>,
    next: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicBool,
}

impl<'s> Prologue<'s> {
    fn new(stage: QuantStage<'s>) -> Self {
        Prologue {
            stage,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Runs quantization tasks until none is left, then waits until every one has finished.
    /// False if one panicked: the panic reaches the caller through the parallel-for, and the
    /// GEMM task must not read the activations.
    fn ready(&self) -> bool {
        /// Counts a task as finished however it ends, so that no waiter spins forever.
        struct Finish<'a>(&'a Prologue<'a>);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.failed.store(true, Ordering::Relaxed);
                }
                self.0.done.fetch_add(1, Ordering::Release);
            }
        }
        let n = self.stage.n_tasks;
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= n {
                break;
            }
            let _finish = Finish(self);
            // SAFETY: the counter hands out each t < n_tasks once.
            unsafe { self.stage.run(t) };
        }
        // The rest is at most one task's worth of rows on another thread.
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < n {
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // Its thread was descheduled: give it the core.
                std::thread::yield_now();
            }
        }
        !self.failed.load(Ordering::Relaxed)
    }
}

/// Most tasks one activation quantization is split into (bounds the widened-row scratch).
const MAX_QUANT_TASKS: usize = 64;

/// `out = [r_0, r_1, …]` where `r_j = x_b − q·d` over residual block `b = residual[j]`, with
/// `q` and `d` the row's own Q8_0 (or Q8_1: same quants and scale) quantization of that block,
/// so the kernel's two products of that block add up to `x_b` within ~d/254.
fn residual_tail(x: &[f32], q: &[i8], d: &[f32], residual: &[u32], out: &mut [f32]) {
    for (&b, o) in residual.iter().zip(out.chunks_exact_mut(32)) {
        let b = b as usize;
        let (xb, qb, db) = (&x[b * 32..(b + 1) * 32], &q[b * 32..(b + 1) * 32], d[b]);
        for ((o, &v), &qi) in o.iter_mut().zip(xb).zip(qb) {
            *o = v - f32::from(qi) * db;
        }
    }
}

/// How a GEMM is cut into tasks: row chunks × column chunks.
struct Plan {
    rows_per_task: usize,
    cols_per_task: usize,
    row_tasks: usize,
    col_tasks: usize,
}

impl Plan {
    fn new(m: usize, n: usize, mr: usize, nr: usize, threads: usize) -> Plan {
        if threads <= 1 {
            return Plan {
                rows_per_task: m,
                cols_per_task: n,
                row_tasks: 1,
                col_tasks: 1,
            };
        }
        // Prefer splitting columns (each task then streams its own weights); split rows too
        // when there are not enough column tiles for a few tasks per thread.
        let target = crate::TASKS_PER_THREAD * threads;
        let col_units = n.div_ceil(nr);
        let col_tasks = col_units.min(target);
        let cols_per_task = col_units.div_ceil(col_tasks) * nr;
        let col_tasks = n.div_ceil(cols_per_task);
        let row_units = m.div_ceil(mr);
        let row_tasks = target.div_ceil(col_tasks).min(row_units).max(1);
        let rows_per_task = row_units.div_ceil(row_tasks) * mr;
        let row_tasks = m.div_ceil(rows_per_task);
        Plan {
            rows_per_task,
            cols_per_task,
            row_tasks,
            col_tasks,
        }
    }
    fn n_tasks(&self) -> usize {
        self.row_tasks * self.col_tasks
    }
    /// Row range and column range of task `t`.
    fn task(&self, t: usize, m: usize, n: usize) -> (usize, usize, usize, usize) {
        let (rt, ct) = (t / self.col_tasks, t % self.col_tasks);
        let r0 = rt * self.rows_per_task;
        let c0 = ct * self.cols_per_task;
        (
            r0,
            (r0 + self.rows_per_task).min(m),
            c0,
            (c0 + self.cols_per_task).min(n),
        )
    }
}

fn run_int8(
    kernels: &Kernels,
    jobs: &[Option<Int8Job<'_>>],
    (scratch, prologue): (&GemmScratch, &Prologue<'_>),
    m: usize,
    k: usize,
    par: &dyn ParallelFor,
) {
    let kern = kernels.int8_kernel();
    let n_tasks = jobs.iter().flatten().map(|j| j.plan.n_tasks()).sum();
    let mc = MC_INT8.next_multiple_of(kern.mr);
    let q = scratch.q.bytes().as_ptr().cast::<i8>();
    let (ad, ac, asum) = (
        scratch.ad.as_f32().as_ptr(),
        scratch.ac.bytes().as_ptr().cast::<i32>(),
        scratch.asum.as_f32().as_ptr(),
    );
    let (qp, adp, acp, asp) = (
        SyncPtr(q.cast_mut()),
        SyncPtr(ad.cast_mut()),
        SyncPtr(ac.cast_mut()),
        SyncPtr(asum.cast_mut()),
    );
    let xsp = SyncPtr(scratch.xs.as_f32().as_ptr().cast_mut());
    par.run(n_tasks, &|t| {
        if !prologue.ready() {
            return;
        }
        let (job, t) = locate(jobs, |j| &j.plan, t);
        let (lay, n) = (job.lay, job.n);
        // Logical blocks: the packed ones, then the residual ones (see `tile`), which are the
        // activations' blocks per row.
        let nb = k / lay.kb;
        let nb_packed = lay.nb;
        let kcb = (kern.kc / lay.kb).max(1);
        let (r0, r1, c0, c1) = job.plan.task(t, m, n);
        // Column blocks whose packed weights fit in L2, so the row blocks re-read them from L2
        // rather than from L3 or memory (the dense head's 768×3072 is 2.6 MB packed).
        let nc = (NC_INT8_BYTES / lay.panel_stride.max(1)).max(1) * PANEL;
        for jc0 in (c0..c1).step_by(nc) {
            let jc1 = (jc0 + nc).min(c1);
            for ic in (r0..r1).step_by(mc) {
                let ic1 = (ic + mc).min(r1);
                // With one row block (short batches) the whole K is one chunk, so each column
                // tile is reduced in one microkernel call before the next: its panels stream
                // from memory in address order with no C round trips (+7 % texts/s at batch 1).
                // With more rows K is cut into kc chunks, keeping the row block's activation
                // chunk in L1.
                let stream = r1 - r0 <= mc;
                let mut kc = 0;
                while kc < nb {
                    // A short tail (residual blocks, typically) joins the previous chunk: one C
                    // round trip less per tile, for an activation block still well inside L1.
                    let nblocks = if stream || nb - kc < kcb + kcb / 2 { nb - kc } else { kcb };
                    for jc in (jc0..jc1).step_by(kern.nr) {
                        for ir in (ic..ic1).step_by(kern.mr) {
                            // SAFETY: rows ir..ir+mr < m, logical blocks kc..kc+nblocks < nb
                            // (packed blocks below nb_packed, then entries of `res`, which
                            // name packed blocks) and columns jc..jc+ncols < n are inside the
                            // scratch, packed and output buffers (packed panels are padded to
                            // whole panels); this task alone writes rows r0..r1 × columns
                            // c0..c1 of this job's C, and jobs' outputs are distinct borrows.
                            unsafe {
                                let panel = job.w.ptr().add((jc / PANEL) * lay.panel_stride);
                                let packed = nb_packed.saturating_sub(kc).min(nblocks);
                                let tile = Int8Tile {
                                    a: qp.ptr().add(ir * k + kc * lay.kb),
                                    lda: k,
                                    ad: adp.ptr().add(ir * nb + kc),
                                    ac: acp.ptr().add(ir * nb + kc),
                                    asum: asp.ptr().add(ir * nb + kc),
                                    lds: nb,
                                    w: panel.add(kc.min(nb_packed) * lay.block_stride),
                                    nblocks: packed,
                                    panel,
                                    res: job.res.as_ptr().add((kc + packed).saturating_sub(nb_packed)),
                                    nres: nblocks - packed,
                                    c: job.c.ptr().add(ir * n + jc),
                                    ldc: n,
                                    mr: kern.mr.min(ic1 - ir),
                                    ncols: kern.nr.min(jc1 - jc),
                                    accumulate: kc > 0,
                                    // Streaming (one row block): the first row tile asks
                                    // for the next column tile's weights a tile ahead, past
                                    // this task's columns too: the next task in order usually
                                    // runs next on this thread, and then starts warm (+8 %
                                    // texts/s at batch 1; a stray one costs one tile's reads).
                                    prefetch: if stream && ir == ic && jc + kern.nr < n {
                                        panel.wrapping_add((kern.nr / PANEL) * lay.panel_stride)
                                    } else {
                                        std::ptr::null()
                                    },
                                };
                                let (s_n, wx) = (job.exact.0, job.exact.1);
                                if s_n > 0 && ir == ic && kc + nblocks == nb {
                                    exact::prefetch(wx.ptr().wrapping_add((jc / PANEL) * s_n * PANEL), 2 * s_n * PANEL);
                                }
                                (kern.tile)(&tile, lay);
                                if s_n > 0 && kc + nblocks == nb {
                                    // The tile is final: its exact channels, while it is in L1.
                                    // SAFETY: the same rows and columns of C as the tile; `xs`
                                    // holds s_n values per row for rows < m; the weights hold
                                    // a panel past the last, so two panels from jc are inside.
                                    exact::add_exact_channels(
                                        kernels,
                                        &ExactTile {
                                            c: tile.c,
                                            ldc: n,
                                            mr: tile.mr,
                                            ncols: tile.ncols,
                                            xs: xsp.ptr().add(ir * s_n),
                                            w: wx.ptr().add((jc / PANEL) * s_n * PANEL),
                                            s_n,
                                        },
                                    );
                                }
                            }
                        }
                    }
                    kc += nblocks;
                }
            }
        }
    });
}

/// The f32 loop nest. Row `r` of A is `a[r·lda ..][..k]` (`lda ≥ k`), so a caller can reduce
/// over a column range of a wider matrix.
fn run_f32(
    kernels: &Kernels,
    jobs: &[Option<F32Job>],
    (a, lda): (&[f32], usize),
    m: usize,
    k: usize,
    par: &dyn ParallelFor,
) {
    let kern = kernels.f32_kernel();
    let n_tasks = jobs.iter().flatten().map(|j| j.plan.n_tasks()).sum();
    let ap = SyncPtr(a.as_ptr().cast_mut());
    par.run(n_tasks, &|t| {
        let (job, t) = locate(jobs, |j| &j.plan, t);
        let n = job.n;
        let (r0, r1, c0, c1) = job.plan.task(t, m, n);
        for ic in (r0..r1).step_by(MC_F32) {
            let ic1 = (ic + MC_F32).min(r1);
            for kc in (0..k).step_by(KC_F32) {
                let kcl = KC_F32.min(k - kc);
                for jc in (c0..c1).step_by(kern.nr) {
                    for ir in (ic..ic1).step_by(kern.mr) {
                        // SAFETY: as in `run_int8`: every pointer stays inside A (m rows of
                        // `lda`, k used), the packed panels (padded to whole panels, `k` values
                        // from `w` on in each) and this task's part of C.
                        unsafe {
                            let tile = F32Tile {
                                a: ap.ptr().add(ir * lda + kc),
                                lda,
                                w: job.w.ptr().add((jc / PANEL) * job.panel_stride + kc * PANEL),
                                panel_stride: job.panel_stride,
                                kc: kcl,
                                c: job.c.ptr().add(ir * n + jc),
                                ldc: n,
                                mr: kern.mr.min(ic1 - ir),
                                ncols: kern.nr.min(c1 - jc),
                                accumulate: kc > 0,
                            };
                            (kern.tile)(&tile);
                        }
                    }
                }
            }
        }
    });
}

/// `C = A · W^T` in f32 for unpacked operands: `a` is `m × k`, `w` is `n × k` (both row-major),
/// `c` is `m × n`. W is packed into `scratch` on every call (O(n·k), small next to the O(m·n·k)
/// product). Same reduction order, hence same bits, as a [`PackedMatrix`] of the same W.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_nt(
    kernels: &Kernels,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    c: &mut [f32],
    scratch: &mut GemmScratch,
    par: &dyn ParallelFor,
) -> Result<(), KernelError> {
    gemm_f32_unpacked(
        kernels,
        a,
        m,
        k,
        ("w", w.len()),
        n,
        c,
        scratch,
        par,
        |buf| pack::pack_f32_nt_into(buf, w, n, k),
    )
}

/// `C = A · B` in f32 for unpacked operands: `a` is `m × k`, `b` is `k × n` (both row-major),
/// `c` is `m × n`. B is packed into `scratch` on every call.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_nn(
    kernels: &Kernels,
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    scratch: &mut GemmScratch,
    par: &dyn ParallelFor,
) -> Result<(), KernelError> {
    gemm_f32_unpacked(
        kernels,
        a,
        m,
        k,
        ("b", b.len()),
        n,
        c,
        scratch,
        par,
        |buf| pack::pack_f32_nn_into(buf, b, k, n),
    )
}

/// The body both unpacked f32 GEMMs share: shape checks, the empty cases, packing the right-hand
/// operand (`rhs` names it and gives its length, which must be `n·k`) into `scratch`, the product.
#[allow(clippy::too_many_arguments)]
fn gemm_f32_unpacked(
    kernels: &Kernels,
    a: &[f32],
    m: usize,
    k: usize,
    rhs: (&'static str, usize),
    n: usize,
    c: &mut [f32],
    scratch: &mut GemmScratch,
    par: &dyn ParallelFor,
    pack: impl FnOnce(&mut AlignedBuf),
) -> Result<(), KernelError> {
    check_len("a", m * k, a.len())?;
    check_len(rhs.0, n * k, rhs.1)?;
    check_len("c", m * n, c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    pack(&mut scratch.wpack);
    let kern = kernels.f32_kernel();
    let job = F32Job {
        w: SyncPtr(scratch.wpack.as_f32().as_ptr().cast_mut()),
        panel_stride: k * PANEL,
        c: SyncPtr(c.as_mut_ptr()),
        n,
        plan: Plan::new(m, n, kern.mr, kern.nr, par.num_threads()),
    };
    run_f32(kernels, &[Some(job)], (a, k), m, k, par);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;

/// Benchmark hook (not API): runs the int8 microkernel `iters` times on one L1-resident
/// full tile (MR rows × NR columns × `kblocks` Q8_0 blocks) and returns the int8 ops done.
#[doc(hidden)]
pub fn __int8_microkernel_loop(kernels: &'static Kernels, kblocks: usize, iters: usize) -> f64 {
    let kern = kernels.int8_kernel();
    let (m, n, k) = (kern.mr, kern.nr, 32 * kblocks);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 255) as f32 - 127.0)
        .collect();
    let wq = crate::quantize_q8_0(&w).unwrap_or_default();
    let Ok(pm) = PackedMatrix::new(kernels, QuantType::Q8_0, n, k, &wq) else {
        return 0.0;
    };
    let Repr::Int8 { lay, act } = pm.repr.clone() else {
        return 0.0;
    };
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 104729) % 251) as f32 - 125.0)
        .collect();
    let mut s = GemmScratch::new();
    let mut src = Src::Ready { a: &a, k };
    let stage = s.quant_stage(kernels, act, &lay, &mut src, m, k, (&[], &[]), &crate::Serial);
    if !Prologue::new(stage).ready() {
        return 0.0;
    }
    let mut c = vec![0f32; m * n];
    let tile = Int8Tile {
        a: s.q.bytes().as_ptr().cast(),
        lda: k,
        ad: s.ad.as_f32().as_ptr(),
        ac: s.ac.bytes().as_ptr().cast(),
        asum: s.asum.as_f32().as_ptr(),
        lds: lay.nb,
        w: pm.data.bytes().as_ptr(),
        nblocks: lay.nb,
        panel: pm.data.bytes().as_ptr(),
        res: pm.residual.as_ptr(),
        nres: 0,
        c: c.as_mut_ptr(),
        ldc: n,
        mr: m,
        ncols: n,
        accumulate: false,
        prefetch: std::ptr::null(),
    };
    for _ in 0..iters {
        // SAFETY: the tile describes exactly the buffers built above.
        unsafe { (kern.tile)(&tile, &lay) };
    }
    std::hint::black_box(&c);
    (2 * m * n * k * iters) as f64
}
