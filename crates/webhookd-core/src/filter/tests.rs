//! The filter language, operator by operator, and its refusals.

use serde_json::{Value, json};

use super::*;

fn holds(filter: &Value, event_type: &str, data: &Value) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|error| panic!("{filter}: {error}"))
        .matches(event_type, data)
}

fn refused(filter: &Value) -> String {
    let error = Filter::parse(filter).expect_err(&filter.to_string());
    assert_eq!(error.field, "filter");
    error.message
}

#[test]
fn a_bare_value_is_eq_and_the_keys_of_an_object_all_hold() {
    let data =
        json!({"amount": 120, "currency": "EUR", "customer": {"tier": "gold"}, "tags": ["a", "b"]});
    assert!(holds(
        &json!({"event": "invoice.paid"}),
        "invoice.paid",
        &data
    ));
    assert!(!holds(
        &json!({"event": "invoice.paid"}),
        "invoice.voided",
        &data
    ));
    assert!(holds(
        &json!({"data.currency": "EUR", "data.customer.tier": "gold"}),
        "e",
        &data
    ));
    assert!(!holds(
        &json!({"data.currency": "EUR", "data.customer.tier": "silver"}),
        "e",
        &data
    ));
    assert!(
        holds(&json!({"data.tags.1": "b"}), "e", &data),
        "array index"
    );
    assert!(
        holds(&json!({"data.amount": 120.0}), "e", &data),
        "numbers by value"
    );
    assert!(
        holds(&json!({"data.customer": {"tier": "gold"}}), "e", &data),
        "an object without operators is a value"
    );
    assert!(holds(&json!({}), "e", &data), "the empty filter holds");
}

#[test]
fn every_field_operator_does_what_it_says() {
    let data = json!({"amount": 120, "currency": "EUR", "note": null, "id": "ord_829"});
    let cases = [
        (json!({"data.amount": {"$eq": 120}}), true),
        (json!({"data.amount": {"$neq": 120}}), false),
        (json!({"data.missing": {"$neq": 1}}), true),
        (json!({"data.currency": {"$in": ["USD", "EUR"]}}), true),
        (json!({"data.currency": {"$nin": ["USD", "EUR"]}}), false),
        (json!({"data.missing": {"$nin": ["x"]}}), true),
        (json!({"data.missing": {"$in": ["x"]}}), false),
        (json!({"data.amount": {"$gt": 100, "$lte": 120}}), true),
        (json!({"data.amount": {"$gte": 121}}), false),
        (json!({"data.amount": {"$lt": 120}}), false),
        (json!({"data.currency": {"$gt": "AAA"}}), true),
        (json!({"data.currency": {"$gt": 5}}), false),
        (json!({"data.note": {"$exists": true}}), true),
        (json!({"data.missing": {"$exists": true}}), false),
        (json!({"data.missing": {"$exists": false}}), true),
        (json!({"data.id": {"$regex": "^ord_[0-9]+$"}}), true),
        (json!({"data.amount": {"$regex": "1"}}), false),
        (json!({"data.amount": {"$not": {"$gt": 200}}}), true),
        (json!({"data.missing": {"$gt": 1}}), false),
    ];
    for (filter, expected) in cases {
        assert_eq!(holds(&filter, "e", &data), expected, "{filter}");
    }
}

#[test]
fn and_or_not_combine_filters() {
    let filter = json!({
        "$or": [{"event": "invoice.paid"}, {"data.vip": true}],
        "$not": {"data.country": {"$in": ["XX"]}},
        "$and": [{"data.amount": {"$gte": 10}}]
    });
    assert!(holds(
        &filter,
        "invoice.paid",
        &json!({"amount": 10, "country": "FR"})
    ));
    assert!(holds(
        &filter,
        "other",
        &json!({"amount": 10, "country": "FR", "vip": true})
    ));
    assert!(!holds(
        &filter,
        "other",
        &json!({"amount": 10, "country": "FR"})
    ));
    assert!(!holds(
        &filter,
        "invoice.paid",
        &json!({"amount": 10, "country": "XX"})
    ));
    assert!(!holds(
        &filter,
        "invoice.paid",
        &json!({"amount": 9, "country": "FR"})
    ));
}

#[test]
fn a_pattern_that_backtracks_elsewhere_runs_in_linear_time_here() {
    // (a+)+$ on "aaa…ab" takes exponential time in a backtracking engine.
    let filter = json!({"data.s": {"$regex": "^(a+)+$"}});
    let long = format!("{}b", "a".repeat(50_000));
    assert!(!holds(&filter, "e", &json!({ "s": long })));
    assert!(holds(&filter, "e", &json!({ "s": "aaaa" })));
}

#[test]
fn every_refusal_names_the_path_and_the_operator() {
    let cases = [
        (json!("x"), "must be an object"),
        (
            json!({"data.amount": {"$between": [1, 2]}}),
            "data.amount: $between is not an operator",
        ),
        (
            json!({"data.amount": {"$gt": true}}),
            "data.amount: $gt needs a number or a string",
        ),
        (
            json!({"data.currency": {"$in": "EUR"}}),
            "data.currency: $in needs an array",
        ),
        (
            json!({"data.x": {"$exists": "yes"}}),
            "data.x: $exists needs true or false",
        ),
        (
            json!({"data.x": {"$regex": "("}}),
            "data.x: $regex pattern is not a valid regular expression",
        ),
        (
            json!({"data.x": {"$regex": "a".repeat(300)}}),
            "longer than 256",
        ),
        (json!({"$or": []}), "$or needs a non-empty array"),
        (
            json!({"$and": [1]}),
            "$and holds something that is not a filter object",
        ),
        (json!({"$not": []}), "$not needs a filter object"),
        (json!({"$where": "1"}), "$where is not an operator here"),
        (
            json!({"username": "bob"}),
            "username is not a field of the event",
        ),
        (json!({"data..x": 1}), "empty path segment"),
    ];
    for (filter, words) in cases {
        let message = refused(&filter);
        assert!(message.contains(words), "{filter}: {message}");
    }
}

#[test]
fn filters_are_bounded_in_size_depth_and_conditions() {
    let mut deep = json!({"data.x": 1});
    for _ in 0..20 {
        deep = json!({ "$not": deep });
    }
    assert!(refused(&deep).contains("nests deeper than 16"));
    let many: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("data.f{i}"), json!(i))).collect();
    assert!(refused(&Value::Object(many)).contains("more than 256 conditions"));
    let big = json!({ "data.x": {"$in": vec!["y".repeat(100); 200]} });
    assert!(refused(&big).contains("bytes; at most 16384"));
}
