//! Payload filters at acceptance (SPEC §15): an event becomes a delivery
//! to an endpoint only when the endpoint's filter holds for it, decided in
//! the same atomic step that writes the deliveries, so a filter set by a
//! PUT that has returned applies to every event accepted after it.
//!
//! SQLite decides inside its write transaction from the filter text it
//! reads there ([`ParsedFilters`] only saves parsing it again). Redis
//! cannot run the filter language in a script, so the caller decides from
//! a snapshot of the owner's filters ([`FilterSnapshots`]) and the script
//! checks that snapshot is still current: every filtered endpoint stores a
//! digest of its filter text, the caller names the digests it decided
//! with, and an event for which one differs (a filter was set, changed or
//! removed since the snapshot) is answered "stale" with nothing written.
//! The caller reloads the owner's filters and accepts it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use webhookd_core::{Endpoint, Event, Filter};

/// Parsed filters kept before the cache starts over; each is small.
const KEPT: usize = 10_000;
/// Owners' snapshots kept before the cache starts over: one per owner that
/// sent events, most of them empty (an owner without filters).
const OWNERS_KEPT: usize = 100_000;

/// Filters parsed once per distinct text.
#[derive(Debug, Default)]
pub(crate) struct ParsedFilters {
    by_text: Mutex<HashMap<String, Option<Arc<Filter>>>>,
}

impl ParsedFilters {
    /// The filter stored as `text`; `None` when it no longer parses (a
    /// filter is checked when set, so only a hand-edited store has one):
    /// such a filter lets every event through rather than lose any, and
    /// says so once.
    pub(crate) fn get(&self, endpoint_id: &str, text: &str) -> Option<Arc<Filter>> {
        let mut by_text = self.by_text.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = by_text.get(text) {
            return parsed.clone();
        }
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| e.to_string())
            .and_then(|document| Filter::parse(&document).map_err(|e| e.to_string()))
            .map(Arc::new)
            .inspect_err(|problem| {
                tracing::warn!(
                    endpoint_id,
                    problem,
                    "a stored payload filter does not parse; it lets every event through"
                );
            })
            .ok();
        if by_text.len() >= KEPT {
            by_text.clear();
        }
        by_text.insert(text.to_owned(), parsed.clone());
        parsed
    }
}

/// An event as a filter reads it: its `data` parsed at most once.
pub(crate) struct FilteredEvent<'a> {
    event: &'a Event,
    data: Option<Value>,
}

impl<'a> FilteredEvent<'a> {
    pub(crate) fn new(event: &'a Event) -> Self {
        FilteredEvent { event, data: None }
    }

    /// Whether `filter` holds for the event.
    pub(crate) fn passes(&mut self, filter: &Filter) -> bool {
        let event = self.event;
        // `data` was checked to be a JSON object at ingest.
        let data = self
            .data
            .get_or_insert_with(|| serde_json::from_str(&event.data).unwrap_or(Value::Null));
        filter.matches(event.event_type.as_str(), data)
    }
}

/// The digest of a filter's stored text that Redis keeps beside it
/// (`filter_digest`): what the accept script compares.
pub(crate) fn digest(text: &str) -> String {
    use std::fmt::Write;
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hash.as_ref()[..12]
        .iter()
        .fold(String::with_capacity(24), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// One owner's filtered endpoints as last read.
#[derive(Debug, Default)]
pub(crate) struct OwnerFilters {
    endpoints: Vec<(String, String, Option<Arc<Filter>>)>,
}

impl OwnerFilters {
    /// From the owner's endpoints as the store holds them.
    pub(crate) fn of(endpoints: &[Endpoint], parsed: &ParsedFilters) -> Self {
        OwnerFilters {
            endpoints: endpoints
                .iter()
                .filter_map(|endpoint| {
                    let text = endpoint.filter.as_deref()?;
                    Some((
                        endpoint.endpoint_id.clone(),
                        digest(text),
                        parsed.get(&endpoint.endpoint_id, text),
                    ))
                })
                .collect(),
        }
    }

    /// The accept script's two arguments for `event`: the owner's
    /// filtered endpoints as known and those the event does not go to.
    pub(crate) fn script_arguments(filters: Option<&Self>, event: &Event) -> Vec<String> {
        match filters.filter(|filters| !filters.endpoints.is_empty()) {
            Some(filters) => vec![filters.known(), filters.excluded(event)],
            None => vec![String::new(), String::new()],
        }
    }

    /// `id:digest` for each filtered endpoint, space-separated: what the
    /// script checks the endpoints it finds against.
    fn known(&self) -> String {
        let known: Vec<String> = self
            .endpoints
            .iter()
            .map(|(id, digest, _)| format!("{id}:{digest}"))
            .collect();
        known.join(" ")
    }

    /// The filtered endpoints `event` does not go to, space-separated.
    fn excluded(&self, event: &Event) -> String {
        let mut view = FilteredEvent::new(event);
        let excluded: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|(_, _, filter)| filter.as_ref().is_some_and(|filter| !view.passes(filter)))
            .map(|(id, _, _)| id.as_str())
            .collect();
        excluded.join(" ")
    }
}

/// Each owner's filters as last read, checked by the accept script.
#[derive(Debug, Default)]
pub(crate) struct FilterSnapshots {
    by_owner: Mutex<HashMap<String, Arc<OwnerFilters>>>,
    pub(crate) parsed: ParsedFilters,
}

impl FilterSnapshots {
    /// The snapshot of `owner`, if one was taken.
    pub(crate) fn get(&self, owner: &str) -> Option<Arc<OwnerFilters>> {
        self.lock().get(owner).cloned()
    }

    /// Keeps `filters` as `owner`'s snapshot.
    pub(crate) fn put(&self, owner: &str, filters: OwnerFilters) -> Arc<OwnerFilters> {
        let filters = Arc::new(filters);
        let mut by_owner = self.lock();
        if by_owner.len() >= OWNERS_KEPT {
            by_owner.clear();
        }
        by_owner.insert(owner.to_owned(), Arc::clone(&filters));
        filters
    }

    /// Drops `owner`'s snapshot: this process changed a filter, so its next
    /// accept reads them before deciding rather than after a stale answer
    /// (which would hand the fast path nothing to lease).
    pub(crate) fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OwnerFilters>>> {
        self.by_owner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_stable_and_tells_texts_apart() {
        assert_eq!(digest(r#"{"event":"a"}"#), digest(r#"{"event":"a"}"#));
        assert_ne!(digest(r#"{"event":"a"}"#), digest(r#"{"event":"b"}"#));
        assert_eq!(digest("x").len(), 24);
    }

    #[test]
    fn a_stored_filter_that_does_not_parse_lets_events_through() {
        let parsed = ParsedFilters::default();
        assert!(parsed.get("ep", "{\"$nope\": 1}").is_none());
        assert!(parsed.get("ep", "{\"event\": \"a\"}").is_some());
    }
}
