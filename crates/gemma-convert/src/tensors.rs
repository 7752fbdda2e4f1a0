//! Which checkpoint tensor becomes which GGUF tensor, in which type, and how its rows are encoded.

use half::f16;
use quant_kernels::{KernelError, QuantType};

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
    /// ggml Q5_0 blocks (32 values, f16 scale, 5-bit quants).
    Q5_0,
    /// ggml Q4_K super-blocks (256 values, 6-bit sub-block scales and mins, 4-bit quants).
    Q4K,
    /// ggml Q6_K super-blocks (256 values, int8 sub-block scales, 6-bit quants).
    Q6K,
}

impl TensorType {
    /// The quant-kernels format of this type.
    pub fn quant_type(self) -> QuantType {
        match self {
            TensorType::F32 => QuantType::F32,
            TensorType::F16 => QuantType::F16,
            TensorType::Bf16 => QuantType::BF16,
            TensorType::Q8_0 => QuantType::Q8_0,
            TensorType::Q5_0 => QuantType::Q5_0,
            TensorType::Q4K => QuantType::Q4K,
            TensorType::Q6K => QuantType::Q6K,
        }
    }

    /// Bytes taken by a row of `n` values (`n` a whole number of the type's blocks).
    pub fn row_bytes(self, n: usize) -> usize {
        let q = self.quant_type();
        n / q.block_elems() * q.block_bytes()
    }

    /// Elements per block.
    fn block_elems(self) -> usize {
        self.quant_type().block_elems()
    }

    /// The type llama.cpp stores a tensor in when its rows are not a whole number of this
    /// type's blocks (`tensor_type_fallback` in `llama-quant.cpp`; the converter's Q8_0 → F16).
    fn fallback(self) -> TensorType {
        match self {
            TensorType::Q4K => TensorType::Q5_0,
            TensorType::Q6K => TensorType::Q8_0,
            _ => TensorType::F16,
        }
    }

    /// `self`, or its fallback (and the fallback's) until rows of `row_len` fit whole blocks.
    pub(crate) fn fitting(self, row_len: usize) -> TensorType {
        let mut ty = self;
        while !row_len.is_multiple_of(ty.block_elems()) {
            ty = ty.fallback();
        }
        ty
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

/// Whether llama.cpp quantizes this tensor at all: 1-D tensors, norms and anything that is not
/// a `.weight` stay F32 (the converter's rule, and `tensor_allows_quantization` for this model).
pub(crate) fn is_quantizable(gguf_name: &str, n_dims: usize) -> bool {
    n_dims > 1 && !gguf_name.ends_with("_norm.weight") && gguf_name.ends_with(".weight")
}

/// The type llama.cpp's converter picks: 1-D tensors and norms stay F32; other weights take the
/// requested type, falling back (Q8_0 → F16) when a row is not a whole number of blocks.
pub fn pick_type(gguf_name: &str, n_dims: usize, row_len: usize, requested: TensorType) -> TensorType {
    if !is_quantizable(gguf_name, n_dims) {
        return TensorType::F32;
    }
    requested.fitting(row_len)
}

/// The order `llama-quantize` writes tensors in (llama.cpp's `weight_name_comparer`): tensors
/// outside the blocks first, then by block number, each group by name. It differs from the
/// converter's order, and the `use_more_bits` counters below run in this order.
pub(crate) fn llama_quantize_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn layer(name: &str) -> i64 {
        name.strip_prefix("blk.").and_then(|r| r.split_once('.')).and_then(|(n, _)| n.parse().ok()).unwrap_or(-1)
    }
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// between get more bits.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer as i64 - (n_layers / 8) as i64) % 3 == 2
}

/// `llama_tensor_get_type` for `LLAMA_FTYPE_MOSTLY_Q4_K_M` on a dense model with tied
/// embeddings (no `output.weight`), as for EmbeddingGemma: base type Q4_K; the token embedding
/// Q6_K; `attn_v` and `ffn_down` Q6_K where `use_more_bits` says so, counting those tensors in
/// [`llama_quantize_order`]; then the shape fallbacks.
pub(crate) struct Q4KMixture {
    n_attn_v: usize,
    n_ffn_down: usize,
    i_attn_v: usize,
    i_ffn_down: usize,
}

impl Q4KMixture {
    /// Counts the `attn_v` tensors among `names` (all tensors of the file); `ffn_down` is
    /// counted against the model's layer count, as llama.cpp does.
    pub(crate) fn new<'a>(names: impl Iterator<Item = &'a str>, n_layers: usize) -> Self {
        let n_attn_v = names.filter(|n| n.contains("attn_v.weight")).count();
        Q4KMixture { n_attn_v, n_ffn_down: n_layers, i_attn_v: 0, i_ffn_down: 0 }
    }

