//! Endpoint secrets sealed at rest (SPEC §7).
//!
//! [`Sealed`] wraps a store: secrets — and the delivery options document
//! (SPEC §14), which holds secret header values — are sealed on their way
//! in (create, update, rotate) and opened on their way out (endpoints, claims), so the stores
//! below keep opaque strings and a dump of them reveals no secret. The
//! AEAD is ChaCha20-Poly1305 (ring), a random 96-bit nonce per value, the
//! endpoint id as associated data: a sealed secret copied onto another
//! endpoint does not open.
//!
//! A sealed value reads `sealed:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`,
//! the key id being 8 hex digits of the key's SHA-256, so opening picks
//! its key without trying each. A value without the prefix is a secret
//! stored before a key was set; [`Sealed::reseal`] seals it (and re-seals
//! what an older key sealed) at the next start.
//!
//! Opening costs one AEAD per sealed value per process: opened secrets are
//! cached by their sealed form, which changes whenever the secret does, so
//! the delivery path pays a map lookup per claim, not a decryption.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;
use webhookd_core::encryption_key::EncryptionKey;
use webhookd_core::{Endpoint, EndpointSpec, Event};

use crate::{
    Acceptance, AttemptRecord, Claim, ClaimRequest, CreateOutcome, Delivery, DeliveryCounts,
    DeliveryQuery, DeliveryStats, DeliveryStatus, DeliveryWindow, EndpointChanges, FinishedAttempt,
    Listing, Recorded, RetryOutcome, SecretSlot, Store, StoreError, SweepReport, UserSummary,
};

const SEALED_PREFIX: &str = "sealed:v1:";

/// How long `/readyz` reports a secret this process could not open.
const UNOPENABLE_WAIT: Duration = Duration::from_secs(60);

/// Opened secrets kept per process; past this the cache starts over (an
/// endpoint costs one AEAD again), so memory stays bounded.
const CACHE_LIMIT: usize = 100_000;

/// The configured keys: the first seals, every one opens.
pub struct SecretBox {
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretBox")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

/// The key id of a key: 8 hex digits of its SHA-256. Names which key
/// sealed a value (and a key in an error message) without revealing it.
pub fn key_id(key: &EncryptionKey) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.bytes());
    let first = <[u8; 4]>::try_from(&digest.as_ref()[..4]).expect("a SHA-256 has 32 bytes");
    format!("{:08x}", u32::from_be_bytes(first))
}

impl SecretBox {
    /// No keys: secrets pass through unsealed (Redis without a key, warned
    /// about at start), and a sealed one cannot be opened.
    pub fn new(keys: &[EncryptionKey]) -> Self {
        let keys = keys
            .iter()
            .map(|key| {
                let unbound = UnboundKey::new(&CHACHA20_POLY1305, key.bytes())
                    .expect("a 32-byte key fits ChaCha20-Poly1305");
                (key_id(key), LessSafeKey::new(unbound))
            })
            .collect();
        SecretBox {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// `secret` sealed with the first key for `endpoint_id`.
    pub fn seal(&self, endpoint_id: &str, secret: &str) -> Result<String, StoreError> {
        let Some((id, key)) = self.keys.first() else {
            return Ok(secret.to_owned());
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::Sealing("the system's random generator failed".into()))?;
        let mut sealed = secret.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(endpoint_id.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| StoreError::Sealing("sealing failed".into()))?;
        let mut framed = nonce.to_vec();
        framed.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{id}:{}",
            URL_SAFE_NO_PAD.encode(framed)
        ))
    }

