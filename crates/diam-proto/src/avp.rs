//! AVPs (RFC 6733 §4): zero-copy views and lazy iteration.
//!
//! An [`Avp`] borrows its bytes from the buffer it was parsed from. Iteration
//! is lazy: [`AvpIter`] parses one AVP header per step, and a Grouped AVP's
//! children are parsed only when [`Avp::group`] is iterated. Every step reads
//! through bounds fixed by the parent (message or group), so a lying length
//! field can never read past its container.

use crate::error::{Container, DecodeError};
use crate::types::AvpType;

/// Size of an AVP header without Vendor-Id.
pub const AVP_HEADER_LEN: usize = 8;
/// Size of an AVP header with Vendor-Id.
pub const AVP_VENDOR_HEADER_LEN: usize = 12;

/// Rounds `len` up to the next multiple of 4 (AVP padding, RFC 6733 §4.1).
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// AVP flags: V, M, P and the five reserved bits (kept as received).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AvpFlags(u8);

impl AvpFlags {
    /// V: a Vendor-Id field follows the AVP length.
    pub const VENDOR: u8 = 0x80;
    /// M: the receiver must understand this AVP.
    pub const MANDATORY: u8 = 0x40;
    /// P: reserved for end-to-end security (deprecated, kept for round trips).
    pub const PROTECTED: u8 = 0x20;

    /// Flags from their wire byte.
    pub const fn from_bits(bits: u8) -> Self {
        AvpFlags(bits)
    }
    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// The V bit.
    pub const fn is_vendor(self) -> bool {
        self.0 & Self::VENDOR != 0
    }
    /// The M bit.
    pub const fn is_mandatory(self) -> bool {
        self.0 & Self::MANDATORY != 0
    }
    /// The P bit.
    pub const fn is_protected(self) -> bool {
        self.0 & Self::PROTECTED != 0
    }
    /// The five reserved bits.
    pub const fn reserved(self) -> u8 {
        self.0 & 0x1f
    }
    /// These flags with `bit` set or cleared.
    #[must_use]
    pub const fn with(self, bit: u8, on: bool) -> Self {
        if on {
            AvpFlags(self.0 | bit)
        } else {
            AvpFlags(self.0 & !bit)
        }
    }
}

impl std::fmt::Debug for AvpFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::with_capacity(3);
        for (bit, c) in [(Self::VENDOR, 'V'), (Self::MANDATORY, 'M'), (Self::PROTECTED, 'P')] {
            s.push(if self.0 & bit != 0 { c } else { '-' });
        }
        if self.reserved() != 0 {
            write!(f, "{s}+{:#x}", self.reserved())
        } else {
            f.write_str(&s)
        }
    }
}

/// A parsed AVP, borrowing its payload.
///
/// Offsets are relative to the start of the buffer the AVP was parsed from
/// (the message, for AVPs reached through [`crate::Message`]).
#[derive(Clone, Copy)]
pub struct Avp<'a> {
    buf: &'a [u8],
    offset: u32,
    data_start: u32,
    data_end: u32,
    pad_end: u32,
    code: u32,
    vendor_id: Option<u32>,
    flags: AvpFlags,
}

