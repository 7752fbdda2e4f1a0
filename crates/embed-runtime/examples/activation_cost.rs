//! Speed of the two activation schemes side by side, interleaved call by call so a load spike
//! hits both alike: `cargo run --release -p embed-runtime --example activation_cost [-- ROUNDS]`.
//! Prints texts/s of each at batch 1 and 32 on STS-B en-dev sentences, and the ratio.

use std::time::Instant;

use embed_runtime::{ActivationPrecision, Embedder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let model = model_fetch::testing::gguf(model_fetch::OutType::Q8_0);
    let dir = model_fetch::testing::reference_dir();
    let texts: Vec<String> = std::fs::read_to_string(dir.join("tokens-dev-en.jsonl"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["text"].as_str().unwrap_or_default().to_owned()))
        .collect::<Result<_, _>>()?;
    let build = |a| Embedder::builder().model(&model).threads(2).activations(a).build();
    let engines = [build(ActivationPrecision::Int8)?, build(ActivationPrecision::Int8Outliers)?];
    for batch in [1usize, 32] {
        let mut secs = [0f64; 2];
        for round in 0..rounds + 1 {
            let start = (round * batch * 7) % (texts.len() - batch);
            let chunk = &texts[start..start + batch];
            for (i, e) in engines.iter().enumerate() {
                let t = Instant::now();
                e.embed(chunk)?;
                if round > 0 {
                    secs[i] += t.elapsed().as_secs_f64();
                }
            }
        }
        let tps = secs.map(|s| (rounds * batch) as f64 / s);
        println!("batch {batch:3}: int8 {:.1} texts/s, int8+outliers {:.1} texts/s, ratio {:.3}", tps[0], tps[1], tps[1] / tps[0]);
    }
    Ok(())
}
