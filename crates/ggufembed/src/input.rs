//! Reading the texts to embed or tokenize: arguments, a file, or standard input; one text per
//! line, or JSON Lines objects with a `text` field so that texts may contain newlines.
//!
//! Everything is read and validated before any work starts, so a bad line 90,000 of a file
//! fails the command before a single vector is written. A file is not kept in memory for that:
//! [`InputArgs::read`] reads it once to check it, and every later pass
//! ([`Texts::for_each`]) reads it again, so memory stays the size of one batch whatever the
//! size of the file. Standard input (and a FIFO or a device, which cannot be read twice) is
//! copied as it is checked: in memory while it is small, past [`SPOOL_IN_MEMORY`] bytes into an
//! unnamed temporary file (in `TMPDIR`, gone when the process ends, however it ends), so a
//! corpus piped in costs disk space, not memory.
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

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::{SpooledData, SpooledTempFile};

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

/// Checked texts: how to read them again, in order, and where each came from.
#[derive(Debug)]
pub struct Texts {
    source: Source,
    jsonl: bool,
    len: usize,
    origin: Origin,
}

#[derive(Debug)]
enum Source {
    /// The texts themselves (arguments, JSON already decoded).
    Texts(Vec<String>),
    /// A small input that can be read only once, whole.
    Bytes(Vec<u8>),
    /// A larger input that can be read only once, copied into an unnamed temporary file.
    Spooled(File),
    /// A regular file, read again on every pass; its [`Stamp`] when it was checked, so that a
    /// pass over a file changed since fails instead of embedding unchecked lines.
    File { path: PathBuf, stamp: Stamp },
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

    /// How many texts there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Calls `f(index, text)` for every text in order, stopping at its first error.
    pub fn for_each(&self, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
        let name = match &self.origin {
            Origin::Lines(name) => name.as_str(),
            Origin::Arguments => "",
        };
        match &self.source {
            Source::Texts(texts) => texts.iter().enumerate().try_for_each(|(i, t)| f(i, t)),
            Source::Bytes(bytes) => each_text(&bytes[..], name, self.jsonl, f).map(drop),
            Source::Spooled(file) => {
                // Passes run one after another, each from the start of the copy.
                let mut file = file;
                file.rewind().with_context(|| format!("cannot read {name} again"))?;
                each_text(BufReader::with_capacity(1 << 16, file), name, self.jsonl, f).map(drop)
            }
            Source::File { path, stamp } => {
                let n = file_pass(path, name, stamp, self.jsonl, f)?;
                if n != self.len {
                    return Err(changed(name));
                }
                Ok(())
            }
        }
    }
}

/// A regular file's length and modification time: what tells a later pass that the file is
/// the one that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp> {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Stamp { len: meta.len(), modified: meta.modified().ok() })
    }
}

