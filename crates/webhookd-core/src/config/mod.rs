//! webhookd's configuration: every setting, its default and its meaning, in
//! one place.
//!
//! Settings come from an optional TOML file, then `WEBHOOKD_<KEY>`
//! environment variables override them (SPEC §6). Loading is pure — the
//! caller reads the file and the environment — and every error names the key
//! and where it came from, e.g. `WEBHOOKD_LISTEN: "8080" is not host:port`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::duration::{format_duration, parse_duration};
use crate::encryption_key::EncryptionKey;
use crate::retry::RetrySchedule;

mod values;
pub use values::{LogFormat, QueueType, StoreUrl, redact_url};

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
            event_catalog: None,
            public_url: None,
            portal_product_name: DEFAULT_PORTAL_PRODUCT_NAME.into(),
            user_agent: DEFAULT_USER_AGENT.into(),
            quotas: crate::quota::Quotas::default(),
            api_rate_limit: 100,
            auto_disable_after: Duration::from_secs(5 * 24 * 3600),
            keep_delivered: Duration::from_secs(7 * 24 * 3600),
            keep_failed: Duration::from_secs(30 * 24 * 3600),
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

/// One raw value, from the file (typed TOML) or the environment (text).
enum Raw {
    Toml(toml::Value),
    Env(String),
}

impl Raw {
    fn text(self) -> Result<String, String> {
        match self {
            Raw::Env(text) | Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("must be a string, not {}", other.type_str())),
        }
    }

    fn boolean(self) -> Result<bool, String> {
        match self {
            Raw::Toml(toml::Value::Boolean(value)) => Ok(value),
            Raw::Env(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("{text:?} is not a boolean (use true or false)")),
            },
            Raw::Toml(other) => Err(format!("must be true or false, not {}", other.type_str())),
        }
    }

    /// A TOML array of strings, or comma-separated text.
    fn list(self) -> Result<Vec<String>, String> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text),
                    other => Err(format!("items must be strings, not {}", other.type_str())),
                })
                .collect(),
            raw => Ok(raw
                .text()?
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect()),
        }
    }

    fn integer(self) -> Result<u32, String> {
        match self {
            Raw::Toml(toml::Value::Integer(value)) => {
                u32::try_from(value).map_err(|_| format!("{value} is outside 0..{}", u32::MAX))
            }
            Raw::Env(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a whole number >= 0")),
            Raw::Toml(other) => Err(format!("must be a whole number, not {}", other.type_str())),
        }
    }

    fn duration(self) -> Result<Duration, String> {
        parse_duration(&self.text()?)
    }
}

