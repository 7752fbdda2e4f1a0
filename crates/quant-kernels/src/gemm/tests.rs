//! GEMM correctness: the packed reduction against independent references, determinism across
//! batch size and threads, and every ISA against the scalar specification.

use super::*;
use crate::codec::dequantize_row;
use crate::dispatch::Kernels;
use crate::parallel::Serial;
use crate::testutil::{Threads, random_f32, random_weights, rng};

/// Packed int8 GEMM vs ggml's `vec_dot` on the same quantized operands: the integer block sums
/// are identical, only the f32 accumulation differs (fused vs unfused, scale product order), so
/// the difference is bounded by a few ulps of the running sum of |terms|.
const VEC_DOT_REL: f32 = 4e-6;
/// f32 GEMM (sequential fma) vs an f64 reference: k roundings of at most 2^-24 relative each.
const F32_REL_PER_K: f64 = 6e-8;

pub(crate) fn quantize_act_blocks(ty: QuantType, x: &[f32]) -> Vec<u8> {
    use crate::blocks::*;
    match ty.vec_dot_type() {
        QuantType::Q8_0 => {
            let mut b = vec![BlockQ8_0::zeroed(); x.len() / 32];
            crate::quantize_row_q8_0(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        QuantType::Q8_1 => {
            let mut b = vec![BlockQ8_1::zeroed(); x.len() / 32];
            crate::quantize_row_q8_1(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        QuantType::Q8K => {
            let mut b = vec![BlockQ8K::zeroed(); x.len() / 256];
            crate::quantize_row_q8k(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        _ => bytemuck::cast_slice(x).to_vec(),
    }
}
use bytemuck::Zeroable;

const QUANTIZED: [QuantType; 8] = [
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
];

#[test]
fn int8_gemm_matches_vec_dot_for_every_format() {
    let scalar = Kernels::for_isa(crate::Isa::Scalar).unwrap();
    let mut r = rng(1);
    for ty in QUANTIZED {
        let (m, n, k) = (5, 37, 512);
        let w = random_weights(&mut r, ty, n, k);
        let a = random_f32(&mut r, m * k, 1.0);
        let pm = PackedMatrix::new(scalar, ty, n, k, &w).unwrap();
        assert!(!pm.is_f32());
        let mut c = vec![f32::NAN; m * n];
        pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Serial)
            .unwrap();
        let row_bytes = ty.row_bytes(k).unwrap();
        for i in 0..m {
            let act = quantize_act_blocks(ty, &a[i * k..(i + 1) * k]);
            // |terms| bound: |w| · |a_q| summed, from dequantized operands.
            let mut wf = vec![0f32; k];
            for j in 0..n {
                let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
                let want = scalar.vec_dot(ty, wrow, &act).unwrap();
                dequantize_row(ty, wrow, &mut wf).unwrap();
                let mag: f32 = wf
                    .iter()
                    .zip(&a[i * k..])
                    .map(|(x, y)| (x * y).abs())
                    .sum::<f32>()
                    + 1e-6;
                let got = c[i * n + j];
                assert!(
                    (got - want).abs() <= VEC_DOT_REL * mag * 8.0,
                    "{ty:?} ({i},{j}): gemm {got} vs vec_dot {want} (mag {mag})"
                );
            }
        }
    }
}

#[test]
fn f32_paths_match_f64_reference() {
    let mut r = rng(2);
    for kern in Kernels::all_supported() {
        for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (13, 33, 300), (7, 48, 513)] {
            let a = random_f32(&mut r, m * k, 1.0);
            let w = random_f32(&mut r, n * k, 1.0);
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k)
                        .map(|t| f64::from(a[i * k + t]) * f64::from(w[j * k + t]))
                        .sum();
                }
            }
            let tol = |i: usize, j: usize| {
                let mag: f64 = (0..k)
                    .map(|t| f64::from((a[i * k + t] * w[j * k + t]).abs()))
                    .sum();
                mag * F32_REL_PER_K * k as f64 + 1e-30
            };
            let pm = PackedMatrix::from_f32(kern, n, k, &w).unwrap();
            let mut c1 = vec![f32::NAN; m * n];
            pm.matmul(&a, m, &mut c1, &mut GemmScratch::new(), &Serial)
                .unwrap();
            let mut c2 = vec![f32::NAN; m * n];
            gemm_f32_nt(
                kern,
                &a,
                m,
                k,
                &w,
                n,
                &mut c2,
                &mut GemmScratch::new(),
                &Serial,
            )
            .unwrap();
            let mut wt = vec![0f32; n * k];
            for j in 0..n {
                for t in 0..k {
                    wt[t * n + j] = w[j * k + t];
                }
            }
            let mut c3 = vec![f32::NAN; m * n];
            gemm_f32_nn(
                kern,
                &a,
                m,
                k,
                &wt,
                n,
                &mut c3,
                &mut GemmScratch::new(),
                &Serial,
            )
            .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let e = want[i * n + j];
                    assert!(
                        (f64::from(c1[i * n + j]) - e).abs() <= tol(i, j),
                        "{:?} {m}x{n}x{k}",
                        kern.isa()
                    );
                }
            }
            assert_eq!(c1, c2, "packed and nt agree bit for bit");
            assert_eq!(c1, c3, "nt and nn agree bit for bit");
        }
    }
}

