//! The portable specification: simple safe Rust, each function naming the ggml function whose
//! numerics it reproduces. Every ISA module is tested against these.

pub mod dequant;
pub mod dot;

pub mod gemm;
pub mod quant;
pub mod quant_weights;
