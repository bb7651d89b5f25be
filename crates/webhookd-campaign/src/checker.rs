//! Reads a run's history and says what it broke.
//!
//! 1. Every confirmed publish reached every endpoint of its owner (the
//!    endpoints do not change during a run): nothing lost.
//! 2. No (event, endpoint) pair was delivered twice unless a fault was in
//!    force between the two deliveries (or within a lease before the
//!    first): duplicates only after faults.
//! 3. No endpoint had more requests in flight than `endpoint_concurrency`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::faults::Window;
use crate::receivers::Receivers;

/// The lease (4 × the 1 s deadline + 30 s): how long before a delivery a
/// fault can still be the cause of its duplicate.
const LEASE: Duration = Duration::from_secs(34);

/// A published event, as the broker confirmed it.
#[derive(Debug, Clone)]
pub struct Published {
    pub event_id: String,
    pub owner: usize,
}

/// What a run broke, and what it counted.
#[derive(Debug, Default)]
pub struct Verdict {
    pub expected_pairs: usize,
    pub delivered_pairs: usize,
    pub duplicates: usize,
    /// Duplicates by the kind of the fault that explains them.
    pub duplicates_by_fault: HashMap<&'static str, usize>,
    pub violations: Vec<String>,
}

/// The endpoints of each owner: `owners[o]` lists endpoint numbers.
pub fn check(
    published: &[Published],
    owners: &[Vec<usize>],
    receivers: &Receivers,
    faults: &[Window],
    endpoint_concurrency: usize,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut events_of: HashMap<usize, Vec<&str>> = HashMap::new();
    for event in published {
        let events = events_of.entry(event.owner).or_default();
        if !events.contains(&event.event_id.as_str()) {
            events.push(&event.event_id);
        }
    }
    for (owner, endpoints) in owners.iter().enumerate() {
        let events = events_of.get(&owner).cloned().unwrap_or_default();
        for &endpoint in endpoints {
            let requests = receivers.requests(endpoint);
            let mut delivered: HashMap<&str, Vec<Instant>> = HashMap::new();
            for request in &requests {
                if (200..300).contains(&request.status) {
                    delivered
                        .entry(request.event_id.as_str())
                        .or_default()
                        .push(request.at);
                }
            }
            for event_id in &events {
                verdict.expected_pairs += 1;
                let Some(times) = delivered.get(event_id) else {
                    verdict.violations.push(format!(
                        "lost: {event_id} never reached endpoint {endpoint}"
                    ));
                    continue;
                };
                verdict.delivered_pairs += 1;
                for pair in times.windows(2) {
                    verdict.duplicates += 1;
                    let (first, second) = (pair[0], pair[1]);
                    let explained = faults.iter().find(|fault| {
                        fault.until >= first.checked_sub(LEASE).unwrap_or(first)
                            && fault.from <= second
                    });
                    if let Some(fault) = explained {
                        *verdict
                            .duplicates_by_fault
                            .entry(fault.kind.name())
                            .or_default() += 1;
                    } else {
                        verdict.violations.push(format!(
                            "duplicate without a fault: {event_id} reached endpoint {endpoint} twice, {:?} apart",
                            second - first
                        ));
                    }
                }
            }
            let most = receivers.most_in_flight(endpoint);
            if most > endpoint_concurrency {
                verdict.violations.push(format!(
                    "endpoint {endpoint} had {most} requests in flight at once (endpoint_concurrency {endpoint_concurrency})"
                ));
            }
        }
    }
    verdict
}
