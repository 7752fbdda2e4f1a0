//! AVX2 + FMA kernels.
//!
//! Without VNNI the int8 dot of 4-byte groups is `vpmaddubsw` (u8 × i8 pairs summed to i16,
//! saturating) then `vpmaddwd` by ones (pairs of i16 summed to i32). Weights are packed signed
//! (the layout AMX uses) and `|w| <= 128` goes in as the unsigned operand. The activation gets
//! `w`'s sign either with `vpsignb` (one-row tiles) or, in the main kernel, by flipping its bits
//! where `w < 0` and correcting the block sum once per block (see `int8_impl`); either way no
//! pair can saturate. Affine formats' quants are small unsigned values (at most 31) and go in
//! as they are. The block sums are exact, the same integers as on every other ISA.

// Register tiles are indexed [row][vector] in lockstep; index loops read clearer than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::blocks::BlockQ8_0;
use crate::dispatch::{Dots, Isa, Kernels, SCALAR_DOTS};
use crate::fp16::f16_to_f32;
use crate::gemm::tile::{F32Kernel, F32Tile, Int8Kernel, Int8Layout, Int8Tile, PANEL};

pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    int8: Int8Kernel { mr: INT8_MR, nr: 16, kc: INT8_KC, signed_weights: true, tile: int8_tile },
    f32k: F32Kernel { mr: F32_MR, nr: 16, tile: f32_tile },
    quant_q8_0: quant_act_q8_0,
    quant_q8k: quant_act_q8k,
    dots: Dots { q8_0: dot_q8_0_q8_0, f32: dot_f32, ..SCALAR_DOTS },
    axpy: axpy_f32,
};

/// K elements per int8 call: a whole 768-wide matrix (and its residual blocks) in one pass, so
/// C makes one round trip per tile instead of three; 3–5 % faster than 256 at M = 16–256.
pub(crate) const INT8_KC: usize = 768;
/// Rows per int8 tile: up to 3 groups of [`GROUP`] rows over one panel of 16 columns (see
/// `int8_rows`).
pub(crate) const INT8_MR: usize = 3 * GROUP;
/// Rows per pass of the int8 microkernel (`int8_impl`): it runs the tile's two 8-column halves
/// one after the other and keeps only one half's i32 block sums in registers (8 rows × 1
/// vector), folding them once per block into f32 accumulators held on the stack, so the weight
/// vector, its magnitude, its sign mask and the sign correction are shared by 8 rows.
const GROUP: usize = 8;
/// Weight magnitudes `|w|` the first row group of a tile leaves on the stack for the others, for
/// one half: a K chunk of up to 288 steps ([`INT8_KC`] is 24 blocks of 32, and the driver lets a
/// chunk grow to 35 blocks rather than leave a short tail, residual blocks included; 4 steps per
/// block of 16 for Q6_K, chunks of up to 71). 9 KiB; longer chunks run uncached.
const CACHE_STEPS: usize = 288;
/// The cache: `|w|` per step, then the i32 sign correction per block.
const CACHE_VECS: usize = CACHE_STEPS + CACHE_STEPS / 4;
/// Rows per f32 tile: 6 × 2 ymm accumulators, 2 weight vectors, one broadcast.
const F32_MR: usize = 6;

/// # Safety
/// AVX2 and FMA must be available; the tile must be valid (see `Int8Kernel`).
#[target_feature(enable = "avx2,fma")]
unsafe fn int8_tile(t: &Int8Tile, lay: &Int8Layout) {
    super::hit(Isa::Avx2);
    // SAFETY: features enabled above; the tile contract is the caller's.
    unsafe { int8_tile_impl_entry(t, lay) }
}

/// The AVX2 int8 microkernel, also used by the AVX-512 table without VNNI.
///
/// # Safety
/// AVX2 and FMA must be available; the tile must be valid (see `Int8Kernel`), with
/// `mr <= INT8_MR` and `ncols <= 16`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn int8_tile_impl_entry(t: &Int8Tile, lay: &Int8Layout) {
    // SAFETY: features enabled above; the tile contract is the caller's.
    unsafe {
        match (t.mr, lay.kb, lay.affine) {
            // One row: the `vpsignb` kernel (nothing to share the sign work with).
            (1, 32, false) => int8_row::<8, false>(t, lay),
            (1, 32, true) => int8_row::<8, true>(t, lay),
            (1, _, _) => int8_row::<4, false>(t, lay),
            (_, 32, false) => int8_rows::<8, false>(t, lay),
            (_, 32, true) => int8_rows::<8, true>(t, lay),
            (_, _, _) => int8_rows::<4, false>(t, lay),
        }
    }
}

