//! Reads a run's history and says what it broke.
//!
//! 1. Nothing lost: every confirmed publish reached (2xx) every endpoint
//!    its owner had, unless that endpoint was deleted, created after the
//!    publish, or disabled at some moment between the publish and the
//!    event's first request at any of the owner's endpoints (by then it
//!    was accepted: it fanned out to the endpoints enabled then) — or the
//!    store keeps the delivery as dead. A pair whose only 2xx came after
//!    the attempt deadline is delivered if the store says so (webhookd,
//!    stopped or starved past the answer, read it); the store saying
//!    delivered with no 2xx ever sent is a violation. Every answered test
//!    send reached its endpoint.
//! 2. Duplicates only after faults: an (event, endpoint) pair answered 2xx
//!    twice needs a fault (or a recover) in force between a lease before
//!    the first and the second.
//! 3. A PUT, a disable or a DELETE that has been answered holds: no
//!    request reaches an old URL, a disabled endpoint (test sends aside)
//!    or a deleted one after `MARGIN`, unless a fault explains it.
//! 4. No endpoint ever had more requests in flight than
//!    `endpoint_concurrency`, across all processes.
//! 5. Every signature verifies under a secret in force (or in its grace)
//!    at the time, allowing `MARGIN` around a rotation.
//! 6. The store's counts agree with the history: each live endpoint's
//!    delivered count (`GET /v2/endpoint/{id}`) is at least the deliveries
//!    its receiver answered 2xx in time, and at most those plus the ones it
//!    answered 2xx late.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::faults::Window;
use crate::receivers::{Receivers, Request};
use crate::world::Endpoint;

/// The lease (4 × the 1 s deadline + 30 s): how long before a request a
/// fault can still be the cause of it.
const LEASE: Duration = Duration::from_secs(34);
/// How long after an answered change a request may still follow the old
/// state: the attempt on the wire (1 s deadline) and the change reaching
/// the other processes through the store.
const MARGIN: Duration = Duration::from_secs(3);

/// A published event, as the broker confirmed it (or HTTP ingest answered
/// 202).
#[derive(Debug, Clone)]
pub struct Published {
    pub event_id: String,
    pub owner: usize,
    pub at: Instant,
}

/// What a run broke, and what it counted.
#[derive(Debug, Default)]
pub struct Verdict {
    pub expected_pairs: usize,
    pub delivered_pairs: usize,
    /// Expected pairs not delivered; with the slot they belong to.
    pub undelivered: Vec<(String, usize)>,
    pub duplicates: usize,
    /// Pairs delivered by a 2xx given after the attempt deadline, which
    /// webhookd read (the store records them delivered).
    pub read_late: usize,
    /// Duplicates by the kind of the fault that explains them.
    pub duplicates_by_fault: HashMap<&'static str, usize>,
    pub requests: usize,
    pub violations: Vec<String>,
}

/// The history of a run, as the checker reads it.
#[derive(Debug)]
pub struct History<'a> {
    /// Endpoint slots the store still holds pending deliveries for: what
    /// did not reach them is late (draining, or stuck), not lost.
    pub pending: &'a HashSet<usize>,
    pub started: Instant,
    pub published: &'a [Published],
    pub endpoints: &'a [Endpoint],
    pub receivers: &'a Receivers,
    pub windows: &'a [Window],
    pub endpoint_concurrency: usize,
}

impl History<'_> {
    fn at(&self, instant: Instant) -> String {
        format!(
            "+{:.1}s",
            instant
                .saturating_duration_since(self.started)
                .as_secs_f64()
        )
    }

    /// The first fault whose window meets `from..=until`.
    fn explained(&self, from: Instant, until: Instant) -> Option<&Window> {
        self.windows
            .iter()
            .find(|window| window.until >= from && window.from <= until)
    }

    fn excerpt(&self, requests: &[&Request]) -> String {
        let mut text = String::new();
        for request in requests.iter().take(12) {
            let answer = match request.answered {
                Some((status, at)) => format!("{status} at {}", self.at(at)),
                None => "no answer".to_owned(),
            };
            let _ = write!(
                text,
                " [{} v{} {answer}]",
                self.at(request.arrived),
                request.version
            );
        }
        text
    }
}

