//! The quotas accepting an event checks on the embedded store (SPEC §11),
//! inside the accepting transaction: the owner's quotas (the setting read
//! in the same step), its events per day, and each endpoint's kept
//! deliveries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rusqlite::OptionalExtension as _;
use webhookd_core::Event;
use webhookd_core::quota::Quotas;

use super::schema::sqlite_error;
use super::settings::take_in_window_within;
use crate::StoreError;

/// How often an endpoint's kept deliveries are counted again at the least.
const RECOUNT_MS: i64 = 30_000;
/// How often once the count stands at half its limit or more.
const RECOUNT_NEAR_LIMIT_MS: i64 = 1_000;
/// Endpoints whose count is remembered at most (past it: counted afresh).
const MOST_REMEMBERED: usize = 100_000;

/// The quotas in force for `username`, the setting read inside `tx`.
pub(super) fn quotas_of(
    tx: &rusqlite::Transaction<'_>,
    defaults: Quotas,
    username: &str,
) -> Result<Quotas, StoreError> {
    let setting: Option<String> = tx
        .prepare_cached("SELECT value FROM settings WHERE name = ?1")
        .and_then(|mut select| {
            select
                .query_row([webhookd_core::quota::setting_name(username)], |row| {
                    row.get(0)
                })
                .optional()
        })
        .map_err(sqlite_error)?;
    Ok(crate::quotas::from_setting(
        defaults,
        username,
        setting.as_deref(),
    ))
}

/// Counts `event` against its owner's `per_day` (unless it is a duplicate,
/// which the caller finds next): `false` when the day's are used up.
pub(super) fn take_event_of_the_day(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    per_day: u64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let remembered = tx
        .prepare_cached(
            "SELECT 1 FROM seen_events WHERE username = ?1 AND event_id = ?2 AND expires_at > ?3",
        )
        .and_then(|mut select| {
            select.exists(rusqlite::params![event.username, event.event_id, now_ms])
        })
        .map_err(sqlite_error)?;
    if remembered {
        return Ok(true);
    }
    take_in_window_within(
        tx,
        &format!("events:{}", event.username),
        crate::day_of(now_ms),
        per_day,
    )
}

/// The endpoints' kept (pending + dead) deliveries, as last counted, plus
/// those accepted since, less those delivered since. Counting is a walk of
/// the endpoint's index, so it is done again only every [`RECOUNT_MS`], or
/// every [`RECOUNT_NEAR_LIMIT_MS`] once the count is half its limit or more.
/// Between counts, dead deliveries removed at the end of their retention
/// (or sent again) are not seen, nor another process's work on the same
/// file: the estimate may refuse up to a second early, or let another
/// process add a second of deliveries past the limit.
#[derive(Debug, Default)]
pub(super) struct KeptCounts {
    counts: Mutex<HashMap<String, Kept>>,
}

#[derive(Debug, Clone, Copy)]
struct Kept {
    count: u64,
    counted_at: i64,
}

impl KeptCounts {
    /// Whether `endpoint_id` may get one more delivery under `limit`
    /// (counted if so); a refusal is counted on the endpoint.
    pub(super) fn admit(
        &self,
        tx: &rusqlite::Transaction<'_>,
        endpoint_id: &str,
        limit: u64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match counts.get(endpoint_id) {
            Some(kept)
                if now_ms - kept.counted_at < RECOUNT_MS
                    && (kept.count < limit / 2
                        || now_ms - kept.counted_at < RECOUNT_NEAR_LIMIT_MS) =>
            {
                *kept
            }
            _ => Kept {
                count: count_kept(tx, endpoint_id, limit)?,
                counted_at: now_ms,
            },
        };
        if counts.len() >= MOST_REMEMBERED {
            counts.clear();
        }
        let admitted = kept.count < limit;
        counts.insert(
            endpoint_id.to_owned(),
            Kept {
                count: kept.count + u64::from(admitted),
                ..kept
            },
        );
        drop(counts);
        if !admitted {
            tx.prepare_cached(
                "UPDATE endpoints SET quota_refused = quota_refused + 1 WHERE endpoint_id = ?1",
            )
            .and_then(|mut update| update.execute([endpoint_id]))
            .map_err(sqlite_error)?;
        }
        Ok(admitted)
    }
}

impl KeptCounts {
    /// One of the endpoint's deliveries was delivered (committed).
    pub(super) fn delivered(&self, endpoint_id: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = counts.get_mut(endpoint_id) {
            kept.count = kept.count.saturating_sub(1);
        }
    }
}

/// The endpoint's pending and dead deliveries, counted up to `limit`.
fn count_kept(
    tx: &rusqlite::Transaction<'_>,
    endpoint_id: &str,
    limit: u64,
) -> Result<u64, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries
             WHERE endpoint_id = ?1 AND status IN ('pending', 'failed') LIMIT ?2)",
    )
    .and_then(|mut select| {
        select.query_row(rusqlite::params![endpoint_id, limit], |row| {
            row.get::<_, i64>(0)
        })
    })
    .map(|count| u64::try_from(count).unwrap_or(0))
    .map_err(sqlite_error)
}
