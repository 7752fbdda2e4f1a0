//! The public embedding API: Embedder, options, worker pool.
#![deny(missing_docs)]
