//! Endpoints on SQLite: create within the user's limit, list, update,
//! rotate and replace secrets, delete. Each runs on the connection's
//! thread; a change is marked for held claims once it is committed.

use rusqlite::{Connection, TransactionBehavior, params};
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus};

use super::rows::{ENDPOINT_COLUMNS, RawEndpoint, read_endpoint, select_endpoint};
use super::schema::sqlite_error;
use crate::{CreateOutcome, EndpointChanges, SecretSlot, StoreError, events_to_json};

pub(super) fn create(
    c: &mut Connection,
    endpoint: &Endpoint,
    limit: usize,
) -> Result<CreateOutcome, StoreError> {
    // IMMEDIATE takes the write lock before the count, so no other writer
    // (thread or process) can slip in between count and insert.
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let held: usize = tx
        .query_row(
            "SELECT COUNT(*) FROM endpoints WHERE username = ?1",
            [&endpoint.username],
            |row| row.get(0),
        )
        .map_err(sqlite_error)?;
    if held >= limit {
        return Ok(CreateOutcome::LimitReached);
    }
    tx.execute(
        "INSERT INTO endpoints (endpoint_id, url, secret, status, events, username, created_at,
             rate_limit, options, filter, ordering)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            endpoint.endpoint_id,
            endpoint.url,
            endpoint.secret,
            endpoint.status.as_str(),
            events_to_json(&endpoint.events),
            endpoint.username,
            endpoint.created_at,
            endpoint.rate_limit,
            endpoint.options,
            endpoint.filter,
            endpoint.ordering
        ],
    )
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(CreateOutcome::Created)
}

/// The user's endpoints, oldest first.
pub(super) fn list(c: &Connection, username: &str) -> Result<Vec<Endpoint>, StoreError> {
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
}

pub(super) fn update(
    c: &mut Connection,
    username: &str,
    endpoint_id: &str,
    spec: &EndpointSpec,
    changes: &EndpointChanges,
) -> Result<Option<Endpoint>, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let changed = tx
        .execute(
            // A status set by its owner is not webhookd's doing; enabling
            // also ends the failure streak (SPEC §8). ?6 says whether ?7
            // replaces the rate limit, ?8 whether ?9 replaces the options,
            // ?10 whether ?11 replaces the filter, ?12 whether ?13 replaces
            // the ordering.
            "UPDATE endpoints SET url = ?1, status = COALESCE(?2, status), events = ?3,
                 disabled_reason = CASE WHEN ?2 IS NULL THEN disabled_reason END,
                 failing_since = CASE WHEN ?2 = 'enabled' THEN NULL ELSE failing_since END,
                 rate_limit = CASE WHEN ?6 THEN ?7 ELSE rate_limit END,
                 options = CASE WHEN ?8 THEN ?9 ELSE options END,
                 filter = CASE WHEN ?10 THEN ?11 ELSE filter END,
                 ordering = CASE WHEN ?12 THEN ?13 ELSE ordering END
             WHERE username = ?4 AND endpoint_id = ?5",
            params![
                spec.url,
                spec.status.map(EndpointStatus::as_str),
                events_to_json(&spec.events),
                username,
                endpoint_id,
                spec.rate_limit.is_some(),
                spec.rate_limit.flatten(),
                spec.options.is_some(),
                spec.options.clone().flatten(),
                spec.filter.is_some(),
                spec.filter.clone().flatten(),
                spec.ordering.is_some(),
                spec.ordering.clone().flatten()
            ],
        )
        .map_err(sqlite_error)?;
    changed_endpoint(tx, changed, username, endpoint_id, changes)
}

pub(super) fn rotate_secret(
    c: &mut Connection,
    username: &str,
    endpoint_id: &str,
    new_secret: &str,
    previous_until: Option<i64>,
    changes: &EndpointChanges,
) -> Result<Option<Endpoint>, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    // SET expressions read the row as it was: the current secret becomes
    // the previous one.
    let changed = tx
        .execute(
            "UPDATE endpoints SET
                 previous_secret = CASE WHEN ?1 IS NULL THEN NULL ELSE secret END,
                 previous_expires_at = ?1, secret = ?2
             WHERE username = ?3 AND endpoint_id = ?4",
            params![previous_until, new_secret, username, endpoint_id],
        )
        .map_err(sqlite_error)?;
    changed_endpoint(tx, changed, username, endpoint_id, changes)
}

/// Replaces the secret in `slot` when it still is `expected`:
/// `[username, endpoint_id, expected, replacement]`.
pub(super) fn replace_secret(
    c: &Connection,
    slot: SecretSlot,
    values: &[String; 4],
) -> Result<bool, StoreError> {
    let statement = match slot {
        SecretSlot::Current => {
            "UPDATE endpoints SET secret = ?4 WHERE username = ?1 AND endpoint_id = ?2 AND secret = ?3"
        }
        SecretSlot::Previous => {
            "UPDATE endpoints SET previous_secret = ?4
             WHERE username = ?1 AND endpoint_id = ?2 AND previous_secret = ?3"
        }
        SecretSlot::Options => {
            "UPDATE endpoints SET options = ?4 WHERE username = ?1 AND endpoint_id = ?2 AND options = ?3"
        }
    };
    c.execute(statement, rusqlite::params_from_iter(values))
        .map(|changed| changed == 1)
        .map_err(sqlite_error)
}

pub(super) fn delete(
    c: &mut Connection,
    username: &str,
    endpoint_id: &str,
    changes: &EndpointChanges,
) -> Result<bool, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let deleted = tx
        .execute(
            "DELETE FROM endpoints WHERE username = ?1 AND endpoint_id = ?2",
            [username, endpoint_id],
        )
        .map_err(sqlite_error)?;
    if deleted > 0 {
        // Its deliveries go in the sweep's bounded steps; claims already
        // drop those of endpoints that are gone.
        tx.execute(
            "INSERT OR IGNORE INTO deleted_endpoints (endpoint_id) VALUES (?1)",
            [endpoint_id],
        )
        .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)?;
    if deleted > 0 {
        changes.mark(endpoint_id);
    }
    Ok(deleted > 0)
}

/// Ends an update of one endpoint row: the endpoint as it now is, committed
/// and marked changed for held claims; `None` (nothing written) when no row
/// matched.
fn changed_endpoint(
    tx: rusqlite::Transaction<'_>,
    changed: usize,
    username: &str,
    endpoint_id: &str,
    changes: &EndpointChanges,
) -> Result<Option<Endpoint>, StoreError> {
    if changed == 0 {
        return Ok(None);
    }
    let endpoint = select_endpoint(&tx, username, endpoint_id)?;
    tx.commit().map_err(sqlite_error)?;
    changes.mark(endpoint_id);
    Ok(endpoint)
}
