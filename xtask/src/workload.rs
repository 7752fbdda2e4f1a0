//! The texts both commands embed, and how batches are cut from them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The inputs and output folder both commands take.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// GGUF model (default: the Q8_0 model from the model cache, fetched on first use).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output folder (default: `profiles/<date>-<host>-<isa>/<command>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON-lines file whose `text` fields are the (short) texts (default:
    /// ../shared/reference/tokens-dev-en.jsonl).
    #[arg(long)]
    pub texts: Option<PathBuf>,
}

impl Inputs {
    /// The sentence file: `--texts` or the reference en-dev sentences.
    pub fn texts_path(&self) -> PathBuf {
        self.texts.clone().unwrap_or_else(default_sentences_path)
    }

    /// The output folder: `--out` or `profiles/<machine folder>/<command>` in the workspace.
    pub fn out_dir(&self, machine: &crate::machine::Machine, command: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| crate::workspace_root().join("profiles").join(machine.folder_name()).join(command))
    }
}

/// The STS-B en-dev sentences shipped beside the repository (`../shared/reference`).
pub fn default_sentences_path() -> PathBuf {
    crate::workspace_root().join("../shared/reference/tokens-dev-en.jsonl")
}

/// Reads the `text` field of every line of a JSON-lines file.
pub fn load_sentences(path: &Path) -> anyhow::Result<Vec<String>> {
    let raw = fs::read_to_string(path).with_context(|| {
        format!("reading {} (the STS-B en-dev sentences; pass --texts to use another file)", path.display())
    })?;
    let mut out = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| format!("{}:{}: no string field `text`", path.display(), i + 1))?;
        out.push(text.to_string());
    }
    if out.is_empty() {
        bail!("{} holds no texts", path.display());
    }
    Ok(out)
}

/// A long text and its token count.
#[derive(Debug, Clone, PartialEq)]
pub struct LongText {
    /// Consecutive sentences joined by one space.
    pub text: String,
    /// Token ids the engine feeds the model for it.
    pub tokens: usize,
}

/// Builds `count` texts of at most `target` tokens (and as close to it as whole sentences allow)
/// by joining consecutive sentences with a space, as the reference's long texts are built. Each
/// text starts where the previous one stopped, wrapping around the sentence list.
pub fn build_long_texts(
    sentences: &[String],
    target: usize,
    count: usize,
    mut token_count: impl FnMut(&str) -> anyhow::Result<usize>,
) -> anyhow::Result<Vec<LongText>> {
    if sentences.is_empty() {
        bail!("no sentences to build long texts from");
    }
    let mut out = Vec::with_capacity(count);
    let mut next = 0usize;
    while out.len() < count {
        let mut text = String::new();
        let mut tokens = 0;
        let start = next;
        loop {
            let s = &sentences[next % sentences.len()];
            let candidate = if text.is_empty() { s.clone() } else { format!("{text} {s}") };
            let n = token_count(&candidate)?;
            if n > target && !text.is_empty() {
                break;
            }
            text = candidate;
            tokens = n;
            next += 1;
            if n >= target || next - start >= sentences.len() {
                break;
            }
        }
        if tokens > target {
            bail!("a single sentence has {tokens} tokens, more than the {target}-token target");
        }
        out.push(LongText { text, tokens });
    }
    Ok(out)
}

/// Batch `k` of size `batch` cut from `pool`: `pool[(k*batch + i) % n]` for `i` in `0..batch`.
/// The peer driver uses the same formula, so both sides embed the same texts.
pub fn window(pool: &[String], batch: usize, k: usize) -> Vec<&str> {
    window_from(pool, 0, batch, k)
}

/// `batch` consecutive texts of the pool from `start + k·batch`, wrapping around.
pub fn window_from(pool: &[String], start: usize, batch: usize, k: usize) -> Vec<&str> {
    (0..batch).map(|i| pool[(start + k * batch + i) % pool.len()].as_str()).collect()
}

/// Parses `1,2,all` into distinct thread counts in ascending order (`all` = `cores`).
pub fn parse_threads(s: &str, cores: usize) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = if part.eq_ignore_ascii_case("all") {
            cores
        } else {
            part.parse::<usize>().map_err(|_| format!("bad thread count {part:?}"))?
        };
        if n == 0 {
            return Err("thread count 0".into());
        }
        v.push(n);
    }
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return Err("no thread count given".into());
    }
    Ok(v)
}

/// Parses `1,2,4` into distinct positive batch sizes in ascending order.
pub fn parse_sizes(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = part.parse::<usize>().map_err(|_| format!("bad batch size {part:?}"))?;
        if n == 0 {
            return Err("batch size 0".into());
        }
        v.push(n);
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> anyhow::Result<usize> {
        // stand-in tokenizer: <bos> + one id per word + <eos>
        Ok(s.split_whitespace().count() + 2)
    }

    #[test]
    fn long_texts_fill_up_to_the_target_with_whole_sentences() {
        let sentences: Vec<String> = ["a b c", "d e", "f g h i", "j", "k l m"].iter().map(|s| s.to_string()).collect();
        let long = build_long_texts(&sentences, 8, 3, words).unwrap();
        // "a b c d e" = 7 tokens; adding "f g h i" would make 11 > 8
        assert_eq!(long[0], LongText { text: "a b c d e".into(), tokens: 7 });
        // next starts at "f g h i": + "j" = 7, + "k l m" = 10 > 8
        assert_eq!(long[1], LongText { text: "f g h i j".into(), tokens: 7 });
        // wraps around to the start
        assert_eq!(long[2].text, "k l m a b c");
        assert!(long.iter().all(|l| l.tokens <= 8));
    }

    #[test]
    fn a_sentence_longer_than_the_target_is_an_error() {
        let sentences = vec!["a b c d e f g h".to_string()];
        assert!(build_long_texts(&sentences, 4, 1, words).is_err());
    }

    #[test]
    fn windows_wrap_and_advance() {
        let pool: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(window(&pool, 2, 0), vec!["0", "1"]);
        assert_eq!(window(&pool, 2, 2), vec!["4", "0"]);
        assert_eq!(window(&pool, 7, 0), vec!["0", "1", "2", "3", "4", "0", "1"]);
    }

    #[test]
    fn thread_and_batch_lists() {
        assert_eq!(parse_threads("1,2,all", 2).unwrap(), vec![1, 2]);
        assert_eq!(parse_threads("all,1", 8).unwrap(), vec![1, 8]);
        assert!(parse_threads("0", 2).is_err());
        assert!(parse_threads("x", 2).is_err());
        assert_eq!(parse_sizes("8,1,2,8").unwrap(), vec![1, 2, 8]);
        assert!(parse_sizes("0").is_err());
    }
}
