//! Integration tests: reference ids, parity with HF `tokenizers`, merge derivation,
//! properties.

mod merges;
mod parity;
mod props;
mod reference;
mod support;
