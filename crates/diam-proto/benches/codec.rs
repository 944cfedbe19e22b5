//! Codec benchmarks: diam-proto against the `diameter` crate (0.7.1) on the
//! same Credit-Control messages, side by side in each group.
//!
//! * `decode_ccr` / `decode_cca`: bytes to a decoded message with every AVP
//!   value read as its type.
//! * `encode_ccr` / `encode_cca`: field values to a message serialized into
//!   a fresh buffer.
//! * `frame_decoder`: splitting a buffer of 64 concatenated CCRs (ours only).
//!
//! Setup asserts (outside the timed loops) that both implementations encode
//! byte-identical messages and decode each other's bytes to the same values.
//!
//! Run: `cargo bench -p diam-proto --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use diam_proto::types::{DataType, DiameterIdentity, Enumerated, Unsigned32, Utf8String};
use diam_proto::{apps, avps, commands, AvpDef, CommandFlags, DecodeError, Dictionary, FrameDecoder, Message};
use diam_proto::{Avp, Header, MessageBuilder};
use diameter::avp::flags::M;
use diameter::avp::{Avp as DAvp, Unsigned32 as DUnsigned32};
use diameter::avp::{Enumerated as DEnumerated, Identity as DIdentity, UTF8String as DUtf8String};
use diameter::dictionary::{Dictionary as DDictionary, DEFAULT_DICT_XML};
use diameter::{flags as dflags, ApplicationId, CommandCode, DiameterMessage};

const HOP_BY_HOP: u32 = 0x2f5c_0a11;
const END_TO_END: u32 = 0x7b3e_9c01;

/// The CCR fields, as read back by either decoder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Ccr<'a> {
    session_id: &'a str,
    origin_host: &'a str,
    origin_realm: &'a str,
    destination_realm: &'a str,
    auth_application_id: u32,
    cc_request_type: i32,
    cc_request_number: u32,
}

/// The CCA fields, as read back by either decoder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Cca<'a> {
    session_id: &'a str,
    result_code: u32,
    origin_host: &'a str,
    origin_realm: &'a str,
    auth_application_id: u32,
    cc_request_type: i32,
    cc_request_number: u32,
}

const CCR: Ccr<'static> = Ccr {
    session_id: "client.example.com;1700000000;42",
    origin_host: "client.example.com",
    origin_realm: "example.com",
    destination_realm: "ocs.example.net",
    auth_application_id: 4,
    cc_request_type: 1,
    cc_request_number: 0,
};

const CCA: Cca<'static> = Cca {
    session_id: "client.example.com;1700000000;42",
    result_code: 2001,
    origin_host: "ocs1.ocs.example.net",
    origin_realm: "ocs.example.net",
    auth_application_id: 4,
    cc_request_type: 1,
    cc_request_number: 0,
};

// ------------------------------------------------------------- diam-proto

fn ours_encode_ccr(v: &Ccr<'_>) -> Message {
    Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .proxiable(true)
        .hop_by_hop(HOP_BY_HOP)
        .end_to_end(END_TO_END)
        .avp(avps::SESSION_ID, v.session_id)
        .avp(avps::ORIGIN_HOST, v.origin_host)
        .avp(avps::ORIGIN_REALM, v.origin_realm)
        .avp(avps::DESTINATION_REALM, v.destination_realm)
        .avp(avps::AUTH_APPLICATION_ID, v.auth_application_id)
        .avp(avps::CC_REQUEST_TYPE, v.cc_request_type)
        .avp(avps::CC_REQUEST_NUMBER, v.cc_request_number)
        .build()
}

/// The same CCR written straight into a reused output buffer
/// (`Message::write_into`), as a connection encodes into its write buffer.
fn ours_write_ccr(v: &Ccr<'_>, out: &mut BytesMut) -> usize {
    let header = Header {
        length: 0,
        flags: CommandFlags::from_bits(CommandFlags::REQUEST | CommandFlags::PROXIABLE),
        command_code: commands::CREDIT_CONTROL,
        application_id: apps::CREDIT_CONTROL,
        hop_by_hop: HOP_BY_HOP,
        end_to_end: END_TO_END,
    };
    Message::write_into(out, header, |w| {
        w.avp(avps::SESSION_ID, v.session_id)
            .avp(avps::ORIGIN_HOST, v.origin_host)
            .avp(avps::ORIGIN_REALM, v.origin_realm)
            .avp(avps::DESTINATION_REALM, v.destination_realm)
            .avp(avps::AUTH_APPLICATION_ID, v.auth_application_id)
            .avp(avps::CC_REQUEST_TYPE, v.cc_request_type)
            .avp(avps::CC_REQUEST_NUMBER, v.cc_request_number);
    })
}

