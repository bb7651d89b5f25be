//! Each endpoint's delivery options (SPEC §14), prepared once per stored
//! form: claims carry the opened document, and parsing it, checking its
//! header names and values and building its retry schedule happens once per
//! process per change, not per attempt. A change of the options changes the
//! document, so a stale entry is never used; the cache starts over past
//! [`CACHE_LIMIT`] documents. An endpoint with TLS material (a client
//! certificate, a CA) gets routes — connection pools — of its own, built
//! here once per change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderName, HeaderValue};
use webhookd_core::telemetry;
use webhookd_core::{DeliveryOptions, RetrySchedule};

use crate::classify::Reason;
use crate::oauth2::TokenSource;
use crate::routes::{RouteBuilder, Routes};

/// Documents kept per process (one per endpoint with options, at most).
const CACHE_LIMIT: usize = 4096;
/// A client certificate expiring within this is logged when prepared.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 86_400;

/// One endpoint's options, ready for its attempts.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) options: DeliveryOptions,
    /// Its custom headers, as sent (secret ones marked sensitive, so no
    /// debug output of a request shows them).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) schedule: Option<RetrySchedule>,
    /// Its own routes, over its TLS configuration; `None`: the process's.
    pub(crate) routes: Option<Routes>,
    /// When its client certificate expires, unix seconds.
    client_cert_expires_at: Option<i64>,
    /// Its OAuth2 token source, and the token it caches.
    pub(crate) oauth2: Option<TokenSource>,
}

impl Prepared {
    fn new(stored: &str, builder: &RouteBuilder) -> Result<Self, Reason> {
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
        // Checked when the API took it: failing here means a store holding
        // what webhookd did not write.
        let tls = options.tls_config().map_err(|error| {
            tracing::error!(%error, "an endpoint's stored TLS material cannot be used");
            Reason::Tls
        })?;
        let client_cert_expires_at = options
            .client_cert
            .as_deref()
            .and_then(|cert| webhookd_core::delivery_options::tls::expires_at(cert).ok());
        let oauth2 = options
            .oauth2
            .as_ref()
            .map(|settings| TokenSource::new(settings, &builder.policy))
            .transpose()?;
        Ok(Prepared {
            oauth2,
            client_cert_expires_at,
            routes: tls.map(|config| builder.build(Some(&config))),
            options,
            headers,
            schedule,
        })
    }
}

/// Prepared options by stored document.
#[derive(Debug)]
pub(crate) struct OptionsCache {
    pub(crate) builder: RouteBuilder,
    prepared: Mutex<Prepareds>,
}

#[derive(Debug, Default)]
struct Prepareds {
    by_document: HashMap<String, Arc<Prepared>>,
    /// The soonest client certificate expiry among them (the metric).
    soonest_expiry: Option<i64>,
}

impl OptionsCache {
    pub(crate) fn new(builder: RouteBuilder) -> Self {
        OptionsCache {
            builder,
            prepared: Mutex::default(),
        }
    }

    /// The prepared form of a claim's options; `None` when it has none.
    /// Options that cannot be used (a store holding what webhookd did not
    /// write) fail the attempt as `invalid_url`, the endpoint's own fault.
    pub(crate) fn of(
        &self,
        endpoint_id: &str,
        stored: Option<&str>,
    ) -> Result<Option<Arc<Prepared>>, Reason> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut prepared = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = prepared.by_document.get(stored) {
            return Ok(Some(Arc::clone(found)));
        }
        let fresh = Arc::new(Prepared::new(stored, &self.builder)?);
        if prepared.by_document.len() >= CACHE_LIMIT {
            *prepared = Prepareds::default();
        }
        if let Some(expires_at) = fresh.client_cert_expires_at {
            let left = expires_at - webhookd_core::time::unix_seconds();
            if left < EXPIRY_WARNING_SECONDS {
                tracing::warn!(
                    %endpoint_id,
                    expires_at,
                    days_left = left / 86_400,
                    "an endpoint's client certificate expires soon (or has); its owner should replace it"
                );
            }
            let soonest = prepared
                .soonest_expiry
                .map_or(expires_at, |soonest| soonest.min(expires_at));
            prepared.soonest_expiry = Some(soonest);
            telemetry::client_certificate_expiry(soonest);
        }
        prepared
            .by_document
            .insert(stored.to_owned(), Arc::clone(&fresh));
        Ok(Some(fresh))
    }
}
