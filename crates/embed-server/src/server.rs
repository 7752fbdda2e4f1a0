//! Binding, routing, the batcher thread's life, and shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use embed_runtime::{EmbedError, Embedder, Prompt, Truncation};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::api::{ApiError, Flavor, Kind};
use crate::batcher::{self, Health, Queue};
use crate::config::{Config, ModelSource, ServerBuilder};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::submit::millis;

/// The entry point: `Server::builder()...bind(addr).await`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the defaults (the default model, the `DEFAULT_*` limits).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    pub queue: Queue,
    pub health: Health,
    pub permits: Arc<Semaphore>,
    /// One per request in progress on the embedding and tokenizing routes.
    pub requests: Arc<Semaphore>,
    /// One per large request being tokenized (as many as cores).
    pub tokenizing: Arc<Semaphore>,
    embedder: OnceLock<Embedder>,
}

impl AppState {
    /// The model, once loaded.
    pub fn embedder(&self) -> Result<&Embedder, ApiError> {
        match self.embedder.get() {
            Some(e) => Ok(e),
            None => Err(self
                .health
                .check()
                .err()
                .unwrap_or_else(|| ApiError::new(Kind::Unavailable, "the model is loading"))),
        }
    }
}

/// Where loading stands, for [`RunningServer::wait_ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Load {
    Loading,
    Ready,
    Failed(String),
}

/// Asks a running server to stop: stop accepting, finish in-flight requests within the shutdown
/// deadline, stop the batcher. Cheap to clone; calling it more than once is harmless.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown (returns at once; [`RunningServer::wait`] tells when done).
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// A bound server. It serves until [`ShutdownHandle::shutdown`]; [`RunningServer::wait`] waits
/// for that and for the batcher to stop.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    load: watch::Receiver<Load>,
    load_error: Arc<Mutex<Option<EmbedError>>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address the socket is bound to (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Waits until the model is loaded (`/health` says 200 from then on), or failed to load.
    pub async fn wait_ready(&self) -> Result<(), ServerError> {
        let mut rx = self.load.clone();
        let state = rx
            .wait_for(|l| *l != Load::Loading)
            .await
            .map(|l| l.clone())
            .unwrap_or_else(|_| Load::Failed("the batcher thread stopped".into()));
        match state {
            Load::Ready => Ok(()),
            Load::Failed(why) => Err(match self.load_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => ServerError::Load(e),
                None => ServerError::Batcher(why),
            }),
            Load::Loading => unreachable!("waited for a change"),
        }
    }

    /// Waits until the server has shut down (after [`ShutdownHandle::shutdown`]).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Batcher(format!("the server task failed: {e}"))),
        }
    }

    /// Shuts down gracefully and waits until done.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.shutdown();
        self.wait().await
    }
}

impl ServerBuilder {
    /// Checks the limits, binds `addr` (e.g. `"127.0.0.1:0"`), starts the batcher thread (which
    /// loads the model first: `/health` is 503 until then) and starts serving. Needs a tokio
    /// runtime with the `net` and `time` drivers.
    pub async fn bind(self, addr: &str) -> Result<RunningServer, ServerError> {
        let ServerBuilder { source, config } = self;
        config.check().map_err(ServerError::Config)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            source,
        })?;

        let state = Arc::new(AppState {
            metrics: Metrics::new(MAX_INPUT_LENGTH_BUCKETS),
            queue: Queue::new(),
            health: Health::new(config.stall_timeout),
            permits: Arc::new(Semaphore::new(config.max_concurrent_inputs)),
            requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            tokenizing: Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))),
            embedder: OnceLock::new(),
            config,
        });

        let (load_tx, load_rx) = watch::channel(Load::Loading);
        let load_error = Arc::new(Mutex::new(None));
        let batcher = spawn_batcher(source, Arc::clone(&state), load_tx, Arc::clone(&load_error))
            .map_err(|e| ServerError::Batcher(format!("cannot start the batcher thread: {e}")))?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let router = router(Arc::clone(&state));
        let task = tokio::spawn(serve(listener, local, router, state, stop_rx, batcher));
        Ok(RunningServer {
            addr: local,
            shutdown: ShutdownHandle {
                tx: Arc::new(stop_tx),
            },
            load: load_rx,
            load_error,
            task,
        })
    }
}

