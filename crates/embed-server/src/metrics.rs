//! Prometheus metrics under TEI's `te_*` names and meanings, so TEI dashboards work unchanged,
//! plus counters for rejected, timed-out and dropped work.
//!
//! One registry per server rather than the `metrics` crate's global recorder: a library must not
//! take a process-wide slot its host may want, and tests run many servers in one process.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    /// `te_request_count{method="single"|"batch"|"unknown"}`: embedding requests received;
    /// `unknown` when one was answered before its inputs were read (a malformed body, a limit,
    /// the API key, a server still loading), so that every failure is also a request.
    pub request_count: IntCounterVec,
    /// `te_request_success{method}`: embedding requests answered 200.
    pub request_success: IntCounterVec,
    /// `te_request_failure{err}`: TEI's reasons (`validation`, `tokenization`, `overloaded`,
    /// `batch_size`, `inference`, `dropped`) plus `queue_timeout`, `unavailable`, `payload`,
    /// `unauthorized`.
    pub request_failure: IntCounterVec,
    /// `te_request_duration`: seconds from arrival to answer.
    pub request_duration: Histogram,
    pub request_tokenization_duration: Histogram,
    pub request_queue_duration: Histogram,
    pub request_inference_duration: Histogram,
    /// `te_request_input_length`: tokens of each input.
    pub request_input_length: Histogram,
    /// `te_batch_next_size` / `te_batch_next_tokens`: inputs and tokens of each forward pass.
    pub batch_next_size: Histogram,
    pub batch_next_tokens: Histogram,
    /// `te_batch_inference_duration`: seconds of each forward pass.
    pub batch_inference_duration: Histogram,
    /// `te_queue_size`: inputs waiting.
    pub queue_size: IntGauge,
    /// `te_embed_count`: inputs embedded.
    pub embed_count: IntCounter,
    /// `te_request_rejected`: requests answered 429 because every input permit was taken.
    pub request_rejected: IntCounter,
    /// `te_request_queue_timeout`: requests answered 503 after waiting past the queue timeout.
    pub request_queue_timeout: IntCounter,
    /// `te_input_dropped`: queued inputs dropped uncomputed because their client went away.
    pub input_dropped: IntCounter,
}

fn powers_of_two(n: i32) -> Vec<f64> {
    (0..n).map(|x| 2f64.powi(x)).collect()
}

/// TEI's duration buckets: 35 steps of ×1.5 from 15 µs.
fn duration_buckets() -> Vec<f64> {
    let mut v = 0.00001;
    (0..35)
        .map(|_| {
            v *= 1.5;
            v
        })
        .collect()
}

impl Metrics {
    pub fn new(max_input_length: usize) -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let input_buckets: Vec<f64> = powers_of_two(20)
            .into_iter()
            .filter(|&x| x as usize <= max_input_length.max(1))
            .collect();
        let queue_size = IntGauge::new("te_queue_size", "Inputs waiting in the queue").expect("valid metric");
        registry.register(Box::new(queue_size.clone())).expect("unique metric");
        Metrics {
            request_count: counter_vec("te_request_count", "Embedding requests received", "method"),
            request_success: counter_vec("te_request_success", "Embedding requests answered", "method"),
            request_failure: counter_vec("te_request_failure", "Embedding requests failed, by reason", "err"),
            request_duration: histogram("te_request_duration", "Request duration (s)", duration_buckets()),
            request_tokenization_duration: histogram(
                "te_request_tokenization_duration",
                "Request tokenization duration (s)",
                duration_buckets(),
            ),
            request_queue_duration: histogram(
                "te_request_queue_duration",
                "Time a request waited before its first input started (s)",
                duration_buckets(),
            ),
            request_inference_duration: histogram(
                "te_request_inference_duration",
                "Time from a request's first input starting to its last finishing (s)",
                duration_buckets(),
            ),
            request_input_length: histogram("te_request_input_length", "Tokens per input", input_buckets),
            batch_next_size: histogram("te_batch_next_size", "Inputs per forward pass", powers_of_two(13)),
            batch_next_tokens: histogram("te_batch_next_tokens", "Tokens per forward pass", powers_of_two(21)),
            batch_inference_duration: histogram(
                "te_batch_inference_duration",
                "Forward pass duration (s)",
                duration_buckets(),
            ),
            queue_size,
            embed_count: counter("te_embed_count", "Inputs embedded"),
            request_rejected: counter("te_request_rejected", "Requests answered 429: every input permit taken"),
            request_queue_timeout: counter(
                "te_request_queue_timeout",
                "Requests answered 503 after waiting in the queue past the queue timeout",
            ),
            input_dropped: counter("te_input_dropped", "Queued inputs dropped because their client disconnected"),
            registry,
        }
    }

    /// A failure of a request already counted in `te_request_count`.
    pub fn fail(&self, reason: &str) {
        self.request_failure.with_label_values(&[reason]).inc();
    }

    /// A request answered with an error before its inputs were read: counted, and failed.
    pub fn reject(&self, reason: &str) {
        self.request_count.with_label_values(&["unknown"]).inc();
        self.fail(reason);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}
