//! OAuth2 client credentials for an endpoint's receiver (SPEC §14, RFC 6749
//! §4.4): a token fetched from the endpoint's token URL — through the same
//! routes as its deliveries, so the SSRF guard and the egress proxy apply —
//! cached until 30 s before it expires, and sent as `Authorization: Bearer`.
//! One fetch at a time per endpoint: attempts that need a token meanwhile
//! wait for it rather than each asking. A token that cannot be had fails
//! the attempt with reason `auth_token`; the details go to the log, never
//! the secret.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt as _, Full, Limited};
use tokio::time::Instant;
use webhookd_core::address::AddressPolicy;
use webhookd_core::delivery_options::OAuth2;

use crate::classify::Reason;
use crate::reuse::Uses;
use crate::routes::Routes;

/// A token is used until this long before it expires.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(30);
/// How long a token without `expires_in` is used.
const LIFETIME_UNSAID: Duration = Duration::from_secs(300);
/// The most of a token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// One endpoint's token source.
#[derive(Debug)]
pub(crate) struct TokenSource {
    token_url: String,
    /// `Basic base64(urlencoded id ":" urlencoded secret)` (RFC 6749 §2.3.1).
    credentials: HeaderValue,
    form: Bytes,
    cached: tokio::sync::Mutex<Option<Token>>,
}

#[derive(Debug, Clone)]
struct Token {
    /// `Bearer <access token>`, marked sensitive.
    authorization: HeaderValue,
    refresh_at: Instant,
}

impl TokenSource {
    /// A token URL whose host is a literal IP is checked against `policy`
    /// here (names are checked when they resolve, as for deliveries).
    pub(crate) fn new(settings: &OAuth2, policy: &AddressPolicy) -> Result<Self, Reason> {
        let url = url::Url::parse(&settings.token_url).map_err(|_| Reason::AuthToken)?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| policy.check(ip).is_err()) {
            tracing::error!(token_url = %settings.token_url, "an endpoint's OAuth2 token URL is a blocked address");
            return Err(Reason::AuthToken);
        }
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let basic = STANDARD.encode(format!(
            "{}:{}",
            encode(&settings.client_id),
            encode(&settings.client_secret)
        ));
        let mut credentials =
            HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| Reason::AuthToken)?;
        credentials.set_sensitive(true);
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &settings.scope {
            form.append_pair("scope", scope);
        }
        if let Some(audience) = &settings.audience {
            form.append_pair("audience", audience);
        }
        Ok(TokenSource {
            token_url: settings.token_url.clone(),
            credentials,
            form: Bytes::from(form.finish()),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The `Authorization` value for an attempt: the cached token, or a new
    /// one fetched by `deadline`.
    pub(crate) async fn authorization(
        &self,
        routes: &Routes,
        through_proxy: bool,
        deadline: Instant,
        endpoint_id: &str,
    ) -> Result<HeaderValue, Reason> {
        let mut cached = tokio::time::timeout_at(deadline, self.cached.lock())
            .await
            .map_err(|_| Reason::AuthToken)?;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.authorization.clone());
        }
        let fetched = tokio::time::timeout_at(deadline, self.fetch(routes, through_proxy))
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()));
        match fetched {
            Ok(token) => {
                let authorization = token.authorization.clone();
                *cached = Some(token);
                Ok(authorization)
            }
            Err(why) => {
                tracing::warn!(%endpoint_id, token_url = %self.token_url, %why, "cannot get an OAuth2 token for the endpoint");
                Err(Reason::AuthToken)
            }
        }
    }

    /// Drops the cached token if it is still `used`: the receiver refused
    /// it (a 401), so the next attempt fetches a new one.
    pub(crate) async fn forget(&self, used: &HeaderValue) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|token| token.authorization == *used)
        {
            *cached = None;
        }
    }

    async fn fetch(&self, routes: &Routes, through_proxy: bool) -> Result<Token, String> {
        let request = || {
            http::Request::post(&self.token_url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, self.credentials.clone())
                .body(Full::new(self.form.clone()))
                .map_err(|_| "the token URL cannot be requested".to_owned())
        };
        let asked = Instant::now();
        let mut sent = routes.request(through_proxy, false, request()?).await;
        // As for deliveries: a pooled connection the token endpoint had
        // closed is no failure of the token endpoint.
        if let Err(error) = &sent
            && crate::client::failed_on_a_reused_connection(error)
        {
            sent = routes.request(through_proxy, true, request()?).await;
        }
        let response =
            sent.map_err(|error| format!("the token endpoint could not be reached: {error}"))?;
        if let Some(uses) = Uses::of(response.extensions()) {
            uses.answered();
        }
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|error| format!("the token response could not be read: {error}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the token endpoint answered {status}"));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| "the token response is not JSON".to_owned())?;
        let access_token = answer["access_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .ok_or("the token response has no access_token")?;
        if let Some(kind) = answer["token_type"].as_str()
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!("the token is of type {kind:?}, not Bearer"));
        }
        let lifetime = match &answer["expires_in"] {
            serde_json::Value::Number(seconds) => seconds.as_u64(),
            serde_json::Value::String(seconds) => seconds.parse().ok(),
            _ => None,
        }
        .map_or(LIFETIME_UNSAID, Duration::from_secs);
        let mut authorization = HeaderValue::from_str(&format!("Bearer {access_token}"))
            .map_err(|_| "the access token is not a header value".to_owned())?;
        authorization.set_sensitive(true);
        Ok(Token {
            authorization,
            refresh_at: asked + lifetime.saturating_sub(REFRESH_BEFORE_EXPIRY),
        })
    }
}
