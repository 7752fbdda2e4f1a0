//! Encoding with a warmed-up `Scratch` and output vector allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::support;

/// Counts allocations made by the current thread while `COUNTING` is set.
pub struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count_allocs(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn steady_state_encoding_does_not_allocate() {
    // The counter sees this thread's allocations, or the zeros below would mean nothing.
    assert_eq!(count_allocs(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(10)))), 1);
    let tok = support::gguf_tokenizer();
    let mut texts: Vec<String> = ["en", "ja"].iter().flat_map(|l| support::dev_cases(l)).map(|c| c.text).collect();
    texts.push(support::edge_cases().into_iter().find(|c| c.name == "long_3000_tokens").expect("long").text);
    let (mut scratch, mut out) = (bpe_tokenizer::Scratch::new(), Vec::new());
    for t in &texts {
        tok.encode_into_with(t, &mut out, &mut scratch);
    }
    let n = count_allocs(|| {
        for t in &texts {
            tok.encode_into_with(t, &mut out, &mut scratch);
            tok.encode_truncated_into_with(t, 2048, &mut out, &mut scratch).expect("2048 >= 2");
        }
    });
    assert_eq!(n, 0, "allocations while encoding {} warmed-up texts", texts.len());
    // The pooled path allocates nothing either once its scratch is warm.
    for t in &texts {
        tok.encode_into(t, &mut out);
    }
    let n = count_allocs(|| {
        for t in &texts {
            tok.encode_into(t, &mut out);
        }
    });
    assert_eq!(n, 0, "allocations in pooled encode_into");
}
