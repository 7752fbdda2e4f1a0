//! AMX-INT8 microkernel (Sapphire Rapids and later): 32 × 32 output tiles, one `tdpbssd` /
//! `tdpbsud` per 16 × 16 sub-tile and 32-element block (K = 32, or 16 for Q6_K), then the same
//! per-block f32 scaling as every other ISA in AVX-512.
//!
//! Rust has no stable AMX intrinsics or target features, so the tile instructions are inline
//! assembly on fixed `tmm` registers (the compiler never allocates them). Layout fit: a packed
//! weight cell's quants (`[kb/4 steps][16 columns][4 bytes]`) are exactly an AMX B tile of
//! `kb/4` rows × 64 bytes, and a block of activation rows (row-major, stride K) is an A tile.
//! Symmetric formats are packed signed (`tdpbssd`, no correction), affine formats unsigned
//! (`tdpbsud`). The integer block sums are exact, so results match the scalar kernel bit for bit.
//!
//! The OS must grant the process the AMX tile-data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! requested once during detection.

// Register tiles are indexed [row][vector] in lockstep; index loops read clearer than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::asm;
use std::arch::x86_64::*;

use crate::dispatch::{Dots, Isa, Kernels};
use crate::gemm::tile::{F32Kernel, Int8Kernel, Int8Layout, Int8Tile, PANEL};

pub(crate) static KERNELS: Kernels = Kernels {
    isa: Isa::Amx,
    int8: Int8Kernel { mr: 32, nr: 32, kc: 512, signed_weights: true, tile: int8_tile },
    f32k: F32Kernel { ..super::avx512::KERNELS_VNNI.f32k },
    quant_q8_0: super::avx512::KERNELS_VNNI.quant_q8_0,
    quant_q8k: super::avx512::KERNELS_VNNI.quant_q8k,
    dots: Dots { ..super::avx512::KERNELS_VNNI.dots },
    axpy: super::avx512::KERNELS_VNNI.axpy,
};

/// CPU has AMX-TILE and AMX-INT8, the OS enabled their state, and granted it to this process.
pub(crate) fn detect() -> bool {
    // CPUID leaf 7 exists on every x86-64 CPU that reaches here (AVX-512 was detected).
    let leaf7 = __cpuid_count(7, 0);
    let cpu = (leaf7.edx >> 24) & 1 == 1 && (leaf7.edx >> 25) & 1 == 1;
    cpu && request_tile_permission()
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 on success. Idempotent.
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let ret: i64;
    // SAFETY: a plain Linux syscall with integer arguments; it only changes this process's
    // permitted extended-state set. rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The 64-byte tile configuration: C tiles tmm0..3 (16 rows × 64 bytes), A tiles tmm4..5
/// (16 rows × kb bytes), B tiles tmm6..7 (kb/4 rows × 64 bytes).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(kb: usize) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        let mut set = |t: usize, rows: usize, colsb: usize| {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(colsb as u16).to_le_bytes());
            c[48 + t] = rows as u8;
        };
        for t in 0..4 {
            set(t, 16, 64);
        }
        set(4, 16, kb);
        set(5, 16, kb);
        set(6, kb / 4, 64);
        set(7, kb / 4, 64);
        TileConfig(c)
    }
}

/// Integer results of one block: 4 sub-tiles of 16 × 16 i32.
#[repr(C, align(64))]
struct Sums([[[i32; 16]; 16]; 4]);

/// # Safety
/// AMX (tile state granted) and AVX-512 F/BW/VL/DQ must be available; the tile must be valid
/// (see `Int8Kernel`): rows up to the next multiple of 16 above `mr` must be readable.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn int8_tile(t: &Int8Tile, lay: &Int8Layout) {
    super::hit(Isa::Amx);
    // SAFETY: features enabled above; the tile contract is the caller's.
    unsafe {
        match (t.mr > 16, t.ncols > PANEL) {
            (true, true) => tile_impl::<2, 2>(t, lay),
            (true, false) => tile_impl::<2, 1>(t, lay),
            (false, true) => tile_impl::<1, 2>(t, lay),
            (false, false) => tile_impl::<1, 1>(t, lay),
        }
    }
}

#[inline(always)]
fn col_mask(ncols: usize, v: usize) -> __mmask16 {
    let valid = ncols.saturating_sub(v * PANEL).min(PANEL);
    ((1u32 << valid) - 1) as __mmask16
}

