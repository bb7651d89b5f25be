//! Dead deliveries sent again on SQLite (SPEC §8): one by hand, or those
//! of a window, each outside any ordered line (SPEC §15).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use super::schema::sqlite_error;
use crate::{DeliveryStatus, DeliveryWindow, RetryOutcome, StoreError};

impl SqliteStore {
    pub(super) async fn resend_dead(
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
                        // A re-send is outside its line (SPEC §15): the
                        // operator asked for it now.
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, lease_owner = NULL,
                             last_attempt = 1, remove_at = NULL, line = NULL, line_seq = NULL
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

    pub(super) async fn count_dead_in_window(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        let (from, until) = window.id_bounds();
        self.call(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 'failed'
                     AND delivery_id >= ?2 AND delivery_id < ?3 AND username = ?4",
                params![endpoint_id, from, until, username],
                |row| row.get(0),
            )
            .map_err(sqlite_error)
        })
        .await
    }

    pub(super) async fn recover_window(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
        now_ms: i64,
        most: usize,
    ) -> Result<usize, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        let (from, until) = window.id_bounds();
        self.call(move |c| {
            c.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?5, lease_owner = NULL,
                     last_attempt = 1, remove_at = NULL, line = NULL, line_seq = NULL
                 WHERE delivery_id IN (
                     SELECT delivery_id FROM deliveries
                     WHERE endpoint_id = ?1 AND status = 'failed' AND delivery_id >= ?2
                       AND delivery_id < ?3 AND username = ?4
                     ORDER BY delivery_id LIMIT ?6)",
                params![endpoint_id, from, until, username, now_ms, most],
            )
            .map_err(sqlite_error)
        })
        .await
    }
}
