//! Timed, repeated `embed` calls for one cell of the matrix.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::{Engine, Mode};
use crate::machine::cpu_seconds;
use crate::stats::{cv, percentile};
use crate::workload::window;

/// How long a cell is measured: at least `min_reps` timed calls and at least `min_time` of them,
/// but never more than `max_reps`; `warmup` untimed calls first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Untimed calls before timing (page in weights, size scratch buffers).
    pub warmup: usize,
    /// Fewest timed calls.
    pub min_reps: usize,
    /// Most timed calls.
    pub max_reps: usize,
    /// Keep repeating until the timed calls add up to this much wall time.
    pub min_time: Duration,
}

impl Budget {
    /// Whether another timed call is due after `reps` calls that took `spent` in total.
    pub fn wants_more(&self, reps: usize, spent: Duration) -> bool {
        reps < self.max_reps && (reps < self.min_reps || spent < self.min_time)
    }
}

/// The timed calls of one cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runs {
    /// Texts per call.
    pub batch: usize,
    /// Wall time of each call, seconds.
    pub latencies: Vec<f64>,
    /// Process CPU time of each call, seconds.
    pub cpu: Vec<f64>,
    /// Tokens of each call.
    pub tokens: Vec<usize>,
    /// How often each mode actually ran (tells what `auto` picked).
    pub ran: BTreeMap<String, usize>,
}

impl Runs {
    /// Texts per second over all timed calls.
    pub fn texts_per_s(&self) -> f64 {
        (self.batch * self.latencies.len()) as f64 / self.latencies.iter().sum::<f64>()
    }
    /// Tokens per second over all timed calls.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens.iter().sum::<usize>() as f64 / self.latencies.iter().sum::<f64>()
    }
    /// Median call latency, milliseconds.
    pub fn p50_ms(&self) -> f64 {
        percentile(&self.latencies, 50.0).unwrap_or(f64::NAN) * 1e3
    }
    /// 99th-percentile call latency, milliseconds.
    pub fn p99_ms(&self) -> f64 {
        percentile(&self.latencies, 99.0).unwrap_or(f64::NAN) * 1e3
    }
    /// CPU milliseconds per text (all threads).
    pub fn cpu_ms_per_text(&self) -> f64 {
        self.cpu.iter().sum::<f64>() * 1e3 / (self.batch * self.cpu.len()) as f64
    }
    /// CPU time over wall time (2.0 = two cores busy).
    pub fn cpu_util(&self) -> f64 {
        self.cpu.iter().sum::<f64>() / self.latencies.iter().sum::<f64>()
    }
    /// Spread of call latencies (standard deviation over mean).
    pub fn cv(&self) -> f64 {
        cv(&self.latencies).unwrap_or(0.0)
    }
    /// Mean tokens per text.
    pub fn tokens_per_text(&self) -> f64 {
        self.tokens.iter().sum::<usize>() as f64 / (self.batch * self.tokens.len()).max(1) as f64
    }
    /// What ran, e.g. `coarse` or `fine 3/coarse 2`.
    pub fn ran_label(&self) -> String {
        match self.ran.len() {
            0 => String::new(),
            1 => self.ran.keys().next().cloned().unwrap_or_default(),
            _ => self.ran.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("/"),
        }
    }
}

/// One timed call.
#[derive(Debug, Clone, PartialEq)]
pub struct Rep {
    /// Wall time, seconds.
    pub latency: f64,
    /// CPU time of the process that ran it, seconds.
    pub cpu: f64,
    /// Tokens through the model.
    pub tokens: usize,
    /// The mode that ran.
    pub ran: String,
}

/// A column of one matrix point: runs batch `k` (see [`window`]) and reports the call.
pub type Column<'a> = Box<dyn FnMut(usize) -> anyhow::Result<Rep> + 'a>;

