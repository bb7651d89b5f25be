//! Each endpoint's delivery options (SPEC §14), prepared once per stored
//! form: claims carry the opened document, and parsing it, checking its
//! header names and values and building its retry schedule happens once per
//! process per change, not per attempt. A change of the options changes the
//! document, so a stale entry is never used; the cache starts over past
//! [`CACHE_LIMIT`] documents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderName, HeaderValue};
use webhookd_core::{DeliveryOptions, RetrySchedule};

use crate::classify::Reason;

/// Documents kept per process (one per endpoint with options, at most).
const CACHE_LIMIT: usize = 4096;

/// One endpoint's options, ready for its attempts.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) options: DeliveryOptions,
    /// Its custom headers, as sent (secret ones marked sensitive, so no
    /// debug output of a request shows them).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) schedule: Option<RetrySchedule>,
}

impl Prepared {
    fn new(stored: &str) -> Result<Self, Reason> {
        let options = DeliveryOptions::from_stored(Some(stored)).map_err(|error| {
            tracing::error!(%error, "an endpoint's stored delivery options do not parse");
            Reason::InvalidUrl
        })?;
        let headers = options
            .headers
            .iter()
            .map(|header| {
                let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
                let mut value = HeaderValue::from_str(&header.value).ok()?;
                value.set_sensitive(header.secret);
                Some((name, value))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(Reason::InvalidUrl)?;
        let schedule = options.schedule();
        Ok(Prepared {
            options,
            headers,
            schedule,
        })
    }
}

/// Prepared options by stored document.
#[derive(Debug, Default)]
pub(crate) struct OptionsCache {
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

impl OptionsCache {
    /// The prepared form of a claim's options; `None` when it has none.
    /// Options that cannot be used (a store holding what webhookd did not
    /// write) fail the attempt as `invalid_url`, the endpoint's own fault.
    pub(crate) fn of(&self, stored: Option<&str>) -> Result<Option<Arc<Prepared>>, Reason> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = prepared.get(stored) {
            return Ok(Some(Arc::clone(found)));
        }
        let fresh = Arc::new(Prepared::new(stored)?);
        if prepared.len() >= CACHE_LIMIT {
            prepared.clear();
        }
        prepared.insert(stored.to_owned(), Arc::clone(&fresh));
        Ok(Some(fresh))
    }
}
