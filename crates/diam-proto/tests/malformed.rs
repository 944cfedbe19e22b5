//! Every malformed-input condition maps to its own error variant, with the
//! byte offset of the problem, and nothing panics.

use bytes::Bytes;
use diam_proto::types::{Address, DataType, Float64, Time, Unsigned32, Utf8String};
use diam_proto::{
    avps, check_frame, AvpFlags, AvpKey, Container, DecodeError, Dictionary, FrameDecoder, Message, MAX_GROUP_DEPTH,
};

/// A 20-byte header with the given length followed by `body`.
fn msg(length: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![1, (length >> 16) as u8, (length >> 8) as u8, length as u8, 0x80, 0, 1, 0x18];
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(body);
    v
}

fn avp(code: u32, flags: u8, length: u32) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.push(flags);
    v.extend_from_slice(&length.to_be_bytes()[1..]);
    v
}

fn decode(v: Vec<u8>) -> Result<Message, DecodeError> {
    Message::decode(Bytes::from(v))
}

#[test]
fn bad_version() {
    let mut v = msg(20, &[]);
    v[0] = 2;
    assert_eq!(decode(v.clone()), Err(DecodeError::BadVersion { offset: 0, version: 2 }));
    assert_eq!(check_frame(&v, 1 << 20), Err(DecodeError::BadVersion { offset: 0, version: 2 }));
}

#[test]
fn length_below_header() {
    assert_eq!(decode(msg(16, &[])), Err(DecodeError::MessageTooShort { offset: 0, length: 16 }));
    assert_eq!(check_frame(&[1, 0, 0, 0], 1 << 20), Err(DecodeError::MessageTooShort { offset: 0, length: 0 }));
}

#[test]
fn length_not_multiple_of_four() {
    assert_eq!(decode(msg(21, &[0])), Err(DecodeError::UnalignedLength { offset: 0, length: 21 }));
}

#[test]
fn length_above_maximum_is_refused_before_allocation() {
    let mut dec = FrameDecoder::with_max_size(1024);
    let mut buf = bytes::BytesMut::from(&[1u8, 0x00, 0x10, 0x00][..]);
    let cap = buf.capacity();
    assert_eq!(dec.decode(&mut buf), Err(DecodeError::MessageTooLarge { offset: 0, length: 4096, max: 1024 }));
    assert_eq!(buf.capacity(), cap, "no room reserved for a refused frame");
    // A lying 16 MiB length with the default limit.
    assert!(matches!(
        check_frame(&[1, 0xff, 0xff, 0xfc], diam_proto::DEFAULT_MAX_MESSAGE_SIZE),
        Err(DecodeError::MessageTooLarge { length: 0xff_fffc, max: 1_048_576, .. })
    ));
}

#[test]
fn truncated_and_trailing() {
    let full = msg(32, &[0; 12]);
    assert_eq!(decode(full[..28].to_vec()), Err(DecodeError::Truncated { offset: 0, length: 32, available: 28 }));
    assert_eq!(decode(full[..10].to_vec()), Err(DecodeError::Truncated { offset: 0, length: 20, available: 10 }));
    let mut extra = msg(20, &[]);
    extra.extend_from_slice(&[0; 4]);
    assert_eq!(decode(extra), Err(DecodeError::TrailingBytes { offset: 20, extra: 4 }));
}

#[test]
fn truncated_avp_header() {
    assert_eq!(
        decode(msg(24, &[0, 0, 1, 8])),
        Err(DecodeError::TruncatedAvpHeader { offset: 20, available: 4, container: Container::Message })
    );
}

#[test]
fn avp_length_below_header() {
    let mut body = avp(264, 0x40, 7);
    body.extend_from_slice(&[0; 4]);
    assert_eq!(
        decode(msg(32, &body)),
        Err(DecodeError::AvpTooShort { offset: 20, code: 264, length: 7, header_len: 8 })
    );
}

#[test]
fn avp_overruns_message() {
    let mut body = avp(1, 0, 12);
    body.extend_from_slice(&[0; 4]);
    body.extend(avp(264, 0x40, 100));
    body.extend_from_slice(&[0; 4]);
    assert_eq!(
        decode(msg(44, &body)),
        Err(DecodeError::AvpOverrunsMessage { offset: 32, code: 264, length: 100, end: 44 })
    );
}