    /// The secret a stored value holds for `endpoint_id`: opened if sealed,
    /// as is if it was stored before keys were set.
    pub fn open(&self, endpoint_id: &str, stored: &str) -> Result<String, StoreError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, payload) = rest
            .split_once(':')
            .ok_or_else(|| StoreError::Corrupt(format!("sealed secret of {endpoint_id}")))?;
        let Some((_, key)) = self.keys.iter().find(|(known, _)| known == id) else {
            return Err(StoreError::Sealing(format!(
                "the secret of endpoint {endpoint_id} was sealed with key {id}, which is not \
                 in WEBHOOKD_ENCRYPTION_KEY{}",
                self.configured()
            )));
        };
        let tampered = || {
            StoreError::Sealing(format!(
                "the sealed secret of endpoint {endpoint_id} does not open with key {id}: \
                 altered, or copied from another endpoint"
            ))
        };
        let mut framed = URL_SAFE_NO_PAD.decode(payload).map_err(|_| tampered())?;
        if framed.len() < NONCE_LEN {
            return Err(tampered());
        }
        let mut sealed = framed.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&framed).map_err(|_| tampered())?;
        let opened = key
            .open_in_place(nonce, Aad::from(endpoint_id.as_bytes()), &mut sealed)
            .map_err(|_| tampered())?;
        String::from_utf8(opened.to_vec()).map_err(|_| tampered())
    }

    /// Whether a stored value is not sealed with the first key: what
    /// [`Sealed::reseal`] rewrites.
    fn needs_reseal(&self, stored: &str) -> bool {
        match self.keys.first() {
            Some((id, _)) => !stored
                .strip_prefix(SEALED_PREFIX)
                .is_some_and(|rest| rest.starts_with(&format!("{id}:"))),
            None => false,
        }
    }

    fn configured(&self) -> String {
        if self.keys.is_empty() {
            " (no key is set)".to_owned()
        } else {
            let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
            format!(" (configured: {})", ids.join(", "))
        }
    }
}

/// What [`Sealed::reseal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Stored secrets looked at (current and previous).
    pub secrets: usize,
    /// Of those, sealed anew with the first key.
    pub resealed: usize,
    /// Running processes that do not hold the first key, which is why
    /// nothing was re-sealed (empty when it was).
    pub held_back_by: Vec<String>,
    /// The keys the store opens with, the sealing one first.
    pub key_ids: Vec<String>,
}

/// How far a long operation has come, for a terminal to show: `done` of
/// `total` units (users for a reseal, deliveries for a recover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A store whose endpoint secrets are sealed at rest.
pub struct Sealed {
    inner: Arc<dyn Store>,
    secrets: SecretBox,
    /// Sealed form → the endpoint it opened for, and the secret. A hit
    /// for another endpoint is no hit: a sealed value copied onto another
    /// endpoint must fail as the associated data says, cached or not.
    opened: Mutex<HashMap<String, (String, String)>>,
    /// AEAD opens so far (cache misses), for tests and benchmarks.
    decryptions: AtomicU64,
    /// The last claim whose secret would not open: when, and why. While it
    /// is recent, [`Store::ping`] fails with it, so `/readyz` says so.
    unopenable: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("inner", &self.inner)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    pub fn new(inner: Arc<dyn Store>, secrets: SecretBox) -> Self {
        Sealed {
            inner,
            secrets,
            opened: Mutex::new(HashMap::new()),
            decryptions: AtomicU64::new(0),
            unopenable: Mutex::new(None),
        }
    }

