//! `POST /internal/events` (SPEC §5): producers without AMQP, and the
//! embedded mode, hand in one event message per request. Same validation
//! and same durable path as the RabbitMQ consumer; the 202 is sent only
//! once the event is durably accepted.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use webhookd_core::MissingId;
use webhookd_core::event::MAX_EVENT_BYTES;
use webhookd_core::telemetry::{Credential, Source};
use webhookd_core::trace::TraceContext;
use webhookd_store::Acceptance;

use crate::AppState;
use crate::envelope::{ApiError, success};

/// Bodies up to the event limit plus slack, so a message just over the
/// limit gets the precise `too_large` reason from the parser instead of a
/// bare 413.
pub const MAX_INGEST_BODY: usize = MAX_EVENT_BYTES + 16 * 1024;

#[derive(Serialize)]
pub struct Accepted {
    event_id: String,
}

pub async fn accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    crate::auth::require_bearer(
        &headers,
        Some(&state.ingest_token),
        Credential::IngestToken,
        "missing or invalid ingest token (Authorization: Bearer)",
    )?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_INGEST_BODY,
            }
        } else {
            ApiError::BadRequest(format!("request body could not be read: {rejection}"))
        }
    })?;
    let event = state
        .ingest
        .parse(&body, Source::Http, MissingId::Random)
        .map_err(|rejection| ApiError::BadRequest(rejection.to_string()))?
        .with_trace(TraceContext::from_headers(
            text_header(&headers, "traceparent"),
            text_header(&headers, "tracestate"),
        ));
    // A duplicate is accepted too: the producer's retry of a request whose
    // answer it lost must not look like a failure.
    let outcomes = state
        .ingest
        .accept(std::slice::from_ref(&event), Source::Http)
        .await?;
    if let Some(Acceptance::OverDailyQuota { per_day }) = outcomes.first() {
        return Err(ApiError::QuotaExceeded(
            webhookd_ingest::over_daily_quota_message(*per_day),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        success(Accepted {
            event_id: event.event_id,
        }),
    ))
}

/// A header's value as text; `None` when absent or not visible ASCII.
fn text_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}
