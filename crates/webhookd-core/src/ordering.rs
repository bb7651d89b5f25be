//! Ordered endpoints (SPEC §15): which line a delivery waits in.
//!
//! An ordered endpoint sends its deliveries one line at a time: the
//! deliveries of one *line* go in the order their events were accepted,
//! each only once the one before it is delivered or dead. The line is the
//! value the endpoint's `ordering_key` (a JSON pointer into the body)
//! finds, or, when the endpoint names none, the event's own top-level
//! `ordering_key`; without either, every delivery of the endpoint is in
//! one line (one at a time).
//!
//! The stores keep the lines (docs/delivery.md, "Ordered endpoints"); this
//! module decides what an endpoint's setting may be and, for SQLite, which
//! line a body falls in. Redis decides the same in `accept_events.lua`
//! (its own stringification of numbers, applied consistently there).

use serde_json::Value;

use crate::endpoint::FieldError;

/// Longest top-level `ordering_key` an event may carry, and longest
/// `ordering_key` pointer an endpoint may name.
pub const MAX_ORDERING_KEY_LEN: usize = 256;

/// Longest line name kept as it is; a longer value is kept as a digest.
/// Two values sharing a digest share a line: more order, never less.
pub const MAX_LINE_LEN: usize = 64;

/// An endpoint's ordering as stored: `""` orders by the event's own
/// `ordering_key` (or not at all), `"/…"` by the value at that pointer.
/// `None`: the endpoint is not ordered.
pub type StoredOrdering = Option<String>;

/// Reads an endpoint's `ordered` and `ordering_key` fields from a request
/// body: `None` leaves the setting as it is, `Some(None)` makes the
/// endpoint unordered, `Some(Some(pointer))` ordered (`""`: by the event's
/// key). `ordering_key` comes with `"ordered": true` or not at all.
pub fn from_fields(
    ordered: Option<&Value>,
    ordering_key: Option<Value>,
) -> Result<Option<StoredOrdering>, FieldError> {
    let ordered = match ordered {
        None => None,
        Some(Value::Bool(ordered)) => Some(*ordered),
        Some(_) => return Err(FieldError::new("ordered", "must be true or false")),
    };
    let pointer = match ordering_key {
        None | Some(Value::Null) => None,
        Some(Value::String(pointer)) => Some(check_pointer(pointer)?),
        Some(_) => {
            return Err(FieldError::new(
                "ordering_key",
                "must be a JSON pointer into the body, like \"/data/video_id\", or null",
            ));
        }
    };
    match (ordered, pointer) {
        (Some(true), pointer) => Ok(Some(Some(pointer.unwrap_or_default()))),
        (None | Some(false), Some(_)) => Err(FieldError::new(
            "ordering_key",
            "needs \"ordered\": true in the same request",
        )),
        (Some(false), None) => Ok(Some(None)),
        (None, None) => Ok(None),
    }
}

fn check_pointer(pointer: String) -> Result<String, FieldError> {
    if !pointer.starts_with('/') || pointer.len() > MAX_ORDERING_KEY_LEN {
        return Err(FieldError::new(
            "ordering_key",
            format!(
                "must be a JSON pointer of at most {MAX_ORDERING_KEY_LEN} characters starting \
                 with /, like \"/data/video_id\""
            ),
        ));
    }
    // RFC 6901: `~` only as `~0` or `~1`.
    let mut chars = pointer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(FieldError::new(
                "ordering_key",
                "a ~ in a JSON pointer must be written ~0 (and a / inside a name ~1)",
            ));
        }
    }
    Ok(pointer)
}

/// The line a delivery of `body` (the rendered body, SPEC §3) to an
/// endpoint ordered by `ordering` waits in, for an event that carried
/// `event_key`. A pointer that finds a string takes it; a number or a
/// boolean its JSON text; nothing, `null`, an object or an array: the
/// endpoint's unkeyed line `""`.
pub fn line_of(ordering: &str, body: &str, event_key: Option<&str>) -> String {
    let line = if ordering.is_empty() {
        event_key.unwrap_or_default().to_owned()
    } else {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|body| match body.pointer(ordering) {
                Some(Value::String(text)) => Some(text.clone()),
                Some(Value::Number(number)) => Some(number.to_string()),
                Some(Value::Bool(flag)) => Some(flag.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    };
    if line.len() <= MAX_LINE_LEN {
        line
    } else {
        use sha2::Digest;
        format!(
            "#{}",
            hex::encode(&sha2::Sha256::digest(line.as_bytes())[..20])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordered_and_its_key_are_read_together() {
        assert_eq!(from_fields(None, None).unwrap(), None);
        assert_eq!(
            from_fields(Some(&json!(true)), None).unwrap(),
            Some(Some(String::new()))
        );
        assert_eq!(
            from_fields(Some(&json!(true)), Some(json!("/data/video_id"))).unwrap(),
            Some(Some("/data/video_id".to_owned()))
        );
        assert_eq!(from_fields(Some(&json!(false)), None).unwrap(), Some(None));
        assert_eq!(
            from_fields(Some(&json!(false)), Some(Value::Null)).unwrap(),
            Some(None)
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |ordered: Option<Value>, key| from_fields(ordered.as_ref(), key).unwrap_err();
        assert_eq!(field(Some(json!("yes")), None).field, "ordered");
        let alone = field(None, Some(json!("/data/id")));
        assert_eq!(alone.field, "ordering_key");
        assert!(
            alone.message.contains("\"ordered\": true"),
            "{}",
            alone.message
        );
        for bad in [
            json!("data/id"),
            json!(""),
            json!(7),
            json!("/a~2b"),
            json!(format!("/{}", "x".repeat(300))),
        ] {
            assert_eq!(
                field(Some(json!(true)), Some(bad.clone())).field,
                "ordering_key",
                "{bad}"
            );
        }
    }

    #[test]
    fn lines_come_from_the_pointer_or_the_events_key() {
        let body = r#"{"event_id":"e","event":"t","timestamp":1,"data":{"video_id":"v7","n":12,"ok":true,"a/b":"x","list":[1],"none":null}}"#;
        assert_eq!(line_of("/data/video_id", body, Some("ignored")), "v7");
        assert_eq!(line_of("/data/n", body, None), "12");
        assert_eq!(line_of("/data/ok", body, None), "true");
        assert_eq!(line_of("/data/a~1b", body, None), "x");
        for unkeyed in ["/data/missing", "/data/list", "/data/none", "/data"] {
            assert_eq!(line_of(unkeyed, body, Some("k")), "", "{unkeyed}");
        }
        assert_eq!(line_of("", body, Some("k1")), "k1");
        assert_eq!(line_of("", body, None), "");
    }

    #[test]
    fn long_values_share_a_line_by_digest() {
        let long = "v".repeat(200);
        let line = line_of("", "{}", Some(&long));
        assert!(line.starts_with('#') && line.len() == 41, "{line}");
        assert_eq!(line, line_of("", "{}", Some(&long)));
        assert_ne!(line, line_of("", "{}", Some(&"w".repeat(200))));
    }
}
