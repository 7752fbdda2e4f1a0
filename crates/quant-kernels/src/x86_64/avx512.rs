//! AVX-512 (F/BW/VL/DQ) kernels, with a `vpdpbusd` int8 microkernel when AVX512-VNNI is present.
//! Without VNNI the int8 GEMM uses the AVX2 microkernel (512-bit `vpmaddwd` needs cross-lane
//! shuffles per block that erase its advantage); f32 GEMM, quantization and dots use 512 bits.

// Register tiles are indexed [row][vector] in lockstep; index loops read clearer than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::blocks::BlockQ8_0;
use crate::dispatch::{Dots, Isa, Kernels, SCALAR_DOTS};
use crate::fp16::f16_to_f32;
use crate::gemm::tile::{F32Kernel, F32Tile, Int8Kernel, Int8Layout, Int8Tile, PANEL};

pub(crate) static KERNELS_VNNI: Kernels = Kernels {
    isa: Isa::Avx512Vnni,
    int8: Int8Kernel { mr: INT8_MR, nr: 32, kc: 768, signed_weights: false, tile: int8_tile_vnni },
    f32k: F32Kernel { mr: F32_MR, nr: 32, tile: f32_tile },
    quant_q8_0: quant_act_q8_0,
    quant_q8k: quant_act_q8k,
    dots: Dots { q8_0: dot_q8_0_q8_0_vnni, f32: dot_f32, ..SCALAR_DOTS },
    axpy: axpy_f32,
};

pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
    int8: Int8Kernel {
        mr: super::avx2::INT8_MR,
        nr: 16,
        kc: super::avx2::INT8_KC,
        signed_weights: true,
        tile: int8_tile_avx2_fallback,
    },
    f32k: F32Kernel { mr: F32_MR, nr: 32, tile: f32_tile },
    quant_q8_0: quant_act_q8_0,
    quant_q8k: quant_act_q8k,
    dots: Dots { q8_0: super::avx2::dot_q8_0_q8_0, f32: dot_f32, ..SCALAR_DOTS },
    axpy: axpy_f32,
};

/// Rows per int8 tile: 6 rows × 2 panels = 12 independent `vpdpbusd` chains (latency 5,
/// two per cycle) plus 12 f32 accumulators, 2 weight vectors and a broadcast: 27 of 32 zmm.
const INT8_MR: usize = 6;
/// Rows per f32 tile: 12 × 2 zmm accumulators, 2 weight vectors, broadcasts from memory.
const F32_MR: usize = 12;

/// # Safety
/// AVX-512 F/BW/VL/DQ and AVX2 must be available; the tile must be valid (see `Int8Kernel`).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn int8_tile_avx2_fallback(t: &Int8Tile, lay: &Int8Layout) {
    super::hit(Isa::Avx512);
    // SAFETY: AVX-512 implies the AVX2 + FMA the callee needs; the tile is passed through.
    unsafe { super::avx2::int8_tile_impl_entry(t, lay) }
}

#[inline(always)]
fn col_mask(ncols: usize, v: usize) -> __mmask16 {
    let valid = ncols.saturating_sub(v * PANEL).min(PANEL);
    ((1u32 << valid) - 1) as __mmask16
}

/// # Safety
/// AVX-512 F/BW/VL/DQ and VNNI must be available; the tile must be valid (see `Int8Kernel`).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn int8_tile_vnni(t: &Int8Tile, lay: &Int8Layout) {
    super::hit(Isa::Avx512Vnni);
    macro_rules! go {
        ($mr:literal) => {{
            // SAFETY: features enabled above; the tile contract is the caller's.
            unsafe {
                match (t.ncols > PANEL, lay.kb, lay.affine) {
                    (true, 32, false) => int8_vnni::<$mr, 2, 8, false>(t, lay),
                    (true, 32, true) => int8_vnni::<$mr, 2, 8, true>(t, lay),
                    (true, _, _) => int8_vnni::<$mr, 2, 4, false>(t, lay),
                    (false, 32, false) => int8_vnni::<$mr, 1, 8, false>(t, lay),
                    (false, 32, true) => int8_vnni::<$mr, 1, 8, true>(t, lay),
                    (false, _, _) => int8_vnni::<$mr, 1, 4, false>(t, lay),
                }
            }
        }};
    }
    match t.mr {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        _ => go!(6),
    }
}