/// A tile of up to [`INT8_MR`] rows as row groups of [`GROUP`]. With more than one group
/// (symmetric formats), the first one stores `|w|` and the per-block sign correction for the
/// others, which then skip `vpabsb` and the correction's `vpmaddubsw`: 2 of the 18 ops per step
/// on the two pipes `vpmaddubsw`/`vpmaddwd` use.
///
/// # Safety
/// As `int8_tile_impl_entry`; `lay.kb == 4 * STEPS`, `lay.affine == AFFINE`; symmetric formats
/// packed signed (`lay.signed`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn int8_rows<const STEPS: usize, const AFFINE: bool>(t: &Int8Tile, lay: &Int8Layout) {
    let cached = !AFFINE && t.mr > GROUP && (t.nblocks + t.nres) * STEPS <= CACHE_STEPS;
    // SAFETY: the tile contract is the caller's; with `cached`, the cache holds CACHE_VECS
    // vectors and the tile's logical blocks fit it.
    unsafe {
        if cached {
            let mut cache = std::mem::MaybeUninit::<[__m256i; CACHE_VECS]>::uninit();
            int8_groups::<STEPS, AFFINE, true>(t, lay, cache.as_mut_ptr().cast());
        } else {
            int8_groups::<STEPS, AFFINE, false>(t, lay, std::ptr::null_mut());
        }
    }
}

