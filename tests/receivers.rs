//! docs/receivers.md's Python receivers for mTLS and OAuth2 (SPEC §14), run
//! as a reader copies them — the snippets are taken from the file — against
//! a real webhookd: the endpoint presenting the certificate its receiver
//! trusts is delivered to, the others fail with `tls`; a token the
//! authorization server revoked gets a 401, a new token, and the delivery.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, add_user, sqlite_store, webhookd};
use webhookd_testkit::tls::Authority;

const TOKEN: &str = "whi_process_test_token_0123456789";

/// SPEC §14: what the endpoint's options hold that is secret is in neither
/// the process's log nor its metrics.
fn nowhere_to_be_seen(server: &Server, secrets: &[&str]) {
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.base))
        .unwrap()
        .text()
        .unwrap();
    let log = server.log();
    assert!(log.contains("webhookd is ready"), "the log was read");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} is in the log");
        assert!(!metrics.contains(secret), "{secret} is in the metrics");
    }
}

/// The ```` ```python <tag> ```` snippet of docs/receivers.md.
fn snippet(tag: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/receivers.md"
    ))
    .unwrap();
    let start = doc
        .find(&format!("```python {tag}\n"))
        .unwrap_or_else(|| panic!("no python {tag} snippet"));
    let code = &doc[start..];
    let code = &code[code.find('\n').unwrap() + 1..];
    code[..code.find("```").unwrap()].to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python receiver, killed on drop; what it prints is collected.
