//! Hyper-parameters of a loaded model, read from the `gemma-embedding.*` GGUF keys.

/// Attention pattern of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Each token sees the tokens within half the sliding window on either side.
    Sliding,
    /// Each token sees the whole text.
    Full,
}

/// Every hyper-parameter the forward pass uses. Built and checked by `GemmaModel::load`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Vocabulary size (rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Width of the residual stream (768).
    pub embedding_length: usize,
    /// Number of transformer blocks (24).
    pub block_count: usize,
    /// Hidden width of the feed-forward block (1152).
    pub feed_forward_length: usize,
    /// Query heads per token (3).
    pub head_count: usize,
    /// Key/value heads per token (1).
    pub head_count_kv: usize,
    /// Values per query/key head (256).
    pub key_length: usize,
    /// Values per value head (256).
    pub value_length: usize,
    /// Longest text in tokens (2048); the RoPE tables cover this many positions.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base of full-attention layers (1e6).
    pub rope_freq_base: f32,
    /// RoPE base of sliding-window layers (1e4).
    pub rope_freq_base_swa: f32,
    /// Sliding window width (512): query `i` sees key `j` iff `|i − j| ≤ sliding_window / 2`.
    pub sliding_window: usize,
    /// Every `swa_period`-th layer (counting from 1) is full attention, the others slide (6).
    pub swa_period: usize,
    /// Multiplier of `q·k` before the softmax (`1/sqrt(key_length)` = 1/16).
    pub attention_scale: f32,
    /// Width of the first Dense layer's output (3072).
    pub dense_hidden: usize,
    /// Width of the embedding (768).
    pub embedding_dim: usize,
}

impl ModelConfig {
    /// Attention pattern of layer `layer`: sliding iff `layer % swa_period < swa_period − 1`
    /// (llama.cpp's `set_swa_pattern`, transformers' `layer_types`).
    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        if self.swa_period == 0 || layer % self.swa_period < self.swa_period - 1 {
            LayerKind::Sliding
        } else {
            LayerKind::Full
        }
    }

    /// Query width per token, `head_count · key_length`.
    pub fn q_dim(&self) -> usize {
        self.head_count * self.key_length
    }

    /// The symmetric half window of sliding layers.
    pub fn half_window(&self) -> usize {
        self.sliding_window / 2
    }

    /// The configuration of EmbeddingGemma-300M, as its GGUF keys state it.
    pub fn embedding_gemma_300m() -> ModelConfig {
        ModelConfig {
            vocab_size: 262_144,
            embedding_length: 768,
            block_count: 24,
            feed_forward_length: 1152,
            head_count: 3,
            head_count_kv: 1,
            key_length: 256,
            value_length: 256,
            context_length: 2048,
            rms_norm_eps: 1e-6,
            rope_freq_base: 1_000_000.0,
            rope_freq_base_swa: 10_000.0,
            sliding_window: 512,
            swa_period: 6,
            attention_scale: 1.0 / 16.0,
            dense_hidden: 3072,
            embedding_dim: 768,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_5_11_17_23_are_full() {
        let c = ModelConfig::embedding_gemma_300m();
        let full: Vec<usize> = (0..24)
            .filter(|&l| c.layer_kind(l) == LayerKind::Full)
            .collect();
        assert_eq!(full, [5, 11, 17, 23]);
        assert_eq!(c.half_window(), 256);
        assert_eq!(c.q_dim(), 768);
    }
}
