//! The Redis Cluster client, replaced when it stops recovering by itself.
//!
//! The redis crate's async cluster client (1.8) can wedge during a
//! failover: a slot refresh that began while the old primary was down never
//! completes, and from then on every request waits out its response
//! timeout, for good — a process that would never deliver again
//! (`tests/cluster_failover.rs` caught it about one run in two: the log
//! shows a last "beginning slot refresh" with no "slot refresh complete").
//! So requests go through [`Cluster`], which watches their outcomes: when
//! every request has failed the way an unreachable cluster fails (timeouts,
//! dropped or refused connections) for [`REBUILD_AFTER`], it connects
//! afresh — topology read anew from the seed nodes — and swaps the new
//! connection in. A real outage just fails the attempt (at most one per
//! `REBUILD_AFTER`), and the old connection is kept.

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike as _;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisResult, Value};

/// How long requests must have failed, with no success between, before the
/// connection is replaced: longer than a failover takes to settle (node
/// timeout plus election, ≈ 4 s on the CI cluster) and the client's own
/// retries, so a client that recovers by itself is left to.
const REBUILD_AFTER: Duration = Duration::from_secs(10);

pub(super) struct Cluster {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// When the current run of failures began; `None` after a success.
    failing_since: Option<Instant>,
    /// The last time a new connection was tried.
    last_rebuild: Option<Instant>,
}

impl Cluster {
    pub(super) fn new(client: ClusterClient, connection: ClusterConnection) -> Self {
        Cluster {
            client,
            current: RwLock::new(connection),
            health: Mutex::new(Health::default()),
        }
    }

    /// The connection requests use now (a cheap handle).
    pub(super) fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let answer = self.connection().req_packed_command(cmd).await;
        self.observe(&answer).await;
        answer
    }

    pub(super) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let answer = self
            .connection()
            .req_packed_commands(pipeline, offset, count)
            .await;
        self.observe(&answer).await;
        answer
    }

    /// Notes how a request ended; replaces the connection once failures
    /// have lasted [`REBUILD_AFTER`].
    pub(super) async fn observe<T>(&self, answer: &RedisResult<T>) {
        let now = Instant::now();
        let rebuild = {
            let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
            match answer {
                Err(error) if unreachable(error) => {
                    let since = *health.failing_since.get_or_insert(now);
                    let due = now.duration_since(since) >= REBUILD_AFTER
                        && health
                            .last_rebuild
                            .is_none_or(|at| now.duration_since(at) >= REBUILD_AFTER);
                    if due {
                        health.last_rebuild = Some(now);
                    }
                    due
                }
                // An answer, even an error one, means the cluster is
                // reachable through this connection.
                _ => {
                    health.failing_since = None;
                    false
                }
            }
        };
        if !rebuild {
            return;
        }
        tracing::warn!(
            failing_for_s = REBUILD_AFTER.as_secs(),
            "Redis Cluster requests keep failing; connecting to the cluster afresh"
        );
        match self.client.get_async_connection().await {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::info!("connected to the Redis Cluster afresh");
            }
            Err(error) => {
                tracing::warn!(%error, "the Redis Cluster is unreachable; keeping the old connection");
            }
        }
    }
}

/// A failure that says the cluster (or the client's view of it) cannot be
/// reached — not one the server answered.
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.kind() == redis::ErrorKind::ClusterConnectionNotFound
}