/// The CCA counterpart of [`ours_write_ccr`].
fn ours_write_cca(v: &Cca<'_>, out: &mut BytesMut) -> usize {
    let header = Header {
        length: 0,
        flags: CommandFlags::from_bits(CommandFlags::PROXIABLE),
        command_code: commands::CREDIT_CONTROL,
        application_id: apps::CREDIT_CONTROL,
        hop_by_hop: HOP_BY_HOP,
        end_to_end: END_TO_END,
    };
    Message::write_into(out, header, |w| {
        w.avp(avps::SESSION_ID, v.session_id)
            .avp(avps::RESULT_CODE, v.result_code)
            .avp(avps::ORIGIN_HOST, v.origin_host)
            .avp(avps::ORIGIN_REALM, v.origin_realm)
            .avp(avps::AUTH_APPLICATION_ID, v.auth_application_id)
            .avp(avps::CC_REQUEST_TYPE, v.cc_request_type)
            .avp(avps::CC_REQUEST_NUMBER, v.cc_request_number);
    })
}

fn ours_encode_cca(v: &Cca<'_>) -> Message {
    MessageBuilder::new(
        CommandFlags::from_bits(CommandFlags::PROXIABLE),
        commands::CREDIT_CONTROL,
        apps::CREDIT_CONTROL,
    )
    .hop_by_hop(HOP_BY_HOP)
    .end_to_end(END_TO_END)
    .avp(avps::SESSION_ID, v.session_id)
    .avp(avps::RESULT_CODE, v.result_code)
    .avp(avps::ORIGIN_HOST, v.origin_host)
    .avp(avps::ORIGIN_REALM, v.origin_realm)
    .avp(avps::AUTH_APPLICATION_ID, v.auth_application_id)
    .avp(avps::CC_REQUEST_TYPE, v.cc_request_type)
    .avp(avps::CC_REQUEST_NUMBER, v.cc_request_number)
    .build()
}

/// Reads every AVP of a decoded CCR, each value decoded with its type
/// (unknown AVPs would be skipped; the diameter crate rejects them).
fn ours_read_ccr(msg: &Message) -> Result<Ccr<'_>, DecodeError> {
    let mut v = Ccr::default();
    for avp in msg.avps() {
        let avp = avp?;
        if avp.vendor_id().is_some() {
            continue;
        }
        match avp.code() {
            263 => v.session_id = avp.value::<Utf8String>()?,
            264 => v.origin_host = avp.value::<DiameterIdentity>()?,
            296 => v.origin_realm = avp.value::<DiameterIdentity>()?,
            283 => v.destination_realm = avp.value::<DiameterIdentity>()?,
            258 => v.auth_application_id = avp.value::<Unsigned32>()?,
            416 => v.cc_request_type = avp.value::<Enumerated>()?,
            415 => v.cc_request_number = avp.value::<Unsigned32>()?,
            _ => {}
        }
    }
    Ok(v)
}

fn ours_read_cca(msg: &Message) -> Result<Cca<'_>, DecodeError> {
    let mut v = Cca::default();
    for avp in msg.avps() {
        let avp = avp?;
        if avp.vendor_id().is_some() {
            continue;
        }
        match avp.code() {
            263 => v.session_id = avp.value::<Utf8String>()?,
            268 => v.result_code = avp.value::<Unsigned32>()?,
            264 => v.origin_host = avp.value::<DiameterIdentity>()?,
            296 => v.origin_realm = avp.value::<DiameterIdentity>()?,
            258 => v.auth_application_id = avp.value::<Unsigned32>()?,
            416 => v.cc_request_type = avp.value::<Enumerated>()?,
            415 => v.cc_request_number = avp.value::<Unsigned32>()?,
            _ => {}
        }
    }
    Ok(v)
}