    /// The ids of the keys this store opens with, the sealing one first.
    pub fn key_ids(&self) -> Vec<String> {
        self.secrets.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// How many sealed values this process has decrypted: one per secret,
    /// however many deliveries it signs.
    pub fn decryptions(&self) -> u64 {
        self.decryptions.load(Ordering::Relaxed)
    }

    /// Seals every stored secret not yet sealed with the first key —
    /// secrets stored before a key was set, or sealed with an older key —
    /// each with a compare-and-set, so processes running meanwhile lose
    /// nothing. Fails, naming `WEBHOOKD_ENCRYPTION_KEY`, if a stored secret
    /// opens with none of the keys: the configured key is wrong.
    pub async fn reseal(
        &self,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ResealReport, StoreError> {
        let mut report = ResealReport::default();
        let users = self.inner.list_users().await?;
        let total = users.len() as u64;
        for (done, user) in users.into_iter().enumerate() {
            progress(Progress {
                done: done as u64,
                total,
            });
            for endpoint in self.inner.list_endpoints(&user.username).await? {
                let id = &endpoint.endpoint_id;
                let previous = endpoint.previous_secret.as_ref().map(|p| &p.secret);
                let slots = [
                    (SecretSlot::Current, Some(&endpoint.secret)),
                    (SecretSlot::Previous, previous),
                    (SecretSlot::Options, endpoint.options.as_ref()),
                ];
                for (slot, stored) in slots {
                    let Some(stored) = stored else { continue };
                    report.secrets += 1;
                    let secret = self.secrets.open(id, stored)?;
                    if !self.secrets.needs_reseal(stored) {
                        continue;
                    }
                    let resealed = self.secrets.seal(id, &secret)?;
                    if self
                        .inner
                        .replace_secret(&user.username, id, slot, stored, &resealed)
                        .await?
                    {
                        report.resealed += 1;
                    }
                }
            }
        }
        progress(Progress { done: total, total });
        Ok(report)
    }

    /// The secret of a stored value, opened at most once per process.
    fn open(&self, endpoint_id: &str, stored: String) -> Result<String, StoreError> {
        if !stored.starts_with(SEALED_PREFIX) {
            return Ok(stored);
        }
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((owner, secret)) = opened.get(&stored)
            && owner == endpoint_id
        {
            return Ok(secret.clone());
        }
        let secret = self.secrets.open(endpoint_id, &stored)?;
        self.decryptions.fetch_add(1, Ordering::Relaxed);
        if opened.len() >= CACHE_LIMIT {
            opened.clear();
        }
        opened.insert(stored, (endpoint_id.to_owned(), secret.clone()));
        Ok(secret)
    }

    fn open_endpoint(&self, mut endpoint: Endpoint) -> Result<Endpoint, StoreError> {
        endpoint.secret = self.open(&endpoint.endpoint_id, std::mem::take(&mut endpoint.secret))?;
        if let Some(previous) = endpoint.previous_secret.as_mut() {
            previous.secret =
                self.open(&endpoint.endpoint_id, std::mem::take(&mut previous.secret))?;
        }
        if let Some(options) = endpoint.options.take() {
            endpoint.options = Some(self.open(&endpoint.endpoint_id, options)?);
        }
        Ok(endpoint)
    }

    /// Opens each claim's secrets. A claim whose secret does not open (a
    /// key this process lacks, mid-rotation; a value altered) is handed
    /// back, due again when its lease would have ended, its sending slot
    /// given up, for a process that holds the key — the batch's other claims go
    /// on. Never an error: the claims are leased already, and failing the
    /// batch would hide them all for a lease.
    async fn open_claims(&self, claims: Vec<Claim>) -> Vec<Claim> {
        let mut opened = Vec::with_capacity(claims.len());
        for mut claim in claims {
            match self.open_claim(&mut claim) {
                Ok(()) => opened.push(claim),
                Err(error) => self.set_aside(&claim, &error).await,
            }
        }
        opened
    }

    fn open_claim(&self, claim: &mut Claim) -> Result<(), StoreError> {
        let id = &claim.delivery.endpoint_id;
        claim.secret = self.open(id, std::mem::take(&mut claim.secret))?;
        if let Some(previous) = claim.previous_secret.as_mut() {
            previous.secret = self.open(id, std::mem::take(&mut previous.secret))?;
        }
        if let Some(options) = claim.options.take() {
            claim.options = Some(self.open(id, options)?);
        }
        Ok(())
    }

    /// Hands back a claim whose secret does not open; see `open_claims`.
    async fn set_aside(&self, claim: &Claim, error: &StoreError) {
        let reason = format!("a secret does not open with this process's keys: {error}");
        tracing::error!(
            endpoint_id = %claim.delivery.endpoint_id,
            delivery_id = %claim.delivery.delivery_id,
            %error,
            "cannot open the endpoint's secret; handing the delivery back for a process that holds the key (WEBHOOKD_ENCRYPTION_KEY, docs/operations.md)"
        );
        *self
            .unopenable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), reason));
        // Due when its lease would have ended: no sooner, or this process
        // would meet it again at once.
        let due = claim.delivery.next_attempt_at;
        let mut claim = claim.clone();
        if let Some(slot) = claim.slot.as_mut() {
            slot.keep_until = None;
        }
        if let Err(error) = self.inner.release(&claim, due).await {
            tracing::warn!(%error, delivery_id = %claim.delivery.delivery_id, "could not hand the claim back; its lease will end");
        }
    }

    fn open_some(&self, endpoint: Option<Endpoint>) -> Result<Option<Endpoint>, StoreError> {
        endpoint
            .map(|endpoint| self.open_endpoint(endpoint))
            .transpose()
    }
}