/// Buckets of `te_request_input_length` go up to this (EmbeddingGemma's context).
const MAX_INPUT_LENGTH_BUCKETS: usize = 2048;

fn spawn_batcher(
    source: ModelSource,
    state: Arc<AppState>,
    load: watch::Sender<Load>,
    load_error: Arc<Mutex<Option<EmbedError>>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("embed-batcher".into())
        .spawn(move || {
            let embedder = match source {
                ModelSource::Ready(e) => Ok(e),
                ModelSource::Load(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                    .unwrap_or_else(|p| Err(EmbedError::WorkerPanic(panic_text(&*p)))),
            };
            let embedder = match embedder {
                Ok(e) => e,
                Err(e) => {
                    let why = e.to_string();
                    *load_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    state.health.set_failed(why.clone());
                    load.send_replace(Load::Failed(why));
                    return;
                }
            };
            let embedder = state.embedder.get_or_init(|| embedder);
            state.health.set_ready();
            load.send_replace(Load::Ready);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                batcher::run(
                    embedder,
                    &state.queue,
                    &state.metrics,
                    &state.health,
                    state.config.max_batch_tokens,
                )
            }));
            if let Err(p) = run {
                // Unreachable unless there is a bug; fail loudly instead of stalling clients:
                // queued requests get a 500 (their channels close), new ones a 503.
                state.health.set_failed(format!("the batcher panicked: {}", panic_text(&*p)));
                state.queue.close();
            }
        })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

async fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    batcher: std::thread::JoinHandle<()>,
) -> Result<(), ServerError> {
    let deadline = state.config.shutdown_deadline;
    let mut stop_signal = stop.clone();
    let health_state = Arc::clone(&state);
    let graceful = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop_signal.wait_for(|s| *s).await;
        health_state.health.set_stopping();
    });
    let mut graceful = std::pin::pin!(graceful.into_future());
    let result = tokio::select! {
        r = &mut graceful => r.map_err(|source| ServerError::Serve { addr, source }),
        () = async {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(deadline).await;
        } => Err(ServerError::DeadlineExceeded(deadline)),
    };
    // Every handler has answered (or the deadline cut them): stop the batcher, which finishes
    // the pass it is in.
    state.queue.close();
    let joined = tokio::task::spawn_blocking(move || batcher.join()).await;
    match (result, joined) {
        (Err(e), _) => Err(e),
        (Ok(()), Ok(Ok(()))) => Ok(()),
        (Ok(()), _) => Err(ServerError::Batcher("the batcher thread panicked".into())),
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.payload_limit;
    let body_timeout = state.config.body_timeout;
    // The routes that read a body and tokenize it: admitted up to the request limit, so the
    // memory a flood can take is bounded before any body is read.
    let heavy = Router::new()
        .route("/v1/embeddings", post(crate::openai::embeddings))
        // OpenAI's path without the version, as TEI also serves it.
        .route("/embeddings", post(crate::openai::embeddings))
        .route("/embed", post(crate::tei::embed))
        .route("/similarity", post(crate::tei::similarity))
        .route("/tokenize", post(crate::tei::tokenize))
        .route("/decode", post(crate::tei::decode))
        // TEI's default route for an embedding model, and SageMaker's name for it.
        .route("/", post(crate::tei::root))
        .route("/invocations", post(crate::tei::root))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), admit));
    let routes = Router::new()
        .merge(heavy)
        .route("/v1/models", get(crate::openai::models))
        .route("/v1/models/{id}", get(crate::openai::model))
        .route("/info", get(info))
        .route("/health", get(health))
        // TEI's other health paths: the Inference API's `GET /` and SageMaker's `/ping`.
        .route("/", get(health))
        .route("/ping", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout));
    // Outermost: a preflight is answered before the API key is asked for, and refusals (401,
    // 413, 429) carry the headers too, so a page can read why it was refused.
    match cors(&state.config.cors_allow_origin) {
        Some(layer) => routes.layer(layer).with_state(state),
        None => routes.with_state(state),
    }
}