/// One pass of [`each_text`] over the regular file at `path` (named `name`), refused unless the
/// file has `stamp` before and after it; returns how many texts it read.
fn file_pass(path: &Path, name: &str, stamp: &Stamp, jsonl: bool, f: impl FnMut(usize, &str) -> Result<()>) -> Result<usize> {
    if Stamp::of(path)? != *stamp {
        return Err(changed(name));
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
    let n = each_text(BufReader::with_capacity(1 << 16, file), name, jsonl, f)?;
    if Stamp::of(path)? != *stamp {
        return Err(changed(name));
    }
    Ok(n)
}

fn changed(name: &str) -> anyhow::Error {
    anyhow::anyhow!("{name} changed while it was being read; run the command again")
}

impl InputArgs {
    /// The texts, checked (each line valid UTF-8 and, with `--jsonl`, an object with a string
    /// `text`), ready to be read in order as often as needed.
    pub fn read(&self) -> Result<Texts> {
        match &self.input {
            None if self.texts.is_empty() => {
                Err(UsageError::new("no input: give texts as arguments or --input FILE (\"-\" for standard input)").into())
            }
            None if self.jsonl => parse_jsonl_arguments(&self.texts),
            None => Ok(Texts {
                len: self.texts.len(),
                source: Source::Texts(self.texts.clone()),
                jsonl: false,
                origin: Origin::Arguments,
            }),
            Some(path) if path == Path::new("-") => read_once(std::io::stdin().lock(), "<stdin>", self.jsonl, SPOOL_IN_MEMORY),
            Some(path) => {
                let name = path.display().to_string();
                if path.is_dir() {
                    bail!("cannot read {name}: it is a directory");
                }
                let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
                if !meta.is_file() {
                    // A FIFO or a device gives its bytes once.
                    let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
                    return read_once(file, &name, self.jsonl, SPOOL_IN_MEMORY);
                }
                let stamp = Stamp::of(path)?;
                let len = file_pass(path, &name, &stamp, self.jsonl, |_, _| Ok(()))?;
                Ok(Texts {
                    source: Source::File { path: path.clone(), stamp },
                    jsonl: self.jsonl,
                    len,
                    origin: Origin::Lines(name),
                })
            }
        }
    }
}

/// How much of an input that can be read only once is kept in memory; past this, the copy
/// moves to a temporary file. Big enough that piping a few thousand texts never touches the
/// disk, small beside what the model itself needs.
pub const SPOOL_IN_MEMORY: usize = 8 << 20;

/// Checks an input that can be read only once (named `name` in messages) while copying it:
/// in memory up to `in_memory` bytes, then into an unnamed temporary file, which later passes
/// read.
pub fn read_once(r: impl Read, name: &str, jsonl: bool, in_memory: usize) -> Result<Texts> {
    let mut tee = Tee { r, copy: SpooledTempFile::new(in_memory), failed: None };
    let checked = each_text(BufReader::with_capacity(1 << 16, &mut tee), name, jsonl, |_, _| Ok(()));
    if let Some(e) = tee.failed {
        // Said first: a line cut short by the failed copy is not the input's fault.
        return Err(anyhow::Error::new(e).context(format!(
            "cannot read {name}: it is read only once, so a copy is kept, and past {} MiB the copy goes to a file in {} (set TMPDIR to change that directory)",
            in_memory >> 20,
            std::env::temp_dir().display()
        )));
    }
    let len = checked?;
    let source = match tee.copy.into_inner() {
        SpooledData::InMemory(cursor) => Source::Bytes(cursor.into_inner()),
        SpooledData::OnDisk(file) => Source::Spooled(file),
    };
    Ok(Texts { source, jsonl, len, origin: Origin::Lines(name.to_owned()) })
}

/// Reads `r` and writes what it read into `copy`; a failed write ends the reading, and is kept
/// to be reported as what it is.
struct Tee<R> {
    r: R,
    copy: SpooledTempFile,
    failed: Option<std::io::Error>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        if let Err(e) = self.copy.write_all(&buf[..n]) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(std::io::Error::new(kind, "the copy of the input failed"));
        }
        Ok(n)
    }
}

/// A mistake in how the command was called that clap cannot see (no input at all): status 2,
/// as for clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The UTF-8 byte order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Calls `f(index, text)` for each line's text (the line itself, or its JSON `text`); returns
/// how many there were. Lines end at `\n` (a trailing `\r` is dropped, so CRLF files read as
/// their text); a final newline does not start an extra empty text, but an empty line inside
/// is an empty text.
fn each_text(r: impl BufRead, name: &str, jsonl: bool, f: impl FnMut(usize, &str) -> Result<()>) -> Result<usize> {
    each_text_up_to(r, name, jsonl, MAX_LINE, f)
}

/// The longest line read, without its line ending. A text keeps at most the model's 2048
/// tokens, a few KiB of prose, so a longer line is a document to split into passages or not a
/// text file at all (one without newlines); refusing it bounds the memory a line can take
/// (tokenizing a line needs a few times its size).
pub const MAX_LINE: usize = 16 << 20;

