//! How an endpoint is shown and how its delivery options change (SPEC §14).
//!
//! Answers show the options without their secrets ([`DeliveryOptions::to_public`]),
//! and with `public_key` when ed25519 signs. An endpoint signing with ed25519
//! alone never shows its `secret`: its ed25519 key is derived from it
//! (`signer::public_key`), and the point of the scheme is that no one but
//! webhookd holds what signs. For the same reason, switching an endpoint
//! whose secret was shown to ed25519 alone replaces the secret at once.

use serde_json::{Map, Value};
use webhookd_core::endpoint::UrlRules;
use webhookd_core::signer;
use webhookd_core::{DeliveryOptions, Endpoint, FieldError, SignatureScheme};

use crate::envelope::ApiError;

/// The endpoint as answers show it at `now` (unix seconds).
pub fn shown(endpoint: Endpoint, now: i64) -> Map<String, Value> {
    let endpoint = endpoint.as_of(now);
    let options = options_of(&endpoint);
    let Value::Object(mut shown) = serde_json::to_value(&endpoint).expect("an endpoint serializes")
    else {
        unreachable!("an endpoint serializes to an object");
    };
    options.to_public(&mut shown);
    if let Some(filter) = endpoint
        .filter
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        shown.insert("filter".into(), filter);
    }
    if let Some(ordering) = &endpoint.ordering {
        shown.insert("ordered".into(), true.into());
        if !ordering.is_empty() {
            shown.insert("ordering_key".into(), ordering.clone().into());
        }
    }
    if options.signature.ed25519() {
        if let Some(key) = signer::public_key(&endpoint.secret) {
            shown.insert("public_key".into(), key.into());
        }
        if let Some(previous) = &endpoint.previous_secret
            && let Some(key) = signer::public_key(&previous.secret)
        {
            shown.insert("previous_public_key".into(), key.into());
        }
    }
    if options.signature == SignatureScheme::Ed25519 {
        shown.remove("secret");
    }
    shown
}

/// The endpoint's options; a stored document that does not parse (a store
/// holding what webhookd did not write) shows as none.
pub fn options_of(endpoint: &Endpoint) -> DeliveryOptions {
    DeliveryOptions::from_stored(endpoint.options.as_deref()).unwrap_or_else(|error| {
        tracing::error!(endpoint_id = %endpoint.endpoint_id, %error, "an endpoint's stored delivery options do not parse");
        DeliveryOptions::default()
    })
}

/// Whether a request body changes any option.
pub fn touches_options(fields: &Map<String, Value>) -> bool {
    webhookd_core::delivery_options::FIELDS
        .iter()
        .any(|field| fields.contains_key(*field))
}

/// `current` with the body's option fields applied; an OAuth2 token URL is
/// held to the rules endpoint URLs are (https, no blocked literal IP).
pub fn changed_options(
    current: &DeliveryOptions,
    fields: &Map<String, Value>,
    rules: &UrlRules,
) -> Result<DeliveryOptions, ApiError> {
    let mut options = current.clone();
    options
        .apply_fields(fields)
        .map_err(|error: FieldError| ApiError::BadRequest(error.to_string()))?;
    if let Some(oauth2) = options.oauth2.as_mut() {
        oauth2.token_url = rules.normalise(&oauth2.token_url).map_err(|error| {
            ApiError::BadRequest(format!("oauth2: token_url {}", error.message))
        })?;
    }
    Ok(options)
}