/// `MV` 16-row A tiles × `NV` 16-column panels.
///
/// # Safety
/// As `int8_tile`, with `t.mr <= 16 * MV` and `t.ncols <= 16 * NV`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
unsafe fn tile_impl<const MV: usize, const NV: usize>(t: &Int8Tile, lay: &Int8Layout) {
    let cfg = TileConfig::new(lay.kb);
    let mut sums = [Sums([[[0; 16]; 16]; 4]), Sums([[[0; 16]; 16]; 4])];
    let mut acc = [[[_mm512_setzero_ps(); NV]; 16]; MV];
    let signed = lay.signed && !lay.affine;
    // SAFETY: every tile load reads rows < 16 * MV (padded by the scratch) × kb bytes at stride
    // lda, or kb/4 rows × 64 bytes of a packed cell (consecutive from `w`, or named by `res`) of
    // a panel < NV; tile stores write `sums`;
    // C accesses are masked to mr rows × ncols columns.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        if t.accumulate {
            for h in 0..MV {
                for r in 0..16.min(t.mr.saturating_sub(16 * h)) {
                    for v in 0..NV {
                        acc[h][r][v] = _mm512_maskz_loadu_ps(
                            col_mask(t.ncols, v),
                            t.c.add((16 * h + r) * t.ldc + v * PANEL),
                        );
                    }
                }
            }
        }
        // One block: activation block `b` against the cell at `cell` of each panel.
        macro_rules! block {
            ($b:expr, $cell:expr) => {{
                let (b, cell): (usize, *const u8) = ($b, $cell);
                let a = t.a.add(b * lay.kb);
                let buf = &mut sums[b % 2];
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                asm!("tileloadd tmm4, [{a} + {s}*1]", a = in(reg) a, s = in(reg) t.lda, options(nostack, readonly));
                asm!("tileloadd tmm6, [{b} + {s}*1]", b = in(reg) cell, s = in(reg) 64usize, options(nostack, readonly));
                if MV == 2 {
                    asm!("tileloadd tmm5, [{a} + {s}*1]", a = in(reg) a.add(16 * t.lda), s = in(reg) t.lda, options(nostack, readonly));
                }
                if NV == 2 {
                    asm!("tileloadd tmm7, [{b} + {s}*1]", b = in(reg) cell.add(lay.panel_stride), s = in(reg) 64usize, options(nostack, readonly));
                }
                if signed {
                    asm!("tdpbssd tmm0, tmm4, tmm6", options(nostack, nomem));
                    if NV == 2 {
                        asm!("tdpbssd tmm1, tmm4, tmm7", options(nostack, nomem));
                    }
                    if MV == 2 {
                        asm!("tdpbssd tmm2, tmm5, tmm6", options(nostack, nomem));
                        if NV == 2 {
                            asm!("tdpbssd tmm3, tmm5, tmm7", options(nostack, nomem));
                        }
                    }
                } else {
                    asm!("tdpbsud tmm0, tmm4, tmm6", options(nostack, nomem));
                    if NV == 2 {
                        asm!("tdpbsud tmm1, tmm4, tmm7", options(nostack, nomem));
                    }
                    if MV == 2 {
                        asm!("tdpbsud tmm2, tmm5, tmm6", options(nostack, nomem));
                        if NV == 2 {
                            asm!("tdpbsud tmm3, tmm5, tmm7", options(nostack, nomem));
                        }
                    }
                }
                let base = buf.0.as_mut_ptr();
                asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) base, s = in(reg) 64usize, options(nostack));
                if NV == 2 {
                    asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) base.add(1), s = in(reg) 64usize, options(nostack));
                }
                if MV == 2 {
                    asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) base.add(2), s = in(reg) 64usize, options(nostack));
                    if NV == 2 {
                        asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) base.add(3), s = in(reg) 64usize, options(nostack));
                    }
                }
                let mut dw = [_mm512_setzero_ps(); NV];
                let mut mw = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    dw[v] = _mm512_load_ps(cell.add(v * lay.panel_stride + lay.dw_offset()).cast());
                    if lay.affine {
                        mw[v] = _mm512_load_ps(cell.add(v * lay.panel_stride + lay.mw_offset()).cast());
                    }
                }
                for h in 0..MV {
                    for r in 0..16.min(t.mr.saturating_sub(16 * h)) {
                        let s = (16 * h + r) * t.lds + b;
                        let da = _mm512_set1_ps(*t.ad.add(s));
                        for v in 0..NV {
                            let isum = _mm512_load_si512(buf.0[2 * h + v][r].as_ptr().cast());
                            let scale = _mm512_mul_ps(dw[v], da);
                            acc[h][r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[h][r][v]);
                        }
                        if lay.affine {
                            let sa = _mm512_set1_ps(*t.asum.add(s));
                            for v in 0..NV {
                                acc[h][r][v] = _mm512_fmadd_ps(mw[v], sa, acc[h][r][v]);
                            }
                        }
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
        asm!("tilerelease", options(nostack, nomem));
        for h in 0..MV {
            for r in 0..16.min(t.mr.saturating_sub(16 * h)) {
                for v in 0..NV {
                    _mm512_mask_storeu_ps(
                        t.c.add((16 * h + r) * t.ldc + v * PANEL),
                        col_mask(t.ncols, v),
                        acc[h][r][v],
                    );
                }
            }
        }
    }
}
