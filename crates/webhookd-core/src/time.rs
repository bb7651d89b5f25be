//! The wall clock, read once in a single place for the crates at the edges
//! (API, ingest, delivery, binary). Nothing else in the core calls it: its
//! functions take the time as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> i64 {
    unix_millis() / 1000
}
