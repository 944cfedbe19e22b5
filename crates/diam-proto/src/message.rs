//! Messages: zero-copy decoding and an allocation-lean builder.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};

use crate::avp::{padded, Avp, AvpFlags, AvpIter, AVP_HEADER_LEN, AVP_VENDOR_HEADER_LEN};
use crate::error::{Container, DecodeError};
use crate::header::{CommandFlags, Header, HEADER_LEN, MAX_LENGTH_FIELD};
use crate::types::{AvpType, EncodeAs, Grouped};

/// A typed AVP identifier: code, optional vendor, the flags to send, and the
/// data format `T`, so that getters and the builder are type checked.
///
/// The [`crate::avps`] module has keys for the base protocol and
/// Credit-Control AVPs; define others with [`AvpKey::new`]:
///
/// ```
/// use diam_proto::{AvpKey, types::Unsigned32};
/// const RAT_TYPE: AvpKey<Unsigned32> = AvpKey::new(1032).vendor(10415).mandatory();
/// assert_eq!(RAT_TYPE.code(), 1032);
/// ```
pub struct AvpKey<T> {
    code: u32,
    vendor_id: Option<u32>,
    flags: AvpFlags,
    _type: PhantomData<fn() -> T>,
}

impl<T> AvpKey<T> {
    /// A key with no vendor and no flags set.
    pub const fn new(code: u32) -> Self {
        AvpKey { code, vendor_id: None, flags: AvpFlags::from_bits(0), _type: PhantomData }
    }
    /// Sets the Vendor-Id (and so the V flag).
    #[must_use]
    pub const fn vendor(self, vendor_id: u32) -> Self {
        AvpKey {
            code: self.code,
            vendor_id: Some(vendor_id),
            flags: AvpFlags::from_bits(self.flags.bits() | AvpFlags::VENDOR),
            _type: PhantomData,
        }
    }
    /// Sets the M flag on AVPs written with this key.
    #[must_use]
    pub const fn mandatory(self) -> Self {
        AvpKey {
            code: self.code,
            vendor_id: self.vendor_id,
            flags: AvpFlags::from_bits(self.flags.bits() | AvpFlags::MANDATORY),
            _type: PhantomData,
        }
    }
    /// AVP code.
    pub const fn code(&self) -> u32 {
        self.code
    }
    /// Vendor-Id.
    pub const fn vendor_id(&self) -> Option<u32> {
        self.vendor_id
    }
    /// Flags written by the builder.
    pub const fn flags(&self) -> AvpFlags {
        self.flags
    }
    #[inline]
    fn matches(&self, avp: &Avp<'_>) -> bool {
        avp.code() == self.code && avp.vendor_id() == self.vendor_id
    }
}

impl<T> Clone for AvpKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for AvpKey<T> {}
impl<T> std::fmt::Debug for AvpKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvpKey").field("code", &self.code).field("vendor_id", &self.vendor_id).finish()
    }
}

/// A Diameter message backed by a shared, immutable [`Bytes`] buffer.
///
/// Decoding validates the header and the framing of the top-level AVPs
/// without copying or allocating. Typed values are decoded on access, and
/// Grouped AVPs are parsed when iterated. Cloning is cheap (a reference
/// count).
///
/// ```
/// use diam_proto::{Message, avps, apps, commands};
/// let ccr = Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
///     .proxiable(true)
///     .avp(avps::SESSION_ID, "client.example.com;1;42")
///     .avp(avps::ORIGIN_HOST, "client.example.com")
///     .avp(avps::CC_REQUEST_TYPE, 1)
///     .build();
/// let decoded = diam_proto::Message::decode(ccr.to_bytes()).unwrap();
/// assert_eq!(decoded.get(avps::SESSION_ID).unwrap(), Some("client.example.com;1;42"));
/// assert_eq!(decoded.get(avps::CC_REQUEST_TYPE).unwrap(), Some(1));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    header: Header,
    buf: Bytes,
}

