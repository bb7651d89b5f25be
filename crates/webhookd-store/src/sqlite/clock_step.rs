//! A backward step of the machine's clock, repaired (SQLite only).
//!
//! The embedded store's clock is the wall clock (`clock.rs`). Due times and
//! leases written while it ran ahead stay ahead once it is set back: the
//! fault campaign stepped the clock an hour ahead for five seconds and left
//! 150 deliveries waiting an hour (docs/reliability.md). So the store
//! remembers the latest time it has seen (`clock:high_water`), and a claim
//! that finds the clock more than [`STEP_TOLERANCE_MS`] behind it pulls
//! every pending due time (and lease end) later than now back by the step:
//! a step back makes work early — a retry sooner than scheduled, a lease
//! ended early and the delivery sent again, as after any fault — never
//! late.

use rusqlite::OptionalExtension as _;

use super::schema::sqlite_error;
use crate::StoreError;

/// The setting holding the latest wall-clock time the store has seen.
const HIGH_WATER: &str = "clock:high_water";
/// A step back smaller than this is left alone: it delays work by less.
const STEP_TOLERANCE_MS: i64 = 5_000;
/// The high-water mark is written when the clock has passed it by this
/// much (a write per second at most, inside a claim's transaction).
const WRITE_EVERY_MS: i64 = 1_000;

/// Notes `wall_ms`, the machine's clock now, and repairs a step back found
/// since the last note: how far due times were pulled back (0: none).
pub(super) fn note_and_repair(
    tx: &rusqlite::Transaction<'_>,
    wall_ms: i64,
) -> Result<i64, StoreError> {
    let high_water: Option<i64> = tx
        .prepare_cached("SELECT value FROM settings WHERE name = ?1")
        .and_then(|mut select| {
            select
                .query_row([HIGH_WATER], |row| row.get::<_, String>(0))
                .optional()
        })
        .map_err(sqlite_error)?
        .and_then(|value| value.parse().ok());
    let step = high_water.map_or(0, |high_water| high_water - wall_ms);
    let repaired = if step > STEP_TOLERANCE_MS {
        let moved = tx
            .prepare_cached(
                "UPDATE deliveries SET next_attempt_at = MAX(?1, next_attempt_at - ?2)
                 WHERE status = 'pending' AND next_attempt_at > ?1
                   AND next_attempt_at < ?3",
            )
            .and_then(|mut update| {
                update.execute(rusqlite::params![wall_ms, step, super::deliveries::HELD])
            })
            .map_err(sqlite_error)?;
        tracing::warn!(
            step_ms = step,
            deliveries = moved,
            "the clock was set back; pending due times and leases written ahead of it were pulled back as far"
        );
        step
    } else {
        0
    };
    if repaired > 0 || high_water.is_none_or(|high_water| wall_ms - high_water >= WRITE_EVERY_MS) {
        tx.prepare_cached(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut upsert| upsert.execute([HIGH_WATER, &wall_ms.to_string()]))
        .map_err(sqlite_error)?;
    }
    Ok(repaired)
}
