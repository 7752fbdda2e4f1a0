//! Small statistics over timing samples.

/// The `p`-th percentile (0..=100) of `samples`, interpolating linearly between the two closest
/// ranks (numpy's default), so p50 of an even count is the mean of the middle two. `None` for no
/// samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0) / 100.0;
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Arithmetic mean; `None` for no samples.
pub fn mean(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        None
    } else {
        Some(samples.iter().sum::<f64>() / samples.len() as f64)
    }
}

/// Coefficient of variation (sample standard deviation over mean), the noise figure reported
/// beside every cell; `None` below two samples or for a zero mean.
pub fn cv(samples: &[f64]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let m = mean(samples)?;
    if m == 0.0 {
        return None;
    }
    let var = samples.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (samples.len() - 1) as f64;
    Some(var.sqrt() / m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 100.0), Some(4.0));
        assert_eq!(percentile(&s, 50.0), Some(2.5));
        // numpy.percentile([1,2,3,4], 99) = 3.97
        assert!((percentile(&s, 99.0).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_a_hundred_values_sits_near_the_top() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&s, 99.0).unwrap() - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&s, 50.0), Some(50.5));
    }

    #[test]
    fn mean_and_cv() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(mean(&[]), None);
        assert_eq!(cv(&[5.0, 5.0, 5.0]), Some(0.0));
        // sd of [1,3] is sqrt(2), mean 2
        assert!((cv(&[1.0, 3.0]).unwrap() - 2f64.sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(cv(&[1.0]), None);
    }
}
