//! An HTTP embedding server for EmbeddingGemma: OpenAI's `POST /v1/embeddings` and
//! text-embeddings-inference's `POST /embed`, `/similarity`, `/tokenize`, `/decode` and `/`,
//! `GET /info`, `/health` and `/metrics`, with dynamic batching over one
//! [`embed_runtime::Embedder`].
//!
//! The shape is TEI's router, for the same reasons:
//!
//! - **One queue, one batcher thread that owns the model.** Handlers (on tokio's threads) parse,
//!   validate and tokenize a request, then push one queue entry per input. The batcher thread
//!   takes queued inputs in arrival order up to a token budget, runs them in one
//!   [`Embedder::embed_prepared`](embed_runtime::Embedder::embed_prepared) call on the runtime's
//!   worker pool, and sends each vector back through the request's channel. So texts of many
//!   requests share a forward pass, the math never runs on the async runtime, and a text's vector
//!   is bit-identical to what the library gives for it alone.
//! - **A permit per input, taken with `try_acquire`.** More queued inputs than
//!   `max_concurrent_inputs` is an immediate 429, never a pile-up; permits are taken before any
//!   tokenization, so overload costs almost nothing.
//! - **Memory bounded by the limits, not by the clients.** At most `max_concurrent_requests`
//!   requests to the embedding and tokenizing routes are in progress (one more is a 429 before
//!   its body is read), each body at most `payload_limit` bytes, and at most one large request
//!   per core is tokenized at a time (tokenizing takes tens of bytes per byte of text, and more
//!   threads than cores would only hold more of it at once).
//! - **Every wait is bounded.** A request whose inputs have not started within the queue timeout
//!   gets a 503 and is never computed; a client that disconnects has its queued inputs dropped;
//!   shutdown finishes in-flight requests within a deadline.
//!
//! What TEI does not do and this crate adds: queue timeouts, a shutdown deadline, a nested
//! OpenAI error body, a 503 `/health` while the model loads or when the batcher is stuck, and
//! metrics in a per-server registry (no global recorder, so a process may run several servers).
//!
//! ```no_run
//! # async fn demo() -> Result<(), embed_server::ServerError> {
//! let server = embed_server::Server::builder()
//!     .model("embeddinggemma-300m-q8_0.gguf")
//!     .max_batch_tokens(2048)
//!     .bind("127.0.0.1:8080")
//!     .await?;
//! println!("listening on http://{}", server.local_addr());
//! server.wait_ready().await?;
//! let handle = server.shutdown_handle();
//! // ... later, e.g. on SIGTERM: handle.shutdown();
//! # handle.shutdown();
//! server.wait().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod api;
mod batcher;
mod body;
mod config;
mod error;
mod inputs;
mod metrics;
mod openai;
mod server;
mod submit;
mod tei;

pub use config::{
    DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_CLIENT_BATCH, DEFAULT_MAX_CONCURRENT_INPUTS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PAYLOAD_LIMIT, DEFAULT_QUEUE_TIMEOUT, DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_SHUTDOWN_DEADLINE, DEFAULT_STALL_TIMEOUT, ServerBuilder,
};
pub use error::ServerError;
pub use server::{RunningServer, Server, ShutdownHandle};
