//! In the steady state an `embed` call allocates a constant amount, whatever the number of texts:
//! tokenizer, model and pool buffers are all reused, and only the returned matrix (and its two
//! per-text side vectors) is new. A counting global allocator proves it.

use std::alloc::System;
use std::sync::atomic::{AtomicU64, Ordering};

use embed_runtime::{Embedder, Parallelism};
use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker, Allocator};

#[global_allocator]
static GLOBAL: Allocator<System> = Allocator::system();

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, object_size: usize, _wrapped: usize, _group: AllocationGroupId) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(object_size as u64, Ordering::Relaxed);
    }
    fn deallocated(&self, _addr: usize, _object_size: usize, _wrapped: usize, _src: AllocationGroupId, _dst: AllocationGroupId) {}
}

/// Allocations and bytes of one call.
fn measure(e: &Embedder, texts: &[String], mode: Parallelism) -> (u64, u64) {
    let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    AllocationRegistry::enable_tracking();
    let out = e.embed_with(texts, mode).expect("embed");
    AllocationRegistry::disable_tracking();
    drop(out);
    (ALLOCS.load(Ordering::SeqCst) - a0, BYTES.load(Ordering::SeqCst) - b0)
}

fn sentences(n: usize) -> Vec<String> {
    let path = model_fetch::testing::reference_file("emb-dev-en.jsonl");
    std::fs::read_to_string(path)
        .expect("reference sentences")
        .lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn steady_state_allocations_do_not_grow_with_the_number_of_texts() {
    AllocationRegistry::set_global_tracker(Counter).expect("tracker installed once");
    let model = model_fetch::testing::gguf(model_fetch::OutType::Q8_0);
    let e = Embedder::builder().model(model).threads(2).build().expect("model loads");
    let big = sentences(64);
    let small: Vec<String> = big[..16].to_vec();
    for mode in [Parallelism::Coarse, Parallelism::Fine] {
        // Warm every buffer to the largest shape first.
        for _ in 0..2 {
            measure(&e, &big, mode);
            measure(&e, &small, mode);
        }
        // The thread pool's scheduler allocates now and then on its own (crossbeam's deferred
        // garbage, a worker's first steal), whatever the call; such noise only ever adds, so
        // compare the least each size needed over a few calls. Allocations per text would show
        // in every call of the larger size.
        let (mut n_small, mut bytes_small, mut n_big, mut bytes_big) = (u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        for _ in 0..5 {
            let (n, b) = measure(&e, &small, mode);
            (n_small, bytes_small) = (n_small.min(n), bytes_small.min(b));
            let (n, b) = measure(&e, &big, mode);
            (n_big, bytes_big) = (n_big.min(n), bytes_big.min(b));
        }
        eprintln!("{mode:?}: 16 texts {n_small} allocations / {bytes_small} B; 64 texts {n_big} / {bytes_big} B");
        assert_eq!(n_big, n_small, "{mode:?}: allocation count grows with the number of texts");
        // Beyond the result (768 f32 + a token count + a flag per text) and per-call planning
        // vectors (a few words per text), nothing grows.
        let result_growth = 48 * (768 * 4 + 8 + 1);
        let planning_growth = 48 * 64;
        assert!(
            bytes_big - bytes_small <= (result_growth + planning_growth) as u64,
            "{mode:?}: {bytes_big} B for 64 texts vs {bytes_small} B for 16"
        );
        assert!(n_small < 64, "{mode:?}: {n_small} allocations for one call is more than a constant few");
    }
}
