//! Criterion benches: measured peak, dot products, GEMM per format and ISA, f32 GEMM against
//! `matrixmultiply`. Every GEMM's throughput is in multiply-add ops (2·m·n·k), so criterion's
//! "elem/s" reads as FLOP/s (OP/s for int8); the summary printed at the end divides by the
//! peaks measured in the same run.
//!
//! Default run (`cargo bench -p quant-kernels`): peaks, Q8_0 GEMM on the best ISA for all model
//! shapes and M in {1, 16, 64, 256, 1024}, one shape on the other ISAs, the other formats at
//! M = 64, f32 GEMM vs matrixmultiply, dots. `QK_BENCH_FULL=1` runs every ISA × shape × M.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use quant_kernels::{GemmScratch, Isa, Kernels, PackedMatrix, QuantType, Serial, gemm_f32_nt};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// (K, N) of the model's matmuls.
const SHAPES: [(usize, usize); 6] =
    [(768, 768), (768, 256), (768, 1152), (1152, 768), (768, 3072), (3072, 768)];
const MS: [usize; 5] = [1, 16, 64, 256, 1024];

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(10)
        .configure_from_args()
}

fn random_f32(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Random quantized weights with sane scales (quantized from random f32 for Q8_0).
fn weights(rng: &mut StdRng, ty: QuantType, n: usize, k: usize) -> Vec<u8> {
    if ty == QuantType::Q8_0 {
        return quant_kernels::quantize_q8_0(&random_f32(rng, n * k)).unwrap();
    }
    let nb = n * k / ty.block_elems();
    let mut out = Vec::with_capacity(nb * ty.block_bytes());
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for _ in 0..nb {
        let mut b: Vec<u8> = (0..ty.block_bytes()).map(|_| rng.r#gen()).collect();
        match ty {
            QuantType::Q6K => {
                let l = b.len();
                b[l - 2..].copy_from_slice(&scale);
            }
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => {
                b[0..2].copy_from_slice(&scale);
                b[2..4].copy_from_slice(&scale);
            }
            _ => b[0..2].copy_from_slice(&scale),
        }
        out.extend_from_slice(&b);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Peaks: independent-chain loops of one instruction, one core.

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// Runs `iters` × 16 independent `vpdpbusd zmm`: 16 × 64 multiply-adds each.
    ///
    /// # Safety
    /// AVX512-VNNI must be available.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn vnni(iters: usize) -> i32 {
        let a = _mm512_set1_epi8(1);
        let b = _mm512_set1_epi8(2);
        let mut acc = [_mm512_setzero_si512(); 16];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
            // Keep the inputs opaque so the loop is not folded.
            std::hint::black_box(&a);
        }
        let mut s = _mm512_setzero_si512();
        for x in acc {
            s = _mm512_add_epi32(s, x);
        }
        _mm512_reduce_add_epi32(s)
    }

    /// Runs `iters` × 16 independent `vfmadd231ps zmm`: 16 × 16 multiply-adds each.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn fma512(iters: usize) -> f32 {
        let a = _mm512_set1_ps(1.000_001);
        let b = _mm512_set1_ps(0.999_999);
        let mut acc = [_mm512_setzero_ps(); 16];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
            std::hint::black_box(&a);
        }
        let mut s = _mm512_setzero_ps();
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// As `fma512` with 256-bit FMA (the AVX2 peak).
    ///
    /// # Safety
    /// AVX2 + FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize) -> f32 {
        let a = _mm256_set1_ps(1.000_001);
        let b = _mm256_set1_ps(0.999_999);
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
            std::hint::black_box(&a);
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0f32; 8];
        // SAFETY: `out` has 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn bench_peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 100_000;
        let mut g = c.benchmark_group("peak");
        if Isa::Avx512Vnni.is_supported() {
            g.throughput(Throughput::Elements((iters * 16 * 64 * 2) as u64));
            // SAFETY: VNNI support checked above.
            g.bench_function("vpdpbusd_zmm", |b| b.iter(|| unsafe { peak::vnni(black_box(iters)) }));
        }
        if Isa::Avx512.is_supported() {
            g.throughput(Throughput::Elements((iters * 16 * 16 * 2) as u64));
            // SAFETY: AVX-512 support checked above.
            g.bench_function("fma_zmm", |b| b.iter(|| unsafe { peak::fma512(black_box(iters)) }));
        }
        if Isa::Avx2.is_supported() {
            g.throughput(Throughput::Elements((iters * 12 * 8 * 2) as u64));
            // SAFETY: AVX2 + FMA support checked above.
            g.bench_function("fma_ymm", |b| b.iter(|| unsafe { peak::fma256(black_box(iters)) }));
        }
        g.finish();
    }
}

