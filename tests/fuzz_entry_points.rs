//! The fuzzing entry points (`wxexpress::fuzz`, driven by cargo-fuzz under `fuzz/`) run here
//! on stable with proptest: bounded, so every `cargo test` guards them, plus each input
//! fuzzing ever found as a regression case.

use proptest::prelude::*;
use wxexpress::fuzz;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that look like the inputs: JSON, XML and query fragments as well as noise.
fn shaped() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[{}<>\\[\\]\"=&:,a-zA-Z0-9_/!?.% \\-]{0,256}".prop_map(String::into_bytes),
        r#"\{"(waybill_id|event|waybill|ToUserName|Event|WaybillId|Encrypt)":("[^"]{0,20}"|[0-9]{1,12}|\{\}|null),?\}"#
            .prop_map(String::into_bytes),
        r"<xml><([A-Za-z_]{1,10})>(<!\[CDATA\[[^\]]{0,20}\]\]>|[^<]{0,20})</([A-Za-z_]{1,10})></xml>"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_callback_envelope_takes_any_bytes_in_every_mode(selector in any::<u8>(), body in shaped()) {
        let mut data = vec![selector];
        data.extend(body);
        fuzz::callback_envelope(&data);
    }

    #[test]
    fn message_decryption_takes_any_bytes(data in shaped()) {
        fuzz::decrypt(&data);
    }

    #[test]
    fn an_ndjson_line_takes_any_bytes(data in shaped()) {
        fuzz::ndjson_line(&data);
    }

    #[test]
    fn the_jsonp_query_takes_any_bytes(data in shaped()) {
        fuzz::jsonp_query(&data);
    }

    #[test]
    fn a_pay_notification_takes_any_bytes(data in shaped()) {
        fuzz::pay_xml(&data);
    }
}

/// Well-formed inputs reach deep: a real reverse query in each mode and format.
#[test]
fn a_real_reverse_query_goes_all_the_way_through() {
    let json = br#"{"ToUserName":"gh_97417a04a28d","FromUserName":"oHt_80DRclK4qjKfdYnPg6RxxsNI","CreateTime":1764000000,"MsgType":"event","Event":"waybill_notify_query","WaybillId":"SF1","SenderPhone":"13800138001","ReceiverPhone":"13800138000"}"#;
    let xml = b"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1764000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[waybill_notify_query]]></Event><WaybillId><![CDATA[SF1]]></WaybillId><ReceiverPhone><![CDATA[13800138000]]></ReceiverPhone></xml>";
    for selector in [0x00u8, 0x21, 0x22, 0x10, 0x31, 0x32] {
        let body: &[u8] = if selector & 0x10 == 0 { json } else { xml };
        let mut data = vec![selector];
        data.extend_from_slice(body);
        fuzz::callback_envelope(&data);
    }
    fuzz::ndjson_line(br#"{"waybill_id":"SF1","event":{"action_type":100001,"action_time":1764000000,"action_msg":"ok"}}"#);
    fuzz::jsonp_query(b"SF1\noABC\ncb");
    fuzz::pay_xml(b"<xml><appid><![CDATA[wx1]]></appid><sign>X</sign><time_end>20241124093015</time_end></xml>");
}

/// Every input a fuzzer ever crashed on, kept under `tests/fuzz_regressions/<target>/`
/// (see `docs/RELIABILITY.md` for what each one found).
#[test]
fn inputs_fuzzing_found_stay_fixed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 5] = [
        ("callback_envelope", fuzz::callback_envelope),
        ("decrypt", fuzz::decrypt),
        ("ndjson_line", fuzz::ndjson_line),
        ("jsonp_query", fuzz::jsonp_query),
        ("pay_xml", fuzz::pay_xml),
    ];
    let mut ran = 0;
    for (target, run) in targets {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for file in dir {
            let path = file.expect("a directory entry").path();
            run(&std::fs::read(&path).expect("a regression input"));
            ran += 1;
        }
    }
    assert!(ran > 0, "the regression inputs are in the repository");
}
