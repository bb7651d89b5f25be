//! The system under test: webhookd processes on one Redis (each through a
//! link the campaign can cut or freeze) and one RabbitMQ queue — or one
//! process on the embedded store taking events over HTTP.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use webhookd_testkit::CuttableProxy;

/// libfaketime, from Debian's `faketime`.
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Where the processes keep state and take events from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Redis (each process through its own [`CuttableProxy`]) and RabbitMQ.
    Redis {
        url: String,
        address: std::net::SocketAddr,
        prefix: String,
        amqp_url: String,
        queue: String,
    },
    /// The embedded SQLite store (`sqlite://…`) and HTTP ingest.
    Embedded { store: String },
}

/// What every webhookd process of a run shares.
#[derive(Debug, Clone)]
pub struct Setup {
    pub binary: PathBuf,
    pub mode: Mode,
    pub admin_token: String,
    pub ingest_token: String,
    pub endpoint_concurrency: usize,
}

/// One webhookd process and its link to Redis (none on the embedded store).
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    pub port: u16,
    pub store_link: Option<CuttableProxy>,
    log: PathBuf,
    stopped: bool,
}

impl Process {
    pub async fn start(setup: &Setup, logs: &std::path::Path, n: usize) -> anyhow::Result<Process> {
        let store_link = match &setup.mode {
            Mode::Redis { address, .. } => Some(CuttableProxy::start(*address).await),
            Mode::Embedded { .. } => None,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut process = Process {
            child: None,
            port,
            store_link,
            log: logs.join(format!("webhookd-{n}.log")),
            stopped: false,
        };
        process.spawn(setup)?;
        process.wait_until_ready().await?;
        Ok(process)
    }

    /// The name its RabbitMQ connection carries.
    pub fn connection_name(&self) -> String {
        format!("webhookd@127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, setup: &Setup) -> anyhow::Result<()> {
        self.spawn_with_clock(setup, None)
    }

    /// Starts it with its wall clock moved by `offset` (`+1h`), through
    /// libfaketime preloaded into the process itself.
    fn spawn_with_clock(&mut self, setup: &Setup, offset: Option<&str>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&setup.binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("WEBHOOKD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("WEBHOOKD_ADMIN_TOKEN", &setup.admin_token)
            .env("WEBHOOKD_INGEST_TOKEN", &setup.ingest_token)
            .env("WEBHOOKD_REQUIRE_HTTPS", "false")
            .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env(
                "WEBHOOKD_ENDPOINT_CONCURRENCY",
                setup.endpoint_concurrency.to_string(),
            )
            // A lease of 4 × 1 s + 30 s; a schedule long enough that a
            // flaky receiver is always delivered to in the end.
            .env("WEBHOOKD_DELIVERY_TIMEOUT", "1s")
            .env(
                "WEBHOOKD_RETRY_SCHEDULE",
                "1s,1s,2s,2s,3s,3s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s,5s",
            )
            .env("WEBHOOKD_LOG_FORMAT", "json")
            .env("WEBHOOKD_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        match (&setup.mode, &self.store_link) {
            (
                Mode::Redis {
                    url,
                    address,
                    prefix,
                    amqp_url,
                    queue,
                },
                Some(link),
            ) => {
                let store = url.replacen(&address.to_string(), &link.address.to_string(), 1);
                command
                    .env("WEBHOOKD_STORE", store)
                    .env("WEBHOOKD_REDIS_PREFIX", prefix)
                    .env("WEBHOOKD_AMQP_URL", amqp_url)
                    .env("WEBHOOKD_AMQP_QUEUE", queue)
                    .env("WEBHOOKD_AMQP_HEARTBEAT", "2s");
            }
            (Mode::Embedded { store }, _) | (Mode::Redis { url: store, .. }, None) => {
                command.env("WEBHOOKD_STORE", store);
            }
        }
        if let Some(offset) = offset {
            command
                .env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.spawn().context("starting webhookd")?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let answer = client
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
                .await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "webhookd on {} never became ready (log: {})",
            self.port,
            self.log.display()
        )
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self, setup: &Setup) -> anyhow::Result<()> {
        self.restart_with_clock(setup, None).await
    }

    /// [`Process::restart`], its wall clock moved by `offset`.
    pub async fn restart_with_clock(
        &mut self,
        setup: &Setup,
        offset: Option<&str>,
    ) -> anyhow::Result<()> {
        self.kill();
        if let Some(link) = &self.store_link {
            link.restore();
        }
        self.spawn_with_clock(setup, offset)?;
        self.wait_until_ready().await
    }

    /// SIGTERM, and waits (up to `within`) for the process to exit.
    pub async fn terminate(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn freeze(&mut self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            self.stopped = frozen;
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.stopped {
            self.freeze(false);
        }
        self.kill();
    }
}
