//! The delivery options as the API reads, stores and shows them.

use super::*;
use serde_json::json;

fn applied(body: &Value) -> Result<DeliveryOptions, FieldError> {
    let mut options = DeliveryOptions::default();
    options.apply_fields(body.as_object().unwrap())?;
    Ok(options)
}

#[test]
fn no_option_stores_nothing_and_reads_back_as_the_default() {
    let options = applied(&json!({"url": "https://x"})).unwrap();
    assert!(options.is_default());
    assert_eq!(options.to_stored(), None);
    assert_eq!(
        DeliveryOptions::from_stored(Some("")).unwrap(),
        DeliveryOptions::default()
    );
}

#[test]
fn options_survive_the_store_and_show_without_secrets() {
    let options = applied(&json!({
        "headers": {"X-Tenant": "acme", "Authorization": "Bearer abc",
                    "X-Api-Key": {"value": "k1", "secret": true}},
        "signature": "both",
        "retry_schedule": ["5s", "1m", "2h"],
        "egress_proxy": false,
    }))
    .unwrap();
    let stored = options.to_stored().unwrap();
    assert_eq!(
        DeliveryOptions::from_stored(Some(&stored)).unwrap(),
        options
    );
    let mut shown = Map::new();
    options.to_public(&mut shown);
    let shown = Value::Object(shown);
    assert_eq!(shown["headers"]["X-Tenant"], "acme");
    assert_eq!(shown["headers"]["Authorization"], json!({"secret": true}));
    assert_eq!(shown["headers"]["X-Api-Key"], json!({"secret": true}));
    assert!(!shown.to_string().contains("abc") && !shown.to_string().contains("k1"));
    assert_eq!(shown["retry_schedule"], json!(["5s", "1m", "2h"]));
    assert_eq!(shown["signature"], "both");
    assert_eq!(shown["egress_proxy"], false);
    assert_eq!(options.schedule().unwrap().delays().len(), 3);
}

