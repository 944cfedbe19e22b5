//! Decoding errors.
//!
//! Every malformed-input condition has its own variant, and every variant
//! names the byte offset (from the start of the buffer handed to the decoder)
//! where the problem was found, so a user can locate it in a hex dump.

/// Where an AVP lives: directly in a message or inside a Grouped AVP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// The top level of a message.
    Message,
    /// The payload of a Grouped AVP.
    Group,
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::Message => "message",
            Container::Group => "parent group",
        })
    }
}

/// A message, frame or AVP that cannot be decoded.
///
/// `offset()` gives the byte offset of the problem. Errors are `Send + Sync`
/// and cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The version byte is not 1 (RFC 6733 §3).
    #[error("byte {offset}: unsupported Diameter version {version} (expected 1)")]
    BadVersion {
        /// Offset of the version byte.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The message length is smaller than the 20-byte header.
    #[error("byte {offset}: message length {length} is shorter than the 20-byte header")]
    MessageTooShort {
        /// Offset of the message header.
        offset: usize,
        /// The length field.
        length: u32,
    },
    /// The message length is not a multiple of 4 (RFC 6733 §3).
    #[error("byte {offset}: message length {length} is not a multiple of 4")]
    UnalignedLength {
        /// Offset of the message header.
        offset: usize,
        /// The length field.
        length: u32,
    },
    /// The message length exceeds the configured maximum. Checked before any
    /// buffer is allocated for the message.
    #[error("byte {offset}: message length {length} exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Offset of the message header.
        offset: usize,
        /// The length field.
        length: u32,
        /// The configured maximum.
        max: usize,
    },
    /// The input ends before the message does.
    #[error("byte {offset}: message truncated: header says {length} bytes, only {available} present")]
    Truncated {
        /// Offset of the message header.
        offset: usize,
        /// The length field (or 20 when the header itself is cut).
        length: u32,
        /// Bytes actually present from `offset`.
        available: usize,
    },
    /// Bytes follow the message inside a buffer that must hold exactly one.
    #[error("byte {offset}: {extra} unexpected bytes after the end of the message")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many extra bytes.
        extra: usize,
    },
    /// Fewer than 8 bytes remain where an AVP header must start.
    #[error("byte {offset}: truncated AVP header: {available} bytes left in the {container}, at least 8 needed")]
    TruncatedAvpHeader {
        /// Offset of the AVP.
        offset: usize,
        /// Bytes left in the container.
        available: usize,
        /// The container the AVP sits in.
        container: Container,
    },
    /// The AVP length is smaller than its own header (8, or 12 with Vendor-Id).
    #[error("byte {offset}: AVP {code} length {length} is shorter than its {header_len}-byte header")]
    AvpTooShort {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// The AVP length field.
        length: u32,
        /// Header size implied by the flags.
        header_len: usize,
    },
    /// The AVP claims more bytes than its message holds.
    #[error("byte {offset}: AVP {code} length {length} overruns the message, which ends at byte {end}")]
    AvpOverrunsMessage {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// The AVP length field.
        length: u32,
        /// Where the message ends.
        end: usize,
    },
    /// The AVP claims more bytes than its enclosing Grouped AVP holds.
    #[error("byte {offset}: AVP {code} length {length} overruns its parent group, which ends at byte {end}")]
    AvpOverrunsGroup {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// The AVP length field.
        length: u32,
        /// Where the parent group ends.
        end: usize,
    },
    /// The V flag is set but there is no room for the 4-byte Vendor-Id.
    #[error(
        "byte {offset}: AVP {code} has the Vendor-Specific flag but no room for the Vendor-Id ({available} bytes)"
    )]
    MissingVendorId {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// Bytes available for header and payload.
        available: usize,
    },
    /// A fixed-size type (Unsigned32, Float64, Time, …) with the wrong payload size.
    #[error("byte {offset}: AVP {code} of type {data_type} must carry {expected} bytes, found {actual}")]
    BadPayloadLength {
        /// Offset of the payload.
        offset: usize,
        /// AVP code.
        code: u32,
        /// Name of the expected type.
        data_type: &'static str,
        /// Payload size the type requires.
        expected: usize,
        /// Payload size found.
        actual: usize,
    },
    /// A string type that is not valid UTF-8.
    #[error("byte {offset}: AVP {code} of type {data_type} holds invalid UTF-8")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
        /// AVP code.
        code: u32,
        /// Name of the type.
        data_type: &'static str,
    },
    /// An Address whose payload does not fit its address family.
    #[error("byte {offset}: AVP {code} Address of family {family} has {actual} address bytes, expected {expected}")]
    BadAddress {
        /// Offset of the payload.
        offset: usize,
        /// AVP code.
        code: u32,
        /// The AddressType (IANA address family number), if present.
        family: u16,
        /// Bytes the family requires.
        expected: usize,
        /// Bytes present after the family.
        actual: usize,
    },
    /// Grouped AVPs nested deeper than [`crate::MAX_GROUP_DEPTH`].
    #[error("byte {offset}: Grouped AVP {code} nested deeper than {max} levels")]
    GroupTooDeep {
        /// Offset of the AVP.
        offset: usize,
        /// AVP code.
        code: u32,
        /// The nesting limit.
        max: usize,
    },
}

