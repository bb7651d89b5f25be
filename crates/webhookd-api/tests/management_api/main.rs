//! The management API of SPEC §1 through real HTTP, on both stores. Each
//! test is one rule of the contract; the macro runs it once on SQLite and
//! once on Redis.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webhookd_api::{ApiSettings, AppState, PortalHeaders, router};
use webhookd_core::address::AddressPolicy;
use webhookd_core::endpoint::UrlRules;
use webhookd_core::health::Readiness;
use webhookd_core::{SharedCatalog, ids};
use webhookd_store::{DeliveryStatus, Page, RedisStore, SqliteStore, Store};
use webhookd_testkit::{CuttableProxy, Service, require, service_address, unique_prefix};

macro_rules! on_both_stores {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("webhookd.db");
                    let store = webhookd_store::SqliteStore::open(path.to_str().unwrap()).await.unwrap();
                    super::$test(super::Api::start(std::sync::Arc::new(store)).await).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(url) = webhookd_testkit::require(webhookd_testkit::Service::Redis) else { return };
                    let prefix = webhookd_testkit::unique_prefix(stringify!($test));
                    let store = webhookd_store::RedisStore::connect(&url, &prefix).await.unwrap();
                    super::$test(super::Api::start(std::sync::Arc::new(store)).await).await;
                }
            )+
        }
    };
}

on_both_stores!(
    create_returns_the_endpoint_with_a_generated_id_and_secret,
    status_defaults_to_enabled_when_omitted,
    list_returns_only_the_callers_endpoints_oldest_first,
    put_changes_url_events_and_status_but_never_the_secret,
    put_without_status_keeps_the_current_status,
    a_rate_limit_is_set_kept_and_removed,
    delete_removes_the_endpoint_and_a_second_delete_is_not_found,
    another_users_endpoint_is_not_found,
    the_21st_endpoint_is_refused,
    validation_errors_are_40000_and_name_the_field,
    malformed_bodies_are_40000_never_a_500,
    events_lists_the_22_types_of_the_catalog,
    a_missing_empty_unknown_or_oversized_key_is_10105,
    unknown_routes_and_wrong_methods_answer_json,
    an_oversized_body_is_refused,
    ingest_answers_202_once_the_event_is_durable,
    ingest_needs_the_bearer_token,
    ingest_refuses_invalid_messages_with_the_reason,
    ingest_of_a_duplicate_is_accepted_but_fans_out_once,
    an_endpoint_change_applies_to_events_ingested_after_it_returns,
    a_test_event_goes_to_one_endpoint_whatever_its_status,
    a_test_event_names_a_known_type_or_gets_40000,
    rotating_gives_a_new_secret_and_a_bounded_grace,
    recovering_ten_thousand_dead_deliveries_answers_at_once,
    concurrent_recover_calls_add_up_to_what_was_recovered,
    bad_listing_parameters_are_named_not_echoed,
    admin_routes_take_the_admin_token_and_nothing_else,
    admin_adds_users_and_keys_and_revokes_them,
    a_portal_link_reaches_its_users_routes_only,
    a_portal_link_expires_on_time,
    the_portal_is_served_with_its_security_headers,
    answers_that_carry_secrets_are_neither_cached_nor_sniffed,
    a_portal_link_signs_in_once,
    test_sends_past_their_quota_answer_10429,
    ingest_quotas_refuse_and_the_endpoint_shows_its_use,
    a_catalog_file_replaces_the_default_and_its_schemas_check_ingest,
    the_admin_api_adds_event_types_over_the_default_with_schemas,
    the_admin_api_redefines_and_removes_types_for_every_process,
    bad_event_type_definitions_are_40000_and_name_what_to_fix,
    listings_take_order_and_filters_and_the_first_page_counts,
    the_delivery_detail_shows_the_request_as_sent,
    delivery_options_are_set_kept_shown_without_secrets_and_removed,
    an_endpoint_signing_with_ed25519_alone_never_shows_its_secret,
    bad_delivery_options_are_40000_and_name_the_field,
    tls_material_and_oauth2_are_taken_and_their_secrets_never_answered,
    a_filter_is_set_shown_kept_removed_and_ingest_follows_it,
    bad_filters_are_40000_and_name_path_and_operator,
    the_filter_preview_says_whether_a_sample_would_be_delivered,
    joggai_fields_are_checked_before_options,
    ordering_is_set_shown_kept_and_removed_and_the_head_of_line_shown,
    bad_ordering_settings_and_keys_are_40000_and_name_the_field,
);

