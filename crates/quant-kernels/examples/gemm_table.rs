//! Prints the GEMM throughput tables of BENCHMARKS.md: the measured one-core peaks and every
//! GEMM as GOP/s and % of peak, each the best of many repetitions timed in *thread CPU time*
//! (so time spent descheduled on a busy machine is not counted).
//!
//! `cargo run --release -p quant-kernels --example gemm_table [-- --quick]`
//! Env: `ISA=amx|avx512vnni|avx512|avx2|scalar` (default: best), `SHAPES=768x768,...` (K×N),
//! `MS=1,32` (row counts), `RESIDUAL=3` (the Q8_0 tables use that many residual blocks per
//! matrix, as the model does; GOP/s still count the nominal K), `Q8_ONLY=1` (skip the format
//! and f32 tables).

use std::time::Instant;

use quant_kernels::{
    GemmScratch, Isa, Kernels, PackedMatrix, QuantType, Serial, __int8_microkernel_loop,
    gemm_f32_nt, quantize_q8_0,
};

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Seconds of CPU time this thread has used.
fn thread_cpu_time() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is Linux's thread CPU clock.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    let wall = std::env::var_os("WALL").is_some();
    let mut b = f64::MAX;
    for _ in 0..reps {
        let (t, c) = (Instant::now(), thread_cpu_time());
        f();
        b = b.min(if wall { t.elapsed().as_secs_f64() } else { thread_cpu_time() - c });
    }
    b
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// `iters` × 16 independent `vpdpbusd zmm` (16 × 64 multiply-adds each).
    ///
    /// # Safety
    /// AVX512-VNNI must be available.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn vnni(iters: usize) -> i32 {
        let (a, b) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
        let mut acc = [_mm512_setzero_si512(); 16];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
            std::hint::black_box(&a);
        }
        _mm512_reduce_add_epi32(acc.iter().fold(_mm512_setzero_si512(), |s, &x| _mm512_add_epi32(s, x)))
    }

    /// `iters` × 8 independent AVX2 int8 dot steps, the sequence the AVX2 kernel uses where VNNI
    /// is missing: `vpmaddubsw` (u8·i8 pairs to i16), `vpmaddwd` by ones (to i32), `vpaddd`;
    /// 32 multiply-adds each. The weights are re-read from L1 every iteration (through
    /// `black_box`, so the products cannot be hoisted), as a GEMM reads its packed panel.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2_int8(iters: usize) -> i32 {
        let w = [0x0102_0304_0506_0708_u64; 32];
        let (a, ones) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        let mut acc = [_mm256_setzero_si256(); 8];
        for _ in 0..iters {
            let p = std::hint::black_box(w.as_ptr()).cast::<__m256i>();
            for (j, x) in acc.iter_mut().enumerate() {
                // SAFETY: `w` holds 256 bytes, eight unaligned 32-byte loads.
                let b = unsafe { _mm256_loadu_si256(p.add(j)) };
                let t = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones);
                *x = _mm256_add_epi32(*x, t);
            }
        }
        let s = acc.iter().fold(_mm256_setzero_si256(), |s, &x| _mm256_add_epi32(s, x));
        _mm256_extract_epi32::<0>(s)
    }

    /// `iters` × 16 independent `vfmadd231ps zmm` (16 × 16 multiply-adds each).
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn fma(iters: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(1.000_001), _mm512_set1_ps(0.999_999));
        let mut acc = [_mm512_setzero_ps(); 16];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
            std::hint::black_box(&a);
        }
        _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x)))
    }
}

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Best GOP/s of `f` and best vpdpbusd GOP/s of a peak loop run for the same duration right
/// before each repetition: on a shared machine both then see the same interference, so their
/// ratio is the kernel's efficiency (a short-burst peak alone would flatter the denominator).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_assignments, unused_mut))]
fn interleaved(reps: usize, ops: f64, short_peak: f64, mut f: impl FnMut()) -> (f64, f64) {
    let (mut best_f, mut best_p) = (0f64, 0f64);
    // Iterations of the peak loop that take about as long as one call of `f` at short_peak.
    let mut iters = 1000usize;
    for _ in 0..reps {
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx512Vnni.is_supported() {
            let c = thread_cpu_time();
            // SAFETY: VNNI support checked above.
            std::hint::black_box(unsafe { peak::vnni(iters) });
            let t = thread_cpu_time() - c;
            best_p = best_p.max((iters * 16 * 128) as f64 / t / 1e9);
        }
        let c = thread_cpu_time();
        f();
        let t = thread_cpu_time() - c;
        best_f = best_f.max(ops / t / 1e9);
        iters = ((t * short_peak * 1e9) / (16.0 * 128.0)).clamp(1000.0, 1e8) as usize;
    }
    if best_p == 0.0 {
        best_p = short_peak;
    }
    (best_f, best_p)
}

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let kern = match std::env::var("ISA").ok().as_deref() {
        Some("scalar") => Kernels::for_isa(Isa::Scalar),
        Some("avx2") => Kernels::for_isa(Isa::Avx2),
        Some("avx512") => Kernels::for_isa(Isa::Avx512),
        Some("avx512vnni") => Kernels::for_isa(Isa::Avx512Vnni),
        Some("amx") => Kernels::for_isa(Isa::Amx),
        _ => Some(Kernels::get()),
    }
    .expect("requested ISA not supported here");
    let (mut vnni_peak, mut fma_peak, mut avx2_peak) = (f64::NAN, f64::NAN, f64::NAN);
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 5000;
        if Isa::Avx512Vnni.is_supported() {
            let t = best(400, || {
                // SAFETY: VNNI support checked above.
                std::hint::black_box(unsafe { peak::vnni(iters) });
            });
            vnni_peak = (iters * 16 * 128) as f64 / t / 1e9;
        }
        if Isa::Avx512.is_supported() {
            let t = best(400, || {
                // SAFETY: AVX-512 support checked above.
                std::hint::black_box(unsafe { peak::fma(iters) });
            });
            fma_peak = (iters * 16 * 32) as f64 / t / 1e9;
        }
        if Isa::Avx2.is_supported() {
            let t = best(400, || {
                // SAFETY: AVX2 support checked above.
                std::hint::black_box(unsafe { peak::avx2_int8(iters) });
            });
            avx2_peak = (iters * 8 * 64) as f64 / t / 1e9;
        }
    }
    println!(
        "isa: {}; one-core peaks: vpdpbusd zmm {vnni_peak:.0} GOP/s, FMA zmm {fma_peak:.0} GFLOP/s, \
         AVX2 int8 (vpmaddubsw+vpmaddwd+vpaddd ymm) {avx2_peak:.0} GOP/s = {:.0}% of vpdpbusd\n",
        kern.isa(),
        100.0 * avx2_peak / vnni_peak
    );

    let mut ops = 0.0;
    let t = best(20, || ops = __int8_microkernel_loop(kern, 12, 1500));
    println!("int8 microkernel alone (L1-resident 12-block tile): {:.0} GOP/s ({:.0}% of vpdpbusd peak)\n", ops / t / 1e9, 100.0 * ops / t / 1e9 / vnni_peak);

    let mut rng = Rng(42);
    let shapes: Vec<(usize, usize)> = std::env::var("SHAPES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|p| {
                    let (a, b) = p.split_once('x').expect("KxN");
                    (a.parse().expect("K"), b.parse().expect("N"))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(768, 768), (768, 256), (768, 1152), (1152, 768), (768, 3072), (3072, 768)]);
    let ms: Vec<usize> = std::env::var("MS")
        .map(|s| s.split(',').map(|m| m.parse().expect("MS: row counts")).collect())
        .unwrap_or_else(|_| vec![1, 16, 64, 256, 1024]);
    let residual: usize = std::env::var("RESIDUAL").map_or(0, |r| r.parse().expect("RESIDUAL: a count"));
    // Spread like the model's picks (its most frequent are blocks 3, 17 and 20 of 24).
    let pack = |n: usize, k: usize, w: &[u8]| {
        let blocks: Vec<usize> = (0..residual).map(|i| (3 + 14 * i) % (k / 32)).collect();
        PackedMatrix::with_residual_blocks(kern, QuantType::Q8_0, n, k, w, &blocks).expect("valid shape")
    };
    let title = if residual > 0 { format!(" + {residual} residual blocks") } else { String::new() };
    println!("| Q8_0 GEMM{title}, {} | {} |", kern.isa(), ms.iter().map(|m| format!("M={m}")).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(ms.len()));
    for &(k, n) in &shapes {
        let w = quantize_q8_0(&rng.vec(n * k)).expect("whole blocks");
        let pm = pack(n, k, &w);
        let mut cells = Vec::new();
        for &m in &ms {
            let a = rng.vec(m * k);
            let mut c = vec![0f32; m * n];
            let mut s = GemmScratch::new();
            let ops = 2.0 * (m * n * k) as f64;
            let reps = (if quick { 300_000_000 } else { 3_000_000_000 } / (m * n * k)).clamp(5, 300);
            let (g, pk) = interleaved(reps, ops, vnni_peak, || {
                pm.matmul(&a, m, &mut c, &mut s, &Serial).expect("shapes match")
            });
            cells.push(format!("{g:.0} ({:.0}%)", 100.0 * g / pk));
        }
        println!("| K×N {k}×{n} | {} |", cells.join(" | "));
    }
    // The model never multiplies by K or V alone (nor by gate or up): it runs Q, K and V as one
    // fused call (one activation quantization, one pass), and gate with up.
    for (name, k, ns) in [("Q/K/V fused", 768, vec![768, 256, 256]), ("gate/up fused", 768, vec![1152, 1152])] {
        let pms: Vec<PackedMatrix> = ns
            .iter()
            .map(|&n| pack(n, k, &quantize_q8_0(&rng.vec(n * k)).expect("blocks")))
            .collect();
        let refs: Vec<&PackedMatrix> = pms.iter().collect();
        let n_total: usize = ns.iter().sum();
        let mut cells = Vec::new();
        for &m in &ms {
            let a = rng.vec(m * k);
            let mut cs: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0f32; m * n]).collect();
            let mut s = GemmScratch::new();
            let ops = 2.0 * (m * n_total * k) as f64;
            let reps = (if quick { 300_000_000 } else { 3_000_000_000 } / (m * n_total * k)).clamp(5, 300);
            let (g, pk) = interleaved(reps, ops, vnni_peak, || {
                let mut outs: Vec<&mut [f32]> = cs.iter_mut().map(|c| c.as_mut_slice()).collect();
                PackedMatrix::matmul_many(&refs, &a, m, &mut outs, &mut s, &Serial).expect("shapes match")
            });
            cells.push(format!("{g:.0} ({:.0}%)", 100.0 * g / pk));
        }
        let dims: Vec<String> = ns.iter().map(|n| n.to_string()).collect();
        println!("| {name} {k}×({}) | {} |", dims.join("+"), cells.join(" | "));
    }

    if std::env::var_os("Q8_ONLY").is_some() {
        return;
    }
    println!("\n| format (768×768, M=64), {} | GOP/s | % of vpdpbusd peak |\n|---|---|---|", kern.isa());
    for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1, QuantType::Q5_0, QuantType::Q5_1, QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
        let (m, n, k) = (64, 768, 768);
        let w = if ty == QuantType::Q8_0 {
            quantize_q8_0(&rng.vec(n * k)).expect("whole blocks")
        } else {
            // Random bytes with a fixed small f16 scale (0x2000 ≈ 0.0078) in every scale slot.
            let nb = n * k / ty.block_elems();
            let mut v = Vec::with_capacity(nb * ty.block_bytes());
            for _ in 0..nb {
                let mut b: Vec<u8> = (0..ty.block_bytes()).map(|_| (rng.f32() * 255.0 + 128.0) as u8).collect();
                let l = b.len();
                match ty {
                    QuantType::Q6K => b[l - 2..].copy_from_slice(&[0, 0x20]),
                    QuantType::Q4_0 | QuantType::Q5_0 => b[..2].copy_from_slice(&[0, 0x20]),
                    _ => b[..4].copy_from_slice(&[0, 0x20, 0, 0x20]),
                }
                v.extend_from_slice(&b);
            }
            v
        };
        let pm = PackedMatrix::new(kern, ty, n, k, &w).expect("valid shape");
        let a = rng.vec(m * k);
        let mut c = vec![0f32; m * n];
        let mut s = GemmScratch::new();
        let t = best(if quick { 10 } else { 60 }, || pm.matmul(&a, m, &mut c, &mut s, &Serial).expect("shapes match"));
        let g = 2.0 * (m * n * k) as f64 / t / 1e9;
        println!("| {} | {g:.0} | {:.0}% |", ty.name(), 100.0 * g / vnni_peak);
    }

    println!("\n| f32 GEMM s×s×s | matrixmultiply 0.3 | ours prepacked | ours unpacked (packs W per call) |\n|---|---|---|---|");
    for sz in [64usize, 256, 512] {
        let a = rng.vec(sz * sz);
        let w = rng.vec(sz * sz);
        let mut c = vec![0f32; sz * sz];
        let reps = (if quick { 100_000_000 } else { 2_000_000_000 } / (sz * sz * sz)).clamp(5, 500);
        let fl = 2.0 * (sz * sz * sz) as f64 / 1e9;
        let tm = best(reps, || {
            // SAFETY: a, w, c are sz×sz; W is read transposed through its strides (C = A·W^T).
            unsafe {
                matrixmultiply::sgemm(
                    sz, sz, sz, 1.0, a.as_ptr(), sz as isize, 1, w.as_ptr(), 1, sz as isize, 0.0,
                    c.as_mut_ptr(), sz as isize, 1,
                )
            }
        });
        let pm = PackedMatrix::from_f32(kern, sz, sz, &w).expect("valid shape");
        let mut s = GemmScratch::new();
        let t1 = best(reps, || pm.matmul(&a, sz, &mut c, &mut s, &Serial).expect("shapes match"));
        let t2 = best(reps, || gemm_f32_nt(kern, &a, sz, sz, &w, sz, &mut c, &mut s, &Serial).expect("shapes match"));
        let pct = |t: f64| format!("{:.1} ({:.0}%)", fl / t, 100.0 * fl / t / fma_peak);
        println!("| {sz} | {} | {} | {} |", pct(tm), pct(t1), pct(t2));
    }
    println!("\nGOP/s = 2·M·N·K / time (best of reps, thread CPU time). Q8_0 table: % of a vpdpbusd peak loop run for the same duration interleaved with the GEMM reps; other tables: % of the short-burst peaks above (int8: vpdpbusd; f32: zmm FMA).");
}
