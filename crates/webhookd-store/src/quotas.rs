//! The quotas accepting an event checks (SPEC §11): an endpoint's kept
//! deliveries and a user's events per day. The defaults come from the
//! configuration; a user's own, set through the admin API, are a setting
//! in the store ([`webhookd_core::quota::setting_name`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use webhookd_core::quota::{QuotaOverrides, Quotas};

/// How long a user's quotas, once read, stand for ingest: a quota set
/// through the admin API applies to events within this time on every
/// process.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Users remembered at most; past it the book starts again (it is only a
/// cache of one setting read).
const MOST_REMEMBERED: usize = 10_000;

/// The quotas in force for a user, from the defaults and the user's
/// setting (absent or, with a warning, unreadable: the defaults).
pub(crate) fn from_setting(defaults: Quotas, username: &str, setting: Option<&str>) -> Quotas {
    // The operator's own events (SPEC §15) are never refused: a target
    // that is down holds them as pending deliveries, however many.
    if username == webhookd_core::operator::OPERATOR_USERNAME {
        return Quotas {
            max_kept_deliveries_per_endpoint: u64::MAX,
            max_events_per_day: None,
            ..defaults
        };
    }
    let Some(setting) = setting else {
        return defaults;
    };
    match serde_json::from_str::<QuotaOverrides>(setting) {
        Ok(overrides) => defaults.with(&overrides),
        Err(error) => {
            tracing::warn!(username, %error, "a user's quota setting does not read; the defaults apply");
            defaults
        }
    }
}

/// Users' quotas as last read, for a store whose ingest cannot read the
/// setting in the same step (Redis: settings live outside the users'
/// partitions).
#[derive(Debug)]
pub(crate) struct QuotaBook {
    pub(crate) defaults: Quotas,
    read: Mutex<HashMap<String, (Instant, Quotas)>>,
}

impl QuotaBook {
    pub(crate) fn new(defaults: Quotas) -> Self {
        QuotaBook {
            defaults,
            read: Mutex::default(),
        }
    }

    /// `username`'s quotas if read within [`FRESH_FOR`].
    pub(crate) fn fresh(&self, username: &str) -> Option<Quotas> {
        let read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        read.get(username)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, quotas)| *quotas)
    }

    /// Remembers `username`'s setting as just read; its quotas.
    pub(crate) fn remember(&self, username: &str, setting: Option<&str>) -> Quotas {
        let quotas = from_setting(self.defaults, username, setting);
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if read.len() >= MOST_REMEMBERED {
            read.clear();
        }
        read.insert(username.to_owned(), (Instant::now(), quotas));
        quotas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_overrides_the_defaults_and_one_that_does_not_read_is_ignored() {
        let defaults = Quotas::default();
        let own = from_setting(defaults, "alice", Some(r#"{"max_events_per_day":5}"#));
        assert_eq!(own.max_events_per_day, Some(5));
        assert_eq!(from_setting(defaults, "alice", Some("{not json")), defaults);
        assert_eq!(from_setting(defaults, "alice", None), defaults);
    }

    #[test]
    fn the_book_remembers_what_it_read() {
        let book = QuotaBook::new(Quotas::default());
        assert_eq!(book.fresh("bob"), None);
        let quotas = book.remember("bob", Some(r#"{"max_kept_deliveries_per_endpoint":7}"#));
        assert_eq!(quotas.max_kept_deliveries_per_endpoint, 7);
        assert_eq!(book.fresh("bob"), Some(quotas));
    }
}