mod catalog;
mod filters;
mod lifecycle;
mod options;
mod ordering;
mod platform;
mod quotas;
use catalog::*;
use filters::*;
use lifecycle::*;
use options::*;
use ordering::*;
use platform::*;
use quotas::*;

const INGEST_TOKEN: &str = "whi_test_token_0123456789";
const ADMIN_TOKEN: &str = "adm_test_token_0123456789";

/// A running API on a free port with one registered user.
struct Api {
    base: String,
    key: String,
    store: Arc<dyn Store>,
    client: reqwest::Client,
}

impl Api {
    async fn start(store: Arc<dyn Store>) -> Api {
        Api::start_with(store, UrlRules::default(), 0).await
    }

    async fn start_with(store: Arc<dyn Store>, url_rules: UrlRules, rate_limit: u32) -> Api {
        Api::start_with_catalog(store, url_rules, rate_limit, SharedCatalog::joggai()).await
    }

    async fn start_with_catalog(
        store: Arc<dyn Store>,
        url_rules: UrlRules,
        rate_limit: u32,
        catalog: SharedCatalog,
    ) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let settings = ApiSettings {
            url_rules,
            rate_limit,
            ingest_token: INGEST_TOKEN.into(),
            admin_token: Some(ADMIN_TOKEN.into()),
            portal: PortalHeaders::new("'self' https://dashboard.example.com").unwrap(),
            readiness: Readiness::default(),
            metrics: None,
            quotas: webhookd_core::quota::Quotas::default(),
            user_agent: webhookd_core::config::DEFAULT_USER_AGENT.into(),
        };
        let ingest = webhookd_ingest::Ingest::new(Arc::clone(&store)).with_catalog(catalog);
        let app = router(AppState::new(Arc::clone(&store), ingest, settings));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let api = Api {
            base,
            key: String::new(),
            store,
            client: reqwest::Client::new(),
        };
        let key = api.new_key("johndoe").await;
        Api { key, ..api }
    }

    async fn new_key(&self, username: &str) -> String {
        let key = ids::new_api_key();
        self.store
            .add_api_key(username, &ids::hash_api_key(&key), 0)
            .await
            .unwrap();
        key
    }

    async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, json)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.call_as(&self.key, method, path, body.as_deref()).await
    }

    async fn ingest_as(&self, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/internal/events", self.base))
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn ingest(&self, body: &str) -> (StatusCode, Value) {
        self.ingest_as(Some(INGEST_TOKEN), body).await
    }

    async fn pending_event_ids(&self, endpoint_id: &str) -> Vec<String> {
        let page = Page {
            limit: 1000,
            after: None,
        };
        let deliveries = self
            .store
            .list_deliveries("johndoe", endpoint_id, DeliveryStatus::Pending, &page)
            .await
            .unwrap();
        deliveries.into_iter().map(|d| d.event_id).collect()
    }

    async fn create(&self, body: Value) -> Value {
        let (status, json) = self.call(Method::POST, "/v2/endpoint", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["code"], 0, "{json}");
        json["data"].clone()
    }
}

fn seed_body() -> Value {
    json!({
        "url": "https://example.com/webhook",
        "events": ["generated_avatar_video_success", "generated_avatar_video_failed"],
        "status": "enabled"
    })
}

