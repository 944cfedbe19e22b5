//! Message checks of RFC 6733 §7: what is wrong with a request whose frame
//! is intact, and the error answer it gets.
//!
//! The driver splits the stream with [`FrameDecoder::decode_frame`]
//! (header and length only), then:
//!
//! * a **request** goes through [`check_request`]: a bad header bit, a bad
//!   AVP length, flag or value, or an unknown AVP with the M bit yields a
//!   [`Rejection`] with the Result-Code and the Failed-AVP RFC 6733 §7
//!   asks for, and [`Rejection::answer`] builds the answer. The connection
//!   stays open;
//! * an **answer** goes through [`check_answer`]: a broken AVP structure
//!   fails only the request it answers.
//!
//! Only a corrupt stream (bad version, a length out of bounds) is fatal to
//! the connection, and that is [`FrameDecoder`]'s business.
//!
//! [`FrameDecoder`]: crate::FrameDecoder
//! [`FrameDecoder::decode_frame`]: crate::FrameDecoder::decode_frame
//!
//! ```
//! use diam_proto::check::{check_request, MandatoryAvps};
//! use diam_proto::{avps, result_codes, AvpFlags, Dictionary, Message};
//! // An AVP the dictionary does not know, with the M bit set.
//! let req = Message::request(4, 272)
//!     .avp(avps::SESSION_ID, "a;1")
//!     .raw_avp(99_999, AvpFlags::from_bits(AvpFlags::MANDATORY), None, b"??")
//!     .build();
//! let rejection = check_request(&req, Dictionary::base(), MandatoryAvps::Enforce).unwrap_err();
//! assert_eq!(rejection.result_code(), result_codes::DIAMETER_AVP_UNSUPPORTED);
//! let answer = rejection.answer(&req, "server.example.net", "example.net");
//! assert_eq!(answer.get(avps::RESULT_CODE)?, Some(5001));
//! assert_eq!(answer.get(avps::SESSION_ID)?, Some("a;1"));
//! assert!(answer.find(avps::FAILED_AVP).is_some());
//! # Ok::<(), diam_proto::DecodeError>(())
//! ```

use crate::avp::{padded, AvpFlags, AVP_HEADER_LEN, AVP_VENDOR_HEADER_LEN};
use crate::codes::{avps, result_codes};
use crate::dict::{Dictionary, FlagRule, MAX_GROUP_DEPTH};
use crate::error::DecodeError;
use crate::header::HEADER_LEN;
use crate::message::{Message, MessageBuilder};
use crate::types::DataType;

/// Largest AVP copied whole into a Failed-AVP; a larger one is echoed as
/// its header with the data cut to this size (a hostile 1 MiB AVP must not
/// make us send 1 MiB back).
pub const MAX_FAILED_AVP_DATA: usize = 1024;

/// Whether unknown AVPs with the M bit reject a request (RFC 6733 §4.1:
/// a client, server or proxy that does not recognize a mandatory AVP MUST
/// reject the message; a relay forwards it as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MandatoryAvps {
    /// Answer 5001 DIAMETER_AVP_UNSUPPORTED (a node serving the application).
    Enforce,
    /// Let them through (a relay, or an application with its own checks).
    Ignore,
}

/// Why a request is refused, and what its answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    result_code: u32,
    /// Code, flags, Vendor-Id and (possibly cut) data of the offending AVP.
    failed: Option<FailedAvp>,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FailedAvp {
    code: u32,
    flags: AvpFlags,
    vendor_id: Option<u32>,
    data: Vec<u8>,
}

impl Rejection {
    fn new(result_code: u32, reason: impl Into<String>) -> Self {
        Rejection { result_code, failed: None, reason: reason.into() }
    }

    /// The Result-Code of the answer.
    pub fn result_code(&self) -> u32 {
        self.result_code
    }

    /// What was wrong, for logs and the Error-Message AVP.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The code of the AVP reported in Failed-AVP, if any.
    pub fn failed_avp_code(&self) -> Option<u32> {
        self.failed.as_ref().map(|f| f.code)
    }

