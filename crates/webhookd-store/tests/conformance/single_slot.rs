//! Every script and every multi-key command the Redis store sends stays in
//! one Redis Cluster hash slot: `MONITOR` on a real server lists the keys
//! each one touches while every store operation runs, and each script run
//! (its `EVALSHA` and the commands inside it) and each command must name
//! keys of a single hash tag.

use std::collections::{BTreeSet, HashSet};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use webhookd_store::{DeliveryWindow, SecretSlot};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_and_command_touches_one_hash_tag() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("slots");
    let (lines, stop) = monitor(&url).await;
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    exercise_every_operation(&store).await;
    stop.cancel();
    let lines = lines.await.unwrap();

    let mut connection = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut scripts_seen = HashSet::new();
    let mut checked = 0;
    for group in runs(&lines) {
        let mut tags = BTreeSet::new();
        let mut ours = false;
        for command in &group {
            for key in keys_of(&mut connection, command).await {
                ours |= key.starts_with(&prefix);
                tags.insert(hash_tag(&key).unwrap_or(&key).to_owned());
            }
        }
        if !ours {
            continue; // another test's traffic on the shared server
        }
        if group[0][0].eq_ignore_ascii_case("evalsha") {
            scripts_seen.insert(group[0][1].clone());
        }
        checked += 1;
        assert_eq!(
            tags.len(),
            1,
            "one request touches several slots: {group:?}"
        );
    }
    // Every script of lua/ ran at least once (16 of them).
    assert!(
        scripts_seen.len() >= 16,
        "only {} scripts ran; the scenario misses some",
        scripts_seen.len()
    );
    assert!(checked > 50, "only {checked} requests seen");
}

/// Calls every operation of the store, so each script runs.
async fn exercise_every_operation(store: &RedisStore) {
    let (target, delivery_id, other) = exercise_users_and_endpoints(store).await;
    exercise_deliveries(store, &target, &delivery_id, &other).await;
}

async fn exercise_users_and_endpoints(store: &RedisStore) -> (Endpoint, String, Endpoint) {
    store.ping().await.unwrap();
    store.add_api_key("slots", "hash-1", 1).await.unwrap();
    store.user_for_api_key("hash-1").await.unwrap();
    store
        .add_portal_link("slots", "link-1", NOW_MS + 60_000, NOW_MS)
        .await
        .unwrap();
    store.user_for_portal_link("link-1", NOW_MS).await.unwrap();
    store.list_users().await.unwrap();
    store.setting_or_insert("slots-test", "1").await.unwrap();

    let (target, delivery_id) = one_delivery(store, "slots").await;
    let other = endpoint("slots", 2);
    create(store, &other).await;
    store.list_endpoints("slots").await.unwrap();
    store
        .replace_secret(
            "slots",
            &target.endpoint_id,
            SecretSlot::Current,
            &target.secret,
            "whsec_x",
        )
        .await
        .unwrap();
    store
        .update_endpoint(
            "slots",
            &other.endpoint_id,
            &EndpointSpec {
                ordering: None,
                filter: None,
                url: other.url.clone(),
                status: Some(EndpointStatus::Enabled),
                events: other.events.clone(),
                rate_limit: None,
                options: None,
            },
        )
        .await
        .unwrap();
    store
        .rotate_secret("slots", &other.endpoint_id, "whsec_y", Some(NOW_MS + 1000))
        .await
        .unwrap();

    (target, delivery_id, other)
}