/// [`each_text`] with the longest line a parameter.
fn each_text_up_to(
    mut r: impl BufRead,
    name: &str,
    jsonl: bool,
    max_line: usize,
    mut f: impl FnMut(usize, &str) -> Result<()>,
) -> Result<usize> {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        match read_line(&mut r, &mut buf, max_line).with_context(|| format!("cannot read {name}"))? {
            Line::End => return Ok(n),
            Line::Read => {}
            Line::TooLong => bail!(
                "{name}:{}: the line is longer than {} MiB; a text is cut to the model's context (a few KiB of text), so split long documents into passages (or is this not a text file with one text per line?)",
                n + 1,
                max_line >> 20
            ),
        }
        let mut line = &buf[..];
        if n == 0 {
            line = line.strip_prefix(BOM).unwrap_or(line);
            if line.is_empty() {
                // The input was a byte order mark and nothing else: no text at all.
                return Ok(0);
            }
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let at = || format!("{name}:{}", n + 1);
        let text = std::str::from_utf8(line)
            .map_err(|e| anyhow::anyhow!("{}: invalid UTF-8 at byte {} of the line", at(), e.valid_up_to()))?;
        let text = if jsonl { Cow::Owned(json_text(text, &at())?) } else { Cow::Borrowed(text) };
        f(n, &text)?;
        n += 1;
    }
}

/// What [`read_line`] found.
enum Line {
    /// A line, in the buffer with its `\n` if it had one.
    Read,
    /// The end of the input: no more lines.
    End,
    /// A line longer than the limit; reading stopped inside it.
    TooLong,
}

/// Reads one line into `buf` (as `read_until(b'\n')` does) unless it holds more than
/// `max_line` bytes before its `\n` (a `\r` before it counts), so a line of any length costs
/// at most `max_line + 1` bytes of memory.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max_line: usize) -> std::io::Result<Line> {
    // A line at the limit and its `\n` fit; a longer line shows as `max_line + 1` bytes of text.
    let n = r.take(max_line as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    let content = n - usize::from(buf.last() == Some(&b'\n'));
    Ok(if content > max_line { Line::TooLong } else { Line::Read })
}