fn assert_error(response: &(StatusCode, Value), status: StatusCode, code: i64, msg_part: &str) {
    let (actual_status, json) = response;
    assert_eq!(*actual_status, status, "{json}");
    assert_eq!(json["code"], code, "{json}");
    let msg = json["msg"].as_str().unwrap();
    assert!(
        msg.contains(msg_part),
        "{msg:?} should mention {msg_part:?}"
    );
    assert!(json.get("data").is_none(), "errors carry no data: {json}");
}

async fn create_returns_the_endpoint_with_a_generated_id_and_secret(api: Api) {
    let before = u64::try_from(webhookd_core::time::unix_seconds()).unwrap();
    let (status, json) = api
        .call(Method::POST, "/v2/endpoint", Some(seed_body()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["code"], 0);
    assert_eq!(json["msg"], "Success");
    let data = &json["data"];
    assert!(data["endpoint_id"].as_str().unwrap().starts_with("wh_"));
    assert!(data["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(data["url"], "https://example.com/webhook");
    assert_eq!(data["status"], "enabled");
    assert_eq!(
        data["events"],
        json!([
            "generated_avatar_video_success",
            "generated_avatar_video_failed"
        ])
    );
    assert_eq!(data["username"], "johndoe");
    let created_at = data["created_at"].as_u64().unwrap();
    assert!(created_at >= before && created_at <= before + 5);
    let keys: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys.len(),
        7,
        "exactly the WebhookEndpoint fields: {keys:?}"
    );
}

async fn status_defaults_to_enabled_when_omitted(api: Api) {
    let data = api
        .create(json!({"url": "https://example.com/a", "events": ["generated_video_success"]}))
        .await;
    assert_eq!(data["status"], "enabled");
    let data = api
        .create(json!({"url": "https://example.com/b", "events": ["generated_video_success"], "status": "disabled"}))
        .await;
    assert_eq!(data["status"], "disabled");
}

async fn list_returns_only_the_callers_endpoints_oldest_first(api: Api) {
    let (status, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["data"], json!({"endpoints": []}));

    let mut ids = Vec::new();
    for i in 0..3 {
        let data = api.create(json!({"url": format!("https://example.com/{i}"), "events": ["generated_image_success"]})).await;
        ids.push(data["endpoint_id"].clone());
    }
    let other = api.new_key("someone-else").await;
    let body = seed_body().to_string();
    api.call_as(&other, Method::POST, "/v2/endpoint", Some(&body))
        .await;

    let (_, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    let listed: Vec<_> = json["data"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint_id"].clone())
        .collect();
    assert_eq!(listed, ids);
    assert!(
        json["data"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["username"] == "johndoe")
    );
}

async fn put_changes_url_events_and_status_but_never_the_secret(api: Api) {
    let created = api.create(seed_body()).await;
    let id = created["endpoint_id"].as_str().unwrap();
    let update = json!({
        "url": "https://new-url.com/webhook",
        "events": ["generated_avatar_video_success", "generated_avatar_video_failed", "generated_photo_avatar_success"],
        "status": "disabled",
        "secret": "whsec_chosen_by_the_caller"
    });
    let (status, json) = api
        .call(Method::PUT, &format!("/v2/endpoint/{id}"), Some(update))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let data = &json["data"];
    assert_eq!(data["url"], "https://new-url.com/webhook");
    assert_eq!(data["status"], "disabled");
    assert_eq!(data["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        data["secret"], created["secret"],
        "the secret never changes"
    );
    assert_eq!(data["endpoint_id"], created["endpoint_id"]);
    assert_eq!(data["created_at"], created["created_at"]);

    let (_, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(json["data"]["endpoints"][0], *data, "the change is stored");
}

async fn put_without_status_keeps_the_current_status(api: Api) {
    let created = api.create(json!({"url": "https://example.com/", "events": ["generated_video_success"], "status": "disabled"})).await;
    let id = created["endpoint_id"].as_str().unwrap();
    let (_, json) = api
        .call(
            Method::PUT,
            &format!("/v2/endpoint/{id}"),
            Some(json!({"url": "https://example.org/", "events": ["generated_video_failed"]})),
        )
        .await;
    assert_eq!(json["data"]["status"], "disabled");
    assert_eq!(json["data"]["url"], "https://example.org/");
}

/// SPEC §10: `rate_limit` is optional on create; a PUT that leaves it out
/// keeps it, `null` removes it; anything but 1..=100000 is a 40000 naming it.
async fn a_rate_limit_is_set_kept_and_removed(api: Api) {
    let created = api
        .create(json!({"url": "https://example.com/", "events": ["generated_video_success"], "rate_limit": 25}))
        .await;
    assert_eq!(created["rate_limit"], 25);
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    let put = |body: Value| api.call(Method::PUT, &path, Some(body));
    let (_, kept) =
        put(json!({"url": "https://example.org/", "events": ["generated_video_failed"]})).await;
    assert_eq!(kept["data"]["rate_limit"], 25, "{kept}");
    let (_, changed) = put(json!({"url": "https://example.org/", "events": ["generated_video_failed"], "rate_limit": 3})).await;
    assert_eq!(changed["data"]["rate_limit"], 3, "{changed}");
    let (_, removed) = put(json!({"url": "https://example.org/", "events": ["generated_video_failed"], "rate_limit": null})).await;
    assert!(removed["data"].get("rate_limit").is_none(), "{removed}");
    let (_, listed) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert!(
        listed["data"]["endpoints"][0].get("rate_limit").is_none(),
        "{listed}"
    );
    for refused in [json!(0), json!(100_001), json!(-1), json!(2.5), json!("10")] {
        let response = api
            .call(
                Method::POST,
                "/v2/endpoint",
                Some(json!({"url": "https://example.com/", "events": ["generated_video_success"], "rate_limit": refused})),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, "rate_limit");
    }
}

async fn delete_removes_the_endpoint_and_a_second_delete_is_not_found(api: Api) {
    let created = api.create(seed_body()).await;
    let path = format!("/v2/endpoint/{}", created["endpoint_id"].as_str().unwrap());
    let (status, json) = api.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"code": 0, "msg": "Success"}));
    let (_, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(json["data"]["endpoints"], json!([]));
    assert_error(
        &api.call(Method::DELETE, &path, None).await,
        StatusCode::NOT_FOUND,
        10104,
        "not found",
    );
    assert_error(
        &api.call(Method::PUT, &path, Some(seed_body())).await,
        StatusCode::NOT_FOUND,
        10104,
        "not found",
    );
}

async fn another_users_endpoint_is_not_found(api: Api) {
    let created = api.create(seed_body()).await;
    let path = format!("/v2/endpoint/{}", created["endpoint_id"].as_str().unwrap());
    let intruder = api.new_key("intruder").await;
    let body =
        json!({"url": "https://evil.example/", "events": ["generated_video_success"]}).to_string();
    let put = api
        .call_as(&intruder, Method::PUT, &path, Some(&body))
        .await;
    assert_error(&put, StatusCode::NOT_FOUND, 10104, "not found");
    let delete = api.call_as(&intruder, Method::DELETE, &path, None).await;
    assert_error(&delete, StatusCode::NOT_FOUND, 10104, "not found");
    let (_, json) = api
        .call_as(&intruder, Method::GET, "/v2/endpoints", None)
        .await;
    assert_eq!(json["data"]["endpoints"], json!([]));
    let (_, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(json["data"]["endpoints"][0], created, "untouched");
}

async fn the_21st_endpoint_is_refused(api: Api) {
    for _ in 0..20 {
        api.create(seed_body()).await;
    }
    let refused = api
        .call(Method::POST, "/v2/endpoint", Some(seed_body()))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        40000,
        "at most 20 endpoints",
    );
    let (_, json) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(json["data"]["endpoints"].as_array().unwrap().len(), 20);
}

async fn validation_errors_are_40000_and_name_the_field(api: Api) {
    let events = json!(["generated_video_success"]);
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let cases = [
        (json!({"events": events}), "url: is required"),
        (json!({"url": 5, "events": events}), "url: must be a string"),
        (
            json!({"url": "example.com/hook", "events": events}),
            "url: is not an absolute URL",
        ),
        (
            json!({"url": "http://example.com/hook", "events": events}),
            "url: must use https",
        ),
        (
            json!({"url": "https://u:p@example.com/", "events": events}),
            "url: must not contain a user name",
        ),
        (
            json!({"url": long_url, "events": events}),
            "url: is 2068 bytes",
        ),
        (
            json!({"url": "https://10.0.0.1/hook", "events": events}),
            "url: points to a forbidden address",
        ),
        (
            json!({"url": "https://[::ffff:169.254.169.254]/", "events": events}),
            "link-local",
        ),
        (
            json!({"url": "https://example.com/"}),
            "events: is required",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "events: must list at least one",
        ),
        (
            json!({"url": "https://example.com/", "events": "generated_video_success"}),
            "events: must be an array",
        ),
        (
            json!({"url": "https://example.com/", "events": [1]}),
            "events: every item must be a string",
        ),
        (
            json!({"url": "https://example.com/", "events": ["video_done"]}),
            "events: \"video_done\" is not a known event type",
        ),
        (
            json!({"url": "https://example.com/", "events": events, "status": "paused"}),
            "status: must be",
        ),
        (
            json!({"url": "https://example.com/", "events": events, "status": true}),
            "status: must be",
        ),
    ];
    for (body, message) in cases {
        let response = api
            .call(Method::POST, "/v2/endpoint", Some(body.clone()))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, message);
    }
    let created = api.create(seed_body()).await;
    let path = format!("/v2/endpoint/{}", created["endpoint_id"].as_str().unwrap());
    let response = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"url": "ftp://x/", "events": events})),
        )
        .await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        40000,
        "url: must use https, not ftp",
    );
}