impl<'a> Avp<'a> {
    /// AVP code.
    #[inline]
    pub fn code(&self) -> u32 {
        self.code
    }
    /// AVP flags.
    #[inline]
    pub fn flags(&self) -> AvpFlags {
        self.flags
    }
    /// Vendor-Id, when the V flag is set.
    #[inline]
    pub fn vendor_id(&self) -> Option<u32> {
        self.vendor_id
    }
    /// The payload, without header and padding.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.buf[self.data_start as usize..self.data_end as usize]
    }
    /// Offset of the AVP header.
    #[inline]
    pub fn offset(&self) -> usize {
        self.offset as usize
    }
    /// Offset of the payload.
    #[inline]
    pub fn data_offset(&self) -> usize {
        self.data_start as usize
    }
    /// The AVP Length field: header plus payload, padding excluded.
    #[inline]
    pub fn length(&self) -> u32 {
        self.data_end - self.offset
    }
    /// Header and payload as they appear on the wire, padding excluded.
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        &self.buf[self.offset as usize..self.data_end as usize]
    }
    /// Header, payload and the padding bytes as received (padding should be
    /// zero but is kept as-is, so copies are byte-identical). Shorter than
    /// the padded length only for the last AVP of a group whose length
    /// leaves the padding out.
    #[inline]
    pub fn raw_padded(&self) -> &'a [u8] {
        &self.buf[self.offset as usize..self.pad_end as usize]
    }

    /// The payload decoded as type `T`.
    ///
    /// ```
    /// use diam_proto::{Message, avps, types::Unsigned32};
    /// let m = Message::request(0, 280).avp(avps::RESULT_CODE, 2001u32).build();
    /// let avp = m.avps().next().unwrap().unwrap();
    /// assert_eq!(avp.value::<Unsigned32>().unwrap(), 2001);
    /// ```
    #[inline]
    pub fn value<T: AvpType>(&self) -> Result<T::Value<'a>, DecodeError> {
        T::decode(self)
    }

    /// Iterates the payload as the children of a Grouped AVP.
    ///
    /// Parsing happens as the iterator advances; a child that overruns this
    /// AVP yields [`DecodeError::AvpOverrunsGroup`].
    #[inline]
    pub fn group(&self) -> AvpIter<'a> {
        AvpIter::new_in(self.buf, self.data_start as usize, self.data_end as usize, Container::Group)
    }
}

impl std::fmt::Debug for Avp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Avp")
            .field("code", &self.code)
            .field("vendor_id", &self.vendor_id)
            .field("flags", &self.flags)
            .field("offset", &self.offset)
            .field("len", &(self.data_end - self.data_start))
            .finish()
    }
}

/// Lazy iterator over consecutive AVPs.
///
/// Yields `Err` once for the first malformed AVP and then stops.
#[derive(Clone)]
pub struct AvpIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    container: Container,
}

impl<'a> AvpIter<'a> {
    /// Iterates the AVPs in `buf[start..end]`; offsets in errors and in the
    /// yielded AVPs are relative to `buf`.
    pub(crate) fn new_in(buf: &'a [u8], start: usize, end: usize, container: Container) -> Self {
        debug_assert!(start <= end && end <= buf.len());
        AvpIter { buf, pos: start, end, container }
    }

    /// Iterates a standalone sequence of encoded AVPs (e.g. a Grouped
    /// payload kept on its own). Offsets are relative to `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        AvpIter::new_in(buf, 0, buf.len(), Container::Group)
    }

    /// Parses the AVP at `self.pos`.
    #[inline(always)]
    fn parse_one(&self) -> Result<(Avp<'a>, usize), DecodeError> {
        let pos = self.pos;
        let available = self.end - pos;
        if available < AVP_HEADER_LEN {
            return Err(DecodeError::TruncatedAvpHeader { offset: pos, available, container: self.container });
        }
        let b = &self.buf[pos..self.end];
        let code = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let flags = AvpFlags(b[4]);
        let length = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        let (header_len, vendor_id) = if flags.is_vendor() {
            if available < AVP_VENDOR_HEADER_LEN {
                return Err(DecodeError::MissingVendorId { offset: pos, code, available });
            }
            (AVP_VENDOR_HEADER_LEN, Some(u32::from_be_bytes([b[8], b[9], b[10], b[11]])))
        } else {
            (AVP_HEADER_LEN, None)
        };
        let len = length as usize;
        if len < header_len {
            if flags.is_vendor() && len >= AVP_HEADER_LEN {
                return Err(DecodeError::MissingVendorId { offset: pos, code, available: len });
            }
            return Err(DecodeError::AvpTooShort { offset: pos, code, length, header_len });
        }
        if len > available {
            let end = self.end;
            return Err(match self.container {
                Container::Message => DecodeError::AvpOverrunsMessage { offset: pos, code, length, end },
                Container::Group => DecodeError::AvpOverrunsGroup { offset: pos, code, length, end },
            });
        }
        // The last AVP of a group may omit its padding when the group's own
        // length does not include it; never step past the container.
        let next = (pos + padded(len)).min(self.end);
        let avp = Avp {
            buf: self.buf,
            offset: pos as u32,
            data_start: (pos + header_len) as u32,
            data_end: (pos + len) as u32,
            pad_end: next as u32,
            code,
            vendor_id,
            flags,
        };
        Ok((avp, next))
    }

    /// Validates the remaining AVP headers without yielding them.
    pub(crate) fn validate(mut self) -> Result<usize, DecodeError> {
        let mut n = 0;
        while self.pos < self.end {
            let (_, next) = self.parse_one()?;
            self.pos = next;
            n += 1;
        }
        Ok(n)
    }
}