/// The CORS layer for `origins` (checked by `Config::check`), or none when there are none.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            // Whatever headers the page's client sends (the official OpenAI JavaScript client
            // adds its own `x-stainless-*`): the origin is what is vetted, not the headers.
            .allow_headers(AllowHeaders::mirror_request())
            // Chrome asks before a public page may call a server on a private address such as
            // 127.0.0.1; an origin listed here is one the operator let in.
            .allow_private_network(true)
            .expose_headers(crate::submit::TIMING_HEADERS.map(HeaderName::from_static))
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// A request to an embedding or tokenizing route runs only with one of the
/// `max_concurrent_requests` permits, held until its response has been sent (or the connection
/// dropped), so a client that does not read its answer keeps counting; without one it is
/// answered 429 at once, its body unread.
async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if let Err(e) = check_headers(request.headers(), state.config.payload_limit) {
        if counts_as_embedding(&request) {
            state.metrics.reject(e.reason());
        }
        return e.into_response(Flavor::of_path(path));
    }
    match Arc::clone(&state.requests).try_acquire_owned() {
        Ok(permit) => {
            let (parts, body) = next.run(request).await.into_parts();
            Response::from_parts(parts, Body::new(Held { body, rest: Bytes::new(), _permit: permit }))
        }
        Err(_) => {
            if counts_as_embedding(&request) {
                state.metrics.reject("overloaded");
            }
            state.metrics.request_rejected.inc();
            ApiError::new(
                Kind::Overloaded,
                format!(
                    "the server is at its limit of {} requests in progress (--max-concurrent-requests); retry later",
                    state.config.max_concurrent_requests
                ),
            )
            .into_response(Flavor::of_path(request.uri().path()))
        }
    }
}

/// What the headers alone decide, before a permit is taken or a byte of the body read: a
/// declared length past the payload limit is 413 at once (a client sending `Expect:
/// 100-continue` is not invited to upload it, one declaring a terabyte is not waited for), and
/// a compressed body is 415 (bodies are read as plain JSON; a decompressed size would escape
/// the payload limit).
fn check_headers(headers: &HeaderMap, payload_limit: usize) -> Result<(), ApiError> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim());
    if let Some(enc) = encoding.filter(|e| !e.eq_ignore_ascii_case("identity")) {
        return Err(ApiError::new(
            Kind::UnsupportedEncoding,
            format!("the body is sent with `Content-Encoding: {enc}`; this server reads uncompressed JSON bodies only"),
        ));
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n > payload_limit as u64) {
        return Err(ApiError::new(
            Kind::PayloadTooLarge,
            format!("the body is larger than this server's payload limit of {payload_limit} bytes"),
        ));
    }
    Ok(())
}

/// Requests `te_request_count` counts (TEI's: embedding requests, not `/tokenize` or a probe
/// of `/` with another method).
fn counts_as_embedding(request: &Request) -> bool {
    request.method() == axum::http::Method::POST
        && matches!(
            request.uri().path(),
            "/v1/embeddings" | "/embeddings" | "/embed" | "/similarity" | "/" | "/invocations"
        )
}

