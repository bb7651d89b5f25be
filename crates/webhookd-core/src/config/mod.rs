//! webhookd's configuration: every setting, its default and its meaning, in
//! one place.
//!
//! Settings come from an optional TOML file, then `WEBHOOKD_<KEY>`
//! environment variables override them (SPEC §6). Loading is pure — the
//! caller reads the file and the environment — and every error names the key
//! and where it came from, e.g. `WEBHOOKD_LISTEN: "8080" is not host:port`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::duration::format_duration;
use crate::encryption_key::EncryptionKey;
use crate::retry::RetrySchedule;

mod load;
pub use load::is_log_filter;
mod values;
pub use values::{EgressProxy, LogFormat, QueueType, StoreUrl, redact_url};

/// Prefix of every environment variable webhookd reads.
pub const ENV_PREFIX: &str = "WEBHOOKD_";

/// The name the portal shows unless `portal_product_name` says otherwise.
pub const DEFAULT_PORTAL_PRODUCT_NAME: &str = "webhookd";

/// The `User-Agent` of deliveries unless `user_agent` says otherwise: what
/// JoggAI's receivers have always seen.
pub const DEFAULT_USER_AGENT: &str = "JoggAI-Webhook/2.0";

/// The validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `listen`: address of the HTTP listener (API, ingest, `/metrics`,
    /// `/healthz`, `/readyz`). Default `127.0.0.1:8080`: loopback, so a first
    /// run exposes nothing.
    pub listen: SocketAddr,
    /// `store`: where state lives. `sqlite://<path>` (the embedded default,
    /// `sqlite://webhookd-data/webhookd.db`), `redis://host:port/db` for
    /// production, or `redis+cluster://host:port,host:port` for a Redis
    /// Cluster (SPEC §10).
    pub store: StoreUrl,
    /// `redis_prefix`: prefix of every Redis key, so several deployments (or
    /// test runs) can share one Redis. Default `webhookd:`.
    pub redis_prefix: String,
    /// `redis_wait_replicas`: replicas of its primary that must have each
    /// accepted batch (Redis `WAIT`, 1 s) before webhookd acknowledges it
    /// to the producer; fewer answers 503 / leaves the message to the
    /// broker, to be tried again. Redis replicates asynchronously: without
    /// it a failover can lose the last writes a primary acknowledged.
    /// Default `0` (docs/operations.md weighs the cost).
    pub redis_wait_replicas: usize,
    /// `amqp_url`: RabbitMQ to consume events from, e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. Unset: no consumer; events
    /// come in over HTTP only.
    pub amqp_url: Option<String>,
    /// `amqp_queue`: durable queue to consume; invalid messages go to
    /// `<queue>.dead`. Default `webhook.events`.
    pub amqp_queue: String,
    /// `amqp_queue_type`: how the queue and its `.dead` queue are declared
    /// (SPEC §10): `classic` (default) or `quorum`, replicated across a
    /// RabbitMQ cluster. An existing queue keeps its type: RabbitMQ refuses
    /// to redeclare it as another (move messages with a shovel first).
    pub amqp_queue_type: QueueType,
    /// `amqp_prefetch`: messages RabbitMQ may hand webhookd before they are
    /// acknowledged; also the most webhookd writes to the store in one batch.
    /// Default `300` (RabbitMQ recommends 100-300 and up).
    pub amqp_prefetch: u16,
    /// `amqp_delivery_limit`: a quorum queue's `x-delivery-limit` (1..=1000,
    /// default `20`): a message handed out this many times without an ack
    /// — a poison message that kills its consumer — goes to `<queue>.dead`
    /// instead of back to the queue forever (or, RabbitMQ 4's default,
    /// dropped). Classic queues have no such limit.
    pub amqp_delivery_limit: u32,
    /// `amqp_heartbeat`: the AMQP heartbeat webhookd asks RabbitMQ for, in
    /// whole seconds (1s..300s). A broker link that goes silent — frozen,
    /// no RST — is noticed after about two missed heartbeats, and `/readyz`
    /// turns 503. Default `10s` (lapin's negotiated default was 60 s, which
    /// left a frozen link unnoticed for over two minutes).
    pub amqp_heartbeat: Duration,
    /// `ingest_token`: bearer token for `POST /internal/events`. Unset: one
    /// is generated at first start, kept in the store and logged once.
    pub ingest_token: Option<String>,
    /// `admin_token`: bearer token of the platform admin API
    /// (`/internal/users`, `/internal/portal-links`, SPEC §9). Unset: those
    /// routes are closed (every call answers 10105).
    pub admin_token: Option<String>,
    /// `portal_frame_ancestors`: the CSP `frame-ancestors` sources of
    /// `/portal`, the origins allowed to embed it in a frame (SPEC §9).
    /// Default `'self'`; e.g. `'self' https://dashboard.example.com`.
    pub portal_frame_ancestors: String,
    /// `encryption_key`: keys sealing endpoint secrets at rest (SPEC §7),
    /// base64 of 32 bytes each, comma-separated; the first seals, all open.
    /// Empty: SQLite uses (and at first start makes) the key file beside
    /// its database; Redis keeps secrets unsealed, with a warning.
    pub encryption_keys: Vec<EncryptionKey>,
    /// `require_https`: endpoint URLs must be `https`. Default `true`; turn
    /// off only for local testing.
    pub require_https: bool,
    /// `allowed_networks`: CIDRs exempt from the private-address block of
    /// SPEC §7, e.g. `127.0.0.0/8` for local testing. Default: none.
    pub allowed_networks: Vec<IpNet>,
    /// `delivery_timeout`: per-attempt deadline over connect, TLS, send and
    /// response head. Default `5s`, what JoggAI documents to receivers.
    pub delivery_timeout: Duration,
    /// `delivery_concurrency`: claims held at once over all endpoints —
    /// sending, queued in an endpoint's lane, or being recorded. Default
    /// `256`.
    pub delivery_concurrency: u32,
    /// `endpoint_concurrency`: attempts in flight at once to one endpoint,
    /// so a slow receiver cannot take every worker. Default `8`.
    pub endpoint_concurrency: u32,
    /// `retry_schedule`: delays after each failed attempt, comma-separated.
    /// Default `5s,5m,30m,2h,5h,10h,14h,20h,1d` (10 attempts over ~3.1 days).
    pub retry_schedule: RetrySchedule,
    /// `max_connections`: client connections the listener holds open at
    /// once (SPEC §7); more wait in the kernel's backlog. Default `4096`.
    /// Lowered at start if the open-file limit cannot also cover outbound
    /// deliveries.
    pub max_connections: u32,
    /// `max_connections_per_ip`: connections one client address may hold
    /// open at once (SPEC §7), so one client cannot take the listener.
    /// Default `256`. Connections from `trusted_proxies` are exempt (they
    /// carry many clients).
    pub max_connections_per_ip: u32,
    /// `trusted_proxies`: CIDRs of load balancers whose `X-Forwarded-For`
    /// names the client. Default: none (the peer address is the client).
    pub trusted_proxies: Vec<IpNet>,
    /// `event_catalog`: a TOML or JSON file of the event types producers may
    /// publish (SPEC §12), read at start. Default: unset, the 22 JoggAI
    /// types of SPEC §2.
    pub event_catalog: Option<std::path::PathBuf>,
    /// `portal_product_name`: the name in the portal's title and header,
    /// e.g. your platform's. Default `webhookd`.
    pub portal_product_name: String,
    /// `public_url`: where browsers reach webhookd, for the links it prints
    /// (`webhookd portal-link`), e.g. `https://hooks.example.com`. Default:
    /// unset (`http://<listen>`).
    pub public_url: Option<String>,
    /// `user_agent`: the `User-Agent` of every delivery (SPEC §3). Default
    /// `JoggAI-Webhook/2.0`.
    pub user_agent: String,
    /// `health_listen`: a second listener serving only `/healthz`,
    /// `/readyz` and `/metrics`, for probes the public listener's clients
    /// cannot starve. Default: unset (they are on `listen`).
    pub health_listen: Option<SocketAddr>,
    /// `egress_bind`: the source address deliveries leave from, on a host
    /// with several (SPEC §14). Default: unset (the system chooses).
    pub egress_bind: Option<IpAddr>,
    /// `egress_proxy`: an HTTP CONNECT proxy every delivery goes through,
    /// `http://[user:password@]host:port` (SPEC §14). Default: unset. The
    /// SSRF guard then applies to what webhookd resolves itself (the
    /// proxy's own address is the operator's, and exempt); the receivers'
    /// addresses must be guarded by the proxy (docs/security.md).
    pub egress_proxy: Option<EgressProxy>,
    /// `operator_events`: where operator events go (SPEC §15),
    /// comma-separated `amqp://…/<exchange>` and `https://…` targets
    /// (docs/operations.md, "Operator events"). Default: none (not
    /// recorded at all).
    pub operator_events: Vec<crate::operator::OperatorTarget>,
    /// The per-tenant quotas' defaults (SPEC §11): `max_endpoints_per_user`
    /// (20), `test_sends_per_minute` (10, per endpoint),
    /// `max_kept_deliveries_per_endpoint` (100000),
    /// `max_events_per_user_per_day` (unset: none). Each may be set per
    /// user through the admin API.
    pub quotas: crate::quota::Quotas,
    /// `api_rate_limit`: requests per second each API key may make to the
    /// management API, with bursts of twice that; `0` turns the limit off.
    /// Default `100`, far above what endpoint management needs.
    pub api_rate_limit: u32,
    /// `auto_disable_after`: an endpoint with no successful attempt for this
    /// long since its failure streak began is disabled by webhookd, with a
    /// `disabled_reason` (SPEC §8). Default `5d`; `0` never.
    pub auto_disable_after: Duration,
    /// `keep_delivered`: how long a delivered delivery (body and attempts)
    /// is kept for the listings after its last attempt. Default `7d`.
    pub keep_delivered: Duration,
    /// `keep_failed`: how long a dead delivery is kept for inspection and
    /// re-send after its last attempt. Default `30d`.
    pub keep_failed: Duration,
    /// `keep_payloads`: how long an event's body is kept, once per event,
    /// for the delivery detail's `request` (SPEC §13), counted from
    /// acceptance. Default `72h`; `0` keeps none.
    pub keep_payloads: Duration,
    /// `shutdown_grace`: how long SIGTERM/SIGINT waits for in-flight work
    /// before exiting. Default `30s`; must leave an attempt started just
    /// before the signal time to finish and be recorded
    /// ([`Config::min_shutdown_grace`]).
    pub shutdown_grace: Duration,
    /// `log_format`: `auto` (human on a terminal, JSON otherwise), `human`
    /// or `json`.
    pub log_format: LogFormat,
    /// `log_level`: a tracing filter such as `info` or
    /// `webhookd=debug,info`. `RUST_LOG`, when set, wins. Default `info`.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreUrl::Sqlite {
                path: "webhookd-data/webhookd.db".into(),
            },
            redis_prefix: "webhookd:".into(),
            redis_wait_replicas: 0,
            amqp_url: None,
            amqp_queue: "webhook.events".into(),
            amqp_queue_type: QueueType::Classic,
            amqp_prefetch: 300,
            amqp_delivery_limit: 20,
            amqp_heartbeat: Duration::from_secs(10),
            ingest_token: None,
            admin_token: None,
            portal_frame_ancestors: "'self'".into(),
            encryption_keys: Vec::new(),
            require_https: true,
            allowed_networks: Vec::new(),
            delivery_timeout: Duration::from_secs(5),
            delivery_concurrency: 256,
            endpoint_concurrency: 8,
            retry_schedule: RetrySchedule::default(),
            max_connections: 4096,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
            health_listen: None,
            egress_bind: None,
            egress_proxy: None,
            operator_events: Vec::new(),
            event_catalog: None,
            public_url: None,
            portal_product_name: DEFAULT_PORTAL_PRODUCT_NAME.into(),
            user_agent: DEFAULT_USER_AGENT.into(),
            quotas: crate::quota::Quotas::default(),
            api_rate_limit: 100,
            auto_disable_after: Duration::from_secs(5 * 24 * 3600),
            keep_delivered: Duration::from_secs(7 * 24 * 3600),
            keep_failed: Duration::from_secs(30 * 24 * 3600),
            keep_payloads: Duration::from_secs(72 * 3600),
            shutdown_grace: Duration::from_secs(30),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
        }
    }
}

