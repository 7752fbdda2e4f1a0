//! Request bodies: read within the payload limit, parsed with errors that name the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, Kind};

/// The body as `T`: 413 past the payload limit, 408 if the client stalls, 400 if it is not JSON,
/// 422 if it is not an object, 422 naming the field (`dimensions`, `encoding_format`, ...) if a field has the wrong type.
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    payload_limit: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| rejection(e, payload_limit))?;
    // serde reads a struct from an array too, its fields by position (`["hello", "m"]` would be
    // `input` and `model`): both APIs define the body as an object with named fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(
            Kind::Validation,
            "the body must be a JSON object with named fields, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(Kind::Malformed, format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::new(Kind::Validation, format!("the body: {inner}"))
        } else {
            ApiError::field(path, strip_position(&inner.to_string()))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(Kind::Malformed, format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

fn rejection(e: BytesRejection, payload_limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            Kind::PayloadTooLarge,
            format!("the body is larger than this server's payload limit of {payload_limit} bytes"),
        )
    } else if is_timeout(&e) {
        ApiError::new(Kind::BodyTimeout, "the client stopped sending the request body")
    } else {
        ApiError::new(Kind::Malformed, format!("cannot read the body: {e}"))
    }
}

fn is_timeout(e: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("timed out") || text.contains("timeout") {
            return true;
        }
        source = s.source();
    }
    false
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
