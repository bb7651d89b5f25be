//! The HTTP client: hyper-util's pooled client over rustls (ring), HTTP/1.1
//! and h2, keep-alive per host, redirects never followed, and a resolver
//! that drops forbidden addresses after resolution (SPEC §7) — so a name
//! that resolves, or later re-resolves, to a private address is refused at
//! connect time. Literal-IP hosts skip resolvers and are checked here.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use webhookd_core::address::{AddressPolicy, BlockedAddress};
use webhookd_core::retry::parse_retry_after;
use webhookd_core::signer::{self, Signing};
use webhookd_core::{RetrySchedule, SignatureScheme};
use webhookd_store::Claim;

use crate::classify::{Observed, Reason};
use crate::options::{OptionsCache, Prepared};
use crate::reuse::{Counting, Uses};

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

/// Straight to the receiver: its host resolved through the SSRF guard.
type Direct = Counting<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>>;
/// Through the egress proxy's CONNECT tunnel (SPEC §14): webhookd
/// resolves only the proxy, the operator's own address.
type Proxied = Counting<hyper_rustls::HttpsConnector<Tunnel<HttpConnector>>>;

/// How deliveries leave: straight to receivers, or — when
/// `WEBHOOKD_EGRESS_PROXY` is set — through the proxy, unless the endpoint
/// opted out (`"egress_proxy": false`). Boxed: the clients are large.
#[derive(Clone, Debug)]
struct Routes {
    direct: Box<Clients<Direct>>,
    proxied: Option<Box<Clients<Proxied>>>,
}

/// Two clients over one connector: `pooled`, and `fresh`, which never
/// pools — for sending again a request that failed on a reused connection
/// the receiver had closed (see `reuse`).
#[derive(Clone, Debug)]
struct Clients<C> {
    pooled: Client<C, Full<Bytes>>,
    fresh: Client<C, Full<Bytes>>,
}

impl<C> Clients<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    fn over(connector: C) -> Box<Self> {
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Box::new(Clients { pooled, fresh })
    }

    fn request(&self, fresh: bool, request: http::Request<Full<Bytes>>) -> ResponseFuture {
        if fresh {
            self.fresh.request(request)
        } else {
            self.pooled.request(request)
        }
    }
}

impl Routes {
    fn request(
        &self,
        through_proxy: bool,
        fresh: bool,
        request: http::Request<Full<Bytes>>,
    ) -> ResponseFuture {
        match &self.proxied {
            Some(proxied) if through_proxy => proxied.request(fresh, request),
            _ => self.direct.request(fresh, request),
        }
    }
}

/// Sends deliveries. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    routes: Routes,
    policy: Arc<AddressPolicy>,
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
        let policy = Arc::new(policy);
        let https = || {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .expect("ring supports the default protocol versions")
                .https_or_http()
                .enable_http1()
                .enable_http2()
        };
        let direct = {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver {
                policy: Arc::clone(&policy),
            });
            http.enforce_http(false);
            http.set_connect_timeout(Some(timeout));
            http.set_nodelay(true);
            http.set_local_address(egress.bind);
            Clients::over(Counting(https().wrap_connector(http)))
        };
        let proxied = match &egress.proxy {
            None => None,
            Some(proxy) => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(timeout));
                http.set_nodelay(true);
                http.set_local_address(egress.bind);
                let address: http::Uri = proxy.address.parse().map_err(|_| {
                    EgressError(format!("{} is not a proxy address", proxy.address))
                })?;
                let mut tunnel = Tunnel::new(address, http);
                if let Some(authorization) = &proxy.authorization {
                    let mut value = HeaderValue::from_str(authorization).map_err(|_| {
                        EgressError("the proxy's credentials are not a header value".into())
                    })?;
                    value.set_sensitive(true);
                    tunnel = tunnel.with_auth(value);
                }
                Some(Clients::over(Counting(https().wrap_connector(tunnel))))
            }
        };
        Ok(DeliveryClient {
            routes: Routes { direct, proxied },
            policy,
            options: Arc::default(),
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

    /// One attempt: POST the stored body with the SPEC §3 headers, within
    /// the deadline for connect + TLS + send + response head.
    pub async fn send(&self, claim: &Claim) -> Response {
        let prepared = match self.options.of(claim.options.as_deref()) {
            Ok(prepared) => prepared,
            Err(reason) => return Response::none(reason, None),
        };
        let prepared = prepared.as_deref();
        let (request, mut signing) = match self.request(claim, prepared) {
            Ok(built) => built,
            Err(reason) => return Response::none(reason, None),
        };
        let through_proxy = self.routes.proxied.is_some()
            && prepared.is_none_or(|prepared| prepared.options.egress_proxy);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut sent =
            tokio::time::timeout_at(deadline, self.routes.request(through_proxy, false, request))
                .await;
        if let Ok(Err(error)) = &sent
            && failed_on_a_reused_connection(error)
            && let Ok((again, signed_again)) = self.request(claim, prepared)
        {
            // Not an attempt: the receiver had closed the idle connection.
            tracing::debug!(delivery_id = %claim.delivery.delivery_id, "a reused connection was closed under the request; sending it again on a fresh one");
            signing = signed_again;
            sent =
                tokio::time::timeout_at(deadline, self.routes.request(through_proxy, true, again))
                    .await;
        }
        let response = match sent {
            Err(_) => return Response::none(Reason::Timeout, Some(signing)),
            Ok(Err(error)) => {
                let reason = transport_reason(&error, through_proxy);
                return Response::none(reason, Some(signing));
            }
            Ok(Ok(response)) => response,
        };
        if let Some(uses) = Uses::of(response.extensions()) {
            uses.answered();
        }
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let excerpt = read_excerpt(response.into_body()).await;
        Response {
            observed: Observed::Status { code, retry_after },
            excerpt,
            signing: Some(signing),
        }
    }

    /// The endpoint's own retry schedule (SPEC §14), if it has one.
    pub fn retry_schedule(&self, claim: &Claim) -> Option<RetrySchedule> {
        let prepared = self.options.of(claim.options.as_deref()).ok()??;
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
        if literal.is_some_and(|ip| self.policy.check(ip).is_err()) {
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

/// How deliveries leave the host (SPEC §14): `WEBHOOKD_EGRESS_BIND` and
/// `WEBHOOKD_EGRESS_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// The source address, on a host with several.
    pub bind: Option<IpAddr>,
    /// Every delivery through this HTTP CONNECT proxy.
    pub proxy: Option<webhookd_core::config::EgressProxy>,
}

/// The egress settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EgressError(String);

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
fn failed_on_a_reused_connection(error: &hyper_util::client::legacy::Error) -> bool {
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
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        let wrapped = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<rustls::Error>);
        if cause.is::<rustls::Error>() || wrapped {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Every address the host resolved to is forbidden.
#[derive(Debug, thiserror::Error)]
#[error("every address of the host is blocked (first: {first})")]
struct BlockedAddresses {
    first: BlockedAddress,
}

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve the host: {0}")]
struct DnsFailure(#[source] std::io::Error);

/// Resolves with the system resolver, then keeps only allowed addresses.
#[derive(Clone, Debug)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(DnsFailure)?
                .collect();
            let mut first_blocked = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(address.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        first_blocked.get_or_insert(blocked);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), first_blocked) {
                (true, Some(first)) => Err(Box::new(BlockedAddresses { first }) as Self::Error),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}
