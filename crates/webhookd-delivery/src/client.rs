//! The HTTP client: hyper-util's pooled client over rustls (ring), HTTP/1.1
//! and h2, keep-alive per host, redirects never followed, over the
//! [`routes`](crate::routes) that guard resolved addresses (SPEC §7).
//! Literal-IP hosts skip resolvers and are checked here.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt as _, Full};
use webhookd_core::address::AddressPolicy;
use webhookd_core::retry::parse_retry_after;
use webhookd_core::signer::{self, Signing};
use webhookd_core::{RetrySchedule, SignatureScheme};
use webhookd_store::Claim;

use crate::classify::{Observed, Reason};
use crate::options::{OptionsCache, Prepared};
use crate::reuse::Uses;
use crate::routes::{BlockedAddresses, DnsFailure, Egress, EgressError, RouteBuilder, Routes};
use crate::trace::AttemptSpan;

/// The most of a response body kept for the attempt log.
pub const RESPONSE_EXCERPT: usize = 1024;
/// The most of a response body read at all; the rest is dropped with the
/// connection.
pub const RESPONSE_READ_CAP: usize = 64 * 1024;
/// How long reading the response body may take after the head arrived; a
/// receiver that hangs after its headers cannot hold a worker longer.
const BODY_READ_TIMEOUT: Duration = webhookd_core::config::RESPONSE_BODY_READ;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Response {
    pub observed: Observed,
    /// The start of the response body, lossily decoded.
    pub excerpt: Option<String>,
    /// How the request was signed; `None` when none was sent.
    pub signing: Option<Signing>,
}

/// Sends deliveries. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    /// The process's routes; an endpoint with TLS material has its own.
    routes: Routes,
    options: Arc<OptionsCache>,
    timeout: Duration,
    /// `WEBHOOKD_USER_AGENT` (SPEC §3).
    user_agent: HeaderValue,
}

impl DeliveryClient {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Self {
        DeliveryClient::with_egress(policy, timeout, &Egress::default())
            .expect("leaving directly needs no setting that can be wrong")
    }

    /// A client whose deliveries leave as `egress` says (SPEC §14).
    pub fn with_egress(
        policy: AddressPolicy,
        timeout: Duration,
        egress: &Egress,
    ) -> Result<Self, EgressError> {
        let builder = RouteBuilder::new(policy, timeout, egress)?;
        Ok(DeliveryClient {
            routes: builder.build(None),
            options: Arc::new(OptionsCache::new(builder)),
            timeout,
            user_agent: HeaderValue::from_static(webhookd_core::config::DEFAULT_USER_AGENT),
        })
    }

    /// Sends `user_agent` as the `User-Agent` of every delivery.
    pub fn with_user_agent(
        self,
        user_agent: &str,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        Ok(DeliveryClient {
            user_agent: HeaderValue::from_str(user_agent)?,
            ..self
        })
    }

