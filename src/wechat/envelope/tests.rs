use super::*;
use crate::wechat::crypto::{CryptoError, KeySlot, MessageCrypto};
use proptest::prelude::*;
use serde_json::json;

const TOKEN: &str = "AAAAA";
const KEY_43A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wxba5fad812f8e6fb9";
const SECURE_BODY: &str = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;
const SECURE_QUERY: &str = "signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3";
const SECURE_NOW: i64 = 1714112445;
const WINDOW: i64 = 300;
const ALL_MODES: [MessageMode; 3] = [
    MessageMode::Plaintext,
    MessageMode::Compatible,
    MessageMode::Secure,
];
const ALL_FORMATS: [MessageFormat; 2] = [MessageFormat::Json, MessageFormat::Xml];

fn official() -> MessageCrypto {
    MessageCrypto::new(TOKEN, APPID, KEY_43A, None).expect("valid key")
}

fn query_from(qs: &str) -> CallbackQuery {
    let mut q = CallbackQuery::default();
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "signature" => q.signature = v,
            "timestamp" => q.timestamp = v,
            "nonce" => q.nonce = v,
            "openid" => q.openid = v,
            "encrypt_type" => q.encrypt_type = v,
            "msg_signature" => q.msg_signature = v,
            "echostr" => q.echostr = v,
            other => panic!("unexpected query parameter {other}"),
        }
    }
    q
}

fn doc(value: Value) -> Document {
    match value {
        Value::Object(map) => map,
        _ => panic!("test documents are objects"),
    }
}

fn flip_last_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let last = chars.last_mut().expect("non-empty");
    *last = if *last == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

fn query_request() -> Document {
    doc(json!({
        "ToUserName": "gh_ea48699fb159",
        "FromUserName": "oHt_80DRclK4qjKfdYnPg6RxxsNI",
        "CreateTime": 1600152165,
        "MsgType": "event",
        "Event": "waybill_notify_query",
        "WaybillId": "557007127498128",
        "SenderPhone": "13763357711",
        "ReceiverPhone": "13763357711"
    }))
}

fn query_reply() -> Document {
    doc(json!({
        "ToUserName": "oHt_80DRclK4qjKfdYnPg6RxxsNI",
        "FromUserName": "gh_ea48699fb159",
        "CreateTime": 1600152166,
        "MsgType": "event",
        "Event": "waybill_notify_query",
        "ResultCode": 0,
        "ResultMsg": "OK <&> ]]> done",
        "WaybillCreateTime": 1600000000,
        "Path": [
            { "ActionType": 300002, "ActionTime": 1600100000, "ActionMsg": "派送中，派件员张三 13800000000", "DeliveryCourierName": "张三", "DeliveryCourierPhone": "13800000000" },
            { "ActionType": 100001, "ActionTime": 1600000000, "ActionMsg": "已揽件" }
        ]
    }))
}

/// What a document looks like after an XML round trip: XML has only text.
fn as_xml_strings(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(as_xml_strings).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_xml_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn expected_after(format: MessageFormat, d: &Document) -> Document {
    match format {
        MessageFormat::Json => d.clone(),
        MessageFormat::Xml => doc(as_xml_strings(&Value::Object(d.clone()))),
    }
}

// ---- official vectors ------------------------------------------------------------------

#[test]
fn reply_official_vector_renders_as_the_documented_json() {
    let c = official();
    let encrypt = c
        .encrypt_with_prefix(
            br#"{"demo_resp":"good luck"}"#,
            KeySlot::Current,
            b"707722b803182950",
        )
        .expect("encrypts");
    let env = EncryptedEnvelope {
        msg_signature: c.msg_signature("1713424427", "415670741", &encrypt),
        encrypt,
        timestamp: 1713424427,
        nonce: "415670741".to_owned(),
    };
    let documented = r#"{
        "Encrypt": "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==",
        "MsgSignature": "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1",
        "TimeStamp": 1713424427,
        "Nonce": "415670741"
    }"#;
    let compact: String = documented.split_whitespace().collect();
    assert_eq!(render_encrypted_reply(MessageFormat::Json, &env), compact);
    assert_eq!(
        parse_encrypted_reply(MessageFormat::Json, compact.as_bytes()),
        Ok(env.clone())
    );
    assert_eq!(
        open_reply(
            &c,
            MessageMode::Secure,
            MessageFormat::Json,
            compact.as_bytes(),
            "415670741"
        ),
        Ok(doc(json!({"demo_resp": "good luck"})))
    );
}

