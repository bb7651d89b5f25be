//! The `/v2` management routes (SPEC §1), and sending a test event (§8).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Map, Value};
use webhookd_core::operator::{OperatorEvent, OperatorEventKind};
use webhookd_core::telemetry;
use webhookd_core::time::unix_seconds;
use webhookd_core::{Catalog, Endpoint, EndpointSpec, EndpointStatus, Event, EventType, ids};
use webhookd_core::{DeliveryOptions, SignatureScheme};
use webhookd_store::{CreateOutcome, DeliveryCounts, DeliveryQuery, DeliveryStatus, Page};

use crate::auth::Caller;
use crate::deliveries::DeliveryView;
use crate::endpoint_view::{changed_options, options_of, shown, touches_options};
use crate::envelope::{ApiError, json_object, optional_json_object, success, success_empty};
use crate::{AppState, MAX_API_BODY};

/// Endpoint ids we hand out are 35 characters; anything much longer cannot
/// exist and is not worth a store lookup.
const MAX_ENDPOINT_ID_LEN: usize = 64;

#[derive(Serialize)]
pub struct EndpointList {
    endpoints: Vec<Map<String, Value>>,
}

/// `GET /v2/endpoint/{id}`: the endpoint, its deliveries by status and its
/// use of the kept-deliveries quota (SPEC §11, §13).
#[derive(Serialize)]
pub struct EndpointDetail {
    #[serde(flatten)]
    endpoint: Map<String, Value>,
    /// Deliveries refused at acceptance since its last success.
    quota_refused: u64,
    counts: DeliveryCounts,
    quota: KeptQuota,
    /// An ordered endpoint's oldest pending delivery (SPEC §15): the head
    /// of its line, with its attempts — what the others wait for.
    #[serde(skip_serializing_if = "Option::is_none")]
    head_of_line: Option<DeliveryView>,
}

#[derive(Serialize)]
pub struct KeptQuota {
    max_kept_deliveries_per_endpoint: u64,
    /// Pending + dead deliveries it holds.
    kept: u64,
}

#[derive(Serialize)]
pub struct Me {
    username: String,
}

/// `GET /v2/me`: who the credential signs in as (our addition; the portal
/// shows it, also for a user without endpoints).
pub async fn me(caller: Caller) -> impl IntoResponse {
    success(Me {
        username: caller.username,
    })
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let fields = json_object(&body_bytes(body)?)?;
    // JoggAI's fields are checked first: their errors are the ones its
    // clients know.
    let spec = parse_spec(fields.clone(), &state)?;
    let options = changed_options(&DeliveryOptions::default(), &fields, &state.url_rules)?;
    let endpoint = Endpoint {
        endpoint_id: ids::new_endpoint_id(),
        url: spec.url,
        secret: ids::new_secret(),
        status: spec.status.unwrap_or(EndpointStatus::Enabled),
        events: spec.events,
        username: caller.username,
        created_at: webhookd_core::time::unix_seconds(),
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: spec.rate_limit.flatten(),
        options: options.to_stored(),
        filter: spec.filter.flatten(),
        ordering: spec.ordering.flatten(),
    };
    let most = state.quotas_of(&endpoint.username).await?.max_endpoints;
    match state
        .store
        .create_endpoint(&endpoint, most as usize)
        .await?
    {
        CreateOutcome::Created => {
            tracing::info!(endpoint_id = %endpoint.endpoint_id, username = %endpoint.username, "endpoint created");
            Ok(success(shown(endpoint, unix_seconds())))
        }
        CreateOutcome::LimitReached => Err(ApiError::BadRequest(format!(
            "endpoint limit reached: a user can have at most {most} endpoints; delete one first"
        ))),
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let now = unix_seconds();
    let endpoints = state
        .store
        .list_endpoints(&caller.username)
        .await?
        .into_iter()
        .map(|endpoint| shown(endpoint, now))
        .collect();
    Ok(success(EndpointList { endpoints }))
}

/// `GET /v2/endpoint/{id}` (SPEC §13).
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(endpoint_id)?;
    let (endpoint, counts) = tokio::try_join!(
        state.store.get_endpoint(&caller.username, &endpoint_id),
        state.store.delivery_counts(&caller.username, &endpoint_id),
    )?;
    let (Some(endpoint), Some(counts)) = (endpoint, counts) else {
        return Err(not_found(&endpoint_id));
    };
    let quotas = state.quotas_of(&caller.username).await?;
    let head_of_line = if endpoint.ordering.is_some() && counts.pending > 0 {
        head_of_line(&state, &caller.username, &endpoint_id).await?
    } else {
        None
    };
    Ok(success(EndpointDetail {
        head_of_line,
        quota_refused: endpoint.quota_refused,
        endpoint: shown(endpoint, unix_seconds()),
        counts,
        quota: KeptQuota {
            max_kept_deliveries_per_endpoint: quotas.max_kept_deliveries_per_endpoint,
            kept: counts.kept(),
        },
    }))
}

