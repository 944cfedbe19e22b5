// Runs every decode path of `diam_proto` on arbitrary input and checks the
// invariants that must hold for any input. Never panics unless an invariant
// is broken (that panic is the bug report).
//
// Shared, via `include!`, by the libFuzzer target (`fuzz/fuzz_targets/decode.rs`)
// and the stable-toolchain test (`tests/fuzz_stable.rs`); include it inside a
// module: `mod exercise { include!("…/exercise.rs"); }`.

use std::hint::black_box;
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use diam_proto::types::{self as t, AddressValue, AvpType, DataType, EncodeAs, TimeValue};
use diam_proto::{
    avps, check_frame, Avp, AvpIter, DecodeError, Dictionary, FrameDecoder, FrameStatus, Header, Message,
    DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN, MAX_LENGTH_FIELD,
};

/// How deep the exercise descends when treating payloads as Grouped.
pub(crate) const EXERCISE_MAX_DEPTH: usize = 8;

/// Every data format the crate knows (`DataType` is non-exhaustive).
const ALL_TYPES: [DataType; 17] = [
    DataType::OctetString,
    DataType::Integer32,
    DataType::Integer64,
    DataType::Unsigned32,
    DataType::Unsigned64,
    DataType::Float32,
    DataType::Float64,
    DataType::Grouped,
    DataType::Address,
    DataType::Time,
    DataType::Utf8String,
    DataType::DiameterIdentity,
    DataType::DiameterUri,
    DataType::Enumerated,
    DataType::IpFilterRule,
    DataType::QosFilterRule,
    DataType::IpAddress,
];

/// What one call of [`exercise`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ExerciseOutcome {
    /// `Message::decode` accepted the whole input.
    pub(crate) decoded: bool,
    /// Messages the `FrameDecoder` took off the input.
    pub(crate) frames: usize,
    /// AVPs visited (top level and every level treated as Grouped).
    pub(crate) avps: usize,
}

/// Feeds `data` to every decoder entry point and checks the invariants.
pub(crate) fn exercise(data: &[u8]) -> ExerciseOutcome {
    let mut out = ExerciseOutcome::default();
    let mut scratch = BytesMut::with_capacity(64);
    let len = data.len();

    // Header::parse: on success the header re-encodes to the same 20 bytes.
    match Header::parse(data) {
        Ok(h) => {
            assert!(len >= HEADER_LEN);
            assert_eq!(h.to_bytes(), data[..HEADER_LEN], "Header::to_bytes differs from the parsed bytes");
            assert!(h.length as usize >= HEADER_LEN && h.length % 4 == 0, "accepted bad length {}", h.length);
        }
        Err(e) => check_err(&e, len, "Header::parse"),
    }

    // check_frame under several limits.
    for max in [DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN, len, 64] {
        match check_frame(data, max) {
            Ok(FrameStatus::Complete { len: n }) => {
                assert!(n >= HEADER_LEN && n <= len && n <= max && n % 4 == 0, "check_frame: Complete {n}");
            }
            Ok(FrameStatus::Incomplete { need }) => {
                assert!(need > 0, "check_frame: Incomplete with need 0");
                assert!(len + need <= max.max(HEADER_LEN), "check_frame: need {need} beyond max {max}");
            }
            Err(e) => check_err(&e, len, "check_frame"),
        }
    }

    // FrameDecoder over the input as a stream, until it wants more or fails.
    for (i, mut dec) in [FrameDecoder::new(), FrameDecoder::with_max_size(64)].into_iter().enumerate() {
        let mut src = BytesMut::from(data);
        let mut steps = 0;
        loop {
            let before = src.len();
            match dec.decode(&mut src) {
                Ok(Some(msg)) => {
                    assert!(msg.len() >= HEADER_LEN && msg.len() <= dec.max_size());
                    assert_eq!(msg.len(), before - src.len(), "FrameDecoder consumed a different length");
                    out.frames += 1;
                    // A frame that is the whole input is exercised below through Message::decode.
                    if i == 0 && msg.len() != len {
                        exercise_message(&msg, &mut out, &mut scratch);
                    }
                }
                Ok(None) => {
                    assert_eq!(src.len(), before, "FrameDecoder consumed bytes without yielding");
                    break;
                }
                Err(e) => {
                    check_err(&e, before, "FrameDecoder::decode");
                    break;
                }
            }
            steps += 1;
            assert!(steps <= len / HEADER_LEN, "FrameDecoder yielded more frames than can fit");
        }
    }

    // Message::decode on the whole input.
    match Message::decode(Bytes::copy_from_slice(data)) {
        Ok(msg) => {
            out.decoded = true;
            assert_eq!(msg.as_bytes(), data);
            assert_eq!(
                check_frame(data, MAX_LENGTH_FIELD),
                Ok(FrameStatus::Complete { len }),
                "Message::decode accepted what check_frame does not frame"
            );
            if len <= DEFAULT_MAX_MESSAGE_SIZE {
                let first = FrameDecoder::new().decode(&mut BytesMut::from(data));
                assert_eq!(first, Ok(Some(msg.clone())), "FrameDecoder disagrees with Message::decode");
            }
            exercise_message(&msg, &mut out, &mut scratch);
        }
        Err(e) => check_err(&e, len, "Message::decode"),
    }
    out
}

