//! Webhook endpoints: the model the API returns (`WebhookEndpoint`, SPEC §1)
//! and the validation of what users send to create or change one.

use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use crate::address::AddressPolicy;
use crate::catalog::{Catalog, EventType};

/// A user holds at most this many endpoints by default (SPEC §1, §11:
/// `max_endpoints_per_user`, settable per user).
pub const MAX_ENDPOINTS_PER_USER: usize = 20;
/// The most any user's endpoint quota may be: the deliveries of one event
/// are numbered with two hex digits.
pub const ENDPOINTS_PER_USER_CEILING: u32 = 256;
/// Longest endpoint URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for EndpointStatus {
    type Err = FieldError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "enabled" => Ok(EndpointStatus::Enabled),
            "disabled" => Ok(EndpointStatus::Disabled),
            other => Err(FieldError::new(
                "status",
                format!("must be \"enabled\" or \"disabled\", not {other:?}"),
            )),
        }
    }
}

impl Serialize for EndpointStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A webhook endpoint as stored and as the API shows it, field for field
/// the JoggAI `WebhookEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub status: EndpointStatus,
    pub events: Vec<EventType>,
    pub username: String,
    /// Unix seconds.
    pub created_at: i64,
    /// During a rotation's grace (SPEC §8), the secret it replaced; shown
    /// only as `previous_secret_expires_at`.
    #[serde(
        rename = "previous_secret_expires_at",
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_expiry"
    )]
    pub previous_secret: Option<PreviousSecret>,
    /// Unix seconds of the first failed attempt of the current failure
    /// streak (SPEC §8); `None` once an attempt succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// Why webhookd disabled it (SPEC §8); `None` unless webhookd did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Most deliveries per second, across every process sharing the store
    /// (SPEC §10); `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Deliveries refused at acceptance since its last success because it
    /// held `max_kept_deliveries_per_endpoint` (SPEC §11). Shown by
    /// `GET /v2/endpoint/{id}`, not in listings.
    #[serde(skip)]
    pub quota_refused: u64,
    /// Its delivery options (SPEC §14) as stored
    /// ([`crate::DeliveryOptions::to_stored`]); `None`: none set. Sealed at
    /// rest like the secret; answers show [`crate::DeliveryOptions::to_public`].
    #[serde(skip)]
    pub options: Option<String>,
    /// Its payload filter (SPEC §15) as compact JSON, checked by
    /// [`crate::Filter::parse`] when set; `None`: every event of its types.
    #[serde(skip)]
    pub filter: Option<String>,
    /// Its ordering (SPEC §15): `None` unordered, `Some("")` ordered by
    /// each event's own `ordering_key`, `Some("/…")` by the value at that
    /// pointer into the body ([`crate::ordering`]).
    #[serde(skip)]
    pub ordering: Option<String>,
}

/// The highest `rate_limit` an endpoint may have (deliveries per second).
pub const MAX_RATE_LIMIT: u32 = 100_000;

/// A secret a rotation replaced, still signing until `expires_at` so
/// receivers can switch without missing a delivery (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: String,
    /// Unix seconds; from then on only the new secret signs.
    pub expires_at: i64,
}

impl PreviousSecret {
    /// Whether it still signs at `now` (unix seconds).
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

// serde's `serialize_with` hands over `&Option<_>`.
#[allow(clippy::ref_option)]
fn serialize_expiry<S: serde::Serializer>(
    previous: &Option<PreviousSecret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match previous {
        Some(previous) => serializer.serialize_i64(previous.expires_at),
        None => serializer.serialize_none(),
    }
}

impl Endpoint {
    /// The endpoint as the API shows it at `now`: a previous secret whose
    /// grace has ended is gone (no process had to be awake when it ended).
    #[must_use]
    pub fn as_of(mut self, now: i64) -> Self {
        if self
            .previous_secret
            .as_ref()
            .is_some_and(|previous| !previous.is_live(now))
        {
            self.previous_secret = None;
        }
        self
    }

