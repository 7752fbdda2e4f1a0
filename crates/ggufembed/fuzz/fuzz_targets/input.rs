//! The CLI's input reader (plain text and JSON Lines) on arbitrary bytes; see `harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::read_input(data));
