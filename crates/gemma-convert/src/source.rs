//! Reading the sentence-transformers folder: `config.json`, `modules.json`, the Dense modules and
//! the safetensors checkpoints.
//!
//! Safetensors headers are validated by the `safetensors` crate (`Metadata` checks that offsets
//! are contiguous and sizes match dtype × shape); tensor data is then read with positioned reads
//! in bounded chunks, so converting the 1.2 GB checkpoint needs neither `unsafe` mmap nor the
//! whole file in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::Metadata;
use serde_json::Value;

use crate::ConvertError;

/// Hyper-parameters from `config.json` that the GGUF records.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// `hidden_size`.
    pub hidden_size: u32,
    /// `num_hidden_layers`.
    pub num_layers: u32,
    /// `intermediate_size`.
    pub intermediate_size: u32,
    /// `num_attention_heads`.
    pub num_heads: u32,
    /// `num_key_value_heads`.
    pub num_kv_heads: u32,
    /// `head_dim`.
    pub head_dim: u32,
    /// `max_position_embeddings`.
    pub context_length: u32,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f32,
    /// RoPE base of the full-attention layers.
    pub rope_theta: f32,
    /// RoPE base of the sliding-window layers.
    pub rope_theta_swa: f32,
    /// `sliding_window` as written in `config.json`.
    pub sliding_window: u32,
    /// `vocab_size`.
    pub vocab_size: Option<u32>,
    /// `final_logit_softcapping`, when set.
    pub final_logit_softcapping: Option<f32>,
}

pub(crate) fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ConvertError::MissingFile { path: path.to_path_buf() }
        } else {
            ConvertError::Io { path: path.to_path_buf(), source: e }
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ConvertError::json(path, e))
}

/// Reads an optional JSON file: absent is `None`, unreadable or malformed is an error.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Value>, ConvertError> {
    if path.is_file() { read_json(path).map(Some) } else { Ok(None) }
}

fn get_u32(cfg: &Value, path: &Path, key: &str) -> Result<u32, ConvertError> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ConvertError::json(path, format!("missing or invalid integer {key}")))
}

fn get_f32(cfg: &Value, key: &str) -> Option<f32> {
    cfg.get(key).and_then(Value::as_f64).map(|v| v as f32)
}

impl HParams {
    /// Parses `config.json`, checking that it describes a `Gemma3TextModel`.
    pub fn from_config(cfg: &Value, path: &Path) -> Result<Self, ConvertError> {
        let archs: Vec<String> = cfg
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if !archs.iter().any(|a| a == "Gemma3TextModel") {
            return Err(ConvertError::UnsupportedArchitecture { found: archs });
        }
        // transformers >= 5 nests RoPE settings per layer type; older configs use flat keys.
        let rope = cfg.get("rope_parameters");
        let nested = |kind: &str| rope.and_then(|r| r.get(kind)).and_then(|r| get_f32(r, "rope_theta"));
        let rope_theta = nested("full_attention")
            .or_else(|| rope.and_then(|r| get_f32(r, "rope_theta")))
            .or_else(|| get_f32(cfg, "rope_theta"))
            .unwrap_or(1_000_000.0);
        let rope_theta_swa = nested("sliding_attention").or_else(|| get_f32(cfg, "rope_local_base_freq")).unwrap_or(10_000.0);
        let num_heads = cfg.get("num_attention_heads").map_or(Ok(8), |_| get_u32(cfg, path, "num_attention_heads"))?;
        Ok(HParams {
            hidden_size: get_u32(cfg, path, "hidden_size")?,
            num_layers: get_u32(cfg, path, "num_hidden_layers")?,
            intermediate_size: get_u32(cfg, path, "intermediate_size")?,
            num_heads,
            num_kv_heads: cfg.get("num_key_value_heads").map_or(Ok(4), |_| get_u32(cfg, path, "num_key_value_heads"))?,
            head_dim: cfg.get("head_dim").map_or(Ok(256), |_| get_u32(cfg, path, "head_dim"))?,
            context_length: cfg
                .get("max_position_embeddings")
                .map_or(Ok(131_072), |_| get_u32(cfg, path, "max_position_embeddings"))?,
            rms_norm_eps: get_f32(cfg, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_theta_swa,
            sliding_window: get_u32(cfg, path, "sliding_window")?,
            vocab_size: cfg.get("vocab_size").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()),
            final_logit_softcapping: get_f32(cfg, "final_logit_softcapping").filter(|v| *v != 0.0),
        })
    }
}

/// Element type of a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceDtype {
    F32,
    F16,
    Bf16,
}