    /// Whether an event of this type goes to this endpoint.
    pub fn wants(&self, event_type: &EventType) -> bool {
        self.status == EndpointStatus::Enabled && self.events.contains(event_type)
    }
}

/// What a user may set on an endpoint; everything else (id, secret, owner,
/// creation time) webhookd decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub url: String,
    /// `None` when the request left it out: `enabled` on create, unchanged
    /// on update (so changing a URL never re-enables a disabled endpoint).
    pub status: Option<EndpointStatus>,
    pub events: Vec<EventType>,
    /// `None` when the request left it out (no limit on create, unchanged
    /// on update); `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
    /// The delivery options document (SPEC §14) to store: `None` leaves it
    /// as it is, `Some(None)` removes it.
    pub options: Option<Option<String>>,
    /// The payload filter (SPEC §15) as compact JSON: `None` leaves it as
    /// it is, `Some(None)` removes it.
    pub filter: Option<Option<String>>,
    /// The ordering (SPEC §15, [`Endpoint::ordering`]): `None` leaves it
    /// as it is, `Some(None)` makes the endpoint unordered.
    pub ordering: Option<Option<String>>,
}

impl EndpointSpec {
    /// Reads `{"url", "status", "events", "rate_limit", "filter",
    /// "ordered", "ordering_key"}` from a request body's fields.
    /// Unknown fields (a `secret`, say) are ignored, as SPEC §1 requires;
    /// every problem names its field.
    pub fn from_fields(
        mut fields: serde_json::Map<String, serde_json::Value>,
        rules: &UrlRules,
        catalog: &Catalog,
    ) -> Result<Self, FieldError> {
        use serde_json::Value;

        let url = match fields.remove("url") {
            Some(Value::String(url)) => url,
            None | Some(Value::Null) => return Err(FieldError::new("url", "is required")),
            Some(_) => return Err(FieldError::new("url", "must be a string")),
        };
        let url = rules.normalise(&url)?;

        let status = match fields.remove("status") {
            None | Some(Value::Null) => None,
            Some(Value::String(status)) => Some(status.parse::<EndpointStatus>()?),
            Some(_) => {
                return Err(FieldError::new(
                    "status",
                    "must be \"enabled\" or \"disabled\"",
                ));
            }
        };

        let names = match fields.remove("events") {
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(name) => Ok(name),
                    _ => Err(FieldError::new("events", "every item must be a string")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None | Some(Value::Null) => return Err(FieldError::new("events", "is required")),
            Some(_) => {
                return Err(FieldError::new(
                    "events",
                    "must be an array of event type names",
                ));
            }
        };
        let rate_limit = match fields.remove("rate_limit") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::Number(number)) => match number.as_u64().map(u32::try_from) {
                Some(Ok(limit)) if (1..=MAX_RATE_LIMIT).contains(&limit) => Some(Some(limit)),
                _ => return Err(rate_limit_error()),
            },
            Some(_) => return Err(rate_limit_error()),
        };
        let filter = match fields.remove("filter") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(document) => {
                crate::Filter::parse(&document)?;
                Some(Some(document.to_string()))
            }
        };
        let ordering = crate::ordering::from_fields(
            fields.remove("ordered").as_ref(),
            fields.remove("ordering_key"),
        )?;
        Ok(EndpointSpec {
            url,
            status,
            events: parse_events(&names, catalog)?,
            rate_limit,
            options: None,
            filter,
            ordering,
        })
    }
}

fn rate_limit_error() -> FieldError {
    FieldError::new(
        "rate_limit",
        format!(
            "must be a whole number of deliveries per second from 1 to {MAX_RATE_LIMIT}, or null"
        ),
    )
}

/// A request field that failed validation; becomes a 40000 whose message
/// names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// The rules endpoint URLs are held to, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct UrlRules {
    /// Allow `http://` as well as `https://` (`require_https = false`).
    pub allow_http: bool,
    /// Refuses literal IPs in blocked ranges.
    pub addresses: AddressPolicy,
}

impl UrlRules {
    /// Checks an endpoint URL (SPEC §1 and §7). The host is not resolved:
    /// the receiver may not exist yet, and DNS may answer differently where
    /// webhookd runs; the delivery client checks resolved addresses.
    pub fn check(&self, raw: &str) -> Result<(), FieldError> {
        self.normalise(raw).map(|_| ())
    }

