//! The crate's one integration-test binary: API-boundary tests against reference data.

mod reference_blocks;
