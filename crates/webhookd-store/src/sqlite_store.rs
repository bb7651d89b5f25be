//! The embedded store: one SQLite file.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a transaction that
//! returned survives a crash of webhookd *and* of the machine. One
//! connection serves the process, guarded by a mutex and used only from
//! `spawn_blocking` threads; SQLite serialises writers anyway, and
//! `BEGIN IMMEDIATE` plus a busy timeout keep several processes on one file
//! correct.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, ids};

use crate::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, CreateOutcome, DEDUP_WINDOW_MS,
    Delivery, DeliveryStats, DeliveryStatus, EndpointChanges, FinishedAttempt, Page, Retention,
    RetryOutcome, Store, StoreError, SweepReport, UserSummary, event_type_from_str,
    events_from_json, events_to_json, new_delivery, status_from_str,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: users, API keys, endpoints, settings.
    "CREATE TABLE users (
         username   TEXT PRIMARY KEY,
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE api_keys (
         key_hash   TEXT PRIMARY KEY,
         username   TEXT NOT NULL REFERENCES users(username),
         created_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX api_keys_by_user ON api_keys(username);
     CREATE TABLE endpoints (
         seq         INTEGER PRIMARY KEY AUTOINCREMENT,
         endpoint_id TEXT NOT NULL UNIQUE,
         username    TEXT NOT NULL,
         url         TEXT NOT NULL,
         secret      TEXT NOT NULL,
         status      TEXT NOT NULL,
         events      TEXT NOT NULL,
         created_at  INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX endpoints_by_user ON endpoints(username, seq);
     CREATE TABLE settings (
         name  TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;",
    // 2: de-duplication, deliveries and their attempts.
    "CREATE TABLE seen_events (
         username   TEXT NOT NULL,
         event_id   TEXT NOT NULL,
         expires_at INTEGER NOT NULL,
         PRIMARY KEY (username, event_id)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX seen_events_by_expiry ON seen_events(expires_at);
     CREATE TABLE deliveries (
         delivery_id     TEXT PRIMARY KEY,
         username        TEXT NOT NULL,
         endpoint_id     TEXT NOT NULL,
         event_id        TEXT NOT NULL,
         event_type      TEXT NOT NULL,
         body            TEXT NOT NULL,
         status          TEXT NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL,
         lease_owner     TEXT,
         lease_until     INTEGER,
         created_at      INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
     CREATE INDEX deliveries_by_endpoint ON deliveries(endpoint_id, status, delivery_id);
     CREATE TABLE attempts (
         delivery_id TEXT NOT NULL,
         attempt     INTEGER NOT NULL,
         started_at  INTEGER NOT NULL,
         duration_ms INTEGER NOT NULL,
         status_code INTEGER,
         reason      TEXT NOT NULL,
         response    TEXT,
         PRIMARY KEY (delivery_id, attempt)
     ) STRICT, WITHOUT ROWID;",
    // 3: counting dead deliveries for the metrics without a table scan.
    "CREATE INDEX deliveries_failed ON deliveries(status) WHERE status = 'failed';",
    // 4: claiming endpoint by endpoint (see READY_ENDPOINTS).
    "CREATE INDEX deliveries_pending_by_endpoint ON deliveries(endpoint_id, next_attempt_at)
         WHERE status = 'pending';",
    // 5: retention, one-attempt re-sends, and deleting endpoints in steps.
    // Deliveries finished before this migration are kept the default time
    // from their creation.
    "ALTER TABLE deliveries ADD COLUMN last_attempt INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE deliveries ADD COLUMN remove_at INTEGER;
     UPDATE deliveries SET remove_at = created_at + 604800000 WHERE status = 'delivered';
     UPDATE deliveries SET remove_at = created_at + 2592000000 WHERE status = 'failed';
     CREATE INDEX deliveries_by_removal ON deliveries(remove_at) WHERE remove_at IS NOT NULL;
     CREATE TABLE deleted_endpoints (endpoint_id TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;",
];

/// Most rows one sweep step removes per kind: one short transaction.
const SWEEP_BATCH: usize = 1000;

/// Endpoints with a due delivery, earliest due first. A skip scan: one index
/// seek per endpoint with pending deliveries, however long its backlog.
/// ?1: now, ?2: most endpoints.
const READY_ENDPOINTS: &str = "
    WITH RECURSIVE pending(endpoint_id) AS (
        SELECT MIN(endpoint_id) FROM deliveries WHERE status = 'pending'
        UNION ALL
        SELECT (SELECT MIN(d.endpoint_id) FROM deliveries d
                WHERE d.status = 'pending' AND d.endpoint_id > pending.endpoint_id)
        FROM pending WHERE pending.endpoint_id IS NOT NULL
    )
    SELECT endpoint_id FROM (
        SELECT endpoint_id,
               (SELECT MIN(d.next_attempt_at) FROM deliveries d
                WHERE d.status = 'pending' AND d.endpoint_id = pending.endpoint_id) AS first_due
        FROM pending WHERE endpoint_id IS NOT NULL
    )
    WHERE first_due <= ?1 ORDER BY first_due LIMIT ?2";

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    retention: Retention,
    changes: Arc<EndpointChanges>,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) and migrates the
    /// database at `path`.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let connection = tokio::task::spawn_blocking(move || open_blocking(Path::new(&path)))
            .await
            .map_err(|e| StoreError::Failed(Box::new(e)))??;
        Ok(SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
            retention: Retention::default(),
            changes: Arc::default(),
        })
    }

    /// Keeps finished deliveries as `retention` says (default: SPEC §4).
    #[must_use]
    pub fn with_retention(self, retention: Retention) -> Self {
        SqliteStore { retention, ..self }
    }

    /// Runs `work` on a blocking thread with the connection.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-done
            // transaction behind (rusqlite rolls back on drop), so a
            // poisoned mutex is still safe to use.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Failed(Box::new(e)))?
    }
}

fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed(Box::new(e)))?;
    }
    let mut connection = Connection::open(path).map_err(sqlite_error)?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite_error)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(sqlite_error)?;
    migrate(&mut connection)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(sqlite_error)?;
    let applied: usize = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite_error)?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this webhookd ({}); upgrade webhookd",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        transaction.execute_batch(migration).map_err(sqlite_error)?;
        transaction
            .execute_batch(&format!("PRAGMA user_version = {}", index + 1))
            .map_err(sqlite_error)?;
    }
    transaction.commit().map_err(sqlite_error)
}

/// Lock contention and I/O trouble are "unavailable"; the rest is a failure.
fn sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure) => {
            StoreError::Unavailable(Box::new(error))
        }
        _ => StoreError::Failed(Box::new(error)),
    }
}

/// Fresh deliveries being leased as they are accepted (the fast path), as
/// [`Store::claim_due`] would lease them under `request`.
struct Leasing<'a> {
    request: &'a ClaimRequest,
    claims: Vec<Claim>,
    /// Room used so far per endpoint.
    taken: HashMap<String, usize>,
}

impl<'a> Leasing<'a> {
    fn new(request: &'a ClaimRequest) -> Self {
        Leasing {
            request,
            claims: Vec::new(),
            taken: HashMap::new(),
        }
    }

    /// A lease token for a fresh delivery to `endpoint_id`, if there is room.
    fn lease(&mut self, endpoint_id: &str) -> Option<String> {
        let room = self
            .request
            .room
            .get(endpoint_id)
            .copied()
            .unwrap_or(self.request.per_endpoint);
        let taken = self.taken.entry(endpoint_id.to_owned()).or_default();
        if self.claims.len() >= self.request.limit || *taken >= room {
            return None;
        }
        *taken += 1;
        Some(ids::new_lease_token())
    }
}

