//! Operator events (SPEC §15): what an operator must act on, published to
//! the targets of `operator_events` (`WEBHOOKD_OPERATOR_EVENTS`) as JSON
//! `{"type", "timestamp", "data"}`.
//!
//! The stores record them in an outbox in the same step as what they tell
//! (an endpoint disabled, a delivery dead, a quota reached as an event is
//! accepted); the operator-events task in `webhookd-ingest` sends the
//! outbox on and clears what every target took, so each is published at
//! least once. An https target receives them as the deliveries of the
//! reserved user [`OPERATOR_USERNAME`]: signed, retried and SSRF-guarded like
//! any delivery, and visible in the portal of that user.

use serde_json::{Value, json};

/// The user whose endpoints are the https targets (docs/operations.md,
/// "Operator events"). Its events' bodies are `{"type", "timestamp",
/// "data"}` ([`crate::Event::body`]).
pub const OPERATOR_USERNAME: &str = "webhookd-operator";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorEventKind {
    /// webhookd disabled an endpoint after its failure streak (SPEC §8).
    EndpointDisabled,
    /// A delivery used up its retry schedule (SPEC §4).
    DeliveryDead,
    /// A tenant reached one of its quotas (SPEC §11).
    QuotaReached,
    /// An endpoint's client certificate expires within 14 days (SPEC §14).
    CertificateExpiring,
    /// An invalid message went to the dead-letter queue (SPEC §5).
    IngestDeadLettered,
}

impl OperatorEventKind {
    pub const ALL: [OperatorEventKind; 5] = [
        OperatorEventKind::EndpointDisabled,
        OperatorEventKind::DeliveryDead,
        OperatorEventKind::QuotaReached,
        OperatorEventKind::CertificateExpiring,
        OperatorEventKind::IngestDeadLettered,
    ];

    /// Its `type`, also the AMQP routing key.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperatorEventKind::EndpointDisabled => "endpoint.disabled",
            OperatorEventKind::DeliveryDead => "delivery.dead",
            OperatorEventKind::QuotaReached => "quota.reached",
            OperatorEventKind::CertificateExpiring => "certificate.expiring",
            OperatorEventKind::IngestDeadLettered => "ingest.dead_lettered",
        }
    }
}

/// How long before its client certificate expires an endpoint is reported.
pub const CERTIFICATE_NOTICE_DAYS: i64 = 14;

/// One operator event as the outbox keeps it: `{"id", "type", "timestamp",
/// "data"}`. The id is the same for every record of one occurrence, so a
/// target sees a repeat as such (the https targets' event id, the AMQP
/// `message_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorEvent {
    pub id: String,
    pub kind: String,
    /// Unix seconds.
    pub timestamp: i64,
    pub data: Value,
}

impl OperatorEvent {
    pub fn new(id: String, kind: OperatorEventKind, timestamp: i64, data: Value) -> Self {
        OperatorEvent {
            id,
            kind: kind.as_str().to_owned(),
            timestamp,
            data,
        }
    }

    /// The outbox record.
    pub fn to_record(&self) -> String {
        json!({"id": self.id, "type": self.kind, "timestamp": self.timestamp, "data": self.data})
            .to_string()
    }

    /// Reads an outbox record; `None` for one that is not (it is dropped
    /// with a log line, never retried forever).
    pub fn from_record(record: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(record).ok()?;
        Some(OperatorEvent {
            id: value.get("id")?.as_str()?.to_owned(),
            kind: value.get("type")?.as_str()?.to_owned(),
            timestamp: value.get("timestamp")?.as_i64()?,
            data: value.get("data")?.clone(),
        })
    }

    /// What a target receives: `{"type", "timestamp", "data"}`.
    pub fn published(&self) -> String {
        json!({"type": self.kind, "timestamp": self.timestamp, "data": self.data}).to_string()
    }
}

/// Where operator events go (`operator_events`, comma-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorTarget {
    /// `amqp://…/<exchange>`: a durable topic exchange, declared by
    /// webhookd; the routing key is the event's type.
    Amqp {
        /// The broker URL without the exchange (its vhost, if any, kept).
        url: String,
        exchange: String,
    },
    /// `https://…`: an endpoint of [`OPERATOR_USERNAME`].
    Webhook { url: String },
}

impl OperatorTarget {
    /// Parses `operator_events`: empty means none.
    pub fn parse_list(text: &str) -> Result<Vec<OperatorTarget>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(OperatorTarget::parse)
            .collect()
    }

    fn parse(text: &str) -> Result<OperatorTarget, String> {
        let refused = || {
            format!(
                "{:?} is not an operator event target: amqp://user:password@host:port/vhost/exchange \
                 or https://host/path",
                crate::config::redact_url(text)
            )
        };
        let url = url::Url::parse(text).map_err(|_| refused())?;
        match url.scheme() {
            "amqp" | "amqps" => {
                let path = url.path().trim_start_matches('/');
                let (vhost, exchange) = match path.rsplit_once('/') {
                    Some((vhost, exchange)) => (Some(vhost), exchange),
                    None => (None, path),
                };
                let exchange = percent_encoding::percent_decode_str(exchange)
                    .decode_utf8()
                    .map_err(|_| refused())?
                    .into_owned();
                if exchange.is_empty() || exchange.starts_with("amq.") {
                    return Err(format!(
                        "{}: name the exchange at the end of the path, e.g. \
                         amqp://guest:guest@127.0.0.1:5672/%2f/webhookd.operator (not amq.*)",
                        crate::config::redact_url(text)
                    ));
                }
                let mut broker = url.clone();
                broker.set_path(vhost.unwrap_or_default());
                Ok(OperatorTarget::Amqp {
                    url: broker.to_string(),
                    exchange,
                })
            }
            "https" | "http" if url.host_str().is_some() => Ok(OperatorTarget::Webhook {
                url: text.to_owned(),
            }),
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_the_list() {
        let targets = OperatorTarget::parse_list(
            " amqp://guest:guest@127.0.0.1:5672/%2f/webhookd.operator , https://ops.example.com/hook,",
        )
        .unwrap();
        assert_eq!(
            targets,
            [
                OperatorTarget::Amqp {
                    url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                    exchange: "webhookd.operator".into()
                },
                OperatorTarget::Webhook {
                    url: "https://ops.example.com/hook".into()
                },
            ]
        );
        assert_eq!(
            OperatorTarget::parse_list("amqp://h/ops").unwrap(),
            [OperatorTarget::Amqp {
                url: "amqp://h".into(),
                exchange: "ops".into()
            }]
        );
        assert!(OperatorTarget::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bad_targets_say_what_is_expected_without_the_password() {
        for bad in [
            "ftp://x/y",
            "amqp://u:secret@h:5672/",
            "amqp://h/amq.topic",
            "nonsense",
        ] {
            let error = OperatorTarget::parse_list(bad).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
            assert!(
                error.contains("exchange") || error.contains("https://"),
                "{error}"
            );
        }
    }

    #[test]
    fn records_keep_the_id_and_publish_type_timestamp_and_data() {
        let event = OperatorEvent::new(
            "op_1".into(),
            OperatorEventKind::DeliveryDead,
            1_700_000_000,
            json!({"delivery_id": "dlv_1"}),
        );
        let record = event.to_record();
        assert_eq!(OperatorEvent::from_record(&record), Some(event.clone()));
        let published: Value = serde_json::from_str(&event.published()).unwrap();
        assert_eq!(
            published,
            json!({"type": "delivery.dead", "timestamp": 1_700_000_000, "data": {"delivery_id": "dlv_1"}})
        );
        assert_eq!(OperatorEvent::from_record("{}"), None);
    }
}
