//! Egress (SPEC §14): the source address deliveries leave from, and the
//! HTTP CONNECT proxy they go through.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use webhookd_core::EndpointStatus;
use webhookd_delivery::{DeliveryClient, Dispatcher};
use webhookd_store::{DeliveryStatus, Store};
use webhookd_testkit::receiver::{Answer, Receiver, signature_is_valid};

use super::{Running, accept, endpoint, event, loopback_allowed, settings, wait_for_status};

/// `WEBHOOKD_EGRESS_BIND` (SPEC §14): deliveries leave from the chosen
/// source address — what the receiver sees as its peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_leave_from_the_egress_bind_address() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store: Arc<dyn Store> = Arc::new(
        webhookd_store::SqliteStore::open(path.to_str().unwrap())
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (peers, mut peer) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, from)) = listener.accept().await {
            let _ = peers.send(from.ip());
            tokio::spawn(async move {
                let mut buffer = vec![0_u8; 16 * 1024];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"}") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let target = endpoint(&store, &url).await;
    let source: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let settings = settings("1s");
    let client = DeliveryClient::with_egress(
        loopback_allowed(),
        settings.timeout,
        &webhookd_delivery::Egress {
            bind: Some(source),
            proxy: None,
        },
    )
    .unwrap();
    let dispatcher = Dispatcher::new(Arc::clone(&store), client, settings);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(shutdown.clone()));
    let running = Running {
        shutdown,
        task: Some(task),
    };
    accept(&store, &[event("evt_bound")]).await;
    let delivered = wait_for_status(&store, &target, DeliveryStatus::Delivered, 1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(peer.recv().await, Some(source));
    running.stop().await;
}

/// A test HTTP CONNECT proxy on loopback: answers each CONNECT whose
/// `Proxy-Authorization` is `authorization` with a tunnel to its target,
/// and reports the target (and what came with it) on `seen`.
pub(super) async fn connect_proxy(
    authorization: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (seen, targets) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0_u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                let authorized = head.lines().any(|line| {
                    line.split_once(':').is_some_and(|(name, value)| {
                        name.eq_ignore_ascii_case("proxy-authorization")
                            && value.trim() == authorization
                    })
                });
                let _ = seen.send(format!("{target} authorized={authorized}"));
                if !authorized {
                    let _ = client
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (address, targets)
}

/// `WEBHOOKD_EGRESS_PROXY` (SPEC §14): deliveries go through the proxy's
/// CONNECT tunnel, with its credentials; a dead proxy is reason `proxy`,
/// retried, and leaves the endpoint's failure streak alone (it says
/// nothing of the receiver, and must not auto-disable the endpoint).
pub(super) async fn deliveries_go_through_the_egress_proxy_and_its_failures_spare_the_endpoint(
    store: Arc<dyn Store>,
) {
    // base64("deliver:s3cret")
    let (proxy, mut targets) = connect_proxy("Basic ZGVsaXZlcjpzM2NyZXQ=").await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let target = endpoint(&store, &receiver.url).await;
    let egress = |address: &str| webhookd_delivery::Egress {
        bind: None,
        proxy: Some(webhookd_core::config::EgressProxy {
            address: address.to_owned(),
            authorization: Some("Basic ZGVsaXZlcjpzM2NyZXQ=".into()),
        }),
    };
    let run = |egress: webhookd_delivery::Egress| {
        let settings = settings("1s");
        let client =
            DeliveryClient::with_egress(loopback_allowed(), settings.timeout, &egress).unwrap();
        let dispatcher = Dispatcher::new(Arc::clone(&store), client, settings);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(shutdown.clone()));
        Running {
            shutdown,
            task: Some(task),
        }
    };

    let running = run(egress(&proxy));
    accept(&store, &[event("evt_proxied")]).await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1);
    assert!(signature_is_valid(&received[0], &target.secret));
    let receiver_address = receiver
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        targets.recv().await.unwrap(),
        format!("{receiver_address} authorized=true"),
        "the delivery went through the proxy, with its credentials"
    );
    wait_for_status(&store, &target, DeliveryStatus::Delivered, 1).await;
    running.stop().await;

    // The proxy gone: nothing listens at its address any more.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let running = run(egress(&dead));
    accept(&store, &[event("evt_no_proxy")]).await;
    let pending = wait_for_status(&store, &target, DeliveryStatus::Pending, 1).await;
    let id = pending[0].delivery_id.clone();
    let mut attempts = Vec::new();
    for _ in 0..500 {
        attempts = store
            .delivery_attempts("johndoe", &target.endpoint_id, &id)
            .await
            .unwrap()
            .unwrap()
            .1;
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
    assert_eq!(attempts[0].reason, "proxy", "{attempts:?}");
    let endpoint = store
        .get_endpoint("johndoe", &target.endpoint_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        endpoint.failing_since, None,
        "the proxy's failure is not the receiver's"
    );
    assert_eq!(endpoint.status, EndpointStatus::Enabled);
    assert_eq!(receiver.count(), 1);
}
