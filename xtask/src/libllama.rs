//! The libllama peer: llama.cpp through its C API, by the `eg_embd_bench` harness that
//! `../shared/tools/llama-peer/build.sh DIR` builds (one `llama_decode` per batch, mean pooling
//! and the Dense head, as `llama-embedding` does; faster than going through llama-cpp-python).
//!
//! The harness is a process with its own model load, so it cannot take part in a point's
//! call-by-call rounds: each matrix point runs it once, right after our columns, on the same
//! batches our columns ran (one decode per batch, timed by the harness without its load).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::measure::Runs;

/// Where the harness is and what it reported about itself.
pub struct Libllama {
    bin: PathBuf,
    dir: PathBuf,
    pub about: String,
}

impl Libllama {
    pub fn new(bin: &Path) -> anyhow::Result<Libllama> {
        if !bin.is_file() {
            bail!("{} is not a file (build it with `bash ../shared/tools/llama-peer/build.sh DIR`; it is DIR/eg_embd_bench)", bin.display());
        }
        let dir = std::env::temp_dir().join(format!("xtask-libllama-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let about = format!("llama.cpp through libllama (`{}`, one llama_decode per batch)", bin.display());
        Ok(Libllama { bin: bin.to_path_buf(), dir, about })
    }

    /// Runs `batches` (each a batch of texts, all of the same size) through the harness with
    /// `threads` threads, one decode per batch.
    pub fn measure(&self, model: &Path, threads: usize, batches: &[Vec<&str>]) -> anyhow::Result<Runs> {
        let batch = batches.first().map_or(0, Vec::len);
        if batch == 0 || batches.iter().any(|b| b.len() != batch) {
            bail!("libllama peer: batches must be non-empty and of one size");
        }
        let mut lines = String::new();
        for text in batches.iter().flatten() {
            // One text per line: the harness reads lines.
            let _ = writeln!(lines, "{}", text.replace(['\n', '\r'], " "));
        }
        let file = self.dir.join("texts.txt");
        fs::write(&file, lines).with_context(|| format!("writing {}", file.display()))?;
        let out = Command::new(&self.bin)
            .arg(model)
            .arg(&file)
            .arg(threads.to_string())
            .arg(batch.to_string())
            .arg("1")
            .arg("auto")
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("{} failed ({}): {}", self.bin.display(), out.status, String::from_utf8_lossy(&out.stderr));
        }
        parse(&String::from_utf8_lossy(&out.stdout), batch, batches.len())
    }
}

impl Drop for Libllama {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The harness's `total_tokens` and the median seconds of `B batch`, spread evenly over the
/// `calls` decodes (it reports totals, not single calls).
fn parse(stdout: &str, batch: usize, calls: usize) -> anyhow::Result<Runs> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.parse().ok()
    };
    let tokens = stdout
        .lines()
        .find(|l| l.starts_with("tokenize_s"))
        .and_then(|l| field(l, "total_tokens"))
        .context("the harness printed no total_tokens")?;
    let want = format!("B {batch} ");
    let seconds = stdout
        .lines()
        .find(|l| l.starts_with(&want))
        .and_then(|l| field(l, "median_s"))
        .with_context(|| format!("the harness printed no result for batch {batch}:\n{stdout}"))?;
    if seconds.is_nan() || seconds <= 0.0 || calls == 0 {
        bail!("the harness timed {seconds} s for {calls} calls");
    }
    let per_call = seconds / calls as f64;
    Ok(Runs {
        batch,
        latencies: vec![per_call; calls],
        cpu: vec![f64::NAN; calls],
        tokens: vec![(tokens / calls as f64).round() as usize; calls],
        ran: [("llama.cpp".to_string(), calls)].into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "model_load_s 0.2100\ncontext_init_s 0.0300\ntokenize_s 0.0010 n_texts 64 total_tokens 640\n\
                       n_embd_out 768 threads 2 fa auto\nB 32 reps 0.5000 median_s 0.5000 texts_per_s 128.00 tokens_per_s 1280.0\n";

    #[test]
    fn harness_output_becomes_runs() {
        let r = parse(OUT, 32, 2).unwrap();
        assert_eq!(r.latencies, vec![0.25, 0.25]);
        assert_eq!(r.tokens, vec![320, 320]);
        assert!((r.texts_per_s() - 128.0).abs() < 1e-9);
        assert!(parse(OUT, 8, 2).is_err(), "no line for batch 8");
        assert!(parse("B 32 reps 1 median_s 1 texts_per_s 1\n", 32, 1).is_err(), "no token count");
    }
}
