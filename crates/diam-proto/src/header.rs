//! The 20-byte Diameter message header (RFC 6733 §3).

use crate::error::DecodeError;

/// Size of the Diameter message header in bytes.
pub const HEADER_LEN: usize = 20;

/// The only Diameter version (RFC 6733 §3).
pub const VERSION: u8 = 1;

/// Largest value the 24-bit message and AVP length fields can hold.
pub const MAX_LENGTH_FIELD: usize = 0x00ff_ffff;

/// Command flags: R, P, E, T and the four reserved bits.
///
/// Reserved bits are kept as received, so a decoded message re-encodes
/// byte for byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandFlags(u8);

impl CommandFlags {
    /// R: the message is a request.
    pub const REQUEST: u8 = 0x80;
    /// P: the message may be proxied, relayed or redirected.
    pub const PROXIABLE: u8 = 0x40;
    /// E: the answer carries a protocol error.
    pub const ERROR: u8 = 0x20;
    /// T: the request may be a retransmission (RFC 6733 §5.5.4).
    pub const RETRANSMIT: u8 = 0x10;

    /// Flags from their wire byte, reserved bits included.
    pub const fn from_bits(bits: u8) -> Self {
        CommandFlags(bits)
    }
    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// The R bit.
    pub const fn is_request(self) -> bool {
        self.0 & Self::REQUEST != 0
    }
    /// The P bit.
    pub const fn is_proxiable(self) -> bool {
        self.0 & Self::PROXIABLE != 0
    }
    /// The E bit.
    pub const fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    /// The T bit.
    pub const fn is_retransmit(self) -> bool {
        self.0 & Self::RETRANSMIT != 0
    }
    /// The four reserved bits (zero in conforming messages).
    pub const fn reserved(self) -> u8 {
        self.0 & 0x0f
    }
    /// These flags with `bit` set or cleared.
    #[must_use]
    pub const fn with(self, bit: u8, on: bool) -> Self {
        if on {
            CommandFlags(self.0 | bit)
        } else {
            CommandFlags(self.0 & !bit)
        }
    }
}

impl std::fmt::Debug for CommandFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        for (bit, c) in [(Self::REQUEST, 'R'), (Self::PROXIABLE, 'P'), (Self::ERROR, 'E'), (Self::RETRANSMIT, 'T')] {
            s.push(if self.0 & bit != 0 { c } else { '-' });
        }
        if self.reserved() != 0 {
            write!(f, "{s}+{:#x}", self.reserved())
        } else {
            f.write_str(&s)
        }
    }
}

/// A decoded message header.
///
/// The fields mirror the wire format one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message length in bytes, header included (24 bits on the wire).
    pub length: u32,
    /// Command flags.
    pub flags: CommandFlags,
    /// Command code (24 bits on the wire).
    pub command_code: u32,
    /// Application-Id.
    pub application_id: u32,
    /// Hop-by-Hop Identifier.
    pub hop_by_hop: u32,
    /// End-to-End Identifier.
    pub end_to_end: u32,
}

impl Header {
    /// Checks the first four bytes of a message (version and length) without
    /// needing the rest, returning the message length.
    ///
    /// `offset` is only used to label errors.
    pub(crate) fn check_prefix(prefix: [u8; 4], offset: usize) -> Result<u32, DecodeError> {
        if prefix[0] != VERSION {
            return Err(DecodeError::BadVersion { offset, version: prefix[0] });
        }
        let length = u32::from_be_bytes([0, prefix[1], prefix[2], prefix[3]]);
        if (length as usize) < HEADER_LEN {
            return Err(DecodeError::MessageTooShort { offset, length });
        }
        if length % 4 != 0 {
            return Err(DecodeError::UnalignedLength { offset, length });
        }
        Ok(length)
    }

    /// Parses and validates a header from the start of `buf`.
    ///
    /// Checks the version, that the length covers the header, and that the
    /// length is a multiple of 4. Does not require the whole message.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        if buf.len() < HEADER_LEN {
            if let Some(&version) = buf.first() {
                if version != VERSION {
                    return Err(DecodeError::BadVersion { offset: 0, version });
                }
            }
            return Err(DecodeError::Truncated { offset: 0, length: HEADER_LEN as u32, available: buf.len() });
        }
        let length = Self::check_prefix([buf[0], buf[1], buf[2], buf[3]], 0)?;
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        Ok(Header {
            length,
            flags: CommandFlags(buf[4]),
            command_code: word(4) & 0x00ff_ffff,
            application_id: word(8),
            hop_by_hop: word(12),
            end_to_end: word(16),
        })
    }

    /// The 20 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&(self.length & 0x00ff_ffff).to_be_bytes());
        out[0] = VERSION;
        out[4..8].copy_from_slice(&(self.command_code & 0x00ff_ffff).to_be_bytes());
        out[4] = self.flags.bits();
        out[8..12].copy_from_slice(&self.application_id.to_be_bytes());
        out[12..16].copy_from_slice(&self.hop_by_hop.to_be_bytes());
        out[16..20].copy_from_slice(&self.end_to_end.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_keeps_reserved_bits() {
        let h = Header {
            length: 0x01_0204,
            flags: CommandFlags::from_bits(0xff),
            command_code: 0x00ab_cdef,
            application_id: 0xffff_ffff,
            hop_by_hop: 1,
            end_to_end: 0xdead_beef,
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(Header::parse(&bytes).unwrap(), h);
        assert_eq!(h.flags.reserved(), 0x0f);
        assert!(h.flags.is_request() && h.flags.is_proxiable() && h.flags.is_error() && h.flags.is_retransmit());
    }

    #[test]
    fn header_checks() {
        let mut b = Header {
            length: 20,
            flags: CommandFlags::default(),
            command_code: 280,
            application_id: 0,
            hop_by_hop: 0,
            end_to_end: 0,
        }
        .to_bytes();
        assert!(Header::parse(&b).is_ok());
        b[0] = 2;
        assert_eq!(Header::parse(&b), Err(DecodeError::BadVersion { offset: 0, version: 2 }));
        b[0] = 1;
        b[3] = 16;
        assert_eq!(Header::parse(&b), Err(DecodeError::MessageTooShort { offset: 0, length: 16 }));
        b[3] = 22;
        assert_eq!(Header::parse(&b), Err(DecodeError::UnalignedLength { offset: 0, length: 22 }));
        assert!(matches!(Header::parse(&b[..5]), Err(DecodeError::Truncated { available: 5, .. })));
    }

    #[test]
    fn flag_debug() {
        assert_eq!(format!("{:?}", CommandFlags::from_bits(0xc0)), "RP--");
        assert_eq!(format!("{:?}", CommandFlags::from_bits(0x13)), "---T+0x3");
        assert!(CommandFlags::default().with(CommandFlags::ERROR, true).is_error());
    }
}