    /// The error answer to `request`: the request's identifiers and
    /// Session-Id (when it could be read), Result-Code, our Origin-Host and
    /// Origin-Realm, Error-Message, and Failed-AVP. The E bit is set for
    /// protocol errors (3xxx) only, as RFC 6733 §7.1 says.
    pub fn answer(&self, request: &Message, origin_host: &str, origin_realm: &str) -> Message {
        let mut b = bare_answer(request);
        b = b.error(result_codes::class(self.result_code) == 3);
        if let Some(sid) = leading_session_id(request) {
            b = b.copy_avp(&sid);
        }
        b = b
            .avp(avps::RESULT_CODE, self.result_code)
            .avp(avps::ORIGIN_HOST, origin_host)
            .avp(avps::ORIGIN_REALM, origin_realm);
        let msg: String = self.reason.chars().take(200).collect();
        b = b.avp(avps::ERROR_MESSAGE, msg.as_str());
        b = copy_proxy_info(request, b);
        if let Some(f) = &self.failed {
            b = b.group(avps::FAILED_AVP, |g| {
                g.raw_avp(f.code, f.flags.with(AvpFlags::VENDOR, f.vendor_id.is_some()), f.vendor_id, &f.data);
            });
        }
        b.build()
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Result-Code {}: {}", self.result_code, self.reason)
    }
}

/// The answer's header (command, application, P flag, identifiers) and no
/// AVP: the Session-Id is copied by the caller, and only when it is well
/// formed ([`leading_session_id`]).
fn bare_answer(request: &Message) -> crate::MessageBuilder {
    let h = request.header();
    let flags = crate::CommandFlags::from_bits(h.flags.bits() & crate::CommandFlags::PROXIABLE);
    crate::MessageBuilder::new(flags, h.command_code, h.application_id)
        .hop_by_hop(h.hop_by_hop)
        .end_to_end(h.end_to_end)
}

/// The Session-Id AVP when it is among the well-formed AVPs before any
/// error (RFC 6733 §8.8 puts it first).
fn leading_session_id(request: &Message) -> Option<crate::Avp<'_>> {
    for avp in request.avps() {
        let avp = avp.ok()?;
        if avp.code() == avps::SESSION_ID.code() && avp.vendor_id().is_none() {
            return std::str::from_utf8(avp.data()).is_ok().then_some(avp);
        }
    }
    None
}

/// Reads the raw AVP header at `pos` of `buf` (bounded by `end`): code,
/// flags, Vendor-Id, declared length, header length.
fn raw_header(buf: &[u8], pos: usize, end: usize) -> Option<(u32, AvpFlags, Option<u32>, usize, usize)> {
    let b = buf.get(pos..end)?;
    if b.len() < AVP_HEADER_LEN {
        return None;
    }
    let code = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let flags = AvpFlags::from_bits(b[4]);
    let length = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
    let (vendor, hlen) = if flags.is_vendor() && b.len() >= AVP_VENDOR_HEADER_LEN {
        (Some(u32::from_be_bytes([b[8], b[9], b[10], b[11]])), AVP_VENDOR_HEADER_LEN)
    } else {
        (None, AVP_HEADER_LEN)
    };
    Some((code, flags, vendor, length, hlen))
}

fn failed_from_raw(buf: &[u8], pos: usize, end: usize) -> Option<FailedAvp> {
    let (code, flags, vendor_id, length, hlen) = raw_header(buf, pos, end)?;
    let data_end = pos.saturating_add(length.max(hlen)).min(end);
    let data = buf.get(pos + hlen..data_end).unwrap_or(&[]);
    let data = &data[..data.len().min(MAX_FAILED_AVP_DATA)];
    Some(FailedAvp { code, flags, vendor_id, data: data.to_vec() })
}

