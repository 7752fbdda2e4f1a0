//! The `input` / `inputs` field: a string, an array of strings, an array of token ids, or an
//! array of arrays of token ids (OpenAI's four forms; TEI's are a subset). Parsed by hand from
//! JSON so an error names the element at fault (`input[3]`), which serde's untagged enums
//! cannot.

use serde_json::Value;

use crate::api::{ApiError, Kind};

/// One input as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawInput {
    Text(String),
    Ids(Vec<u32>),
}

impl RawInput {
    pub fn as_input(&self) -> embed_runtime::Input<'_> {
        match self {
            RawInput::Text(s) => embed_runtime::Input::Text(s),
            RawInput::Ids(ids) => embed_runtime::Input::Ids(ids),
        }
    }

    /// Bytes of text (or ids), to decide whether tokenizing is worth a blocking thread.
    pub fn weight(&self) -> usize {
        match self {
            RawInput::Text(s) => s.len(),
            RawInput::Ids(ids) => ids.len(),
        }
    }

    /// Characters of text (token ids have none).
    pub fn characters(&self) -> usize {
        match self {
            RawInput::Text(s) => s.chars().count(),
            RawInput::Ids(_) => 0,
        }
    }
}

/// The inputs of a request, and whether it was a single input (TEI's `method="single"`).
#[derive(Debug)]
pub(crate) struct Inputs {
    pub items: Vec<RawInput>,
    pub single: bool,
}

impl Inputs {
    /// The name of input `i` in error messages: the field itself for a single input.
    pub fn param(&self, field: &str, i: usize) -> String {
        if self.single {
            field.to_owned()
        } else {
            format!("{field}[{i}]")
        }
    }
}

const EXPECTED: &str =
    "expected a string, an array of strings, an array of token ids or an array of arrays of token ids";

/// Parses the value of `field`.
pub(crate) fn parse(value: Value, field: &str) -> Result<Inputs, ApiError> {
    match value {
        Value::String(s) => Ok(Inputs {
            items: vec![RawInput::Text(s)],
            single: true,
        }),
        Value::Array(items) if items.is_empty() => Err(ApiError {
            kind: Kind::Empty,
            message: format!("`{field}` is an empty array; give at least one input"),
            param: Some(field.to_owned()),
        }),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(Inputs {
            items: vec![RawInput::Ids(ids(&items, field)?)],
            single: true,
        }),
        Value::Array(items) => {
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let param = format!("{field}[{i}]");
                    match item {
                        Value::String(s) => Ok(RawInput::Text(s)),
                        Value::Array(ids_) => ids(&ids_, &param).map(RawInput::Ids),
                        other => Err(ApiError::field(
                            param,
                            format!("expected a string or an array of token ids, found {}", kind_of(&other)),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(Inputs {
                items,
                single: false,
            })
        }
        Value::Null => Err(ApiError::field(field, format!("missing; {EXPECTED}"))),
        other => Err(ApiError::field(field, format!("{EXPECTED}, found {}", kind_of(&other)))),
    }
}

fn ids(items: &[Value], param: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::field(
                        format!("{param}[{j}]"),
                        format!("a token id is an integer from 0 to {}, found {v}", u32::MAX),
                    )
                })
        })
        .collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_four_openai_forms() {
        let one = parse(json!("a"), "input").unwrap();
        assert!(one.single);
        assert_eq!(one.items, vec![RawInput::Text("a".into())]);
        let many = parse(json!(["a", "b"]), "input").unwrap();
        assert!(!many.single);
        assert_eq!(many.items.len(), 2);
        let ids = parse(json!([2, 10, 1]), "input").unwrap();
        assert!(ids.single);
        assert_eq!(ids.items, vec![RawInput::Ids(vec![2, 10, 1])]);
        let idss = parse(json!([[2, 10], [5]]), "input").unwrap();
        assert_eq!(idss.items, vec![RawInput::Ids(vec![2, 10]), RawInput::Ids(vec![5])]);
        let mixed = parse(json!(["a", [5]]), "input").unwrap();
        assert_eq!(mixed.items.len(), 2);
    }

    #[test]
    fn errors_name_the_element() {
        let e = parse(json!([]), "input").unwrap_err();
        assert_eq!(e.kind, Kind::Empty);
        let e = parse(json!(["a", 3.5, "b"]), "inputs").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("inputs[1]"), "{e:?}");
        let e = parse(json!(["a", [1, -2]]), "input").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[1][1]"), "{e:?}");
        let e = parse(json!([1, 5_000_000_000u64]), "input").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[1]"), "{e:?}");
        let e = parse(json!({"a": 1}), "input").unwrap_err();
        assert!(e.message.contains("an object"), "{e:?}");
        assert_eq!(parse(json!(null), "input").unwrap_err().kind, Kind::Validation);
    }
}
