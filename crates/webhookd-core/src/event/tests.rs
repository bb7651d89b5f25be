use super::*;

const NOW: i64 = 1_732_806_631;

/// Parsed and checked against the default catalog, as ingest does.
fn parse(text: &str) -> Result<Event, Rejection> {
    let event = Event::parse(text.as_bytes(), NOW)?;
    crate::catalog::Catalog::joggai().check(&event)?;
    Ok(event)
}

/// Security round 3: data nested 100,000 deep was accepted and
/// delivered, though most receivers cannot parse it.
#[test]
fn nesting_deeper_than_64_levels_is_refused() {
    let message = |levels: usize| {
        let data = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        format!(r#"{{"event":"generated_video_success","username":"u","data":{{"a":{data}}}}}"#)
    };
    // The message is level 1, data level 2, "a"'s arrays the rest.
    parse(&message(62)).unwrap();
    for levels in [63, 1_000, 100_000] {
        let rejection = parse(&message(levels)).unwrap_err();
        assert_eq!(rejection, Rejection::TooDeep, "{levels}");
        assert!(rejection.to_string().contains("64 levels"), "{rejection}");
    }
    // Brackets inside strings are text, not nesting.
    let quoted = format!(r#"{{"a":"{}"}}"#, "[{".repeat(200));
    parse(&format!(
        r#"{{"event":"generated_video_success","username":"u","data":{quoted}}}"#
    ))
    .unwrap();
}

/// Found by fuzzing: a lone surrogate escape in `data` made a body that
/// strict JSON parsers (serde_json among them) refuse to read.
#[test]
fn a_lone_surrogate_in_data_is_refused_and_a_pair_is_kept() {
    let message = |data: &str| {
        format!(r#"{{"event":"generated_video_success","username":"u","data":{data}}}"#)
    };
    for lone in [
        r#"{"a":"\ud800"}"#,
        r#"{"a":"x\uDFFFy"}"#,
        r#"{"\udbff":1}"#,
        r#"{"a":"\ud800\u0041"}"#,
        r#"{"a":"\uda4e|udf4e"}"#,
    ] {
        let rejection = parse(&message(lone)).unwrap_err();
        assert_eq!(rejection.code(), "not_json", "{lone}");
        assert!(
            rejection.to_string().contains("no other half"),
            "{rejection}"
        );
    }
    for fine in [
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\\ud800"}"#,
        r#"{"a":"\u00e9\n"}"#,
    ] {
        let event = parse(&message(fine)).unwrap();
        serde_json::from_str::<serde_json::Value>(&event.body()).unwrap();
    }
}

/// Found by fuzzing: a number beyond a 64-bit float in `data` made a
/// body that strict JSON parsers refuse to read.
#[test]
fn a_number_no_float_holds_is_refused_and_the_rest_kept() {
    let message = |data: &str| {
        format!(r#"{{"event":"generated_video_success","username":"u","data":{data}}}"#)
    };
    let huge = "9".repeat(400);
    for refused in [
        r#"{"n":1e400}"#.to_owned(),
        r#"{"a":[1,{"b":-171e7171717}]}"#.to_owned(),
        format!(r#"{{"n":{huge}}}"#),
    ] {
        let rejection = parse(&message(&refused)).unwrap_err();
        assert_eq!(rejection.code(), "not_json", "{refused}");
        assert!(
            rejection.to_string().contains("64-bit float"),
            "{rejection}"
        );
    }
    for fine in [
        r#"{"n":1.7976931348623157e308}"#,
        r#"{"n":1e-400,"m":-0.5E+3}"#,
        r#"{"s":"1e400","t":"\"1e999"}"#,
        r#"{"n":12345678901234567890}"#,
    ] {
        let event = parse(&message(fine)).unwrap();
        serde_json::from_str::<serde_json::Value>(&event.body()).unwrap();
    }
}

#[test]
fn a_full_message_is_kept_as_sent() {
    let event = parse(
        r#"{"event":"generated_avatar_video_success","username":"johndoe",
            "data":{"video_id":"video_123456","duration":30},
            "event_id":"evt_123456789","timestamp":1732806000}"#,
    )
    .unwrap();
    assert_eq!(event.event_type, EventType::GENERATED_AVATAR_VIDEO_SUCCESS);
    assert_eq!(event.username, "johndoe");
    assert_eq!(event.event_id, "evt_123456789");
    assert_eq!(event.timestamp, 1_732_806_000);
    assert_eq!(event.data, r#"{"video_id":"video_123456","duration":30}"#);
}

#[test]
fn missing_id_and_timestamp_are_assigned() {
    let event = parse(r#"{"event":"generated_video_failed","username":"u","data":{}}"#).unwrap();
    assert!(event.event_id.starts_with("evt_"));
    assert_eq!(event.timestamp, NOW);
    let event = parse(
        r#"{"event":"generated_video_failed","username":"u","data":{},"event_id":null,"timestamp":null}"#,
    )
    .unwrap();
    assert!(event.event_id.starts_with("evt_"));
}

#[test]
fn a_redeliverable_message_without_id_gets_the_same_id_every_time() {
    let message = br#"{"event":"generated_video_failed","username":"u","data":{}}"#;
    let derived = |message_id| {
        Event::parse_with(message, NOW, MissingId::Derived { message_id })
            .unwrap()
            .event_id
    };
    // From the body: stable across parses (a redelivery), unlike Random.
    assert_eq!(derived(None), derived(None));
    assert!(derived(None).starts_with("evt_"));
    assert_ne!(parse_random(message), parse_random(message));
    // A valid message_id is taken as it is; another is hashed into shape.
    assert_eq!(derived(Some("order-42_a")), "order-42_a");
    let odd = derived(Some("order 42/a"));
    assert!(odd.starts_with("evt_") && odd.len() == 36, "{odd}");
    assert_eq!(odd, derived(Some("order 42/a")));
    // A producer's event_id always wins.
    let given = br#"{"event":"generated_video_failed","username":"u","data":{},"event_id":"e1"}"#;
    let event = Event::parse_with(
        given,
        NOW,
        MissingId::Derived {
            message_id: Some("m"),
        },
    );
    assert_eq!(event.unwrap().event_id, "e1");
}

fn parse_random(message: &[u8]) -> String {
    Event::parse(message, NOW).unwrap().event_id
}

#[test]
fn each_kind_of_bad_message_gets_its_own_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "not_json"),
        ("{", "not_json"),
        ("not json", "not_json"),
        ("[1,2]", "not_an_object"),
        ("42", "not_an_object"),
        (r#""text""#, "not_an_object"),
        (r#"{"username":"u","data":{}}"#, "missing_field"),
        (
            r#"{"event":"generated_video_success","data":{}}"#,
            "missing_field",
        ),
        (
            r#"{"event":"generated_video_success","username":"","data":{}}"#,
            "missing_field",
        ),
        (
            r#"{"event":"generated_video_success","username":"u"}"#,
            "missing_field",
        ),
        (r#"{"event":7,"username":"u","data":{}}"#, "wrong_type"),
        (
            r#"{"event":"generated_video_success","username":["u"],"data":{}}"#,
            "wrong_type",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":[1]}"#,
            "wrong_type",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":"x"}"#,
            "wrong_type",
        ),
        (
            r#"{"event":"video_done","username":"u","data":{}}"#,
            "unknown_event_type",
        ),
        (
            r#"{"event":"Not A Name","username":"u","data":{}}"#,
            "unknown_event_type",
        ),
        (
            r#"{"event":"generated_video_success","username":"a b","data":{}}"#,
            "invalid_username",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"event_id":"a/b"}"#,
            "invalid_event_id",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"event_id":""}"#,
            "invalid_event_id",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"event_id":5}"#,
            "wrong_type",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"timestamp":-1}"#,
            "invalid_timestamp",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"timestamp":1.5}"#,
            "invalid_timestamp",
        ),
        (
            r#"{"event":"generated_video_success","username":"u","data":{},"timestamp":1732806631000000}"#,
            "invalid_timestamp",
        ),
    ];
    for (message, code) in cases {
        let rejection = parse(message).expect_err(message);
        assert_eq!(rejection.code(), *code, "{message}: {rejection}");
        assert!(Rejection::CODES.contains(code));
    }
    let too_large = Rejection::TooLarge { bytes: 1 }.code();
    assert!(Rejection::CODES.contains(&too_large));
    assert_eq!(Rejection::CODES.len(), 11, "one code per variant");
}

#[test]
fn rejections_name_the_field() {
    let rejection = parse(r#"{"event":"generated_video_success","data":{}}"#).unwrap_err();
    assert_eq!(rejection.to_string(), "username is required");
    let rejection =
        parse(r#"{"event":"generated_video_success","username":"u","data":3}"#).unwrap_err();
    assert_eq!(rejection.to_string(), "data must be a JSON object");
    let rejection = parse(r#"{"event":"nope","username":"u","data":{}}"#).unwrap_err();
    assert!(
        rejection
            .to_string()
            .contains("\"nope\" is not a known event type")
    );
}

#[test]
fn messages_over_256_kib_are_refused_before_parsing() {
    let padding = "x".repeat(MAX_EVENT_BYTES);
    let message = format!(
        r#"{{"event":"generated_video_success","username":"u","data":{{"p":"{padding}"}}}}"#
    );
    assert_eq!(
        parse(&message).unwrap_err(),
        Rejection::TooLarge {
            bytes: message.len()
        }
    );
}

#[test]
fn invalid_utf8_is_not_json() {
    assert_eq!(
        Event::parse(b"{\"event\":\"\xff\"}", NOW)
            .unwrap_err()
            .code(),
        "not_json"
    );
}

#[test]
fn the_body_has_the_spec_key_order_and_compact_bytes() {
    let event = parse(
        "{ \"timestamp\": 1732806631, \"data\": {\n  \"video_id\": \"video 1\",\n  \"n\": 1.50, \"s\": \"a\\\"b \\u00e9\" },\n \"username\":\"u\", \"event_id\":\"evt_123456789\", \"event\":\"generated_avatar_video_success\" }",
    )
    .unwrap();
    assert_eq!(
        event.body(),
        r#"{"event_id":"evt_123456789","event":"generated_avatar_video_success","timestamp":1732806631,"data":{"video_id":"video 1","n":1.50,"s":"a\"b \u00e9"}}"#
    );
    assert_eq!(event.body(), event.body(), "byte-stable across attempts");
}

#[test]
fn unknown_fields_are_ignored() {
    let event = parse(
        r#"{"event":"generated_image_success","username":"u","data":{"k":[]},"extra":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(event.data, r#"{"k":[]}"#);
}

#[test]
fn compaction_keeps_whitespace_inside_strings() {
    assert_eq!(
        compact_json("{ \"a b\" : [ 1 , \"\\\\\" , \" \\\" x \" ] }"),
        r#"{"a b":[1,"\\"," \" x "]}"#
    );
}