// ---------------------------------------------------------------------------------------------

fn full() -> bool {
    std::env::var_os("QK_BENCH_FULL").is_some()
}

fn gemm_case(
    c: &mut Criterion,
    kern: &'static Kernels,
    ty: QuantType,
    k: usize,
    n: usize,
    ms: &[usize],
    f32_mode: bool,
) {
    let mut rng = StdRng::seed_from_u64(7);
    let w = weights(&mut rng, ty, n, k);
    let pm = if f32_mode {
        PackedMatrix::new_f32(kern, ty, n, k, &w).unwrap()
    } else {
        PackedMatrix::new(kern, ty, n, k, &w).unwrap()
    };
    let name = if f32_mode { format!("gemm/{}-as-f32/{}", ty.name(), kern.isa()) } else {
        format!("gemm/{}/{}", ty.name(), kern.isa())
    };
    let mut g = c.benchmark_group(name);
    let max_m = *ms.iter().max().unwrap();
    let a = random_f32(&mut rng, max_m * k);
    let mut out = vec![0f32; max_m * n];
    let mut scratch = GemmScratch::new();
    for &m in ms {
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_with_input(BenchmarkId::new(format!("{k}x{n}"), m), &m, |b, &m| {
            b.iter(|| pm.matmul(&a[..m * k], m, &mut out[..m * n], &mut scratch, &Serial).unwrap())
        });
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let best = Kernels::get();
    for &(k, n) in &SHAPES {
        gemm_case(c, best, QuantType::Q8_0, k, n, &MS, false);
    }
    for kern in Kernels::all_supported() {
        if kern.isa() == best.isa() || kern.isa() == Isa::Scalar {
            continue;
        }
        if full() {
            for &(k, n) in &SHAPES {
                gemm_case(c, kern, QuantType::Q8_0, k, n, &MS, false);
            }
        } else {
            gemm_case(c, kern, QuantType::Q8_0, 768, 768, &[1, 64], false);
        }
    }
    let formats = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ];
    for ty in formats {
        gemm_case(c, best, ty, 768, 768, &[1, 64], false);
    }
    gemm_case(c, best, QuantType::Q8_0, 768, 768, &[1, 64], true);
}

fn bench_f32(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(8);
    for s in [64usize, 256, 512] {
        let a = random_f32(&mut rng, s * s);
        let w = random_f32(&mut rng, s * s);
        let mut out = vec![0f32; s * s];
        let mut g = c.benchmark_group(format!("f32gemm/{s}"));
        g.throughput(Throughput::Elements((2 * s * s * s) as u64));
        g.bench_function("matrixmultiply", |b| {
            b.iter(|| {
                // SAFETY: a, w, out are s×s; w is read transposed through its strides
                // (C = A · W^T, like ours).
                unsafe {
                    matrixmultiply::sgemm(
                        s, s, s, 1.0,
                        a.as_ptr(), s as isize, 1,
                        w.as_ptr(), 1, s as isize,
                        0.0,
                        out.as_mut_ptr(), s as isize, 1,
                    )
                }
            })
        });
        for kern in Kernels::all_supported() {
            if kern.isa() == Isa::Scalar && s > 64 {
                continue;
            }
            let pm = PackedMatrix::from_f32(kern, s, s, &w).unwrap();
            let mut scratch = GemmScratch::new();
            g.bench_function(format!("{}/prepacked", kern.isa()), |b| {
                b.iter(|| pm.matmul(&a, s, &mut out, &mut scratch, &Serial).unwrap())
            });
            g.bench_function(format!("{}/unpacked", kern.isa()), |b| {
                b.iter(|| gemm_f32_nt(kern, &a, s, s, &w, s, &mut out, &mut scratch, &Serial).unwrap())
            });
        }
        g.finish();
    }
}

fn bench_dots(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(9);
    let k = 4096;
    let formats = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::F32,
    ];
    for ty in formats {
        let w = weights(&mut rng, ty, 1, k);
        let w = if ty == QuantType::F32 { bytemuck::cast_slice(&random_f32(&mut rng, k)).to_vec() } else { w };
        let x = random_f32(&mut rng, k);
        let act = quantize_act(ty, &x);
        let mut g = c.benchmark_group(format!("dot/{}", ty.name()));
        g.throughput(Throughput::Elements(k as u64));
        for kern in Kernels::all_supported() {
            g.bench_function(kern.isa().name(), |b| b.iter(|| kern.vec_dot(ty, black_box(&w), black_box(&act)).unwrap()));
        }
        g.finish();
    }
}