#[async_trait]
impl Store for Sealed {
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(name).await
    }

    async fn put_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.inner.put_setting(name, value).await
    }

    async fn settings_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.settings_with_prefix(prefix).await
    }

    async fn add_operator_events(&self, records: &[String]) -> Result<(), StoreError> {
        self.inner.add_operator_events(records).await
    }

    async fn operator_events(&self, most: usize) -> Result<Vec<crate::OutboxEntry>, StoreError> {
        self.inner.operator_events(most).await
    }

    async fn remove_operator_events(
        &self,
        entries: &[crate::OutboxEntry],
    ) -> Result<(), StoreError> {
        self.inner.remove_operator_events(entries).await
    }

    async fn take_in_window(
        &self,
        name: &str,
        window_ms: i64,
        now_ms: i64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        self.inner
            .take_in_window(name, window_ms, now_ms, limit)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let unopenable = self
            .unopenable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((at, reason)) = unopenable
            && at.elapsed() < UNOPENABLE_WAIT
        {
            return Err(StoreError::Sealing(reason));
        }
        self.inner.ping().await
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
        self.inner.add_api_key(username, key_hash, now).await
    }

    async fn user_for_api_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        self.inner.user_for_api_key(key_hash).await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.inner.list_users().await
    }

    async fn revoke_api_keys(&self, username: &str) -> Result<usize, StoreError> {
        self.inner.revoke_api_keys(username).await
    }

    async fn add_portal_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .add_portal_link(username, token_hash, expires_at, now)
            .await
    }

    async fn user_for_portal_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.inner.user_for_portal_link(token_hash, now).await
    }

    async fn redeem_portal_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        self.inner
            .redeem_portal_link(link_hash, session_hash, now)
            .await
    }

    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        limit: usize,
    ) -> Result<CreateOutcome, StoreError> {
        let mut sealed = endpoint.clone();
        sealed.secret = self.secrets.seal(&endpoint.endpoint_id, &endpoint.secret)?;
        if let Some(previous) = sealed.previous_secret.as_mut() {
            previous.secret = self.secrets.seal(&endpoint.endpoint_id, &previous.secret)?;
        }
        if let Some(options) = &endpoint.options {
            sealed.options = Some(self.secrets.seal(&endpoint.endpoint_id, options)?);
        }
        self.inner.create_endpoint(&sealed, limit).await
    }

    async fn list_endpoints(&self, username: &str) -> Result<Vec<Endpoint>, StoreError> {
        self.inner
            .list_endpoints(username)
            .await?
            .into_iter()
            .map(|endpoint| self.open_endpoint(endpoint))
            .collect()
    }

    async fn get_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        let endpoint = self.inner.get_endpoint(username, endpoint_id).await?;
        self.open_some(endpoint)
    }

    async fn update_endpoint(
        &self,
        username: &str,
        endpoint_id: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut sealed = spec.clone();
        if let Some(Some(options)) = &spec.options {
            sealed.options = Some(Some(self.secrets.seal(endpoint_id, options)?));
        }
        let endpoint = self
            .inner
            .update_endpoint(username, endpoint_id, &sealed)
            .await?;
        self.open_some(endpoint)
    }

    async fn rotate_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        new_secret: &str,
        previous_until: Option<i64>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let sealed = self.secrets.seal(endpoint_id, new_secret)?;
        let endpoint = self
            .inner
            .rotate_secret(username, endpoint_id, &sealed, previous_until)
            .await?;
        self.open_some(endpoint)
    }

    async fn replace_secret(
        &self,
        username: &str,
        endpoint_id: &str,
        slot: SecretSlot,
        expected: &str,
        replacement: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .replace_secret(username, endpoint_id, slot, expected, replacement)
            .await
    }

    async fn delete_endpoint(&self, username: &str, endpoint_id: &str) -> Result<bool, StoreError> {
        self.inner.delete_endpoint(username, endpoint_id).await
    }

    async fn accept_and_claim(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        let (acceptances, claims) = self.inner.accept_and_claim(events, now_ms, claim).await?;
        Ok((acceptances, self.open_claims(claims).await))
    }

    async fn create_test_delivery(
        &self,
        endpoint_id: &str,
        event: &Event,
        now_ms: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        self.inner
            .create_test_delivery(endpoint_id, event, now_ms)
            .await
    }

    async fn query_deliveries(
        &self,
        username: &str,
        endpoint_id: &str,
        status: DeliveryStatus,
        query: &DeliveryQuery,
    ) -> Result<Listing, StoreError> {
        self.inner
            .query_deliveries(username, endpoint_id, status, query)
            .await
    }

    async fn claim_due(&self, request: &ClaimRequest) -> Result<Vec<Claim>, StoreError> {
        let claims = self.inner.claim_due(request).await?;
        Ok(self.open_claims(claims).await)
    }

    async fn record_attempts(
        &self,
        finished: &[FinishedAttempt],
    ) -> Result<Vec<Recorded>, StoreError> {
        self.inner.record_attempts(finished).await
    }

    fn counts_sending_slots(&self) -> bool {
        self.inner.counts_sending_slots()
    }

    async fn release(&self, claim: &Claim, due_ms: i64) -> Result<bool, StoreError> {
        self.inner.release(claim, due_ms).await
    }

    async fn delivery_attempts(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
        self.inner
            .delivery_attempts(username, endpoint_id, delivery_id)
            .await
    }

    async fn kept_payload(
        &self,
        delivery: &Delivery,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.inner.kept_payload(delivery, now_ms).await
    }

    async fn delivery_counts(
        &self,
        username: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryCounts>, StoreError> {
        self.inner.delivery_counts(username, endpoint_id).await
    }

    async fn retry_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<RetryOutcome, StoreError> {
        self.inner
            .retry_dead(username, endpoint_id, delivery_id, now_ms)
            .await
    }

    async fn count_dead(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
    ) -> Result<u64, StoreError> {
        self.inner.count_dead(username, endpoint_id, window).await
    }

    async fn recover(
        &self,
        username: &str,
        endpoint_id: &str,
        window: DeliveryWindow,
        now_ms: i64,
        most: usize,
    ) -> Result<usize, StoreError> {
        self.inner
            .recover(username, endpoint_id, window, now_ms, most)
            .await
    }

    async fn delivery_stats(&self, now_ms: i64) -> Result<DeliveryStats, StoreError> {
        self.inner.delivery_stats(now_ms).await
    }

    async fn sweep(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        self.inner.sweep(now_ms).await
    }

    fn endpoint_changes(&self) -> Arc<EndpointChanges> {
        self.inner.endpoint_changes()
    }

    async fn follow_endpoint_changes(&self, shutdown: CancellationToken) {
        self.inner.follow_endpoint_changes(shutdown).await;
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.inner.setting_or_insert(name, value).await
    }

    async fn announce_process(
        &self,
        process_id: &str,
        key_ids: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .announce_process(process_id, key_ids, until_ms)
            .await
    }

    async fn running_processes(&self, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.running_processes(now_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_for_its_endpoint_only() {
        let secrets = SecretBox::new(&[EncryptionKey::generate()]);
        let sealed = secrets.seal("wh_a", "whsec_abc").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            secrets.seal("wh_a", "whsec_abc").unwrap(),
            "random nonce"
        );
        assert_eq!(secrets.open("wh_a", &sealed).unwrap(), "whsec_abc");
        let copied = secrets.open("wh_b", &sealed).unwrap_err();
        assert!(
            copied.to_string().contains("copied from another endpoint"),
            "{copied}"
        );
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            secrets.open("wh_a", &altered),
            Err(StoreError::Sealing(_))
        ));
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let (old, new) = (EncryptionKey::generate(), EncryptionKey::generate());
        let before = SecretBox::new(std::slice::from_ref(&old));
        let sealed_before = before.seal("wh_a", "whsec_abc").unwrap();
        let rotated = SecretBox::new(&[new.clone(), old.clone()]);
        assert_eq!(rotated.open("wh_a", &sealed_before).unwrap(), "whsec_abc");
        assert!(rotated.needs_reseal(&sealed_before));
        assert!(!rotated.needs_reseal(&rotated.seal("wh_a", "whsec_abc").unwrap()));
        assert!(rotated.needs_reseal("whsec_plain"));

        let wrong = SecretBox::new(&[new]);
        let error = wrong.open("wh_a", &sealed_before).unwrap_err().to_string();
        assert!(error.contains("WEBHOOKD_ENCRYPTION_KEY"), "{error}");
        assert!(error.contains(&key_id(&old)), "{error}");
        // Without keys a plain secret passes and a sealed one does not.
        let none = SecretBox::new(&[]);
        assert_eq!(none.seal("wh_a", "whsec_abc").unwrap(), "whsec_abc");
        assert!(none.open("wh_a", &sealed_before).is_err());
        assert!(!none.needs_reseal("whsec_abc"));
    }
}
