//! Encoding with a warmed-up `Scratch` and output vector allocates nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracking_allocator::{AllocationGroupId, AllocationGroupToken, AllocationRegistry, AllocationTracker};

use crate::support;

/// The group whose allocations are counted: other tests of this binary run on other threads
/// at the same time, and their allocations land in other groups.
static GROUP: AtomicUsize = AtomicUsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// One counting window at a time.
static WINDOW: Mutex<()> = Mutex::new(());

struct Counter;

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, _size: usize, _wrapped: usize, group: AllocationGroupId) {
        if group.as_usize().get() == GROUP.load(Ordering::SeqCst) {
            COUNT.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn deallocated(&self, _addr: usize, _size: usize, _wrapped: usize, _src: AllocationGroupId, _dst: AllocationGroupId) {}
}

/// Allocations made by `f` on this thread.
fn count_allocs(f: impl FnOnce()) -> usize {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| AllocationRegistry::set_global_tracker(Counter).expect("the only tracker"));
    let _window = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
    let mut token = AllocationGroupToken::register().expect("allocation group");
    GROUP.store(token.id().as_usize().get(), Ordering::SeqCst);
    COUNT.store(0, Ordering::SeqCst);
    AllocationRegistry::enable_tracking();
    let guard = token.enter();
    f();
    drop(guard);
    AllocationRegistry::disable_tracking();
    COUNT.load(Ordering::SeqCst)
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
