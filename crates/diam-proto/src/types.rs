//! The RFC 6733 §4.2–4.3 data formats: typed decoding and encoding.
//!
//! Each format is a marker type implementing [`AvpType`]; decoding borrows
//! from the message (strings are `&str`, octet strings `&[u8]`). Values that
//! can be encoded as a format implement [`EncodeAs`] for it, which the
//! message builder uses to write straight into its buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use crate::avp::{Avp, AvpIter};
use crate::error::DecodeError;

/// The data format of an AVP, as named by RFC 6733 and by dictionaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// Arbitrary bytes.
    OctetString,
    /// 32-bit signed integer.
    Integer32,
    /// 64-bit signed integer.
    Integer64,
    /// 32-bit unsigned integer.
    Unsigned32,
    /// 64-bit unsigned integer.
    Unsigned64,
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// A sequence of AVPs.
    Grouped,
    /// 2-byte address family followed by the address (§4.3.1).
    Address,
    /// Seconds since 1900-01-01 UTC, NTP format (§4.3.1).
    Time,
    /// UTF-8 text.
    Utf8String,
    /// A host or realm name (§4.3.1).
    DiameterIdentity,
    /// An `aaa://` or `aaas://` URI (§4.3.1).
    DiameterUri,
    /// An Integer32 with named values.
    Enumerated,
    /// An IP filter rule (§4.3.1).
    IpFilterRule,
    /// A QoS filter rule (RFC 4005), carried as text.
    QosFilterRule,
    /// A bare IPv4 or IPv6 address without family (used by some vendor
    /// dictionaries; 4 or 16 bytes).
    IpAddress,
}