/// Secrets (the AMQP password, the ingest token) stay out of `{:?}`, which
/// ends up in logs.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("store", &self.store.to_string())
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_wait_replicas", &self.redis_wait_replicas)
            .field("amqp_url", &self.amqp_url.as_deref().map(redact_url))
            .field("amqp_queue", &self.amqp_queue)
            .field("amqp_queue_type", &self.amqp_queue_type)
            .field("amqp_prefetch", &self.amqp_prefetch)
            .field("amqp_delivery_limit", &self.amqp_delivery_limit)
            .field("amqp_heartbeat", &format_duration(self.amqp_heartbeat))
            .field("ingest_token", &self.ingest_token.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("portal_frame_ancestors", &self.portal_frame_ancestors)
            .field("encryption_keys", &self.encryption_keys.len())
            .field("require_https", &self.require_https)
            .field("allowed_networks", &self.allowed_networks)
            .field("delivery_timeout", &format_duration(self.delivery_timeout))
            .field("delivery_concurrency", &self.delivery_concurrency)
            .field("endpoint_concurrency", &self.endpoint_concurrency)
            .field("retry_schedule", &self.retry_schedule.to_string())
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("health_listen", &self.health_listen)
            .field("egress_bind", &self.egress_bind)
            .field("egress_proxy", &self.egress_proxy)
            .field(
                "operator_events",
                &self
                    .operator_events
                    .iter()
                    .map(|target| match target {
                        crate::operator::OperatorTarget::Amqp { url, exchange } => {
                            format!("{}/{exchange}", redact_url(url))
                        }
                        crate::operator::OperatorTarget::Webhook { url } => redact_url(url),
                    })
                    .collect::<Vec<_>>(),
            )
            .field("event_catalog", &self.event_catalog)
            .field("public_url", &self.public_url)
            .field("portal_product_name", &self.portal_product_name)
            .field("user_agent", &self.user_agent)
            .field("quotas", &self.quotas)
            .field("api_rate_limit", &self.api_rate_limit)
            .field(
                "auto_disable_after",
                &format_duration(self.auto_disable_after),
            )
            .field("keep_delivered", &format_duration(self.keep_delivered))
            .field("keep_failed", &format_duration(self.keep_failed))
            .field("keep_payloads", &format_duration(self.keep_payloads))
            .field("shutdown_grace", &format_duration(self.shutdown_grace))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// A setting that could not be used, with the name the operator wrote it
/// under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    /// `WEBHOOKD_LISTEN`, `listen (in webhookd.toml)`, or the file itself.
    pub origin: String,
    pub message: String,
}

/// How long reading a response body may take after its head (the delivery
/// client's bound).
pub const RESPONSE_BODY_READ: Duration = Duration::from_secs(1);
/// Time allowed for writing a finished attempt to the store during shutdown.
const RECORD_ALLOWANCE: Duration = Duration::from_secs(2);

impl Config {
    /// The shortest `shutdown_grace` that lets an attempt started just
    /// before the signal finish and be recorded: a clean stop never leaves
    /// a sent attempt unrecorded (its delivery would be sent again).
    pub fn min_shutdown_grace(&self) -> Duration {
        self.delivery_timeout + RESPONSE_BODY_READ + RECORD_ALLOWANCE
    }
}

#[cfg(test)]
mod tests;
