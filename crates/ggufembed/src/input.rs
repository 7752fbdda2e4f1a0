//! Reading the texts to embed or tokenize: arguments, a file, or standard input; one text per
//! line, or JSON Lines objects with a `text` field so that texts may contain newlines.
//!
//! Everything is read and validated before any work starts, so a bad line 90,000 of a file
//! fails the command before a single vector is written.
//!
//! The rules, the same in both modes:
//! - every line is one text, so text `i` (the `index` of the output, 0-based) is line `i + 1`
//!   of the input. A final newline ends the last line rather than starting an empty one, a
//!   trailing `\r` is dropped (CRLF files read as their text), and a UTF-8 byte order mark at
//!   the start of the input is dropped.
//! - an empty line is the empty text in plain mode, and an error in `--jsonl` mode (it is not a
//!   JSON object; write `{"text": ""}`), so no line is ever skipped silently.
//! - every message about a text names it as `FILE:LINE` (1-based, as editors and compilers
//!   do), `<stdin>:LINE`, or `argument N` (1-based) for texts given as arguments.

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
    /// Input lines (or arguments) are JSON objects with a "text" field (texts may then contain
    /// newlines).
    #[arg(long)]
    pub jsonl: bool,
}

/// The texts, in order, and where each came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts {
    pub texts: Vec<String>,
    origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// Text `i` is argument `i + 1`.
    Arguments,
    /// Text `i` is line `i + 1` of the named file.
    Lines(String),
}

impl Texts {
    /// Where text `index` (0-based) came from: `FILE:LINE` or `argument N`.
    pub fn locate(&self, index: usize) -> String {
        match &self.origin {
            Origin::Arguments => format!("argument {}", index + 1),
            Origin::Lines(name) => format!("{name}:{}", index + 1),
        }
    }
}

impl InputArgs {
    /// The texts, in order.
    pub fn read(&self) -> Result<Texts> {
        match &self.input {
            None if self.texts.is_empty() => {
                bail!("no input: give texts as arguments or --input FILE (\"-\" for standard input)")
            }
            None if self.jsonl => parse_jsonl_arguments(&self.texts),
            None => Ok(Texts { texts: self.texts.clone(), origin: Origin::Arguments }),
            Some(path) => {
                let (bytes, name) = if path == Path::new("-") {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read standard input")?;
                    (buf, "<stdin>".to_owned())
                } else {
                    if path.is_dir() {
                        bail!("cannot read {}: it is a directory", path.display());
                    }
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    (bytes, path.display().to_string())
                };
                parse(&bytes, &name, self.jsonl)
            }
        }
    }
}

/// Parses the bytes of a whole input file named `name` (for messages).
pub fn parse(bytes: &[u8], name: &str, jsonl: bool) -> Result<Texts> {
    let texts = if jsonl { parse_jsonl(bytes, name)? } else { parse_lines(bytes, name)? };
    Ok(Texts { texts, origin: Origin::Lines(name.to_owned()) })
}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits on `\n` (a trailing `\r` is dropped, so CRLF files read as their text); a final
/// newline does not start an extra empty text, but an empty line inside is an empty text.
/// Yields 1-based line numbers.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(move |_| !empty)
}

fn utf8<'a>(line: &'a [u8], at: &str) -> Result<&'a str> {
    std::str::from_utf8(line)
        .map_err(|e| anyhow::anyhow!("{at}: invalid UTF-8 at byte {} of the line", e.valid_up_to()))
}

fn parse_lines(bytes: &[u8], name: &str) -> Result<Vec<String>> {
    lines(bytes).map(|(n, l)| utf8(l, &format!("{name}:{n}")).map(str::to_owned)).collect()
}

fn parse_jsonl(bytes: &[u8], name: &str) -> Result<Vec<String>> {
    lines(bytes)
        .map(|(n, line)| {
            let at = format!("{name}:{n}");
            json_text(utf8(line, &at)?, &at)
        })
        .collect()
}

fn parse_jsonl_arguments(args: &[String]) -> Result<Texts> {
    let texts = args
        .iter()
        .enumerate()
        .map(|(i, a)| json_text(a, &format!("argument {}", i + 1)))
        .collect::<Result<_>>()?;
    Ok(Texts { texts, origin: Origin::Arguments })
}

