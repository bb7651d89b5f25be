//! Event types are data (SPEC §12): a catalog file, the admin API over it,
//! and ingest checking `data` against each type's schema.

use webhookd_core::Catalog;

use super::*;

const INVOICES: &str = r#"{"event_types": [
    {"name": "invoice.paid", "description": "An invoice was paid.",
     "schema": {"type": "object", "required": ["invoice_id"],
                "properties": {"invoice_id": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}}}},
    {"name": "invoice.voided", "description": "An invoice was voided.", "deprecated": true}
]}"#;

fn message(event: &str, data: &Value) -> String {
    json!({"event": event, "username": "johndoe", "data": data}).to_string()
}

pub(crate) async fn a_catalog_file_replaces_the_default_and_its_schemas_check_ingest(api: Api) {
    let catalog = SharedCatalog::new(Catalog::from_file("invoices.json", INVOICES).unwrap());
    let api =
        Api::start_with_catalog(Arc::clone(&api.store), UrlRules::default(), 0, catalog).await;

    let (status, json) = api.call(Method::GET, "/v2/events", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json["data"]["events"],
        json!(["invoice.paid", "invoice.voided"])
    );
    let types = &json["data"]["event_types"];
    assert_eq!(types[0]["description"], "An invoice was paid.");
    assert_eq!(types[0]["schema"]["required"], json!(["invoice_id"]));
    assert_eq!(types[1]["deprecated"], true);
    assert!(types[0].get("deprecated").is_none(), "{types}");

    // Endpoints subscribe to the file's types, no longer to JoggAI's.
    let created = api
        .create(json!({"url": "https://example.com/h", "events": ["invoice.paid"]}))
        .await;
    let refused = api
        .call(
            Method::POST,
            "/v2/endpoint",
            Some(json!({"url": "https://example.com/h", "events": ["generated_video_success"]})),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        40000,
        "\"generated_video_success\" is not a known event type",
    );

    // Ingest: data matching the schema is accepted, the rest refused with
    // the failing path.
    let (status, json) = api
        .ingest(&message(
            "invoice.paid",
            &json!({"invoice_id": "in_1", "amount": 5}),
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    let refused = api
        .ingest(&message(
            "invoice.paid",
            &json!({"invoice_id": "in_2", "amount": -1}),
        ))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        40000,
        "data/amount does not match the schema of event type \"invoice.paid\"",
    );
    let refused = api
        .ingest(&message("invoice.paid", &json!({"amount": 1})))
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, 40000, "invoice_id");
    let refused = api
        .ingest(&message("generated_video_success", &json!({})))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        40000,
        "not a known event type",
    );
    let endpoint_id = created["endpoint_id"].as_str().unwrap();
    assert_eq!(
        api.pending_event_ids(endpoint_id).await.len(),
        1,
        "only the valid event fanned out"
    );
}