impl<'a> Iterator for AvpIter<'a> {
    type Item = Result<Avp<'a>, DecodeError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        match self.parse_one() {
            Ok((avp, next)) => {
                self.pos = next;
                Some(Ok(avp))
            }
            Err(e) => {
                self.pos = self.end;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for AvpIter<'_> {}

impl std::fmt::Debug for AvpIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvpIter").field("pos", &self.pos).field("end", &self.end).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avp_bytes(code: u32, flags: u8, length: u32, vendor: Option<u32>, data: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.push(flags);
        v.extend_from_slice(&length.to_be_bytes()[1..]);
        if let Some(id) = vendor {
            v.extend_from_slice(&id.to_be_bytes());
        }
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_plain_and_vendor_avps() {
        let mut b = avp_bytes(263, 0x40, 13, None, b"abcde");
        b.extend(avp_bytes(1032, 0xc0, 16, Some(10415), &[0, 0, 0, 1]));
        let avps: Vec<_> = AvpIter::new(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(avps.len(), 2);
        assert_eq!(avps[0].code(), 263);
        assert_eq!(avps[0].data(), b"abcde");
        assert_eq!(avps[0].length(), 13);
        assert_eq!(avps[1].vendor_id(), Some(10415));
        assert_eq!(avps[1].offset(), 16);
        assert_eq!(avps[1].data_offset(), 28);
        assert!(avps[1].flags().is_vendor() && avps[1].flags().is_mandatory());
    }

    #[test]
    fn malformed_avps() {
        let b = [0u8; 4];
        assert!(matches!(
            AvpIter::new(&b).next(),
            Some(Err(DecodeError::TruncatedAvpHeader { offset: 0, available: 4, .. }))
        ));
        let b = avp_bytes(1, 0, 7, None, &[]);
        assert!(matches!(
            AvpIter::new(&b).next(),
            Some(Err(DecodeError::AvpTooShort { length: 7, header_len: 8, .. }))
        ));
        let b = avp_bytes(1, 0, 40, None, &[1, 2, 3, 4]);
        assert!(matches!(
            AvpIter::new(&b).next(),
            Some(Err(DecodeError::AvpOverrunsGroup { length: 40, end: 12, .. }))
        ));
        // V flag, 8-byte AVP at the end of the container: no room for Vendor-Id.
        let b = avp_bytes(1, 0x80, 8, None, &[]);
        assert!(matches!(AvpIter::new(&b).next(), Some(Err(DecodeError::MissingVendorId { .. }))));
        // V flag, room in the container but the AVP length leaves none.
        let mut b = avp_bytes(1, 0x80, 8, None, &[]);
        b.extend_from_slice(&[0; 8]);
        assert!(matches!(AvpIter::new(&b).next(), Some(Err(DecodeError::MissingVendorId { available: 8, .. }))));
        // After an error the iterator is fused.
        let mut it = AvpIter::new(&[0u8; 3]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
