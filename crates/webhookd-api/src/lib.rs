//! webhookd's HTTP surface.
//!
//! Owns the routes of SPEC §1 (the JoggAI v2 compatible management API),
//! HTTP ingest (`POST /internal/events`, SPEC §5), the admin API and the
//! portal page (SPEC §9), `/healthz`, `/readyz` and `/openapi.yaml`, and
//! the rules every request
//! passes: API-key authentication, a per-key rate limit, a body size limit,
//! and the `{code, msg, data}` envelope on every answer — errors included,
//! so no input can produce a 500 or a panic. Persistence is the store's;
//! validation rules are the core's.
//!
//! Layout: [`envelope`] (codes and errors), [`auth`] (API keys and the rate
//! limit), `endpoints` (the `/v2` handlers), `deliveries` (dead deliveries
//! and re-sends), `ingest`, [`admin`] (users, keys, portal links),
//! `portal` (the web page), `health`, [`listener`] (serving connections
//! within the limits of SPEC §7).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use webhookd_core::endpoint::UrlRules;
use webhookd_core::health::Readiness;
use webhookd_core::telemetry;
use webhookd_ingest::Ingest;
use webhookd_store::Store;

pub mod admin;
pub mod auth;
mod deliveries;
mod delivery_detail;
mod endpoint_view;
mod endpoints;
pub mod envelope;
pub mod event_types;
mod filter_preview;
mod health;
mod ingest;
pub mod listener;
mod portal;

pub use listener::{ListenerLimits, serve};
pub use portal::PortalHeaders;

use auth::RateLimiter;
use envelope::ApiError;

/// Largest request body the management API reads. An endpoint definition is
/// a URL of at most 2 KiB and 22 event names; 64 KiB is ample.
pub const MAX_API_BODY: usize = 64 * 1024;

/// How long `/readyz` waits for the store before calling it unreachable.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// How the API is set up, from the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub url_rules: UrlRules,
    /// Requests per second per API key; 0 disables the limit.
    pub rate_limit: u32,
    /// Bearer token of `POST /internal/events`.
    pub ingest_token: String,
    /// Bearer token of the admin API; `None` closes it.
    pub admin_token: Option<String>,
    /// The security headers of `/portal`.
    pub portal: PortalHeaders,
    /// Components whose state `/readyz` reports besides the store.
    pub readiness: Readiness,
    /// Renders `/metrics`; `None` answers 404 there (tests without a
    /// recorder).
    pub metrics: Option<PrometheusHandle>,
    /// The per-tenant quotas' defaults (SPEC §11).
    pub quotas: webhookd_core::quota::Quotas,
    /// The `User-Agent` deliveries carry, for the delivery detail's
    /// request (SPEC §13).
    pub user_agent: String,
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    url_rules: Arc<UrlRules>,
    limiter: Arc<RateLimiter>,
    ingest: Ingest,
    ingest_token: Arc<str>,
    admin_token: Option<Arc<str>>,
    portal: Arc<PortalHeaders>,
    readiness: Readiness,
    metrics: Option<PrometheusHandle>,
    quotas: webhookd_core::quota::Quotas,
    user_agent: Arc<str>,
}

impl AppState {
    /// The quotas in force for `username`: the defaults, with the user's
    /// own from the store.
    pub(crate) async fn quotas_of(
        &self,
        username: &str,
    ) -> Result<webhookd_core::quota::Quotas, ApiError> {
        let overrides = self.quota_overrides(username).await?;
        Ok(self.quotas.with(&overrides))
    }

