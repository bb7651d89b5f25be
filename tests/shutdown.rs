//! A clean stop never leaves a sent attempt unrecorded (SPEC §6: finish or
//! hand back in-flight deliveries). An attempt whose receiver answers at
//! the last moment and then trickles its body must be recorded before
//! webhookd exits; otherwise its lease runs out after the restart and the
//! receiver gets it twice.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, add_user, signal, sqlite_store, wait_for_exit, webhookd};

/// A receiver on loopback that takes `head_after` to send a 200 head, then
/// `body_for` to trickle a 10-byte body: the slowest answer an attempt can
/// still count as delivered. Counts the requests it got.
fn trickling_receiver(head_after: Duration, body_for: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || {
                // The request fits one read here (a small signed JSON POST).
                let mut buffer = [0_u8; 16 * 1024];
                if stream.read(&mut buffer).unwrap_or(0) == 0 {
                    return;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(head_after);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
                for _ in 0..10 {
                    std::thread::sleep(body_for / 10);
                    let _ = stream.write_all(b"x");
                }
            });
        }
    });
    (url, requests)
}

#[test]
fn sigterm_records_an_attempt_answered_at_the_last_moment() {
    // The deadline is 2 s: the head comes at 1.8 s, the body 0.9 s later.
    let (url, requests) =
        trickling_receiver(Duration::from_millis(1800), Duration::from_millis(900));
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let start = || {
        let mut command = webhookd(&store);
        command
            .env("WEBHOOKD_INGEST_TOKEN", token)
            .env("WEBHOOKD_REQUIRE_HTTPS", "false")
            .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env("WEBHOOKD_DELIVERY_TIMEOUT", "2s")
            // The shortest grace the configuration accepts for a 2 s deadline.
            .env("WEBHOOKD_SHUTDOWN_GRACE", "5s");
        Server::start_with(command)
    };
    let mut server = start();
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(json!({"url": url, "events": ["generated_video_success"]}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let endpoint_id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();
    let response = client
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(token)
        .body(r#"{"event":"generated_video_success","username":"johndoe","event_id":"evt_last","data":{}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);

    let deadline = Instant::now() + Duration::from_secs(10);
    while requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the attempt never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&server, "TERM");
    let status = wait_for_exit(&mut server, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    drop(server);

    let server = start();
    let listed = |status: &str| -> Vec<Value> {
        let page: Value = client
            .get(format!(
                "{}/v2/endpoint/{endpoint_id}/deliveries?status={status}",
                server.base
            ))
            .header("x-api-key", &key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        page["data"]["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        listed("delivered").len(),
        1,
        "the attempt was recorded before exit"
    );
    assert!(listed("pending").is_empty());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
}
