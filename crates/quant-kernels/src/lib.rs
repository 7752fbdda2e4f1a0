//! GGUF block formats: dequantize, quantize, dot products and GEMM with runtime CPU dispatch.
#![deny(missing_docs)]

mod blocks;
mod codec;
mod error;
pub mod fp16;
pub mod scalar;
mod types;

pub use blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
    BlockQ8_1, BlockQ8K,
};
pub use codec::{
    dequantize_row, dequantize_tensor_row, quantize_q8_0, quantize_row_q8_0, quantize_row_q8_1,
    quantize_row_q8k,
};
pub use error::KernelError;
pub use types::{QK_K, QK8_0, QuantType};
