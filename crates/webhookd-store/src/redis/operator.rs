//! The operator events' outbox on Redis (SPEC §15): a list per partition,
//! `<p>:operator`, which the accept and record scripts push to in the step
//! that makes an event true; records added from outside a script go to the
//! partition their id hashes to.

use futures_util::future::try_join_all;
use redis::AsyncCommands;

use super::RedisStore;
use super::rows::redis_error;
use crate::{OutboxEntry, StoreError};

impl RedisStore {
    fn outbox_key(&self, partition: usize) -> String {
        format!("{}operator", self.prefix_of_partition(partition))
    }

    pub(super) async fn add_to_outbox(&self, records: &[String]) -> Result<(), StoreError> {
        for record in records {
            let partition = super::partition_of(record, self.partitions());
            let _: i64 = self
                .connection()
                .rpush(self.outbox_key(partition), record)
                .await
                .map_err(redis_error)?;
        }
        Ok(())
    }

    pub(super) async fn outbox(&self, most: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        // (LRANGE 0 -1 would be the whole list.)
        if most == 0 {
            return Ok(Vec::new());
        }
        let last = isize::try_from(most).unwrap_or(isize::MAX) - 1;
        let lists: Vec<Vec<String>> =
            try_join_all((0..self.partitions()).map(|partition| async move {
                self.connection()
                    .lrange::<_, Vec<String>>(self.outbox_key(partition), 0, last)
                    .await
            }))
            .await
            .map_err(redis_error)?;
        Ok(lists
            .into_iter()
            .enumerate()
            .flat_map(|(partition, records)| {
                records.into_iter().map(move |record| OutboxEntry {
                    record,
                    place: i64::try_from(partition).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Each entry by value: what another process removed meanwhile is not
    /// removed twice, and nothing added behind it is touched.
    pub(super) async fn remove_from_outbox(
        &self,
        entries: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        for entry in entries {
            let partition = usize::try_from(entry.place).unwrap_or_default();
            let _: i64 = self
                .connection()
                .lrem(self.outbox_key(partition), 1, &entry.record)
                .await
                .map_err(redis_error)?;
        }
        Ok(())
    }
}
