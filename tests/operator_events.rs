//! Operator events end to end (SPEC §15), on both stores: a tenant's
//! deliveries die and its endpoint is disabled, its daily quota is reached,
//! an invalid message is dead-lettered, a client certificate is about to
//! expire — and each reaches both targets of `WEBHOOKD_OPERATOR_EVENTS`: a
//! RabbitMQ exchange (routed by type, `message_id` = the event's id) and an
//! https-style webhook (a delivery of the user `webhookd-operator`, signed
//! with its endpoint's secret) — as `{"type", "timestamp", "data"}`.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhookd_testkit::receiver::{Answer, Receiver, signature_is_valid};
use webhookd_testkit::{Service, amqp, require};

mod support;
use support::*;

const INGEST_TOKEN: &str = "operator-events-test-token";

/// The calendar date `days` from now (UTC), for a certificate's end.
fn date_in(days: i64) -> (i32, u8, u8) {
    // Howard Hinnant's civil_from_days.
    let z = webhookd_core::time::unix_seconds().div_euclid(86_400) + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap(),
        u8::try_from(month).unwrap(),
        u8::try_from(day).unwrap(),
    )
}

fn expiring_certificate(days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["webhookd.example".into()]).unwrap();
    let (year, month, day) = date_in(days);
    params.not_after = rcgen::date_time_ymd(year, month, day);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn command(store: &str, amqp_url: &str, ingest_queue: &str) -> std::process::Command {
    let mut command = webhookd(store);
    command
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_INGEST_TOKEN", INGEST_TOKEN)
        .env("WEBHOOKD_AMQP_URL", amqp_url)
        .env("WEBHOOKD_AMQP_QUEUE", ingest_queue)
        .env("WEBHOOKD_RETRY_SCHEDULE", "1s")
        .env("WEBHOOKD_AUTO_DISABLE_AFTER", "1s")
        .env("WEBHOOKD_MAX_EVENTS_PER_USER_PER_DAY", "2")
        .env("WEBHOOKD_TEST_SENDS_PER_MINUTE", "1");
    command
}

fn post(base: &str, key: &str, path: &str, body: &Value) -> Value {
    reqwest::blocking::Client::new()
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn ingest(base: &str, event_id: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("{base}/internal/events"))
        .bearer_auth(INGEST_TOKEN)
        .body(
            json!({"event": "generated_video_success", "username": "tenant",
                   "event_id": event_id, "data": {}})
            .to_string(),
        )
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Deletes the test's queues and exchange, also when it fails.
struct Cleanup {
    amqp_url: String,
    queues: Vec<String>,
    exchange: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let queues: Vec<&str> = self.queues.iter().map(String::as_str).collect();
        runtime.block_on(amqp::delete_queues(&self.amqp_url, &queues));
        runtime.block_on(amqp::delete_exchange(&self.amqp_url, &self.exchange));
    }
}

const EXPECTED: [&str; 5] = [
    "certificate.expiring",
    "delivery.dead",
    "endpoint.disabled",
    "ingest.dead_lettered",
    "quota.reached",
];

/// Before operator events are on: a tenant, an endpoint that fails, and
/// one whose client certificate expires in five days. The tenant's key and
/// the failing endpoint's id.
fn set_up_tenant(
    store: &str,
    amqp_url: &str,
    ingest_queue: &str,
    failing: &Receiver,
) -> (String, String) {
    let key = add_user(store, "tenant");
    {
        let setup = Server::start_with(command(store, amqp_url, ingest_queue));
        let created = post(
            &setup.base,
            &key,
            "/v2/endpoint",
            &json!({"url": format!("{}/tenant", failing.url), "events": ["generated_video_success"]}),
        );
        assert_eq!(created["code"], 0, "{created}");
        let (cert, cert_key) = expiring_certificate(5);
        let expiring = post(
            &setup.base,
            &key,
            "/v2/endpoint",
            &json!({"url": format!("{}/mtls", failing.url), "events": ["generated_avatar_video_success"],
                    "client_cert": cert, "client_key": cert_key}),
        );
        assert_eq!(expiring["code"], 0, "{expiring}");
        let id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();
        (key, id)
    }
}