    /// One attempt: POST the stored body with the SPEC §3 headers (and
    /// the endpoint's own, §14, and the trace's, §15), within the deadline
    /// for connect + TLS + send + response head — an OAuth2 token fetch
    /// included.
    pub(crate) async fn send(&self, claim: &Claim, trace: &AttemptSpan) -> Response {
        let prepared = match self
            .options
            .of(&claim.delivery.endpoint_id, claim.options.as_deref())
        {
            Ok(prepared) => prepared,
            Err(reason) => return Response::none(reason, None),
        };
        let prepared = prepared.as_deref();
        let routes = prepared
            .and_then(|prepared| prepared.routes.as_ref())
            .unwrap_or(&self.routes);
        let through_proxy =
            routes.has_proxy() && prepared.is_none_or(|prepared| prepared.options.egress_proxy);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let oauth2 = prepared.and_then(|prepared| prepared.oauth2.as_ref());
        let token = match oauth2 {
            None => None,
            Some(source) => match source
                .authorization(routes, through_proxy, deadline, &claim.delivery.endpoint_id)
                .await
            {
                Ok(token) => Some(token),
                Err(reason) => return Response::none(reason, None),
            },
        };
        let send = |token: Option<HeaderValue>| Exchange {
            client: self,
            claim,
            trace,
            prepared,
            routes,
            through_proxy,
            token,
            deadline,
        };
        let (mut sent, mut signing) = match send(token.clone()).run().await {
            Ok(sent) => sent,
            Err(response) => return response,
        };
        // A token the receiver refuses may have been revoked before its
        // time: one new token, one more try (SPEC §14).
        if let (Some(source), Some(used)) = (oauth2, &token)
            && sent.status() == http::StatusCode::UNAUTHORIZED
        {
            source.forget(used).await;
            let fresh = match source
                .authorization(routes, through_proxy, deadline, &claim.delivery.endpoint_id)
                .await
            {
                Ok(fresh) => fresh,
                Err(reason) => return Response::none(reason, Some(signing)),
            };
            (sent, signing) = match send(Some(fresh)).run().await {
                Ok(sent) => sent,
                Err(response) => return response,
            };
        }
        if let Some(uses) = Uses::of(sent.extensions()) {
            uses.answered();
        }
        let code = sent.status().as_u16();
        let retry_after = sent
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let excerpt = read_excerpt(sent.into_body()).await;
        Response {
            observed: Observed::Status { code, retry_after },
            excerpt,
            signing: Some(signing),
        }
    }

    /// The endpoint's own retry schedule (SPEC §14), if it has one.
    pub fn retry_schedule(&self, claim: &Claim) -> Option<RetrySchedule> {
        let prepared = self
            .options
            .of(&claim.delivery.endpoint_id, claim.options.as_deref())
            .ok()??;
        prepared.schedule.clone()
    }

    /// The request of one attempt (SPEC §3, §14), and what its record keeps
    /// of how it was signed.
    fn request(
        &self,
        claim: &Claim,
        prepared: Option<&Prepared>,
    ) -> Result<(http::Request<Full<Bytes>>, Signing), Reason> {
        let url = url::Url::parse(&claim.url).map_err(|_| Reason::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Reason::InvalidUrl);
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Reason::InvalidUrl),
        };
        if literal.is_some_and(|ip| self.options.builder.policy.check(ip).is_err()) {
            return Err(Reason::BlockedAddress);
        }
        let delivery = &claim.delivery;
        let body = Bytes::from(delivery.body.clone());
        // Standard Webhooks: signed anew per attempt, with its time.
        let timestamp = webhookd_core::time::unix_seconds();
        let signatures = signer::signature_headers(
            &claim.secret,
            claim.previous_secret.as_ref(),
            prepared.map_or(SignatureScheme::Hmac, |prepared| prepared.options.signature),
            &delivery.event_id,
            timestamp,
            &body,
        );
        let signing = Signing::of(timestamp, &signatures);
        let mut request = http::Request::post(url.as_str())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, self.user_agent.clone())
            .header("x-webhook-event", delivery.event_type.as_str())
            .header("x-webhook-id", &delivery.event_id)
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp);
        for (name, value) in signatures {
            request = request.header(name, value);
        }
        for (name, value) in prepared.map_or(&[][..], |prepared| &prepared.headers) {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| Reason::InvalidUrl)?;
        Ok((request, signing))
    }
}

/// One request of an attempt and what came back: sent again on a fresh
/// connection when a pooled one turns out closed by the receiver (not an
/// attempt), within the attempt's deadline.
struct Exchange<'a> {
    client: &'a DeliveryClient,
    claim: &'a Claim,
    /// The attempt's `traceparent` and `tracestate` (SPEC §15).
    trace: &'a AttemptSpan,
    prepared: Option<&'a Prepared>,
    routes: &'a Routes,
    through_proxy: bool,
    /// `Authorization` (an OAuth2 bearer token).
    token: Option<HeaderValue>,
    deadline: tokio::time::Instant,
}

