//! Test support shared by every crate's tests. Not used by webhookd itself.
//!
//! Tests run against the real services of the machine. On a developer
//! laptop without Redis or RabbitMQ, tests that need them print why they
//! skip; under `CI=true` a missing service fails the test instead, so CI can
//! never pass by skipping.

pub mod amqp;
pub mod private_redis;
pub mod receiver;
pub mod tls;

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
        self.host_port()?.to_socket_addrs().ok()?.next()
    }

    /// `host:port` as the URL spells it (a cluster's: its first node).
    fn host_port(self) -> Option<String> {
        let url = self.url();
        let rest = url.split_once("://")?.1;
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit('@').next()?.split(',').next()?;
        Some(host_port.to_owned())
    }
}

/// The service's URL when it is reachable. When it is not: `None` with a
/// printed reason on a laptop, a panic under `CI=true`. Skips are counted,
/// and the test binary prints how many and why as it exits: the harness
/// shows a passing test's output to no one.
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
    skipped(message);
    None
}

/// Why tests of this binary skipped, and how many did.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn skipped(reason: String) {
    let mut skipped = SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if skipped.is_empty() {
        // SAFETY: registers a plain `extern "C"` function, once.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(print_skipped);
        }
    }
    skipped.push(reason);
}

/// One line per reason at exit: "N tests skipped: <reason>".
extern "C" fn print_skipped() {
    let skipped = SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut reasons: Vec<(&String, usize)> = Vec::new();
    for reason in skipped.iter() {
        match reasons.iter_mut().find(|(known, _)| *known == reason) {
            Some((_, count)) => *count += 1,
            None => reasons.push((reason, 1)),
        }
    }
    for (reason, count) in reasons {
        let tests = if count == 1 { "test" } else { "tests" };
        eprintln!(
            "webhookd-testkit: {count} {tests} SKIPPED: {reason} (start it, or run under CI=true to fail instead)"
        );
    }
}

/// An enabled endpoint of `username` at `url` for `events`, with a fresh
/// id and secret, as a test subscribes one.
pub fn subscription(
    username: &str,
    url: &str,
    events: &[webhookd_core::EventType],
) -> webhookd_core::Endpoint {
    webhookd_core::Endpoint {
        ordering: None,
        filter: None,
        endpoint_id: webhookd_core::ids::new_endpoint_id(),
        url: url.to_owned(),
        secret: webhookd_core::ids::new_secret(),
        status: webhookd_core::EndpointStatus::Enabled,
        events: events.to_vec(),
        username: username.to_owned(),
        created_at: 0,
        previous_secret: None,
        failing_since: None,
        quota_refused: 0,
        disabled_reason: None,
        rate_limit: None,
        options: None,
    }
}

/// Event messages `evt_<i>` of `username`, `generated_video_success`, one
/// per `i`, as producers publish them.
pub fn video_events(
    username: &str,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = String> + '_ {
    range.map(move |i| {
        format!(
            r#"{{"event":"generated_video_success","username":"{username}","event_id":"evt_{i}","data":{{"n":{i}}}}}"#
        )
    })
}

/// A key prefix no other test run uses, so tests share one Redis safely.
/// Every key under the prefixes a test binary handed out is deleted as it
/// exits — in the database of `TEST_REDIS_URL` and, when one answers, on
/// the `TEST_REDIS_CLUSTER_URL` cluster's primaries — so a run leaves
/// nothing behind, failed tests included.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "test:{}:{test}:{}:",
        this_run(),
        uuid::Uuid::now_v7().simple()
    )
}

/// This test binary's run id, every [`unique_prefix`] starting with it;
/// the first call registers the clean-up at exit.
fn this_run() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        // SAFETY: registers a plain `extern "C"` function, once.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(delete_this_runs_keys);
        }
        uuid::Uuid::now_v7().simple().to_string()
    })
}

