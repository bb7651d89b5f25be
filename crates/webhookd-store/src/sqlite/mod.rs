//! The embedded store: one SQLite file.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a transaction that
//! returned survives a crash of webhookd *and* of the machine. One
//! connection serves the process, owned by one thread that runs the
//! store's calls in turn (SQLite serialises writers anyway; one dedicated
//! thread costs a wake-up per call, where blocking-pool threads fighting
//! over a mutex cost several). `BEGIN IMMEDIATE` plus a busy timeout keep
//! several processes on one file correct.

mod clock_step;
mod deliveries;
mod endpoints;
mod group_commit;
mod operator;
mod payloads;
mod quotas;
mod rates;
mod resend;
mod rows;
mod schema;
mod settings;
mod users;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use webhookd_core::quota::Quotas;
use webhookd_core::{Endpoint, EndpointSpec, Event, ids};

use self::deliveries::{
    Leasing, accept_one, attempts_of, claim_due, delivery_stats, record_one_attempt, sweep_step,
};
use self::rows::{DELIVERY_COLUMNS, read_delivery, select_endpoint};
pub(crate) use self::schema::key_file;
use self::schema::{open_blocking, sqlite_error};
use crate::filters::ParsedFilters;
use crate::{
    Acceptance, AttemptRecord, Claim, ClaimRequest, CreateOutcome, Delivery, DeliveryCounts,
    DeliveryQuery, DeliveryStats, DeliveryStatus, DeliveryWindow, EndpointChanges, FinishedAttempt,
    Listing, OutboxEntry, Recorded, Retention, RetryOutcome, SecretSlot, Store, StoreError,
    SweepReport, UserSummary, new_delivery,
};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The connection's thread, which takes its work here.
    thread: Arc<ConnectionThread>,
    retention: Retention,
    /// Zero: never (SPEC §8).
    auto_disable_after: std::time::Duration,
    changes: Arc<EndpointChanges>,
    rates: Arc<rates::RateBuckets>,
    /// Writes waiting to share the next commit (accepts and records).
    writes: Arc<group_commit::Waiting>,
    /// The quotas' defaults (SPEC §11), and endpoints' kept deliveries.
    quotas: Quotas,
    kept: Arc<quotas::KeptCounts>,
    /// Endpoints' payload filters, parsed once (SPEC §15).
    filters: Arc<ParsedFilters>,
    /// Whether accepts and records add operator events (SPEC §15).
    operator_events: bool,
}

impl SqliteStore {
    /// Opens (creating if needed, with its directory) and migrates the
    /// database at `path`.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (opened, opening) = tokio::sync::oneshot::channel();
        let handle = std::thread::Builder::new()
            .name("sqlite".to_owned())
            .spawn(move || {
                let mut connection = match open_blocking(Path::new(&path)) {
                    Ok(connection) => {
                        let _ = opened.send(Ok(()));
                        connection
                    }
                    Err(error) => {
                        let _ = opened.send(Err(error));
                        return;
                    }
                };
                // Ends when the last handle on the store is dropped.
                while let Ok(job) = queue.recv() {
                    // A panicking job drops its answer (its caller gets an
                    // error); rusqlite rolls back an unfinished transaction
                    // on unwind, so the connection stays usable.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut connection);
                    }));
                }
            })
            .map_err(|e| StoreError::Failed(Box::new(e)))?;
        opening
            .await
            .map_err(|e| StoreError::Failed(Box::new(e)))??;
        Ok(SqliteStore {
            thread: Arc::new(ConnectionThread {
                jobs: Some(jobs),
                handle: Some(handle),
            }),
            retention: Retention::default(),
            auto_disable_after: std::time::Duration::ZERO,
            changes: Arc::default(),
            rates: Arc::default(),
            writes: Arc::default(),
            quotas: Quotas::default(),
            kept: Arc::default(),
            filters: Arc::default(),
            operator_events: false,
        })
    }

    /// Disables endpoints with no successful attempt for this long (SPEC
    /// §8; zero never, the default here).
    #[must_use]
    pub fn with_auto_disable_after(self, auto_disable_after: std::time::Duration) -> Self {
        SqliteStore {
            auto_disable_after,
            ..self
        }
    }

    /// Keeps finished deliveries as `retention` says (default: SPEC §4).
    #[must_use]
    pub fn with_retention(self, retention: Retention) -> Self {
        SqliteStore { retention, ..self }
    }

    /// Records operator events (SPEC §15) in the outbox as deliveries die,
    /// endpoints are disabled and quotas are reached.
    #[must_use]
    pub fn with_operator_events(self, operator_events: bool) -> Self {
        SqliteStore {
            operator_events,
            ..self
        }
    }

    /// Checks events against these quota defaults (SPEC §11; a user's own
    /// setting overrides them).
    #[must_use]
    pub fn with_quotas(self, quotas: Quotas) -> Self {
        SqliteStore { quotas, ..self }
    }

    /// Runs `work` with the connection, on its thread.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.thread
            .send(Box::new(move |connection: &mut Connection| {
                let _ = answer.send(work(connection));
            }))?;
        answered
            .await
            .map_err(|e| StoreError::Failed(Box::new(e)))?
    }

    /// Runs `work` in the next group commit (see `group_commit`): its
    /// answer comes once the transaction that holds it is durable.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let answered = self.writes.add(work);
        let writes = Arc::clone(&self.writes);
        self.call(move |c| {
            writes.commit(c);
            Ok(())
        })
        .await?;
        answered
            .await
            .map_err(|e| StoreError::Failed(Box::new(e)))?
    }
}

