//! Reading the texts to embed or tokenize: arguments, a file, or standard input; one text per
//! line, or JSON Lines objects with a `text` field so that texts may contain newlines.
//!
//! Everything is read and validated before any work starts, so a bad line 90,000 of a file
//! fails the command before a single vector is written.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where the texts come from, as the subcommands' flags say.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// Texts to process (each argument is one text).
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Read texts from FILE, one per line ("-" for standard input).
    #[arg(long, short, value_name = "FILE", conflicts_with = "texts")]
    pub input: Option<PathBuf>,
    /// Input lines are JSON objects with a "text" field (texts may then contain newlines).
    #[arg(long)]
    pub jsonl: bool,
}

impl InputArgs {
    /// The texts, in order.
    pub fn read(&self) -> Result<Vec<String>> {
        match &self.input {
            None if self.texts.is_empty() => {
                bail!("no input: give texts as arguments or --input FILE (\"-\" for standard input)")
            }
            None if self.jsonl => parse_jsonl(self.texts.join("\n").as_bytes(), Path::new("<arguments>")),
            None => Ok(self.texts.clone()),
            Some(path) => {
                let (bytes, name) = if path == Path::new("-") {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read standard input")?;
                    (buf, PathBuf::from("<stdin>"))
                } else {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    (bytes, path.clone())
                };
                if self.jsonl {
                    parse_jsonl(&bytes, &name)
                } else {
                    parse_lines(&bytes, &name)
                }
            }
        }
    }
}

/// Splits on `\n` (a trailing `\r` is dropped, so CRLF files read as their text); a final
/// newline does not start an extra empty text, but an empty line inside is an empty text.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(move |_| !empty)
}

fn utf8<'a>(line: &'a [u8], n: usize, name: &Path) -> Result<&'a str> {
    std::str::from_utf8(line).map_err(|e| {
        anyhow::anyhow!(
            "{}:{n}: invalid UTF-8 at byte {} of the line",
            name.display(),
            e.valid_up_to()
        )
    })
}

pub fn parse_lines(bytes: &[u8], name: &Path) -> Result<Vec<String>> {
    lines(bytes).map(|(n, l)| utf8(l, n, name).map(str::to_owned)).collect()
}

pub fn parse_jsonl(bytes: &[u8], name: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for (n, line) in lines(bytes) {
        let line = utf8(line, n, name)?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{n}: not a JSON object: {e}", name.display()))?;
        match value.get("text") {
            Some(serde_json::Value::String(s)) => texts.push(s.clone()),
            Some(_) => bail!("{}:{n}: \"text\" is not a string", name.display()),
            None => bail!("{}:{n}: no \"text\" field", name.display()),
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_inner_empty_texts_and_drop_the_final_newline_and_cr() {
        let got = parse_lines(b"a\r\n\nb c\n", Path::new("f")).unwrap();
        assert_eq!(got, ["a", "", "b c"]);
        assert!(parse_lines(b"", Path::new("f")).unwrap().is_empty());
        assert_eq!(parse_lines(b"x", Path::new("f")).unwrap(), ["x"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = parse_lines(b"ok\nbad \xff here\n", Path::new("in.txt")).unwrap_err();
        assert_eq!(err.to_string(), "in.txt:2: invalid UTF-8 at byte 4 of the line");
    }

    #[test]
    fn jsonl_reads_text_fields_with_newlines() {
        let got = parse_jsonl(b"{\"text\": \"a\\nb\"}\n\n{\"text\": \"\", \"id\": 3}\n", Path::new("f")).unwrap();
        assert_eq!(got, ["a\nb", ""]);
        let err = parse_jsonl(b"{\"text\": 1}\n", Path::new("f")).unwrap_err();
        assert_eq!(err.to_string(), "f:1: \"text\" is not a string");
        let err = parse_jsonl(b"{}\n", Path::new("f")).unwrap_err();
        assert_eq!(err.to_string(), "f:1: no \"text\" field");
        assert!(parse_jsonl(b"nope\n", Path::new("f")).unwrap_err().to_string().starts_with("f:1: not a JSON object"));
    }
}