pub(crate) async fn the_admin_api_adds_event_types_over_the_default_with_schemas(api: Api) {
    let (status, json) = api
        .admin(
            Method::PUT,
            "/internal/event-types/invoice.paid",
            Some(json!({
                "description": "An invoice was paid.",
                "schema": {"type": "object", "required": ["invoice_id"]}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["name"], "invoice.paid");
    assert_eq!(json["data"]["origin"], "admin");

    // Added over the default: the 22 stay, the new one comes last.
    let (_, json) = api.call(Method::GET, "/v2/events", None).await;
    let names = json["data"]["events"].as_array().unwrap();
    assert_eq!(names.len(), 23, "{json}");
    assert_eq!(names[22], "invoice.paid");
    api.create(json!({"url": "https://example.com/h", "events": ["invoice.paid"]}))
        .await;
    let refused = api
        .ingest(&message("invoice.paid", &json!({"id": 1})))
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, 40000, "invoice_id");
    let (status, _) = api
        .ingest(&message("invoice.paid", &json!({"invoice_id": "in_1"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

pub(crate) async fn the_admin_api_redefines_and_removes_types_for_every_process(api: Api) {
    let created = api
        .create(json!({"url": "https://example.com/h", "events": ["generated_image_success", "generated_video_failed"]}))
        .await;
    // Redefining a default type, and removing another.
    let (status, json) = api
        .admin(
            Method::PUT,
            "/internal/event-types/generated_video_success",
            Some(json!({"description": "Old name; use video.rendered.", "deprecated": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = api
        .admin(
            Method::DELETE,
            "/internal/event-types/generated_video_failed",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["data"]["removed"], true);
    let again = api
        .admin(
            Method::DELETE,
            "/internal/event-types/generated_video_failed",
            None,
        )
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, 10104, "not in the catalog");
    let refused = api
        .ingest(&message("generated_video_failed", &json!({})))
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        40000,
        "not a known event type",
    );

    let (status, json) = api.admin(Method::GET, "/internal/event-types", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let listed = json["data"]["event_types"].as_array().unwrap();
    assert_eq!(listed.len(), 21, "22 - 1 removed");
    let origin_of = |name: &str| {
        listed
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["origin"].clone())
    };
    assert_eq!(origin_of("generated_video_success"), Some(json!("admin")));
    assert_eq!(origin_of("generated_image_success"), Some(json!("default")));
    assert_eq!(origin_of("generated_video_failed"), None);

    // Another process on the same store reads the same catalog.
    let other = SharedCatalog::joggai();
    webhookd_store::refresh_catalog(api.store.as_ref(), &other)
        .await
        .unwrap();
    let other = other.current();
    assert!(other.get("generated_video_failed").is_none());
    assert!(other.get("generated_video_success").unwrap().0.deprecated);

    // The endpoint keeps the removed name; it just gets no such events.
    let endpoint_id = created["endpoint_id"].as_str().unwrap();
    let (_, json) = api
        .call(Method::GET, &format!("/v2/endpoint/{endpoint_id}"), None)
        .await;
    assert_eq!(
        json["data"]["events"],
        json!(["generated_image_success", "generated_video_failed"])
    );

    // PUT brings a removed type back.
    let (status, _) = api
        .admin(
            Method::PUT,
            "/internal/event-types/generated_video_failed",
            Some(json!({"description": "Back."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .ingest(&message("generated_video_failed", &json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

pub(crate) async fn bad_event_type_definitions_are_40000_and_name_what_to_fix(api: Api) {
    let cases = [
        ("invoice.paid", json!({}), "description: is required"),
        (
            "invoice.paid",
            json!({"description": 5}),
            "description: must be a string",
        ),
        (
            "invoice.paid",
            json!({"description": "x", "schema": {"type": "nonsense"}}),
            "schema: not a valid JSON Schema",
        ),
        (
            "invoice.paid",
            json!({"description": "x", "schema": "string"}),
            "schema: must be a JSON Schema",
        ),
        (
            "invoice.paid",
            json!({"description": "x", "deprecated": "yes"}),
            "deprecated: must be true or false",
        ),
        (
            "Invoice%20Paid",
            json!({"description": "x"}),
            "name: event type names are 1-100",
        ),
    ];
    for (name, body, expected) in cases {
        let response = api
            .admin(
                Method::PUT,
                &format!("/internal/event-types/{name}"),
                Some(body),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, expected);
    }
    let (_, json) = api.call(Method::GET, "/v2/events", None).await;
    assert_eq!(
        json["data"]["events"].as_array().unwrap().len(),
        22,
        "nothing was kept"
    );
}

/// SPEC §13: listings take `order`, `event`, `event_id`, `since`, `until`,
/// and the first page carries the endpoint's counts by status.
pub(crate) async fn listings_take_order_and_filters_and_the_first_page_counts(api: Api) {
    let created = api.create(seed_body()).await;
    let id = created["endpoint_id"].as_str().unwrap();
    for (n, event) in [
        "generated_avatar_video_success",
        "generated_avatar_video_failed",
        "generated_avatar_video_success",
    ]
    .iter()
    .enumerate()
    {
        let (status, json) = api
            .ingest(
                &json!({"event": event, "username": "johndoe", "event_id": format!("evt_{n}"), "data": {}})
                    .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    }
    let client = &api;
    let listing = |query: &str| {
        let path = format!("/v2/endpoint/{id}/deliveries?status=pending&{query}");
        async move {
            let (status, json) = client.call(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{json}");
            json["data"].clone()
        }
    };
    let event_ids = |data: &Value| -> Vec<String> {
        data["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let newest = listing("order=desc&limit=2").await;
    assert_eq!(event_ids(&newest), ["evt_2", "evt_1"]);
    assert_eq!(
        newest["counts"],
        json!({"pending": 3, "delivered": 0, "failed": 0})
    );
    let after = newest["next_after"].as_str().unwrap();
    let rest = listing(&format!("order=desc&limit=2&after={after}")).await;
    assert_eq!(event_ids(&rest), ["evt_0"]);
    assert!(
        rest.get("counts").is_none(),
        "counts come with the first page only"
    );

    let failed = listing("event=generated_avatar_video_failed").await;
    assert_eq!(event_ids(&failed), ["evt_1"]);
    assert_eq!(event_ids(&listing("event_id=evt_2").await), ["evt_2"]);
    let now = webhookd_core::time::unix_seconds();
    assert_eq!(
        event_ids(&listing(&format!("since={}&until={}", now - 60, now + 60)).await),
        ["evt_0", "evt_1", "evt_2"]
    );
    assert!(event_ids(&listing(&format!("since={}", now + 3600)).await).is_empty());

    for (query, says) in [
        ("order=sideways", "order: must be asc or desc"),
        ("event=Not%20A%20Type", "event: event type names"),
        ("event_id=a%2Fb", "event_id: must be 1-128"),
        ("since=yesterday", "since: must be unix seconds"),
        ("until=-5", "until: must be unix seconds"),
        ("since=20&until=10", "until: must not be before since"),
    ] {
        let answer = api
            .call(
                Method::GET,
                &format!("/v2/endpoint/{id}/deliveries?{query}"),
                None,
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, 40000, says);
    }
}
