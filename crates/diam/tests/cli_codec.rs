//! `diam decode` / `diam encode` through the real binary.

use std::io::Write;
use std::net::Ipv6Addr;
use std::process::{Command, Output, Stdio};

use diam_proto::types::{Float32, Float64, Integer64, TimeValue, Unsigned64};
use diam_proto::{avps, AvpFlags, AvpKey, Message};
use serde_json::Value;

fn diam(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_diam"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diam");
    // Written from another thread, so that a large input cannot deadlock
    // against a full stdout pipe; `diam` may exit before reading all of it
    // (an error, or a FILE argument), which is a broken pipe, not a failure.
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || match input.write_all(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing diam's stdin: {e}"),
        _ => {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A CCR exercising every data format, groups, a vendor AVP, an unknown AVP
/// and reserved flag bits.
fn rich_message() -> Message {
    const RAT_TYPE: AvpKey<diam_proto::types::Enumerated> = AvpKey::new(1032).vendor(10415).mandatory();
    Message::request(4, 272)
        .proxiable(true)
        .hop_by_hop(0xdead_beef)
        .end_to_end(0x0102_0304)
        .avp(avps::SESSION_ID, "client.example.com;1700000000;42")
        .avp(avps::ORIGIN_HOST, "client.example.com")
        .avp(avps::ORIGIN_REALM, "example.com")
        .avp(avps::DESTINATION_REALM, "example.net")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::SERVICE_CONTEXT_ID, "32251@3gpp.org")
        .avp(avps::CC_REQUEST_TYPE, 1i32)
        .avp(avps::CC_REQUEST_NUMBER, 0u32)
        .avp(avps::EVENT_TIMESTAMP, TimeValue::parse_rfc3339("2026-11-24T09:26:17Z").unwrap())
        .avp(avps::HOST_IP_ADDRESS, Ipv6Addr::LOCALHOST)
        .avp(avps::HOST_IP_ADDRESS, std::net::Ipv4Addr::new(192, 0, 2, 1))
        .avp(avps::CLASS, &[0u8, 1, 2, 3, 0xff][..])
        .avp(avps::ACCOUNTING_SUB_SESSION_ID, u64::MAX)
        .avp(AvpKey::<Integer64>::new(avps::ACCOUNTING_SUB_SESSION_ID.code()), -5i64)
        .avp(RAT_TYPE, 1004i32)
        .group(avps::SUBSCRIPTION_ID, |g| {
            g.avp(avps::SUBSCRIPTION_ID_TYPE, 0i32).avp(avps::SUBSCRIPTION_ID_DATA, "491234567");
        })
        .group(avps::MULTIPLE_SERVICES_CREDIT_CONTROL, |g| {
            g.group(avps::REQUESTED_SERVICE_UNIT, |g| {
                g.avp(avps::CC_TIME, 60u32).avp(avps::CC_TOTAL_OCTETS, 1u64 << 40);
            })
            .avp(avps::RATING_GROUP, 7u32);
        })
        .raw_avp(99_999, AvpFlags::from_bits(0x07), Some(12345), b"opaque")
        .raw_avp(99_998, AvpFlags::from_bits(0x00), None, &[])
        .build()
}

#[test]
fn decode_then_encode_is_byte_identical() {
    let m = rich_message();
    let text = hex(m.as_bytes());
    let out = diam(&["decode", "--hex"], text.as_bytes());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let json = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["command_code"], 272);
    assert_eq!(v["command_name"], "Credit-Control-Request");
    assert_eq!(v["flags"]["request"], true);
    assert_eq!(v["flags"]["proxiable"], true);
    assert_eq!(v["hop_by_hop"], 0xdead_beefu32);
    assert_eq!(v["length"], m.len());
    let avps = v["avps"].as_array().unwrap();
    assert_eq!(avps[0]["name"], "Session-Id");
    assert_eq!(avps[0]["type"], "UTF8String");
    assert_eq!(avps[0]["vendor_id"], Value::Null);
    assert_eq!(avps[0]["flags"]["mandatory"], true);
    assert_eq!(avps[6]["value"], 1);
    assert_eq!(avps[6]["enum"], "INITIAL_REQUEST");
    assert_eq!(avps[8]["type"], "Time");
    assert_eq!(avps[8]["value"], "2026-11-24T09:26:17Z");
    assert_eq!(avps[9]["value"], "::1");
    assert_eq!(avps[10]["value"], "192.0.2.1");
    assert_eq!(avps[11]["value"], "00010203ff");
    assert_eq!(avps[12]["value"], u64::MAX);
    assert_eq!(avps[14]["vendor_id"], 10415);
    assert_eq!(avps[14]["flags"]["vendor"], true);
    let sub = avps[15]["value"].as_array().unwrap();
    assert_eq!(sub[1]["value"], "491234567");
    let mscc = avps[16]["value"].as_array().unwrap();
    assert_eq!(mscc[0]["value"][1]["value"], 1u64 << 40);
    assert_eq!(avps[17]["type"], "Unknown");
    assert_eq!(avps[17]["name"], Value::Null);
    assert_eq!(avps[17]["flags"]["reserved"], 7);
    assert_eq!(avps[17]["value"], hex(b"opaque"));

    let back = diam(&["encode", "--hex"], json.as_bytes());
    assert!(back.status.success(), "stderr: {}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(String::from_utf8(back.stdout).unwrap().trim(), text);

    // Raw bytes in and out.
    let raw = diam(&["decode"], m.as_bytes());
    assert!(raw.status.success());
    let bytes = diam(&["encode"], &raw.stdout);
    assert_eq!(bytes.stdout, m.as_bytes());
}

/// A Wireshark-format dictionary with AVPs of the types the built-in one
/// does not use.
const EXTRA_DICT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<dictionary>
  <base uri="test">
    <typedefn type-name="Float32"/>
    <typedefn type-name="Float64"/>
    <typedefn type-name="IPAddress" type-parent="OctetString"/>
    <avp name="Test-Float32" code="65001" mandatory="mustnot"><type type-name="Float32"/></avp>
    <avp name="Test-Float64" code="65002" mandatory="mustnot"><type type-name="Float64"/></avp>
    <avp name="Test-IP" code="200" mandatory="mustnot"><type type-name="IPAddress"/></avp>
  </base>
</dictionary>
"#;

#[test]
fn several_messages_floats_and_extra_dictionary() {
    let dir = std::env::temp_dir().join(format!("diam-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dict = dir.join("extra.xml");
    std::fs::write(&dict, EXTRA_DICT).unwrap();
    let dict = dict.to_str().unwrap();

    let f = Message::request(0, 1)
        .avp(AvpKey::<Float32>::new(65001), 0.1f32)
        .avp(AvpKey::<Float32>::new(65001), f32::NAN)
        .avp(AvpKey::<Float64>::new(65002), f64::MIN_POSITIVE)
        .avp(AvpKey::<Float64>::new(65002), -0.0f64)
        .avp(AvpKey::<Float64>::new(65002), f64::INFINITY)
        .avp(AvpKey::<diam_proto::types::IpAddress>::new(200), std::net::IpAddr::V6(Ipv6Addr::LOCALHOST))
        .avp(AvpKey::<Unsigned64>::new(65004), 0u64)
        .build();
    let dwr = Message::request(0, 280).avp(avps::ORIGIN_HOST, "a").avp(avps::ORIGIN_REALM, "b").build();
    let mut input = hex(f.as_bytes());
    input.push('\n');
    input.push_str(&hex(dwr.as_bytes()));
    let out = diam(&["decode", "--hex", "--dict", dict], input.as_bytes());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    let a = &v["avps"];
    assert_eq!(a[0]["name"], "Test-Float32");
    assert_eq!(a[0]["value"].as_f64().unwrap() as f32, 0.1f32);
    assert_eq!(a[1]["value"], format!("0x{}", hex(&f32::NAN.to_be_bytes())));
    assert_eq!(a[2]["value"].as_f64().unwrap(), f64::MIN_POSITIVE);
    assert_eq!(a[4]["value"], "0x7ff0000000000000");
    assert_eq!(a[5]["type"], "IPAddress");
    assert_eq!(a[5]["value"], "::1");
    assert_eq!(a[6]["type"], "Unknown");
    let v: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["command_name"], "Device-Watchdog-Request");

    // Both messages re-encode byte for byte, -0.0 and NaN included.
    let back = diam(&["encode", "--hex", "--dict", dict], text.as_bytes());
    assert!(back.status.success(), "stderr: {}", String::from_utf8_lossy(&back.stderr));
    let expected = format!("{}\n{}\n", hex(f.as_bytes()), hex(dwr.as_bytes()));
    assert_eq!(String::from_utf8(back.stdout).unwrap(), expected);

    // A dictionary file that does not exist is a usage error.
    let missing = diam(&["decode", "--dict", "/nonexistent/dict.xml"], dwr.as_bytes());
    assert_eq!(missing.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encode_accepts_names_and_defaults() {
    let json = r#"{"command_code":280,"flags":{"request":true},"avps":[
        {"name":"Origin-Host","value":"a.example.com"},
        {"name":"Disconnect-Cause","value":"BUSY"},
        {"name":"Result-Code","value":"DIAMETER_SUCCESS"}]}"#;
    let out = diam(&["encode", "--hex"], json.as_bytes());
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = diam_proto_hex(String::from_utf8(out.stdout).unwrap().trim());
    let m = Message::decode(bytes.into()).unwrap();
    assert_eq!(m.get(avps::ORIGIN_HOST).unwrap(), Some("a.example.com"));
    assert_eq!(m.get(avps::DISCONNECT_CAUSE).unwrap(), Some(1));
    assert_eq!(m.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert!(m.find(avps::ORIGIN_HOST).unwrap().flags().is_mandatory());
}

fn diam_proto_hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn assert_input_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr {stderr:?} lacks {needle:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn malformed_inputs_exit_2_with_offset() {
    let good = rich_message();
    let mut b = good.as_bytes().to_vec();
    // Bump the first AVP's length past the end of the message.
    b[25..28].copy_from_slice(&[0x00, 0xff, 0x00]);
    let out = diam(&["decode"], &b);
    assert_input_error(&out, "byte 20:");

    // Second message corrupt: its offset counts from the input start.
    let mut two = good.as_bytes().to_vec();
    let mut bad = good.as_bytes().to_vec();
    bad[0] = 7;
    two.extend_from_slice(&bad);
    assert_input_error(&diam(&["decode"], &two), &format!("byte {}:", good.len()));

    // Truncated input.
    assert_input_error(&diam(&["decode"], &good.as_bytes()[..30]), "truncated");
    // A 3-byte Result-Code inside an otherwise valid message.
    let m = Message::request(0, 1).raw_avp(268, AvpFlags::from_bits(0x40), None, &[0, 7, 0xd1]).build();
    assert_input_error(&diam(&["decode"], m.as_bytes()), "byte 28:");
    // Invalid UTF-8 in a UTF8String.
    let m = Message::request(0, 1).raw_avp(263, AvpFlags::from_bits(0x40), None, b"\xff").build();
    assert_input_error(&diam(&["decode"], m.as_bytes()), "byte 28:");
    // Bad hex, odd hex, empty input.
    assert_input_error(&diam(&["decode", "--hex"], b"01zz"), "character 2");
    assert_input_error(&diam(&["decode", "--hex"], b"010"), "odd number");
    assert_input_error(&diam(&["decode"], b""), "no Diameter message");
}

#[test]
fn bad_json_exits_2() {
    assert_input_error(&diam(&["encode"], b"{not json"), "invalid JSON");
    assert_input_error(&diam(&["encode"], br#"{"avps":[]}"#), "command_code");
    assert_input_error(
        &diam(&["encode"], br#"{"command_code":1,"avps":[{"code":268,"value":"x"}]}"#),
        "$.avps[0].value",
    );
    assert_input_error(
        &diam(&["encode"], br#"{"command_code":1,"avps":[{"name":"No-Such-AVP","value":1}]}"#),
        "unknown AVP name",
    );
    assert_input_error(&diam(&["encode"], br#"{"command_code":16777216}"#), "24 bits");
}

#[test]
fn help_and_usage() {
    for sub in ["decode", "encode"] {
        let out = diam(&[sub, "--help"], b"");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--dict"));
    }
    assert_eq!(diam(&["frobnicate"], b"").status.code(), Some(2));
}
