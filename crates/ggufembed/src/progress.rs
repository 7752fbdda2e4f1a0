//! indicatif progress bars behind model-fetch's `Progress` trait (the libraries stay free of
//! terminal code; bars hide themselves when stderr is not a terminal).

use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use model_fetch::{Progress, Stage};

/// One bar per stage, drawn on stderr.
pub struct Bars {
    current: Mutex<Option<(ProgressBar, Instant)>>,
    /// Print each finished stage with its duration (`--verbose` / timing runs).
    log_stages: bool,
}

impl Bars {
    pub fn new(log_stages: bool) -> Self {
        Bars { current: Mutex::new(None), log_stages }
    }

    fn style(stage: Stage) -> ProgressStyle {
        let template = match stage {
            Stage::Download => "{msg:>12} [{bar:40}] {pos}/{len} wheels ({elapsed})",
            _ => "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        };
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
    }
}

impl Progress for Bars {
    fn begin(&self, stage: Stage, total: u64) {
        let bar = ProgressBar::new(total).with_style(Self::style(stage)).with_message(stage.to_string());
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = current.take() {
            old.finish_and_clear();
        }
        *current = Some((bar, Instant::now()));
    }

    fn set(&self, done: u64) {
        if let Some((bar, _)) = self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_position(done);
        }
    }

    fn end(&self) {
        if let Some((bar, started)) = self.current.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
            if self.log_stages {
                let msg = bar.message();
                eprintln!("{msg:>12} {} in {:.1} s", bar.length().unwrap_or(0), started.elapsed().as_secs_f64());
            }
        }
    }

    fn note(&self, message: &str) {
        match self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some((bar, _)) => bar.println(format!("note: {message}")),
            None => eprintln!("note: {message}"),
        }
    }
}