fn quantize_act(ty: QuantType, x: &[f32]) -> Vec<u8> {
    use quant_kernels::*;
    match ty.vec_dot_type() {
        QuantType::Q8_0 => quantize_q8_0(x).unwrap(),
        QuantType::Q8_1 => {
            let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quantize_row_q8_1(x, &mut b).unwrap();
            bytemuck::cast_slice::<BlockQ8_1, u8>(&b).to_vec()
        }
        QuantType::Q8K => {
            let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 256];
            quantize_row_q8k(x, &mut b).unwrap();
            bytemuck::cast_slice::<BlockQ8K, u8>(&b).to_vec()
        }
        _ => bytemuck::cast_slice(x).to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Summary: GFLOP/s and % of the measured peak, read back from criterion's estimates.

fn criterion_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("CRITERION_HOME") {
        return d.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
    });
    target.join("criterion")
}

/// Mean time in ns of a benchmark. Criterion replaces '/' in group and function names with '_'
/// and nests a `BenchmarkId`'s parameter one directory deeper: pass `function/param` as
/// `id` segments separated by '|'.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let mut path = criterion_dir().join(group.replace('/', "_"));
    for seg in id.split('|') {
        path = path.join(seg.replace('/', "_"));
    }
    let path = path.join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn summary() {
    let iters = 100_000f64;
    let vnni = mean_ns("peak", "vpdpbusd_zmm").map(|ns| iters * 16.0 * 128.0 / ns);
    let fma = mean_ns("peak", "fma_zmm").map(|ns| iters * 16.0 * 32.0 / ns);
    let fma2 = mean_ns("peak", "fma_ymm").map(|ns| iters * 12.0 * 16.0 / ns);
    println!("\n## summary (one core)\n");
    println!("peak: vpdpbusd zmm {:.1} GOP/s, FMA zmm {:.1} GFLOP/s, FMA ymm {:.1} GFLOP/s\n",
        vnni.unwrap_or(f64::NAN), fma.unwrap_or(f64::NAN), fma2.unwrap_or(f64::NAN));
    let best = Kernels::get().isa();
    println!("| Q8_0 GEMM ({best}) K×N | {} |", MS.map(|m| format!("M={m}")).join(" | "));
    println!("|---|{}", "---|".repeat(MS.len()));
    for &(k, n) in &SHAPES {
        let cells: Vec<String> = MS
            .iter()
            .map(|&m| match mean_ns(&format!("gemm/q8_0/{best}"), &format!("{k}x{n}|{m}")) {
                Some(ns) => {
                    let g = 2.0 * (m * n * k) as f64 / ns;
                    format!("{g:.0} GOP/s ({:.0}%)", 100.0 * g / vnni.unwrap_or(f64::NAN))
                }
                None => "-".into(),
            })
            .collect();
        println!("| {k}×{n} | {} |", cells.join(" | "));
    }
    println!("\n| f32 GEMM s³ | matrixmultiply | {} |", Kernels::all_supported().iter().map(|k| format!("{} prepacked / unpacked", k.isa())).collect::<Vec<_>>().join(" | "));
    println!("|---|---|{}", "---|".repeat(Kernels::all_supported().len()));
    for s in [64usize, 256, 512] {
        let flops = 2.0 * (s * s * s) as f64;
        let fmt = |ns: Option<f64>| ns.map(|ns| format!("{:.1}", flops / ns)).unwrap_or("-".into());
        let mm = fmt(mean_ns(&format!("f32gemm/{s}"), "matrixmultiply"));
        let ours: Vec<String> = Kernels::all_supported()
            .iter()
            .map(|k| {
                let g = format!("f32gemm/{s}");
                let p = mean_ns(&g, &format!("{}/prepacked", k.isa()));
                let pct = p.and(fma).map(|f| format!(" ({:.0}%)", 100.0 * flops / p.unwrap() / f)).unwrap_or_default();
                format!("{}{pct} / {}", fmt(p), fmt(mean_ns(&g, &format!("{}/unpacked", k.isa()))))
            })
            .collect();
        println!("| {s} | {mm} | {} |", ours.join(" | "));
    }
    println!("\nGEMM cells: GOP/s = 2·m·n·k / time; % of the vpdpbusd peak (int8) or zmm FMA peak (f32).");
}

fn main() {
    let mut c = criterion();
    bench_peak(&mut c);
    bench_gemm(&mut c);
    bench_f32(&mut c);
    bench_dots(&mut c);
    c.final_summary();
    summary();
}
