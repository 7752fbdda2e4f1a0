//! GGUF v2/v3: a zero-copy reader and a streaming writer.
//!
//! Everything else in the workspace reads models through this crate, so it is shaped by
//! three concerns:
//!
//! - **Hostile input is normal.** The parser works on a borrowed `&[u8]` and never does I/O,
//!   which keeps it trivial to fuzz. Every length and count is compared with the bytes that
//!   remain before anything is sliced, looped over or allocated, and every failure is a
//!   [`GgufError`] variant naming what failed and at which byte offset.
//! - **Zero copy.** [`GgufFile::open`] memory-maps the file; [`Gguf`] owns its storage plus an
//!   index of offsets (not references), so an `Arc<GgufFile>` can hand out [`TensorView`]s
//!   and vocabulary strings that borrow straight from the map for the life of a model.
//! - **Files llama.cpp accepts.** The [`GgmlType`] table mirrors ggml's; [`GgufWriter`]
//!   reproduces llama.cpp's layout byte for byte (metadata in the order given, dense aligned
//!   tensor offsets, padding after every tensor) and streams tensor data so a model larger
//!   than memory can be written.
//!
//! This crate never dequantizes: tensor data leaves it as bytes plus a [`GgmlType`].
//!
//! ```no_run
//! # fn main() -> Result<(), gguf_format::GgufError> {
//! use gguf_format::GgufFile;
//! let file = GgufFile::open("model.gguf")?;
//! let layers = file.get_u32("gemma-embedding.block_count")?;
//! let vocab: Vec<&str> = file.get_str_array("tokenizer.ggml.tokens")?.collect();
//! let embd = file.tensor("token_embd.weight").expect("tensor present");
//! println!("{layers} layers, {} tokens, {:?} {}", vocab.len(), embd.shape, embd.ggml_type);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod cursor;
mod error;
mod ggml_type;
mod reader;
mod value;
mod writer;

pub use crate::error::GgufError;
pub use crate::ggml_type::GgmlType;
pub use crate::reader::{DEFAULT_ALIGNMENT, Gguf, GgufFile, Mapping, Storage, TensorView};
pub use crate::value::{
    Array, ArrayIter, MAX_ARRAY_DEPTH, OwnedArray, OwnedValue, StrIter, Value, ValueType,
};
pub use crate::writer::{GgufWriter, Layout, TensorDataWriter};
