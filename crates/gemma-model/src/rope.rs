//! Rotary position embedding tables, computed once at load.
//!
//! The angles are formed the way the reference (transformers' Gemma 3) forms them, so the
//! tables agree with it to the last bit or two: the inverse frequency `1 / base^(2i/d)` is an
//! `f32`, the angle is the `f32` product `position · inv_freq` (that rounding matters: at
//! position 2000 one ulp of the angle is 1.2e-4 radians), and only the cosine and sine are
//! evaluated in `f64` and rounded.

/// Cosine and sine of every (position, frequency) pair for one RoPE base.
#[derive(Debug, Clone)]
pub(crate) struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Tables for `positions` positions of a head of `head_dim` values (NeoX layout:
    /// value `i` pairs with value `i + head_dim/2`).
    pub(crate) fn new(base: f32, head_dim: usize, positions: usize) -> RopeTable {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let e = (2 * i) as f32 / head_dim as f32;
                let p = f64::from(base).powf(f64::from(e)) as f32;
                1.0f32 / p
            })
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = f64::from(p as f32 * f);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Cosines for one position (`head_dim / 2` values; the second half of a head reuses them).
    pub(crate) fn cos(&self, pos: usize) -> &[f32] {
        &self.cos[pos * self.half..(pos + 1) * self.half]
    }

    /// Sines for one position.
    pub(crate) fn sin(&self, pos: usize) -> &[f32] {
        &self.sin[pos * self.half..(pos + 1) * self.half]
    }

    /// Rotates every head of `row` (heads of `2·half` values laid end to end) for `pos`:
    /// `(a, b) -> (a·cos − b·sin, b·cos + a·sin)` for each pair `(x[i], x[i + half])`.
    #[inline(always)]
    pub(crate) fn rotate(&self, row: &mut [f32], pos: usize) {
        let cos = self.cos(pos);
        let sin = self.sin(pos);
        for head in row.chunks_exact_mut(2 * self.half) {
            let (lo, hi) = head.split_at_mut(self.half);
            for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let x0 = *a;
                let x1 = *b;
                *a = x0 * c - x1 * s;
                *b = x1 * c + x0 * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity() {
        let t = RopeTable::new(10_000.0, 8, 4);
        let mut row = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = row;
        t.rotate(&mut row, 0);
        assert_eq!(row, orig);
    }

    #[test]
    fn rotation_preserves_pair_norms_and_matches_angles() {
        let base = 1_000_000.0f32;
        let t = RopeTable::new(base, 256, 2048);
        let mut row: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
        let orig = row.clone();
        let pos = 1777;
        t.rotate(&mut row, pos);
        for h in 0..2 {
            for i in 0..128 {
                let (a, b) = (orig[h * 256 + i], orig[h * 256 + i + 128]);
                let (x, y) = (row[h * 256 + i], row[h * 256 + i + 128]);
                let n0 = f64::from(a).hypot(f64::from(b));
                let n1 = f64::from(x).hypot(f64::from(y));
                assert!((n0 - n1).abs() < 1e-6, "norm changed at {i}");
                let theta = f64::from(
                    pos as f32 * (1.0 / (f64::from(base).powf(2.0 * i as f64 / 256.0) as f32)),
                );
                let want_x = f64::from(a) * theta.cos() - f64::from(b) * theta.sin();
                assert!((f64::from(x) - want_x).abs() < 1e-6);
            }
        }
    }
}
