//! The one place that detects CPU features. Each ISA gets a `static` table of function pointers;
//! [`Kernels::get`] picks the best supported one once (a `OnceLock`, the project's only global
//! mutable state) and [`Kernels::for_isa`] hands out any other supported table, so tests and
//! benches exercise every path this host can run.
//!
//! A `&'static Kernels` can only be obtained after its ISA was detected, which is what makes
//! calling its `#[target_feature]` function pointers sound: the safe methods below rely on it.

use std::sync::OnceLock;

use crate::blocks::*;
use crate::gemm::tile::{F32Kernel, Int8Kernel};
use crate::{KernelError, QuantType, scalar};

/// An instruction-set level with its own kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust (the specification; runs everywhere).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (+ AVX2, FMA), without VNNI.
    Avx512,
    /// AVX-512 as above plus AVX512-VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX-512 VNNI plus AMX-INT8 tiles for the int8 GEMM (Sapphire Rapids and later; needs
    /// Linux to grant the tile state, which detection requests).
    Amx,
    /// aarch64 NEON. Not implemented yet: `for_isa(Isa::Neon)` is `None` and aarch64 hosts use
    /// the scalar kernels.
    Neon,
}

impl Isa {
    /// All levels, lowest first.
    pub const ALL: [Isa; 6] =
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni, Isa::Amx, Isa::Neon];

    /// Lower-case name (`"avx512vnni"`), used in bench ids.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
        }
    }

    /// Whether this host can run the level's kernels.
    pub fn is_supported(self) -> bool {
        Kernels::for_isa(self).is_some()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Row quantizer for Q8_0 activations (see `gemm::act::quant_act_q8_0`).
pub(crate) type QuantActFn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i32], &mut [f32]);
/// Row quantizer for Q8_K activations (see `gemm::act::quant_act_q8k`).
pub(crate) type QuantActKFn =
    unsafe fn(&[f32], usize, &mut [i8], &mut [f32], &mut [i32], &mut [f32]);

/// Dot products, weight format × `vec_dot_type`.
#[derive(Clone, Copy)]
pub(crate) struct Dots {
    pub q8_0: unsafe fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    pub q4_0: unsafe fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub q4_1: unsafe fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    pub q5_0: unsafe fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    pub q5_1: unsafe fn(&[BlockQ5_1], &[BlockQ8_1]) -> f32,
    pub q4k: unsafe fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    pub q5k: unsafe fn(&[BlockQ5K], &[BlockQ8K]) -> f32,
    pub q6k: unsafe fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
    pub f32: unsafe fn(&[f32], &[f32]) -> f32,
}

pub(crate) const SCALAR_DOTS: Dots = Dots {
    q8_0: scalar::dot::dot_q8_0_q8_0,
    q4_0: scalar::dot::dot_q4_0_q8_0,
    q4_1: scalar::dot::dot_q4_1_q8_1,
    q5_0: scalar::dot::dot_q5_0_q8_0,
    q5_1: scalar::dot::dot_q5_1_q8_1,
    q4k: scalar::dot::dot_q4k_q8k,
    q5k: scalar::dot::dot_q5k_q8k,
    q6k: scalar::dot::dot_q6k_q8k,
    f32: scalar::dot::dot_f32,
};

/// One ISA's kernels. Obtain with [`Kernels::get`] or [`Kernels::for_isa`].
pub struct Kernels {
    pub(crate) isa: Isa,
    pub(crate) int8: Int8Kernel,
    pub(crate) f32k: F32Kernel,
    pub(crate) quant_q8_0: QuantActFn,
    pub(crate) quant_q8k: QuantActKFn,
    pub(crate) dots: Dots,
    pub(crate) axpy: unsafe fn(f32, &[f32], &mut [f32]),
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish_non_exhaustive()
    }
}

fn scalar_axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = alpha.mul_add(v, *o);
    }
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    int8: Int8Kernel { mr: 4, nr: 16, kc: 256, signed_weights: false, tile: scalar::gemm::int8_tile },
    f32k: F32Kernel { mr: 4, nr: 16, tile: scalar::gemm::f32_tile },
    quant_q8_0: crate::gemm::act::quant_act_q8_0,
    quant_q8k: crate::gemm::act::quant_act_q8k,
    dots: SCALAR_DOTS,
    axpy: scalar_axpy,
};

fn detect(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            detect(Isa::Avx2)
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq")
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            detect(Isa::Avx512) && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Amx => {
            static AMX: OnceLock<bool> = OnceLock::new();
            detect(Isa::Avx512Vnni) && *AMX.get_or_init(crate::x86_64::amx::detect)
        }
        _ => false,
    }
}

