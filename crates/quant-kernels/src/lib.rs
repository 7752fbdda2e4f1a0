//! GGUF block formats: dequantize, quantize, dot products and GEMM with runtime CPU dispatch.
//!
//! # Why it is shaped this way
//! - **Formats** (`blocks`, `types`) mirror ggml's `ggml-common.h` byte for byte, and the scalar
//!   module reproduces ggml's reference numerics (`quantize_row_q8_0_ref`, `dequantize_row_*`,
//!   `ggml_vec_dot_*_generic`), so GGUF files written or read here agree with llama.cpp.
//! - **One GEMM kernel per ISA for every quantized format.** At load, [`PackedMatrix::new`]
//!   repacks any quantized weight format losslessly into int8 panels with per-block f32 scales
//!   (and mins); activations are quantized once per call to the format's `vec_dot_type`. The
//!   AVX-512 VNNI microkernel then multiplies unsigned weights (`w + 128`) by signed activations
//!   with `vpdpbusd`, removing the offset through a per-block correction precomputed with the
//!   activations. See `gemm::tile` for the layout and the exact reduction.
//! - **Determinism.** Each output element is a fixed sequential reduction over K and work is
//!   never split along K, so results do not depend on batch size, thread count or ISA.
//! - **Dispatch** ([`Kernels`]) is detected once; a `&'static Kernels` is proof its ISA is
//!   present, which is why its methods are safe. [`Kernels::for_isa`] exposes every supported
//!   level to tests and benches.
//! - **No threads.** Callers pass a [`ParallelFor`]; [`Serial`] runs everything inline.
#![deny(missing_docs)]

mod aligned;
mod arena;
mod blocks;
mod codec;
mod dispatch;
mod error;
pub mod fp16;
mod gemm;
#[cfg(test)]
mod isa_tests;
mod parallel;
pub mod scalar;
#[cfg(test)]
mod testutil;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1,
    BlockQ8K,
};
pub use codec::{
    dequantize_row, dequantize_tensor_row, quantize_q8_0, quantize_row, quantize_row_q8_0,
    quantize_row_q8_1, quantize_row_q8k, quantize_tensor,
};
pub use arena::{WeightSlot, weight_slots};
pub use dispatch::{Isa, Kernels};
pub use error::KernelError;
pub use gemm::{
    __int8_microkernel_loop, F32PackBuf, F32Panels, GemmScratch, Outliers, PackedMatrix, RowPrologue, gemm_f32_nn,
    gemm_f32_nt, gemm_f32_prepacked, pack_f32_nn_panels, pack_f32_nt_rows,
};
pub use parallel::{ParallelFor, Serial, TASKS_PER_THREAD};
pub use types::{QK_K, QK8_0, QuantType};