impl DataType {
    /// The RFC / dictionary name of the type.
    pub const fn name(self) -> &'static str {
        match self {
            DataType::OctetString => "OctetString",
            DataType::Integer32 => "Integer32",
            DataType::Integer64 => "Integer64",
            DataType::Unsigned32 => "Unsigned32",
            DataType::Unsigned64 => "Unsigned64",
            DataType::Float32 => "Float32",
            DataType::Float64 => "Float64",
            DataType::Grouped => "Grouped",
            DataType::Address => "Address",
            DataType::Time => "Time",
            DataType::Utf8String => "UTF8String",
            DataType::DiameterIdentity => "DiameterIdentity",
            DataType::DiameterUri => "DiameterURI",
            DataType::Enumerated => "Enumerated",
            DataType::IpFilterRule => "IPFilterRule",
            DataType::QosFilterRule => "QoSFilterRule",
            DataType::IpAddress => "IPAddress",
        }
    }

    /// Parses a type name as written in RFCs and Wireshark dictionaries.
    /// Wireshark's derived names (`AppId`, `VendorId`, `OctetStringOrUTF8`,
    /// `MIPRegistrationRequest`) map onto the base format they use.
    pub fn from_name(name: &str) -> Option<DataType> {
        Some(match name {
            "OctetString" | "OctetStringOrUTF8" | "MIPRegistrationRequest" => DataType::OctetString,
            "Integer32" => DataType::Integer32,
            "Integer64" => DataType::Integer64,
            "Unsigned32" | "AppId" | "VendorId" => DataType::Unsigned32,
            "Unsigned64" => DataType::Unsigned64,
            "Float32" => DataType::Float32,
            "Float64" => DataType::Float64,
            "Grouped" => DataType::Grouped,
            "Address" => DataType::Address,
            "Time" => DataType::Time,
            "UTF8String" | "Utf8String" => DataType::Utf8String,
            "DiameterIdentity" => DataType::DiameterIdentity,
            "DiameterURI" | "DiameterUri" => DataType::DiameterUri,
            "Enumerated" => DataType::Enumerated,
            "IPFilterRule" => DataType::IpFilterRule,
            "QoSFilterRule" => DataType::QosFilterRule,
            "IPAddress" => DataType::IpAddress,
            _ => return None,
        })
    }

    /// The payload size for fixed-size formats.
    pub const fn fixed_size(self) -> Option<usize> {
        match self {
            DataType::Integer32 | DataType::Unsigned32 | DataType::Float32 | DataType::Enumerated | DataType::Time => {
                Some(4)
            }
            DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => Some(8),
            _ => None,
        }
    }

    /// Checks that `avp`'s payload is well formed for this type. For a
    /// Grouped AVP only the children's framing is checked (their own types
    /// need a dictionary: see [`crate::Dictionary::validate`]).
    pub fn check(self, avp: &Avp<'_>) -> Result<(), DecodeError> {
        match self {
            DataType::OctetString => Ok(()),
            DataType::Integer32 | DataType::Enumerated => Integer32::decode(avp).map(drop),
            DataType::Integer64 => Integer64::decode(avp).map(drop),
            DataType::Unsigned32 => Unsigned32::decode(avp).map(drop),
            DataType::Unsigned64 => Unsigned64::decode(avp).map(drop),
            DataType::Float32 => Float32::decode(avp).map(drop),
            DataType::Float64 => Float64::decode(avp).map(drop),
            DataType::Time => Time::decode(avp).map(drop),
            DataType::Grouped => avp.group().try_for_each(|r| r.map(drop)),
            DataType::Address => Address::decode(avp).map(drop),
            DataType::IpAddress => IpAddress::decode(avp).map(drop),
            DataType::Utf8String
            | DataType::DiameterIdentity
            | DataType::DiameterUri
            | DataType::IpFilterRule
            | DataType::QosFilterRule => utf8(avp, self.name()).map(drop),
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A data format that can be decoded from an AVP's payload.
pub trait AvpType {
    /// The format's [`DataType`].
    const DATA_TYPE: DataType;
    /// The decoded value, possibly borrowing from the message.
    type Value<'a>;
    /// Decodes `avp`'s payload.
    fn decode<'a>(avp: &Avp<'a>) -> Result<Self::Value<'a>, DecodeError>;
}

/// A value that can be written as the payload of an AVP of format `T`.
pub trait EncodeAs<T: AvpType> {
    /// Payload length in bytes, padding excluded.
    fn encoded_len(&self) -> usize;
    /// Writes the payload (no padding).
    fn encode(&self, buf: &mut BytesMut);
}

fn fixed<const N: usize>(avp: &Avp<'_>, data_type: &'static str) -> Result<[u8; N], DecodeError> {
    avp.data().try_into().map_err(|_| DecodeError::BadPayloadLength {
        offset: avp.data_offset(),
        code: avp.code(),
        data_type,
        expected: N,
        actual: avp.data().len(),
    })
}

#[inline]
fn utf8<'a>(avp: &Avp<'a>, data_type: &'static str) -> Result<&'a str, DecodeError> {
    let data = avp.data();
    // Diameter text is nearly always ASCII: check that word-at-a-time first.
    if data.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(data) });
    }
    utf8_slow(avp, data_type)
}

#[cold]
fn utf8_slow<'a>(avp: &Avp<'a>, data_type: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(avp.data()).map_err(|e| DecodeError::InvalidUtf8 {
        offset: avp.data_offset() + e.valid_up_to(),
        code: avp.code(),
        data_type,
    })
}

macro_rules! marker {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {}
    };
}

