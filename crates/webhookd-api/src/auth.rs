//! Who is calling: the `x-api-key` header (an API key or a portal link),
//! resolved to a username through its hash, then held to a per-key rate
//! limit; and the bearer tokens of the ingest and admin routes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use webhookd_core::ids::{
    API_KEY_MAX_LEN, PORTAL_LINK_PREFIX, PORTAL_SESSION_PREFIX, hash_api_key,
    new_portal_session_token,
};
use webhookd_core::telemetry::{self, Credential};
use webhookd_core::time::unix_seconds;

use crate::AppState;
use crate::envelope::ApiError;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const INVALID: ApiError = ApiError::Unauthorized("missing or invalid API key (x-api-key)");
        const EXPIRED: ApiError = ApiError::Unauthorized(
            "portal link expired or invalid (x-api-key): ask for a new link",
        );
        let key = parts
            .headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .filter(|key| !key.is_empty() && key.len() <= API_KEY_MAX_LEN)
            .ok_or(INVALID)
            .inspect_err(|_| refused(Credential::ApiKey))?;
        // Only hashes are stored; looking one up compares nothing secret
        // (a SHA-256 of a 256-bit random token reveals nothing about it).
        let key_hash = hash_api_key(key);
        let username =
            if key.starts_with(PORTAL_LINK_PREFIX) || key.starts_with(PORTAL_SESSION_PREFIX) {
                // A portal link (or the session it became) signs in for the
                // `/v2` routes only: the admin and ingest routes take their own
                // bearer tokens, never this.
                state
                    .store
                    .user_for_portal_link(&key_hash, unix_seconds())
                    .await?
                    .ok_or(EXPIRED)
                    .inspect_err(|_| refused(Credential::PortalLink))?
            } else {
                state
                    .store
                    .user_for_api_key(&key_hash)
                    .await?
                    .ok_or(INVALID)
                    .inspect_err(|_| refused(Credential::ApiKey))?
            };
        state.limiter.check(&key_hash, Instant::now())?;
        Ok(Caller { username })
    }
}

/// What a portal link became when it signed in.
#[derive(Debug, serde::Serialize)]
pub struct PortalSession {
    username: String,
    /// The token the portal sends from now on (`wps_…`) in `x-api-key`.
    session: String,
    /// Unix seconds: the link's own expiry.
    expires_at: i64,
}