/// The VNNI microkernel: `MR` rows × `NV` panels, `STEPS` = kb/4 `vpdpbusd` per block.
/// Rows 1 and 2 split each block's integer sum over two accumulators (even/odd steps) to keep
/// enough independent chains in flight; integer addition is exact, so the result is unchanged.
///
/// # Safety
/// As `int8_tile_vnni`; `lay.kb == 4 * STEPS` and `lay.affine == AFFINE`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
#[inline]
unsafe fn int8_vnni<const MR: usize, const NV: usize, const STEPS: usize, const AFFINE: bool>(
    t: &Int8Tile,
    lay: &Int8Layout,
) {
    let split = MR <= 2;
    let mut facc = [[_mm512_setzero_ps(); NV]; MR];
    // SAFETY: all pointer arithmetic stays within the tile the caller vouched for: rows < MR,
    // panels < NV (only when ncols > 16), blocks < nblocks + nres (residual cells named by
    // `res`), and columns masked to ncols.
    unsafe {
        if t.accumulate {
            for (r, row) in facc.iter_mut().enumerate() {
                for (v, acc) in row.iter_mut().enumerate() {
                    *acc = _mm512_maskz_loadu_ps(col_mask(t.ncols, v), t.c.add(r * t.ldc + v * PANEL));
                }
            }
        }
        // One block: activation block `b` against the cell at `cell` of each panel.
        macro_rules! block {
            ($b:expr, $cell:expr) => {{
                let (b, cell): (usize, *const u8) = ($b, $cell);
                let mut iacc = [[_mm512_setzero_si512(); NV]; MR];
                let mut iacc2 = [[_mm512_setzero_si512(); NV]; MR];
                if !AFFINE {
                    for (r, row) in iacc.iter_mut().enumerate() {
                        let corr = t.ac.add(r * t.lds + b);
                        for acc in row.iter_mut() {
                            *acc = broadcast_load(corr);
                        }
                    }
                }
                for s in 0..STEPS {
                    let mut wv = [_mm512_setzero_si512(); NV];
                    for (v, w) in wv.iter_mut().enumerate() {
                        *w = _mm512_load_si512(cell.add(v * lay.panel_stride + s * 64).cast());
                    }
                    for r in 0..MR {
                        let a = _mm512_set1_epi32(
                            t.a.add(r * t.lda + b * STEPS * 4 + s * 4).cast::<i32>().read_unaligned(),
                        );
                        for v in 0..NV {
                            if split && s % 2 == 1 {
                                iacc2[r][v] = _mm512_dpbusd_epi32(iacc2[r][v], wv[v], a);
                            } else {
                                iacc[r][v] = _mm512_dpbusd_epi32(iacc[r][v], wv[v], a);
                            }
                        }
                    }
                }
                let mut dw = [_mm512_setzero_ps(); NV];
                for (v, d) in dw.iter_mut().enumerate() {
                    *d = _mm512_load_ps(cell.add(v * lay.panel_stride + lay.dw_offset()).cast());
                }
                for r in 0..MR {
                    let da = _mm512_set1_ps(*t.ad.add(r * t.lds + b));
                    for v in 0..NV {
                        let isum = if split { _mm512_add_epi32(iacc[r][v], iacc2[r][v]) } else { iacc[r][v] };
                        let scale = _mm512_mul_ps(dw[v], da);
                        facc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, facc[r][v]);
                    }
                }
                if AFFINE {
                    let mut mw = [_mm512_setzero_ps(); NV];
                    for (v, m) in mw.iter_mut().enumerate() {
                        *m = _mm512_load_ps(cell.add(v * lay.panel_stride + lay.mw_offset()).cast());
                    }
                    for (r, row) in facc.iter_mut().enumerate() {
                        let sa = _mm512_set1_ps(*t.asum.add(r * t.lds + b));
                        for (v, acc) in row.iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(mw[v], sa, *acc);
                        }
                    }
                }
            }};
        }
        if t.prefetch.is_null() {
            for b in 0..t.nblocks {
                block!(b, t.w.add(b * lay.block_stride));
            }
        } else {
            // Weights stream from memory at small batches: ask for the next column tile's cell
            // of each block (into L2) a whole tile before it is needed, so more misses are in
            // flight than the hardware prefetcher's one stream per panel (+30 % texts/s at
            // batch 1 on one thread). A separate loop keeps the batched path's code as it was.
            for b in 0..t.nblocks {
                let next = t.prefetch.wrapping_add(b * lay.block_stride);
                for v in 0..NV {
                    let p = next.wrapping_add(v * lay.panel_stride);
                    for line in (0..lay.block_stride).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(line).cast());
                    }
                }
                block!(b, t.w.add(b * lay.block_stride));
            }
        }
        // Residual blocks re-read cells of the packed blocks (see `gemm::tile`).
        for j in 0..t.nres {
            block!(t.nblocks + j, t.panel.add(*t.res.add(j) as usize * lay.block_stride));
        }
        for (r, row) in facc.iter().enumerate() {
            for (v, acc) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(r * t.ldc + v * PANEL), col_mask(t.ncols, v), *acc);
            }
        }
    }
}