/// The row groups of `int8_rows`.
///
/// # Safety
/// As `int8_rows`; with `CACHED`, `cache` holds `CACHE_VECS` vectors and
/// `(nblocks + nres) · STEPS <= CACHE_STEPS`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn int8_groups<const STEPS: usize, const AFFINE: bool, const CACHED: bool>(
    t: &Int8Tile,
    lay: &Int8Layout,
    cp: *mut __m256i,
) {
    // Columns 8..16 are all padding when ncols <= 8.
    for h in 0..if t.ncols > 8 { 2 } else { 1 } {
        let mut g = 0;
        while g < t.mr {
            let rows = (t.mr - g).min(GROUP);
            // SAFETY: rows g..g + rows of the tile are rows of the caller's tile; the cache is
            // written (mode 1, the first group) before it is read (mode 2, the later groups of
            // the same half).
            unsafe {
                let sub = Int8Tile {
                    a: t.a.add(g * t.lda),
                    ad: t.ad.add(g * t.lds),
                    ac: t.ac.add(g * t.lds),
                    asum: t.asum.add(g * t.lds),
                    c: t.c.add(g * t.ldc),
                    mr: rows,
                    ..*t
                };
                macro_rules! go {
                    ($($r:literal)*) => {
                        if !CACHED {
                            match rows {
                                $($r => int8_impl::<$r, STEPS, AFFINE, 0>(&sub, lay, h, cp),)*
                                _ => unreachable!("row groups have 1..=8 rows"),
                            }
                        } else if g == 0 {
                            int8_impl::<GROUP, STEPS, AFFINE, 1>(&sub, lay, h, cp)
                        } else {
                            match rows {
                                $($r => int8_impl::<$r, STEPS, AFFINE, 2>(&sub, lay, h, cp),)*
                                _ => unreachable!("row groups have 1..=8 rows"),
                            }
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8);
            }
            g += GROUP;
        }
    }
}

#[inline(always)]
fn lane_mask(ncols: usize, h: usize) -> __m256i {
    let valid = ncols.saturating_sub(h * 8).min(8) as i32;
    // SAFETY: AVX is implied by every caller's target features (AVX2).
    unsafe {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }
}

/// `vpbroadcastd ymm, [p]` as its own load (see the AVX-512 `broadcast_load`): LLVM otherwise
/// hoists and CSEs broadcasts and runs out of the 16 ymm registers.
///
/// # Safety
/// `p` must be readable for 4 bytes; AVX2 must be available.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn broadcast_load(p: *const i8) -> __m256i {
    let x: __m256i;
    // SAFETY: reads 4 bytes at `p` (caller contract); no stack use, no flags.
    unsafe {
        std::arch::asm!(
            "vpbroadcastd {x}, dword ptr [{p}]",
            x = out(ymm_reg) x,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    x
}

/// The one-row int8 microkernel: both 8-column halves in registers, `vpmaddubsw(|w|,
/// vpsignb(a, w))` (`|w| <= 128`, `|a| <= 127`: pairs at most 32512, no saturation).
///
/// # Safety
/// As `int8_tile_impl_entry`; `lay.kb == 4 * STEPS`, `lay.affine == AFFINE`, `t.mr == 1`;
/// symmetric formats packed signed (`lay.signed`).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn int8_row<const STEPS: usize, const AFFINE: bool>(t: &Int8Tile, lay: &Int8Layout) {
    debug_assert!(AFFINE || lay.signed, "the AVX2 kernel needs signed symmetric weights");
    let ones = _mm256_set1_epi16(1);
    let mut facc = [_mm256_setzero_ps(); 2];
    // SAFETY: row 0, blocks < nblocks + nres (residual cells named by `res`), one panel,
    // columns masked to ncols: all inside the tile the caller vouched for.
    unsafe {
        if t.accumulate {
            for (h, acc) in facc.iter_mut().enumerate() {
                *acc = _mm256_maskload_ps(t.c.add(h * 8), lane_mask(t.ncols, h));
            }
        }
        // One block: activation block `b` against the cell at `cell`.
        macro_rules! block {
            ($b:expr, $cell:expr) => {{
                let (b, cell): (usize, *const u8) = ($b, $cell);
                let mut iacc = [_mm256_setzero_si256(); 2];
                for s in 0..STEPS {
                    let a = _mm256_set1_epi32(t.a.add(b * STEPS * 4 + s * 4).cast::<i32>().read_unaligned());
                    for h in 0..2 {
                        let w = _mm256_load_si256(cell.add(s * 64 + h * 32).cast());
                        let p = if AFFINE {
                            _mm256_maddubs_epi16(w, a)
                        } else {
                            _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
                        };
                        iacc[h] = _mm256_add_epi32(iacc[h], _mm256_madd_epi16(p, ones));
                    }
                }
                let da = _mm256_set1_ps(*t.ad.add(b));
                for h in 0..2 {
                    let scale = _mm256_mul_ps(_mm256_load_ps(cell.add(lay.dw_offset() + 32 * h).cast()), da);
                    facc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[h]), scale, facc[h]);
                    if AFFINE {
                        let mw = _mm256_load_ps(cell.add(lay.mw_offset() + 32 * h).cast());
                        facc[h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*t.asum.add(b)), facc[h]);
                    }
                }
            }};
        }
        for b in 0..t.nblocks {
            block!(b, t.w.add(b * lay.block_stride));
        }
        // Residual blocks re-read cells of the packed blocks (see `gemm::tile`).
        for j in 0..t.nres {
            block!(t.nblocks + j, t.panel.add(*t.res.add(j) as usize * lay.block_stride));
        }
        for (h, acc) in facc.iter().enumerate() {
            if t.ncols == 16 {
                _mm256_storeu_ps(t.c.add(h * 8), *acc);
            } else {
                _mm256_maskstore_ps(t.c.add(h * 8), lane_mask(t.ncols, h), *acc);
            }
        }
    }
}

/// `(|w|, w < 0)` for the weight vector at `wp`, adding `vpmaddubsw(|w|, w < 0)` (the sign
/// correction, see `int8_impl`) to `corr`.
///
/// # Safety
/// `wp` must be readable for 32 bytes and 32-byte aligned; AVX2 must be available.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sign_split(wp: *const u8, corr: &mut __m256i, zero: __m256i) -> (__m256i, __m256i) {
    let (u, m): (__m256i, __m256i);
    // SAFETY: reads the 32 aligned bytes at `wp` (caller contract); no stack use, no flags.
    unsafe {
        std::arch::asm!(
            "vmovdqa {m}, ymmword ptr [{wp}]",
            "vpabsb {u}, {m}",
            "vpcmpgtb {m}, {zero}, {m}",
            "vpmaddubsw {t}, {u}, {m}",
            "vpaddw {corr}, {corr}, {t}",
            wp = in(reg) wp,
            zero = in(ymm_reg) zero,
            corr = inout(ymm_reg) *corr,
            u = out(ymm_reg) u,
            m = out(ymm_reg) m,
            t = out(ymm_reg) _,
            options(readonly, nostack, preserves_flags),
        );
    }
    (u, m)
}

