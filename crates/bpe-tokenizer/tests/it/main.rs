//! Integration tests: reference ids, parity with HF `tokenizers`, merge derivation,
//! properties.

mod alloc;
mod cache;
mod merges;
mod parity;
mod props;
mod reference;
mod support;

#[global_allocator]
static ALLOC: tracking_allocator::Allocator<std::alloc::System> = tracking_allocator::Allocator::system();
