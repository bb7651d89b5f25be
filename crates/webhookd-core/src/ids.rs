//! Generated identifiers and credentials.
//!
//! Ids are UUIDv7 in simple hex form behind a readable prefix, so they sort by
//! creation time (handy in logs and key scans) and never collide across
//! processes. Secrets and API keys are 32 bytes straight from the operating
//! system's CSPRNG.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of endpoint ids, as in the JoggAI API (`wh_123456789`).
pub const ENDPOINT_ID_PREFIX: &str = "wh_";
/// Prefix of event ids webhookd assigns (`evt_…`).
pub const EVENT_ID_PREFIX: &str = "evt_";
/// Prefix of delivery ids (one delivery = one event to one endpoint).
pub const DELIVERY_ID_PREFIX: &str = "dlv_";
/// Prefix of endpoint signing secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// Prefix of API keys; makes a leaked key recognisable to secret scanners.
pub const API_KEY_PREFIX: &str = "whk_";
/// Longest API key we look at. Longer input is rejected before hashing.
pub const API_KEY_MAX_LEN: usize = 128;

fn prefixed_uuid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

pub(crate) fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // The OS RNG failing means the machine cannot produce secrets at all;
    // there is nothing sensible to continue with.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// A new endpoint id, `wh_` + 32 hex digits.
pub fn new_endpoint_id() -> String {
    prefixed_uuid(ENDPOINT_ID_PREFIX)
}

/// A new event id, `evt_` + 32 hex digits, for events that arrive without one.
pub fn new_event_id() -> String {
    prefixed_uuid(EVENT_ID_PREFIX)
}

/// The event id of a redeliverable message that came without one (SPEC §5):
/// `evt_` + the first 32 hex digits of SHA-256 of `source` — its AMQP
/// `message_id`, or its body. The same message always gets the same id, so
/// a redelivery after a crash is recognised as the event already accepted.
pub fn derived_event_id(source: &[u8]) -> String {
    let digest = Sha256::digest(source);
    format!("{EVENT_ID_PREFIX}{}", hex::encode(&digest[..16]))
}

/// A new delivery id, `dlv_` + 32 hex digits.
pub fn new_delivery_id() -> String {
    prefixed_uuid(DELIVERY_ID_PREFIX)
}

/// A new lease token: proves which worker holds a claimed delivery.
pub fn new_lease_token() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new endpoint signing secret: `whsec_` + standard base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random_bytes()))
}

/// A new API key: `whk_` + URL-safe base64 of 32 random bytes.
///
/// Only its hash is ever stored; the caller shows the key once.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// What starts a portal link's token (SPEC §9), telling it apart from an
/// API key where both are presented in `x-api-key`.
pub const PORTAL_LINK_PREFIX: &str = "wpl_";

/// A new portal link token: `wpl_` + URL-safe base64 of 32 random bytes.
/// Stored, like an API key, only as its hash ([`hash_api_key`]).
pub fn new_portal_link_token() -> String {
    format!(
        "{PORTAL_LINK_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes())
    )
}

/// What starts a portal session's token: what a portal link is exchanged
/// for when it signs in (SPEC §9), valid until the link would have expired.
pub const PORTAL_SESSION_PREFIX: &str = "wps_";

/// A new portal session token: `wps_` + URL-safe base64 of 32 random bytes.
pub fn new_portal_session_token() -> String {
    format!(
        "{PORTAL_SESSION_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes())
    )
}

/// A new bearer token for `POST /internal/events`: `whi_` + URL-safe base64
/// of 32 random bytes.
pub fn new_ingest_token() -> String {
    format!("whi_{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// The stored form of an API key: hex SHA-256.
///
/// A plain hash is enough (no salt, no slow KDF) because keys are 256 random
/// bits, not passwords: there is no dictionary to attack. Being unsalted, the
/// hash can serve as the lookup index.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares two key hashes in constant time.
pub fn api_key_hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn secrets_are_whsec_and_base64_of_32_bytes() {
        let secret = new_secret();
        let encoded = secret.strip_prefix("whsec_").expect("prefix");
        assert_eq!(STANDARD.decode(encoded).expect("base64").len(), 32);
    }

    #[test]
    fn secrets_and_keys_do_not_repeat() {
        let secrets: HashSet<_> = (0..1000).map(|_| new_secret()).collect();
        assert_eq!(secrets.len(), 1000);
        let keys: HashSet<_> = (0..1000).map(|_| new_api_key()).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let ids: Vec<_> = (0..100).map(|_| new_endpoint_id()).collect();
        assert!(ids.iter().all(|id| id.starts_with("wh_") && id.len() == 35));
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(new_event_id().starts_with("evt_"));
        let derived = derived_event_id(b"{}");
        assert_eq!(derived, derived_event_id(b"{}"));
        assert_ne!(derived, derived_event_id(b"{ }"));
        assert_eq!(derived.len(), 36);
        assert!(new_delivery_id().starts_with("dlv_"));
    }

    #[test]
    fn api_keys_are_url_safe_and_fit_the_length_limit() {
        let key = new_api_key();
        assert!(key.starts_with("whk_") && key.len() <= API_KEY_MAX_LEN);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn key_hashes_are_stable_and_compared_exactly() {
        let key = new_api_key();
        assert_eq!(hash_api_key(&key), hash_api_key(&key));
        assert!(api_key_hashes_match(
            &hash_api_key(&key),
            &hash_api_key(&key)
        ));
        assert!(!api_key_hashes_match(
            &hash_api_key(&key),
            &hash_api_key("whk_other")
        ));
    }
}
