//! A `redis-server` of a test's own (or the campaign's): one that can be
//! killed, frozen, made a replica or restarted from its append-only file
//! without touching the machine's shared Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a private server runs.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// A replica of this primary.
    pub replica_of: Option<std::net::SocketAddr>,
    /// Persist to an append-only file in this directory, fsynced on every
    /// write (`appendfsync always`), so a kill -9 loses no answered write.
    pub append_only_in: Option<PathBuf>,
}

/// A running private `redis-server`, stopped when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    port: u16,
    options: RedisOptions,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers.
    pub fn start(options: RedisOptions) -> std::io::Result<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = spawn(port, &options)?;
        let redis = PrivateRedis {
            child,
            port,
            options,
        };
        redis.wait_until_answering()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// One command's answer as text, `None` when it does not answer.
    pub fn query(&self, command: &[&str]) -> Option<String> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let (name, args) = command.split_first()?;
        let mut cmd = redis::cmd(name);
        for arg in args {
            cmd.arg(*arg);
        }
        let value: redis::Value = cmd.query(&mut connection).ok()?;
        Some(match value {
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => format!("{other:?}"),
        })
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server.
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -{name} failed")))
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (from its append-only file, when
    /// it has one) and waits until it answers.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.child = spawn(self.port, &self.options)?;
        self.wait_until_answering()
    }

    fn wait_until_answering(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Loading a large append-only file answers LOADING until done.
        while self
            .query(&["PING"])
            .is_none_or(|answer| !answer.contains("PONG"))
        {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "redis-server on {} never answered",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn spawn(port: u16, options: &RedisOptions) -> std::io::Result<Child> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match &options.append_only_in {
        Some(directory) => {
            command
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .arg("--dir")
                .arg(directory);
        }
        None => {
            command.args(["--appendonly", "no"]);
        }
    }
    if let Some(primary) = options.replica_of {
        command.args([
            "--replicaof",
            &primary.ip().to_string(),
            &primary.port().to_string(),
        ]);
    }
    command.spawn()
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        self.kill();
    }
}