/// Checks a request against RFC 6733 §3 and §4 and the dictionary.
///
/// In order: the E bit must not be set in a request (3008
/// DIAMETER_INVALID_HDR_BITS); every AVP must fit its container (5014
/// DIAMETER_INVALID_AVP_LENGTH; 5015 DIAMETER_INVALID_MESSAGE_LENGTH when
/// the message ends inside an AVP header); reserved AVP flag bits must be
/// clear and the M bit must agree with the definition (3009
/// DIAMETER_INVALID_AVP_BITS); a known AVP's payload must fit its type
/// (5014 for a wrong size, 5004 DIAMETER_INVALID_AVP_VALUE for bad UTF-8 or
/// a bad address); an unknown AVP with the M bit gets 5001
/// DIAMETER_AVP_UNSUPPORTED under [`MandatoryAvps::Enforce`]. Known Grouped
/// AVPs are checked inside, down to [`MAX_GROUP_DEPTH`] levels.
pub fn check_request(request: &Message, dict: &Dictionary, mandatory: MandatoryAvps) -> Result<(), Rejection> {
    if request.flags().is_error() {
        return Err(Rejection::new(result_codes::DIAMETER_INVALID_HDR_BITS, "the E bit is set in a request"));
    }
    let buf = request.as_bytes();
    check_avps(buf, HEADER_LEN, request.len(), dict, mandatory, 0, true)
}

fn check_avps(
    buf: &[u8],
    start: usize,
    end: usize,
    dict: &Dictionary,
    mandatory: MandatoryAvps,
    depth: usize,
    top: bool,
) -> Result<(), Rejection> {
    let mut pos = start;
    while pos < end {
        let Some((code, flags, vendor_id, length, hlen)) = raw_header(buf, pos, end) else {
            return Err(if top {
                Rejection::new(
                    result_codes::DIAMETER_INVALID_MESSAGE_LENGTH,
                    format!("the message ends inside an AVP header at byte {pos}"),
                )
            } else {
                Rejection::new(
                    result_codes::DIAMETER_INVALID_AVP_LENGTH,
                    format!("a Grouped AVP ends inside an AVP header at byte {pos}"),
                )
            });
        };
        let bad_length = |what: &str| Rejection {
            result_code: result_codes::DIAMETER_INVALID_AVP_LENGTH,
            failed: failed_from_raw(buf, pos, end),
            reason: format!("AVP {code} at byte {pos}: {what}"),
        };
        if flags.is_vendor() && end - pos < AVP_VENDOR_HEADER_LEN {
            return Err(bad_length("no room for its Vendor-Id"));
        }
        if length < hlen {
            return Err(bad_length("length shorter than its header"));
        }
        if length > end - pos {
            return Err(bad_length("length overruns its container"));
        }
        let data = pos + hlen..pos + length;
        let failed = || FailedAvp {
            code,
            flags,
            vendor_id,
            data: buf[data.start..data.end.min(data.start + MAX_FAILED_AVP_DATA)].to_vec(),
        };
        if flags.reserved() != 0 {
            return Err(Rejection {
                result_code: result_codes::DIAMETER_INVALID_AVP_BITS,
                failed: Some(failed()),
                reason: format!("AVP {code} at byte {pos}: reserved flag bits set"),
            });
        }
        match dict.avp(code, vendor_id) {
            Some(def) => {
                if flags.is_mandatory() && def.mandatory() == FlagRule::MustNot {
                    return Err(Rejection {
                        result_code: result_codes::DIAMETER_INVALID_AVP_BITS,
                        failed: Some(failed()),
                        reason: format!("{} must not have the M bit", def.name()),
                    });
                }
                if def.data_type() == DataType::Grouped {
                    if depth + 1 >= MAX_GROUP_DEPTH {
                        return Err(Rejection {
                            result_code: result_codes::DIAMETER_INVALID_AVP_VALUE,
                            failed: Some(failed()),
                            reason: format!("{} nested deeper than {MAX_GROUP_DEPTH} levels", def.name()),
                        });
                    }
                    check_avps(buf, data.start, data.end, dict, mandatory, depth + 1, false)?;
                } else if let Err(e) =
                    check_data(&buf[data.clone()], def.data_type(), || check_payload(buf, pos, end, def.data_type()))
                {
                    let rc = match e {
                        DecodeError::BadPayloadLength { .. } => result_codes::DIAMETER_INVALID_AVP_LENGTH,
                        _ => result_codes::DIAMETER_INVALID_AVP_VALUE,
                    };
                    return Err(Rejection {
                        result_code: rc,
                        failed: Some(failed()),
                        reason: format!("{}: {e}", def.name()),
                    });
                }
            }
            None if flags.is_mandatory() && mandatory == MandatoryAvps::Enforce => {
                let vendor = vendor_id.map(|v| format!(" (vendor {v})")).unwrap_or_default();
                return Err(Rejection {
                    result_code: result_codes::DIAMETER_AVP_UNSUPPORTED,
                    failed: Some(failed()),
                    reason: format!("AVP {code}{vendor} has the M bit and is not supported"),
                });
            }
            None => {}
        }
        pos = (pos + padded(length)).min(end);
    }
    Ok(())
}

