//! The crate's one integration-test binary: API-boundary tests against reference data.

mod quantize;
mod reference_blocks;