impl SourceDtype {
    fn size(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::Bf16 => 2,
        }
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
pub(crate) struct SourceTensor {
    pub name: String,
    pub dtype: SourceDtype,
    /// Row-major shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
}

impl SourceTensor {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the innermost axis (1 for scalars).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn rows(&self) -> usize {
        self.elements().checked_div(self.row_len()).unwrap_or(0)
    }
}

/// A safetensors file opened for positioned reads.
#[derive(Debug)]
pub(crate) struct SafetensorsFile {
    pub path: PathBuf,
    file: File,
    /// Tensors sorted by name, the order the Python `safetensors` bindings (and llama.cpp's
    /// converter) iterate them in.
    pub tensors: Vec<SourceTensor>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, ConvertError> {
        let mut file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConvertError::MissingFile { path: path.to_path_buf() }
            } else {
                ConvertError::Io { path: path.to_path_buf(), source: e }
            }
        })?;
        let bad = |message: String| ConvertError::Safetensors { path: path.to_path_buf(), message };
        let file_len = file.metadata().map_err(ConvertError::io(path))?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(|_| bad("shorter than its 8-byte header length".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        // The safetensors format caps headers at 100 MB; refuse before allocating.
        if header_len > 100_000_000 || 8 + header_len > file_len {
            return Err(bad(format!("header length {header_len} does not fit a {file_len}-byte file")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(ConvertError::io(path))?;
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| bad(format!("invalid header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = metadata.data_len() as u64;
        if data_start + data_len != file_len {
            return Err(bad(format!(
                "header describes {data_len} data bytes but the file holds {}",
                file_len - data_start
            )));
        }
        let mut tensors = Vec::new();
        for (name, info) in metadata.tensors() {
            let dtype = match info.dtype {
                Dtype::F32 => SourceDtype::F32,
                Dtype::F16 => SourceDtype::F16,
                Dtype::BF16 => SourceDtype::Bf16,
                other => return Err(ConvertError::UnsupportedDtype { tensor: name, dtype: format!("{other:?}") }),
            };
            tensors.push(SourceTensor {
                name,
                dtype,
                shape: info.shape.clone(),
                offset: data_start + info.data_offsets.0 as u64,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SafetensorsFile { path: path.to_path_buf(), file, tensors })
    }

    /// Reads rows `first..first + count` of `tensor` as f32 into `out` (cleared first).
    pub fn read_rows(
        &mut self,
        tensor: &SourceTensor,
        first: usize,
        count: usize,
        bytes: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        let row_len = tensor.row_len();
        let esize = tensor.dtype.size();
        let start = tensor.offset + (first * row_len * esize) as u64;
        bytes.resize(count * row_len * esize, 0);
        self.file.seek(SeekFrom::Start(start)).map_err(ConvertError::io(&self.path))?;
        self.file.read_exact(bytes).map_err(ConvertError::io(&self.path))?;
        out.clear();
        match tensor.dtype {
            SourceDtype::F32 => {
                out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            }
            SourceDtype::F16 => {
                out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()));
            }
            SourceDtype::Bf16 => {
                out.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()));
            }
        }
        Ok(())
    }
}

/// How sentence-transformers pools token vectors (`1_Pooling/config.json`), as GGUF's
/// `pooling_type` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingType {
    /// Mean over tokens (1).
    Mean,
    /// The first token (2).
    Cls,
    /// The last token (3).
    Last,
}

impl PoolingType {
    /// The value of `<arch>.pooling_type`.
    pub fn gguf_value(self) -> u32 {
        match self {
            PoolingType::Mean => 1,
            PoolingType::Cls => 2,
            PoolingType::Last => 3,
        }
    }
}

/// A sentence-transformers Dense module (`2_Dense`, `3_Dense`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseModule {
    /// Folder inside the model directory.
    pub path: String,
    /// GGUF tensor prefix: `dense_2` or `dense_3`.
    pub prefix: String,
    /// `in_features` from the module's config.
    pub in_features: Option<u32>,
    /// `out_features` from the module's config.
    pub out_features: Option<u32>,
}

/// What `modules.json` declares beyond the transformer itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    /// Dense modules with a `model.safetensors`, in `modules.json` order.
    pub dense: Vec<DenseModule>,
    /// Pooling mode, when a Pooling module is declared.
    pub pooling: Option<PoolingType>,
}

