//! The keys that seal endpoint secrets at rest (SPEC §7):
//! `WEBHOOKD_ENCRYPTION_KEY` is base64 of 32 bytes, or a comma-separated
//! list of them (the first seals, every one opens). The sealing itself is
//! the store's (`webhookd-store`'s `sealed` module); here is only what the
//! configuration and the CLI need: parsing, generating, printing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// A 256-bit key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        EncryptionKey(crate::ids::random_bytes())
    }

    /// Base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    /// The error never repeats the text: it may be a key with a typo.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or("a key is not base64 (make one with `webhookd gen-key`)")?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "a key is {} bytes; it must be 32 (make one with `webhookd gen-key`)",
                bytes.len()
            )
        })?;
        Ok(EncryptionKey(bytes))
    }

    /// Standard base64, padded: what `webhookd gen-key` prints and the key
    /// file holds.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_every_base64_flavour() {
        let key = EncryptionKey::generate();
        let printed = key.to_base64();
        assert_eq!(EncryptionKey::parse(&printed).unwrap(), key);
        let url_safe = URL_SAFE_NO_PAD.encode(key.bytes());
        assert_eq!(EncryptionKey::parse(&url_safe).unwrap(), key);
        assert_ne!(EncryptionKey::generate(), key);
    }

    #[test]
    fn a_wrong_key_says_why_without_repeating_it() {
        let short = STANDARD.encode([7u8; 16]);
        let error = EncryptionKey::parse(&short).unwrap_err();
        assert!(error.contains("16 bytes"), "{error}");
        assert!(!error.contains(&short));
        let error = EncryptionKey::parse("not base64 at all!").unwrap_err();
        assert!(error.contains("not base64"), "{error}");
        assert!(!format!("{:?}", EncryptionKey::generate()).contains('='));
    }
}
