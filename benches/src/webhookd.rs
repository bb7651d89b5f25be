//! Running the real webhookd binary for a scenario, and reading what it cost
//! (peak RSS and CPU seconds) from /proc before it stops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The webhookd binary next to this one, rebuilt first when run through
/// cargo so a benchmark never measures a stale build.
pub fn locate(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let me = std::env::current_exe()?;
    let directory = me.parent().context("the harness binary has a directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "webhookd", "--bin", "webhookd"]);
        if directory.ends_with("release") {
            build.arg("--release");
        }
        if !build.status()?.success() {
            bail!("building webhookd failed");
        }
    }
    let path = directory.join("webhookd");
    if !path.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p webhookd) or pass --webhookd",
            path.display()
        );
    }
    Ok(path)
}

/// A webhookd process, stopped on drop.
#[derive(Debug)]
pub struct Webhookd {
    child: Child,
    pub base_url: String,
    pub started_at: Instant,
    log_dir: tempfile::TempDir,
}

/// What a webhookd process cost, read while it still runs.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub peak_rss_mb: f64,
    pub cpu_seconds: f64,
}

impl Webhookd {
    /// Starts `binary` with `env` on a free port and waits until /healthz
    /// answers. Logs go to a file; warnings and errors are printed on failure.
    pub async fn start(binary: &Path, env: &[(&str, String)]) -> anyhow::Result<Webhookd> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_dir = tempfile::tempdir()?;
        let log = std::fs::File::create(log_dir.path().join("webhookd.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("WEBHOOKD_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEBHOOKD_LOG_FORMAT", "json")
            .env(
                "WEBHOOKD_LOG_LEVEL",
                std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .env("WEBHOOKD_REQUIRE_HTTPS", "false")
            .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Settings of the harness's own environment (WEBHOOKD_REDIS_WAIT_
        // REPLICAS=1, say) pass on, under the scenario's own.
        for (name, value) in std::env::vars().filter(|(name, _)| name.starts_with("WEBHOOKD_")) {
            if env.iter().all(|(own, _)| *own != name) {
                command.env(name, value);
            }
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let started_at = Instant::now();
        let child = command.spawn().context("starting webhookd")?;
        let process = Webhookd {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            started_at,
            log_dir,
        };
        process.wait_until_answering("/healthz").await?;
        Ok(process)
    }

    /// Waits until `path` answers 200 (e.g. /readyz once AMQP is up).
    pub async fn wait_until_answering(&self, path: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let answer = client.get(format!("{}{path}", self.base_url)).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "webhookd did not answer {path} within 30 s; log:\n{}",
            self.log_tail()
        )
    }

    /// Saves webhookd's /metrics to `$BENCH_METRICS_DIR/<scenario>.prom`
    /// when that variable is set: webhookd's own view of where time went.
    pub async fn save_metrics(&self, scenario: &str) {
        let Some(dir) = std::env::var_os("BENCH_METRICS_DIR") else {
            return;
        };
        let answer = reqwest::get(format!("{}/metrics", self.base_url)).await;
        if let Ok(text) = match answer {
            Ok(response) => response.text().await,
            Err(error) => Err(error),
        } {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{scenario}.prom")),
                text,
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak RSS and CPU seconds so far, from /proc.
    pub fn usage(&self) -> Usage {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_kb: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0.0);
        Usage {
            peak_rss_mb: peak_kb / 1024.0,
            cpu_seconds: crate::cpu::cpu_seconds_of(pid),
        }
    }

    /// The last warnings and errors webhookd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.log_dir.path().join("webhookd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Webhookd {
    fn drop(&mut self) {
        // For a closer look: BENCH_LOG_LEVEL=debug BENCH_KEEP_LOG=/tmp/w.log
        if let Some(keep) = std::env::var_os("BENCH_KEEP_LOG") {
            let _ = std::fs::copy(self.log_dir.path().join("webhookd.log"), keep);
        }
        // SIGTERM for a clean stop, then SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
