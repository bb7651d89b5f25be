//! The listener as an attacker meets it (SPEC §7): what a client sends never
//! becomes a metric label, idle and slow connections are closed on time and
//! cannot starve deliveries or `/healthz`, bodies must keep moving, hyper's
//! own refusals carry the JSON envelope, and the small things: a lowercase
//! `bearer`, counted token failures, `/readyz` without internals, and a
//! database file only its owner can read.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, add_user, create_endpoint, sqlite_store, webhookd};

const TOKEN: &str = "whi_process_test_token_0123456789";

fn start(store: &str) -> Server {
    let mut command = webhookd(store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    Server::start_with(command)
}

/// Sends raw bytes and reads whatever comes back until the server closes
/// (or 15 s pass).
fn exchange(server: &Server, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(&server.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn metrics(server: &Server) -> String {
    reqwest::blocking::get(format!("{}/metrics", server.base))
        .unwrap()
        .text()
        .unwrap()
}

/// Each new method name used to create a series of its own, forever.
#[test]
fn methods_a_client_invents_never_become_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sqlite_store(&dir));
    for i in 0..200 {
        let method = format!("M{i}{}", "X".repeat(500));
        exchange(
            &server,
            format!("{method} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
    let text = metrics(&server);
    assert!(!text.contains("XXXXX"), "an invented method became a label");
    assert!(
        text.lines()
            .any(|line| line.starts_with("webhookd_api_requests_total")
                && line.contains("method=\"other\"")),
        "invented methods count as other"
    );
    assert!(text.len() < 200_000, "/metrics is {} bytes", text.len());
}

/// A process-wide soft limit the test's own 2,200 sockets fit in.
fn raise_own_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).unwrap();
}

/// 2,000 connections that send nothing and 200 that send their headers a
/// byte a second, held open: an event is still delivered, `/healthz` still
/// answers at once, and the server closes them all once the head deadline
/// (10 s) has passed — while a keep-alive connection that finished a
/// request stays usable (idle limit 60 s).
#[test]
fn idle_and_slow_header_connections_starve_nothing_and_are_closed() {
    raise_own_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(webhookd_testkit::receiver::Receiver::start(
        webhookd_testkit::receiver::Answer::Status(200),
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let key = add_user(&store, "johndoe");
    let server = start(&store);
    let client = reqwest::blocking::Client::builder()
        .pool_idle_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    create_endpoint(&server, &key, &receiver.url);

    let opened = Instant::now();
    // From 200 addresses other than the checking client's (one address
    // may hold only max_connections_per_ip, 256).
    let idle: Vec<TcpStream> = (0..2000)
        .map(|n| connect_from(&format!("127.0.1.{}", n % 200 + 1), &server))
        .collect();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|n| {
            let mut stream = connect_from(&format!("127.0.2.{}", n + 1), &server);
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    eprintln!("connections open after {:?}", opened.elapsed());
    let trickle = std::thread::spawn(move || {
        for _ in 0..12 {
            for stream in &mut slow {
                let _ = stream.write_all(b"x");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        slow
    });

    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = client
            .get(format!("{}/healthz", server.base))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200);
        worst = worst.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "healthz checked after {:?}, worst {worst:?}",
        opened.elapsed()
    );
    assert!(
        worst < Duration::from_millis(100),
        "/healthz took {worst:?}"
    );
    let response = client
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(TOKEN)
        .body(r#"{"event":"generated_video_success","username":"johndoe","event_id":"evt_starved","data":{}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let arrived = runtime.block_on(receiver.wait_for(1, Duration::from_secs(5)));
    assert_eq!(arrived.len(), 1, "the event was delivered meanwhile");
    eprintln!("delivered after {:?}", opened.elapsed());
    assert!(
        opened.elapsed() < Duration::from_secs(10),
        "checked under load"
    );

    let slow = trickle.join().unwrap();
    assert!(opened.elapsed() > Duration::from_secs(11));
    let still_open = idle
        .into_iter()
        .chain(slow)
        .filter(|stream| !closed_by_server(stream))
        .count();
    assert_eq!(
        still_open, 0,
        "connections past the head deadline were left open"
    );
    // The pooled keep-alive connection of `client` is idle, not slow: it
    // still serves.
    let answer = client
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// Security round 3: the start of a second head sent in the same segment
/// as a whole first request was never timed: the connection was held for
/// the idle limit (49–60 s) instead of the head deadline (10 s).
#[test]
fn half_a_second_head_sent_with_the_first_request_gets_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sqlite_store(&dir));
    let mut stream = TcpStream::connect(&server.listen).unwrap();
    let sent = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /heal")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    // The first answer, then the close.
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("still open after {:?}: {error}", sent.elapsed()),
        }
    }
    let closed_after = sent.elapsed();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}: the second head had the idle limit"
    );
}

/// A connection to `server` from `source` (any 127.0.0.0/8 address is
/// this machine: a second client address without a second machine).
fn connect_from(source: &str, server: &Server) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    let target: std::net::SocketAddr = server.listen.parse().unwrap();
    socket.connect(&target.into()).unwrap();
    socket.into()
}