/// Checks a decoder error: its offset lies within the input, and it formats.
fn check_err(e: &DecodeError, len: usize, what: &str) {
    check_err_offset(e, len, what);
    black_box(e.to_string());
}

/// [`check_err`] without formatting (formatting dominates the cost of the
/// exercise in debug builds; payload errors are only formatted on a sample).
fn check_err_offset(e: &DecodeError, len: usize, what: &str) {
    assert!(e.offset() <= len, "{what}: error offset {} beyond input length {len}: {e}", e.offset());
    assert_eq!(e.clone().shifted(3).offset(), e.offset() + 3);
}

/// Everything that can be done with a successfully decoded message.
fn exercise_message(msg: &Message, out: &mut ExerciseOutcome, scratch: &mut BytesMut) {
    let bytes = msg.as_bytes();
    let len = bytes.len();
    assert_eq!(msg.header().length as usize, len);
    assert_eq!(Header::parse(bytes).as_ref(), Ok(msg.header()));

    // Framing was validated by decode: every top-level AVP iterates Ok.
    let mut next = HEADER_LEN;
    for avp in msg.avps() {
        let avp = avp.unwrap_or_else(|e| panic!("AVP iteration failed after Message::decode succeeded: {e}"));
        assert_eq!(avp.offset(), next, "top-level AVPs do not tile the message");
        next = (avp.offset() + avp.length() as usize + 3) & !3;
        exercise_avp(&avp, len, len, 0, out, scratch);
    }
    assert_eq!(next, len, "top-level AVPs do not end at the message end");

    if let Err(e) = Dictionary::base().validate(msg) {
        check_err(&e, len, "Dictionary::validate");
    }

    // Typed getters never panic, whatever the payloads.
    black_box(msg.get(avps::SESSION_ID).ok());
    black_box(msg.get(avps::RESULT_CODE).ok());
    black_box(msg.get(avps::HOST_IP_ADDRESS).ok());
    black_box(msg.get(avps::EVENT_TIMESTAMP).ok());
    black_box(msg.get_all(avps::ROUTE_RECORD).count());
    black_box(msg.find(avps::MULTIPLE_SERVICES_CREDIT_CONTROL).map(|g| g.group().count()));

    // Re-encoding through the builder is byte-identical.
    let rebuilt = msg.rebuild();
    if let Some(i) = first_difference(rebuilt.as_bytes(), bytes) {
        panic!("Message::rebuild differs from the decoded input at byte {i} (lengths {} vs {})", rebuilt.len(), len);
    }
    assert_eq!(rebuilt.header(), msg.header());

    // Header patching keeps the rest.
    let patched = msg.with_ids(!msg.hop_by_hop(), msg.end_to_end() ^ 0x5a5a_5a5a);
    assert_eq!(patched.hop_by_hop(), !msg.hop_by_hop());
    assert_eq!(patched.as_bytes()[..12], bytes[..12]);
    assert_eq!(patched.as_bytes()[20..], bytes[20..]);
    assert_eq!(Message::decode(patched.to_bytes()).as_ref(), Ok(&patched));

    // The answer skeleton is always a valid message.
    let answer = Message::answer_to(msg).build();
    let decoded = Message::decode(answer.to_bytes()).expect("Message::answer_to built an undecodable message");
    assert!(!decoded.is_request());
    assert_eq!(
        (decoded.command_code(), decoded.application_id(), decoded.hop_by_hop(), decoded.end_to_end()),
        (msg.command_code(), msg.application_id(), msg.hop_by_hop(), msg.end_to_end())
    );
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Decodes `avp` with every format, checks each result against an
/// independent expectation, re-encodes successful values, and recurses into
/// the payload as if it were Grouped. `container_end` bounds the AVP.
fn exercise_avp(
    avp: &Avp<'_>,
    msg_len: usize,
    container_end: usize,
    depth: usize,
    out: &mut ExerciseOutcome,
    scratch: &mut BytesMut,
) {
    out.avps += 1;
    let data = avp.data();
    let n = data.len();
    let header_len = if avp.flags().is_vendor() { 12 } else { 8 };
    assert_eq!(avp.vendor_id().is_some(), avp.flags().is_vendor(), "Vendor-Id presence must follow the V flag");
    assert_eq!(avp.data_offset(), avp.offset() + header_len);
    assert_eq!(avp.length() as usize, header_len + n);
    assert_eq!(avp.raw().len(), avp.length() as usize);
    assert_eq!(&avp.raw()[header_len..], data);
    assert!(avp.data_offset() + n <= container_end && container_end <= msg_len, "AVP overruns its container");

    // Errors from typed decoding must point into this AVP.
    let display = out.avps % 16 == 1;
    let payload_err = |e: &DecodeError, what: &str| {
        if display {
            check_err(e, msg_len, what);
        } else {
            check_err_offset(e, msg_len, what);
        }
        assert!(
            e.offset() >= avp.offset() && e.offset() <= avp.data_offset() + n,
            "{what}: error offset {} outside the AVP at {}..{}",
            e.offset(),
            avp.offset(),
            avp.data_offset() + n
        );
    };

    macro_rules! fixed {
        ($($marker:ident),*) => {$(
            match avp.value::<t::$marker>() {
                Ok(v) => {
                    assert_eq!(n, DataType::$marker.fixed_size().unwrap());
                    reencode::<t::$marker, _>(&v, data, scratch);
                }
                Err(e) => {
                    assert_ne!(Some(n), DataType::$marker.fixed_size(), "{} rejected a payload of the right size", stringify!($marker));
                    payload_err(&e, stringify!($marker));
                }
            }
        )*};
    }
    fixed!(Integer32, Integer64, Unsigned32, Unsigned64, Float32, Float64, Enumerated);

    macro_rules! text {
        ($($marker:ident),*) => {$(
            match avp.value::<t::$marker>() {
                Ok(s) => {
                    assert_eq!(s.as_bytes(), data);
                    reencode::<t::$marker, _>(&s, data, scratch);
                }
                Err(e) => {
                    assert!(std::str::from_utf8(data).is_err(), "{} rejected valid UTF-8", stringify!($marker));
                    payload_err(&e, stringify!($marker));
                }
            }
        )*};
    }
    text!(Utf8String, DiameterIdentity, DiameterUri, IpFilterRule, QosFilterRule);

    let octets = avp.value::<t::OctetString>().expect("OctetString never fails");
    assert_eq!(octets, data);
    reencode::<t::OctetString, _>(&octets, data, scratch);

    match avp.value::<t::Time>() {
        Ok(time) => {
            assert_eq!(n, 4);
            let text = time.to_string();
            assert_eq!(TimeValue::parse_rfc3339(&text), Some(time), "Time text round trip failed for {text}");
            assert_eq!(TimeValue::from_unix_seconds(time.unix_seconds()), Some(time));
            black_box(time.to_system_time());
            reencode::<t::Time, _>(&time, data, scratch);
        }
        Err(e) => {
            assert_ne!(n, 4);
            payload_err(&e, "Time");
        }
    }

    let family = (n >= 2).then(|| u16::from_be_bytes([data[0], data[1]]));
    match avp.value::<t::Address>() {
        Ok(addr) => {
            match addr {
                AddressValue::V4(_) => assert!(family == Some(1) && n == 6),
                AddressValue::V6(_) => assert!(family == Some(2) && n == 18),
                AddressValue::Other { family: f, bytes } => {
                    assert!(Some(f) == family && f != 1 && f != 2 && bytes == &data[2..]);
                }
            }
            assert_eq!(addr.ip().is_some(), matches!(family, Some(1 | 2)));
            if display || addr.ip().is_some() {
                black_box(addr.to_string());
            }
            reencode::<t::Address, _>(&addr, data, scratch);
        }
        Err(e) => {
            assert!(family.is_none() || (family == Some(1) && n != 6) || (family == Some(2) && n != 18));
            payload_err(&e, "Address");
        }
    }

    match avp.value::<t::IpAddress>() {
        Ok(ip) => {
            assert!(matches!((ip, n), (IpAddr::V4(_), 4) | (IpAddr::V6(_), 16)));
            reencode::<t::IpAddress, _>(&ip, data, scratch);
        }
        Err(e) => {
            assert!(n != 4 && n != 16);
            payload_err(&e, "IPAddress");
        }
    }

    // DataType::check agrees with the typed decoders.
    for ty in ALL_TYPES {
        let checked = ty.check(avp);
        let expected = match ty {
            DataType::Grouped => avp.group().all(|r| r.is_ok()),
            DataType::OctetString => true,
            DataType::Address => avp.value::<t::Address>().is_ok(),
            DataType::IpAddress => avp.value::<t::IpAddress>().is_ok(),
            _ => match ty.fixed_size() {
                Some(size) => n == size,
                None => std::str::from_utf8(data).is_ok(),
            },
        };
        assert_eq!(checked.is_ok(), expected, "DataType::{ty:?}.check disagrees with the typed decoder");
        if let Err(e) = checked {
            check_err_offset(&e, msg_len, ty.name());
        }
    }
    if let Err(e) = Dictionary::base().validate_avp(avp, depth) {
        check_err_offset(&e, msg_len, "Dictionary::validate_avp");
    }

    // Treat the payload as Grouped, and compare with a standalone iteration
    // of the same bytes (offsets shifted by the payload offset).
    if depth >= EXERCISE_MAX_DEPTH {
        return;
    }
    let end = avp.data_offset() + n;
    let mut standalone = AvpIter::new(data);
    for child in avp.group() {
        let alone = standalone.next().expect("standalone iteration ended early");
        match (child, alone) {
            (Ok(child), Ok(alone)) => {
                assert_eq!(child.offset(), alone.offset() + avp.data_offset());
                assert_eq!(
                    (child.code(), child.vendor_id(), child.data()),
                    (alone.code(), alone.vendor_id(), alone.data())
                );
                assert!(child.offset() >= avp.data_offset());
                exercise_avp(&child, msg_len, end, depth + 1, out, scratch);
            }
            (Err(e), Err(alone)) => {
                check_err_offset(&e, msg_len, "Avp::group");
                assert!(e.offset() >= avp.data_offset() && e.offset() <= end, "group error outside the group: {e}");
                assert_eq!(alone.shifted(avp.data_offset()), e, "standalone and in-message errors differ");
            }
            (a, b) => panic!("group iteration disagrees with standalone iteration: {a:?} vs {b:?}"),
        }
    }
    assert!(standalone.next().is_none(), "standalone iteration yielded more AVPs");
}

/// Encodes a decoded value back with `EncodeAs` and checks it reproduces the payload.
fn reencode<T: AvpType, V: EncodeAs<T>>(value: &V, data: &[u8], scratch: &mut BytesMut) {
    scratch.clear();
    value.encode(scratch);
    assert_eq!(value.encoded_len(), scratch.len(), "{}: encoded_len disagrees with encode", T::DATA_TYPE);
    assert_eq!(&scratch[..], data, "{}: decode then encode changed the payload", T::DATA_TYPE);
}
