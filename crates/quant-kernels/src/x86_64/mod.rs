//! x86-64 kernels. Each module's entry points are `#[target_feature]` `unsafe fn`s; they are only
//! reachable through a `Kernels` table handed out after detection (see `dispatch`).

pub mod amx;
pub mod avx2;
pub mod avx512;

/// Bumped by each ISA's GEMM entry points in test builds, so tests can prove that the path they
/// asked for actually ran (index: `Isa as usize`).
#[cfg(test)]
pub(crate) static ISA_HITS: [std::sync::atomic::AtomicUsize; 6] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 6];

#[cfg(test)]
#[inline(always)]
pub(crate) fn hit(isa: crate::Isa) {
    ISA_HITS[isa as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit(_isa: crate::Isa) {}

/// Runs `f` in a function compiled for AVX-512, so that what inlines into it vectorises wide.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/DQ, AVX2 and FMA.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")]
#[inline]
pub(crate) unsafe fn vectorize_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` in a function compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn vectorize_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