/// Checks an AVP's payload against `data_type`: sizes and UTF-8 here
/// (the common types, on every request), the rest through the typed
/// decoders (`slow`).
fn check_data(
    data: &[u8],
    data_type: DataType,
    slow: impl FnOnce() -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let fixed = match data_type {
        DataType::OctetString => return Ok(()),
        DataType::Integer32 | DataType::Enumerated | DataType::Unsigned32 | DataType::Float32 | DataType::Time => 4,
        DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => 8,
        DataType::Utf8String | DataType::DiameterIdentity | DataType::DiameterUri => {
            if data.is_ascii() || std::str::from_utf8(data).is_ok() {
                return Ok(());
            }
            return slow();
        }
        _ => return slow(),
    };
    if data.len() == fixed {
        Ok(())
    } else {
        slow()
    }
}

/// Checks one AVP's payload against `data_type`, through the typed
/// decoders (the AVP's structure is already known to be sound).
fn check_payload(buf: &[u8], pos: usize, end: usize, data_type: DataType) -> Result<(), DecodeError> {
    match crate::avp::AvpIter::new_in(buf, pos, end, crate::error::Container::Message).next() {
        Some(Ok(avp)) => data_type.check(&avp),
        Some(Err(e)) => Err(e),
        None => Ok(()),
    }
}

/// Checks that an answer's AVPs tile the message (RFC 6733 §4): a broken
/// answer fails only the request it answers. Payloads are checked when
/// the application reads them.
pub fn check_answer(answer: &Message) -> Result<(), DecodeError> {
    crate::avp::AvpIter::new_in(answer.as_bytes(), HEADER_LEN, answer.len(), crate::error::Container::Message)
        .validate()
        .map(drop)
}

/// A builder for protocol-error answers with Result-Code and our identity,
/// for callers that refuse a request for their own reasons.
pub fn error_answer(request: &Message, result_code: u32, origin_host: &str, origin_realm: &str) -> MessageBuilder {
    let mut b = bare_answer(request).error(result_codes::class(result_code) == 3);
    if let Some(sid) = leading_session_id(request) {
        b = b.copy_avp(&sid);
    }
    let b =
        b.avp(avps::RESULT_CODE, result_code).avp(avps::ORIGIN_HOST, origin_host).avp(avps::ORIGIN_REALM, origin_realm);
    copy_proxy_info(request, b)
}

/// Most Proxy-Info AVPs copied into an answer (a request passes few
/// stateless proxies).
const MAX_PROXY_INFO: usize = 16;

