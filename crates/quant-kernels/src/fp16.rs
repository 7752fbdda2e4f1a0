//! f16 and bf16 conversions with ggml's rounding.

use half::f16;

/// f32 to f16 as `GGML_FP32_TO_FP16`: round to nearest even, overflow to infinity, and every NaN
/// becomes the quiet NaN `0x7E00` with the input's sign (ggml's scalar `ggml_compute_fp32_to_fp16`).
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return f16::from_bits(sign | 0x7E00);
    }
    f16::from_f32(x)
}

/// f16 to f32 (exact).
#[inline]
pub fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// bf16 bits to f32 (exact: the bits are the top half of an f32).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN forced quiet.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
        assert_eq!(f32_to_f16(1.0 + f32::powi(2.0, -11)).to_bits(), 0x3C00);
        // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(f32_to_f16(1.0 + 3.0 * f32::powi(2.0, -11)).to_bits(), 0x3C02);
        assert_eq!(f32_to_f16(65520.0).to_bits(), 0x7C00, "rounds up to infinity");
        assert_eq!(f32_to_f16(65519.0).to_bits(), 0x7BFF);
        assert_eq!(f32_to_f16(f32::NAN).to_bits(), 0x7E00);
        assert_eq!(f32_to_f16(-f32::NAN).to_bits(), 0xFE00);
        // Smallest subnormal and a value that rounds to it.
        assert_eq!(f32_to_f16(f32::powi(2.0, -24)).to_bits(), 1);
        assert_eq!(f32_to_f16(0.6 * f32::powi(2.0, -24)).to_bits(), 1);
        assert_eq!(f32_to_f16(0.5 * f32::powi(2.0, -24)).to_bits(), 0, "tie to even zero");
    }

    #[test]
    fn f16_round_trips_every_finite_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(f16_to_f32(h)).to_bits(), bits);
        }
    }

    #[test]
    fn bf16_matches_ggml_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        // Halfway between 0x3F80 and 0x3F81: ties to even (0x3F80); next one up goes to 0x3F82.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(bf16_to_f32(0x3B92), f32::from_bits(0x3B92_0000));
    }
}