/// At the webhook: the same events, signed with the operator endpoint's
/// secret, the id as webhook-id.
fn assert_the_webhook_got(
    store: &str,
    server: &Server,
    operator: &Receiver,
    by_id: &HashMap<String, Value>,
) {
    let operator_key = add_user(store, "webhookd-operator");
    let endpoints: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/endpoints", server.base))
        .header("x-api-key", &operator_key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let target = &endpoints["data"]["endpoints"][0];
    assert_eq!(
        target["url"],
        format!("{}/ops", operator.url),
        "{endpoints}"
    );
    let secret = target["secret"].as_str().unwrap();
    // (A second delivery.dead may still be on its way to either.)
    let received = operator.received();
    let mut delivered: HashMap<String, Value> = HashMap::new();
    for request in &received {
        assert!(signature_is_valid(request, secret));
        let id = request.headers["webhook-id"].to_str().unwrap().to_owned();
        delivered.insert(id, serde_json::from_slice(&request.body).unwrap());
    }
    for (id, body) in by_id {
        assert_eq!(delivered.get(id), Some(body), "{id} at the webhook");
    }
}

/// Counted as sent, by type.
fn assert_counted_as_sent(server: &Server) {
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.base))
        .unwrap()
        .text()
        .unwrap();
    let sent = |kind: &str| -> f64 {
        metrics
            .lines()
            .find(|line| {
                line.starts_with(&format!(
                    "webhookd_operator_events_sent_total{{type=\"{kind}\"}}"
                ))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or_default()
    };
    assert!(sent("quota.reached") >= 2.0, "{metrics}");
    assert!(sent("ingest.dead_lettered") >= 1.0, "{metrics}");
}

/// What the watched queue got once every kind arrived (and both quotas),
/// and the webhook got as many: up to a minute.
fn wait_for_everything(
    runtime: &tokio::runtime::Runtime,
    amqp_url: &str,
    watched: &str,
    operator: &Receiver,
) -> Vec<amqp::Received> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published: Vec<amqp::Received> = Vec::new();
    let types = |published: &[amqp::Received]| -> BTreeSet<String> {
        published.iter().map(|m| m.routing_key.clone()).collect()
    };
    let quotas = |published: &[amqp::Received]| {
        published
            .iter()
            .filter(|m| m.routing_key == "quota.reached")
            .count()
    };
    while (types(&published).len() < EXPECTED.len()
        || quotas(&published) < 2
        || operator.count() < published.len())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        published.extend(runtime.block_on(amqp::take_all(amqp_url, watched)));
    }
    published
}

