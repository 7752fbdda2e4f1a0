//! One runner that checks every ISA this host supports against the scalar specification, on
//! random data with ragged shapes, and proves the requested path actually ran.

use crate::dispatch::{Isa, Kernels};
use crate::gemm::act::quant_act_q8_0;
use crate::testutil::{random_f32, random_weights, rng};
use crate::{GemmScratch, PackedMatrix, QuantType, Serial};

/// SIMD f32 dots keep 8–64 partial sums: bounded by a few ulps of sum |a_i b_i| per lane level.
const DOT_F32_REL: f32 = 1e-6;
/// SIMD Q8_0 dots spread a block's integer sum over lanes before scaling: rounding of each
/// per-lane product and of the final lane sum, relative to sum |terms|.
const DOT_Q8_REL: f32 = 1e-6;

fn simd_tables() -> Vec<&'static Kernels> {
    Kernels::all_supported().into_iter().filter(|k| k.isa() != Isa::Scalar).collect()
}

#[cfg(target_arch = "x86_64")]
fn hits(isa: Isa) -> usize {
    crate::x86_64::ISA_HITS[isa as usize].load(std::sync::atomic::Ordering::Relaxed)
}
#[cfg(not(target_arch = "x86_64"))]
fn hits(_isa: Isa) -> usize {
    0
}

#[test]
fn this_host_runs_every_x86_level() {
    // The development and CI machines have AVX-512 VNNI; if this fails on another host, the
    // SIMD comparisons below silently cover less, which is what this test guards against.
    if cfg!(target_arch = "x86_64") && std::env::var_os("QK_ALLOW_MISSING_ISA").is_none() {
        for isa in [Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni] {
            assert!(isa.is_supported(), "{isa} not supported here; set QK_ALLOW_MISSING_ISA=1 to skip");
        }
    }
    let best = Kernels::all_supported().iter().map(|k| k.isa()).rfind(|&i| i != Isa::Amx);
    assert_eq!(Some(Kernels::get().isa()), best);
}

#[test]
fn int8_gemm_is_bit_identical_to_scalar_on_every_isa() {
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut r = rng(10);
    let formats = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ];
    for kern in simd_tables() {
        let int8_isa = kern.isa();
        for ty in formats {
            let kmul = ty.block_elems();
            for &(m, n, kblocks) in &[(1, 1, 1), (7, 33, 3), (13, 48, 2), (2, 17, 5), (6, 64, 1), (37, 50, 2), (32, 32, 1)] {
                let k = kmul * kblocks * if kmul == 32 { 9 } else { 1 };
                let w = random_weights(&mut r, ty, n, k);
                let a = random_f32(&mut r, m * k, 3.0);
                let want = {
                    let pm = PackedMatrix::new(scalar, ty, n, k, &w).unwrap();
                    let mut c = vec![0f32; m * n];
                    pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
                    c
                };
                let before = hits(int8_isa);
                let pm = PackedMatrix::new(kern, ty, n, k, &w).unwrap();
                let mut c = vec![f32::NAN; m * n];
                pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
                assert!(
                    c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{} {ty:?} {m}x{n}x{k}",
                    kern.isa()
                );
                assert!(hits(int8_isa) > before, "{} int8 kernel did not run", kern.isa());
            }
        }
    }
}

