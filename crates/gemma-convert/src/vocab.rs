//! The GGUF vocabulary: `tokenizer.ggml.{tokens,scores,token_type}` and the special-token keys,
//! built the way llama.cpp's converter builds them for a SentencePiece model.
//!
//! The rules, in order (each step overrides the previous one for the ids it touches):
//! 1. every id below the vocabulary size starts as `[PAD<id>]`, score -10000, type UNUSED;
//! 2. each SentencePiece piece gives its text and score; its type maps UNKNOWN→2, CONTROL→3,
//!    UNUSED→5, BYTE→6, anything else (NORMAL, USER_DEFINED) → NORMAL (1);
//! 3. `added_tokens.json` entries become USER_DEFINED (4), score -1000;
//! 4. `tokenizer_config.json`'s `added_tokens_decoder` entries get score -1000 and type CONTROL (3)
//!    when marked special or when they look special (`<mask>`, `<unusedN>`, `<|...|>`, ...), else
//!    USER_DEFINED with U+2581 turned back into spaces;
//! 5. ids at or above the vocabulary size are ignored.

use std::path::Path;

use serde_json::Value;

use crate::ConvertError;
use crate::sentencepiece::{PieceType, SentencePieceModel};
use crate::source::read_json_opt;

/// GGUF token types (`llama_token_type`).
pub mod token_type {
    /// An ordinary piece.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control token.
    pub const CONTROL: i32 = 3;
    /// A user-defined token, matched whole.
    pub const USER_DEFINED: i32 = 4;
    /// An unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token.
    pub const BYTE: i32 = 6;
}

/// The vocabulary arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// Token texts, by id.
    pub tokens: Vec<String>,
    /// Token scores, by id.
    pub scores: Vec<f32>,
    /// Token types (see [`token_type`]), by id.
    pub types: Vec<i32>,
}

/// Mirrors llama.cpp's `does_token_look_special`: tokens some checkpoints forget to mark special.
fn looks_special(text: &str) -> bool {
    matches!(text, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with("<\u{ff5c}") && text.ends_with("\u{ff5c}>"))
        || (text.starts_with("<unused") && text.ends_with('>'))
}

impl Vocab {
    /// Builds the vocabulary from a decoded `tokenizer.model` and the model folder's
    /// `added_tokens.json` / `tokenizer_config.json` (both optional).
    pub fn build(sp: &SentencePieceModel, vocab_size: Option<u32>, dir: &Path) -> Result<Self, ConvertError> {
        let n = vocab_size.map_or(sp.pieces.len(), |v| v as usize);
        let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
        let mut scores = vec![-10000.0f32; n];
        let mut types = vec![token_type::UNUSED; n];
        for (id, piece) in sp.pieces.iter().enumerate().take(n) {
            tokens[id] = piece.piece.clone();
            scores[id] = piece.score;
            types[id] = match piece.kind {
                PieceType::Unknown => token_type::UNKNOWN,
                PieceType::Control => token_type::CONTROL,
                PieceType::Unused => token_type::UNUSED,
                PieceType::Byte => token_type::BYTE,
                PieceType::Normal | PieceType::UserDefined => token_type::NORMAL,
            };
        }

        let added_path = dir.join("added_tokens.json");
        if let Some(added) = read_json_opt(&added_path)? {
            let map = added.as_object().ok_or_else(|| ConvertError::json(&added_path, "expected an object"))?;
            for (text, id) in map {
                let id = id.as_u64().ok_or_else(|| ConvertError::json(&added_path, "token ids must be integers"))?;
                if let Some(id) = usize::try_from(id).ok().filter(|&id| id < n) {
                    tokens[id] = text.clone();
                    scores[id] = -1000.0;
                    types[id] = token_type::USER_DEFINED;
                }
            }
        }

        let config_path = dir.join("tokenizer_config.json");
        if let Some(config) = read_json_opt(&config_path)?
            && let Some(decoder) = config.get("added_tokens_decoder").and_then(Value::as_object) {
                for (id, data) in decoder {
                    let id: usize =
                        id.parse().map_err(|_| ConvertError::json(&config_path, format!("bad token id {id:?}")))?;
                    if id >= n {
                        continue;
                    }
                    let content = data
                        .get("content")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ConvertError::json(&config_path, format!("token {id} has no content")))?;
                    let special = data.get("special").and_then(Value::as_bool).unwrap_or(false);
                    if special || looks_special(content) {
                        types[id] = token_type::CONTROL;
                        tokens[id] = content.to_owned();
                    } else {
                        types[id] = token_type::USER_DEFINED;
                        tokens[id] = content.replace('\u{2581}', " ");
                    }
                    scores[id] = -1000.0;
                }
            }
        Ok(Vocab { tokens, scores, types })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Special-token ids and add-flags, as gguf-py's `SpecialVocab` derives them; both lists keep
/// the order in which llama.cpp writes the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `(kind, id)` with kind in bos, eos, unk, sep, pad, cls, mask (and eot when remapped).
    pub ids: Vec<(String, u32)>,
    /// `(kind, flag)` for `tokenizer.ggml.add_<kind>_token`.
    pub add: Vec<(String, bool)>,
    /// `tokenizer.chat_template`, when the folder has one.
    pub chat_template: Option<String>,
}