impl Message {
    /// Decodes exactly one message from `buf`.
    ///
    /// Checks the header, that `buf` holds exactly `length` bytes, and that
    /// the top-level AVPs tile the message. AVP payloads are checked when
    /// read (or all at once by [`crate::Dictionary::validate`]).
    pub fn decode(buf: Bytes) -> Result<Message, DecodeError> {
        let header = Header::parse(&buf)?;
        let length = header.length as usize;
        if buf.len() < length {
            return Err(DecodeError::Truncated { offset: 0, length: header.length, available: buf.len() });
        }
        if buf.len() > length {
            return Err(DecodeError::TrailingBytes { offset: length, extra: buf.len() - length });
        }
        AvpIter::new_in(&buf, HEADER_LEN, length, Container::Message).validate()?;
        Ok(Message { header, buf })
    }

    /// Takes one whole frame as a message, checking only its header and
    /// length (not its AVPs): what a connection does before
    /// [`crate::check::check_request`] or [`crate::check::check_answer`]
    /// decide what a malformed message costs (RFC 6733 §7), so that one
    /// bad AVP does not take down the connection.
    pub fn decode_frame(buf: Bytes) -> Result<Message, DecodeError> {
        let header = Header::parse(&buf)?;
        let length = header.length as usize;
        if buf.len() < length {
            return Err(DecodeError::Truncated { offset: 0, length: header.length, available: buf.len() });
        }
        if buf.len() > length {
            return Err(DecodeError::TrailingBytes { offset: length, extra: buf.len() - length });
        }
        Ok(Message { header, buf })
    }

    /// Starts a request (R flag set) for `application_id` and `command_code`.
    ///
    /// Hop-by-Hop and End-to-End identifiers are zero until set; the peer
    /// connection assigns them when it sends the request.
    pub fn request(application_id: u32, command_code: u32) -> MessageBuilder {
        MessageBuilder::new(CommandFlags::from_bits(CommandFlags::REQUEST), command_code, application_id)
    }

    /// Starts the answer to `request`: same command, application, P flag,
    /// Hop-by-Hop and End-to-End identifiers, and the request's Session-Id
    /// copied as the first AVP (RFC 6733 §6.2).
    pub fn answer_to(request: &Message) -> MessageBuilder {
        Self::answer_to_in(request, BytesMut::with_capacity(256))
    }

    /// Like [`answer_to`](Self::answer_to), encoding into `buf` (see
    /// [`MessageBuilder::new_in`] and [`MessageBuilder::build_reusing`]).
    pub fn answer_to_in(request: &Message, buf: BytesMut) -> MessageBuilder {
        let h = request.header;
        let flags = CommandFlags::from_bits(h.flags.bits() & CommandFlags::PROXIABLE);
        let mut b = MessageBuilder::new_in(buf, flags, h.command_code, h.application_id)
            .hop_by_hop(h.hop_by_hop)
            .end_to_end(h.end_to_end);
        if let Some(Ok(sid)) = request
            .avps()
            .find(|a| matches!(a, Ok(a) if a.code() == crate::avps::SESSION_ID.code() && a.vendor_id().is_none()))
        {
            b = b.copy_avp(&sid);
        }
        b
    }

