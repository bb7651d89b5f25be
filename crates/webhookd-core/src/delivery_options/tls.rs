//! An endpoint's TLS material (SPEC §14): the client certificate and key it
//! presents to its receiver (mTLS), and the CA certificates it trusts in
//! addition to the web PKI roots. Checked when the API takes them — a key
//! that does not match its certificate, a CA that is not one, are a 40000
//! then, not a failed attempt later — and made into the rustls client
//! configuration the endpoint's attempts use.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::FieldError;

/// Most bytes of a PEM field: a chain of a few certificates, or a CA bundle.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// The certificates of a PEM field, at least one.
pub fn certificates(
    field: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, FieldError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_PEM_BYTES} bytes"),
        ));
    }
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| FieldError::new(field, "is not PEM (-----BEGIN CERTIFICATE----- …)"))?;
    if certificates.is_empty() {
        return Err(FieldError::new(
            field,
            "holds no certificate (-----BEGIN CERTIFICATE----- …)",
        ));
    }
    Ok(certificates)
}

/// The private key of `client_key`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM.
pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, FieldError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(FieldError::new(
            "client_key",
            format!("is longer than {MAX_PEM_BYTES} bytes"),
        ));
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        FieldError::new(
            "client_key",
            "is not a PEM private key (PKCS#8, RSA or EC: -----BEGIN PRIVATE KEY----- …)",
        )
    })
}

/// When the first certificate of `pem` (the client's own) expires, unix
/// seconds.
pub fn expires_at(pem: &str) -> Result<i64, FieldError> {
    let certificates = certificates("client_cert", pem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificates[0].as_ref())
        .map_err(|_| FieldError::new("client_cert", "is not an X.509 certificate"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The rustls configuration of an endpoint's attempts: the web PKI roots
/// and `ca_cert`'s certificates trusted, `client`'s certificate chain and
/// key presented. Errors name the field to fix.
pub fn client_config(
    client: Option<(&str, &str)>,
    ca_cert: Option<&str>,
) -> Result<rustls::ClientConfig, FieldError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_cert {
        for certificate in certificates("ca_cert", pem)? {
            roots.add(certificate).map_err(|error| {
                FieldError::new(
                    "ca_cert",
                    format!("holds a certificate that cannot be trusted: {error}"),
                )
            })?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| FieldError::new("client_cert", error.to_string()))?
    .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates("client_cert", cert)?;
            expires_at(cert)?;
            builder
                .with_client_auth_cert(chain, private_key(key)?)
                .map_err(|error| {
                    FieldError::new(
                        "client_key",
                        format!("cannot be used with client_cert: {error}"),
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_and_a_ca_make_a_configuration() {
        let (cert, key) = pair();
        let (ca, _) = pair();
        let config = client_config(Some((&cert, &key)), Some(&ca)).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(expires_at(&cert).unwrap() > 1_700_000_000);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_on_client_key() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let error = client_config(Some((&cert, &other_key)), None).unwrap_err();
        assert_eq!(error.field, "client_key");
        assert!(error.message.contains("cannot be used"), "{error}");
    }

    #[test]
    fn what_is_not_pem_names_its_field() {
        let (cert, key) = pair();
        for (client, ca, field) in [
            (Some(("nope", key.as_str())), None, "client_cert"),
            (Some((cert.as_str(), "nope")), None, "client_key"),
            (
                None,
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                "ca_cert",
            ),
            (None, Some(""), "ca_cert"),
        ] {
            let error = client_config(client, ca).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
