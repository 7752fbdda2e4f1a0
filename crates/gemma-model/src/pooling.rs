//! Mean pooling, L2 normalisation and Matryoshka prefixes.

/// `out = mean of the rows of x` (`rows × dim`), summed in `f64` in row order so the result
/// depends only on the rows themselves.
pub(crate) fn mean_rows(x: &[f32], dim: usize, out: &mut [f32], acc: &mut [f64]) {
    debug_assert!(dim > 0 && x.len().is_multiple_of(dim) && out.len() == dim && acc.len() == dim);
    let rows = x.len() / dim;
    acc.fill(0.0);
    for row in x.chunks_exact(dim) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    }
    let inv = 1.0 / rows as f64;
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = (a * inv) as f32;
    }
}

/// Scales `v` to unit Euclidean length in place; a zero vector stays zero (as
/// `torch.nn.functional.normalize` does with its `eps`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    let inv = 1.0 / norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (f64::from(*x) * inv) as f32;
    }
}

/// A Matryoshka prefix of an embedding: the first `dim` values, renormalised to unit length
/// when `renormalize` is set (sentence-transformers' `truncate_dim` leaves them unnormalised
/// unless asked). `dim` larger than the embedding keeps it whole.
pub fn matryoshka(embedding: &[f32], dim: usize, renormalize: bool, out: &mut Vec<f32>) {
    out.clear();
    out.extend_from_slice(&embedding[..dim.min(embedding.len())]);
    if renormalize {
        l2_normalize(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_rows() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [0.0f32; 2];
        let mut acc = [0.0f64; 2];
        mean_rows(&x, 2, &mut out, &mut acc);
        assert_eq!(out, [3.0, 4.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }

    #[test]
    fn matryoshka_prefix_with_and_without_renorm() {
        let e = [0.6f32, 0.0, 0.8, 0.0];
        let mut out = Vec::new();
        matryoshka(&e, 2, false, &mut out);
        assert_eq!(out, [0.6, 0.0]);
        matryoshka(&e, 2, true, &mut out);
        assert_eq!(out, [1.0, 0.0]);
        matryoshka(&e, 10, false, &mut out);
        assert_eq!(out, e);
    }
}