    /// Encodes a message straight into `buf` (for instance a connection's
    /// write buffer): the header, the AVPs `avps` writes, then the length,
    /// patched once. Nothing is allocated beyond `buf`'s own growth. Returns
    /// the message's length. `header.length` is ignored.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use diam_proto::{avps, CommandFlags, Header, Message};
    /// let mut out = BytesMut::with_capacity(4096);
    /// let header = Header {
    ///     length: 0,
    ///     flags: CommandFlags::from_bits(CommandFlags::REQUEST),
    ///     command_code: 280,
    ///     application_id: 0,
    ///     hop_by_hop: 1,
    ///     end_to_end: 2,
    /// };
    /// let n = Message::write_into(&mut out, header, |w| {
    ///     w.avp(avps::ORIGIN_HOST, "a.example.com").avp(avps::ORIGIN_REALM, "example.com");
    /// });
    /// assert_eq!(n, out.len());
    /// assert!(Message::decode(out.freeze()).is_ok());
    /// ```
    ///
    /// # Panics
    /// If the message exceeds the 24-bit length field (16 MiB).
    #[inline]
    pub fn write_into(buf: &mut BytesMut, header: Header, avps: impl FnOnce(&mut GroupBuilder<'_>)) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER_LEN]);
        avps(&mut GroupBuilder { buf });
        let length = buf.len() - start;
        assert!(length <= MAX_LENGTH_FIELD, "Diameter message of {length} bytes exceeds the 24-bit length field");
        let header = Header { length: length as u32, ..header };
        buf[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        length
    }

    /// The header.
    #[inline]
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// Command code.
    #[inline]
    pub fn command_code(&self) -> u32 {
        self.header.command_code
    }
    /// Application-Id.
    #[inline]
    pub fn application_id(&self) -> u32 {
        self.header.application_id
    }
    /// Command flags.
    #[inline]
    pub fn flags(&self) -> CommandFlags {
        self.header.flags
    }
    /// The R flag.
    #[inline]
    pub fn is_request(&self) -> bool {
        self.header.flags.is_request()
    }
    /// Hop-by-Hop Identifier.
    #[inline]
    pub fn hop_by_hop(&self) -> u32 {
        self.header.hop_by_hop
    }
    /// End-to-End Identifier.
    #[inline]
    pub fn end_to_end(&self) -> u32 {
        self.header.end_to_end
    }
    /// The encoded message.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// The encoded message as a shared buffer (no copy).
    #[inline]
    pub fn to_bytes(&self) -> Bytes {
        self.buf.clone()
    }
    /// Consumes the message, returning its buffer.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }
    /// Encoded length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Always false: a message has at least a header.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Lazily iterates the top-level AVPs. Their framing was validated by
    /// [`Message::decode`], so for a decoded message every item is `Ok`.
    #[inline]
    pub fn avps(&self) -> AvpIter<'_> {
        AvpIter::new_in(&self.buf, HEADER_LEN, self.buf.len(), Container::Message)
    }

    /// The first top-level AVP matching `key`, decoded as `T`.
    ///
    /// `Ok(None)` when absent; `Err` when present but malformed for `T`.
    pub fn get<T: AvpType>(&self, key: AvpKey<T>) -> Result<Option<T::Value<'_>>, DecodeError> {
        match self.find(key) {
            Some(avp) => T::decode(&avp).map(Some),
            None => Ok(None),
        }
    }

