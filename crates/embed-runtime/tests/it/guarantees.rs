//! A text's vector does not depend on its batch, the thread count or the parallelism mode, and
//! one `Embedder` serves many threads at once.

use std::sync::Arc;

use embed_runtime::{Embedder, Parallelism};

use crate::support::*;

fn embedder(threads: usize, parallelism: Parallelism) -> Embedder {
    Embedder::builder()
        .model(q8_0_model())
        .threads(threads)
        .parallelism(parallelism)
        // Small enough that the long texts force several forward passes per call.
        .token_budget(512)
        .build()
        .expect("model loads")
}

#[test]
fn vectors_are_bit_identical_across_batches_threads_and_modes() {
    let texts = mixed_texts();
    let base = embedder(1, Parallelism::Coarse);
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| base.embed(&[t]).expect("embed alone").row(0).to_vec())
        .collect();

    let runs = [
        (1, Parallelism::Coarse),
        (2, Parallelism::Coarse),
        (2, Parallelism::Fine),
        (2, Parallelism::Auto),
        (3, Parallelism::Coarse),
        (3, Parallelism::Fine),
    ];
    for (threads, mode) in runs {
        let e = embedder(threads, mode);
        let batch = e.embed(&texts).expect("embed batch");
        for (i, want) in alone.iter().enumerate() {
            assert_eq!(
                batch.row(i),
                &want[..],
                "text {i} differs in a batch ({threads} threads, {mode:?}) from alone"
            );
        }
        // A reversed batch puts every text among other neighbours and in other work items.
        let reversed: Vec<&String> = texts.iter().rev().collect();
        let rev = e.embed(&reversed).expect("embed reversed");
        for (i, want) in alone.iter().enumerate() {
            assert_eq!(rev.row(texts.len() - 1 - i), &want[..], "text {i} reversed ({threads}, {mode:?})");
        }
    }
}

#[test]
fn many_threads_may_share_one_embedder() {
    let texts = mixed_texts();
    let e = Arc::new(embedder(2, Parallelism::Auto));
    let want = e.embed(&texts).expect("embed").into_vec();
    let dim = e.dim();
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let e = Arc::clone(&e);
            let texts = texts.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    // Each caller takes a different slice and mode, so calls interleave on the
                    // pool in every combination.
                    let from = (k * 5 + round) % texts.len();
                    let mode = [Parallelism::Coarse, Parallelism::Fine, Parallelism::Auto][(k + round) % 3];
                    let got = e.embed_with(&texts[from..], mode).expect("embed");
                    for (j, row) in got.iter().enumerate() {
                        let i = from + j;
                        assert_eq!(row, &want[i * dim..(i + 1) * dim], "caller {k} round {round} text {i}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("caller thread");
    }
}

#[test]
fn empty_batch_and_empty_text() {
    let e = q8_0();
    let none: [&str; 0] = [];
    let out = e.embed(&none).expect("empty batch");
    assert!(out.is_empty());
    assert_eq!(out.dim(), 768);

    let out = e.embed(&[""]).expect("empty text is valid");
    assert_eq!(out.token_counts(), &[2], "<bos><eos>");
    let (cases, want) = reference_set("edge");
    let i = cases.iter().position(|c| c.text.is_empty()).expect("edge set has the empty text");
    assert!(cosine(out.row(0), &want[i]) >= Q8_0_MIN_COSINE);
}

#[test]
fn auto_plans_fine_for_one_text_and_coarse_for_a_full_batch() {
    let e = embedder(2, Parallelism::Auto);
    assert_eq!(e.plan(&["one short sentence"]), Parallelism::Fine);
    let texts = mixed_texts();
    let many: Vec<&String> = texts.iter().take(24).collect();
    assert_eq!(e.plan(&many), Parallelism::Coarse);
}

/// A call that its caller stops (Python's Ctrl-C) gives up within a layer and leaves the
/// `Embedder` as it was; one never stopped returns exactly what `embed_with_options` does.
#[test]
fn a_stopped_call_gives_up_within_a_layer_and_loses_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use embed_runtime::{EmbedError, EmbedOptions};

    let texts = mixed_texts();
    let options = EmbedOptions::default();
    for mode in [Parallelism::Fine, Parallelism::Coarse] {
        let e = embedder(2, mode);
        let want = e.embed_with_options(&texts, &options, mode).expect("embed");
        let asked = AtomicUsize::new(0);
        let never = || {
            asked.fetch_add(1, Ordering::Relaxed);
            false
        };
        let got = e.embed_with_options_until(&texts, &options, mode, &never).expect("not stopped");
        assert_eq!(got.as_slice(), want.as_slice(), "{mode:?}: bits as without a stop condition");
        let per_call = asked.load(Ordering::Relaxed);
        // Asked before every layer of every forward pass (24 layers; the budget of 512 tokens
        // makes several passes), not once per call.
        assert!(per_call >= 2 * 24, "{mode:?}: asked {per_call} times");

        // Stopped after the third question: no layer runs after the stop is seen, so the call
        // ends after at most one more question per worker.
        asked.store(0, Ordering::Relaxed);
        let soon = || asked.fetch_add(1, Ordering::Relaxed) >= 2;
        match e.embed_with_options_until(&texts, &options, mode, &soon) {
            Err(EmbedError::Stopped) => {}
            other => panic!("{mode:?}: {:?}", other.map(|r| r.len())),
        }
        let after = asked.load(Ordering::Relaxed);
        assert!(after <= 3 + 2, "{mode:?}: {after} questions, work went on after the stop");
        assert_eq!(e.embed_with_options(&texts, &options, mode).expect("usable").as_slice(), want.as_slice());
    }
}