/// Four rows of one step: `acc[i] += vpmaddwd(vpmaddubsw(u, bcast(a_i) ^ m), 1)` for the
/// activation dwords at `ap + i·lda`. In asm so the row addresses are addressing modes
/// (`[ap + 2·lda]`, not a chain of adds: the loop is close to the 6-op dispatch width) and
/// nothing is hoisted or spilled.
///
/// # Safety
/// The 4 bytes at `ap + i·lda` (`i < 4`) must be readable; AVX2 must be
/// available.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn rows4(acc: &mut [__m256i], u: __m256i, m: __m256i, ap: *const i8, lda: usize, ones: __m256i) {
    let [c0, c1, c2, c3] = acc else { unreachable!("rows4 takes 4 accumulators") };
    // SAFETY: reads 4 bytes at each of the 4 row addresses (caller contract); no stack use, no
    // flags.
    unsafe {
        std::arch::asm!(
            "vpbroadcastd {t}, dword ptr [{ap}]",
            "vpxor {t}, {t}, {m}",
            "vpmaddubsw {t}, {u}, {t}",
            "vpmaddwd {t}, {t}, {ones}",
            "vpaddd {c0}, {c0}, {t}",
            "vpbroadcastd {t}, dword ptr [{ap} + {lda}]",
            "vpxor {t}, {t}, {m}",
            "vpmaddubsw {t}, {u}, {t}",
            "vpmaddwd {t}, {t}, {ones}",
            "vpaddd {c1}, {c1}, {t}",
            "vpbroadcastd {t}, dword ptr [{ap} + 2*{lda}]",
            "vpxor {t}, {t}, {m}",
            "vpmaddubsw {t}, {u}, {t}",
            "vpmaddwd {t}, {t}, {ones}",
            "vpaddd {c2}, {c2}, {t}",
            "lea {l3}, [{lda} + 2*{lda}]",
            "vpbroadcastd {t}, dword ptr [{ap} + {l3}]",
            "vpxor {t}, {t}, {m}",
            "vpmaddubsw {t}, {u}, {t}",
            "vpmaddwd {t}, {t}, {ones}",
            "vpaddd {c3}, {c3}, {t}",
            ap = in(reg) ap,
            lda = in(reg) lda,
            l3 = out(reg) _,
            u = in(ymm_reg) u,
            m = in(ymm_reg) m,
            ones = in(ymm_reg) ones,
            c0 = inout(ymm_reg) *c0,
            c1 = inout(ymm_reg) *c1,
            c2 = inout(ymm_reg) *c2,
            c3 = inout(ymm_reg) *c3,
            t = out(ymm_reg) _,
            options(readonly, nostack, preserves_flags),
        );
    }
}