/// De-duplicates one event and writes its deliveries, leasing what
/// `leasing` has room for, inside the caller's transaction.
fn accept_one(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    now_ms: i64,
    leasing: &mut Leasing<'_>,
) -> Result<Acceptance, StoreError> {
    // Insert, or take over an entry whose window has passed; no row
    // changed means the event_id is still remembered.
    let fresh = tx
        .prepare_cached(
            "INSERT INTO seen_events (username, event_id, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (username, event_id) DO UPDATE SET expires_at = excluded.expires_at
             WHERE seen_events.expires_at <= ?4",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                event.username,
                event.event_id,
                now_ms + DEDUP_WINDOW_MS,
                now_ms
            ])
        })
        .map_err(sqlite_error)?;
    if fresh == 0 {
        return Ok(Acceptance::Duplicate);
    }
    let mut select = tx
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE username = ?1 AND status = 'enabled' ORDER BY seq"
        ))
        .map_err(sqlite_error)?;
    let endpoints = select
        .query_map([&event.username], read_endpoint)
        .map_err(sqlite_error)?
        .map(|row| row.map_err(sqlite_error).and_then(RawEndpoint::parse))
        .collect::<Result<Vec<_>, _>>()?;
    let body = event.body();
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, username, endpoint_id, event_id, event_type, body,
                 status, attempts, next_attempt_at, created_at, lease_owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?9)",
        )
        .map_err(sqlite_error)?;
    let mut deliveries = Vec::new();
    for endpoint in endpoints
        .iter()
        .filter(|endpoint| endpoint.wants(event.event_type))
    {
        let delivery = new_delivery(
            ids::new_delivery_id(),
            event,
            &endpoint.endpoint_id,
            &body,
            now_ms,
        );
        let lease = leasing.lease(&endpoint.endpoint_id);
        let due_at = if lease.is_some() {
            leasing.request.lease_until_ms
        } else {
            now_ms
        };
        insert
            .execute(params![
                delivery.delivery_id,
                delivery.username,
                delivery.endpoint_id,
                delivery.event_id,
                delivery.event_type.as_str(),
                delivery.body,
                due_at,
                now_ms,
                lease
            ])
            .map_err(sqlite_error)?;
        if let Some(lease) = lease {
            leasing.claims.push(Claim {
                delivery: Delivery {
                    next_attempt_at: due_at,
                    ..delivery.clone()
                },
                url: endpoint.url.clone(),
                secret: endpoint.secret.clone(),
                lease,
            });
        }
        deliveries.push(delivery);
    }
    Ok(Acceptance::Accepted { deliveries })
}

/// Records one attempt inside `tx` if its lease still holds; a finished
/// delivery is due for removal at the end of its retention.
fn record_one_attempt(
    tx: &rusqlite::Transaction<'_>,
    retention: &Retention,
    FinishedAttempt {
        claim,
        record,
        result,
    }: &FinishedAttempt,
) -> Result<bool, StoreError> {
    let finished_ms = record
        .started_at
        .saturating_add(i64::try_from(record.duration_ms).unwrap_or(i64::MAX));
    let remove_at = retention.removal_at(finished_ms, *result);
    let (status, next_attempt_at) = match result {
        AttemptResult::Delivered => (DeliveryStatus::Delivered, claim.delivery.next_attempt_at),
        AttemptResult::RetryAt(at) => (DeliveryStatus::Pending, *at),
        AttemptResult::Dead => (DeliveryStatus::Failed, claim.delivery.next_attempt_at),
    };
    let updated = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts = ?5, lease_owner = NULL,
                 status = ?1, next_attempt_at = ?2, remove_at = ?6,
                 last_attempt = last_attempt AND ?6 IS NULL
             WHERE delivery_id = ?3 AND lease_owner = ?4",
        )
        .and_then(|mut update| {
            update.execute(params![
                status.as_str(),
                next_attempt_at,
                claim.delivery.delivery_id,
                claim.lease,
                record.attempt,
                remove_at
            ])
        })
        .map_err(sqlite_error)?;
    if updated == 0 {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts
             (delivery_id, attempt, started_at, duration_ms, status_code, reason, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            claim.delivery.delivery_id,
            record.attempt,
            record.started_at,
            i64::try_from(record.duration_ms).unwrap_or(i64::MAX),
            record.status_code,
            record.reason,
            record.response
        ])
    })
    .map_err(sqlite_error)?;
    Ok(true)
}

