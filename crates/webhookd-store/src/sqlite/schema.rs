//! The SQLite schema: versioned migrations, opening a connection with the
//! durability settings, and how SQLite errors map to store errors.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use webhookd_core::encryption_key::EncryptionKey;

use crate::StoreError;

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
    // 5: retention, one-attempt re-sends, deleting endpoints in steps, test
    // deliveries, secret rotation, failure streaks and auto-disable.
    // Deliveries finished before this migration are kept the default time
    // from their creation.
    "ALTER TABLE deliveries ADD COLUMN last_attempt INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE deliveries ADD COLUMN remove_at INTEGER;
     UPDATE deliveries SET remove_at = created_at + 604800000 WHERE status = 'delivered';
     UPDATE deliveries SET remove_at = created_at + 2592000000 WHERE status = 'failed';
     CREATE INDEX deliveries_by_removal ON deliveries(remove_at) WHERE remove_at IS NOT NULL;
     CREATE TABLE deleted_endpoints (endpoint_id TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
     ALTER TABLE deliveries ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE endpoints ADD COLUMN previous_secret TEXT;
     ALTER TABLE endpoints ADD COLUMN previous_expires_at INTEGER;
     ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;
     ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;",
    // 6: portal links (SPEC §9), sign-ins that expire.
    "CREATE TABLE portal_links (
         token_hash TEXT PRIMARY KEY,
         username   TEXT NOT NULL REFERENCES users(username),
         expires_at INTEGER NOT NULL
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX portal_links_by_expiry ON portal_links(expires_at);
     CREATE INDEX portal_links_by_user ON portal_links(username);",
    // 7: an endpoint's deliveries per second (SPEC §10; NULL: no limit).
    "ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;",
    // 8: deliveries refused for the endpoint's kept-deliveries quota since
    // its last success (SPEC §11).
    "ALTER TABLE endpoints ADD COLUMN quota_refused INTEGER NOT NULL DEFAULT 0;",
    // 9: inspecting deliveries (SPEC §13): how each attempt was signed, and
    // each event's body, kept once for `keep_payloads`.
    "ALTER TABLE attempts ADD COLUMN signed_at INTEGER;
     ALTER TABLE attempts ADD COLUMN signature_check TEXT;
     CREATE TABLE payloads (
         username   TEXT NOT NULL,
         event_id   TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         body       TEXT NOT NULL,
         expires_at INTEGER NOT NULL,
         PRIMARY KEY (username, event_id, created_at)
     ) STRICT, WITHOUT ROWID;
     CREATE INDEX payloads_by_expiry ON payloads(expires_at);",
    // 10: an endpoint's delivery options (SPEC §14), one sealed document.
    "ALTER TABLE endpoints ADD COLUMN options TEXT;",
    // 11: an endpoint's payload filter (SPEC §15), compact JSON.
    "ALTER TABLE endpoints ADD COLUMN filter TEXT;",
    // 12: the producer's trace context of a delivery's event (SPEC §15).
    "ALTER TABLE deliveries ADD COLUMN trace TEXT;",
    // 13: ordered endpoints (SPEC §15): an endpoint's ordering, and the
    // line a delivery waits in with its place there (docs/delivery.md).
    "ALTER TABLE endpoints ADD COLUMN ordering TEXT;
     ALTER TABLE deliveries ADD COLUMN line TEXT;
     ALTER TABLE deliveries ADD COLUMN line_seq INTEGER;
     CREATE INDEX deliveries_in_line ON deliveries(endpoint_id, line, line_seq)
         WHERE status = 'pending' AND line IS NOT NULL;",
    // 14: operator events not yet sent on (SPEC §15), oldest first.
    "CREATE TABLE operator_outbox (
         seq    INTEGER PRIMARY KEY AUTOINCREMENT,
         record TEXT NOT NULL
     ) STRICT;",
];

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the database file readable and writable by its owner only
/// (SPEC §7), or narrows an existing one to that. SQLite gives its `-wal`
/// and `-shm` files the database's mode.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let mut permissions = std::fs::metadata(path)?.permissions();
        if permissions.mode() & 0o077 != 0 {
            permissions.set_mode(0o600);
            std::fs::set_permissions(path, permissions)?;
        }
    }
    Ok(())
}

pub(super) fn open_blocking(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Failed(Box::new(e)))?;
    }
    restrict_to_owner(path).map_err(|e| StoreError::Failed(Box::new(e)))?;
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
    // Room for every statement the store caches: rusqlite's default of 16
    // is fewer than the store uses, and an evicted statement is parsed anew.
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
pub(super) fn sqlite_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure) => {
            StoreError::Unavailable(Box::new(error))
        }
        _ => StoreError::Failed(Box::new(error)),
    }
}

/// The key sealing the embedded store's secrets when none is configured:
/// `<database>.key`, beside the database, mode 0600, made at first start.
/// Made under a temporary name and linked into place, so two processes
/// starting at once agree on one key.
pub(crate) fn key_file(database: &str) -> Result<EncryptionKey, StoreError> {
    let path = std::path::PathBuf::from(format!("{database}.key"));
    let failed = |e: std::io::Error| StoreError::Failed(Box::new(e));
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let staging = std::path::PathBuf::from(format!("{database}.key.{}", std::process::id()));
        restrict_to_owner(&staging).map_err(failed)?;
        let written = std::fs::write(
            &staging,
            format!("{}\n", EncryptionKey::generate().to_base64()),
        )
        .and_then(|()| std::fs::File::open(&staging)?.sync_all());
        let linked = written.and_then(|()| match std::fs::hard_link(&staging, &path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
        let _ = std::fs::remove_file(&staging);
        linked.map_err(failed)?;
    }
    let text = std::fs::read_to_string(&path).map_err(failed)?;
    EncryptionKey::parse(&text).map_err(|reason| {
        StoreError::Sealing(format!(
            "the key file {} is not a key ({reason}); restore it, or set WEBHOOKD_ENCRYPTION_KEY",
            path.display()
        ))
    })
}
