//! Integration tests of the public API against the reference embeddings and the runtime's
//! guarantees. Model files come from `model-fetch` (fetched on first use).

mod errors;
mod guarantees;
mod options;
mod reference;
mod support;
