//! Payload filters through the API (SPEC §15): set, shown, kept when an
//! update leaves them out, removed with `null`, followed by ingest, refused
//! with a 40000 naming path and operator, and previewed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, assert_error, seed_body};

fn with_filter(filter: Value) -> Value {
    let mut body = seed_body();
    body["filter"] = filter;
    body
}

fn event(event_id: &str, data: &Value) -> String {
    json!({"event": "generated_avatar_video_success", "username": "johndoe",
           "event_id": event_id, "data": data})
    .to_string()
}

pub(super) async fn a_filter_is_set_shown_kept_removed_and_ingest_follows_it(api: Api) {
    let filter = json!({"data.amount": {"$gte": 100}, "data.currency": {"$in": ["EUR", "USD"]}});
    let created = api.create(with_filter(filter.clone())).await;
    assert_eq!(created["filter"], filter);
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    let unfiltered = api.create(seed_body()).await;
    assert!(unfiltered.get("filter").is_none(), "{unfiltered}");

    for (event_id, data) in [
        ("evt_small", json!({"amount": 5, "currency": "EUR"})),
        ("evt_big", json!({"amount": 250, "currency": "USD"})),
        ("evt_yen", json!({"amount": 900, "currency": "JPY"})),
    ] {
        let (status, answer) = api.ingest(&event(event_id, &data)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    assert_eq!(api.pending_event_ids(id).await, ["evt_big"]);
    let everything = unfiltered["endpoint_id"].as_str().unwrap();
    assert_eq!(api.pending_event_ids(everything).await.len(), 3);

    // Left out of a PUT: kept, and shown by GET.
    let (status, kept) = api.call(Method::PUT, &path, Some(seed_body())).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["data"]["filter"], filter);
    let (_, read) = api.call(Method::GET, &path, None).await;
    assert_eq!(read["data"]["filter"], filter, "{read}");

    // Replaced, then removed with null: ingest follows each at once.
    let (_, replaced) = api
        .call(
            Method::PUT,
            &path,
            Some(with_filter(json!({"data.currency": "JPY"}))),
        )
        .await;
    assert_eq!(replaced["data"]["filter"], json!({"data.currency": "JPY"}));
    api.ingest(&event("evt_yen2", &json!({"amount": 1, "currency": "JPY"})))
        .await;
    api.ingest(&event(
        "evt_eur2",
        &json!({"amount": 1000, "currency": "EUR"}),
    ))
    .await;
    assert_eq!(api.pending_event_ids(id).await, ["evt_big", "evt_yen2"]);
    let (_, removed) = api
        .call(Method::PUT, &path, Some(with_filter(Value::Null)))
        .await;
    assert!(removed["data"].get("filter").is_none(), "{removed}");
    api.ingest(&event("evt_any", &json!({}))).await;
    assert_eq!(
        api.pending_event_ids(id).await,
        ["evt_big", "evt_yen2", "evt_any"]
    );
}

pub(super) async fn bad_filters_are_40000_and_name_path_and_operator(api: Api) {
    let cases = [
        (json!("amount > 100"), "filter: must be an object"),
        (
            json!({"data.amount": {"$between": [1, 9]}}),
            "data.amount: $between is not an operator",
        ),
        (
            json!({"$or": [{"data.x": {"$regex": "("}}]}),
            "data.x: $regex pattern is not a valid regular expression",
        ),
        (
            json!({"username": "bob"}),
            "username is not a field of the event",
        ),
    ];
    for (filter, words) in cases {
        let response = api
            .call(Method::POST, "/v2/endpoint", Some(with_filter(filter)))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, words);
    }
    let created = api.create(seed_body()).await;
    let path = format!("/v2/endpoint/{}", created["endpoint_id"].as_str().unwrap());
    let response = api
        .call(Method::PUT, &path, Some(with_filter(json!({"$not": []}))))
        .await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        40000,
        "$not needs a filter object",
    );
    let (_, listed) = api.call(Method::GET, "/v2/endpoints", None).await;
    assert_eq!(
        listed["data"]["endpoints"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
}

pub(super) async fn the_filter_preview_says_whether_a_sample_would_be_delivered(api: Api) {
    let preview = |filter: Value, data: Value| json!({"filter": filter, "event": {"event": "generated_avatar_video_success", "data": data}});
    let filter =
        json!({"event": "generated_avatar_video_success", "data.video.seconds": {"$lt": 60}});
    for (data, delivered) in [
        (json!({"video": {"seconds": 12}}), true),
        (json!({"video": {"seconds": 600}}), false),
        (json!({}), false),
    ] {
        let (status, answer) = api
            .call(
                Method::POST,
                "/v2/filter-preview",
                Some(preview(filter.clone(), data)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["data"], json!({"delivered": delivered}));
    }
    let response = api
        .call(
            Method::POST,
            "/v2/filter-preview",
            Some(preview(json!({"data.n": {"$gt": []}}), json!({}))),
        )
        .await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        40000,
        "data.n: $gt needs",
    );
    let response = api
        .call(
            Method::POST,
            "/v2/filter-preview",
            Some(json!({"filter": {}})),
        )
        .await;
    assert_error(
        &response,
        StatusCode::BAD_REQUEST,
        40000,
        "event: must be an object",
    );
    // Signed-in callers only.
    let response = api
        .call_as("wrong", Method::POST, "/v2/filter-preview", Some("{}"))
        .await;
    assert_eq!(response.0, StatusCode::UNAUTHORIZED, "{}", response.1);
}

/// A body wrong in a JoggAI field and in an option is refused for the
/// JoggAI field first: the error its clients already handle.
pub(super) async fn joggai_fields_are_checked_before_options(api: Api) {
    let body = json!({"url": "http://example.com/", "events": ["generated_avatar_video_success"],
                      "retry_schedule": ["forever"]});
    let response = api.call(Method::POST, "/v2/endpoint", Some(body)).await;
    assert_error(&response, StatusCode::BAD_REQUEST, 40000, "url:");
    let created = api.create(seed_body()).await;
    let path = format!("/v2/endpoint/{}", created["endpoint_id"].as_str().unwrap());
    let body = json!({"url": "https://example.com/", "events": ["no_such_type"],
                      "signature": "rsa"});
    let response = api.call(Method::PUT, &path, Some(body)).await;
    assert_error(&response, StatusCode::BAD_REQUEST, 40000, "no_such_type");
}