/// The same matrix multiplied on every ISA, every batch size and thread count: one row's bits.
#[test]
fn rows_are_bit_identical_across_isa_batch_and_threads() {
    let mut r = rng(3);
    let (n, k) = (80, 1024);
    for ty in QUANTIZED
        .iter()
        .copied()
        .chain([QuantType::F32, QuantType::F16, QuantType::BF16])
    {
        let w = random_weights(&mut r, ty, n, k);
        let big = 77;
        let a = random_f32(&mut r, big * k, 2.0);
        let mut reference: Option<Vec<f32>> = None;
        for kern in Kernels::all_supported() {
            let pm = PackedMatrix::new(kern, ty, n, k, &w).unwrap();
            let mut scratch = GemmScratch::new();
            for (m, threads) in [(big, 1), (big, 3), (1, 1), (6, 2), (13, 1)] {
                let mut c = vec![f32::NAN; m * n];
                if threads == 1 {
                    pm.matmul(&a[..m * k], m, &mut c, &mut scratch, &Serial)
                        .unwrap();
                } else {
                    pm.matmul(&a[..m * k], m, &mut c, &mut scratch, &Threads(threads))
                        .unwrap();
                }
                let want = reference.get_or_insert_with(|| c.clone());
                assert_eq!(
                    &c[..],
                    &want[..m * n],
                    "{ty:?} {:?} m={m} threads={threads}",
                    kern.isa()
                );
            }
        }
    }
}

