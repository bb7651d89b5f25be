//! Test support shared by every crate's tests. Not used by webhookd itself.
//!
//! Tests run against the real services of the machine. On a developer
//! laptop without Redis or RabbitMQ, tests that need them print why they
//! skip; under `CI=true` a missing service fails the test instead, so CI can
//! never pass by skipping.

pub mod amqp;
pub mod receiver;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A service a test needs.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Redis,
    /// The local Redis Cluster `.ci/redis-cluster start` runs (3 primaries,
    /// 3 replicas).
    RedisCluster,
    RabbitMq,
}

impl Service {
    /// The URL tests use: `TEST_REDIS_URL` / `TEST_AMQP_URL` (not `WEBHOOKD_*`,
    /// which webhookd itself would read as settings),
    /// or the machine's local default.
    pub fn url(self) -> String {
        let (variable, default) = match self {
            Service::Redis => ("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            Service::RedisCluster => (
                "TEST_REDIS_CLUSTER_URL",
                "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
            ),
            Service::RabbitMq => ("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        };
        std::env::var(variable).unwrap_or_else(|_| default.to_owned())
    }

    fn address(self) -> Option<SocketAddr> {
        let url = self.url();
        let rest = url.split_once("://")?.1;
        let authority = rest.split('/').next()?;
        // A cluster URL lists several nodes; the first one tells.
        let host_port = authority.rsplit('@').next()?.split(',').next()?;
        host_port.to_socket_addrs().ok()?.next()
    }
}

/// The service's URL when it is reachable. When it is not: `None` with a
/// printed reason on a laptop, a panic under `CI=true`.
pub fn require(service: Service) -> Option<String> {
    let reachable = service.address().is_some_and(|address| {
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
    });
    if reachable {
        return Some(service.url());
    }
    let message = format!("{service:?} is not reachable at {}", service.url());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message}: CI=true requires it"
    );
    eprintln!("SKIPPED: {message}; start it to run this test");
    None
}

/// A key prefix no other test run uses, so tests share one Redis safely.
pub fn unique_prefix(test: &str) -> String {
    format!("test:{test}:{}:", uuid::Uuid::now_v7().simple())
}

/// A TCP forwarder in front of a real service that a test can cut and
/// restore, to show what webhookd does when its store or broker goes away
/// and comes back — without stopping the shared service itself.
#[derive(Debug)]
pub struct CuttableProxy {
    pub address: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (open, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue; // dropped: the client sees a closed connection
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        CuttableProxy { address, open }
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// The socket address of a service URL such as `redis://127.0.0.1:6379/0`.
pub fn service_address(service: Service) -> SocketAddr {
    service.address().expect("service URL has a host:port")
}
