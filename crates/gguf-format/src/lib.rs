//! GGUF v2/v3 reader (zero-copy, mmap) and writer.
#![deny(missing_docs)]
