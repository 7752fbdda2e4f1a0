//! RMS normalisation, row by row, in the forms the layer needs.
//!
//! Gemma normalises in five places per layer; the weights are stored in GGUF as `1 + w` of the
//! checkpoint, so every form here is `x / sqrt(mean(x²) + eps) · weight` with the weight as
//! stored. The sum of squares is kept in independent lanes so it vectorises, and the inverse
//! square root is taken in `f64` so no precision is lost before the multiply.

const LANES: usize = 16;

/// `1 / sqrt(mean(x²) + eps)` for one row.
#[inline(always)]
pub(crate) fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| f64::from(a)).sum();
    sum += chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>();
    let mean = sum / x.len() as f64;
    (1.0 / (mean + f64::from(eps)).sqrt()) as f32
}

/// `out = rms_norm(x) · w`.
#[inline(always)]
pub(crate) fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert!(x.len() == w.len() && x.len() == out.len());
    let s = inv_rms(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * s) * g;
    }
}

/// `x = rms_norm(x) · w`, in place.
#[inline(always)]
pub(crate) fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let s = inv_rms(x, eps);
    for (v, &g) in x.iter_mut().zip(w) {
        *v = (*v * s) * g;
    }
}

/// `acc += rms_norm(y) · w`: the post-norm and residual add of a Gemma block in one pass.
#[inline(always)]
pub(crate) fn rms_norm_add(y: &[f32], w: &[f32], eps: f32, acc: &mut [f32]) {
    debug_assert!(y.len() == w.len() && y.len() == acc.len());
    let s = inv_rms(y, eps);
    for ((a, &v), &g) in acc.iter_mut().zip(y).zip(w) {
        *a += (v * s) * g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error allowed against an `f64` evaluation.
    const NORM_REL_TOL: f64 = 1e-6;

    fn reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
        let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + f64::from(eps)).sqrt();
        x.iter()
            .zip(w)
            .map(|(&v, &g)| f64::from(v) * s * f64::from(g))
            .collect()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 100.0
            })
            .collect()
    }

    #[test]
    fn all_forms_match_f64_reference() {
        for n in [1usize, 7, 16, 256, 768, 770] {
            let x = data(n, n as u32);
            let w = data(n, 99);
            let want = reference(&x, &w, 1e-6);
            let mut out = vec![0.0; n];
            rms_norm_into(&x, &w, 1e-6, &mut out);
            let mut inplace = x.clone();
            rms_norm_in_place(&mut inplace, &w, 1e-6);
            let mut acc = vec![1.0f32; n];
            rms_norm_add(&x, &w, 1e-6, &mut acc);
            for i in 0..n {
                let tol = NORM_REL_TOL * want[i].abs().max(1e-3);
                assert!((f64::from(out[i]) - want[i]).abs() < tol, "n={n} i={i}");
                assert_eq!(out[i], inplace[i]);
                assert_eq!(acc[i], 1.0 + out[i]);
            }
        }
    }

    #[test]
    fn eps_keeps_zero_rows_finite() {
        let mut x = vec![0.0f32; 768];
        rms_norm_in_place(&mut x, &vec![1.0; 768], 1e-6);
        assert!(x.iter().all(|&v| v == 0.0));
    }
}
