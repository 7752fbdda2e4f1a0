//! Which checkpoint tensor becomes which GGUF tensor, in which type, and how its rows are encoded.

use half::f16;

/// The element type a GGUF tensor is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// ggml Q8_0 blocks (32 values, f16 scale + 32 × i8).
    Q8_0,
}

impl TensorType {
    /// Bytes taken by a row of `n` values (`n` a multiple of 32 for Q8_0).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            TensorType::F32 => 4 * n,
            TensorType::F16 | TensorType::Bf16 => 2 * n,
            TensorType::Q8_0 => n / 32 * 34,
        }
    }
}

/// Maps a Gemma3 checkpoint name to its gemma-embedding GGUF name (llama.cpp's tensor map).
pub fn gguf_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    match hf {
        "embed_tokens.weight" => return Some("token_embd.weight".into()),
        "norm.weight" => return Some("output_norm.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let short = match suffix {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "post_attention_layernorm.weight" => "post_attention_norm",
        "pre_feedforward_layernorm.weight" => "ffn_norm",
        "post_feedforward_layernorm.weight" => "post_ffw_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.weight"))
}

/// The type llama.cpp's converter picks: 1-D tensors and norms stay F32; other weights take the
/// requested type, falling back to F16 when a Q8_0 row is not a whole number of blocks.
pub fn pick_type(gguf_name: &str, n_dims: usize, row_len: usize, requested: TensorType) -> TensorType {
    if n_dims <= 1 || gguf_name.ends_with("_norm.weight") || !gguf_name.ends_with(".weight") {
        return TensorType::F32;
    }
    if requested == TensorType::Q8_0 && !row_len.is_multiple_of(32) {
        return TensorType::F16;
    }
    requested
}

/// gguf-py's (and ggml's `ggml_compute_fp32_to_bf16`) rounding: NaN forced quiet, otherwise
/// round to nearest even.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 64) as u16;
    }
    ((u64::from(bits) + 0x7fff + u64::from((bits >> 16) & 1)) >> 16) as u16
}

/// Appends `src` encoded as `ty` to `dst`. Q8_0 rows go through quant-kernels' reference
/// quantizer, which is bit-identical to ggml's `quantize_row_q8_0_ref`.
pub fn encode(ty: TensorType, src: &[f32], dst: &mut Vec<u8>) {
    match ty {
        TensorType::F32 => {
            dst.reserve(src.len() * 4);
            for v in src {
                dst.extend_from_slice(&v.to_le_bytes());
            }
        }
        TensorType::F16 => {
            dst.reserve(src.len() * 2);
            for v in src {
                dst.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        TensorType::Bf16 => {
            dst.reserve(src.len() * 2);
            for v in src {
                dst.extend_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        TensorType::Q8_0 => crate::q8::quantize_append(src, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(gguf_name("embed_tokens.weight").as_deref(), Some("token_embd.weight"));
        assert_eq!(gguf_name("layers.17.pre_feedforward_layernorm.weight").as_deref(), Some("blk.17.ffn_norm.weight"));
        assert_eq!(gguf_name("layers.0.self_attn.o_proj.weight").as_deref(), Some("blk.0.attn_output.weight"));
        assert_eq!(gguf_name("model.norm.weight").as_deref(), Some("output_norm.weight"));
        assert_eq!(gguf_name("layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("lm_head.weight"), None);
    }

    #[test]
    fn types_follow_llama_cpp() {
        assert_eq!(pick_type("blk.0.attn_q_norm.weight", 1, 256, TensorType::Q8_0), TensorType::F32);
        assert_eq!(pick_type("blk.0.attn_q.weight", 2, 768, TensorType::Q8_0), TensorType::Q8_0);
        assert_eq!(pick_type("blk.0.attn_q.weight", 2, 770, TensorType::Q8_0), TensorType::F16);
        assert_eq!(pick_type("dense_2.weight", 2, 768, TensorType::Bf16), TensorType::Bf16);
        assert_eq!(pick_type("token_embd.weight", 2, 768, TensorType::F16), TensorType::F16);
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        // Exactly half-way between 0x3f80 and 0x3f81: ties to even (0x3f80).
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        // Half-way between 0x3f81 and 0x3f82: ties to even (0x3f82).
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
        // Agrees with the half crate away from NaN.
        for bits in (0u32..u32::MAX).step_by(65_521) {
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                assert_eq!(f32_to_bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn encodes_little_endian() {
        let mut out = Vec::new();
        encode(TensorType::F32, &[1.0, -2.0], &mut out);
        assert_eq!(out, [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
        out.clear();
        encode(TensorType::F16, &[1.0, 65504.0], &mut out);
        assert_eq!(out, [0x00, 0x3c, 0xff, 0x7b]);
    }
}
