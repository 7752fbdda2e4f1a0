//! The real llama.cpp file.