impl Modules {
    /// Reads `modules.json` and the configs it points to, as llama.cpp's converter does with
    /// `--sentence-transformers-dense-modules`.
    pub fn load(dir: &Path) -> Result<Self, ConvertError> {
        let modules_path = dir.join("modules.json");
        let Some(modules) = read_json_opt(&modules_path)? else {
            return Ok(Modules::default());
        };
        let list = modules.as_array().ok_or_else(|| ConvertError::json(&modules_path, "expected an array"))?;
        let mut out = Modules::default();
        for module in list {
            let kind = module.get("type").and_then(Value::as_str).unwrap_or_default();
            let path = module.get("path").and_then(Value::as_str).unwrap_or_default();
            if kind.ends_with("Dense") {
                // A declared module without its weights is a broken download, not a model
                // without that module: converting anyway would give a GGUF that no runtime
                // loads (llama.cpp's converter skips it, and its output then fails to load).
                let weights = dir.join(path).join("model.safetensors");
                if !weights.is_file() {
                    return Err(ConvertError::MissingFile { path: weights });
                }
                // llama.cpp names the module 2_Dense dense_2 and any other Dense module dense_3.
                let prefix = if path == "2_Dense" { "dense_2" } else { "dense_3" };
                let conf = read_json_opt(&dir.join(path).join("config.json"))?;
                let feature = |key: &str| {
                    conf.as_ref().and_then(|c| c.get(key)).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok())
                };
                out.dense.push(DenseModule {
                    path: path.to_owned(),
                    prefix: prefix.to_owned(),
                    in_features: feature("in_features"),
                    out_features: feature("out_features"),
                });
            } else if kind == "sentence_transformers.models.Pooling" && out.pooling.is_none() {
                let conf_path = dir.join(path).join("config.json");
                let conf = read_json(&conf_path)?;
                let flag = |key: &str| conf.get(key).and_then(Value::as_bool).unwrap_or(false);
                out.pooling = Some(if flag("pooling_mode_mean_tokens") {
                    PoolingType::Mean
                } else if flag("pooling_mode_cls_token") {
                    PoolingType::Cls
                } else if flag("pooling_mode_lasttoken") {
                    PoolingType::Last
                } else {
                    return Err(ConvertError::json(&conf_path, "only mean, cls and last-token pooling are supported"));
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_st(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_declared_dense_module_without_weights_is_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#;
        std::fs::write(dir.path().join("modules.json"), modules).unwrap();
        std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(dir.path().join("1_Pooling/config.json"), r#"{"pooling_mode_mean_tokens": true}"#).unwrap();
        std::fs::create_dir_all(dir.path().join("2_Dense")).unwrap();
        match Modules::load(dir.path()) {
            Err(ConvertError::MissingFile { path }) => assert!(path.ends_with("2_Dense/model.safetensors"), "{path:?}"),
            other => panic!("{other:?}"),
        }
        write_st(&dir.path().join("2_Dense/model.safetensors"), "{}", &[]);
        let m = Modules::load(dir.path()).unwrap();
        assert_eq!(m.dense.len(), 1);
        assert_eq!(m.pooling, Some(PoolingType::Mean));
    }

    #[test]
    fn reads_rows_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let header = r#"{"b":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}}"#;
        let mut data = Vec::new();
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&half::bf16::from_f32(0.5).to_le_bytes());
        data.extend_from_slice(&half::bf16::from_f32(-2.0).to_le_bytes());
        write_st(&p, header, &data);
        let mut f = SafetensorsFile::open(&p).unwrap();
        let names: Vec<_> = f.tensors.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        let (mut bytes, mut out) = (Vec::new(), Vec::new());
        let b = f.tensors[1].clone();
        f.read_rows(&b, 1, 1, &mut bytes, &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
        let a = f.tensors[0].clone();
        f.read_rows(&a, 0, 1, &mut bytes, &mut out).unwrap();
        assert_eq!(out, [0.5, -2.0]);
    }

    #[test]
    fn rejects_inconsistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        // Data shorter than the header claims.
        write_st(&p, r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]);
        assert!(matches!(SafetensorsFile::open(&p), Err(ConvertError::Safetensors { .. })));
        // Size disagreeing with dtype × shape.
        write_st(&p, r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, &[0; 16]);
        assert!(matches!(SafetensorsFile::open(&p), Err(ConvertError::Safetensors { .. })));
        // Header length past the end.
        std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
        assert!(matches!(SafetensorsFile::open(&p), Err(ConvertError::Safetensors { .. })));
        // Unsupported dtype.
        write_st(&p, r#"{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, &[0; 16]);
        assert!(matches!(SafetensorsFile::open(&p), Err(ConvertError::UnsupportedDtype { .. })));
        assert!(matches!(
            SafetensorsFile::open(&dir.path().join("absent.safetensors")),
            Err(ConvertError::MissingFile { .. })
        ));
    }
}
