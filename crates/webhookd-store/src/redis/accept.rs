//! Accepting events on Redis: the accept script per partition, and the
//! payload filters decided here from each owner's snapshot (see
//! `crate::filters`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use webhookd_core::trace::TraceContext;
use webhookd_core::{Event, PreviousSecret, ids};

use super::rows::{self, acceptance_from_answer};
use super::{DEDUP_WINDOW_MS, RedisStore};
use crate::filters::OwnerFilters;
use crate::{Acceptance, Claim, ClaimRequest, Delivery, Store, StoreError};

/// Times an accept reads an owner's filters again before giving up with
/// `Unavailable` (the producer's retry then starts over).
const STALE_ROUNDS: usize = 3;

/// What the accept script says of a delivery it leased.
struct Leased {
    url: String,
    secret: String,
    lease: String,
    previous_secret: Option<PreviousSecret>,
    slot: Option<crate::SendingSlot>,
    options: Option<String>,
}

impl Leased {
    /// `(delivery id, what was leased)` from the script's row.
    fn from_row(row: [String; 8], lease_until_ms: i64) -> (String, Leased) {
        let [
            delivery_id,
            url,
            secret,
            lease,
            previous,
            previous_expires_at,
            slot,
            options,
        ] = row;
        let leased = Leased {
            url,
            secret,
            lease,
            previous_secret: rows::previous_secret(Some(previous), Some(&previous_expires_at)),
            slot: rows::granted_slot(slot, lease_until_ms),
            options: (!options.is_empty()).then_some(options),
        };
        (delivery_id, leased)
    }

    /// The claim of `delivery`, leased until `lease_until_ms`.
    fn into_claim(self, delivery: &Delivery, lease_until_ms: i64) -> Claim {
        Claim {
            delivery: Delivery {
                next_attempt_at: lease_until_ms,
                ..delivery.clone()
            },
            url: self.url,
            secret: self.secret,
            previous_secret: self.previous_secret,
            options: self.options,
            lease: self.lease,
            slot: self.slot,
        }
    }
}

/// The start of the delivery ids of one event: its deliveries share all but
/// the last two hex digits (a user has at most 256 endpoints, asserted
/// above), so ids stay time-ordered and one fresh id serves every endpoint.
fn delivery_id_base() -> String {
    let mut id = ids::new_delivery_id();
    id.truncate(id.len() - 2);
    id
}

