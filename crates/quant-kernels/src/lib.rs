//! GGUF block formats: dequantize, quantize, dot products and GEMM with runtime CPU dispatch.
#![deny(missing_docs)]