/// The oldest pending delivery of an endpoint and its attempts: at an
/// ordered endpoint, nothing older in its line is pending, so it is a head,
/// and the one that has waited longest.
async fn head_of_line(
    state: &AppState,
    username: &str,
    endpoint_id: &str,
) -> Result<Option<DeliveryView>, ApiError> {
    let oldest = DeliveryQuery {
        page: Page {
            limit: 1,
            after: None,
        },
        ..DeliveryQuery::default()
    };
    let Some(delivery) = state
        .store
        .query_deliveries(username, endpoint_id, DeliveryStatus::Pending, &oldest)
        .await?
        .deliveries
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    Ok(Some(
        DeliveryView::with_attempts(state, username, delivery).await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(endpoint_id)?;
    let fields = json_object(&body_bytes(body)?)?;
    let mut spec = parse_spec(fields.clone(), &state)?;
    // Options left out stay as they are: only a body that names one reads
    // the current ones (secret header values kept by name need them).
    let mut signed_alone_before = true;
    let options = if touches_options(&fields) {
        let current = state
            .store
            .get_endpoint(&caller.username, &endpoint_id)
            .await?
            .ok_or_else(|| not_found(&endpoint_id))?;
        let current = options_of(&current);
        signed_alone_before = current.signature == SignatureScheme::Ed25519;
        Some(changed_options(&current, &fields, &state.url_rules)?)
    } else {
        None
    };
    spec.options = options.as_ref().map(DeliveryOptions::to_stored);
    let mut endpoint = state
        .store
        .update_endpoint(&caller.username, &endpoint_id, &spec)
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    // ed25519 alone from now on: its key derives from the secret, which
    // answers showed until now, so the secret is replaced at once (the
    // HMAC signatures a grace would keep are not sent any more anyway).
    if !signed_alone_before
        && options.is_some_and(|options| options.signature == SignatureScheme::Ed25519)
    {
        endpoint = state
            .store
            .rotate_secret(&caller.username, &endpoint_id, &ids::new_secret(), None)
            .await?
            .ok_or_else(|| not_found(&endpoint_id))?;
    }
    tracing::info!(endpoint_id = %endpoint.endpoint_id, username = %endpoint.username, "endpoint updated");
    Ok(success(shown(endpoint, unix_seconds())))
}

/// Default grace of a rotation: the old secret keeps signing a day.
const DEFAULT_GRACE_SECONDS: i64 = 86_400;
/// Longest grace (SPEC §8): a week.
const MAX_GRACE_SECONDS: i64 = 604_800;

/// `POST /v2/endpoint/{endpoint_id}/rotate-secret` (SPEC §8): a new secret;
/// the current one keeps signing `X-Webhook-Signature` for the grace, the
/// new one `X-Webhook-Signature-Next`, both `webhook-signature`.
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint_id = path_id(path)?;
    let grace = grace_seconds(&body_bytes(body)?)?;
    // The store's clock: every process judges the grace by it.
    let now = state.store.now_ms() / 1000;
    let endpoint = state
        .store
        .rotate_secret(
            &caller.username,
            &endpoint_id,
            &ids::new_secret(),
            (grace > 0).then_some(now + grace),
        )
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    tracing::info!(%endpoint_id, username = %caller.username, grace_seconds = grace, "endpoint secret rotated");
    Ok(success(shown(endpoint, now)))
}

/// The optional body `{"grace_seconds": 0..604800}`.
fn grace_seconds(body: &[u8]) -> Result<i64, ApiError> {
    let fields = optional_json_object(body)?;
    match fields.get("grace_seconds") {
        None | Some(Value::Null) => Ok(DEFAULT_GRACE_SECONDS),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|grace| (0..=MAX_GRACE_SECONDS).contains(grace))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "grace_seconds: must be a whole number from 0 to {MAX_GRACE_SECONDS}"
                ))
            }),
        Some(_) => Err(ApiError::BadRequest(format!(
            "grace_seconds: must be a whole number from 0 to {MAX_GRACE_SECONDS}"
        ))),
    }
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