/// The largest products an int8 kernel can meet: Q8_0 quants of -128 and 127 (a GGUF may hold
/// -128, although ggml's quantizer never writes it) against activations that all quantize to
/// ±127. Kernels built on `vpmaddubsw` sum two such products in i16 and must not saturate.
#[test]
fn extreme_quants_are_exact_on_every_isa() {
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    let (n, k, m) = (16, 64, 4);
    let mut w = Vec::new();
    for row in 0..n {
        for b in 0..k / 32 {
            w.extend_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
            for i in 0..32 {
                // Pairs of equal sign (the saturating case for a pair sum), varying by row.
                let q: i8 = match (row + b + i / 2) % 3 {
                    0 => -128,
                    1 => 127,
                    _ => -127,
                };
                w.push(q as u8);
            }
        }
    }
    let a: Vec<f32> = (0..m * k).map(|i| if (i / 2 + i / k) % 2 == 0 { 1.5 } else { -1.5 }).collect();
    let run = |kt: &'static Kernels| {
        let pm = PackedMatrix::new(kt, QuantType::Q8_0, n, k, &w).unwrap();
        let mut c = vec![f32::NAN; m * n];
        pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
        c
    };
    let want = run(scalar);
    // The exact value of one output, from the definition: every activation quantizes to ±127
    // with d = 1.5 / 127, and every product is exact in i32.
    let exact: f64 = (0..k)
        .map(|i| {
            let q: i64 = match (i / 32 + (i % 32) / 2) % 3 {
                0 => -128,
                1 => 127,
                _ => -127,
            };
            let aq: i64 = if (i / 2) % 2 == 0 { 127 } else { -127 };
            (q * aq) as f64
        })
        .sum::<f64>()
        * 0.5
        * (1.5 / 127.0);
    assert!((f64::from(want[0]) - exact).abs() < 1e-3 * exact.abs().max(1.0), "scalar {} vs {exact}", want[0]);
    for kern in simd_tables() {
        let got = run(kern);
        assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{}: {got:?} vs {want:?}", kern.isa());
    }
}

#[test]
fn residual_block_gemm_is_bit_identical_to_scalar_on_every_isa() {
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut r = rng(11);
    for kern in simd_tables() {
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_1] {
            for &(m, n, nb, ref blocks) in &[(1usize, 16usize, 4usize, vec![2usize]), (7, 33, 9, vec![8, 0, 3]), (37, 50, 24, (0..24).collect::<Vec<_>>())] {
                let k = 32 * nb;
                let w = random_weights(&mut r, ty, n, k);
                let a = random_f32(&mut r, m * k, 3.0);
                let run = |kt: &'static Kernels| {
                    let pm = PackedMatrix::with_residual_blocks(kt, ty, n, k, &w, blocks).unwrap();
                    let mut c = vec![f32::NAN; m * n];
                    pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
                    c
                };
                let (want, got) = (run(scalar), run(kern));
                assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{} {ty:?} {m}x{n}x{k} {blocks:?}", kern.isa());
            }
        }
    }
}

#[test]
fn f32_gemm_is_bit_identical_to_scalar_on_every_isa() {
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut r = rng(11);
    for kern in simd_tables() {
        let f32_isa = if kern.isa() == Isa::Avx2 { Isa::Avx2 } else { Isa::Avx512 };
        // (The AMX table reuses the AVX-512 f32 kernel.)
        for &(m, n, k) in &[(1, 1, 1), (13, 33, 7), (25, 47, 300), (3, 16, 600)] {
            let w = random_f32(&mut r, n * k, 1.0);
            let a = random_f32(&mut r, m * k, 1.0);
            let mut want = vec![0f32; m * n];
            PackedMatrix::from_f32(scalar, n, k, &w)
                .unwrap()
                .matmul(&a, m, &mut want, &mut GemmScratch::new(), &Serial)
                .unwrap();
            let before = hits(f32_isa);
            let mut c = vec![f32::NAN; m * n];
            PackedMatrix::from_f32(kern, n, k, &w)
                .unwrap()
                .matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial)
                .unwrap();
            assert!(c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{} {m}x{n}x{k}", kern.isa());
            assert!(hits(f32_isa) > before, "{} f32 kernel did not run", kern.isa());
        }
    }
}