/// What [`unique_prefix`] registers: deletes `test:<this run>:*`.
extern "C" fn delete_this_runs_keys() {
    let pattern = format!("test:{}:*", this_run());
    let mut servers = vec![Service::Redis.url()];
    if Service::RedisCluster.address().is_some_and(|address| {
        TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    }) {
        servers.extend(cluster_primaries());
    }
    for url in servers {
        delete_matching(&url, &pattern);
    }
}

/// Deletes every key matching `pattern` on the server at `url` (its
/// database); quietly nothing when it does not answer.
fn delete_matching(url: &str, pattern: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let page: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut connection);
        let Ok((next, keys)) = page else { return };
        for key in keys {
            let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(key).query(&mut connection);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// `redis://host:port` of the test cluster's primaries, as one of its
/// nodes sees them now (a failover may have moved them).
fn cluster_primaries() -> Vec<String> {
    let Some(seed) = Service::RedisCluster.address() else {
        return Vec::new();
    };
    let nodes: Option<String> = redis::Client::open(format!("redis://{seed}"))
        .ok()
        .and_then(|client| {
            client
                .get_connection_with_timeout(Duration::from_secs(2))
                .ok()
        })
        .and_then(|mut connection| {
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut connection)
                .ok()
        });
    nodes
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
        .filter_map(|line| line.split(' ').nth(1))
        .filter_map(|address| address.split('@').next())
        .map(|address| format!("redis://{address}"))
        .collect()
}

impl Service {
    /// [`Service::url`] with its host and port replaced by `address` (a
    /// proxy in front of it), keeping the rest — the database above all.
    pub fn url_through(self, address: SocketAddr) -> String {
        let url = self.url();
        match self.host_port() {
            Some(own) => url.replacen(&own, &address.to_string(), 1),
            None => url,
        }
    }
}

/// A TCP forwarder in front of a real service that a test can cut, freeze
/// and restore, to show what webhookd does when its store or broker goes
/// away or goes silent, and comes back — without touching the shared
/// service itself.
#[derive(Debug)]
pub struct CuttableProxy {
    pub address: SocketAddr,
    link: tokio::sync::watch::Sender<Link>,
}

/// What the proxy does with the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Forwards.
    Open,
    /// Closes every connection and refuses new ones: the peer sees it at once.
    Cut,
    /// Keeps every connection open and moves no byte, either way, and
    /// accepts new connections without answering: a network partition
    /// (packets dropped, no reset), which only a timeout or heartbeat notices.
    Frozen,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (link, watch) = tokio::sync::watch::channel(Link::Open);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    // A frozen link holds a new connection unanswered.
                    if passable(&mut watch).await.is_none() {
                        return; // cut: the client sees a closed connection
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_service, to_service) = outbound.into_split();
                    tokio::join!(
                        pump(from_client, to_service, watch.clone()),
                        pump(from_service, to_client, watch),
                    );
                });
            }
        });
        CuttableProxy { address, link }
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    /// Goes silent: connections stay open, nothing moves (see [`Link`]).
    pub fn freeze(&self) {
        self.link.send_replace(Link::Frozen);
    }

    /// Forwards again (what a frozen link held moves on).
    pub fn restore(&self) {
        self.link.send_replace(Link::Open);
    }
}

/// Waits while the link is frozen: `Some` once open, `None` when cut.
async fn passable(link: &mut tokio::sync::watch::Receiver<Link>) -> Option<()> {
    let state = *link.wait_for(|state| *state != Link::Frozen).await.ok()?;
    (state == Link::Open).then_some(())
}

/// Copies one direction of a connection while the link is open, holding
/// still while it is frozen; a cut or either end closing ends it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if passable(&mut link).await.is_none() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Frozen or cut while waiting: look again before reading on.
            _ = link.wait_for(|state| *state != Link::Open) => continue,
        };
        let Ok(n @ 1..) = read else { return };
        // Bytes read as the link froze wait for it to open again.
        if passable(&mut link).await.is_none() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The socket address of a service URL such as `redis://127.0.0.1:6379/0`.
pub fn service_address(service: Service) -> SocketAddr {
    service.address().expect("service URL has a host:port")
}