    /// The first top-level AVP matching `key`, undecoded.
    pub fn find<T>(&self, key: AvpKey<T>) -> Option<Avp<'_>> {
        self.avps().filter_map(Result::ok).find(|a| key.matches(a))
    }

    /// Every top-level AVP matching `key`, decoded as `T`.
    pub fn get_all<'a, T: AvpType + 'a>(
        &'a self,
        key: AvpKey<T>,
    ) -> impl Iterator<Item = Result<T::Value<'a>, DecodeError>> + 'a {
        self.avps().filter_map(Result::ok).filter(move |a| key.matches(a)).map(|a| T::decode(&a))
    }

    /// Re-encodes the message through the builder, AVP by AVP (groups are
    /// copied as written). The result is byte-identical to the input for
    /// every message that [`Message::decode`] accepts; tests use this to prove
    /// the builder and decoder agree.
    pub fn rebuild(&self) -> Message {
        let h = self.header;
        let mut b = MessageBuilder::new(h.flags, h.command_code, h.application_id)
            .hop_by_hop(h.hop_by_hop)
            .end_to_end(h.end_to_end);
        for avp in self.avps().flatten() {
            b = b.copy_avp(&avp);
        }
        b.build()
    }

    /// A copy in an allocation of its own. A decoded message shares the
    /// buffer it was read into; one kept for long (a request an agent
    /// forwards, until its answer) would keep that whole buffer alive.
    pub fn detached(&self) -> Message {
        Message { header: self.header, buf: Bytes::copy_from_slice(&self.buf) }
    }

    /// A builder holding this message's header and the AVPs `keep` accepts,
    /// in order: to add AVPs, or to replace some (drop them here, add the
    /// new ones). AVPs after a malformed one are not copied.
    ///
    /// ```
    /// use diam_proto::{avps, Message};
    /// let req = Message::request(4, 272).avp(avps::USER_NAME, "alice").avp(avps::SESSION_ID, "s;1").build();
    /// let masked = req.edit(|a| a.code() != avps::USER_NAME.code()).avp(avps::USER_NAME, "masked").build();
    /// assert_eq!(masked.get(avps::USER_NAME)?, Some("masked"));
    /// assert_eq!(masked.get(avps::SESSION_ID)?, Some("s;1"));
    /// assert_eq!(masked.end_to_end(), req.end_to_end());
    /// # Ok::<(), diam_proto::DecodeError>(())
    /// ```
    pub fn edit(&self, mut keep: impl FnMut(&Avp<'_>) -> bool) -> MessageBuilder {
        let h = self.header;
        let mut b = MessageBuilder::new_in(
            BytesMut::with_capacity(self.buf.len() + 64),
            h.flags,
            h.command_code,
            h.application_id,
        )
        .hop_by_hop(h.hop_by_hop)
        .end_to_end(h.end_to_end);
        for avp in self.avps() {
            let Ok(avp) = avp else { break };
            if keep(&avp) {
                b = b.copy_avp(&avp);
            }
        }
        b
    }

    /// Returns a copy with the given Hop-by-Hop and End-to-End identifiers
    /// (and optionally the T flag), patching only the header bytes.
    pub fn with_ids(&self, hop_by_hop: u32, end_to_end: u32) -> Message {
        let mut buf = BytesMut::from(&self.buf[..]);
        buf[12..16].copy_from_slice(&hop_by_hop.to_be_bytes());
        buf[16..20].copy_from_slice(&end_to_end.to_be_bytes());
        let header = Header { hop_by_hop, end_to_end, ..self.header };
        Message { header, buf: buf.freeze() }
    }

    /// Returns a copy for retransmission to another peer after a transport failure
    /// (RFC 6733 §5.5.4): the T flag set, the same End-to-End identifier `end_to_end`
    /// (the one the first attempt carried), and a zero Hop-by-Hop identifier for the
    /// next connection to assign. Only the header bytes change.
    pub fn retransmission(&self, end_to_end: u32) -> Message {
        let flags = self.header.flags.with(CommandFlags::RETRANSMIT, true);
        let mut buf = BytesMut::from(&self.buf[..]);
        buf[4] = flags.bits();
        buf[12..16].copy_from_slice(&[0; 4]);
        buf[16..20].copy_from_slice(&end_to_end.to_be_bytes());
        let header = Header { flags, hop_by_hop: 0, end_to_end, ..self.header };
        Message { header, buf: buf.freeze() }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("header", &self.header).field("len", &self.buf.len()).finish()
    }
}

/// The header of an AVP carrying `data_len` payload bytes, and its size.
#[inline(always)]
fn avp_header(code: u32, flags: AvpFlags, vendor_id: Option<u32>, data_len: usize) -> ([u8; 12], usize) {
    let (flags, header_len) = match vendor_id {
        Some(_) => (flags.bits() | AvpFlags::VENDOR, AVP_VENDOR_HEADER_LEN),
        None => (flags.bits() & !AvpFlags::VENDOR, AVP_HEADER_LEN),
    };
    let len = (header_len + data_len) as u32;
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&code.to_be_bytes());
    h[4..8].copy_from_slice(&((u32::from(flags) << 24) | (len & 0x00ff_ffff)).to_be_bytes());
    h[8..12].copy_from_slice(&vendor_id.unwrap_or(0).to_be_bytes());
    (h, header_len)
}

/// Writes one AVP header; returns its offset.
#[inline(always)]
fn put_avp_header(buf: &mut BytesMut, code: u32, flags: AvpFlags, vendor_id: Option<u32>, data_len: usize) -> usize {
    let (h, n) = avp_header(code, flags, vendor_id, data_len);
    let at = buf.len();
    // Fixed-size copies compile to plain stores; a variable-length slice
    // would be a memmove call per AVP.
    if n == AVP_VENDOR_HEADER_LEN {
        buf.extend_from_slice(&h);
    } else {
        buf.extend_from_slice(&h[..AVP_HEADER_LEN]);
    }
    at
}

