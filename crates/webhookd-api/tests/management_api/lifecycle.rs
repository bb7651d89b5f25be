//! The endpoint lifecycle routes of SPEC §8 through real HTTP.

use super::*;

pub(crate) async fn a_test_event_goes_to_one_endpoint_whatever_its_status(api: Api) {
    let disabled = api
        .create(json!({
            "url": "https://example.com/a",
            "events": ["generated_image_failed", "generated_video_success"],
            "status": "disabled"
        }))
        .await;
    let other = api.create(seed_body()).await;
    let id = disabled["endpoint_id"].as_str().unwrap();
    let (status, json) = api
        .call(Method::POST, &format!("/v2/endpoint/{id}/test"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let event_id = json["data"]["event_id"].as_str().unwrap().to_owned();
    let delivery_id = json["data"]["delivery_id"].as_str().unwrap().to_owned();
    assert!(event_id.starts_with("evt_"));

    let (_, listed) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries?status=pending"),
            None,
        )
        .await;
    let deliveries = listed["data"]["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{listed}");
    assert_eq!(deliveries[0]["delivery_id"], delivery_id.as_str());
    assert_eq!(deliveries[0]["event_id"], event_id.as_str());
    // The default is the endpoint's first subscribed type.
    assert_eq!(deliveries[0]["event"], "generated_image_failed");
    assert_eq!(deliveries[0]["test"], true);
    let other_id = other["endpoint_id"].as_str().unwrap();
    assert!(
        api.pending_event_ids(other_id).await.is_empty(),
        "this endpoint only"
    );

    // A disabled endpoint's test delivery is claimed, not parked.
    let now = webhookd_core::time::unix_millis();
    let claims = api
        .store
        .claim_due(&webhookd_store::ClaimRequest {
            now_ms: now,
            lease_until_ms: now + 60_000,
            park_until_ms: now + 60_000,
            limit: 10,
            per_endpoint: 10,
            room: std::collections::HashMap::new(),
            endpoint_limit: 0,
            ..webhookd_store::ClaimRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].delivery.test);
    assert!(claims[0].delivery.body.contains(r#""data":{"test":true}"#));
}

pub(crate) async fn a_test_event_names_a_known_type_or_gets_40000(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}/test");
    let chosen = api
        .call(
            Method::POST,
            &path,
            Some(json!({"event": "create_avatar_success"})),
        )
        .await;
    assert_eq!(chosen.0, StatusCode::OK, "{}", chosen.1);
    let unknown = api
        .call(Method::POST, &path, Some(json!({"event": "video_done"})))
        .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, 40000, "event: ");
    let wrong = api
        .call(Method::POST, &path, Some(json!({"event": 5})))
        .await;
    assert_error(
        &wrong,
        StatusCode::BAD_REQUEST,
        40000,
        "event: must be a string",
    );
    let not_json = api.call_as(&api.key, Method::POST, &path, Some("{")).await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, 40000, "not valid JSON");
    let stranger = api.new_key("mallory").await;
    let theirs = api.call_as(&stranger, Method::POST, &path, None).await;
    assert_error(&theirs, StatusCode::NOT_FOUND, 10104, "not found");
}

