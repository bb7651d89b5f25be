//! Deliveries of an endpoint, in the `/v2` style (our addition to the
//! JoggAI API): see them by status with their attempts, and re-send a dead
//! one.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use webhookd_core::EventType;
use webhookd_store::{
    AttemptRecord, Delivery, DeliveryCounts, DeliveryQuery, DeliveryStatus, DeliveryWindow,
    Listing, Order, Page, RetryOutcome,
};

use crate::AppState;
use crate::auth::Caller;
use crate::envelope::{ApiError, success, success_empty};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// Every parameter as text, so that a bad value gets this module's message
/// naming it, not the query parser's (which would echo the input).
#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    order: Option<String>,
    event: Option<String>,
    event_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

#[derive(Serialize)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
    /// The endpoint's deliveries by status, with the first page (SPEC §13).
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<DeliveryCounts>,
}

#[derive(Serialize)]
pub struct DeliveryView {
    delivery_id: String,
    event_id: String,
    event: EventType,
    status: &'static str,
    attempt_count: u32,
    /// Unix seconds of the next attempt, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<i64>,
    created_at: i64,
    /// A test delivery (SPEC §8); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    test: bool,
    /// The line it waits in at an ordered endpoint (SPEC §15; `""`: the
    /// endpoint's one line); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
    /// Waiting behind the head of its line: no attempt is due until the
    /// head is delivered or dead (then no `next_attempt_at`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    held: bool,
    attempts: Vec<AttemptView>,
}

#[derive(Serialize)]
pub struct AttemptView {
    attempt: u32,
    /// Unix seconds.
    at: i64,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
}

impl DeliveryView {
    /// `delivery` of `username`, shown with its attempts as the store has
    /// them now.
    pub(crate) async fn with_attempts(
        state: &AppState,
        username: &str,
        delivery: Delivery,
    ) -> Result<Self, ApiError> {
        let attempts = state
            .store
            .delivery_attempts(username, &delivery.endpoint_id, &delivery.delivery_id)
            .await?
            .map(|(_, attempts)| attempts)
            .unwrap_or_default();
        Ok(DeliveryView::new(delivery, attempts))
    }

    pub(crate) fn new(delivery: Delivery, attempts: Vec<AttemptRecord>) -> Self {
        let pending = delivery.status == DeliveryStatus::Pending;
        let held = pending && delivery.next_attempt_at == 0;
        DeliveryView {
            next_attempt_at: (pending && !held).then_some(delivery.next_attempt_at / 1000),
            held,
            ordering_key: delivery.ordering_key,
            delivery_id: delivery.delivery_id,
            event_id: delivery.event_id,
            event: delivery.event_type,
            status: delivery.status.as_str(),
            attempt_count: delivery.attempts,
            created_at: delivery.created_at / 1000,
            test: delivery.test,
            attempts: attempts
                .into_iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    at: a.started_at / 1000,
                    duration_ms: a.duration_ms,
                    status_code: a.status_code,
                    reason: a.reason,
                    response: a.response,
                })
                .collect(),
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(endpoint_id) =
        endpoint_id.map_err(|_| ApiError::BadRequest("endpoint_id: is not valid".into()))?;
    let Query(query) =
        query.map_err(|_| ApiError::BadRequest("query: is not a valid query string".into()))?;
    let status = match query.status.as_deref().unwrap_or("failed") {
        "failed" => DeliveryStatus::Failed,
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        other => {
            return Err(ApiError::BadRequest(format!(
                "status: must be failed, pending or delivered, not {:?}",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit: must be a whole number between 1 and {MAX_LIMIT}"
                ))
            })?,
    };
    let query = DeliveryQuery {
        page: Page {
            limit,
            after: query.after.clone(),
        },
        ..filters(&query)?
    };
    owned_endpoint(&state, &caller, &endpoint_id).await?;
    let counts = if query.page.after.is_none() {
        state
            .store
            .delivery_counts(&caller.username, &endpoint_id)
            .await?
    } else {
        None
    };
    let Listing {
        deliveries: found,
        next_after,
    } = state
        .store
        .query_deliveries(&caller.username, &endpoint_id, status, &query)
        .await?;
    let mut deliveries = Vec::with_capacity(found.len());
    for delivery in found {
        deliveries.push(DeliveryView::with_attempts(&state, &caller.username, delivery).await?);
    }
    Ok(success(DeliveryList {
        deliveries,
        next_after,
        counts,
    }))
}

pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((endpoint_id, delivery_id)) =
        ids.map_err(|_| ApiError::BadRequest("delivery_id: is not valid".into()))?;
    owned_endpoint(&state, &caller, &endpoint_id).await?;
    let now_ms = state.store.now_ms();
    match state
        .store
        .retry_dead(&caller.username, &endpoint_id, &delivery_id, now_ms)
        .await?
    {
        RetryOutcome::Scheduled => {
            state.ingest.wake();
            tracing::info!(%endpoint_id, %delivery_id, "dead delivery re-sent on request");
            Ok(success_empty())
        }
        RetryOutcome::NotFound => Err(ApiError::NotFound(format!(
            "delivery {delivery_id} not found"
        ))),
        RetryOutcome::NotFailed(status) => Err(ApiError::BadRequest(format!(
            "delivery_id: only failed deliveries can be re-sent; this one is {}",
            status.as_str()
        ))),
    }
}

/// Dead deliveries recovered per store call: a few milliseconds each.
const RECOVER_BATCH: usize = 1000;
/// How long a recover call works before answering; the rest of a large
/// window is recovered in the background.
const RECOVER_BUDGET: std::time::Duration = std::time::Duration::from_millis(300);