fn healthz_from(source: &str, server: &Server) -> String {
    let mut stream = connect_from(source, server);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The refusals counted for `reason`, read from `base` (a listener the
/// reading client is not refused by).
fn refused_count(base: &str, reason: &str) -> u64 {
    let line = format!("webhookd_listener_refused_total{{reason=\"{reason}\"}} ");
    reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .find_map(|text| text.strip_prefix(&line)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Security round 3: 4,096 connections from one client, one request each,
/// and `/healthz`, `/v2` and ingest timed out for everyone else, with
/// nothing logged or counted. One address now holds at most
/// `max_connections_per_ip`; the next is answered 503 and counted; another
/// address is served; and the probes have a listener of their own.
#[test]
fn one_client_address_cannot_hold_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut command = support::webhookd(&sqlite_store(&dir));
    command
        .env("WEBHOOKD_MAX_CONNECTIONS_PER_IP", "20")
        .env("WEBHOOKD_TRUSTED_PROXIES", "127.0.0.3/32")
        .env("WEBHOOKD_HEALTH_LISTEN", health.to_string());
    let server = Server::start_with(command);
    let held: Vec<TcpStream> = (0..20)
        .map(|_| connect_from("127.0.0.1", &server))
        .collect();
    // The 21st from the same address: answered at once, closed.
    let answer = healthz_from("127.0.0.1", &server);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("too many connections from 127.0.0.1"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":50000"#), "{answer}");
    // Another address is served meanwhile.
    let answer = healthz_from("127.0.0.2", &server);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(refused_count(&format!("http://{health}"), "per_ip") >= 1);
    // The probes' own listener serves the probes, and nothing else.
    let probe = |path: &str| {
        reqwest::blocking::get(format!("http://{health}{path}"))
            .unwrap()
            .status()
    };
    assert_eq!(probe("/healthz"), 200);
    assert_eq!(probe("/readyz"), 200);
    assert_eq!(probe("/metrics"), 200);
    assert_eq!(probe("/v2/endpoints"), 404);
    // Behind a trusted proxy (127.0.0.3), the forwarded client's requests
    // in flight are what is held: 20 bodies left hanging from one client.
    let hang = || -> Vec<TcpStream> {
        (0..20)
            .map(|_| {
                let mut stream = connect_from("127.0.0.3", &server);
                stream
                    .write_all(
                        b"POST /internal/events HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7, 127.0.0.3\r\nContent-Length: 100\r\n\r\n{",
                    )
                    .unwrap();
                stream
            })
            .collect()
    };
    let through_proxy = |client: &str| {
        let mut stream = connect_from("127.0.0.3", &server);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    // The 20 heads are read as the server gets to them, and each hanging
    // body is cut off `body_gap` (10 s) after it stops: a machine too busy
    // to read all 20 within that never sees them in flight together, so
    // such a batch is replaced by a fresh one.
    let mut hanging = hang();
    let mut hung_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = through_proxy("198.51.100.1, 203.0.113.7");
        if answer.contains("too many requests in flight from 203.0.113.7") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forwarded client was never held: {answer}"
        );
        if hung_at.elapsed() > Duration::from_secs(8) {
            hanging = hang();
            hung_at = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(through_proxy("203.0.113.8").starts_with("HTTP/1.1 200"));
    drop(hanging);
    drop(held);
    // Places are given back when connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !healthz_from("127.0.0.1", &server).starts_with("HTTP/1.1 200") {
        assert!(
            Instant::now() < deadline,
            "the address never got its places back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Near `max_connections`, the idlest keep-alive connection is closed to
/// make room: idle connections used to keep a client with a request in
/// the kernel's backlog for the whole idle limit (60 s).
#[test]
fn idle_keep_alives_make_room_near_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = support::webhookd(&sqlite_store(&dir));
    command.env("WEBHOOKD_MAX_CONNECTIONS", "32");
    let server = Server::start_with(command);
    // 32 keep-alive connections, each after one whole request: idle.
    let idle: Vec<TcpStream> = (0..32)
        .map(|n| {
            let mut stream = connect_from(&format!("127.0.0.{}", 10 + n), &server);
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buffer = [0_u8; 1024];
            let read = stream.read(&mut buffer).unwrap();
            assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();
    let asked = Instant::now();
    let answer = healthz_from("127.0.0.200", &server);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "waited {:?} behind idle connections",
        asked.elapsed()
    );
    assert!(refused_count(&server.base, "idle_evicted") >= 1);
    let closed = idle
        .iter()
        .filter(|stream| closed_by_server(stream))
        .count();
    assert!(closed >= 1, "no idle connection was closed");
}

/// Whether the server has closed `stream` (a read answers at once rather
/// than waiting).
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut byte = [0_u8; 1];
    !matches!(
        stream.read(&mut byte),
        Err(error) if matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    )
}

/// A body that stops arriving gets a 40000 and the connection is closed
/// (it used to be held forever).
#[test]
fn a_body_that_stops_moving_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sqlite_store(&dir));
    let started = Instant::now();
    let answer = exchange(
        &server,
        format!(
            "POST /internal/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    );
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":40000"), "{answer}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&took),
        "cut off after {took:?}"
    );
}

/// 400 and 431 come from hyper, before any route: they carry the envelope.
#[test]
fn requests_hyper_refuses_get_the_json_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sqlite_store(&dir));
    let garbage = exchange(&server, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    assert!(garbage.contains("application/json"), "{garbage}");
    let body = garbage.split("\r\n\r\n").nth(1).unwrap();
    let envelope: Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["code"], 40000);

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = exchange(&server, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let envelope: Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["code"], 40000);

    // A normal request on the same listener is untouched.
    let fine = exchange(
        &server,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

#[test]
fn a_lowercase_bearer_is_accepted_and_wrong_tokens_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&sqlite_store(&dir));
    let client = reqwest::blocking::Client::new();
    let post = |authorization: &str| {
        client
            .post(format!("{}/internal/events", server.base))
            .header("authorization", authorization)
            .body(r#"{"event":"generated_video_success","username":"nobody","data":{}}"#)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(post(&format!("bearer {TOKEN}")), 202);
    assert_eq!(post(&format!("BEARER {TOKEN}")), 202);
    for _ in 0..3 {
        assert_eq!(post("Bearer wrong-token-0123456789"), 401);
    }
    let text = metrics(&server);
    let failures = text
        .lines()
        .find(|line| {
            line.starts_with("webhookd_auth_failures_total")
                && line.contains("credential=\"ingest_token\"")
        })
        .unwrap_or_default();
    assert!(failures.ends_with(" 3"), "{failures:?}");
}

/// `/readyz` names what is down, not the client library's error text.
#[test]
fn readyz_names_what_is_down_without_internals() {
    let Some(url) = webhookd_testkit::require(webhookd_testkit::Service::Redis) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let target = webhookd_testkit::service_address(webhookd_testkit::Service::Redis);
    let proxy = runtime.block_on(webhookd_testkit::CuttableProxy::start(target));
    let _ = url;
    let server = start(&webhookd_testkit::Service::Redis.url_through(proxy.address));
    let ready = reqwest::blocking::get(format!("{}/readyz", server.base)).unwrap();
    assert_eq!(ready.status(), 200);
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = reqwest::blocking::get(format!("{}/readyz", server.base)).unwrap();
        if answer.status() == 503 {
            let body: Value = answer.json().unwrap();
            let reason = body["reason"].as_str().unwrap();
            assert!(
                reason == "store: unreachable" || reason.starts_with("store: no answer within"),
                "{reason}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never reported the store down");
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.restore();
}

#[cfg(unix)]
#[test]
fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    let _server = start(&store);
    let mode = std::fs::metadata(dir.path().join("webhookd.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