impl RedisStore {
    /// Accepts `events`, leasing fresh deliveries as `claim` allows (a
    /// default request, limit 0, leases nothing). An owner's filters that
    /// changed under the snapshot are read again and the events it made
    /// stale accepted again (their deliveries then wait for a claim).
    pub(super) async fn accept(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
    ) -> Result<(Vec<Acceptance>, Vec<Claim>), StoreError> {
        if events.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut filters = HashMap::new();
        for event in events {
            let owner = event.username.as_str();
            if !filters.contains_key(owner) {
                let snapshot = match self.filters.get(owner) {
                    Some(snapshot) => snapshot,
                    None => self.read_filters(owner).await?,
                };
                filters.insert(owner, snapshot);
            }
        }
        let (mut outcomes, claims) = self.accept_round(events, now_ms, claim, &filters).await?;
        for _ in 0..STALE_ROUNDS {
            let stale: Vec<usize> = (0..events.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            let Some(&first) = stale.first() else { break };
            let owners: HashSet<&str> =
                stale.iter().map(|&i| events[i].username.as_str()).collect();
            tracing::debug!(owners = owners.len(), first = %events[first].event_id,
                "payload filters changed under an accept; reading them again");
            for owner in owners {
                filters.insert(owner, self.read_filters(owner).await?);
            }
            let again: Vec<Event> = stale.iter().map(|&i| events[i].clone()).collect();
            let nothing = ClaimRequest::default();
            let (answers, _) = self
                .accept_round(&again, now_ms, &nothing, &filters)
                .await?;
            for (i, answer) in stale.into_iter().zip(answers) {
                outcomes[i] = answer;
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.ok_or_else(|| {
                    StoreError::Unavailable(
                        "an owner's payload filters kept changing during the accept".into(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A stale event leased nothing: every claim is an accepted one's.
        Ok((outcomes, claims))
    }

    /// `owner`'s filtered endpoints as the store holds them now, kept as
    /// its snapshot.
    async fn read_filters(&self, owner: &str) -> Result<Arc<OwnerFilters>, StoreError> {
        let endpoints = self.list_endpoints(owner).await?;
        Ok(self
            .filters
            .put(owner, OwnerFilters::of(&endpoints, &self.filters.parsed)))
    }

    /// One accept script call per partition, with `filters` as each
    /// owner's snapshot; `None` for an event the script found stale.
    async fn accept_round(
        &self,
        events: &[Event],
        now_ms: i64,
        claim: &ClaimRequest,
        filters: &HashMap<&str, Arc<OwnerFilters>>,
    ) -> Result<(Vec<Option<Acceptance>>, Vec<Claim>), StoreError> {
        let bodies: Vec<String> = events.iter().map(Event::body).collect();
        let id_bases: Vec<String> = events.iter().map(|_| delivery_id_base()).collect();
        let by_partition = self.group_by_partition(events.iter().map(|event| &event.username));
        let lease_base = ids::new_lease_token();
        let room: Vec<(&String, &usize)> = claim.room.iter().collect();
        let quotas = self
            .quotas_of(events.iter().map(|event| &event.username))
            .await?;
        // The claim limit and the suspects' share are shared out in
        // proportion to each partition's events.
        let answers: Vec<(Vec<redis::Value>, Vec<[String; 8]>)> = self
            .per_partition(
                &self.scripts.accept_events,
                &by_partition,
                self.wait_replicas,
                |invocation, partition, members| {
                    invocation
                        .arg(DEDUP_WINDOW_MS)
                        .arg(now_ms)
                        .arg(claim.lease_until_ms)
                        .arg(format!("{lease_base}:{partition}"))
                        .arg(claim.limit * members.len() / events.len())
                        .arg(claim.per_endpoint)
                        .arg(claim.endpoint_limit)
                        .arg(claim.suspect_room * members.len() / events.len())
                        .arg(room.len())
                        .arg(crate::day_of(now_ms))
                        .arg(self.retention.keep_payloads.as_millis())
                        .arg(self.operator_flag());
                    rows::room_arguments(invocation, &room, claim);
                    for &i in members {
                        let event = &events[i];
                        let quotas = quotas
                            .get(event.username.as_str())
                            .copied()
                            .unwrap_or(self.quotas.defaults);
                        invocation
                            .arg(self.user_prefix(&event.username))
                            .arg(&event.username)
                            .arg(&event.event_id)
                            .arg(event.event_type.as_str())
                            .arg(format!("\"{}\"", event.event_type.as_str()))
                            .arg(&bodies[i])
                            .arg(&id_bases[i])
                            .arg(quotas.max_kept_deliveries_per_endpoint)
                            .arg(quotas.max_events_per_day.unwrap_or(0))
                            .arg(OwnerFilters::script_arguments(
                                filters.get(event.username.as_str()).map(AsRef::as_ref),
                                event,
                            ))
                            .arg(
                                event
                                    .trace
                                    .as_ref()
                                    .map(TraceContext::to_stored)
                                    .unwrap_or_default(),
                            )
                            .arg(event.ordering_key.as_deref().unwrap_or_default());
                    }
                },
            )
            .await?;
        let mut outcomes: Vec<Option<Option<Acceptance>>> = vec![None; events.len()];
        let mut leases: HashMap<String, Leased> = HashMap::new();
        for ((_, members), (chosen_per_event, leased)) in by_partition.iter().zip(answers) {
            for (&i, chosen) in members.iter().zip(chosen_per_event) {
                outcomes[i] = Some(acceptance_from_answer(
                    chosen,
                    &events[i],
                    &bodies[i],
                    &id_bases[i],
                    now_ms,
                    quotas
                        .get(events[i].username.as_str())
                        .and_then(|quotas| quotas.max_events_per_day),
                )?);
            }
            leases.extend(
                leased
                    .into_iter()
                    .map(|row| Leased::from_row(row, claim.lease_until_ms)),
            );
        }
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.ok_or_else(|| StoreError::Corrupt("an event got no answer".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claims = outcomes
            .iter()
            .flatten()
            .flat_map(Acceptance::deliveries)
            .filter_map(|delivery| {
                let leased = leases.remove(&delivery.delivery_id)?;
                Some(leased.into_claim(delivery, claim.lease_until_ms))
            })
            .collect();
        Ok((outcomes, claims))
    }
}
