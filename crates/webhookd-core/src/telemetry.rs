//! Every metric webhookd exports: names, labels and the only functions that
//! record them. docs/metrics.md describes each one; the Grafana dashboard and
//! the alert rules query exactly these names.
//!
//! Labels are closed sets (sources, outcomes, reason codes, routes, status
//! classes) — never a URL, an id, a user name or a raw status code — so the
//! number of series stays bounded whatever the traffic.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// The `tracing` target of the spans exported over OpenTelemetry (SPEC
/// §15): only the exporter's layer wants them, so without it they are
/// never built.
pub const SPAN_TARGET: &str = "webhookd_span";

pub const EVENTS_RECEIVED: &str = "webhookd_events_received_total";
pub const EVENTS_REJECTED: &str = "webhookd_events_rejected_total";
pub const DELIVERY_ATTEMPTS: &str = "webhookd_delivery_attempts_total";
pub const DELIVERIES_FINISHED: &str = "webhookd_deliveries_finished_total";
pub const ATTEMPT_DURATION: &str = "webhookd_delivery_attempt_duration_seconds";
pub const DELIVERY_LAG: &str = "webhookd_delivery_lag_seconds";
pub const ATTEMPTS_IN_FLIGHT: &str = "webhookd_delivery_attempts_in_flight";
pub const BACKLOG: &str = "webhookd_delivery_backlog";
pub const DEAD_DELIVERIES: &str = "webhookd_deliveries_dead";
pub const AMQP_CONNECTED: &str = "webhookd_amqp_connected";
pub const AMQP_QUEUE_MESSAGES: &str = "webhookd_amqp_queue_messages";
pub const STORE_DURATION: &str = "webhookd_store_operation_duration_seconds";
pub const STORE_ERRORS: &str = "webhookd_store_errors_total";
pub const API_REQUESTS: &str = "webhookd_api_requests_total";
pub const API_DURATION: &str = "webhookd_api_request_duration_seconds";
pub const AUTH_FAILURES: &str = "webhookd_auth_failures_total";
pub const ENDPOINTS_AUTO_DISABLED: &str = "webhookd_endpoints_auto_disabled_total";
pub const BUILD_INFO: &str = "webhookd_build_info";
pub const LISTENER_REFUSED: &str = "webhookd_listener_refused_total";
pub const QUOTA_REFUSED: &str = "webhookd_quota_refused_total";
pub const CLIENT_CERT_EXPIRY: &str = "webhookd_client_certificate_expiry_timestamp_seconds";
pub const OPERATOR_EVENTS_SENT: &str = "webhookd_operator_events_sent_total";
pub const OPERATOR_EVENT_FAILURES: &str = "webhookd_operator_event_send_failures_total";

/// A per-tenant quota (SPEC §11), as metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    TestSends,
    /// A delivery not created: its endpoint held its kept deliveries.
    KeptDeliveries,
    /// An event refused: its owner's events for the day were used up.
    EventsPerDay,
}

impl Quota {
    pub const ALL: [Quota; 3] = [Quota::TestSends, Quota::KeptDeliveries, Quota::EventsPerDay];

    pub const fn as_str(self) -> &'static str {
        match self {
            Quota::TestSends => "test_sends_per_minute",
            Quota::KeptDeliveries => "max_kept_deliveries_per_endpoint",
            Quota::EventsPerDay => "max_events_per_day",
        }
    }
}

/// Why the listener turned a client connection (or request) away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRefusal {
    /// Its address already held `max_connections_per_ip` connections (or,
    /// behind a trusted proxy, requests in flight).
    PerIp,
    /// An idle keep-alive connection closed to make room near
    /// `max_connections`.
    IdleEvicted,
}

impl ListenerRefusal {
    pub const ALL: [ListenerRefusal; 2] = [ListenerRefusal::PerIp, ListenerRefusal::IdleEvicted];

