//! The signer against vectors computed by the receivers' own snippets
//! (Python `hmac`, `openssl dgst -hmac`, Node `crypto`), not against itself.
//! `tests/vectors/make_signature_vectors.py` made `signatures.json`.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use webhookd_core::{Event, signer};

#[derive(Deserialize)]
struct Vector {
    name: String,
    secret: String,
    body: String,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(include_str!("vectors/signatures.json")).expect("vectors parse")
}

#[test]
fn signatures_match_what_the_documented_snippets_compute() {
    let vectors = vectors();
    assert!(vectors.len() >= 6);
    for vector in &vectors {
        assert_eq!(
            signer::sign(&vector.secret, vector.body.as_bytes()),
            vector.signature,
            "vector {}",
            vector.name
        );
        assert!(signer::verify(
            &vector.secret,
            vector.body.as_bytes(),
            &vector.signature
        ));
    }
}

#[test]
fn the_vectors_cover_non_ascii_and_long_bodies() {
    let vectors = vectors();
    let non_ascii = vectors
        .iter()
        .find(|v| v.name == "non_ascii_body")
        .expect("present");
    assert!(!non_ascii.body.is_ascii());
    let long = vectors
        .iter()
        .find(|v| v.name == "long_body")
        .expect("present");
    assert!(long.body.len() > 64 * 1024);
}

#[test]
fn the_rendered_seed_event_is_the_body_the_snippets_signed() {
    let seed = vectors()
        .into_iter()
        .find(|v| v.name == "seed_example")
        .expect("present");
    let message = r#"{"event":"generated_avatar_video_success","username":"johndoe","event_id":"evt_123456789","timestamp":1732806631,
        "data":{"video_id":"video_123456","status":"completed","video_url":"https://res.jogg.ai/video.mp4","cover_url":"https://res.jogg.ai/cover.jpg","duration":30}}"#;
    let body = Event::parse(message.as_bytes(), 0).expect("valid").body();
    assert_eq!(body, seed.body);
    assert_eq!(signer::sign(&seed.secret, body.as_bytes()), seed.signature);
}