#[inline(always)]
fn put_padding(buf: &mut BytesMut, data_len: usize) {
    // One fixed-size copy per case rather than a variable-length memmove.
    match data_len & 3 {
        1 => buf.extend_from_slice(&[0; 3]),
        2 => buf.extend_from_slice(&[0; 2]),
        3 => buf.extend_from_slice(&[0; 1]),
        _ => {}
    }
}

/// Writes one AVP with a typed payload into `buf`.
#[inline(always)]
fn put_avp<T: AvpType, V: EncodeAs<T>>(buf: &mut BytesMut, key: &AvpKey<T>, value: &V) {
    let n = value.encoded_len();
    buf.reserve(AVP_VENDOR_HEADER_LEN + padded(n));
    put_avp_header(buf, key.code, key.flags, key.vendor_id, n);
    let before = buf.len();
    value.encode(buf);
    debug_assert_eq!(buf.len() - before, n, "EncodeAs::encoded_len disagrees with encode");
    put_padding(buf, n);
}

#[inline]
fn put_raw(buf: &mut BytesMut, code: u32, flags: AvpFlags, vendor_id: Option<u32>, data: &[u8]) {
    buf.reserve(AVP_VENDOR_HEADER_LEN + padded(data.len()));
    put_avp_header(buf, code, flags, vendor_id, data.len());
    buf.put_slice(data);
    put_padding(buf, data.len());
}

/// Writes a group: header, children via `f`, then patches the length once.
#[inline]
fn put_group(
    buf: &mut BytesMut,
    code: u32,
    flags: AvpFlags,
    vendor_id: Option<u32>,
    f: impl FnOnce(&mut GroupBuilder<'_>),
) {
    let at = put_avp_header(buf, code, flags, vendor_id, 0);
    let start = buf.len();
    f(&mut GroupBuilder { buf });
    let len = (buf.len() - at) as u32;
    let flags_byte = buf[at + 4];
    buf[at + 4..at + 8].copy_from_slice(&((u32::from(flags_byte) << 24) | (len & 0x00ff_ffff)).to_be_bytes());
    debug_assert!(buf.len() - start == padded(buf.len() - start));
}

/// Builds a message directly into one buffer.
///
/// AVPs are written as they are added (no intermediate tree, no per-AVP
/// allocation); the message length is patched once by [`build`](Self::build).
/// Typed keys make the value's format checked at compile time.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MessageBuilder {
    buf: BytesMut,
    start: usize,
    header: Header,
}

impl MessageBuilder {
    /// A builder with the given flags, command code and application.
    #[inline]
    pub fn new(flags: CommandFlags, command_code: u32, application_id: u32) -> Self {
        Self::new_in(BytesMut::with_capacity(256), flags, command_code, application_id)
    }

    /// Like [`new`](Self::new), appending to `buf` (whose existing content is
    /// kept and excluded from the message). Reusing a buffer avoids the one
    /// allocation a builder otherwise makes.
    #[inline]
    pub fn new_in(mut buf: BytesMut, flags: CommandFlags, command_code: u32, application_id: u32) -> Self {
        let start = buf.len();
        let header = Header { length: 0, flags, command_code, application_id, hop_by_hop: 0, end_to_end: 0 };
        buf.reserve(HEADER_LEN + 236);
        // Written by `build`, once the length is known.
        buf.extend_from_slice(&[0; HEADER_LEN]);
        MessageBuilder { buf, start, header }
    }

