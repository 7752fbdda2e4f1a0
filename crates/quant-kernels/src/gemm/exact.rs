//! Exact channels: input channels of an int8 matrix that are taken out of the int8 product and
//! multiplied in f32 instead (LLM.int8-style outlier channels, see
//! [`PackedMatrix::with_outliers`](super::PackedMatrix::with_outliers)).
//!
//! The activation quantizer zeroes those channels (so their blocks' scales come from the other
//! values) and keeps their f32 values per row; after a C tile's last int8 block, the epilogue
//! here adds `x[i, c_s] · w[j, c_s]` for each exact channel `s` in order, one fused multiply-add
//! per channel on the finished value while the tile is still in L1. The weights are the
//! matrix's own dequantized values (exact in f32), read from its packed cells and stored per
//! panel of 16 columns.

use crate::dispatch::{Isa, Kernels};
use crate::gemm::pack;
use crate::gemm::tile::{Int8Layout, PANEL};

/// A matrix's exact channels and their f32 weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExactChannels {
    /// Input channels, strictly increasing: the order of the multiply-adds.
    pub(crate) idx: Box<[u32]>,
    /// Per panel of 16 output columns, per channel, the 16 columns' weights (zero past `n`),
    /// plus one zero panel so that a two-panel tile at the last panel reads inside.
    pub(crate) w: Box<[f32]>,
}

impl ExactChannels {
    /// Reads column `channels[s]` of every row of an int8-packed matrix (`n` rows, `packed` in
    /// layout `lay`): the packing is lossless, so these are the dequantized weights of every
    /// format, one value read per weight ([`pack::packed_weight`]).
    pub(crate) fn new(packed: &[u8], lay: &Int8Layout, n: usize, channels: &[usize]) -> Self {
        if channels.is_empty() {
            return Self::default();
        }
        let s_n = channels.len();
        let panels = n.div_ceil(PANEL) + 1;
        let mut w = vec![0f32; panels * s_n * PANEL];
        for j in 0..n {
            for (s, &c) in channels.iter().enumerate() {
                w[((j / PANEL) * s_n + s) * PANEL + j % PANEL] = pack::packed_weight(packed, lay, j, c);
            }
        }
        ExactChannels { idx: channels.iter().map(|&c| c as u32).collect(), w: w.into() }
    }

    pub(crate) fn len(&self) -> usize {
        self.idx.len()
    }
}

/// One finished C tile to add exact channels to: `mr` rows × `ncols` columns (at most two
/// panels) from `c`, the rows' exact-channel inputs from `xs` (`s_n` per row, rows `s_n`
/// apart) and the tile's first panel of weights from `w`.
pub(crate) struct ExactTile {
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    pub(crate) mr: usize,
    pub(crate) ncols: usize,
    pub(crate) xs: *const f32,
    pub(crate) w: *const f32,
    pub(crate) s_n: usize,
}

/// Asks for a tile's exact-channel weights (`len` values from `w`) before its int8 blocks run,
/// so that the epilogue finds them in cache: each tile's weights are a separate stretch of
/// memory, and at batch 1 every one of them would otherwise start with a miss to DRAM.
pub(crate) fn prefetch(w: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len * 4).step_by(64) {
        // SAFETY: a prefetch is a hint that never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(w.cast::<i8>().wrapping_add(off)) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, len);
}

/// Rows the epilogue keeps in flight: 6 rows × 2 panels are 12 independent FMA chains, enough
/// to hide the FMA latency.
const ROWS: usize = 6;

/// Calls `f::<R>(args)` for the tile's rows in chunks of `R = ROWS` (the last one shorter), `r0`
/// naming each chunk's first row in `args`: `R` is a constant so that a chunk's accumulators
/// are an array the compiler keeps in registers.
macro_rules! in_row_chunks {
    ($mr:expr, |$r0:ident| $f:ident($($arg:expr),*)) => {{
        let mut $r0 = 0;
        while $r0 < $mr {
            let rows = ROWS.min($mr - $r0);
            match rows {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                _ => $f::<ROWS>($($arg),*),
            }
            $r0 += rows;
        }
    }};
}

