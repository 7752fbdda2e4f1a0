//! Integration tests for gguf-format: round trips, llama.cpp's layout, hostile input and a real
//! llama.cpp file. One binary, one module per concern.

mod files;
mod hostile;
mod layout;
mod real_file;
mod roundtrip;
mod support;
