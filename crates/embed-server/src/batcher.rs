//! The queue and the batcher thread that owns the model.
//!
//! Handlers push one [`Entry`] per input; the batcher takes entries in arrival order up to the
//! token budget, runs them in one [`Embedder::embed_prepared`] call (on the runtime's worker
//! pool, never on tokio's threads) and sends each vector back on its request's channel.
//! A request's state ([`Ticket`]) decides, under a compare-and-swap, whether its inputs are
//! computed or it has timed out: never both.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embed_runtime::{Embedder, Prepared};
use tokio::sync::{Semaphore, mpsc};

use crate::api::{ApiError, Kind};
use crate::metrics::Metrics;

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const EXPIRED: u8 = 2;

/// The longest the batcher waits for stragglers before a pass (see [`Queue::next_batch`]).
const GATHER_MAX: Duration = Duration::from_millis(20);
/// While gathering, a pause this long between two arrivals means the burst is over.
const GATHER_GAP: Duration = Duration::from_millis(2);

/// One request's link to the batcher.
pub(crate) struct Ticket {
    tx: mpsc::UnboundedSender<Done>,
    state: AtomicU8,
    dropped: AtomicBool,
}

impl Ticket {
    pub fn new() -> (Arc<Ticket>, mpsc::UnboundedReceiver<Done>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ticket = Ticket {
            tx,
            state: AtomicU8::new(WAITING),
            dropped: AtomicBool::new(false),
        };
        (Arc::new(ticket), rx)
    }

    /// Whether none of the request's inputs has started yet.
    pub fn waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// Marks the request timed out if none of its inputs has started; then none ever will.
    pub fn expire(&self) -> bool {
        self.state
            .compare_exchange(WAITING, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the request started; false if it had timed out.
    fn start(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == STARTED,
        }
    }

    /// The client went away (its handler, holding the receiver, was dropped).
    fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }
}

/// One input's result, sent back to its handler.
pub(crate) struct Done {
    pub index: usize,
    pub result: Result<Vec<f32>, String>,
    pub started: Instant,
    pub finished: Instant,
}

/// One of the permits a request took for its inputs; dropping it (input computed, dropped, or
/// its request refused) gives it back.
pub(crate) struct InputPermit(Arc<Semaphore>);

impl InputPermit {
    /// `n` permits, or `None` at once if fewer are free.
    pub fn try_acquire(semaphore: &Arc<Semaphore>, n: usize) -> Option<Vec<InputPermit>> {
        let n32 = u32::try_from(n).ok()?;
        let permits = semaphore.try_acquire_many(n32).ok()?;
        permits.forget();
        Some((0..n).map(|_| InputPermit(Arc::clone(semaphore))).collect())
    }
}

