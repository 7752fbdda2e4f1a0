//! `Parallelism::Auto` that measures: the cost model of `plan.rs` gives the *shape* of each
//! mode's cost (how it grows with texts, lengths and passes); the speed of this machine, today,
//! scales it, learned from the measured time of real calls.
//!
//! Why online and not a probe at load: a probe costs every process its start-up time (the
//! cold-start budget is 150 ms for the first vector), measures a synthetic batch rather than the
//! user's, and goes stale when a neighbour starts or the batch mix changes; the calls themselves
//! are free measurements of exactly the work that matters.
//!
//! How:
//! - Calls are put in buckets by batch size (powers of two) and mean text length (four
//!   classes). Each bucket keeps, per mode, the mean log of *measured seconds / predicted
//!   cost*: a plain mean while samples are few, then an exponential moving average, so it follows
//!   a machine whose speed drifts. Logs, because time noise is multiplicative; and once a mean
//!   has a few samples, one sample moves it by at most [`OUTLIER`] (a preempted call on a shared
//!   machine is not evidence about a mode).
//! - Only the *relative* speed of the modes decides, so the tuner estimates
//!   δ = log ratio(fine) − log ratio(coarse) per bucket: the bucket's own δ (from its two means,
//!   weighted by how many samples each has) shrunk toward a prior δ from the bucket of the same
//!   length class and nearest batch size that measured both modes (neighbouring batch sizes
//!   behave alike; a drift that slows both modes cancels in δ; another length class is another
//!   regime, and lends nothing). The prior weighs as much as [`PRIOR_WEIGHT`] paired samples, so one noisy
//!   measurement in a new bucket cannot overturn what its neighbours know, while a bucket whose
//!   truth differs takes over after a few calls.
//! - The lower estimate runs; the bucket's last choice is kept unless the other is better by
//!   [`HYSTERESIS`], so two close modes never flip-flop.
//! - Exploration is bounded twice: the other mode is tried only while its estimate is within
//!   [`EXPLORE_BAND`] of the chosen one (a mode the model predicts far slower, such as coarse for
//!   a single text, is never tried), and only at exponentially spaced calls of the bucket
//!   (its 8th, then gaps of 4, 8, … up to [`MAX_EXPLORE_GAP`] calls), so its cost vanishes as
//!   evidence accumulates but a changed machine is noticed. A new bucket tries the other mode on
//!   its first call only if no bucket has compared the modes yet or the prior puts them within
//!   5 %.
//! - Only calls that ran alone are measured: concurrent calls share the workers, and their
//!   times say nothing about either mode. Nor is each mode's first call: it sets up that mode's
//!   buffers.
//!
//! Whatever mode runs, the vectors are bit-identical (see `plan.rs`); the tuner only moves time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::plan::Parallelism;

/// A mode's estimate must beat the current choice by this factor to take over.
const HYSTERESIS: f64 = 0.97;
/// The other mode is explored only while its estimate is within this factor of the chosen one.
const EXPLORE_BAND: f64 = 1.35;
/// A bucket tries the other mode on its first call only if its estimate is this close.
const FIRST_TRY_BAND: f64 = 1.05;
/// Otherwise the first try comes at this call of the bucket.
const FIRST_GAP: u64 = 8;
/// Most calls of a bucket between two explorations, once the evidence is long-standing.
const MAX_EXPLORE_GAP: u64 = 256;
/// Samples averaged plainly before the moving average takes over (its weight is `1/this`).
const SETTLE: f64 = 8.0;
/// Once a mean has this many samples, a new sample is clamped to within [`OUTLIER`] of it.
const CLAMP_AFTER: u32 = 3;
/// Largest move of a settled log mean's input: ln 1.3, a 30 % deviation.
const OUTLIER: f64 = 0.262_364_264_467_491;
/// How many paired samples the neighbours' δ is worth in a bucket's own estimate.
const PRIOR_WEIGHT: f64 = 1.0;

/// Batch-size classes: 1, 2, 3–4, 5–8, … up to 512 and more.
const SIZE_CLASSES: usize = 10;
/// Mean-length classes: up to 32 tokens, 128, 512, longer.
const LENGTH_CLASSES: usize = 4;
const BUCKETS: usize = SIZE_CLASSES * LENGTH_CLASSES;