async fn exercise_deliveries(
    store: &RedisStore,
    target: &Endpoint,
    delivery_id: &str,
    other: &Endpoint,
) {
    // Claimed, failed into a retry, handed back, claimed again, dead.
    let claims = claim_at(store, NOW_MS, 10).await;
    assert!(claims.iter().any(|c| c.delivery.delivery_id == delivery_id));
    let finished: Vec<FinishedAttempt> = claims
        .into_iter()
        .map(|claim| FinishedAttempt {
            claim,
            record: attempt(1, Some(500), "500"),
            result: AttemptResult::Dead,
        })
        .collect();
    store.record_attempts(&finished).await.unwrap();
    store
        .delivery_attempts("slots", &target.endpoint_id, delivery_id)
        .await
        .unwrap();
    store
        .retry_dead("slots", &target.endpoint_id, delivery_id, NOW_MS)
        .await
        .unwrap();
    let claims = claim_at(store, NOW_MS + 1, 10).await;
    for claim in &claims {
        store.release(claim, NOW_MS).await.unwrap();
    }
    let window = DeliveryWindow {
        from_ms: 0,
        until_ms: i64::MAX / 2,
    };
    store
        .count_dead("slots", &target.endpoint_id, window)
        .await
        .unwrap();
    store
        .recover("slots", &target.endpoint_id, window, NOW_MS, 10)
        .await
        .unwrap();
    let test_event = event("slots", "evt_test", &EventType::GENERATED_VIDEO_SUCCESS);
    store
        .create_test_delivery(&target.endpoint_id, &test_event, NOW_MS)
        .await
        .unwrap();
    let mut request = claim_request(NOW_MS, 10);
    request.room.insert(other.endpoint_id.clone(), 1);
    store
        .accept_and_claim(
            &[event("slots", "evt_2", &EventType::GENERATED_VIDEO_SUCCESS)],
            NOW_MS,
            &request,
        )
        .await
        .unwrap();
    store
        .list_deliveries(
            "slots",
            &target.endpoint_id,
            DeliveryStatus::Pending,
            &Page {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    store.delivery_stats(NOW_MS).await.unwrap();
    store
        .delete_endpoint("slots", &other.endpoint_id)
        .await
        .unwrap();
    store.sweep(NOW_MS + 100 * 24 * 3600 * 1000).await.unwrap();
    store.revoke_api_keys("slots").await.unwrap();
}

/// Every command the server ran while `stop` was not cancelled, as
/// `MONITOR` printed it: `(source, arguments)`, the source `lua` for a
/// command a script ran.
async fn monitor(
    url: &str,
) -> (
    tokio::task::JoinHandle<Vec<(String, Vec<String>)>>,
    tokio_util::sync::CancellationToken,
) {
    let address = url
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"MONITOR\r\n").await.unwrap();
    let mut reader = BufReader::new(read).lines();
    assert_eq!(reader.next_line().await.unwrap().as_deref(), Some("+OK"));
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let lines = tokio::spawn(async move {
        let _keep_open = write;
        let mut lines = Vec::new();
        loop {
            let line = tokio::select! {
                line = reader.next_line() => line.unwrap(),
                // Drain what the server already sent, then stop.
                () = stopped.cancelled() => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    while let Ok(Ok(Some(line))) = tokio::time::timeout(
                        std::time::Duration::from_millis(100),
                        reader.next_line(),
                    ).await {
                        lines.extend(parse_monitor_line(&line));
                    }
                    return lines;
                }
            };
            let Some(line) = line else { return lines };
            lines.extend(parse_monitor_line(&line));
        }
    });
    (lines, stop)
}

/// `1700000000.123456 [0 127.0.0.1:5555] "HSET" "key" …` → source and
/// the unquoted arguments.
fn parse_monitor_line(line: &str) -> Option<(String, Vec<String>)> {
    let rest = line.split_once(" [")?.1;
    let (source, arguments) = rest.split_once("] ")?;
    let source = source.split_once(' ')?.1.to_owned();
    let mut parsed = Vec::new();
    let mut chars = arguments.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut argument = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next()? {
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        argument.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                    }
                    'n' => argument.push('\n'),
                    'r' => argument.push('\r'),
                    't' => argument.push('\t'),
                    other => argument.push(other),
                },
                other => argument.push(other),
            }
        }
        parsed.push(argument);
    }
    Some((source, parsed))
}

/// Groups the monitored commands into requests: a script call with the
/// commands it ran (printed right after it; nothing interleaves with a
/// script), or one command.
fn runs(lines: &[(String, Vec<String>)]) -> Vec<Vec<Vec<String>>> {
    let mut groups: Vec<Vec<Vec<String>>> = Vec::new();
    for (source, arguments) in lines {
        match groups.last_mut() {
            Some(group) if source == "lua" => group.push(arguments.clone()),
            _ => groups.push(vec![arguments.clone()]),
        }
    }
    groups
}

/// The keys of one command, as the server itself finds them.
async fn keys_of(
    connection: &mut ::redis::aio::MultiplexedConnection,
    command: &[String],
) -> Vec<String> {
    let name = command[0].to_ascii_uppercase();
    if matches!(name.as_str(), "EVALSHA" | "EVAL") {
        let count: usize = command[2].parse().unwrap();
        return command[3..3 + count].to_vec();
    }
    let mut getkeys = ::redis::cmd("COMMAND");
    getkeys.arg("GETKEYS").arg(command);
    // Commands without keys (PING, SCRIPT LOAD, PUBLISH…) are refused by
    // GETKEYS: they touch no slot.
    getkeys.query_async(connection).await.unwrap_or_default()
}

/// What Redis Cluster hashes: the text between the first `{` and the next
/// `}`, when that is not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}
