//! `GET /v2/endpoint/{id}/deliveries/{delivery_id}` (SPEC §13): one
//! delivery with its attempts and the request as sent — URL, headers with
//! signatures, body — while the event's body is kept.
//!
//! Nothing of a request is stored but the event's body (once per event)
//! and, per attempt, its `webhook-timestamp` and a 32-bit check of its
//! signature headers. The headers are made again from the endpoint's
//! secrets by the code that made them for the attempt
//! ([`signer::signature_headers`]); the check says whether they are the
//! ones sent. After a rotation whose grace has ended the secret that
//! signed is gone: the answer then leaves the signatures out and says so,
//! rather than show signatures that were never sent. Custom headers
//! (SPEC §14) are the endpoint's current ones, secret values redacted.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Serialize;
use webhookd_core::signer::{self, Signing};
use webhookd_core::{Endpoint, PreviousSecret, SignatureScheme};
use webhookd_store::{AttemptRecord, Delivery};

use crate::AppState;
use crate::auth::Caller;
use crate::deliveries::DeliveryView;
use crate::envelope::{ApiError, success};

/// What a secret header value shows as (SPEC §13).
const REDACTED: &str = "[redacted]";

#[derive(Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// `null` once the event's body is no longer kept.
    request: Option<SentRequest>,
    /// Present (true) when `request` is `null` for that reason.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    payload_expired: bool,
}

#[derive(Serialize)]
pub struct SentRequest {
    /// The attempt whose request this is (the latest sent); `null` before
    /// the first: the request as it will go, signed when it does.
    attempt: Option<u32>,
    method: &'static str,
    /// The endpoint's URL (an attempt goes to the URL of its time).
    url: String,
    headers: serde_json::Map<String, serde_json::Value>,
    body: String,
    /// Why the signature headers are left out, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    signatures_omitted: Option<&'static str>,
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((endpoint_id, delivery_id)) =
        ids.map_err(|_| ApiError::BadRequest("delivery_id: is not valid".into()))?;
    let not_found = || {
        ApiError::NotFound(format!(
            "delivery {} not found",
            delivery_id.chars().take(64).collect::<String>()
        ))
    };
    if endpoint_id.len() > 64 || delivery_id.len() > 64 {
        return Err(not_found());
    }
    let Some(endpoint) = state
        .store
        .get_endpoint(&caller.username, &endpoint_id)
        .await?
    else {
        return Err(ApiError::NotFound(format!(
            "endpoint {endpoint_id} not found"
        )));
    };
    let (delivery, attempts) = state
        .store
        .delivery_attempts(&caller.username, &endpoint_id, &delivery_id)
        .await?
        .ok_or_else(not_found)?;
    let body = state
        .store
        .kept_payload(&delivery, state.store.now_ms())
        .await?;
    let request = body.map(|body| sent_request(&state, &endpoint, &delivery, &attempts, body));
    Ok(success(DeliveryDetail {
        payload_expired: request.is_none(),
        request,
        delivery: DeliveryView::new(delivery, attempts),
    }))
}

/// The request of the latest attempt that sent one, or of the next.
fn sent_request(
    state: &AppState,
    endpoint: &Endpoint,
    delivery: &Delivery,
    attempts: &[AttemptRecord],
    body: String,
) -> SentRequest {
    let latest = attempts
        .iter()
        .rev()
        .find_map(|attempt| Some((attempt.attempt, attempt.signing.as_ref()?)));
    let mut headers = serde_json::Map::new();
    let mut put = |name: &str, value: String| {
        headers.insert(name.to_owned(), serde_json::Value::String(value));
    };
    put("content-type", "application/json".into());
    put("user-agent", state.user_agent.to_string());
    put("x-webhook-event", delivery.event_type.as_str().to_owned());
    put("x-webhook-id", delivery.event_id.clone());
    put("webhook-id", delivery.event_id.clone());
    let mut signatures_omitted = None;
    let options = crate::endpoint_view::options_of(endpoint);
    if let Some((_, signing)) = latest {
        put("webhook-timestamp", signing.timestamp.to_string());
        match signatures_as_sent(endpoint, options.signature, delivery, &body, signing) {
            Some(signatures) => {
                for (name, value) in signatures {
                    put(name, value);
                }
            }
            None => {
                signatures_omitted =
                    Some("the secret or signature scheme of this attempt has since been replaced");
            }
        }
    }
    for header in &options.headers {
        let value = if header.secret {
            REDACTED.to_owned()
        } else {
            header.value.clone()
        };
        put(&header.name.to_ascii_lowercase(), value);
    }
    SentRequest {
        attempt: latest.map(|(attempt, _)| attempt),
        method: "POST",
        url: endpoint.url.clone(),
        headers,
        body,
        signatures_omitted,
    }
}

/// The signature headers `signing` recorded, made again from the secrets
/// the endpoint holds: as they are now, or — the attempt came before the
/// latest rotation — with the previous secret as the one then current.
fn signatures_as_sent(
    endpoint: &Endpoint,
    scheme: SignatureScheme,
    delivery: &Delivery,
    body: &str,
    signing: &Signing,
) -> Option<Vec<(&'static str, String)>> {
    let now = (endpoint.secret.as_str(), endpoint.previous_secret.as_ref());
    let before_rotation = endpoint
        .previous_secret
        .as_ref()
        .map(|previous: &PreviousSecret| (previous.secret.as_str(), None));
    std::iter::once(now)
        .chain(before_rotation)
        .map(|(secret, previous)| {
            signer::signature_headers(
                secret,
                previous,
                scheme,
                &delivery.event_id,
                signing.timestamp,
                body.as_bytes(),
            )
        })
        .find(|headers| signer::signature_check(headers) == signing.check)
}