/// The int8 microkernel for `MR` rows × one panel of 16 columns, `STEPS` = kb/4 steps per
/// block.
///
/// Symmetric formats: the exact i32 dot `Σ w·a` of a column and a row over a block, with `w`
/// packed signed. `vpmaddubsw` needs an unsigned operand, so it gets `|w|`, and the activation
/// byte is flipped where `w < 0`: with the mask `m = (w < 0)` (0 or −1 per byte),
/// `a ^ m` is `a` or `−a − 1`, so `|w| · (a ^ m)` is `w·a` or `w·a − |w|`. The block sum is off
/// by `Σ_{w<0} −|w|`, which depends on the weights only: `vpmaddubsw(|w|, m)`, accumulated in
/// i16 over the block's steps (at most 2 · 128 · 8 in magnitude) and subtracted once per block
/// and column. Pairs never saturate: `|w| <= 127` with `a ^ m = a` in [−128, 127], or
/// `|w| <= 128` with `a ^ m = −a − 1` in [−128, 127] for `a` in [−127, 127], so each product is
/// in [−16384, 16256] and each pair in [−32768, 32512]. (`vpsignb(a, w)` gives `a·sgn(w)`
/// directly, but on Zen 4 it runs on the two pipes `vpmaddubsw`/`vpmaddwd` need: 3 of those
/// ops per product vector instead of 2 and an `xor` anywhere.) The block sums are the same
/// integers as on every other ISA.
///
/// Affine formats' quants are small unsigned values (at most 31) and go in as they are.
///
/// Columns `8h..8h + 8` only. `CACHE` (symmetric formats): 0 computes `|w|` and the
/// correction, 1 also stores them at `cache` (`|w|` of logical block `b`, step `s` at
/// `b · STEPS + s`, the correction at `CACHE_STEPS + b`), 2 reads them from there.
///
/// # Safety
/// As `int8_tile_impl_entry`; `lay.kb == 4 * STEPS`, `lay.affine == AFFINE`, `t.mr == MR`,
/// `h < 2`; symmetric formats packed signed (`lay.signed`). With `CACHE` 1 or 2, `cache` holds
/// `CACHE_VECS` vectors and `(nblocks + nres) · STEPS <= CACHE_STEPS`, and with 2 a call with
/// `CACHE` 1 on the same half of the same weight cells filled it.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn int8_impl<const MR: usize, const STEPS: usize, const AFFINE: bool, const CACHE: u8>(
    t: &Int8Tile,
    lay: &Int8Layout,
    h: usize,
    cache: *mut __m256i,
) {
    debug_assert!(AFFINE || lay.signed, "the AVX2 kernel needs signed symmetric weights");
    let ones = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    // The f32 accumulators live in memory: they are touched once per block, and registers go
    // to the i32 block sums.
    let mut facc = [_mm256_setzero_ps(); MR];
    let fp: *mut __m256 = facc.as_mut_ptr();
    // Full halves use plain loads and stores: `vmaskmovps` is slow on AMD cores.
    let full = t.ncols >= 8 * (h + 1);
    let mask = lane_mask(t.ncols, h);
    // SAFETY: rows < MR, blocks < nblocks + nres (residual cells named by `res`), one panel,
    // columns 8h..8h+8 masked to ncols: all inside the tile the caller vouched for; `fp`
    // addresses the MR vectors of `facc`; cache indices stay below CACHE_VECS (caller
    // contract).
    unsafe {
        if t.accumulate {
            for r in 0..MR {
                let c = t.c.add(r * t.ldc + h * 8);
                *fp.add(r) = if full { _mm256_loadu_ps(c) } else { _mm256_maskload_ps(c, mask) };
            }
        }
        // One block: activation block `b` against the cell at `cell`.
        macro_rules! block {
            ($b:expr, $cell:expr) => {{
                let (b, cell): (usize, *const u8) = ($b, $cell);
                let mut iacc = [_mm256_setzero_si256(); MR];
                let mut corr = _mm256_setzero_si256();
                for s in 0..STEPS {
                    // Step `s` of the cell: 16 columns × 4 bytes; this half's vector holds
                    // columns 8h..8h+8, each lane one column's 4 consecutive K values.
                    let wp = cell.add(s * 64 + h * 32);
                    let ap = t.a.add(b * STEPS * 4 + s * 4);
                    let (u, m) = if AFFINE {
                        (_mm256_load_si256(wp.cast()), zero)
                    } else if CACHE == 2 {
                        let m = _mm256_cmpgt_epi8(zero, _mm256_load_si256(wp.cast()));
                        (cache.add(b * STEPS + s).read(), m)
                    } else {
                        let (u, m) = sign_split(wp, &mut corr, zero);
                        if CACHE == 1 {
                            cache.add(b * STEPS + s).write(u);
                        }
                        (u, m)
                    };
                    let mut r = 0;
                    if !AFFINE {
                        while r + 4 <= MR {
                            rows4(&mut iacc[r..r + 4], u, m, ap.add(r * t.lda), t.lda, ones);
                            r += 4;
                        }
                    }
                    while r < MR {
                        let a = broadcast_load(ap.add(r * t.lda));
                        let x = if AFFINE { a } else { _mm256_xor_si256(a, m) };
                        let p = _mm256_maddubs_epi16(u, x);
                        iacc[r] = _mm256_add_epi32(iacc[r], _mm256_madd_epi16(p, ones));
                        r += 1;
                    }
                }
                let corr = match CACHE {
                    2 => cache.add(CACHE_STEPS + b).read(),
                    _ => _mm256_madd_epi16(corr, ones),
                };
                if CACHE == 1 {
                    cache.add(CACHE_STEPS + b).write(corr);
                }
                let dw = _mm256_load_ps(cell.add(lay.dw_offset() + 32 * h).cast());
                for r in 0..MR {
                    let s = r * t.lds + b;
                    let isum = if AFFINE { iacc[r] } else { _mm256_sub_epi32(iacc[r], corr) };
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*t.ad.add(s)));
                    let f = fp.add(r);
                    let mut acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, f.read_volatile());
                    if AFFINE {
                        let mw = _mm256_load_ps(cell.add(lay.mw_offset() + 32 * h).cast());
                        acc = _mm256_fmadd_ps(mw, _mm256_set1_ps(*t.asum.add(s)), acc);
                    }
                    f.write_volatile(acc);
                }
            }};
        }
        for b in 0..t.nblocks {
            block!(b, t.w.add(b * lay.block_stride));
        }
        // Residual blocks re-read cells of the packed blocks (see `gemm::tile`).
        for j in 0..t.nres {
            block!(t.nblocks + j, t.panel.add(*t.res.add(j) as usize * lay.block_stride));
        }
        for r in 0..MR {
            let c = t.c.add(r * t.ldc + h * 8);
            if full {
                _mm256_storeu_ps(c, *fp.add(r));
            } else {
                _mm256_maskstore_ps(c, mask, *fp.add(r));
            }
        }
    }
}