struct PythonReceiver {
    child: Child,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` in `dir` and waits until `port` takes connections;
/// `None` (skip) without python3 — except under `CI=true`.
fn python(script: &str, dir: &Path, port: u16) -> Option<PythonReceiver> {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required under CI=true"
        );
        eprintln!("skipped: python3 is not installed");
        return None;
    }
    std::fs::write(dir.join("receiver.py"), script).unwrap();
    let mut child = Command::new("python3")
        .arg("receiver.py")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&printed);
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the receiver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(PythonReceiver { child, printed })
}

fn start_webhookd(dir: &tempfile::TempDir, require_https: bool) -> (Server, String) {
    let store = sqlite_store(dir);
    let key = add_user(&store, "johndoe");
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", require_https.to_string())
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    (Server::start_with(command), key)
}

fn create(server: &Server, key: &str, body: &Value) -> String {
    let created: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", key)
        .body(body.to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");
    created["data"]["endpoint_id"].as_str().unwrap().to_owned()
}

fn publish(server: &Server, event_id: &str) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(TOKEN)
        .body(format!(
            r#"{{"event":"generated_video_success","username":"johndoe","event_id":"{event_id}","data":{{}}}}"#
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// The endpoint's deliveries with `status`, once there are `n` (or after 20 s).
fn deliveries(server: &Server, key: &str, endpoint_id: &str, status: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Value = reqwest::blocking::Client::new()
            .get(format!(
                "{}/v2/endpoint/{endpoint_id}/deliveries?status={status}",
                server.base
            ))
            .header("x-api-key", key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let found = listed["data"]["deliveries"].as_array().unwrap().clone();
        let attempted = found
            .iter()
            .filter(|delivery| {
                delivery["attempts"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
            .count();
        if attempted >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_documented_mtls_receiver_takes_only_the_endpoints_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, clients_ca, stranger) = (
        Authority::new("receiver's private CA"),
        Authority::new("clients' CA"),
        Authority::new("a stranger's CA"),
    );
    let (server_cert, server_key) = server_ca.sign(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server_cert).unwrap();
    std::fs::write(dir.path().join("server-key.pem"), &server_key).unwrap();
    std::fs::write(dir.path().join("webhookd-clients-ca.pem"), &clients_ca.pem).unwrap();
    let port = free_port();
    let script = snippet("mtls").replace("PORT = 8443", &format!("PORT = {port}"));
    let Some(receiver) = python(&script, dir.path(), port) else {
        return;
    };

    let store_dir = tempfile::tempdir().unwrap();
    let (server, key) = start_webhookd(&store_dir, true);
    let url = format!("https://127.0.0.1:{port}/hook");
    let endpoint = |client: Option<(String, String)>| {
        let mut body = json!({
            "url": url, "events": ["generated_video_success"],
            "ca_cert": server_ca.pem, "retry_schedule": ["1h"],
        });
        if let Some((cert, key)) = client {
            body["client_cert"] = cert.into();
            body["client_key"] = key.into();
        }
        create(&server, &key, &body)
    };
    let (client_cert, client_key) = clients_ca.sign(&["webhookd.example"]);
    let key_body = client_key.lines().nth(1).unwrap().to_owned();
    let trusted = endpoint(Some((client_cert, client_key)));
    let stranger = endpoint(Some(stranger.sign(&["webhookd.example"])));
    let anonymous = endpoint(None);
    publish(&server, "evt_mtls_1");

    let delivered = deliveries(&server, &key, &trusted, "delivered", 1);
    assert_eq!(delivered.len(), 1, "the trusted endpoint's delivery");
    for refused in [&stranger, &anonymous] {
        let pending = deliveries(&server, &key, refused, "pending", 1);
        assert_eq!(pending[0]["attempts"][0]["reason"], "tls", "{pending:?}");
    }
    let printed = receiver.printed.lock().unwrap().clone();
    assert_eq!(printed.len(), 1, "one delivery got through: {printed:?}");
    assert!(
        printed[0].starts_with("delivery from webhookd.example "),
        "from the endpoint's certificate: {printed:?}"
    );
    nowhere_to_be_seen(&server, &[&key_body]);
}

/// The authorization server of the OAuth2 test: `/token` issues tokens to
/// `webhookd:cs-secret`, `/introspect` tells `my-receiver:receiver-secret`
/// whether a token is active.
#[derive(Default)]
struct Authorization {
    issued: Vec<String>,
    revoked: HashSet<String>,
}

fn authorization_server(state: Arc<Mutex<Authorization>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut authorization) = (0, String::new());
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "authorization" => value.trim().clone_into(&mut authorization),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let mut state = state.lock().unwrap();
                let (status, answer) = if request_line.starts_with("POST /token ") {
                    // base64("webhookd:cs-secret")
                    assert_eq!(authorization, "Basic d2ViaG9va2Q6Y3Mtc2VjcmV0");
                    assert!(body.contains("grant_type=client_credentials"), "{body}");
                    let token = format!("tok-{}", state.issued.len() + 1);
                    state.issued.push(token.clone());
                    (
                        200,
                        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
                    )
                } else {
                    // base64("my-receiver:receiver-secret")
                    assert_eq!(authorization, "Basic bXktcmVjZWl2ZXI6cmVjZWl2ZXItc2VjcmV0");
                    let token = body.strip_prefix("token=").unwrap_or_default();
                    let active = state.issued.iter().any(|issued| issued == token)
                        && !state.revoked.contains(token);
                    (200, json!({"active": active}))
                };
                let answer = answer.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    port
}

#[test]
fn the_documented_oauth2_receiver_takes_live_tokens_and_a_revoked_one_is_replaced() {
    let state = Arc::new(Mutex::new(Authorization::default()));
    let authorization = authorization_server(Arc::clone(&state));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = snippet("oauth2")
        .replace(
            "https://auth.example.com/oauth/introspect",
            &format!("http://127.0.0.1:{authorization}/introspect"),
        )
        .replace("PORT = 8080", &format!("PORT = {port}"));
    let Some(receiver) = python(&script, dir.path(), port) else {
        return;
    };

    let store_dir = tempfile::tempdir().unwrap();
    let (server, key) = start_webhookd(&store_dir, false);
    let endpoint = create(
        &server,
        &key,
        &json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": ["generated_video_success"],
            "retry_schedule": ["1h"],
            "oauth2": {"token_url": format!("http://127.0.0.1:{authorization}/token"),
                       "client_id": "webhookd", "client_secret": "cs-secret"},
        }),
    );
    publish(&server, "evt_oauth2_1");
    assert_eq!(
        deliveries(&server, &key, &endpoint, "delivered", 1).len(),
        1
    );
    assert_eq!(state.lock().unwrap().issued, ["tok-1"]);

    // Revoked at the authorization server: the receiver answers 401,
    // webhookd takes a new token and the same attempt gets through.
    state.lock().unwrap().revoked.insert("tok-1".into());
    publish(&server, "evt_oauth2_2");
    let delivered = deliveries(&server, &key, &endpoint, "delivered", 2);
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered
            .iter()
            .all(|delivery| delivery["attempts"].as_array().unwrap().len() == 1),
        "{delivered:?}"
    );
    assert_eq!(state.lock().unwrap().issued, ["tok-1", "tok-2"]);
    assert_eq!(receiver.printed.lock().unwrap().len(), 2);
    // Neither the client secret nor a token it bought.
    nowhere_to_be_seen(&server, &["cs-secret", "tok-1", "tok-2"]);
}
