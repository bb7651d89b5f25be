//! An endpoint's delivery options (SPEC §14): custom headers, the signature
//! scheme, its own retry schedule, whether it goes through the egress
//! proxy, and its TLS material ([`tls`]: mTLS, a private CA). Every one is
//! optional and absent means SPEC §3/§4 as before.
//!
//! Stores keep the options as one opaque document ([`DeliveryOptions::to_stored`])
//! next to the endpoint's secret, and seal it at rest like the secret: secret
//! header values are in it. The API reads changes with
//! [`DeliveryOptions::apply_fields`] — a field left out stays as it was,
//! `null` removes it — and shows them with [`DeliveryOptions::to_public`],
//! which never includes a secret value.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::FieldError;
use crate::duration::{format_duration, parse_duration};
use crate::retry::RetrySchedule;

pub mod tls;

/// Most custom headers an endpoint may have.
pub const MAX_HEADERS: usize = 20;
/// Most bytes of one custom header value.
pub const MAX_HEADER_VALUE: usize = 4096;
/// Most delays of an endpoint's own retry schedule.
pub const MAX_SCHEDULE_ENTRIES: usize = 20;
/// The bounds of one delay of an endpoint's own retry schedule.
pub const SCHEDULE_DELAY_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// Headers webhookd sets itself, which a custom header may not replace:
/// the body's framing, the signatures and ids receivers verify, and what
/// belongs to the connection rather than the request.
const RESERVED_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "content-encoding",
    "user-agent",
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
];
const RESERVED_PREFIXES: [&str; 3] = ["x-webhook-", "webhook-", "proxy-"];
/// Headers whose values are credentials whether marked `secret` or not.
const ALWAYS_SECRET: [&str; 2] = ["authorization", "cookie"];

/// How deliveries to an endpoint are signed (SPEC §14).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureScheme {
    /// HMAC-SHA256 with the shared secret (SPEC §3).
    #[default]
    Hmac,
    /// Standard Webhooks' asymmetric `v1a`: receivers hold only the public key.
    Ed25519,
    /// Both: `webhook-signature` carries `v1,` and `v1a,` entries.
    Both,
}

impl SignatureScheme {
    pub const fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Hmac => "hmac",
            SignatureScheme::Ed25519 => "ed25519",
            SignatureScheme::Both => "both",
        }
    }

    /// Whether the shared secret signs (the HMAC headers are sent).
    pub const fn hmac(self) -> bool {
        matches!(self, SignatureScheme::Hmac | SignatureScheme::Both)
    }

    /// Whether the endpoint's ed25519 key signs (`v1a`).
    pub const fn ed25519(self) -> bool {
        matches!(self, SignatureScheme::Ed25519 | SignatureScheme::Both)
    }

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if hands a reference
    fn is_hmac(&self) -> bool {
        *self == SignatureScheme::Hmac
    }
}

/// One custom header, sent with every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomHeader {
    /// As the user wrote it (header names are case-insensitive on the wire).
    pub name: String,
    pub value: String,
    /// Never shown again after it is set: not in answers, not in the
    /// delivery detail (SPEC §13).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// The options of one endpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryOptions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<CustomHeader>,
    #[serde(skip_serializing_if = "SignatureScheme::is_hmac")]
    pub signature: SignatureScheme,
    /// Seconds after each failed attempt; `None`: the process's schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<Vec<u64>>,
    /// `false`: straight to the receiver even when `WEBHOOKD_EGRESS_PROXY`
    /// is set.
    #[serde(skip_serializing_if = "is_true")]
    pub egress_proxy: bool,
    /// mTLS: the PEM certificate chain presented to the receiver…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// …and its PEM private key, never shown after it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// PEM CA certificates trusted in addition to the web PKI roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// A bearer token from this OAuth2 client credentials grant on every
    /// attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
}

/// OAuth2 client credentials (RFC 6749 §4.4) for an endpoint's receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    /// Never shown after it is set.
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Most bytes of an OAuth2 text field.
const MAX_OAUTH2_FIELD: usize = 2048;

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            headers: Vec::new(),
            signature: SignatureScheme::Hmac,
            retry_schedule: None,
            egress_proxy: true,
            client_cert: None,
            client_key: None,
            ca_cert: None,
            oauth2: None,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if hands a reference
fn is_true(value: &bool) -> bool {
    *value
}

/// The option fields an API body may carry.
pub const FIELDS: [&str; 8] = [
    "headers",
    "signature",
    "retry_schedule",
    "egress_proxy",
    "client_cert",
    "client_key",
    "ca_cert",
    "oauth2",
];