#[test]
fn encrypted_reply_renders_as_the_documented_xml() {
    let env = EncryptedEnvelope {
        encrypt: "abc=".to_owned(),
        msg_signature: "0123".to_owned(),
        timestamp: 1713424427,
        nonce: "415670741".to_owned(),
    };
    let xml = render_encrypted_reply(MessageFormat::Xml, &env);
    assert_eq!(
        xml,
        "<xml><Encrypt><![CDATA[abc=]]></Encrypt><MsgSignature><![CDATA[0123]]></MsgSignature>\
         <TimeStamp>1713424427</TimeStamp><Nonce><![CDATA[415670741]]></Nonce></xml>"
    );
    assert_eq!(
        parse_encrypted_reply(MessageFormat::Xml, xml.as_bytes()),
        Ok(env)
    );
}

#[test]
fn encrypted_reply_accepts_timestamp_and_nonce_as_numbers_or_strings() {
    let body = br#"{"Encrypt":"e","MsgSignature":"s","TimeStamp":"17","Nonce":415670741}"#;
    let env = parse_encrypted_reply(MessageFormat::Json, body).expect("parses");
    assert_eq!((env.timestamp, env.nonce.as_str()), (17, "415670741"));
    assert_eq!(
        parse_encrypted_reply(
            MessageFormat::Json,
            br#"{"Encrypt":"e","MsgSignature":"s","Nonce":"n"}"#
        ),
        Err(EnvelopeError::MissingField("TimeStamp"))
    );
}

#[test]
fn plaintext_mode_official_vector_opens() {
    let body = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714037059,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
    let q = query_from(
        "signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037059&nonce=486452656",
    );
    let opened = open_request(
        &official(),
        MessageMode::Plaintext,
        MessageFormat::Json,
        &q,
        body.as_bytes(),
        1714037059,
        WINDOW,
    )
    .expect("opens");
    assert_eq!(get_str(&opened.doc, "debug_str"), Some("hello world"));
    assert_eq!(get_i64(&opened.doc, "CreateTime"), Some(1714037059));
    assert_eq!((opened.key_slot, opened.was_encrypted), (None, false));
}

#[test]
fn secure_mode_official_vector_opens_request() {
    let opened = open_request(
        &official(),
        MessageMode::Secure,
        MessageFormat::Json,
        &query_from(SECURE_QUERY),
        SECURE_BODY.as_bytes(),
        SECURE_NOW,
        WINDOW,
    )
    .expect("opens");
    assert_eq!(get_str(&opened.doc, "Event"), Some("debug_demo"));
    assert_eq!(
        get_str(&opened.doc, "FromUserName"),
        Some("o9AgO5Kd5ggOC-bXrbNODIiE3bGY")
    );
    assert_eq!(get_i64(&opened.doc, "CreateTime"), Some(1714112445));
    assert_eq!(
        (opened.key_slot, opened.was_encrypted),
        (Some(KeySlot::Current), true)
    );
}

fn open_secure_vector(
    crypto: &MessageCrypto,
    q: &CallbackQuery,
    body: &str,
    now: i64,
) -> Result<OpenedMessage, OpenError> {
    open_request(
        crypto,
        MessageMode::Secure,
        MessageFormat::Json,
        q,
        body.as_bytes(),
        now,
        WINDOW,
    )
}

#[test]
fn secure_request_with_a_flipped_msg_signature_is_refused() {
    let mut q = query_from(SECURE_QUERY);
    q.msg_signature = q.msg_signature.as_deref().map(flip_last_char);
    let err = open_secure_vector(&official(), &q, SECURE_BODY, SECURE_NOW).unwrap_err();
    assert_eq!(err, OpenError::BadSignature);
}

#[test]
fn secure_request_with_a_flipped_ciphertext_char_is_refused() {
    let body = SECURE_BODY.replacen("+qdx1", "+qdx2", 1);
    let err =
        open_secure_vector(&official(), &query_from(SECURE_QUERY), &body, SECURE_NOW).unwrap_err();
    assert_eq!(err, OpenError::BadSignature);
}