    pub const fn as_str(self) -> &'static str {
        match self {
            ListenerRefusal::PerIp => "per_ip",
            ListenerRefusal::IdleEvicted => "idle_evicted",
        }
    }
}

/// Histogram buckets, 1 ms to 30 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Amqp,
    Http,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Amqp, Source::Http];

    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Amqp => "amqp",
            Source::Http => "http",
        }
    }
}

/// What became of a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Fanned out to at least one endpoint.
    Accepted,
    Invalid,
    Duplicate,
    /// Valid, but no enabled endpoint of its owner subscribes to it.
    NoSubscribers,
    /// Refused: its owner's events for the day were used up (SPEC §11).
    OverQuota,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 5] = [
        EventOutcome::Accepted,
        EventOutcome::Invalid,
        EventOutcome::Duplicate,
        EventOutcome::NoSubscribers,
        EventOutcome::OverQuota,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Accepted => "accepted",
            EventOutcome::Invalid => "invalid",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::NoSubscribers => "no_subscribers",
            EventOutcome::OverQuota => "over_quota",
        }
    }
}

/// What an attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Dead,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 3] = [
        AttemptOutcome::Delivered,
        AttemptOutcome::Retry,
        AttemptOutcome::Dead,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// Describes every metric and creates the series with known label sets at
/// zero, so dashboards and alerts see them before the first event.
pub fn register(version: &'static str, rejection_codes: &[&'static str]) {
    describe_counter!(EVENTS_RECEIVED, "Events received, by source and outcome.");
    describe_counter!(EVENTS_REJECTED, "Invalid events, by source and reason.");
    describe_counter!(
        DELIVERY_ATTEMPTS,
        "Delivery attempts, by outcome and reason."
    );
    describe_counter!(
        DELIVERIES_FINISHED,
        "Deliveries that ended, delivered or dead."
    );
    describe_histogram!(
        ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Duration of one attempt, by outcome."
    );
    describe_histogram!(
        DELIVERY_LAG,
        metrics::Unit::Seconds,
        "From acceptance of the event to its 2xx."
    );
    describe_gauge!(ATTEMPTS_IN_FLIGHT, "Attempts in flight now.");
    describe_gauge!(BACKLOG, "Pending deliveries: due now, or scheduled later.");
    describe_gauge!(DEAD_DELIVERIES, "Dead deliveries kept in the store.");
    describe_gauge!(
        AMQP_CONNECTED,
        "1 while the RabbitMQ consumer is connected."
    );
    describe_gauge!(
        AMQP_QUEUE_MESSAGES,
        "Messages waiting in the consumed queue and its dead-letter queue."
    );
    describe_histogram!(
        STORE_DURATION,
        metrics::Unit::Seconds,
        "Store operation latency, by operation."
    );
    describe_counter!(
        STORE_ERRORS,
        "Store operations that failed, by operation and kind."
    );
    describe_counter!(
        API_REQUESTS,
        "HTTP requests, by route, method and status class."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Requests refused for a missing or wrong credential, by credential."
    );
    describe_counter!(
        ENDPOINTS_AUTO_DISABLED,
        "Endpoints disabled by webhookd after failing for auto_disable_after."
    );
    counter!(ENDPOINTS_AUTO_DISABLED).absolute(0);
    describe_counter!(
        LISTENER_REFUSED,
        "Client connections the listener turned away or closed early, by reason."
    );
    for reason in ListenerRefusal::ALL {
        counter!(LISTENER_REFUSED, "reason" => reason.as_str()).absolute(0);
    }
    describe_counter!(
        QUOTA_REFUSED,
        "Requests, events or deliveries refused by a per-tenant quota, by quota."
    );
    for quota in Quota::ALL {
        counter!(QUOTA_REFUSED, "quota" => quota.as_str()).absolute(0);
    }
    for credential in Credential::ALL {
        counter!(AUTH_FAILURES, "credential" => credential.as_str()).absolute(0);
    }
    describe_histogram!(
        API_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by route."
    );
    register_operator_events();
    describe_gauge!(
        CLIENT_CERT_EXPIRY,
        "When the soonest-expiring client certificate this process presents (mTLS, SPEC §14) expires, unix seconds; +Inf while none."
    );
    gauge!(CLIENT_CERT_EXPIRY).set(f64::INFINITY);
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which webhookd runs."
    );

    gauge!(BUILD_INFO, "version" => version).set(1.0);
    for source in Source::ALL {
        for outcome in EventOutcome::ALL {
            counter!(EVENTS_RECEIVED, "source" => source.as_str(), "outcome" => outcome.as_str())
                .absolute(0);
        }
        for &reason in rejection_codes {
            counter!(EVENTS_REJECTED, "source" => source.as_str(), "reason" => reason).absolute(0);
        }
    }
    for result in ["delivered", "dead"] {
        counter!(DELIVERIES_FINISHED, "result" => result).absolute(0);
    }
    counter!(DELIVERY_ATTEMPTS, "outcome" => "delivered", "reason" => "ok").absolute(0);
    gauge!(ATTEMPTS_IN_FLIGHT).set(0.0);
}

