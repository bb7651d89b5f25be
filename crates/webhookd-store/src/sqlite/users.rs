//! Users and how they sign in: API keys and portal links, each stored by
//! its hash only.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::sqlite_error;
use crate::{StoreError, UserSummary};

pub(super) fn add_api_key(
    c: &mut Connection,
    username: &str,
    key_hash: &str,
    now: i64,
) -> Result<(), StoreError> {
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
}

pub(super) fn user_for_api_key(
    c: &Connection,
    key_hash: &str,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached("SELECT username FROM api_keys WHERE key_hash = ?1")
        .and_then(|mut statement| statement.query_row([key_hash], |row| row.get(0)).optional())
        .map_err(sqlite_error)
}

pub(super) fn list_users(c: &Connection) -> Result<Vec<UserSummary>, StoreError> {
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
}

pub(super) fn revoke_api_keys(c: &mut Connection, username: &str) -> Result<usize, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute("DELETE FROM portal_links WHERE username = ?1", [username])
        .map_err(sqlite_error)?;
    let revoked = tx
        .execute("DELETE FROM api_keys WHERE username = ?1", [username])
        .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(revoked)
}

pub(super) fn add_portal_link(
    c: &mut Connection,
    username: &str,
    token_hash: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    tx.execute("DELETE FROM portal_links WHERE expires_at <= ?1", [now])
        .map_err(sqlite_error)?;
    let added = tx
        .execute(
            "INSERT INTO portal_links (token_hash, username, expires_at)
             SELECT ?1, username, ?3 FROM users WHERE username = ?2",
            params![token_hash, username, expires_at],
        )
        .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(added == 1)
}

pub(super) fn user_for_portal_link(
    c: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached("SELECT username FROM portal_links WHERE token_hash = ?1 AND expires_at > ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![token_hash, now], |row| row.get(0))
                .optional()
        })
        .map_err(sqlite_error)
}

pub(super) fn redeem_portal_link(
    c: &mut Connection,
    link_hash: &str,
    session_hash: &str,
    now: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let link: Option<(String, i64)> = tx
        .query_row(
            "DELETE FROM portal_links WHERE token_hash = ?1 RETURNING username, expires_at",
            [link_hash],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let redeemed = link.filter(|(_, expires_at)| *expires_at > now);
    if let Some((username, expires_at)) = &redeemed {
        tx.execute(
            "INSERT INTO portal_links (token_hash, username, expires_at) VALUES (?1, ?2, ?3)",
            params![session_hash, username, expires_at],
        )
        .map_err(sqlite_error)?;
    }
    tx.commit().map_err(sqlite_error)?;
    Ok(redeemed)
}