impl Exchange<'_> {
    async fn run(self) -> Result<(http::Response<hyper::body::Incoming>, Signing), Response> {
        let build = || {
            let (mut request, signing) = self.client.request(self.claim, self.prepared)?;
            if let Some(token) = &self.token {
                request.headers_mut().insert(AUTHORIZATION, token.clone());
            }
            // W3C Trace Context: the receiver continues the producer's trace.
            let headers = request.headers_mut();
            if let Ok(parent) = HeaderValue::from_str(&self.trace.traceparent) {
                headers.insert("traceparent", parent);
            }
            if let Some(state) = self.trace.tracestate.as_deref()
                && let Ok(state) = HeaderValue::from_str(state)
            {
                headers.insert("tracestate", state);
            }
            Ok::<_, Reason>((request, signing))
        };
        let (request, mut signing) = build().map_err(|reason| Response::none(reason, None))?;
        let deadline = self.deadline;
        let through_proxy = self.through_proxy;
        let mut sent =
            tokio::time::timeout_at(deadline, self.routes.request(through_proxy, false, request))
                .await;
        if let Ok(Err(error)) = &sent
            && failed_on_a_reused_connection(error)
            && let Ok((again, signed_again)) = build()
        {
            tracing::debug!(delivery_id = %self.claim.delivery.delivery_id, "a reused connection was closed under the request; sending it again on a fresh one");
            signing = signed_again;
            sent =
                tokio::time::timeout_at(deadline, self.routes.request(through_proxy, true, again))
                    .await;
        }
        match sent {
            Err(_) => Err(Response::none(Reason::Timeout, Some(signing))),
            Ok(Err(error)) => Err(Response::none(
                transport_reason(&error, through_proxy),
                Some(signing),
            )),
            Ok(Ok(response)) => Ok((response, signing)),
        }
    }
}

impl Response {
    /// No answer: nothing sent (`signing` `None`) or none came.
    fn none(reason: Reason, signing: Option<Signing>) -> Self {
        Response {
            observed: Observed::NoResponse(reason),
            excerpt: None,
            signing,
        }
    }
}

/// Reads up to [`RESPONSE_READ_CAP`] of the body (so the connection can go
/// back to the pool) and keeps the first [`RESPONSE_EXCERPT`] bytes.
async fn read_excerpt(mut body: hyper::body::Incoming) -> Option<String> {
    let mut kept = Vec::new();
    let mut read = 0;
    let reading = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len();
                let room = RESPONSE_EXCERPT.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
                if read >= RESPONSE_READ_CAP {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, reading).await;
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}

/// A request that got no byte of an answer on a connection that had
/// answered before: the receiver closed it while it sat in the pool.
pub(crate) fn failed_on_a_reused_connection(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut extensions = http::Extensions::new();
    if let Some(connected) = error.connect_info() {
        connected.get_extras(&mut extensions);
    }
    Uses::of(&extensions).is_some_and(Uses::reused)
}

/// Finds the cause of a failed request by type, walking the error chain.
/// Through the egress proxy, failing to connect is the proxy's failure:
/// reaching the proxy, or its CONNECT to the receiver (hyper-util does not
/// name its tunnel errors apart); TLS with the receiver stays `tls`.
fn transport_reason(error: &hyper_util::client::legacy::Error, proxied: bool) -> Reason {
    if is_tls(error) {
        return Reason::Tls;
    }
    if proxied && error.is_connect() {
        return Reason::Proxy;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<BlockedAddresses>() {
            return Reason::BlockedAddress;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return Reason::ConnectionRefused,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => {
                    return Reason::ConnectionReset;
                }
                ErrorKind::TimedOut => return Reason::Timeout,
                _ => {}
            }
        }
        if cause.is::<DnsFailure>() {
            return Reason::Dns;
        }
        source = cause.source();
    }
    if error.is_connect() {
        Reason::Connect
    } else {
        Reason::Protocol
    }
}

/// Whether a rustls error is in `error`'s chain, alone or inside an I/O error.
/// An I/O error's `source()` skips the error it wraps, and a handshake
/// failure comes as an I/O error wrapping an I/O error wrapping the rustls
/// error: each wrapped error is looked into as well.
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.is::<rustls::Error>() {
            return true;
        }
        if let Some(wrapped) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_tls(wrapped)
        {
            return true;
        }
        source = cause.source();
    }
    false
}
