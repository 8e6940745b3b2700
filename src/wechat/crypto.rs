//! WeChat message-push crypto (spec `wechat-message-crypto.md`): SHA-1 request signatures,
//! EncodingAESKey parsing and the AES-256-CBC / PKCS#7(32) message envelope with the
//! `random16 | u32be len | msg | appid` framing, including current/previous key rotation.
//!
//! Pure: no I/O, no logging, no clock. It knows nothing about XML or JSON (that is
//! [`super::envelope`]). Nothing in here may print the token or a key.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rand::RngCore as _;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// WeChat pads with PKCS#7 over 32-byte blocks, not AES's 16 (spec §3.4), so a standard
/// unpadder would reject its padding values 17..=32.
const PAD_BLOCK: usize = 32;
/// `random16 | u32be len`: the fixed header in front of the message.
const HEADER_LEN: usize = 20;
const AES_BLOCK: usize = 16;
const ENCODING_AES_KEY_LEN: usize = 43;

/// EncodingAESKey decoder: 43 characters carry 258 bits for a 256-bit key, and the console
/// generates keys whose 2 spare bits are not zero, so those bits must be ignored rather than
/// rejected; the key is given without its `=`.
const LENIENT_KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Failures of the message crypto, numbered like WeChat's sample library `WXBizMsgCrypt`
/// (spec §6) so logs read the same as WeChat's documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A signature or msg_signature did not match.
    #[error("signature mismatch")]
    ValidateSignature,
    /// The message document could not be parsed.
    #[error("message document could not be parsed")]
    ParseXml,
    /// Computing a SHA-1 signature failed.
    #[error("signature computation failed")]
    ComputeSignature,
    /// The EncodingAESKey is not 43 characters of `[A-Za-z0-9]`.
    #[error("EncodingAESKey must be 43 characters of [A-Za-z0-9]")]
    IllegalAesKey,
    /// The appid inside the decrypted message is not ours.
    #[error("appid in the decrypted message does not match")]
    ValidateAppid,
    /// AES encryption failed (or the message is too large to frame).
    #[error("AES encryption failed")]
    EncryptAes,
    /// The ciphertext is not a positive multiple of the AES block size.
    #[error("AES decryption failed")]
    DecryptAes,
    /// The decrypted buffer is malformed: bad padding or length field.
    #[error("decrypted buffer is malformed")]
    IllegalBuffer,
    /// Base64 encoding failed.
    #[error("base64 encoding failed")]
    EncodeBase64,
    /// The `Encrypt` text is not valid base64.
    #[error("ciphertext is not valid base64")]
    DecodeBase64,
    /// Building the reply document failed.
    #[error("building the reply failed")]
    GenReturnXml,
}

impl CryptoError {
    /// The `WXBizMsgCrypt` error code (-40001 ..= -40011).
    pub fn code(&self) -> i32 {
        match self {
            CryptoError::ValidateSignature => -40001,
            CryptoError::ParseXml => -40002,
            CryptoError::ComputeSignature => -40003,
            CryptoError::IllegalAesKey => -40004,
            CryptoError::ValidateAppid => -40005,
            CryptoError::EncryptAes => -40006,
            CryptoError::DecryptAes => -40007,
            CryptoError::IllegalBuffer => -40008,
            CryptoError::EncodeBase64 => -40009,
            CryptoError::DecodeBase64 => -40010,
            CryptoError::GenReturnXml => -40011,
        }
    }
}

