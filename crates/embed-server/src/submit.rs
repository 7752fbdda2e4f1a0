//! The path every embedding request takes after its body is parsed: limits → permits →
//! tokenize → queue → wait (bounded by the queue timeout) → vectors in input order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue};
use embed_runtime::{EmbedOptions, Embedder, Prepared, TextError};

use crate::api::{ApiError, Kind};
use crate::batcher::{Entry, InputPermit, Ticket};
use crate::inputs::{Inputs, RawInput};
use crate::server::AppState;

/// Requests whose inputs hold more than this many bytes (or more than [`INLINE_INPUTS`] inputs)
/// are tokenized on tokio's blocking pool, so a large request does not hold up a worker that
/// serves sockets.
const INLINE_BYTES: usize = 4096;
const INLINE_INPUTS: usize = 8;

/// Runs `work` (tokenizing a large request) on tokio's blocking pool, so it holds up no worker
/// that serves sockets, and with a turn of the tokenizing gate (one per core). The turn moves
/// into the blocking task, so it is held for exactly as long as the work runs, even when the
/// client goes away: the tokenizers' memory stays a few large requests' whatever the number
/// waiting.
pub(crate) async fn tokenize_blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let turn = Arc::clone(&state.tokenizing)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(Kind::Unavailable, "the server is stopping"))?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(|e| ApiError::new(Kind::Internal, format!("tokenization failed: {e}")))?
}

/// An embedding request's body as `T`, and the server's default options; a refusal counts in
/// `te_request_failure` (the request never reaches `submit::embed`, which counts the rest).
pub(crate) fn read_embedding_request<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(EmbedOptions, T), ApiError> {
    let defaults = state.embedder().inspect_err(|_| state.metrics.reject("unavailable"))?.options().clone();
    let req = crate::body::parse(body, state.config.payload_limit).inspect_err(|e| state.metrics.reject(e.reason()))?;
    Ok((defaults, req))
}

/// `n` items (`what`) in one request, within `--max-client-batch`, else a 422 naming `field`.
pub(crate) fn within_client_batch(state: &AppState, n: usize, field: &str, what: &str) -> Result<(), ApiError> {
    let limit = state.config.max_client_batch;
    if n > limit {
        return Err(ApiError::field(
            field,
            format!("{n} {what}, more than this server's limit of {limit} per request (--max-client-batch)"),
        ));
    }
    Ok(())
}

/// The vectors of a request, in input order, its token counts and where its time went.
pub(crate) struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
    /// Characters of its text inputs (token-id inputs count none).
    pub characters: usize,
    /// From arrival to the inputs tokenized and checked.
    pub tokenization: Duration,
    /// From then to the first pass that carried one of its inputs.
    pub queue: Duration,
    /// From that pass's start to the end of the last pass that carried one.
    pub inference: Duration,
    /// From arrival to the last vector.
    pub total: Duration,
}

/// TEI's response headers on an embedding, in the order [`Embedded::timing_headers`] writes
/// them (a CORS layer exposes the same list to pages).
pub(crate) const TIMING_HEADERS: [&str; 8] = [
    "x-compute-type",
    "x-compute-time",
    "x-compute-characters",
    "x-compute-tokens",
    "x-total-time",
    "x-tokenization-time",
    "x-queue-time",
    "x-inference-time",
];

impl Embedded {
    /// TEI's response headers (times in whole milliseconds), which its benchmark and some
    /// clients read.
    pub fn timing_headers(&self, headers: &mut HeaderMap) {
        let ms = |d: Duration| HeaderValue::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let values = [
            HeaderValue::from_static("cpu"),
            ms(self.total),
            HeaderValue::from(self.characters),
            HeaderValue::from(self.tokens),
            ms(self.total),
            ms(self.tokenization),
            ms(self.queue),
            ms(self.inference),
        ];
        for (name, value) in TIMING_HEADERS.into_iter().zip(values) {
            headers.insert(name, value);
        }
    }
}

