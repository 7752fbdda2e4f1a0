//! What a careless or hostile user does to the CLI (issue 13): odd output paths, odd input, odd
//! options, killed runs, closed pipes. The built binary on the real Q8_0 model.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

fn model() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| model_fetch::testing::gguf(model_fetch::OutType::Q8_0))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ggufembed"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn m() -> &'static str {
    model().to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one line of an error, checked to be one line.
fn one_error_line(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn jsonl_rows(bytes: &[u8]) -> Vec<Json> {
    std::str::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[cfg(unix)]
fn file_type(p: &Path) -> std::fs::FileType {
    p.symlink_metadata().unwrap().file_type()
}

/// A character device made in `dir` (`mknod`, so root only), or `None` where it cannot be made
/// or opened (not root, a `nodev` mount).
#[cfg(unix)]
fn char_device(dir: &Path, name: &str, major: u32, minor: u32) -> Option<PathBuf> {
    let p = dir.join(name);
    let ok = Command::new("mknod").arg(&p).args(["c", &major.to_string(), &minor.to_string()]).status().ok()?.success();
    (ok && std::fs::OpenOptions::new().write(true).open(&p).is_ok()).then_some(p)
}

// --- 1, 13: -o never replaces a device, FIFO or symlink; full disks are named ---

#[cfg(unix)]
#[test]
fn output_into_a_fifo_a_device_or_a_symlink_keeps_the_node() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();

    // A FIFO: written in place, still a FIFO afterwards.
    let fifo = dir.path().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = run(&["tokenize", "--model", m(), "-o", fifo.to_str().unwrap(), "Hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Checked before joining: a replaced FIFO is never opened, and the reader would wait forever.
    assert!(file_type(&fifo).is_fifo(), "the FIFO was replaced");
    assert_eq!(jsonl_rows(&reader.join().unwrap())[0]["ids"], serde_json::json!([2, 9259, 1902, 1]));

    // A symlink: its target is written, the link stays.
    let target = dir.path().join("real.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
    let o = run(&["embed", "--model", m(), "-o", link.to_str().unwrap(), "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(file_type(&link).is_symlink(), "the link was replaced");
    assert_eq!(jsonl_rows(&std::fs::read(&target).unwrap()).len(), 1);

    // Character devices (this test's own nodes, never the system's): /dev/null's twin is
    // written and survives; /dev/full's twin fails with its path named.
    match (char_device(dir.path(), "null", 1, 3), char_device(dir.path(), "full", 1, 7)) {
        (Some(null), Some(full)) => {
            let o = run(&["embed", "--model", m(), "-o", null.to_str().unwrap(), "hello"]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(file_type(&null).is_char_device(), "the device node was replaced by a file");
            let o = run(&["embed", "--model", m(), "-o", full.to_str().unwrap(), "hello"]);
            let err = one_error_line(&o);
            assert!(err.contains(full.to_str().unwrap()) && err.contains("No space left"), "{err}");
            assert!(file_type(&full).is_char_device());
            // Every command's failed write to standard output says where it was writing.
            for args in [&["inspect", m()][..], &["inspect", "--json", m()], &["tokenize", "--model", m(), "x"]] {
                let stdout = std::fs::OpenOptions::new().write(true).open(&full).unwrap();
                let o = bin().args(args).stdout(stdout).output().unwrap();
                let err = one_error_line(&o);
                assert!(err.contains("cannot write to standard output") && err.contains("No space left"), "{args:?}: {err}");
            }
        }
        _ => eprintln!("note: cannot make device nodes here (not root?); the device cases were not run"),
    }
    let leftovers: Vec<String> = names_in(dir.path()).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `-o /dev/stdout` with standard output redirected to a file (`>> log`, or a loop's `> all`):
/// the kernel shows `/dev/stdout` as that file, which must be appended to, never replaced.
#[cfg(target_os = "linux")]
#[test]
fn output_to_an_open_descriptor_appends_to_the_file_behind_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    std::fs::write(&log, "{\"previous\": true}\n").unwrap();
    let ino = log.metadata().unwrap().ino();
    for (i, path) in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"].into_iter().enumerate() {
        let redirected = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let o = bin()
            .args(["tokenize", "--model", m(), "-o", path, &format!("run {i}")])
            .stdout(redirected)
            .output()
            .unwrap();
        assert!(o.status.success(), "{path}: {}", stderr(&o));
        assert_eq!(log.metadata().unwrap().ino(), ino, "{path}: the file was replaced");
        let rows = jsonl_rows(&std::fs::read(&log).unwrap());
        assert_eq!(rows.len(), i + 2, "{path}: {rows:?}");
        assert_eq!(rows[0]["previous"], true, "{path}: what the file held is kept");
    }
    // A descriptor that is not open is an error that says so.
    let o = run(&["tokenize", "--model", m(), "-o", "/dev/fd/987", "x"]);
    assert!(one_error_line(&o).contains("no such open file descriptor"), "{}", stderr(&o));
    let leftovers: Vec<String> = names_in(dir.path()).into_iter().filter(|n| n.ends_with(".partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn output_files_get_the_umask_and_replaced_files_keep_their_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // What File::create gives under this process's umask (the child inherits it).
    let probe = dir.path().join("probe");
    std::fs::File::create(&probe).unwrap();
    let want = probe.metadata().unwrap().permissions().mode() & 0o777;
    let new = dir.path().join("new.jsonl");
    let o = run(&["tokenize", "--model", m(), "-o", new.to_str().unwrap(), "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(new.metadata().unwrap().permissions().mode() & 0o777, want, "a new file follows the umask");
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = run(&["tokenize", "--model", m(), "-o", new.to_str().unwrap(), "hello again"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(new.metadata().unwrap().permissions().mode() & 0o777, 0o640, "a replaced file keeps its mode");
}

// --- 7, 11: paths that cannot work fail before any work ---

#[test]
fn an_output_directory_fails_before_the_model_is_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    // The model does not exist: an error about the output proves it was checked first.
    let o = run(&["embed", "--model", "/nonexistent/m.gguf", "-o", dir.path().to_str().unwrap(), "hello"]);
    let err = one_error_line(&o);
    assert!(err.contains("is a directory"), "{err}");
    assert!(names_in(dir.path()).is_empty());
    let o = run(&["tokenize", "--model", "/nonexistent/m.gguf", "-o", dir.path().to_str().unwrap(), "hello"]);
    assert!(one_error_line(&o).contains("is a directory"));
    // convert: the output is refused before the (absent) source folder is read.
    let o = run(&["convert", "/nonexistent/src", dir.path().to_str().unwrap()]);
    assert!(one_error_line(&o).contains("is a directory"));
}

#[test]
fn the_output_never_replaces_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.gguf");
    std::fs::hard_link(model(), &copy).or_else(|_| std::fs::copy(model(), &copy).map(drop)).unwrap();
    let size = copy.metadata().unwrap().len();
    for sub in ["embed", "tokenize"] {
        let err = one_error_line(&run(&[sub, "--model", copy.to_str().unwrap(), "-o", copy.to_str().unwrap(), "x"]));
        assert!(err.contains("refusing to write the output over the model"), "{err}");
    }
    assert_eq!(copy.metadata().unwrap().len(), size);
    assert_eq!(names_in(dir.path()), ["model.gguf"]);
}

#[test]
fn a_model_directory_is_called_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["embed", "-m", dir.path().to_str().unwrap(), "x"], vec!["inspect", dir.path().to_str().unwrap()]] {
        let err = one_error_line(&run(&args));
        assert!(err.contains("is a directory"), "{err}");
        assert!(!err.contains("No such device"), "{err}");
    }
}

// --- 2, 8: a text the model cannot take: its file:line, once, nothing written ---

#[test]
fn a_text_the_model_cannot_embed_is_named_by_line_once_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let mut lines: Vec<String> = (1..=80).map(|i| format!("sentence number {i}")).collect();
    lines[69] = "look: <image_soft_token> here".into(); // line 70
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    for to_file in [false, true] {
        let mut args = vec!["embed", "--model", m(), "--batch-size", "16", "--input", input.to_str().unwrap()];
        if to_file {
            args.extend(["-o", out.to_str().unwrap()]);
        }
        let o = run(&args);
        let err = one_error_line(&o);
        assert!(err.contains("in.txt:70:"), "{err}");
        assert!(err.contains("<image_soft_token>") && err.contains("262144"), "{err}");
        assert_eq!(err.matches("262144 is outside").count(), 1, "said once: {err}");
        assert!(o.stdout.is_empty(), "nothing on stdout");
    }
    assert_eq!(names_in(dir.path()), ["in.txt"], "no output file, no temporary file");

    // As arguments, and under --no-truncate: the same convention.
    let err = one_error_line(&run(&["embed", "--model", m(), "fine", "<image_soft_token>"]));
    assert!(err.starts_with("error: argument 2: "), "{err}");
    let long = "word ".repeat(3000);
    std::fs::write(&input, format!("short\n{long}\n")).unwrap();
    let err = one_error_line(&run(&["embed", "--model", m(), "--no-truncate", "--input", input.to_str().unwrap()]));
    assert!(err.contains("in.txt:2:") && err.contains("more than the model's context of 2048"), "{err}");
    assert!(err.contains("--no-truncate"), "{err}");
}

// --- an input file larger than the memory the command may use ---

/// Address space (`ulimit -v`, KiB) the memory-bound tests give the CLI: under their inputs.
#[cfg(unix)]
const CAP_KIB: usize = 48 * 1024;

/// Runs `sh -c "ulimit -v CAP_KIB && SCRIPT"` with `$0` the binary and `$1`... `args`, and
/// `TMPDIR` set to `tmp`.
#[cfg(unix)]
fn capped(script: &str, args: &[&str], tmp: &Path) -> Output {
    Command::new("sh")
        .args(["-c", &format!("ulimit -v {CAP_KIB} && {script}")])
        .arg(env!("CARGO_BIN_EXE_ggufembed"))
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .unwrap()
}

/// Writes 64 MiB of `line` to `DIR/big.txt` and an invalid UTF-8 line after them; returns the
/// path and the bad line's number.
#[cfg(unix)]
fn big_input_with_a_bad_last_line(dir: &Path, line: &[u8]) -> (PathBuf, usize) {
    let n = (64 << 20) / line.len();
    let input = dir.join("big.txt");
    let mut body = line.repeat(n);
    body.extend_from_slice(b"\xff\n");
    std::fs::write(&input, &body).unwrap();
    (input, n + 1)
}

/// A file is checked and then read again batch by batch, never held whole: with the address
/// space capped (`ulimit -v`) under the file's size, a 64 MiB input whose last line is bad is
/// still read to that line and named, in both modes (before, reading it ran out of memory).
#[cfg(unix)]
#[test]
fn an_input_file_is_read_in_passes_not_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    for jsonl in [false, true] {
        let line: &[u8] = if jsonl { b"{\"text\": \"a line of text to embed, one of very many\"}\n" } else { b"a line of text to embed, one of very many\n" };
        let (input, bad) = big_input_with_a_bad_last_line(dir.path(), line);
        let path = input.to_str().unwrap();
        let o = capped("exec \"$0\" embed --model \"$1\" --input \"$2\" $3", &[m(), path, if jsonl { "--jsonl" } else { "" }], dir.path());
        let err = one_error_line(&o);
        assert_eq!(err.trim_end(), format!("error: {path}:{bad}: invalid UTF-8 at byte 0 of the line"), "jsonl: {jsonl}");
    }
}

/// Standard input can be read only once, so it is copied as it is checked; past a few MiB the
/// copy goes to an unnamed file in TMPDIR rather than memory. Under the same address-space cap,
/// 64 MiB piped in with a bad last line is read to that line and named (before, the command ran
/// out of memory), and the temporary directory is left as it was.
#[cfg(unix)]
#[test]
fn standard_input_is_copied_to_a_temporary_file_not_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (input, bad) = big_input_with_a_bad_last_line(dir.path(), b"a line of text to embed, one of very many\n");
    let o = capped("cat \"$2\" | \"$0\" embed --model \"$1\" --input -", &[m(), input.to_str().unwrap()], &tmp);
    let err = one_error_line(&o);
    assert_eq!(err.trim_end(), format!("error: <stdin>:{bad}: invalid UTF-8 at byte 0 of the line"));
    assert!(names_in(&tmp).is_empty(), "the copy is an unnamed file: {:?}", names_in(&tmp));
}

/// Piped input larger than what is kept in memory gives what the same file gives; when its copy
/// cannot be made, the message says why and which directory to change.
#[test]
fn large_standard_input_reads_as_the_file_would_and_a_failed_copy_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    // Over the 8 MiB kept in memory, in ~200,000 short lines of varied text.
    let texts: String = (0..200_000).map(|i| format!("line {i}: {}\r\n", "héllo wörld ".repeat(i % 7))).collect();
    assert!(texts.len() > 9 << 20);
    std::fs::write(&input, &texts).unwrap();
    let piped = |tmpdir: &Path| {
        bin()
            .args(["tokenize", "--model", m(), "--input", "-"])
            .env("TMPDIR", tmpdir)
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap()
    };
    let from_file = run(&["tokenize", "--model", m(), "--input", input.to_str().unwrap()]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let from_stdin = piped(dir.path());
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    assert_eq!(from_stdin.stdout.len(), from_file.stdout.len());
    assert!(from_stdin.stdout == from_file.stdout, "standard input and the file give the same ids");
    let missing = dir.path().join("no-such-dir");
    let o = piped(&missing);
    let err = one_error_line(&o);
    assert!(
        err.starts_with("error: cannot read <stdin>: it is read only once, so a copy is kept, and past 8 MiB the copy goes to a file in "),
        "{err}"
    );
    assert!(err.contains(&format!("{} (set TMPDIR", missing.display())), "{err}");
    assert!(o.stdout.is_empty(), "nothing written");
}

/// A line is read up to a limit (16 MiB), not whole: a 40 MiB line (a file without newlines,
/// say) under a 48 MiB address-space cap is refused by number, from a file and from standard
/// input, in both modes; before, the command aborted trying to allocate it.
#[cfg(unix)]
#[test]
fn a_line_longer_than_the_limit_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    for jsonl in [false, true] {
        let input = dir.path().join("long-line.txt");
        let mut body = if jsonl { b"{\"text\": \"short\"}\n{\"text\": \"".to_vec() } else { b"short\n".to_vec() };
        body.extend(b"word ".repeat(8 << 20));
        std::fs::write(&input, &body).unwrap();
        drop(body);
        let path = input.to_str().unwrap();
        let mode = if jsonl { "--jsonl" } else { "" };
        for (sub, from) in [("tokenize", "file"), ("embed", "file"), ("embed", "stdin")] {
            let source = if from == "file" { "--input \"$2\" < /dev/null" } else { "--input - < \"$2\"" };
            let o = capped(&format!("exec \"$0\" $3 --model \"$1\" $4 {source}"), &[m(), path, sub, mode], dir.path());
            let err = one_error_line(&o);
            let name = if from == "file" { path } else { "<stdin>" };
            assert!(
                err.starts_with(&format!("error: {name}:2: the line is longer than 16 MiB; ")),
                "{sub} from {from}, jsonl {jsonl}: {err}"
            );
            assert!(o.stdout.is_empty(), "nothing written");
        }
    }
}

// --- 3, 4: byte order marks and blank lines ---

#[test]
fn a_byte_order_mark_is_not_embedded_and_blank_lines_follow_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.txt");
    let bom = dir.path().join("bom.txt");
    std::fs::write(&plain, "hello world\n\nsecond\n").unwrap();
    std::fs::write(&bom, "\u{feff}hello world\n\nsecond\n").unwrap();
    let a = run(&["embed", "--model", m(), "--input", plain.to_str().unwrap()]);
    let b = run(&["embed", "--model", m(), "--input", bom.to_str().unwrap()]);
    assert!(a.status.success() && b.status.success(), "{}{}", stderr(&a), stderr(&b));
    assert_eq!(a.stdout, b.stdout, "a BOM changes nothing");
    // One output per line, the empty line included, index = line - 1.
    let rows = jsonl_rows(&a.stdout);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["index"], 1);
    assert_eq!(rows[1]["tokens"], 2, "the empty line is the empty text: <bos><eos>");

    let jsonl = dir.path().join("in.jsonl");
    std::fs::write(&jsonl, "\u{feff}{\"text\": \"hello world\"}\r\n{\"text\": \"\"}\n{\"text\": \"second\"}\n").unwrap();
    let c = run(&["embed", "--model", m(), "--jsonl", "--input", jsonl.to_str().unwrap()]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert_eq!(c.stdout, a.stdout, "the same texts in JSON Lines give the same output");

    std::fs::write(&jsonl, "{\"text\": \"hello world\"}\n\n{\"text\": \"second\"}\n").unwrap();
    let err = one_error_line(&run(&["embed", "--model", m(), "--jsonl", "--input", jsonl.to_str().unwrap()]));
    assert!(err.contains("in.jsonl:2: empty line"), "{err}");
}

// --- 6: each cause once ---

#[test]
fn a_bad_model_file_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("text.gguf");
    std::fs::write(&bad, "hello world").unwrap();
    for sub in ["embed", "tokenize"] {
        let err = one_error_line(&run(&[sub, "--model", bad.to_str().unwrap(), "x"]));
        assert_eq!(err.matches("not a gguf file").count(), 1, "{err}");
        assert_eq!(err.matches("text.gguf").count(), 1, "{err}");
    }
    // A GGUF that parses but is not this model: the loader's reason, once.
    let mut w = gguf_format::GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    let other = dir.path().join("llama.gguf");
    std::fs::write(&other, w.to_bytes(&[]).unwrap()).unwrap();
    let err = one_error_line(&run(&["embed", "--model", other.to_str().unwrap(), "x"]));
    assert!(err.contains("llama.gguf"), "{err}");
}

// --- 9, 10: options are checked before the model loads, and blamed ---

#[test]
fn bad_dims_and_threads_blame_the_option_before_anything_loads() {
    for (args, needle) in [
        (&["--dims", "100"][..], "--dims"),
        (&["--dims", "0"][..], "--dims"),
        (&["--threads", "0"][..], "--threads"),
        (&["--threads", "99999999999"][..], "--threads"),
        (&["--threads", "1000"][..], "at most"),
        (&["--threads=-3"][..], "--threads"),
    ] {
        // The model path does not exist: the option must be reported, not the model.
        let mut all = vec!["embed", "--model", "/nonexistent/m.gguf"];
        all.extend(args);
        all.push("hello");
        let started = Instant::now();
        let o = run(&all);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(needle) && !err.contains("m.gguf"), "{args:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} took {:?}", started.elapsed());
    }
    // A valid count is accepted.
    let o = run(&["embed", "--model", m(), "--threads", "1", "--dims", "128", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(jsonl_rows(&o.stdout)[0]["embedding"].as_array().unwrap().len(), 128);
}

/// The largest `--batch-size` clap accepts is one batch of everything, not an allocation of
/// that many slots (before: `memory allocation of 171798691800 bytes failed`, an abort).
#[test]
fn the_largest_batch_size_is_one_batch_of_every_text() {
    let o = run(&["embed", "--model", m(), "--batch-size", "4294967295", "one", "two"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = jsonl_rows(&o.stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["index"], 1);
    let o = run(&["embed", "--model", m(), "--batch-size", "4294967296", "one"]);
    assert!(!o.status.success() && stderr(&o).contains("--batch-size"), "{}", stderr(&o));
}

// --- 12: a closed pipe ends the run quietly ---

#[test]
fn a_closed_pipe_ends_the_run_quietly_and_successfully() {
    // Each case writes far more than a pipe holds (64 KB), so its writes fail once the reader
    // has gone: ~9 KB per embedding line; 20,000 token lines; and `inspect --json` with every
    // array in full (the vocabulary's 262,144 pieces, megabytes), which writes through
    // serde_json, whose error wraps the io::Error its own way.
    let lines = |n: usize| -> String { (0..n).map(|i| format!("text {i}\n")).collect() };
    let cases: [(&[&str], Option<String>); 3] = [
        (&["embed", "--model", m(), "--input", "-", "--batch-size", "4"], Some(lines(64))),
        (&["tokenize", "--model", m(), "--input", "-"], Some(lines(20_000))),
        (&["inspect", "--json", "--full-arrays", m()], None),
    ];
    for (args, input) in cases {
        let sub = args[0];
        let mut child = bin()
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let feeder = input.map(|texts| {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || stdin.write_all(texts.as_bytes()))
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with('{'), "{sub}: first line {first:?}");
        // The reader closes here, as `head -1` does.
        let out = child.wait_with_output().unwrap();
        if let Some(feeder) = feeder {
            feeder.join().unwrap().unwrap();
        }
        assert!(out.status.success(), "{sub}: {:?} {}", out.status, stderr(&out));
        assert!(!stderr(&out).contains("Broken pipe"), "{sub}: {}", stderr(&out));
    }
}

// --- 13: interrupted runs leave nothing; abandoned temporary files are cleaned ---

#[cfg(unix)]
#[test]
fn sigterm_and_sigint_remove_the_temporary_output() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let texts: String = (0..3000).map(|i| format!("a sentence long enough to take a while, number {i}\n")).collect();
    std::fs::write(&input, texts).unwrap();
    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let out = dir.path().join("out.jsonl");
        let mut child = bin()
            .args(["embed", "--model", m(), "--threads", "1", "--input", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !names_in(dir.path()).iter().any(|n| n.ends_with(".partial")) {
            assert!(Instant::now() < deadline, "no temporary file appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let it load the model and start writing.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap().success());
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(number), "dies by the signal, as the shell expects: {status:?}");
        assert_eq!(names_in(dir.path()), ["in.txt"], "SIG{signal} left files behind");
    }
}

#[test]
fn abandoned_temporary_files_of_ours_are_removed_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let make = |name: &str, mtime| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().set_modified(mtime).unwrap();
        p
    };
    // pid 0 never runs a user program: the run that left this file is gone.
    let abandoned = make(".ggufembed-0-AbCd1234.partial", old);
    let recent = make(".ggufembed-0-recent12.partial", std::time::SystemTime::now());
    let not_ours = make(".ggufembed-notes.partial", old);
    let out = dir.path().join("out.jsonl");
    let o = run(&["tokenize", "--model", m(), "-o", out.to_str().unwrap(), "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!abandoned.exists());
    assert!(recent.exists() && not_ours.exists(), "only old files of our naming go");
}

// --- 5, 14: a cached model that changed is hashed again, with a plain progress line ---

#[test]
fn a_changed_cached_model_is_verified_with_a_plain_progress_line() {
    let home = tempfile::tempdir().unwrap();
    let cached = home.path().join("embeddinggemma-300m-q8_0.gguf");
    std::fs::copy(model(), &cached).unwrap();
    let manifest = format!("{}.manifest", model().display());
    std::fs::copy(&manifest, home.path().join("embeddinggemma-300m-q8_0.gguf.manifest")).unwrap();
    // The copy has a new modification time: the cheap check must hash it (stderr is a pipe
    // here, so the stage is one plain line).
    let o = bin().args(["fetch"]).env("GGUFEMBED_HOME", home.path()).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err.lines().find(|l| l.starts_with("ggufembed: verified ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("MiB in ") && line.ends_with(" s"), "{line}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), cached.display().to_string());
    // Recorded: the next run is cheap and silent.
    let o = bin().args(["fetch"]).env("GGUFEMBED_HOME", home.path()).output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));

    // Same size, different bytes, new time: found, and fetched again (here: refused, as the
    // source is not in this cache and the fake pip below fails).
    let mut bytes = std::fs::read(&cached).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&cached, bytes).unwrap();
    let o = bin()
        .args(["embed", "hello"])
        .env("GGUFEMBED_HOME", home.path())
        .env("GGUFEMBED_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("is unusable (SHA-256"), "{err}");
}