#[derive(Serialize)]
pub struct Recovered {
    recovered: u64,
}

/// `POST /v2/endpoint/{endpoint_id}/recover` `{"since", "until"?}` (SPEC
/// §8): every dead delivery of the endpoint whose event came in the window
/// gets one more attempt, oldest first. The call recovers in bounded
/// batches for up to [`RECOVER_BUDGET`] and answers what *it* recovered:
/// each batch takes its deliveries atomically, so concurrent calls split
/// them and their answers add up to what was sent. A window left larger
/// than the budget goes on in the background, counted in the answer.
/// Pending deliveries are never touched (nothing is sent twice).
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    endpoint_id: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(endpoint_id) =
        endpoint_id.map_err(|_| ApiError::BadRequest("endpoint_id: is not valid".into()))?;
    let body = body.map_err(|_| ApiError::BadRequest("request body could not be read".into()))?;
    owned_endpoint(&state, &caller, &endpoint_id).await?;
    let window = recover_window(&body)?;
    let started = std::time::Instant::now();
    let mut recovered = 0_u64;
    loop {
        let step = state
            .store
            .recover(
                &caller.username,
                &endpoint_id,
                window,
                state.store.now_ms(),
                RECOVER_BATCH,
            )
            .await?;
        if step > 0 {
            state.ingest.wake();
        }
        recovered += step as u64;
        if step == 0 {
            break;
        }
        if started.elapsed() > RECOVER_BUDGET {
            recovered += state
                .store
                .count_dead(&caller.username, &endpoint_id, window)
                .await?;
            recover_in_background(&state, &caller.username, &endpoint_id, window);
            break;
        }
    }
    tracing::info!(%endpoint_id, recovered, "dead deliveries recovered on request");
    Ok(success(Recovered { recovered }))
}

/// The rest of a recover window, batch by batch, until none is left.
fn recover_in_background(
    state: &AppState,
    username: &str,
    endpoint_id: &str,
    window: DeliveryWindow,
) {
    let (store, ingest) = (std::sync::Arc::clone(&state.store), state.ingest.clone());
    let (username, endpoint) = (username.to_owned(), endpoint_id.to_owned());
    tokio::spawn(async move {
        loop {
            let now_ms = store.now_ms();
            match store
                .recover(&username, &endpoint, window, now_ms, RECOVER_BATCH)
                .await
            {
                Ok(0) => break,
                Ok(_) => ingest.wake(),
                Err(error) => {
                    // What was not recovered stays dead, visible and
                    // recoverable again.
                    tracing::warn!(%error, endpoint_id = %endpoint, "recovering dead deliveries stopped");
                    break;
                }
            }
        }
    });
}

/// `{"since": <unix s>, "until"?: <unix s>}`, `since` ≤ `until`.
fn recover_window(body: &[u8]) -> Result<DeliveryWindow, ApiError> {
    let fail = |message: &str| ApiError::BadRequest(message.to_owned());
    let fields = crate::envelope::json_object(body)?;
    let seconds = |name: &str| -> Result<Option<i64>, ApiError> {
        match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .filter(|s| (0..=webhookd_core::event::MAX_TIMESTAMP).contains(s))
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: must be whole unix seconds"))),
        }
    };
    let since = seconds("since")?.ok_or_else(|| fail("since: is required (unix seconds)"))?;
    let until = seconds("until")?.unwrap_or(webhookd_core::event::MAX_TIMESTAMP);
    if until < since {
        return Err(fail("until: must not be before since"));
    }
    Ok(DeliveryWindow {
        from_ms: since.saturating_mul(1000),
        until_ms: until.saturating_add(1).saturating_mul(1000),
    })
}

async fn owned_endpoint(
    state: &AppState,
    caller: &Caller,
    endpoint_id: &str,
) -> Result<(), ApiError> {
    if endpoint_id.len() > 64
        || state
            .store
            .get_endpoint(&caller.username, endpoint_id)
            .await?
            .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "endpoint {} not found",
            endpoint_id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// The listing's order and filters (SPEC §13), each bad value a 40000
/// naming its parameter.
fn filters(query: &ListQuery) -> Result<DeliveryQuery, ApiError> {
    let order = match query.order.as_deref() {
        None | Some("asc") => Order::Ascending,
        Some("desc") => Order::Descending,
        Some(_) => return Err(ApiError::BadRequest("order: must be asc or desc".into())),
    };
    let event = query
        .event
        .as_deref()
        .map(|name| {
            EventType::new(name).map_err(|error| ApiError::BadRequest(format!("event: {error}")))
        })
        .transpose()?;
    let event_id = query
        .event_id
        .as_deref()
        .map(|id| {
            webhookd_core::event::is_valid_event_id(id)
                .then(|| id.to_owned())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "event_id: must be 1-128 characters of letters, digits, _ and -".into(),
                    )
                })
        })
        .transpose()?;
    let seconds = |name: &str, text: Option<&str>| -> Result<Option<i64>, ApiError> {
        text.map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|seconds| (0..=webhookd_core::event::MAX_TIMESTAMP).contains(seconds))
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: must be unix seconds")))
        })
        .transpose()
    };
    let since = seconds("since", query.since.as_deref())?;
    let until = seconds("until", query.until.as_deref())?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::BadRequest(
            "until: must not be before since".into(),
        ));
    }
    Ok(DeliveryQuery {
        order,
        event,
        event_id,
        // Whole seconds, inclusive at both ends.
        since_ms: since.map(|s| s * 1000),
        until_ms: until.map(|s| s * 1000 + 999),
        ..DeliveryQuery::default()
    })
}
