//! Element-wise transcendental functions written so the compiler vectorises them.
//!
//! `f32::exp` and `f32::tanh` are calls into libm, one element at a time; in the feed-forward
//! block (1152 GELUs per token per layer) and in the softmax they would cost more than the
//! arithmetic around them. The versions here use only multiplies, adds, comparisons and bit
//! operations on `f32`/`u32` lanes, which the compiler turns into packed SIMD, and stay within
//! a few ulp of the correctly rounded result (tested below against `f64`).

/// `exp(x)` for `f32`, accurate to about 2 ulp over the normal range.
///
/// Inputs below about -87.3 give 0 (no subnormals) and inputs above about 88.7 give a huge
/// finite value rather than infinity; callers either subtract a maximum first (softmax) or
/// divide by `1 + exp(..)` (GELU), where both limits are harmless. NaN propagates as NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a high part exact in f32 (few mantissa bits) and a low correction, so
    // `x - n ln2` is computed without cancellation error (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer (SSE2 has no rounding instruction) and
    // leaves that integer in the low mantissa bits, read back without a float-to-int
    // conversion (whose saturating semantics would not vectorise).
    const ROUND: f32 = 12_582_912.0;
    // Comparisons rather than `clamp`, whose NaN rules compile to scalar code. NaN fails both
    // tests and stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Minimax polynomial for exp on [-ln2/2, ln2/2] (Cephes expf coefficients).
    let r2 = r * r;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^n from its exponent bits; n is in [-126, 127] after the clamp.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    y * scale
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, evaluated as the algebraically equal
/// `x / (1 + exp(-2·√(2/π)·(x + 0.044715·x³)))`, which needs one exponential and never
/// cancels.
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_f32(-2.0 * inner))
}

/// `gate[i] = gelu_tanh(gate[i]) · up[i]`: the gated feed-forward product, in place.
#[inline(always)]
pub(crate) fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest relative error of `exp_f32` against `f64::exp` on the tested range.
    const EXP_MAX_REL_ERR: f64 = 3.0e-7;
    /// Largest absolute error of `gelu_tanh` against an `f64` evaluation of the tanh form.
    const GELU_MAX_ABS_ERR: f64 = 2.0e-6;
    /// The same, relative to |x|, for large arguments where the value is about x.
    const GELU_MAX_REL_ERR: f64 = 4.0e-7;

    #[test]
    fn exp_matches_f64_across_the_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = f64::from(exp_f32(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < EXP_MAX_REL_ERR, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_limits_are_finite_and_monotone_at_the_edges() {
        assert!(exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(-1000.0) >= 0.0);
        assert!(exp_f32(1000.0).is_finite());
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_the_tanh_formula() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let xd = f64::from(x);
            let want = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let got = f64::from(gelu_tanh(x));
            let err = (got - want).abs();
            assert!(
                err < GELU_MAX_ABS_ERR.max(GELU_MAX_REL_ERR * xd.abs()),
                "x={x} got={got} want={want}"
            );
            x += 0.003_1;
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!(gelu_tanh(-200.0).abs() < 1e-30);
        assert_eq!(gelu_tanh(200.0), 200.0);
    }

    #[test]
    fn gelu_mul_multiplies_by_up() {
        let mut gate = vec![1.0f32, -2.0, 3.0];
        gelu_tanh_mul(&mut gate, &[2.0, 1.0, 0.0]);
        assert!((gate[0] - 2.0 * gelu_tanh(1.0)).abs() < 1e-7);
        assert!((gate[1] - gelu_tanh(-2.0)).abs() < 1e-7);
        assert_eq!(gate[2], 0.0);
    }
}
