//! What the process tests share: running the real `webhookd` binary with a
//! clean environment, and stopping it.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhookd_testkit::unique_prefix;

/// A webhookd command with a clean environment: no WEBHOOKD_* or RUST_LOG of
/// the developer's leaks in. `store` is the WEBHOOKD_STORE URL; Redis runs
/// get a key prefix of their own so they never meet another run's data.
pub fn webhookd(store: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhookd"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEBHOOKD_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
        .env("WEBHOOKD_STORE", store)
        .env("WEBHOOKD_LISTEN", "127.0.0.1:0");
    if store.starts_with("redis") {
        command.env("WEBHOOKD_REDIS_PREFIX", redis_prefix());
    }
    command
}

/// [`webhookd`] with its wall clock moved by `offset` (e.g. `+1h`),
/// through libfaketime preloaded into the process itself — not the
/// `faketime` wrapper, which forks: killing the wrapper would leave the
/// server running. `None` when libfaketime is not installed (a panic under
/// `CI=true`, which installs Debian's `faketime`).
pub fn webhookd_with_clock(store: &str, offset: &str) -> Option<Command> {
    let library = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists());
    let Some(library) = library else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libfaketime is not installed: CI=true requires it (apt-get install faketime)"
        );
        eprintln!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
        return None;
    };
    let mut command = webhookd(store);
    command
        .env("LD_PRELOAD", library)
        .env("FAKETIME", offset)
        // Leave the monotonic clock alone: only the wall clock is skewed.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    Some(command)
}

/// One prefix per test (the harness names each test's thread after it), the
/// same for every webhookd that test starts: tests running side by side
/// never see each other's users.
pub fn redis_prefix() -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| unique_prefix("process"));
    let test = std::thread::current().name().unwrap_or("main").to_owned();
    format!("{run}{test}:")
}

pub fn run(mut command: Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("webhookd runs")
}

/// `webhookd users add --create`: a key for `username`, the store made if
/// it is new.
pub fn add_user(store: &str, username: &str) -> String {
    let mut command = webhookd(store);
    command.args(["users", "add", "--create", username]);
    let output = run(command);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// A running `webhookd serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub listen: String,
    /// Every line the process logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(store: &str) -> Server {
        Server::start_with(webhookd(store))
    }

    pub fn start_with(mut command: Command) -> Server {
        command
            .args(["serve", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("webhookd starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        // Read the JSON log for the bound address, then keep draining it so
        // the process never blocks on a full pipe.
        // TEST_WEBHOOKD_LOGS=<dir> keeps each process's log there, to see
        // what a failing test's webhookd did.
        let mut kept = std::env::var_os("TEST_WEBHOOKD_LOGS").and_then(|dir| {
            std::fs::File::create(
                std::path::Path::new(&dir).join(format!("webhookd-{}.log", child.id())),
            )
            .ok()
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(file) = kept.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line.clone());
                }
                let log = serde_json::from_str::<Value>(&line).unwrap_or_default();
                if log["message"] == "webhookd is ready" {
                    let _ = sender.send(log["listen"].as_str().unwrap().to_owned());
                }
            }
        });
        let listen = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("webhookd reports ready");
        Server {
            child,
            base: format!("http://{listen}"),
            listen,
            log,
        }
    }

    /// What the process has logged so far, one line per entry.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(server: &Server, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &server.pid()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_for_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "webhookd did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sqlite_store(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/webhookd.db", dir.path().display())
}

/// `webhookd serve` on Redis under `prefix`, consuming `queue`, sending to
/// loopback receivers.
pub fn amqp_server(redis_url: &str, prefix: &str, amqp_url: &str, queue: &str) -> Server {
    Server::start_with(amqp_command(redis_url, prefix, amqp_url, queue))
}

/// The command [`amqp_server`] runs, for a test to add settings to.
pub fn amqp_command(redis_url: &str, prefix: &str, amqp_url: &str, queue: &str) -> Command {
    let mut command = webhookd(redis_url);
    command
        .env("WEBHOOKD_REDIS_PREFIX", prefix)
        .env("WEBHOOKD_AMQP_URL", amqp_url)
        .env("WEBHOOKD_AMQP_QUEUE", queue)
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    command
}

/// event_id → how many deliveries the store under `prefix` has of it, in
/// any status. Read from the delivery hashes themselves: the per-endpoint
/// listing keeps only the newest 10,000 delivered ids, fewer than the
/// stream tests make.
pub async fn deliveries_by_event(
    redis_url: &str,
    prefix: &str,
) -> std::collections::HashMap<String, usize> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    {
        let mut scan = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}*dlv:*"))
            .arg("COUNT")
            .arg(5000)
            .clone()
            .iter_async::<String>(&mut connection)
            .await
            .unwrap();
        while let Some(key) = scan.next_item().await {
            let key = key.unwrap();
            // `dlv:<id>` is the delivery; nothing else may be read as one.
            if !key.rsplit_once("dlv:").unwrap().1.contains(':') {
                keys.push(key);
            }
        }
    }
    let mut deliveries = std::collections::HashMap::new();
    for chunk in keys.chunks(1000) {
        let mut pipeline = redis::pipe();
        for key in chunk {
            pipeline.hget(key, "event_id");
        }
        let event_ids: Vec<Option<String>> = pipeline.query_async(&mut connection).await.unwrap();
        // A delivery purged between SCAN and HGET has no event id.
        for event_id in event_ids.into_iter().flatten() {
            *deliveries.entry(event_id).or_default() += 1;
        }
    }
    deliveries
}

/// Waits until RabbitMQ's `queue` has no message ready; whether it did.
pub fn queue_drained(
    runtime: &tokio::runtime::Runtime,
    amqp_url: &str,
    queue: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if runtime.block_on(webhookd_testkit::amqp::ready_count(amqp_url, queue)) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Creates an endpoint to `url` for `generated_video_success` through the
/// API, as the owner of `key`.
pub fn create_endpoint(server: &Server, key: &str, url: &str) {
    let created: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/endpoint", server.base))
        .header("x-api-key", key)
        .body(json!({"url": url, "events": ["generated_video_success"]}).to_string())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");
}