#[test]
fn q8_0_activation_quantizer_is_bit_identical() {
    let mut r = rng(12);
    let mut x = random_f32(&mut r, 32 * 64, 5.0);
    // Crafted blocks: exact .5 ties after scaling (amax 127 gives id = 1), zeros, one huge value.
    for (j, v) in x[..32].iter_mut().enumerate() {
        *v = j as f32 - 15.5;
    }
    x[31] = 127.0;
    x[32..64].fill(0.0);
    for (j, v) in x[64..96].iter_mut().enumerate() {
        *v = (j as f32 * 0.37).sin() * 1e-30;
    }
    x[96] = 3e38;
    // Blocks 4-16 (amax 127, so id = 1): every tie k + 0.5 for k = 0..=126, and the floats just
    // either side of it, with both signs: where a rounding that adds 0.5 would go wrong.
    let near_ties: Vec<f32> = (0..127)
        .flat_map(|k| {
            let t = k as f32 + 0.5;
            [f32::from_bits(t.to_bits() - 1), t, f32::from_bits(t.to_bits() + 1)]
        })
        .collect();
    for (b, chunk) in near_ties.chunks(31).enumerate() {
        let blk = &mut x[(4 + b) * 32..(5 + b) * 32];
        blk[0] = if b % 2 == 0 { 127.0 } else { -127.0 };
        for (j, (v, &t)) in blk[1..].iter_mut().zip(chunk).enumerate() {
            *v = if j % 2 == 0 { t } else { -t };
        }
    }
    let nb = x.len() / 32;
    let (mut q0, mut d0, mut c0, mut r0) = (vec![0i8; x.len()], vec![0f32; nb], vec![0i32; nb], vec![0f32; nb]);
    quant_act_q8_0(&x, &mut q0, &mut d0, &mut c0, &mut r0);
    let mut blocks = vec![bytemuck::Zeroable::zeroed(); nb];
    crate::quantize_row_q8_0(&x, &mut blocks).unwrap();
    for (b, blk) in blocks.iter().enumerate() {
        let blk: &crate::BlockQ8_0 = blk;
        assert_eq!(&q0[b * 32..(b + 1) * 32], &blk.qs[..], "scalar act quantizer vs ggml ref, block {b}");
        assert_eq!(d0[b], blk.d.to_f32());
    }
    for kern in simd_tables() {
        // Whole rows and rows whose block count is not a multiple of a SIMD group.
        for nbp in [nb, 1, 5, 16, 17, 24, 37] {
            let xp = &x[..nbp * 32];
            let (mut q, mut d, mut c, mut r) = (vec![0i8; xp.len()], vec![0f32; nbp], vec![0i32; nbp], vec![0f32; nbp]);
            kern.quant_act_q8_0(xp, &mut q, &mut d, &mut c, &mut r);
            let isa = kern.isa();
            assert_eq!(q, q0[..nbp * 32], "{isa} {nbp} blocks");
            assert_eq!(r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), r0[..nbp].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{isa} {nbp}");
            assert_eq!(d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), d0[..nbp].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{isa} {nbp}");
            assert_eq!(c, c0[..nbp], "{isa} {nbp} blocks");
        }
    }
}

#[test]
fn q8k_activation_quantizer_is_bit_identical() {
    let mut r = rng(15);
    let mut x = random_f32(&mut r, 256 * 12, 4.0);
    // Super-block 1: ties under iscale (max -127 gives iscale 1: x.5 values round to even);
    // super-block 2: all zeros; super-block 3: +amax and -amax both present (first one wins).
    for (j, v) in x[256..512].iter_mut().enumerate() {
        *v = (j as f32 - 128.0) * 0.5;
    }
    x[256] = -127.0;
    x[512..768].fill(0.0);
    x[800] = -3.0;
    x[900] = 3.0;
    for kb in [16usize, 32] {
        let nb = x.len() / kb;
        let mk = || (vec![0i8; x.len()], vec![0f32; nb], vec![0i32; nb], vec![0f32; nb]);
        let (mut q0, mut d0, mut c0, mut s0) = mk();
        crate::gemm::act::quant_act_q8k(&x, kb, &mut q0, &mut d0, &mut c0, &mut s0);
        let mut blocks = vec![bytemuck::Zeroable::zeroed(); x.len() / 256];
        crate::quantize_row_q8k(&x, &mut blocks).unwrap();
        for (s, blk) in blocks.iter().enumerate() {
            let blk: &crate::BlockQ8K = blk;
            assert_eq!(&q0[s * 256..(s + 1) * 256], &blk.qs[..]);
            assert_eq!(d0[s * 256 / kb].to_bits(), blk.d.to_bits());
        }
        for kern in simd_tables() {
            let (mut q, mut d, mut c, mut s) = mk();
            kern.quant_act_q8k(&x, kb, &mut q, &mut d, &mut c, &mut s);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(q, q0, "{} kb={kb}", kern.isa());
            assert_eq!(bits(&d), bits(&d0), "{} kb={kb}", kern.isa());
            assert_eq!(c, c0, "{} kb={kb}", kern.isa());
            assert_eq!(bits(&s), bits(&s0), "{} kb={kb}", kern.isa());
        }
    }
}

