//! An endpoint's own delivery options (SPEC §14) on its attempts: custom
//! headers arrive, its retry schedule replaces the process's, and
//! `"egress_proxy": false` goes straight to the receiver.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use webhookd_core::DeliveryOptions;
use webhookd_core::delivery_options::CustomHeader;
use webhookd_delivery::{DeliveryClient, Dispatcher};
use webhookd_store::{DeliveryStatus, Store};
use webhookd_testkit::receiver::{Answer, Receiver};

use super::{Running, accept, endpoint, event, loopback_allowed, settings, wait_for_status};

pub(super) async fn an_endpoints_own_headers_schedule_and_egress_go_with_its_attempts(
    store: Arc<dyn Store>,
) {
    let receiver = Receiver::start(Answer::Status(500)).await;
    let mut target = endpoint(&store, &receiver.url).await;
    let header = |name: &str, value: &str, secret: bool| CustomHeader {
        name: name.into(),
        value: value.into(),
        secret,
    };
    let options = DeliveryOptions {
        headers: vec![
            header("X-Tenant", "acme", false),
            header("X-Api-Key", "k-77", true),
        ],
        retry_schedule: Some(vec![1, 1]),
        egress_proxy: false,
        ..DeliveryOptions::default()
    };
    let spec = webhookd_core::EndpointSpec {
        ordering: None,
        filter: None,
        url: target.url.clone(),
        status: None,
        events: target.events.clone(),
        rate_limit: None,
        options: Some(options.to_stored()),
    };
    target = store
        .update_endpoint("johndoe", &target.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap();
    // The process's schedule would wait an hour after the first failure,
    // and its egress proxy is dead: the endpoint's own options decide.
    let dead_proxy = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let settings = settings("1h");
    let client = DeliveryClient::with_egress(
        loopback_allowed(),
        settings.timeout,
        &webhookd_delivery::Egress {
            bind: None,
            proxy: Some(webhookd_core::config::EgressProxy {
                address: dead_proxy,
                authorization: None,
            }),
        },
    )
    .unwrap();
    let dispatcher = Dispatcher::new(Arc::clone(&store), client, settings);
    let shutdown = CancellationToken::new();
    let running = Running {
        shutdown: shutdown.clone(),
        task: Some(tokio::spawn(dispatcher.run(shutdown))),
    };
    accept(&store, &[event("evt_own_options")]).await;
    let received = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(received.len(), 3, "three attempts: the endpoint's schedule");
    for request in &received {
        assert_eq!(request.headers["x-tenant"], "acme");
        assert_eq!(request.headers["x-api-key"], "k-77");
    }
    let gaps: Vec<Duration> = received
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .collect();
    assert!(
        gaps.iter().all(|gap| *gap >= Duration::from_millis(700)),
        "1 s ± 20% apart: {gaps:?}"
    );
    let dead = wait_for_status(&store, &target, DeliveryStatus::Failed, 1).await;
    assert_eq!(dead.len(), 1, "dead after the schedule's last delay");
    assert_eq!(dead[0].attempts, 3);
    running.stop().await;
}
