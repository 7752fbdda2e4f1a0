//! Where a cold start goes: `cargo run --release -p embed-runtime --example load_time [-- MODEL]`.
//! Times opening the GGUF, building the tokenizer, loading (packing) the model and the first
//! and second vector of a short text, each in a fresh `Embedder` stage by stage.

use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| model_fetch::testing::gguf(model_fetch::OutType::Q8_0));
    let t = Instant::now();
    let file = Arc::new(gguf_format::GgufFile::open(&model)?);
    let open = t.elapsed();
    let t = Instant::now();
    let _tok = embed_runtime::load_tokenizer(&model)?;
    let tok = t.elapsed();
    let t = Instant::now();
    let m = gemma_model::GemmaModel::load(Arc::clone(&file), gemma_model::LoadOptions::default())?;
    let load = t.elapsed();
    drop(m);
    let t = Instant::now();
    let e = embed_runtime::Embedder::builder().model(&model).build()?;
    let build = t.elapsed();
    let t = Instant::now();
    e.embed(&["A man is playing a flute."])?;
    let first = t.elapsed();
    let t = Instant::now();
    e.embed(&["A man is playing a flute."])?;
    let second = t.elapsed();
    println!("open {:.1} ms, tokenizer {:.1} ms, model load {:.1} ms; Embedder::build {:.1} ms, first vector {:.1} ms, second {:.1} ms",
        open.as_secs_f64() * 1e3, tok.as_secs_f64() * 1e3, load.as_secs_f64() * 1e3, build.as_secs_f64() * 1e3, first.as_secs_f64() * 1e3, second.as_secs_f64() * 1e3);
    Ok(())
}