/// What the store says of the slots with undelivered pairs: the events it
/// keeps as dead there, and those it records delivered.
#[derive(Debug, Default)]
pub struct StoreSays {
    pub dead: HashMap<usize, HashSet<String>>,
    pub delivered: HashMap<usize, HashSet<String>>,
    /// Each live slot's delivered count, from the store's counts.
    pub delivered_counts: HashMap<usize, u64>,
}

/// Checks `history`, with what the store says of the undelivered pairs.
pub fn check(history: &History, store: &StoreSays) -> Verdict {
    let mut verdict = Verdict::default();
    let requests: Vec<Vec<Request>> = (0..history.endpoints.len())
        .map(|n| history.receivers.requests(n))
        .collect();
    verdict.requests = requests.iter().map(Vec::len).sum();
    check_losses(history, &requests, store, &mut verdict);
    for (n, counted) in &store.delivered_counts {
        check_count(*n, *counted, &requests[*n], &mut verdict);
    }
    for (n, endpoint) in history.endpoints.iter().enumerate() {
        check_duplicates(history, n, &requests[n], &mut verdict);
        check_changes_hold(history, n, endpoint, &requests[n], &mut verdict);
        check_signatures(history, n, endpoint, &requests[n], &mut verdict);
        let most = history.receivers.most_in_flight(n);
        if most > history.endpoint_concurrency {
            verdict.violations.push(format!(
                "endpoint {n} had {most} requests in flight at once (endpoint_concurrency {})",
                history.endpoint_concurrency
            ));
        }
    }
    verdict
}

fn check_losses(
    history: &History,
    requests: &[Vec<Request>],
    store: &StoreSays,
    verdict: &mut Verdict,
) {
    // Each event once, at its first confirmed publish.
    let mut first_published: HashMap<&str, &Published> = HashMap::new();
    for event in history.published {
        first_published.entry(&event.event_id).or_insert(event);
    }
    // The first request of each event at any endpoint: it was accepted by then.
    let mut first_request: HashMap<&str, Instant> = HashMap::new();
    let mut succeeded: Vec<HashSet<&str>> = Vec::new();
    for slot in requests {
        let mut delivered = HashSet::new();
        for request in slot {
            first_request
                .entry(&request.event_id)
                .and_modify(|at| *at = (*at).min(request.arrived))
                .or_insert(request.arrived);
            if request.succeeded() {
                delivered.insert(request.event_id.as_str());
            }
        }
        succeeded.push(delivered);
    }
    let now = Instant::now();
    let none = HashSet::new();
    for event in first_published.values() {
        let accepted_by = first_request
            .get(event.event_id.as_str())
            .copied()
            .unwrap_or(now);
        for (n, endpoint) in history.endpoints.iter().enumerate() {
            let expected = endpoint.owner == event.owner
                && endpoint.deleted.is_none()
                && endpoint.created.is_some_and(|created| created <= event.at)
                && !endpoint
                    .disabled
                    .iter()
                    .any(|span| span.overlaps(event.at, accepted_by));
            if !expected {
                continue;
            }
            verdict.expected_pairs += 1;
            if succeeded[n].contains(event.event_id.as_str()) {
                verdict.delivered_pairs += 1;
                continue;
            }
            if store
                .dead
                .get(&n)
                .unwrap_or(&none)
                .contains(&event.event_id)
            {
                continue;
            }
            let tried: Vec<&Request> = requests[n]
                .iter()
                .filter(|request| request.event_id == event.event_id)
                .collect();
            if store
                .delivered
                .get(&n)
                .unwrap_or(&none)
                .contains(&event.event_id)
            {
                if tried.iter().any(|request| request.succeeded_late()) {
                    verdict.read_late += 1;
                    verdict.delivered_pairs += 1;
                } else {
                    verdict.violations.push(format!(
                        "delivered without a 2xx: the store records {} delivered to endpoint {n}, whose receiver never answered it 2xx; its requests there:{}",
                        event.event_id,
                        if tried.is_empty() { " none".to_owned() } else { history.excerpt(&tried) },
                    ));
                }
                continue;
            }
            verdict.undelivered.push((event.event_id.clone(), n));
            verdict.violations.push(format!(
                "{}: {} (published {}, first request at any endpoint of its owner {}) never reached endpoint {n}; its requests there:{}{}",
                if history.pending.contains(&n) {
                    "not delivered in the heal time (the store holds pending deliveries for the endpoint)"
                } else {
                    "lost"
                },
                event.event_id,
                history.at(event.at),
                first_request.get(event.event_id.as_str()).map_or("never".to_owned(), |at| history.at(*at)),
                if tried.is_empty() { " none".to_owned() } else { history.excerpt(&tried) },
                disabled_spans(history, endpoint),
            ));
        }
    }
    check_test_sends(history, &succeeded, verdict);
}

