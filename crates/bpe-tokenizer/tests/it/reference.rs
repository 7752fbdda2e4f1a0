//! Golden ids from the reference (HF tokenizers 0.23 on tokenizer.json): every id of
//! every text must match.

use bpe_tokenizer::Tokenizer;

use crate::support::{self, EdgeCase};

/// Id HF gives `<image_soft_token>`: one past the 262,144-token vocabulary, so a GGUF
/// cannot hold it.
const IMAGE_SOFT_TOKEN: u32 = 262_144;

pub(crate) fn check_dev(tok: &Tokenizer, which: &str) {
    let mut total = 0;
    let mut failures = Vec::new();
    let mut out = Vec::new();
    for lang in support::LANGS {
        let cases = support::dev_cases(lang);
        let mut ok = 0;
        for case in &cases {
            tok.encode_into(&case.text, &mut out);
            if out == case.ids {
                ok += 1;
            } else if failures.len() < 10 {
                failures.push(format!(
                    "[{lang}] {}\n  want {:?}\n  got  {:?}",
                    support::show(&case.text),
                    case.ids,
                    out
                ));
            }
        }
        eprintln!("{which}: tokens-dev-{lang}.jsonl {ok}/{} exact", cases.len());
        total += cases.len() - ok;
    }
    assert!(failures.is_empty(), "{which}: {total} dev texts differ, first:\n{}", failures.join("\n"));
}

#[test]
fn dev_texts_match_reference_from_gguf_data() {
    check_dev(support::gguf_tokenizer(), "gguf");
}

/// The word cache only saves work: without it the ids are the same.
#[test]
fn dev_texts_match_reference_without_word_cache() {
    let (tokens, scores, types) = support::gguf_arrays();
    let tok = support::builder_from(&tokens, &scores, &types).word_cache(false).build().expect("build");
    check_dev(&tok, "gguf, no word cache");
}

#[test]
fn dev_texts_match_reference_from_tokenizer_model() {
    check_dev(support::full_tokenizer(), "tokenizer.model");
}

pub(crate) fn check_edge_case(tok: &Tokenizer, case: &EdgeCase, failures: &mut Vec<String>) {
    let mut out = Vec::new();
    let enc = tok.encode_truncated_into(&case.text, 2048, &mut out).expect("2048 holds bos+eos");
    let mut why = Vec::new();
    if out != case.ids {
        why.push(format!("ids\n  want {:?}\n  got  {:?}", case.ids, out));
    }
    let pieces: Vec<&str> = out.iter().map(|&id| tok.piece(id).expect("known id")).collect();
    if pieces != case.tokens {
        why.push(format!("pieces\n  want {:?}\n  got  {:?}", case.tokens, pieces));
    }
    let untruncated = case.ids_untruncated.as_ref().unwrap_or(&case.ids);
    if tok.encode(&case.text) != *untruncated {
        why.push("untruncated ids differ".to_owned());
    }
    if enc.n_ids_untruncated != case.n_ids_untruncated.unwrap_or(case.ids.len())
        || enc.truncated() != case.ids_untruncated.is_some()
        || tok.count_ids(&case.text) != untruncated.len()
    {
        why.push(format!("lengths {enc:?}, count_ids {}", tok.count_ids(&case.text)));
    }
    if !why.is_empty() {
        failures.push(format!("{} {}: {}", case.name, support::show(&case.text), why.join("; ")));
    }
}

#[test]
fn edge_cases_match_reference_from_tokenizer_model() {
    let tok = support::full_tokenizer();
    let mut failures = Vec::new();
    let cases = support::edge_cases();
    for case in &cases {
        check_edge_case(tok, case, &mut failures);
    }
    eprintln!("tokenizer.model: tokens-edge.jsonl {}/{} exact", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The GGUF lacks `<image_soft_token>`; every other edge case must match exactly, and
/// in `special_misc` the `<image_soft_token>` text is encoded as ordinary text.
#[test]
fn edge_cases_match_reference_from_gguf_data() {
    let tok = support::gguf_tokenizer();
    let mut failures = Vec::new();
    let cases = support::edge_cases();
    let mut special_misc_seen = false;
    for case in &cases {
        if !case.ids.contains(&IMAGE_SOFT_TOKEN) {
            check_edge_case(tok, case, &mut failures);
            continue;
        }
        special_misc_seen = true;
        // Without the added token, the text around it is one BPE word.
        assert_eq!(case.text, "<unused0> <start_of_image> <image_soft_token> [multimodal]");
        let mut word = tok.encode(" <image_soft_token> ");
        word.pop();
        word.remove(0);
        assert!(word.len() > 2 && word.iter().all(|&id| id < IMAGE_SOFT_TOKEN), "{word:?}");
        let mut want = vec![2, 6, 236_743, 255_999];
        want.extend(word);
        want.extend([5, 1]);
        assert_eq!(tok.encode(&case.text), want, "{}", case.name);
    }
    assert!(special_misc_seen, "no edge case holds <image_soft_token>");
    eprintln!("gguf: tokens-edge.jsonl {}/{} exact", cases.len() - 1 - failures.len(), cases.len() - 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Both ways of building see the same vocabulary: the GGUF converter's rewrites of
/// added tokens are undone.
#[test]
fn gguf_and_tokenizer_model_agree_on_pieces_and_types() {
    let (g, f) = (support::gguf_tokenizer(), support::full_tokenizer());
    assert_eq!(g.vocab_size(), 262_144);
    assert_eq!(f.vocab_size(), 262_145);
    assert_eq!(g.model_vocab_size(), f.model_vocab_size());
    for id in 0..g.vocab_size() as u32 {
        assert_eq!(g.piece(id), f.piece(id), "piece {id}");
        assert_eq!(
            g.token_type(id).map(|t| t.is_added()),
            f.token_type(id).map(|t| t.is_added()),
            "type {id}"
        );
    }
    assert_eq!(f.piece(IMAGE_SOFT_TOKEN), Some("<image_soft_token>"));
    assert_eq!(g.piece(138), Some("\u{2581}\u{2581}"));
}

#[test]
fn truncation_keeps_bos_first_content_and_eos() {
    let tok = support::gguf_tokenizer();
    let long = support::edge_cases().into_iter().find(|c| c.name == "long_3000_tokens").expect("long case");
    let full = long.ids_untruncated.clone().expect("untruncated ids");
    let mut out = Vec::new();
    for max in [2, 3, 10, 2048, 3014, 3015, 5000] {
        let enc = tok.encode_truncated_into(&long.text, max, &mut out).expect("limit >= 2");
        let keep = (max - 2).min(full.len() - 2);
        let mut want = full[..1 + keep].to_vec();
        want.push(1);
        assert_eq!(out, want, "max {max}");
        assert_eq!(enc.n_ids_untruncated, 3015);
        assert_eq!(enc.truncated(), max < 3015);
    }
    assert!(matches!(
        tok.encode_truncated_into("x", 1, &mut out),
        Err(bpe_tokenizer::TokenizerError::LimitTooSmall { max_ids: 1, needed: 2 })
    ));
}