/// Embeds `inputs` with `options`, counting the request in the `te_*` metrics. `field` names
/// the input field in error messages (`input` or `inputs`).
pub(crate) async fn embed(
    state: &AppState,
    inputs: Inputs,
    options: EmbedOptions,
    field: &'static str,
) -> Result<Embedded, ApiError> {
    let start = Instant::now();
    let method = if inputs.single { "single" } else { "batch" };
    let metrics = &state.metrics;
    metrics.request_count.with_label_values(&[method]).inc();
    let too_many = inputs.items.len() > state.config.max_client_batch;
    let result = run(state, inputs, options, field, start).await;
    match &result {
        Ok(_) => {
            metrics.request_success.with_label_values(&[method]).inc();
            metrics.request_duration.observe(start.elapsed().as_secs_f64());
        }
        Err(e) => match e.kind {
            Kind::Overloaded => {
                metrics.fail("overloaded");
                metrics.request_rejected.inc();
            }
            Kind::QueueTimeout => {
                metrics.fail("queue_timeout");
                metrics.request_queue_timeout.inc();
            }
            Kind::Unavailable => metrics.fail("unavailable"),
            Kind::Internal => metrics.fail("inference"),
            // Too many inputs is TEI's `batch_size`; the rest is validation.
            _ if too_many => metrics.fail("batch_size"),
            _ => metrics.fail("validation"),
        },
    }
    result
}

