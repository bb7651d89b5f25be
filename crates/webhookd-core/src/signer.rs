//! Body signatures (SPEC §3), two schemes from one secret:
//!
//! - JoggAI's `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the raw
//!   body bytes, keyed by the UTF-8 bytes of the *whole* secret string,
//!   `whsec_` prefix included — exactly what the Go, Python, Node and openssl
//!   snippets in the JoggAI documentation verify.
//! - Standard Webhooks' `webhook-signature`: `v1,` + base64 HMAC-SHA256 of
//!   `<webhook-id>.<webhook-timestamp>.<body>`, keyed by the base64-decoded
//!   part of the secret after `whsec_` — what the official `standardwebhooks`
//!   libraries verify (with replay protection from the timestamp).
//! - Standard Webhooks' asymmetric `v1a` (SPEC §14, `signature: ed25519`):
//!   an ed25519 signature of the same `<id>.<timestamp>.<body>`, verified
//!   with the endpoint's public key alone (`whpk_`). The key pair is derived
//!   from the endpoint's secret ([`ed25519_seed`]), so it rotates with it
//!   (SPEC §8) and a store holds no second key to seal, copy or lose.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::PreviousSecret;
use crate::delivery_options::SignatureScheme;

/// The prefix of an endpoint's ed25519 public key (Standard Webhooks).
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// What the ed25519 seed is derived for; changing it changes every key.
const ED25519_CONTEXT: &[u8] = b"webhookd ed25519 signing key v1a";

type HmacSha256 = Hmac<Sha256>;

/// The value of the `X-Webhook-Signature` header for `body` signed with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, body))
}

/// Checks a received signature in constant time. Used by our own test
/// receivers and benchmarks; receivers in the wild use the seed snippets.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let expected = sign(secret, body);
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}

/// The Standard Webhooks `webhook-signature` value for `body` sent as
/// message `id` at `timestamp` (unix seconds): `v1,<base64>`. `None` when
/// the secret is not `whsec_` + base64 (webhookd only makes such secrets).
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(crate::ids::SECRET_PREFIX)?)
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The seed of the endpoint's ed25519 key: HMAC-SHA256, keyed by the
/// secret's 32 random bytes, of a fixed context string. Whoever holds the
/// secret can derive it, no one else; an endpoint signing with ed25519 alone
/// never shows its secret (the API answers with the public key).
fn ed25519_seed(secret: &str) -> Option<[u8; 32]> {
    let key = STANDARD
        .decode(secret.strip_prefix(crate::ids::SECRET_PREFIX)?)
        .ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(ED25519_CONTEXT);
    Some(mac.finalize().into_bytes().into())
}

fn ed25519_pair(secret: &str) -> Option<ring::signature::Ed25519KeyPair> {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&ed25519_seed(secret)?).ok()
}

/// The endpoint's public key, `whpk_<base64 of 32 bytes>`, as receivers
/// configure it to verify `v1a` signatures.
pub fn public_key(secret: &str) -> Option<String> {
    use ring::signature::KeyPair as _;
    let pair = ed25519_pair(secret)?;
    Some(format!(
        "{PUBLIC_KEY_PREFIX}{}",
        STANDARD.encode(pair.public_key().as_ref())
    ))
}

/// The Standard Webhooks `v1a,<base64 ed25519 signature>` of `body` sent as
/// message `id` at `timestamp`, signed with the key derived from `secret`.
pub fn sign_asymmetric(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let pair = ed25519_pair(secret)?;
    let mut message = Vec::with_capacity(id.len() + body.len() + 24);
    message.extend_from_slice(id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    Some(format!(
        "v1a,{}",
        STANDARD.encode(pair.sign(&message).as_ref())
    ))
}

/// The signature headers of one attempt (SPEC §3, §8, §14), as sent.
/// While an HMAC secret signs: during a rotation's grace (`previous` live
/// at `timestamp`) the previous secret still makes `X-Webhook-Signature`,
/// so receivers running the seeds' code unchanged keep verifying, and the
/// new one makes `X-Webhook-Signature-Next`. `webhook-signature` carries
/// the new secret's entries first (`v1`, then `v1a` as `scheme` says), then
/// the previous one's.
pub fn signature_headers(
    secret: &str,
    previous: Option<&PreviousSecret>,
    scheme: SignatureScheme,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let previous = previous.filter(|previous| previous.is_live(timestamp));
    let mut headers = Vec::with_capacity(3);
    if scheme.hmac() {
        let signing = previous.map_or(secret, |previous| &previous.secret);
        headers.push(("x-webhook-signature", sign(signing, body)));
        if previous.is_some() {
            headers.push(("x-webhook-signature-next", sign(secret, body)));
        }
    }
    let mut standard: Vec<String> = Vec::with_capacity(2);
    for secret in std::iter::once(secret).chain(previous.map(|previous| previous.secret.as_str())) {
        if scheme.hmac() {
            standard.extend(sign_standard(secret, id, timestamp, body));
        }
        if scheme.ed25519() {
            standard.extend(sign_asymmetric(secret, id, timestamp, body));
        }
    }
    if !standard.is_empty() {
        headers.push(("webhook-signature", standard.join(" ")));
    }
    headers
}

/// What an attempt's record keeps of its signatures (SPEC §13): the
/// `webhook-timestamp` it was signed at and a check of the headers it
/// carried, so the delivery detail can show them again from the secrets —
/// and tell when the secret that signed has since been replaced — without
/// storing them. The check is 32 bits of a hash of signatures: it says
/// nothing of the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signing {
    /// Unix seconds: the `webhook-timestamp` sent.
    pub timestamp: i64,
    /// [`signature_check`] of the signature headers sent.
    pub check: String,
}

