//! Vectors and token ids through the public API against sentence-transformers' (f32) output.

use embed_runtime::{Embedder, NumericPath, Prompt};

use crate::support::*;

struct Figures {
    min: f32,
    mean: f32,
    cos: Vec<f32>,
}

/// Embeds every text of a reference set with `embedder`, checks the ids the embedder's tokenizer
/// gives and the token counts it reports, and returns the cosine figures.
fn run_set(name: &str, embedder: &Embedder) -> Figures {
    let (cases, want) = reference_set(name);
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let got = embedder.embed(&texts).expect("embed");
    assert_eq!(got.len(), cases.len());
    assert_eq!(got.dim(), want[0].len(), "{name}: dimension");
    let context = embedder.context_length();
    for (i, case) in cases.iter().enumerate() {
        let full = embedder.tokenizer().encode(&case.input);
        if full.len() > context {
            // The reference keeps <bos>, the first context-2 content ids and <eos>.
            assert!(got.truncated()[i], "{name}[{i}] reported as truncated");
            assert_eq!(&full[..context - 1], &case.ids[..context - 1], "{name}[{i}] ids");
            assert_eq!(case.ids.len(), context);
        } else {
            assert!(!got.truncated()[i], "{name}[{i}] not truncated");
            assert_eq!(full, case.ids, "{name}[{i}] ids of {:?}", case.input);
        }
        assert_eq!(got.token_counts()[i], case.ids.len(), "{name}[{i}] token count");
    }
    let cos: Vec<f32> = (0..cases.len()).map(|i| cosine(got.row(i), &want[i])).collect();
    let min = cos.iter().cloned().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    let worst = cos.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap();
    eprintln!(
        "{name:>22} {:?}: n = {:3}, cosine min {min:.6} (text {worst}), mean {mean:.6}",
        embedder.isa(),
        cases.len()
    );
    // Norms: 1 for full or renormalised vectors, the reference's (0.58 to 0.66) for raw prefixes;
    // 1 % tells the two apart with room for quantization noise in the prefix.
    for (i, w) in want.iter().enumerate() {
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n(got.row(i)) / n(w) - 1.0).abs() < 0.01, "{name}[{i}] norm {} vs {}", n(got.row(i)), n(w));
    }
    Figures { min, mean, cos }
}

fn assert_q8_0(name: &str, f: Figures) {
    assert!(f.min >= Q8_0_MIN_COSINE, "{name}: min cosine {} < {Q8_0_MIN_COSINE}", f.min);
    assert!(f.mean >= Q8_0_MEAN_COSINE, "{name}: mean cosine {} < {Q8_0_MEAN_COSINE}", f.mean);
}

#[test]
fn q8_0_dev_en() {
    let f = run_set("dev-en", q8_0());
    // Measured min 0.99980, mean 0.99987 (plain int8 activations: 0.99955 / 0.99967).
    assert!(f.min >= 0.99979 && f.mean >= 0.99986, "dev-en: min {} mean {}", f.min, f.mean);
    assert_q8_0("dev-en", f);
}

/// The Q8_0 file computed with exact f32 activations: the best any implementation of these
/// weights can do. On a few texts (es multi[53] 0.979, the 2523-token text, some edge cases) this
/// ceiling is itself below the per-text bar, because the model is hypersensitive to the weight
/// rounding there; no Q8_0 implementation can pass the bar on them.
fn q8_0_ceiling() -> &'static Embedder {
    static E: std::sync::OnceLock<Embedder> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        Embedder::builder()
            .model(q8_0_model())
            .threads(2)
            .numeric(NumericPath::F32)
            .build()
            .expect("Q8_0 model loads on the f32 path")
    })
}

/// Regression floor: on the texts under the per-text bar, how far the int8 path (with outlier
/// residuals and exact channels) may stay below min(bar, f32-activation ceiling). Measured with
/// the current table: long[4] 0.99927 against 0.99930 (the only other text under the bar is
/// dev-multi[53], below). The previous table: dev-multi[216] 0.99921 (8.7e-5 under the bar),
/// edge[16] 0.99924 and edge[17] 0.99925 (5.7e-5 and 4.9e-5 under); plain int8 activations
/// 1.0e-3 (edge[9] 0.99827).
const INT8_ACTIVATION_SLACK: f32 = 2e-4;

/// The same for a text whose f32-activation ceiling is under `WEIGHT_LIMITED` (dev-multi[53],
/// 0.97954): the Q8_0 weights already cost it 2 %, and it swings between 0.979 and 0.995 with any
/// change of the rounding anywhere (docs/NUMERICS.md), so only a loose floor is meaningful there.
/// Measured 0.97872 (8.2e-4 under its ceiling); the previous table 0.98591, the first residual
/// table 0.97893.
const WEIGHT_LIMITED_SLACK: f32 = 1e-3;
const WEIGHT_LIMITED: f32 = 0.99;