/// Work for the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The thread that owns the connection. Dropping the last handle on the
/// store closes the connection before the drop returns — as dropping the
/// connection itself would — so the file is complete and checkpointed once
/// the store is gone (a test, or a `webhookd` command, may read it next).
#[derive(Debug)]
struct ConnectionThread {
    /// `None` only while dropping.
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionThread {
    fn send(&self, job: Job) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) if jobs.send(job).is_ok() => Ok(()),
            _ => Err(StoreError::Failed("the SQLite thread is gone".into())),
        }
    }
}

impl Drop for ConnectionThread {
    fn drop(&mut self) {
        // No more work: the thread finishes what it has, closes the
        // connection and ends.
        drop(self.jobs.take());
        if let Some(handle) = self.handle.take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sqlite_error)
        })
        .await
    }

    async fn add_api_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (username, key_hash) = (username.to_owned(), key_hash.to_owned());
        self.call(move |c| users::add_api_key(c, &username, &key_hash, now))
            .await
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        let key_hash = key_hash.to_owned();
        self.call(move |c| users::user_for_api_key(c, &key_hash))
            .await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.call(|c| users::list_users(c)).await
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        let username = username.to_owned();
        self.call(move |c| users::revoke_api_keys(c, &username))
            .await
    }

    async fn replace_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        slot: SecretSlot,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        let values = [username, endpoint_id, expected, replacement].map(str::to_owned);
        self.call(move |c| endpoints::replace_secret(c, slot, &values))
            .await
    }

    async fn add_portal_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (username, token_hash) = (username.to_owned(), token_hash.to_owned());
        self.call(move |c| users::add_portal_link(c, &username, &token_hash, expires_at, now))
            .await
    }

    async fn user_for_portal_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.call(move |c| users::user_for_portal_link(c, &token_hash, now))
            .await
    }

    async fn redeem_portal_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let (link_hash, session_hash) = (link_hash.to_owned(), session_hash.to_owned());
        self.call(move |c| users::redeem_portal_link(c, &link_hash, &session_hash, now))
            .await
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        let endpoint = endpoint.clone();
        self.call(move |c| endpoints::create(c, &endpoint, limit))
            .await
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        let username = username.to_owned();
        self.call(move |c| endpoints::list(c, &username)).await
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        self.call(move |c| select_endpoint(c, &username, &endpoint_id))
            .await
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        let (username, endpoint_id, spec) =
            (username.to_owned(), endpoint_id.to_owned(), spec.clone());
        let changes = Arc::clone(&self.changes);
        self.call(move |c| endpoints::update(c, &username, &endpoint_id, &spec, &changes))
            .await
    }

    async fn rotate_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        new_secret: &str,
        previous_until: Option<i64>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let [username, endpoint_id, new_secret] =
            [username, endpoint_id, new_secret].map(str::to_owned);
        let changes = Arc::clone(&self.changes);
        self.call(move |c| {
            endpoints::rotate_secret(
                c,
                &username,
                &endpoint_id,
                &new_secret,
                previous_until,
                &changes,
            )
        })
        .await
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        let changes = Arc::clone(&self.changes);
        self.call(move |c| endpoints::delete(c, &username, &endpoint_id, &changes))
            .await
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        // All-or-nothing: an error means nothing was accepted, so the
        // producer's retry is safe. Sharing its commit with whatever else
        // waits saves an fsync per batch.
        let (events, claim) = (events.to_vec(), claim.clone());
        let (rates, kept, defaults) =
            (Arc::clone(&self.rates), Arc::clone(&self.kept), self.quotas);
        let keep_payloads = self.retention.keep_payloads;
        let filters = Arc::clone(&self.filters);
        let operator_events = self.operator_events;
        self.write(move |tx| {
            let mut leasing = Leasing::new(&claim, &rates, now_ms);
            let mut outcomes = Vec::with_capacity(events.len());
            let mut quotas = HashMap::new();
            for event in &events {
                let owner = event.username.as_str();
                let quotas = match quotas.get(owner) {
                    Some(quotas) => *quotas,
                    None => *quotas
                        .entry(owner)
                        .or_insert(quotas::quotas_of(tx, defaults, owner)?),
                };
                let outcome =
                    accept_one(tx, event, now_ms, &mut leasing, (quotas, &kept), &filters)?;
                if operator_events {
                    operator::after_accept(
                        tx,
                        event,
                        &outcome,
                        quotas.max_kept_deliveries_per_endpoint,
                        now_ms,
                    )?;
                }
                if let Some(first) = outcome.deliveries().first() {
                    payloads::keep(tx, first, now_ms, keep_payloads)?;
                }
                outcomes.push(outcome);
            }
            Ok((outcomes, leasing.claims))
        })
        .await
    }

    async fn create_test_delivery(
        &self,
        endpoint_id: &str,
        event: &Event,
        now_ms: i64,
    ) -> Result<Option<Delivery>, StoreError> {
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
        let keep_payloads = self.retention.keep_payloads;
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            if select_endpoint(&tx, &delivery.username, &delivery.endpoint_id)?.is_none() {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO deliveries (delivery_id, username, endpoint_id, event_id, event_type,
                     body, status, attempts, next_attempt_at, created_at, test)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, 1)",
                params![
                    delivery.delivery_id,
                    delivery.username,
                    delivery.endpoint_id,
                    delivery.event_id,
                    delivery.event_type.as_str(),
                    delivery.body,
                    now_ms
                ],
            )
            .map_err(sqlite_error)?;
            payloads::keep(&tx, &delivery, now_ms, keep_payloads)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(Some(delivery))
        })
        .await
    }

    async fn query_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        query: &DeliveryQuery,
    ) -> Result<Listing, StoreError> {
        let (username, endpoint_id, query) =
            (username.to_owned(), endpoint_id.to_owned(), query.clone());
        self.call(move |c| deliveries::query(c, &username, &endpoint_id, status, &query))
            .await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let request = request.clone();
        let rates = Arc::clone(&self.rates);
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            clock_step::note_and_repair(&tx, webhookd_core::time::unix_millis())?;
            let claims = claim_due(&tx, &request, &rates)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(claims)
        })
        .await
    }

    async fn record_attempts(
        &self,
        finished: &[FinishedAttempt],
    ) -> Result<Vec<Recorded>, StoreError> {
        let finished = finished.to_vec();
        let (retention, auto_disable_after) = (self.retention, self.auto_disable_after);
        let operator_events = self.operator_events;
        let (finished, recorded) = self
            .write(move |tx| {
                finished
                    .iter()
                    .map(|attempt| {
                        let recorded =
                            record_one_attempt(tx, &retention, auto_disable_after, attempt)?;
                        if operator_events {
                            operator::after_record(tx, attempt, recorded)?;
                        }
                        Ok(recorded)
                    })
                    .collect::<Result<Vec<Recorded>, StoreError>>()
                    .map(|recorded| (finished, recorded))
            })
            .await?;
        // Held claims hear of a disabled endpoint once that is committed.
        for (attempt, recorded) in finished.iter().zip(&recorded) {
            if let Recorded::WrittenAndDisabled { .. } = recorded {
                self.changes.mark(&attempt.claim.delivery.endpoint_id);
            }
            if recorded.is_written() && attempt.result == crate::AttemptResult::Delivered {
                self.kept.delivered(&attempt.claim.delivery.endpoint_id);
            }
        }
        Ok(recorded)
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        let (delivery_id, lease) = (claim.delivery.delivery_id.clone(), claim.lease.clone());
        self.call(move |c| {
            c.execute(
                "UPDATE deliveries SET next_attempt_at = ?1, lease_owner = NULL
                 WHERE delivery_id = ?2 AND lease_owner = ?3 AND status = 'pending'",
                params![due_ms, delivery_id, lease],
            )
            .map(|updated| updated > 0)
            .map_err(sqlite_error)
        })
        .await
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        let (username, endpoint_id, delivery_id) = (
            username.to_owned(),
            endpoint_id.to_owned(),
            delivery_id.to_owned(),
        );
        self.call(move |c| {
            let Some(delivery) = c
                .query_row(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries
                         WHERE delivery_id = ?1 AND endpoint_id = ?2 AND username = ?3"
                    ),
                    [&delivery_id, &endpoint_id, &username],
                    read_delivery,
                )
                .optional()
                .map_err(sqlite_error)?
            else {
                return Ok(None);
            };
            let attempts = attempts_of(c, &delivery_id)?;
            Ok(Some((delivery.parse()?, attempts)))
        })
        .await
    }

    async fn kept_payload(
        &self,
        delivery: &Delivery,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let delivery = delivery.clone();
        self.call(move |c| payloads::kept(c, &delivery, now_ms))
            .await
    }

    async fn delivery_counts(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryCounts>, StoreError> {
        let (username, endpoint_id) = (username.to_owned(), endpoint_id.to_owned());
        self.call(move |c| {
            if select_endpoint(c, &username, &endpoint_id)?.is_none() {
                return Ok(None);
            }
            let mut counts = DeliveryCounts::default();
            let mut select = c
                .prepare_cached(
                    "SELECT status, COUNT(*) FROM deliveries WHERE endpoint_id = ?1 GROUP BY status",
                )
                .map_err(sqlite_error)?;
            let rows = select
                .query_map([&endpoint_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(sqlite_error)?;
            for row in rows {
                let (status, count) = row.map_err(sqlite_error)?;
                let count = u64::try_from(count).unwrap_or(0);
                match status.parse::<DeliveryStatus>()? {
                    DeliveryStatus::Pending => counts.pending = count,
                    DeliveryStatus::Delivered => counts.delivered = count,
                    DeliveryStatus::Failed => counts.failed = count,
                }
            }
            Ok(Some(counts))
        })
        .await
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
        self.call(move |c| delivery_stats(c, now_ms)).await
    }

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let report = sweep_step(&tx, now_ms)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(report)
        })
        .await
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        Arc::clone(&self.changes)
    }

    async fn announce_process(
        &self,
        process_id: &str,
        key_ids: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let name = format!("{}{process_id}", crate::PROCESS_SETTING);
        let value = format!("{until_ms}|{key_ids}");
        self.call(move |c| settings::put(c, &name, &value)).await
    }

    async fn running_processes(&self, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.call(move |c| settings::running_processes(c, now_ms))
            .await
    }

    async fn add_operator_events(&self, records: &[String]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            for record in &records {
                operator::add(&tx, record)?;
            }
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn operator_events(&self, most: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.call(move |c| operator::take(c, most)).await
    }

    async fn remove_operator_events(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            operator::remove(&tx, &entries)?;
            tx.commit().map_err(sqlite_error)
        })
        .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| settings::get(c, &name)).await
    }

    async fn put_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.map(str::to_owned));
        self.call(move |c| match value {
            Some(value) => settings::put(c, &name, &value),
            None => settings::remove(c, &name),
        })
        .await
    }

    async fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = prefix.to_owned();
        self.call(move |c| settings::with_prefix(c, &prefix)).await
    }

    async fn take_in_window(
        &self,
        name: &str,
        window_ms: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.call(move |c| settings::take_in_window(c, &name, window_ms, now_ms, limit))
            .await
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.call(move |c| settings::get_or_insert(c, &name, &value))
            .await
    }
}