/// # Safety
/// AVX2 and FMA must be available; the tile must be valid (see `F32Kernel`).
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_tile(t: &F32Tile) {
    super::hit(Isa::Avx2);
    // SAFETY: features enabled above; the tile contract is the caller's.
    unsafe {
        match t.mr {
            1 => f32_impl::<1>(t),
            2 => f32_impl::<2>(t),
            3 => f32_impl::<3>(t),
            4 => f32_impl::<4>(t),
            5 => f32_impl::<5>(t),
            _ => f32_impl::<6>(t),
        }
    }
}

/// # Safety
/// As `f32_tile`, with `t.mr == MR` and `t.ncols <= 16`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn f32_impl<const MR: usize>(t: &F32Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY: rows < MR, k < kc, one panel, columns masked to ncols: inside the caller's tile.
    unsafe {
        if t.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (h, a) in row.iter_mut().enumerate() {
                    *a = _mm256_maskload_ps(t.c.add(r * t.ldc + h * 8), lane_mask(t.ncols, h));
                }
            }
        }
        for k in 0..t.kc {
            let w0 = _mm256_load_ps(t.w.add(k * PANEL));
            let w1 = _mm256_load_ps(t.w.add(k * PANEL + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*t.a.add(r * t.lda + k));
                row[0] = _mm256_fmadd_ps(a, w0, row[0]);
                row[1] = _mm256_fmadd_ps(a, w1, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (h, a) in row.iter().enumerate() {
                _mm256_maskstore_ps(t.c.add(r * t.ldc + h * 8), lane_mask(t.ncols, h), *a);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// C's `roundf` on 8 lanes, converted to i32 (see the AVX-512 `round_half_away_i32`):
/// `trunc(v + copysign(h, v))` with `h` the largest float below one half.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn round_half_away_i32(v: __m256) -> __m256i {
    let h = _mm256_set1_ps(f32::from_bits(0x3EFF_FFFF));
    let step = _mm256_or_ps(h, _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
    _mm256_cvttps_epi32(_mm256_add_ps(v, step))
}

/// Lane `4k + j` of the result is `op` over the 8 lanes of `v[k + 2j]` (an 8 × 8
/// transpose-reduction). `MAX`: `max_ps`; otherwise the lanes are i32 and `op` is their sum.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn reduce8<const MAX: bool>(v: &[__m256; 8]) -> __m256 {
    #[target_feature(enable = "avx2")]
    #[inline]
    fn op<const MAX: bool>(a: __m256, b: __m256) -> __m256 {
        if MAX {
            _mm256_max_ps(a, b)
        } else {
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)))
        }
    }
    // v[2p], v[2p+1] -> one vector: 128-bit halves hold their 4-lane partials.
    let w: [__m256; 4] = std::array::from_fn(|p| {
        let (a, b) = (v[2 * p], v[2 * p + 1]);
        op::<MAX>(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b))
    });
    // -> 128-bit half k: two partials of block 4p+k, then two of block 4p+2+k.
    let y: [__m256; 2] = std::array::from_fn(|p| {
        let (a, b) = (_mm256_castps_pd(w[2 * p]), _mm256_castps_pd(w[2 * p + 1]));
        op::<MAX>(
            _mm256_castpd_ps(_mm256_unpacklo_pd(a, b)),
            _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)),
        )
    });
    // -> 128-bit half k: blocks k, k+2, k+4, k+6.
    op::<MAX>(_mm256_shuffle_ps::<0x88>(y[0], y[1]), _mm256_shuffle_ps::<0xDD>(y[0], y[1]))
}

