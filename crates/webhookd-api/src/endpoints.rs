//! The `/v2` management routes (SPEC §1), and sending a test event (§8).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use webhookd_core::endpoint::{MAX_ENDPOINTS_PER_USER, parse_events};
use webhookd_core::time::{unix_millis, unix_seconds};
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, EventType, ids};
use webhookd_store::CreateOutcome;

use crate::auth::Caller;
use crate::envelope::{ApiError, success, success_empty};
use crate::{AppState, MAX_API_BODY};

/// Endpoint ids we hand out are 35 characters; anything much longer cannot
/// exist and is not worth a store lookup.
const MAX_ENDPOINT_ID_LEN: usize = 64;

#[derive(Serialize)]
pub struct EndpointList {
    endpoints: Vec<Endpoint>,
}

#[derive(Serialize)]
pub struct EventList {
    events: Vec<EventType>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let spec = parse_spec(&body_bytes(body)?, &state)?;
    let endpoint = Endpoint {
        endpoint_id: ids::new_endpoint_id(),
        url: spec.url,
        secret: ids::new_secret(),
        status: spec.status.unwrap_or(EndpointStatus::Enabled),
        events: spec.events,
        username: caller.username,
        created_at: webhookd_core::time::unix_seconds(),
    };
    match state
        .store
        .create_endpoint(&endpoint, MAX_ENDPOINTS_PER_USER)
        .await?
    {
        CreateOutcome::Created => {
            tracing::info!(endpoint_id = %endpoint.endpoint_id, username = %endpoint.username, "endpoint created");
            Ok(success(endpoint))
        }
        CreateOutcome::LimitReached => Err(ApiError::BadRequest(format!(
            "endpoint limit reached: a user can have at most {MAX_ENDPOINTS_PER_USER} endpoints; delete one first"
        ))),
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let endpoints = state.store.list_endpoints(&caller.username).await?;
    Ok(success(EndpointList { endpoints }))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(endpoint_id)?;
    let spec = parse_spec(&body_bytes(body)?, &state)?;
    let endpoint = state
        .store
        .update_endpoint(&caller.username, &endpoint_id, &spec)
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    tracing::info!(endpoint_id = %endpoint.endpoint_id, username = %endpoint.username, "endpoint updated");
    Ok(success(endpoint))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(endpoint_id)?;
    if !state
        .store
        .delete_endpoint(&caller.username, &endpoint_id)
        .await?
    {
        return Err(not_found(&endpoint_id));
    }
    tracing::info!(%endpoint_id, username = %caller.username, "endpoint deleted");
    Ok(success_empty())
}

pub async fn events(_caller: Caller) -> impl IntoResponse {
    success(EventList {
        events: EventType::ALL.to_vec(),
    })
}

#[derive(Serialize)]
pub struct TestSent {
    event_id: String,
    delivery_id: String,
}

/// `POST /v2/endpoint/{endpoint_id}/test` (SPEC §8): one synthetic event
/// to this endpoint only, whatever its status, through the normal signing
/// and retry path; it is listed with the endpoint's deliveries afterwards.
pub async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(path)?;
    let body = body_bytes(body)?;
    let endpoint = state
        .store
        .get_endpoint(&caller.username, &endpoint_id)
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    let event_type = test_event_type(&body, &endpoint)?;
    let event = Event::test(&caller.username, event_type, unix_seconds());
    let delivery = state
        .store
        .create_test_delivery(&endpoint_id, &event, unix_millis())
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    state.ingest.wake();
    tracing::info!(%endpoint_id, event_id = %event.event_id, event = %event_type, "test event sent");
    Ok(success(TestSent {
        event_id: event.event_id,
        delivery_id: delivery.delivery_id,
    }))
}

/// The optional body `{"event": "<type>"}`; the endpoint's first subscribed
/// type when absent.
fn test_event_type(body: &[u8], endpoint: &Endpoint) -> Result<EventType, ApiError> {
    let default = || {
        endpoint.events.first().copied().ok_or_else(|| {
            ApiError::BadRequest("event: is required (the endpoint subscribes to none)".into())
        })
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return default();
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    };
    match fields.get("event") {
        None | Some(Value::Null) => default(),
        Some(Value::String(name)) => name.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "event: {:?} is not a known event type (see GET /v2/events)",
                name.chars().take(64).collect::<String>()
            ))
        }),
        Some(_) => Err(ApiError::BadRequest("event: must be a string".into())),
    }
}

fn not_found(endpoint_id: &str) -> ApiError {
    ApiError::NotFound(format!("endpoint {endpoint_id} not found"))
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::BadRequest("endpoint_id: is not valid".into()))?;
    if id.is_empty() || id.len() > MAX_ENDPOINT_ID_LEN {
        return Err(not_found(
            &id.chars().take(MAX_ENDPOINT_ID_LEN).collect::<String>(),
        ));
    }
    Ok(id)
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_API_BODY,
            }
        } else {
            ApiError::BadRequest(format!("request body could not be read: {rejection}"))
        }
    })
}

/// Reads `{"url", "status", "events"}`. Unknown fields (a `secret`, say) are
/// ignored, as SPEC §1 requires; every problem names its field.
fn parse_spec(body: &[u8], state: &AppState) -> Result<EndpointSpec, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    };
    let field_error = |message: &str| ApiError::BadRequest(message.to_owned());

    let url = match fields.remove("url") {
        Some(Value::String(url)) => url,
        None | Some(Value::Null) => return Err(field_error("url: is required")),
        Some(_) => return Err(field_error("url: must be a string")),
    };
    state.url_rules.check(&url)?;

    let status = match fields.remove("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(status)) => Some(status.parse::<EndpointStatus>()?),
        Some(_) => return Err(field_error("status: must be \"enabled\" or \"disabled\"")),
    };

    let names = match fields.remove("events") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(name) => Ok(name),
                _ => Err(field_error("events: every item must be a string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Value::Null) => return Err(field_error("events: is required")),
        Some(_) => return Err(field_error("events: must be an array of event type names")),
    };
    let events = parse_events(&names)?;

    Ok(EndpointSpec {
        url,
        status,
        events,
    })
}
