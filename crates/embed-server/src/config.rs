//! [`ServerBuilder`]: where the model comes from and the limits the server enforces.

use std::path::PathBuf;
use std::time::Duration;

use embed_runtime::{EmbedError, Embedder};

/// Tokens one forward pass takes from the queue (one full-length text): a pass is the unit of
/// batching, and longer passes only add latency once the cores are busy.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 2048;
/// Inputs queued or in flight at once; past it a request is answered 429 at once.
pub const DEFAULT_MAX_CONCURRENT_INPUTS: usize = 2048;
/// Requests to the routes that read a body (`/v1/embeddings`, `/embed`, `/tokenize`, ...) being
/// read, tokenized, queued or computed at once (TEI's default); past it a request is answered
/// 429 before its body is read.
/// Each may hold about twice `--payload-limit` bytes (its body, then its parsed texts), so
/// this and the payload limit bound what a flood of large requests can take (2437 MiB peak for
/// 800 concurrent 1.35 MB requests at the defaults, `python/bench/flood_server.py`) instead of
/// as much as clients send.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
/// Inputs one request may carry (OpenAI allows 2048; LangChain sends 1000 by default, TEI
/// accepts 32).
pub const DEFAULT_MAX_CLIENT_BATCH: usize = 512;
/// Largest request body in bytes (TEI's default).
pub const DEFAULT_PAYLOAD_LIMIT: usize = 2_000_000;
/// How long a request may wait in the queue before any of its inputs starts.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may take to finish after a shutdown is asked for.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// A forward pass running longer than this makes `/health` answer 503 (the batcher is stuck).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The model name reported in `/info` and OpenAI responses.
pub const DEFAULT_SERVED_MODEL_NAME: &str = "embeddinggemma-300m";
/// How long a client may take between two chunks of a request body.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) type Loader = Box<dyn FnOnce() -> Result<Embedder, EmbedError> + Send>;

/// Where the batcher's [`Embedder`] comes from.
pub(crate) enum ModelSource {
    /// Built on the batcher thread after the socket is bound (`/health` says 503 meanwhile).
    Load(Loader),
    /// Already built.
    Ready(Embedder),
}

/// The limits and names the running server uses, as `/info` reports them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub max_batch_tokens: usize,
    pub max_concurrent_inputs: usize,
    pub max_concurrent_requests: usize,
    pub max_client_batch: usize,
    pub payload_limit: usize,
    pub queue_timeout: Duration,
    pub shutdown_deadline: Duration,
    pub stall_timeout: Duration,
    pub body_timeout: Duration,
    pub api_key: Option<String>,
    pub served_model_name: String,
    /// Origins whose browser requests get CORS headers (`*`: any); empty: none.
    pub cors_allow_origin: Vec<String>,
}

/// Configures and starts a server; see [`Server::builder`](crate::Server::builder).
pub struct ServerBuilder {
    pub(crate) source: ModelSource,
    pub(crate) config: Config,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut config = self.config.clone();
        if config.api_key.is_some() {
            config.api_key = Some("<redacted>".into());
        }
        f.debug_struct("ServerBuilder").field("config", &config).finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            source: ModelSource::Load(Box::new(|| Embedder::builder().build())),
            config: Config {
                max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
                max_concurrent_inputs: DEFAULT_MAX_CONCURRENT_INPUTS,
                max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
                max_client_batch: DEFAULT_MAX_CLIENT_BATCH,
                payload_limit: DEFAULT_PAYLOAD_LIMIT,
                queue_timeout: DEFAULT_QUEUE_TIMEOUT,
                shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                api_key: None,
                served_model_name: DEFAULT_SERVED_MODEL_NAME.into(),
                cors_allow_origin: Vec::new(),
            },
        }
    }
}

impl ServerBuilder {
    /// Serve the GGUF at `path` with the runtime's defaults (all cores). The model loads after
    /// the socket is bound; until then `/health` answers 503.
    pub fn model(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.loader(move || Embedder::builder().model(path).build())
    }

    /// Serve the model this closure builds (run on the batcher thread after the socket is
    /// bound): the way to choose threads, default prompt or dimension. Without it or
    /// [`ServerBuilder::model`], the default model is fetched into the cache.
    pub fn loader(
        mut self,
        load: impl FnOnce() -> Result<Embedder, EmbedError> + Send + 'static,
    ) -> Self {
        self.source = ModelSource::Load(Box::new(load));
        self
    }

    /// Serve an already built embedder (it may be shared with other users).
    pub fn embedder(mut self, embedder: Embedder) -> Self {
        self.source = ModelSource::Ready(embedder);
        self
    }

    /// Most tokens one forward pass takes from the queue (default
    /// [`DEFAULT_MAX_BATCH_TOKENS`]). A pass always takes at least one input, however long.
    pub fn max_batch_tokens(mut self, n: usize) -> Self {
        self.config.max_batch_tokens = n;
        self
    }

    /// Most inputs queued or in flight (default [`DEFAULT_MAX_CONCURRENT_INPUTS`]); a request
    /// that would pass it is answered 429 at once.
    pub fn max_concurrent_inputs(mut self, n: usize) -> Self {
        self.config.max_concurrent_inputs = n;
        self
    }