impl Signing {
    /// What to record of `headers` ([`signature_headers`]) signed at
    /// `timestamp`.
    pub fn of(timestamp: i64, headers: &[(&'static str, String)]) -> Self {
        Signing {
            timestamp,
            check: signature_check(headers),
        }
    }
}

/// Eight hex digits of SHA-256 over the signature header values.
pub fn signature_check(headers: &[(&'static str, String)]) -> String {
    use sha2::Digest as _;
    let mut hash = Sha256::new();
    for (name, value) in headers {
        hash.update(name.as_bytes());
        hash.update(b":");
        hash.update(value.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(&hash.finalize()[..4])
}

fn mac(secret: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (long keys are hashed first), so this
    // constructor cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_64_lowercase_hex_digits() {
        let signature = sign("whsec_abc123xyz", br#"{"a":1}"#);
        assert_eq!(signature.len(), 64);
        assert!(
            signature
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        );
    }

    #[test]
    fn verify_accepts_the_signature_and_rejects_any_change() {
        let body = br#"{"event_id":"evt_1"}"#;
        let signature = sign("whsec_k", body);
        assert!(verify("whsec_k", body, &signature));
        assert!(!verify("whsec_K", body, &signature), "other secret");
        assert!(!verify("whsec_k", b"{}", &signature), "other body");
        assert!(
            !verify("whsec_k", body, &signature.to_uppercase()),
            "hex is lowercase"
        );
        assert!(!verify("whsec_k", body, &signature[..63]), "truncated");
        assert!(!verify("whsec_k", body, ""), "empty");
    }

    /// The example of the Standard Webhooks specification (and of its
    /// reference libraries' tests).
    #[test]
    fn the_standard_signature_matches_the_specifications_example() {
        let signature = sign_standard(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign_standard("not-whsec", "m", 1, b""), None);
    }

    #[test]
    fn during_a_grace_the_previous_secret_signs_and_the_new_one_signs_next() {
        let previous = PreviousSecret {
            secret: "whsec_b2xk".into(),
            expires_at: 100,
        };
        let during = signature_headers(
            "whsec_bmV3",
            Some(&previous),
            SignatureScheme::Hmac,
            "evt_1",
            99,
            b"{}",
        );
        let names: Vec<&str> = during.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "x-webhook-signature",
                "x-webhook-signature-next",
                "webhook-signature"
            ]
        );
        assert_eq!(during[0].1, sign("whsec_b2xk", b"{}"));
        assert_eq!(during[1].1, sign("whsec_bmV3", b"{}"));
        assert_eq!(during[2].1.split(' ').count(), 2);
        let after = signature_headers(
            "whsec_bmV3",
            Some(&previous),
            SignatureScheme::Hmac,
            "evt_1",
            100,
            b"{}",
        );
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].1, sign("whsec_bmV3", b"{}"));
        // The check tells the two apart, and is stable.
        assert_ne!(signature_check(&during), signature_check(&after));
        assert_eq!(signature_check(&after), signature_check(&after.clone()));
        assert_eq!(signature_check(&after).len(), 8);
    }

    #[test]
    fn ed25519_signs_what_the_public_key_verifies_and_nothing_else() {
        use ring::signature::{ED25519, UnparsedPublicKey};
        let secret = crate::ids::new_secret();
        let public = public_key(&secret).unwrap();
        let key = STANDARD
            .decode(public.strip_prefix(PUBLIC_KEY_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        let signature = sign_asymmetric(&secret, "evt_1", 1_700_000_000, b"{}").unwrap();
        let raw = STANDARD
            .decode(signature.strip_prefix("v1a,").unwrap())
            .unwrap();
        let verifier = UnparsedPublicKey::new(&ED25519, &key);
        assert!(verifier.verify(b"evt_1.1700000000.{}", &raw).is_ok());
        assert!(verifier.verify(b"evt_1.1700000000.{ }", &raw).is_err());
        // Another secret, another key; the same secret, the same key.
        assert_ne!(public_key(&crate::ids::new_secret()), Some(public.clone()));
        assert_eq!(public_key(&secret), Some(public));
    }

    #[test]
    fn the_scheme_decides_which_signatures_go() {
        let previous = PreviousSecret {
            secret: crate::ids::new_secret(),
            expires_at: 100,
        };
        let secret = crate::ids::new_secret();
        let entries = |headers: &[(&str, String)]| -> Vec<String> {
            headers
                .iter()
                .find(|(name, _)| *name == "webhook-signature")
                .map(|(_, value)| {
                    value
                        .split(' ')
                        .map(|e| e[..e.find(',').unwrap()].to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let ed = signature_headers(
            &secret,
            Some(&previous),
            SignatureScheme::Ed25519,
            "e",
            99,
            b"{}",
        );
        assert_eq!(ed.len(), 1, "no HMAC header: {ed:?}");
        assert_eq!(entries(&ed), ["v1a", "v1a"]);
        let both = signature_headers(&secret, None, SignatureScheme::Both, "e", 99, b"{}");
        assert_eq!(both[0].0, "x-webhook-signature");
        assert_eq!(entries(&both), ["v1", "v1a"]);
    }

    #[test]
    fn the_prefix_is_part_of_the_key() {
        assert_ne!(sign("whsec_abc", b"x"), sign("abc", b"x"));
    }
}
