//! Descriptive `general.*` metadata: name, size label, license, tags and sampling defaults.
//!
//! llama.cpp derives these heuristically from the model card, `generation_config.json` and the
//! model's id (usually the folder name). The runtime never reads them; they are reproduced so
//! that our file can be compared byte for byte with llama.cpp's.

use std::path::Path;

use serde_json::Value;

use crate::ConvertError;
use crate::source::read_json_opt;

/// A metadata value as the converter emits it (the subset of GGUF types it needs).
#[derive(Debug, Clone, PartialEq)]
pub enum KvValue {
    /// GGUF UINT32.
    U32(u32),
    /// GGUF INT32.
    I32(i32),
    /// GGUF FLOAT32.
    F32(f32),
    /// GGUF BOOL.
    Bool(bool),
    /// GGUF STRING.
    Str(String),
    /// GGUF ARRAY of STRING.
    StrArray(Vec<String>),
    /// GGUF ARRAY of FLOAT32.
    F32Array(Vec<f32>),
    /// GGUF ARRAY of INT32.
    I32Array(Vec<i32>),
}

/// The descriptive keys written after `general.type`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneralMetadata {
    /// `general.name`.
    pub name: String,
    /// `general.basename`.
    pub basename: Option<String>,
    /// `general.size_label`.
    pub size_label: Option<String>,
    /// `general.license`.
    pub license: Option<String>,
    /// `general.tags` (model-card tags followed by the pipeline tag, duplicates kept).
    pub tags: Vec<String>,
    /// `general.sampling.*` from `generation_config.json`, in llama.cpp's order.
    pub sampling: Vec<(String, KvValue)>,
}

/// The model id llama.cpp sees when EmbeddingGemma is converted from its Hugging Face folder.
pub const EMBEDDINGGEMMA_MODEL_ID: &str = "embeddinggemma-300m";