    /// The type of the next tensor; call in [`llama_quantize_order`].
    pub(crate) fn pick(&mut self, name: &str, n_dims: usize, row_len: usize) -> TensorType {
        if !is_quantizable(name, n_dims) {
            return TensorType::F32;
        }
        let ty = if name == "token_embd.weight" {
            // Tied embeddings take the output tensor's rule: Q8_0 unless rows fit 256-blocks.
            if row_len.is_multiple_of(256) { TensorType::Q6K } else { TensorType::Q8_0 }
        } else if name.contains("attn_v.weight") {
            let more = use_more_bits(self.i_attn_v, self.n_attn_v);
            self.i_attn_v += 1;
            if more { TensorType::Q6K } else { TensorType::Q4K }
        } else if name.contains("ffn_down") {
            let more = use_more_bits(self.i_ffn_down, self.n_ffn_down);
            self.i_ffn_down += 1;
            if more { TensorType::Q6K } else { TensorType::Q4K }
        } else {
            TensorType::Q4K
        };
        ty.fitting(row_len)
    }
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

/// Appends `src` (whole rows) encoded as `ty` to `dst`. Quantized types go through
/// quant-kernels' reference quantizers, bit-identical to ggml's `quantize_row_*_ref` (what
/// both llama.cpp's converter and `llama-quantize` without an importance matrix write).
pub fn encode(ty: TensorType, src: &[f32], dst: &mut Vec<u8>) -> Result<(), KernelError> {
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
        TensorType::Q8_0 | TensorType::Q5_0 | TensorType::Q4K | TensorType::Q6K => {
            let q = ty.quant_type();
            let start = dst.len();
            dst.resize(start + q.row_bytes(src.len())?, 0);
            quant_kernels::quantize_row(q, src, &mut dst[start..])?;
        }
    }
    Ok(())
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
        assert_eq!(pick_type("blk.0.ffn_down.weight", 2, 1152, TensorType::Q4K), TensorType::Q5_0);
        assert_eq!(pick_type("blk.0.ffn_down.weight", 2, 1152, TensorType::Q6K), TensorType::Q8_0);
        assert_eq!(pick_type("blk.0.ffn_down.weight", 2, 1000, TensorType::Q6K), TensorType::F16);
        assert_eq!(pick_type("blk.0.ffn_up.weight", 2, 768, TensorType::Q4K), TensorType::Q4K);
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_24_layers() {
        let picked: Vec<usize> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn llama_quantize_order_sorts_by_layer_number_then_name() {
        let mut names = ["blk.10.attn_k.weight", "token_embd.weight", "blk.2.ffn_up.weight", "blk.2.attn_v.weight", "dense_2.weight"];
        names.sort_by(|a, b| llama_quantize_order(a, b));
        assert_eq!(names, ["dense_2.weight", "token_embd.weight", "blk.2.attn_v.weight", "blk.2.ffn_up.weight", "blk.10.attn_k.weight"]);
    }

    #[test]
    fn q4_k_m_mixture_counts_in_order_and_falls_back() {
        let names: Vec<String> = (0..8).map(|i| format!("blk.{i}.attn_v.weight")).collect();
        let mut mix = Q4KMixture::new(names.iter().map(String::as_str), 8);
        // 8 layers: n/8 = 1, 7n/8 = 7, so layers 0, 3, 6 and 7 get Q6_K.
        let types: Vec<TensorType> = names.iter().map(|n| mix.pick(n, 2, 768)).collect();
        use TensorType::{Q4K, Q6K};
        assert_eq!(types, [Q6K, Q4K, Q4K, Q6K, Q4K, Q4K, Q6K, Q6K]);
        // ffn_down counts against the layer count; 1152-long rows are not whole 256-blocks.
        let mut mix = Q4KMixture::new(std::iter::empty(), 8);
        assert_eq!(mix.pick("blk.0.ffn_down.weight", 2, 1152), TensorType::Q8_0, "first eighth: Q6_K, falls back");
        assert_eq!(mix.pick("blk.1.ffn_down.weight", 2, 1152), TensorType::Q5_0, "Q4_K falls back");
        assert_eq!(mix.pick("token_embd.weight", 2, 768), TensorType::Q6K);
        assert_eq!(mix.pick("token_embd.weight", 2, 800), TensorType::Q8_0);
        assert_eq!(mix.pick("blk.0.attn_k_norm.weight", 1, 256), TensorType::F32);
        assert_eq!(mix.pick("dense_3.weight", 2, 3072), TensorType::Q4K);
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
        encode(TensorType::F32, &[1.0, -2.0], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
        out.clear();
        encode(TensorType::F16, &[1.0, 65504.0], &mut out).unwrap();
        assert_eq!(out, [0x00, 0x3c, 0xff, 0x7b]);
    }

    #[test]
    fn quantized_encoding_appends_whole_rows_and_rejects_partial_blocks() {
        let mut out = vec![7u8];
        encode(TensorType::Q4K, &[0.5; 512], &mut out).unwrap();
        assert_eq!(out.len(), 1 + 2 * 144);
        assert_eq!(out[0], 7, "appends after what is there");
        assert!(encode(TensorType::Q6K, &[0.5; 300], &mut out).is_err());
    }
}