/// A dictionary with the benchmarked AVPs: `Dictionary::base()` when it
/// defines them, else a local one (so the dictionary-driven variant never
/// measures lookups that miss).
fn dictionary() -> &'static Dictionary {
    let base = Dictionary::base();
    if [263, 264, 296, 283, 258, 268, 416, 415].iter().all(|&c| base.avp(c, None).is_some()) {
        return base;
    }
    eprintln!("note: Dictionary::base() lacks some CCR/CCA AVPs; using a local dictionary");
    let mut d = Dictionary::new();
    for (code, name, ty) in [
        (263, "Session-Id", DataType::Utf8String),
        (264, "Origin-Host", DataType::DiameterIdentity),
        (296, "Origin-Realm", DataType::DiameterIdentity),
        (283, "Destination-Realm", DataType::DiameterIdentity),
        (258, "Auth-Application-Id", DataType::Unsigned32),
        (268, "Result-Code", DataType::Unsigned32),
        (416, "CC-Request-Type", DataType::Enumerated),
        (415, "CC-Request-Number", DataType::Unsigned32),
    ] {
        d.insert_avp(AvpDef::new(code, None, name, ty));
    }
    Box::leak(Box::new(d))
}

/// Dictionary-driven decoding: look every AVP up and check its value
/// against its dictionary type (what a generic relay or decoder does).
fn ours_validate(dict: &Dictionary, msg: &Message) -> Result<usize, DecodeError> {
    let mut n = 0;
    for avp in msg.avps() {
        let avp: Avp<'_> = avp?;
        if let Some(def) = dict.avp(avp.code(), avp.vendor_id()) {
            def.data_type().check(&avp)?;
            n += 1;
        }
    }
    Ok(n)
}

// --------------------------------------------------------- diameter 0.7.1

fn theirs_encode_ccr(v: &Ccr<'_>, dict: &Arc<DDictionary>) -> Vec<u8> {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        dflags::REQUEST | dflags::PROXYABLE,
        HOP_BY_HOP,
        END_TO_END,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, DUtf8String::new(v.session_id).into());
    m.add_avp(264, None, M, DIdentity::new(v.origin_host).into());
    m.add_avp(296, None, M, DIdentity::new(v.origin_realm).into());
    m.add_avp(283, None, M, DIdentity::new(v.destination_realm).into());
    m.add_avp(258, None, M, DUnsigned32::new(v.auth_application_id).into());
    m.add_avp(416, None, M, DEnumerated::new(v.cc_request_type).into());
    m.add_avp(415, None, M, DUnsigned32::new(v.cc_request_number).into());
    // Same starting capacity as our builder's buffer.
    let mut out = Vec::with_capacity(256);
    m.encode_to(&mut out).unwrap();
    out
}

/// The CCR built and serialized into a reused output buffer (the
/// diameter crate's own benchmarks reuse theirs the same way).
fn theirs_write_ccr(v: &Ccr<'_>, dict: &Arc<DDictionary>, out: &mut Vec<u8>) {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        dflags::REQUEST | dflags::PROXYABLE,
        HOP_BY_HOP,
        END_TO_END,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, DUtf8String::new(v.session_id).into());
    m.add_avp(264, None, M, DIdentity::new(v.origin_host).into());
    m.add_avp(296, None, M, DIdentity::new(v.origin_realm).into());
    m.add_avp(283, None, M, DIdentity::new(v.destination_realm).into());
    m.add_avp(258, None, M, DUnsigned32::new(v.auth_application_id).into());
    m.add_avp(416, None, M, DEnumerated::new(v.cc_request_type).into());
    m.add_avp(415, None, M, DUnsigned32::new(v.cc_request_number).into());
    m.encode_to(out).unwrap();
}

fn theirs_encode_cca(v: &Cca<'_>, dict: &Arc<DDictionary>) -> Vec<u8> {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        dflags::PROXYABLE,
        HOP_BY_HOP,
        END_TO_END,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, DUtf8String::new(v.session_id).into());
    m.add_avp(268, None, M, DUnsigned32::new(v.result_code).into());
    m.add_avp(264, None, M, DIdentity::new(v.origin_host).into());
    m.add_avp(296, None, M, DIdentity::new(v.origin_realm).into());
    m.add_avp(258, None, M, DUnsigned32::new(v.auth_application_id).into());
    m.add_avp(416, None, M, DEnumerated::new(v.cc_request_type).into());
    m.add_avp(415, None, M, DUnsigned32::new(v.cc_request_number).into());
    let mut out = Vec::with_capacity(256);
    m.encode_to(&mut out).unwrap();
    out
}

