//! [`Store`] on Redis: each operation is a script of `lua/` or a pipeline,
//! run through the helpers of the parent module.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use webhookd_core::{Endpoint, EndpointSpec, EndpointStatus, Event, ids};

use super::rows::stored_ordering;
use super::rows::{
    attempt_field, claim_from_row, endpoint_from_fields, redis_error, slot_arguments,
};
use super::{RedisStore, SWEEP_BUDGET, SWEEP_SLICE, Write, changes};
use crate::PROCESS_SETTING;
use crate::filters;
use crate::{
    Acceptance, AttemptRecord, AttemptResult, Claim, ClaimRequest, CreateOutcome, Delivery,
    DeliveryCounts, DeliveryQuery, DeliveryStats, DeliveryStatus, DeliveryWindow, EndpointChanges,
    FinishedAttempt, Listing, OutboxEntry, Recorded, RetryOutcome, SecretSlot, Store, StoreError,
    SweepReport, UserSummary, events_to_json, new_delivery,
};

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn add_api_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.add_key(username, key_hash, now).await
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        self.user_of_key(key_hash).await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.users().await
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        self.revoke_keys(username).await
    }

    async fn replace_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        slot: SecretSlot,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        let field = match slot {
            SecretSlot::Current => "secret",
            SecretSlot::Previous => "previous_secret",
            SecretSlot::Options => "options",
        };
        let replaced: i64 = self
            .scripts
            .replace_field
            .key(self.endpoint_key(username, endpoint_id))
            .arg(field)
            .arg(expected)
            .arg(replacement)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(replaced == 1)
    }

    async fn add_portal_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.add_link(username, token_hash, expires_at, now).await
    }

    async fn user_for_portal_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.user_of_link(token_hash, now).await
    }

    async fn redeem_portal_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        self.redeem_link(link_hash, session_hash, now).await
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        let username = &endpoint.username;
        let created: i64 = self
            .scripts
            .create_endpoint
            .key(self.endpoints_key(username))
            .key(self.endpoint_key(username, &endpoint.endpoint_id))
            .key(self.sequence_key(username))
            .arg(limit)
            .arg(&endpoint.endpoint_id)
            .arg(&endpoint.url)
            .arg(&endpoint.secret)
            .arg(endpoint.status.as_str())
            .arg(events_to_json(&endpoint.events))
            .arg(username)
            .arg(endpoint.created_at)
            .arg(
                endpoint
                    .rate_limit
                    .map(|limit| limit.to_string())
                    .unwrap_or_default(),
            )
            .arg(endpoint.options.as_deref().unwrap_or_default())
            .arg(endpoint.filter.as_deref().unwrap_or_default())
            .arg(
                endpoint
                    .filter
                    .as_deref()
                    .map(filters::digest)
                    .unwrap_or_default(),
            )
            .arg(stored_ordering(endpoint.ordering.as_deref()))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if endpoint.filter.is_some() {
            self.filters.forget(username);
        }
        Ok(if created == 1 {
            CreateOutcome::Created
        } else {
            CreateOutcome::LimitReached
        })
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        let mut connection = self.connection();
        let ids: Vec<String> = connection
            .zrange(self.endpoints_key(username), 0, -1)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.hgetall(self.endpoint_key(username, id));
        }
        let rows: Vec<HashMap<String, String>> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        rows.into_iter()
            // An endpoint deleted between the two round trips reads as empty.
            .filter(|fields| !fields.is_empty())
            .map(endpoint_from_fields)
            .collect()
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let fields: HashMap<String, String> = self
            .connection()
            .hgetall(self.endpoint_key(username, endpoint_id))
            .await
            .map_err(redis_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        endpoint_from_fields(fields).map(Some)
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        let fields: Option<HashMap<String, String>> = self
            .scripts
            .update_endpoint
            .key(self.endpoint_key(username, endpoint_id))
            .arg(&spec.url)
            // An empty status keeps the current one.
            .arg(spec.status.map_or("", EndpointStatus::as_str))
            .arg(events_to_json(&spec.events))
            .arg(self.changes_channel())
            .arg(endpoint_id)
            .arg(match spec.rate_limit {
                None => "keep".to_owned(),
                Some(limit) => limit.map(|limit| limit.to_string()).unwrap_or_default(),
            })
            .arg(match &spec.options {
                None => "keep",
                Some(options) => options.as_deref().unwrap_or_default(),
            })
            .arg(match &spec.filter {
                None => "keep",
                Some(filter) => filter.as_deref().unwrap_or_default(),
            })
            .arg(
                spec.filter
                    .clone()
                    .flatten()
                    .as_deref()
                    .map(filters::digest)
                    .unwrap_or_default(),
            )
            .arg(match &spec.ordering {
                None => "keep".to_owned(),
                Some(ordering) => stored_ordering(ordering.as_deref()),
            })
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if fields.is_some() {
            self.changes.mark(endpoint_id);
        }
        if spec.filter.is_some() {
            self.filters.forget(username);
        }
        fields.map(endpoint_from_fields).transpose()
    }

    async fn rotate_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        new_secret: &str,
        previous_until: Option<i64>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let fields: Option<HashMap<String, String>> = self
            .scripts
            .rotate_secret
            .key(self.endpoint_key(username, endpoint_id))
            .arg(new_secret)
            .arg(previous_until.map(|at| at.to_string()).unwrap_or_default())
            .arg(self.changes_channel())
            .arg(endpoint_id)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if fields.is_some() {
            self.changes.mark(endpoint_id);
        }
        fields.map(endpoint_from_fields).transpose()
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .scripts
            .delete_endpoint
            .key(self.endpoints_key(username))
            .key(self.endpoint_key(username, endpoint_id))
            .key(self.ready_key(username))
            .key(self.endpoint_due_key(username, endpoint_id))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Pending))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Delivered))
            .key(self.delivery_index_key(username, endpoint_id, DeliveryStatus::Failed))
            .key(format!("{}trash", self.partition_prefix(username)))
            .key(self.sending_key(username, endpoint_id))
            .arg(endpoint_id)
            .arg(format!(
                "{}trash:{}:",
                self.partition_prefix(username),
                ids::new_lease_token()
            ))
            .arg(format!("{}dead", self.partition_prefix(username)))
            .arg(self.changes_channel())
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        if removed == 1 {
            self.changes.mark(endpoint_id);
        }
        Ok(removed == 1)
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        self.accept(events, now_ms, claim).await
    }

    async fn create_test_delivery(
        &self,
        endpoint_id: &str,
        event: &Event,
        now_ms: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        let username = &event.username;
        let delivery = Delivery {
            test: true,
            ..new_delivery(
                ids::new_delivery_id(),
                event,
                endpoint_id,
                &event.body(),
                now_ms,
            )
        };
        let partition_prefix = self.partition_prefix(username);
        let created: i64 = self
            .scripts
            .create_test_delivery
            .key(format!("{partition_prefix}ready"))
            .arg(&partition_prefix)
            .arg(self.endpoint_key(username, endpoint_id))
            .arg(self.user_prefix(username))
            .arg(&delivery.delivery_id)
            .arg(username)
            .arg(endpoint_id)
            .arg(&delivery.event_id)
            .arg(delivery.event_type.as_str())
            .arg(&delivery.body)
            .arg(now_ms)
            .arg(self.retention.keep_payloads.as_millis())
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok((created == 1).then_some(delivery))
    }

    async fn query_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        query: &DeliveryQuery,
    ) -> Result<Listing, StoreError> {
        super::listings::query(self, username, endpoint_id, status, query).await
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let mut connection = self.connection();
        // One round trip finds the partitions with a ready endpoint, so an
        // idle store costs one wait, not one per partition.
        let partitions = self.partitions();
        let first = self.next_partition.fetch_add(1, Ordering::Relaxed) as usize;
        let partitions: Vec<usize> = (0..partitions)
            .map(|offset| (first + offset) % partitions)
            .collect();
        let mut probes: Vec<redis::Cmd> = partitions
            .iter()
            .map(|partition| {
                let mut probe = redis::cmd("ZRANGEBYSCORE");
                probe
                    .arg(format!("{}ready", self.prefix_of_partition(*partition)))
                    .arg("-inf")
                    .arg(request.now_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1);
                probe
            })
            .collect();
        // The store's clock, read in the same round trip (see clock.rs).
        probes.push(redis::cmd("TIME"));
        // Partitions that do not answer (a primary failing over) are
        // skipped: the others' work goes on.
        let mut answers = connection.each::<Vec<String>>(probes).await;
        let answered_at = std::time::Instant::now();
        if let Some(store_ms) = answers
            .pop()
            .and_then(Result::ok)
            .and_then(|time| crate::clock::StoreClock::from_redis_time(&time))
        {
            self.clock.read(store_ms, answered_at);
        }
        let mut ready: Vec<Vec<String>> = Vec::with_capacity(partitions.len());
        let (mut failures, mut failed) = (0, None);
        for answer in answers {
            ready.push(answer.unwrap_or_else(|error| {
                failures += 1;
                failed = Some(error);
                Vec::new()
            }));
        }
        if let Some(error) = failed {
            if failures == ready.len() {
                return Err(redis_error(error));
            }
            tracing::warn!(%error, failures, "some partitions did not answer the claim probe; claiming from the others");
        }
        let lease_base = ids::new_lease_token();
        let room: Vec<(&String, &usize)> = request.room.iter().collect();
        let mut claims: Vec<Claim> = Vec::new();
        let mut suspect_room = request.suspect_room;
        for (partition, ready) in partitions.into_iter().zip(ready) {
            let wanted = request.limit.saturating_sub(claims.len());
            if wanted == 0 {
                break;
            }
            if ready.is_empty() {
                continue;
            }
            let partition_prefix = self.prefix_of_partition(partition);
            let mut invocation = self.scripts.claim_due.prepare_invoke();
            invocation
                .key(format!("{partition_prefix}ready"))
                .arg(request.now_ms)
                .arg(request.lease_until_ms)
                .arg(wanted)
                .arg(&partition_prefix)
                .arg(request.park_until_ms)
                .arg(format!("{lease_base}:{partition}"))
                .arg(request.per_endpoint)
                .arg(request.endpoint_limit)
                .arg(suspect_room);
            super::rows::room_arguments(&mut invocation, &room, request);
            let rows: Vec<Vec<String>> = match invocation.invoke_async(&mut connection).await {
                Ok(rows) => rows,
                // Claims leased in earlier partitions are the caller's now:
                // dropping them would hide them until their lease ran out.
                Err(error) if !claims.is_empty() => {
                    tracing::warn!(%error, claimed = claims.len(), "claiming stopped at a failing partition");
                    break;
                }
                Err(error) => return Err(redis_error(error)),
            };
            for row in rows {
                let claim = claim_from_row(row, request.lease_until_ms)?;
                if request.suspects.contains(&claim.delivery.endpoint_id) {
                    suspect_room = suspect_room.saturating_sub(1);
                }
                claims.push(claim);
            }
        }
        Ok(claims)
    }

    async fn record_attempts(
        &self,
        finished: &[FinishedAttempt],
    ) -> Result<Vec<Recorded>, StoreError> {
        let writes: Vec<Write<'_>> = finished
            .iter()
            .map(
                |FinishedAttempt {
                     claim,
                     record,
                     result,
                 }| {
                    let finished_ms = record
                        .started_at
                        .saturating_add(i64::try_from(record.duration_ms).unwrap_or(i64::MAX));
                    let (outcome, at) = match result {
                        AttemptResult::Delivered => ("delivered", 0),
                        AttemptResult::RetryAt(at) => ("retry", *at),
                        AttemptResult::Dead => ("failed", 0),
                    };
                    Write {
                        claim,
                        outcome,
                        at: self
                            .retention
                            .removal_at(finished_ms, *result, claim.delivery.test)
                            .unwrap_or(at),
                        attempt: record.attempt,
                        log: attempt_field(record),
                        started_s: record
                            .counts_toward_streak()
                            .then(|| record.started_at.div_euclid(1000)),
                        finished_ms,
                    }
                },
            )
            .collect();
        self.write_claims(&writes).await
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        let (slot_token, slot_until) = slot_arguments(claim);
        let released: i64 = self
            .scripts
            .release
            .key(self.delivery_key(&claim.delivery))
            .key(self.endpoint_due_key(&claim.delivery.username, &claim.delivery.endpoint_id))
            .key(self.ready_key(&claim.delivery.username))
            .key(self.sending_key(&claim.delivery.username, &claim.delivery.endpoint_id))
            .arg(&claim.lease)
            .arg(due_ms)
            .arg(&claim.delivery.delivery_id)
            .arg(slot_token)
            .arg(slot_until)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(released == 1)
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        super::listings::one(self, username, endpoint_id, delivery_id).await
    }

    async fn kept_payload(
        &self,
        delivery: &Delivery,
        _now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        super::listings::kept_payload(self, delivery).await
    }

    async fn delivery_counts(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryCounts>, StoreError> {
        super::listings::counts(self, username, endpoint_id).await
    }

    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        self.resend_dead(username, endpoint_id, delivery_id, now_ms)
            .await
    }

    async fn count_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError> {
        self.count_dead_in_window(username, endpoint_id, window)
            .await
    }

    async fn recover(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
        now_ms: i64,
        most: usize,
    ) -> Result<usize, StoreError> {
        self.recover_window(username, endpoint_id, window, now_ms, most)
            .await
    }

    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError> {
        let partitions = 0..self.partitions();
        let counts: Vec<(u64, u64, Option<i64>)> = try_join_all(partitions.map(|partition| {
            let prefix = self.prefix_of_partition(partition);
            async move {
                let mut connection = self.connection();
                let (due, scheduled): (u64, u64) = self
                    .scripts
                    .delivery_counts
                    .key(format!("{prefix}ready"))
                    .arg(now_ms)
                    .invoke_async(&mut connection)
                    .await?;
                let dead: Option<i64> = connection.get(format!("{prefix}dead")).await?;
                Ok::<_, redis::RedisError>((due, scheduled, dead))
            }
        }))
        .await
        .map_err(redis_error)?;
        let mut stats = DeliveryStats::default();
        for (due, scheduled, dead) in counts {
            stats.due += due;
            stats.scheduled += scheduled;
            // A counter below zero would be a bug elsewhere; never a panic here.
            stats.dead += u64::try_from(dead.unwrap_or_default()).unwrap_or_default();
        }
        Ok(stats)
    }

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        // One partition per call (never a pipeline of them: Redis would run
        // the whole pipeline before serving anyone else). De-duplication
        // keys carry a TTL; Redis expires them itself.
        let mut report = SweepReport::default();
        for partition in 0..self.partitions() {
            let partition_prefix = self.prefix_of_partition(partition);
            let started = std::time::Instant::now();
            loop {
                let (removed, more): (u64, u8) = self
                    .scripts
                    .sweep
                    .key(format!("{partition_prefix}ready"))
                    .arg(&partition_prefix)
                    .arg(now_ms)
                    .arg(SWEEP_BUDGET)
                    .invoke_async(&mut self.connection())
                    .await
                    .map_err(redis_error)?;
                report.removed += removed;
                if more == 0 {
                    break;
                }
                if started.elapsed() > SWEEP_SLICE {
                    report.more = true;
                    break;
                }
            }
        }
        Ok(report)
    }

    fn counts_sending_slots(&self) -> bool {
        true
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        Arc::clone(&self.changes)
    }

    async fn follow_endpoint_changes(&self, shutdown: CancellationToken) {
        changes::follow(
            &self.subscribers,
            &self.changes_channel(),
            &self.changes,
            &shutdown,
        )
        .await;
    }

    async fn announce_process(
        &self,
        process_id: &str,
        key_ids: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let _: i64 = connection
            .hset(
                self.settings_key(),
                format!("{PROCESS_SETTING}{process_id}"),
                format!("{until_ms}|{key_ids}"),
            )
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn running_processes(&self, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut connection = self.connection();
        let settings: HashMap<String, String> = connection
            .hgetall(self.settings_key())
            .await
            .map_err(redis_error)?;
        let (running, over) = crate::running_processes(settings, now_ms);
        if !over.is_empty() {
            let _: i64 = connection
                .hdel(self.settings_key(), over)
                .await
                .map_err(redis_error)?;
        }
        Ok(running)
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.connection()
            .hget(self.settings_key(), name)
            .await
            .map_err(redis_error)
    }

    async fn put_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let mut connection = self.connection();
        match value {
            Some(value) => connection.hset(self.settings_key(), name, value).await,
            None => connection.hdel(self.settings_key(), name).await,
        }
        .map_err(redis_error)
    }

    async fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // The settings hash is small (processes, per-user quotas, event
        // type changes): one read, filtered here.
        let settings: HashMap<String, String> = self
            .connection()
            .hgetall(self.settings_key())
            .await
            .map_err(redis_error)?;
        Ok(settings
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .collect())
    }

    async fn take_in_window(
        &self,
        name: &str,
        window_ms: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        // A key per window, gone two windows later: nothing to sweep.
        let window = now_ms.div_euclid(window_ms.max(1));
        let key = format!("{}window:{name}:{window}", self.prefix);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .pexpire(&key, window_ms.max(1) * 2)
            .ignore()
            .query_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(count <= limit)
    }

    async fn add_operator_events(&self, records: &[String]) -> Result<(), StoreError> {
        self.add_to_outbox(records).await
    }

    async fn operator_events(&self, most: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox(most).await
    }

    async fn remove_operator_events(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        self.remove_from_outbox(entries).await
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let mut connection = self.connection();
        let (_, stored): (bool, String) = redis::pipe()
            .atomic()
            .hset_nx(self.settings_key(), name, value)
            .hget(self.settings_key(), name)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(stored)
    }
}