macro_rules! numeric {
    ($(#[$m:meta])* $name:ident, $ty:ty, $n:literal) => {
        marker!($(#[$m])* $name);
        impl AvpType for $name {
            const DATA_TYPE: DataType = DataType::$name;
            type Value<'a> = $ty;
            #[inline]
            fn decode<'a>(avp: &Avp<'a>) -> Result<$ty, DecodeError> {
                fixed::<$n>(avp, DataType::$name.name()).map(<$ty>::from_be_bytes)
            }
        }
        impl EncodeAs<$name> for $ty {
            #[inline]
            fn encoded_len(&self) -> usize {
                $n
            }
            #[inline]
            fn encode(&self, buf: &mut BytesMut) {
                buf.put_slice(&self.to_be_bytes());
            }
        }
    };
}

numeric!(
    /// Integer32 (§4.2).
    Integer32, i32, 4
);
numeric!(
    /// Integer64 (§4.2).
    Integer64, i64, 8
);
numeric!(
    /// Unsigned32 (§4.2).
    Unsigned32, u32, 4
);
numeric!(
    /// Unsigned64 (§4.2).
    Unsigned64, u64, 8
);
numeric!(
    /// Float32 (§4.2).
    Float32, f32, 4
);
numeric!(
    /// Float64 (§4.2).
    Float64, f64, 8
);
numeric!(
    /// Enumerated (§4.3.1): an Integer32 whose values the dictionary names.
    Enumerated, i32, 4
);

macro_rules! text {
    ($(#[$m:meta])* $name:ident) => {
        marker!($(#[$m])* $name);
        impl AvpType for $name {
            const DATA_TYPE: DataType = DataType::$name;
            type Value<'a> = &'a str;
            #[inline]
            fn decode<'a>(avp: &Avp<'a>) -> Result<&'a str, DecodeError> {
                utf8(avp, DataType::$name.name())
            }
        }
        impl EncodeAs<$name> for &str {
            #[inline]
            fn encoded_len(&self) -> usize {
                self.len()
            }
            #[inline]
            fn encode(&self, buf: &mut BytesMut) {
                buf.put_slice(self.as_bytes());
            }
        }
        impl EncodeAs<$name> for String {
            #[inline]
            fn encoded_len(&self) -> usize {
                self.len()
            }
            #[inline]
            fn encode(&self, buf: &mut BytesMut) {
                buf.put_slice(self.as_bytes());
            }
        }
        impl EncodeAs<$name> for &String {
            #[inline]
            fn encoded_len(&self) -> usize {
                self.len()
            }
            #[inline]
            fn encode(&self, buf: &mut BytesMut) {
                buf.put_slice(self.as_bytes());
            }
        }
    };
}

text!(
    /// UTF8String (§4.3.1).
    Utf8String
);
text!(
    /// DiameterIdentity (§4.3.1): an FQDN or realm, ASCII in practice.
    DiameterIdentity
);
text!(
    /// DiameterURI (§4.3.1).
    DiameterUri
);
text!(
    /// IPFilterRule (§4.3.1).
    IpFilterRule
);
text!(
    /// QoSFilterRule (RFC 4005 §4.1.1).
    QosFilterRule
);

marker!(
    /// OctetString (§4.2): arbitrary bytes.
    OctetString
);
impl AvpType for OctetString {
    const DATA_TYPE: DataType = DataType::OctetString;
    type Value<'a> = &'a [u8];
    #[inline]
    fn decode<'a>(avp: &Avp<'a>) -> Result<&'a [u8], DecodeError> {
        Ok(avp.data())
    }
}
impl EncodeAs<OctetString> for &[u8] {
    #[inline]
    fn encoded_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(self);
    }
}
impl<const N: usize> EncodeAs<OctetString> for &[u8; N] {
    #[inline]
    fn encoded_len(&self) -> usize {
        N
    }
    #[inline]
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(&self[..]);
    }
}
impl EncodeAs<OctetString> for Vec<u8> {
    #[inline]
    fn encoded_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(self);
    }
}
impl EncodeAs<OctetString> for bytes::Bytes {
    #[inline]
    fn encoded_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(self);
    }
}

marker!(
    /// Grouped (§4.4): the payload is a sequence of AVPs, parsed lazily.
    Grouped
);
impl AvpType for Grouped {
    const DATA_TYPE: DataType = DataType::Grouped;
    type Value<'a> = AvpIter<'a>;
    #[inline]
    fn decode<'a>(avp: &Avp<'a>) -> Result<AvpIter<'a>, DecodeError> {
        Ok(avp.group())
    }
}

/// IANA address family numbers used by the Address format.
pub mod family {
    /// IPv4.
    pub const IPV4: u16 = 1;
    /// IPv6.
    pub const IPV6: u16 = 2;
}

/// A decoded Address (§4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressValue<'a> {
    /// Family 1.
    V4(Ipv4Addr),
    /// Family 2.
    V6(Ipv6Addr),
    /// Any other family, kept raw.
    Other {
        /// IANA address family number.
        family: u16,
        /// The address bytes after the family.
        bytes: &'a [u8],
    },
}

impl AddressValue<'_> {
    /// The IP address, for the IPv4 and IPv6 families.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            AddressValue::V4(a) => Some(IpAddr::V4(a)),
            AddressValue::V6(a) => Some(IpAddr::V6(a)),
            AddressValue::Other { .. } => None,
        }
    }
}

