//! Byte-level entry points: dequantize rows of any weight format, quantize to every format.
//!
//! These take `&[u8]` straight from a GGUF file and cope with any alignment: an aligned slice is
//! viewed as blocks in place, an unaligned one is copied a block at a time.

use bytemuck::Pod;

use crate::KernelError;
use crate::blocks::*;
use crate::scalar::{dequant, quant, quant_weights};
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
        return Err(KernelError::Unsupported {
            ty,
            op: "dequantize",
        });
    }
    let expected = ty.row_bytes(n)?;
    if src.len() != expected {
        return Err(KernelError::ByteLength {
            ty,
            expected,
            actual: src.len(),
        });
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
        QuantType::Q8_1 => {
            return Err(KernelError::Unsupported {
                ty,
                op: "dequantize",
            });
        }
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
        return Err(KernelError::Length {
            what: "dst",
            expected: n_cols,
            actual: dst.len(),
        });
    }
    let rows = data.len().checked_div(row_bytes).unwrap_or(0);
    if row_bytes == 0 || !data.len().is_multiple_of(row_bytes) {
        return Err(KernelError::ByteLength {
            ty,
            expected: rows * row_bytes,
            actual: data.len(),
        });
    }
    if row >= rows {
        return Err(KernelError::RowOutOfRange { row, rows });
    }
    dequantize_row(ty, &data[row * row_bytes..(row + 1) * row_bytes], dst)
}

fn check_quant(ty: QuantType, src: usize, blocks: usize, be: usize) -> Result<(), KernelError> {
    if !src.is_multiple_of(be) {
        return Err(KernelError::RaggedRow {
            ty,
            elems: src,
            block: be,
        });
    }
    if blocks != src / be {
        return Err(KernelError::Length {
            what: "dst blocks",
            expected: src / be,
            actual: blocks,
        });
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

/// Quantizes `src` into `dst` as format `ty`, one block at a time through `f`.
fn quantize_blocks<B: Pod>(
    src: &[f32],
    dst: &mut [u8],
    block_elems: usize,
    f: impl Fn(&[f32]) -> B,
) {
    for (x, out) in src
        .chunks_exact(block_elems)
        .zip(dst.chunks_exact_mut(std::mem::size_of::<B>()))
    {
        out.copy_from_slice(bytemuck::bytes_of(&f(x)));
    }
}

/// Quantizes `src` to format `ty`, writing exactly `ty.row_bytes(src.len())` bytes into `dst`
/// (any alignment).
///
/// Every format is bit-identical to ggml's reference quantizer (`quantize_row_*_ref`; F16 and
/// BF16 as `GGML_FP32_TO_FP16` / `GGML_FP32_TO_BF16`), which is what `llama-quantize` writes
/// when it is given no importance matrix. The K-quants need `src.len()` to be a multiple of
/// 256, the other block formats a multiple of 32.
pub fn quantize_row(ty: QuantType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let expected = ty.row_bytes(src.len())?;
    if dst.len() != expected {
        return Err(KernelError::ByteLength {
            ty,
            expected,
            actual: dst.len(),
        });
    }
    let be = ty.block_elems();
    match ty {
        QuantType::F32 => quantize_blocks(src, dst, be, |x| x[0]),
        QuantType::F16 => quantize_blocks(src, dst, be, |x| crate::fp16::f32_to_f16(x[0])),
        QuantType::BF16 => quantize_blocks(src, dst, be, |x| crate::fp16::f32_to_bf16(x[0])),
        QuantType::Q4_0 => quantize_blocks(src, dst, be, quant_weights::quant_block_q4_0),
        QuantType::Q4_1 => quantize_blocks(src, dst, be, quant_weights::quant_block_q4_1),
        QuantType::Q5_0 => quantize_blocks(src, dst, be, quant_weights::quant_block_q5_0),
        QuantType::Q5_1 => quantize_blocks(src, dst, be, quant_weights::quant_block_q5_1),
        QuantType::Q4K => quantize_blocks(src, dst, be, quant_weights::quant_block_q4k),
        QuantType::Q5K => quantize_blocks(src, dst, be, quant_weights::quant_block_q5k),
        QuantType::Q6K => quantize_blocks(src, dst, be, quant_weights::quant_block_q6k),
        QuantType::Q8_0 => quantize_blocks(src, dst, be, |x| {
            let mut b = BlockQ8_0::zeroed();
            quant::quant_row_q8_0(x, std::slice::from_mut(&mut b));
            b
        }),
        QuantType::Q8_1 => quantize_blocks(src, dst, be, |x| {
            let mut b = BlockQ8_1::zeroed();
            quant::quant_row_q8_1(x, std::slice::from_mut(&mut b));
            b
        }),
        QuantType::Q8K => quantize_blocks(src, dst, be, |x| {
            let mut b = BlockQ8K::zeroed();
            quant::quant_row_q8k(x, std::slice::from_mut(&mut b));
            b
        }),
    }
    Ok(())
}

/// Quantizes a whole row-major tensor of rows `n_per_row` long (ggml's `ne0`) to format `ty`,
/// returning its bytes as they go into a GGUF file: ggml's `ggml_quantize_chunk` without an
/// importance matrix.
pub fn quantize_tensor(
    ty: QuantType,
    src: &[f32],
    n_per_row: usize,
) -> Result<Vec<u8>, KernelError> {
    let rows = src.len().checked_div(n_per_row).unwrap_or(0);
    if n_per_row == 0 || rows * n_per_row != src.len() {
        return Err(KernelError::Length {
            what: "src (whole rows)",
            expected: rows * n_per_row,
            actual: src.len(),
        });
    }
    let row_bytes = ty.row_bytes(n_per_row)?;
    let mut out = vec![0u8; rows * row_bytes];
    for (x, y) in src
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        quantize_row(ty, x, y)?;
    }
    Ok(out)
}

use bytemuck::Zeroable;