    #[inline]
    fn patch_flag(mut self, bit: u8, on: bool) -> Self {
        self.header.flags = self.header.flags.with(bit, on);
        self
    }
    /// Sets or clears the P flag.
    #[inline]
    pub fn proxiable(self, on: bool) -> Self {
        self.patch_flag(CommandFlags::PROXIABLE, on)
    }
    /// Sets or clears the E flag.
    #[inline]
    pub fn error(self, on: bool) -> Self {
        self.patch_flag(CommandFlags::ERROR, on)
    }
    /// Sets or clears the T flag.
    #[inline]
    pub fn retransmit(self, on: bool) -> Self {
        self.patch_flag(CommandFlags::RETRANSMIT, on)
    }
    /// Sets the Hop-by-Hop Identifier.
    #[inline]
    pub fn hop_by_hop(mut self, id: u32) -> Self {
        self.header.hop_by_hop = id;
        self
    }
    /// Sets the End-to-End Identifier.
    #[inline]
    pub fn end_to_end(mut self, id: u32) -> Self {
        self.header.end_to_end = id;
        self
    }

    /// Appends an AVP with a typed value.
    #[inline(always)]
    pub fn avp<T: AvpType, V: EncodeAs<T>>(mut self, key: AvpKey<T>, value: V) -> Self {
        put_avp(&mut self.buf, &key, &value);
        self
    }

    /// Appends an AVP with an explicit code, flags, vendor and raw payload
    /// (for AVPs with no typed key). The V flag follows `vendor_id`.
    pub fn raw_avp(mut self, code: u32, flags: AvpFlags, vendor_id: Option<u32>, data: &[u8]) -> Self {
        put_raw(&mut self.buf, code, flags, vendor_id, data);
        self
    }

    /// Appends a copy of a decoded AVP, byte for byte (flags, reserved bits,
    /// vendor and padding bytes included).
    pub fn copy_avp(mut self, avp: &Avp<'_>) -> Self {
        copy_raw(&mut self.buf, avp);
        self
    }