/// Formats IPv4 and IPv6 as usual, other families as `FAMILY:HEX`.
impl std::fmt::Display for AddressValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressValue::V4(a) => a.fmt(f),
            AddressValue::V6(a) => a.fmt(f),
            AddressValue::Other { family, bytes } => {
                write!(f, "{family}:")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

marker!(
    /// Address (§4.3.1): a 2-byte address family and the address.
    Address
);
impl AvpType for Address {
    const DATA_TYPE: DataType = DataType::Address;
    type Value<'a> = AddressValue<'a>;
    fn decode<'a>(avp: &Avp<'a>) -> Result<AddressValue<'a>, DecodeError> {
        let d = avp.data();
        let bad = |family: u16, expected: usize| DecodeError::BadAddress {
            offset: avp.data_offset(),
            code: avp.code(),
            family,
            expected,
            actual: d.len().saturating_sub(2),
        };
        if d.len() < 2 {
            return Err(bad(0, 0));
        }
        let fam = u16::from_be_bytes([d[0], d[1]]);
        let rest = &d[2..];
        match fam {
            family::IPV4 => <[u8; 4]>::try_from(rest).map(|a| AddressValue::V4(a.into())).map_err(|_| bad(fam, 4)),
            family::IPV6 => <[u8; 16]>::try_from(rest).map(|a| AddressValue::V6(a.into())).map_err(|_| bad(fam, 16)),
            _ => Ok(AddressValue::Other { family: fam, bytes: rest }),
        }
    }
}
impl EncodeAs<Address> for IpAddr {
    fn encoded_len(&self) -> usize {
        match self {
            IpAddr::V4(_) => 6,
            IpAddr::V6(_) => 18,
        }
    }
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            IpAddr::V4(a) => a.encode(buf),
            IpAddr::V6(a) => a.encode(buf),
        }
    }
}
impl EncodeAs<Address> for Ipv4Addr {
    fn encoded_len(&self) -> usize {
        6
    }
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(family::IPV4);
        buf.put_slice(&self.octets());
    }
}
impl EncodeAs<Address> for Ipv6Addr {
    fn encoded_len(&self) -> usize {
        18
    }
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(family::IPV6);
        buf.put_slice(&self.octets());
    }
}
impl EncodeAs<Address> for AddressValue<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            AddressValue::V4(_) => 6,
            AddressValue::V6(_) => 18,
            AddressValue::Other { bytes, .. } => 2 + bytes.len(),
        }
    }
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            AddressValue::V4(a) => a.encode(buf),
            AddressValue::V6(a) => a.encode(buf),
            AddressValue::Other { family, bytes } => {
                buf.put_u16(*family);
                buf.put_slice(bytes);
            }
        }
    }
}

marker!(
    /// A bare IPv4 (4 bytes) or IPv6 (16 bytes) address with no family
    /// prefix, as some vendor dictionaries define it.
    IpAddress
);
impl AvpType for IpAddress {
    const DATA_TYPE: DataType = DataType::IpAddress;
    type Value<'a> = IpAddr;
    fn decode<'a>(avp: &Avp<'a>) -> Result<IpAddr, DecodeError> {
        let d = avp.data();
        if let Ok(a) = <[u8; 4]>::try_from(d) {
            Ok(IpAddr::V4(a.into()))
        } else if let Ok(a) = <[u8; 16]>::try_from(d) {
            Ok(IpAddr::V6(a.into()))
        } else {
            Err(DecodeError::BadPayloadLength {
                offset: avp.data_offset(),
                code: avp.code(),
                data_type: "IPAddress",
                expected: if d.len() < 4 { 4 } else { 16 },
                actual: d.len(),
            })
        }
    }
}
impl EncodeAs<IpAddress> for IpAddr {
    fn encoded_len(&self) -> usize {
        match self {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        }
    }
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            IpAddr::V4(a) => buf.put_slice(&a.octets()),
            IpAddr::V6(a) => buf.put_slice(&a.octets()),
        }
    }
}

/// Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
pub const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

/// A Time value (§4.3.1): the raw 32-bit NTP seconds field.
///
/// RFC 6733 requires the RFC 5905 era rule, which extends the range to 2104:
/// values with the high bit set count from 1900 (1968–2036), values without
/// it from 2036-02-07T06:28:16Z (2036–2104). [`TimeValue::unix_seconds`]
/// applies that rule, so every 32-bit value maps to a distinct instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeValue(pub u32);

