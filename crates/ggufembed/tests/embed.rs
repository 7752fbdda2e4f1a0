//! `ggufembed embed` and `ggufembed tokenize` end to end: the built binary on the real Q8_0 model,
//! checked against sentence-transformers' vectors and HF tokenizers' ids.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value as Json;

/// Per-text cosine against the f32 reference that a Q8_0 model must reach.
const Q8_0_MIN_COSINE: f32 = 0.9993;

fn model() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| model_fetch::testing::gguf(model_fetch::OutType::Q8_0))
}

fn reference(name: &str) -> PathBuf {
    model_fetch::testing::reference_file(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn jsonl(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .expect("jsonl file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("npy file");
    let f = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = f.shape().to_vec();
    (shape, f.into_vec().expect("f32 data"))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// The first `n` texts of a reference embedding set and their reference vectors.
fn reference_rows(set: &str, n: usize) -> (Vec<String>, Vec<Vec<f32>>) {
    let lines = jsonl(&reference(&format!("emb-{set}.jsonl")));
    let (shape, data) = npy(&reference(&format!("emb-{set}.npy")));
    let d = shape[1] as usize;
    let texts = lines.iter().take(n).map(|l| l["text"].as_str().unwrap().to_owned()).collect();
    let rows = data.chunks_exact(d).take(n).map(<[f32]>::to_vec).collect();
    (texts, rows)
}

#[test]
fn embed_a_file_to_jsonl_matches_the_reference() {
    let (texts, want) = reference_rows("dev-en", 40);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let r = run(&[
        "embed", "--model", model().to_str().unwrap(), "--input", input.to_str().unwrap(),
        "--output", out.to_str().unwrap(), "--threads", "2", "--batch-size", "16", "--verbose",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rows = jsonl(&out);
    assert_eq!(rows.len(), texts.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], i, "results in input order");
        let v = floats(&row["embedding"]);
        assert_eq!(v.len(), 768);
        let c = cosine(&v, &want[i]);
        assert!(c >= Q8_0_MIN_COSINE, "text {i}: cosine {c}");
        assert_eq!(row["truncated"], false);
        assert!(row["tokens"].as_u64().unwrap() >= 3);
    }
    // --verbose: a load line, then `N texts, T tokens, S s, R texts/s` last.
    let stderr = String::from_utf8(r.stderr).unwrap();
    let last = stderr.lines().last().expect("summary line");
    let parts: Vec<&str> = last.split(", ").collect();
    assert_eq!(parts.len(), 4, "summary: {last}");
    assert_eq!(parts[0], "40 texts");
    assert!(parts[1].ends_with(" tokens") && parts[2].ends_with(" s") && parts[3].ends_with(" texts/s"), "{last}");
    assert!(stderr.lines().next().unwrap().starts_with("loaded "), "{stderr}");
}

#[test]
fn prompt_and_matryoshka_options_match_their_reference_sets() {
    let dir = tempfile::tempdir().unwrap();
    // --prompt query, JSON Lines to stdout.
    let (texts, want) = reference_rows("dev-en-query", 10);
    let mut args = vec!["embed", "--model", model().to_str().unwrap(), "--prompt", "query"];
    args.extend(texts.iter().map(String::as_str));
    let r = run(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8(r.stdout).unwrap();
    for (i, line) in stdout.lines().enumerate() {
        let v = floats(&serde_json::from_str::<Json>(line).unwrap()["embedding"]);
        assert!(cosine(&v, &want[i]) >= Q8_0_MIN_COSINE, "query text {i}");
    }
    // --dims 256 (raw prefix, not renormalised) as .npy.
    let (texts, want) = reference_rows("dev-en-dim256", 10);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let out = dir.path().join("v.npy");
    let r = run(&[
        "embed", "--model", model().to_str().unwrap(), "--input", input.to_str().unwrap(),
        "--dims", "256", "--format", "npy", "--output", out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (shape, data) = npy(&out);
    assert_eq!(shape, [10, 256]);
    for (i, row) in data.chunks_exact(256).enumerate() {
        assert!(cosine(row, &want[i]) >= Q8_0_MIN_COSINE, "dim256 text {i}");
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        let want_norm = want[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm / want_norm - 1.0).abs() < 0.01, "prefix stays unnormalised: {norm} vs {want_norm}");
    }
}

#[test]
fn jsonl_input_carries_texts_with_newlines() {
    let lines = jsonl(&reference("emb-edge.jsonl"));
    let (shape, data) = npy(&reference("emb-edge.npy"));
    let d = shape[1] as usize;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let body: String = lines.iter().map(|l| serde_json::json!({ "text": l["text"] }).to_string() + "\n").collect();
    std::fs::write(&input, body).unwrap();
    let r = run(&["embed", "--model", model().to_str().unwrap(), "--jsonl", "--input", input.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out: Vec<Json> = String::from_utf8(r.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out.len(), lines.len());
    // The CLI writes exactly the library's vectors (shortest-form JSON floats round-trip f32).
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    let lib = embed_runtime::Embedder::builder().model(model()).threads(2).build().unwrap();
    let want = lib.embed(&texts).unwrap();
    for (i, row) in out.iter().enumerate() {
        let got = floats(&row["embedding"]);
        assert_eq!(got, want.row(i), "edge case {} ({}): CLI differs from the library", i, lines[i]["name"]);
        // The edge set holds texts where Q8_0 weights themselves cost accuracy (see
        // embed-runtime's reference tests); here only a sanity bound.
        let c = cosine(&got, &data[i * d..(i + 1) * d]);
        assert!(c >= 0.998, "edge case {} ({}): cosine {c}", i, lines[i]["name"]);
    }
}

#[test]
fn invalid_utf8_fails_naming_the_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"fine\nalso fine\nbroken \xc3\x28 here\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let r = run(&["embed", "--model", model().to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(!r.status.success());
    let stderr = String::from_utf8(r.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("in.txt:3: invalid UTF-8"), "{stderr}");
    assert!(!out.exists(), "no output file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
}

#[test]
fn a_missing_model_or_bad_option_is_a_one_line_error() {
    let r = run(&["embed", "--model", "/nonexistent/m.gguf", "hello"]);
    assert!(!r.status.success());
    let stderr = String::from_utf8(r.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/m.gguf"), "{stderr}");

    let r = run(&["embed", "--model", model().to_str().unwrap(), "--dims", "300", "hello"]);
    assert!(!r.status.success());
    let stderr = String::from_utf8(r.stderr).unwrap();
    assert!(stderr.contains("'300' for '--dims") && stderr.contains("768, 512, 256, 128"), "{stderr}");

    // A malformed option like --dims: status 2, the option and the names that exist.
    let r = run(&["embed", "--model", model().to_str().unwrap(), "--prompt", "nope", "hello"]);
    assert_eq!(r.status.code(), Some(2));
    let stderr = String::from_utf8(r.stderr).unwrap();
    assert!(stderr.contains("'nope' for '--prompt") && stderr.contains("query, document"), "{stderr}");

    let r = run(&["embed", "--model", model().to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "no input is a usage error");
    assert!(String::from_utf8(r.stderr).unwrap().contains("no input"));
}

#[test]
fn tokenize_gives_the_reference_ids_and_pieces() {
    let cases = jsonl(&reference("tokens-edge.jsonl"));
    let cases: Vec<&Json> = cases.iter().filter(|c| c.get("ids_untruncated").is_none()).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let body: String = cases.iter().map(|c| serde_json::json!({ "text": c["text"] }).to_string() + "\n").collect();
    std::fs::write(&input, body).unwrap();
    let r = run(&["tokenize", "--model", model().to_str().unwrap(), "--jsonl", "--input", input.to_str().unwrap(), "--pieces"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out: Vec<Json> = String::from_utf8(r.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out.len(), cases.len());
    for (got, want) in out.iter().zip(&cases) {
        assert_eq!(got["ids"], want["ids"], "case {}", want["name"]);
        assert_eq!(got["pieces"], want["tokens"], "case {}", want["name"]);
    }
}
