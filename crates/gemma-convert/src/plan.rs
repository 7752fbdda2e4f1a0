//! The conversion plan: every metadata key in llama.cpp's order, and every tensor with its GGUF
//! name, ggml shape, output type and source. Building the plan reads only headers and small JSON
//! files; tensor data is touched later, one tensor at a time, by the writer.

use std::path::Path;

use crate::metadata::{GeneralMetadata, KvValue};
use crate::sentencepiece::SentencePieceModel;
use crate::source::{HParams, Modules, SafetensorsFile, SourceTensor};
use crate::tensors::{Q4KMixture, TensorType, gguf_name, llama_quantize_order, pick_type};
use crate::vocab::{SpecialTokens, Vocab};
use crate::{ConvertError, OutType};

/// GGUF architecture name of EmbeddingGemma.
pub const ARCH: &str = "gemma-embedding";

/// One tensor to write.
#[derive(Debug, Clone)]
pub(crate) struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Index into [`Plan::files`].
    pub file: usize,
    /// The checkpoint tensor.
    pub source: SourceTensor,
    /// ggml dims (innermost first).
    pub dims: Vec<u64>,
    /// Rows of the source written (the embedding may be cut to the vocabulary size).
    pub rows: usize,
    /// Output type.
    pub ty: TensorType,
    /// Gemma's RMSNorm multiplies by `1 + w`; llama.cpp stores `w + 1`.
    pub add_one: bool,
}

impl PlannedTensor {
    pub fn row_len(&self) -> usize {
        self.source.row_len()
    }
}

/// Everything needed to write the file.
#[derive(Debug)]
pub(crate) struct Plan {
    pub kvs: Vec<(String, KvValue)>,
    pub tensors: Vec<PlannedTensor>,
    pub files: Vec<SafetensorsFile>,
    pub vocab_len: usize,
}

fn expect_shape(t: &SourceTensor, expected: &[usize]) -> Result<(), ConvertError> {
    if t.shape != expected {
        return Err(ConvertError::ShapeMismatch { name: t.name.clone(), expected: expected.to_vec(), found: t.shape.clone() });
    }
    Ok(())
}

/// The shape a checkpoint tensor must have, from the hyper-parameters.
fn expected_shape(gguf: &str, hp: &HParams) -> Option<Vec<usize>> {
    let d = hp.hidden_size as usize;
    let (q, kv, ff) = (
        (hp.num_heads * hp.head_dim) as usize,
        (hp.num_kv_heads * hp.head_dim) as usize,
        hp.intermediate_size as usize,
    );
    if gguf == "token_embd.weight" {
        return None; // checked separately: it may hold more rows than the vocabulary
    }
    let suffix = gguf.rsplit_once('.').map(|(stem, _)| stem.rsplit('.').next().unwrap_or(stem))?;
    Some(match suffix {
        "attn_norm" | "post_attention_norm" | "ffn_norm" | "post_ffw_norm" | "output_norm" => vec![d],
        "attn_q_norm" | "attn_k_norm" => vec![hp.head_dim as usize],
        "attn_q" => vec![q, d],
        "attn_k" | "attn_v" => vec![kv, d],
        "attn_output" => vec![d, q],
        "ffn_gate" | "ffn_up" => vec![ff, d],
        "ffn_down" => vec![d, ff],
        _ => return None,
    })
}