    pub(crate) async fn quota_overrides(
        &self,
        username: &str,
    ) -> Result<webhookd_core::quota::QuotaOverrides, ApiError> {
        let stored = self
            .store
            .setting(&webhookd_core::quota::setting_name(username))
            .await?;
        Ok(stored
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// `ingest` is the shared ingest path (wired to the delivery engine).
    pub fn new(store: Arc<dyn Store>, ingest: Ingest, settings: ApiSettings) -> Self {
        AppState {
            ingest,
            store,
            url_rules: Arc::new(settings.url_rules),
            limiter: Arc::new(RateLimiter::new(settings.rate_limit)),
            ingest_token: settings.ingest_token.into(),
            admin_token: settings.admin_token.map(Into::into),
            portal: Arc::new(settings.portal),
            readiness: settings.readiness,
            metrics: settings.metrics,
            quotas: settings.quotas,
            user_agent: settings.user_agent.into(),
        }
    }
}

/// Every route webhookd serves.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2/endpoint", post(endpoints::create))
        .route(
            "/v2/endpoint/{endpoint_id}",
            get(endpoints::get_one)
                .put(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/v2/endpoints", get(endpoints::list))
        .route(
            "/v2/endpoint/{endpoint_id}/test",
            post(endpoints::send_test),
        )
        .route(
            "/v2/endpoint/{endpoint_id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route(
            "/v2/endpoint/{endpoint_id}/recover",
            post(deliveries::recover),
        )
        .route(
            "/v2/endpoint/{endpoint_id}/deliveries",
            get(deliveries::list),
        )
        .route(
            "/v2/endpoint/{endpoint_id}/deliveries/{delivery_id}",
            get(delivery_detail::get_one),
        )
        .route(
            "/v2/endpoint/{endpoint_id}/deliveries/{delivery_id}/retry",
            post(deliveries::retry),
        )
        .route("/v2/filter-preview", post(filter_preview::preview))
        .route("/v2/events", get(event_types::list))
        .route("/v2/me", get(endpoints::me))
        .route("/v2/portal-session", post(auth::redeem_portal_link))
        .route(
            "/internal/events",
            post(ingest::accept).layer(DefaultBodyLimit::max(ingest::MAX_INGEST_BODY)),
        )
        .route("/internal/users", post(admin::add_user))
        .route(
            "/internal/users/{username}/keys",
            axum::routing::delete(admin::revoke_keys),
        )
        .route("/internal/portal-links", post(admin::create_portal_link))
        .route(
            "/internal/users/{username}/quotas",
            get(admin::quotas).put(admin::set_quotas),
        )
        .route("/internal/event-types", get(event_types::admin_list))
        .route(
            "/internal/event-types/{name}",
            axum::routing::put(event_types::admin_put).delete(event_types::admin_delete),
        )
        .route("/portal", get(portal::page))
        .route("/portal/assets/{name}", get(portal::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.yaml", get(health::openapi))
        .route("/metrics", get(health::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .layer(axum::middleware::from_fn(api_headers))
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// The probes' routes alone (`/healthz`, `/readyz`, `/metrics`), for the
/// separate listener of `health_listen`: the public listener's clients
/// cannot starve it.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// What the listener answers while webhookd waits for its store at start
/// (SPEC §6: Redis down at start): `/healthz` 200 (the process is alive),
/// `/readyz` 503 with the reason, everything else a 503 envelope. An
/// orchestrator can start webhookd and its store in any order.
pub fn starting_router() -> Router {
    async fn starting() -> impl IntoResponse {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "code": 50000,
                "msg": "webhookd is starting: its store is not reachable yet"
            })),
        )
    }
    async fn not_ready() -> impl IntoResponse {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "not_ready",
                "reason": "store: unreachable (webhookd is starting and retrying)"
            })),
        )
    }
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(not_ready))
        .fallback(starting)
        .layer(axum::middleware::from_fn(count_request))
}

/// `/v2` and `/internal` answers are never sniffed as another type, and
/// never cached: many carry a secret, an API key or a portal link (SPEC
/// §7), and marking all of them keeps a new route from forgetting.
async fn api_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let api =
        request.uri().path().starts_with("/v2") || request.uri().path().starts_with("/internal");
    let mut response = next.run(request).await;
    if api {
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            axum::http::HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// Counts every request by route template (never the raw path, which holds
/// ids), method and status class.
async fn count_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = telemetry::http_method_label(request.method().as_str());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    telemetry::api_request(route, method, status, started.elapsed());
    response
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