fn parse_jsonl_arguments(args: &[String]) -> Result<Texts> {
    let texts = args
        .iter()
        .enumerate()
        .map(|(i, a)| json_text(a, &format!("argument {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Texts { len: texts.len(), source: Source::Texts(texts), jsonl: false, origin: Origin::Arguments })
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

    /// Checks the bytes of a whole input, as if they were piped in.
    fn parse(bytes: Vec<u8>, name: &str, jsonl: bool) -> Result<Texts> {
        read_once(&bytes[..], name, jsonl, SPOOL_IN_MEMORY)
    }

    fn all(t: &Texts) -> Vec<String> {
        let mut v = Vec::new();
        t.for_each(|i, s| {
            assert_eq!(i, v.len());
            v.push(s.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(v.len(), t.len());
        v
    }

    fn plain(bytes: &[u8]) -> Vec<String> {
        all(&parse(bytes.to_vec(), "f", false).unwrap())
    }

    fn jsonl(bytes: &[u8]) -> Result<Vec<String>> {
        parse(bytes.to_vec(), "f", true).map(|t| all(&t))
    }

    #[test]
    fn lines_keep_inner_empty_texts_and_drop_the_final_newline_and_cr() {
        assert_eq!(plain(b"a\r\n\nb c\n"), ["a", "", "b c"]);
        assert!(plain(b"").is_empty());
        assert_eq!(plain(b"x"), ["x"]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = parse(b"ok\nbad \xff here\n".to_vec(), "in.txt", false).unwrap_err();
        assert_eq!(err.to_string(), "in.txt:2: invalid UTF-8 at byte 4 of the line");
        let err = parse(b"{\"text\": \"ok\"}\n\xff\n".to_vec(), "in.jsonl", true).unwrap_err();
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
        let t = parse(b"a\nb\nc\n".to_vec(), "in.txt", false).unwrap();
        assert_eq!(t.locate(0), "in.txt:1");
        assert_eq!(t.locate(2), "in.txt:3");
        let args = InputArgs { texts: vec!["x".into(), "y".into()], input: None, jsonl: false };
        assert_eq!(args.read().unwrap().locate(1), "argument 2");
        let args = InputArgs { texts: vec!["{\"text\": \"x\"}".into(), "{}".into()], input: None, jsonl: true };
        assert_eq!(args.read().unwrap_err().to_string(), "argument 2: no \"text\" field");
    }

    fn file_args(path: &Path, jsonl: bool) -> InputArgs {
        InputArgs { texts: vec![], input: Some(path.to_owned()), jsonl }
    }

    #[test]
    fn a_file_reads_as_its_bytes_would_on_every_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let cases: [&[u8]; 6] = [b"\xEF\xBB\xBFa\r\n\nb c\n", b"", b"\xEF\xBB\xBF", b"\xEF\xBB\xBF\n", b"x", b"a\n\n"];
        for bytes in cases {
            std::fs::write(&path, bytes).unwrap();
            let t = file_args(&path, false).read().unwrap();
            assert_eq!(all(&t), plain(bytes), "{bytes:?}");
            assert_eq!(all(&t), plain(bytes), "second pass, {bytes:?}");
        }
        std::fs::write(&path, b"{\"text\": \"a\\nb\"}\r\n{\"text\": \"\"}").unwrap();
        assert_eq!(all(&file_args(&path, true).read().unwrap()), ["a\nb", ""]);
        std::fs::write(&path, b"ok\n\xff\n").unwrap();
        let err = file_args(&path, false).read().unwrap_err();
        assert_eq!(err.to_string(), format!("{}:2: invalid UTF-8 at byte 0 of the line", path.display()));
    }

    #[test]
    fn an_input_read_once_is_copied_to_a_file_past_the_memory_limit_and_reads_back_the_same() {
        let bytes: &[u8] = b"\xEF\xBB\xBFa\r\n\nb c\nd";
        let small = read_once(bytes, "f", false, 1 << 10).unwrap();
        assert!(matches!(small.source, Source::Bytes(_)));
        let spooled = read_once(bytes, "f", false, 4).unwrap();
        assert!(matches!(spooled.source, Source::Spooled(_)));
        assert_eq!(all(&spooled), ["a", "", "b c", "d"]);
        assert_eq!(all(&spooled), all(&small), "second pass");
        assert_eq!(spooled.locate(3), "f:4");
        let err = read_once(&b"{\"text\": \"a\"}\n{\"text\": 2}\n"[..], "f", true, 4).unwrap_err();
        assert_eq!(err.to_string(), "f:2: \"text\" is not a string");
    }

    #[test]
    fn a_line_past_the_limit_is_refused_by_number_and_one_at_the_limit_is_read() {
        let read = |bytes: &[u8], jsonl: bool| {
            let mut v = Vec::new();
            // A 3-byte reader buffer, so lines also straddle its refills.
            each_text_up_to(BufReader::with_capacity(3, bytes), "f", jsonl, 8, |_, t| {
                v.push(t.to_owned());
                Ok(())
            })
                .map(|_| v)
        };
        assert_eq!(read(b"12345678\nabc\r\n1234567\r\n12345678", false).unwrap(), ["12345678", "abc", "1234567", "12345678"]);
        for bad in [&b"ok\n123456789\n"[..], b"ok\n123456789", b"ok\n12345678\r\n", b"ok\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"] {
            let err = read(bad, false).unwrap_err().to_string();
            assert!(err.starts_with("f:2: the line is longer than 0 MiB;"), "{bad:?}: {err}");
        }
        let err = read(b"{\"text\": \"a long text\"}\n", true).unwrap_err().to_string();
        assert!(err.starts_with("f:1: the line is longer than"), "{err}");
    }

    #[test]
    fn a_file_changed_after_it_was_checked_is_refused_on_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"a\nb\n").unwrap();
        let t = file_args(&path, false).read().unwrap();
        assert_eq!(t.len(), 2);
        std::fs::write(&path, b"a\nb\n\xff\n").unwrap();
        let err = t.for_each(|_, _| Ok(())).unwrap_err().to_string();
        assert_eq!(err, format!("{} changed while it was being read; run the command again", path.display()));
    }
}
