//! Reference data and model files shared by the runtime's tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use embed_runtime::{Embedder, NumericPath, Prompt};
use model_fetch::OutType;

/// Per-text cosine every Q8_0 vector must reach against sentence-transformers (f32) on the
/// English sets, and the mean over a set: floors just under what the int8 path with outlier
/// residuals reaches (dev-en 0.99976 / 0.99985, query 0.99982 / 0.99986, document 0.99979 /
/// 0.99988). llama.cpp's own Q8_0 path reaches min 0.99954 / mean 0.99967 on dev-en.
pub const Q8_0_MIN_COSINE: f32 = 0.9997;
pub const Q8_0_MEAN_COSINE: f32 = 0.9998;
/// The per-text bar of the sets whose texts are not all well-conditioned (multilingual, long,
/// edge): texts under it are counted and held to the f32-activation ceiling instead.
pub const Q8_0_TEXT_BAR: f32 = 0.9993;
/// An exact f32 implementation differs from the reference only by summation order.
pub const F32_MIN_COSINE: f32 = 0.99999;

pub fn reference_dir() -> PathBuf {
    model_fetch::testing::reference_dir()
}

pub fn q8_0_model() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| model_fetch::testing::gguf(OutType::Q8_0)).clone()
}

pub fn f32_model() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| model_fetch::testing::gguf(OutType::F32)).clone()
}

/// The Q8_0 embedder with default options, shared by tests that need no special set-up.
pub fn q8_0() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::builder()
            .model(q8_0_model())
            .threads(2)
            .numeric(NumericPath::Quantized)
            .build()
            .expect("Q8_0 model loads")
    })
}

/// One line of an `emb-*.jsonl` file.
#[derive(Debug, Clone)]
pub struct Case {
    pub text: String,
    pub input: String,
    pub prompt_name: Option<String>,
    pub ids: Vec<u32>,
}

/// The texts of `emb-<name>.jsonl` and the matching rows of `emb-<name>.npy`.
pub fn reference_set(name: &str) -> (Vec<Case>, Vec<Vec<f32>>) {
    let dir = reference_dir();
    let jsonl = std::fs::read_to_string(dir.join(format!("emb-{name}.jsonl")))
        .unwrap_or_else(|e| panic!("reference emb-{name}.jsonl: {e}"));
    let cases: Vec<Case> = jsonl
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("jsonl line");
            Case {
                text: v["text"].as_str().expect("text").to_owned(),
                input: v["input"].as_str().expect("input").to_owned(),
                prompt_name: v["prompt_name"].as_str().map(str::to_owned),
                ids: v["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect(),
            }
        })
        .collect();
    let bytes = std::fs::read(dir.join(format!("emb-{name}.npy"))).expect("npy");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().to_vec();
    let flat: Vec<f32> = npy.into_vec().expect("f32 npy");
    assert_eq!(shape.len(), 2);
    assert_eq!(shape[0] as usize, cases.len(), "{name}: rows match jsonl lines");
    let d = shape[1] as usize;
    let rows = flat.chunks_exact(d).map(<[f32]>::to_vec).collect();
    (cases, rows)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// Texts of varying length for the determinism tests: short STS-B sentences plus a few long
/// ones made by joining them (the long ones cross the sliding window).
pub fn mixed_texts() -> Vec<String> {
    let (cases, _) = reference_set("dev-en");
    let mut texts: Vec<String> = cases.iter().take(24).map(|c| c.text.clone()).collect();
    let joined: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
    texts.push(joined[..60].join(" "));
    texts.push(joined[60..75].join(" "));
    texts.push(String::new());
    texts
}

/// The Q8_0 embedder configured through the builder (prompt, dims, renormalisation).
pub fn q8_0_with(prompt: Prompt, dims: usize, renormalize: bool) -> Embedder {
    Embedder::builder()
        .model(q8_0_model())
        .threads(2)
        .prompt(prompt)
        .dims(dims)
        .renormalize(renormalize)
        .build()
        .expect("Q8_0 model loads")
}