/// Every text reaches the per-text bar or, where it does not, stays within
/// `INT8_ACTIVATION_SLACK` of what exact activations would give; the set's mean reaches
/// `mean_floor` and at most `max_below` texts are under the bar.
fn assert_q8_0_against_ceiling(name: &str, mean_floor: f32, max_below: usize) {
    let ours = run_set(name, q8_0());
    let ceiling = run_set(name, q8_0_ceiling());
    let mut below = 0;
    for (i, (&c, &top)) in ours.cos.iter().zip(&ceiling.cos).enumerate() {
        if c < Q8_0_TEXT_BAR {
            below += 1;
            let slack = if top < WEIGHT_LIMITED { WEIGHT_LIMITED_SLACK } else { INT8_ACTIVATION_SLACK };
            let floor = Q8_0_TEXT_BAR.min(top) - slack;
            assert!(c >= floor, "{name}[{i}]: {c} below the floor {floor} (f32-activation ceiling {top})");
            eprintln!("{name}[{i}]: {c:.6} < {Q8_0_TEXT_BAR} (f32-activation ceiling {top:.6})");
        }
    }
    eprintln!("{name}: {below} text(s) below {Q8_0_TEXT_BAR}");
    assert!(below <= max_below, "{name}: {below} texts below {Q8_0_TEXT_BAR}, at most {max_below} allowed");
    assert!(ours.mean >= mean_floor, "{name}: mean {} < {mean_floor}", ours.mean);
}

#[test]
fn q8_0_dev_multi() {
    // Measured 0.99975 with 2 texts under the bar (llama.cpp's Q8_0: 0.99952, 9 texts). The
    // mean moves by up to 5e-5 with dev-multi[53] alone, which swings between 0.979 and 0.995
    // with any perturbation; without it the mean is 0.99982.
    assert_q8_0_against_ceiling("dev-multi", 0.99975, 2);
}

#[test]
fn q8_0_long_texts_cross_the_sliding_window_and_truncate() {
    // Measured min 0.99927, mean 0.99953.
    assert_q8_0_against_ceiling("long", 0.99952, 1);
}

#[test]
fn q8_0_edge_cases() {
    // Measured min 0.99948, mean 0.99975.
    assert_q8_0_against_ceiling("edge", 0.99973, 0);
}

#[test]
fn q8_0_query_and_document_prompts() {
    for (set, prompt) in [("dev-en-query", "query"), ("dev-en-document", "document")] {
        let (cases, _) = reference_set(set);
        assert!(cases.iter().all(|c| c.prompt_name.as_deref() == Some(prompt)));
        let e = q8_0_with(Prompt::named(prompt).unwrap(), 768, false);
        assert_q8_0(set, run_set(set, &e));
    }
}

#[test]
fn q8_0_matryoshka_256_raw_and_renormalised() {
    assert_q8_0("dim256", run_set("dev-en-dim256", &q8_0_with(Prompt::None, 256, false)));
    assert_q8_0("dim256-renorm", run_set("dev-en-dim256-renorm", &q8_0_with(Prompt::None, 256, true)));
}

#[test]
fn f32_path_is_exact() {
    let e = Embedder::builder()
        .model(f32_model())
        .threads(2)
        .numeric(NumericPath::F32)
        .build()
        .expect("F32 model loads");
    for set in ["dev-en", "edge", "long"] {
        let f = run_set(set, &e);
        assert!(f.min >= F32_MIN_COSINE, "{set}: F32 min cosine {} < {F32_MIN_COSINE}", f.min);
    }
}

/// `q8_0-f16emb` (Q8_0 matrices, F16 token embedding): no set gets worse on average than on the
/// plain Q8_0 file. Measured: dev-en 0.99982 / 0.99987; dev-multi min 0.99337 / mean 0.99981 /
/// 2 texts under 0.9993; edge 0.99931 / 0.99975. dev-multi[53] stays weight-limited on this file
/// too: 0.98196 with exact activations (this table and an earlier one happened to land it above
/// 0.99; it swings with any perturbation, so its floor stays at 0.98).
#[test]
fn q8_0_with_f16_token_embedding() {
    let path = model_fetch::testing::gguf(model_fetch::OutType::Q8_0_F16Emb);
    let file = gguf_format::GgufFile::open(&path).expect("the converted file parses");
    let emb = file.tensor("token_embd.weight").expect("token_embd");
    assert_eq!(emb.ggml_type.name(), "F16");
    assert_eq!(file.tensor("blk.0.attn_q.weight").expect("attn_q").ggml_type.name(), "Q8_0");
    let e = Embedder::builder().model(&path).threads(2).build().expect("loads");
    let multi = run_set("dev-multi", &e);
    assert!(multi.min >= 0.98 && multi.mean >= 0.99975, "dev-multi min {} mean {}", multi.min, multi.mean);
    assert!(multi.cos.iter().filter(|&&c| c < Q8_0_TEXT_BAR).count() <= 2);
    let edge = run_set("edge", &e);
    assert!(edge.min >= 0.9992 && edge.mean >= 0.99973, "edge min {} mean {}", edge.min, edge.mean);
    let en = run_set("dev-en", &e);
    assert!(en.min >= Q8_0_MIN_COSINE && en.mean >= Q8_0_MEAN_COSINE, "dev-en min {} mean {}", en.min, en.mean);
}