#[test]
fn quantized_gemm_is_close_to_f32_gemm() {
    // Activation quantization error: each activation moves by at most half its block's step
    // (amax/254), so |error| <= sum |w| * amax_block / 254 (plus f32 rounding).
    let kern = Kernels::get();
    let mut r = rng(4);
    let (m, n, k) = (4, 24, 768);
    for ty in QUANTIZED {
        let w = random_weights(&mut r, ty, n, k);
        let a = random_f32(&mut r, m * k, 1.0);
        let q = PackedMatrix::new(kern, ty, n, k, &w).unwrap();
        let f = PackedMatrix::new_f32(kern, ty, n, k, &w).unwrap();
        let (mut cq, mut cf) = (vec![0f32; m * n], vec![0f32; m * n]);
        let mut s = GemmScratch::new();
        q.matmul(&a, m, &mut cq, &mut s, &Serial).unwrap();
        f.matmul(&a, m, &mut cf, &mut s, &Serial).unwrap();
        let row_bytes = ty.row_bytes(k).unwrap();
        let mut wf = vec![0f32; k];
        for j in 0..n {
            dequantize_row(ty, &w[j * row_bytes..(j + 1) * row_bytes], &mut wf).unwrap();
            for i in 0..m {
                let ar = &a[i * k..(i + 1) * k];
                let bs = if ty.vec_dot_type() == QuantType::Q8K {
                    256
                } else {
                    32
                };
                let bound: f32 = wf
                    .chunks(bs)
                    .zip(ar.chunks(bs))
                    .map(|(wb, ab)| {
                        let amax = ab.iter().fold(0f32, |x, y| x.max(y.abs()));
                        wb.iter().map(|x| x.abs()).sum::<f32>() * amax / 254.0 * 1.01
                    })
                    .sum::<f32>()
                    + 1e-4;
                let (x, y) = (cq[i * n + j], cf[i * n + j]);
                assert!(
                    (x - y).abs() <= bound,
                    "{ty:?} ({i},{j}): {x} vs {y}, bound {bound}"
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let kern = Kernels::get();
    let w = vec![0u8; 34 * 4];
    assert!(PackedMatrix::new(kern, QuantType::Q8_0, 2, 64, &w).is_ok());
    assert!(matches!(
        PackedMatrix::new(kern, QuantType::Q8_0, 3, 64, &w),
        Err(KernelError::ByteLength { .. })
    ));
    assert!(PackedMatrix::new(kern, QuantType::Q8_0, 2, 60, &w).is_err());
    assert!(PackedMatrix::new(kern, QuantType::Q8K, 1, 256, &[0; 292]).is_err());
    assert!(PackedMatrix::new(kern, QuantType::Q8_0, 0, 64, &[]).is_err());
    let pm = PackedMatrix::new(kern, QuantType::Q8_0, 2, 64, &w).unwrap();
    let mut c = vec![0f32; 2];
    let mut s = GemmScratch::new();
    assert!(pm.matmul(&[0.0; 63], 1, &mut c, &mut s, &Serial).is_err());
    assert!(
        pm.matmul(&[0.0; 64], 1, &mut c[..1], &mut s, &Serial)
            .is_err()
    );
    pm.matmul(&[0.0; 64], 1, &mut c, &mut s, &Serial).unwrap();
    assert_eq!(c, [0.0, 0.0]);
    pm.matmul(&[], 0, &mut [], &mut s, &Serial).unwrap();
}

#[test]
fn scratch_stops_growing() {
    let kern = Kernels::get();
    let mut r = rng(5);
    let w = random_weights(&mut r, QuantType::Q8_0, 64, 256);
    let pm = PackedMatrix::new(kern, QuantType::Q8_0, 64, 256, &w).unwrap();
    let a = random_f32(&mut r, 32 * 256, 1.0);
    let mut c = vec![0f32; 32 * 64];
    let mut s = GemmScratch::new();
    pm.matmul(&a, 32, &mut c, &mut s, &Serial).unwrap();
    let size = s.allocated_bytes();
    for m in [1, 7, 32, 16] {
        pm.matmul(&a[..m * 256], m, &mut c[..m * 64], &mut s, &Serial)
            .unwrap();
        assert_eq!(s.allocated_bytes(), size);
    }
}

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PackedMatrix>();
    send_sync::<GemmScratch>();
    send_sync::<&'static Kernels>();
}

#[test]
fn matmul_many_equals_separate_matmuls_bit_for_bit() {
    let mut r = rng(11);
    let k = 256;
    // Fusable groups (same activation format and block length) and mixed ones that fall back.
    let groups: [&[(QuantType, usize)]; 4] = [
        &[
            (QuantType::Q8_0, 48),
            (QuantType::Q8_0, 16),
            (QuantType::Q8_0, 33),
        ],
        &[(QuantType::Q4K, 32), (QuantType::Q5K, 17)],
        &[
            (QuantType::Q4K, 32),
            (QuantType::Q6K, 16),
            (QuantType::Q8_0, 5),
        ],
        &[(QuantType::F32, 20), (QuantType::F16, 40)],
    ];
    for kernels in Kernels::all_supported() {
        for group in groups {
            let mats: Vec<PackedMatrix> = group
                .iter()
                .map(|&(ty, n)| {
                    PackedMatrix::new(kernels, ty, n, k, &random_weights(&mut r, ty, n, k)).unwrap()
                })
                .collect();
            let refs: Vec<&PackedMatrix> = mats.iter().collect();
            for (m, threads) in [(1, 1), (7, 2), (40, 3)] {
                let a = random_f32(&mut r, m * k, 2.0);
                let mut want: Vec<Vec<f32>> = mats.iter().map(|w| vec![0.0; m * w.n()]).collect();
                for (w, c) in mats.iter().zip(want.iter_mut()) {
                    w.matmul(&a, m, c, &mut GemmScratch::new(), &Serial)
                        .unwrap();
                }
                let mut got: Vec<Vec<f32>> =
                    mats.iter().map(|w| vec![f32::NAN; m * w.n()]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
                PackedMatrix::matmul_many(
                    &refs,
                    &a,
                    m,
                    &mut outs,
                    &mut GemmScratch::new(),
                    &Threads(threads),
                )
                .unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let same = g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{:?} {group:?} m={m} threads={threads}: matrix {i} differs",
                        kernels.isa()
                    );
                }
            }
            // Mismatched lengths are errors, not panics.
            let mut short = vec![0.0; 3];
            let mut outs: Vec<&mut [f32]> = vec![short.as_mut_slice()];
            assert!(
                PackedMatrix::matmul_many(
                    &refs[..1],
                    &[0.0; 10],
                    2,
                    &mut outs,
                    &mut GemmScratch::new(),
                    &Serial
                )
                .is_err()
            );
        }
    }
}

/// A prologue computing the rows inside the quantization pass: every row computed exactly once
/// (its state updated once), `out` left holding the rows, and each product bit-identical to
/// computing the rows first; on every ISA, fused groups, groups that fall back, f32 weights and
/// matrices with outliers, from one row to many, serial and threaded.
#[test]
fn matmul_many_with_equals_rows_computed_first() {
    let mut r = rng(12);
    let k = 256;
    let (blocks, chans) = ([2usize, 5], [3usize, 70, 200]);
    let outliers = Outliers { residual_blocks: &blocks, exact_channels: &chans };
    for kernels in Kernels::all_supported() {
        let q8 = |r: &mut rand::rngs::StdRng, n| {
            PackedMatrix::with_outliers(kernels, QuantType::Q8_0, n, k, &random_weights(r, QuantType::Q8_0, n, k), outliers)
                .unwrap()
        };
        let plain = |r: &mut rand::rngs::StdRng, ty, n| PackedMatrix::new(kernels, ty, n, k, &random_weights(r, ty, n, k)).unwrap();
        let groups: Vec<Vec<PackedMatrix>> = vec![
            vec![q8(&mut r, 48), q8(&mut r, 16)],
            vec![plain(&mut r, QuantType::Q8_0, 40)],
            vec![plain(&mut r, QuantType::Q4K, 32), plain(&mut r, QuantType::Q6K, 16)],
            vec![plain(&mut r, QuantType::F16, 24), plain(&mut r, QuantType::F32, 8)],
            vec![],
        ];
        for mats in &groups {
            let refs: Vec<&PackedMatrix> = mats.iter().collect();
            for (m, threads) in [(1, 1), (1, 2), (16, 2), (16, 1), (150, 3)] {
                let a = random_f32(&mut r, m * k, 2.0);
                let prior = random_f32(&mut r, m * k, 1.0);
                let width = 3;
                let state0: Vec<f32> = (0..m * width).map(|i| (i % 5) as f32 * 0.25).collect();
                // The row from the caller's input, its state and what `out` held before.
                let f = |i: usize, st: &mut [f32], o: &mut [f32]| {
                    let row = &a[i * k..(i + 1) * k];
                    st[0] += 1.0;
                    for (o, &x) in o.iter_mut().zip(row) {
                        *o = x * (1.0 + st[1]) - 0.5 * *o;
                    }
                };
                let (mut want_state, mut want_rows) = (state0.clone(), prior.clone());
                for i in 0..m {
                    f(i, &mut want_state[i * width..(i + 1) * width], &mut want_rows[i * k..(i + 1) * k]);
                }
                let mut want: Vec<Vec<f32>> = mats.iter().map(|w| vec![0.0; m * w.n()]).collect();
                let mut outs: Vec<&mut [f32]> = want.iter_mut().map(|v| v.as_mut_slice()).collect();
                PackedMatrix::matmul_many(&refs, &want_rows, m, &mut outs, &mut GemmScratch::new(), &Serial).unwrap();

                let (mut state, mut rows) = (state0.clone(), prior.clone());
                let mut got: Vec<Vec<f32>> = mats.iter().map(|w| vec![f32::NAN; m * w.n()]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| v.as_mut_slice()).collect();
                let prologue = RowPrologue { state: &mut state, out: &mut rows, f: &f };
                PackedMatrix::matmul_many_with(&refs, prologue, m, &mut outs, &mut GemmScratch::new(), &Threads(threads))
                    .unwrap();
                let ctx = format!("{:?} {} matrices m={m} threads={threads}", kernels.isa(), mats.len());
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&state), bits(&want_state), "{ctx}: state");
                assert_eq!(bits(&rows), bits(&want_rows), "{ctx}: rows");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(bits(g), bits(w), "{ctx}: matrix {i}");
                }
            }
        }
        // Rows or state that do not match m are errors, not panics.
        let w = q8(&mut r, 8);
        let (mut st, mut rows, mut c) = (vec![0.0; 5], vec![0.0; 2 * k], vec![0.0; 16]);
        let f = |_: usize, _: &mut [f32], _: &mut [f32]| {};
        let bad_state = RowPrologue { state: &mut st, out: &mut rows, f: &f };
        assert!(PackedMatrix::matmul_many_with(&[&w], bad_state, 2, &mut [&mut c], &mut GemmScratch::new(), &Serial).is_err());
        let (mut st, mut rows) = (vec![0.0; 4], vec![0.0; 2 * k - 1]);
        let bad_rows = RowPrologue { state: &mut st, out: &mut rows, f: &f };
        assert!(PackedMatrix::matmul_many_with(&[&w], bad_rows, 2, &mut [&mut c], &mut GemmScratch::new(), &Serial).is_err());
    }
}

