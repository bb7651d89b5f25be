//! SPEC §8, end to end: an endpoint that keeps failing is disabled by
//! webhookd with a reason after `WEBHOOKD_AUTO_DISABLE_AFTER`, its pending
//! deliveries stop (kept, not dead), and enabling it again resumes them.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, add_user, sqlite_store, webhookd};
use webhookd_testkit::receiver::{Answer, Receiver};

// One scenario, read top to bottom; splitting it would hide the story.
#[allow(clippy::too_many_lines)]
#[test]
fn a_failing_endpoint_is_disabled_then_resumes_once_enabled() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(500)));
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_AUTO_DISABLE_AFTER", "3s")
        .env(
            "WEBHOOKD_RETRY_SCHEDULE",
            "500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms",
        );
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    let body = json!({"url": receiver.url, "events": ["generated_video_success"]});
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let endpoint_id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let response = client
            .post(format!("{}/internal/events", server.base))
            .bearer_auth(token)
            .body(format!(
                r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_ad_{i}","data":{{}}}}"#
            ))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let endpoint = || -> Value {
        let listed: Value = client
            .get(format!("{}/v2/endpoints", server.base))
            .header("x-api-key", &key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        listed["data"]["endpoints"][0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let disabled = loop {
        let current = endpoint();
        if current["status"] == "disabled" {
            break current;
        }
        assert!(Instant::now() < deadline, "never disabled: {current}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let failing_since = disabled["failing_since"].as_i64().unwrap();
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains(&failing_since.to_string()), "{reason}");

    // Its deliveries stop, and wait (pending, not dead). The record that
    // disabled it can land while another of its deliveries is already on
    // the wire (claimed before the endpoint was disabled): that attempt
    // may reach the receiver after the status reads disabled. So count
    // once every attempt sent is recorded — then nothing more may come.
    let pending = || -> Vec<Value> {
        let listed: Value = client
            .get(format!(
                "{}/v2/endpoint/{endpoint_id}/deliveries?status=pending",
                server.base
            ))
            .header("x-api-key", &key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        listed["data"]["deliveries"].as_array().unwrap().clone()
    };
    let recorded = |deliveries: &[Value]| -> usize {
        deliveries
            .iter()
            .map(|delivery| delivery["attempts"].as_array().unwrap().len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded(&pending()) < receiver.count() {
        assert!(
            Instant::now() < deadline,
            "attempts sent were never recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let attempts = receiver.count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.count(), attempts, "nothing sent while disabled");
    let waiting = pending();
    assert_eq!(waiting.len(), 3);
    assert_eq!(
        recorded(&waiting),
        attempts,
        "every attempt sent is recorded"
    );

    // Enabled again (and healthy): they resume, within the 60 s a disabled
    // endpoint's deliveries are parked for.
    receiver.answer_from_now(Answer::Status(200));
    let mut enable = body.clone();
    enable["status"] = json!("enabled");
    let enabled: Value = client
        .put(format!("{}/v2/endpoint/{endpoint_id}", server.base))
        .header("x-api-key", &key)
        .body(enable.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(enabled["data"]["status"], "enabled");
    assert!(enabled["data"].get("failing_since").is_none(), "{enabled}");
    assert!(
        enabled["data"].get("disabled_reason").is_none(),
        "{enabled}"
    );
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let delivered: Value = client
            .get(format!(
                "{}/v2/endpoint/{endpoint_id}/deliveries?status=delivered",
                server.base
            ))
            .header("x-api-key", &key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if delivered["data"]["deliveries"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the deliveries never resumed");
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.base))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.lines().any(
            |line| line.starts_with("webhookd_endpoints_auto_disabled_total")
                && line.ends_with(" 1")
        ),
        "the metric counts it"
    );
}