#[test]
fn a_secret_header_given_without_its_value_keeps_it() {
    let mut options =
        applied(&json!({"headers": {"X-Api-Key": {"value": "k1", "secret": true}}})).unwrap();
    options
        .apply_fields(
            json!({"headers": {"x-api-key": {"secret": true}, "X-Other": "o"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    let kept = options
        .headers
        .iter()
        .find(|h| h.name == "x-api-key")
        .unwrap();
    assert_eq!((kept.value.as_str(), kept.secret), ("k1", true));
    assert_eq!(options.headers.len(), 2);
    let error = applied(&json!({"headers": {"X-New": {"secret": true}}})).unwrap_err();
    assert!(error.message.contains("no secret value to keep"), "{error}");
}

#[test]
fn left_out_fields_stay_and_null_restores_the_default() {
    let mut options = applied(&json!({"signature": "ed25519", "retry_schedule": ["1s"]})).unwrap();
    options
        .apply_fields(json!({"url": "https://x"}).as_object().unwrap())
        .unwrap();
    assert_eq!(options.signature, SignatureScheme::Ed25519);
    options
        .apply_fields(
            json!({"signature": null, "retry_schedule": null})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    assert!(options.is_default());
}

#[test]
fn every_bad_option_names_its_field_and_why() {
    let cases = [
        (
            json!({"headers": {"Content-Type": "text/plain"}}),
            "headers",
            "set by webhookd",
        ),
        (
            json!({"headers": {"X-Webhook-Id": "1"}}),
            "headers",
            "set by webhookd",
        ),
        (
            json!({"headers": {"webhook-signature": "1"}}),
            "headers",
            "set by webhookd",
        ),
        (
            json!({"headers": {"Bad Name": "1"}}),
            "headers",
            "not a header name",
        ),
        (
            json!({"headers": {"X-A": "a\r\nX-B: b"}}),
            "headers",
            "printable ASCII",
        ),
        (
            json!({"headers": {"X-A": 1}}),
            "headers",
            "must be a string",
        ),
        (
            json!({"headers": {"X-A": "1", "x-a": "2"}}),
            "headers",
            "given twice",
        ),
        (json!({"headers": []}), "headers", "must be an object"),
        (json!({"signature": "rsa"}), "signature", "must be"),
        (json!({"retry_schedule": []}), "retry_schedule", "1 to 20"),
        (
            json!({"retry_schedule": ["500ms"]}),
            "retry_schedule",
            "outside 1s",
        ),
        (
            json!({"retry_schedule": ["2d"]}),
            "retry_schedule",
            "outside 1s",
        ),
        (
            json!({"retry_schedule": ["soon"]}),
            "retry_schedule",
            "not a duration",
        ),
        (
            json!({"retry_schedule": [5]}),
            "retry_schedule",
            "must be a string",
        ),
        (
            json!({"egress_proxy": "no"}),
            "egress_proxy",
            "true or false",
        ),
    ];
    for (body, field, words) in cases {
        let error = applied(&body).unwrap_err();
        assert_eq!(error.field, field, "{body}");
        assert!(error.message.contains(words), "{body}: {error}");
    }
    let many: Map<String, Value> = (0..21)
        .map(|i| (format!("X-H{i}"), Value::String("v".into())))
        .collect();
    let error = applied(&json!({ "headers": many })).unwrap_err();
    assert!(error.message.contains("at most 20"), "{error}");
}

fn certificate_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn a_client_certificate_shows_with_its_expiry_and_its_key_never() {
    let (cert, key) = certificate_pair();
    let (ca, _) = certificate_pair();
    let mut options =
        applied(&json!({"client_cert": cert, "client_key": key, "ca_cert": ca})).unwrap();
    assert!(options.tls_config().unwrap().is_some());
    let mut shown = Map::new();
    options.to_public(&mut shown);
    assert_eq!(shown["client_cert"], cert.as_str());
    assert!(shown["client_cert_expires_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(shown["ca_cert"], ca.as_str());
    assert!(!Value::Object(shown).to_string().contains("PRIVATE KEY"));

    // A renewed certificate alone keeps a key that does not fit it: refused.
    let (renewed, renewed_key) = certificate_pair();
    let error = options
        .clone()
        .apply_fields(json!({"client_cert": renewed}).as_object().unwrap())
        .unwrap_err();
    assert_eq!(error.field, "client_key", "{error}");
    // With its key it is taken; null removes both.
    options
        .apply_fields(
            json!({"client_cert": renewed, "client_key": renewed_key})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(options.client_key.as_deref(), Some(renewed_key.as_str()));
    options
        .apply_fields(
            json!({"client_cert": null, "ca_cert": null})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    assert!(options.is_default());
}

#[test]
fn a_client_key_needs_its_certificate() {
    let (_, key) = certificate_pair();
    let error = applied(&json!({"client_key": key})).unwrap_err();
    assert_eq!(error.field, "client_key");
    let (cert, _) = certificate_pair();
    let error = applied(&json!({"client_cert": cert})).unwrap_err();
    assert!(error.message.contains("required"), "{error}");
    let error = applied(&json!({"ca_cert": 5})).unwrap_err();
    assert_eq!(error.field, "ca_cert");
}

#[test]
fn oauth2_shows_without_its_secret_and_keeps_it_when_left_out() {
    let mut options = applied(&json!({"oauth2": {
        "token_url": "https://auth.example/token", "client_id": "webhookd",
        "client_secret": "cs-81f3", "scope": "hooks:write"}}))
    .unwrap();
    let mut shown = Map::new();
    options.to_public(&mut shown);
    assert_eq!(
        shown["oauth2"],
        json!({"token_url": "https://auth.example/token", "client_id": "webhookd", "scope": "hooks:write"})
    );
    options
        .apply_fields(
            json!({"oauth2": {"token_url": "https://auth.example/v2/token", "client_id": "webhookd"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
    let oauth2 = options.oauth2.as_ref().unwrap();
    assert_eq!(
        (oauth2.token_url.as_str(), oauth2.client_secret.as_str()),
        ("https://auth.example/v2/token", "cs-81f3")
    );
    assert_eq!(
        oauth2.scope, None,
        "the object replaces the old one, but its secret"
    );
    let stored = options.to_stored().unwrap();
    assert_eq!(
        DeliveryOptions::from_stored(Some(&stored)).unwrap(),
        options
    );
}

#[test]
fn bad_oauth2_settings_name_what_to_fix() {
    let cases = [
        (json!({"oauth2": "token"}), "must be an object"),
        (
            json!({"oauth2": {"client_id": "a", "client_secret": "b"}}),
            "token_url is required",
        ),
        (
            json!({"oauth2": {"token_url": "ftp://x/t", "client_id": "a", "client_secret": "b"}}),
            "https URL",
        ),
        (
            json!({"oauth2": {"token_url": "https://x/t", "client_secret": "b"}}),
            "client_id is required",
        ),
        (
            json!({"oauth2": {"token_url": "https://x/t", "client_id": "a"}}),
            "client_secret is required",
        ),
        (
            json!({"oauth2": {"token_url": "https://x/t", "client_id": "a", "client_secret": "b", "scope": 1}}),
            "scope must be",
        ),
    ];
    for (body, words) in cases {
        let error = applied(&body).unwrap_err();
        assert_eq!(error.field, "oauth2");
        assert!(error.message.contains(words), "{body}: {error}");
    }
    let error = applied(&json!({
        "headers": {"Authorization": "Bearer x"},
        "oauth2": {"token_url": "https://x/t", "client_id": "a", "client_secret": "b"}}))
    .unwrap_err();
    assert!(
        error.message.contains("Authorization comes from oauth2"),
        "{error}"
    );
}