pub fn event_received(source: Source, outcome: EventOutcome) {
    counter!(EVENTS_RECEIVED, "source" => source.as_str(), "outcome" => outcome.as_str())
        .increment(1);
}

pub fn event_rejected(source: Source, reason: &'static str) {
    event_received(source, EventOutcome::Invalid);
    counter!(EVENTS_REJECTED, "source" => source.as_str(), "reason" => reason).increment(1);
}

/// One finished attempt; `reason` is a delivery reason code.
pub fn attempt_finished(outcome: AttemptOutcome, reason: &'static str, duration: Duration) {
    counter!(DELIVERY_ATTEMPTS, "outcome" => outcome.as_str(), "reason" => reason).increment(1);
    histogram!(ATTEMPT_DURATION, "outcome" => outcome.as_str()).record(duration.as_secs_f64());
    let finished = match outcome {
        AttemptOutcome::Delivered => Some("delivered"),
        AttemptOutcome::Dead => Some("dead"),
        AttemptOutcome::Retry => None,
    };
    if let Some(result) = finished {
        counter!(DELIVERIES_FINISHED, "result" => result).increment(1);
    }
}

pub fn delivered_after(lag: Duration) {
    histogram!(DELIVERY_LAG).record(lag.as_secs_f64());
}

/// The soonest expiry (unix seconds) among the client certificates in use.
pub fn client_certificate_expiry(soonest: i64) {
    #[allow(clippy::cast_precision_loss)] // unix seconds fit an f64 exactly
    gauge!(CLIENT_CERT_EXPIRY).set(soonest as f64);
}

pub fn attempts_in_flight(change: f64) {
    gauge!(ATTEMPTS_IN_FLIGHT).increment(change);
}

pub fn backlog(due: u64, scheduled: u64, dead: u64) {
    #[allow(clippy::cast_precision_loss)] // gauges are f64; counts this large are fine approximated
    {
        gauge!(BACKLOG, "state" => "due").set(due as f64);
        gauge!(BACKLOG, "state" => "scheduled").set(scheduled as f64);
        gauge!(DEAD_DELIVERIES).set(dead as f64);
    }
}

