//! Real deliveries, verified by the official Standard Webhooks library
//! (`standardwebhooks`, PyPI) and by the JoggAI seeds' Python snippet, in a
//! receiver of their own (tests/receivers/verifying_receiver.py): SPEC §3,
//! both signature schemes on every delivery.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, add_user, sqlite_store, webhookd};

/// The Python receiver, killed on drop.
struct PythonReceiver {
    child: Child,
    url: String,
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the receiver, or `None` (skip) when Python lacks the library —
/// except under `CI=true`, where `.ci/run` installs it and a skip would
/// hide a failure.
fn python_receiver() -> Option<PythonReceiver> {
    let has_library = Command::new("python3")
        .args(["-c", "import standardwebhooks, cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_library {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 with the standardwebhooks and cryptography packages is required under CI=true"
        );
        eprintln!("skipped: pip install standardwebhooks cryptography to run this test");
        return None;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/receivers/verifying_receiver.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    Some(PythonReceiver {
        child,
        url: format!("http://127.0.0.1:{}", port.trim()),
    })
}

/// One phase of the test: the secrets the receiver holds, events sent,
/// and the records of their deliveries once all arrived.
struct Run<'a> {
    client: reqwest::blocking::Client,
    server: &'a Server,
    receiver: &'a PythonReceiver,
    sent: usize,
}

const TOKEN: &str = "whi_process_test_token_0123456789";

impl Run<'_> {
    /// `holds`: the receiver's secrets and public keys for this phase.
    fn phase(&mut self, phase: &str, mut holds: Value, events: usize) -> Vec<Value> {
        holds["phase"] = phase.into();
        self.client
            .post(format!("{}/__secrets", self.receiver.url))
            .body(holds.to_string())
            .send()
            .unwrap();
        for _ in 0..events {
            let i = self.sent;
            self.sent += 1;
            let response = self
                .client
                .post(format!("{}/internal/events", self.server.base))
                .bearer_auth(TOKEN)
                .body(format!(
                    r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_std_{i}","data":{{"n":{i},"text":"é ✓"}}}}"#
                ))
                .send()
                .unwrap();
            assert_eq!(response.status(), 202);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let records: Vec<Value> = self
                .client
                .get(format!("{}/__stats", self.receiver.url))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if records.len() >= self.sent || Instant::now() > deadline {
                assert_eq!(records.len(), self.sent, "every delivery arrived");
                return records
                    .into_iter()
                    .filter(|record| record["phase"] == phase)
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The delivery detail (SPEC §13) of each delivery in `records` shows the
/// request the receiver got: the same body, and every header it lists
/// with the value that arrived — signatures included.
fn detail_matches_what_arrived(run: &Run<'_>, key: &str, endpoint_id: &str, records: &[Value]) {
    detail_shows(
        run,
        key,
        endpoint_id,
        records,
        &[
            "x-webhook-signature",
            "webhook-signature",
            "webhook-timestamp",
        ],
    );
}

/// [`detail_matches_what_arrived`], with the headers the detail must list.
fn detail_shows(run: &Run<'_>, key: &str, endpoint_id: &str, records: &[Value], required: &[&str]) {
    for record in records {
        let event_id = record["headers"]["webhook-id"].as_str().unwrap();
        let delivery_id = delivery_of(run, key, endpoint_id, event_id);
        let request = detail(run, key, endpoint_id, &delivery_id)["request"].clone();
        assert_eq!(request["body"], record["body"], "{request}");
        assert_eq!(request["attempt"], 1);
        let headers = request["headers"].as_object().unwrap();
        for name in required {
            assert!(headers.contains_key(*name), "{name} in {request}");
        }
        for (name, value) in headers {
            // A secret header's value is never shown (SPEC §13); it came.
            if value == "[redacted]" {
                assert!(record["headers"][name].is_string(), "{name} arrived");
                assert_ne!(&record["headers"][name], value);
                continue;
            }
            assert_eq!(&record["headers"][name], value, "{name} of {event_id}");
        }
    }
}

/// The delivered delivery of `event_id`.
fn delivery_of(run: &Run<'_>, key: &str, endpoint_id: &str, event_id: &str) -> String {
    let listed: Value = run
        .client
        .get(format!(
            "{}/v2/endpoint/{endpoint_id}/deliveries?status=delivered&event_id={event_id}",
            run.server.base
        ))
        .header("x-api-key", key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    listed["data"]["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// After a second rotation the secret that signed `before` is gone: the
/// detail says so rather than show signatures that were never sent.
fn after_a_second_rotation_signatures_are_omitted(
    run: &Run<'_>,
    key: &str,
    endpoint_id: &str,
    before: &[Value],
) {
    let rotated_again = run
        .client
        .post(format!(
            "{}/v2/endpoint/{endpoint_id}/rotate-secret",
            run.server.base
        ))
        .header("x-api-key", key)
        .body(json!({"grace_seconds": 0}).to_string())
        .send()
        .unwrap();
    assert_eq!(rotated_again.status(), 200);
    let first = delivery_of(run, key, endpoint_id, "evt_std_0");
    let request = detail(run, key, endpoint_id, &first)["request"].clone();
    assert!(
        request["signatures_omitted"]
            .as_str()
            .unwrap()
            .contains("replaced"),
        "{request}"
    );
    assert!(request["headers"].get("x-webhook-signature").is_none());
    let arrived = before
        .iter()
        .find(|record| record["headers"]["webhook-id"] == "evt_std_0")
        .unwrap();
    assert_eq!(request["body"], arrived["body"]);
}

fn detail(run: &Run<'_>, key: &str, endpoint_id: &str, delivery_id: &str) -> Value {
    let detail: Value = run
        .client
        .get(format!(
            "{}/v2/endpoint/{endpoint_id}/deliveries/{delivery_id}",
            run.server.base
        ))
        .header("x-api-key", key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(detail["code"], 0, "{detail}");
    detail["data"].clone()
}

fn all(records: &[Value], field: &str, expected: bool) {
    assert!(!records.is_empty());
    for record in records {
        assert_eq!(record[field], expected, "{field} in {record}");
    }
}

/// Before a rotation, during its grace, and after it (SPEC §8): receivers
/// holding the old secret keep verifying `X-Webhook-Signature` for the
/// whole grace; those holding the new one verify `-Next` during it and
/// `X-Webhook-Signature` after; the official library accepts every
/// delivery with the new secret, and with the old one only during the
/// grace.
#[test]
fn the_official_library_and_the_seeds_snippet_verify_every_delivery() {
    let Some(receiver) = python_receiver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(
            json!({"url": format!("{}/hook", receiver.url), "events": ["generated_video_success"]})
                .to_string(),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let endpoint_id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();
    let old = created["data"]["secret"].as_str().unwrap().to_owned();
    let mut run = Run {
        client: client.clone(),
        server: &server,
        receiver: &receiver,
        sent: 0,
    };
    let before = run.phase("before", json!({"old": old, "new": old}), 10);
    all(&before, "standard_new", true);
    all(&before, "signature_new", true);
    all(&before, "has_next", false);
    detail_matches_what_arrived(&run, &key, &endpoint_id, &before[..2]);

    let grace = 3;
    let rotated: Value = client
        .post(format!(
            "{}/v2/endpoint/{endpoint_id}/rotate-secret",
            server.base
        ))
        .header("x-api-key", &key)
        .body(json!({"grace_seconds": grace}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let new = rotated["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let expires_at = rotated["data"]["previous_secret_expires_at"]
        .as_i64()
        .unwrap();
    let rotated_at = Instant::now();
    let during = run.phase("during", json!({"old": old, "new": new}), 10);
    assert!(
        rotated_at.elapsed() < Duration::from_secs(grace - 1),
        "still in the grace"
    );
    all(&during, "signature_old", true);
    all(&during, "next_new", true);
    all(&during, "standard_new", true);
    all(&during, "standard_old", true);
    // Signed before the rotation, shown after it: still as sent.
    detail_matches_what_arrived(&run, &key, &endpoint_id, &before[..2]);
    detail_matches_what_arrived(&run, &key, &endpoint_id, &during[..2]);

    while webhookd_core::time::unix_seconds() <= expires_at {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = run.phase("after", json!({"old": old, "new": new}), 10);
    all(&after, "signature_new", true);
    all(&after, "has_next", false);
    all(&after, "standard_new", true);
    all(&after, "standard_old", false);
    detail_matches_what_arrived(&run, &key, &endpoint_id, &after[..2]);
    detail_matches_what_arrived(&run, &key, &endpoint_id, &during[..2]);

    after_a_second_rotation_signatures_are_omitted(&run, &key, &endpoint_id, &before);
}

/// SPEC §14: an endpoint signing with ed25519 alone shows no secret but a
/// public key, and the receiver verifies every delivery with that key
/// alone (`cryptography`), a tampered body failing; its custom headers
/// arrive, the secret one redacted in the delivery detail; a rotation
/// signs with both keys during its grace.
#[test]
fn ed25519_deliveries_verify_with_the_public_key_alone_and_custom_headers_arrive() {
    let Some(receiver) = python_receiver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(
            json!({
                "url": format!("{}/hook", receiver.url),
                "events": ["generated_video_success"],
                "signature": "ed25519",
                "headers": {"X-Tenant": "acme", "Authorization": "Bearer tok-5f1e"},
                "retry_schedule": ["1s", "1m"],
            })
            .to_string(),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let shown = &created["data"];
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(!created.to_string().contains("tok-5f1e"), "{created}");
    assert_eq!(shown["signature"], "ed25519");
    assert_eq!(shown["headers"]["X-Tenant"], "acme");
    assert_eq!(shown["headers"]["Authorization"], json!({"secret": true}));
    assert_eq!(shown["retry_schedule"], json!(["1s", "1m"]));
    let endpoint_id = shown["endpoint_id"].as_str().unwrap().to_owned();
    let public = shown["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"), "{public}");
    let mut run = Run {
        client: client.clone(),
        server: &server,
        receiver: &receiver,
        sent: 0,
    };
    let records = run.phase("ed25519", json!({"old_key": public, "new_key": public}), 5);
    all(&records, "ed25519_new", true);
    all(&records, "ed25519_tampered", false);
    all(&records, "standard_new", false);
    for record in &records {
        let headers = &record["headers"];
        assert!(
            headers.get("x-webhook-signature").is_none(),
            "no HMAC: {headers}"
        );
        assert_eq!(headers["x-tenant"], "acme");
        assert_eq!(headers["authorization"], "Bearer tok-5f1e");
    }
    detail_shows(
        &run,
        &key,
        &endpoint_id,
        &records[..2],
        &[
            "webhook-signature",
            "webhook-timestamp",
            "authorization",
            "x-tenant",
        ],
    );

    let rotated: Value = client
        .post(format!(
            "{}/v2/endpoint/{endpoint_id}/rotate-secret",
            server.base
        ))
        .header("x-api-key", &key)
        .body(json!({"grace_seconds": 600}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(rotated["data"].get("secret").is_none(), "{rotated}");
    assert_eq!(rotated["data"]["previous_public_key"], public.as_str());
    let new = rotated["data"]["public_key"].as_str().unwrap().to_owned();
    assert_ne!(new, public);
    let during = run.phase("rotated", json!({"old_key": public, "new_key": new}), 5);
    all(&during, "ed25519_new", true);
    all(&during, "ed25519_old", true);
    detail_shows(
        &run,
        &key,
        &endpoint_id,
        &during[..2],
        &["webhook-signature", "authorization"],
    );
}