/// Tells the operator (SPEC §15) an endpoint reached its test sends per
/// minute, once an hour per endpoint across every process.
async fn tell_test_sends_reached(
    state: &AppState,
    username: &str,
    endpoint_id: &str,
    per_minute: u32,
) -> Result<(), ApiError> {
    let now_ms = state.store.now_ms();
    if state.ingest.tells_operator()
        && state
            .store
            .take_in_window(
                &format!("operator:test:{endpoint_id}"),
                3_600_000,
                now_ms,
                1,
            )
            .await?
    {
        let hour = now_ms.div_euclid(3_600_000);
        state
            .ingest
            .tell_operator(OperatorEvent::new(
                format!("op_quota_test_{endpoint_id}_{hour}"),
                OperatorEventKind::QuotaReached,
                now_ms.div_euclid(1000),
                serde_json::json!({"quota": "test_sends_per_minute", "username": username,
                                   "endpoint_id": endpoint_id, "limit": per_minute}),
            ))
            .await;
    }
    Ok(())
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
    let event_type = test_event_type(&body, &endpoint, &state.ingest.catalog().current())?;
    // Each test delivery is kept with its attempts: unbounded, a tenant
    // could fill the store through this route (security round 3).
    let per_minute = state
        .quotas_of(&caller.username)
        .await?
        .test_sends_per_minute;
    if !state
        .store
        .take_in_window(
            &format!("test:{endpoint_id}"),
            60_000,
            state.store.now_ms(),
            u64::from(per_minute),
        )
        .await?
    {
        telemetry::quota_refused(telemetry::Quota::TestSends);
        tell_test_sends_reached(&state, &caller.username, &endpoint_id, per_minute).await?;
        return Err(ApiError::QuotaExceeded(format!(
            "test send quota reached: {per_minute} test sends per endpoint per minute; try again in a minute"
        )));
    }
    let event = Event::test(&caller.username, event_type, unix_seconds());
    let delivery = state
        .store
        .create_test_delivery(&endpoint_id, &event, state.store.now_ms())
        .await?
        .ok_or_else(|| not_found(&endpoint_id))?;
    state.ingest.wake();
    tracing::info!(%endpoint_id, event_id = %event.event_id, event = %event.event_type, "test event sent");
    Ok(success(TestSent {
        event_id: event.event_id,
        delivery_id: delivery.delivery_id,
    }))
}

/// The optional body `{"event": "<type>"}`; the endpoint's first subscribed
/// type when absent.
fn test_event_type(
    body: &[u8],
    endpoint: &Endpoint,
    catalog: &Catalog,
) -> Result<EventType, ApiError> {
    let default = || {
        endpoint.events.first().cloned().ok_or_else(|| {
            ApiError::BadRequest("event: is required (the endpoint subscribes to none)".into())
        })
    };
    let fields = optional_json_object(body)?;
    match fields.get("event") {
        None | Some(Value::Null) => default(),
        Some(Value::String(name)) => EventType::new(name)
            .ok()
            .filter(|event_type| catalog.contains(event_type))
            .ok_or_else(|| {
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

pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
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

/// The endpoint a request body describes (SPEC §1's validation, the
/// core's rules).
fn parse_spec(fields: Map<String, Value>, state: &AppState) -> Result<EndpointSpec, ApiError> {
    Ok(EndpointSpec::from_fields(
        fields,
        &state.url_rules,
        &state.ingest.catalog().current(),
    )?)
}