/// The GEMM's tasks wait for the rows a prologue computes on other threads: a prologue that
/// panics on one row ends the call with that panic on every thread count, never a task waiting
/// for a row that will not come, and the scratch serves the next call.
#[test]
fn a_panicking_prologue_ends_the_call_without_hanging() {
    let mut r = rng(13);
    let k = 128;
    let kernels = Kernels::get();
    let w = PackedMatrix::new(kernels, QuantType::Q8_0, 64, k, &random_weights(&mut r, QuantType::Q8_0, 64, k)).unwrap();
    let mut scratch = GemmScratch::new();
    for (m, threads) in [(1, 1), (2, 2), (40, 2), (150, 3)] {
        for bad in [0, m / 2, m - 1] {
            let (mut st, mut rows, mut c) = (vec![0.0; m], vec![0.0; m * k], vec![0.0; m * 64]);
            let f = |i: usize, _: &mut [f32], o: &mut [f32]| {
                assert!(i != bad, "row {i} fails");
                o.fill(1.0);
            };
            let prologue = RowPrologue { state: &mut st, out: &mut rows, f: &f };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                PackedMatrix::matmul_many_with(&[&w], prologue, m, &mut [&mut c], &mut scratch, &Threads(threads))
            }));
            assert!(outcome.is_err(), "m={m} threads={threads} bad={bad}");
        }
        let (mut st, mut rows, mut c) = (vec![0.0; m], vec![0.0; m * k], vec![f32::NAN; m * 64]);
        let f = |_: usize, _: &mut [f32], o: &mut [f32]| o.fill(1.0);
        let prologue = RowPrologue { state: &mut st, out: &mut rows, f: &f };
        PackedMatrix::matmul_many_with(&[&w], prologue, m, &mut [&mut c], &mut scratch, &Threads(threads)).unwrap();
        let mut want = vec![0.0; m * 64];
        w.matmul(&rows, m, &mut want, &mut GemmScratch::new(), &Serial).unwrap();
        assert_eq!(c, want, "m={m} threads={threads}: after the failures");
    }
}

