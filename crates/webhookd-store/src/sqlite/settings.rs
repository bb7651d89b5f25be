//! Settings kept in the database (`settings`: name → value): values every
//! process must share, such as the generated ingest token, and the serving
//! processes' announcements ([`crate::Store::announce_process`]).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use super::schema::sqlite_error;
use crate::StoreError;

/// The stored value of `name`, storing `value` first if there is none.
pub(super) fn get_or_insert(
    c: &mut Connection,
    name: &str,
    value: &str,
) -> Result<String, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        [name, value],
    )
    .map_err(sqlite_error)?;
    let stored: String = tx
        .query_row(
            "SELECT value FROM settings WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(stored)
}

/// The value of `name`, if set.
pub(super) fn get(c: &mut Connection, name: &str) -> Result<Option<String>, StoreError> {
    c.query_row(
        "SELECT value FROM settings WHERE name = ?1",
        [name],
        |row| row.get(0),
    )
    .optional()
    .map_err(sqlite_error)
}

pub(super) fn remove(c: &mut Connection, name: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM settings WHERE name = ?1", [name])
        .map_err(sqlite_error)?;
    Ok(())
}

/// [`crate::Store::take_in_window`]: the setting `window:<name>` holds
/// `<window> <count>`, one row per name, reset as a new window starts.
pub(super) fn take_in_window(
    c: &mut Connection,
    name: &str,
    window_ms: i64,
    now_ms: i64,
    limit: u64,
) -> Result<bool, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let taken = take_in_window_within(&tx, name, now_ms.div_euclid(window_ms.max(1)), limit)?;
    if taken {
        tx.commit().map_err(sqlite_error)?;
    }
    Ok(taken)
}

/// [`take_in_window`] for window number `window`, inside the caller's
/// transaction.
pub(super) fn take_in_window_within(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    window: i64,
    limit: u64,
) -> Result<bool, StoreError> {
    let setting = format!("window:{name}");
    let stored: Option<String> = tx
        .prepare_cached("SELECT value FROM settings WHERE name = ?1")
        .and_then(|mut select| select.query_row([&setting], |row| row.get(0)).optional())
        .map_err(sqlite_error)?;
    let counted = stored
        .as_deref()
        .and_then(|value| value.split_once(' '))
        .filter(|(stored_window, _)| stored_window.parse::<i64>().ok() == Some(window))
        .and_then(|(_, count)| count.parse::<u64>().ok())
        .unwrap_or(0);
    if counted >= limit {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO settings (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut upsert| upsert.execute([setting, format!("{window} {}", counted + 1)]))
    .map_err(sqlite_error)?;
    Ok(true)
}

/// Sets `name` to `value`, whatever it was.
pub(super) fn put(c: &mut Connection, name: &str, value: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [name, value],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

/// The announcements running at `now_ms`; those run out are forgotten.
pub(super) fn with_prefix(
    c: &mut Connection,
    prefix: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    c.prepare_cached(
        "SELECT name, value FROM settings WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
    )
    .and_then(|mut select| {
        select
            .query_map([prefix], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    })
    .map_err(sqlite_error)
}

pub(super) fn running_processes(
    c: &mut Connection,
    now_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let settings = c
        .prepare_cached("SELECT name, value FROM settings WHERE name LIKE 'process:%'")
        .and_then(|mut select| {
            select
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<HashMap<String, String>, _>>()
        })
        .map_err(sqlite_error)?;
    let (running, over) = crate::running_processes(settings, now_ms);
    for name in over {
        c.execute("DELETE FROM settings WHERE name = ?1", [&name])
            .map_err(sqlite_error)?;
    }
    Ok(running)
}
