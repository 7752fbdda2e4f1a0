//! Errors of starting and running a server (an HTTP request's errors are answers, see `api.rs`).

use std::net::SocketAddr;

/// Why a server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The builder's limits do not work together (e.g. a client batch larger than the queue).
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The address could not be resolved or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for, as given.
        addr: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The model could not be loaded.
    #[error("cannot load the model: {0}")]
    Load(#[source] embed_runtime::EmbedError),
    /// Accepting or serving connections failed.
    #[error("serving on {addr} failed: {source}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// In-flight requests were still running when the shutdown deadline passed; they were cut.
    #[error("requests were still in flight at the shutdown deadline of {0:?}; they were cut")]
    DeadlineExceeded(std::time::Duration),
    /// The batcher thread died (a bug); the server stopped answering embedding requests.
    #[error("the batcher thread stopped: {0}")]
    Batcher(String),
}