    /// [`UrlRules::check`], answering the URL as it is stored: normalised
    /// by the WHATWG rules (scheme and host lower-cased, a default port
    /// dropped, `.` segments resolved), so what is shown is what is called.
    /// Anything those rules would silently rewrite rather than read — white
    /// space (U+2028 included) or control characters anywhere, backslashes —
    /// is refused, not repaired.
    pub fn normalise(&self, raw: &str) -> Result<String, FieldError> {
        let fail = |message: String| Err(FieldError::new("url", message));
        if raw.is_empty() {
            return fail("is required".into());
        }
        if raw.len() > MAX_URL_LEN {
            return fail(format!(
                "is {} bytes, the limit is {MAX_URL_LEN}",
                raw.len()
            ));
        }
        if let Some(bad) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return fail(format!(
                "must not contain spaces or control characters (found {bad:?})"
            ));
        }
        if raw.contains('\\') {
            return fail("must not contain a backslash".into());
        }
        let url = match url::Url::parse(raw) {
            Ok(url) => url,
            Err(e) => return fail(format!("is not an absolute URL ({e})")),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return fail("must use https".into()),
            other => return fail(format!("must use https, not {other}")),
        }
        // RFC 3986: without `//` there is no authority, so no host. The
        // WHATWG parser would read `https:example.com` or `https:\\example.com`
        // as `https://example.com`; webhookd stores what it was given, so
        // it takes only the form every other tool reads the same way
        // (found by fuzzing).
        let after_scheme = &raw[url.scheme().len()..];
        if !after_scheme.starts_with("://") {
            return fail(format!("must start with {}://", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return fail("must not contain a user name or password".into());
        }
        if url.port() == Some(0) {
            return fail("must not use port 0".into());
        }
        let literal_ip = match url.host() {
            None => return fail("must have a host".into()),
            // RFC 1035: a name is at most 253 characters (255 octets on the
            // wire), each label at most 63; DNS could never resolve more.
            Some(url::Host::Domain(name)) if name.trim_end_matches('.').len() > 253 => {
                return fail("has a host name over 253 characters".into());
            }
            Some(url::Host::Domain(name)) if name.split('.').any(|label| label.len() > 63) => {
                return fail("has a host name label over 63 characters".into());
            }
            Some(url::Host::Domain(_)) => None,
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        };
        if let Some(Err(blocked)) = literal_ip.map(|ip| self.addresses.check(ip)) {
            return fail(format!("points to a forbidden address: {blocked}"));
        }
        let normalised: String = url.into();
        if normalised.len() > MAX_URL_LEN {
            return fail(format!(
                "is {} bytes once normalised (percent-encoded), the limit is {MAX_URL_LEN}",
                normalised.len()
            ));
        }
        Ok(normalised)
    }
}

/// Validates an `events` list: non-empty, every name in the catalog,
/// duplicates collapsed (first occurrence kept).
pub fn parse_events<S: AsRef<str>>(
    names: &[S],
    catalog: &Catalog,
) -> Result<Vec<EventType>, FieldError> {
    if names.is_empty() {
        return Err(FieldError::new(
            "events",
            "must list at least one event type",
        ));
    }
    let mut events = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        let known = EventType::new(name)
            .ok()
            .filter(|event_type| catalog.contains(event_type));
        let event_type = known.ok_or_else(|| {
            FieldError::new(
                "events",
                format!(
                    "{:?} is not a known event type (see GET /v2/events)",
                    truncate(name)
                ),
            )
        })?;
        if !events.contains(&event_type) {
            events.push(event_type);
        }
    }
    Ok(events)
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UrlRules {
        UrlRules::default()
    }

    #[test]
    fn https_urls_with_a_host_are_accepted() {
        for url in [
            "https://example.com/webhook",
            "https://example.com:8443/a/b?c=d",
            "https://93.184.216.34/hook",
            "https://[2606:4700::1111]/hook",
            "https://localhost/hook",
        ] {
            assert_eq!(strict().check(url), Ok(()), "{url}");
        }
    }

