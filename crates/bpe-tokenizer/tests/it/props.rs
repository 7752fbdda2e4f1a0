//! Properties that hold for any input.

use proptest::prelude::*;

use crate::support;

/// Texts for the round trip: no `▁` (decodes to a space), no text that is an added
/// token (it decodes back, but as the added token, which is fine, yet the reverse
/// check would need to know about it), no `<0x` (HF's byte decoder reads such pieces
/// as bytes).
fn plain(s: &str) -> bool {
    !s.contains('\u{2581}') && !s.contains('<') && !s.contains('[') && !s.contains("0x")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encode_never_panics_and_ids_are_known(s in any::<String>()) {
        let tok = support::gguf_tokenizer();
        let ids = tok.encode(&s);
        prop_assert_eq!(ids.first(), Some(&2));
        prop_assert_eq!(ids.last(), Some(&1));
        prop_assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        prop_assert_eq!(tok.count_ids(&s), ids.len());
    }

    #[test]
    fn decode_inverts_encode(s in any::<String>().prop_filter("plain text", |s| plain(s))) {
        let tok = support::gguf_tokenizer();
        let ids = tok.encode(&s);
        prop_assert_eq!(tok.decode(&ids[1..ids.len() - 1]).expect("known ids"), s);
    }

    #[test]
    fn decode_inverts_encode_with_whitespace(s in "[a-z \t\n\r\u{0}é中😀]{0,64}") {
        let tok = support::gguf_tokenizer();
        let ids = tok.encode(&s);
        prop_assert_eq!(tok.decode(&ids[1..ids.len() - 1]).expect("known ids"), s);
    }

    #[test]
    fn truncation_is_a_prefix_plus_eos(s in "[a-z ]{0,200}", max in 2usize..40) {
        let tok = support::gguf_tokenizer();
        let full = tok.encode(&s);
        let mut out = vec![7; 3];
        let enc = tok.encode_truncated_into(&s, max, &mut out).expect("max >= 2");
        prop_assert_eq!(enc.n_ids_untruncated, full.len());
        prop_assert_eq!(out.len(), full.len().min(max));
        prop_assert_eq!(&out[..out.len() - 1], &full[..out.len() - 1]);
        prop_assert_eq!(out.last(), Some(&1));
    }

    #[test]
    fn scratch_and_pool_paths_agree(a in any::<String>(), b in any::<String>()) {
        let tok = support::gguf_tokenizer();
        let mut scratch = bpe_tokenizer::Scratch::new();
        let mut out = Vec::new();
        // A scratch used on a longer text first must not leak state into the next.
        tok.encode_into_with(&format!("{a}{b}{a}"), &mut out, &mut scratch);
        tok.encode_into_with(&b, &mut out, &mut scratch);
        prop_assert_eq!(out, tok.encode(&b));
    }
}

#[test]
fn decode_rejects_unknown_ids() {
    let tok = support::gguf_tokenizer();
    assert!(matches!(
        tok.decode(&[2, 262_144]),
        Err(bpe_tokenizer::TokenizerError::UnknownId { id: 262_144, vocab_size: 262_144 })
    ));
    assert_eq!(tok.piece(262_144), None);
}

#[test]
fn decode_renders_bytes_and_specials_like_hf() {
    let tok = support::gguf_tokenizer();
    // <0xE4><0xB8><0xAD> is "中"; a lone continuation byte is one U+FFFD.
    assert_eq!(tok.decode(&[2, 238 + 0xE4, 238 + 0xB8, 238 + 0xAD, 138, 1]).unwrap(), "<bos>中  <eos>");
    assert_eq!(tok.decode(&[238 + 0xB8, 238 + 0x41]).unwrap(), "\u{fffd}\u{fffd}");
}
