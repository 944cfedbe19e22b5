//! Sans-IO Diameter (RFC 6733): codec, dictionary and message builder.
//!
//! This crate does no I/O and reads no clock. It turns bytes into
//! [`Message`]s and back:
//!
//! * **Decoding is zero-copy.** A [`Message`] shares a [`bytes::Bytes`]
//!   buffer; AVPs are [`Avp`] views into it, iterated lazily, and Grouped
//!   AVPs are parsed only when their children are iterated. Every read is
//!   bounded by its container, so a lying length field can neither panic nor
//!   read past its parent. Malformed input yields a [`DecodeError`] naming
//!   the byte offset.
//! * **Encoding writes straight into one [`bytes::BytesMut`]**:
//!   [`MessageBuilder`] appends each AVP as it is added and patches the
//!   message length once, with no per-AVP allocation.
//! * **Framing**: [`check_frame`] and [`FrameDecoder`] find message
//!   boundaries in a stream and enforce a maximum size
//!   ([`DEFAULT_MAX_MESSAGE_SIZE`], 1 MiB) before allocating.
//! * **Dictionary**: [`Dictionary::base`] knows the base protocol,
//!   Credit-Control and common 3GPP AVPs; Wireshark's XML dictionaries load
//!   on top (feature `xml`, on by default).
//!
//! ```
//! use diam_proto::{avps, Message};
//!
//! let cer = Message::request(0, diam_proto::commands::CAPABILITIES_EXCHANGE)
//!     .avp(avps::ORIGIN_HOST, "client.example.com")
//!     .avp(avps::ORIGIN_REALM, "example.com")
//!     .build();
//! let cea = Message::answer_to(&cer)
//!     .avp(avps::RESULT_CODE, diam_proto::result_codes::DIAMETER_SUCCESS)
//!     .build();
//! let decoded = Message::decode(cea.to_bytes())?;
//! assert_eq!(decoded.get(avps::RESULT_CODE)?, Some(2001));
//! # Ok::<(), diam_proto::DecodeError>(())
//! ```
//!
//! Dependencies: `bytes` for shared buffers, `thiserror` for errors, and
//! (feature `xml`) `quick-xml` to read Wireshark's dictionary files.
#![warn(missing_docs)]

pub mod avp;
pub mod check;
mod codes;
pub mod dict;
mod error;
mod escape;
mod framing;
mod header;
mod message;
pub mod peer;
pub mod psm;
pub mod routing;
pub mod types;
pub mod uri;
pub mod watchdog;

pub use avp::{Avp, AvpFlags, AvpIter};
pub use codes::{apps, avps, commands, disconnect_cause, result_codes, vendors};
pub use dict::{AvpDef, CommandDef, Dictionary, MAX_GROUP_DEPTH};
pub use error::{Container, DecodeError};
pub use escape::Escaped;
pub use framing::{check_frame, FrameDecoder, FrameStatus, DEFAULT_MAX_MESSAGE_SIZE};
pub use header::{CommandFlags, Header, HEADER_LEN, MAX_LENGTH_FIELD, VERSION};
pub use message::{AvpKey, GroupBuilder, Message, MessageBuilder};