/// The CCA counterpart of [`theirs_write_ccr`].
fn theirs_write_cca(v: &Cca<'_>, dict: &Arc<DDictionary>, out: &mut Vec<u8>) {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        dflags::PROXYABLE,
        HOP_BY_HOP,
        END_TO_END,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, DUtf8String::new(v.session_id).into());
    m.add_avp(268, None, M, DUnsigned32::new(v.result_code).into());
    m.add_avp(264, None, M, DIdentity::new(v.origin_host).into());
    m.add_avp(296, None, M, DIdentity::new(v.origin_realm).into());
    m.add_avp(258, None, M, DUnsigned32::new(v.auth_application_id).into());
    m.add_avp(416, None, M, DEnumerated::new(v.cc_request_type).into());
    m.add_avp(415, None, M, DUnsigned32::new(v.cc_request_number).into());
    m.encode_to(out).unwrap();
}

fn theirs_decode(data: &[u8], dict: &Arc<DDictionary>) -> DiameterMessage {
    DiameterMessage::decode_from(&mut Cursor::new(data), Arc::clone(dict)).unwrap()
}

fn theirs_u32(a: &DAvp) -> u32 {
    a.get_unsigned32().unwrap()
}
fn theirs_ident(a: &DAvp) -> &str {
    a.get_identity().unwrap().value()
}

/// Reads the values the diameter crate already decoded while parsing.
fn theirs_read_ccr(m: &DiameterMessage) -> Ccr<'_> {
    let mut v = Ccr::default();
    for a in m.get_avps() {
        match a.get_code() {
            263 => v.session_id = a.get_utf8string().unwrap().value(),
            264 => v.origin_host = theirs_ident(a),
            296 => v.origin_realm = theirs_ident(a),
            283 => v.destination_realm = theirs_ident(a),
            258 => v.auth_application_id = theirs_u32(a),
            416 => v.cc_request_type = a.get_enumerated().unwrap().value(),
            415 => v.cc_request_number = theirs_u32(a),
            _ => {}
        }
    }
    v
}

fn theirs_read_cca(m: &DiameterMessage) -> Cca<'_> {
    let mut v = Cca::default();
    for a in m.get_avps() {
        match a.get_code() {
            263 => v.session_id = a.get_utf8string().unwrap().value(),
            268 => v.result_code = theirs_u32(a),
            264 => v.origin_host = theirs_ident(a),
            296 => v.origin_realm = theirs_ident(a),
            258 => v.auth_application_id = theirs_u32(a),
            416 => v.cc_request_type = a.get_enumerated().unwrap().value(),
            415 => v.cc_request_number = theirs_u32(a),
            _ => {}
        }
    }
    v
}

// --------------------------------------------------------------- benches