#[test]
fn avp_overruns_parent_group() {
    // Group (code 456, 20 bytes) whose child claims 40 bytes.
    let mut body = avp(456, 0x40, 20);
    body.extend(avp(420, 0x40, 40));
    body.extend_from_slice(&[0; 4]);
    let m = decode(msg(40, &body)).expect("top level is fine");
    let g = m.find(avps::MULTIPLE_SERVICES_CREDIT_CONTROL).unwrap();
    let err = g.group().next().unwrap().unwrap_err();
    assert_eq!(err, DecodeError::AvpOverrunsGroup { offset: 28, code: 420, length: 40, end: 40 });
    assert_eq!(Dictionary::base().validate(&m), Err(err));
}

#[test]
fn vendor_flag_without_room_for_vendor_id() {
    // V flag, AVP length 8: no Vendor-Id although the message has room.
    let mut body = avp(1032, 0x80, 8);
    body.extend(avp(1, 0, 8));
    assert_eq!(decode(msg(36, &body)), Err(DecodeError::MissingVendorId { offset: 20, code: 1032, available: 8 }));
    // V flag, last 8 bytes of the message.
    assert_eq!(
        decode(msg(28, &avp(1032, 0x80, 8))),
        Err(DecodeError::MissingVendorId { offset: 20, code: 1032, available: 8 })
    );
}

fn one_avp_message(code: u32, data: &[u8]) -> Message {
    let m = Message::request(0, 1).raw_avp(code, AvpFlags::from_bits(0x40), None, data).build();
    Message::decode(m.to_bytes()).unwrap()
}

#[test]
fn wrong_fixed_size_payloads() {
    let m = one_avp_message(268, &[0, 7, 0xd1]);
    assert_eq!(
        m.get(avps::RESULT_CODE),
        Err(DecodeError::BadPayloadLength { offset: 28, code: 268, data_type: "Unsigned32", expected: 4, actual: 3 })
    );
    assert_eq!(Dictionary::base().validate(&m), m.get(avps::RESULT_CODE).map(drop));
    let m = one_avp_message(9, &[0; 7]);
    assert!(matches!(
        m.get(AvpKey::<Float64>::new(9)),
        Err(DecodeError::BadPayloadLength { expected: 8, actual: 7, .. })
    ));
    let m = one_avp_message(55, &[0; 5]);
    assert!(matches!(m.get(AvpKey::<Time>::new(55)), Err(DecodeError::BadPayloadLength { data_type: "Time", .. })));
    assert_eq!(DataType::Integer64.fixed_size(), Some(8));
}

#[test]
fn invalid_utf8() {
    let m = one_avp_message(263, b"ok\xff\xfe");
    assert_eq!(
        m.get(avps::SESSION_ID),
        Err(DecodeError::InvalidUtf8 { offset: 30, code: 263, data_type: "UTF8String" })
    );
    assert!(matches!(m.get(AvpKey::<Utf8String>::new(263)), Err(DecodeError::InvalidUtf8 { offset: 30, .. })));
    assert!(matches!(Dictionary::base().validate(&m), Err(DecodeError::InvalidUtf8 { offset: 30, .. })));
}

#[test]
fn bad_address() {
    let m = one_avp_message(257, &[0, 1, 127, 0, 0]);
    assert_eq!(
        m.get(avps::HOST_IP_ADDRESS),
        Err(DecodeError::BadAddress { offset: 28, code: 257, family: 1, expected: 4, actual: 3 })
    );
    let m = one_avp_message(257, &[0]);
    assert!(matches!(m.get(AvpKey::<Address>::new(257)), Err(DecodeError::BadAddress { offset: 28, .. })));
}

#[test]
fn groups_nested_too_deep() {
    // Multiple-Services-Credit-Control nested inside itself past the limit.
    let depth = MAX_GROUP_DEPTH + 2;
    let mut body = Vec::new();
    for i in 0..depth {
        let len = 8 * (depth - i) as u32;
        body.extend(avp(456, 0x40, len));
    }
    let total = 20 + body.len() as u32;
    let m = decode(msg(total, &body)).expect("framing is valid");
    assert_eq!(
        Dictionary::base().validate(&m),
        Err(DecodeError::GroupTooDeep { offset: 20 + 8 * MAX_GROUP_DEPTH, code: 456, max: MAX_GROUP_DEPTH })
    );
}

#[test]
fn every_error_names_its_offset_in_the_message() {
    let samples = [
        DecodeError::BadVersion { offset: 3, version: 0 },
        DecodeError::AvpOverrunsGroup { offset: 40, code: 1, length: 2, end: 3 },
        DecodeError::InvalidUtf8 { offset: 17, code: 1, data_type: "UTF8String" },
    ];
    for e in samples {
        assert!(e.to_string().starts_with(&format!("byte {}:", e.offset())), "{e}");
    }
    let _unused: Option<Unsigned32> = None;
}
