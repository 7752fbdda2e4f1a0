//! The reference quantizers: bit-exact against blocks llama.cpp's `llama_model_quantize` wrote
//! (`tests/data/llama-*-blocks.json`, see `tests/data/README.md`), round-trip error bounds on
//! random data, exact round trips of exactly representable data, and argument checking.

use quant_kernels::{KernelError, QuantType, dequantize_row, quantize_row, quantize_tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

/// Largest `|x - dequantize(quantize(x))|` over a block, as a fraction of the block's largest
/// magnitude, for uniform random data. The legacy formats' bounds are half a quantization step
/// (a whole step where ggml clamps the top quant: Q4_0/Q5_0 map `-max` to `-8`/`-16` and `+max`
/// to the clamped `7`/`15`) plus the f16 rounding of the scale and min; the K-quants' are
/// measured values (Q4_K 0.103, Q5_K 0.058, Q6_K 0.018 over these seeds) with a 1.3x margin,
/// since their sub-block scales are themselves quantized.
const MAX_ERR_PER_ABSMAX: [(QuantType, f32); 8] = [
    (QuantType::Q8_0, 0.5 / 127.0 + 1.0 / 2048.0),
    (QuantType::Q4_0, 1.0 / 8.0 + 1.0 / 2048.0),
    (QuantType::Q5_0, 1.0 / 16.0 + 1.0 / 2048.0),
    (QuantType::Q4_1, 2.0 * 0.5 / 15.0 + 4.0 / 2048.0),
    (QuantType::Q5_1, 2.0 * 0.5 / 31.0 + 4.0 / 2048.0),
    (QuantType::Q4K, 0.135),
    (QuantType::Q5K, 0.075),
    (QuantType::Q6K, 0.024),
];

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    tensor: String,
    first_block: usize,
    ggml_type_id: u32,
    f32_hex: String,
    quant_hex: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn golden(file: &str) -> Vec<Case> {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let golden: Golden = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    golden.cases
}

/// Quantizes every golden input and compares with llama.cpp's bytes; returns the formats seen.
fn check_golden(file: &str) -> Vec<QuantType> {
    let mut seen = Vec::new();
    for case in golden(file) {
        let ty = QuantType::from_ggml_id(case.ggml_type_id).unwrap();
        let x: Vec<f32> = unhex(&case.f32_hex)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want = unhex(&case.quant_hex);
        let mut got = vec![0u8; want.len()];
        quantize_row(ty, &x, &mut got).unwrap();
        let label = format!("{ty} {} from block {}", case.tensor, case.first_block);
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{label}: first differing byte");
        // The whole-tensor entry point, with the blocks as rows of one block each.
        assert_eq!(
            quantize_tensor(ty, &x, ty.block_elems()).unwrap(),
            want,
            "{label}"
        );
        seen.push(ty);
    }
    seen
}

#[test]
fn q4_k_m_blocks_match_llama_cpp_bit_for_bit() {
    let seen = check_golden("llama-q4_k_m-blocks.json");
    for ty in [QuantType::Q4K, QuantType::Q6K, QuantType::Q5_0] {
        assert!(seen.contains(&ty), "{ty} covered");
    }
}

#[test]
fn q5_k_q4_0_q4_1_q5_1_blocks_match_llama_cpp_bit_for_bit() {
    let seen = check_golden("llama-other-blocks.json");
    for ty in [
        QuantType::Q5K,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_1,
    ] {
        assert!(seen.contains(&ty), "{ty} covered");
    }
}

fn block_absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn round_trip(ty: QuantType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![0.0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    y
}

#[test]
fn round_trip_error_is_bounded_on_random_data() {
    for (ty, bound) in MAX_ERR_PER_ABSMAX {
        let mut worst = 0.0f32;
        for seed in 0..20u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            // Magnitudes from 1e-2 to 1e2 (smaller ones make the f16 scales subnormal, which
            // the relative bounds do not model), and blocks with an offset, to exercise the mins.
            let scale = 10f32.powi(rng.gen_range(-2..=2));
            let offset = if seed % 3 == 0 { scale * 0.5 } else { 0.0 };
            let x: Vec<f32> = (0..1024)
                .map(|_| rng.gen_range(-1.0f32..1.0) * scale + offset)
                .collect();
            let y = round_trip(ty, &x);
            let be = ty.block_elems();
            for (xb, yb) in x.chunks_exact(be).zip(y.chunks_exact(be)) {
                let amax = block_absmax(xb);
                let err = xb
                    .iter()
                    .zip(yb)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                worst = worst.max(err / amax);
            }
        }
        assert!(
            worst <= bound,
            "{ty}: worst error {worst} of the block absmax exceeds {bound}"
        );
    }
}

#[test]
fn exactly_representable_data_round_trips_exactly() {
    // Power-of-two steps keep every product and quotient exact, so each format must
    // reproduce the input: values on its grid, including the extreme quant that sets the scale.
    // Q4_K/Q5_K are left out: their sub-block scales are `max / 63` rounded to f16, a grid only
    // contrived data lies on.
    let step = 1.0f32 / 64.0;
    let grid = |lo: i32, hi: i32, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (lo + (i as i32 * 7).rem_euclid(hi - lo + 1)) as f32 * step)
            .collect()
    };
    // Every block holds its format's extreme quant: for Q4_0/Q5_0 the signed maximum is -8
    // (-16) steps, so d = max / -8 (-16) is the step.
    let with_extreme = |mut v: Vec<f32>, q: f32| {
        for b in v.chunks_exact_mut(32) {
            b[5] = q * step;
        }
        v
    };
    let q8 = with_extreme(grid(-127, 127, 64), -127.0);
    let q4_0 = with_extreme(grid(-8, 7, 64), -8.0);
    let q5_0 = with_extreme(grid(-16, 15, 64), -16.0);
    // Q4_1/Q5_1: min -1, max = min + 15 (31) steps, so (max - min) / 15 (31) is the step.
    let affine = |levels: i32, n: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..n)
            .map(|i| -1.0 + ((i as i32 * 5) % (levels + 1)) as f32 * step)
            .collect();
        for b in v.chunks_exact_mut(32) {
            b[0] = -1.0;
            b[1] = -1.0 + levels as f32 * step;
        }
        v
    };
    // Q6_K: every 16-value group holds -32 steps, so every group's scale is the step and the
    // super-block scale is step / 128 (with int8 scale -128): all exact.
    let mut q6 = grid(-32, 31, 512);
    for g in q6.chunks_exact_mut(16) {
        g[3] = -32.0 * step;
    }
    for (ty, x) in [
        (QuantType::Q8_0, q8),
        (QuantType::Q4_0, q4_0),
        (QuantType::Q5_0, q5_0),
        (QuantType::Q4_1, affine(15, 64)),
        (QuantType::Q5_1, affine(31, 64)),
        (QuantType::Q6K, q6),
    ] {
        let y = round_trip(ty, &x);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{ty} element {i}: {a} became {b}");
        }
    }
}

