//! Ordered endpoints through the API (SPEC §15): `ordered` and
//! `ordering_key` set, shown, kept when an update leaves them out, removed
//! with `"ordered": false`; refusals name the field; an ordered endpoint
//! shows its head of line, and the deliveries behind it are held.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, assert_error, seed_body};

fn with(fields: &Value) -> Value {
    let mut body = seed_body();
    for (name, value) in fields.as_object().unwrap() {
        body[name] = value.clone();
    }
    body
}

fn event(event_id: &str, video_id: &str) -> String {
    json!({"event": "generated_avatar_video_success", "username": "johndoe",
           "event_id": event_id, "data": {"video_id": video_id}})
    .to_string()
}

pub(super) async fn ordering_is_set_shown_kept_and_removed_and_the_head_of_line_shown(api: Api) {
    let created = api
        .create(with(
            &json!({"ordered": true, "ordering_key": "/data/video_id"}),
        ))
        .await;
    assert_eq!(created["ordered"], true, "{created}");
    assert_eq!(created["ordering_key"], "/data/video_id");
    let id = created["endpoint_id"].as_str().unwrap();
    let path = format!("/v2/endpoint/{id}");
    let plain = api.create(seed_body()).await;
    assert!(plain.get("ordered").is_none(), "{plain}");

    // Nothing pending: no head of line.
    let (_, read) = api.call(Method::GET, &path, None).await;
    assert!(read["data"].get("head_of_line").is_none(), "{read}");

    for (event_id, video) in [("evt_a1", "a"), ("evt_b1", "b"), ("evt_a2", "a")] {
        let (status, answer) = api.ingest(&event(event_id, video)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let (_, read) = api.call(Method::GET, &path, None).await;
    let head = &read["data"]["head_of_line"];
    assert_eq!(head["event_id"], "evt_a1", "{read}");
    assert_eq!(head["ordering_key"], "a");
    assert!(head["next_attempt_at"].is_i64(), "{head}");
    assert!(head.get("held").is_none(), "{head}");

    // Behind a1, a2 is held: no attempt is due; b1 heads its own line.
    let (_, listed) = api
        .call(
            Method::GET,
            &format!("{path}/deliveries?status=pending"),
            None,
        )
        .await;
    let shown: Vec<(Value, Value, bool)> = listed["data"]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event_id"].clone(),
                d["ordering_key"].clone(),
                d["held"] == true && d.get("next_attempt_at").is_none(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (json!("evt_a1"), json!("a"), false),
            (json!("evt_b1"), json!("b"), false),
            (json!("evt_a2"), json!("a"), true),
        ]
    );

    // Left out of a PUT: kept. `ordered: true` alone orders by the events'
    // own keys; `false` ends it.
    let (status, kept) = api.call(Method::PUT, &path, Some(seed_body())).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["data"]["ordering_key"], "/data/video_id");
    let (_, by_event) = api
        .call(Method::PUT, &path, Some(with(&json!({"ordered": true}))))
        .await;
    assert_eq!(by_event["data"]["ordered"], true, "{by_event}");
    assert!(by_event["data"].get("ordering_key").is_none(), "{by_event}");
    let (_, unordered) = api
        .call(Method::PUT, &path, Some(with(&json!({"ordered": false}))))
        .await;
    assert!(unordered["data"].get("ordered").is_none(), "{unordered}");
    let (_, read) = api.call(Method::GET, &path, None).await;
    assert!(read["data"].get("head_of_line").is_none(), "{read}");
}

pub(super) async fn bad_ordering_settings_and_keys_are_40000_and_name_the_field(api: Api) {
    for (fields, message) in [
        (json!({"ordered": "yes"}), "ordered: must be true or false"),
        (
            json!({"ordering_key": "/data/id"}),
            "ordering_key: needs \"ordered\": true",
        ),
        (
            json!({"ordered": true, "ordering_key": "data.id"}),
            "ordering_key: must be a JSON pointer",
        ),
        (
            json!({"ordered": true, "ordering_key": "/a~2"}),
            "ordering_key: a ~ in a JSON pointer",
        ),
    ] {
        let response = api
            .call(Method::POST, "/v2/endpoint", Some(with(&fields)))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, 40000, message);
    }
    // An event's own key is a string of 1-256 characters.
    for key in [json!(7), json!(""), json!("k".repeat(257))] {
        let message = json!({"event": "generated_avatar_video_success", "username": "johndoe",
                             "data": {}, "ordering_key": key});
        let response = api.ingest(&message.to_string()).await;
        assert_error(
            &response,
            StatusCode::BAD_REQUEST,
            40000,
            "ordering_key must be a string of 1-256 characters",
        );
    }
}