/// WeChat's signature: sort the parts byte-wise, concatenate without separator, SHA-1,
/// lowercase hex.
pub fn sha1_signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    // `str`'s `Ord` is byte-wise, which is WeChat's "dictionary order" for these ASCII inputs.
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Checks `given` against [`sha1_signature`] of `parts` in constant time. Only lowercase hex
/// is accepted, as WeChat sends it.
pub fn verify_sha1_signature(given: &str, parts: &[&str]) -> bool {
    let expected = sha1_signature(parts);
    // A length mismatch returns false from `ct_eq` without leaking where the strings differ.
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// A 32-byte AES-256 key decoded from a 43-character EncodingAESKey. Its first 16 bytes are
/// also the CBC IV (WeChat's choice, spec §3.4).
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl AesKey {
    /// Parses an EncodingAESKey: exactly 43 characters of `[A-Za-z0-9]`, decoded as base64
    /// while discarding the two spare low bits of the last character.
    pub fn parse(encoding_aes_key: &str) -> Result<AesKey, CryptoError> {
        let bytes = encoding_aes_key.as_bytes();
        if bytes.len() != ENCODING_AES_KEY_LEN || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(CryptoError::IllegalAesKey);
        }
        let decoded = LENIENT_KEY_ENGINE
            .decode(bytes)
            .map_err(|_| CryptoError::IllegalAesKey)?;
        let key: [u8; 32] = decoded.try_into().map_err(|_| CryptoError::IllegalAesKey)?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; AES_BLOCK] {
        let mut iv = [0u8; AES_BLOCK];
        iv.copy_from_slice(&self.0[..AES_BLOCK]);
        iv
    }
}

/// Which of the configured EncodingAESKeys opened (or should seal) a message. The reply to a
/// request is sealed with the slot that opened it, as the key-rotation advice requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    /// The key currently configured in the console.
    Current,
    /// The key configured before the last rotation.
    Previous,
}

/// The Token, appid and EncodingAESKey(s) of one mini program, and every operation on them.
#[derive(Clone)]
pub struct MessageCrypto {
    /// Shared secret for all SHA-1 signatures.
    token: String,
    /// Trailer of every plaintext frame; a mismatch means the message is not for us.
    appid: String,
    current: AesKey,
    /// Kept during a key rotation so in-flight messages sealed with the old key still open.
    previous: Option<AesKey>,
}

impl std::fmt::Debug for MessageCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageCrypto")
            .field("token", &"<redacted>")
            .field("appid", &self.appid)
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

impl MessageCrypto {
    /// Builds the crypto for one mini program; fails with [`CryptoError::IllegalAesKey`] if
    /// either key is malformed.
    pub fn new(
        token: &str,
        appid: &str,
        encoding_aes_key: &str,
        previous_encoding_aes_key: Option<&str>,
    ) -> Result<Self, CryptoError> {
        Ok(MessageCrypto {
            token: token.to_owned(),
            appid: appid.to_owned(),
            current: AesKey::parse(encoding_aes_key)?,
            previous: previous_encoding_aes_key.map(AesKey::parse).transpose()?,
        })
    }

    /// The Token used in signatures.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The mini program's appid.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// `signature` of URL verification and plaintext pushes: SHA-1 of sorted
    /// (token, timestamp, nonce).
    pub fn signature(&self, timestamp: &str, nonce: &str) -> String {
        sha1_signature(&[&self.token, timestamp, nonce])
    }

    /// Constant-time check of a `signature` query parameter.
    pub fn verify_signature(&self, signature: &str, timestamp: &str, nonce: &str) -> bool {
        verify_sha1_signature(signature, &[&self.token, timestamp, nonce])
    }