impl Config {
    /// Builds the configuration: defaults, then `file` (its name and TOML
    /// text), then the `WEBHOOKD_*` entries of `env`; then validates the
    /// whole.
    pub fn load<I>(file: Option<(&str, &str)>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut config = Config::default();
        let mut grace_set = false;
        if let Some((file_name, text)) = file {
            let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
                origin: file_name.to_owned(),
                message: format!("not valid TOML: {}", e.message()),
            })?;
            for (key, value) in table {
                grace_set |= key == "shutdown_grace";
                config
                    .set(&key, Raw::Toml(value))
                    .map_err(|message| ConfigError {
                        origin: format!("{key} (in {file_name})"),
                        message,
                    })?;
            }
        }
        let mut env: Vec<_> = env
            .into_iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                Some((name, key, value))
            })
            .collect();
        // Deterministic: with several bad variables, always report the same.
        env.sort();
        for (name, key, value) in env {
            grace_set |= key == "shutdown_grace";
            config
                .set(&key, Raw::Env(value))
                .map_err(|message| ConfigError {
                    origin: name,
                    message,
                })?;
        }
        if !grace_set {
            // The default grace follows a longer delivery_timeout instead
            // of refusing a setting the operator never made (found by
            // fuzzing: WEBHOOKD_DELIVERY_TIMEOUT=1m was blamed on
            // WEBHOOKD_SHUTDOWN_GRACE).
            config.shutdown_grace = config.shutdown_grace.max(config.min_shutdown_grace());
        }
        config.validate()?;
        Ok(config)
    }

    fn set(&mut self, key: &str, raw: Raw) -> Result<(), String> {
        match key {
            "listen" => {
                let text = raw.text()?;
                self.listen = text.parse().map_err(|_| {
                    format!("{text:?} is not an address of the form host:port, e.g. 127.0.0.1:8080")
                })?;
            }
            "store" => self.store = StoreUrl::parse(&raw.text()?)?,
            "redis_prefix" => self.redis_prefix = raw.text()?,
            "redis_wait_replicas" => {
                self.redis_wait_replicas = match usize::try_from(raw.integer()?) {
                    Ok(replicas) if replicas <= 16 => replicas,
                    _ => return Err("must be between 0 and 16".into()),
                };
            }
            amqp if amqp.starts_with("amqp_") => self.set_amqp(key, raw)?,
            "ingest_token" => {
                let token = raw.text()?;
                self.ingest_token = (!token.is_empty()).then_some(token);
            }
            "admin_token" => {
                let token = raw.text()?;
                self.admin_token = (!token.is_empty()).then_some(token);
            }
            "portal_frame_ancestors" => self.portal_frame_ancestors = raw.text()?,
            "encryption_key" => {
                self.encryption_keys = raw
                    .list()?
                    .iter()
                    .filter(|key| !key.is_empty())
                    .map(|key| EncryptionKey::parse(key))
                    .collect::<Result<_, _>>()?;
            }
            "require_https" => self.require_https = raw.boolean()?,
            "allowed_networks" => self.allowed_networks = cidrs(&raw.list()?)?,
            "trusted_proxies" => self.trusted_proxies = cidrs(&raw.list()?)?,
            "max_connections_per_ip" => self.max_connections_per_ip = raw.integer()?,
            "max_endpoints_per_user" => self.quotas.max_endpoints = raw.integer()?,
            "test_sends_per_minute" => self.quotas.test_sends_per_minute = raw.integer()?,
            "max_kept_deliveries_per_endpoint" => {
                self.quotas.max_kept_deliveries_per_endpoint = u64::from(raw.integer()?);
            }
            "max_events_per_user_per_day" => {
                self.quotas.max_events_per_day = match raw {
                    Raw::Env(text) if text.trim().is_empty() => None,
                    raw => Some(u64::from(raw.integer()?)),
                };
            }
            "event_catalog" => {
                let path = raw.text()?;
                self.event_catalog = (!path.is_empty()).then(|| path.into());
            }
            "public_url" => self.public_url = values::public_url(&raw.text()?)?,
            "user_agent" => self.user_agent = values::user_agent(raw.text()?)?,
            "portal_product_name" => {
                self.portal_product_name = values::product_name(&raw.text()?)?;
            }
            "health_listen" => {
                let text = raw.text()?;
                self.health_listen = if text.is_empty() {
                    None
                } else {
                    Some(text.parse().map_err(|_| {
                        format!(
                            "{text:?} is not an address of the form host:port, e.g. 0.0.0.0:8081"
                        )
                    })?)
                };
            }
            "delivery_timeout" => self.delivery_timeout = raw.duration()?,
            "delivery_concurrency" => self.delivery_concurrency = raw.integer()?,
            "endpoint_concurrency" => self.endpoint_concurrency = raw.integer()?,
            "retry_schedule" => self.retry_schedule = RetrySchedule::parse(&raw.text()?)?,
            "max_connections" => self.max_connections = raw.integer()?,
            "api_rate_limit" => self.api_rate_limit = raw.integer()?,
            "auto_disable_after" => {
                let text = raw.text()?;
                self.auto_disable_after = if text.trim() == "0" {
                    Duration::ZERO
                } else {
                    parse_duration(&text)?
                };
            }
            "keep_delivered" => self.keep_delivered = raw.duration()?,
            "keep_failed" => self.keep_failed = raw.duration()?,
            "shutdown_grace" => self.shutdown_grace = raw.duration()?,
            "log_format" => self.log_format = raw.text()?.parse()?,
            "log_level" => self.log_level = raw.text()?,
            _ => return Err(format!("unknown setting (known: {})", KEYS.join(", "))),
        }
        Ok(())
    }

    /// The `amqp_*` settings of [`Config::set`].
    fn set_amqp(&mut self, key: &str, raw: Raw) -> Result<(), String> {
        match key {
            "amqp_url" => {
                let url = raw.text()?;
                self.amqp_url = if url.is_empty() {
                    None
                } else if url.starts_with("amqp://") || url.starts_with("amqps://") {
                    Some(url)
                } else {
                    return Err(format!(
                        "{:?} is not an amqp:// or amqps:// URL",
                        redact_url(&url)
                    ));
                };
            }
            "amqp_queue" => self.amqp_queue = raw.text()?,
            "amqp_queue_type" => self.amqp_queue_type = raw.text()?.parse()?,
            "amqp_prefetch" => {
                self.amqp_prefetch = match u16::try_from(raw.integer()?) {
                    Ok(prefetch) if prefetch > 0 => prefetch,
                    _ => return Err("must be between 1 and 65535".into()),
                };
            }
            "amqp_delivery_limit" => {
                self.amqp_delivery_limit = match raw.integer()? {
                    limit @ 1..=1000 => limit,
                    _ => return Err("must be between 1 and 1000".into()),
                };
            }
            "amqp_heartbeat" => {
                let heartbeat = raw.duration()?;
                if heartbeat.subsec_nanos() != 0 || !(1..=300).contains(&heartbeat.as_secs()) {
                    return Err(format!(
                        "{} is not whole seconds between 1s and 300s (AMQP counts heartbeats in seconds)",
                        format_duration(heartbeat)
                    ));
                }
                self.amqp_heartbeat = heartbeat;
            }
            _ => return Err(format!("unknown setting (known: {})", KEYS.join(", "))),
        }
        Ok(())
    }

    /// Checks that need more than one value, or ranges.
    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            origin: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
            message,
        };
        let timeout = self.delivery_timeout;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
            return Err(fail(
                "delivery_timeout",
                format!("{} is outside 100ms..60s", format_duration(timeout)),
            ));
        }
        let min_grace = self.min_shutdown_grace();
        if self.shutdown_grace < min_grace {
            return Err(fail(
                "shutdown_grace",
                format!(
                    "{} is too short: an attempt in flight may take delivery_timeout ({}) + \
                     {} to read the answer + {} to record it, so at least {}",
                    format_duration(self.shutdown_grace),
                    format_duration(timeout),
                    format_duration(RESPONSE_BODY_READ),
                    format_duration(RECORD_ALLOWANCE),
                    format_duration(min_grace)
                ),
            ));
        }
        for (key, count) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("test_sends_per_minute", self.quotas.test_sends_per_minute),
        ] {
            if !(1..=1_000_000).contains(&count) {
                return Err(fail(key, format!("{count} is outside 1..1000000")));
            }
        }
        let ceiling = crate::endpoint::ENDPOINTS_PER_USER_CEILING;
        if !(1..=ceiling).contains(&self.quotas.max_endpoints) {
            return Err(fail(
                "max_endpoints_per_user",
                format!("{} is outside 1..{ceiling}", self.quotas.max_endpoints),
            ));
        }
        for (key, count) in [
            (
                "max_kept_deliveries_per_endpoint",
                Some(self.quotas.max_kept_deliveries_per_endpoint),
            ),
            (
                "max_events_per_user_per_day",
                self.quotas.max_events_per_day,
            ),
        ] {
            if count == Some(0) {
                return Err(fail(key, "must be at least 1 (unset: no limit)".into()));
            }
        }
        for (key, keep) in [
            ("keep_delivered", self.keep_delivered),
            ("keep_failed", self.keep_failed),
        ] {
            if keep < Duration::from_secs(1) {
                return Err(fail(key, format!("{} is under 1s", format_duration(keep))));
            }
        }
        if !(1..=100_000).contains(&self.delivery_concurrency) {
            return Err(fail(
                "delivery_concurrency",
                format!("{} is outside 1..100000", self.delivery_concurrency),
            ));
        }
        if self.endpoint_concurrency == 0 || self.endpoint_concurrency > self.delivery_concurrency {
            return Err(fail(
                "endpoint_concurrency",
                format!(
                    "{} must be between 1 and delivery_concurrency ({})",
                    self.endpoint_concurrency, self.delivery_concurrency
                ),
            ));
        }
        let queue = &self.amqp_queue;
        // AMQP names are at most 255 bytes and we append ".dead".
        if queue.is_empty() || queue.len() > 250 || queue.starts_with("amq.") {
            return Err(fail(
                "amqp_queue",
                format!("{queue:?} must be 1-250 bytes and not start with \"amq.\""),
            ));
        }
        if self.redis_prefix.contains(['{', '}']) {
            // Braces would change the Redis Cluster hash tags of every key.
            return Err(fail("redis_prefix", "must not contain { or }".into()));
        }
        self.validate_texts()
    }

    /// [`Config::validate`]'s checks of tokens and text settings.
    fn validate_texts(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            origin: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
            message,
        };
        let weak_token = |token: &String| {
            token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if self.ingest_token.as_ref().is_some_and(weak_token) {
            return Err(fail(
                "ingest_token",
                "must be at least 16 characters with no spaces".into(),
            ));
        }
        if self.admin_token.as_ref().is_some_and(weak_token) {
            return Err(fail(
                "admin_token",
                "must be at least 16 characters with no spaces".into(),
            ));
        }
        if !is_source_list(&self.portal_frame_ancestors) {
            return Err(fail(
                "portal_frame_ancestors",
                "must be CSP sources separated by spaces, e.g. 'self' https://app.example.com \
                 (no ; or , or quotes other than around keywords, no data: or javascript:)"
                    .into(),
            ));
        }
        if !is_log_filter(&self.log_level) {
            return Err(fail(
                "log_level",
                format!(
                    "{:?} is not a log filter: one of error, warn, info, debug, trace, off, \
                     or target=level directives separated by commas (e.g. webhookd=debug,info)",
                    self.log_level
                ),
            ));
        }
        Ok(())
    }

    /// Settings that start but deserve a warning, as text for the log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self
            .portal_frame_ancestors
            .split_ascii_whitespace()
            .any(|source| source == "*")
        {
            warnings.push(
                "portal_frame_ancestors contains *: any site may frame the portal \
                 (clickjacking); name the dashboards that embed it instead"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// CIDRs (or single addresses) as `allowed_networks` and
/// `trusted_proxies` take them.
fn cidrs(items: &[String]) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|cidr| {
            cidr.parse::<IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{cidr:?} is not a CIDR such as 127.0.0.0/8"))
        })
        .collect()
}

