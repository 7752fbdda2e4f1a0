//! Byte-level entry points: dequantize rows of any weight format, quantize to Q8_0 / Q8_1 / Q8_K.
//!
//! These take `&[u8]` straight from a GGUF file and cope with any alignment: an aligned slice is
//! viewed as blocks in place, an unaligned one is copied a block at a time.

use bytemuck::Pod;

use crate::KernelError;
use crate::blocks::*;
use crate::scalar::{dequant, quant};
use crate::types::{QK_K, QK8_0, QuantType};

/// Runs `f` on `bytes` viewed as blocks of `B`, copying through an aligned buffer if needed.
pub(crate) fn with_blocks<B: Pod, R>(bytes: &[u8], mut f: impl FnMut(&[B], usize) -> R) -> Vec<R> {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => vec![f(blocks, 0)],
        Err(_) => bytes
            .chunks_exact(std::mem::size_of::<B>())
            .enumerate()
            .map(|(i, c)| f(&[bytemuck::pod_read_unaligned::<B>(c)], i))
            .collect(),
    }
}

fn check_row(ty: QuantType, src: &[u8], n: usize) -> Result<(), KernelError> {
    if !ty.is_weight_format() && !matches!(ty, QuantType::Q8K) {
        return Err(KernelError::Unsupported { ty, op: "dequantize" });
    }
    let expected = ty.row_bytes(n)?;
    if src.len() != expected {
        return Err(KernelError::ByteLength { ty, expected, actual: src.len() });
    }
    Ok(())
}

/// Dequantizes `dst.len()` elements of format `ty` from `src` (which must hold exactly that many
/// elements' worth of blocks) into `dst`.
///
/// Bit-identical to ggml's `dequantize_row_*` evaluated without fused multiply-add (as gguf-py
/// does). Supports every weight format and Q8_K.
pub fn dequantize_row(ty: QuantType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_row(ty, src, dst.len())?;
    let be = ty.block_elems();
    macro_rules! blocks {
        ($b:ty, $f:path) => {{
            with_blocks::<$b, ()>(src, |blocks, i| {
                let start = i * be;
                $f(blocks, &mut dst[start..start + blocks.len() * be]);
            });
        }};
    }
    match ty {
        QuantType::F32 => dequant::dequant_row_f32(src, dst),
        QuantType::F16 => dequant::dequant_row_f16(src, dst),
        QuantType::BF16 => dequant::dequant_row_bf16(src, dst),
        QuantType::Q8_0 => blocks!(BlockQ8_0, dequant::dequant_row_q8_0),
        QuantType::Q4_0 => blocks!(BlockQ4_0, dequant::dequant_row_q4_0),
        QuantType::Q4_1 => blocks!(BlockQ4_1, dequant::dequant_row_q4_1),
        QuantType::Q5_0 => blocks!(BlockQ5_0, dequant::dequant_row_q5_0),
        QuantType::Q5_1 => blocks!(BlockQ5_1, dequant::dequant_row_q5_1),
        QuantType::Q4K => blocks!(BlockQ4K, dequant::dequant_row_q4k),
        QuantType::Q5K => blocks!(BlockQ5K, dequant::dequant_row_q5k),
        QuantType::Q6K => blocks!(BlockQ6K, dequant::dequant_row_q6k),
        QuantType::Q8K => blocks!(BlockQ8K, dequant::dequant_row_q8k),
        QuantType::Q8_1 => return Err(KernelError::Unsupported { ty, op: "dequantize" }),
    }
    Ok(())
}

/// Dequantizes row `row` of a row-major tensor of format `ty` with `n_cols` elements per row
/// (ggml's `ne0`) whose bytes are `data`, into `dst` (`n_cols` long). This is the embedding
/// lookup: `token_embd` row `id`.
pub fn dequantize_tensor_row(
    ty: QuantType,
    data: &[u8],
    n_cols: usize,
    row: usize,
    dst: &mut [f32],
) -> Result<(), KernelError> {
    let row_bytes = ty.row_bytes(n_cols)?;
    if dst.len() != n_cols {
        return Err(KernelError::Length { what: "dst", expected: n_cols, actual: dst.len() });
    }
    let rows = data.len().checked_div(row_bytes).unwrap_or(0);
    if row_bytes == 0 || !data.len().is_multiple_of(row_bytes) {
        return Err(KernelError::ByteLength { ty, expected: rows * row_bytes, actual: data.len() });
    }
    if row >= rows {
        return Err(KernelError::RowOutOfRange { row, rows });
    }
    dequantize_row(ty, &data[row * row_bytes..(row + 1) * row_bytes], dst)
}

fn check_quant(ty: QuantType, src: usize, blocks: usize, be: usize) -> Result<(), KernelError> {
    if !src.is_multiple_of(be) {
        return Err(KernelError::RaggedRow { ty, elems: src, block: be });
    }
    if blocks != src / be {
        return Err(KernelError::Length { what: "dst blocks", expected: src / be, actual: blocks });
    }
    Ok(())
}

/// Quantizes `src` to Q8_0, bit-identical to ggml's `quantize_row_q8_0_ref` (the quantizer
/// llama.cpp's converter uses to write Q8_0 files). `dst.len()` must be `src.len() / 32`.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) -> Result<(), KernelError> {
    check_quant(QuantType::Q8_0, src.len(), dst.len(), QK8_0)?;
    quant::quant_row_q8_0(src, dst);
    Ok(())
}

/// Quantizes a whole tensor (rows concatenated; every row a multiple of 32 long) to Q8_0 bytes,
/// ready to write to a GGUF file.
pub fn quantize_q8_0(src: &[f32]) -> Result<Vec<u8>, KernelError> {
    let mut blocks = vec![BlockQ8_0::zeroed(); src.len() / QK8_0];
    quantize_row_q8_0(src, &mut blocks)?;
    Ok(bytemuck::cast_slice(&blocks).to_vec())
}

/// Quantizes `src` to Q8_1, bit-identical to ggml's `quantize_row_q8_1_ref`.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) -> Result<(), KernelError> {
    check_quant(QuantType::Q8_1, src.len(), dst.len(), QK8_0)?;
    quant::quant_row_q8_1(src, dst);
    Ok(())
}

/// Quantizes `src` to Q8_K, bit-identical to ggml's `quantize_row_q8_K_ref` (except that an
/// all-zero block gets zero `bsums`, which ggml leaves unwritten).
pub fn quantize_row_q8k(src: &[f32], dst: &mut [BlockQ8K]) -> Result<(), KernelError> {
    check_quant(QuantType::Q8K, src.len(), dst.len(), QK_K)?;
    quant::quant_row_q8k(src, dst);
    Ok(())
}

use bytemuck::Zeroable;
