//! SPEC §7, end to end on the embedded store: endpoint secrets are sealed
//! with `WEBHOOKD_ENCRYPTION_KEY`; a key rotation re-seals them and
//! deliveries keep verifying with the same secret; a wrong key stops the
//! start with a message naming the variable; without a key the store makes
//! its own key file, mode 0600. What an endpoint's delivery options hold
//! that is secret (SPEC §14: a secret header's value, a client key) is
//! sealed with them, and never answered.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, add_user, run, signal, sqlite_store, wait_for_exit, webhookd};
use webhookd_core::encryption_key::EncryptionKey;
use webhookd_testkit::receiver::{Answer, Receiver, signature_is_valid};

const TOKEN: &str = "whi_process_test_token_0123456789";

fn serve(store: &str, keys: Option<&str>) -> Server {
    let mut command = webhookd(store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    if let Some(keys) = keys {
        command.env("WEBHOOKD_ENCRYPTION_KEY", keys);
    }
    Server::start_with(command)
}

/// Sends one event and waits for its delivery; it must verify with `secret`.
fn delivers_signed_with(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    receiver: &Receiver,
    secret: &str,
) {
    let before = receiver.count();
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(TOKEN)
        .body(r#"{"event":"generated_video_success","username":"johndoe","data":{}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let received = runtime.block_on(receiver.wait_for(before + 1, Duration::from_secs(15)));
    let last = received.last().unwrap();
    assert!(
        signature_is_valid(last, secret),
        "the delivery does not verify"
    );
}

/// Stops a server as an orchestrator does (SIGTERM), so it tells the store
/// it is gone.
fn stop(mut server: Server) {
    signal(&server, "TERM");
    assert!(wait_for_exit(&mut server, Duration::from_secs(30)).success());
}

fn database_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(file) = std::fs::read(dir.path().join(format!("webhookd.db{suffix}"))) {
            bytes.extend(file);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

// One story, read top to bottom: the key's life across four starts.
#[allow(clippy::too_many_lines)]
#[test]
fn secrets_are_sealed_rotate_with_the_key_and_a_wrong_key_stops_the_start() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(200)));
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let (old, new) = (EncryptionKey::generate(), EncryptionKey::generate());

    let server = serve(&store, Some(&old.to_base64()));
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["webhookd.example".into()])
        .unwrap()
        .self_signed(&client_key)
        .unwrap()
        .pem();
    let client_key = client_key.serialize_pem();
    // The key's base64 body: what a dump would show of it.
    let key_body = client_key.lines().nth(1).unwrap().to_owned();
    let header_secret = "hdr-4d2c9a7e1f";
    let created: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(
            json!({
                "url": receiver.url,
                "events": ["generated_video_success"],
                "headers": {"X-Api-Key": {"value": header_secret, "secret": true}},
                "client_cert": client_cert,
                "client_key": client_key,
            })
            .to_string(),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let answered = created.to_string();
    assert!(
        !answered.contains(header_secret) && !answered.contains(&key_body),
        "{answered}"
    );
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    delivers_signed_with(&runtime, &server, &receiver, &secret);
    assert_eq!(
        receiver.received().last().unwrap().headers["x-api-key"],
        header_secret
    );
    let nothing_in_the_file = || {
        let bytes = database_bytes(&dir);
        for (what, value) in [
            ("the secret", secret.as_str()),
            ("the secret header", header_secret),
            ("the client key", key_body.as_str()),
        ] {
            assert!(!contains(&bytes, value), "{what} is in the file");
        }
    };
    nothing_in_the_file();
    let sealed_with = |key: &EncryptionKey| {
        contains(
            &database_bytes(&dir),
            &format!("sealed:v1:{}:", webhookd_store::key_id(key)),
        )
    };
    assert!(sealed_with(&old));

    // While a process holding only the old key runs, nothing is sealed
    // with a new one — it could not open it ("Correctness, round 3", item
    // 5): `keys rotate` refuses, naming the key, and a start with the new
    // key first leaves the secrets as they are.
    let both = format!("{},{}", new.to_base64(), old.to_base64());
    let mut rotate = webhookd(&store);
    rotate
        .env("WEBHOOKD_ENCRYPTION_KEY", &both)
        .args(["keys", "rotate"]);
    let output = run(rotate);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("refusing"), "{stderr}");
    assert!(stderr.contains(&webhookd_store::key_id(&new)), "{stderr}");
    let early = serve(&store, Some(&both));
    delivers_signed_with(&runtime, &early, &receiver, &secret);
    stop(early);
    assert!(
        !sealed_with(&new),
        "sealed while a process could not open it"
    );

    // The two-phase rotation: first the new key everywhere, after the old
    // one (a restart each); then first. The process still on the first
    // phase opens what the second seals.
    stop(server);
    let phase_one = serve(
        &store,
        Some(&format!("{},{}", old.to_base64(), new.to_base64())),
    );
    let server = serve(&store, Some(&both));
    assert!(
        sealed_with(&new),
        "re-sealed once every process holds the key"
    );
    delivers_signed_with(&runtime, &server, &receiver, &secret);
    stop(server);
    delivers_signed_with(&runtime, &phase_one, &receiver, &secret);
    stop(phase_one);

    // The old key can go now.
    let server = serve(&store, Some(&new.to_base64()));
    delivers_signed_with(&runtime, &server, &receiver, &secret);
    let listed: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/endpoints", server.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["data"]["endpoints"][0]["secret"], secret.as_str());
    let answered = listed.to_string();
    assert!(!answered.contains(header_secret) && !answered.contains(&key_body));
    stop(server);
    nothing_in_the_file();

    // Only the old key: the start fails, saying which variable and key.
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_ENCRYPTION_KEY", old.to_base64())
        .args(["serve", "--log-format", "json"]);
    let output = run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBHOOKD_ENCRYPTION_KEY"), "{stderr}");
    assert!(stderr.contains(&webhookd_store::key_id(&new)), "{stderr}");
    assert!(!stderr.contains(&secret));
}

#[test]
fn without_a_key_the_embedded_store_makes_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    add_user(&store, "johndoe");
    let key_file = dir.path().join("webhookd.db.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    EncryptionKey::parse(&text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The next start keeps it.
    add_user(&store, "janedoe");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), text);

    // `webhookd gen-key` prints a key and nothing else.
    let mut command = webhookd(&store);
    command.arg("gen-key");
    let output = run(command);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed.lines().count(), 1);
    EncryptionKey::parse(printed.trim_end()).unwrap();
}
