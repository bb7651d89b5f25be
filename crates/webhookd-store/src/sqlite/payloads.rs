//! Events' bodies kept once per event for `keep_payloads` (SPEC §13), so
//! the delivery detail can show the request as sent after the delivery's
//! own copy is gone (delivered) — and say when it has expired.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use super::schema::sqlite_error;
use crate::{Delivery, StoreError};

/// Keeps the body its first delivery carries for the event `delivery`
/// belongs to, until `keep` from `now_ms` (nothing when `keep` is zero).
pub(super) fn keep(
    tx: &rusqlite::Transaction<'_>,
    delivery: &Delivery,
    now_ms: i64,
    keep: Duration,
) -> Result<(), StoreError> {
    if keep.is_zero() {
        return Ok(());
    }
    let expires_at = now_ms.saturating_add(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    tx.prepare_cached(
        "INSERT OR REPLACE INTO payloads (username, event_id, created_at, body, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            delivery.username,
            delivery.event_id,
            delivery.created_at,
            delivery.body,
            expires_at
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// The kept body of the event `delivery` belongs to, unless it expired by
/// `now_ms`.
pub(super) fn kept(
    c: &rusqlite::Connection,
    delivery: &Delivery,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached(
        "SELECT body FROM payloads
         WHERE username = ?1 AND event_id = ?2 AND created_at = ?3 AND expires_at > ?4",
    )
    .and_then(|mut select| {
        select
            .query_row(
                params![
                    delivery.username,
                    delivery.event_id,
                    delivery.created_at,
                    now_ms
                ],
                |row| row.get(0),
            )
            .optional()
    })
    .map_err(sqlite_error)
}

/// Removes at most `batch` bodies expired by `now_ms`; how many it removed.
pub(super) fn sweep(
    tx: &rusqlite::Transaction<'_>,
    now_ms: i64,
    batch: usize,
) -> Result<usize, StoreError> {
    tx.prepare_cached(
        "DELETE FROM payloads WHERE (username, event_id, created_at) IN
             (SELECT username, event_id, created_at FROM payloads WHERE expires_at <= ?1 LIMIT ?2)",
    )
    .and_then(|mut delete| delete.execute(params![now_ms, batch]))
    .map_err(sqlite_error)
}