/// Q8_0 activation row (bit-identical to `gemm::act::quant_act_q8_0` for finite inputs), 8
/// blocks at a time, as the AVX-512 version does 16: the blocks' maxima and quant sums are
/// reduced together (`reduce8`) and their scales computed as one vector.
///
/// # Safety
/// AVX2 and FMA must be available. `q` holds `x.len()` entries, `d`/`corr` `x.len()/32`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quant_act_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32], corr: &mut [i32], draw: &mut [f32]) {
    let sign_bit = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let nb = x.len() / 32;
    for g in (0..nb).step_by(8) {
        let n = (nb - g).min(8);
        // SAFETY: blocks g..g+n are inside `x` and `q` (caller contract); the per-block outputs
        // are written for those n blocks only.
        unsafe {
            let xb = x.as_ptr().add(g * 32);
            let load = |i: usize, j: usize| _mm256_loadu_ps(xb.add(i * 32 + 8 * j));
            let mut m = [_mm256_setzero_ps(); 8];
            for (i, mi) in m.iter_mut().enumerate().take(n) {
                let a: [__m256; 4] = std::array::from_fn(|j| _mm256_andnot_ps(sign_bit, load(i, j)));
                *mi = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            }
            let amax = _mm256_permutevar8x32_ps(reduce8::<true>(&m), order);
            let dd = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
            // `if d != 0.0 { 1.0 / d } else { 0.0 }` (NaN compares unequal, as in Rust).
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(dd, _mm256_setzero_ps());
            let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), dd), nonzero);
            let dh = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(dd));
            let (mut ids, mut dds, mut dhs) = ([0f32; 8], [0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(ids.as_mut_ptr(), id);
            _mm256_storeu_ps(dds.as_mut_ptr(), dd);
            _mm256_storeu_ps(dhs.as_mut_ptr(), dh);
            d[g..g + n].copy_from_slice(&dhs[..n]);
            draw[g..g + n].copy_from_slice(&dds[..n]);
            let mut sums = [_mm256_setzero_ps(); 8];
            for (i, si) in sums.iter_mut().enumerate().take(n) {
                let idv = _mm256_set1_ps(ids[i]);
                let qi: [__m256i; 4] = std::array::from_fn(|j| round_half_away_i32(_mm256_mul_ps(load(i, j), idv)));
                let p = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
                _mm256_storeu_si256(q.as_mut_ptr().add((g + i) * 32).cast(), _mm256_permutevar8x32_epi32(p, order));
                let sum = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
                *si = _mm256_castsi256_ps(sum);
            }
            let sum = _mm256_castps_si256(_mm256_permutevar8x32_ps(reduce8::<false>(&sums), order));
            let mut cs = [0i32; 8];
            _mm256_storeu_si256(cs.as_mut_ptr().cast(), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(sum)));
            corr[g..g + n].copy_from_slice(&cs[..n]);
        }
    }
}

