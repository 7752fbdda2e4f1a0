//! The checks behind the fuzz targets, shared with the workspace's tests
//! (`crates/ggufembed/tests/fuzz_harness.rs` drives them with proptest in CI; the cargo-fuzz
//! targets in `fuzz_targets/` drive them with libFuzzer). Every function panics on a violated
//! property and returns normally otherwise.

#![allow(dead_code)] // each target uses one half of this file

// The CLI's input reader itself, compiled in here as it is in the binary.
#[allow(dead_code)]
#[path = "../src/input.rs"]
pub mod input;

use embed_runtime::Tokenizer;

/// Lines as the input reader's rules define them (BOM dropped, a final newline ends the last
/// line), for checking its results independently.
fn expected_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect()
}

/// The 1-based line a `fuzz:N: ...` message names.
fn named_line(message: &str) -> usize {
    let rest = message.strip_prefix("fuzz:").unwrap_or_else(|| panic!("message names no place: {message:?}"));
    let (n, _) = rest.split_once(": ").unwrap_or_else(|| panic!("message names no line: {message:?}"));
    n.parse().unwrap_or_else(|_| panic!("bad line number in {message:?}"))
}

/// Every text of a checked input, read back in order.
fn texts_of(texts: &input::Texts) -> Vec<String> {
    let mut v = Vec::new();
    texts
        .for_each(|i, t| {
            assert_eq!(i, v.len(), "texts come in order");
            v.push(t.to_owned());
            Ok(())
        })
        .expect("a checked input reads back");
    assert_eq!(v.len(), texts.len(), "the count is the texts read back");
    v
}

/// Reads `data` as a plain-text and as a JSON Lines input file. Properties: no panic; a
/// success has one text per line (so output `index` = line − 1); a failure names a line of the
/// input, 1-based, and that line really is bad.
pub fn read_input(data: &[u8]) {
    spooled_reads_as_in_memory(data);
    let lines = expected_lines(data);
    match input::read_once(data, "fuzz", false, input::SPOOL_IN_MEMORY) {
        Ok(texts) => {
            let all = texts_of(&texts);
            assert_eq!(all.len(), lines.len(), "one text per line");
            for (i, (text, line)) in all.iter().zip(&lines).enumerate() {
                assert_eq!(text.as_bytes(), *line, "text {i} is line {} verbatim", i + 1);
                assert_eq!(texts.locate(i), format!("fuzz:{}", i + 1));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let n = named_line(&msg);
            assert!((1..=lines.len()).contains(&n), "line {n} of {}: {msg}", lines.len());
            assert!(std::str::from_utf8(lines[n - 1]).is_err(), "line {n} is valid UTF-8 yet refused: {msg}");
            assert!(lines[..n - 1].iter().all(|l| std::str::from_utf8(l).is_ok()), "not the first bad line: {msg}");
        }
    }
    match input::read_once(data, "fuzz", true, input::SPOOL_IN_MEMORY) {
        Ok(texts) => {
            let all = texts_of(&texts);
            assert_eq!(all.len(), lines.len(), "one text per line, none skipped");
            for (text, line) in all.iter().zip(&lines) {
                let v: serde_json::Value = serde_json::from_slice(line).expect("an accepted line is JSON");
                assert_eq!(v["text"].as_str(), Some(text.as_str()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let n = named_line(&msg);
            assert!((1..=lines.len()).contains(&n), "line {n} of {}: {msg}", lines.len());
            let bad = lines[n - 1];
            let good = std::str::from_utf8(bad)
                .ok()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .is_some_and(|v| v.get("text").is_some_and(serde_json::Value::is_string));
            assert!(!good, "line {n} is a good object yet refused: {msg}");
        }
    }
}

/// An input that can be read only once, copied to a temporary file past a few bytes, reads
/// back exactly as the same input held in memory, on two passes, and fails with the same
/// message.
fn spooled_reads_as_in_memory(data: &[u8]) {
    for jsonl in [false, true] {
        let memory = input::read_once(data, "fuzz", jsonl, input::SPOOL_IN_MEMORY);
        let spooled = input::read_once(data, "fuzz", jsonl, 7);
        match (memory, spooled) {
            (Ok(m), Ok(s)) => {
                let expected = texts_of(&m);
                assert_eq!(texts_of(&s), expected, "spooled input, first pass (jsonl: {jsonl})");
                assert_eq!(texts_of(&s), expected, "spooled input, second pass (jsonl: {jsonl})");
            }
            (Err(m), Err(s)) => assert_eq!(s.to_string(), m.to_string(), "jsonl: {jsonl}"),
            (m, s) => panic!("in memory {:?}, spooled {:?} (jsonl: {jsonl})", m.map(|t| t.len()), s.map(|t| t.len())),
        }
    }
}

/// Tokenizes `data` as text (invalid UTF-8 replaced, as a caller holding bytes would).
/// Properties: no panic; every id inside the tokenizer's vocabulary; `<bos>`/`<eos>` where the
/// tokenizer adds them; counting agrees with encoding; truncation keeps the limit and reports
/// it; decoding gives the text back (`▁` reads as a space).
pub fn tokenize(tok: &Tokenizer, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let ids = tok.encode(&text);
    let vocab = tok.vocab_size();
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        panic!("id {bad} outside the vocabulary of {vocab} for {text:?}");
    }
    assert_eq!(tok.count_ids(&text), ids.len(), "count_ids disagrees with encode");
    let (mut start, mut end) = (0, ids.len());
    if tok.adds_bos() {
        assert_eq!(ids.first().copied(), tok.bos_id());
        start = 1;
    }
    if tok.adds_eos() {
        assert_eq!(ids.last().copied(), tok.eos_id());
        end -= 1;
    }
    let decoded = tok.decode(&ids[start..end]).expect("own ids decode");
    assert_eq!(decoded, text.replace('\u{2581}', " "), "decode(encode(text)) != text");
    for limit in [tok.n_special_ids(), tok.n_special_ids() + 1, 8, 64] {
        let mut out = Vec::new();
        let enc = tok.encode_truncated_into(&text, limit, &mut out).expect("limit covers the special ids");
        assert!(out.len() <= limit && enc.n_ids == out.len());
        assert_eq!(enc.n_ids_untruncated, ids.len());
        assert_eq!(enc.truncated(), ids.len() > limit);
        // <bos>, the first content ids that fit, <eos>.
        let keep = (end - start).min(limit - tok.n_special_ids());
        let mut want = ids[..start + keep].to_vec();
        want.extend(tok.eos_id().filter(|_| tok.adds_eos()));
        assert_eq!(out, want, "truncation to {limit}");
    }
}