pub(crate) async fn rotating_gives_a_new_secret_and_a_bounded_grace(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}/rotate-secret");
    let before = webhookd_core::time::unix_seconds();
    let (status, json) = api.call(Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let rotated = &json["data"];
    assert_ne!(rotated["secret"], endpoint["secret"]);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    let expires = rotated["previous_secret_expires_at"].as_i64().unwrap();
    assert!(
        (before + 86_400..=before + 86_402).contains(&expires),
        "a day by default"
    );
    let (_, listed) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(listed["data"]["endpoints"][0]["secret"], rotated["secret"]);

    let (status, json) = api
        .call(Method::POST, &path, Some(json!({"grace_seconds": 0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(
        json["data"].get("previous_secret_expires_at").is_none(),
        "{json}"
    );

    for bad in [
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": 604_801}),
        json!({"grace_seconds": "1"}),
        json!({"grace_seconds": 1.5}),
    ] {
        let refused = api.call(Method::POST, &path, Some(bad)).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, 40000, "grace_seconds: ");
    }
    let stranger = api.new_key("mallory").await;
    let theirs = api.call_as(&stranger, Method::POST, &path, None).await;
    assert_error(&theirs, StatusCode::NOT_FOUND, 10104, "not found");
}

/// 10,000 dead deliveries recovered: the answer comes at once (under a
/// second), and every one of them is made pending again, once.
pub(crate) async fn recovering_ten_thousand_dead_deliveries_answers_at_once(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap().to_owned();
    let since = webhookd_core::time::unix_seconds();
    make_dead(&api, 10_000, since).await;
    let asked = std::time::Instant::now();
    let (status, json) = api
        .call(
            Method::POST,
            &format!("/v2/endpoint/{id}/recover"),
            Some(json!({"since": since - 1})),
        )
        .await;
    let answered = asked.elapsed();
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["recovered"], 10_000);
    assert!(
        answered < std::time::Duration::from_secs(1),
        "answered in {answered:?}"
    );
    let page = Page {
        limit: 20_000,
        after: None,
    };
    for _ in 0..200 {
        let failed = api
            .store
            .list_deliveries("johndoe", &id, DeliveryStatus::Failed, &page)
            .await
            .unwrap();
        if failed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pending = api
        .store
        .list_deliveries("johndoe", &id, DeliveryStatus::Pending, &page)
        .await
        .unwrap();
    assert_eq!(pending.len(), 10_000);
    assert!(pending.iter().all(|delivery| delivery.last_attempt));
    let again = api
        .call(
            Method::POST,
            &format!("/v2/endpoint/{id}/recover"),
            Some(json!({"since": since - 1})),
        )
        .await;
    assert_eq!(
        again.1["data"]["recovered"], 0,
        "pending ones are not touched"
    );
    for bad in [
        json!({}),
        json!({"since": "x"}),
        json!({"since": 10, "until": 5}),
    ] {
        let refused = api
            .call(
                Method::POST,
                &format!("/v2/endpoint/{id}/recover"),
                Some(bad),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, 40000, "");
    }
}

/// `thousands` × 1,000 events to the user's endpoint, each delivery dead
/// after one attempt.
/// Security round 3: 20 concurrent calls over 50 dead deliveries each
/// answered 50 (1,000 in all) though 50 attempts were made.
pub(crate) async fn concurrent_recover_calls_add_up_to_what_was_recovered(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap().to_owned();
    let since = webhookd_core::time::unix_seconds();
    make_dead(&api, 50, since).await;
    let path = format!("/v2/endpoint/{id}/recover");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let request = api
            .client
            .post(format!("{}{path}", api.base))
            .header("x-api-key", &api.key)
            .json(&json!({"since": since - 1}));
        calls.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let json: Value = response.json().await.unwrap();
            json["data"]["recovered"].as_u64().unwrap()
        });
    }
    let answers = calls.join_all().await;
    assert_eq!(answers.iter().sum::<u64>(), 50, "{answers:?}");
}

async fn make_dead(api: &Api, count: usize, since: i64) {
    let now = webhookd_core::time::unix_millis();
    for chunk in 0..count.div_ceil(1000) {
        let events: Vec<webhookd_core::Event> = (0..1000.min(count - chunk * 1000))
            .map(|i| {
                let message = format!(
                    r#"{{"event":"generated_avatar_video_success","username":"johndoe","event_id":"evt_{chunk}_{i}","data":{{}}}}"#
                );
                webhookd_core::Event::parse(message.as_bytes(), since).unwrap()
            })
            .collect();
        api.store.accept_events(&events, now).await.unwrap();
        let claims = api
            .store
            .claim_due(&webhookd_store::ClaimRequest {
                now_ms: now,
                lease_until_ms: now + 60_000,
                park_until_ms: now + 60_000,
                limit: 1000,
                per_endpoint: 1000,
                room: std::collections::HashMap::new(),
                endpoint_limit: 0,
                ..webhookd_store::ClaimRequest::default()
            })
            .await
            .unwrap();
        let finished: Vec<webhookd_store::FinishedAttempt> = claims
            .into_iter()
            .map(|claim| webhookd_store::FinishedAttempt {
                claim,
                record: webhookd_store::AttemptRecord {
                    attempt: 1,
                    started_at: now,
                    duration_ms: 1,
                    status_code: Some(500),
                    reason: "http_5xx".into(),
                    response: None,
                    signing: None,
                },
                result: webhookd_store::AttemptResult::Dead,
            })
            .collect();
        api.store.record_attempts(&finished).await.unwrap();
    }
}

/// A bad listing parameter gets a 40000 naming it, in our words: never the
/// query parser's message, which would repeat what the client sent.
pub(crate) async fn bad_listing_parameters_are_named_not_echoed(api: Api) {
    let created = api.create(seed_body()).await;
    let id = created["endpoint_id"].as_str().unwrap();
    for query in [
        "limit=%3Cscript%3Exyz",
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=1.5",
    ] {
        let answer = api
            .call(
                Method::GET,
                &format!("/v2/endpoint/{id}/deliveries?{query}"),
                None,
            )
            .await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            40000,
            "limit: must be a whole number between 1 and 100",
        );
        let msg = answer.1["msg"].as_str().unwrap();
        assert!(
            !msg.contains("script") && !msg.contains("invalid digit"),
            "{msg}"
        );
    }
    let (status, json) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries?limit=5&status=pending"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