fn codec(c: &mut Criterion) {
    // The diameter crate needs its dictionary to decode; built once, shared
    // through the Arc its API takes.
    let ddict = Arc::new(DDictionary::new(&[&DEFAULT_DICT_XML]));
    let dict = dictionary();

    // Sanity checks, outside the timed loops. Both sides set R+P on the CCR
    // and P on the CCA, M on every AVP (our typed keys carry the RFC's M
    // flag), the same identifiers and AVP order, so the bytes must match.
    let ccr = ours_encode_ccr(&CCR);
    let cca = ours_encode_cca(&CCA);
    assert_eq!(ccr.as_bytes(), &theirs_encode_ccr(&CCR, &ddict)[..], "CCR encodings differ");
    assert_eq!(cca.as_bytes(), &theirs_encode_cca(&CCA, &ddict)[..], "CCA encodings differ");
    let mut out = BytesMut::new();
    ours_write_ccr(&CCR, &mut out);
    assert_eq!(&out[..], ccr.as_bytes(), "CCR written into a buffer differs");
    let mut theirs = Vec::new();
    theirs_write_ccr(&CCR, &ddict, &mut theirs);
    assert_eq!(&theirs[..], ccr.as_bytes(), "their CCR written into a buffer differs");
    out.clear();
    ours_write_cca(&CCA, &mut out);
    assert_eq!(&out[..], cca.as_bytes(), "CCA written into a buffer differs");
    theirs.clear();
    theirs_write_cca(&CCA, &ddict, &mut theirs);
    assert_eq!(&theirs[..], cca.as_bytes(), "their CCA written into a buffer differs");
    let ccr_bytes = ccr.to_bytes();
    let cca_bytes = cca.to_bytes();
    assert_eq!(ours_read_ccr(&Message::decode(ccr_bytes.clone()).unwrap()).unwrap(), CCR);
    assert_eq!(ours_read_cca(&Message::decode(cca_bytes.clone()).unwrap()).unwrap(), CCA);
    assert_eq!(theirs_read_ccr(&theirs_decode(&ccr_bytes, &ddict)), CCR);
    assert_eq!(theirs_read_cca(&theirs_decode(&cca_bytes, &ddict)), CCA);
    assert_eq!(ours_validate(dict, &Message::decode(ccr_bytes.clone()).unwrap()), Ok(7));
    assert_eq!(ours_validate(dict, &Message::decode(cca_bytes.clone()).unwrap()), Ok(7));

    // decode_ccr
    let mut g = c.benchmark_group("decode_ccr");
    g.throughput(Throughput::Elements(1));
    g.bench_function("diam-proto", |b| {
        b.iter(|| {
            let msg = Message::decode(black_box(&ccr_bytes).clone()).unwrap();
            black_box(ours_read_ccr(&msg).unwrap());
        })
    });
    g.bench_function("diam-proto-dict", |b| {
        b.iter(|| {
            let msg = Message::decode(black_box(&ccr_bytes).clone()).unwrap();
            black_box(ours_validate(dict, &msg).unwrap());
        })
    });
    g.bench_function("diameter-0.7.1", |b| {
        b.iter(|| {
            let msg = theirs_decode(black_box(&ccr_bytes), &ddict);
            black_box(theirs_read_ccr(&msg));
        })
    });
    g.finish();

    // encode_ccr
    let mut g = c.benchmark_group("encode_ccr");
    g.throughput(Throughput::Elements(1));
    g.bench_function("diam-proto", |b| b.iter(|| black_box(ours_encode_ccr(black_box(&CCR)))));
    g.bench_function("diam-proto-into-buffer", |b| {
        let mut out = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            black_box(ours_write_ccr(black_box(&CCR), &mut out))
        })
    });
    g.bench_function("diameter-0.7.1-into-buffer", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            theirs_write_ccr(black_box(&CCR), &ddict, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("diameter-0.7.1", |b| b.iter(|| black_box(theirs_encode_ccr(black_box(&CCR), &ddict))));
    g.finish();

    // decode_cca
    let mut g = c.benchmark_group("decode_cca");
    g.throughput(Throughput::Elements(1));
    g.bench_function("diam-proto", |b| {
        b.iter(|| {
            let msg = Message::decode(black_box(&cca_bytes).clone()).unwrap();
            black_box(ours_read_cca(&msg).unwrap());
        })
    });
    g.bench_function("diam-proto-dict", |b| {
        b.iter(|| {
            let msg = Message::decode(black_box(&cca_bytes).clone()).unwrap();
            black_box(ours_validate(dict, &msg).unwrap());
        })
    });
    g.bench_function("diameter-0.7.1", |b| {
        b.iter(|| {
            let msg = theirs_decode(black_box(&cca_bytes), &ddict);
            black_box(theirs_read_cca(&msg));
        })
    });
    g.finish();

    // encode_cca
    let mut g = c.benchmark_group("encode_cca");
    g.throughput(Throughput::Elements(1));
    g.bench_function("diam-proto", |b| b.iter(|| black_box(ours_encode_cca(black_box(&CCA)))));
    g.bench_function("diam-proto-into-buffer", |b| {
        let mut out = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            black_box(ours_write_cca(black_box(&CCA), &mut out))
        })
    });
    g.bench_function("diameter-0.7.1-into-buffer", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            theirs_write_cca(black_box(&CCA), &ddict, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("diameter-0.7.1", |b| b.iter(|| black_box(theirs_encode_cca(black_box(&CCA), &ddict))));
    g.finish();

    // frame_decoder: 64 CCRs back to back, split and decoded (framing and
    // header/AVP validation; values are not read).
    let mut stream = BytesMut::new();
    for _ in 0..64 {
        stream.extend_from_slice(&ccr_bytes);
    }
    let stream: Bytes = stream.freeze();
    let mut check = BytesMut::from(&stream[..]);
    let mut n = 0;
    while let Some(m) = FrameDecoder::new().decode(&mut check).unwrap() {
        assert_eq!(m.as_bytes(), &ccr_bytes[..]);
        n += 1;
    }
    assert_eq!((n, check.len()), (64, 0));
    let mut g = c.benchmark_group("frame_decoder");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("diam-proto", |b| {
        let mut dec = FrameDecoder::new();
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut src| {
                let mut n = 0;
                while let Some(m) = dec.decode(&mut src).unwrap() {
                    black_box(&m);
                    n += 1;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