#[test]
fn secure_request_with_a_changed_timestamp_is_refused() {
    let mut q = query_from(SECURE_QUERY);
    q.timestamp = Some("1714112446".to_owned());
    let err = open_secure_vector(&official(), &q, SECURE_BODY, SECURE_NOW).unwrap_err();
    assert_eq!(err, OpenError::BadSignature);
}

#[test]
fn stale_or_unparsable_timestamps_are_refused_before_anything_else() {
    let q = query_from(SECURE_QUERY);
    for now in [SECURE_NOW + WINDOW + 1, SECURE_NOW - WINDOW - 1] {
        let err = open_secure_vector(&official(), &q, "garbage", now).unwrap_err();
        assert_eq!(err, OpenError::StaleTimestamp);
    }
    assert!(open_secure_vector(&official(), &q, SECURE_BODY, SECURE_NOW + WINDOW).is_ok());
    let mut bad = q.clone();
    bad.timestamp = Some("17141124x5".to_owned());
    assert_eq!(
        open_secure_vector(&official(), &bad, SECURE_BODY, SECURE_NOW).unwrap_err(),
        OpenError::StaleTimestamp
    );
    let far = CallbackQuery {
        timestamp: Some(i64::MIN.to_string()),
        ..q.clone()
    };
    assert_eq!(
        open_secure_vector(&official(), &far, SECURE_BODY, i64::MAX).unwrap_err(),
        OpenError::StaleTimestamp
    );
    let missing = CallbackQuery {
        timestamp: None,
        ..q
    };
    assert_eq!(
        open_secure_vector(&official(), &missing, SECURE_BODY, SECURE_NOW).unwrap_err(),
        OpenError::MissingParameter("timestamp")
    );
}

#[test]
fn secure_request_for_another_appid_is_validate_appid() {
    let other = MessageCrypto::new(TOKEN, "wx0000000000000000", KEY_43A, None).expect("valid");
    let err =
        open_secure_vector(&other, &query_from(SECURE_QUERY), SECURE_BODY, SECURE_NOW).unwrap_err();
    assert_eq!(err, OpenError::Crypto(CryptoError::ValidateAppid));
}

