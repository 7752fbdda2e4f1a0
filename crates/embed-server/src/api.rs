//! Error answers, in the two shapes clients expect: OpenAI's nested
//! `{"error": {"message", "type", "param", "code"}}` on `/v1/*`, TEI's flat
//! `{"error", "error_type"}` everywhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What kind of failure an answer reports; decides the status and both shapes' type fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The body is not JSON (400).
    Malformed,
    /// An empty input list (400, TEI's `Empty`).
    Empty,
    /// Well-formed JSON with a wrong field (422).
    Validation,
    /// The body is larger than the payload limit (413).
    PayloadTooLarge,
    /// The client stopped sending its body (408).
    BodyTimeout,
    /// Missing or wrong API key (401).
    Unauthorized,
    /// All input permits are taken (429).
    Overloaded,
    /// Waited in the queue past the queue timeout (503).
    QueueTimeout,
    /// Loading, stopping, failed or stuck (503).
    Unavailable,
    /// No such route (404).
    NotFound,
    /// A model this server does not serve (404).
    ModelNotFound,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// A compressed body (415): bodies are read as plain JSON.
    UnsupportedEncoding,
    /// The model failed on valid input (500; a bug).
    Internal,
}

impl Kind {
    fn status(self) -> StatusCode {
        match self {
            Kind::Malformed | Kind::Empty => StatusCode::BAD_REQUEST,
            Kind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Kind::QueueTimeout | Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::NotFound | Kind::ModelNotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// TEI's `ErrorType` names (`Unauthorized` and `NotFound` are ours).
    fn tei_type(self) -> &'static str {
        match self {
            Kind::Malformed
            | Kind::Validation
            | Kind::PayloadTooLarge
            | Kind::BodyTimeout
            | Kind::UnsupportedEncoding => "Validation",
            Kind::Empty => "Empty",
            Kind::Unauthorized => "Unauthorized",
            Kind::Overloaded | Kind::QueueTimeout => "Overloaded",
            Kind::Unavailable => "Unhealthy",
            Kind::NotFound | Kind::ModelNotFound | Kind::MethodNotAllowed => "NotFound",
            Kind::Internal => "Backend",
        }
    }

    /// OpenAI's `type` and `code`.
    fn openai_type_code(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::Malformed | Kind::Empty | Kind::Validation | Kind::BodyTimeout => {
                ("invalid_request_error", None)
            }
            Kind::PayloadTooLarge => ("invalid_request_error", Some("payload_too_large")),
            Kind::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Kind::NotFound => ("invalid_request_error", Some("unknown_url")),
            Kind::ModelNotFound => ("invalid_request_error", Some("model_not_found")),
            Kind::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            Kind::UnsupportedEncoding => ("invalid_request_error", Some("unsupported_encoding")),
            Kind::Overloaded => ("requests", Some("rate_limit_exceeded")),
            Kind::QueueTimeout => ("server_error", Some("queue_timeout")),
            Kind::Unavailable => ("server_error", Some("service_unavailable")),
            Kind::Internal => ("server_error", None),
        }
    }
}

/// An error answer, not yet given a shape.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub kind: Kind,
    pub message: String,
    /// The request field at fault (OpenAI's `param`), e.g. `input[3]` or `dimensions`.
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 422 about one field; the message starts with the field's name.
    pub fn field(param: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let param = param.into();
        ApiError {
            kind: Kind::Validation,
            message: format!("`{param}`: {message}"),
            param: Some(param),
        }
    }

    /// The same error about field `from` told as about `to` (a route that hands its fields on
    /// under other names).
    pub fn renamed(mut self, from: &str, to: &str) -> Self {
        if self.param.as_deref() == Some(from) {
            self.message = self.message.replacen(&format!("`{from}`"), &format!("`{to}`"), 1);
            self.param = Some(to.to_owned());
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The `te_request_failure` reason of a request refused before its inputs were read.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            Kind::PayloadTooLarge => "payload",
            Kind::Unauthorized => "unauthorized",
            Kind::Overloaded => "overloaded",
            Kind::Unavailable => "unavailable",
            _ => "validation",
        }
    }

    /// The answer in the shape the route's clients parse.
    pub fn into_response(self, flavor: Flavor) -> Response {
        let status = self.status();
        let body = match flavor {
            Flavor::Tei => json!({ "error": self.message, "error_type": self.kind.tei_type() }),
            Flavor::OpenAi => {
                let (ty, code) = self.kind.openai_type_code();
                json!({ "error": {
                    "message": self.message,
                    "type": ty,
                    "param": self.param,
                    "code": code,
                }})
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        if self.kind == Kind::Unauthorized {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Which API's error shape an answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    Tei,
}

impl Flavor {
    /// OpenAI's shape under `/v1/`, TEI's elsewhere.
    pub fn of_path(path: &str) -> Flavor {
        if path.starts_with("/v1/") || path == "/embeddings" {
            Flavor::OpenAi
        } else {
            Flavor::Tei
        }
    }
}
