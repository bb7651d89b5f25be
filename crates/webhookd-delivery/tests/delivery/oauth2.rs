//! OAuth2 client credentials (SPEC §14) against a real token endpoint and a
//! receiver that checks the tokens it issued: one token serves attempts
//! until it nears its expiry, a refused token (401) is replaced once within
//! the attempt, and a token endpoint that fails is reason `auth_token`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use webhookd_core::DeliveryOptions;
use webhookd_core::delivery_options::OAuth2;
use webhookd_store::{DeliveryStatus, Store};

use super::tls::{first_reason, with_options};
use super::{accept, dispatch, event, loopback_allowed, settings, wait_for_status};

/// The token endpoint's and the receiver's shared state.
#[derive(Debug, Default)]
struct Authority {
    /// What the next token's `expires_in` says.
    expires_in: u64,
    /// The token endpoint answers 500.
    failing: bool,
    issued: Vec<String>,
    revoked: HashSet<String>,
    /// What the token requests carried: Basic credentials and form.
    requests: Vec<(String, String)>,
    /// Deliveries the receiver refused with 401, and accepted.
    refused: usize,
    accepted: usize,
}

/// `/token` issues tokens to `Basic webhookd:cs-secret`; `/hook` answers
/// 200 to a live token, 401 to anything else.
async fn token_world() -> (String, Arc<Mutex<Authority>>) {
    let state = Arc::new(Mutex::new(Authority {
        expires_in: 3600,
        ..Authority::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = Arc::clone(&shared);
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let path = request.uri().path().to_owned();
                        let authorization = request
                            .headers()
                            .get("authorization")
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let mut state = state.lock().unwrap();
                        let (status, answer) = if path == "/token" {
                            state.requests.push((
                                authorization.clone(),
                                String::from_utf8_lossy(&body).into_owned(),
                            ));
                            // base64("webhookd:cs-secret")
                            if state.failing || authorization != "Basic d2ViaG9va2Q6Y3Mtc2VjcmV0" {
                                (500, String::new())
                            } else {
                                let token = format!("tok-{}", state.issued.len() + 1);
                                state.issued.push(token.clone());
                                let answer = serde_json_text(&token, state.expires_in);
                                (200, answer)
                            }
                        } else {
                            let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
                            if state.issued.iter().any(|issued| issued == token)
                                && !state.revoked.contains(token)
                            {
                                state.accepted += 1;
                                (200, String::new())
                            } else {
                                state.refused += 1;
                                (401, String::new())
                            }
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (base, state)
}

fn serde_json_text(token: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

pub(super) async fn oauth2_tokens_are_cached_refreshed_once_on_401_and_their_failure_is_auth_token(
    store: Arc<dyn Store>,
) {
    let (base, world) = token_world().await;
    let options = DeliveryOptions {
        oauth2: Some(OAuth2 {
            token_url: format!("{base}/token"),
            client_id: "webhookd".into(),
            client_secret: "cs-secret".into(),
            scope: Some("hooks:write".into()),
            audience: None,
        }),
        ..DeliveryOptions::default()
    };
    let target = with_options(&store, &format!("{base}/hook"), &options).await;
    let running = dispatch(&store, settings("1h"), loopback_allowed());

    // Two deliveries, one token.
    accept(&store, &[event("evt_tok_1"), event("evt_tok_2")]).await;
    let delivered = wait_for_status(&store, &target, DeliveryStatus::Delivered, 2).await;
    assert_eq!(delivered.len(), 2);
    {
        let world = world.lock().unwrap();
        assert_eq!(world.issued.len(), 1, "one token for both");
        let (_, form) = &world.requests[0];
        assert!(form.contains("grant_type=client_credentials"), "{form}");
        assert!(form.contains("scope=hooks%3Awrite"), "{form}");
    }

    // Revoked early: the receiver's 401 costs one new token, no attempt.
    world.lock().unwrap().revoked.insert("tok-1".into());
    accept(&store, &[event("evt_tok_3")]).await;
    let delivered = wait_for_status(&store, &target, DeliveryStatus::Delivered, 3).await;
    assert_eq!(delivered.len(), 3);
    let third = delivered
        .iter()
        .find(|delivery| delivery.event_id == "evt_tok_3")
        .unwrap();
    assert_eq!(third.attempts, 1, "refreshed within the attempt");
    {
        let world = world.lock().unwrap();
        assert_eq!((world.issued.len(), world.refused), (2, 1));
    }

    // A token that expires in 31 s is used for 1 s only (30 s before its
    // expiry it is replaced); then the token endpoint fails.
    world.lock().unwrap().expires_in = 31;
    world.lock().unwrap().revoked.insert("tok-2".into());
    accept(&store, &[event("evt_tok_4")]).await;
    assert_eq!(
        wait_for_status(&store, &target, DeliveryStatus::Delivered, 4)
            .await
            .len(),
        4
    );
    world.lock().unwrap().failing = true;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    accept(&store, &[event("evt_tok_5")]).await;
    let reason = first_reason(&store, &target).await;
    running.stop().await;
    assert_eq!(reason, "auth_token");
    let world = world.lock().unwrap();
    assert_eq!(world.issued.len(), 3);
    assert!(world.requests.len() >= 4, "the failing endpoint was asked");
}