/// Residual blocks: the product is the plain product plus the product of the chosen blocks'
/// quantization residual, so on activations with outlier channels it lands far closer to the
/// exact f32 product; rows stay independent of their batch; bad block lists are refused.
mod residual_blocks {
    use super::*;

    /// Activations with two outlier channels per row (blocks 1 and 6, where the row has them),
    /// as Gemma's have.
    fn outlier_rows(r: &mut rand::rngs::StdRng, m: usize, k: usize) -> Vec<f32> {
        let mut a = random_f32(r, m * k, 1.0);
        for row in a.chunks_exact_mut(k) {
            for (i, f) in [(32 + 5, 60.0), (6 * 32 + 17, -80.0)] {
                if let Some(v) = row.get_mut(i) {
                    *v *= f;
                }
            }
        }
        a
    }

    fn exact(w: &[u8], ty: QuantType, n: usize, k: usize, a: &[f32], m: usize) -> Vec<f64> {
        let mut wf = vec![0f32; n * k];
        for (row, out) in w.chunks_exact(ty.row_bytes(k).unwrap()).zip(wf.chunks_exact_mut(k)) {
            dequantize_row(ty, row, out).unwrap();
        }
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|e| f64::from(a[i * k + e]) * f64::from(wf[j * k + e])).sum();
            }
        }
        c
    }

    fn rms_err(c: &[f32], want: &[f64]) -> f64 {
        (c.iter().zip(want).map(|(&x, &y)| (f64::from(x) - y).powi(2)).sum::<f64>() / c.len() as f64).sqrt()
    }

    #[test]
    fn residual_blocks_cut_the_error_of_outlier_channels() {
        let kern = Kernels::get();
        let mut r = rng(77);
        let (m, n, k) = (9, 40, 8 * 32);
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_0, QuantType::Q4_1, QuantType::Q5_1] {
            let w = random_weights(&mut r, ty, n, k);
            let a = outlier_rows(&mut r, m, k);
            let want = exact(&w, ty, n, k, &a, m);
            let mut plain = vec![0f32; m * n];
            PackedMatrix::new(kern, ty, n, k, &w).unwrap().matmul(&a, m, &mut plain, &mut GemmScratch::new(), &Serial).unwrap();
            let pm = PackedMatrix::with_residual_blocks(kern, ty, n, k, &w, &[6, 1]).unwrap();
            assert_eq!((pm.k(), pm.packed_k(), pm.residual_blocks()), (k, k + 64, 2));
            let mut fixed = vec![0f32; m * n];
            pm.matmul(&a, m, &mut fixed, &mut GemmScratch::new(), &Serial).unwrap();
            let (e0, e1) = (rms_err(&plain, &want), rms_err(&fixed, &want));
            assert!(e1 < 0.4 * e0, "{ty:?}: rms error {e1} with residual blocks vs {e0} without");
            // All blocks: about 15-bit activations everywhere.
            let all: Vec<usize> = (0..k / 32).collect();
            let pm = PackedMatrix::with_residual_blocks(kern, ty, n, k, &w, &all).unwrap();
            let mut full = vec![0f32; m * n];
            pm.matmul(&a, m, &mut full, &mut GemmScratch::new(), &Serial).unwrap();
            assert!(rms_err(&full, &want) < 0.05 * e0, "{ty:?}: all blocks");
        }
    }

    #[test]
    fn rows_do_not_depend_on_the_batch_or_threads() {
        let kern = Kernels::get();
        let mut r = rng(78);
        let (n, k) = (70, 12 * 32);
        let w = random_weights(&mut r, QuantType::Q8_0, n, k);
        let pm = PackedMatrix::with_residual_blocks(kern, QuantType::Q8_0, n, k, &w, &[3, 0, 11]).unwrap();
        let a = outlier_rows(&mut r, 150, k);
        let mut big = vec![0f32; 150 * n];
        pm.matmul(&a, 150, &mut big, &mut GemmScratch::new(), &Threads(3)).unwrap();
        for (start, m) in [(0usize, 1usize), (17, 5), (100, 50)] {
            let mut c = vec![0f32; m * n];
            pm.matmul(&a[start * k..(start + m) * k], m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
            assert!(c.iter().zip(&big[start * n..]).all(|(x, y)| x.to_bits() == y.to_bits()), "rows {start}..+{m}");
        }
        // Fused with a matrix of the same blocks: same bits as alone.
        let w2 = random_weights(&mut r, QuantType::Q8_0, 33, k);
        let pm2 = PackedMatrix::with_residual_blocks(kern, QuantType::Q8_0, 33, k, &w2, &[3, 0, 11]).unwrap();
        let (mut c1, mut c2) = (vec![0f32; 150 * n], vec![0f32; 150 * 33]);
        PackedMatrix::matmul_many(&[&pm, &pm2], &a, 150, &mut [&mut c1, &mut c2], &mut GemmScratch::new(), &Threads(2)).unwrap();
        assert_eq!(c1, big);
        let mut alone2 = vec![0f32; 150 * 33];
        pm2.matmul(&a, 150, &mut alone2, &mut GemmScratch::new(), &Serial).unwrap();
        assert_eq!(c2, alone2);
    }

    /// The residual blocks' semantics spelled out the long way, as they were first built: the
    /// chosen blocks' weights duplicated after each row (a plain matrix over the widened K) and
    /// each activation row widened with the chosen blocks' residuals (the scalar quantizer's
    /// `x − q·d`). The shared-cell matrix must give the same bits on every ISA, threaded or not,
    /// while holding no more packed bytes than the plain matrix.
    #[test]
    fn shared_cells_match_duplicated_blocks_on_every_isa() {
        let mut r = rng(80);
        let cases: [(usize, usize, usize, Vec<usize>); 5] = [
            (1, 16, 4, vec![2]),
            (7, 33, 9, vec![8, 0, 3]),
            (24, 70, 24, vec![3, 17, 20]),
            (37, 50, 36, vec![35, 1, 20]),
            (13, 40, 12, (0..12).rev().collect()),
        ];
        for kern in Kernels::all_supported() {
            for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_0, QuantType::Q4_1, QuantType::Q5_1] {
                for (m, n, nb, blocks) in &cases {
                    let (m, n, k) = (*m, *n, 32 * nb);
                    let kw = k + 32 * blocks.len();
                    let w = random_weights(&mut r, ty, n, k);
                    let a = outlier_rows(&mut r, m, k);
                    let bb = ty.block_bytes();
                    let mut w_wide = Vec::new();
                    for row in w.chunks_exact(nb * bb) {
                        w_wide.extend_from_slice(row);
                        for &b in blocks {
                            w_wide.extend_from_slice(&row[b * bb..(b + 1) * bb]);
                        }
                    }
                    let mut a_wide = Vec::new();
                    for x in a.chunks_exact(k) {
                        a_wide.extend_from_slice(x);
                        for &b in blocks {
                            let xb = &x[b * 32..(b + 1) * 32];
                            let (mut q, mut d) = ([0i8; 32], [0f32; 1]);
                            crate::gemm::act::quant_act_q8_0(xb, &mut q, &mut d, &mut [0], &mut [0.0]);
                            a_wide.extend(xb.iter().zip(&q).map(|(&v, &qi)| v - f32::from(qi) * d[0]));
                        }
                    }
                    let dup = PackedMatrix::new(kern, ty, n, kw, &w_wide).unwrap();
                    let mut want = vec![0f32; m * n];
                    dup.matmul(&a_wide, m, &mut want, &mut GemmScratch::new(), &Serial).unwrap();
                    let pm = PackedMatrix::with_residual_blocks(kern, ty, n, k, &w, blocks).unwrap();
                    assert_eq!(pm.packed_bytes(), PackedMatrix::new(kern, ty, n, k, &w).unwrap().packed_bytes());
                    assert!(pm.packed_bytes() < dup.packed_bytes());
                    for threads in [1, 3] {
                        let mut c = vec![f32::NAN; m * n];
                        pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Threads(threads)).unwrap();
                        assert!(
                            c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{} {ty:?} {m}x{n}x{k} {blocks:?} threads {threads}",
                            kern.isa()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_block_lists_and_formats_are_refused() {
        let kern = Kernels::get();
        let mut r = rng(79);
        let w = random_weights(&mut r, QuantType::Q8_0, 4, 64);
        for blocks in [&[2][..], &[0, 0], &[usize::MAX]] {
            assert!(PackedMatrix::with_residual_blocks(kern, QuantType::Q8_0, 4, 64, &w, blocks).is_err(), "{blocks:?}");
        }
        let wk = random_weights(&mut r, QuantType::Q4K, 4, 256);
        assert!(matches!(
            PackedMatrix::with_residual_blocks(kern, QuantType::Q4K, 4, 256, &wk, &[0]),
            Err(KernelError::Unsupported { .. })
        ));
        // No blocks is the plain matrix.
        assert_eq!(PackedMatrix::with_residual_blocks(kern, QuantType::Q8_0, 4, 64, &w, &[]).unwrap().packed_k(), 64);
    }
}

mod exact_channels {
    use super::*;

    fn outliers<'a>(blocks: &'a [usize], channels: &'a [usize]) -> Outliers<'a> {
        Outliers { residual_blocks: blocks, exact_channels: channels }
    }

    /// The specification, spelled out: the int8 product of the row with the exact channels
    /// zeroed (the same matrix without them, on the zeroed row), then one fused multiply-add
    /// per channel in order with the dequantized weight.
    fn spec(w: &[u8], ty: QuantType, (n, k): (usize, usize), a: &[f32], m: usize, (blocks, chans): (&[usize], &[usize])) -> Vec<f32> {
        let mut wf = vec![0f32; n * k];
        for (row, out) in w.chunks_exact(ty.row_bytes(k).unwrap()).zip(wf.chunks_exact_mut(k)) {
            dequantize_row(ty, row, out).unwrap();
        }
        let mut z = a.to_vec();
        for row in z.chunks_exact_mut(k) {
            for &c in chans {
                row[c] = 0.0;
            }
        }
        let scalar = Kernels::for_isa(crate::Isa::Scalar).unwrap();
        let mut c = vec![0f32; m * n];
        PackedMatrix::with_residual_blocks(scalar, ty, n, k, w, blocks).unwrap().matmul(&z, m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
        for i in 0..m {
            for j in 0..n {
                for &ch in chans {
                    c[i * n + j] = a[i * k + ch].mul_add(wf[j * k + ch], c[i * n + j]);
                }
            }
        }
        c
    }

    #[test]
    fn the_product_is_the_specified_one_bit_for_bit() {
        let kern = Kernels::get();
        let mut r = rng(90);
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_1] {
            for &(m, n, nb, ref blocks, ref chans) in &[
                (1usize, 16usize, 4usize, vec![], vec![37usize]),
                (7, 33, 9, vec![8, 0], vec![3, 40, 41, 200, 287]),
                (30, 70, 12, vec![3, 0, 11], vec![5, 100, 101, 102, 250, 383]),
                // Two per block, the most a matrix takes.
                (5, 20, 2, vec![1], vec![0, 1, 33, 34]),
            ] {
                let k = 32 * nb;
                let w = random_weights(&mut r, ty, n, k);
                let a = random_f32(&mut r, m * k, 3.0);
                let pm = PackedMatrix::with_outliers(kern, ty, n, k, &w, outliers(blocks, chans)).unwrap();
                assert_eq!((pm.exact_channels(), pm.residual_blocks(), pm.packed_k()), (chans.len(), blocks.len(), k + 32 * blocks.len()));
                for threads in [1, 3] {
                    let mut c = vec![f32::NAN; m * n];
                    pm.matmul(&a, m, &mut c, &mut GemmScratch::new(), &Threads(threads)).unwrap();
                    let want = spec(&w, ty, (n, k), &a, m, (blocks, chans));
                    assert!(c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty:?} {m}x{n}x{k} {threads} threads");
                }
            }
        }
    }

    #[test]
    fn exact_channels_cut_the_error_of_outlier_channels() {
        let kern = Kernels::get();
        let mut r = rng(91);
        let (m, n, k) = (9, 40, 8 * 32);
        let w = random_weights(&mut r, QuantType::Q8_0, n, k);
        let mut a = random_f32(&mut r, m * k, 1.0);
        for row in a.chunks_exact_mut(k) {
            row[37] *= 60.0;
            row[6 * 32 + 17] *= -80.0;
        }
        let mut wf = vec![0f32; n * k];
        for (row, out) in w.chunks_exact(QuantType::Q8_0.row_bytes(k).unwrap()).zip(wf.chunks_exact_mut(k)) {
            dequantize_row(QuantType::Q8_0, row, out).unwrap();
        }
        let err = |c: &[f32]| -> f64 {
            let mut e = 0.0;
            for i in 0..m {
                for j in 0..n {
                    let x: f64 = (0..k).map(|t| f64::from(a[i * k + t]) * f64::from(wf[j * k + t])).sum();
                    e += (f64::from(c[i * n + j]) - x).powi(2);
                }
            }
            e.sqrt()
        };
        let mut plain = vec![0f32; m * n];
        PackedMatrix::new(kern, QuantType::Q8_0, n, k, &w).unwrap().matmul(&a, m, &mut plain, &mut GemmScratch::new(), &Serial).unwrap();
        let mut fixed = vec![0f32; m * n];
        let pm = PackedMatrix::with_outliers(kern, QuantType::Q8_0, n, k, &w, outliers(&[], &[37, 6 * 32 + 17])).unwrap();
        pm.matmul(&a, m, &mut fixed, &mut GemmScratch::new(), &Serial).unwrap();
        let (e0, e1) = (err(&plain), err(&fixed));
        // The two outlier blocks then quantize like the others: their error falls about 60-fold.
        assert!(e1 < 0.4 * e0, "rms error {e1} with exact channels vs {e0} without");
    }

    #[test]
    fn rows_do_not_depend_on_the_batch_or_threads_and_fusing_keeps_the_bits() {
        let kern = Kernels::get();
        let mut r = rng(92);
        let (n, k) = (70, 12 * 32);
        let (blocks, chans) = ([3usize, 0], [7usize, 64, 300]);
        let w = random_weights(&mut r, QuantType::Q8_0, n, k);
        let pm = PackedMatrix::with_outliers(kern, QuantType::Q8_0, n, k, &w, outliers(&blocks, &chans)).unwrap();
        let a = random_f32(&mut r, 150 * k, 2.0);
        let mut big = vec![0f32; 150 * n];
        pm.matmul(&a, 150, &mut big, &mut GemmScratch::new(), &Threads(3)).unwrap();
        for (start, m) in [(0usize, 1usize), (17, 5), (100, 50)] {
            let mut c = vec![0f32; m * n];
            pm.matmul(&a[start * k..(start + m) * k], m, &mut c, &mut GemmScratch::new(), &Serial).unwrap();
            assert!(c.iter().zip(&big[start * n..]).all(|(x, y)| x.to_bits() == y.to_bits()), "rows {start}..+{m}");
        }
        let w2 = random_weights(&mut r, QuantType::Q8_0, 33, k);
        let pm2 = PackedMatrix::with_outliers(kern, QuantType::Q8_0, 33, k, &w2, outliers(&blocks, &chans)).unwrap();
        let (mut c1, mut c2) = (vec![0f32; 150 * n], vec![0f32; 150 * 33]);
        PackedMatrix::matmul_many(&[&pm, &pm2], &a, 150, &mut [&mut c1, &mut c2], &mut GemmScratch::new(), &Threads(2)).unwrap();
        assert_eq!(c1, big);
        let mut alone2 = vec![0f32; 150 * 33];
        pm2.matmul(&a, 150, &mut alone2, &mut GemmScratch::new(), &Serial).unwrap();
        assert_eq!(c2, alone2);
        // A matrix with other exact channels is not fused, and still gives its own product.
        let pm3 = PackedMatrix::with_outliers(kern, QuantType::Q8_0, 33, k, &w2, outliers(&blocks, &[8])).unwrap();
        let mut c3 = vec![0f32; 150 * 33];
        PackedMatrix::matmul_many(&[&pm, &pm3], &a, 150, &mut [&mut c1, &mut c3], &mut GemmScratch::new(), &Threads(2)).unwrap();
        let mut alone3 = vec![0f32; 150 * 33];
        pm3.matmul(&a, 150, &mut alone3, &mut GemmScratch::new(), &Serial).unwrap();
        assert_eq!((c1, c3), (big, alone3));
    }

    #[test]
    fn bad_channel_lists_are_rejected() {
        let kern = Kernels::get();
        let mut r = rng(93);
        let w = random_weights(&mut r, QuantType::Q8_0, 4, 64);
        for chans in [&[5usize, 5][..], &[9, 3], &[64], &[1, 2, 3, 4, 5]] {
            let e = PackedMatrix::with_outliers(kern, QuantType::Q8_0, 4, 64, &w, outliers(&[], chans));
            assert!(matches!(e, Err(KernelError::Shape { .. })), "{chans:?}");
        }
        let wk = random_weights(&mut r, QuantType::Q4K, 4, 256);
        assert!(matches!(
            PackedMatrix::with_outliers(kern, QuantType::Q4K, 4, 256, &wk, outliers(&[], &[0])),
            Err(KernelError::Unsupported { .. })
        ));
        let slot = crate::weight_slots(&[PackedMatrix::packed_len(QuantType::Q8_0, 4, 64, true)]).unwrap().pop().unwrap();
        assert!(matches!(
            PackedMatrix::pack_in(slot, kern, QuantType::Q8_0, 4, 64, &w, outliers(&[], &[0]), true),
            Err(KernelError::Unsupported { .. })
        ));
    }
}

/// A matrix packed into a slot of a shared huge-page mapping holds the same bytes and gives the
/// same bits as one packed into its own buffer; a slot of the wrong size is refused.
#[test]
fn packing_into_weight_slots_matches_heap_packing() {
    let kern = Kernels::get();
    let mut r = rng(93);
    let cases = [
        (QuantType::Q8_0, 37, 128, false, vec![2usize, 0]),
        (QuantType::Q4K, 20, 256, false, vec![]),
        (QuantType::F16, 19, 40, false, vec![]),
        (QuantType::Q5_1, 33, 64, true, vec![]),
    ];
    let lens: Vec<usize> = cases.iter().map(|&(ty, n, k, f32, _)| PackedMatrix::packed_len(ty, n, k, f32)).collect();
    let slots = crate::weight_slots(&lens).expect("an anonymous mapping");
    let m = 9;
    for ((ty, n, k, f32, blocks), slot) in cases.into_iter().zip(slots) {
        let w = random_weights(&mut r, ty, n, k);
        let heap = if f32 {
            PackedMatrix::new_f32(kern, ty, n, k, &w).unwrap()
        } else {
            PackedMatrix::with_residual_blocks(kern, ty, n, k, &w, &blocks).unwrap()
        };
        let outliers = Outliers { residual_blocks: &blocks, exact_channels: &[] };
        let slotted = PackedMatrix::pack_in(slot, kern, ty, n, k, &w, outliers, f32).unwrap();
        assert_eq!(heap.data.bytes(), slotted.data.bytes(), "{ty:?}");
        assert_eq!((slotted.is_f32(), slotted.packed_k()), (heap.is_f32(), heap.packed_k()));
        let a = random_f32(&mut r, m * k, 1.0);
        let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
        heap.matmul(&a, m, &mut c1, &mut GemmScratch::new(), &Threads(2)).unwrap();
        slotted.matmul(&a, m, &mut c2, &mut GemmScratch::new(), &Threads(2)).unwrap();
        assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty:?}");
        // A clone leaves the slot for a buffer of its own, with the same bytes.
        assert_eq!(slotted.clone().data.bytes(), heap.data.bytes());
    }
    let w = random_weights(&mut r, QuantType::Q8_0, 4, 64);
    let slot = crate::weight_slots(&[100]).unwrap().pop().unwrap();
    assert!(matches!(
        PackedMatrix::pack_in(slot, kern, QuantType::Q8_0, 4, 64, &w, Outliers::default(), false),
        Err(KernelError::Length { .. })
    ));
}