#[test]
fn zero_input_quantizes_to_zero() {
    for ty in QuantType::WEIGHTS {
        let x = vec![0.0f32; 512];
        assert!(round_trip(ty, &x).iter().all(|&v| v == 0.0), "{ty}");
    }
}

#[test]
fn ragged_and_mis_sized_arguments_are_errors() {
    let x = vec![0.5f32; 300];
    let mut dst = vec![0u8; 4096];
    for ty in [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
        assert!(
            matches!(
                quantize_row(ty, &x, &mut dst),
                Err(KernelError::RaggedRow {
                    elems: 300,
                    block: 256,
                    ..
                })
            ),
            "{ty}"
        );
        assert!(
            matches!(
                quantize_tensor(ty, &x[..288], 96),
                Err(KernelError::RaggedRow { elems: 96, .. })
            ),
            "{ty}"
        );
    }
    for ty in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
    ] {
        assert!(
            matches!(
                quantize_row(ty, &x[..40], &mut dst),
                Err(KernelError::RaggedRow {
                    elems: 40,
                    block: 32,
                    ..
                })
            ),
            "{ty}"
        );
        let expected = ty.row_bytes(64).unwrap();
        assert_eq!(
            quantize_row(ty, &x[..64], &mut dst[..expected + 1]),
            Err(KernelError::ByteLength {
                ty,
                expected,
                actual: expected + 1
            })
        );
    }
    assert!(matches!(
        quantize_tensor(QuantType::Q8_0, &x, 0),
        Err(KernelError::Length { .. })
    ));
    assert!(matches!(
        quantize_tensor(QuantType::Q8_0, &x[..96], 64),
        Err(KernelError::Length { .. })
    ));
    // Rows are quantized independently: two 256-element rows equal one 512-element row.
    let y: Vec<f32> = (0..512).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
    let mut whole = vec![0u8; QuantType::Q4K.row_bytes(512).unwrap()];
    quantize_row(QuantType::Q4K, &y, &mut whole).unwrap();
    assert_eq!(quantize_tensor(QuantType::Q4K, &y, 256).unwrap(), whole);
}