/// The `text` field of one JSON object; `at` names it in messages.
fn json_text(line: &str, at: &str) -> Result<String> {
    if line.trim().is_empty() {
        bail!("{at}: empty line; every --jsonl line is a JSON object (write {{\"text\": \"\"}} for an empty text)");
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{at}: not a JSON object: {e}"))?;
    match value.get("text") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("{at}: \"text\" is not a string"),
        None if value.is_object() => bail!("{at}: no \"text\" field"),
        None => bail!("{at}: not a JSON object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(bytes: &[u8]) -> Vec<String> {
        parse(bytes, "f", false).unwrap().texts
    }

    fn jsonl(bytes: &[u8]) -> Result<Vec<String>> {
        parse(bytes, "f", true).map(|t| t.texts)
    }

    #[test]
    fn lines_keep_inner_empty_texts_and_drop_the_final_newline_and_cr() {
        assert_eq!(plain(b"a\r\n\nb c\n"), ["a", "", "b c"]);
        assert!(plain(b"").is_empty());
        assert_eq!(plain(b"x"), ["x"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = parse(b"ok\nbad \xff here\n", "in.txt", false).unwrap_err();
        assert_eq!(err.to_string(), "in.txt:2: invalid UTF-8 at byte 4 of the line");
        let err = parse(b"{\"text\": \"ok\"}\n\xff\n", "in.jsonl", true).unwrap_err();
        assert_eq!(err.to_string(), "in.jsonl:2: invalid UTF-8 at byte 0 of the line");
    }

    #[test]
    fn jsonl_reads_text_fields_with_newlines() {
        assert_eq!(jsonl(b"{\"text\": \"a\\nb\"}\n{\"text\": \"\", \"id\": 3}\n").unwrap(), ["a\nb", ""]);
        let err = jsonl(b"{\"text\": 1}\n").unwrap_err();
        assert_eq!(err.to_string(), "f:1: \"text\" is not a string");
        let err = jsonl(b"{}\n").unwrap_err();
        assert_eq!(err.to_string(), "f:1: no \"text\" field");
        assert!(jsonl(b"nope\n").unwrap_err().to_string().starts_with("f:1: not a JSON object"));
        assert_eq!(jsonl(b"[1]\n").unwrap_err().to_string(), "f:1: not a JSON object");
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_in_both_modes() {
        assert_eq!(plain(b"\xEF\xBB\xBFhello\nworld\n"), ["hello", "world"]);
        assert_eq!(jsonl(b"\xEF\xBB\xBF{\"text\": \"hello\"}\r\n").unwrap(), ["hello"]);
        // Only at the start of the input: elsewhere it is part of a text.
        assert_eq!(plain(b"a\n\xEF\xBB\xBFb\n"), ["a", "\u{feff}b"]);
        assert_eq!(plain(b"\xEF\xBB\xBF"), Vec::<String>::new());
    }

    #[test]
    fn an_empty_line_is_an_empty_text_in_plain_mode_and_an_error_in_jsonl_mode() {
        assert_eq!(plain(b"a\n\n  \nb\n"), ["a", "", "  ", "b"]);
        let err = jsonl(b"{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n").unwrap_err().to_string();
        assert!(err.starts_with("f:2: empty line;"), "{err}");
        let err = jsonl(b"{\"text\": \"a\"}\n \r\n").unwrap_err().to_string();
        assert!(err.starts_with("f:2: empty line;"), "{err}");
    }

    #[test]
    fn texts_are_located_by_line_or_argument_number() {
        let t = parse(b"a\nb\nc\n", "in.txt", false).unwrap();
        assert_eq!(t.locate(0), "in.txt:1");
        assert_eq!(t.locate(2), "in.txt:3");
        let args = InputArgs { texts: vec!["x".into(), "y".into()], input: None, jsonl: false };
        assert_eq!(args.read().unwrap().locate(1), "argument 2");
        let args = InputArgs { texts: vec!["{\"text\": \"x\"}".into(), "{}".into()], input: None, jsonl: true };
        assert_eq!(args.read().unwrap_err().to_string(), "argument 2: no \"text\" field");
    }
}