    /// Security round 3: URLs were stored verbatim, though SPEC §7 wants
    /// them parsed and stored normalised.
    #[test]
    fn urls_are_stored_normalised() {
        for (raw, stored) in [
            ("HTTPS://Example.COM:443/a/../b", "https://example.com/b"),
            ("https://example.com", "https://example.com/"),
            (
                "https://bücher.example/ä",
                "https://xn--bcher-kva.example/%C3%A4",
            ),
            (
                "https://example.com:8443/a?b=c#d",
                "https://example.com:8443/a?b=c#d",
            ),
        ] {
            assert_eq!(strict().normalise(raw).as_deref(), Ok(stored), "{raw}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let long_host = format!("https://{}.example.com/", vec!["a".repeat(60); 5].join("."));
        let long_label = format!("https://{}.example.com/", "a".repeat(64));
        let long_encoded = format!("https://example.com/{}", "ä".repeat(500));
        let cases = [
            ("", "is required"),
            ("example.com/webhook", "not an absolute URL"),
            ("/webhook", "not an absolute URL"),
            ("http://example.com/webhook", "must use https"),
            ("ftp://example.com/", "must use https, not ftp"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            (
                "https://127.0.0.1/hook",
                "forbidden address: 127.0.0.1 is a loopback address",
            ),
            ("https://169.254.169.254/latest", "link-local"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            ("https://[::1]:8443/", "loopback"),
            (" https://example.com/", "spaces"),
            (long.as_str(), "the limit is 2048"),
            ("https://example.com:0/hook", "port 0"),
            ("https:ample.com/webhook", "must start with https://"),
            ("https:\\\\example.com/webhook", "backslash"),
            ("https://example.com\\@evil.example/", "backslash"),
            ("https://example.com/a b", "spaces or control characters"),
            (
                "https://example.com/a\u{2028}b",
                "spaces or control characters",
            ),
            ("https://example.com/a\r\nb", "spaces or control characters"),
            ("https:/example.com/webhook", "must start with https://"),
            (long_host.as_str(), "over 253 characters"),
            (long_label.as_str(), "label over 63"),
            (long_encoded.as_str(), "once normalised"),
        ];
        for (url, reason) in cases {
            let error = strict().check(url).expect_err(url);
            assert_eq!(error.field, "url");
            assert!(error.message.contains(reason), "{url}: {error}");
        }
    }

    #[test]
    fn http_and_allowed_networks_are_operator_choices() {
        let rules = UrlRules {
            allow_http: true,
            addresses: AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]),
        };
        assert_eq!(rules.check("http://127.0.0.1:9000/hook"), Ok(()));
        assert!(rules.check("http://10.0.0.1/hook").is_err());
    }

    #[test]
    fn events_must_be_known_and_duplicates_collapse() {
        assert_eq!(
            parse_events(
                &[
                    "generated_video_success",
                    "generated_video_failed",
                    "generated_video_success"
                ],
                &Catalog::joggai()
            ),
            Ok(vec![
                EventType::GENERATED_VIDEO_SUCCESS,
                EventType::GENERATED_VIDEO_FAILED
            ])
        );
        assert_eq!(
            parse_events::<&str>(&[], &Catalog::joggai())
                .unwrap_err()
                .to_string(),
            "events: must list at least one event type"
        );
        assert!(
            parse_events(&["video_done"], &Catalog::joggai())
                .unwrap_err()
                .message
                .contains("\"video_done\"")
        );
    }

    #[test]
    fn status_is_enabled_or_disabled() {
        assert_eq!("enabled".parse(), Ok(EndpointStatus::Enabled));
        assert_eq!("disabled".parse(), Ok(EndpointStatus::Disabled));
        assert_eq!(
            "paused".parse::<EndpointStatus>().unwrap_err().to_string(),
            "status: must be \"enabled\" or \"disabled\", not \"paused\""
        );
    }

    #[test]
    fn disabled_endpoints_and_other_event_types_get_nothing() {
        let mut endpoint = Endpoint {
            ordering: None,
            filter: None,
            endpoint_id: "wh_1".into(),
            url: "https://example.com/".into(),
            secret: "whsec_x".into(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GENERATED_VIDEO_SUCCESS],
            username: "u".into(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            quota_refused: 0,
            disabled_reason: None,
            rate_limit: None,
            options: None,
        };
        assert!(endpoint.wants(&EventType::GENERATED_VIDEO_SUCCESS));
        assert!(!endpoint.wants(&EventType::GENERATED_VIDEO_FAILED));
        endpoint.status = EndpointStatus::Disabled;
        assert!(!endpoint.wants(&EventType::GENERATED_VIDEO_SUCCESS));
    }
}