/// Copies the request's top-level Proxy-Info AVPs, in order, as RFC 6733
/// §6.2 requires of every answer (error answers too), so stateless proxies
/// below us can route it back. Only the well-formed AVPs before any
/// malformed one are read.
fn copy_proxy_info(request: &Message, mut b: MessageBuilder) -> MessageBuilder {
    let mut n = 0;
    for avp in request.avps() {
        let Ok(avp) = avp else { break };
        if avp.code() == avps::PROXY_INFO.code() && avp.vendor_id().is_none() && n < MAX_PROXY_INFO {
            b = b.copy_avp(&avp);
            n += 1;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::avps;
    use bytes::BytesMut;

    fn req() -> crate::message::MessageBuilder {
        Message::request(4, 272)
            .avp(avps::SESSION_ID, "client;1;1")
            .avp(avps::ORIGIN_HOST, "client.example.com")
            .avp(avps::ORIGIN_REALM, "example.com")
    }

    #[test]
    fn error_answers_copy_proxy_info_in_order() {
        let r = req()
            .group(avps::PROXY_INFO, |g| {
                g.avp(avps::PROXY_HOST, "p1.example").avp(avps::PROXY_STATE, &b"one"[..]);
            })
            .group(avps::PROXY_INFO, |g| {
                g.avp(avps::PROXY_HOST, "p2.example").avp(avps::PROXY_STATE, &b"two"[..]);
            })
            .build();
        let a = error_answer(&r, result_codes::DIAMETER_UNABLE_TO_DELIVER, "h", "r").build();
        let hosts: Vec<String> = a
            .avps()
            .flatten()
            .filter(|x| x.code() == avps::PROXY_INFO.code())
            .map(|x| {
                let inner: Vec<_> = x.group().flatten().collect();
                String::from_utf8_lossy(inner[0].data()).into_owned()
            })
            .collect();
        assert_eq!(hosts, ["p1.example", "p2.example"]);
    }

    #[test]
    fn error_answers_carry_one_session_id() {
        let r = req().build();
        let a = error_answer(&r, result_codes::DIAMETER_UNABLE_TO_DELIVER, "h", "r").build();
        assert_eq!(a.get_all(avps::SESSION_ID).count(), 1);
        // An Unsigned32 of two octets: 5014, with the Session-Id once.
        let bad = req()
            .raw_avp(avps::ORIGIN_STATE_ID.code(), AvpFlags::default().with(AvpFlags::MANDATORY, true), None, &[0, 1])
            .build();
        let rej = check(&bad).unwrap_err();
        assert_eq!(rej.result_code(), result_codes::DIAMETER_INVALID_AVP_LENGTH);
        let a = rej.answer(&bad, "h", "r");
        assert_eq!(a.get_all(avps::SESSION_ID).count(), 1);
    }

    fn check(m: &Message) -> Result<(), Rejection> {
        check_request(m, Dictionary::base(), MandatoryAvps::Enforce)
    }

    /// A message whose bytes were edited after building (lengths fixed up).
    fn edited(m: &Message, f: impl FnOnce(&mut Vec<u8>)) -> Message {
        let mut b = m.as_bytes().to_vec();
        f(&mut b);
        let len = b.len() as u32;
        b[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        Message::decode_frame(BytesMut::from(&b[..]).freeze()).expect("frame")
    }

    fn failed_code(answer: &Message) -> Option<u32> {
        answer.find(avps::FAILED_AVP)?.group().next()?.ok().map(|a| a.code())
    }

    #[test]
    fn a_good_request_passes() {
        let m = req().avp(avps::CC_REQUEST_TYPE, 1).avp(avps::CC_REQUEST_NUMBER, 0u32).build();
        assert_eq!(check(&m), Ok(()));
    }

    #[test]
    fn e_bit_in_a_request_is_3008() {
        let m = req().error(true).build();
        let r = check(&m).unwrap_err();
        assert_eq!(r.result_code(), 3008);
        let a = r.answer(&m, "s.example.net", "example.net");
        assert!(a.flags().is_error(), "protocol errors carry the E bit");
        assert!(!a.is_request());
        assert_eq!((a.hop_by_hop(), a.end_to_end()), (m.hop_by_hop(), m.end_to_end()));
    }

    #[test]
    fn reserved_avp_bits_are_3009_with_failed_avp() {
        let m = req().raw_avp(avps::CC_REQUEST_NUMBER.code(), AvpFlags::from_bits(0x41), None, &[0, 0, 0, 1]).build();
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (3009, Some(415)));
        assert!(r.answer(&m, "s", "r").flags().is_error());
    }

    #[test]
    fn wrong_payload_size_is_5014_bad_utf8_is_5004() {
        let m = req().raw_avp(avps::CC_REQUEST_NUMBER.code(), AvpFlags::from_bits(0x40), None, &[0, 0, 1]).build();
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (5014, Some(415)));
        let a = r.answer(&m, "s", "r");
        assert!(!a.flags().is_error(), "5xxx answers have no E bit (RFC 6733 §7.1.5)");
        assert_eq!(failed_code(&a), Some(415));
        assert_eq!(a.get(avps::SESSION_ID).unwrap(), Some("client;1;1"));
        let m = req().raw_avp(avps::DESTINATION_REALM.code(), AvpFlags::from_bits(0x40), None, &[0xff, 0xfe]).build();
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (5004, Some(283)));
    }

    #[test]
    fn a_lying_avp_length_is_5014_and_the_answer_is_well_formed() {
        let m = req().avp(avps::CC_REQUEST_NUMBER, 7u32).build();
        // The last AVP claims 200 bytes.
        let m = edited(&m, |b| {
            let n = b.len();
            b[n - 12 + 5..n - 12 + 8].copy_from_slice(&200u32.to_be_bytes()[1..]);
        });
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (5014, Some(415)));
        let a = r.answer(&m, "s", "r");
        Message::decode(a.to_bytes()).expect("our answer decodes");
        assert!(check_answer(&a).is_ok());
        // Shorter than its header.
        let m = edited(&m, |b| {
            let n = b.len();
            b[n - 12 + 5..n - 12 + 8].copy_from_slice(&3u32.to_be_bytes()[1..]);
        });
        assert_eq!(check(&m).unwrap_err().result_code(), 5014);
        // The message ends inside an AVP header.
        let m = edited(&req().build(), |b| b.extend_from_slice(&[0, 0, 1, 7]));
        assert_eq!(check(&m).unwrap_err().result_code(), 5015);
    }

    #[test]
    fn unknown_mandatory_avp_is_5001_unless_ignored() {
        let m = req().raw_avp(99_999, AvpFlags::from_bits(0xc0), Some(10415), b"xyz").build();
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (5001, Some(99_999)));
        assert!(check_request(&m, Dictionary::base(), MandatoryAvps::Ignore).is_ok());
        // Without the M bit it is fine.
        let m = req().raw_avp(99_999, AvpFlags::from_bits(0x80), Some(10415), b"xyz").build();
        assert!(check(&m).is_ok());
    }

    #[test]
    fn errors_inside_grouped_avps_are_found() {
        let m = req()
            .group(avps::SUBSCRIPTION_ID, |g| {
                g.raw_avp(99_998, AvpFlags::from_bits(0x40), None, b"zz");
            })
            .build();
        let r = check(&m).unwrap_err();
        assert_eq!((r.result_code(), r.failed_avp_code()), (5001, Some(99_998)));
    }

    #[test]
    fn failed_avp_data_is_capped() {
        let big = vec![0x41u8; 10_000];
        let m = req().raw_avp(99_999, AvpFlags::from_bits(0x40), None, &big).build();
        let r = check(&m).unwrap_err();
        let a = r.answer(&m, "s", "r");
        assert!(a.len() < 2 * MAX_FAILED_AVP_DATA, "answer is {} bytes", a.len());
    }

    #[test]
    fn answers_with_a_broken_structure_are_caught() {
        let a = Message::answer_to(&req().build()).avp(avps::RESULT_CODE, 2001u32).build();
        assert!(check_answer(&a).is_ok());
        let bad = edited(&a, |b| {
            let n = b.len();
            b[n - 12 + 5..n - 12 + 8].copy_from_slice(&64u32.to_be_bytes()[1..]);
        });
        assert!(check_answer(&bad).is_err());
    }
}