/// A response body and the request permit it holds until it is dropped. The body is handed
/// to hyper in slices of at most [`SLICE`] bytes: hyper asks for the next slice only once it
/// has written the last, so the body, and with it the permit, lasts until the answer has
/// (nearly) all gone out, where one frame of the whole body would be taken, and the permit
/// freed, at once.
struct Held {
    body: Body,
    rest: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// Largest slice of a response body handed to hyper at a time.
const SLICE: usize = 64 << 10;

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        loop {
            if !self.rest.is_empty() {
                let n = self.rest.len().min(SLICE);
                let slice = self.rest.split_to(n);
                return Poll::Ready(Some(Ok(http_body::Frame::data(slice))));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// `Authorization: Bearer KEY` on every route but the health probes (`/health`, `/ping`,
/// `GET /`: load balancers probe without credentials), compared in constant time.
async fn auth(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(request).await;
    };
    if is_health(&request) || authorized(request.headers(), key) {
        return next.run(request).await;
    }
    if counts_as_embedding(&request) {
        state.metrics.reject("unauthorized");
    }
    ApiError::new(
        Kind::Unauthorized,
        "missing or wrong API key: send `Authorization: Bearer <key>`",
    )
    .into_response(Flavor::of_path(request.uri().path()))
}

/// The health probes, which answer without the API key (a load balancer has none).
fn is_health(request: &Request) -> bool {
    match request.uri().path() {
        "/health" | "/ping" => true,
        "/" => matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD),
        _ => false,
    }
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim().as_bytes(), key.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    ApiError::new(Kind::NotFound, format!("no route {} {path}", request.method()))
        .into_response(Flavor::of_path(&path))
}

/// A known route asked with another method: the error in the route's shape (axum adds `Allow`,
/// from the methods the route was registered with).
async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    ApiError::new(
        Kind::MethodNotAllowed,
        format!("{path} does not take {}; its `Allow` header names the methods it takes", request.method()),
    )
    .into_response(Flavor::of_path(&path))
}

/// 200 when a request would be served now; 503 while loading, when stopping, when the model
/// failed, or when one forward pass has run past the stall timeout.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.health.check() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response(),
        Err(e) => e.into_response(Flavor::Tei),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// TEI's `Info` fields (so TEI clients read it) plus this server's limits and effective request
/// defaults.
async fn info(State(state): State<Arc<AppState>>) -> Response {
    let embedder = match state.embedder() {
        Ok(e) => e,
        Err(e) => return e.into_response(Flavor::Tei),
    };
    let c = &state.config;
    let defaults = embedder.options();
    let prompt_name = match defaults.prompt() {
        Prompt::Named(name) => Some(*name),
        _ => None,
    };
    let truncation = match defaults.truncation() {
        Truncation::Right => "right",
        Truncation::Left => "left",
        Truncation::Error => "error",
    };
    let prompts: serde_json::Map<String, serde_json::Value> = embed_runtime::NAMED_PROMPTS
        .iter()
        .map(|(n, p)| ((*n).to_owned(), json!(p)))
        .collect();
    axum::Json(json!({
        "model_id": c.served_model_name,
        "model_sha": null,
        "model_dtype": "gguf",
        "model_type": { "embedding": { "pooling": "mean" } },
        "served_model_name": c.served_model_name,
        "model_path": embedder.model_path(),
        "max_concurrent_requests": c.max_concurrent_requests,
        "max_concurrent_inputs": c.max_concurrent_inputs,
        "max_input_length": embedder.context_length(),
        "max_batch_tokens": c.max_batch_tokens,
        "max_batch_requests": null,
        "max_client_batch_size": c.max_client_batch,
        "payload_limit": c.payload_limit,
        "queue_timeout_ms": millis(c.queue_timeout),
        "shutdown_deadline_ms": millis(c.shutdown_deadline),
        "stall_timeout_ms": millis(c.stall_timeout),
        "auto_truncate": defaults.truncation() != Truncation::Error,
        "api_key_required": c.api_key.is_some(),
        "cors_allow_origin": c.cors_allow_origin,
        "threads": embedder.threads(),
        "isa": format!("{:?}", embedder.isa()),
        "vocab_size": embedder.vocab_size(),
        "dimensions": embed_runtime::MATRYOSHKA_DIMS,
        "defaults": {
            "prompt_name": prompt_name,
            "prompt": defaults.prompt().prefix(),
            "dimensions": defaults.dims().get(),
            // What a request that leaves it out gets: `/embed`'s `normalize` is true unless sent
            // false (TEI's default), and `/v1/embeddings` scales every `dimensions` prefix
            // back to unit length (OpenAI's); the full-size vector is unit length already.
            "normalize": true,
            "truncation": truncation,
        },
        "prompts": prompts,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}
