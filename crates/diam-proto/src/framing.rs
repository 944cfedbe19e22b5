//! Finding message boundaries in a byte stream.
//!
//! [`check_frame`] looks at the front of a buffer and says whether a whole
//! message is there, how many more bytes are needed, or that the stream is
//! corrupt. The maximum message size is enforced from the first four bytes,
//! before anything is allocated for the message. [`FrameDecoder`] wraps it in
//! the shape of a `tokio_util::codec::Decoder` (this crate has no tokio
//! dependency; the driver crate forwards to it).

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::header::{Header, HEADER_LEN};
use crate::message::Message;

/// Default maximum message size: 1 MiB.
///
/// RFC 6733 allows up to 16 MiB (24-bit length), but real Diameter messages
/// are a few kilobytes; a 1 MiB bound stops a peer from making us buffer
/// 16 MiB per connection with one header. Raise it with
/// [`FrameDecoder::with_max_size`] if an application needs more.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Not a whole message yet: at least `need` more bytes are required.
    Incomplete {
        /// Additional bytes needed before the next check can succeed.
        need: usize,
    },
    /// A complete message of `len` bytes starts the buffer.
    Complete {
        /// Message length.
        len: usize,
    },
}

/// Checks the front of `buf` for a complete message no larger than `max_size`.
///
/// Returns `Err` only for a corrupt stream (bad version, impossible length,
/// or a length above `max_size`); an incomplete message is not an error.
pub fn check_frame(buf: &[u8], max_size: usize) -> Result<FrameStatus, DecodeError> {
    if let Some(&version) = buf.first() {
        if version != crate::header::VERSION {
            return Err(DecodeError::BadVersion { offset: 0, version });
        }
    }
    if buf.len() < 4 {
        return Ok(FrameStatus::Incomplete { need: HEADER_LEN - buf.len() });
    }
    let length = Header::check_prefix([buf[0], buf[1], buf[2], buf[3]], 0)?;
    let len = length as usize;
    if len > max_size {
        return Err(DecodeError::MessageTooLarge { offset: 0, length, max: max_size });
    }
    if buf.len() < len {
        Ok(FrameStatus::Incomplete { need: len - buf.len() })
    } else {
        Ok(FrameStatus::Complete { len })
    }
}

/// Splits a byte stream into decoded [`Message`]s.
///
/// ```
/// use bytes::BytesMut;
/// use diam_proto::{FrameDecoder, Message};
/// let dwr = Message::request(0, 280).build();
/// let mut stream = BytesMut::from(dwr.as_bytes());
/// stream.extend_from_slice(&dwr.as_bytes()[..7]); // half of a second one
/// let mut dec = FrameDecoder::new();
/// assert!(dec.decode(&mut stream).unwrap().is_some());
/// assert!(dec.decode(&mut stream).unwrap().is_none());
/// assert_eq!(stream.len(), 7);
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn new() -> Self {
        FrameDecoder { max_size: DEFAULT_MAX_MESSAGE_SIZE }
    }

    /// A decoder accepting messages up to `max_size` bytes (clamped to the
    /// 20-byte minimum and the 24-bit maximum).
    pub fn with_max_size(max_size: usize) -> Self {
        FrameDecoder { max_size: max_size.clamp(HEADER_LEN, crate::header::MAX_LENGTH_FIELD) }
    }

    /// The maximum accepted message size.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Takes one complete message off the front of `src`.
    ///
    /// `Ok(None)` when more bytes are needed; `src` then has room reserved
    /// for the rest of the frame (never more than the maximum size). The
    /// returned message shares `src`'s allocation, no copy is made.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match check_frame(src, self.max_size)? {
            FrameStatus::Incomplete { need } => {
                src.reserve(need);
                Ok(None)
            }
            FrameStatus::Complete { len } => Message::decode(src.split_to(len).freeze()).map(Some),
        }
    }

    /// Like [`decode`](Self::decode), but checks only the frame (header
    /// and length), not the AVPs: `Err` means the stream is corrupt,
    /// while a message with bad AVPs comes out for
    /// [`crate::check`] to judge.
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        match check_frame(src, self.max_size)? {
            FrameStatus::Incomplete { need } => {
                src.reserve(need);
                Ok(None)
            }
            FrameStatus::Complete { len } => Message::decode_frame(src.split_to(len).freeze()).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_complete_and_errors() {
        assert_eq!(check_frame(&[], 100), Ok(FrameStatus::Incomplete { need: 20 }));
        assert_eq!(check_frame(&[1, 0], 100), Ok(FrameStatus::Incomplete { need: 18 }));
        assert_eq!(check_frame(&[1, 0, 0, 24, 0], 100), Ok(FrameStatus::Incomplete { need: 19 }));
        assert_eq!(
            check_frame(&[1, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 100),
            Ok(FrameStatus::Complete { len: 20 })
        );
        assert_eq!(check_frame(&[2], 100), Err(DecodeError::BadVersion { offset: 0, version: 2 }));
        assert!(matches!(
            check_frame(&[1, 0xff, 0xff, 0xfc], 1 << 20),
            Err(DecodeError::MessageTooLarge { length: 0xff_fffc, .. })
        ));
    }

    #[test]
    fn oversized_frame_does_not_reserve() {
        let mut src = BytesMut::from(&[1u8, 0xff, 0xff, 0xfc][..]);
        let cap = src.capacity();
        let mut dec = FrameDecoder::new();
        assert!(dec.decode(&mut src).is_err());
        assert_eq!(src.capacity(), cap);
    }
}