/// Leases up to `room` due deliveries of one endpoint into `claims`.
fn claim_from_endpoint(
    tx: &rusqlite::Transaction<'_>,
    request: &ClaimRequest,
    endpoint_id: &str,
    room: usize,
    claims: &mut Vec<Claim>,
) -> Result<(), StoreError> {
    let due = {
        let mut select = tx
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS_D}, e.url, e.secret, e.status
                 FROM deliveries d
                 LEFT JOIN endpoints e ON e.endpoint_id = d.endpoint_id AND e.username = d.username
                 WHERE d.status = 'pending' AND d.endpoint_id = ?1 AND d.next_attempt_at <= ?2
                 ORDER BY d.next_attempt_at LIMIT ?3"
            ))
            .map_err(sqlite_error)?;
        let rows = select
            .query_map(
                params![
                    endpoint_id,
                    request.now_ms,
                    i64::try_from(room).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok((
                        read_delivery(row)?,
                        row.get::<_, Option<String>>(11)?,
                        row.get::<_, Option<String>>(12)?,
                        row.get::<_, Option<String>>(13)?,
                    ))
                },
            )
            .map_err(sqlite_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)?
    };
    for (raw, url, secret, status) in due {
        let mut delivery: Delivery = raw.parse()?;
        match (url, secret, status.as_deref()) {
            (Some(url), Some(secret), Some("enabled")) => {
                let lease = ids::new_lease_token();
                tx.execute(
                    "UPDATE deliveries SET next_attempt_at = ?1, lease_owner = ?2 WHERE delivery_id = ?3",
                    params![request.lease_until_ms, lease, delivery.delivery_id],
                )
                .map_err(sqlite_error)?;
                delivery.next_attempt_at = request.lease_until_ms;
                claims.push(Claim {
                    delivery,
                    url,
                    secret,
                    lease,
                });
            }
            (Some(_), Some(_), _) => {
                tx.execute(
                    "UPDATE deliveries SET next_attempt_at = ?1 WHERE delivery_id = ?2",
                    params![request.park_until_ms, delivery.delivery_id],
                )
                .map_err(sqlite_error)?;
            }
            _ => delete_deliveries(tx, "delivery_id", &delivery.delivery_id)?,
        }
    }
    Ok(())
}