/// `vpbroadcastd zmm, [p]` as its own load: a plain `_mm512_set1_epi32` of the same value for
/// two accumulators is CSE'd into one broadcast plus a register move, which costs a vector ALU
/// slot (the ports `vpdpbusd` needs), while a broadcast load only uses a load port.
///
/// # Safety
/// `p` must be readable; AVX-512 F must be available.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn broadcast_load(p: *const i32) -> __m512i {
    let x: __m512i;
    // SAFETY: reads 4 bytes at `p` (caller contract); no stack use, no flags.
    unsafe {
        std::arch::asm!(
            "vpbroadcastd {x}, dword ptr [{p}]",
            x = out(zmm_reg) x,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    x
}

/// # Safety
/// AVX-512 F/BW/VL/DQ must be available; the tile must be valid (see `F32Kernel`).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn f32_tile(t: &F32Tile) {
    super::hit(Isa::Avx512);
    macro_rules! go {
        ($mr:literal) => {{
            // SAFETY: features enabled above; the tile contract is the caller's.
            unsafe {
                if t.ncols > PANEL { f32_impl::<$mr, 2>(t) } else { f32_impl::<$mr, 1>(t) }
            }
        }};
    }
    match t.mr {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        8 => go!(8),
        9 => go!(9),
        10 => go!(10),
        11 => go!(11),
        _ => go!(12),
    }
}

/// # Safety
/// As `f32_tile`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
unsafe fn f32_impl<const MR: usize, const NV: usize>(t: &F32Tile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    // SAFETY: rows < MR, k < kc, panels < NV (only when ncols > 16), columns masked to ncols:
    // all inside the tile the caller vouched for.
    unsafe {
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(col_mask(t.ncols, v), t.c.add(r * t.ldc + v * PANEL));
                }
            }
        }
        for k in 0..t.kc {
            let mut w = [_mm512_setzero_ps(); NV];
            for (v, wv) in w.iter_mut().enumerate() {
                *wv = _mm512_load_ps(t.w.add(v * t.panel_stride + k * PANEL));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*t.a.add(r * t.lda + k));
                for (v, av) in row.iter_mut().enumerate() {
                    *av = _mm512_fmadd_ps(a, w[v], *av);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(t.c.add(r * t.ldc + v * PANEL), col_mask(t.ncols, v), *a);
            }
        }
    }
}

/// C's `roundf` on 16 lanes, converted to i32: `trunc(v + copysign(h, v))` with `h` the largest
/// float below one half. Adding `h` rather than 0.5 keeps values just under a half from rounding
/// up in the addition (0.49999997 + 0.5 is 1.0 in f32); every tie `k + 0.5` still reaches `k + 1`
/// because `k + 0.99999997` rounds to it for the magnitudes a Q8_0 block produces (|v| ≤ 127).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
fn round_half_away_i32(v: __m512) -> __m512i {
    let h = _mm512_set1_epi32(0x3EFF_FFFF);
    let sign = _mm512_set1_epi32(i32::MIN);
    // h | (v & sign): h with v's sign.
    let step = _mm512_ternarylogic_epi32::<0xF8>(h, _mm512_castps_si512(v), sign);
    _mm512_cvttps_epi32(_mm512_add_ps(v, _mm512_castsi512_ps(step)))
}

