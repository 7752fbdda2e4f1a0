//! Verdicts drawn from the matrix: where coarse overtakes fine, and whether `auto` kept up.

use std::fmt;

use crate::engine::Mode;

/// Tolerance for `auto`: it must reach this fraction of the best fixed mode's throughput.
pub const AUTO_TOLERANCE: f64 = 0.95;

/// Where coarse-grained parallelism starts to beat fine-grained as the batch grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossover {
    /// Coarse is at least as fast at every batch size measured.
    CoarseEverywhere,
    /// Fine is faster at every batch size measured.
    FineEverywhere,
    /// Coarse wins from `batch` up to the largest size; `flips` counts how often the winner
    /// changed along the way (1 is a clean crossover, more means noise near the boundary).
    From {
        /// Smallest batch from which coarse wins at every larger size.
        batch: usize,
        /// Winner changes along the batch axis.
        flips: usize,
    },
    /// Fine wins at the largest batch although coarse wins at these smaller ones.
    FineAtLargest {
        /// Batch sizes where coarse won.
        coarse_wins: Vec<usize>,
    },
}

impl fmt::Display for Crossover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crossover::CoarseEverywhere => f.write_str("none: coarse is as fast or faster at every batch size"),
            Crossover::FineEverywhere => f.write_str("none: fine is faster at every batch size"),
            Crossover::From { batch, flips: 1 } => write!(f, "batch {batch}: coarse wins from here up"),
            Crossover::From { batch, flips } => {
                write!(f, "batch {batch}: coarse wins from here up (winner changed {flips} times, noisy boundary)")
            }
            Crossover::FineAtLargest { coarse_wins } => {
                write!(f, "none: fine wins at the largest batch (coarse won only at {coarse_wins:?})")
            }
        }
    }
}

/// Finds the crossover from `(batch, fine texts/s, coarse texts/s)` points (any order).
pub fn crossover(points: &[(usize, f64, f64)]) -> Option<Crossover> {
    if points.is_empty() {
        return None;
    }
    let mut pts = points.to_vec();
    pts.sort_by_key(|p| p.0);
    let coarse_wins: Vec<bool> = pts.iter().map(|&(_, fine, coarse)| coarse >= fine).collect();
    let flips = coarse_wins.windows(2).filter(|w| w[0] != w[1]).count();
    if coarse_wins.iter().all(|&c| c) {
        return Some(Crossover::CoarseEverywhere);
    }
    if coarse_wins.iter().all(|&c| !c) {
        return Some(Crossover::FineEverywhere);
    }
    if !coarse_wins[coarse_wins.len() - 1] {
        let wins = pts.iter().zip(&coarse_wins).filter(|(_, c)| **c).map(|(p, _)| p.0).collect();
        return Some(Crossover::FineAtLargest { coarse_wins: wins });
    }
    // Walk back from the largest batch while coarse keeps winning.
    let mut i = pts.len() - 1;
    while i > 0 && coarse_wins[i - 1] {
        i -= 1;
    }
    Some(Crossover::From { batch: pts[i].0, flips })
}

/// How `auto` did at one point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoCheck {
    /// The faster fixed mode.
    pub best: Mode,
    /// Its throughput.
    pub best_tps: f64,
    /// `auto` throughput over `best_tps`.
    pub ratio: f64,
    /// `ratio >= AUTO_TOLERANCE`.
    pub ok: bool,
    /// `auto` ran the faster fixed mode on every call. A failing point where this holds is the
    /// same code measured twice (noise or planning overhead), not a wrong decision.
    pub picked_best: bool,
    /// The two fixed modes differ by more than the point's noise band: only here does the
    /// choice matter, and only here is `auto` held to [`AUTO_TOLERANCE`] strictly.
    pub decisive: bool,
    /// The noise band of the fine/coarse comparison (relative, ~95 %; see [`paired_noise`]).
    pub noise: f64,
}

