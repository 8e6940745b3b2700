//! WeChat Pay API v2 payment-result notifications (spec `wechatpay-v2-notify.md`): the XML
//! read safely (no DTD, so no entities beyond XML's five and character references), the v2
//! signature (MD5 or HMAC-SHA256 keyed with the APIv2 key, over every non-empty field but
//! `sign`), verified in constant time, and the reply WeChat Pay expects. Pure.
//!
//! The key and raw bodies never reach a log or a `Debug` output here.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::xml;

/// The fields of a notification, by name (byte order: the order the signature sorts by).
pub type Fields = BTreeMap<String, String>;

/// Why a notification was not accepted as genuine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("the notification has no sign")]
    MissingSign,
    #[error("unknown sign_type {0:?}")]
    UnknownSignType(String),
    #[error("the signature does not match")]
    BadSignature,
}

/// The two v2 digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    /// As `sign_type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> PayError {
    PayError::Malformed(e.to_string())
}

/// Reads `<xml><name>value</name>…</xml>` into fields: CDATA and text alike, entities
/// decoded ([`crate::xml`]); an attribute, a nested or repeated element, or a field name that
/// is not `[A-Za-z0-9_]` (WeChat Pay's are lowercase words joined by `_`) is refused too (the
/// signature could not be trusted).
pub fn parse_xml(body: &[u8]) -> Result<Fields, PayError> {
    let children = xml::read(body, 2, xml::Attributes::Refuse).map_err(|e| match e {
        xml::XmlError::TooDeep => malformed("nested elements are not part of the protocol"),
        xml::XmlError::Malformed(reason) => PayError::Malformed(reason),
    })?;
    let mut fields = Fields::new();
    for (name, node) in children {
        // quick-xml takes any bytes up to `>` or `/` as a name (`<a<b>`): such a "field"
        // would go into the signed string, and could never be rendered back.
        if !is_field_name(&name) {
            return Err(malformed("a field name must be letters, digits and _"));
        }
        let xml::Node::Leaf(value) = node else {
            return Err(malformed("nested elements are not part of the protocol"));
        };
        if fields.contains_key(&name) {
            return Err(malformed(format!("field {name} repeats")));
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `stringA`: every field but `sign` with a non-empty value, sorted by name (bytes), as
/// `name=value` joined by `&`; raw values, no URL-encoding.
pub fn string_to_sign(fields: &Fields) -> String {
    fields
        .iter()
        .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The v2 signature: upper-case hex of MD5 or HMAC-SHA256 (keyed with `key`) over
/// `stringA&key=<key>`.
pub fn sign(fields: &Fields, key: &str, sign_type: SignType) -> String {
    let message = format!("{}&key={key}", string_to_sign(fields));
    let digest = match sign_type {
        SignType::Md5 => Md5::digest(message.as_bytes()).to_vec(),
        SignType::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .expect("HMAC takes a key of any length");
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    hex::encode_upper(digest)
}

/// Verifies the notification's `sign` with `key`. The algorithm is `sign_type` when given
/// (`MD5` | `HMAC-SHA256`, anything else refused), else chosen by the sign's length (32: MD5,
/// 64: HMAC-SHA256); both are keyed, so the choice lets nobody without the key forge one.
/// The comparison takes the same time wherever the signatures differ.
pub fn verify(fields: &Fields, key: &str) -> Result<SignType, PayError> {
    let given = fields
        .get("sign")
        .filter(|s| !s.is_empty())
        .ok_or(PayError::MissingSign)?;
    let sign_type = match fields.get("sign_type").map(String::as_str) {
        Some("MD5") => SignType::Md5,
        Some("HMAC-SHA256") => SignType::HmacSha256,
        Some(other) if !other.is_empty() => {
            return Err(PayError::UnknownSignType(other.chars().take(32).collect()))
        }
        _ => match given.len() {
            32 => SignType::Md5,
            64 => SignType::HmacSha256,
            _ => return Err(PayError::BadSignature),
        },
    };
    let expected = sign(fields, key, sign_type);
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(sign_type)
    } else {
        Err(PayError::BadSignature)
    }
}

/// The fields as WeChat Pay sends them (every value in CDATA): for tests and the demo.
pub fn to_xml(fields: &Fields) -> String {
    let mut out = String::from("<xml>");
    for (k, v) in fields {
        out.push_str(&format!("<{k}>"));
        xml::push_cdata(&mut out, v);
        out.push_str(&format!("</{k}>"));
    }
    out.push_str("</xml>");
    out
}

/// The answer WeChat Pay expects: compact XML, `SUCCESS` only when the notification was
/// received and verified (anything else makes it deliver again later).
pub fn reply(success: bool, msg: &str) -> String {
    let code = if success { "SUCCESS" } else { "FAIL" };
    let msg = msg.replace("]]>", "");
    format!(
        "<xml><return_code><![CDATA[{code}]]></return_code>\
         <return_msg><![CDATA[{msg}]]></return_msg></xml>"
    )
}

/// `time_end` (`yyyyMMddHHmmss`, Beijing time) as Unix seconds.
pub fn parse_time_end(s: &str) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    Some(t.and_utc().timestamp() - 8 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "TestKeyForDocsOnly0123456789abcd";

    /// Spec §3.6 vector A (MD5, no sign_type).
    pub const VECTOR_A: &str = "<xml>
<appid><![CDATA[wxd678efh567hg6787]]></appid>
<attach><![CDATA[wxexpress 测试]]></attach>
<bank_type><![CDATA[OTHERS]]></bank_type>
<cash_fee>1990</cash_fee>
<fee_type><![CDATA[CNY]]></fee_type>
<is_subscribe><![CDATA[N]]></is_subscribe>
<mch_id><![CDATA[1230000109]]></mch_id>
<nonce_str><![CDATA[5K8264ILTKCH16CQ2502SI8ZNMTM67VS]]></nonce_str>
<openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid>
<out_trade_no><![CDATA[WX20241124093015A1B2]]></out_trade_no>
<result_code><![CDATA[SUCCESS]]></result_code>
<return_code><![CDATA[SUCCESS]]></return_code>
<time_end><![CDATA[20241124093021]]></time_end>
<total_fee>1990</total_fee>
<trade_type><![CDATA[JSAPI]]></trade_type>
<transaction_id><![CDATA[4200001234202411241234567890]]></transaction_id>
<sign><![CDATA[9F01333F102B8BD20BEFD52DDCA4BC45]]></sign>
</xml>";

    /// Spec §3.6 vector C (MD5; coupons, an empty element, XML-special characters).
    const VECTOR_C: &str = "<xml>
<appid><![CDATA[wxd678efh567hg6787]]></appid>
<attach><![CDATA[a&b<c>]]></attach>
<bank_type><![CDATA[CMB_CREDIT]]></bank_type>
<cash_fee>1890</cash_fee>
<coupon_count>1</coupon_count>
<coupon_fee>100</coupon_fee>
<coupon_fee_0>100</coupon_fee_0>
<coupon_id_0><![CDATA[10000]]></coupon_id_0>
<coupon_type_0><![CDATA[CASH]]></coupon_type_0>
<device_info><![CDATA[]]></device_info>
<fee_type><![CDATA[CNY]]></fee_type>
<is_subscribe><![CDATA[N]]></is_subscribe>
<mch_id><![CDATA[1230000109]]></mch_id>
<nonce_str><![CDATA[ibuaiVcKdpRxkhJA]]></nonce_str>
<openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></openid>
<out_trade_no><![CDATA[WX20241124093015A1B3]]></out_trade_no>
<result_code><![CDATA[SUCCESS]]></result_code>
<return_code><![CDATA[SUCCESS]]></return_code>
<settlement_total_fee>1990</settlement_total_fee>
<time_end><![CDATA[20241124094500]]></time_end>
<total_fee>1990</total_fee>
<trade_type><![CDATA[JSAPI]]></trade_type>
<transaction_id><![CDATA[4200001234202411241234567891]]></transaction_id>
<sign><![CDATA[2030413A5502A112C912A0B1B3D0FBB6]]></sign>
</xml>";

    const B_SIGN: &str = "A0F6342234340CAB3CA9C571F82C0F8FADE9DC778C610E8918F1148D5F5E1580";

    fn vector_b() -> String {
        VECTOR_A
            .replace(
                "<time_end>",
                "<sign_type><![CDATA[HMAC-SHA256]]></sign_type>\n<time_end>",
            )
            .replace("9F01333F102B8BD20BEFD52DDCA4BC45", B_SIGN)
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_official_sec_rules_vector_signs_with_both_digests() {
        let f = fields(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ]);
        let key = "192006250b4c09247ec02edce69f6a2d";
        assert_eq!(
            string_to_sign(&f),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
        );
        assert_eq!(
            sign(&f, key, SignType::Md5),
            "9A0A8659F005D6984697E2CA0A9CF3B7"
        );
        assert_eq!(
            sign(&f, key, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
        let w = fields(&[("test1", "test1"), ("test2", "test2")]);
        assert_eq!(
            sign(&w, key, SignType::Md5),
            "1E3A8D73B5A4AEE787C0F68B5DAB8520"
        );
        assert_eq!(
            sign(&w, key, SignType::HmacSha256),
            "EDAC6D70D2FDF5A2382F8204FC96A1918017E46ACC5297F565ED1A7610ACF659"
        );
        let pay = fields(&[
            ("appId", "wxd678efh567hg6787"),
            ("timeStamp", "1490840662"),
            ("nonceStr", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            ("package", "prepay_id=wx2017033010242291fcfe0db70013231072"),
            ("signType", "MD5"),
        ]);
        assert_eq!(
            sign(&pay, "qazwsxedcrfvtgbyhnujmikolp111111", SignType::Md5),
            "22D9B4E54AB1950F51E0649E8810ACD6"
        );
    }

    #[test]
    fn vectors_a_b_and_c_verify() {
        let a = parse_xml(VECTOR_A.as_bytes()).unwrap();
        assert_eq!(a["attach"], "wxexpress 测试");
        assert_eq!(a["total_fee"], "1990");
        assert_eq!(verify(&a, KEY), Ok(SignType::Md5));

        let b = parse_xml(vector_b().as_bytes()).unwrap();
        assert_eq!(verify(&b, KEY), Ok(SignType::HmacSha256));

        let c = parse_xml(VECTOR_C.as_bytes()).unwrap();
        assert_eq!(c["attach"], "a&b<c>");
        assert_eq!(c["device_info"], "");
        assert!(string_to_sign(&c).starts_with("appid=wxd678efh567hg6787&attach=a&b<c>&bank_type"));
        assert!(!string_to_sign(&c).contains("device_info"));
        assert_eq!(verify(&c, KEY), Ok(SignType::Md5));
        let without_empty = VECTOR_C.replace("<device_info><![CDATA[]]></device_info>\n", "");
        assert_eq!(
            verify(&parse_xml(without_empty.as_bytes()).unwrap(), KEY),
            Ok(SignType::Md5)
        );
    }

    #[test]
    fn the_negative_vectors_are_rejected() {
        let b = parse_xml(vector_b().as_bytes()).unwrap();
        // B verified with MD5: the buggy verifier's value is not B's sign.
        assert_eq!(
            sign(&b, KEY, SignType::Md5),
            "55F3C56139129DA1351BD88CDC56353F"
        );
        let mut b_as_md5 = b.clone();
        b_as_md5.insert("sign_type".into(), "MD5".into());
        assert_eq!(verify(&b_as_md5, KEY), Err(PayError::BadSignature));
        // B with sign_type dropped from the string: a different HMAC, so it must not pass.
        let mut b_dropped = b.clone();
        b_dropped.remove("sign_type");
        assert_eq!(
            sign(&b_dropped, KEY, SignType::HmacSha256),
            "8CF31C10463480B01C9072E33DDEA61F08E6AEEBA785940C67A40FDBB51D286C"
        );
        assert_eq!(verify(&b_dropped, KEY), Err(PayError::BadSignature));
        // A with total_fee changed to 1, sign unchanged.
        let mut a = parse_xml(VECTOR_A.as_bytes()).unwrap();
        let mut tampered = a.clone();
        tampered.insert("total_fee".into(), "1".into());
        assert_eq!(
            sign(&tampered, KEY, SignType::Md5),
            "A9FCBBBF538A245C7AB528EDC4DA546F"
        );
        assert_eq!(verify(&tampered, KEY), Err(PayError::BadSignature));
        // A verified with the official sample key.
        let sample = "192006250b4c09247ec02edce69f6a2d";
        assert_eq!(
            sign(&a, sample, SignType::Md5),
            "64A2C7896CF790B2872DC30673B4B8D0"
        );
        assert_eq!(verify(&a, sample), Err(PayError::BadSignature));
        // A lower-case sign, an unknown sign_type, and no sign.
        let upper = a["sign"].clone();
        a.insert("sign".into(), upper.to_lowercase());
        assert_eq!(verify(&a, KEY), Err(PayError::BadSignature));
        a.insert("sign".into(), upper);
        a.insert("sign_type".into(), "SHA1".into());
        assert_eq!(
            verify(&a, KEY),
            Err(PayError::UnknownSignType("SHA1".into()))
        );
        a.remove("sign_type");
        a.remove("sign");
        assert_eq!(verify(&a, KEY), Err(PayError::MissingSign));
    }

    #[test]
    fn unsafe_or_ambiguous_xml_is_refused() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><a>&x;</a></xml>";
        assert!(matches!(
            parse_xml(xxe.as_bytes()),
            Err(PayError::Malformed(_))
        ));
        let custom_entity = "<xml><a>&x;</a></xml>";
        assert!(parse_xml(custom_entity.as_bytes()).is_err());
        for bad in [
            "<xml><a>1</a><a>2</a></xml>",
            "<xml><a><b>1</b></a></xml>",
            "<root><a>1</a></root>",
            "<xml><a x=\"1\">1</a></xml>",
            "<xml>text<a>1</a></xml>",
            "<xml><a>1</a>",
            "<xml><a>1</a></xml><xml></xml>",
            "<?php x ?><xml></xml>",
            // Found by fuzzing: quick-xml reads `sz<tim` as one element name.
            "<xml><sz<time_/></xml>",
            "<xml><a-b>1</a-b></xml>",
            "<xml><é>1</é></xml>",
        ] {
            assert!(parse_xml(bad.as_bytes()).is_err(), "{bad}");
        }
        let ok = parse_xml(b"<?xml version=\"1.0\"?><xml><a>1 &amp; 2</a><b/></xml>").unwrap();
        assert_eq!(ok["a"], "1 & 2");
        assert_eq!(ok["b"], "");
    }

    #[test]
    fn to_xml_round_trips_and_the_reply_is_compact() {
        let mut f = fields(&[("a", "x]]>y"), ("b", "中文&<>")]);
        f.insert("sign".into(), sign(&f, KEY, SignType::Md5));
        let back = parse_xml(to_xml(&f).as_bytes()).unwrap();
        assert_eq!(back, f);
        assert_eq!(verify(&back, KEY), Ok(SignType::Md5));
        assert_eq!(
            reply(true, "OK"),
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
        assert_eq!(parse_time_end("20241124093021"), Some(1_732_411_821));
    }
}