async fn malformed_bodies_are_40000_never_a_500(api: Api) {
    let deep = "[".repeat(10_000);
    for body in [
        "",
        "{",
        "not json",
        "[]",
        "null",
        "42",
        "\"text\"",
        "{\"url\":}",
        "\u{0}",
        deep.as_str(),
    ] {
        let response = api
            .call_as(&api.key, Method::POST, "/v2/endpoint", Some(body))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, "request body");
    }
    let duplicated = r#"{"url":"https://a.example/","url":"https://b.example/","events":["generated_video_success"]}"#;
    let (status, _) = api
        .call_as(&api.key, Method::POST, "/v2/endpoint", Some(duplicated))
        .await;
    assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST);
}

async fn events_lists_the_22_types_of_the_catalog(api: Api) {
    let (status, json) = api.call(Method::GET, "/v2/events", None).await;
    assert_eq!(status, StatusCode::OK);
    let events = json["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 22);
    assert_eq!(events[0], "generated_video_success");
    assert!(events.contains(&json!("generated_motion_failed")));
}

async fn a_missing_empty_unknown_or_oversized_key_is_10105(api: Api) {
    let url = format!("{}/v2/endpoints", api.base);
    let response = api.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["code"], 10105);
    let oversized = format!("whk_{}", "a".repeat(500));
    for key in ["", "whk_unknown", oversized.as_str()] {
        let response = api.call_as(key, Method::GET, "/v2/endpoints", None).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, 10105, "API key");
        let response = api.call_as(key, Method::GET, "/v2/events", None).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, 10105, "API key");
    }
    api.store.revoke_api_keys("johndoe").await.unwrap();
    let response = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_error(&response, StatusCode::UNAUTHORIZED, 10105, "API key");
}

