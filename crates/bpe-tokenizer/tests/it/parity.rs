//! Parity with HF `tokenizers` (the reference implementation, as a Rust crate) on the
//! model's tokenizer.json.

use proptest::prelude::*;

use crate::support;

fn hf_ids(text: &str) -> Vec<u32> {
    support::hf_tokenizer().encode(text, true).expect("hf encode").get_ids().to_vec()
}

/// Every dev text of every language, then every edge case.
fn reference_texts() -> Vec<String> {
    let mut texts: Vec<String> = support::LANGS.iter().flat_map(|l| support::dev_cases(l)).map(|c| c.text).collect();
    texts.extend(support::edge_cases().into_iter().map(|c| c.text));
    texts
}

#[test]
fn dev_and_edge_texts_match_tokenizers_crate() {
    let tok = support::full_tokenizer();
    let texts = reference_texts();
    let mut failures = Vec::new();
    for text in &texts {
        let (ours, theirs) = (tok.encode(text), hf_ids(text));
        if ours != theirs && failures.len() < 10 {
            failures.push(format!("{}\n  hf   {theirs:?}\n  ours {ours:?}", support::show(text)));
        }
    }
    eprintln!("parity with tokenizers crate: {} texts", texts.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// HF's offsets of `text` (byte ranges; `None` for the `<bos>`/`<eos>` its template adds) and
/// its ids.
fn hf_offsets(text: &str) -> (Vec<u32>, Vec<Option<std::ops::Range<usize>>>) {
    let enc = support::hf_tokenizer().encode(text, true).expect("hf encode");
    let offsets = enc
        .get_offsets()
        .iter()
        .zip(enc.get_special_tokens_mask())
        .map(|(&(a, b), &special)| (special == 0).then_some(a..b))
        .collect();
    (enc.get_ids().to_vec(), offsets)
}

#[test]
fn offsets_match_tokenizers_crate() {
    let tok = support::full_tokenizer();
    let texts = reference_texts();
    let mut failures = Vec::new();
    for text in &texts {
        let (ids, want) = hf_offsets(text);
        let got = tok.offsets(text, &ids, true);
        if got != want && failures.len() < 10 {
            failures.push(format!("{}\n  hf   {want:?}\n  ours {got:?}", support::show(text)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Without the added ids, and for ids of another text: no range outside the text.
    let ids = tok.encode("a b");
    assert_eq!(tok.offsets("a b", &ids[1..ids.len() - 1], false), [Some(0..1), Some(1..3)]);
    assert_eq!(tok.offsets("a b", &tok.encode("xyz"), true)[1..3], [None, None]);
}

/// Texts around the one merge that crosses a space in Gemma's vocabulary (`>` + `▁</`).
#[test]
fn merges_across_spaces_match_tokenizers_crate() {
    for text in ["<b>x</b> </b>", "a> </", "a>  </td>", "x > </y> </z", "> </", ">\u{2581}</", "1 > </0"] {
        assert_eq!(support::gguf_tokenizer().encode(text), hf_ids(text), "{text:?}");
    }
}

/// Building blocks that stress the tricky parts: spaces (merged into `▁` runs),
/// added-token text and its look-alikes, newlines and tabs, byte fallback, scripts
/// without spaces, combining marks.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z]{1,8}",
        3 => Just(" ".to_owned()),
        1 => "[ ]{2,40}",
        1 => "[\t\n\r]{1,5}",
        1 => prop::sample::select(vec![
            "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<unused0>", "<unused6241>",
            "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "[multimodal]", "<table>",
            "</td>", "<b>", "<bo", "<unused", "<0x41>", "\u{2581}", "\u{2581}\u{2581}", "\u{2581}a",
            "\0", "\u{1}", "\u{7f}", "\u{85}", "\u{a0}", "\u{200b}", "\u{200d}", "\u{feff}",
            "\u{301}", "e\u{301}", "é", "ß", "中文", "日本語", "ไทย", "العربية", "한국어",
            "👨\u{200d}👩\u{200d}👧", "🇯🇵", "❤\u{fe0f}", "\u{e000}", "\u{10ffff}", "𓀀",
        ])
        .prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        1 => "[0-9.,;:!?()\\[\\]{}<>/\\\\\"'_#@&*+=-]{1,6}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_texts_match_tokenizers_crate(s in text()) {
        prop_assert_eq!(support::full_tokenizer().encode(&s), hf_ids(&s), "text {:?}", s);
    }

    #[test]
    fn random_texts_from_gguf_data_match_tokenizers_crate(s in text()) {
        prop_assume!(!s.contains("<image_soft_token>"));
        prop_assert_eq!(support::gguf_tokenizer().encode(&s), hf_ids(&s), "text {:?}", s);
    }

    #[test]
    fn offsets_of_random_texts_match_tokenizers_crate(s in text()) {
        let (ids, want) = hf_offsets(&s);
        prop_assert_eq!(support::full_tokenizer().offsets(&s, &ids, true), want, "text {:?}", s);
    }

    #[test]
    fn decode_matches_tokenizers_crate(s in text()) {
        let ids = support::full_tokenizer().encode(&s);
        let theirs = support::hf_tokenizer().decode(&ids, false).expect("hf decode");
        prop_assert_eq!(support::full_tokenizer().decode(&ids).expect("known ids"), theirs);
    }
}

/// `is_special` is HF's `special` flag, id for id over the whole vocabulary, so a decode that
/// skips special tokens leaves out what HF's does (and keeps `<mask>` and `<unusedN>`).
#[test]
fn special_tokens_are_hfs() {
    // As the runtime builds it: the GGUF's arrays and types, plus `<image_soft_token>`.
    let (tokens, scores, types) = support::gguf_arrays();
    let tok = &support::builder_from(&tokens, &scores, &types)
        .added_token("<image_soft_token>", tokens.len() as u32)
        .build()
        .expect("build");
    let hf = support::hf_tokenizer();
    let theirs: std::collections::BTreeSet<u32> =
        hf.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
    let ours: std::collections::BTreeSet<u32> =
        (0..tok.vocab_size() as u32).filter(|&id| tok.is_special(id)).collect();
    assert_eq!(ours, theirs);
    assert!(theirs.len() >= 4, "{theirs:?}");
    // And the decode itself: HF's with skip_special_tokens against ours without those ids.
    let ids = tok.encode("a <mask> b <unused0><start_of_turn>user\nhi<end_of_turn>");
    let kept: Vec<u32> = ids.iter().copied().filter(|&id| !tok.is_special(id)).collect();
    assert_eq!(tok.decode(&kept).unwrap(), hf.decode(&ids, true).expect("hf decode"));
}