impl Plan {
    pub fn build(dir: &Path, out: OutType, model_id: &str) -> Result<Self, ConvertError> {
        let config_path = dir.join("config.json");
        let hp = HParams::from_config(&crate::source::read_json(&config_path)?, &config_path)?;
        let modules = Modules::load(dir)?;

        let sp_path = dir.join("tokenizer.model");
        let sp_bytes = std::fs::read(&sp_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConvertError::MissingFile { path: sp_path.clone() }
            } else {
                ConvertError::Io { path: sp_path.clone(), source: e }
            }
        })?;
        let sp = SentencePieceModel::parse(&sp_bytes)?;
        let vocab = Vocab::build(&sp, hp.vocab_size, dir)?;
        let special = SpecialTokens::load(dir, vocab.len())?;

        // Tensors: the Dense modules first (llama.cpp yields them as "extra" tensors before the
        // checkpoint's), then the transformer's in name order.
        let mut files = Vec::new();
        let mut tensors = Vec::new();
        let requested = out.tensor_type();
        for dense in &modules.dense {
            let file = SafetensorsFile::open(&dir.join(&dense.path).join("model.safetensors"))?;
            for t in &file.tensors {
                if !t.name.ends_with(".weight") {
                    continue;
                }
                let name = t.name.replace("linear", &dense.prefix);
                if let (Some(i), Some(o)) = (dense.in_features, dense.out_features) {
                    expect_shape(t, &[o as usize, i as usize])?;
                }
                tensors.push(plan_tensor(name, files.len(), t, t.rows(), requested, false));
            }
            files.push(file);
        }
        let main = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        for t in &main.tensors {
            if t.name == "lm_head.weight" {
                continue;
            }
            let name = gguf_name(&t.name).ok_or_else(|| ConvertError::UnknownTensor { name: t.name.clone() })?;
            let mut rows = t.rows();
            if name == "token_embd.weight" {
                if t.shape.len() != 2 || t.shape[1] != hp.hidden_size as usize {
                    return Err(ConvertError::ShapeMismatch {
                        name: t.name.clone(),
                        expected: vec![vocab.len(), hp.hidden_size as usize],
                        found: t.shape.clone(),
                    });
                }
                // llama.cpp drops embedding rows past the tokenizer's vocabulary.
                if rows < vocab.len() {
                    return Err(ConvertError::EmbeddingTooSmall { rows, vocab: vocab.len() });
                }
                rows = vocab.len();
            } else if let Some(shape) = expected_shape(&name, &hp) {
                expect_shape(t, &shape)?;
            }
            let add_one = t.name.ends_with("norm.weight");
            tensors.push(plan_tensor(name, files.len(), t, rows, requested, add_one));
        }
        files.push(main);
        for required in ["token_embd.weight", "output_norm.weight"] {
            if !tensors.iter().any(|t| t.name == required) {
                return Err(ConvertError::MissingTensor { name: required.into() });
            }
        }
        for layer in 0..hp.num_layers {
            for short in ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
                let name = format!("blk.{layer}.{short}.weight");
                if !tensors.iter().any(|t| t.name == name) {
                    return Err(ConvertError::MissingTensor { name });
                }
            }
        }

        if out == OutType::Q4_K_M {
            // llama-quantize rewrites the F32 file: its tensor order, its per-tensor types.
            tensors.sort_by(|a, b| llama_quantize_order(&a.name, &b.name));
            let mut mixture = Q4KMixture::new(tensors.iter().map(|t| t.name.as_str()), hp.num_layers as usize);
            for t in &mut tensors {
                t.ty = mixture.pick(&t.name, t.source.shape.len(), t.row_len());
            }
        }

        if out == OutType::Q8_0_F16Emb {
            for t in tensors.iter_mut().filter(|t| t.name == "token_embd.weight") {
                t.ty = TensorType::F16;
            }
        }

        let param_count = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
        let general = GeneralMetadata::from_folder(dir, model_id, param_count)?;
        let mut kvs = metadata_kvs(&hp, &modules, &general, out, &vocab, &special);
        if out == OutType::Q4_K_M {
            // llama-quantize copies the F32 file's keys, then sets these two again; ggml's gguf
            // removes a key it sets and appends it, so they end the list in this order.
            for key in ["general.quantization_version", "general.file_type"] {
                if let Some(i) = kvs.iter().position(|(k, _)| k == key) {
                    let kv = kvs.remove(i);
                    kvs.push(kv);
                }
            }
        }
        Ok(Plan { kvs, tensors, files, vocab_len: vocab.len() })
    }
}

fn plan_tensor(name: String, file: usize, t: &SourceTensor, rows: usize, requested: TensorType, add_one: bool) -> PlannedTensor {
    let mut dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
    if let Some(outer) = dims.last_mut().filter(|_| t.shape.len() > 1) {
        *outer = rows as u64;
    }
    let ty = pick_type(&name, t.shape.len(), t.row_len(), requested);
    PlannedTensor { name, file, source: t.clone(), dims, rows, ty, add_one }
}