/// Every answered test send reached its endpoint (unless it was deleted).
fn check_test_sends(history: &History, succeeded: &[HashSet<&str>], verdict: &mut Verdict) {
    for (n, endpoint) in history.endpoints.iter().enumerate() {
        if endpoint.deleted.is_some() {
            continue;
        }
        for (event_id, answered) in &endpoint.tests {
            if !succeeded[n].contains(event_id.as_str()) {
                verdict.violations.push(format!(
                    "{}: test send {event_id} (answered {}) never reached endpoint {n}",
                    if history.pending.contains(&n) {
                        "not delivered in the heal time (the store holds pending deliveries for the endpoint)"
                    } else {
                        "lost"
                    },
                    history.at(*answered)
                ));
            }
        }
    }
}

/// The store's delivered count for slot `n` against its receiver's view:
/// every delivery answered 2xx in time is delivered, and nothing else is
/// but those answered 2xx late (which webhookd may have read).
fn check_count(n: usize, counted: u64, requests: &[Request], verdict: &mut Verdict) {
    let in_time: HashSet<&str> = requests
        .iter()
        .filter(|request| request.succeeded())
        .map(|request| request.event_id.as_str())
        .collect();
    let at_most = requests
        .iter()
        .filter(|request| request.succeeded_late())
        .map(|request| request.event_id.as_str())
        .chain(in_time.iter().copied())
        .collect::<HashSet<&str>>()
        .len();
    let at_least = in_time.len();
    if !(at_least..=at_most).contains(&usize::try_from(counted).unwrap_or(usize::MAX)) {
        verdict.violations.push(format!(
            "counts: the store counts {counted} deliveries delivered to endpoint {n}; its receiver answered {at_least} 2xx in time and {} more late",
            at_most - at_least
        ));
    }
}

fn disabled_spans(history: &History, endpoint: &Endpoint) -> String {
    if endpoint.disabled.is_empty() {
        return String::new();
    }
    let spans: Vec<String> = endpoint
        .disabled
        .iter()
        .map(|span| {
            format!(
                "{}..{}",
                history.at(span.from),
                span.until
                    .map_or("end".to_owned(), |until| history.at(until))
            )
        })
        .collect();
    format!("; disabled {}", spans.join(", "))
}

fn check_duplicates(history: &History, n: usize, requests: &[Request], verdict: &mut Verdict) {
    let mut answered: HashMap<&str, Vec<&Request>> = HashMap::new();
    for request in requests.iter().filter(|request| request.succeeded()) {
        answered.entry(&request.event_id).or_default().push(request);
    }
    for (event_id, times) in answered {
        for pair in times.windows(2) {
            verdict.duplicates += 1;
            let (first, second) = (pair[0].arrived, pair[1].arrived);
            match history.explained(first.checked_sub(LEASE).unwrap_or(first), second) {
                Some(window) => {
                    *verdict.duplicates_by_fault.entry(window.kind).or_default() += 1;
                }
                None => verdict.violations.push(format!(
                    "duplicate without a fault: {event_id} reached endpoint {n} twice:{}",
                    history.excerpt(pair)
                )),
            }
        }
    }
}

