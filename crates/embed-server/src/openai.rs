//! OpenAI's `POST /v1/embeddings` and `GET /v1/models`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{ApiError, Flavor, Kind};
use crate::server::AppState;
use crate::submit;

/// The request body. Unknown fields are ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    /// A string, an array of strings, an array of token ids or an array of arrays of ids.
    #[serde(default)]
    input: Value,
    /// Accepted and ignored: this server serves one model (its name comes back in the answer).
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32, what the official Python client asks
    /// for and decodes with numpy).
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    /// 768, 512, 256 or 128: a Matryoshka prefix, renormalised to unit length as OpenAI does.
    #[serde(default)]
    dimensions: Option<usize>,
    /// Accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    /// One of EmbeddingGemma's task prompts (`query`, `document`, `STS`, ...); clients pass it
    /// as extra body. Default: the server's.
    #[serde(default)]
    prompt_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

#[derive(Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

pub(crate) async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(Flavor::OpenAi),
    }
}

async fn handle(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (defaults, req): (_, EmbeddingsRequest) = submit::read_embedding_request(state, body)?;
    let (inputs, options) = (|| {
        let inputs = crate::inputs::parse(req.input, "input")?;
        let mut options = defaults;
        if let Some(name) = &req.prompt_name {
            options = options.with_prompt(submit::named_prompt(name)?);
        }
        if let Some(n) = req.dimensions {
            options = options.with_dims(submit::dims(n)?).with_normalize(true);
        }
        Ok::<_, ApiError>((inputs, options))
    })()
    .inspect_err(|_| state.metrics.reject("validation"))?;
    let format = req.encoding_format.unwrap_or_default();
    let mut out = submit::embed(state, inputs, options, "input").await?;
    let data = std::mem::take(&mut out.vectors)
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => EmbeddingValue::Float(v),
                EncodingFormat::Base64 => EmbeddingValue::Base64(base64_f32(&v)),
            },
        })
        .collect();
    let mut response = Json(EmbeddingsResponse {
        object: "list",
        data,
        model: state.config.served_model_name.clone(),
        usage: Usage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    })
    .into_response();
    out.timing_headers(response.headers_mut());
    Ok(response)
}

/// The vector as little-endian f32 bytes in standard base64 (numpy's `frombuffer(..., float32)`
/// on any little-endian host reads it back bit for bit).
fn base64_f32(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "object": "list",
        "data": [model_object(&state)],
    }))
    .into_response()
}

/// `GET /v1/models/{id}` (the `openai` client's `models.retrieve`): the served model, or 404
/// in OpenAI's shape.
pub(crate) async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id != state.config.served_model_name {
        let mut e = ApiError::new(
            Kind::ModelNotFound,
            format!("the model `{id}` does not exist; this server serves `{}`", state.config.served_model_name),
        );
        e.param = Some("model".into());
        return e.into_response(Flavor::OpenAi);
    }
    Json(model_object(&state)).into_response()
}

fn model_object(state: &AppState) -> serde_json::Value {
    serde_json::json!({
        "id": state.config.served_model_name,
        "object": "model",
        "created": 0,
        "owned_by": "ggufembed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let s = base64_f32(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 32, 192]);
    }
}