async fn unknown_routes_and_wrong_methods_answer_json(api: Api) {
    let response = api.call(Method::GET, "/v2/nothing-here", None).await;
    assert_error(
        &response,
        StatusCode::NOT_FOUND,
        10104,
        "no route for GET /v2/nothing-here",
    );
    let response = api.call(Method::PATCH, "/v2/endpoints", None).await;
    assert_error(
        &response,
        StatusCode::METHOD_NOT_ALLOWED,
        40000,
        "PATCH is not allowed",
    );
    let response = api.call(Method::GET, "/v2/endpoint", None).await;
    assert_error(
        &response,
        StatusCode::METHOD_NOT_ALLOWED,
        40000,
        "GET is not allowed",
    );
}

async fn an_oversized_body_is_refused(api: Api) {
    let body = json!({"url": "https://example.com/", "events": ["generated_video_success"], "pad": "x".repeat(100_000)});
    let response = api.call(Method::POST, "/v2/endpoint", Some(body)).await;
    assert_error(
        &response,
        StatusCode::PAYLOAD_TOO_LARGE,
        40000,
        "larger than 65536 bytes",
    );
}

async fn sqlite_api() -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("w.db").to_str().unwrap())
        .await
        .unwrap();
    (Api::start(Arc::new(store)).await, dir)
}