    /// `msg_signature` / `MsgSignature`: SHA-1 of sorted (token, timestamp, nonce, Encrypt).
    pub fn msg_signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        sha1_signature(&[&self.token, timestamp, nonce, encrypt])
    }

    /// Constant-time check of a `msg_signature` query parameter or `MsgSignature` field.
    pub fn verify_msg_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> bool {
        verify_sha1_signature(msg_signature, &[&self.token, timestamp, nonce, encrypt])
    }

    /// base64 -> AES-256-CBC (IV = key[..16], no padding) -> PKCS#7 with block 32 (pad
    /// 1..=32, all pad bytes equal) -> random16|u32be len|msg|appid; appid must equal ours
    /// ([`CryptoError::ValidateAppid`]). Tries the current key, then the previous one;
    /// returns which succeeded. When both fail, the current key's error is returned.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<(Vec<u8>, KeySlot), CryptoError> {
        let ciphertext = STANDARD
            .decode(encrypt_b64)
            .map_err(|_| CryptoError::DecodeBase64)?;
        if ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(CryptoError::DecryptAes);
        }
        let current_err = match self.open_with(&self.current, &ciphertext) {
            Ok(msg) => return Ok((msg, KeySlot::Current)),
            Err(e) => e,
        };
        match &self.previous {
            Some(previous) => match self.open_with(previous, &ciphertext) {
                Ok(msg) => Ok((msg, KeySlot::Previous)),
                // The previous key's error says little: with a wrong key every failure is
                // noise, so report what the key that should have worked saw.
                Err(_) => Err(current_err),
            },
            None => Err(current_err),
        }
    }

    /// Seals `msg` with a fresh random 16-byte prefix from the OS RNG.
    pub fn encrypt(&self, msg: &[u8], slot: KeySlot) -> Result<String, CryptoError> {
        let mut random16 = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut random16)
            .map_err(|_| CryptoError::EncryptAes)?;
        self.encrypt_with_prefix(msg, slot, &random16)
    }

    /// Seals `msg` with a given prefix; deterministic, for test vectors. `slot == Previous`
    /// without a previous key uses the current key.
    pub fn encrypt_with_prefix(
        &self,
        msg: &[u8],
        slot: KeySlot,
        random16: &[u8; 16],
    ) -> Result<String, CryptoError> {
        let key = match (slot, &self.previous) {
            (KeySlot::Previous, Some(previous)) => previous,
            _ => &self.current,
        };
        let msg_len = u32::try_from(msg.len()).map_err(|_| CryptoError::EncryptAes)?;
        let unpadded = HEADER_LEN + msg.len() + self.appid.len();
        // N mod K == 0 still adds a full block, so the pad byte is always 1..=32.
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
        let mut buf = Vec::with_capacity(unpadded + pad);
        buf.extend_from_slice(random16);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.appid.as_bytes());
        let pad_byte = u8::try_from(pad).expect("pad is in 1..=32");
        buf.resize(unpadded + pad, pad_byte);

        let len = buf.len();
        let ciphertext = Aes256CbcEnc::new(&key.0.into(), &key.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .map_err(|_| CryptoError::EncryptAes)?;
        Ok(STANDARD.encode(ciphertext))
    }

    /// Decrypts and unframes with one key, checking the appid.
    fn open_with(&self, key: &AesKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let plain = aes_cbc_decrypt(key, ciphertext)?;
        let (msg, appid) = unframe(&plain)?;
        if !bool::from(appid.ct_eq(self.appid.as_bytes())) {
            return Err(CryptoError::ValidateAppid);
        }
        Ok(msg.to_vec())
    }
}

