//! The llama.cpp peer: a long-lived Python child (`xtask/peer_llama_cpp.py`) driven over a
//! JSON-lines pipe, so its cells run interleaved with ours in the same run.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::measure::Rep;

/// A running peer driver.
pub struct Peer {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// What the driver said about itself (`hello`).
    pub about: Value,
}

/// The driver script inside the repository.
pub fn driver_path() -> PathBuf {
    crate::workspace_root().join("xtask/peer_llama_cpp.py")
}

impl Peer {
    /// Starts `python driver` and checks that `llama_cpp` imports.
    pub fn start(python: &str) -> anyhow::Result<Self> {
        let script = driver_path();
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {python} {}", script.display()))?;
        let stdin = BufWriter::new(child.stdin.take().context("peer stdin")?);
        let stdout = BufReader::new(child.stdout.take().context("peer stdout")?);
        let mut peer = Peer { child, stdin, stdout, about: Value::Null };
        peer.about = peer.request(json!({"cmd": "hello"})).with_context(|| {
            format!("{python} cannot import llama_cpp; see profiles/README.md for installing llama-cpp-python")
        })?;
        Ok(peer)
    }

    fn request(&mut self, msg: Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{msg}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("peer driver exited");
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("peer reply is not JSON: {line:?}"))?;
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            bail!("peer: {}", v.get("error").and_then(Value::as_str).unwrap_or("unknown error"));
        }
        Ok(v)
    }

    /// Loads the model with `threads` threads; returns the driver's reply (load time, pooling).
    pub fn load(&mut self, model: &Path, threads: usize, n_batch: usize) -> anyhow::Result<Value> {
        self.request(json!({
            "cmd": "load",
            "model": model.to_string_lossy(),
            "threads": threads,
            "n_ctx": n_batch,
            "n_batch": n_batch,
        }))
    }

    /// Sends a text pool the cells refer to by name.
    pub fn pool(&mut self, name: &str, texts: &[String]) -> anyhow::Result<()> {
        self.request(json!({"cmd": "pool", "name": name, "texts": texts})).map(|_| ())
    }

    /// One timed call on batch `k` of `pool` (the driver times it).
    pub fn rep(&mut self, pool: &str, batch: usize, k: usize) -> anyhow::Result<Rep> {
        let v = self.request(json!({"cmd": "rep", "pool": pool, "batch": batch, "k": k}))?;
        rep_from_reply(&v)
    }

    /// Unit vectors for `texts`, one call per text.
    pub fn vectors(&mut self, texts: &[&str]) -> anyhow::Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let v = self.request(json!({"cmd": "embed", "texts": texts}))?;
        let vectors = v["vectors"]
            .as_array()
            .ok_or_else(|| anyhow!("no vectors"))?
            .iter()
            .map(|row| row.as_array().map(|r| r.iter().filter_map(Value::as_f64).map(|x| x as f32).collect()))
            .collect::<Option<Vec<Vec<f32>>>>()
            .ok_or_else(|| anyhow!("malformed vectors"))?;
        let tokens = v["tokens"].as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as usize).collect()).unwrap_or_default();
        Ok((vectors, tokens))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// Turns a `rep` reply into a [`Rep`].
pub fn rep_from_reply(v: &Value) -> anyhow::Result<Rep> {
    let num = |key: &str| v.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow!("peer reply lacks {key}"));
    Ok(Rep { latency: num("latency_s")?, cpu: num("cpu_s")?, tokens: num("tokens")? as usize, ran: "llama.cpp".into() })
}

/// Cosine similarity of two vectors (not assumed normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    ab / (aa.sqrt() * bb.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_reps() {
        let v = json!({"ok": true, "latency_s": 0.5, "cpu_s": 1.0, "tokens": 12});
        assert_eq!(rep_from_reply(&v).unwrap(), Rep { latency: 0.5, cpu: 1.0, tokens: 12, ran: "llama.cpp".into() });
        assert!(rep_from_reply(&json!({"ok": true, "latency_s": 0.5})).is_err());
    }

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[1.0, 0.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    }

    #[test]
    fn driver_speaks_the_protocol_without_llama_cpp() {
        // `pool` and the error paths need no llama_cpp import, so this runs on any machine with
        // python3 (every machine of this project has it).
        let mut child = Command::new("python3")
            .arg(driver_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the driver");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, r#"{{"cmd":"pool","name":"s","texts":["a","b"]}}"#).unwrap();
        writeln!(stdin, r#"{{"cmd":"bogus"}}"#).unwrap();
        writeln!(stdin, r#"{{"cmd":"rep","pool":"s","batch":1,"k":0}}"#).unwrap();
        writeln!(stdin, r#"{{"cmd":"quit"}}"#).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["n"], 2);
        assert_eq!(lines[1]["ok"], false);
        assert!(lines[2]["error"].as_str().unwrap().contains("rep before load"));
    }
}