async fn run(
    state: &AppState,
    inputs: Inputs,
    options: EmbedOptions,
    field: &'static str,
    start: Instant,
) -> Result<Embedded, ApiError> {
    state.health.accepting()?;
    let embedder = state.embedder()?.clone();
    let config = &state.config;
    let n = inputs.items.len();
    within_client_batch(state, n, field, "inputs")?;
    // Permits first: a refused request costs no tokenization.
    let permits = match InputPermit::try_acquire(&state.permits, n) {
        Some(p) => p,
        None => {
            // Inputs of clients that went away still hold permits until the batcher reaches
            // them; free those and try once more.
            state.queue.purge(&state.metrics);
            InputPermit::try_acquire(&state.permits, n).ok_or_else(|| {
                ApiError::new(
                    Kind::Overloaded,
                    format!(
                        "the server is at its limit of {} queued inputs (--max-concurrent-inputs); retry later",
                        config.max_concurrent_inputs
                    ),
                )
            })?
        }
    };
    let weight: usize = inputs.items.iter().map(RawInput::weight).sum();
    let (prepared, characters) = if weight <= INLINE_BYTES && n <= INLINE_INPUTS {
        prepare_all(&embedder, &inputs, &options, field)
    } else {
        let embedder = embedder.clone();
        tokenize_blocking(state, move || prepare_all(&embedder, &inputs, &options, field)).await
    }?;
    let tokenized = Instant::now();
    state
        .metrics
        .request_tokenization_duration
        .observe((tokenized - start).as_secs_f64());
    let tokens = prepared.iter().map(Prepared::tokens).sum();
    for p in &prepared {
        state.metrics.request_input_length.observe(p.tokens() as f64);
    }

    let (ticket, mut rx) = Ticket::new();
    let entries = prepared
        .into_iter()
        .zip(permits)
        .enumerate()
        .map(|(index, (prepared, permit))| Entry {
            prepared,
            index,
            ticket: Arc::clone(&ticket),
            _permit: permit,
        })
        .collect();
    state.queue.push(entries, &state.metrics)?;

    let deadline = tokio::time::Instant::from_std(tokenized) + config.queue_timeout;
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut remaining = n;
    let (mut first_start, mut last_finish): (Option<Instant>, Option<Instant>) = (None, None);
    while remaining > 0 {
        let done = if ticket.waiting() {
            tokio::select! {
                done = rx.recv() => done,
                () = tokio::time::sleep_until(deadline) => {
                    if ticket.expire() {
                        return Err(ApiError::new(
                            Kind::QueueTimeout,
                            format!(
                                "the request waited {} ms in the queue without starting (--queue-timeout); the server is busy, retry later",
                                config.queue_timeout.as_millis()
                            ),
                        ));
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(done) = done else {
            return Err(ApiError::new(Kind::Internal, "the batcher stopped before answering"));
        };
        first_start = Some(first_start.map_or(done.started, |t| t.min(done.started)));
        last_finish = Some(last_finish.map_or(done.finished, |t| t.max(done.finished)));
        match done.result {
            Ok(v) => {
                if vectors[done.index].replace(v).is_none() {
                    remaining -= 1;
                }
            }
            Err(message) => {
                return Err(ApiError::new(Kind::Internal, format!("embedding failed: {message}")));
            }
        }
    }
    // n > 0 (an empty input list is refused while parsing), so some pass answered.
    let (first, last) = (first_start.unwrap_or(tokenized), last_finish.unwrap_or(tokenized));
    let queue = first.saturating_duration_since(tokenized);
    let inference = last.saturating_duration_since(first);
    state.metrics.request_queue_duration.observe(queue.as_secs_f64());
    state.metrics.request_inference_duration.observe(inference.as_secs_f64());
    Ok(Embedded {
        vectors: vectors.into_iter().map(|v| v.expect("every index answered")).collect(),
        tokens,
        characters,
        tokenization: tokenized - start,
        queue,
        inference,
        total: start.elapsed(),
    })
}

/// Every input tokenized and checked, and the characters of its texts (for
/// `x-compute-characters`, counted here so a large request is counted off tokio's threads too).
fn prepare_all(
    embedder: &Embedder,
    inputs: &Inputs,
    options: &EmbedOptions,
    field: &str,
) -> Result<(Vec<Prepared>, usize), ApiError> {
    let prepared = inputs
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            embedder
                .prepare(item.as_input(), options)
                .map_err(|e| text_error(e, &inputs.param(field, i)))
        })
        .collect::<Result<_, _>>()?;
    Ok((prepared, inputs.items.iter().map(RawInput::characters).sum()))
}

/// A 422 naming the input (or `prompt_name`) at fault.
pub(crate) fn text_error(e: TextError, param: &str) -> ApiError {
    match e {
        TextError::TooLong { tokens, limit } => ApiError::field(
            param,
            format!(
                "{tokens} tokens, more than the model's context of {limit}; shorten it or allow truncation (`truncate: true`)"
            ),
        ),
        TextError::PromptWithIds => ApiError::field(
            "prompt_name",
            format!("a prompt applies to text inputs only, and `{param}` is token ids (used as given)"),
        ),
        other => ApiError::field(param, other),
    }
}

/// A duration in whole milliseconds, for `/info`.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// `prompt_name`: one of the model's named prompts, else a 422 listing them.
pub(crate) fn named_prompt(name: &str) -> Result<embed_runtime::Prompt, ApiError> {
    embed_runtime::Prompt::named(name).ok_or_else(|| {
        let names: Vec<&str> = embed_runtime::NAMED_PROMPTS.iter().map(|(n, _)| *n).collect();
        ApiError::field(
            "prompt_name",
            format!("unknown prompt {name:?}; this model's prompts are {}", names.join(", ")),
        )
    })
}

/// `dimensions`: a Matryoshka size, else a 422 listing them.
pub(crate) fn dims(n: usize) -> Result<embed_runtime::Dims, ApiError> {
    embed_runtime::Dims::new(n).map_err(|_| {
        let sizes: Vec<String> = embed_runtime::MATRYOSHKA_DIMS.iter().map(|d| d.to_string()).collect();
        ApiError::field(
            "dimensions",
            format!("{n} is not one of this model's sizes; use one of {}", sizes.join(", ")),
        )
    })
}
