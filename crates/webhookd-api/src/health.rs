//! `/healthz` (the process answers), `/readyz` (its dependencies answer)
//! and `/openapi.yaml`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::{AppState, READINESS_TIMEOUT};

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 only while the store answers and every registered component (the
/// RabbitMQ consumer, when configured) is ready; otherwise 503 with the
/// reasons, so a load balancer stops sending traffic and an operator sees
/// why.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // What is down, never its internal error text (that goes to the log).
    let store = match tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store is not answering");
            Some(if error.is_unavailable() {
                "store: unreachable".to_owned()
            } else {
                "store: failing".to_owned()
            })
        }
        Err(_) => Some(format!(
            "store: no answer within {}s",
            READINESS_TIMEOUT.as_secs()
        )),
    };
    let components = state.readiness.problems().into_iter();
    let reasons: Vec<String> = store
        .into_iter()
        .chain(components.map(|(name, reason)| format!("{name}: {reason}")))
        .collect();
    if reasons.is_empty() {
        return (StatusCode::OK, Json(json!({"status": "ready"})));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not_ready", "reason": reasons.join("; ")})),
    )
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => {
            crate::envelope::ApiError::NoRoute("metrics are not enabled".into()).into_response()
        }
    }
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../../docs/openapi.yaml"),
    )
}