    /// Most requests to the embedding and tokenizing routes in progress at once (default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`]); one more is answered 429 before its body is read.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.config.max_concurrent_requests = n;
        self
    }

    /// Most inputs in one request (default [`DEFAULT_MAX_CLIENT_BATCH`]); more is a 422.
    pub fn max_client_batch(mut self, n: usize) -> Self {
        self.config.max_client_batch = n;
        self
    }

    /// Largest request body in bytes (default [`DEFAULT_PAYLOAD_LIMIT`]); more is a 413.
    pub fn payload_limit(mut self, bytes: usize) -> Self {
        self.config.payload_limit = bytes;
        self
    }

    /// How long a request may wait before any of its inputs starts (default
    /// [`DEFAULT_QUEUE_TIMEOUT`]); then it is answered 503 and never computed.
    pub fn queue_timeout(mut self, t: Duration) -> Self {
        self.config.queue_timeout = t;
        self
    }

    /// How long in-flight requests may take to finish once shutdown is asked for (default
    /// [`DEFAULT_SHUTDOWN_DEADLINE`]).
    pub fn shutdown_deadline(mut self, t: Duration) -> Self {
        self.config.shutdown_deadline = t;
        self
    }

    /// A forward pass running longer than this makes `/health` answer 503 (default
    /// [`DEFAULT_STALL_TIMEOUT`]).
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.config.stall_timeout = t;
        self
    }

    /// Most time between two chunks of a request body before the request is answered 408.
    pub fn body_timeout(mut self, t: Duration) -> Self {
        self.config.body_timeout = t;
        self
    }

    /// Requires `Authorization: Bearer KEY` on every route but the health probes (`/health`,
    /// `/ping`, `GET /`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// The model name in `/info` and OpenAI responses (default
    /// [`DEFAULT_SERVED_MODEL_NAME`]).
    pub fn served_model_name(mut self, name: impl Into<String>) -> Self {
        self.config.served_model_name = name.into();
        self
    }

    /// Lets web pages from these origins call the server (`https://app.example`, as a browser
    /// sends it in `Origin`, or `*` for any): every response to them carries CORS headers, and
    /// a browser's preflight `OPTIONS` is answered before the API key is checked, since browsers
    /// send no credentials on one. Default: none, so browsers refuse cross-origin calls.
    pub fn cors_allow_origin<S: Into<String>>(mut self, origins: impl IntoIterator<Item = S>) -> Self {
        self.config.cors_allow_origin = origins.into_iter().map(Into::into).collect();
        self
    }
}

impl Config {
    /// Limits that cannot work together are refused before the socket is bound.
    pub(crate) fn check(&self) -> Result<(), String> {
        let positive = [
            ("max batch tokens", self.max_batch_tokens),
            ("max concurrent inputs", self.max_concurrent_inputs),
            ("max concurrent requests", self.max_concurrent_requests),
            ("max client batch", self.max_client_batch),
            ("payload limit", self.payload_limit),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_client_batch > self.max_concurrent_inputs {
            return Err(format!(
                "max client batch ({}) is more than max concurrent inputs ({}): such a request could never be queued",
                self.max_client_batch, self.max_concurrent_inputs
            ));
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if self.max_concurrent_inputs > (u32::MAX as usize) {
            return Err("max concurrent inputs is too large".into());
        }
        if self.max_concurrent_requests > (u32::MAX as usize) {
            return Err("max concurrent requests is too large".into());
        }
        if self.api_key.as_deref() == Some("") {
            return Err("the API key is empty".into());
        }
        let origins = &self.cors_allow_origin;
        if origins.len() > 1 && origins.iter().any(|o| o == "*") {
            return Err("a CORS origin of `*` allows every origin and cannot be listed with others".into());
        }
        for o in origins.iter().filter(|o| *o != "*") {
            check_origin(o).map_err(|why| format!("CORS origin {o:?} {why}"))?;
        }
        Ok(())
    }
}

/// An origin as a browser serializes it in `Origin` (the only form that can ever match it):
/// `scheme://host[:port]` in lower case, an internationalized name in its `xn--` form, no
/// default port, no path, query, fragment or user.
fn check_origin(o: &str) -> Result<(), String> {
    const FORM: &str = "is not an origin as a browser sends it: scheme://host[:port], e.g. https://app.example";
    let (scheme, rest) = o.split_once("://").ok_or(FORM)?;
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Err(FORM.into());
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err("has more than scheme://host[:port] (a path, query, fragment or user, or a trailing slash), which a browser never sends".into());
    }
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: [hex and colons], then an optional :port.
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(FORM)?;
            if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                return Err(FORM.into());
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(FORM)?),
            };
            (addr, port)
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err(FORM.into());
    }
    if !rest.starts_with('[') {
        if host.chars().any(|c| c.is_ascii_uppercase()) {
            return Err("has capital letters; browsers send the host in lower case".into());
        }
        if !host.is_ascii() {
            return Err("has a non-ASCII host; browsers send its xn-- (punycode) form".into());
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(FORM.into());
        }
    }
    if let Some(p) = port {
        let n: u16 = p.parse().ok().filter(|&n| n > 0 && !p.starts_with('0')).ok_or("has a port that is not a number from 1 to 65535")?;
        if (scheme, n) == ("https", 443) || (scheme, n) == ("http", 80) {
            return Err(format!("names {scheme}'s default port {n}, which browsers leave out"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins_are_taken_only_in_the_form_browsers_send() {
        for ok in [
            "https://app.example",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:5173",
            "https://xn--caf-dma.example",
            "chrome-extension://abcdefghijklmnop",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("app.example", "scheme://host"),
            ("https://app.example/", "trailing slash"),
            ("https://app.example/path", "path"),
            ("https://app.example?q", "query"),
            ("https://user@app.example", "user"),
            ("https://", "scheme://host"),
            ("https://App.Example", "lower case"),
            ("https://café.example", "punycode"),
            ("https://app.example:443", "default port"),
            ("http://app.example:80", "default port"),
            ("https://app.example:99999", "1 to 65535"),
            ("https://app.example:0", "1 to 65535"),
            ("https://app example", "scheme://host"),
            ("https://app.example\u{200b}", "punycode"),
            ("HTTPS://app.example", "scheme://host"),
            ("http://[::1", "scheme://host"),
        ] {
            let e = check_origin(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
