use serde_json::json;

use super::*;

fn event(name: &str, data: &str) -> Event {
    Event::parse(
        format!(r#"{{"event":"{name}","username":"alice","data":{data}}}"#).as_bytes(),
        1_700_000_000,
    )
    .expect("a well-formed message")
}

const INVOICES: &str = r#"
[[event_types]]
name = "invoice.paid"
description = "An invoice was paid in full."
schema = { type = "object", required = ["invoice_id"], properties = { invoice_id = { type = "string" }, amount = { type = "integer", minimum = 0 } } }

[[event_types]]
name = "invoice.voided"
description = "An invoice was voided."
deprecated = true
"#;

#[test]
fn with_no_file_the_catalog_is_the_22_joggai_types_with_descriptions() {
    let catalog = Catalog::joggai();
    assert_eq!(catalog.names(), EventType::JOGGAI.to_vec());
    let (definition, origin) = catalog.get("generated_video_success").unwrap();
    assert_eq!(origin, Origin::Default);
    assert_eq!(
        definition.description,
        "The video generation finished successfully."
    );
    assert_eq!(
        catalog.check(&event("generated_video_failed", r#"{"anything":1}"#)),
        Ok(())
    );
    assert!(matches!(
        catalog.check(&event("invoice.paid", "{}")),
        Err(Rejection::UnknownEventType { name }) if name == "invoice.paid"
    ));
}

#[test]
fn a_toml_file_replaces_the_default_and_its_schemas_check_data() {
    let catalog = Catalog::from_file("/etc/webhookd/events.toml", INVOICES).unwrap();
    let names: Vec<_> = catalog.names().iter().map(ToString::to_string).collect();
    assert_eq!(names, ["invoice.paid", "invoice.voided"]);
    assert!(catalog.get("generated_video_success").is_none());
    assert!(catalog.get("invoice.voided").unwrap().0.deprecated);

    assert_eq!(
        catalog.check(&event(
            "invoice.paid",
            r#"{"invoice_id":"in_1","amount":5}"#
        )),
        Ok(())
    );
    let Err(Rejection::SchemaMismatch {
        event: name,
        path,
        reason,
    }) = catalog.check(&event(
        "invoice.paid",
        r#"{"invoice_id":"in_1","amount":-5}"#,
    ))
    else {
        panic!("a negative amount must be refused");
    };
    assert_eq!(name, "invoice.paid");
    assert_eq!(path, "data/amount");
    assert!(reason.contains("minimum"), "{reason}");
    let refused = catalog
        .check(&event("invoice.paid", r#"{"amount":5}"#))
        .unwrap_err();
    assert_eq!(refused.code(), "schema_mismatch");
    assert!(refused.to_string().contains("invoice_id"), "{refused}");
    // No schema: anything goes.
    assert_eq!(catalog.check(&event("invoice.voided", "{}")), Ok(()));
}

#[test]
fn a_json_file_may_be_a_table_or_a_bare_list() {
    for text in [
        r#"{"event_types":[{"name":"a.b","description":"x"}]}"#,
        r#"[{"name":"a.b","description":"x"}]"#,
    ] {
        let catalog = Catalog::from_file("events.json", text).unwrap();
        assert_eq!(catalog.names(), [EventType::new("a.b").unwrap()]);
    }
}

#[test]
fn a_bad_file_is_refused_naming_the_file_and_what_to_fix() {
    let cases = [
        ("c.json", "{", "c.json: not a catalog"),
        ("c.json", r#"{"types":[]}"#, "expected {\"event_types\""),
        ("c.json", "[]", "lists no event types"),
        (
            "c.json",
            r#"[{"name":"Bad Name"}]"#,
            "event type names are 1-100",
        ),
        (
            "c.json",
            r#"[{"name":"a"},{"name":"a"}]"#,
            "event type \"a\" is listed twice",
        ),
        (
            "c.json",
            r#"[{"name":"a","schema":{"type":"no-such-type"}}]"#,
            "event type \"a\": schema: not a valid JSON Schema",
        ),
        ("c.toml", "event_types = 3", "c.toml: not a catalog"),
    ];
    for (path, text, expected) in cases {
        let error = Catalog::from_file(path, text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn schemas_never_fetch_remote_references() {
    let error = Catalog::from_file(
        "c.json",
        r#"[{"name":"a","schema":{"$ref":"https://example.com/schema.json"}}]"#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("schema"), "{error}");
}

#[test]
fn admin_changes_add_redefine_and_remove_types_over_the_base() {
    let base = Catalog::joggai();
    let changes = vec![
        (
            "invoice.paid".to_owned(),
            Change::Defined {
                description: "Paid.".into(),
                schema: Some(json!({"type": "object", "required": ["id"]})),
                deprecated: false,
            },
        ),
        (
            "generated_video_success".to_owned(),
            Change::Defined {
                description: "Rendered.".into(),
                schema: None,
                deprecated: true,
            },
        ),
        ("generated_video_failed".to_owned(), Change::Removed),
        ("never.existed".to_owned(), Change::Removed),
    ];
    let catalog = base.with_changes(&changes);
    assert_eq!(catalog.names().len(), 22);
    assert_eq!(
        catalog.names().last().map(ToString::to_string).as_deref(),
        Some("invoice.paid")
    );
    let (redefined, origin) = catalog.get("generated_video_success").unwrap();
    assert_eq!(
        (redefined.description.as_str(), origin),
        ("Rendered.", Origin::Admin)
    );
    assert!(redefined.deprecated);
    assert!(catalog.get("generated_video_failed").is_none());
    assert!(catalog.check(&event("invoice.paid", "{}")).is_err());
    assert_eq!(catalog.check(&event("invoice.paid", r#"{"id":1}"#)), Ok(()));
}

#[test]
fn a_change_is_checked_before_it_is_kept() {
    let bad_schema = Change::Defined {
        description: String::new(),
        schema: Some(json!({"minimum": "five"})),
        deprecated: false,
    };
    assert!(matches!(
        check_change("a", bad_schema),
        Err(DefinitionError::Schema(_))
    ));
    assert!(matches!(
        check_change("A", Change::Removed),
        Err(DefinitionError::Name(_))
    ));
    let long = Change::Defined {
        description: "x".repeat(MAX_DESCRIPTION_LEN + 1),
        schema: None,
        deprecated: false,
    };
    assert_eq!(
        check_change("a", long),
        Err(DefinitionError::DescriptionTooLong)
    );
}

#[test]
fn the_shared_catalog_swaps_in_the_changes_and_back() {
    let shared = SharedCatalog::joggai();
    let before = shared.current();
    shared.apply(vec![]);
    assert!(
        Arc::ptr_eq(&before, &shared.current()),
        "no change, no rebuild"
    );
    shared.apply(vec![("x.y".to_owned(), Change::Removed)]);
    assert_eq!(shared.current().names().len(), 22);
    let added = vec![(
        "x.y".to_owned(),
        Change::Defined {
            description: "X".into(),
            schema: None,
            deprecated: false,
        },
    )];
    shared.apply(added);
    assert!(shared.current().contains(&EventType::new("x.y").unwrap()));
    shared.apply(vec![]);
    assert!(!shared.current().contains(&EventType::new("x.y").unwrap()));
}