fn set_ordered<T>(list: &mut Vec<(String, T)>, key: &str, value: T) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key.to_owned(), value)),
    }
}

fn special_token_id(tokenizer: Option<&Value>, config: &Value, kind: &str) -> Option<i64> {
    let content = match config.get(format!("{kind}_token"))? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("content")?.as_str()?,
        _ => return None,
    };
    tokenizer?
        .get("added_tokens")?
        .as_array()?
        .iter()
        .find(|t| t.get("content").and_then(Value::as_str) == Some(content))?
        .get("id")?
        .as_i64()
}

fn template_special(entry: Option<&Value>) -> Option<&str> {
    entry?.get("SpecialToken")?.get("id")?.as_str()
}

fn template_sequence(entry: Option<&Value>) -> Option<&str> {
    entry?.get("Sequence")?.get("id")?.as_str()
}

impl SpecialTokens {
    /// Reads `tokenizer.json`, `tokenizer_config.json` and `config.json` of the folder.
    pub fn load(dir: &Path, n_vocab: usize) -> Result<Self, ConvertError> {
        let tokenizer = read_json_opt(&dir.join("tokenizer.json"))?;
        let mut config = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let mut out = SpecialTokens::default();
        let mut kinds: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

        if let (Some(tok), Some(cfg)) = (tokenizer.as_ref(), config.as_mut()) {
            Self::apply_post_processor(tok, cfg, &mut out, &mut kinds);
        } else if let Some(tok) = tokenizer.as_ref() {
            let mut empty = Value::Object(Default::default());
            Self::apply_post_processor(tok, &mut empty, &mut out, &mut kinds);
        }

        if let Some(cfg) = config.as_ref() {
            let template = match cfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
            };
            out.chat_template = template;
            for kind in &kinds {
                if let Some(flag) = cfg.get(format!("add_{kind}_token")).and_then(Value::as_bool) {
                    set_ordered(&mut out.add, kind, flag);
                }
                if let Some(id) = special_token_id(tokenizer.as_ref(), cfg, kind) {
                    out.set_id(kind, id, n_vocab);
                }
            }
        }