/// `Metadata.id_to_title`: title-case lowercase words except version-like or numeric ones.
fn id_to_title(id: &str) -> String {
    id.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let is_lower = w.chars().any(char::is_lowercase) && !w.chars().any(char::is_uppercase);
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || (w.starts_with('v') && w.len() > 1 && w[1..].chars().all(|c| c.is_ascii_digit() || c == '.'));
            if is_lower && !versionish { title_case(w) } else { w.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.title()`: uppercase the first letter of each run of letters.
fn title_case(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_letter = false;
    for c in w.chars() {
        if c.is_alphabetic() {
            if prev_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = false;
        }
    }
    out
}

/// A parameter count such as `300m`, `1.5B`, `7b`.
fn is_size_label(part: &str) -> bool {
    let Some(last) = part.chars().last() else { return false };
    let digits = &part[..part.len() - last.len_utf8()];
    matches!(last.to_ascii_uppercase(), 'K' | 'M' | 'B' | 'T')
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.starts_with(|c: char| c.is_ascii_digit())
}

/// `1_234_567` parameters as llama.cpp's rounded notation (`1.2M`, `308M`).
fn rounded_param_count(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, 'T')
    } else if n > 1e9 {
        (n * 1e-9, 'B')
    } else if n > 1e6 {
        (n * 1e-6, 'M')
    } else {
        (n * 1e-3, 'K')
    };
    let int_digits = format!("{}", scaled.round() as u64).trim_start_matches('0').len();
    let decimals = 2usize.saturating_sub(int_digits);
    format!("{scaled:.decimals$}{suffix}")
}

/// The `key: value` scalars and `key:` + `- item` lists of a README's YAML front matter; enough
/// for the fields llama.cpp reads (license, tags, pipeline_tag).
fn front_matter(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = readme.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return out;
    }
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_owned();
    for line in lines {
        if line.trim_end() == "---" {
            break;
        }
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            if line.starts_with([' ', '-'])
                && let Some(last) = out.last_mut() {
                    last.1.push(unquote(item));
                }
            continue;
        }
        if line.starts_with(' ') {
            continue; // a continuation of a folded scalar
        }
        if let Some((key, value)) = line.split_once(':') {
            let value = value.trim();
            let values = if value.is_empty() { Vec::new() } else { vec![unquote(value)] };
            out.push((key.trim().to_owned(), values));
        }
    }
    out
}

impl GeneralMetadata {
    /// Builds the metadata llama.cpp would write for `model_id` (its heuristics split the id
    /// into basename and size label), with license and tags from the folder's README front
    /// matter and sampling defaults from `generation_config.json`. `param_count` gives the size
    /// label when the id holds none.
    pub fn from_folder(dir: &Path, model_id: &str, param_count: u64) -> Result<Self, ConvertError> {
        let parts: Vec<&str> = model_id.split('-').collect();
        let size_pos = parts.iter().position(|p| is_size_label(p));
        let (basename, size_label) = match size_pos {
            Some(pos) => {
                let base = parts[..pos].join("-");
                (Some(base).filter(|b| !b.is_empty()), Some(parts[pos].to_ascii_uppercase()))
            }
            None => (Some(model_id.to_owned()), Some(rounded_param_count(param_count))),
        };
        let mut meta = GeneralMetadata {
            name: id_to_title(model_id),
            basename,
            size_label,
            license: None,
            tags: Vec::new(),
            sampling: Vec::new(),
        };
        if let Ok(readme) = std::fs::read_to_string(dir.join("README.md")) {
            let fm = front_matter(&readme);
            let get = |k: &str| fm.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
            meta.license = get("license").into_iter().next();
            meta.tags.extend(get("tags"));
            meta.tags.extend(get("pipeline_tag"));
        }
        if let Some(gen_cfg) = read_json_opt(&dir.join("generation_config.json"))? {
            meta.sampling = sampling_keys(&gen_cfg);
        }
        Ok(meta)
    }
}

fn sampling_keys(cfg: &Value) -> Vec<(String, KvValue)> {
    enum Kind {
        Str,
        Int,
        Float,
    }
    const KEYS: [(&str, &str, Kind); 12] = [
        ("sequence", "sequence", Kind::Str),
        ("top_k", "top_k", Kind::Int),
        ("top_p", "top_p", Kind::Float),
        ("min_p", "min_p", Kind::Float),
        ("xtc_probability", "xtc_probability", Kind::Float),
        ("xtc_threshold", "xtc_threshold", Kind::Float),
        ("temperature", "temp", Kind::Float),
        ("penalty_last_n", "penalty_last_n", Kind::Int),
        ("penalty_repeat", "penalty_repeat", Kind::Float),
        ("mirostat", "mirostat", Kind::Int),
        ("mirostat_tau", "mirostat_tau", Kind::Float),
        ("mirostat_eta", "mirostat_eta", Kind::Float),
    ];
    let mut out = Vec::new();
    for (src, dst, kind) in KEYS {
        let Some(v) = cfg.get(src).filter(|v| !v.is_null()) else { continue };
        let value = match kind {
            Kind::Str => v.as_str().map(|s| KvValue::Str(s.to_owned())),
            Kind::Int => v.as_i64().and_then(|i| i32::try_from(i).ok()).map(KvValue::I32),
            Kind::Float => v.as_f64().map(|f| KvValue::F32(f as f32)),
        };
        if let Some(value) = value {
            out.push((format!("general.sampling.{dst}"), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddinggemma_id_gives_llama_cpp_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("README.md"),
            "---\nlicense: gemma\npipeline_tag: sentence-similarity\ntags:\n- sentence-transformers\n- feature-extraction\nextra: x\n  folded\n---\n# body\nlicense: no\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("generation_config.json"), r#"{"do_sample": true, "top_k": 64, "top_p": 0.95}"#)
            .unwrap();
        let m = GeneralMetadata::from_folder(dir.path(), EMBEDDINGGEMMA_MODEL_ID, 0).unwrap();
        assert_eq!(m.name, "Embeddinggemma 300m");
        assert_eq!(m.basename.as_deref(), Some("embeddinggemma"));
        assert_eq!(m.size_label.as_deref(), Some("300M"));
        assert_eq!(m.license.as_deref(), Some("gemma"));
        assert_eq!(m.tags, ["sentence-transformers", "feature-extraction", "sentence-similarity"]);
        assert_eq!(
            m.sampling,
            [
                ("general.sampling.top_k".to_owned(), KvValue::I32(64)),
                ("general.sampling.top_p".to_owned(), KvValue::F32(0.95)),
            ]
        );
    }

    #[test]
    fn ids_without_size_use_the_parameter_count() {
        let dir = tempfile::tempdir().unwrap();
        let m = GeneralMetadata::from_folder(dir.path(), "model_download", 307_581_696).unwrap();
        assert_eq!(m.name, "Model_Download");
        assert_eq!(m.size_label.as_deref(), Some("308M"));
        assert_eq!(rounded_param_count(1_234_567_890), "1.2B");
        assert_eq!(id_to_title("gemma-3-v1.2-it"), "Gemma 3 v1.2 It");
        assert!(m.tags.is_empty() && m.license.is_none() && m.sampling.is_empty());
    }
}
