//! Delivery options through the API (SPEC §14): set, shown without their
//! secrets, kept when an update leaves them out, removed with `null`, and
//! refused with a 40000 that names the field.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, assert_error};

fn with(options: &Value) -> Value {
    let mut body = json!({"url": "https://example.com/", "events": ["generated_video_success"]});
    for (name, value) in options.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

pub(super) async fn delivery_options_are_set_kept_shown_without_secrets_and_removed(api: Api) {
    let created = api
        .create(with(&json!({
            "headers": {"X-Tenant": "acme", "X-Api-Key": {"value": "key-9c2d", "secret": true}},
            "signature": "both",
            "retry_schedule": ["10s", "5m"],
            "egress_proxy": false,
        })))
        .await;
    assert!(!created.to_string().contains("key-9c2d"), "{created}");
    assert_eq!(
        created["headers"],
        json!({"X-Tenant": "acme", "X-Api-Key": {"secret": true}})
    );
    assert_eq!(created["signature"], "both");
    // Both schemes: the HMAC secret and the ed25519 public key.
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(created["public_key"].as_str().unwrap().starts_with("whpk_"));
    assert_eq!(created["retry_schedule"], json!(["10s", "5m"]));
    assert_eq!(created["egress_proxy"], false);
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");

    // Left out: kept. The secret header's value stays in the store only.
    let (status, kept) = api.call(Method::PUT, &path, Some(with(&json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    for field in [
        "headers",
        "signature",
        "retry_schedule",
        "egress_proxy",
        "public_key",
    ] {
        assert_eq!(kept["data"][field], created[field], "{field}: {kept}");
    }
    let stored = api
        .store
        .get_endpoint("johndoe", id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.options.unwrap().contains("key-9c2d"));

    // A secret header given by name only keeps its value.
    let (_, changed) = api
        .call(
            Method::PUT,
            &path,
            Some(with(
                &json!({"headers": {"X-Api-Key": {"secret": true}}, "retry_schedule": ["1s"]}),
            )),
        )
        .await;
    assert_eq!(
        changed["data"]["headers"],
        json!({"X-Api-Key": {"secret": true}})
    );
    assert_eq!(changed["data"]["retry_schedule"], json!(["1s"]));
    let stored = api
        .store
        .get_endpoint("johndoe", id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.options.unwrap().contains("key-9c2d"));

    // null: back to the default, and the answer is JoggAI's seven fields.
    let (_, removed) = api
        .call(
            Method::PUT,
            &path,
            Some(with(&json!({"headers": null, "signature": null, "retry_schedule": null, "egress_proxy": null}))),
        )
        .await;
    let fields: Vec<&String> = removed["data"].as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 7, "{fields:?}");
    let stored = api
        .store
        .get_endpoint("johndoe", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.options, None);
}

/// ed25519 alone: the secret its key derives from is never shown, and an
/// endpoint switched to it gets a secret no answer has shown.
pub(super) async fn an_endpoint_signing_with_ed25519_alone_never_shows_its_secret(api: Api) {
    let created = api.create(with(&json!({}))).await;
    let shown_secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    let (_, switched) = api
        .call(
            Method::PUT,
            &path,
            Some(with(&json!({"signature": "ed25519"}))),
        )
        .await;
    assert!(switched["data"].get("secret").is_none(), "{switched}");
    assert!(
        switched["data"]["public_key"]
            .as_str()
            .unwrap()
            .starts_with("whpk_")
    );
    let stored = api
        .store
        .get_endpoint("johndoe", id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.secret, shown_secret, "replaced on the switch");
    assert!(stored.previous_secret.is_none(), "and at once");
    let (_, listed) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert!(
        listed["data"]["endpoints"][0].get("secret").is_none(),
        "{listed}"
    );
    let (_, one) = api.call(Method::GET, &path, None).await;
    assert!(one["data"].get("secret").is_none(), "{one}");
    assert_eq!(one["data"]["public_key"], switched["data"]["public_key"]);
    // Staying on ed25519 does not replace it again.
    let (_, again) = api
        .call(
            Method::PUT,
            &path,
            Some(with(&json!({"signature": "ed25519"}))),
        )
        .await;
    assert_eq!(again["data"]["public_key"], switched["data"]["public_key"]);
}

pub(super) async fn bad_delivery_options_are_40000_and_name_the_field(api: Api) {
    let cases = [
        (
            json!({"headers": {"Content-Type": "text/plain"}}),
            "headers",
        ),
        (
            json!({"headers": {"X-Webhook-Signature": "forged"}}),
            "headers",
        ),
        (json!({"headers": {"X-A": "line\r\nbreak"}}), "headers"),
        (json!({"headers": "X-A: 1"}), "headers"),
        (json!({"signature": "rsa"}), "signature"),
        (json!({"retry_schedule": ["0s"]}), "retry_schedule"),
        (json!({"retry_schedule": ["25h"]}), "retry_schedule"),
        (json!({"retry_schedule": []}), "retry_schedule"),
        (json!({"egress_proxy": "yes"}), "egress_proxy"),
    ];
    for (options, field) in cases {
        let response = api
            .call(Method::POST, "/v2/endpoint", Some(with(&options)))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, field);
    }
    let (_, listed) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(listed["data"]["endpoints"], json!([]), "nothing created");
}

/// mTLS material and OAuth2 credentials (SPEC §14): the key and the client
/// secret are taken, kept by an update that leaves them out, and never
/// answered; what does not fit is a 40000 naming the field.
pub(super) async fn tls_material_and_oauth2_are_taken_and_their_secrets_never_answered(api: Api) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["webhookd.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let key = key.serialize_pem();
    let key_body = key.lines().nth(1).unwrap().to_owned();
    let created = api
        .create(with(&json!({
            "client_cert": cert,
            "client_key": key,
            "ca_cert": cert,
            "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "webhookd",
                       "client_secret": "cs-0b7e", "scope": "hooks"},
        })))
        .await;
    let answered = created.to_string();
    assert!(
        !answered.contains(&key_body) && !answered.contains("cs-0b7e"),
        "{answered}"
    );
    assert_eq!(created["client_cert"], cert.as_str());
    assert!(created["client_cert_expires_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(created["ca_cert"], cert.as_str());
    assert_eq!(
        created["oauth2"],
        json!({"token_url": "https://auth.example.com/token", "client_id": "webhookd", "scope": "hooks"})
    );
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    let (status, kept) = api
        .call(
            Method::PUT,
            &path,
            Some(with(&json!({"oauth2": {"token_url": "https://auth.example.com/v2/token", "client_id": "webhookd"}}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    let stored = api
        .store
        .get_endpoint("johndoe", id)
        .await
        .unwrap()
        .unwrap();
    let options = stored.options.unwrap();
    assert!(options.contains("cs-0b7e") && options.contains(&key_body));

    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cases = [
        (json!({"client_cert": cert}), "client_key"),
        (
            json!({"client_cert": cert, "client_key": other_key}),
            "client_key",
        ),
        (
            json!({"client_cert": "not a certificate", "client_key": key}),
            "client_cert",
        ),
        (
            json!({"ca_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
            "ca_cert",
        ),
        (
            json!({"oauth2": {"token_url": "http://auth.example.com/t", "client_id": "a", "client_secret": "b"}}),
            "token_url",
        ),
        (
            json!({"oauth2": {"token_url": "https://10.0.0.1/t", "client_id": "a", "client_secret": "b"}}),
            "token_url",
        ),
        (
            json!({"oauth2": {"token_url": "https://auth.example.com/t", "client_id": "a"}}),
            "client_secret",
        ),
    ];
    for (options, words) in cases {
        let response = api
            .call(Method::POST, "/v2/endpoint", Some(with(&options)))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, words);
    }
}