/// `C[i, j] = fma(x[i, c_s], w[j, c_s], C[i, j])` for every exact channel `s` in order: the same
/// roundings on every ISA (a fused multiply-add is exact), only the vector width differs.
///
/// # Safety
/// `c` must be valid for `mr` rows `ldc` apart of `ncols` columns, `xs` for `mr · s_n` values
/// and `w` for two panels of `s_n · PANEL` values.
pub(crate) unsafe fn add_exact_channels(kernels: &Kernels, t: &ExactTile) {
    match kernels.isa() {
        // SAFETY: a table of these ISAs exists only when detection found AVX-512 F/BW/VL/DQ,
        // AVX2 and FMA on this CPU; the tile is the caller's contract.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx => unsafe { add_avx512(t) },
        // SAFETY: an AVX2 table exists only when detection found AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { add_avx2(t) },
        // SAFETY: the caller's contract.
        _ => unsafe { add_rows(t) },
    }
}

/// The AVX-512 epilogue: up to 6 rows × two 16-column panels in 12 zmm accumulators (enough
/// independent FMA chains to hide the latency), masked loads and stores of C at the edge.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ, AVX2 and FMA must be available; as [`add_exact_channels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn add_avx512(t: &ExactTile) {
    // SAFETY: each chunk's rows r0..r0+R are < mr; features enabled above.
    unsafe { in_row_chunks!(t.mr, |r0| rows_avx512(t, r0)) }
}

/// # Safety
/// As [`add_avx512`], with `r0 + R <= t.mr`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
unsafe fn rows_avx512<const R: usize>(t: &ExactTile, r0: usize) {
    use std::arch::x86_64::*;
    let mask = |v: usize| {
        let valid = t.ncols.saturating_sub(v * PANEL).min(PANEL);
        ((1u32 << valid) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(1));
    // SAFETY: C rows r0..r0+R of ncols columns (the masks cover exactly those), xs rows of s_n
    // values, and two panels of s_n · PANEL weights, per the caller's contract.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            let c = t.c.add((r0 + r) * t.ldc);
            a[0] = _mm512_maskz_loadu_ps(m0, c);
            a[1] = _mm512_maskz_loadu_ps(m1, c.add(PANEL));
        }
        let xs = t.xs.add(r0 * t.s_n);
        for s in 0..t.s_n {
            let w0 = _mm512_loadu_ps(t.w.add(s * PANEL));
            let w1 = _mm512_loadu_ps(t.w.add((t.s_n + s) * PANEL));
            for (r, a) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*xs.add(r * t.s_n + s));
                a[0] = _mm512_fmadd_ps(x, w0, a[0]);
                a[1] = _mm512_fmadd_ps(x, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let c = t.c.add((r0 + r) * t.ldc);
            _mm512_mask_storeu_ps(c, m0, a[0]);
            _mm512_mask_storeu_ps(c.add(PANEL), m1, a[1]);
        }
    }
}

/// The AVX2 epilogue: whole 16-column panels (the AVX2 kernel's tiles) in ymm registers, 6 rows
/// × 2 halves at a time; other widths take the generic loop, which rounds the same way.
///
/// # Safety
/// AVX2 and FMA must be available; as [`add_exact_channels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_avx2(t: &ExactTile) {
    if !t.ncols.is_multiple_of(PANEL) {
        // SAFETY: passed through.
        return unsafe { add_rows(t) };
    }
    for p in 0..t.ncols / PANEL {
        // SAFETY: each chunk's rows r0..r0+R are < mr, panel p < ncols / PANEL; features
        // enabled above.
        unsafe { in_row_chunks!(t.mr, |r0| rows_avx2(t, r0, p)) }
    }
}

