//! An endpoint's delivery options (SPEC §14): custom headers, the signature
//! scheme, its own retry schedule, and whether it goes through the egress
//! proxy. Every one is optional and absent means SPEC §3/§4 as before.
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
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            headers: Vec::new(),
            signature: SignatureScheme::Hmac,
            retry_schedule: None,
            egress_proxy: true,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if hands a reference
fn is_true(value: &bool) -> bool {
    *value
}

/// The option fields an API body may carry.
pub const FIELDS: [&str; 4] = ["headers", "signature", "retry_schedule", "egress_proxy"];

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
        Ok(())
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
    }
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
mod tests {
    use super::*;
    use serde_json::json;

    fn applied(body: &Value) -> Result<DeliveryOptions, FieldError> {
        let mut options = DeliveryOptions::default();
        options.apply_fields(body.as_object().unwrap())?;
        Ok(options)
    }

    #[test]
    fn no_option_stores_nothing_and_reads_back_as_the_default() {
        let options = applied(&json!({"url": "https://x"})).unwrap();
        assert!(options.is_default());
        assert_eq!(options.to_stored(), None);
        assert_eq!(
            DeliveryOptions::from_stored(Some("")).unwrap(),
            DeliveryOptions::default()
        );
    }

    #[test]
    fn options_survive_the_store_and_show_without_secrets() {
        let options = applied(&json!({
            "headers": {"X-Tenant": "acme", "Authorization": "Bearer abc",
                        "X-Api-Key": {"value": "k1", "secret": true}},
            "signature": "both",
            "retry_schedule": ["5s", "1m", "2h"],
            "egress_proxy": false,
        }))
        .unwrap();
        let stored = options.to_stored().unwrap();
        assert_eq!(
            DeliveryOptions::from_stored(Some(&stored)).unwrap(),
            options
        );
        let mut shown = Map::new();
        options.to_public(&mut shown);
        let shown = Value::Object(shown);
        assert_eq!(shown["headers"]["X-Tenant"], "acme");
        assert_eq!(shown["headers"]["Authorization"], json!({"secret": true}));
        assert_eq!(shown["headers"]["X-Api-Key"], json!({"secret": true}));
        assert!(!shown.to_string().contains("abc") && !shown.to_string().contains("k1"));
        assert_eq!(shown["retry_schedule"], json!(["5s", "1m", "2h"]));
        assert_eq!(shown["signature"], "both");
        assert_eq!(shown["egress_proxy"], false);
        assert_eq!(options.schedule().unwrap().delays().len(), 3);
    }

    #[test]
    fn a_secret_header_given_without_its_value_keeps_it() {
        let mut options =
            applied(&json!({"headers": {"X-Api-Key": {"value": "k1", "secret": true}}})).unwrap();
        options
            .apply_fields(
                json!({"headers": {"x-api-key": {"secret": true}, "X-Other": "o"}})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        let kept = options
            .headers
            .iter()
            .find(|h| h.name == "x-api-key")
            .unwrap();
        assert_eq!((kept.value.as_str(), kept.secret), ("k1", true));
        assert_eq!(options.headers.len(), 2);
        let error = applied(&json!({"headers": {"X-New": {"secret": true}}})).unwrap_err();
        assert!(error.message.contains("no secret value to keep"), "{error}");
    }

    #[test]
    fn left_out_fields_stay_and_null_restores_the_default() {
        let mut options =
            applied(&json!({"signature": "ed25519", "retry_schedule": ["1s"]})).unwrap();
        options
            .apply_fields(json!({"url": "https://x"}).as_object().unwrap())
            .unwrap();
        assert_eq!(options.signature, SignatureScheme::Ed25519);
        options
            .apply_fields(
                json!({"signature": null, "retry_schedule": null})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert!(options.is_default());
    }

    #[test]
    fn every_bad_option_names_its_field_and_why() {
        let cases = [
            (
                json!({"headers": {"Content-Type": "text/plain"}}),
                "headers",
                "set by webhookd",
            ),
            (
                json!({"headers": {"X-Webhook-Id": "1"}}),
                "headers",
                "set by webhookd",
            ),
            (
                json!({"headers": {"webhook-signature": "1"}}),
                "headers",
                "set by webhookd",
            ),
            (
                json!({"headers": {"Bad Name": "1"}}),
                "headers",
                "not a header name",
            ),
            (
                json!({"headers": {"X-A": "a\r\nX-B: b"}}),
                "headers",
                "printable ASCII",
            ),
            (
                json!({"headers": {"X-A": 1}}),
                "headers",
                "must be a string",
            ),
            (
                json!({"headers": {"X-A": "1", "x-a": "2"}}),
                "headers",
                "given twice",
            ),
            (json!({"headers": []}), "headers", "must be an object"),
            (json!({"signature": "rsa"}), "signature", "must be"),
            (json!({"retry_schedule": []}), "retry_schedule", "1 to 20"),
            (
                json!({"retry_schedule": ["500ms"]}),
                "retry_schedule",
                "outside 1s",
            ),
            (
                json!({"retry_schedule": ["2d"]}),
                "retry_schedule",
                "outside 1s",
            ),
            (
                json!({"retry_schedule": ["soon"]}),
                "retry_schedule",
                "not a duration",
            ),
            (
                json!({"retry_schedule": [5]}),
                "retry_schedule",
                "must be a string",
            ),
            (
                json!({"egress_proxy": "no"}),
                "egress_proxy",
                "true or false",
            ),
        ];
        for (body, field, words) in cases {
            let error = applied(&body).unwrap_err();
            assert_eq!(error.field, field, "{body}");
            assert!(error.message.contains(words), "{body}: {error}");
        }
        let many: Map<String, Value> = (0..21)
            .map(|i| (format!("X-H{i}"), Value::String("v".into())))
            .collect();
        let error = applied(&json!({ "headers": many })).unwrap_err();
        assert!(error.message.contains("at most 20"), "{error}");
    }
}
