//! The platform side of SPEC §9 through real HTTP: the admin API, portal
//! links and how far they reach, and the page's security headers.

use super::*;

impl Api {
    /// A request with `Authorization: Bearer <token>` (none: no header).
    async fn bearer(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    pub(crate) async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.bearer(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// A portal link's token for `username`, valid `ttl_seconds`.
    async fn portal_link(&self, username: &str, ttl_seconds: i64) -> String {
        let (status, json) = self
            .admin(
                Method::POST,
                "/internal/portal-links",
                Some(json!({"username": username, "ttl_seconds": ttl_seconds})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let url = json["data"]["url"].as_str().unwrap();
        let expires_at = json["data"]["expires_at"].as_i64().unwrap();
        let now = webhookd_core::time::unix_seconds();
        assert!((now + ttl_seconds - 2..=now + ttl_seconds).contains(&expires_at));
        url.strip_prefix("/portal#link=")
            .unwrap_or_else(|| panic!("a portal URL with the token in its fragment: {url}"))
            .to_owned()
    }

    async fn whoami(&self, credential: &str) -> (StatusCode, Value) {
        self.call_as(credential, Method::GET, "/v2/me", None).await
    }
}

const ADMIN_ROUTES: [(Method, &str); 8] = [
    (Method::POST, "/internal/users"),
    (Method::DELETE, "/internal/users/johndoe/keys"),
    (Method::POST, "/internal/portal-links"),
    (Method::GET, "/internal/users/johndoe/quotas"),
    (Method::PUT, "/internal/users/johndoe/quotas"),
    (Method::GET, "/internal/event-types"),
    (Method::PUT, "/internal/event-types/invoice.paid"),
    (
        Method::DELETE,
        "/internal/event-types/generated_video_success",
    ),
];

pub(crate) async fn admin_routes_take_the_admin_token_and_nothing_else(api: Api) {
    let link = api.portal_link("johndoe", 900).await;
    let body = json!({"username": "johndoe"});
    for (method, path) in ADMIN_ROUTES {
        for token in [
            None,
            Some("adm_wrong_token_0123456789"),
            Some(INGEST_TOKEN),
            Some(api.key.as_str()),
            Some(link.as_str()),
        ] {
            let answer = api
                .bearer(token, method.clone(), path, Some(body.clone()))
                .await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "admin token");
        }
        // The key and the link are not admin credentials in x-api-key either.
        for credential in [&api.key, &link] {
            let answer = api
                .call_as(credential, method.clone(), path, Some(&body.to_string()))
                .await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "admin token");
        }
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let response = api
        .client
        .post(format!("{}/internal/users", api.base))
        .header("authorization", format!("bEaReR {ADMIN_TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

pub(crate) async fn admin_adds_users_and_keys_and_revokes_them(api: Api) {
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (status, json) = api
            .admin(
                Method::POST,
                "/internal/users",
                Some(json!({"username": "acme"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["data"]["username"], "acme");
        keys.push(json["data"]["api_key"].as_str().unwrap().to_owned());
    }
    assert_ne!(keys[0], keys[1], "each call adds a key");
    let link = api.portal_link("acme", 900).await;
    for credential in keys.iter().chain([&link]) {
        let (status, json) = api.whoami(credential).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["data"], json!({"username": "acme"}));
    }

    let (status, json) = api
        .admin(Method::DELETE, "/internal/users/acme/keys", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"], json!({"revoked": 2}));
    for credential in keys.iter().chain([&link]) {
        let answer = api.whoami(credential).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "x-api-key");
    }
    // Revoking again is not an error; johndoe's key is untouched.
    let (_, json) = api
        .admin(Method::DELETE, "/internal/users/acme/keys", None)
        .await;
    assert_eq!(json["data"], json!({"revoked": 0}));
    assert_eq!(api.whoami(&api.key).await.1["data"]["username"], "johndoe");

    for (body, field) in [
        (json!({}), "username: is required"),
        (json!({"username": ""}), "username: use 1-128"),
        (json!({"username": "a b"}), "username: use 1-128"),
        (json!({"username": 7}), "username: use 1-128"),
        (json!([]), "JSON object"),
    ] {
        let answer = api.admin(Method::POST, "/internal/users", Some(body)).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, 40000, field);
    }
    let answer = api
        .admin(Method::DELETE, "/internal/users/a%20b/keys", None)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, 40000, "username");
}

pub(crate) async fn a_portal_link_reaches_its_users_routes_only(api: Api) {
    let mine = api.create(seed_body()).await;
    let (_, json) = api
        .admin(
            Method::POST,
            "/internal/users",
            Some(json!({"username": "other"})),
        )
        .await;
    let other_key = json["data"]["api_key"].as_str().unwrap().to_owned();
    let (_, json) = api
        .call_as(
            &other_key,
            Method::POST,
            "/v2/endpoint",
            Some(&seed_body().to_string()),
        )
        .await;
    let theirs = json["data"]["endpoint_id"].as_str().unwrap().to_owned();

    let link = api.portal_link("johndoe", 900).await;
    assert!(link.starts_with("wpl_"));
    let (status, json) = api.call_as(&link, Method::GET, "/v2/endpoints", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json["data"]["endpoints"][0]["endpoint_id"],
        mine["endpoint_id"]
    );
    let body = json!({"url": "https://example.com/moved", "events": ["generated_video_success"]});
    let (status, _) = api
        .call_as(
            &link,
            Method::PUT,
            &format!("/v2/endpoint/{}", mine["endpoint_id"].as_str().unwrap()),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a link manages its user's endpoints"
    );

    // Another user's endpoint does not exist for this link.
    for method in [Method::PUT, Method::DELETE] {
        let answer = api
            .call_as(
                &link,
                method,
                &format!("/v2/endpoint/{theirs}"),
                Some(&body.to_string()),
            )
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, 10104, "not found");
    }
    // Neither ingest nor the admin API take it.
    let answer = api
        .ingest_as(
            Some(&link),
            &json!({"event": "generated_video_success", "username": "johndoe", "data": {}})
                .to_string(),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "ingest token");

    // A link is only for a user that exists; its lifetime is bounded.
    let answer = api
        .admin(
            Method::POST,
            "/internal/portal-links",
            Some(json!({"username": "nobody"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, 10104, "nobody");
    for ttl in [json!(0), json!(86_401), json!(1.5), json!("900")] {
        let answer = api
            .admin(
                Method::POST,
                "/internal/portal-links",
                Some(json!({"username": "johndoe", "ttl_seconds": ttl})),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, 40000, "ttl_seconds");
    }
}

pub(crate) async fn a_portal_link_expires_on_time(api: Api) {
    let (_, json) = api
        .admin(
            Method::POST,
            "/internal/portal-links",
            Some(json!({"username": "johndoe"})),
        )
        .await;
    let expires_at = json["data"]["expires_at"].as_i64().unwrap();
    let default_ttl = expires_at - webhookd_core::time::unix_seconds();
    assert!((899..=900).contains(&default_ttl), "default 900 s: {json}");

    let short = api.portal_link("johndoe", 1).await;
    assert_eq!(api.whoami(&short).await.0, StatusCode::OK);
    // Expiry is to the second: past the next second boundary it is gone.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let answer = api.whoami(&short).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "expired");
    // A made-up link is refused the same way.
    let answer = api.whoami("wpl_made_up_0123456789").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, 10105, "expired");
    // Issuing links forgets the expired ones; the live ones keep working.
    let live = api.portal_link("johndoe", 900).await;
    assert_eq!(api.whoami(&live).await.0, StatusCode::OK);
    assert_eq!(api.whoami(&short).await.0, StatusCode::UNAUTHORIZED);
}

pub(crate) async fn the_portal_is_served_with_its_security_headers(api: Api) {
    let response = api
        .client
        .get(format!("{}/portal", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(
        policy.starts_with("default-src 'self'; script-src 'self';"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(
        policy.ends_with("frame-ancestors 'self' https://dashboard.example.com"),
        "{policy}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let page = response.text().await.unwrap();
    assert!(page.contains("/portal/assets/app.js"));

    for (asset, media_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = api
            .client
            .get(format!("{}/portal/assets/{asset}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        assert_eq!(response.headers()["content-type"], media_type);
        assert!(response.headers().contains_key("content-security-policy"));
    }
    let response = api
        .client
        .get(format!("{}/portal/assets/..%2Fsrc%2Flib.rs", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["code"], 10104);
}

pub(crate) async fn answers_that_carry_secrets_are_neither_cached_nor_sniffed(api: Api) {
    let created = api.create(seed_body()).await;
    let id = created["endpoint_id"].as_str().unwrap();
    let key_call = |method: Method, path: String, body: Option<&str>| {
        let mut request = api
            .client
            .request(method, format!("{}{path}", api.base))
            .header("x-api-key", &api.key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        request
    };
    let responses = [
        key_call(
            Method::POST,
            "/v2/endpoint".into(),
            Some(&seed_body().to_string()),
        ),
        key_call(Method::GET, "/v2/endpoints".into(), None),
        key_call(
            Method::POST,
            format!("/v2/endpoint/{id}/rotate-secret"),
            None,
        ),
        key_call(Method::GET, "/v2/me".into(), None),
        api.client
            .post(format!("{}/internal/users", api.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"username": "newcomer"})),
        api.client
            .post(format!("{}/internal/portal-links", api.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"username": "johndoe"})),
    ];
    for request in responses {
        let response = request.send().await.unwrap();
        let url = response.url().clone();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(headers["cache-control"], "no-store", "{url}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
    }
}

/// Security round 3: a link signed in as often as it was opened (an evil
/// page could replay one), and `#link=` took an API key too. A link now
/// signs in once: it is exchanged for a session token, and spent.
pub(crate) async fn a_portal_link_signs_in_once(api: Api) {
    let link = api.portal_link("johndoe", 900).await;
    let redeem = |credential: String| {
        let api = &api;
        async move {
            api.call_as(&credential, Method::POST, "/v2/portal-session", None)
                .await
        }
    };
    let (status, json) = redeem(link.clone()).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["username"], "johndoe");
    let session = json["data"]["session"].as_str().unwrap().to_owned();
    assert!(session.starts_with("wps_"), "{json}");
    let expires_at = json["data"]["expires_at"].as_i64().unwrap();
    assert!(
        expires_at > webhookd_core::time::unix_seconds() + 800,
        "the link's own expiry"
    );
    let (status, json) = api.call_as(&session, Method::GET, "/v2/me", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["username"], "johndoe");

    let again = redeem(link.clone()).await;
    assert_error(&again, StatusCode::UNAUTHORIZED, 10105, "already used");
    let spent = api.call_as(&link, Method::GET, "/v2/me", None).await;
    assert_error(&spent, StatusCode::UNAUTHORIZED, 10105, "portal link");
    let key = redeem(api.key.clone()).await;
    assert_error(&key, StatusCode::UNAUTHORIZED, 10105, "never an API key");
    let session_again = redeem(session.clone()).await;
    assert_error(
        &session_again,
        StatusCode::UNAUTHORIZED,
        10105,
        "only a portal link",
    );

    // Of two tabs opening one link at once, one signs in.
    let link = api.portal_link("johndoe", 900).await;
    let (first, second) = tokio::join!(redeem(link.clone()), redeem(link));
    let signed_in = [first.0, second.0]
        .iter()
        .filter(|status| **status == StatusCode::OK)
        .count();
    assert_eq!(signed_in, 1);

    // Revoking the user's keys ends its portal sessions too.
    let (status, _) = api
        .admin(Method::DELETE, "/internal/users/johndoe/keys", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked = api.call_as(&session, Method::GET, "/v2/me", None).await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, 10105, "portal link");
}

/// Security round 3: 2,199 test sends in 20 s grew Redis by 11.7 MB, and
/// nothing stopped a tenant. Test sends are now counted per endpoint per
/// minute (default 10, settable per user), refused with 10429 past it.
pub(crate) async fn test_sends_past_their_quota_answer_10429(api: Api) {
    let endpoint = api.create(seed_body()).await;
    let id = endpoint["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}/test");
    let quotas = "/internal/users/johndoe/quotas";
    let (status, json) = api
        .admin(
            Method::PUT,
            quotas,
            Some(json!({"test_sends_per_minute": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["test_sends_per_minute"], 3);
    assert_eq!(json["data"]["max_endpoints"], 20, "the default stays");
    let (_, read) = api.admin(Method::GET, quotas, None).await;
    assert_eq!(read["data"], json["data"]);
    for _ in 0..3 {
        let (status, json) = api.call(Method::POST, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    let refused = api.call(Method::POST, &path, None).await;
    assert_error(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        10429,
        "3 test sends per endpoint per minute",
    );
    // Another endpoint has its own count.
    let other = api.create(seed_body()).await;
    let other_path = format!(
        "/v2/endpoint/{}/test",
        other["endpoint_id"].as_str().unwrap()
    );
    assert_eq!(
        api.call(Method::POST, &other_path, None).await.0,
        StatusCode::OK
    );

    // The endpoint quota, per user too.
    let (status, _) = api
        .admin(Method::PUT, quotas, Some(json!({"max_endpoints": 2})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let third = api
        .call(Method::POST, "/v2/endpoint", Some(seed_body()))
        .await;
    assert_error(
        &third,
        StatusCode::BAD_REQUEST,
        40000,
        "at most 2 endpoints",
    );

    // null: back to the defaults.
    let (_, json) = api
        .admin(
            Method::PUT,
            quotas,
            Some(json!({"max_endpoints": null, "test_sends_per_minute": null})),
        )
        .await;
    assert_eq!(json["data"]["max_endpoints"], 20);
    assert_eq!(json["data"]["test_sends_per_minute"], 10);

    for (body, part) in [
        (
            json!({"test_sends_per_minute": 0}),
            "test_sends_per_minute: must be",
        ),
        (json!({"max_endpoints": 257}), "max_endpoints: must be"),
        (json!({"tests": 1}), "tests: is not a quota"),
    ] {
        let refused = api.admin(Method::PUT, quotas, Some(body)).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, 40000, part);
    }
    let nobody = api
        .admin(Method::GET, "/internal/users/nobody/quotas", None)
        .await;
    assert_error(&nobody, StatusCode::NOT_FOUND, 10104, "not found");
}