#[test]
fn secure_mode_refuses_requests_without_encrypt_type_or_msg_signature() {
    let q = query_from(SECURE_QUERY);
    let no_type = CallbackQuery {
        encrypt_type: None,
        ..q.clone()
    };
    let raw_type = CallbackQuery {
        encrypt_type: Some("raw".to_owned()),
        ..q.clone()
    };
    let no_sig = CallbackQuery {
        msg_signature: None,
        ..q.clone()
    };
    let c = official();
    for (query, param) in [
        (no_type, "encrypt_type"),
        (raw_type, "encrypt_type"),
        (no_sig, "msg_signature"),
    ] {
        assert_eq!(
            open_secure_vector(&c, &query, SECURE_BODY, SECURE_NOW).unwrap_err(),
            OpenError::MissingParameter(param)
        );
    }
    // A valid plaintext signature is not enough in secure mode.
    let plain_body = r#"{"ToUserName":"gh","Event":"waybill_notify_query"}"#;
    assert!(matches!(
        open_secure_vector(&c, &q, plain_body, SECURE_NOW),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn compatible_mode_trusts_only_the_ciphertext() {
    let c = official();
    let (qs, body) = seal_request(
        &c,
        MessageMode::Compatible,
        MessageFormat::Json,
        &query_request(),
        SECURE_NOW,
        "nonce1",
    )
    .expect("seals");
    // An intermediary rewrites the clear copy; the signed ciphertext still wins.
    let tampered = body.replace("13763357711", "13900000000");
    assert_ne!(tampered, body);
    let opened = open_request(
        &c,
        MessageMode::Compatible,
        MessageFormat::Json,
        &query_from(&qs),
        tampered.as_bytes(),
        SECURE_NOW,
        WINDOW,
    )
    .expect("opens");
    assert_eq!(opened.doc, query_request());
    // And without encrypt_type it is refused, not read as plaintext.
    let plain_q = CallbackQuery {
        encrypt_type: None,
        msg_signature: None,
        ..query_from(&qs)
    };
    assert_eq!(
        open_request(
            &c,
            MessageMode::Compatible,
            MessageFormat::Json,
            &plain_q,
            body.as_bytes(),
            SECURE_NOW,
            WINDOW
        )
        .unwrap_err(),
        OpenError::MissingParameter("encrypt_type")
    );
}

#[test]
fn previous_key_opens_the_request_and_seals_the_reply() {
    let wechat_old = MessageCrypto::new(TOKEN, APPID, KEY_43A, None).expect("valid");
    let ours = MessageCrypto::new(TOKEN, APPID, OTHER_KEY, Some(KEY_43A)).expect("valid");
    let new_only = MessageCrypto::new(TOKEN, APPID, OTHER_KEY, None).expect("valid");
    for format in ALL_FORMATS {
        let (qs, body) = seal_request(
            &wechat_old,
            MessageMode::Secure,
            format,
            &query_request(),
            SECURE_NOW,
            "n1",
        )
        .expect("seals");
        let opened = open_request(
            &ours,
            MessageMode::Secure,
            format,
            &query_from(&qs),
            body.as_bytes(),
            SECURE_NOW,
            WINDOW,
        )
        .expect("opens with the previous key");
        assert_eq!(opened.key_slot, Some(KeySlot::Previous));
        let slot = opened.key_slot.expect("encrypted");
        let reply = seal_reply(
            &ours,
            MessageMode::Secure,
            format,
            &query_reply(),
            "n1",
            SECURE_NOW,
            slot,
        )
        .expect("seals");
        assert_eq!(
            open_reply(
                &wechat_old,
                MessageMode::Secure,
                format,
                reply.as_bytes(),
                "n1"
            ),
            Ok(expected_after(format, &query_reply()))
        );
        assert!(matches!(
            open_reply(
                &new_only,
                MessageMode::Secure,
                format,
                reply.as_bytes(),
                "n1"
            ),
            Err(OpenError::Crypto(_))
        ));
    }
}

// ---- round trips -----------------------------------------------------------------------

#[test]
fn sealed_requests_open_in_every_mode_and_format() {
    let c = official();
    for mode in ALL_MODES {
        for format in ALL_FORMATS {
            let (qs, body) = seal_request(&c, mode, format, &query_request(), SECURE_NOW, "a b&c")
                .expect("seals");
            let q = query_from(&qs);
            assert_eq!(q.nonce.as_deref(), Some("a b&c"), "{mode} {format}");
            if mode != MessageMode::Plaintext {
                assert_eq!(q.openid.as_deref(), Some("oHt_80DRclK4qjKfdYnPg6RxxsNI"));
                assert_eq!(q.encrypt_type.as_deref(), Some("aes"));
            }
            let opened = open_request(
                &c,
                mode,
                format,
                &q,
                body.as_bytes(),
                SECURE_NOW + 3,
                WINDOW,
            )
            .unwrap_or_else(|e| panic!("{mode} {format}: {e}"));
            assert_eq!(
                opened.doc,
                expected_after(format, &query_request()),
                "{mode} {format}"
            );
            assert_eq!(opened.was_encrypted, mode != MessageMode::Plaintext);
        }
    }
}

#[test]
fn secure_request_body_carries_only_to_user_name_and_encrypt() {
    let (_, body) = seal_request(
        &official(),
        MessageMode::Secure,
        MessageFormat::Json,
        &query_request(),
        SECURE_NOW,
        "n",
    )
    .expect("seals");
    let outer = parse_document(MessageFormat::Json, body.as_bytes()).expect("json");
    assert_eq!(outer.keys().collect::<Vec<_>>(), ["ToUserName", "Encrypt"]);
}

#[test]
fn sealed_replies_open_in_every_mode_and_format() {
    let c = official();
    for mode in ALL_MODES {
        for format in ALL_FORMATS {
            let reply = seal_reply(
                &c,
                mode,
                format,
                &query_reply(),
                "415670741",
                SECURE_NOW,
                KeySlot::Current,
            )
            .expect("seals");
            let opened = open_reply(&c, mode, format, reply.as_bytes(), "415670741")
                .unwrap_or_else(|e| panic!("{mode} {format}: {e}"));
            assert_eq!(
                opened,
                expected_after(format, &query_reply()),
                "{mode} {format}"
            );
        }
    }
}

#[test]
fn a_reply_with_another_nonce_or_a_bad_signature_is_refused() {
    let c = official();
    for format in ALL_FORMATS {
        let reply = seal_reply(
            &c,
            MessageMode::Secure,
            format,
            &query_reply(),
            "n1",
            SECURE_NOW,
            KeySlot::Current,
        )
        .expect("seals");
        assert_eq!(
            open_reply(&c, MessageMode::Secure, format, reply.as_bytes(), "n2"),
            Err(OpenError::BadSignature)
        );
        let mut env = parse_encrypted_reply(format, reply.as_bytes()).expect("parses");
        env.msg_signature = flip_last_char(&env.msg_signature);
        let forged = render_encrypted_reply(format, &env);
        assert_eq!(
            open_reply(&c, MessageMode::Secure, format, forged.as_bytes(), "n1"),
            Err(OpenError::BadSignature)
        );
    }
}

// ---- XML reading -----------------------------------------------------------------------

fn xml(s: &str) -> Result<Document, EnvelopeError> {
    parse_document(MessageFormat::Xml, s.as_bytes())
}

#[test]
fn xml_without_cdata_parses_as_the_official_example() {
    let d = xml("<xml>\n<ToUserName>gh_ea48699fb159</ToUserName>\n<FromUserName>oHt_80DRclK4qjKfdYnPg6RxxsNI</FromUserName>\n<MsgType>event</MsgType>\n<Event>waybill_notify_query</Event>\n<CreateTime>1600152165</CreateTime>\n<WaybillId>557007127498128</WaybillId>\n<SenderPhone>13763357711</SenderPhone>\n<ReceiverPhone>13763357711</ReceiverPhone>\n</xml>\n")
        .expect("parses");
    assert_eq!(get_str(&d, "Event"), Some("waybill_notify_query"));
    assert_eq!(get_str(&d, "CreateTime"), Some("1600152165"));
    assert_eq!(get_i64(&d, "CreateTime"), Some(1600152165));
    assert_eq!(d.len(), 8);
}

#[test]
fn xml_with_cdata_and_indentation_keeps_cdata_byte_exact() {
    let d = xml("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n    <ToUserName>\n        <![CDATA[ gh_1 ]]>\n    </ToUserName>\n    <!-- comment -->\n    <Encrypt><![CDATA[a+b/c=]]></Encrypt>\n    <Msg><![CDATA[x]]><![CDATA[y]]></Msg>\n    <Plain>  spaced  </Plain>\n    <Empty/>\n</xml>")
        .expect("parses");
    assert_eq!(get_str(&d, "ToUserName"), Some(" gh_1 "));
    assert_eq!(get_str(&d, "Encrypt"), Some("a+b/c="));
    assert_eq!(get_str(&d, "Msg"), Some("xy"));
    assert_eq!(get_str(&d, "Plain"), Some("  spaced  "));
    assert_eq!(get_str(&d, "Empty"), Some(""));
}

#[test]
fn xml_decodes_predefined_entities_and_character_references_only() {
    let d = xml("<xml><A>&lt;&amp;&gt;&quot;&apos;&#x5F20;&#19977;</A></xml>").expect("parses");
    assert_eq!(get_str(&d, "A"), Some("<&>\"'张三"));
    assert!(matches!(
        xml("<xml><A>&custom;</A></xml>"),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn xml_with_a_doctype_is_rejected() {
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><A>&xxe;</A></xml>";
    assert!(matches!(xml(xxe), Err(EnvelopeError::Malformed(m)) if m.contains("DOCTYPE")));
    assert!(matches!(
        xml("<!DOCTYPE xml><xml></xml>"),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        xml("<xml><?php x?></xml>"),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn repeated_path_elements_become_an_array_of_objects() {
    let d = xml("<xml><ResultCode>0</ResultCode><Path><ActionType>300001</ActionType><ActionMsg>派送中</ActionMsg></Path>\n<Path>\n<ActionType>100001</ActionType>\n</Path></xml>")
        .expect("parses");
    assert_eq!(
        Value::Object(d),
        json!({
            "ResultCode": "0",
            "Path": [
                { "ActionType": "300001", "ActionMsg": "派送中" },
                { "ActionType": "100001" }
            ]
        })
    );
    let one = xml("<xml><Path><A>1</A></Path></xml>").expect("parses");
    assert_eq!(Value::Object(one), json!({ "Path": [ { "A": "1" } ] }));
}

#[test]
fn repeated_names_are_read_as_arrays_in_any_order_with_unknown_names() {
    let d = xml("<xml><Z>z</Z><A>1</A><P><Lat>1.5</Lat><Q>q</Q><Q>r</Q></P><A>2</A><P>3</P></xml>")
        .expect("parses");
    assert_eq!(
        Value::Object(d),
        json!({
            "Z": "z",
            "A": ["1", "2"],
            "P": [ { "Lat": "1.5", "Q": ["q", "r"] }, "3" ]
        })
    );
}

#[test]
fn a_repeated_json_key_is_read_as_an_array_and_a_non_object_is_refused() {
    let d = parse_document(MessageFormat::Json, br#"{"A":1,"B":{"x":1},"A":2}"#).unwrap();
    assert_eq!(Value::Object(d), json!({ "A": [1, 2], "B": { "x": 1 } }));
    for bad in [&b"[1]"[..], b"\"x\"", b"{\"A\":1} trailing", b"{"] {
        assert!(parse_document(MessageFormat::Json, bad).is_err());
    }
}

#[test]
fn xml_deeper_than_three_levels_is_too_deep() {
    assert_eq!(
        xml("<xml><Path><A><B>1</B></A></Path></xml>"),
        Err(EnvelopeError::TooDeep)
    );
    let bomb = format!("<xml>{}", "<a>".repeat(100_000));
    assert_eq!(xml(&bomb), Err(EnvelopeError::TooDeep));
}

#[test]
fn malformed_xml_shapes_are_rejected() {
    for bad in [
        "",
        "   ",
        "<root><A>1</A></root>",
        "<xml><A>1</A>",
        "<xml><A>1</B></xml>",
        "<xml><A>1</A></xml><xml></xml>",
        "<xml><A>1</A></xml>trailing",
        "<xml>text<A>1</A></xml>",
        "<xml>just text</xml>",
        "<xml><P><A>1</A>x</P></xml>",
        "<xml><A>\u{0}</A></xml>\u{0}",
        "<xml><A><![CDATA[x]]><B>1</B></A></xml>",
        "<?xml version=\"1.0\"?><?xml version=\"1.0\"?><xml/>",
    ] {
        assert!(xml(bad).is_err(), "{bad:?} should be rejected");
    }
    assert!(xml("<xml><A>1</A></xml>\n<!-- ok -->\n").is_ok());
    assert_eq!(xml("<xml/>"), Ok(Document::new()));
    assert!(parse_document(MessageFormat::Xml, b"<xml><A>\xff</A></xml>").is_err());
}

// ---- rendering -------------------------------------------------------------------------

#[test]
fn xml_rendering_uses_cdata_for_strings_and_repeats_array_items() {
    let d = doc(json!({
        "ToUserName": "o1",
        "ResultCode": 0,
        "Note": "a]]>b",
        "Path": [ { "ActionType": 1, "ActionMsg": "张三" }, { "ActionType": 2 } ]
    }));
    assert_eq!(
        render_document(MessageFormat::Xml, &d),
        "<xml><ToUserName><![CDATA[o1]]></ToUserName><ResultCode>0</ResultCode>\
         <Note><![CDATA[a]]]]><![CDATA[>b]]></Note>\
         <Path><ActionType>1</ActionType><ActionMsg><![CDATA[张三]]></ActionMsg></Path>\
         <Path><ActionType>2</ActionType></Path></xml>"
    );
    assert_eq!(
        render_document(MessageFormat::Json, &d),
        r#"{"ToUserName":"o1","ResultCode":0,"Note":"a]]>b","Path":[{"ActionType":1,"ActionMsg":"张三"},{"ActionType":2}]}"#
    );
}

#[test]
fn json_documents_must_be_objects() {
    for bad in ["[]", "1", "\"x\"", "null", "{", ""] {
        assert!(matches!(
            parse_document(MessageFormat::Json, bad.as_bytes()),
            Err(EnvelopeError::Malformed(_))
        ));
    }
    let d = parse_document(MessageFormat::Json, br#"{"Path":[{"A":1}],"N":"12"}"#).expect("parses");
    assert_eq!(get_i64(&d, "N"), Some(12));
    assert_eq!(get_i64(&d, "Path"), None);
    assert_eq!(get_str(&d, "Path"), None);
}

#[test]
fn format_and_mode_names_parse_case_insensitively_and_display_lowercase() {
    assert_eq!("JSON".parse::<MessageFormat>(), Ok(MessageFormat::Json));
    assert_eq!("Xml".parse::<MessageFormat>(), Ok(MessageFormat::Xml));
    assert_eq!("SECURE".parse::<MessageMode>(), Ok(MessageMode::Secure));
    assert_eq!(
        "compatible".parse::<MessageMode>(),
        Ok(MessageMode::Compatible)
    );
    assert_eq!(
        "PlainText".parse::<MessageMode>(),
        Ok(MessageMode::Plaintext)
    );
    assert!("yaml".parse::<MessageFormat>().is_err());
    assert!("safe".parse::<MessageMode>().is_err());
    for m in ALL_MODES {
        assert_eq!(m.to_string().parse::<MessageMode>(), Ok(m));
        assert_eq!(serde_json::to_string(&m).expect("ser"), format!("\"{m}\""));
    }
    for f in ALL_FORMATS {
        assert_eq!(f.to_string().parse::<MessageFormat>(), Ok(f));
        assert_eq!(
            serde_json::from_str::<MessageFormat>(&format!("\"{f}\"")).expect("de"),
            f
        );
    }
}

#[test]
fn opened_message_debug_hides_the_document() {
    let opened = OpenedMessage {
        doc: query_request(),
        raw: b"13763357711".to_vec(),
        key_slot: Some(KeySlot::Current),
        was_encrypted: true,
    };
    let shown = format!("{opened:?}");
    assert!(!shown.contains("13763357711"), "{shown}");
    assert!(shown.contains("8 fields redacted"));
}

// ---- properties ------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    // CJK, markup characters, CDATA terminators and whitespace, mixed.
    proptest::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9 ]{1,4}",
            "[\\u4e00-\\u9fa5]{1,3}",
            Just("]]>".to_owned()),
            Just("]]".to_owned()),
            Just("<&>".to_owned()),
            Just("\"'".to_owned()),
            Just("\n\t ".to_owned()),
            Just("\r\n".to_owned()),
            Just("😀".to_owned()),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from)
    ]
}

fn document() -> impl Strategy<Value = Document> {
    let item = proptest::collection::vec(("[A-Z][a-zA-Z]{0,6}", scalar()), 1..5)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()));
    let field = prop_oneof![
        3 => scalar(),
        1 => proptest::collection::vec(item, 1..4).prop_map(Value::Array),
    ];
    proptest::collection::vec(("[A-Z][a-zA-Z]{0,8}", field), 0..8)
        .prop_map(|fields| fields.into_iter().collect())
}

proptest! {
    #[test]
    fn documents_round_trip_through_rendering(d in document()) {
        for format in ALL_FORMATS {
            let rendered = render_document(format, &d);
            let parsed = parse_document(format, rendered.as_bytes());
            prop_assert_eq!(parsed, Ok(expected_after(format, &d)));
        }
    }

    #[test]
    fn parse_document_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = parse_document(MessageFormat::Xml, &bytes);
        let _ = parse_document(MessageFormat::Json, &bytes);
    }

    #[test]
    fn parse_document_never_panics_on_xml_like_text(
        s in "(<xml>|</xml>|<[A-Za-z]{1,3}>|</[A-Za-z]{1,3}>|<!\\[CDATA\\[|\\]\\]>|&[a-z#0-9]{0,5};?|<!--|-->|<\\?|<!DOCTYPE|[a-z <>&]){0,40}",
    ) {
        let _ = parse_document(MessageFormat::Xml, s.as_bytes());
    }

    #[test]
    fn open_request_never_panics_on_arbitrary_bodies(
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let c = official();
        for format in ALL_FORMATS {
            for mode in ALL_MODES {
                let _ = open_request(&c, mode, format, &query_from(SECURE_QUERY), &body, SECURE_NOW, WINDOW);
                let _ = open_reply(&c, mode, format, &body, "415670741");
            }
        }
    }
}
