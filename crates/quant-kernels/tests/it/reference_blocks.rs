//! Dequantization of real llama.cpp blocks against gguf-py's values, bit for bit, and the Q8_0
//! quantizer against the blocks llama.cpp wrote.

use quant_kernels::{
    BlockQ8_0, QuantType, dequantize_row, dequantize_tensor_row, quantize_q8_0, quantize_row_q8_0,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    types: std::collections::BTreeMap<String, TypeEntry>,
}

#[derive(Deserialize)]
struct TypeEntry {
    ggml_type_id: u32,
    block_elems: usize,
    block_bytes: usize,
    blocks: Vec<Block>,
}

#[derive(Deserialize)]
struct Block {
    hex: String,
    values: Vec<f64>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn load() -> File {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/quant-blocks.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_reference_block_dequantizes_bit_exactly() {
    let file = load();
    assert_eq!(file.types.len(), 8, "Q8_0 Q4_0 Q5_0 Q5_1 Q4_K Q5_K Q6_K BF16");
    for (name, entry) in &file.types {
        let ty = QuantType::from_ggml_id(entry.ggml_type_id).unwrap();
        assert_eq!(ty.block_elems(), entry.block_elems, "{name}");
        assert_eq!(ty.block_bytes(), entry.block_bytes, "{name}");
        // One block at a time, and all eight as one row (which is unaligned inside the Vec
        // for odd block sizes, exercising the copying path).
        let mut all_bytes = vec![0u8];
        let mut all_values = Vec::new();
        for (i, block) in entry.blocks.iter().enumerate() {
            let bytes = unhex(&block.hex);
            let mut out = vec![0.0f32; entry.block_elems];
            dequantize_row(ty, &bytes, &mut out).unwrap();
            for (j, (&got, &want)) in out.iter().zip(&block.values).enumerate() {
                let want = want as f32; // the JSON holds the f32 values exactly
                assert_eq!(got.to_bits(), want.to_bits(), "{name} block {i} elem {j}: {got} vs {want}");
            }
            all_bytes.extend_from_slice(&bytes);
            all_values.extend(block.values.iter().map(|&v| v as f32));
        }
        let mut out = vec![0.0f32; all_values.len()];
        dequantize_row(ty, &all_bytes[1..], &mut out).unwrap();
        assert!(out.iter().zip(&all_values).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}");
        // The same bytes seen as a tensor of 8 blocks-per-row rows: row 0 is the whole thing.
        let mut row = vec![0.0f32; all_values.len()];
        dequantize_tensor_row(ty, &all_bytes[1..], all_values.len(), 0, &mut row).unwrap();
        assert_eq!(row, out);
    }
}

#[test]
fn q8_0_requantizes_llama_cpp_blocks_identically() {
    // Dequantized values of a ggml Q8_0 block re-quantize to the same block: the absmax element
    // is ±127·d exactly, so the recomputed scale rounds to the same f16 and every x·(1/d) lies
    // within rounding of the original integer.
    let file = load();
    let entry = &file.types["Q8_0"];
    for block in &entry.blocks {
        let bytes = unhex(&block.hex);
        let values: Vec<f32> = block.values.iter().map(|&v| v as f32).collect();
        let mut q = [bytemuck::Zeroable::zeroed(); 1];
        quantize_row_q8_0(&values, &mut q).unwrap();
        let got: &[u8] = bytemuck::cast_slice::<BlockQ8_0, u8>(&q);
        assert_eq!(got, &bytes[..]);
        assert_eq!(quantize_q8_0(&values).unwrap(), bytes);
    }
}

#[test]
fn tensor_row_lookup_checks_bounds() {
    let bytes = vec![0u8; 34 * 4]; // 2 rows of 64 Q8_0 elements
    let mut dst = vec![1.0f32; 64];
    dequantize_tensor_row(QuantType::Q8_0, &bytes, 64, 1, &mut dst).unwrap();
    assert!(dst.iter().all(|&v| v == 0.0));
    assert!(dequantize_tensor_row(QuantType::Q8_0, &bytes, 64, 2, &mut dst).is_err());
    assert!(dequantize_tensor_row(QuantType::Q8_0, &bytes[..100], 64, 0, &mut dst).is_err());
    assert!(dequantize_tensor_row(QuantType::Q8_0, &bytes, 60, 0, &mut dst).is_err());
    assert!(dequantize_row(QuantType::Q8_1, &bytes[..36], &mut dst[..32]).is_err());
}