/// Measures several columns at one point (same batch size) round-robin: every column does
/// `budget.warmup` untimed calls, then timed rounds run one call per column still short of its
/// budget, all columns on the same batch `k` in a round. Interleaving means a load spike on a
/// shared machine hits every column alike instead of whichever happened to run then.
pub fn measure_round_robin(columns: &mut [Column<'_>], batch: usize, budget: &Budget) -> anyhow::Result<Vec<Runs>> {
    for k in 0..budget.warmup {
        for c in columns.iter_mut() {
            c(k)?;
        }
    }
    let mut runs: Vec<Runs> = columns.iter().map(|_| Runs { batch, ..Runs::default() }).collect();
    let mut spent = vec![Duration::ZERO; columns.len()];
    let mut k = budget.warmup;
    loop {
        let mut any = false;
        for (i, c) in columns.iter_mut().enumerate() {
            if !budget.wants_more(runs[i].latencies.len(), spent[i]) {
                continue;
            }
            any = true;
            let rep = c(k)?;
            spent[i] += Duration::from_secs_f64(rep.latency);
            runs[i].latencies.push(rep.latency);
            runs[i].cpu.push(rep.cpu);
            runs[i].tokens.push(rep.tokens);
            *runs[i].ran.entry(rep.ran).or_default() += 1;
        }
        if !any {
            return Ok(runs);
        }
        k += 1;
    }
}

/// The column for `engine` in `mode` on `pool`.
pub fn engine_column<'a, E: Engine + ?Sized>(engine: &'a E, pool: &'a [String], batch: usize, mode: Mode) -> Column<'a> {
    Box::new(move |k| {
        let texts = window(pool, batch, k);
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let tokens = engine.embed(&texts, mode)?;
        let latency = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        // Outside the timed region: asking which mode ran tokenizes again.
        let ran = engine.resolve(&texts, mode).name().to_string();
        Ok(Rep { latency, cpu, tokens, ran })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records which texts it saw and pretends auto picks coarse from 4 texts on.
    struct Fake {
        seen: RefCell<Vec<Vec<String>>>,
    }

    impl Engine for Fake {
        fn threads(&self) -> usize {
            2
        }
        fn isa(&self) -> String {
            "fake".into()
        }
        fn embed(&self, texts: &[&str], _mode: Mode) -> anyhow::Result<usize> {
            self.seen.borrow_mut().push(texts.iter().map(|s| s.to_string()).collect());
            std::thread::sleep(Duration::from_millis(2));
            Ok(texts.iter().map(|t| t.len()).sum())
        }
        fn resolve(&self, texts: &[&str], mode: Mode) -> Mode {
            match mode {
                Mode::Auto if texts.len() >= 4 => Mode::Coarse,
                Mode::Auto => Mode::Fine,
                m => m,
            }
        }
        fn vectors(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![1.0]).collect())
        }
        fn token_count(&self, text: &str) -> anyhow::Result<usize> {
            Ok(text.len())
        }
    }

    #[test]
    fn budget_stops_on_reps_and_time() {
        let b = Budget { warmup: 0, min_reps: 3, max_reps: 10, min_time: Duration::from_millis(100) };
        assert!(b.wants_more(2, Duration::from_secs(5)), "min_reps first");
        assert!(b.wants_more(3, Duration::from_millis(50)), "then min_time");
        assert!(!b.wants_more(3, Duration::from_millis(100)));
        assert!(!b.wants_more(10, Duration::ZERO), "max_reps caps");
    }

    #[test]
    fn columns_run_round_robin_on_the_same_windows() {
        let pool: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        let fake = Fake { seen: RefCell::new(Vec::new()) };
        let budget = Budget { warmup: 1, min_reps: 2, max_reps: 2, min_time: Duration::ZERO };
        let mut cols = vec![engine_column(&fake, &pool, 2, Mode::Fine), engine_column(&fake, &pool, 2, Mode::Auto)];
        let runs = measure_round_robin(&mut cols, 2, &budget).unwrap();
        drop(cols);
        let seen = fake.seen.borrow();
        assert_eq!(seen.len(), 6, "one warm-up and two timed calls per column");
        // warm-up round, then two timed rounds; both columns see the same window in a round
        assert_eq!(seen[0], vec!["a", "bb"]);
        assert_eq!(seen[1], vec!["a", "bb"]);
        assert_eq!(seen[2], vec!["ccc", "a"]);
        assert_eq!(seen[3], vec!["ccc", "a"]);
        assert_eq!(seen[4], vec!["bb", "ccc"]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].tokens, vec![4, 5]);
        assert_eq!(runs[0].ran_label(), "fine");
        assert_eq!(runs[1].ran_label(), "fine", "the fake's auto picks fine below 4 texts");
        assert!(runs[1].latencies.iter().all(|&l| l >= 0.002));
        assert!((runs[0].tokens_per_text() - 2.25).abs() < 1e-12);
    }

    #[test]
    fn a_column_that_met_its_budget_stops_while_others_go_on() {
        let calls = RefCell::new(vec![0usize; 2]);
        let budget = Budget { warmup: 0, min_reps: 1, max_reps: 5, min_time: Duration::from_millis(10) };
        let mut cols: Vec<Column<'_>> = (0..2)
            .map(|i| {
                let calls = &calls;
                Box::new(move |_k: usize| {
                    calls.borrow_mut()[i] += 1;
                    // column 0 takes 10 ms per call (done after one), column 1 takes 1 ms
                    let latency = if i == 0 { 0.010 } else { 0.001 };
                    Ok(Rep { latency, cpu: latency, tokens: 1, ran: "x".into() })
                }) as Column<'_>
            })
            .collect();
        let runs = measure_round_robin(&mut cols, 1, &budget).unwrap();
        drop(cols);
        assert_eq!(*calls.borrow(), vec![1, 5]);
        assert_eq!(runs[1].latencies.len(), 5, "capped by max_reps");
    }

    #[test]
    fn derived_figures() {
        let mut ran = BTreeMap::new();
        ran.insert("coarse".to_string(), 2);
        ran.insert("fine".to_string(), 1);
        let r = Runs { batch: 4, latencies: vec![0.5, 0.5], cpu: vec![1.0, 0.9], tokens: vec![40, 44], ran };
        assert_eq!(r.texts_per_s(), 8.0);
        assert_eq!(r.tokens_per_s(), 84.0);
        assert_eq!(r.p50_ms(), 500.0);
        assert!((r.cpu_ms_per_text() - 237.5).abs() < 1e-9);
        assert!((r.cpu_util() - 1.9).abs() < 1e-12);
        assert_eq!(r.ran_label(), "coarse 2/fine 1");
    }
}