fn check_changes_hold(
    history: &History,
    n: usize,
    endpoint: &Endpoint,
    requests: &[Request],
    verdict: &mut Verdict,
) {
    let tests: HashSet<&str> = endpoint.tests.iter().map(|(id, _)| id.as_str()).collect();
    for request in requests {
        let arrived = request.arrived;
        // The answered change this request should have seen, if any.
        let mut broken: Option<(&str, Instant)> = None;
        if let Some(moved) = endpoint.moves.get(request.version) {
            broken = Some(("its old URL", *moved));
        }
        if let Some(deleted) = endpoint.deleted {
            broken = broken.or(Some(("a deleted endpoint", deleted)));
        }
        if !tests.contains(request.event_id.as_str()) {
            let disabled = endpoint
                .disabled
                .iter()
                .find(|span| span.overlaps(arrived, arrived) && span.from + MARGIN < arrived);
            if let Some(span) = disabled {
                broken = broken.or(Some(("a disabled endpoint", span.from)));
            }
        }
        let Some((what, since)) = broken else {
            continue;
        };
        if arrived <= since + MARGIN {
            continue;
        }
        if history
            .explained(since.checked_sub(LEASE).unwrap_or(since), arrived)
            .is_none()
        {
            verdict.violations.push(format!(
                "a change did not hold: {} reached {what} of endpoint {n} (changed {}):{}",
                request.event_id,
                history.at(since),
                history.excerpt(&[request])
            ));
        }
    }
}

fn check_signatures(
    history: &History,
    n: usize,
    endpoint: &Endpoint,
    requests: &[Request],
    verdict: &mut Verdict,
) {
    for request in requests {
        let arrived = request.arrived;
        if endpoint.created.is_none_or(|created| arrived <= created)
            || endpoint
                .secret_unknown
                .iter()
                .any(|span| span.overlaps(arrived.checked_sub(MARGIN).unwrap_or(arrived), arrived))
        {
            continue;
        }
        let in_force = request.signed_with.iter().any(|index| {
            let secret = &endpoint.secrets[*index];
            secret.from <= arrived && secret.until.is_none_or(|until| arrived <= until + MARGIN)
        });
        if in_force {
            continue;
        }
        let since = arrived.checked_sub(LEASE).unwrap_or(arrived);
        if !request.signed_with.is_empty() && history.explained(since, arrived).is_some() {
            continue;
        }
        verdict.violations.push(format!(
            "signature: {} at endpoint {n} verifies under {} (secrets {}):{}",
            request.event_id,
            if request.signed_with.is_empty() {
                "no secret it ever had".to_owned()
            } else {
                format!("secret(s) {:?}, not in force then", request.signed_with)
            },
            endpoint
                .secrets
                .iter()
                .enumerate()
                .map(|(index, secret)| format!(
                    "{index}: {}..{}",
                    history.at(secret.from),
                    secret
                        .until
                        .map_or("now".to_owned(), |until| history.at(until))
                ))
                .collect::<Vec<_>>()
                .join(", "),
            history.excerpt(&[request])
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(event_id: &str, answered: Option<u16>, late: Option<u16>) -> Request {
        let now = Instant::now();
        Request {
            arrived: now,
            version: 0,
            event_id: event_id.to_owned(),
            signed_with: vec![0],
            answered: answered.map(|status| (status, now)),
            late: late.map(|status| (status, now)),
        }
    }

    fn count_violations(counted: u64, requests: &[Request]) -> usize {
        let mut verdict = Verdict::default();
        check_count(0, counted, requests, &mut verdict);
        verdict.violations.len()
    }

    #[test]
    fn the_delivered_count_must_cover_every_2xx_in_time_and_no_more_than_the_late_ones() {
        let requests = [
            request("a", Some(200), None),
            // The same delivery again after a fault: still one delivered.
            request("a", Some(200), None),
            request("b", Some(500), None),
            request("b", Some(200), None),
            request("c", None, Some(200)),
            request("d", None, None),
        ];
        // a and b for sure; c if webhookd read its late answer.
        assert_eq!(count_violations(2, &requests), 0);
        assert_eq!(count_violations(3, &requests), 0);
        assert_eq!(count_violations(1, &requests), 1, "a 2xx the store forgot");
        assert_eq!(count_violations(4, &requests), 1, "delivered without a 2xx");
    }
}