/// Lane `4k + j` of the result is `op` over the 16 lanes of `v[k + 4j]` (a 16 × 16
/// transpose-reduction: four levels of shuffles, 15 ops instead of 16 serial reductions). `MAX`:
/// `max_ps`; otherwise the lanes are i32 and `op` is their sum.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
fn reduce16<const MAX: bool>(v: &[__m512; 16]) -> __m512 {
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn op<const MAX: bool>(a: __m512, b: __m512) -> __m512 {
        if MAX {
            _mm512_max_ps(a, b)
        } else {
            _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)))
        }
    }
    // v[2p], v[2p+1] -> one vector: 256-bit halves hold their 8-lane partials.
    let w: [__m512; 8] = std::array::from_fn(|p| {
        let (a, b) = (v[2 * p], v[2 * p + 1]);
        op::<MAX>(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b))
    });
    // -> 128-bit lanes hold the 4-lane partials of blocks 4p .. 4p+3.
    let u: [__m512; 4] = std::array::from_fn(|p| {
        let (a, b) = (w[2 * p], w[2 * p + 1]);
        op::<MAX>(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b))
    });
    // -> 128-bit lane k: two partials of block 8p+k, then two of block 8p+4+k.
    let y: [__m512; 2] = std::array::from_fn(|p| {
        let (a, b) = (_mm512_castps_pd(u[2 * p]), _mm512_castps_pd(u[2 * p + 1]));
        op::<MAX>(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        )
    });
    // -> 128-bit lane k: blocks k, k+4, k+8, k+12.
    op::<MAX>(_mm512_shuffle_ps::<0x88>(y[0], y[1]), _mm512_shuffle_ps::<0xDD>(y[0], y[1]))
}

/// Q8_0 activation row (bit-identical to `gemm::act::quant_act_q8_0` for finite inputs), 16
/// blocks at a time: the blocks' maxima and quant sums are reduced together (`reduce16`) and the
/// scales computed as one vector, so no block waits on its own horizontal reductions and
/// divisions (at batch 32 its share of CPU time fell from 5 % to 3 %; at batch 1 it runs on one
/// thread while the other waits).
///
/// # Safety
/// AVX-512 F/BW/VL/DQ must be available. `q` holds `x.len()` entries, `d`/`corr` `x.len()/32`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn quant_act_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32], corr: &mut [i32], draw: &mut [f32]) {
    let nb = x.len() / 32;
    // reduce16's lane 4k + j holds block k + 4j; this puts block b in lane b.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for g in (0..nb).step_by(16) {
        let n = (nb - g).min(16);
        let mask = ((1u32 << n) - 1) as u16;
        // SAFETY: blocks g..g+n are inside `x`, `q`, `d`, `corr` and `draw` (caller contract);
        // lanes past n are masked off every store.
        unsafe {
            let xb = x.as_ptr().add(g * 32);
            let mut m = [_mm512_setzero_ps(); 16];
            for (i, mi) in m.iter_mut().enumerate().take(n) {
                let (x0, x1) = (_mm512_loadu_ps(xb.add(i * 32)), _mm512_loadu_ps(xb.add(i * 32 + 16)));
                *mi = _mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1));
            }
            let amax = _mm512_permutexvar_ps(order, reduce16::<true>(&m));
            let dd = _mm512_div_ps(amax, _mm512_set1_ps(127.0));
            // `if d != 0.0 { 1.0 / d } else { 0.0 }` (NaN compares unequal, as in Rust).
            let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(dd, _mm512_setzero_ps());
            let id = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), dd);
            _mm512_mask_storeu_ps(draw.as_mut_ptr().add(g), mask, dd);
            let dh = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(dd));
            _mm512_mask_storeu_ps(d.as_mut_ptr().add(g), mask, dh);
            let mut ids = [0f32; 16];
            _mm512_storeu_ps(ids.as_mut_ptr(), id);
            let mut sums = [_mm512_setzero_ps(); 16];
            for (i, si) in sums.iter_mut().enumerate().take(n) {
                let idv = _mm512_set1_ps(ids[i]);
                let q0 = round_half_away_i32(_mm512_mul_ps(_mm512_loadu_ps(xb.add(i * 32)), idv));
                let q1 = round_half_away_i32(_mm512_mul_ps(_mm512_loadu_ps(xb.add(i * 32 + 16)), idv));
                let dst = q.as_mut_ptr().add((g + i) * 32);
                _mm_storeu_si128(dst.cast(), _mm512_cvtepi32_epi8(q0));
                _mm_storeu_si128(dst.add(16).cast(), _mm512_cvtepi32_epi8(q1));
                *si = _mm512_castsi512_ps(_mm512_add_epi32(q0, q1));
            }
            let sum = _mm512_castps_si512(_mm512_permutexvar_ps(order, reduce16::<false>(&sums)));
            let c = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(sum));
            _mm512_mask_storeu_epi32(corr.as_mut_ptr().add(g), mask, c);
        }
    }
}