pub fn amqp_connected(connected: bool) {
    gauge!(AMQP_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

pub fn amqp_queue_messages(queue: &'static str, messages: u32) {
    gauge!(AMQP_QUEUE_MESSAGES, "queue" => queue).set(f64::from(messages));
}

/// Creates the error series of a store operation at zero, so error-rate
/// panels and alerts have a series before the first failure.
pub fn store_operation_known(operation: &'static str) {
    for kind in ["unavailable", "failed"] {
        counter!(STORE_ERRORS, "operation" => operation, "kind" => kind).absolute(0);
    }
}

/// `kind` is `None` for success, else `unavailable`, `failed` or `corrupt`.
pub fn store_operation(
    operation: &'static str,
    duration: Duration,
    error_kind: Option<&'static str>,
) {
    histogram!(STORE_DURATION, "operation" => operation).record(duration.as_secs_f64());
    if let Some(kind) = error_kind {
        counter!(STORE_ERRORS, "operation" => operation, "kind" => kind).increment(1);
    }
}

/// `route` is the matched route template (or `unmatched`), `method` one
/// of [`http_method_label`]'s closed set, `status` the class (`2xx` …
/// `5xx`): nothing a client sends becomes a label of its own.
pub fn api_request(route: String, method: &'static str, status: &'static str, duration: Duration) {
    counter!(API_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    histogram!(API_DURATION, "route" => route).record(duration.as_secs_f64());
}

/// The metric label of an HTTP method: the standard ones by name, anything
/// else `other` (a client can send any token as a method).
pub fn http_method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// A credential a request can present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `x-api-key` on the management API.
    ApiKey,
    /// The bearer token of `POST /internal/events`.
    IngestToken,
    /// The bearer token of the admin API (`/internal/users`, …).
    AdminToken,
    /// A portal link's token, presented in `x-api-key` (SPEC §9).
    PortalLink,
}

impl Credential {
    pub const ALL: [Credential; 4] = [
        Credential::ApiKey,
        Credential::IngestToken,
        Credential::AdminToken,
        Credential::PortalLink,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Credential::ApiKey => "api_key",
            Credential::IngestToken => "ingest_token",
            Credential::AdminToken => "admin_token",
            Credential::PortalLink => "portal_link",
        }
    }
}

pub fn endpoint_auto_disabled() {
    counter!(ENDPOINTS_AUTO_DISABLED).increment(1);
}

/// The operator events' metrics (SPEC §15), each series at zero.
fn register_operator_events() {
    describe_counter!(
        OPERATOR_EVENTS_SENT,
        "Operator events sent on to every target and out of the outbox (SPEC §15), by type."
    );
    for kind in crate::operator::OperatorEventKind::ALL {
        counter!(OPERATOR_EVENTS_SENT, "type" => kind.as_str()).absolute(0);
    }
    describe_counter!(
        OPERATOR_EVENT_FAILURES,
        "Rounds of sending operator events on that failed, by what failed: the events wait in the outbox."
    );
    for target in OPERATOR_TARGETS {
        counter!(OPERATOR_EVENT_FAILURES, "target" => target).absolute(0);
    }
}

/// What [`operator_event_failed`] names: the broker of an `amqp` target,
/// the `webhook` targets' accept, or the `store`'s outbox.
pub const OPERATOR_TARGETS: [&str; 3] = ["amqp", "webhook", "store"];

/// An operator event of type `kind` left the outbox, sent to every target.
pub fn operator_event_sent(kind: &str) {
    if let Some(kind) = crate::operator::OperatorEventKind::ALL
        .iter()
        .find(|known| known.as_str() == kind)
    {
        counter!(OPERATOR_EVENTS_SENT, "type" => kind.as_str()).increment(1);
    }
}

/// A round of sending operator events on failed at `target`
/// ([`OPERATOR_TARGETS`]).
pub fn operator_event_failed(target: &'static str) {
    counter!(OPERATOR_EVENT_FAILURES, "target" => target).increment(1);
}

pub fn quota_refused(quota: Quota) {
    counter!(QUOTA_REFUSED, "quota" => quota.as_str()).increment(1);
}

pub fn listener_refused(reason: ListenerRefusal) {
    counter!(LISTENER_REFUSED, "reason" => reason.as_str()).increment(1);
}

pub fn auth_failed(credential: Credential) {
    counter!(AUTH_FAILURES, "credential" => credential.as_str()).increment(1);
}