/// # Safety
/// As [`add_avx2`], with `r0 + R <= t.mr` and panel `p` whole inside the tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_avx2<const R: usize>(t: &ExactTile, r0: usize, p: usize) {
    use std::arch::x86_64::*;
    // SAFETY: as `rows_avx512`, for the 16 columns of panel p.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            let c = t.c.add((r0 + r) * t.ldc + p * PANEL);
            a[0] = _mm256_loadu_ps(c);
            a[1] = _mm256_loadu_ps(c.add(8));
        }
        let (xs, w) = (t.xs.add(r0 * t.s_n), t.w.add(p * t.s_n * PANEL));
        for s in 0..t.s_n {
            let w0 = _mm256_loadu_ps(w.add(s * PANEL));
            let w1 = _mm256_loadu_ps(w.add(s * PANEL + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*xs.add(r * t.s_n + s));
                a[0] = _mm256_fmadd_ps(x, w0, a[0]);
                a[1] = _mm256_fmadd_ps(x, w1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            let c = t.c.add((r0 + r) * t.ldc + p * PANEL);
            _mm256_storeu_ps(c, a[0]);
            _mm256_storeu_ps(c.add(8), a[1]);
        }
    }
}

/// The specification in plain Rust (the scalar table's path, and AVX2's for partial panels).
///
/// # Safety
/// As [`add_exact_channels`].
#[inline(always)]
unsafe fn add_rows(t: &ExactTile) {
    // SAFETY: each chunk's rows r0..r0+R are < mr (the caller's contract covers them).
    unsafe { in_row_chunks!(t.mr, |r0| rows_tile(t, r0)) }
}

/// `R` rows from `r0` of [`add_exact_channels`], both panels at once (the second panel's
/// weights are zero or past `ncols`, and never stored).
///
/// # Safety
/// As [`add_exact_channels`], with `r0 + R <= t.mr`.
#[inline(always)]
unsafe fn rows_tile<const R: usize>(t: &ExactTile, r0: usize) {
    const W: usize = 2 * PANEL;
    let s_n = t.s_n;
    let mut acc = [[0f32; W]; R];
    // Whole tiles copy a fixed length (vector moves, not a `memcpy` call per row).
    let full = t.ncols == W;
    for (r, a) in acc.iter_mut().enumerate() {
        // SAFETY: row r0 + r < mr, ncols valid columns.
        let c = unsafe { std::slice::from_raw_parts(t.c.add((r0 + r) * t.ldc), t.ncols) };
        match <&[f32; W]>::try_from(c) {
            Ok(c) if full => *a = *c,
            _ => a[..t.ncols].copy_from_slice(c),
        }
    }
    // SAFETY: xs holds mr rows of s_n values; w holds two panels of s_n · PANEL values.
    let (xs, w0, w1) = unsafe {
        (
            std::slice::from_raw_parts(t.xs.add(r0 * s_n), R * s_n),
            std::slice::from_raw_parts(t.w, s_n * PANEL),
            std::slice::from_raw_parts(t.w.add(s_n * PANEL), s_n * PANEL),
        )
    };
    for s in 0..s_n {
        let (a, b) = (&w0[s * PANEL..(s + 1) * PANEL], &w1[s * PANEL..(s + 1) * PANEL]);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = xs[r * s_n + s];
            let (lo, hi) = acc.split_at_mut(PANEL);
            for l in 0..PANEL {
                lo[l] = x.mul_add(a[l], lo[l]);
                hi[l] = x.mul_add(b[l], hi[l]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: as the loads above; this task alone writes these columns of C.
        let c = unsafe { std::slice::from_raw_parts_mut(t.c.add((r0 + r) * t.ldc), t.ncols) };
        match <&mut [f32; W]>::try_from(&mut *c) {
            Ok(c) if full => *c = *a,
            _ => c.copy_from_slice(&a[..t.ncols]),
        }
    }
}
