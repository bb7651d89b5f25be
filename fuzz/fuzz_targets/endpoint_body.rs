//! A `POST /v2/endpoint` / `PUT` body: JSON, then the endpoint rules of
//! SPEC §1 and §7 (URL, status, events). Never panics; what it accepts
//! holds to the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhookd_core::address::AddressPolicy;
use webhookd_core::Catalog;
use webhookd_core::endpoint::{EndpointSpec, UrlRules};

fuzz_target!(|body: &[u8]| {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return;
    };
    let catalog = Catalog::joggai();
    for allow_http in [false, true] {
        let rules = UrlRules {
            allow_http,
            addresses: AddressPolicy::new(Vec::new()),
        };
        if let Ok(spec) = EndpointSpec::from_fields(fields.clone(), &rules, &catalog) {
            assert!(spec.url.len() <= 2048);
            // Schemes are case-insensitive (RFC 3986 §3.1): `hTtps://` is https.
            let https = spec.url.get(..8).is_some_and(|start| start.eq_ignore_ascii_case("https://"));
            assert!(allow_http || https, "{}", spec.url);
            assert!(!spec.events.is_empty());
        }
    }
});
