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
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_library {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 with the standardwebhooks package is required under CI=true"
        );
        eprintln!("skipped: pip install standardwebhooks to run this test");
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

#[test]
fn the_official_library_and_the_seeds_snippet_verify_every_delivery() {
    let Some(receiver) = python_receiver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
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
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    client
        .post(format!("{}/__secret", receiver.url))
        .body(secret)
        .send()
        .unwrap();
    for i in 0..20 {
        let response = client
            .post(format!("{}/internal/events", server.base))
            .bearer_auth(token)
            .body(format!(
                r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_std_{i}","data":{{"n":{i},"text":"é ✓"}}}}"#
            ))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let stats: Value = client
            .get(format!("{}/__stats", receiver.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let seen =
            stats["standard_ok"].as_u64().unwrap() + stats["standard_failed"].as_u64().unwrap();
        if seen >= 20 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["standard_ok"], 20, "{stats}");
    assert_eq!(stats["standard_failed"], 0, "{stats}");
    assert_eq!(stats["joggai_ok"], 20, "{stats}");
    assert_eq!(stats["joggai_failed"], 0, "{stats}");
}
