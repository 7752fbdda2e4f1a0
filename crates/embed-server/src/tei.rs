//! text-embeddings-inference's `POST /embed` and `POST /tokenize`, with TEI's field names and
//! defaults.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use embed_runtime::{Embedder, Truncation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{ApiError, Flavor};
use crate::inputs::{Inputs, RawInput};
use crate::server::AppState;
use crate::submit;

fn yes() -> bool {
    true
}

/// TEI's `EmbedRequest`.
#[derive(Debug, Deserialize)]
struct EmbedRequest {
    /// A string or an array of strings (token-id arrays are accepted too).
    #[serde(default)]
    inputs: Value,
    /// Scale each vector (a Matryoshka prefix included) to unit length. Default true, as TEI.
    #[serde(default = "yes")]
    normalize: bool,
    /// Truncate texts past the context (true) or refuse them with a 422 (false). Default: the
    /// server's truncation (`auto_truncate` in `/info`).
    #[serde(default)]
    truncate: Option<bool>,
    /// Which end a truncated text keeps: `Right` (default) keeps the start, `Left` the end.
    #[serde(default)]
    truncation_direction: Direction,
    /// One of the model's named prompts (`query`, `document`, `STS`, ...).
    #[serde(default)]
    prompt_name: Option<String>,
    /// 768, 512, 256 or 128.
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
enum Direction {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[default]
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}

pub(crate) async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_embed(&state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(Flavor::Tei),
    }
}

async fn handle_embed(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let defaults = state.embedder().inspect_err(|_| state.metrics.reject("unavailable"))?.options().clone();
    let req: EmbedRequest =
        crate::body::parse(body, state.config.payload_limit).inspect_err(|e| state.metrics.reject(e.reason()))?;
    let (inputs, options) = (|| {
        let inputs = crate::inputs::parse(req.inputs, "inputs")?;
        let auto_truncate = defaults.truncation() != Truncation::Error;
        let truncation = match (req.truncate.unwrap_or(auto_truncate), req.truncation_direction) {
            (false, _) => Truncation::Error,
            (true, Direction::Left) => Truncation::Left,
            (true, Direction::Right) => Truncation::Right,
        };
        let mut options = defaults.with_truncation(truncation).with_normalize(req.normalize);
        if let Some(name) = &req.prompt_name {
            options = options.with_prompt(submit::named_prompt(name)?);
        }
        if let Some(n) = req.dimensions {
            options = options.with_dims(submit::dims(n)?);
        }
        Ok::<_, ApiError>((inputs, options))
    })()
    .inspect_err(|_| state.metrics.reject("validation"))?;
    let mut out = submit::embed(state, inputs, options, "inputs").await?;
    let mut response = Json(std::mem::take(&mut out.vectors)).into_response();
    out.timing_headers(response.headers_mut());
    Ok(response)
}

/// TEI's `TokenizeRequest`.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    inputs: Value,
    /// Include `<bos>` and `<eos>` (default true).
    #[serde(default = "yes")]
    add_special_tokens: bool,
    #[serde(default)]
    prompt_name: Option<String>,
}

/// TEI's `SimpleToken`: for a token of the text, its byte range in the text as tokenized (the
/// prompt, if any, then the input) and that stretch of text; for the `<bos>`/`<eos>` the
/// tokenizer adds, its piece, `special`, and no range.
#[derive(Debug, Serialize)]
struct SimpleToken {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

pub(crate) async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_tokenize(&state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(Flavor::Tei),
    }
}

async fn handle_tokenize(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: TokenizeRequest = crate::body::parse(body, state.config.payload_limit)?;
    let inputs = crate::inputs::parse(req.inputs, "inputs")?;
    let prefix = match &req.prompt_name {
        Some(name) => submit::named_prompt(name)?.prefix().into_owned(),
        None => state.embedder()?.options().prompt().prefix().into_owned(),
    };
    if inputs.items.len() > state.config.max_client_batch {
        return Err(ApiError::field(
            "inputs",
            format!(
                "{} inputs, more than this server's limit of {} per request (--max-client-batch)",
                inputs.items.len(),
                state.config.max_client_batch
            ),
        ));
    }
    let embedder = state.embedder()?.clone();
    let add_special = req.add_special_tokens;
    // Serialized under the gate too: the tokens as structs take several times their JSON.
    let json = submit::tokenize_blocking(state, move || {
        let tokens = tokenize_all(&embedder, &inputs, &prefix, add_special)?;
        serde_json::to_vec(&tokens)
            .map_err(|e| ApiError::new(crate::api::Kind::Internal, format!("cannot write the tokens: {e}")))
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

fn tokenize_all(
    embedder: &Embedder,
    inputs: &Inputs,
    prefix: &str,
    add_special: bool,
) -> Result<Vec<Vec<SimpleToken>>, ApiError> {
    let tok = embedder.tokenizer();
    inputs
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let RawInput::Text(text) = item else {
                return Err(ApiError::field(inputs.param("inputs", i), "`/tokenize` takes text, not token ids"));
            };
            let full = format!("{prefix}{text}");
            let mut ids = tok.encode(&full);
            if !add_special {
                if tok.adds_bos() && tok.bos_id().is_some() && !ids.is_empty() {
                    ids.remove(0);
                }
                if tok.adds_eos() && tok.eos_id().is_some() && !ids.is_empty() {
                    ids.pop();
                }
            }
            let offsets = tok.offsets(&full, &ids, add_special);
            Ok(ids
                .into_iter()
                .zip(offsets)
                .map(|(id, range)| match range {
                    Some(r) => SimpleToken { id, text: full[r.clone()].to_owned(), special: false, start: Some(r.start), stop: Some(r.end) },
                    None => SimpleToken { id, text: tok.piece(id).unwrap_or_default().to_owned(), special: true, start: None, stop: None },
                })
                .collect())
        })
        .collect()
}
