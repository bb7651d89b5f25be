//! Dead deliveries sent again on Redis (SPEC §8): one by hand
//! (`RETRY_DEAD`), or those of a window (`RECOVER`), each outside any
//! ordered line (SPEC §15).

use super::RedisStore;
use super::rows::redis_error;
use crate::{DeliveryStatus, DeliveryWindow, RetryOutcome, Store, StoreError};

impl RedisStore {
    pub(super) async fn resend_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        // Ownership first: the id must be one of this endpoint's deliveries.
        let Some((delivery, _)) = self
            .delivery_attempts(username, endpoint_id, delivery_id)
            .await?
        else {
            return Ok(RetryOutcome::NotFound);
        };
        let before: Option<String> = self
            .scripts
            .retry_dead
            .key(self.delivery_key(&delivery))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Failed))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Pending))
            .key(self.endpoint_due_key(username, endpoint_id))
            .key(self.ready_key(username))
            .arg(now_ms)
            .arg(delivery_id)
            .arg(self.partition_prefix(username))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(
            match before
                .as_deref()
                .map(str::parse::<DeliveryStatus>)
                .transpose()?
            {
                None => RetryOutcome::NotFound,
                Some(DeliveryStatus::Failed) => RetryOutcome::Scheduled,
                Some(other) => RetryOutcome::NotFailed(other),
            },
        )
    }

    pub(super) async fn count_dead_in_window(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError> {
        let (from, until) = window.id_bounds();
        redis::cmd("ZLEXCOUNT")
            .arg(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Failed))
            .arg(format!("[{from}"))
            .arg(format!("({until}"))
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)
    }

    pub(super) async fn recover_window(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
        now_ms: i64,
        most: usize,
    ) -> Result<usize, StoreError> {
        let (from, until) = window.id_bounds();
        let partition_prefix = self.partition_prefix(username);
        self.scripts
            .recover
            .key(format!("{partition_prefix}ready"))
            .arg(&partition_prefix)
            .arg(self.user_prefix(username))
            .arg(endpoint_id)
            .arg(most)
            .arg(now_ms)
            .arg(from)
            .arg(until)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)
    }
}