fn metadata_kvs(
    hp: &HParams,
    modules: &Modules,
    general: &GeneralMetadata,
    out: OutType,
    vocab: &Vocab,
    special: &SpecialTokens,
) -> Vec<(String, KvValue)> {
    let mut kv: Vec<(String, KvValue)> = Vec::new();
    let mut put = |k: &str, v: KvValue| kv.push((k.to_owned(), v));
    let arch = |k: &str| format!("{ARCH}.{k}");
    put("general.architecture", KvValue::Str(ARCH.into()));
    put("general.type", KvValue::Str("model".into()));
    for (k, v) in &general.sampling {
        put(k, v.clone());
    }
    put("general.name", KvValue::Str(general.name.clone()));
    if let Some(b) = &general.basename {
        put("general.basename", KvValue::Str(b.clone()));
    }
    if let Some(s) = &general.size_label {
        put("general.size_label", KvValue::Str(s.clone()));
    }
    if let Some(l) = &general.license {
        put("general.license", KvValue::Str(l.clone()));
    }
    if !general.tags.is_empty() {
        put("general.tags", KvValue::StrArray(general.tags.clone()));
    }
    put(&arch("block_count"), KvValue::U32(hp.num_layers));
    put(&arch("context_length"), KvValue::U32(hp.context_length));
    put(&arch("embedding_length"), KvValue::U32(hp.hidden_size));
    put(&arch("feed_forward_length"), KvValue::U32(hp.intermediate_size));
    put(&arch("attention.head_count"), KvValue::U32(hp.num_heads));
    put(&arch("attention.head_count_kv"), KvValue::U32(hp.num_kv_heads));
    put(&arch("rope.freq_base"), KvValue::F32(hp.rope_theta));
    put(&arch("rope.freq_base_swa"), KvValue::F32(hp.rope_theta_swa));
    put(&arch("attention.layer_norm_rms_epsilon"), KvValue::F32(hp.rms_norm_eps));
    put(&arch("attention.key_length"), KvValue::U32(hp.head_dim));
    put(&arch("attention.value_length"), KvValue::U32(hp.head_dim));
    put("general.file_type", KvValue::U32(out.file_type()));
    if let Some(cap) = hp.final_logit_softcapping {
        put(&arch("final_logit_softcapping"), KvValue::F32(cap));
    }
    put(&arch("attention.sliding_window"), KvValue::U32(hp.sliding_window));
    for dense in &modules.dense {
        if let (Some(i), Some(o)) = (dense.in_features, dense.out_features) {
            put(&arch(&format!("{}_feat_in", dense.prefix)), KvValue::U32(i));
            put(&arch(&format!("{}_feat_out", dense.prefix)), KvValue::U32(o));
        }
    }
    if let Some(p) = modules.pooling {
        put(&arch("pooling_type"), KvValue::U32(p.gguf_value()));
    }
    put("general.quantization_version", KvValue::U32(2));
    put("tokenizer.ggml.model", KvValue::Str("llama".into()));
    put("tokenizer.ggml.pre", KvValue::Str("default".into()));
    put("tokenizer.ggml.tokens", KvValue::StrArray(vocab.tokens.clone()));
    put("tokenizer.ggml.scores", KvValue::F32Array(vocab.scores.clone()));
    put("tokenizer.ggml.token_type", KvValue::I32Array(vocab.types.clone()));
    // gguf-py has writers for these kinds only and skips the others (cls, add_unk...).
    for (kind, id) in &special.ids {
        let key = match kind.as_str() {
            "unk" => "unknown",
            "pad" => "padding",
            "sep" => "seperator", // sic: gguf's key name
            "bos" | "eos" | "mask" | "eot" | "eom" => kind.as_str(),
            _ => continue,
        };
        put(&format!("tokenizer.ggml.{key}_token_id"), KvValue::U32(*id));
    }
    for (kind, flag) in &special.add {
        if matches!(kind.as_str(), "bos" | "eos" | "sep") {
            put(&format!("tokenizer.ggml.add_{kind}_token"), KvValue::Bool(*flag));
        }
    }
    if let Some(t) = &special.chat_template {
        put("tokenizer.chat_template", KvValue::Str(t.clone()));
    }
    put("tokenizer.ggml.add_space_prefix", KvValue::Bool(false));
    kv
}
