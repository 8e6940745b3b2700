//! Personal data at rest: contacts and path-node text are sealed with AES-256-GCM, and phone
//! numbers get a keyed hash (HMAC-SHA256) so equality checks (the reverse query's phone match)
//! never need the plaintext.
//!
//! Both subkeys are derived from the one configured `privacy.data_key`, so the AEAD key and
//! the hash key are never the same bytes.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("privacy.data_key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("sealed data is corrupt or was sealed under another data key")]
    Open,
    #[error("reading or writing the data key file: {0}")]
    KeyFile(#[from] std::io::Error),
}

/// Seals and opens personal data. Cheap to clone; `Debug` never shows key material.
#[derive(Clone)]
pub struct Privacy {
    aead: Aes256Gcm,
    hash_key: [u8; 32],
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Privacy(<redacted>)")
    }
}

const VERSION: u8 = 1;

impl Privacy {
    /// From the base64 text of `privacy.data_key`.
    pub fn from_base64(key_b64: &str) -> Result<Privacy, PrivacyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|_| PrivacyError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| PrivacyError::BadKey)?;
        Ok(Privacy::from_key(&key))
    }

    pub fn from_key(key: &[u8; 32]) -> Privacy {
        let aead_key = derive(key, b"wxexpress/v1/aead");
        let hash_key = derive(key, b"wxexpress/v1/phone-hash");
        Privacy {
            aead: Aes256Gcm::new(&aead_key.into()),
            hash_key,
        }
    }

    /// A fresh random key, base64.
    pub fn generate_key_base64() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Load `dir/data_key`, creating it (mode 0600) on first start. Returns the key and
    /// whether it was generated now.
    pub fn load_or_generate(dir: &Path) -> Result<(String, bool), PrivacyError> {
        Ok(read_or_create(
            &dir.join("data_key"),
            Privacy::generate_key_base64,
        )?)
    }

    /// `version | nonce(12) | ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let (version, rest) = sealed.split_first().ok_or(PrivacyError::Open)?;
        if *version != VERSION || rest.len() < 12 + 16 {
            return Err(PrivacyError::Open);
        }
        let (nonce, ct) = rest.split_at(12);
        self.aead
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| PrivacyError::Open)
    }

    pub fn seal_json<T: serde::Serialize>(&self, value: &T) -> Vec<u8> {
        self.seal(&serde_json::to_vec(value).expect("serialising plain data structs cannot fail"))
    }

    pub fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        sealed: &[u8],
    ) -> Result<T, PrivacyError> {
        serde_json::from_slice(&self.open(sealed)?).map_err(|_| PrivacyError::Open)
    }

    /// Keyed hash of a normalised phone number (lowercase hex).
    pub fn phone_hash(&self, phone: &str) -> String {
        self.keyed_hash(phone)
    }

    /// Keyed hash (HMAC-SHA256, lowercase hex) of any secret value that must be compared
    /// without being stored in clear (phones, access tokens).
    pub fn keyed_hash(&self, value: &str) -> String {
        self.keyed_hash_bytes(value.as_bytes())
    }

    /// [`Privacy::keyed_hash`] of raw bytes (a whole decrypted message, say).
    pub fn keyed_hash_bytes(&self, value: &[u8]) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(value);
        hex::encode(mac.finalize().into_bytes())
    }
}

fn derive(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Read a generated secret file, or create it (mode 0600) with `make()`. Safe when several
/// processes start at once: the file appears complete or not at all (written to a private
/// temporary name, then hard-linked into place), and whoever loses the race reads the
/// winner's value. Returns the value and whether this call created it.
pub fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> String,
) -> std::io::Result<(String, bool)> {
    use std::io::Write;
    if let Ok(v) = std::fs::read_to_string(path) {
        return Ok((v.trim().to_string(), false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let value = make();
    let tmp = path.with_extension(format!(
        "tmp.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(value.as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((value, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((std::fs::read_to_string(path)?.trim().to_string(), false))
        }
        Err(e) => Err(e),
    }
}

/// `[privacy]`, as the file and the environment say it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    pub data_key: Option<crate::secret::Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key() {
        let a = Privacy::from_key(&[7; 32]);
        let b = Privacy::from_key(&[8; 32]);
        let sealed = a.seal(b"13800138000");
        assert_eq!(a.open(&sealed).unwrap(), b"13800138000");
        assert!(b.open(&sealed).is_err());
        assert_ne!(a.seal(b"x"), a.seal(b"x"), "fresh nonce per seal");
        assert!(a.open(&[]).is_err());
        assert!(a.open(&sealed[..10]).is_err());
    }

    #[test]
    fn phone_hash_is_keyed_and_stable() {
        let a = Privacy::from_key(&[7; 32]);
        assert_eq!(a.phone_hash("13800138000"), a.phone_hash("13800138000"));
        assert_ne!(
            a.phone_hash("13800138000"),
            Privacy::from_key(&[8; 32]).phone_hash("13800138000")
        );
        assert_eq!(a.phone_hash("1").len(), 64);
    }

    #[test]
    fn racing_processes_agree_on_one_generated_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("data_key");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let p = path.clone();
                std::thread::spawn(move || read_or_create(&p, || format!("key-{i}")).unwrap())
            })
            .collect();
        let results: Vec<(String, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        assert!(results.iter().all(|(v, _)| *v == results[0].0));
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(Privacy::from_base64("short").is_err());
        assert!(Privacy::from_base64(&Privacy::generate_key_base64()).is_ok());
    }
}