/// What the tuner decided for one call, to be reported back with its measured time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    pub mode: Parallelism,
    bucket: usize,
    predicted: f64,
    /// The call's sequence number and whether it was the only one in flight when it started.
    seq: u64,
    alone: bool,
}

/// The mean of log(measured / predicted) of one mode in one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct LogMean {
    value: f64,
    samples: u32,
}

impl LogMean {
    fn add(&mut self, log_ratio: f64) {
        let x = if self.samples >= CLAMP_AFTER {
            log_ratio.clamp(self.value - OUTLIER, self.value + OUTLIER)
        } else {
            log_ratio
        };
        self.samples = self.samples.saturating_add(1);
        let w = (1.0 / f64::from(self.samples)).max(1.0 / SETTLE);
        self.value += w * (x - self.value);
    }

    fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }

    /// Samples the mean stands for: a moving average remembers about `2·SETTLE − 1`.
    fn weight(&self) -> f64 {
        f64::from(self.samples).min(2.0 * SETTLE - 1.0)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index 0: coarse, 1: fine.
    log: [LogMean; 2],
    calls: u64,
    next_explore: u64,
    explorations: u32,
    last: Option<Parallelism>,
}

impl Bucket {
    /// The bucket's own δ and how many paired samples it is worth, once both modes ran here.
    fn delta(&self) -> Option<(f64, f64)> {
        let (c, f) = (self.log[0].get()?, self.log[1].get()?);
        let n = 1.0 / (1.0 / self.log[0].weight() + 1.0 / self.log[1].weight());
        Some((f - c, n))
    }
}

#[derive(Debug)]
struct State {
    buckets: [Bucket; BUCKETS],
    /// Whether each mode has run once: its first call sets up per-mode buffers (a worker's
    /// scratch in coarse mode, the pass scratch in fine mode) and is not a measurement of it.
    warm: [bool; 2],
}