/// The run's own noise in the ratio of two columns measured round-robin on the same batches:
/// twice the standard error of the mean of the per-round log ratios (a ~95 % band, relative).
/// Pairing removes the variation between batches (longer texts in one round slow every column),
/// leaving the machine's own jitter. Zero with fewer than two rounds.
pub fn paired_noise(a: &[f64], b: &[f64]) -> f64 {
    let logs: Vec<f64> = a.iter().zip(b).filter(|(x, y)| **x > 0.0 && **y > 0.0).map(|(x, y)| (x / y).ln()).collect();
    let n = logs.len();
    if n < 2 {
        return 0.0;
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    2.0 * (var / n as f64).sqrt()
}

/// Compares `auto` with the better of the two fixed modes; `auto_ran` is the single mode auto
/// ran at this point (`None` when it ran both on different calls), `noise` the point's band.
///
/// Where the fixed modes differ by more than the noise, auto must reach [`AUTO_TOLERANCE`] of
/// the best. Where they do not, either mode is right, and auto may fall short of the tolerance
/// by the noise band too (it is measured with the same jitter).
pub fn auto_check(fine_tps: f64, coarse_tps: f64, auto_tps: f64, auto_ran: Option<Mode>, noise: f64) -> AutoCheck {
    let (best, best_tps) = if coarse_tps >= fine_tps { (Mode::Coarse, coarse_tps) } else { (Mode::Fine, fine_tps) };
    let ratio = auto_tps / best_tps;
    let decisive = (fine_tps / coarse_tps).ln().abs() > noise;
    let ok = ratio >= AUTO_TOLERANCE || (!decisive && ratio >= AUTO_TOLERANCE - noise);
    AutoCheck { best, best_tps, ratio, ok, picked_best: auto_ran == Some(best), decisive, noise }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_crossover() {
        let pts = [(1, 10.0, 6.0), (2, 12.0, 11.0), (4, 13.0, 14.0), (8, 13.5, 16.0)];
        assert_eq!(crossover(&pts), Some(Crossover::From { batch: 4, flips: 1 }));
    }

    #[test]
    fn order_of_points_does_not_matter() {
        let pts = [(8, 13.5, 16.0), (1, 10.0, 6.0), (4, 13.0, 14.0), (2, 12.0, 11.0)];
        assert_eq!(crossover(&pts), Some(Crossover::From { batch: 4, flips: 1 }));
    }

    #[test]
    fn noisy_boundary_reports_flips_and_the_stable_start() {
        let pts = [(1, 10.0, 6.0), (2, 10.0, 10.5), (4, 12.0, 11.0), (8, 12.0, 15.0), (16, 12.0, 16.0)];
        assert_eq!(crossover(&pts), Some(Crossover::From { batch: 8, flips: 3 }));
    }

    #[test]
    fn one_sided_and_reversed_outcomes() {
        assert_eq!(crossover(&[(1, 1.0, 2.0), (2, 1.0, 1.0)]), Some(Crossover::CoarseEverywhere), "ties go to coarse");
        assert_eq!(crossover(&[(1, 2.0, 1.0), (2, 2.0, 1.0)]), Some(Crossover::FineEverywhere));
        assert_eq!(
            crossover(&[(1, 1.0, 2.0), (2, 2.0, 1.0)]),
            Some(Crossover::FineAtLargest { coarse_wins: vec![1] })
        );
        assert_eq!(crossover(&[]), None);
    }

    #[test]
    fn auto_within_five_percent() {
        let c = auto_check(100.0, 120.0, 115.0, Some(Mode::Coarse), 0.01);
        assert_eq!(c.best, Mode::Coarse);
        assert!(c.ok && c.picked_best && c.decisive && (c.ratio - 115.0 / 120.0).abs() < 1e-12);
        let c = auto_check(100.0, 120.0, 113.0, Some(Mode::Fine), 0.01);
        assert!(!c.ok && !c.picked_best, "113/120 = 0.942 is a violation, and fine was the wrong pick");
        let c = auto_check(50.0, 40.0, 47.5, None, 0.0);
        assert_eq!(c.best, Mode::Fine);
        assert!(c.ok && !c.picked_best, "exactly 95 % passes; mixed picks are not 'the best'");
        assert!(auto_check(50.0, 40.0, 60.0, Some(Mode::Fine), 0.0).ok, "auto faster than both passes");
    }

    #[test]
    fn within_the_noise_either_mode_is_right() {
        // Fixed modes 3 % apart with a 5 % band: not decisive, auto at 93 % of best still passes.
        let c = auto_check(100.0, 103.0, 95.8, Some(Mode::Fine), 0.05);
        assert!(!c.decisive && c.ok);
        // The same gap measured tightly is decisive, and 93 % fails.
        let c = auto_check(100.0, 103.0, 95.8, Some(Mode::Fine), 0.01);
        assert!(c.decisive && !c.ok);
    }

    #[test]
    fn paired_noise_ignores_batch_to_batch_variation() {
        // Both columns slow down together on heavy batches: the ratio is steady, the noise small.
        let a = [1.0, 2.0, 3.0, 1.5, 2.5];
        let b: Vec<f64> = a.iter().map(|x| x * 1.1).collect();
        assert!(paired_noise(&a, &b) < 1e-9);
        let jitter = [1.0, 1.2, 0.9, 1.1];
        assert!(paired_noise(&jitter, &[1.0; 4]) > 0.05);
        assert_eq!(paired_noise(&[1.0], &[2.0]), 0.0);
    }
}