impl TimeValue {
    /// The instant as seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        let era = if self.0 & 0x8000_0000 != 0 { 0 } else { 1i64 << 32 };
        i64::from(self.0) + era - NTP_UNIX_OFFSET
    }

    /// The Time value for a Unix timestamp, if it lies in the representable
    /// range (1968-01-20T03:14:08Z up to 2104-02-26T09:42:23Z).
    pub fn from_unix_seconds(secs: i64) -> Option<TimeValue> {
        let ntp = secs + NTP_UNIX_OFFSET;
        let v = if (0x8000_0000..1i64 << 32).contains(&ntp) {
            ntp
        } else if ((1i64 << 32)..(1i64 << 32) + 0x8000_0000).contains(&ntp) {
            ntp - (1i64 << 32)
        } else {
            return None;
        };
        u32::try_from(v).ok().map(TimeValue)
    }

    /// The instant as a [`std::time::SystemTime`].
    pub fn to_system_time(self) -> std::time::SystemTime {
        let s = self.unix_seconds();
        if s >= 0 {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64)
        } else {
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(s.unsigned_abs())
        }
    }

    /// Parses the `YYYY-MM-DDTHH:MM:SSZ` form produced by `Display`.
    pub fn parse_rfc3339(s: &str) -> Option<TimeValue> {
        let b = s.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<u32>().ok().map(i64::from) };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        TimeValue::from_unix_seconds(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
impl std::fmt::Display for TimeValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.unix_seconds();
        let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Proleptic Gregorian calendar conversions (H. Hinnant's algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

marker!(
    /// Time (§4.3.1).
    Time
);
impl AvpType for Time {
    const DATA_TYPE: DataType = DataType::Time;
    type Value<'a> = TimeValue;
    #[inline]
    fn decode<'a>(avp: &Avp<'a>) -> Result<TimeValue, DecodeError> {
        fixed::<4>(avp, "Time").map(|b| TimeValue(u32::from_be_bytes(b)))
    }
}
impl EncodeAs<Time> for TimeValue {
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_known_values() {
        // 1970-01-01 is NTP 2208988800.
        assert_eq!(TimeValue(2_208_988_800).unix_seconds(), 0);
        assert_eq!(TimeValue(2_208_988_800).to_string(), "1970-01-01T00:00:00Z");
        // Era 1: 0 is 2036-02-07T06:28:16Z.
        assert_eq!(TimeValue(0).to_string(), "2036-02-07T06:28:16Z");
        assert_eq!(TimeValue(0x8000_0000).to_string(), "1968-01-20T03:14:08Z");
        assert_eq!(TimeValue(0x7fff_ffff).to_string(), "2104-02-26T09:42:23Z");
        assert_eq!(
            TimeValue::parse_rfc3339("2026-11-24T09:26:17Z").map(|t| t.to_string()).as_deref(),
            Some("2026-11-24T09:26:17Z")
        );
        assert_eq!(TimeValue::parse_rfc3339("1900-01-01T00:00:00Z"), None);
        assert_eq!(TimeValue::parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(TimeValue::parse_rfc3339("2026-02-01 00:00:00"), None);
    }

    proptest::proptest! {
        #[test]
        fn time_text_round_trip(v: u32) {
            let t = TimeValue(v);
            proptest::prop_assert_eq!(TimeValue::parse_rfc3339(&t.to_string()), Some(t));
            proptest::prop_assert_eq!(TimeValue::from_unix_seconds(t.unix_seconds()), Some(t));
        }
    }

    #[test]
    fn data_type_names_round_trip() {
        use DataType::*;
        for t in [
            OctetString,
            Integer32,
            Integer64,
            Unsigned32,
            Unsigned64,
            Float32,
            Float64,
            Grouped,
            Address,
            Time,
            Utf8String,
            DiameterIdentity,
            DiameterUri,
            Enumerated,
            IpFilterRule,
            QosFilterRule,
            IpAddress,
        ] {
            assert_eq!(DataType::from_name(t.name()), Some(t));
        }
        assert_eq!(DataType::from_name("AppId"), Some(Unsigned32));
        assert_eq!(DataType::from_name("Bogus"), None);
    }
}
