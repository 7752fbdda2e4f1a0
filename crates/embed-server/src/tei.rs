//! text-embeddings-inference's routes for an embedding model (`POST /embed`, `/similarity`,
//! `/tokenize`, `/decode`, and `/` as TEI routes it), with TEI's field names and defaults.

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
#[serde(expecting = "an object with `inputs` and TEI's options")]
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
    /// Which end a truncated text keeps: `Right` (default, also for `null`) keeps the start,
    /// `Left` the end.
    #[serde(default)]
    truncation_direction: Option<Direction>,
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

pub(crate) async fn embed(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    tei(handle_embed(&state, body).await)
}

async fn handle_embed(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (defaults, req): (_, EmbedRequest) = submit::read_embedding_request(state, body)?;
    let (inputs, options) = (|| {
        let inputs = crate::inputs::parse(req.inputs, "inputs")?;
        let truncation = truncation(&defaults, req.truncate, req.truncation_direction.unwrap_or_default());
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

/// A handler's answer, an error in TEI's shape.
fn tei(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| e.into_response(Flavor::Tei))
}

/// TEI's `truncate` and `truncation_direction` as the runtime's policy; `truncate` unset is the
/// server's own (`auto_truncate` in `/info`).
fn truncation(defaults: &embed_runtime::EmbedOptions, truncate: Option<bool>, direction: Direction) -> Truncation {
    let auto_truncate = defaults.truncation() != Truncation::Error;
    match (truncate.unwrap_or(auto_truncate), direction) {
        (false, _) => Truncation::Error,
        (true, Direction::Left) => Truncation::Left,
        (true, Direction::Right) => Truncation::Right,
    }
}

/// `POST /` (and SageMaker's `POST /invocations`): TEI's default route. For an embedding model
/// TEI answers it as `/embed`; a body whose `inputs` is an object (`source_sentence` and
/// `sentences`, what `huggingface_hub`'s `sentence_similarity` sends) is answered as
/// `/similarity`, which TEI does only when started with `TASK=sentence-similarity`. Either way a
/// client pointed at the server's bare URL gets what it asked for.
pub(crate) async fn root(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let similarity = body.as_ref().is_ok_and(|b| inputs_is_object(b));
    if similarity { self::similarity(State(state), body).await } else { embed(State(state), body).await }
}

/// Whether the body is a JSON object whose `inputs` is an object, looked at without building
/// it (a body that is not such JSON is `/embed`'s to answer).
fn inputs_is_object(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        inputs: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Probe<'_>>(body).is_ok_and(|p| p.inputs.is_some_and(|raw| raw.get().starts_with('{')))
}

/// TEI's `SimilarityRequest`: the cosine similarity of `source_sentence` to each of `sentences`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `inputs` and optional `parameters`")]
struct SimilarityRequest {
    inputs: SimilarityInputs,
    #[serde(default)]
    parameters: Option<SimilarityParameters>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `source_sentence` and `sentences`")]
struct SimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "an object with `truncate`, `truncation_direction` or `prompt_name`")]
struct SimilarityParameters {
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<Direction>,
    #[serde(default)]
    prompt_name: Option<String>,
}

pub(crate) async fn similarity(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    tei(handle_similarity(&state, body).await)
}

async fn handle_similarity(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let (defaults, req): (_, SimilarityRequest) = submit::read_embedding_request(state, body)?;
    let (inputs, options) = (|| {
        if req.inputs.sentences.is_empty() {
            return Err(ApiError {
                kind: crate::api::Kind::Empty,
                message: "`inputs.sentences` is an empty array; give at least one sentence".into(),
                param: Some("inputs.sentences".into()),
            });
        }
        let params = req.parameters.unwrap_or_default();
        let truncation = truncation(&defaults, params.truncate, params.truncation_direction.unwrap_or_default());
        let mut options = defaults.with_truncation(truncation).with_normalize(true);
        if let Some(name) = &params.prompt_name {
            options = options.with_prompt(submit::named_prompt(name).map_err(|e| e.renamed("prompt_name", "parameters.prompt_name"))?);
        }
        let mut items = Vec::with_capacity(req.inputs.sentences.len() + 1);
        items.push(RawInput::Text(req.inputs.source_sentence));
        items.extend(req.inputs.sentences.into_iter().map(RawInput::Text));
        Ok((Inputs { items, single: false }, options))
    })()
    .inspect_err(|_| state.metrics.reject("validation"))?;
    // Errors about one input name it as the client wrote it: the source, or `sentences[i]`.
    let out = submit::embed(state, inputs, options, "inputs").await.map_err(|e| {
        let Some(i) = e.param.as_deref().and_then(|p| p.strip_prefix("inputs[")?.strip_suffix(']')?.parse::<usize>().ok())
        else {
            return e;
        };
        let to = match i {
            0 => "inputs.source_sentence".to_owned(),
            _ => format!("inputs.sentences[{}]", i - 1),
        };
        e.renamed(&format!("inputs[{i}]"), &to)
    })?;
    let (source, rest) = out.vectors.split_first().expect("the source sentence was embedded");
    let scores: Vec<f32> = rest.iter().map(|v| cosine(source, v)).collect();
    let mut response = Json(scores).into_response();
    out.timing_headers(response.headers_mut());
    Ok(response)
}

/// Cosine similarity, accumulated in f64 (the vectors are unit length already; dividing by
/// the norms keeps the result inside [-1, 1] whatever rounding left).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let denom = (aa * bb).sqrt();
    if denom == 0.0 { 0.0 } else { (ab / denom).clamp(-1.0, 1.0) as f32 }
}

/// TEI's `DecodeRequest`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `ids` and optional `skip_special_tokens`")]
struct DecodeRequest {
    /// An array of token ids, or an array of such arrays.
    #[serde(default)]
    ids: Value,
    /// Leave out the tokens HF marks special (`<bos>`, `<eos>`, `<pad>`, `<unk>`,
    /// `<start_of_turn>`, ...; not `<mask>` or `<unusedN>`). Default true, as TEI.
    #[serde(default = "yes")]
    skip_special_tokens: bool,
}

pub(crate) async fn decode(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    tei(handle_decode(&state, body).await)
}

async fn handle_decode(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: DecodeRequest = crate::body::parse(body, state.config.payload_limit)?;
    if !req.ids.is_array() {
        return Err(ApiError::field("ids", "expected an array of token ids or an array of arrays of token ids"));
    }
    let inputs = crate::inputs::parse(req.ids, "ids")?;
    submit::within_client_batch(state, inputs.items.len(), "ids", "id arrays")?;
    let embedder = state.embedder()?.clone();
    let skip_special = req.skip_special_tokens;
    // A payload's worth of ids takes tens of milliseconds: off tokio's threads, like `/tokenize`.
    blocking_json(state, move || decode_all(&embedder, &inputs, skip_special)).await
}

/// `work`'s answer as JSON, made on the blocking pool under the tokenizing gate
/// ([`submit::tokenize_blocking`]): tokenizer work on a whole payload, and its output, which
/// can be several times the payload before it is JSON.
async fn blocking_json<T: Serialize>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let json = submit::tokenize_blocking(state, move || {
        serde_json::to_vec(&work()?)
            .map_err(|e| ApiError::new(crate::api::Kind::Internal, format!("cannot write the answer: {e}")))
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

fn decode_all(embedder: &Embedder, inputs: &Inputs, skip_special: bool) -> Result<Vec<String>, ApiError> {
    let tok = embedder.tokenizer();
    inputs
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let RawInput::Ids(ids) = item else {
                return Err(ApiError::field(inputs.param("ids", i), "`/decode` takes token ids, not text"));
            };
            let decoded = if skip_special {
                tok.decode(&ids.iter().copied().filter(|&id| !tok.is_special(id)).collect::<Vec<_>>())
            } else {
                tok.decode(ids)
            };
            decoded.map_err(|e| ApiError::field(inputs.param("ids", i), e.to_string()))
        })
        .collect()
}

/// TEI's `TokenizeRequest`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object with `inputs`, `add_special_tokens` or `prompt_name`")]
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

pub(crate) async fn tokenize(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    tei(handle_tokenize(&state, body).await)
}

async fn handle_tokenize(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: TokenizeRequest = crate::body::parse(body, state.config.payload_limit)?;
    let inputs = crate::inputs::parse(req.inputs, "inputs")?;
    let prefix = match &req.prompt_name {
        Some(name) => submit::named_prompt(name)?.prefix().into_owned(),
        None => state.embedder()?.options().prompt().prefix().into_owned(),
    };
    submit::within_client_batch(state, inputs.items.len(), "inputs", "inputs")?;
    let embedder = state.embedder()?.clone();
    let add_special = req.add_special_tokens;
    blocking_json(state, move || tokenize_all(&embedder, &inputs, &prefix, add_special)).await
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
