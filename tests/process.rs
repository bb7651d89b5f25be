//! End-to-end tests of the `webhookd` binary as operators run it: real
//! processes, real signals, real HTTP, on both stores.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhookd_core::{Endpoint, EndpointStatus, EventType, ids};
use webhookd_store::{DeliveryStatus, Page, RedisStore, Store};
use webhookd_testkit::{Service, require, unique_prefix};

mod support;
use support::*;

#[test]
fn help_explains_the_commands() {
    let mut command = webhookd("sqlite://unused.db");
    command.arg("--help");
    let output = run(command);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    for part in [
        "reliable webhook dispatcher",
        "serve",
        "users",
        "--config",
        "WEBHOOKD_",
    ] {
        assert!(help.contains(part), "--help should mention {part}:\n{help}");
    }
    let mut command = webhookd("sqlite://unused.db");
    command.args(["serve", "--help"]);
    let output = run(command);
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("SIGTERM"), "{help}");
    let mut command = webhookd("sqlite://unused.db");
    command.args(["users", "add", "--help"]);
    let output = run(command);
    let help = String::from_utf8(output.stdout).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("shown only this once"), "{help}");
}

#[test]
fn a_bad_config_value_exits_2_with_a_message_naming_it() {
    let mut command = webhookd("sqlite://unused.db");
    command.env("WEBHOOKD_DELIVERY_TIMEOUT", "five seconds");
    let output = run(command);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "webhookd: configuration error: WEBHOOKD_DELIVERY_TIMEOUT: \"five seconds\""
        ),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhookd.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nretry_shedule = \"1s\"\n").unwrap();
    let mut command = webhookd("sqlite://unused.db");
    command.arg("--config").arg(&file);
    let output = run(command);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("retry_shedule (in "), "{stderr}");
    assert!(stderr.contains("unknown setting"), "{stderr}");
}

#[test]
fn users_add_prints_only_the_key_and_list_and_revoke_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let mut command = webhookd(&store);
    command.args(["users", "add", "--create", "johndoe"]);
    let output = run(command);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    assert!(stdout.starts_with("whk_") && stdout.ends_with('\n'));

    let mut command = webhookd(&store);
    command.args(["users", "list"]);
    let listing = String::from_utf8(run(command).stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with("johndoe") && line.split_whitespace().nth(1) == Some("1"))
    );
    let mut command = webhookd(&store);
    command.args(["users", "list", "--json"]);
    let listing: Value = serde_json::from_slice(&run(command).stdout).unwrap();
    assert_eq!(listing[0]["username"], "johndoe", "{listing}");
    assert_eq!(listing[0]["api_keys"], 1, "{listing}");

    let mut command = webhookd(&store);
    command.args(["users", "revoke", "johndoe"]);
    let output = run(command);
    assert!(output.status.success());
    let mut command = webhookd(&store);
    command.args(["users", "revoke", "johndoe"]);
    let output = run(command);
    assert!(!output.status.success(), "nothing left to revoke");
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("has no API keys")
    );

    let mut command = webhookd(&store);
    command.args(["users", "add", "not a name"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

/// SPEC §6: only `serve` or `--create` makes a store. A one-shot command
/// pointed at a store that does not exist (a mistyped path, a shell without
/// the server's WEBHOOKD_STORE, an empty Redis prefix) fails naming where it
/// looked, and leaves nothing behind.
#[test]
fn one_shot_commands_never_create_a_store_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo").join("webhookd.db");
    let store = format!("sqlite://{}", missing.display());
    for args in [
        &["users", "add", "johndoe"][..],
        &["users", "list"],
        &["users", "revoke", "johndoe"],
        &["portal-link", "johndoe"],
        &["keys", "rotate"],
        &["recover", "johndoe", "wh_x", "--since", "0"],
    ] {
        let mut command = webhookd(&store);
        command.args(args);
        let output = run(command);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("no webhookd store at {}", missing.display())),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--create"), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("typo").exists(),
            "{args:?} created folders"
        );
    }
    add_user(&store, "johndoe");
    let mut command = webhookd(&store);
    command.args(["users", "list"]);
    assert!(run(command).status.success(), "it exists now");

    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    let mut command = webhookd(&redis_url);
    command.args(["users", "list"]);
    let output = run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no webhookd store at redis://"), "{stderr}");
    assert!(stderr.contains("under the key prefix"), "{stderr}");
}

