//! The response envelope `{"code", "msg", "data"}` and the business codes of
//! SPEC §1 with their HTTP statuses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use webhookd_core::FieldError;
use webhookd_store::StoreError;

/// A successful answer: code 0, msg "Success".
#[derive(Debug, Serialize)]
pub struct Success<T: Serialize> {
    code: i32,
    msg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

/// `{"code":0,"msg":"Success","data":…}`.
pub fn success<T: Serialize>(data: T) -> Json<Success<T>> {
    Json(Success {
        code: 0,
        msg: "Success",
        data: Some(data),
    })
}

/// `{"code":0,"msg":"Success"}`, no data.
pub fn success_empty() -> Json<Success<()>> {
    Json(Success {
        code: 0,
        msg: "Success",
        data: None,
    })
}

/// A request body that must be a JSON object: its fields, or a 40000
/// saying what is wrong with it.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

/// [`json_object`] for a body that may be left out (empty or whitespace:
/// no fields).
pub fn optional_json_object(
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    json_object(body)
}

#[derive(Serialize)]
struct Failure<'a> {
    code: i32,
    msg: &'a str,
}

/// Every way a request can fail. Each maps to one business code and one
/// HTTP status; the message is for the caller and never carries internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 10104 / 404: no such endpoint for this user (or another user's).
    #[error("{0}")]
    NotFound(String),
    /// 10104 / 404: no such route.
    #[error("{0}")]
    NoRoute(String),
    /// 10105 / 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 40000 / 400: the message names the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 40000 / 413.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 40000 / 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 40000 / 429 with `Retry-After`.
    #[error(
        "rate limit exceeded: {per_second} requests per second per API key; retry in {retry_after_secs}s"
    )]
    RateLimited {
        per_second: u32,
        retry_after_secs: u64,
    },
    /// 10429 / 429: a per-tenant quota (SPEC §11); the message names it
    /// and its limit.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 50000 / 503 while the store is unreachable, 500 otherwise.
    #[error("system error")]
    Store(#[from] StoreError),
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

impl ApiError {
    pub fn code(&self) -> i32 {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute(_) => 10104,
            ApiError::Unauthorized(_) => 10105,
            ApiError::QuotaExceeded(_) => 10429,
            ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::MethodNotAllowed(_)
            | ApiError::RateLimited { .. } => 40000,
            ApiError::Store(_) => 50000,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Store(error) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(error) = &self {
            // The caller gets "system error"; the operator gets the cause.
            tracing::error!(error = %error, "store request failed");
        }
        let body = Failure {
            code: self.code(),
            msg: &self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