        if let Some(model_cfg) = read_json_opt(&dir.join("config.json"))? {
            for kind in &kinds {
                let id = model_cfg
                    .get(format!("{kind}_token_id"))
                    .or_else(|| model_cfg.get("text_config").and_then(|t| t.get(format!("{kind}_token_id"))));
                if let Some(id) = id.and_then(Value::as_i64) {
                    out.set_id(kind, id, n_vocab);
                }
            }
        }
        Ok(out)
    }

    fn set_id(&mut self, kind: &str, id: i64, n_vocab: usize) {
        let in_range = u32::try_from(id).ok().filter(|&id| (id as usize) < n_vocab);
        if let Some(id) = in_range
            && !self.ids.iter().any(|(k, _)| k == kind) {
                self.ids.push((kind.to_owned(), id));
            }
    }

    /// The crude `TemplateProcessing` reading gguf-py does to decide add_bos/add_eos/add_sep.
    fn apply_post_processor(tok: &Value, cfg: &mut Value, out: &mut SpecialTokens, kinds: &mut Vec<&str>) {
        let Some(post) = tok.get("post_processor").filter(|p| !p.is_null()) else { return };
        let processors: Vec<Value> = match post.get("processors").and_then(Value::as_array) {
            Some(list) => list.clone(),
            None => vec![post.clone()],
        };
        let str_of = |cfg: &Value, key: &str| cfg.get(key).and_then(Value::as_str).map(str::to_owned);
        let special_bos = str_of(cfg, "bos_token").or_else(|| str_of(cfg, "cls_token"));
        let mut special_eos = str_of(cfg, "eos_token").or_else(|| str_of(cfg, "sep_token"));
        let special_cls = str_of(cfg, "cls_token");
        let special_sep = str_of(cfg, "sep_token");
        let have_cfg = cfg.as_object().is_some_and(|o| !o.is_empty());
        for processor in &processors {
            match processor.get("type").and_then(Value::as_str) {
                Some("RobertaProcessing") => {
                    for kind in ["bos", "eos", "sep"] {
                        set_ordered(&mut out.add, kind, true);
                    }
                }
                Some("TemplateProcessing") => {
                    let single = processor.get("single").and_then(Value::as_array).cloned().unwrap_or_default();
                    let pair = processor.get("pair").and_then(Value::as_array).cloned().unwrap_or_default();
                    let mut first: Option<String> = None;
                    let mut last: Option<String> = None;
                    let mut bos = special_bos.clone();
                    if single.len() > 1 {
                        first = template_special(single.first()).map(str::to_owned);
                        if let Some(f) = &first {
                            if !have_cfg {
                                bos = Some(f.clone());
                            }
                            let is_bos = Some(f) == bos.as_ref() || Some(f) == special_cls.as_ref();
                            set_ordered(&mut out.add, "bos", is_bos);
                        }
                        last = template_special(single.last()).map(str::to_owned);
                        if let Some(l) = &last {
                            if !have_cfg {
                                special_eos = Some(l.clone());
                            } else if Some(l) != special_eos.as_ref() {
                                // The template ends in another token than eos: gguf-py keeps the
                                // configured eos as eot and makes the template's token the eos.
                                if !kinds.contains(&"eot") {
                                    kinds.push("eot");
                                    if let (Some(obj), Some(e)) = (cfg.as_object_mut(), special_eos.clone()) {
                                        obj.insert("eot_token".into(), Value::String(e));
                                    }
                                }
                                if let Some(obj) = cfg.as_object_mut() {
                                    obj.insert("eos_token".into(), Value::String(l.clone()));
                                }
                                special_eos = Some(l.clone());
                            }
                            set_ordered(&mut out.add, "eos", Some(l) == special_eos.as_ref());
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && template_special(pair.first()) == first.as_deref());
                        let stop = if last.is_some() && template_special(pair.last()) == last.as_deref() {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let inner = pair.get(start..stop.max(start)).unwrap_or(&[]);
                        if !inner.is_empty()
                            && template_sequence(inner.first()) == Some("A")
                            && template_sequence(inner.last()) == Some("B")
                            && inner.len() > 2
                        {
                            let middle = &inner[1..inner.len() - 1];
                            let is_sep = |t: Option<&str>| {
                                t.is_some() && (t == special_sep.as_deref() || t == special_eos.as_deref())
                            };
                            let mut add_sep = false;
                            if is_sep(template_special(middle.first())) && last.is_none() {
                                add_sep = true;
                            }
                            if middle.len() == 2 && is_sep(template_special(middle.get(1))) {
                                add_sep = true;
                            }
                            set_ordered(&mut out.add, "sep", add_sep);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentencepiece::Piece;

    fn sp(pieces: &[(&str, f32, PieceType)]) -> SentencePieceModel {
        SentencePieceModel {
            pieces: pieces.iter().map(|&(p, s, k)| Piece { piece: p.into(), score: s, kind: k }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn applies_llama_cpp_rules_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("added_tokens.json"), r#"{"<extra>": 4, "<beyond>": 99}"#).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"added_tokens_decoder": {
                "0": {"content": "<pad>", "special": true},
                "3": {"content": "<unused7>", "special": false},
                "5": {"content": "▁▁", "special": false},
                "77": {"content": "<far>", "special": true}}}"#,
        )
        .unwrap();
        let model = sp(&[
            ("<pad>", 0.0, PieceType::Control),
            ("<unk>", 0.0, PieceType::Unknown),
            ("<0x41>", 0.0, PieceType::Byte),
            ("x", -3.0, PieceType::UserDefined),
            ("y", -4.0, PieceType::Unused),
            ("z", -5.0, PieceType::Normal),
        ]);
        let v = Vocab::build(&model, Some(7), dir.path()).unwrap();
        assert_eq!(v.tokens, ["<pad>", "<unk>", "<0x41>", "<unused7>", "<extra>", "  ", "[PAD6]"]);
        assert_eq!(v.scores, [-1000.0, 0.0, 0.0, -1000.0, -1000.0, -1000.0, -10000.0]);
        assert_eq!(v.types, [3, 2, 6, 3, 4, 4, 5]);
    }

    #[test]
    fn special_tokens_follow_template_processing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"added_tokens": [{"id": 0, "content": "<pad>"}, {"id": 1, "content": "<eos>"},
                                 {"id": 2, "content": "<bos>"}, {"id": 3, "content": "<unk>"}],
                "post_processor": {"type": "TemplateProcessing",
                  "single": [{"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "<eos>"}}],
                  "pair": [{"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "<eos>"}},
                           {"SpecialToken": {"id": "<bos>"}}, {"Sequence": {"id": "B"}}, {"SpecialToken": {"id": "<eos>"}}]}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"add_bos_token": true, "add_eos_token": true, "bos_token": "<bos>", "eos_token": "<eos>",
                "pad_token": "<pad>", "unk_token": "<unk>"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"bos_token_id": 2, "eos_token_id": 1, "sep_token_id": 9}"#)
            .unwrap();
        let s = SpecialTokens::load(dir.path(), 8).unwrap();
        let ids: Vec<(&str, u32)> = s.ids.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(ids, [("bos", 2), ("eos", 1), ("unk", 3), ("pad", 0)], "sep 9 is out of range");
        let add: Vec<(&str, bool)> = s.add.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(add, [("bos", true), ("eos", true), ("sep", false)]);
        assert_eq!(s.chat_template, None);
    }

    #[test]
    fn looks_special_matches_llama_cpp_list() {
        for t in ["<mask>", "<unused12>", "<|im_start|>", "<pad>"] {
            assert!(looks_special(t), "{t}");
        }
        for t in ["<h1>", "[multimodal]", "mask", "<unused"] {
            assert!(!looks_special(t), "{t}");
        }
    }
}
