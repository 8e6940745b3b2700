//! An independent implementation of WeChat's side of message push, written from the spec
//! (`wechat-message-crypto.md`) without using the crate's `wechat` module, so a mistake made
//! the same way in the gateway and in the crate's own helpers cannot hide.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

pub fn sign(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort();
    hex::encode(Sha1::digest(v.concat().as_bytes()))
}

fn key(aes_key43: &str) -> [u8; 32] {
    B64.decode(format!("{aes_key43}="))
        .expect("test keys are canonical")
        .try_into()
        .expect("32 bytes")
}

pub fn encrypt(aes_key43: &str, appid: &str, msg: &[u8]) -> String {
    let k = key(aes_key43);
    let mut full = b"0123456789abcdef".to_vec();
    full.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    full.extend_from_slice(msg);
    full.extend_from_slice(appid.as_bytes());
    let pad = 32 - full.len() % 32;
    full.extend(std::iter::repeat_n(pad as u8, pad));
    let len = full.len();
    Enc::new(&k.into(), k[..16].into())
        .encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut full, len)
        .expect("aligned");
    B64.encode(full)
}

/// Returns (msg, appid).
pub fn decrypt(aes_key43: &str, b64: &str) -> (Vec<u8>, String) {
    let k = key(aes_key43);
    let mut buf = B64.decode(b64).expect("base64");
    let plain = Dec::new(&k.into(), k[..16].into())
        .decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut buf)
        .expect("aligned")
        .to_vec();
    let pad = *plain.last().expect("non-empty") as usize;
    assert!((1..=32).contains(&pad), "pkcs7/32 pad byte");
    let body = &plain[..plain.len() - pad];
    let len = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
    (
        body[20..20 + len].to_vec(),
        String::from_utf8(body[20 + len..].to_vec()).unwrap(),
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A `waybill_notify_query` as WeChat sends it, in the given format (plaintext document).
pub fn query_doc(
    xml: bool,
    waybill_id: &str,
    receiver: &str,
    sender: &str,
    create_time: i64,
) -> String {
    if xml {
        format!(
            "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><FromUserName><![CDATA[oHt_80DRclK4qjKfdYnPg6RxxsNI]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[waybill_notify_query]]></Event><WaybillId><![CDATA[{waybill_id}]]></WaybillId><SenderPhone><![CDATA[{sender}]]></SenderPhone><ReceiverPhone><![CDATA[{receiver}]]></ReceiverPhone></xml>"
        )
    } else {
        serde_json::json!({
            "ToUserName": "gh_97417a04a28d", "FromUserName": "oHt_80DRclK4qjKfdYnPg6RxxsNI", "CreateTime": create_time,
            "MsgType": "event", "Event": "waybill_notify_query", "WaybillId": waybill_id, "SenderPhone": sender, "ReceiverPhone": receiver
        })
        .to_string()
    }
}

/// (query string, body) of a push in `mode` ("plaintext" | "compatible" | "secure").
#[allow(clippy::too_many_arguments)]
pub fn seal(
    mode: &str,
    xml: bool,
    token: &str,
    aes_key43: &str,
    appid: &str,
    doc: &str,
    ts: i64,
    nonce: &str,
) -> (String, String) {
    let ts = ts.to_string();
    let signature = sign(&[token, &ts, nonce]);
    if mode == "plaintext" {
        return (
            format!("signature={signature}&timestamp={ts}&nonce={nonce}"),
            doc.to_string(),
        );
    }
    let enc = encrypt(aes_key43, appid, doc.as_bytes());
    let msg_signature = sign(&[token, &ts, nonce, &enc]);
    let query = format!(
        "signature={signature}&timestamp={ts}&nonce={nonce}&openid=oHt_80DRclK4qjKfdYnPg6RxxsNI&encrypt_type=aes&msg_signature={msg_signature}"
    );
    let body = match (mode, xml) {
        ("secure", false) => serde_json::json!({ "ToUserName": "gh_97417a04a28d", "Encrypt": enc }).to_string(),
        ("secure", true) => format!("<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"),
        (_, false) => {
            let mut v: serde_json::Value = serde_json::from_str(doc).unwrap();
            v["Encrypt"] = serde_json::Value::String(enc);
            v.to_string()
        }
        (_, true) => doc.replace("</xml>", &format!("<Encrypt><![CDATA[{enc}]]></Encrypt></xml>")),
    };
    (query, body)
}

/// Text of the first `<tag>` in an XML string, CDATA or not.
pub fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let v = &xml[start..end];
    Some(
        v.strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(v)
            .to_string(),
    )
}

/// Verify and open our reply; returns the plaintext document.
pub fn open_reply(
    mode: &str,
    xml: bool,
    token: &str,
    aes_key43: &str,
    appid: &str,
    body: &str,
    nonce: &str,
) -> String {
    if mode == "plaintext" {
        return body.to_string();
    }
    let (enc, sig, ts, n) = if xml {
        (
            xml_field(body, "Encrypt").unwrap(),
            xml_field(body, "MsgSignature").unwrap(),
            xml_field(body, "TimeStamp").unwrap(),
            xml_field(body, "Nonce").unwrap(),
        )
    } else {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["TimeStamp"].is_number(),
            "TimeStamp is a JSON number: {body}"
        );
        assert!(v["Nonce"].is_string(), "Nonce is a JSON string: {body}");
        (
            v["Encrypt"].as_str().unwrap().to_string(),
            v["MsgSignature"].as_str().unwrap().to_string(),
            v["TimeStamp"].to_string(),
            v["Nonce"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(n, nonce, "the reply reuses the request nonce");
    assert!(
        (now() - ts.parse::<i64>().unwrap()).abs() < 60,
        "TimeStamp is now"
    );
    assert_eq!(sig, sign(&[token, &ts, &n, &enc]), "MsgSignature verifies");
    let (msg, got_appid) = decrypt(aes_key43, &enc);
    assert_eq!(got_appid, appid);
    String::from_utf8(msg).unwrap()
}
