//! The machine's own limits beside the runtime, in one run:
//! `cargo run --release -p embed-runtime --example perf_limits [-- ROUNDS]`.
//!
//! - memory bandwidth: a STREAM-style triad (`a[i] = b[i] + s·c[i]`, 3 × 128 MiB arrays) on 1
//!   and 2 threads, best of 5;
//! - the bytes one forward pass must stream (every packed weight matrix once; the token
//!   embedding rows are a few KB) and the time that takes at the measured bandwidth: the floor
//!   for one short text;
//! - one short text (batch 1, 2 threads), its time and the share of that floor it reaches;
//! - batch 32 on the best ISA and on AVX2 (what most AMD cloud machines run), interleaved;
//! - `-- rss`: alone in its process, the peak RSS of one `Embedder` after a 32-text batch,
//!   beside the GGUF's size.

use std::time::Instant;

use embed_runtime::{Embedder, Isa, Parallelism};

fn triad(threads: usize) -> f64 {
    const N: usize = 16 << 20; // 16 Mi f64 = 128 MiB per array
    let mut a = vec![0f64; N];
    let b = vec![1f64; N];
    let c = vec![2f64; N];
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            let chunk = N.div_ceil(threads);
            for ((a, b), c) in a.chunks_mut(chunk).zip(b.chunks(chunk)).zip(c.chunks(chunk)) {
                s.spawn(move || {
                    for ((x, y), z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + 3.0 * z;
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        best = best.max((3 * N * 8) as f64 / secs);
    }
    std::hint::black_box(&a);
    best
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    let rounds: usize = arg.as_deref().and_then(|s| s.parse().ok()).unwrap_or(20);
    let model = model_fetch::testing::gguf(model_fetch::OutType::Q8_0);
    let dir = model_fetch::testing::reference_dir();
    let texts: Vec<String> = std::fs::read_to_string(dir.join("tokens-dev-en.jsonl"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["text"].as_str().unwrap_or_default().to_owned()))
        .collect::<Result<_, _>>()?;

    if arg.as_deref() == Some("rss") {
        let e = Embedder::builder().model(&model).threads(2).build()?;
        let after_load = peak_rss_kb();
        e.embed(&texts[..32])?;
        let gguf = std::fs::metadata(&model)?.len();
        println!(
            "peak RSS: {:.1} MB after load, {:.1} MB after a 32-text batch; GGUF {:.1} MB (ratio {:.2})",
            after_load as f64 / 1e3,
            peak_rss_kb() as f64 / 1e3,
            gguf as f64 / 1e6,
            peak_rss_kb() as f64 * 1e3 / gguf as f64
        );
        return Ok(());
    }
    let (bw1, bw2) = (triad(1), triad(2));
    println!("memory bandwidth (triad): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s", bw1 / 1e9, bw2 / 1e9);

    let best = Embedder::builder().model(&model).threads(2).build()?;
    let file = gguf_format::GgufFile::open(&model)?;
    let packed = gemma_model::GemmaModel::load(std::sync::Arc::new(file), Default::default())?.packed_bytes();
    let floor = packed as f64 / bw2;
    println!("bytes one forward pass streams: {:.1} MB (packed weights) -> floor {:.2} ms at {:.1} GB/s", packed as f64 / 1e6, floor * 1e3, bw2 / 1e9);

    // Batch 1: short texts, fine mode (what Auto runs for one text).
    let mut secs = Vec::new();
    for i in 0..rounds * 3 + 3 {
        let t = Instant::now();
        best.embed_with(&[&texts[i % texts.len()]], Parallelism::Fine)?;
        if i >= 3 {
            secs.push(t.elapsed().as_secs_f64());
        }
    }
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let tokens: usize = (3..rounds * 3 + 3).map(|i| best.tokenizer().encode(&texts[i % texts.len()]).len()).sum::<usize>() / (rounds * 3);
    println!("batch 1 (mean {tokens} tokens): median {:.2} ms = {:.0} texts/s; the bandwidth floor is {:.0} % of that", median * 1e3, 1.0 / median, 100.0 * floor / median);

    // Batch 32 on the best ISA and on AVX2, interleaved.
    let avx2 = Embedder::builder().model(&model).threads(2).isa(Isa::Avx2).build()?;
    let mut t32 = [0f64; 2];
    for round in 0..=rounds {
        let start = (round * 32 * 7) % (texts.len() - 32);
        let chunk = &texts[start..start + 32];
        for (i, e) in [&best, &avx2].into_iter().enumerate() {
            let t = Instant::now();
            e.embed(chunk)?;
            if round > 0 {
                t32[i] += t.elapsed().as_secs_f64();
            }
        }
    }
    let tps = t32.map(|s| (rounds * 32) as f64 / s);
    println!("batch 32: {:?} {:.1} texts/s, Avx2 {:.1} texts/s ({:.0} %)", best.isa(), tps[0], tps[1], 100.0 * tps[1] / tps[0]);
    Ok(())
}