#[tokio::test]
async fn http_and_private_networks_are_allowed_only_when_the_operator_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("w.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let rules = UrlRules {
        allow_http: true,
        addresses: AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]),
    };
    let api = Api::start_with(store, rules, 0).await;
    let data = api
        .create(json!({"url": "http://127.0.0.1:9000/hook", "events": ["generated_video_success"]}))
        .await;
    assert_eq!(data["url"], "http://127.0.0.1:9000/hook");
    let response = api
        .call(
            Method::POST,
            "/v2/endpoint",
            Some(json!({"url": "http://192.168.0.1/", "events": ["generated_video_success"]})),
        )
        .await;
    assert_error(&response, StatusCode::BAD_REQUEST, 40000, "private");
}

#[tokio::test]
async fn a_flood_from_one_key_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("w.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let api = Api::start_with(store, UrlRules::default(), 2).await;
    let url = format!("{}/v2/events", api.base);
    let mut limited = None;
    for _ in 0..20 {
        let response = api
            .client
            .get(&url)
            .header("x-api-key", &api.key)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the limit of 2/s (burst 4) is reached within 20 requests");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["code"], 40000);
    // Another key has its own budget.
    let other = api.new_key("other").await;
    let (status, _) = api.call_as(&other, Method::GET, "/v2/events", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let (api, _dir) = sqlite_api().await;
    let response = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = api
        .client
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = api
        .client
        .get(format!("{}/openapi.yaml", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().starts_with("openapi: 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_unreachable_the_api_answers_50000_and_recovers_by_itself() {
    let Some(_) = require(Service::Redis) else {
        return;
    };
    let proxy = CuttableProxy::start(service_address(Service::Redis)).await;
    let url = Service::Redis.url_through(proxy.address);
    let store = RedisStore::connect(&url, &unique_prefix("outage"))
        .await
        .unwrap();
    let api = Api::start(Arc::new(store)).await;
    api.create(seed_body()).await;

    proxy.cut();
    let response = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_error(
        &response,
        StatusCode::SERVICE_UNAVAILABLE,
        50000,
        "system error",
    );
    let response = api
        .call(Method::POST, "/v2/endpoint", Some(seed_body()))
        .await;
    assert_error(
        &response,
        StatusCode::SERVICE_UNAVAILABLE,
        50000,
        "system error",
    );
    let ready = api
        .client
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason: Value = ready.json().await.unwrap();
    assert!(
        reason["reason"].as_str().unwrap().starts_with("store:"),
        "{reason}"
    );

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        let (status, json) = api.call(Method::GET, "/v2/endpoints", None).await;
        if status == StatusCode::OK {
            assert_eq!(json["data"]["endpoints"].as_array().unwrap().len(), 1);
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(recovered, "the API recovers once Redis is reachable again");
}

fn event_message(event_id: &str) -> String {
    json!({"event": "generated_avatar_video_success", "username": "johndoe", "event_id": event_id,
           "data": {"video_id": "video_123456", "status": "completed"}})
    .to_string()
}

async fn ingest_answers_202_once_the_event_is_durable(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let (status, json) = api.ingest(&event_message("evt_123456789")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(
        json,
        json!({"code": 0, "msg": "Success", "data": {"event_id": "evt_123456789"}})
    );
    assert_eq!(api.pending_event_ids(id).await, vec!["evt_123456789"]);

    let without_id =
        json!({"event": "generated_avatar_video_failed", "username": "johndoe", "data": {}})
            .to_string();
    let (status, json) = api.ingest(&without_id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let assigned = json["data"]["event_id"].as_str().unwrap();
    assert!(assigned.starts_with("evt_"));
    assert_eq!(
        api.pending_event_ids(id).await,
        vec!["evt_123456789", assigned]
    );
}

async fn ingest_needs_the_bearer_token(api: Api) {
    for token in [
        None,
        Some(""),
        Some("wrong-token-0123456789"),
        Some(&api.key[..]),
    ] {
        let response = api.ingest_as(token, &event_message("evt_1")).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, 10105, "ingest token");
    }
}

async fn ingest_refuses_invalid_messages_with_the_reason(api: Api) {
    let cases = [
        ("not json".to_owned(), "message is not valid JSON"),
        ("[1]".to_owned(), "message must be a JSON object"),
        (r#"{"event":"video_done","username":"johndoe","data":{}}"#.to_owned(), "\"video_done\" is not a known event type"),
        (r#"{"event":"generated_video_success","data":{}}"#.to_owned(), "username is required"),
        (r#"{"event":"generated_video_success","username":"johndoe"}"#.to_owned(), "data is required"),
        (r#"{"event":"generated_video_success","username":"johndoe","data":{},"event_id":"a b"}"#.to_owned(), "event_id must be"),
        (
            json!({"event": "generated_video_success", "username": "johndoe", "data": {"pad": "x".repeat(262_144)}}).to_string(),
            "the limit is 262144",
        ),
        (
            format!(
                r#"{{"event":"generated_video_success","username":"johndoe","data":{{"a":{}1{}}}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "more than 64 levels deep",
        ),
    ];
    for (body, reason) in cases {
        let response = api.ingest(&body).await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, reason);
    }
    let huge = json!({"pad": "x".repeat(600_000)}).to_string();
    let response = api.ingest(&huge).await;
    assert_error(
        &response,
        StatusCode::PAYLOAD_TOO_LARGE,
        40000,
        "larger than",
    );
}

async fn ingest_of_a_duplicate_is_accepted_but_fans_out_once(api: Api) {
    let endpoint = api.create(seed_body()).await;
    for _ in 0..3 {
        let (status, _) = api.ingest(&event_message("evt_dup")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        api.pending_event_ids(endpoint["endpoint_id"].as_str().unwrap())
            .await,
        vec!["evt_dup"]
    );
}

async fn an_endpoint_change_applies_to_events_ingested_after_it_returns(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    api.ingest(&event_message("evt_before")).await;
    let disable = json!({"url": "https://example.com/webhook", "events": ["generated_avatar_video_success"], "status": "disabled"});
    assert_eq!(
        api.call(Method::PUT, &path, Some(disable)).await.0,
        StatusCode::OK
    );
    api.ingest(&event_message("evt_while_disabled")).await;
    let other_events = json!({"url": "https://example.com/webhook", "events": ["generated_video_success"], "status": "enabled"});
    assert_eq!(
        api.call(Method::PUT, &path, Some(other_events)).await.0,
        StatusCode::OK
    );
    api.ingest(&event_message("evt_while_unsubscribed")).await;
    let back =
        json!({"url": "https://example.com/webhook", "events": ["generated_avatar_video_success"]});
    assert_eq!(
        api.call(Method::PUT, &path, Some(back)).await.0,
        StatusCode::OK
    );
    api.ingest(&event_message("evt_after")).await;
    assert_eq!(
        api.pending_event_ids(id).await,
        vec!["evt_before", "evt_after"]
    );
    assert_eq!(
        api.call(Method::DELETE, &path, None).await.0,
        StatusCode::OK
    );
    api.ingest(&event_message("evt_after_delete")).await;
    assert!(
        api.pending_event_ids(id).await.is_empty(),
        "deleting drops the endpoint's deliveries"
    );
}
