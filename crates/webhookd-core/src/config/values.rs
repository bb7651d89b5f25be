//! The typed values of settings that are more than a number or a
//! duration: the store URL, the queue type, the log format.

use std::fmt;

/// Which store backs webhookd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded SQLite database at this path.
    Sqlite { path: String },
    /// A Redis server (`redis://`, `rediss://`) or Redis Cluster
    /// (`redis+cluster://host:port,…`, `rediss+cluster://`); the URL is
    /// handed to the store as written.
    Redis { url: String },
}

/// The schemes a Redis store URL may start with: one server, or a cluster.
const REDIS_SCHEMES: [&str; 4] = [
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
];

impl StoreUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://webhookd-data/webhookd.db".into(),
                );
            }
            return Ok(StoreUrl::Sqlite { path: path.into() });
        }
        if REDIS_SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
            return Ok(StoreUrl::Redis { url: text.into() });
        }
        Err(format!(
            "{:?} is not a store URL (use sqlite://<path>, redis://host:port/db or \
             redis+cluster://host:port,host:port)",
            redact_url(text)
        ))
    }
}

/// Displays without a password.
impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{path}"),
            StoreUrl::Redis { url } => f.write_str(&redact_url(url)),
        }
    }
}

/// The RabbitMQ queue type webhookd declares (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!(
                "{other:?} is not a queue type (use classic or quorum)"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(LogFormat::Auto),
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "{other:?} is not a log format (use auto, human or json)"
            )),
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// `public_url`: empty is unset; otherwise an absolute http(s) URL, kept
/// without a trailing `/` so paths append cleanly.
pub(super) fn public_url(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(Some(text.trim_end_matches('/').to_owned()))
        }
        _ => Err("must be an absolute http(s) URL, e.g. https://hooks.example.com".into()),
    }
}

/// `user_agent`: what a header value may hold, kept short.
pub(super) fn user_agent(agent: String) -> Result<String, String> {
    if agent.is_empty()
        || agent.len() > 200
        || !agent.chars().all(|c| c == ' ' || c.is_ascii_graphic())
    {
        return Err("must be 1-200 printable ASCII characters, e.g. Acme-Webhooks/1.0".into());
    }
    Ok(agent)
}

/// `portal_product_name`: a short name to show, one line.
pub(super) fn product_name(name: &str) -> Result<String, String> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
        return Err("must be 1-60 characters on one line, e.g. Acme".into());
    }
    Ok(name)
}

/// `egress_proxy` (SPEC §14): the HTTP CONNECT proxy every delivery goes
/// through, so deliveries leave from its addresses.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// `http://host:port`, without credentials.
    pub address: String,
    /// `Basic <base64 user:password>`, when the setting carried them.
    pub authorization: Option<String>,
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("address", &self.address)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// `egress_proxy`: empty is unset; otherwise `http://[user:password@]host:port`.
pub(super) fn egress_proxy(text: &str) -> Result<Option<EgressProxy>, String> {
    use base64::Engine as _;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let refused =
        || "must be http://[user:password@]host:port, e.g. http://proxy.internal:3128".to_owned();
    let url = url::Url::parse(text).map_err(|_| refused())?;
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(refused());
    };
    if url.scheme() != "http" || !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(refused());
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| refused())
    };
    let authorization = if url.username().is_empty() {
        None
    } else {
        let credentials = format!(
            "{}:{}",
            decode(url.username())?,
            decode(url.password().unwrap_or_default())?
        );
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    };
    Ok(Some(EgressProxy {
        address: format!("http://{host}:{port}"),
        authorization,
    }))
}