/// A log filter whose every directive names a level: `info`, or
/// `target=level`, comma-separated. A bare word that is not a level would
/// be taken by tracing as a target shown at every level — and silence
/// everything else (`verbose`, `warning`).
pub fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let is_level = |level: &str| LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    let directives: Vec<&str> = filter.split(',').collect();
    !filter.trim().is_empty()
        && directives
            .iter()
            .all(|directive| match directive.rsplit_once('=') {
                None => is_level(directive),
                Some((target, level)) => {
                    let target = target.trim();
                    !target.is_empty()
                        && target
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_:-.=[]{}\"".contains(c))
                        && is_level(level)
                }
            })
}

/// A CSP source list as `frame-ancestors` takes it: `'none'`, or
/// sources separated by spaces — keywords in single quotes, schemes,
/// hosts with optional scheme, port and wildcard. Nothing that could end
/// the directive (`;`, `,`) or the header (control characters).
fn is_source_list(list: &str) -> bool {
    let is_source = |source: &str| {
        let lower = source.to_ascii_lowercase();
        // A data: or javascript: ancestor can only be an attacker's page.
        let script_scheme = lower.starts_with("data:") || lower.starts_with("javascript:");
        matches!(source, "'self'" | "'none'")
            || (!source.contains('\'')
                && !script_scheme
                && source
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~:/*%[]".contains(c)))
    };
    let sources: Vec<&str> = list.split_ascii_whitespace().collect();
    !sources.is_empty()
        && sources.iter().all(|source| is_source(source))
        && (sources.len() == 1 || !sources.contains(&"'none'"))
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

/// Every key [`Config::set`] knows, for the "unknown setting" message.
const KEYS: &[&str] = &[
    "listen",
    "store",
    "redis_prefix",
    "redis_wait_replicas",
    "amqp_url",
    "amqp_queue",
    "amqp_queue_type",
    "amqp_prefetch",
    "amqp_delivery_limit",
    "amqp_heartbeat",
    "ingest_token",
    "admin_token",
    "portal_frame_ancestors",
    "encryption_key",
    "require_https",
    "allowed_networks",
    "delivery_timeout",
    "delivery_concurrency",
    "endpoint_concurrency",
    "retry_schedule",
    "max_connections",
    "max_connections_per_ip",
    "trusted_proxies",
    "health_listen",
    "event_catalog",
    "public_url",
    "portal_product_name",
    "user_agent",
    "max_endpoints_per_user",
    "test_sends_per_minute",
    "max_kept_deliveries_per_endpoint",
    "max_events_per_user_per_day",
    "api_rate_limit",
    "auto_disable_after",
    "keep_delivered",
    "keep_failed",
    "shutdown_grace",
    "log_format",
    "log_level",
];

#[cfg(test)]
mod tests;