/// Raw AES-256-CBC decryption, padding left in place.
fn aes_cbc_decrypt(key: &AesKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut buf = ciphertext.to_vec();
    let len = Aes256CbcDec::new(&key.0.into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::DecryptAes)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Strips PKCS#7(32) padding and splits `random16 | u32be len | msg | appid` into
/// `(msg, appid)`. Every index is checked: this runs on attacker-chosen bytes whenever the
/// key is known to the attacker (or on noise after a wrong key).
fn unframe(plain: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let pad = usize::from(*plain.last().ok_or(CryptoError::IllegalBuffer)?);
    if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() {
        return Err(CryptoError::IllegalBuffer);
    }
    let split = plain.len() - pad;
    let (full, padding) = plain.split_at(split);
    if padding.iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::IllegalBuffer);
    }
    let len_bytes: [u8; 4] = full
        .get(16..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(CryptoError::IllegalBuffer)?;
    let msg_len =
        usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| CryptoError::IllegalBuffer)?;
    let body = full.get(HEADER_LEN..).ok_or(CryptoError::IllegalBuffer)?;
    if msg_len > body.len() {
        return Err(CryptoError::IllegalBuffer);
    }
    Ok(body.split_at(msg_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "AAAAA";
    const KEY_43A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const APPID: &str = "wxba5fad812f8e6fb9";
    const SECURE_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    const SECURE_MSG: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
    const OTHER_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn official() -> MessageCrypto {
        MessageCrypto::new(TOKEN, APPID, KEY_43A, None).expect("official key is valid")
    }

    #[test]
    fn url_verification_official_vector_signature_matches() {
        let c = official();
        assert_eq!(
            c.signature("1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert!(c.verify_signature(
            "f464b24fc39322e44b38aa78f5edd27bd1441696",
            "1714036504",
            "1514711492"
        ));
    }

    #[test]
    fn plaintext_json_official_vector_signature_matches() {
        let c = official();
        assert_eq!(
            c.signature("1714037059", "486452656"),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
    }

    #[test]
    fn secure_mode_official_vector_signatures_match() {
        let c = official();
        assert_eq!(
            c.signature("1714112445", "415670741"),
            "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
        );
        assert_eq!(
            c.msg_signature("1714112445", "415670741", SECURE_ENCRYPT),
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
        );
        assert!(c.verify_msg_signature(
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
            "1714112445",
            "415670741",
            SECURE_ENCRYPT
        ));
    }

    #[test]
    fn secure_mode_official_vector_decrypts() {
        let c = official();
        let (msg, slot) = c.decrypt(SECURE_ENCRYPT).expect("official vector decrypts");
        assert_eq!(msg, SECURE_MSG.as_bytes());
        assert_eq!(slot, KeySlot::Current);
    }

    #[test]
    fn secure_mode_official_vector_has_the_documented_frame() {
        let key = AesKey::parse(KEY_43A).expect("valid");
        assert_eq!(key.0, [0u8; 32]);
        let ciphertext = STANDARD.decode(SECURE_ENCRYPT).expect("base64");
        assert_eq!(ciphertext.len(), 224);
        let plain = aes_cbc_decrypt(&key, &ciphertext).expect("decrypts");
        assert_eq!(plain.last(), Some(&19));
        assert_eq!(plain.len() - 19, 205);
        assert_eq!(&plain[..16], b"a8eedb185eb2fecf");
        assert_eq!(&plain[16..20], &[0, 0, 0, 0xA7]);
        let (msg, appid) = unframe(&plain).expect("well framed");
        assert_eq!(msg.len(), 167);
        assert_eq!(appid, APPID.as_bytes());
    }

    #[test]
    fn reply_official_vector_encrypts_and_signs_exactly() {
        let c = official();
        let encrypt = c
            .encrypt_with_prefix(
                br#"{"demo_resp":"good luck"}"#,
                KeySlot::Current,
                b"707722b803182950",
            )
            .expect("encrypts");
        assert_eq!(
            encrypt,
            "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
        );
        assert_eq!(
            c.msg_signature("1713424427", "415670741", &encrypt),
            "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
        );
    }

    #[test]
    fn signature_sorting_is_bytewise_not_numeric() {
        // "10" < "9" byte-wise; numeric sorting would give a different concatenation.
        assert_eq!(sha1_signature(&["9", "10"]), sha1_signature(&["10", "9"]));
        let mut h = Sha1::new();
        h.update(b"109");
        assert_eq!(sha1_signature(&["9", "10"]), hex::encode(h.finalize()));
    }

    #[test]
    fn uppercase_or_truncated_signatures_are_rejected() {
        let c = official();
        let upper = "F464B24FC39322E44B38AA78F5EDD27BD1441696";
        assert!(!c.verify_signature(upper, "1714036504", "1514711492"));
        assert!(!c.verify_signature(
            "f464b24fc39322e44b38aa78f5edd27bd144169",
            "1714036504",
            "1514711492"
        ));
        assert!(!c.verify_signature("", "1714036504", "1514711492"));
    }

    #[test]
    fn aes_key_ignores_trailing_bits_of_the_last_character() {
        let lenient = AesKey::parse(&format!("{}B", "A".repeat(42))).expect("console key");
        let plain = AesKey::parse(KEY_43A).expect("valid");
        assert_eq!(lenient.0, plain.0);
        assert_eq!(
            AesKey::parse(&format!("{}D", "A".repeat(42)))
                .expect("valid")
                .0,
            plain.0
        );
        // 'E' sets a bit that belongs to the key, so it must change the last byte.
        assert_ne!(
            AesKey::parse(&format!("{}E", "A".repeat(42)))
                .expect("valid")
                .0,
            plain.0
        );
    }

    #[test]
    fn aes_key_rejects_wrong_length_or_alphabet() {
        for bad in [
            "A".repeat(42),
            "A".repeat(44),
            format!("{}+", "A".repeat(42)),
            format!("{}=", "A".repeat(42)),
            format!("{}é", "A".repeat(41)),
            String::new(),
        ] {
            assert_eq!(
                AesKey::parse(&bad).map(|_| ()),
                Err(CryptoError::IllegalAesKey),
                "{bad:?}"
            );
        }
        assert_eq!(
            MessageCrypto::new(TOKEN, APPID, KEY_43A, Some("short")).map(|_| ()),
            Err(CryptoError::IllegalAesKey)
        );
    }

    #[test]
    fn debug_output_never_shows_token_or_keys() {
        let c = MessageCrypto::new("sekrit-token", APPID, OTHER_KEY, Some(KEY_43A)).expect("valid");
        assert_eq!(
            format!("{c:?}"),
            "MessageCrypto { token: \"<redacted>\", appid: \"wxba5fad812f8e6fb9\", \
             current: AesKey(<redacted>), previous: Some(AesKey(<redacted>)) }"
        );
        assert_eq!(format!("{:?}", c.current), "AesKey(<redacted>)");
    }

    #[test]
    fn error_codes_follow_the_reference_library() {
        let all = [
            CryptoError::ValidateSignature,
            CryptoError::ParseXml,
            CryptoError::ComputeSignature,
            CryptoError::IllegalAesKey,
            CryptoError::ValidateAppid,
            CryptoError::EncryptAes,
            CryptoError::DecryptAes,
            CryptoError::IllegalBuffer,
            CryptoError::EncodeBase64,
            CryptoError::DecodeBase64,
            CryptoError::GenReturnXml,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.code(), -40001 - i as i32);
        }
    }

    #[test]
    fn decrypt_maps_each_failure_to_its_error() {
        let c = official();
        assert_eq!(c.decrypt("not base64!"), Err(CryptoError::DecodeBase64));
        assert_eq!(c.decrypt(""), Err(CryptoError::DecryptAes));
        assert_eq!(
            c.decrypt(&STANDARD.encode([0u8; 15])),
            Err(CryptoError::DecryptAes)
        );
        // One block decrypts to noise whose padding (almost surely) is invalid; the framing
        // checks must answer IllegalBuffer whatever the noise is.
        let err = c.decrypt(&STANDARD.encode([7u8; 16])).map(|_| ());
        assert_eq!(err, Err(CryptoError::IllegalBuffer));
    }

    #[test]
    fn short_or_lying_frames_are_illegal_buffers() {
        // Valid padding but fewer than 20 bytes of frame.
        let mut short = vec![0u8; 10];
        short.extend([22u8; 22]);
        assert_eq!(unframe(&short), Err(CryptoError::IllegalBuffer));
        // msg_len claims more bytes than present.
        let mut lying = vec![0u8; 16];
        lying.extend(1000u32.to_be_bytes());
        lying.extend([12u8; 12]);
        assert_eq!(unframe(&lying), Err(CryptoError::IllegalBuffer));
        // Padding bytes that disagree.
        let mut uneven = vec![0u8; 30];
        uneven.extend([1u8, 2u8]);
        assert_eq!(unframe(&uneven), Err(CryptoError::IllegalBuffer));
        assert_eq!(unframe(&[0u8; 32]), Err(CryptoError::IllegalBuffer));
        assert_eq!(unframe(&[33u8; 64]), Err(CryptoError::IllegalBuffer));
        assert_eq!(unframe(&[]), Err(CryptoError::IllegalBuffer));
    }

    #[test]
    fn decrypt_with_a_foreign_appid_is_validate_appid() {
        let theirs = MessageCrypto::new(TOKEN, "wx0000000000000000", KEY_43A, None).expect("valid");
        let sealed = theirs
            .encrypt(b"hello", KeySlot::Current)
            .expect("encrypts");
        assert_eq!(official().decrypt(&sealed), Err(CryptoError::ValidateAppid));
    }

    #[test]
    fn previous_key_opens_messages_sealed_before_rotation() {
        let before = MessageCrypto::new(TOKEN, APPID, KEY_43A, None).expect("valid");
        let after = MessageCrypto::new(TOKEN, APPID, OTHER_KEY, Some(KEY_43A)).expect("valid");
        let sealed = before
            .encrypt(b"in flight", KeySlot::Current)
            .expect("encrypts");
        assert_eq!(
            after.decrypt(&sealed),
            Ok((b"in flight".to_vec(), KeySlot::Previous))
        );
        // The reply sealed with the previous slot opens with the old key alone.
        let reply = after
            .encrypt(b"reply", KeySlot::Previous)
            .expect("encrypts");
        assert_eq!(
            before.decrypt(&reply),
            Ok((b"reply".to_vec(), KeySlot::Current))
        );
    }

    #[test]
    fn previous_slot_without_a_previous_key_uses_the_current_key() {
        let c = official();
        let prefix = [9u8; 16];
        assert_eq!(
            c.encrypt_with_prefix(b"x", KeySlot::Previous, &prefix),
            c.encrypt_with_prefix(b"x", KeySlot::Current, &prefix)
        );
    }

    #[test]
    fn when_both_keys_fail_the_current_keys_error_is_returned() {
        let foreign =
            MessageCrypto::new(TOKEN, "wx0000000000000000", KEY_43A, None).expect("valid");
        let sealed = foreign
            .encrypt(b"hello", KeySlot::Current)
            .expect("encrypts");
        // Current key is right but the appid is wrong; the previous key yields noise.
        let rotated = MessageCrypto::new(TOKEN, APPID, KEY_43A, Some(OTHER_KEY)).expect("valid");
        assert_eq!(rotated.decrypt(&sealed), Err(CryptoError::ValidateAppid));
    }

    #[test]
    fn round_trip_holds_for_every_length_around_the_block_edge() {
        let c = official();
        for len in 0..=200usize {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let sealed = c.encrypt(&msg, KeySlot::Current).expect("encrypts");
            let raw = STANDARD.decode(&sealed).expect("base64");
            assert_eq!(raw.len() % PAD_BLOCK, 0, "len {len}");
            assert_eq!(c.decrypt(&sealed), Ok((msg, KeySlot::Current)), "len {len}");
        }
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_returns_the_message(
            msg in proptest::collection::vec(any::<u8>(), 0..=200),
            prefix in any::<[u8; 16]>(),
        ) {
            let c = official();
            let sealed = c.encrypt_with_prefix(&msg, KeySlot::Current, &prefix).expect("encrypts");
            prop_assert_eq!(c.decrypt(&sealed), Ok((msg, KeySlot::Current)));
        }

        #[test]
        fn decrypt_of_arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = official().decrypt(&s);
        }

        #[test]
        fn decrypt_of_arbitrary_ciphertext_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..=300),
        ) {
            let c = MessageCrypto::new(TOKEN, APPID, KEY_43A, Some(OTHER_KEY)).expect("valid");
            let _ = c.decrypt(&STANDARD.encode(&bytes));
        }

        #[test]
        fn unframe_of_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..=100),
        ) {
            let _ = unframe(&bytes);
        }
    }
}