impl DeliveryOptions {
    /// No option set: deliveries as SPEC §3/§4 describe.
    pub fn is_default(&self) -> bool {
        *self == DeliveryOptions::default()
    }

    /// The stored document; `None` when there is nothing to store.
    pub fn to_stored(&self) -> Option<String> {
        (!self.is_default()).then(|| serde_json::to_string(self).expect("options serialize"))
    }

    /// Reads a stored document ([`DeliveryOptions::to_stored`]); `None` or
    /// an empty string is the default.
    pub fn from_stored(stored: Option<&str>) -> Result<Self, serde_json::Error> {
        match stored {
            None | Some("") => Ok(DeliveryOptions::default()),
            Some(text) => serde_json::from_str(text),
        }
    }

    /// The endpoint's own retry schedule, if it has one.
    pub fn schedule(&self) -> Option<RetrySchedule> {
        let seconds = self.retry_schedule.as_ref()?;
        RetrySchedule::try_new(seconds.iter().copied().map(Duration::from_secs).collect()).ok()
    }

    /// Applies the option fields of an API body: a field left out stays as
    /// it was, `null` restores the default. Every problem names its field.
    pub fn apply_fields(&mut self, fields: &Map<String, Value>) -> Result<(), FieldError> {
        if let Some(value) = fields.get("headers") {
            self.headers = parse_headers(value, &self.headers)?;
        }
        if let Some(value) = fields.get("signature") {
            self.signature = match value {
                Value::Null => SignatureScheme::Hmac,
                Value::String(text) => match text.as_str() {
                    "hmac" => SignatureScheme::Hmac,
                    "ed25519" => SignatureScheme::Ed25519,
                    "both" => SignatureScheme::Both,
                    _ => return Err(signature_error()),
                },
                _ => return Err(signature_error()),
            };
        }
        if let Some(value) = fields.get("retry_schedule") {
            self.retry_schedule = parse_schedule(value)?;
        }
        if let Some(value) = fields.get("egress_proxy") {
            self.egress_proxy = match value {
                Value::Null => true,
                Value::Bool(through) => *through,
                _ => {
                    return Err(FieldError::new(
                        "egress_proxy",
                        "must be true or false (false: deliveries skip WEBHOOKD_EGRESS_PROXY)",
                    ));
                }
            };
        }
        self.apply_tls_fields(fields)?;
        if let Some(value) = fields.get("oauth2") {
            self.oauth2 = parse_oauth2(value, self.oauth2.as_ref())?;
        }
        if self.oauth2.is_some()
            && self
                .headers
                .iter()
                .any(|header| header.name.eq_ignore_ascii_case("authorization"))
        {
            return Err(FieldError::new(
                "headers",
                "Authorization comes from oauth2 on this endpoint; remove one of them",
            ));
        }
        Ok(())
    }

