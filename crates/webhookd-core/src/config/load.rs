//! Reading the configuration: defaults, then the file, then the
//! environment, each value checked where it is read, then the whole
//! validated together.

use std::time::Duration;

use ipnet::IpNet;

use super::{
    Config, ConfigError, ENV_PREFIX, RECORD_ALLOWANCE, RESPONSE_BODY_READ, StoreUrl, redact_url,
    values,
};
use crate::duration::{format_duration, parse_duration};
use crate::encryption_key::EncryptionKey;
use crate::retry::RetrySchedule;

/// The longest `keep_payloads`: bodies are the bulk of what the store
/// holds, and a year is past any inspection need.
const MAX_KEEP_PAYLOADS: Duration = Duration::from_secs(365 * 86_400);

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

    /// A duration, or `0` for none.
    fn duration_or_zero(self) -> Result<Duration, String> {
        let text = self.text()?;
        if text.trim() == "0" {
            Ok(Duration::ZERO)
        } else {
            parse_duration(&text)
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
            "egress_bind" => {
                let text = raw.text()?;
                self.egress_bind = if text.trim().is_empty() {
                    None
                } else {
                    Some(text.trim().parse().map_err(|_| {
                        format!("{text:?} is not an IP address, e.g. 192.0.2.10 or 2001:db8::10")
                    })?)
                };
            }
            "egress_proxy" => self.egress_proxy = values::egress_proxy(&raw.text()?)?,
            "operator_events" => {
                self.operator_events = crate::operator::OperatorTarget::parse_list(&raw.text()?)?;
            }
            "delivery_timeout" => self.delivery_timeout = raw.duration()?,
            "delivery_concurrency" => self.delivery_concurrency = raw.integer()?,
            "endpoint_concurrency" => self.endpoint_concurrency = raw.integer()?,
            "retry_schedule" => self.retry_schedule = RetrySchedule::parse(&raw.text()?)?,
            "max_connections" => self.max_connections = raw.integer()?,
            "api_rate_limit" => self.api_rate_limit = raw.integer()?,
            "auto_disable_after" => self.auto_disable_after = raw.duration_or_zero()?,
            "keep_delivered" => self.keep_delivered = raw.duration()?,
            "keep_failed" => self.keep_failed = raw.duration()?,
            "keep_payloads" => self.keep_payloads = raw.duration_or_zero()?,
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
        if self.keep_payloads > MAX_KEEP_PAYLOADS {
            return Err(fail(
                "keep_payloads",
                format!(
                    "{} is over {}",
                    format_duration(self.keep_payloads),
                    format_duration(MAX_KEEP_PAYLOADS)
                ),
            ));
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
    "egress_bind",
    "egress_proxy",
    "operator_events",
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
    "keep_payloads",
    "shutdown_grace",
    "log_format",
    "log_level",
];
