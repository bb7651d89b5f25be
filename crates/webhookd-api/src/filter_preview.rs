//! `POST /v2/filter-preview`: whether a payload filter (SPEC §15) would let
//! a sample event through — the portal's filter editor asks this, so the
//! language is implemented once, here in Rust, not again in JavaScript.
//! Body: `{"filter": {...}, "event": {"event": "<type>", "data": {...}}}`;
//! answer: `{"delivered": true|false}`. A filter that would be refused on an
//! endpoint is refused here with the same 40000.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use webhookd_core::{FieldError, Filter};

use crate::auth::Caller;
use crate::endpoints::body_bytes;
use crate::envelope::{ApiError, json_object, success};

#[derive(Serialize)]
struct Preview {
    delivered: bool,
}

pub async fn preview(
    _caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields = json_object(&body_bytes(body)?)?;
    let filter = match fields.remove("filter") {
        Some(document) => Filter::parse(&document)?,
        None => return Err(FieldError::new("filter", "is required").into()),
    };
    let Some(Value::Object(mut event)) = fields.remove("event") else {
        return Err(FieldError::new(
            "event",
            "must be an object such as {\"event\": \"video.rendered\", \"data\": {}}",
        )
        .into());
    };
    let Some(Value::String(event_type)) = event.remove("event") else {
        return Err(FieldError::new("event.event", "must be the event type's name").into());
    };
    let data = event.remove("data").unwrap_or(Value::Null);
    Ok(success(Preview {
        delivered: filter.matches(&event_type, &data),
    }))
}