/// One bounded step of [`Store::sweep`]: at most [`SWEEP_BATCH`] each of
/// forgotten event ids, deliveries past retention, and deliveries of a
/// deleted endpoint.
fn sweep_step(tx: &rusqlite::Transaction<'_>, now_ms: i64) -> Result<SweepReport, StoreError> {
    let forgotten = tx
        .prepare_cached(
            "DELETE FROM seen_events WHERE (username, event_id) IN
                 (SELECT username, event_id FROM seen_events WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .and_then(|mut delete| delete.execute(params![now_ms, SWEEP_BATCH]))
        .map_err(sqlite_error)?;
    let expired = delete_delivery_batch(
        tx,
        "SELECT delivery_id FROM deliveries WHERE remove_at <= ?1 LIMIT ?2",
        now_ms,
    )?;
    let deleted_endpoint: Option<String> = tx
        .query_row(
            "SELECT endpoint_id FROM deleted_endpoints LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite_error)?;
    let mut orphans = 0;
    if let Some(endpoint_id) = deleted_endpoint {
        orphans = delete_delivery_batch(
            tx,
            "SELECT delivery_id FROM deliveries WHERE endpoint_id = ?1 LIMIT ?2",
            &endpoint_id,
        )?;
        if orphans < SWEEP_BATCH {
            tx.execute(
                "DELETE FROM deleted_endpoints WHERE endpoint_id = ?1",
                [&endpoint_id],
            )
            .map_err(sqlite_error)?;
        }
    }
    let full = |n: usize| n == SWEEP_BATCH;
    Ok(SweepReport {
        removed: (expired + orphans) as u64,
        more: full(forgotten) || full(expired) || full(orphans),
    })
}

/// Deletes the deliveries (and their attempts) that `select` lists for
/// `(?1 = value, ?2 = SWEEP_BATCH)`; returns how many.
fn delete_delivery_batch(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    value: impl rusqlite::ToSql,
) -> Result<usize, StoreError> {
    let ids: Vec<String> = tx
        .prepare_cached(select)
        .and_then(|mut statement| {
            statement
                .query_map(params![value, SWEEP_BATCH], |row| row.get(0))?
                .collect()
        })
        .map_err(sqlite_error)?;
    let mut delete_attempts = tx
        .prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")
        .map_err(sqlite_error)?;
    let mut delete_delivery = tx
        .prepare_cached("DELETE FROM deliveries WHERE delivery_id = ?1")
        .map_err(sqlite_error)?;
    for id in &ids {
        delete_attempts.execute([id]).map_err(sqlite_error)?;
        delete_delivery.execute([id]).map_err(sqlite_error)?;
    }
    Ok(ids.len())
}

/// Deletes deliveries (and their attempts) whose `column` equals `value`.
fn delete_deliveries(
    tx: &rusqlite::Transaction<'_>,
    column: &str,
    value: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("DELETE FROM attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries WHERE {column} = ?1)"),
        [value],
    )
    .map_err(sqlite_error)?;
    tx.execute(
        &format!("DELETE FROM deliveries WHERE {column} = ?1"),
        [value],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

/// [`DELIVERY_COLUMNS`] qualified with the `d` alias, for joins.
const DELIVERY_COLUMNS_D: &str = "d.delivery_id, d.username, d.endpoint_id, d.event_id, d.event_type, \
     d.body, d.status, d.attempts, d.next_attempt_at, d.created_at, d.last_attempt";

const DELIVERY_COLUMNS: &str = "delivery_id, username, endpoint_id, event_id, event_type, body, \
     status, attempts, next_attempt_at, created_at, last_attempt";

/// A delivery row before its enums are parsed.
struct RawDelivery {
    delivery_id: String,
    username: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    body: String,
    status: String,
    attempts: u32,
    next_attempt_at: i64,
    created_at: i64,
    last_attempt: bool,
}

fn read_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        delivery_id: row.get(0)?,
        username: row.get(1)?,
        endpoint_id: row.get(2)?,
        event_id: row.get(3)?,
        event_type: row.get(4)?,
        body: row.get(5)?,
        status: row.get(6)?,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        created_at: row.get(9)?,
        last_attempt: row.get(10)?,
    })
}

impl RawDelivery {
    fn parse(self) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            event_type: event_type_from_str(&self.event_type)?,
            status: self.status.parse()?,
            delivery_id: self.delivery_id,
            username: self.username,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            body: self.body,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            created_at: self.created_at,
            last_attempt: self.last_attempt,
        })
    }
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, secret, status, events, username, created_at";

