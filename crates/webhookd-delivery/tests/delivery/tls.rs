//! Per-endpoint TLS (SPEC §14), against a real rustls receiver on loopback
//! whose certificate a private CA signed and which requires a client
//! certificate from another: reached only by the endpoint that trusts the
//! CA and presents its certificate; every other try is reason `tls`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use webhookd_core::{DeliveryOptions, Endpoint, EndpointSpec};
use webhookd_store::{DeliveryStatus, Store};
use webhookd_testkit::tls::Authority;

use super::{accept, dispatch, endpoint, event, loopback_allowed, settings, wait_for_status};

/// An HTTPS receiver at 127.0.0.1 with a certificate `server_ca` signed,
/// requiring a client certificate `client_ca` signed; counts the requests
/// it answered 200.
async fn mtls_receiver(server_ca: &Authority, client_ca: &Authority) -> (String, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject as _;
    let (cert, key) = server_ca.sign(&["127.0.0.1"]);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(client_ca.pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buffer = vec![0_u8; 16 * 1024];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"}") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, answered)
}

pub(crate) async fn with_options(
    store: &Arc<dyn Store>,
    url: &str,
    options: &DeliveryOptions,
) -> Endpoint {
    let created = endpoint(store, url).await;
    let spec = EndpointSpec {
        ordering: None,
        filter: None,
        url: created.url.clone(),
        status: None,
        events: created.events.clone(),
        rate_limit: None,
        options: Some(options.to_stored()),
    };
    store
        .update_endpoint("johndoe", &created.endpoint_id, &spec)
        .await
        .unwrap()
        .unwrap()
}

/// The reason of the endpoint's first attempt, once there is one.
pub(crate) async fn first_reason(store: &Arc<dyn Store>, endpoint: &Endpoint) -> String {
    let pending = wait_for_status(store, endpoint, DeliveryStatus::Pending, 1).await;
    for _ in 0..500 {
        let (_, attempts) = store
            .delivery_attempts("johndoe", &endpoint.endpoint_id, &pending[0].delivery_id)
            .await
            .unwrap()
            .unwrap();
        if let Some(first) = attempts.first() {
            return first.reason.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no attempt to {}", endpoint.endpoint_id);
}

pub(super) async fn only_the_endpoint_with_the_ca_and_its_client_certificate_gets_through(
    store: Arc<dyn Store>,
) {
    let (server_ca, client_ca, stranger) = (
        Authority::new("receivers' private CA"),
        Authority::new("clients' CA"),
        Authority::new("someone else's CA"),
    );
    let (url, answered) = mtls_receiver(&server_ca, &client_ca).await;
    let (client_cert, client_key) = client_ca.sign(&["webhookd.example"]);
    let (foreign_cert, foreign_key) = stranger.sign(&["webhookd.example"]);
    let trusting = |client: Option<(&str, &str)>| DeliveryOptions {
        ca_cert: Some(server_ca.pem.clone()),
        client_cert: client.map(|(cert, _)| cert.to_owned()),
        client_key: client.map(|(_, key)| key.to_owned()),
        ..DeliveryOptions::default()
    };
    let complete = with_options(&store, &url, &trusting(Some((&client_cert, &client_key)))).await;
    let no_client_cert = with_options(&store, &url, &trusting(None)).await;
    let foreign_client =
        with_options(&store, &url, &trusting(Some((&foreign_cert, &foreign_key)))).await;
    let web_pki_only = endpoint(&store, &url).await;

    // An hour between attempts: each endpoint's first attempt is all the
    // test looks at.
    let running = dispatch(&store, settings("1h"), loopback_allowed());
    accept(&store, &[event("evt_mtls")]).await;
    let delivered = wait_for_status(&store, &complete, DeliveryStatus::Delivered, 1).await;
    assert_eq!(
        delivered.len(),
        1,
        "the endpoint with the CA and its certificate"
    );
    let mut reasons = Vec::new();
    for refused in [&no_client_cert, &foreign_client, &web_pki_only] {
        reasons.push(first_reason(&store, refused).await);
    }
    assert_eq!(
        reasons,
        ["tls", "tls", "tls"],
        "without a client certificate, with a foreign one, without the CA"
    );
    running.stop().await;
    assert_eq!(
        answered.load(Ordering::SeqCst),
        1,
        "only one request got through"
    );
}
