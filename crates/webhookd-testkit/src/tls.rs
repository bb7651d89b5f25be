//! A private certificate authority for tests of receivers on private PKI
//! and of client certificates (SPEC §14).

/// A certificate authority for one test, and the certificates it signs.
#[derive(Debug)]
pub struct Authority {
    /// Its own certificate (PEM): what a party that trusts it is given.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let key = rcgen::KeyPair::generate().expect("a key pair");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params
            .clone()
            .self_signed(&key)
            .expect("a self-signed CA")
            .pem();
        Authority {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (the first is also its common name), and
    /// its key, both PEM.
    pub fn sign(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a key pair");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("names");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.as_str());
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate the CA signed");
        (cert.pem(), key.serialize_pem())
    }
}