fn read_endpoint(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEndpoint> {
    Ok(RawEndpoint {
        endpoint_id: row.get(0)?,
        url: row.get(1)?,
        secret: row.get(2)?,
        status: row.get(3)?,
        events: row.get(4)?,
        username: row.get(5)?,
        created_at: row.get(6)?,
    })
}

/// A row before its status and events are parsed.
struct RawEndpoint {
    endpoint_id: String,
    url: String,
    secret: String,
    status: String,
    events: String,
    username: String,
    created_at: i64,
}

impl RawEndpoint {
    fn parse(self) -> Result<Endpoint, StoreError> {
        Ok(Endpoint {
            status: status_from_str(&self.status)?,
            events: events_from_json(&self.events)?,
            endpoint_id: self.endpoint_id,
            url: self.url,
            secret: self.secret,
            username: self.username,
            created_at: self.created_at,
        })
    }
}

fn select_endpoint(
    connection: &Connection,
    username: &str,
    endpoint_id: &str,
) -> Result<Option<Endpoint>, StoreError> {
    connection
        .query_row(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE username = ?1 AND endpoint_id = ?2"
            ),
            params![username, endpoint_id],
            read_endpoint,
        )
        .optional()
        .map_err(sqlite_error)?
        .map(RawEndpoint::parse)
        .transpose()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sqlite_error)
        })
        .await
    }

    async fn add_api_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (username, key_hash) = (username.to_owned(), key_hash.to_owned());
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            tx.execute(
                "INSERT INTO users (username, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![username, now],
            )
            .map_err(sqlite_error)?;
            tx.execute(
                "INSERT INTO api_keys (key_hash, username, created_at) VALUES (?1, ?2, ?3)",
                params![key_hash, username, now],
            )
            .map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        let key_hash = key_hash.to_owned();
        self.call(move |c| {
            c.prepare_cached("SELECT username FROM api_keys WHERE key_hash = ?1")
                .and_then(|mut statement| {
                    statement.query_row([key_hash], |row| row.get(0)).optional()
                })
                .map_err(sqlite_error)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.call(|c| {
            let mut statement = c
                .prepare(
                    "SELECT u.username, u.created_at, COUNT(k.key_hash)
                     FROM users u LEFT JOIN api_keys k ON k.username = u.username
                     GROUP BY u.username ORDER BY u.username",
                )
                .map_err(sqlite_error)?;
            let rows = statement
                .query_map([], |row| {
                    Ok(UserSummary {
                        username: row.get(0)?,
                        created_at: row.get(1)?,
                        api_keys: row.get(2)?,
                    })
                })
                .map_err(sqlite_error)?;
            rows.collect::<Result<_, _>>().map_err(sqlite_error)
        })
        .await
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        let username = username.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM api_keys WHERE username = ?1", [username])
                .map_err(sqlite_error)
        })
        .await
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        let endpoint = endpoint.clone();
        self.call(move |c| {
            // IMMEDIATE takes the write lock before the count, so no other
            // writer (thread or process) can slip in between count and insert.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_error)?;
            let held: usize = tx
                .query_row("SELECT COUNT(*) FROM endpoints WHERE username = ?1", [&endpoint.username], |row| {
                    row.get(0)
                })
                .map_err(sqlite_error)?;
            if held >= limit {
                return Ok(CreateOutcome::LimitReached);
            }
            tx.execute(
                "INSERT INTO endpoints (endpoint_id, url, secret, status, events, username, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    endpoint.endpoint_id,
                    endpoint.url,
                    endpoint.secret,
                    endpoint.status.as_str(),
                    events_to_json(&endpoint.events),
                    endpoint.username,
                    endpoint.created_at
                ],
            )
            .map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(CreateOutcome::Created)
        })
        .await
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        let username = username.to_owned();
        self.call(move |c| {
            let mut statement = c
                .prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE username = ?1 ORDER BY seq"
                ))
                .map_err(sqlite_error)?;
            let rows = statement
                .query_map([username], read_endpoint)
                .map_err(sqlite_error)?;
            rows.map(|row| row.map_err(sqlite_error).and_then(RawEndpoint::parse))
                .collect()
        })
        .await
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        self.call(move |c| select_endpoint(c, &username, &endpoint_id))
            .await
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        let (username, endpoint_id, spec) =
            (username.to_owned(), endpoint_id.to_owned(), spec.clone());
        let changes = Arc::clone(&self.changes);
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let changed = tx
                .execute(
                    "UPDATE endpoints SET url = ?1, status = COALESCE(?2, status), events = ?3
                     WHERE username = ?4 AND endpoint_id = ?5",
                    params![
                        spec.url,
                        spec.status.map(EndpointStatus::as_str),
                        events_to_json(&spec.events),
                        username,
                        endpoint_id
                    ],
                )
                .map_err(sqlite_error)?;
            if changed == 0 {
                return Ok(None);
            }
            let endpoint = select_endpoint(&tx, &username, &endpoint_id)?;
            tx.commit().map_err(sqlite_error)?;
            changes.mark(&endpoint_id);
            Ok(endpoint)
        })
        .await
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        let changes = Arc::clone(&self.changes);
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let deleted = tx
                .execute(
                    "DELETE FROM endpoints WHERE username = ?1 AND endpoint_id = ?2",
                    [&username, &endpoint_id],
                )
                .map_err(sqlite_error)?;
            if deleted > 0 {
                // Its deliveries go in the sweep's bounded steps; claims
                // already drop those of endpoints that are gone.
                tx.execute(
                    "INSERT OR IGNORE INTO deleted_endpoints (endpoint_id) VALUES (?1)",
                    [&endpoint_id],
                )
                .map_err(sqlite_error)?;
            }
            tx.commit().map_err(sqlite_error)?;
            if deleted > 0 {
                changes.mark(&endpoint_id);
            }
            Ok(deleted > 0)
        })
        .await
    }

    async fn accept_events(
        &self,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let nothing = ClaimRequest::default();
        Ok(self.accept_and_claim(events, now_ms, &nothing).await?.0)
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        let (events, claim) = (events.to_vec(), claim.clone());
        self.call(move |c| {
            // One transaction for the whole batch, leases included: one
            // fsync instead of one per event, and all-or-nothing — an error
            // means nothing was accepted, so the producer's retry is safe.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let mut leasing = Leasing::new(&claim);
            let mut outcomes = Vec::with_capacity(events.len());
            for event in &events {
                outcomes.push(accept_one(&tx, event, now_ms, &mut leasing)?);
            }
            tx.commit().map_err(sqlite_error)?;
            Ok((outcomes, leasing.claims))
        })
        .await
    }

    async fn list_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        page: &Page,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (username, endpoint_id, page) =
            (username.to_owned(), endpoint_id.to_owned(), page.clone());
        self.call(move |c| {
            let mut statement = c
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE endpoint_id = ?1 AND username = ?2 AND status = ?3 AND delivery_id > ?4
                       AND EXISTS (SELECT 1 FROM endpoints WHERE endpoint_id = ?1 AND username = ?2)
                     ORDER BY delivery_id LIMIT ?5"
                ))
                .map_err(sqlite_error)?;
            let rows = statement
                .query_map(
                    params![
                        endpoint_id,
                        username,
                        status.as_str(),
                        page.after.unwrap_or_default(),
                        i64::try_from(page.limit).unwrap_or(i64::MAX)
                    ],
                    read_delivery,
                )
                .map_err(sqlite_error)?;
            rows.map(|row| row.map_err(sqlite_error).and_then(RawDelivery::parse))
                .collect()
        })
        .await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let request = request.clone();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let ready: Vec<String> = {
                let mut select = tx.prepare_cached(READY_ENDPOINTS).map_err(sqlite_error)?;
                // Endpoints without room are skipped; at most `room` of them.
                let most = i64::try_from(request.limit + request.room.len()).unwrap_or(i64::MAX);
                select
                    .query_map(params![request.now_ms, most], |row| row.get(0))
                    .map_err(sqlite_error)?
                    .collect::<Result<_, _>>()
                    .map_err(sqlite_error)?
            };
            let mut claims = Vec::new();
            for endpoint_id in ready {
                let room = request
                    .room
                    .get(&endpoint_id)
                    .copied()
                    .unwrap_or(request.per_endpoint)
                    .min(request.limit.saturating_sub(claims.len()));
                if room > 0 {
                    claim_from_endpoint(&tx, &request, &endpoint_id, room, &mut claims)?;
                }
            }
            tx.commit().map_err(sqlite_error)?;
            Ok(claims)
        })
        .await
    }

    async fn record_attempts(&self, finished: &[FinishedAttempt]) -> Result<Vec<bool>, StoreError> {
        let finished = finished.to_vec();
        let retention = self.retention;
        self.call(move |c| {
            // One transaction, one commit (one fsync) for the whole batch.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let recorded = finished
                .iter()
                .map(|attempt| record_one_attempt(&tx, &retention, attempt))
                .collect::<Result<Vec<bool>, StoreError>>()?;
            tx.commit().map_err(sqlite_error)?;
            Ok(recorded)
        })
        .await
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        let (delivery_id, lease) = (claim.delivery.delivery_id.clone(), claim.lease.clone());
        self.call(move |c| {
            c.execute(
                "UPDATE deliveries SET next_attempt_at = ?1, lease_owner = NULL
                 WHERE delivery_id = ?2 AND lease_owner = ?3 AND status = 'pending'",
                params![due_ms, delivery_id, lease],
            )
            .map(|updated| updated > 0)
            .map_err(sqlite_error)
        })
        .await
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        let (username, endpoint_id, delivery_id) = (
            username.to_owned(),
            endpoint_id.to_owned(),
            delivery_id.to_owned(),
        );
        self.call(move |c| {
            let Some(delivery) = c
                .query_row(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries
                         WHERE delivery_id = ?1 AND endpoint_id = ?2 AND username = ?3"
                    ),
                    [&delivery_id, &endpoint_id, &username],
                    read_delivery,
                )
                .optional()
                .map_err(sqlite_error)?
            else {
                return Ok(None);
            };
            let mut select = c
                .prepare_cached(
                    "SELECT attempt, started_at, duration_ms, status_code, reason, response
                     FROM attempts WHERE delivery_id = ?1 ORDER BY attempt",
                )
                .map_err(sqlite_error)?;
            let attempts = select
                .query_map([&delivery_id], |row| {
                    Ok(AttemptRecord {
                        attempt: row.get(0)?,
                        started_at: row.get(1)?,
                        duration_ms: row.get::<_, i64>(2)?.try_into().unwrap_or_default(),
                        status_code: row.get(3)?,
                        reason: row.get(4)?,
                        response: row.get(5)?,
                    })
                })
                .map_err(sqlite_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_error)?;
            Ok(Some((delivery.parse()?, attempts)))
        })
        .await
    }

    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        let (username, endpoint_id, delivery_id) = (
            username.to_owned(),
            endpoint_id.to_owned(),
            delivery_id.to_owned(),
        );
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM deliveries WHERE delivery_id = ?1 AND endpoint_id = ?2 AND username = ?3",
                    [&delivery_id, &endpoint_id, &username],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sqlite_error)?;
            let outcome = match status.as_deref().map(str::parse::<DeliveryStatus>).transpose()? {
                None => RetryOutcome::NotFound,
                Some(DeliveryStatus::Failed) => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, lease_owner = NULL,
                             last_attempt = 1, remove_at = NULL
                         WHERE delivery_id = ?2",
                        params![now_ms, delivery_id],
                    )
                    .map_err(sqlite_error)?;
                    RetryOutcome::Scheduled
                }
                Some(other) => RetryOutcome::NotFailed(other),
            };
            tx.commit().map_err(sqlite_error)?;
            Ok(outcome)
        })
        .await
    }

    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError> {
        self.call(move |c| {
            let count = |sql: &str, now: Option<i64>| -> Result<u64, StoreError> {
                let count: i64 = match now {
                    Some(now) => c.query_row(sql, [now], |row| row.get(0)),
                    None => c.query_row(sql, [], |row| row.get(0)),
                }
                .map_err(sqlite_error)?;
                Ok(u64::try_from(count).unwrap_or_default())
            };
            Ok(DeliveryStats {
                due: count(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1",
                    Some(now_ms),
                )?,
                scheduled: count(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at > ?1",
                    Some(now_ms),
                )?,
                dead: count(
                    "SELECT COUNT(*) FROM deliveries WHERE status = 'failed'
                     AND endpoint_id NOT IN (SELECT endpoint_id FROM deleted_endpoints)",
                    None,
                )?,
            })
        })
        .await
    }

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let report = sweep_step(&tx, now_ms)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(report)
        })
        .await
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        Arc::clone(&self.changes)
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                [&name, &value],
            )
            .map_err(sqlite_error)?;
            let stored: String = tx
                .query_row(
                    "SELECT value FROM settings WHERE name = ?1",
                    [&name],
                    |row| row.get(0),
                )
                .map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(stored)
        })
        .await
    }
}