/// Q8_K activation row (bit-identical to `gemm::act::quant_act_q8k` for finite inputs; see the
/// AVX-512 version).
///
/// # Safety
/// AVX2, FMA must be available; `kb` is 16 or 32, `x.len()` a multiple of 256, `q` holds
/// `x.len()` entries and `ad`/`ac`/`asum` `x.len() / kb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quant_act_q8k(x: &[f32], kb: usize, q: &mut [i8], ad: &mut [f32], ac: &mut [i32], asum: &mut [f32]) {
    let per_super = 256 / kb;
    let sign_bit = _mm256_set1_ps(-0.0);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (s, xb) in x.chunks_exact(256).enumerate() {
        // SAFETY: `xb` has 256 elements; outputs have room for super-block `s` (caller contract).
        unsafe {
            let ld = |i: usize| _mm256_loadu_ps(xb.as_ptr().add(8 * i));
            let mut m = _mm256_setzero_ps();
            for i in 0..32 {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, ld(i)));
            }
            let amax = hmax(m);
            let mut sums = [0i32; 16];
            let (iscale, d) = if amax == 0.0 {
                (0.0, 0.0)
            } else {
                let target = _mm256_set1_ps(amax);
                let mut max = 0.0f32;
                for i in 0..32 {
                    let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign_bit, ld(i)), target));
                    if hit != 0 {
                        max = xb[8 * i + hit.trailing_zeros() as usize];
                        break;
                    }
                }
                let iscale = -127.0 / max;
                (iscale, 1.0 / iscale)
            };
            let isv = _mm256_set1_ps(iscale);
            let cap = _mm256_set1_epi32(127);
            for g in 0..8 {
                let qi: [__m256i; 4] = std::array::from_fn(|i| {
                    _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(ld(4 * g + i), isv)), cap)
                });
                let p = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
                _mm256_storeu_si256(q.as_mut_ptr().add(s * 256 + 32 * g).cast(), _mm256_permutevar8x32_epi32(p, order));
                sums[2 * g] = hsum_epi32(_mm256_add_epi32(qi[0], qi[1]));
                sums[2 * g + 1] = hsum_epi32(_mm256_add_epi32(qi[2], qi[3]));
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

/// f32 dot with four 8-lane partial sums.
///
/// # Safety
/// AVX2 and FMA must be available; `a` and `b` have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load is within `0..n` of both slices.
    unsafe {
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let (x, y) = (a.as_ptr().add(i + 8 * j), b.as_ptr().add(i + 8 * j));
                *s = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(y), *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), acc[0]);
            i += 8;
        }
    }
    let mut s = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for j in i..n {
        s = a[j].mul_add(b[j], s);
    }
    s
}

/// `y += alpha * x`, fused per element (bit-identical to the scalar `mul_add`).
///
/// # Safety
/// AVX2 and FMA must be available; `x` and `y` have the same length.
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm256_set1_ps(alpha);
    let mut i = 0;
    // SAFETY: every access is within `0..n` of both slices.
    unsafe {
        while i + 8 <= n {
            let yv = _mm256_loadu_ps(y.as_ptr().add(i));
            let r = _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), yv);
            _mm256_storeu_ps(y.as_mut_ptr().add(i), r);
            i += 8;
        }
    }
    for j in i..n {
        y[j] = alpha.mul_add(x[j], y[j]);
    }
}

/// Q8_0 × Q8_0 dot: `vpmaddubsw(|x|, sign(y, x))` (no saturation: |x| <= 128, |y| <= 127) and
/// `vpmaddwd` per block (exact), then one f32 fma per block into eight lanes.
///
/// # Safety
/// AVX2 and FMA must be available; `x` and `y` have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let ones = _mm256_set1_epi16(1);
    for (a, b) in x.iter().zip(y) {
        // SAFETY: each block holds exactly 32 quant bytes.
        unsafe {
            let xa = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let yb = _mm256_loadu_si256(b.qs.as_ptr().cast());
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(xa), _mm256_sign_epi8(yb, xa));
            let s = _mm256_madd_epi16(p, ones);
            let d = _mm256_set1_ps(f16_to_f32(a.d) * f16_to_f32(b.d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
        }
    }
    hsum_ps(acc)
}