/// Three dead deliveries of one endpoint of johndoe's, in the SQLite store
/// at `path`: the endpoint's id.
fn three_dead_deliveries(runtime: &tokio::runtime::Runtime, path: &std::path::Path) -> String {
    runtime.block_on(async {
        let store = webhookd_store::SqliteStore::open(path.to_str().unwrap())
            .await
            .unwrap();
        let endpoint = webhookd_testkit::subscription(
            "johndoe",
            "https://example.com/hook",
            &[EventType::GENERATED_VIDEO_SUCCESS],
        );
        store.create_endpoint(&endpoint, 20).await.unwrap();
        let now = webhookd_core::time::unix_millis();
        for i in 0..3 {
            let message = format!(
                r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_{i}","data":{{}}}}"#
            );
            let event = webhookd_core::Event::parse(message.as_bytes(), now / 1000).unwrap();
            store.accept_events(&[event], now).await.unwrap();
        }
        let claims = store
            .claim_due(&webhookd_store::ClaimRequest {
                now_ms: now,
                lease_until_ms: now + 60_000,
                park_until_ms: now + 60_000,
                limit: 10,
                per_endpoint: 10,
                ..webhookd_store::ClaimRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(claims.len(), 3);
        let dead: Vec<_> = claims
            .into_iter()
            .map(|claim| webhookd_store::FinishedAttempt {
                claim,
                record: webhookd_store::AttemptRecord {
                    attempt: 1,
                    started_at: now,
                    duration_ms: 5,
                    status_code: Some(410),
                    reason: "http_4xx".into(),
                    response: None,
                    signing: None,
                },
                result: webhookd_store::AttemptResult::Dead,
            })
            .collect();
        store.record_attempts(&dead).await.unwrap();
        endpoint.endpoint_id
    })
}

/// `webhookd recover` (SPEC §8) gives an endpoint's dead deliveries of a
/// window one more attempt; on a terminal it shows how far it has come,
/// piped it prints the result line alone.
#[test]
fn recover_makes_the_dead_of_a_window_pending_and_shows_progress_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = sqlite_store(&dir);
    let path = dir.path().join("webhookd.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint_id = three_dead_deliveries(&runtime, &path);

    let mut command = webhookd(&store_url);
    command.args(["recover", "johndoe", "nope", "--since", "0"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("johndoe has no endpoint nope"));

    // Under a pseudo-terminal (util-linux `script`), with the environment
    // `webhookd()` sets: the progress line.
    let binary = env!("CARGO_BIN_EXE_webhookd");
    let mut script = std::process::Command::new("script");
    script.args([
        "-qec",
        &format!("{binary} recover johndoe {endpoint_id} --since 0"),
        "/dev/null",
    ]);
    for (name, value) in webhookd(&store_url).get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    let output = run(script);
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("3 of 3 dead deliveries recovered (100%)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "3 dead deliveries of {endpoint_id} get one more attempt"
        )),
        "{shown}"
    );

    // Piped: the result alone; nothing dead is left to recover.
    let mut command = webhookd(&store_url);
    command.args(["recover", "johndoe", &endpoint_id, "--since", "0"]);
    let output = run(command);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("0 dead deliveries of {endpoint_id} get one more attempt\n")
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pending = runtime.block_on(async {
        let store = webhookd_store::SqliteStore::open(path.to_str().unwrap())
            .await
            .unwrap();
        store
            .list_deliveries(
                "johndoe",
                &endpoint_id,
                DeliveryStatus::Pending,
                &Page {
                    limit: 10,
                    after: None,
                },
            )
            .await
            .unwrap()
    });
    assert_eq!(pending.len(), 3, "each got one more attempt");
    assert!(pending.iter().all(|delivery| delivery.last_attempt));
}

/// `webhookd portal-link` (SPEC §9) prints one link, for users that exist;
/// the link signs in to that user's `/v2` routes on a running webhookd.
#[test]
fn portal_link_prints_a_link_that_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    add_user(&store, "johndoe");
    let mut command = webhookd(&store);
    command.args(["portal-link", "nobody"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("users add nobody"));

    let server = Server::start(&store);
    let mut command = webhookd(&store);
    command.args([
        "portal-link",
        "johndoe",
        "--ttl",
        "60",
        "--base-url",
        &server.base,
    ]);
    let output = run(command);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    let link = stdout.trim_end();
    let token = link
        .strip_prefix(&format!("{}/portal#link=", server.base))
        .unwrap_or_else(|| panic!("{link}"));
    let me: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/me", server.base))
        .header("x-api-key", token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["data"]["username"], "johndoe", "{me}");

    let mut command = webhookd(&store);
    command.args(["portal-link", "johndoe", "--ttl", "86401"]);
    assert!(!run(command).status.success(), "a link lives at most a day");

    // Links name where browsers reach webhookd: WEBHOOKD_PUBLIC_URL, or
    // the listen address — never 0.0.0.0.
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_PUBLIC_URL", "https://hooks.example.com/")
        .args(["portal-link", "johndoe"]);
    let output = run(command);
    let link = String::from_utf8(output.stdout).unwrap();
    assert!(
        link.starts_with("https://hooks.example.com/portal#link=wpl_"),
        "{link}"
    );
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_LISTEN", "0.0.0.0:8080")
        .args(["portal-link", "johndoe"]);
    let output = run(command);
    let link = String::from_utf8(output.stdout).unwrap();
    assert!(
        link.starts_with("http://127.0.0.1:8080/portal#link=wpl_"),
        "{link}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("WEBHOOKD_PUBLIC_URL"));
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    for name in ["TERM", "INT"] {
        let mut server = Server::start(&store);
        let health = reqwest::blocking::get(format!("{}/healthz", server.base)).unwrap();
        assert_eq!(health.status(), 200);
        signal(&server, name);
        let status = wait_for_exit(&mut server, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "SIG{name}");
    }
}

/// The seed's curl walk-through (create, list, update, delete, events).
fn seed_walkthrough_then_kill_9(store: &str, username: &str) {
    let key = add_user(store, username);
    let client = reqwest::blocking::Client::new();
    let server = Server::start(store);
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"url": "https://example.com/webhook", "events": ["generated_avatar_video_success", "generated_avatar_video_failed"], "status": "enabled"}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");
    let id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();

    // Killed the instant the create returned: nothing may be lost.
    signal(&server, "KILL");
    drop(server);

    let server = Server::start(store);
    let listed: Value = client
        .get(format!("{}/v2/endpoints", server.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["data"]["endpoints"], json!([created["data"]]));

    let updated: Value = client
        .put(format!("{}/v2/endpoint/{id}", server.base))
        .header("x-api-key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"url": "https://new-url.com/webhook", "events": ["generated_avatar_video_success", "generated_avatar_video_failed", "generated_photo_avatar_success"], "status": "enabled"}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(updated["data"]["url"], "https://new-url.com/webhook");
    assert_eq!(updated["data"]["secret"], created["data"]["secret"]);

    let events: Value = client
        .get(format!("{}/v2/events", server.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(events["data"]["events"].as_array().unwrap().len(), 22);

    let deleted: Value = client
        .delete(format!("{}/v2/endpoint/{id}", server.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deleted, json!({"code": 0, "msg": "Success"}));
}

#[test]
fn sqlite_an_endpoint_created_right_before_kill_9_survives() {
    let dir = tempfile::tempdir().unwrap();
    seed_walkthrough_then_kill_9(&sqlite_store(&dir), "johndoe");
}

#[test]
fn redis_an_endpoint_created_right_before_kill_9_survives() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    seed_walkthrough_then_kill_9(&url, "johndoe");
}

/// Everything one AMQP end-to-end run needs: a queue and a Redis prefix of
/// its own, a user with one endpoint, and 20,000 events in the queue.
struct AmqpRun {
    runtime: tokio::runtime::Runtime,
    receiver: webhookd_testkit::receiver::Receiver,
    amqp_url: String,
    redis_url: String,
    prefix: String,
    queue: String,
}

const EVENTS: usize = 20_000;

/// Event messages `evt_<i>` for johndoe, one per `i`.
fn messages(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    webhookd_testkit::video_events("johndoe", range)
}

impl AmqpRun {
    fn prepare(test: &str) -> Option<AmqpRun> {
        let amqp_url = require(Service::RabbitMq)?;
        let redis_url = require(Service::Redis)?;
        // A multi-thread runtime keeps the receiver answering between calls.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let receiver = runtime.block_on(webhookd_testkit::receiver::Receiver::start(
            webhookd_testkit::receiver::Answer::Status(200),
        ));
        let prefix = unique_prefix(test);
        let queue = webhookd_testkit::amqp::unique_queue(test);
        let store = runtime
            .block_on(RedisStore::connect(&redis_url, &prefix))
            .unwrap();
        let endpoint = Endpoint {
            ordering: None,
            filter: None,
            endpoint_id: ids::new_endpoint_id(),
            url: receiver.url.clone(),
            secret: ids::new_secret(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GENERATED_VIDEO_SUCCESS],
            username: "johndoe".into(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            quota_refused: 0,
            disabled_reason: None,
            rate_limit: None,
            options: None,
        };
        runtime
            .block_on(store.create_endpoint(&endpoint, 20))
            .unwrap();
        runtime.block_on(webhookd_testkit::amqp::publish(
            &amqp_url,
            &queue,
            messages(0..EVENTS),
        ));
        Some(AmqpRun {
            runtime,
            receiver,
            amqp_url,
            redis_url,
            prefix,
            queue,
        })
    }

    fn server(&self) -> Server {
        amqp_server(&self.redis_url, &self.prefix, &self.amqp_url, &self.queue)
    }

    fn deliveries_by_event(&self) -> HashMap<String, usize> {
        self.runtime
            .block_on(deliveries_by_event(&self.redis_url, &self.prefix))
    }

    fn wait_for(&self, at_least: usize, within: Duration) -> HashMap<String, usize> {
        let deadline = Instant::now() + within;
        loop {
            let counts = self.deliveries_by_event();
            if counts.len() >= at_least || Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_every_event_fanned_out_exactly_once(&self) {
        let counts = self.wait_for(EVENTS, Duration::from_secs(120));
        assert_eq!(
            counts.len(),
            EVENTS,
            "every published event has its delivery"
        );
        let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            doubled.is_empty(),
            "events fanned out more than once: {doubled:?}"
        );
        // Re-published duplicates may still be flowing: the queue must empty.
        assert!(
            queue_drained(
                &self.runtime,
                &self.amqp_url,
                &self.queue,
                Duration::from_secs(60)
            ),
            "the queue drains"
        );
        let counts = self.deliveries_by_event();
        assert!(
            counts.values().all(|&n| n == 1),
            "duplicates were de-duplicated, not fanned out"
        );
        // Attempts in flight when a process was killed come due again when
        // their lease runs out (50 s), so wait for distinct ids, not a count.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut distinct = std::collections::HashSet::new();
        while distinct.len() < EVENTS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            distinct = self
                .receiver
                .received()
                .iter()
                .map(|r| r.headers["x-webhook-id"].to_str().unwrap().to_owned())
                .collect();
        }
        assert_eq!(distinct.len(), EVENTS, "the receiver got every event");
    }
}

/// `(event_id, delivery_id)` of every delivery of johndoe's endpoint, in any
/// status. A delivery changing status while this reads may show up twice;
/// callers count distinct delivery ids.
async fn deliveries_in_store(store: &dyn Store, endpoint_id: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for status in [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ] {
        let mut page = Page {
            limit: 2000,
            after: None,
        };
        loop {
            let batch = store
                .list_deliveries("johndoe", endpoint_id, status, &page)
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            page.after = Some(last.delivery_id.clone());
            found.extend(batch.into_iter().map(|d| (d.event_id, d.delivery_id)));
        }
    }
    found
}

impl Drop for AmqpRun {
    fn drop(&mut self) {
        let dead = format!("{}.dead", self.queue);
        self.runtime.block_on(webhookd_testkit::amqp::delete_queues(
            &self.amqp_url,
            &[&self.queue, &dead],
        ));
    }
}

#[test]
fn amqp_20000_events_survive_kill_9_partway_without_double_fan_out() {
    let Some(run) = AmqpRun::prepare("kill9") else {
        return;
    };
    let server = run.server();
    let before_kill = run.wait_for(EVENTS / 10, Duration::from_secs(60)).len();
    signal(&server, "KILL");
    drop(server);
    assert!(
        before_kill < EVENTS,
        "killed partway ({before_kill} of {EVENTS} done)"
    );

    let _restarted = run.server();
    run.assert_every_event_fanned_out_exactly_once();
}

#[test]
fn amqp_connection_cut_repeatedly_under_load_loses_and_doubles_nothing() {
    let Some(run) = AmqpRun::prepare("cuts") else {
        return;
    };
    let server = run.server();
    let connection_name = format!("webhookd@{}", server.listen);
    // Redeliveries of the preloaded events are de-duplicated; keep the load
    // coming while the connection is cut: the same 20,000 ids again, slowly.
    let publisher = {
        let (url, queue) = (run.amqp_url.clone(), run.queue.clone());
        run.runtime.spawn(async move {
            for chunk in 0..20 {
                let start = chunk * EVENTS / 20;
                webhookd_testkit::amqp::publish(&url, &queue, messages(start..start + EVENTS / 20))
                    .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut cuts = 0;
    while !publisher.is_finished() && cuts < 4 {
        cuts += webhookd_testkit::amqp::close_connections_named(&connection_name);
    }
    run.runtime.block_on(publisher).unwrap();
    assert!(cuts >= 2, "the connection was cut under load ({cuts} cuts)");
    run.assert_every_event_fanned_out_exactly_once();
}

#[test]
fn sqlite_http_ingest_keeps_every_202_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = sqlite_store(&dir);
    let token = "whi_process_test_token_0123456789";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(webhookd_testkit::receiver::Receiver::start(
        webhookd_testkit::receiver::Answer::Status(200),
    ));
    let mut command = webhookd(&store_url);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    let key = add_user(&store_url, "johndoe");
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(json!({"url": receiver.url, "events": ["generated_video_success"]}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let endpoint_id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();
    let mut accepted = Vec::new();
    for i in 0..300 {
        let response = client
            .post(format!("{}/internal/events", server.base))
            .bearer_auth(token)
            .body(format!(r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_{i}","data":{{}}}}"#))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
        accepted.push(format!("evt_{i}"));
    }
    signal(&server, "KILL");
    drop(server);

    let mut stored = runtime.block_on(async {
        let path = store_url.strip_prefix("sqlite://").unwrap();
        let store = webhookd_store::SqliteStore::open(path).await.unwrap();
        let found: std::collections::BTreeMap<_, _> = deliveries_in_store(&store, &endpoint_id)
            .await
            .into_iter()
            .map(|(e, d)| (d, e))
            .collect();
        found.into_values().collect::<Vec<_>>()
    });
    stored.sort();
    accepted.sort();
    assert_eq!(
        stored, accepted,
        "every event answered 202 has its delivery"
    );
}

/// The whole path in one process: HTTP ingest → delivery engine → a real
/// receiver; failures retried per the schedule, then dead; the dead delivery
/// seen through the API and re-sent on request.
// One scenario, read top to bottom; splitting it would hide the story.
#[allow(clippy::too_many_lines)]
#[test]
fn events_are_delivered_retried_killed_and_resent_end_to_end() {
    use webhookd_testkit::receiver::{Answer, Receiver, signature_is_valid};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Two failures exhaust the schedule "100ms"; the re-send then succeeds.
    let flaky = runtime.block_on(Receiver::scripted(
        vec![Answer::Status(500), Answer::Status(503)],
        Answer::Status(200),
    ));
    let healthy = runtime.block_on(Receiver::start(Answer::Status(204)));

    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_RETRY_SCHEDULE", "100ms")
        .env("WEBHOOKD_DELIVERY_TIMEOUT", "1s");
    let mut server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    let api = |method: reqwest::Method, path: &str, body: Option<String>| -> Value {
        let mut request = client
            .request(method, format!("{}{path}", server.base))
            .header("x-api-key", &key);
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().unwrap().json().unwrap()
    };
    let create = |url: &str| {
        let body = json!({"url": url, "events": ["generated_avatar_video_success"]}).to_string();
        api(reqwest::Method::POST, "/v2/endpoint", Some(body))["data"].clone()
    };
    let failing = create(&flaky.url);
    let working = create(&healthy.url);

    let response = client
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(token)
        .body(r#"{"event":"generated_avatar_video_success","username":"johndoe","event_id":"evt_e2e","data":{"video_id":"v1"}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);

    let arrived = runtime.block_on(healthy.wait_for(1, Duration::from_secs(10)));
    assert_eq!(arrived.len(), 1);
    assert!(signature_is_valid(
        &arrived[0],
        working["secret"].as_str().unwrap()
    ));

    let failing_id = failing["endpoint_id"].as_str().unwrap();
    let dead = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            api(
                reqwest::Method::GET,
                &format!("/v2/endpoint/{failing_id}/deliveries?status=failed"),
                None,
            )
        })
        .find(|listing| {
            listing["data"]["deliveries"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .expect("the delivery dies after the schedule");
    let delivery = &dead["data"]["deliveries"][0];
    assert_eq!(delivery["event_id"], "evt_e2e");
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempt_count"], 2);
    let attempts: Vec<_> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["status_code"].clone(), a["reason"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (json!(500), json!("http_5xx")),
            (json!(503), json!("http_5xx"))
        ]
    );

    let delivery_id = delivery["delivery_id"].as_str().unwrap();
    let resend = api(
        reqwest::Method::POST,
        &format!("/v2/endpoint/{failing_id}/deliveries/{delivery_id}/retry"),
        None,
    );
    assert_eq!(resend, json!({"code": 0, "msg": "Success"}));
    let flaky_requests = runtime.block_on(flaky.wait_for(3, Duration::from_secs(10)));
    assert_eq!(flaky_requests.len(), 3);
    let delivered = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            api(
                reqwest::Method::GET,
                &format!("/v2/endpoint/{failing_id}/deliveries?status=delivered"),
                None,
            )
        })
        .find(|listing| {
            listing["data"]["deliveries"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .expect("the re-sent delivery is delivered");
    assert_eq!(delivered["data"]["deliveries"][0]["attempt_count"], 3);

    let again = api(
        reqwest::Method::POST,
        &format!("/v2/endpoint/{failing_id}/deliveries/{delivery_id}/retry"),
        None,
    );
    assert_eq!(again["code"], 40000, "{again}");
    let bad_status = api(
        reqwest::Method::GET,
        &format!("/v2/endpoint/{failing_id}/deliveries?status=lost"),
        None,
    );
    assert_eq!(bad_status["code"], 40000);
    let unknown = api(
        reqwest::Method::GET,
        "/v2/endpoint/wh_unknown/deliveries",
        None,
    );
    assert_eq!(unknown["code"], 10104);

    signal(&server, "TERM");
    assert_eq!(
        wait_for_exit(&mut server, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// Every metric names in `text` (the `/metrics` body), histogram suffixes
/// folded into their base name.
fn exported_metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// `webhookd_*` names in `text`, histogram suffixes folded.
fn referenced_metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("webhookd_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every metric docs/metrics.md names and every metric the Grafana dashboard
/// queries is among `exported`.
fn assert_documented_and_queried_series_exist(exported: &std::collections::BTreeSet<String>) {
    let documented = referenced_metric_names(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/metrics.md"
        ))
        .unwrap(),
    );
    assert!(documented.len() >= 16, "{documented:?}");
    let missing: Vec<_> = documented.difference(exported).collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/webhookd.json"
    ))
    .unwrap();
    serde_json::from_str::<Value>(&dashboard).expect("the dashboard is valid JSON");
    let queried = referenced_metric_names(&dashboard);
    assert!(
        queried.len() >= 10,
        "the dashboard queries webhookd metrics: {queried:?}"
    );
    let missing: Vec<_> = queried.difference(exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series webhookd does not export: {missing:?}"
    );
}

/// A short real load (HTTP and AMQP ingest, deliveries that succeed, retry
/// and die, an invalid message), then: every metric in docs/metrics.md and
/// every metric the Grafana dashboard queries is exported.
#[test]
fn metrics_and_the_dashboard_agree() {
    use webhookd_testkit::receiver::{Answer, Receiver};

    let Some(amqp_url) = require(Service::RabbitMq) else {
        return;
    };
    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let healthy = runtime.block_on(Receiver::start(Answer::Status(200)));
    let failing = runtime.block_on(Receiver::start(Answer::Status(500)));
    let queue = webhookd_testkit::amqp::unique_queue("metrics");
    let key = add_user(&redis_url, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let mut command = webhookd(&redis_url);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_RETRY_SCHEDULE", "100ms")
        .env("WEBHOOKD_AMQP_URL", &amqp_url)
        .env("WEBHOOKD_AMQP_QUEUE", &queue);
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();
    for url in [&healthy.url, &failing.url] {
        let body = json!({"url": url, "events": ["generated_video_success"]}).to_string();
        let created: Value = client
            .post(format!("{}/v2/endpoint", server.base))
            .header("x-api-key", &key)
            .body(body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(created["code"], 0, "{created}");
    }
    let ingest = |body: String| {
        client
            .post(format!("{}/internal/events", server.base))
            .bearer_auth(token)
            .body(body)
            .send()
            .unwrap()
            .status()
    };
    for i in 0..20 {
        assert_eq!(ingest(messages(i..i + 1).next().unwrap()), 202);
    }
    assert_eq!(ingest(messages(0..1).next().unwrap()), 202, "a duplicate");
    assert_eq!(ingest("not json".into()), 400);
    let mut amqp_messages: Vec<String> = messages(100..110).collect();
    amqp_messages.push("[1]".into());
    runtime.block_on(webhookd_testkit::amqp::publish(
        &amqp_url,
        &queue,
        amqp_messages,
    ));

    runtime.block_on(healthy.wait_for(30, Duration::from_secs(20)));
    // Each failing delivery gets 2 attempts ("100ms" schedule), then dies.
    runtime.block_on(failing.wait_for(60, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(6)); // one backlog refresh

    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_documented_and_queried_series_exist(&exported_metric_names(&text));

    // Sensible values, not just names.
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing"))
    };
    assert!(value(r#"webhookd_deliveries_finished_total{result="delivered"}"#) >= 30.0);
    assert!(value(r#"webhookd_deliveries_finished_total{result="dead"}"#) >= 30.0);
    assert!((value("webhookd_deliveries_dead") - 30.0).abs() < f64::EPSILON);
    assert!((value("webhookd_amqp_connected") - 1.0).abs() < f64::EPSILON);
    assert!(
        text.contains(r#"webhookd_events_received_total{source="http",outcome="duplicate"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"webhookd_events_rejected_total{source="amqp",reason="not_an_object"} 1"#)
    );

    let dead = format!("{queue}.dead");
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &dead],
    ));
}

/// SPEC §12 and §3 through the real binary: `WEBHOOKD_EVENT_CATALOG`
/// replaces the JoggAI types (and its schema refuses bad `data`), and
/// `WEBHOOKD_USER_AGENT` is what receivers see. A catalog that does not
/// load stops the start, naming the file and the type.
#[test]
fn the_event_catalog_and_user_agent_come_from_settings() {
    use webhookd_testkit::receiver::{Answer, Receiver};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(204)));
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("events.toml");
    std::fs::write(
        &catalog,
        r#"
[[event_types]]
name = "invoice.paid"
description = "An invoice was paid in full."
schema = { type = "object", required = ["invoice_id"] }
"#,
    )
    .unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let token = "whi_process_test_token_0123456789";
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", token)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_EVENT_CATALOG", &catalog)
        .env("WEBHOOKD_USER_AGENT", "Acme-Webhooks/3.1");
    let server = Server::start_with(command);
    let client = reqwest::blocking::Client::new();

    let events: Value = client
        .get(format!("{}/v2/events", server.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        events["data"]["events"],
        json!(["invoice.paid"]),
        "{events}"
    );
    let created: Value = client
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", &key)
        .body(json!({"url": receiver.url, "events": ["invoice.paid"]}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");

    let ingest = |data: &str| {
        client
            .post(format!("{}/internal/events", server.base))
            .bearer_auth(token)
            .body(format!(
                r#"{{"event":"invoice.paid","username":"johndoe","data":{data}}}"#
            ))
            .send()
            .unwrap()
    };
    let refused = ingest(r#"{"amount":1}"#);
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().unwrap();
    assert!(
        refused["msg"].as_str().unwrap().contains("invoice_id"),
        "{refused}"
    );
    assert_eq!(ingest(r#"{"invoice_id":"in_1"}"#).status(), 202);
    let arrived = runtime.block_on(receiver.wait_for(1, Duration::from_secs(10)));
    assert_eq!(arrived.len(), 1);
    assert_eq!(
        arrived[0].headers.get("user-agent").unwrap(),
        "Acme-Webhooks/3.1"
    );
    drop(server);

    std::fs::write(&catalog, "[[event_types]]\nname = \"Invoice Paid\"\n").unwrap();
    let mut command = webhookd(&store);
    command.env("WEBHOOKD_EVENT_CATALOG", &catalog).arg("serve");
    let output = run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("events.toml"), "{stderr}");
    assert!(stderr.contains("event type names are 1-100"), "{stderr}");
}

/// SPEC §6: Redis down at start. webhookd starts anyway, answers `/healthz`
/// 200 and `/readyz` 503 (and every other route a 503 envelope) while it
/// retries, and serves normally once Redis answers — so an orchestrator can
/// start them in any order.
#[test]
fn redis_down_at_start_is_waited_for_with_readyz_503() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is needed under CI"
        );
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let free = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (redis_port, listen_port) = (free(()), free(()));
    let store = format!("redis://127.0.0.1:{redis_port}/0");
    let base = format!("http://127.0.0.1:{listen_port}");
    let mut command = webhookd(&store);
    command
        .env("WEBHOOKD_LISTEN", format!("127.0.0.1:{listen_port}"))
        .args(["serve", "--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut server = KillOnDrop(command.spawn().unwrap());
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/healthz").is_none() {
        assert!(Instant::now() < deadline, "webhookd never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get("/healthz").unwrap().status(), 200);
    let readyz = get("/readyz").unwrap();
    assert_eq!(readyz.status(), 503);
    let reason: Value = readyz.json().unwrap();
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .contains("store: unreachable"),
        "{reason}"
    );
    let api = get("/v2/endpoints").unwrap();
    assert_eq!(api.status(), 503);
    let envelope: Value = api.json().unwrap();
    assert_eq!(envelope["code"], 50000, "{envelope}");

    // Redis comes up: webhookd opens its store and serves.
    let _redis = KillOnDrop(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get("/readyz").is_some_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "webhookd never got ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = add_user(&store, "johndoe");
    let listed: Value = client
        .get(format!("{base}/v2/endpoints"))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["code"], 0, "{listed}");

    let stopped = std::process::Command::new("kill")
        .args(["-s", "TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `webhookd events publish` (the README's production step 2): a producer's
/// message, published from the command line, is consumed and delivered; a
/// malformed one is named before anything is sent; a queue that does not
/// exist is an error, not a message silently dropped.
#[test]
fn events_publish_hands_rabbitmq_an_event_that_gets_delivered() {
    use webhookd_testkit::receiver::{Answer, Receiver};

    let (Some(redis_url), Some(amqp_url)) = (require(Service::Redis), require(Service::RabbitMq))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(204)));
    let prefix = unique_prefix("publish");
    let queue = webhookd_testkit::amqp::unique_queue("publish");
    let mut command = amqp_command(&redis_url, &prefix, &amqp_url, &queue);
    command.env("WEBHOOKD_REQUIRE_HTTPS", "false");
    let server = Server::start_with(command);
    let mut command = amqp_command(&redis_url, &prefix, &amqp_url, &queue);
    command.args(["users", "add", "johndoe"]);
    let key = String::from_utf8(run(command).stdout).unwrap();
    let created: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", key.trim())
        .body(json!({"url": receiver.url, "events": ["generated_video_success"]}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");

    let publish = |args: &[&str]| {
        let mut command = amqp_command(&redis_url, &prefix, &amqp_url, &queue);
        command.args(["events", "publish"]).args(args);
        run(command)
    };
    let output = publish(&[
        r#"{"event": "generated_video_success", "username": "johndoe", "event_id": "evt_cli", "data": {"video_id": "v1"}}"#,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("published 1 event(s) to {queue}")
    );
    let arrived = runtime.block_on(receiver.wait_for(1, Duration::from_secs(10)));
    assert_eq!(arrived.len(), 1);
    let body: Value = serde_json::from_slice(&arrived[0].body).unwrap();
    assert_eq!(body["event_id"], "evt_cli");

    let output = publish(&[r#"{"event": "generated_video_success", "data": {}}"#]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("message 1: username is required"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = publish(&[
        "--queue",
        "no.such.queue.for.webhookd.tests",
        r#"{"event": "generated_video_success", "username": "johndoe", "data": {}}"#,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("queue \"no.such.queue.for.webhookd.tests\" does not exist"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(server);
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &format!("{queue}.dead")],
    ));
}
