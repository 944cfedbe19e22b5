//! Every RFC 6733 data format: typed encode, wire bytes, typed decode.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use diam_proto::types::*;
use diam_proto::{avps, AvpFlags, AvpKey, DecodeError, Message};

/// Builds a one-AVP message with `key`/`value` and returns it with the
/// AVP's payload bytes.
fn one<T: AvpType, V: EncodeAs<T>>(key: AvpKey<T>, value: V) -> (Message, Vec<u8>) {
    let m = Message::request(0, 1).avp(key, value).build();
    let m = Message::decode(m.to_bytes()).expect("builder output decodes");
    let data = m.avps().next().unwrap().unwrap().data().to_vec();
    (m, data)
}

#[test]
fn integers_and_floats() {
    let k32 = AvpKey::<Integer32>::new(1);
    let (m, d) = one(k32, -2i32);
    assert_eq!(d, [0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(m.get(k32).unwrap(), Some(-2));

    let k64 = AvpKey::<Integer64>::new(2);
    let (m, d) = one(k64, i64::MIN);
    assert_eq!(d, [0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(m.get(k64).unwrap(), Some(i64::MIN));

    let (m, d) = one(avps::RESULT_CODE, 2001u32);
    assert_eq!(d, [0, 0, 0x07, 0xd1]);
    assert_eq!(m.get(avps::RESULT_CODE).unwrap(), Some(2001));

    let ku64 = AvpKey::<Unsigned64>::new(3);
    let (m, d) = one(ku64, u64::MAX - 1);
    assert_eq!(d, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(m.get(ku64).unwrap(), Some(u64::MAX - 1));

    let kf32 = AvpKey::<Float32>::new(4);
    let (m, d) = one(kf32, 1.5f32);
    assert_eq!(d, 1.5f32.to_be_bytes());
    assert_eq!(m.get(kf32).unwrap(), Some(1.5));

    let kf64 = AvpKey::<Float64>::new(5);
    let (m, d) = one(kf64, -0.1f64);
    assert_eq!(d, (-0.1f64).to_be_bytes());
    assert_eq!(m.get(kf64).unwrap(), Some(-0.1));

    let (m, d) = one(avps::CC_REQUEST_TYPE, 3i32);
    assert_eq!(d, [0, 0, 0, 3]);
    assert_eq!(m.get(avps::CC_REQUEST_TYPE).unwrap(), Some(3));
}

#[test]
fn strings_and_octets_with_padding() {
    let (m, d) = one(avps::SESSION_ID, "a;b;c");
    assert_eq!(d, b"a;b;c");
    // 8-byte header + 5 bytes payload = 13, padded to 16 on the wire.
    assert_eq!(m.len(), 20 + 16);
    let avp = m.avps().next().unwrap().unwrap();
    assert_eq!(avp.length(), 13);
    assert_eq!(&m.as_bytes()[20 + 13..], &[0, 0, 0]);
    assert_eq!(m.get(avps::SESSION_ID).unwrap(), Some("a;b;c"));

    let (m, _) = one(avps::ORIGIN_HOST, String::from("host.example.com"));
    assert_eq!(m.get(avps::ORIGIN_HOST).unwrap(), Some("host.example.com"));
    let (m, _) = one(avps::REDIRECT_HOST, "aaa://host.example.com:3868;transport=tcp");
    assert_eq!(m.get(avps::REDIRECT_HOST).unwrap(), Some("aaa://host.example.com:3868;transport=tcp"));
    let kf = AvpKey::<IpFilterRule>::new(400);
    let (m, _) = one(kf, "permit in ip from 10.0.0.1 to any");
    assert_eq!(m.get(kf).unwrap(), Some("permit in ip from 10.0.0.1 to any"));
    let (m, _) = one(avps::USER_NAME, "ünïcödé");
    assert_eq!(m.get(avps::USER_NAME).unwrap(), Some("ünïcödé"));

    let (m, d) = one(avps::CLASS, &[0u8, 1, 2, 0xff][..]);
    assert_eq!(d, [0, 1, 2, 0xff]);
    assert_eq!(m.get(avps::CLASS).unwrap(), Some(&[0u8, 1, 2, 0xff][..]));
    let (m, _) = one(avps::CLASS, Vec::<u8>::new());
    assert_eq!(m.get(avps::CLASS).unwrap(), Some(&[][..]));
}

#[test]
fn addresses() {
    let (m, d) = one(avps::HOST_IP_ADDRESS, Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!(d, [0, 1, 127, 0, 0, 1]);
    assert_eq!(m.get(avps::HOST_IP_ADDRESS).unwrap(), Some(AddressValue::V4(Ipv4Addr::LOCALHOST)));

    let (m, d) = one(avps::HOST_IP_ADDRESS, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(&d[..2], [0, 2]);
    assert_eq!(d.len(), 18);
    let v = m.get(avps::HOST_IP_ADDRESS).unwrap().unwrap();
    assert_eq!(v.ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(v.to_string(), "::1");

    // E.164 (family 8) is kept raw.
    let other = AddressValue::Other { family: 8, bytes: b"4912345" };
    let (m, d) = one(avps::HOST_IP_ADDRESS, other);
    assert_eq!(&d[..2], [0, 8]);
    assert_eq!(m.get(avps::HOST_IP_ADDRESS).unwrap(), Some(other));
    assert_eq!(other.to_string(), "8:34393132333435");

    let kip = AvpKey::<IpAddress>::new(8);
    let (m, d) = one(kip, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    assert_eq!(d, [10, 1, 2, 3]);
    assert_eq!(m.get(kip).unwrap(), Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
}

#[test]
fn time() {
    let t = TimeValue::parse_rfc3339("2026-11-24T09:26:17Z").unwrap();
    let (m, d) = one(avps::EVENT_TIMESTAMP, t);
    assert_eq!(d, t.0.to_be_bytes());
    let back = m.get(avps::EVENT_TIMESTAMP).unwrap().unwrap();
    assert_eq!(back, t);
    assert_eq!(back.to_string(), "2026-11-24T09:26:17Z");
    assert_eq!(back.unix_seconds(), 1_795_512_377);
    assert_eq!(back.to_system_time(), std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_512_377));
}

#[test]
fn grouped_nested_and_lazy() {
    let m = Message::request(4, 272)
        .group(avps::MULTIPLE_SERVICES_CREDIT_CONTROL, |g| {
            g.group(avps::REQUESTED_SERVICE_UNIT, |g| {
                g.avp(avps::CC_TIME, 60u32);
            })
            .avp(avps::RATING_GROUP, 7u32);
        })
        .build();
    let m = Message::decode(m.to_bytes()).unwrap();
    let mscc = m.get(avps::MULTIPLE_SERVICES_CREDIT_CONTROL).unwrap().unwrap();
    let children: Vec<_> = mscc.collect::<Result<_, _>>().unwrap();
    assert_eq!(children.len(), 2);
    assert_eq!(children[0].code(), avps::REQUESTED_SERVICE_UNIT.code());
    let rsu: Vec<_> = children[0].group().collect::<Result<_, _>>().unwrap();
    assert_eq!(rsu[0].value::<Unsigned32>().unwrap(), 60);
    assert_eq!(children[1].value::<Unsigned32>().unwrap(), 7);
    // Group length = header 8 + children (RSU 8+12=20, RG 12) = 40.
    assert_eq!(m.find(avps::MULTIPLE_SERVICES_CREDIT_CONTROL).unwrap().length(), 40);
}

#[test]
fn vendor_avps_and_flags() {
    const RAT_TYPE: AvpKey<Enumerated> = AvpKey::new(1032).vendor(10415).mandatory();
    let (m, d) = one(RAT_TYPE, 1004i32);
    assert_eq!(d, 1004i32.to_be_bytes());
    let avp = m.avps().next().unwrap().unwrap();
    assert_eq!(avp.vendor_id(), Some(10415));
    assert_eq!(avp.flags().bits(), AvpFlags::VENDOR | AvpFlags::MANDATORY);
    assert_eq!(avp.length(), 16);
    assert_eq!(m.get(RAT_TYPE).unwrap(), Some(1004));
    // A key without the vendor does not match the vendor AVP.
    assert_eq!(m.get(AvpKey::<Enumerated>::new(1032)).unwrap(), None);
}

#[test]
fn answer_copies_ids_and_session() {
    let req = Message::request(4, 272)
        .proxiable(true)
        .hop_by_hop(0x1234)
        .end_to_end(0x5678)
        .avp(avps::SESSION_ID, "s;1")
        .avp(avps::ORIGIN_HOST, "h")
        .build();
    let ans = Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).build();
    assert!(!ans.is_request());
    assert!(ans.flags().is_proxiable());
    assert_eq!((ans.hop_by_hop(), ans.end_to_end()), (0x1234, 0x5678));
    assert_eq!((ans.command_code(), ans.application_id()), (272, 4));
    let first = ans.avps().next().unwrap().unwrap();
    assert_eq!(first.code(), 263);
    assert_eq!(ans.get(avps::SESSION_ID).unwrap(), Some("s;1"));
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
}

#[test]
fn typed_getter_reports_wrong_size_with_offset() {
    // A 3-byte Result-Code.
    let m = Message::request(0, 1).raw_avp(268, AvpFlags::from_bits(0x40), None, &[0, 7, 0xd1]).build();
    let m = Message::decode(m.to_bytes()).unwrap();
    let e = m.get(avps::RESULT_CODE).unwrap_err();
    assert_eq!(
        e,
        DecodeError::BadPayloadLength { offset: 28, code: 268, data_type: "Unsigned32", expected: 4, actual: 3 }
    );
}