fn operator_events_reach_both_targets(store: &str) {
    let Some(amqp_url) = require(Service::RabbitMq) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let failing = runtime.block_on(Receiver::start(Answer::Status(500)));
    let operator = runtime.block_on(Receiver::start(Answer::Status(200)));
    let exchange = amqp::unique_queue("operator-exchange");
    let watched = amqp::unique_queue("operator-watch");
    let ingest_queue = amqp::unique_queue("operator-ingest");
    runtime.block_on(amqp::bind_to_exchange(&amqp_url, &exchange, &watched));
    let _cleanup = Cleanup {
        amqp_url: amqp_url.clone(),
        queues: vec![
            watched.clone(),
            ingest_queue.clone(),
            format!("{ingest_queue}.dead"),
        ],
        exchange: exchange.clone(),
    };

    let (key, endpoint_id) = set_up_tenant(store, &amqp_url, &ingest_queue, &failing);

    let mut with_targets = command(store, &amqp_url, &ingest_queue);
    with_targets.env(
        "WEBHOOKD_OPERATOR_EVENTS",
        format!("{amqp_url}/{exchange},{}/ops", operator.url),
    );
    let server = Server::start_with(with_targets);
    // Two events go (and die; the streak disables the endpoint), the
    // third is past the daily quota.
    assert_eq!(ingest(&server.base, "evt_1"), 202);
    assert_eq!(ingest(&server.base, "evt_2"), 202);
    assert_eq!(ingest(&server.base, "evt_3"), 429);
    // One test send a minute: the second is refused.
    let test = format!("/v2/endpoint/{endpoint_id}/test");
    assert_eq!(post(&server.base, &key, &test, &json!({}))["code"], 0);
    assert_eq!(post(&server.base, &key, &test, &json!({}))["code"], 10429);
    runtime.block_on(amqp::publish(
        &amqp_url,
        &ingest_queue,
        [b"not json".as_slice()],
    ));

    let published = wait_for_everything(&runtime, &amqp_url, &watched, &operator);
    let types = |published: &[amqp::Received]| -> BTreeSet<String> {
        published.iter().map(|m| m.routing_key.clone()).collect()
    };
    assert_eq!(
        types(&published)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        EXPECTED,
        "{published:?}"
    );

    // On the exchange: routed by type, the id as message_id, the body
    // {"type", "timestamp", "data"}.
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for message in &published {
        let body: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["type"], message.routing_key.as_str(), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        assert!(body["timestamp"].as_i64().unwrap() > 1_700_000_000);
        by_id.insert(message.message_id.clone().unwrap(), body);
    }
    let of = |kind: &str| -> Vec<&Value> {
        by_id.values().filter(|body| body["type"] == kind).collect()
    };
    // The first death's retry may disable the endpoint before the second
    // delivery's last attempt: that one then waits, parked, undead.
    let dead = of("delivery.dead");
    assert!(!dead.is_empty(), "{by_id:?}");
    assert_eq!(dead[0]["data"]["username"], "tenant");
    assert_eq!(dead[0]["data"]["attempts"], 2);
    assert_eq!(of("endpoint.disabled").len(), 1);
    let quota: HashMap<&str, &Value> = of("quota.reached")
        .into_iter()
        .map(|body| (body["data"]["quota"].as_str().unwrap(), body))
        .collect();
    assert_eq!(quota.len(), 2, "{quota:?}");
    assert_eq!(quota["max_events_per_day"]["data"]["limit"], 2);
    assert_eq!(
        quota["test_sends_per_minute"]["data"]["endpoint_id"],
        endpoint_id.as_str()
    );
    assert_eq!(of("ingest.dead_lettered")[0]["data"]["code"], "not_json");
    let expiring = of("certificate.expiring");
    assert_eq!(expiring.len(), 1);
    assert!(
        expiring[0]["data"]["client_cert_expires_at"]
            .as_i64()
            .unwrap()
            < webhookd_core::time::unix_seconds() + 6 * 86_400
    );

    assert_the_webhook_got(store, &server, &operator, &by_id);

    assert_counted_as_sent(&server);
}

#[test]
fn operator_events_reach_an_exchange_and_a_webhook_on_redis() {
    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    operator_events_reach_both_targets(&redis_url);
}

#[test]
fn operator_events_reach_an_exchange_and_a_webhook_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    operator_events_reach_both_targets(&sqlite_store(&dir));
}

/// A target webhookd could never send to stops the start, naming the
/// setting: a bad URL, or a literal address the SSRF guard blocks.
#[test]
fn an_unusable_target_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    for (target, says) in [
        (
            "https://10.1.2.3/hook",
            "operator_events: https://10.1.2.3/hook",
        ),
        ("ftp://ops.example.com/x", "WEBHOOKD_OPERATOR_EVENTS"),
    ] {
        let mut command = webhookd(&store);
        command
            .args(["serve", "--create"])
            .env("WEBHOOKD_OPERATOR_EVENTS", target);
        let output = run(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{target}: {stderr}");
        assert!(stderr.contains(says), "{target}: {stderr}");
    }
}
