//! The platform admin API (SPEC §9), bearer `WEBHOOKD_ADMIN_TOKEN`: a
//! platform creates users, issues and revokes their API keys, and hands a
//! signed-in customer a short-lived portal link instead of a key. With no
//! token configured every route here answers 10105.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use webhookd_core::event::is_valid_username;
use webhookd_core::ids::{hash_api_key, new_api_key, new_portal_link_token};
use webhookd_core::quota::QuotaOverrides;
use webhookd_core::telemetry::Credential;
use webhookd_core::time::unix_seconds;
use webhookd_store::{Store, StoreError};

use crate::AppState;
use crate::auth::require_bearer;
use crate::endpoints::body_bytes;
use crate::envelope::{ApiError, json_object, success};

/// How long a portal link signs in when the request does not say.
pub const DEFAULT_LINK_TTL: i64 = 900;
/// The longest a portal link may live: a link is a sign-in handed over in
/// a URL, not a credential to keep.
pub const MAX_LINK_TTL: i64 = 86_400;

/// No `Debug`: it holds a key.
#[derive(Serialize)]
struct NewKey {
    username: String,
    api_key: String,
}

#[derive(Debug, Serialize)]
struct Revoked {
    revoked: usize,
}

/// A sign-in for one user's portal: `url` is relative to webhookd's
/// address (`/portal#link=wpl_…`).
#[derive(Debug, Serialize)]
pub struct PortalLink {
    pub url: String,
    pub expires_at: i64,
}

pub(crate) fn authorize(headers: &HeaderMap, state: &AppState) -> Result<(), ApiError> {
    require_bearer(
        headers,
        state.admin_token.as_deref(),
        Credential::AdminToken,
        "missing or invalid admin token (Authorization: Bearer WEBHOOKD_ADMIN_TOKEN)",
    )
}

/// `POST /internal/users {"username"}`: creates the user if new and adds
/// an API key, returned this once (only its hash is kept).
pub async fn add_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    let mut fields = json_object(&body_bytes(body)?)?;
    let username = username_field(&mut fields)?;
    let api_key = new_api_key();
    state
        .store
        .add_api_key(&username, &hash_api_key(&api_key), unix_seconds())
        .await?;
    tracing::info!(username, "API key added through the admin API");
    Ok(success(NewKey { username, api_key }))
}

/// `DELETE /internal/users/{username}/keys`: revokes every API key and
/// portal link of the user. Idempotent: a user without keys revokes 0.
pub async fn revoke_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    username: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    let Ok(Path(username)) = username else {
        return Err(ApiError::BadRequest(
            "username: not a valid path segment".into(),
        ));
    };
    if !is_valid_username(&username) {
        return Err(ApiError::BadRequest(USERNAME_RULE.into()));
    }
    let revoked = state.store.revoke_api_keys(&username).await?;
    tracing::info!(username, revoked, "API keys revoked through the admin API");
    Ok(success(Revoked { revoked }))
}

/// `POST /internal/portal-links {"username", "ttl_seconds"?}`: a sign-in
/// for one existing user's `/v2` routes, expiring after `ttl_seconds`
/// (default 900, at most 86400). The token travels in the URL's fragment,
/// which browsers never send to a server or put in a `Referer`.
pub async fn create_portal_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&headers, &state)?;
    let mut fields = json_object(&body_bytes(body)?)?;
    let username = username_field(&mut fields)?;
    let ttl = match fields.remove("ttl_seconds") {
        None | Some(Value::Null) => DEFAULT_LINK_TTL,
        Some(Value::Number(ttl)) => ttl
            .as_i64()
            .filter(|ttl| (1..=MAX_LINK_TTL).contains(ttl))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "ttl_seconds: must be a whole number from 1 to {MAX_LINK_TTL}"
                ))
            })?,
        Some(_) => {
            return Err(ApiError::BadRequest("ttl_seconds: must be a number".into()));
        }
    };
    issue_portal_link(state.store.as_ref(), &username, ttl)
        .await?
        .map(success)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "user {username:?} not found: create it first (POST /internal/users)"
            ))
        })
}

/// Stores a new link for `username`, valid `ttl` seconds, and says where
/// it leads; `None` when there is no such user. The admin route and the
/// CLI's `webhookd portal-link` both issue links here.
pub async fn issue_portal_link(
    store: &dyn Store,
    username: &str,
    ttl: i64,
) -> Result<Option<PortalLink>, StoreError> {
    let token = new_portal_link_token();
    let now = unix_seconds();
    let expires_at = now + ttl;
    if !store
        .add_portal_link(username, &hash_api_key(&token), expires_at, now)
        .await?
    {
        return Ok(None);
    }
    tracing::info!(username, expires_at, "portal link issued");
    Ok(Some(PortalLink {
        url: format!("/portal#link={token}"),
        expires_at,
    }))
}

const USERNAME_RULE: &str = "username: use 1-128 characters of letters, digits and . _ @ + -";

fn username_field(fields: &mut serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match fields.remove("username") {
        Some(Value::String(username)) if is_valid_username(&username) => Ok(username),
        None | Some(Value::Null) => Err(ApiError::BadRequest("username: is required".into())),
        Some(_) => Err(ApiError::BadRequest(USERNAME_RULE.into())),
    }
}

/// `GET /internal/users/{username}/quotas` (SPEC §11): the quotas in force
/// for the user — the process-wide defaults with the user's own.
pub async fn quotas(
    State(state): State<AppState>,
    headers: HeaderMap,
    username: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let username = existing_user(&state, &headers, username).await?;
    Ok(success(state.quotas_of(&username).await?))
}

/// `PUT /internal/users/{username}/quotas` with any of `max_endpoints`,
/// `test_sends_per_minute`, `max_kept_deliveries_per_endpoint`,
/// `max_events_per_day` (`null`: back to the default): the user's own
/// quotas, kept in the store for every process; answers those in force.
pub async fn set_quotas(
    State(state): State<AppState>,
    headers: HeaderMap,
    username: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let username = existing_user(&state, &headers, username).await?;
    let fields = json_object(&body_bytes(body)?)?;
    let mut overrides = state.quota_overrides(&username).await?;
    overrides.apply(&fields).map_err(ApiError::BadRequest)?;
    let setting = webhookd_core::quota::setting_name(&username);
    let stored = (overrides != QuotaOverrides::default())
        .then(|| serde_json::to_string(&overrides))
        .transpose()
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    state.store.put_setting(&setting, stored.as_deref()).await?;
    tracing::info!(username, ?overrides, "quotas set through the admin API");
    Ok(success(state.quotas.with(&overrides)))
}

/// The admin token checked, and `username` of a user that exists (10104
/// otherwise).
async fn existing_user(
    state: &AppState,
    headers: &HeaderMap,
    username: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    authorize(headers, state)?;
    let Ok(Path(username)) = username else {
        return Err(ApiError::BadRequest(
            "username: not a valid path segment".into(),
        ));
    };
    if !is_valid_username(&username) {
        return Err(ApiError::BadRequest(USERNAME_RULE.into()));
    }
    let users = state.store.list_users().await?;
    if !users.iter().any(|user| user.username == username) {
        return Err(ApiError::NotFound(format!("user {username} not found")));
    }
    Ok(username)
}
