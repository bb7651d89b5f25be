//! How deliveries leave (SPEC §7, §14): straight to receivers through a
//! resolver that drops forbidden addresses after resolution — so a name
//! that resolves, or later re-resolves, to a private address is refused at
//! connect time — or through the egress proxy's CONNECT tunnel; from the
//! chosen source address; over rustls (ring) with the web PKI roots, or an
//! endpoint's own TLS configuration (its client certificate, its CA).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use webhookd_core::address::{AddressPolicy, BlockedAddress};

use crate::reuse::Counting;

/// Straight to the receiver: its host resolved through the SSRF guard.
type Direct = Counting<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>>;
/// Through the egress proxy's CONNECT tunnel (SPEC §14): webhookd
/// resolves only the proxy, the operator's own address.
type Proxied = Counting<hyper_rustls::HttpsConnector<Tunnel<HttpConnector>>>;

/// How deliveries leave: straight to receivers, or — when
/// `WEBHOOKD_EGRESS_PROXY` is set — through the proxy, unless the endpoint
/// opted out (`"egress_proxy": false`). Boxed: the clients are large.
#[derive(Clone, Debug)]
pub(crate) struct Routes {
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
    /// Whether `WEBHOOKD_EGRESS_PROXY` is set.
    pub(crate) fn has_proxy(&self) -> bool {
        self.proxied.is_some()
    }

    pub(crate) fn request(
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

/// Builds [`Routes`]: the process's, and an endpoint's own when it brings
/// TLS material. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RouteBuilder {
    pub(crate) policy: Arc<AddressPolicy>,
    timeout: Duration,
    bind: Option<IpAddr>,
    /// The proxy's address and `Proxy-Authorization`, checked.
    proxy: Option<(http::Uri, Option<HeaderValue>)>,
}

impl RouteBuilder {
    pub(crate) fn new(
        policy: AddressPolicy,
        timeout: Duration,
        egress: &Egress,
    ) -> Result<Self, EgressError> {
        let proxy = match &egress.proxy {
            None => None,
            Some(proxy) => {
                let address: http::Uri = proxy.address.parse().map_err(|_| {
                    EgressError(format!("{} is not a proxy address", proxy.address))
                })?;
                let authorization = match &proxy.authorization {
                    None => None,
                    Some(authorization) => {
                        let mut value = HeaderValue::from_str(authorization).map_err(|_| {
                            EgressError("the proxy's credentials are not a header value".into())
                        })?;
                        value.set_sensitive(true);
                        Some(value)
                    }
                };
                Some((address, authorization))
            }
        };
        Ok(RouteBuilder {
            policy: Arc::new(policy),
            timeout,
            bind: egress.bind,
            proxy,
        })
    }

    /// The routes over `tls` (`None`: the web PKI roots, no client
    /// certificate).
    pub(crate) fn build(&self, tls: Option<&rustls::ClientConfig>) -> Routes {
        let https = || {
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let builder = match tls {
                Some(config) => builder.with_tls_config(config.clone()),
                None => builder
                    .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                    .expect("ring supports the default protocol versions"),
            };
            builder.https_or_http().enable_http1().enable_http2()
        };
        let direct = {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver {
                policy: Arc::clone(&self.policy),
            });
            http.enforce_http(false);
            http.set_connect_timeout(Some(self.timeout));
            http.set_nodelay(true);
            http.set_local_address(self.bind);
            Clients::over(Counting(https().wrap_connector(http)))
        };
        let proxied = self.proxy.as_ref().map(|(address, authorization)| {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(self.timeout));
            http.set_nodelay(true);
            http.set_local_address(self.bind);
            let mut tunnel = Tunnel::new(address.clone(), http);
            if let Some(authorization) = authorization {
                tunnel = tunnel.with_auth(authorization.clone());
            }
            Clients::over(Counting(https().wrap_connector(tunnel)))
        });
        Routes { direct, proxied }
    }
}

/// Every address the host resolved to is forbidden.
#[derive(Debug, thiserror::Error)]
#[error("every address of the host is blocked (first: {first})")]
pub(crate) struct BlockedAddresses {
    first: BlockedAddress,
}

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve the host: {0}")]
pub(crate) struct DnsFailure(#[source] std::io::Error);

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