    /// `client_cert` + `client_key` (a new key may come alone for the
    /// current certificate, a renewed certificate alone for the current
    /// key; `client_cert: null` removes both) and `ca_cert`; the result is
    /// checked as the attempts will use it.
    fn apply_tls_fields(&mut self, fields: &Map<String, Value>) -> Result<(), FieldError> {
        let pem = |field: &'static str, value: &Value| match value {
            Value::String(text) => Ok(Some(text.clone())),
            Value::Null => Ok(None),
            _ => Err(FieldError::new(field, "must be a PEM string, or null")),
        };
        let cert = fields
            .get("client_cert")
            .map(|value| pem("client_cert", value))
            .transpose()?;
        let key = fields
            .get("client_key")
            .map(|value| pem("client_key", value))
            .transpose()?;
        match (cert, key) {
            (None, None) => {}
            (Some(None), _) => {
                self.client_cert = None;
                self.client_key = None;
            }
            (Some(Some(cert)), Some(Some(key))) => {
                self.client_cert = Some(cert);
                self.client_key = Some(key);
            }
            (Some(Some(cert)), None) if self.client_key.is_some() => self.client_cert = Some(cert),
            (None, Some(Some(key))) if self.client_cert.is_some() => self.client_key = Some(key),
            (Some(Some(_)), _) => {
                return Err(FieldError::new(
                    "client_key",
                    "is required with client_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    "client_key",
                    "needs a client_cert (give both; client_cert: null removes them)",
                ));
            }
        }
        if let Some(value) = fields.get("ca_cert") {
            self.ca_cert = pem("ca_cert", value)?;
        }
        if self.client_cert.is_some() || self.ca_cert.is_some() {
            self.tls_config()?;
        }
        Ok(())
    }

    /// The rustls configuration of this endpoint's attempts; `None` when it
    /// sets neither a client certificate nor a CA (the process's own
    /// configuration serves it).
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, FieldError> {
        if self.client_cert.is_none() && self.ca_cert.is_none() {
            return Ok(None);
        }
        let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
        tls::client_config(client, self.ca_cert.as_deref()).map(Some)
    }

    /// The options as answers show them — only those set — secret header
    /// values left out (`{"secret": true}` in their place), the schedule
    /// as written.
    pub fn to_public(&self, into: &mut Map<String, Value>) {
        if !self.headers.is_empty() {
            let headers: Map<String, Value> = self
                .headers
                .iter()
                .map(|header| {
                    let shown = if header.secret {
                        serde_json::json!({ "secret": true })
                    } else {
                        Value::String(header.value.clone())
                    };
                    (header.name.clone(), shown)
                })
                .collect();
            into.insert("headers".into(), Value::Object(headers));
        }
        // Absent means hmac: an endpoint without options answers exactly
        // JoggAI's seven fields.
        if self.signature != SignatureScheme::Hmac {
            into.insert("signature".into(), self.signature.as_str().into());
        }
        if let Some(seconds) = &self.retry_schedule {
            let written: Vec<Value> = seconds
                .iter()
                .map(|s| format_duration(Duration::from_secs(*s)).into())
                .collect();
            into.insert("retry_schedule".into(), Value::Array(written));
        }
        if !self.egress_proxy {
            into.insert("egress_proxy".into(), Value::Bool(false));
        }
        if let Some(cert) = &self.client_cert {
            into.insert("client_cert".into(), cert.clone().into());
            if let Ok(expires_at) = tls::expires_at(cert) {
                into.insert("client_cert_expires_at".into(), expires_at.into());
            }
        }
        if let Some(ca) = &self.ca_cert {
            into.insert("ca_cert".into(), ca.clone().into());
        }
        if let Some(oauth2) = &self.oauth2 {
            let mut shown = Map::new();
            shown.insert("token_url".into(), oauth2.token_url.clone().into());
            shown.insert("client_id".into(), oauth2.client_id.clone().into());
            for (name, value) in [("scope", &oauth2.scope), ("audience", &oauth2.audience)] {
                if let Some(value) = value {
                    shown.insert(name.into(), value.clone().into());
                }
            }
            into.insert("oauth2".into(), Value::Object(shown));
        }
    }
}

/// `{"token_url", "client_id", "client_secret", "scope"?, "audience"?}`;
/// `client_secret` may be left out to keep the current one. The URL's
/// shape is checked here; the API holds it to the endpoint URL rules.
fn parse_oauth2(value: &Value, current: Option<&OAuth2>) -> Result<Option<OAuth2>, FieldError> {
    let error = |message: &str| FieldError::new("oauth2", message.to_owned());
    let fields = match value {
        Value::Null => return Ok(None),
        Value::Object(fields) => fields,
        _ => {
            return Err(error(
                "must be an object {\"token_url\", \"client_id\", \"client_secret\", \"scope\"?, \"audience\"?}, or null",
            ));
        }
    };
    let text = |name: &str, required: bool| -> Result<Option<String>, FieldError> {
        match fields.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(text)) if !text.is_empty() && text.len() <= MAX_OAUTH2_FIELD => {
                Ok(Some(text.clone()))
            }
            None | Some(Value::Null) => Err(error(&format!("{name} is required"))),
            Some(_) => Err(error(&format!(
                "{name} must be a string of 1 to {MAX_OAUTH2_FIELD} bytes"
            ))),
        }
    };
    let token_url = text("token_url", true)?.unwrap_or_default();
    let parsed =
        url::Url::parse(&token_url).map_err(|_| error("token_url is not an absolute URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
        return Err(error("token_url must be an https URL with a host"));
    }
    let client_id = text("client_id", true)?.unwrap_or_default();
    let client_secret = match text("client_secret", false)? {
        Some(secret) => secret,
        None => current
            .map(|current| current.client_secret.clone())
            .ok_or_else(|| error("client_secret is required"))?,
    };
    Ok(Some(OAuth2 {
        token_url,
        client_id,
        client_secret,
        scope: text("scope", false)?,
        audience: text("audience", false)?,
    }))
}

fn signature_error() -> FieldError {
    FieldError::new("signature", "must be \"hmac\", \"ed25519\" or \"both\"")
}