/// `POST /v2/portal-session` with a portal link (`wpl_…`) in `x-api-key`:
/// signs in once (SPEC §9). The link is spent and a session token for the
/// same user and expiry comes back; a second use of the link, an expired
/// one, or anything that is not a link (an API key in a `#link=`) is
/// refused with 10105.
pub async fn redeem_portal_link(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<crate::envelope::Success<PortalSession>>, ApiError> {
    const NOT_A_LINK: ApiError =
        ApiError::Unauthorized("only a portal link (wpl_…) signs in here, never an API key");
    const SPENT: ApiError =
        ApiError::Unauthorized("portal link already used, expired or invalid: ask for a new link");
    let link = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .filter(|key| key.starts_with(PORTAL_LINK_PREFIX) && key.len() <= API_KEY_MAX_LEN)
        .ok_or(NOT_A_LINK)
        .inspect_err(|_| refused(Credential::PortalLink))?;
    let link_hash = hash_api_key(link);
    state.limiter.check(&link_hash, Instant::now())?;
    let session = new_portal_session_token();
    let (username, expires_at) = state
        .store
        .redeem_portal_link(&link_hash, &hash_api_key(&session), unix_seconds())
        .await?
        .ok_or(SPENT)
        .inspect_err(|_| refused(Credential::PortalLink))?;
    tracing::info!(%username, "portal link redeemed");
    Ok(crate::envelope::success(PortalSession {
        username,
        session,
        expires_at,
    }))
}

/// Checks `Authorization: Bearer <token>` (the scheme in any case, RFC
/// 9110 §11.1) against `expected`, in constant time. `None` (the operator
/// set no token) refuses everyone.
pub(crate) fn require_bearer(
    headers: &HeaderMap,
    expected: Option<&str>,
    credential: Credential,
    refusal: &'static str,
) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or_default();
    let accepted = expected.is_some_and(|expected| {
        !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !accepted {
        refused(credential);
        return Err(ApiError::Unauthorized(refusal));
    }
    Ok(())
}

/// The token of a `Bearer` credential, whatever the scheme's case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// How often a refused credential is logged at most, per kind of
/// credential: a flood of wrong keys cannot flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts a refused credential (`webhookd_auth_failures_total`) and logs it
/// at a bounded rate, with how many were refused since the last line. The
/// credential itself is never logged.
pub(crate) fn refused(credential: Credential) {
    static LOGGED: [Mutex<Option<(Instant, u64)>>; Credential::ALL.len()] =
        [const { Mutex::new(None) }; Credential::ALL.len()];
    telemetry::auth_failed(credential);
    let mut logged = LOGGED[credential as usize]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    match &mut *logged {
        Some((at, suppressed)) if now.duration_since(*at) < REFUSAL_LOG_EVERY => *suppressed += 1,
        _ => {
            let refused_since = logged.map_or(0, |(_, suppressed)| suppressed) + 1;
            tracing::warn!(
                credential = credential.as_str(),
                refused_since,
                "request refused: missing or invalid credential"
            );
            *logged = Some((now, 0));
        }
    }
}

/// A token bucket per API key: `per_second` tokens a second, holding at most
/// twice that, so short bursts pass and sustained floods are refused.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    /// Checks since full buckets were last evicted.
    checks: u32,
}

/// Full buckets are evicted every this many checks.
const EVICT_EVERY: u32 = 256;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_second == 0` lets everything through.
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    /// A bucket that has filled up again says nothing a new one would not,
    /// so full ones are evicted every [`EVICT_EVERY`] checks: the map holds
    /// only the keys used in the last couple of seconds, however many keys
    /// and portal links were ever issued.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), ApiError> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let capacity = 2.0 * rate;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets.checks += 1;
        if buckets.checks >= EVICT_EVERY {
            buckets.checks = 0;
            buckets.by_key.retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                bucket.tokens + elapsed * rate < capacity
            });
        }
        let bucket = buckets.by_key.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        Err(ApiError::RateLimited {
            per_second: self.per_second,
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security round 3: a bucket per portal link was kept forever (a
    /// platform issuing a link per page view grew without bound).
    #[test]
    fn buckets_that_filled_up_again_are_evicted() {
        let limiter = RateLimiter::new(5);
        let start = Instant::now();
        for n in 0..10_000 {
            limiter.check(&format!("wpl_{n}"), start).unwrap();
        }
        let later = start + Duration::from_secs(3);
        for _ in 0..EVICT_EVERY {
            limiter.check("whk_steady", later).unwrap_or(());
        }
        let kept = limiter.buckets.lock().unwrap().by_key.len();
        assert!(kept <= 1, "{kept} buckets kept");
        // A bucket still refilling is kept: its client stays limited.
        for _ in 0..10 {
            limiter.check("whk_busy", later).unwrap();
        }
        assert!(limiter.check("whk_busy", later).is_err());
        for _ in 0..EVICT_EVERY {
            let _ = limiter.check("whk_busy", later);
        }
        assert!(limiter.check("whk_busy", later).is_err(), "still limited");
    }

    #[test]
    fn a_burst_of_twice_the_rate_passes_then_one_per_interval() {
        let limiter = RateLimiter::new(5);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.check("k", start).unwrap();
        }
        let refused = limiter.check("k", start).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::RateLimited {
                retry_after_secs: 1,
                ..
            }
        ));
        limiter
            .check("k", start + Duration::from_millis(200))
            .unwrap();
        limiter.check("other", start).unwrap();
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0);
        let now = Instant::now();
        for _ in 0..10_000 {
            limiter.check("k", now).unwrap();
        }
    }
}