/// Claims the one due delivery and records its first attempt, delivered,
/// signed with `secret` as the delivery client signs: the timestamp and
/// the signature headers.
async fn deliver_signed(api: &Api, secret: &str) -> (i64, Vec<(&'static str, String)>) {
    let now = webhookd_core::time::unix_millis();
    let claims = api
        .store
        .claim_due(&webhookd_store::ClaimRequest {
            now_ms: now,
            lease_until_ms: now + 60_000,
            park_until_ms: now + 60_000,
            limit: 10,
            per_endpoint: 10,
            ..webhookd_store::ClaimRequest::default()
        })
        .await
        .unwrap();
    let claim = claims[0].clone();
    let timestamp = now / 1000;
    let signatures = webhookd_core::signer::signature_headers(
        secret,
        None,
        webhookd_core::SignatureScheme::Hmac,
        "evt_detail",
        timestamp,
        claim.delivery.body.as_bytes(),
    );
    let record = webhookd_store::AttemptRecord {
        attempt: 1,
        started_at: now,
        duration_ms: 30,
        status_code: Some(200),
        reason: "ok".into(),
        response: None,
        signing: Some(webhookd_core::signer::Signing::of(timestamp, &signatures)),
    };
    api.store
        .record_attempts(&[webhookd_store::FinishedAttempt {
            claim,
            record,
            result: webhookd_store::AttemptResult::Delivered,
        }])
        .await
        .unwrap();
    (timestamp, signatures)
}

/// `GET /v2/endpoint/{id}/deliveries/{delivery_id}` (SPEC §13): before an
/// attempt, the request as it will go (unsigned: it is signed when sent);
/// after one, as it went — its timestamp and signatures, made again from
/// the endpoint's secret.
pub(crate) async fn the_delivery_detail_shows_the_request_as_sent(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let secret = endpoint["secret"].as_str().unwrap();
    let (status, _) = api
        .ingest(r#"{"event":"generated_avatar_video_success","username":"johndoe","event_id":"evt_detail","data":{"avatar_id":7,"note":"é"}}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, listed) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries?status=pending"),
            None,
        )
        .await;
    let delivery_id = listed["data"]["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v2/endpoint/{id}/deliveries/{delivery_id}");

    let (status, json) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let detail = &json["data"];
    assert_eq!(detail["delivery_id"], delivery_id.as_str());
    assert_eq!(detail["status"], "pending");
    assert!(detail.get("payload_expired").is_none(), "{detail}");
    let request = &detail["request"];
    assert_eq!(request["attempt"], Value::Null);
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], "https://example.com/webhook");
    let sent_body = request["body"].as_str().unwrap().to_owned();
    let body: Value = serde_json::from_str(&sent_body).unwrap();
    assert_eq!(body["event_id"], "evt_detail");
    assert_eq!(body["data"], json!({"avatar_id": 7, "note": "é"}));
    assert_eq!(request["headers"]["user-agent"], "JoggAI-Webhook/2.0");
    assert_eq!(request["headers"]["webhook-id"], "evt_detail");
    assert!(request["headers"].get("x-webhook-signature").is_none());

    // One attempt, signed as the delivery client signs.
    let (timestamp, signatures) = deliver_signed(&api, secret).await;
    let (_, json) = api.call(Method::GET, &path, None).await;
    let detail = &json["data"];
    assert_eq!(detail["status"], "delivered");
    assert_eq!(detail["attempts"][0]["status_code"], 200);
    let request = &detail["request"];
    assert_eq!(request["attempt"], 1);
    assert_eq!(
        request["headers"]["webhook-timestamp"],
        timestamp.to_string()
    );
    for (name, value) in &signatures {
        assert_eq!(request["headers"][*name], value.as_str(), "{name}");
    }
    assert_eq!(
        request["body"].as_str().unwrap(),
        sent_body,
        "the delivered delivery's body comes from the kept payload"
    );

    // Nobody else's, and nothing made up.
    let other = api.new_key("someone-else").await;
    let (status, _) = api.call_as(&other, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, json) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries/dlv_nope"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
}

/// Past `keep_payloads` the detail still shows the delivery and its
/// attempts, with `request: null` and `payload_expired: true`.
#[tokio::test]
async fn past_keep_payloads_the_detail_says_the_payload_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("w.db").to_str().unwrap())
        .await
        .unwrap()
        .with_retention(webhookd_store::Retention {
            keep_payloads: std::time::Duration::ZERO,
            ..webhookd_store::Retention::default()
        });
    let api = Api::start(Arc::new(store)).await;
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let (status, _) = api
        .ingest(r#"{"event":"generated_avatar_video_success","username":"johndoe","event_id":"evt_gone","data":{}}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, listed) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries?status=pending"),
            None,
        )
        .await;
    let delivery_id = listed["data"]["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap();
    let (status, json) = api
        .call(
            Method::GET,
            &format!("/v2/endpoint/{id}/deliveries/{delivery_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["event_id"], "evt_gone");
    assert_eq!(json["data"]["request"], Value::Null);
    assert_eq!(json["data"]["payload_expired"], true);
}
