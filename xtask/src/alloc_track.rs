//! Allocation counting and allocation-site capture.
//!
//! xtask installs `tracking_allocator::Allocator` as its global allocator (see `main.rs`), which
//! calls [`Counter`] on every allocation of every thread. Counting is two relaxed atomic adds.
//! Site capture is switched on only for a dedicated attribution pass: each allocation then
//! records its raw return addresses, which are symbolised after the pass. The allocator suspends
//! tracking while the tracker runs, so the capture's own allocations are neither counted nor
//! recursed into: that is the re-entrancy guard (a thread-local borrow flag inside
//! `tracking_allocator`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker};

static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static CAPTURE: AtomicBool = AtomicBool::new(false);
static SITES: Mutex<Vec<RawSite>> = Mutex::new(Vec::new());

/// Deepest stack recorded per allocation; deeper frames are the thread's start-up, which never
/// decides the stage.
const MAX_FRAMES: usize = 96;

struct RawSite {
    ips: Vec<usize>,
    bytes: u64,
}

struct Counter;

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, object_size: usize, _wrapped_size: usize, _group: AllocationGroupId) {
        COUNT.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(object_size as u64, Ordering::Relaxed);
        if CAPTURE.load(Ordering::Relaxed) {
            let mut ips = Vec::with_capacity(MAX_FRAMES);
            backtrace::trace(|frame| {
                ips.push(frame.ip() as usize);
                ips.len() < MAX_FRAMES
            });
            if let Ok(mut sites) = SITES.lock() {
                sites.push(RawSite { ips, bytes: object_size as u64 });
            }
        }
    }

    fn deallocated(&self, _addr: usize, _size: usize, _wrapped: usize, _src: AllocationGroupId, _cur: AllocationGroupId) {}
}

/// Starts counting. Call once, first thing in `main`.
pub fn install() {
    // A second call finds the tracker already set, which is harmless.
    let _ = AllocationRegistry::set_global_tracker(Counter);
    AllocationRegistry::enable_tracking();
}

/// Allocations made so far by the whole process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Number of allocations (reallocations count as one each).
    pub count: u64,
    /// Bytes requested.
    pub bytes: u64,
}

impl Snapshot {
    /// Reads the counters.
    pub fn now() -> Self {
        Snapshot { count: COUNT.load(Ordering::Relaxed), bytes: BYTES.load(Ordering::Relaxed) }
    }

    /// Allocations between `earlier` and `self`.
    pub fn since(self, earlier: Snapshot) -> Snapshot {
        Snapshot { count: self.count - earlier.count, bytes: self.bytes - earlier.bytes }
    }
}

/// Begins recording allocation sites (drops any left from an earlier capture).
pub fn start_capture() {
    if let Ok(mut s) = SITES.lock() {
        s.clear();
    }
    CAPTURE.store(true, Ordering::SeqCst);
}

/// An allocation site, symbolised: function names innermost first (inlined frames expanded).
#[derive(Debug, Clone)]
pub struct Site {
    /// Demangled names without hashes, innermost first.
    pub frames: Vec<String>,
    /// Bytes requested.
    pub bytes: u64,
}

/// Stops recording and symbolises what was recorded.
pub fn stop_capture() -> Vec<Site> {
    CAPTURE.store(false, Ordering::SeqCst);
    let raw = match SITES.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => Vec::new(),
    };
    let mut cache: HashMap<usize, Vec<String>> = HashMap::new();
    raw.into_iter()
        .map(|site| {
            let mut frames = Vec::new();
            for ip in site.ips {
                let names = cache.entry(ip).or_insert_with(|| symbolise(ip));
                frames.extend(names.iter().cloned());
            }
            Site { frames, bytes: site.bytes }
        })
        .collect()
}

/// Names at a return address. One address may name several functions when calls were inlined;
/// `backtrace` reports them innermost first.
fn symbolise(ip: usize) -> Vec<String> {
    let mut names = Vec::new();
    // A return address points after the call; one byte back lands inside the calling line.
    let addr = ip.saturating_sub(1) as *mut c_void;
    backtrace::resolve(addr, |sym| {
        if let Some(name) = sym.name() {
            let file = sym.filename().map(|p| p.to_string_lossy().into_owned());
            names.push(crate::stage::qualified_name(&format!("{name:#}"), file.as_deref()));
        }
    });
    // The last name is the function the address is in; the symbol table has its full path.
    if let Some(full) = crate::symtab::Symtab::get().and_then(|t| t.lookup(addr as usize)) {
        match names.last_mut() {
            Some(last) => *last = full.to_string(),
            None => names.push(full.to_string()),
        }
    }
    if names.is_empty() {
        names.push(format!("{ip:#x}"));
    }
    names
}