    /// Appends a Grouped AVP whose children `f` writes.
    ///
    /// ```
    /// use diam_proto::{Message, avps};
    /// let m = Message::request(4, 272)
    ///     .group(avps::VENDOR_SPECIFIC_APPLICATION_ID, |g| {
    ///         g.avp(avps::VENDOR_ID, 10415).avp(avps::AUTH_APPLICATION_ID, 4);
    ///     })
    ///     .build();
    /// let group = m.find(avps::VENDOR_SPECIFIC_APPLICATION_ID).unwrap();
    /// assert_eq!(group.group().count(), 2);
    /// ```
    pub fn group(mut self, key: AvpKey<Grouped>, f: impl FnOnce(&mut GroupBuilder<'_>)) -> Self {
        put_group(&mut self.buf, key.code, key.flags, key.vendor_id, f);
        self
    }

    /// Appends a Grouped AVP with an explicit code, flags and vendor.
    pub fn raw_group(
        mut self,
        code: u32,
        flags: AvpFlags,
        vendor_id: Option<u32>,
        f: impl FnOnce(&mut GroupBuilder<'_>),
    ) -> Self {
        put_group(&mut self.buf, code, flags, vendor_id, f);
        self
    }

    /// Appends AVPs through a [`GroupBuilder`], for code that builds
    /// messages and groups the same way (e.g. from a dynamic description).
    ///
    /// ```
    /// use diam_proto::{Message, avps};
    /// let m = Message::request(0, 280).with_avps(|w| {
    ///     w.avp(avps::ORIGIN_HOST, "a.example.com").avp(avps::ORIGIN_REALM, "example.com");
    /// }).build();
    /// assert_eq!(m.avps().count(), 2);
    /// ```
    pub fn with_avps(mut self, f: impl FnOnce(&mut GroupBuilder<'_>)) -> Self {
        f(&mut GroupBuilder { buf: &mut self.buf });
        self
    }

    /// Bytes written so far for this message.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Never true: the header is always present.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Patches the length and returns the message.
    ///
    /// # Panics
    /// If the message exceeds the 24-bit length field (16 MiB), which only a
    /// caller adding megabytes of AVPs can cause.
    pub fn build(self) -> Message {
        let MessageBuilder { mut buf, start, mut header } = self;
        finish_header(&mut buf, start, &mut header);
        // `slice` on a Vec-backed `Bytes` promotes it to a shared buffer,
        // which allocates: only slice when there is a prefix to drop.
        let buf = if start == 0 { buf.freeze() } else { buf.freeze().slice(start..) };
        Message { header, buf }
    }

    /// Like [`build`](Self::build), and hands back the buffer's spare
    /// capacity for the next message. Encoding messages one after another
    /// into what each hands back allocates only when the room runs out,
    /// and `reserve` on it takes the whole allocation back once every
    /// message built in it has been dropped: a server that writes each
    /// answer out and drops it builds answers with no allocation.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use diam_proto::{avps, Message};
    /// let req = Message::request(4, 272).avp(avps::SESSION_ID, "s;1").build();
    /// let mut spare = BytesMut::with_capacity(4096);
    /// for _ in 0..3 {
    ///     spare.reserve(512);
    ///     let (answer, rest) = Message::answer_to_in(&req, spare).avp(avps::RESULT_CODE, 2001u32).build_reusing();
    ///     assert_eq!(answer.get(avps::SESSION_ID)?, Some("s;1"));
    ///     assert_eq!(answer.len(), answer.as_bytes().len());
    ///     spare = rest;
    /// }
    /// # Ok::<(), diam_proto::DecodeError>(())
    /// ```
    pub fn build_reusing(self) -> (Message, BytesMut) {
        let MessageBuilder { mut buf, start, mut header } = self;
        finish_header(&mut buf, start, &mut header);
        // [prefix][message][spare]: split the spare off first, then the
        // prefix (kept out of the message, as `build` does).
        let spare = buf.split_off(buf.len());
        let message = buf.split_off(start);
        (Message { header, buf: message.freeze() }, spare)
    }
}

/// Writes the header of the message at `start..` of `buf`, its length now
/// known.
fn finish_header(buf: &mut BytesMut, start: usize, header: &mut Header) {
    let length = buf.len() - start;
    assert!(length <= MAX_LENGTH_FIELD, "Diameter message of {length} bytes exceeds the 24-bit length field");
    header.length = length as u32;
    buf[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
    header.command_code &= 0x00ff_ffff;
}

fn copy_raw(buf: &mut BytesMut, avp: &Avp<'_>) {
    let raw = avp.raw_padded();
    buf.reserve(padded(raw.len()));
    buf.put_slice(raw);
    put_padding(buf, raw.len());
}

/// Writes the children of a Grouped AVP (see [`MessageBuilder::group`]).
#[derive(Debug)]
pub struct GroupBuilder<'b> {
    buf: &'b mut BytesMut,
}

impl GroupBuilder<'_> {
    /// Appends an AVP with a typed value.
    #[inline]
    pub fn avp<T: AvpType, V: EncodeAs<T>>(&mut self, key: AvpKey<T>, value: V) -> &mut Self {
        put_avp(self.buf, &key, &value);
        self
    }
    /// Appends an AVP with an explicit code, flags, vendor and raw payload.
    pub fn raw_avp(&mut self, code: u32, flags: AvpFlags, vendor_id: Option<u32>, data: &[u8]) -> &mut Self {
        put_raw(self.buf, code, flags, vendor_id, data);
        self
    }
    /// Appends a copy of a decoded AVP.
    pub fn copy_avp(&mut self, avp: &Avp<'_>) -> &mut Self {
        copy_raw(self.buf, avp);
        self
    }
    /// Appends a nested Grouped AVP.
    pub fn group(&mut self, key: AvpKey<Grouped>, f: impl FnOnce(&mut GroupBuilder<'_>)) -> &mut Self {
        put_group(self.buf, key.code, key.flags, key.vendor_id, f);
        self
    }
    /// Appends a nested Grouped AVP with an explicit code, flags and vendor.
    pub fn raw_group(
        &mut self,
        code: u32,
        flags: AvpFlags,
        vendor_id: Option<u32>,
        f: impl FnOnce(&mut GroupBuilder<'_>),
    ) -> &mut Self {
        put_group(self.buf, code, flags, vendor_id, f);
        self
    }
}
