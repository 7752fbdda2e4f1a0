//! One 9-token and one 512-token text through the whole model, single thread, quantized path
//! on the Q8_0 GGUF (the model file comes from model-fetch's cache).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemma_model::{GemmaModel, LoadOptions, ModelScratch, NumericPath, Serial};

fn forward(c: &mut Criterion) {
    let path = model_fetch::testing::gguf(model_fetch::OutType::Q8_0);
    let model = GemmaModel::open(
        path,
        LoadOptions {
            path: NumericPath::Quantized,
            isa: None,
            ..LoadOptions::default()
        },
    )
    .expect("load Q8_0 model");
    let isa = model.kernels().isa();
    // "A man is playing a flute." with <bos>/<eos>, as in trace-flute.npz.
    let short: Vec<u32> = vec![2, 236776, 880, 563, 5662, 496, 87712, 236761, 1];
    // 512 ids: <bos>, 510 ordinary ids cycling through a sentence's pieces, <eos>.
    let mut long = vec![2u32];
    long.extend(short[1..8].iter().cycle().take(510));
    long.push(1);
    let mut scratch = ModelScratch::new(&model, 512);
    let mut out = vec![0.0f32; model.embedding_dim()];
    let mut g = c.benchmark_group(format!("forward/q8_0/{isa}"));
    for (name, ids) in [("9_tokens", &short), ("512_tokens", &long)] {
        g.throughput(Throughput::Elements(ids.len() as u64));
        if ids.len() > 100 {
            g.sample_size(10);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                model
                    .embed_batch(&[ids.as_slice()], &mut scratch, &Serial, &mut out)
                    .expect("embed");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