/// Q8_K activation row (bit-identical to `gemm::act::quant_act_q8k` for finite inputs): the
/// signed value of the first largest-magnitude element sets `iscale = -127 / max`; quants are
/// `min(127, round_ties_even(iscale * x))` (`vcvtps2dq` under the default rounding mode is
/// ggml's `nearest_int`).
///
/// # Safety
/// AVX-512 F/BW/VL/DQ must be available; `kb` is 16 or 32, `x.len()` a multiple of 256, `q`
/// holds `x.len()` entries and `ad`/`ac`/`asum` `x.len() / kb`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn quant_act_q8k(x: &[f32], kb: usize, q: &mut [i8], ad: &mut [f32], ac: &mut [i32], asum: &mut [f32]) {
    let per_super = 256 / kb;
    for (s, xb) in x.chunks_exact(256).enumerate() {
        // SAFETY: `xb` has 256 elements; outputs have room for super-block `s` (caller contract).
        unsafe {
            let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(xb.as_ptr().add(16 * i)));
            let amax = _mm512_reduce_max_ps(v.iter().fold(_mm512_setzero_ps(), |m, &x| _mm512_max_ps(m, _mm512_abs_ps(x))));
            // An all-zero block gets scale 0 and zero quants (iscale 0 maps every x to 0).
            let (iscale, d) = if amax == 0.0 {
                (0.0, 0.0)
            } else {
                let target = _mm512_set1_ps(amax);
                let mut max = 0.0f32;
                for (i, &x) in v.iter().enumerate() {
                    let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(x), target);
                    if hit != 0 {
                        max = xb[16 * i + hit.trailing_zeros() as usize];
                        break;
                    }
                }
                let iscale = -127.0 / max;
                (iscale, 1.0 / iscale)
            };
            let isv = _mm512_set1_ps(iscale);
            let cap = _mm512_set1_epi32(127);
            let mut sums = [0i32; 16];
            for (i, &x) in v.iter().enumerate() {
                let qi = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, isv)), cap);
                _mm_storeu_si128(q.as_mut_ptr().add(s * 256 + 16 * i).cast(), _mm512_cvtepi32_epi8(qi));
                sums[i] = _mm512_reduce_add_epi32(qi);
            }
            for j in 0..per_super {
                let sum = if kb == 16 { sums[j] } else { sums[2 * j] + sums[2 * j + 1] };
                let b = s * per_super + j;
                *ad.get_unchecked_mut(b) = d;
                *ac.get_unchecked_mut(b) = -128 * sum;
                *asum.get_unchecked_mut(b) = d * sum as f32;
            }
        }
    }
}

/// f32 dot with four 16-lane partial sums.
///
/// # Safety
/// AVX-512 F must be available; `a` and `b` have the same length.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load is within `0..n` of both slices.
    unsafe {
        while i + 64 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let (x, y) = (a.as_ptr().add(i + 16 * j), b.as_ptr().add(i + 16 * j));
                *s = _mm512_fmadd_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(y), *s);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), acc[0]);
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as __mmask16;
            let x = _mm512_maskz_loadu_ps(m, a.as_ptr().add(i));
            let y = _mm512_maskz_loadu_ps(m, b.as_ptr().add(i));
            acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
}

/// `y += alpha * x`, fused per element (bit-identical to the scalar `mul_add`).
///
/// # Safety
/// AVX-512 F must be available; `x` and `y` have the same length.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm512_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: every access is within `0..n` of both slices (the tail is masked).
    unsafe {
        while i < n {
            let m = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as __mmask16 };
            let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
            let yv = _mm512_maskz_loadu_ps(m, y.as_ptr().add(i));
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, _mm512_fmadd_ps(av, xv, yv));
            i += 16;
        }
    }
}

/// Q8_0 × Q8_0 dot: per block `vpdpbusd(|x|, sign(y, x))` over 32 bytes (exact), then one
/// f32 fma per block into eight lanes.
///
/// # Safety
/// AVX-512 VL + VNNI must be available; `x` and `y` have the same length.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
unsafe fn dot_q8_0_q8_0_vnni(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (a, b) in x.iter().zip(y) {
        // SAFETY: each block holds exactly 32 quant bytes.
        unsafe {
            let xa = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let yb = _mm256_loadu_si256(b.qs.as_ptr().cast());
            let ax = _mm256_abs_epi8(xa);
            let sy = _mm256_sign_epi8(yb, xa);
            let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy);
            let d = _mm256_set1_ps(f16_to_f32(a.d) * f16_to_f32(b.d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
        }
    }
    let lo = _mm256_castps256_ps128(acc);
    let hi = _mm256_extractf128_ps::<1>(acc);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}
