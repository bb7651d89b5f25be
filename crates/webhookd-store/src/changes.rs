//! Endpoint changes as a fence for claims held in memory.
//!
//! A claim carries its endpoint's URL, secret and status as the store had
//! them when it was leased. Claims can wait in a lane for a while, so before
//! each attempt the engine asks [`EndpointChanges::changed_since`] whether
//! the endpoint was updated or deleted after the claim was taken; if so the
//! claim is handed back and claimed again with what the store now holds. A
//! PUT or DELETE that has returned therefore applies to every attempt that
//! starts after it — in this process at once (the store marks the change
//! before the call returns), in others as soon as the store's change
//! notification reaches them (Redis pub/sub; see `RedisStore`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Changed endpoints remembered before the fence falls back to "everything
/// changed" (which hands every held claim back once).
const REMEMBERED: usize = 10_000;

/// A version counter and, per endpoint, the version of its last change.
#[derive(Debug, Default)]
pub struct EndpointChanges {
    version: AtomicU64,
    marks: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    by_endpoint: HashMap<String, u64>,
    /// Every endpoint counts as changed at this version (a lost
    /// notification stream, or a full map).
    everything: u64,
}

impl EndpointChanges {
    /// The current version: take it *before* reading endpoints from the
    /// store, so a change racing with the read is seen as newer.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records that `endpoint_id` changed now.
    pub fn mark(&self, endpoint_id: &str) {
        let mut marks = self.lock();
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        if marks.by_endpoint.len() >= REMEMBERED {
            marks.by_endpoint.clear();
            marks.everything = version;
        } else {
            marks.by_endpoint.insert(endpoint_id.to_owned(), version);
        }
    }

    /// Records that any endpoint may have changed now (changes from other
    /// processes could have been missed).
    pub fn mark_everything(&self) {
        let mut marks = self.lock();
        marks.everything = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        marks.by_endpoint.clear();
    }

    /// Whether `endpoint_id` changed after `version` was taken.
    pub fn changed_since(&self, endpoint_id: &str, version: u64) -> bool {
        let marks = self.lock();
        marks.everything > version
            || marks
                .by_endpoint
                .get(endpoint_id)
                .is_some_and(|&changed| changed > version)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_version_was_taken_is_seen() {
        let changes = EndpointChanges::default();
        let before = changes.version();
        assert!(!changes.changed_since("wh_a", before));
        changes.mark("wh_a");
        assert!(changes.changed_since("wh_a", before));
        assert!(!changes.changed_since("wh_b", before));
        assert!(!changes.changed_since("wh_a", changes.version()));
    }

    #[test]
    fn everything_changed_covers_every_endpoint_until_the_next_version() {
        let changes = EndpointChanges::default();
        let before = changes.version();
        changes.mark_everything();
        assert!(changes.changed_since("wh_any", before));
        assert!(!changes.changed_since("wh_any", changes.version()));
    }

    #[test]
    fn a_full_map_falls_back_to_everything() {
        let changes = EndpointChanges::default();
        let before = changes.version();
        for i in 0..=REMEMBERED {
            changes.mark(&format!("wh_{i}"));
        }
        assert!(changes.changed_since("wh_never_marked", before));
        assert!(changes.marks.lock().unwrap().by_endpoint.len() <= REMEMBERED);
    }
}