impl Kernels {
    /// The best kernels this CPU supports, detected on first use.
    ///
    /// [`Isa::Amx`] is not chosen automatically: its tile kernel is correct but not yet faster
    /// than the VNNI one on this project's shapes (the per-block f32 scaling of the tile results
    /// dominates); ask for it with [`Kernels::for_isa`].
    pub fn get() -> &'static Kernels {
        static BEST: OnceLock<&'static Kernels> = OnceLock::new();
        BEST.get_or_init(|| {
            Isa::ALL
                .iter()
                .rev()
                .filter(|&&isa| isa != Isa::Amx)
                .find_map(|&isa| Kernels::for_isa(isa))
                .unwrap_or(&SCALAR)
        })
    }

    /// The kernels of `isa`, if this CPU supports it (and this build has them).
    pub fn for_isa(isa: Isa) -> Option<&'static Kernels> {
        if !detect(isa) {
            return None;
        }
        match isa {
            Isa::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(&crate::x86_64::avx2::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(&crate::x86_64::avx512::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => Some(&crate::x86_64::avx512::KERNELS_VNNI),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => Some(&crate::x86_64::amx::KERNELS),
            _ => None,
        }
    }

    /// Every kernel table this host supports, lowest ISA first.
    pub fn all_supported() -> Vec<&'static Kernels> {
        Isa::ALL.iter().filter_map(|&isa| Kernels::for_isa(isa)).collect()
    }

    /// This table's ISA.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `f` compiled for this table's instruction set: code the compiler inlines into `f`
    /// (element-wise loops, lane-array reductions) is auto-vectorised with AVX-512 or AVX2
    /// instead of the SSE2 baseline. Callers mark their loop helpers `#[inline(always)]` so they
    /// are inlined. The results are the same bits as the baseline build: Rust never contracts
    /// `a * b + c` into an FMA, element-wise operations are exact IEEE operations whatever the
    /// vector width, and reductions written over explicit lane arrays keep their order. This is
    /// how crates that forbid `unsafe` get wide SIMD for their per-row work.
    #[inline]
    pub fn vectorize<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx => {
                // SAFETY: a table of these ISAs exists only when detection found AVX-512
                // F/BW/VL/DQ, AVX2 and FMA on this CPU.
                unsafe { crate::x86_64::vectorize_avx512(f) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: an AVX2 table exists only when detection found AVX2 and FMA.
                unsafe { crate::x86_64::vectorize_avx2(f) }
            }
            _ => f(),
        }
    }

    pub(crate) fn int8_kernel(&self) -> Int8Kernel {
        self.int8
    }
    pub(crate) fn f32_kernel(&self) -> F32Kernel {
        self.f32k
    }

    pub(crate) fn quant_act_q8_0(
        &self,
        x: &[f32],
        q: &mut [i8],
        d: &mut [f32],
        c: &mut [i32],
        draw: &mut [f32],
    ) {
        let nb = x.len() / 32;
        assert!(x.len().is_multiple_of(32) && q.len() >= x.len());
        assert!(d.len() >= nb && c.len() >= nb && draw.len() >= nb);
        // SAFETY: this table exists only if its ISA was detected; lengths were checked above.
        unsafe { (self.quant_q8_0)(x, q, d, c, draw) }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn quant_act_q8k(
        &self,
        x: &[f32],
        kb: usize,
        q: &mut [i8],
        ad: &mut [f32],
        ac: &mut [i32],
        asum: &mut [f32],
    ) {
        let nb = x.len() / kb;
        assert!((kb == 16 || kb == 32) && x.len().is_multiple_of(256) && q.len() >= x.len());
        assert!(ad.len() >= nb && ac.len() >= nb && asum.len() >= nb);
        // SAFETY: this table exists only if its ISA was detected; lengths were checked above.
        unsafe { (self.quant_q8k)(x, kb, q, ad, ac, asum) }
    }

    /// `sum(a[i] * b[i])` over the common length. SIMD versions keep several partial sums, so
    /// the result may differ from the scalar left-to-right sum by rounding.
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: the ISA was detected when this table was handed out; both slices have n
        // elements.
        unsafe { (self.dots.f32)(&a[..n], &b[..n]) }
    }

    /// `y[i] += alpha * x[i]` (fused) over the common length; exact same result on every ISA.
    pub fn axpy_f32(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: the ISA was detected when this table was handed out; both slices have n
        // elements.
        unsafe { (self.axpy)(alpha, &x[..n], &mut y[..n]) }
    }

    /// ggml's `vec_dot` for a weight row `w` of format `ty` against an activation row `act`
    /// already quantized to `ty.vec_dot_type()` (both as bytes, same element count).
    pub fn vec_dot(&self, ty: QuantType, w: &[u8], act: &[u8]) -> Result<f32, KernelError> {
        let at = ty.vec_dot_type();
        let nblocks = w.len() / ty.block_bytes().max(1);
        let n = nblocks * ty.block_elems();
        if w.len() != nblocks * ty.block_bytes() {
            return Err(KernelError::ByteLength { ty, expected: nblocks * ty.block_bytes(), actual: w.len() });
        }
        let expected = at.row_bytes(n)?;
        if act.len() != expected {
            return Err(KernelError::ByteLength { ty: at, expected, actual: act.len() });
        }
        fn view<B: bytemuck::Pod>(b: &[u8]) -> std::borrow::Cow<'_, [B]> {
            match bytemuck::try_cast_slice(b) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(b)),
            }
        }
        let d = &self.dots;
        // SAFETY: (all arms) the ISA was detected when this table was handed out, and both
        // block slices hold the same number of elements (checked above).
        let r = unsafe {
            match ty {
                QuantType::Q8_0 => (d.q8_0)(&view(w), &view(act)),
                QuantType::Q4_0 => (d.q4_0)(&view(w), &view(act)),
                QuantType::Q4_1 => (d.q4_1)(&view(w), &view(act)),
                QuantType::Q5_0 => (d.q5_0)(&view(w), &view(act)),
                QuantType::Q5_1 => (d.q5_1)(&view(w), &view(act)),
                QuantType::Q4K => (d.q4k)(&view(w), &view(act)),
                QuantType::Q5K => (d.q5k)(&view(w), &view(act)),
                QuantType::Q6K => (d.q6k)(&view(w), &view(act)),
                QuantType::F32 => (d.f32)(&view(w), &view(act)),
                _ => return Err(KernelError::Unsupported { ty, op: "vec_dot" }),
            }
        };
        Ok(r)
    }
}