impl DecodeError {
    /// Byte offset of the problem.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::BadVersion { offset, .. }
            | DecodeError::MessageTooShort { offset, .. }
            | DecodeError::UnalignedLength { offset, .. }
            | DecodeError::MessageTooLarge { offset, .. }
            | DecodeError::Truncated { offset, .. }
            | DecodeError::TrailingBytes { offset, .. }
            | DecodeError::TruncatedAvpHeader { offset, .. }
            | DecodeError::AvpTooShort { offset, .. }
            | DecodeError::AvpOverrunsMessage { offset, .. }
            | DecodeError::AvpOverrunsGroup { offset, .. }
            | DecodeError::MissingVendorId { offset, .. }
            | DecodeError::BadPayloadLength { offset, .. }
            | DecodeError::InvalidUtf8 { offset, .. }
            | DecodeError::BadAddress { offset, .. }
            | DecodeError::GroupTooDeep { offset, .. } => offset,
        }
    }

    /// The same error with its offset moved by `base` bytes, for reporting a
    /// position inside a larger stream.
    #[must_use]
    pub fn shifted(mut self, base: usize) -> Self {
        match &mut self {
            DecodeError::BadVersion { offset, .. }
            | DecodeError::MessageTooShort { offset, .. }
            | DecodeError::UnalignedLength { offset, .. }
            | DecodeError::MessageTooLarge { offset, .. }
            | DecodeError::Truncated { offset, .. }
            | DecodeError::TrailingBytes { offset, .. }
            | DecodeError::TruncatedAvpHeader { offset, .. }
            | DecodeError::AvpTooShort { offset, .. }
            | DecodeError::AvpOverrunsMessage { offset, .. }
            | DecodeError::MissingVendorId { offset, .. }
            | DecodeError::BadPayloadLength { offset, .. }
            | DecodeError::InvalidUtf8 { offset, .. }
            | DecodeError::BadAddress { offset, .. }
            | DecodeError::GroupTooDeep { offset, .. } => *offset += base,
            DecodeError::AvpOverrunsGroup { offset, end, .. } => {
                *offset += base;
                *end += base;
            }
        }
        if let DecodeError::AvpOverrunsMessage { end, .. } = &mut self {
            *end += base;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<DecodeError>();
    }

    #[test]
    fn shifted_moves_offsets() {
        let e = DecodeError::AvpOverrunsGroup { offset: 4, code: 1, length: 9, end: 8 }.shifted(100);
        assert_eq!(e.offset(), 104);
        assert!(e.to_string().contains("ends at byte 108"), "{e}");
        let e = DecodeError::AvpOverrunsMessage { offset: 4, code: 1, length: 9, end: 8 }.shifted(10);
        assert!(e.to_string().starts_with("byte 14:"), "{e}");
        assert!(e.to_string().contains("ends at byte 18"), "{e}");
    }
}
