//! Standard Webhooks signatures: `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`,
//! keyed with the bytes of the secret (`whsec_` + base64). During a rotation a request
//! carries one signature per secret, space-separated, and a receiver accepts any of them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("must start with whsec_ followed by base64 (as a Standard Webhooks secret)")]
    SecretFormat,
    #[error("must hold 24 to 64 bytes once decoded")]
    SecretLength,
    #[error("no signature matches")]
    NoMatch,
    #[error("the timestamp is outside the tolerance")]
    Stale,
}

/// Keys that sign (the current secret first, then the one being rotated out).
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignatureError::SecretFormat)?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| SignatureError::SecretFormat)?;
    if !(24..=64).contains(&key.len()) {
        return Err(SignatureError::SecretLength);
    }
    Ok(key)
}

impl Signer {
    /// `current` signs; `previous`, when given, signs too (a rotation).
    pub fn new(current: &str, previous: Option<&str>) -> Result<Signer, SignatureError> {
        let mut keys = vec![secret_key(current)?];
        if let Some(p) = previous.filter(|p| !p.is_empty()) {
            keys.push(secret_key(p)?);
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` header value: `v1,<sig>` per key, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|k| format!("v1,{}", STANDARD.encode(mac(k, id, timestamp, body))))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Checks a received `webhook-signature` against every key (constant time per
    /// comparison), and the timestamp against `now` within `tolerance_secs`: what a receiver
    /// does (the demo's and the tests').
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        if (now - timestamp).abs() > tolerance_secs {
            return Err(SignatureError::Stale);
        }
        let given: Vec<Vec<u8>> = header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            .collect();
        for key in &self.keys {
            let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
            m.update(&message(id, timestamp, body));
            let expected = m.finalize().into_bytes();
            if given
                .iter()
                .any(|g| subtle::ConstantTimeEq::ct_eq(g.as_slice(), expected.as_slice()).into())
            {
                return Ok(());
            }
        }
        Err(SignatureError::NoMatch)
    }
}

fn message(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(timestamp.to_string().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(&message(id, timestamp, body));
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published vector.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn the_specifications_vector_signs_to_its_published_signature() {
        let signer = Signer::new(SECRET, None).unwrap();
        assert_eq!(signer.sign(ID, TS, BODY.as_bytes()), SIGNATURE);
        signer
            .verify(ID, TS, BODY.as_bytes(), SIGNATURE, TS, 300)
            .unwrap();
    }

    #[test]
    fn a_rotation_sends_both_signatures_and_either_secret_verifies() {
        let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let both = Signer::new(new, Some(SECRET)).unwrap();
        let header = both.sign(ID, TS, BODY.as_bytes());
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[1], SIGNATURE,
            "the old secret's signature is the second"
        );
        // A receiver that still has only the old secret accepts; so does one with the new.
        for receiver in [Signer::new(SECRET, None), Signer::new(new, None)] {
            receiver
                .unwrap()
                .verify(ID, TS, BODY.as_bytes(), &header, TS, 300)
                .unwrap();
        }
    }

    #[test]
    fn a_changed_body_id_or_timestamp_and_a_stale_timestamp_are_refused() {
        let s = Signer::new(SECRET, None).unwrap();
        let body = BODY.as_bytes();
        assert_eq!(
            s.verify(ID, TS, b"{}", SIGNATURE, TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            s.verify("msg_other", TS, body, SIGNATURE, TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            s.verify(ID, TS + 1, body, SIGNATURE, TS, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            s.verify(ID, TS, body, SIGNATURE, TS + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            s.verify(ID, TS, body, "v2,abc v1,!!", TS, 300),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn secrets_without_the_prefix_or_of_the_wrong_size_are_refused() {
        assert_eq!(
            Signer::new("C2FVsBQIhrscChlQIMV+b5sSYspob7oD", None).unwrap_err(),
            SignatureError::SecretFormat
        );
        assert_eq!(
            Signer::new("whsec_not base64!", None).unwrap_err(),
            SignatureError::SecretFormat
        );
        assert_eq!(
            Signer::new("whsec_c2hvcnQ=", None).unwrap_err(),
            SignatureError::SecretLength
        );
    }
}
