//! A [`Store`] that times every operation and counts its failures, around
//! any other store. `open` returns stores wrapped in it, so every caller is
//! measured without knowing.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use webhookd_core::telemetry;
use webhookd_core::{Endpoint, EndpointSpec, Event};

use crate::{
    Acceptance, AttemptRecord, Claim, ClaimRequest, CreateOutcome, Delivery, DeliveryCounts,
    DeliveryQuery, DeliveryStats, DeliveryStatus, DeliveryWindow, EndpointChanges, FinishedAttempt,
    Listing, Recorded, RetryOutcome, SecretSlot, Store, StoreError, SweepReport, UserSummary,
};

#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Store>,
}

/// The operations that change state or sit on a hot path; their error
/// series exist from the start.
const WATCHED_OPERATIONS: &[&str] = &[
    "accept_events",
    "claim_due",
    "record_attempts",
    "accept_and_claim",
    "user_for_api_key",
    "ping",
];

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        for operation in WATCHED_OPERATIONS {
            telemetry::store_operation_known(operation);
        }
        Instrumented { inner }
    }
}

async fn timed<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    // A child of the attempt or accept it serves, when that is exported;
    // a call outside one (a claim, a batch of records) is not traced.
    let span = if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        tracing::info_span!(target: telemetry::SPAN_TARGET, "store", otel.name = operation)
    };
    let result = work.instrument(span).await;
    telemetry::store_operation(
        operation,
        started.elapsed(),
        result.as_ref().err().map(StoreError::kind),
    );
    result
}

#[async_trait]
impl Store for Instrumented {
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        timed("setting", self.inner.setting(name)).await
    }

    async fn put_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        timed("put_setting", self.inner.put_setting(name, value)).await
    }

    async fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        timed(
            "settings_with_prefix",
            self.inner.settings_with_prefix(prefix),
        )
        .await
    }

    async fn add_operator_events(&self, records: &[String]) -> Result<(), StoreError> {
        timed(
            "add_operator_events",
            self.inner.add_operator_events(records),
        )
        .await
    }

    async fn operator_events(&self, most: usize) -> Result<Vec<crate::OutboxEntry>, StoreError> {
        timed("operator_events", self.inner.operator_events(most)).await
    }

    async fn remove_operator_events(
        &self,
        entries: &[crate::OutboxEntry],
    ) -> Result<(), StoreError> {
        timed(
            "remove_operator_events",
            self.inner.remove_operator_events(entries),
        )
        .await
    }

    async fn take_in_window(
        &self,
        name: &str,
        window_ms: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        timed(
            "take_in_window",
            self.inner.take_in_window(name, window_ms, now_ms, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.inner.ping()).await
    }

    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    async fn add_api_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        timed(
            "add_api_key",
            self.inner.add_api_key(username, key_hash, now),
        )
        .await
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        timed("user_for_api_key", self.inner.user_for_api_key(key_hash)).await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        timed("list_users", self.inner.list_users()).await
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        timed("revoke_api_keys", self.inner.revoke_api_keys(username)).await
    }

    async fn replace_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        slot: SecretSlot,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        timed(
            "replace_secret",
            self.inner
                .replace_secret(username, endpoint_id, slot, expected, replacement),
        )
        .await
    }

    async fn add_portal_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        timed(
            "add_portal_link",
            self.inner
                .add_portal_link(username, token_hash, expires_at, now),
        )
        .await
    }

    async fn user_for_portal_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        timed(
            "user_for_portal_link",
            self.inner.user_for_portal_link(token_hash, now),
        )
        .await
    }

    async fn redeem_portal_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        timed(
            "redeem_portal_link",
            self.inner.redeem_portal_link(link_hash, session_hash, now),
        )
        .await
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        timed(
            "create_endpoint",
            self.inner.create_endpoint(endpoint, limit),
        )
        .await
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        timed("list_endpoints", self.inner.list_endpoints(username)).await
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        timed(
            "get_endpoint",
            self.inner.get_endpoint(username, endpoint_id),
        )
        .await
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        timed(
            "update_endpoint",
            self.inner.update_endpoint(username, endpoint_id, spec),
        )
        .await
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        timed(
            "delete_endpoint",
            self.inner.delete_endpoint(username, endpoint_id),
        )
        .await
    }

    async fn accept_events(
        &self,
        events: &[Event],
        now_ms: i64,
    ) -> Result<Vec<Acceptance>, StoreError> {
        timed("accept_events", self.inner.accept_events(events, now_ms)).await
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        timed(
            "accept_and_claim",
            self.inner.accept_and_claim(events, now_ms, claim),
        )
        .await
    }

    async fn query_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        query: &DeliveryQuery,
    ) -> Result<Listing, StoreError> {
        timed(
            "query_deliveries",
            self.inner
                .query_deliveries(username, endpoint_id, status, query),
        )
        .await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        timed("claim_due", self.inner.claim_due(request)).await
    }

    async fn record_attempts(
        &self,
        finished: &[FinishedAttempt],
    ) -> Result<Vec<Recorded>, StoreError> {
        timed("record_attempts", self.inner.record_attempts(finished)).await
    }

    fn counts_sending_slots(&self) -> bool {
        self.inner.counts_sending_slots()
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        timed("release", self.inner.release(claim, due_ms)).await
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        timed(
            "delivery_attempts",
            self.inner
                .delivery_attempts(username, endpoint_id, delivery_id),
        )
        .await
    }

    async fn kept_payload(
        &self,
        delivery: &Delivery,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        timed("kept_payload", self.inner.kept_payload(delivery, now_ms)).await
    }

    async fn delivery_counts(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryCounts>, StoreError> {
        timed(
            "delivery_counts",
            self.inner.delivery_counts(username, endpoint_id),
        )
        .await
    }

    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        timed(
            "retry_dead",
            self.inner
                .retry_dead(username, endpoint_id, delivery_id, now_ms),
        )
        .await
    }

    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError> {
        timed("delivery_stats", self.inner.delivery_stats(now_ms)).await
    }

    async fn rotate_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        new_secret: &str,
        previous_until: Option<i64>,
    ) -> Result<Option<Endpoint>, StoreError> {
        timed(
            "rotate_secret",
            self.inner
                .rotate_secret(username, endpoint_id, new_secret, previous_until),
        )
        .await
    }

    async fn create_test_delivery(
        &self,
        endpoint_id: &str,
        event: &Event,
        now_ms: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        timed(
            "create_test_delivery",
            self.inner.create_test_delivery(endpoint_id, event, now_ms),
        )
        .await
    }

    async fn count_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError> {
        timed(
            "count_dead",
            self.inner.count_dead(username, endpoint_id, window),
        )
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
        timed(
            "recover",
            self.inner
                .recover(username, endpoint_id, window, now_ms, most),
        )
        .await
    }

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        timed("sweep", self.inner.sweep(now_ms)).await
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        self.inner.endpoint_changes()
    }

    async fn follow_endpoint_changes(&self, shutdown: CancellationToken) {
        self.inner.follow_endpoint_changes(shutdown).await;
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        timed(
            "setting_or_insert",
            self.inner.setting_or_insert(name, value),
        )
        .await
    }

    async fn announce_process(
        &self,
        process_id: &str,
        key_ids: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        timed(
            "announce_process",
            self.inner.announce_process(process_id, key_ids, until_ms),
        )
        .await
    }

    async fn running_processes(&self, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        timed("running_processes", self.inner.running_processes(now_ms)).await
    }
}