impl Drop for InputPermit {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

/// One queued input.
pub(crate) struct Entry {
    pub prepared: Prepared,
    pub index: usize,
    pub ticket: Arc<Ticket>,
    /// Held, not read: freed with the entry.
    pub _permit: InputPermit,
}

impl Entry {
    /// Dead entries (client gone, request timed out) are skipped and their permits freed.
    fn dead(&self, metrics: &Metrics) -> bool {
        // A timed-out request was counted as such by its handler, whose answer then dropped
        // the receiver: that is not a client going away.
        if self.ticket.state.load(Ordering::Acquire) == EXPIRED {
            return true;
        }
        if self.ticket.abandoned() {
            metrics.input_dropped.inc();
            if !self.ticket.dropped.swap(true, Ordering::Relaxed) {
                metrics.fail("dropped");
            }
            return true;
        }
        false
    }
}

struct QueueState {
    entries: VecDeque<Entry>,
    closed: bool,
    /// When the last request was queued.
    last_push: Instant,
}

/// The queue between handlers and the batcher.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    pub fn new() -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                entries: VecDeque::new(),
                closed: false,
                last_push: Instant::now(),
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves a consistent deque (pushes and pops only).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a request's entries, in order; refused once the server is stopping.
    pub fn push(&self, entries: Vec<Entry>, metrics: &Metrics) -> Result<(), ApiError> {
        let mut state = self.lock();
        if state.closed {
            return Err(ApiError::new(Kind::Unavailable, "the server is shutting down"));
        }
        state.entries.extend(entries);
        state.last_push = Instant::now();
        metrics.queue_size.set(state.entries.len() as i64);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Drops entries whose clients went away or whose requests timed out, freeing their permits
    /// (a refused request calls this before answering 429).
    pub fn purge(&self, metrics: &Metrics) {
        let mut state = self.lock();
        state.entries.retain(|e| !e.dead(metrics));
        metrics.queue_size.set(state.entries.len() as i64);
    }

    /// Stops the batcher once the queue is empty; entries still queued are dropped.
    pub fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.entries)
        };
        drop(dropped);
        self.ready.notify_all();
    }

    /// The next pass: queued inputs in arrival order up to `max_tokens` (at least one), or
    /// `None` once the queue is closed.
    ///
    /// `last` is the previous pass's input count and duration. A closed loop of N clients sends
    /// its next requests only after the previous pass's answers arrive, and the first to arrive
    /// would otherwise start a small pass that makes all the others wait a whole pass more (the
    /// passes alternate small and large, and the small ones run at batch-1 efficiency). So while
    /// fewer inputs are queued than the last pass took, the batcher gathers: it waits for the
    /// burst of returning requests until they have all come back, or no request has arrived for
    /// [`GATHER_GAP`] (counted from the end of the last pass), or a quarter of the last pass's
    /// time (at most [`GATHER_MAX`]) has passed. A lone client (last pass of one input, one
    /// queued) never waits, nor does an idle server's first request.
    fn next_batch(&self, max_tokens: usize, metrics: &Metrics, last: (usize, Duration)) -> Option<Vec<Entry>> {
        let (last_size, last_time) = last;
        let pass_end = Instant::now();
        let gather_until = pass_end + (last_time / 4).min(GATHER_MAX);
        let mut state = self.lock();
        loop {
            while state.entries.is_empty() && !state.closed {
                state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            while state.entries.len() < last_size && !state.closed {
                // Arrivals during the last pass do not count: the burst starts when it ends.
                let until = gather_until.min(state.last_push.max(pass_end) + GATHER_GAP);
                let now = Instant::now();
                if now >= until {
                    break;
                }
                state = self
                    .ready
                    .wait_timeout(state, until - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if state.closed {
                return None;
            }
            let mut batch = Vec::new();
            let mut tokens = 0;
            while let Some(entry) = state.entries.front() {
                if entry.dead(metrics) {
                    state.entries.pop_front();
                    continue;
                }
                let t = entry.prepared.tokens();
                if !batch.is_empty() && tokens + t > max_tokens {
                    break;
                }
                let entry = state.entries.pop_front().expect("front exists");
                if entry.ticket.start() {
                    tokens += t;
                    batch.push(entry);
                }
            }
            metrics.queue_size.set(state.entries.len() as i64);
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }
}

const LOADING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;
const STOPPING: u8 = 3;

/// What `/health` and the handlers check before queueing.
pub(crate) struct Health {
    phase: AtomicU8,
    /// When the running pass started, in nanoseconds after `base` plus one; 0 when idle.
    pass_started: AtomicU64,
    base: Instant,
    failure: Mutex<Option<String>>,
    stall_timeout: Duration,
}

impl Health {
    pub fn new(stall_timeout: Duration) -> Health {
        Health {
            phase: AtomicU8::new(LOADING),
            pass_started: AtomicU64::new(0),
            base: Instant::now(),
            failure: Mutex::new(None),
            stall_timeout,
        }
    }

    pub fn set_ready(&self) {
        let _ = self
            .phase
            .compare_exchange(LOADING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn set_failed(&self, why: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.phase.store(FAILED, Ordering::Release);
    }

    pub fn set_stopping(&self) {
        if self.phase.load(Ordering::Acquire) != FAILED {
            self.phase.store(STOPPING, Ordering::Release);
        }
    }

    fn pass_begin(&self) {
        let ns = self.base.elapsed().as_nanos() as u64 + 1;
        self.pass_started.store(ns, Ordering::Release);
    }

    fn pass_end(&self) {
        self.pass_started.store(0, Ordering::Release);
    }

    /// `Ok` when a request queued now would be served.
    pub fn check(&self) -> Result<(), ApiError> {
        match self.phase.load(Ordering::Acquire) {
            LOADING => return Err(ApiError::new(Kind::Unavailable, "the model is loading")),
            FAILED => {
                let why = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(ApiError::new(
                    Kind::Unavailable,
                    format!("the model cannot serve: {}", why.unwrap_or_default()),
                ));
            }
            STOPPING => return Err(ApiError::new(Kind::Unavailable, "the server is shutting down")),
            _ => {}
        }
        let started = self.pass_started.load(Ordering::Acquire);
        if started != 0 {
            let running = self
                .base
                .elapsed()
                .saturating_sub(Duration::from_nanos(started - 1));
            if running > self.stall_timeout {
                return Err(ApiError::new(
                    Kind::Unavailable,
                    format!(
                        "the batcher is stuck: one forward pass has run for {:.1} s (stall timeout {:.1} s)",
                        running.as_secs_f64(),
                        self.stall_timeout.as_secs_f64()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Only for handlers: loading and failure refuse a request, a long pass does not (the
    /// queue timeout bounds its wait).
    pub fn accepting(&self) -> Result<(), ApiError> {
        match self.phase.load(Ordering::Acquire) {
            READY => Ok(()),
            _ => self.check(),
        }
    }
}

/// The batcher thread's loop: until the queue closes, take a pass, run it, answer it.
pub(crate) fn run(embedder: &Embedder, queue: &Queue, metrics: &Metrics, health: &Health, max_tokens: usize) {
    let mut last = (0, Duration::ZERO);
    while let Some(batch) = queue.next_batch(max_tokens, metrics, last) {
        let tokens: usize = batch.iter().map(|e| e.prepared.tokens()).sum();
        metrics.batch_next_size.observe(batch.len() as f64);
        metrics.batch_next_tokens.observe(tokens as f64);
        let refs: Vec<&Prepared> = batch.iter().map(|e| &e.prepared).collect();
        health.pass_begin();
        let started = Instant::now();
        let result = embedder.embed_prepared(&refs);
        let finished = Instant::now();
        health.pass_end();
        drop(refs);
        metrics.batch_inference_duration.observe((finished - started).as_secs_f64());
        last = (batch.len(), finished - started);
        match result {
            Ok(vectors) => {
                metrics.embed_count.inc_by(vectors.len() as u64);
                for (entry, v) in batch.into_iter().zip(vectors) {
                    let _ = entry.ticket.tx.send(Done {
                        index: entry.index,
                        result: Ok(v),
                        started,
                        finished,
                    });
                }
            }
            Err(e) => {
                let message = e.to_string();
                for entry in batch {
                    let _ = entry.ticket.tx.send(Done {
                        index: entry.index,
                        result: Err(message.clone()),
                        started,
                        finished,
                    });
                }
            }
        }
    }
}