#[test]
fn f32_dot_and_axpy_match_scalar() {
    let mut r = rng(13);
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    for kern in simd_tables() {
        for n in [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 100, 1000] {
            let a = random_f32(&mut r, n, 1.0);
            let b = random_f32(&mut r, n, 1.0);
            let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            let (x, y) = (kern.dot_f32(&a, &b), scalar.dot_f32(&a, &b));
            assert!((x - y).abs() <= DOT_F32_REL * mag * 8.0 + f32::MIN_POSITIVE, "{} n={n}: {x} vs {y}", kern.isa());
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            kern.axpy_f32(0.37, &a, &mut y1);
            scalar.axpy_f32(0.37, &a, &mut y2);
            assert_eq!(y1, y2, "{} axpy n={n}", kern.isa());
        }
    }
}

#[test]
fn quantized_dots_match_scalar() {
    let mut r = rng(14);
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    for kern in simd_tables() {
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1, QuantType::Q5_0, QuantType::Q5_1, QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
            for blocks in [1, 2, 3, 8, 24] {
                let k = ty.block_elems() * blocks;
                let w = random_weights(&mut r, ty, 1, k);
                let x = random_f32(&mut r, k, 1.0);
                let act = crate::gemm::tests::quantize_act_blocks(ty, &x);
                let (got, want) = (kern.vec_dot(ty, &w, &act).unwrap(), scalar.vec_dot(ty, &w, &act).unwrap());
                let mut wf = vec![0f32; k];
                crate::dequantize_row(ty, &w, &mut wf).unwrap();
                let mag: f32 = wf.iter().zip(&x).map(|(p, q)| (p * q).abs()).sum::<f32>() * 1.1 + 1e-6;
                assert!((got - want).abs() <= DOT_Q8_REL * mag * 8.0, "{} {ty:?} blocks={blocks}: {got} vs {want}", kern.isa());
            }
        }
    }
}

/// `Kernels::vectorize` promises the baseline's bits at any vector width, for element-wise maps
/// and lane-array reductions: check both shapes of code on every supported table.
#[test]
fn vectorize_gives_the_same_bits_on_every_isa() {
    fn work(x: &[f32]) -> (Vec<f32>, f32) {
        let y: Vec<f32> = x.iter().map(|&v| (v * 1.5 + 0.25) / (1.0 + v * v) - v.sqrt().abs()).collect();
        let mut lanes = [0.0f32; 16];
        for c in y.chunks_exact(16) {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
        (y, lanes.iter().sum())
    }
    let x: Vec<f32> = (0..4099).map(|i| ((i * 7919) % 1013) as f32 / 37.0 - 11.0).collect();
    let want = work(&x);
    for k in Kernels::all_supported() {
        let got = k.vectorize(|| work(&x));
        assert!(
            got.0.iter().zip(&want.0).all(|(a, b)| a.to_bits() == b.to_bits()) && got.1.to_bits() == want.1.to_bits(),
            "{:?}",
            k.isa()
        );
    }
}

#[test]
fn exact_channel_gemm_is_bit_identical_to_scalar_on_every_isa() {
    let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
    let mut r = rng(12);
    for kern in simd_tables() {
        for &(m, n, nb, ref blocks, ref chans) in &[
            (1usize, 16usize, 4usize, vec![2usize], vec![70usize]),
            (7, 33, 9, vec![8, 0, 3], vec![0, 1, 31, 32, 100, 287]),
            (37, 50, 24, vec![], (0..24).map(|b| 32 * b + b).collect::<Vec<_>>()),
        ] {
            let k = 32 * nb;
            let w = random_weights(&mut r, QuantType::Q8_0, n, k);
            let a = random_f32(&mut r, m * k, 3.0);
            let run = |kt: &'static Kernels| {
                let o = crate::Outliers { residual_blocks: blocks, exact_channels: chans };
                let pm = PackedMatrix::with_outliers(kt, QuantType::Q8_0, n, k, &w, o).unwrap();
                let mut c = vec![f32::NAN; m * n];
                pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
                c
            };
            let (want, got) = (run(scalar), run(kern));
            assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{} {m}x{n}x{k} {chans:?}", kern.isa());
        }
    }
}