impl State {
    /// δ of the bucket of the same length class and nearest batch size that compared both
    /// modes (ties go to the better-measured bucket). Never one of another length class: δ
    /// corrects the model where its constants are off, and those are not the same ones for a
    /// pass of a few short texts (mostly weight streaming and barriers) as for long texts
    /// (mostly arithmetic). Borrowed across classes, one noisy δ of batches of two short
    /// texts ran a single 512-token text coarse, on one of two cores, at 57 % of fine's speed
    /// (bench-matrix, 2026-12-01); with no bucket of its class, the model's prediction stands.
    fn prior_delta(&self, bucket: usize) -> Option<f64> {
        let (size, length) = (bucket / LENGTH_CLASSES, bucket % LENGTH_CLASSES);
        self.buckets
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != bucket && j % LENGTH_CLASSES == length)
            .filter_map(|(j, b)| {
                let (d, n) = b.delta()?;
                Some(((j / LENGTH_CLASSES).abs_diff(size), -n, d))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
            .map(|(_, _, d)| d)
    }

    /// The bucket's δ: its own evidence shrunk toward the prior; `None` when no bucket has
    /// compared the modes yet (the cost model's prediction stands).
    fn delta(&self, bucket: usize) -> (f64, bool) {
        let prior = self.prior_delta(bucket);
        match (self.buckets[bucket].delta(), prior) {
            (Some((own, n)), Some(p)) => ((n * own + PRIOR_WEIGHT * p) / (n + PRIOR_WEIGHT), true),
            (Some((own, _)), None) => (own, true),
            (None, Some(p)) => (p, true),
            (None, None) => (0.0, false),
        }
    }
}

/// The learning half of `Parallelism::Auto`; one per `Embedder`.
#[derive(Debug)]
pub(crate) struct Tuner {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    started: AtomicU64,
}

fn slot(mode: Parallelism) -> usize {
    usize::from(mode == Parallelism::Fine)
}

fn other(mode: Parallelism) -> Parallelism {
    match mode {
        Parallelism::Fine => Parallelism::Coarse,
        _ => Parallelism::Fine,
    }
}

pub(crate) fn bucket_of(tokens: &[usize]) -> usize {
    let n = tokens.len().max(1);
    let size = (usize::BITS - (n - 1).leading_zeros()) as usize; // ceil(log2 n)
    let mean = tokens.iter().sum::<usize>() / n;
    let length = match mean {
        0..=32 => 0,
        33..=128 => 1,
        129..=512 => 2,
        _ => 3,
    };
    size.min(SIZE_CLASSES - 1) * LENGTH_CLASSES + length
}

impl Tuner {
    pub(crate) fn new() -> Tuner {
        Tuner {
            state: Mutex::new(State { buckets: [Bucket::default(); BUCKETS], warm: [false; 2] }),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// The mode to run a call with, given the cost model's predictions for both modes (same
    /// units). `explore: false` gives the current best guess without side effects (for
    /// `Embedder::plan`).
    pub(crate) fn decide(&self, tokens: &[usize], coarse: f64, fine: f64, explore: bool) -> Decision {
        let bucket = bucket_of(tokens);
        let predicted = [coarse, fine];
        let mut st = self.state.lock();
        let (delta, evidence) = st.delta(bucket);
        let b = &mut st.buckets[bucket];
        // Relative estimates: only their ratio matters.
        let est = [coarse, fine * delta.exp()];
        let best = if est[0] <= est[1] { Parallelism::Coarse } else { Parallelism::Fine };
        let chosen = match b.last {
            Some(last) if last != best && est[slot(best)] > HYSTERESIS * est[slot(last)] => last,
            _ => best,
        };
        let mut mode = chosen;
        if explore {
            b.calls += 1;
            let alt = other(chosen);
            let close = est[slot(alt)] <= EXPLORE_BAND * est[slot(chosen)];
            // A comparison nobody has made yet is made at once, and so is one the estimates
            // cannot call; a mode the neighbours' evidence already puts behind waits for the
            // spaced schedule (a new bucket's first calls are often all there is, and a
            // needless try there costs a whole call).
            let unseen = b.log[slot(alt)].samples == 0
                && (!evidence || est[slot(alt)] <= FIRST_TRY_BAND * est[slot(chosen)]);
            if b.next_explore == 0 {
                b.next_explore = FIRST_GAP;
            }
            if close && (unseen || b.calls >= b.next_explore) {
                mode = alt;
                b.explorations += 1;
                let gap = (2u64 << b.explorations.min(16)).min(MAX_EXPLORE_GAP);
                b.next_explore = b.calls + gap;
            }
            b.last = Some(chosen);
        }
        drop(st);
        let (seq, alone) = if explore {
            let seq = self.started.fetch_add(1, Ordering::SeqCst);
            let alone = self.in_flight.fetch_add(1, Ordering::SeqCst) == 0;
            (seq, alone)
        } else {
            (0, false)
        };
        Decision {
            mode,
            bucket,
            predicted: predicted[slot(mode)],
            seq,
            alone,
        }
    }

    /// Reports the measured time of a call [`Tuner::decide`] planned with `explore: true`.
    /// Every such decision must be reported once, whether the call succeeded or not (`None`
    /// for a failed call).
    pub(crate) fn report(&self, d: Decision, seconds: Option<f64>) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Measured only if nothing else started while it ran and nothing ran when it started.
        let undisturbed = d.alone && self.started.load(Ordering::SeqCst) == d.seq + 1;
        let (Some(seconds), true) = (seconds, undisturbed) else {
            return;
        };
        if !(seconds > 0.0 && d.predicted > 0.0) {
            return;
        }
        let x = (seconds / d.predicted).ln();
        let mut st = self.state.lock();
        if !std::mem::replace(&mut st.warm[slot(d.mode)], true) {
            return;
        }
        st.buckets[d.bucket].log[slot(d.mode)].add(x);
    }

/// A bucket's learned (coarse, fine) ratios.
    #[cfg(test)]
    fn ratios(&self, bucket: usize) -> [Option<f64>; 2] {
        let st = self.state.lock();
        [st.buckets[bucket].log[0].get().map(f64::exp), st.buckets[bucket].log[1].get().map(f64::exp)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mode's first call, which the tuner does not count.
    fn warm_up(t: &Tuner) {
        t.state.lock().warm = [true; 2];
    }

    /// A simulated machine on which each mode's true time is its prediction times a factor.
    fn run(t: &Tuner, tokens: &[usize], pred: (f64, f64), truth: (f64, f64), calls: usize) -> Vec<Parallelism> {
        (0..calls)
            .map(|_| {
                let d = t.decide(tokens, pred.0, pred.1, true);
                let secs = match d.mode {
                    Parallelism::Fine => pred.1 * truth.1,
                    _ => pred.0 * truth.0,
                };
                t.report(d, Some(secs));
                d.mode
            })
            .collect()
    }

    #[test]
    fn learns_that_the_prior_was_wrong_and_settles() {
        // The prior says fine is 10 % cheaper; on this machine coarse is 15 % faster.
        let t = Tuner::new();
        let tokens = [12usize; 8];
        let modes = run(&t, &tokens, (1.1, 1.0), (1.0, 1.35), 400);
        let coarse_late = modes[100..].iter().filter(|&&m| m == Parallelism::Coarse).count();
        // After the first calls, explorations of fine are a handful among 300.
        assert!(coarse_late >= 295, "coarse {coarse_late} of 300");
        assert!(modes[..4].contains(&Parallelism::Fine) && modes[..4].contains(&Parallelism::Coarse));
    }

    #[test]
    fn never_explores_a_mode_predicted_far_slower() {
        // One short text: coarse would leave a worker idle (predicted twice the time).
        let t = Tuner::new();
        let modes = run(&t, &[9], (2.0, 1.0), (1.0, 1.0), 200);
        assert!(modes.iter().all(|&m| m == Parallelism::Fine));
    }

    #[test]
    fn follows_a_machine_that_changes() {
        let t = Tuner::new();
        let tokens = [40usize; 16];
        run(&t, &tokens, (1.0, 1.0), (1.0, 1.3), 300);
        // A neighbour now slows the coarse mode (say memory-bound) by half.
        let modes = run(&t, &tokens, (1.0, 1.0), (1.8, 1.3), 600);
        let fine_late = modes[400..].iter().filter(|&&m| m == Parallelism::Fine).count();
        assert!(fine_late >= 195, "fine {fine_late} of 200 after the change");
    }

    #[test]
    fn close_modes_do_not_flip_flop() {
        let t = Tuner::new();
        let tokens = [20usize; 32];
        let modes = run(&t, &tokens, (1.0, 1.0), (1.0, 1.01), 300);
        let switches = modes[50..].windows(2).filter(|w| w[0] != w[1]).count();
        // Only the spaced explorations change the mode (two switches each).
        assert!(switches <= 8, "{switches} switches");
    }

    #[test]
    fn a_new_bucket_trusts_other_buckets_before_trying_a_mode_they_put_behind() {
        let t = Tuner::new();
        // Batches of 16: fine measured 25 % slower than coarse.
        run(&t, &[12usize; 16], (1.0, 1.0), (1.0, 1.25), 50);
        // Batches of 2 (a new bucket): the first calls stay coarse, exploration comes later.
        let modes = run(&t, &[12usize; 2], (1.0, 0.95), (1.0, 1.25), 20);
        assert!(modes[..7].iter().all(|&m| m == Parallelism::Coarse), "{modes:?}");
        assert!(modes.contains(&Parallelism::Fine), "still explored later: {modes:?}");
    }

    #[test]
    fn a_prior_is_not_borrowed_from_another_length_class() {
        let t = Tuner::new();
        // Batches of two short texts: fine measured three times slower than predicted.
        run(&t, &[12usize; 2], (1.0, 0.85), (1.0, 3.0), 50);
        // One long text: coarse leaves a worker idle, and fine is as fast as predicted. With
        // the short texts' δ, fine would look slower than coarse and far enough never to be
        // tried.
        let modes = run(&t, &[500], (2.0, 1.08), (1.0, 1.0), 30);
        assert!(modes.iter().all(|&m| m == Parallelism::Fine), "{modes:?}");
        // Batches of two long texts, once compared, do lend their δ to one long text.
        let long = Tuner::new();
        run(&long, &[500usize; 2], (1.0, 1.08), (1.0, 3.0), 50);
        let modes = run(&long, &[500], (2.0, 1.08), (1.0, 3.0), 10);
        assert!(modes.iter().all(|&m| m == Parallelism::Coarse), "{modes:?}");
    }

    #[test]
    fn the_first_call_of_a_mode_is_not_measured() {
        // Coarse is truly 20 % faster, but each mode's first call costs 50 times its steady
        // time (buffers set up on the way): counted, it would make coarse look slow for long.
        let t = Tuner::new();
        let tokens = [12usize; 16];
        let mut first = [true; 2];
        let modes: Vec<Parallelism> = (0..12)
            .map(|_| {
                let d = t.decide(&tokens, 1.0, 1.0, true);
                let steady = if d.mode == Parallelism::Fine { 1.2 } else { 1.0 };
                let setup = if std::mem::take(&mut first[slot(d.mode)]) { 50.0 } else { 1.0 };
                t.report(d, Some(steady * setup));
                d.mode
            })
            .collect();
        let learned = t.ratios(bucket_of(&tokens));
        assert!(learned.iter().flatten().all(|&r| r < 2.0), "{learned:?}");
        assert!(modes[6..].iter().filter(|&&m| m == Parallelism::Coarse).count() >= 5, "{modes:?}");
    }

    #[test]
    fn concurrent_calls_are_not_measured() {
        let t = Tuner::new();
        let tokens = [12usize; 4];
        warm_up(&t);
        let a = t.decide(&tokens, 1.0, 1.0, true);
        let b = t.decide(&tokens, 1.0, 1.0, true);
        t.report(a, Some(5.0));
        t.report(b, Some(5.0));
        assert_eq!(t.ratios(bucket_of(&tokens)), [None, None]);
        let c = t.decide(&tokens, 1.0, 1.0, true);
        t.report(c, Some(2.0));
        let learned = t.ratios(bucket_of(&tokens));
        assert!(learned.iter().flatten().any(|r| (r - 2.0).abs() < 1e-12), "{learned:?}");
    }

    #[test]
    fn one_lucky_measurement_does_not_overturn_the_neighbours() {
        let t = Tuner::new();
        // Batches of 16: fine measured 15 % slower than coarse, both modes well sampled.
        run(&t, &[12usize; 16], (1.0, 1.0), (1.0, 1.15), 200);
        // Batches of 32, a new bucket where the truth is the same, but the first time fine runs
        // there the machine happens to be 25 % faster (a quiet moment); coarse calls are exact.
        let tokens = [12usize; 32];
        let mut lucky = true;
        let modes: Vec<Parallelism> = (0..40)
            .map(|_| {
                let d = t.decide(&tokens, 1.0, 1.0, true);
                let secs = match d.mode {
                    Parallelism::Fine if std::mem::take(&mut lucky) => 1.15 * 0.75,
                    Parallelism::Fine => 1.15,
                    _ => 1.0,
                };
                t.report(d, Some(secs));
                d.mode
            })
            .collect();
        let fine = modes.iter().filter(|&&m| m == Parallelism::Fine).count();
        // Only the spaced explorations (calls 8, 12, 20, 36) run fine.
        assert!(fine <= 4, "fine ran {fine} of 40: {modes:?}");
        assert!(!lucky, "fine was explored");
    }

    #[test]
    fn a_preempted_call_moves_a_settled_mean_by_a_bounded_step() {
        let mut m = LogMean::default();
        for _ in 0..20 {
            m.add(0.0);
        }
        m.add(10.0f64.ln()); // one call ten times slower than usual
        let moved = m.get().unwrap();
        assert!(moved > 0.0 && moved <= OUTLIER / SETTLE + 1e-12, "{moved}");
    }

    #[test]
    fn buckets_separate_sizes_and_lengths() {
        assert_ne!(bucket_of(&[10]), bucket_of(&[10, 10]));
        assert_ne!(bucket_of(&[10; 8]), bucket_of(&[300; 8]));
        assert_eq!(bucket_of(&[10; 5]), bucket_of(&[10; 8]));
        assert_eq!(bucket_of(&vec![10; 100_000]), bucket_of(&vec![10; 1_000]));
    }
}
