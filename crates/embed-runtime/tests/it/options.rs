//! Per-call options: one forward pass carries texts with different prompts, dimensions,
//! normalisation and truncation, and each vector is what the builder-configured embedder gives.

use embed_runtime::{
    Dims, EmbedError, EmbedOptions, Input, Parallelism, Prompt, TextError, Truncation,
};

use crate::support::*;

fn options(prompt: Option<&str>, dims: usize, normalize: bool) -> EmbedOptions {
    EmbedOptions::default()
        .with_prompt(prompt.map_or(Prompt::None, |p| Prompt::named(p).unwrap()))
        .with_dims(Dims::new(dims).unwrap())
        .with_normalize(normalize)
}

const VARIANTS: [(Option<&str>, usize, bool); 5] = [
    (None, 768, false),
    (Some("query"), 256, true),
    (Some("document"), 512, false),
    (Some("STS"), 128, true),
    (None, 256, false),
];

#[test]
fn per_call_options_equal_the_builders_settings_bit_for_bit() {
    let texts = ["A man is playing a flute.", "Un hombre toca la flauta.", "", "数据"];
    for (prompt, dims, norm) in VARIANTS {
        let want = q8_0_with(prompt.map_or(Prompt::None, |p| Prompt::named(p).unwrap()), dims, norm)
            .embed(&texts)
            .unwrap();
        let got = q8_0()
            .embed_with_options(&texts, &options(prompt, dims, norm), Parallelism::Auto)
            .unwrap();
        assert_eq!(got, want, "{prompt:?} {dims} {norm}");
        assert_eq!(got.dim(), dims);
    }
}

#[test]
fn mixed_options_share_one_pass_and_each_vector_is_as_alone() {
    let texts = mixed_texts();
    let e = q8_0();
    let mut prepared = Vec::new();
    let mut want = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let (prompt, dims, norm) = VARIANTS[i % VARIANTS.len()];
        let o = options(prompt, dims, norm);
        prepared.push(e.prepare(Input::Text(t), &o).unwrap());
        want.push(e.embed_with_options(&[t], &o, Parallelism::Coarse).unwrap().row(0).to_vec());
    }
    let refs: Vec<_> = prepared.iter().collect();
    let got = e.embed_prepared(&refs).unwrap();
    assert_eq!(got.len(), texts.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "text {i} in a mixed pass");
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        let (_, dims, normalize) = VARIANTS[i % VARIANTS.len()];
        assert_eq!(g.len(), dims);
        if normalize || dims == 768 {
            assert!((norm - 1.0).abs() < 1e-5, "text {i}: norm {norm}");
        } else {
            assert!(norm < 0.95, "text {i}: a raw prefix is shorter than unit, got {norm}");
        }
    }
    // The same items in reverse: other neighbours, same vectors.
    let rev: Vec<_> = prepared.iter().rev().collect();
    let got_rev = e.embed_prepared(&rev).unwrap();
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&got_rev[texts.len() - 1 - i], w);
    }
}

#[test]
fn token_ids_give_the_vector_of_their_text_with_or_without_the_frame() {
    let e = q8_0();
    let text = "A man is playing a flute.";
    let want = e.embed(&[text]).unwrap().row(0).to_vec();
    let framed = e.tokenizer().encode(text);
    let content = &framed[1..framed.len() - 1];
    let o = EmbedOptions::default();
    for ids in [&framed[..], content, &framed[..framed.len() - 1], &framed[1..]] {
        let p = e.prepare(Input::Ids(ids), &o).unwrap();
        assert_eq!(p.ids(), &framed[..], "ids {ids:?}");
        assert_eq!(e.embed_prepared(&[&p]).unwrap()[0], want, "ids {ids:?}");
    }
    // Empty id lists are the empty text.
    let empty = e.prepare(Input::Ids(&[]), &o).unwrap();
    assert_eq!(e.embed_prepared(&[&empty]).unwrap()[0], e.embed(&[""]).unwrap().row(0));
}

#[test]
fn token_ids_are_checked_against_the_vocabulary_and_take_no_prompt() {
    let e = q8_0();
    let vocab = e.vocab_size() as u32;
    let err = e.prepare(Input::Ids(&[5, vocab, 6]), &EmbedOptions::default()).unwrap_err();
    assert_eq!(err, TextError::IdOutOfVocab { id: vocab, vocab: vocab as usize, piece: None });
    let query = EmbedOptions::default().with_prompt(Prompt::named("query").unwrap());
    assert_eq!(e.prepare(Input::Ids(&[5]), &query).unwrap_err(), TextError::PromptWithIds);
}

#[test]
fn truncation_keeps_the_head_or_the_tail_or_refuses() {
    let e = q8_0();
    let (cases, _) = reference_set("long");
    let long = cases.last().unwrap().text.as_str(); // 2523 tokens
    let full = e.tokenizer().encode(long);
    let ctx = e.context_length();
    assert!(full.len() > ctx);

    let right = e.prepare(Input::Text(long), &EmbedOptions::default()).unwrap();
    assert!(right.truncated());
    assert_eq!(right.untruncated_tokens(), full.len());
    assert_eq!(right.ids().len(), ctx);
    assert_eq!(&right.ids()[..ctx - 1], &full[..ctx - 1]);
    assert_eq!(right.ids()[ctx - 1], full[full.len() - 1], "<eos> stays");

    let left_opts = EmbedOptions::default().with_truncation(Truncation::Left);
    let left = e.prepare(Input::Text(long), &left_opts).unwrap();
    assert_eq!(left.ids().len(), ctx);
    assert_eq!(left.ids()[0], full[0], "<bos> stays");
    assert_eq!(&left.ids()[1..], &full[full.len() - (ctx - 1)..]);
    // The tail is another text: its vector differs from the head's.
    let v = e.embed_prepared(&[&right, &left]).unwrap();
    assert_ne!(v[0], v[1]);
    // Token ids are truncated the same way.
    let left_ids = e.prepare(Input::Ids(&full), &left_opts).unwrap();
    assert_eq!(left_ids.ids(), left.ids());

    let strict = EmbedOptions::default().with_truncation(Truncation::Error);
    assert_eq!(
        e.prepare(Input::Text(long), &strict).unwrap_err(),
        TextError::TooLong { tokens: full.len(), limit: ctx }
    );
    let err = e.embed_with_options(&["ok", long], &strict, Parallelism::Auto).unwrap_err();
    assert!(matches!(err, EmbedError::Text { index: 1, source: TextError::TooLong { .. } }), "{err}");
}