/// `{"Name": "value" | {"value": "…", "secret": true} | {"secret": true}}`;
/// the last keeps the secret value `current` has for that name.
fn parse_headers(value: &Value, current: &[CustomHeader]) -> Result<Vec<CustomHeader>, FieldError> {
    let fields = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(fields) => fields,
        _ => {
            return Err(FieldError::new(
                "headers",
                "must be an object of header names to values",
            ));
        }
    };
    if fields.len() > MAX_HEADERS {
        return Err(FieldError::new(
            "headers",
            format!(
                "has {} headers; at most {MAX_HEADERS} are allowed",
                fields.len()
            ),
        ));
    }
    let mut headers: Vec<CustomHeader> = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        check_header_name(name)?;
        if headers
            .iter()
            .any(|header| header.name.eq_ignore_ascii_case(name))
        {
            return Err(FieldError::new(
                "headers",
                format!("{name} is given twice (header names are case-insensitive)"),
            ));
        }
        let (value, marked) = match value {
            Value::String(value) => (value.clone(), false),
            Value::Object(spec) => {
                let marked = match spec.get("secret") {
                    None | Some(Value::Bool(false)) => false,
                    Some(Value::Bool(true)) => true,
                    Some(_) => {
                        return Err(FieldError::new(
                            "headers",
                            format!("{name}: secret must be true or false"),
                        ));
                    }
                };
                match spec.get("value") {
                    Some(Value::String(value)) => (value.clone(), marked),
                    None if marked => {
                        let kept = current
                            .iter()
                            .find(|header| header.secret && header.name.eq_ignore_ascii_case(name))
                            .ok_or_else(|| {
                                FieldError::new(
                                    "headers",
                                    format!("{name}: has no secret value to keep; give its value"),
                                )
                            })?;
                        (kept.value.clone(), true)
                    }
                    _ => {
                        return Err(FieldError::new(
                            "headers",
                            format!("{name}: value must be a string"),
                        ));
                    }
                }
            }
            _ => {
                return Err(FieldError::new(
                    "headers",
                    format!("{name}: must be a string, or {{\"value\": …, \"secret\": true}}"),
                ));
            }
        };
        check_header_value(name, &value)?;
        let secret = marked || ALWAYS_SECRET.contains(&name.to_ascii_lowercase().as_str());
        headers.push(CustomHeader {
            name: name.clone(),
            value,
            secret,
        });
    }
    Ok(headers)
}

fn check_header_name(name: &str) -> Result<(), FieldError> {
    let token = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    if !token {
        return Err(FieldError::new(
            "headers",
            format!(
                "{name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~, at most 128)"
            ),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix))
    {
        return Err(FieldError::new(
            "headers",
            format!(
                "{name} is set by webhookd and cannot be replaced (nor Content-*, User-Agent, Host, X-Webhook-*, webhook-*)"
            ),
        ));
    }
    Ok(())
}

fn check_header_value(name: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(FieldError::new(
            "headers",
            format!("{name}: the value is longer than {MAX_HEADER_VALUE} bytes"),
        ));
    }
    // Visible ASCII and inner spaces or tabs: what every receiver's HTTP
    // parser takes, and no way to end the header early.
    let printable = value
        .bytes()
        .all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    if !printable || value.trim() != value {
        return Err(FieldError::new(
            "headers",
            format!("{name}: the value must be printable ASCII without leading or trailing spaces"),
        ));
    }
    Ok(())
}

/// `["5s", "1m", …]`: 1 to 20 delays of 1 s to 24 h, whole seconds.
fn parse_schedule(value: &Value) -> Result<Option<Vec<u64>>, FieldError> {
    let (shortest, longest) = SCHEDULE_DELAY_BOUNDS;
    let error = |message: String| FieldError::new("retry_schedule", message);
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => {
            return Err(error(
                "must be an array of delays such as [\"5s\", \"1m\", \"1h\"]".into(),
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_SCHEDULE_ENTRIES {
        return Err(error(format!(
            "must list 1 to {MAX_SCHEDULE_ENTRIES} delays (it lists {})",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            let Value::String(text) = item else {
                return Err(error("every delay must be a string such as \"5m\"".into()));
            };
            let delay = parse_duration(text).map_err(&error)?;
            if delay < shortest || delay > longest || delay.subsec_nanos() != 0 {
                return Err(error(format!(
                    "{text:?} is outside {} to {} in whole seconds",
                    format_duration(shortest),
                    format_duration(longest)
                )));
            }
            Ok(delay.as_secs())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests;
