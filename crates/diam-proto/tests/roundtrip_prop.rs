//! Property: encode → decode → encode is byte-identical for arbitrary
//! messages, whether re-encoded by copying AVPs or rebuilt structurally.

use bytes::Bytes;
use diam_proto::{avps, AvpFlags, AvpIter, CommandFlags, FrameDecoder, GroupBuilder, Message, MessageBuilder};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    Leaf { code: u32, flags: u8, vendor: Option<u32>, data: Vec<u8> },
    Group { code: u32, flags: u8, vendor: Option<u32>, children: Vec<Node> },
}

fn leaf() -> impl Strategy<Value = Node> {
    (any::<u32>(), any::<u8>(), proptest::option::of(any::<u32>()), proptest::collection::vec(any::<u8>(), 0..24))
        .prop_map(|(code, flags, vendor, data)| Node::Leaf { code, flags, vendor, data })
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        (any::<u32>(), any::<u8>(), proptest::option::of(any::<u32>()), proptest::collection::vec(inner, 0..6))
            .prop_map(|(code, flags, vendor, children)| Node::Group { code, flags, vendor, children })
    })
}

fn write(g: &mut GroupBuilder<'_>, n: &Node) {
    match n {
        Node::Leaf { code, flags, vendor, data } => {
            g.raw_avp(*code, AvpFlags::from_bits(*flags), *vendor, data);
        }
        Node::Group { code, flags, vendor, children } => {
            g.raw_group(*code, AvpFlags::from_bits(*flags), *vendor, |g| children.iter().for_each(|c| write(g, c)));
        }
    }
}

/// Re-encodes decoded AVPs following the known shape (which ones are groups).
fn rewrite(g: &mut GroupBuilder<'_>, avps: AvpIter<'_>, shape: &[Node]) {
    for (avp, n) in avps.zip(shape) {
        let avp = avp.expect("valid AVP");
        let flags = avp.flags();
        match n {
            Node::Leaf { .. } => {
                g.raw_avp(avp.code(), flags, avp.vendor_id(), avp.data());
            }
            Node::Group { children, .. } => {
                g.raw_group(avp.code(), flags, avp.vendor_id(), |g| rewrite(g, avp.group(), children));
            }
        }
    }
}

fn count(nodes: &[Node]) -> usize {
    nodes.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_decode_encode_is_identical(
        flags in any::<u8>(), cmd in 0u32..0x0100_0000, app in any::<u32>(),
        hbh in any::<u32>(), e2e in any::<u32>(),
        nodes in proptest::collection::vec(node(), 0..8),
    ) {
        let built = MessageBuilder::new(CommandFlags::from_bits(flags), cmd, app)
            .hop_by_hop(hbh)
            .end_to_end(e2e)
            .with_avps(|g| nodes.iter().for_each(|n| write(g, n)))
            .build();
        let bytes = built.to_bytes();
        let decoded = Message::decode(bytes.clone()).expect("builder output decodes");
        prop_assert_eq!(decoded.header(), built.header());
        prop_assert_eq!(decoded.flags().bits(), flags);
        prop_assert_eq!(decoded.avps().count(), count(&nodes));

        // Copy re-encode.
        let copied = decoded.rebuild();
        prop_assert_eq!(copied.as_bytes(), &bytes[..]);

        // Structural re-encode, descending into every group.
        let rebuilt = MessageBuilder::new(decoded.flags(), decoded.command_code(), decoded.application_id())
            .hop_by_hop(decoded.hop_by_hop())
            .end_to_end(decoded.end_to_end())
            .with_avps(|g| rewrite(g, decoded.avps(), &nodes))
            .build();
        prop_assert_eq!(rebuilt.as_bytes(), &bytes[..]);

        // Through the framer, split at an arbitrary point.
        let mut dec = FrameDecoder::new();
        let cut = bytes.len() / 2;
        let mut stream = bytes::BytesMut::from(&bytes[..cut]);
        prop_assert!(dec.decode(&mut stream).unwrap().is_none());
        stream.extend_from_slice(&bytes[cut..]);
        let framed = dec.decode(&mut stream).unwrap().expect("complete");
        prop_assert_eq!(framed.as_bytes(), &bytes[..]);
        prop_assert!(stream.is_empty());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = Message::decode(Bytes::from(data.clone())) {
            let copied = m.rebuild();
            prop_assert_eq!(copied.as_bytes(), &data[..]);
        }
    }
}

proptest! {
    /// A retransmission copy differs from the original only in the T flag and the
    /// identifiers, and decodes to exactly what its header claims.
    #[test]
    fn retransmission_patches_only_the_header(
        flags in any::<u8>(), hbh in any::<u32>(), e2e in any::<u32>(), new_e2e in any::<u32>(),
        avps in proptest::collection::vec(leaf(), 0..8),
    ) {
        let original = MessageBuilder::new(CommandFlags::from_bits(flags | CommandFlags::REQUEST), 272, 4)
            .hop_by_hop(hbh)
            .end_to_end(e2e)
            .with_avps(|g| avps.iter().for_each(|n| write(g, n)))
            .build();
        let copy = original.retransmission(new_e2e);
        prop_assert!(copy.flags().is_retransmit());
        prop_assert_eq!(copy.flags().bits(), original.flags().bits() | CommandFlags::RETRANSMIT);
        prop_assert_eq!((copy.hop_by_hop(), copy.end_to_end()), (0, new_e2e));
        prop_assert_eq!(&copy.as_bytes()[20..], &original.as_bytes()[20..]);
        prop_assert_eq!(&copy.as_bytes()[..4], &original.as_bytes()[..4]);
        let decoded = Message::decode(copy.to_bytes()).expect("decodes");
        prop_assert_eq!(decoded.header(), copy.header());
    }
}

proptest! {
    /// Messages built one after another into the room each hands back
    /// are byte-identical to the same messages built alone, whatever was in
    /// the buffer before (the prefix stays out of every message).
    #[test]
    fn build_reusing_matches_build(
        prefix in proptest::collection::vec(any::<u8>(), 0..64),
        sessions in proptest::collection::vec("[a-z0-9.;]{1,40}", 1..20),
        room in 0usize..2048,
    ) {
        let mut spare = bytes::BytesMut::with_capacity(room);
        spare.extend_from_slice(&prefix);
        let mut kept = Vec::new();
        for (i, sid) in sessions.iter().enumerate() {
            let alone = Message::request(4, 272).avp(avps::SESSION_ID, sid.as_str()).avp(avps::CC_REQUEST_NUMBER, i as u32).build();
            let (reused, rest) = MessageBuilder::new_in(spare, alone.flags(), 272, 4)
                .avp(avps::SESSION_ID, sid.as_str())
                .avp(avps::CC_REQUEST_NUMBER, i as u32)
                .build_reusing();
            prop_assert_eq!(reused.as_bytes(), alone.as_bytes());
            let decoded = Message::decode(Bytes::copy_from_slice(reused.as_bytes())).unwrap();
            prop_assert_eq!(decoded.get(avps::SESSION_ID).unwrap(), Some(sid.as_str()));
            prop_assert!(rest.is_empty());
            // Earlier messages stay intact while later ones are built.
            kept.push((reused, alone));
            spare = rest;
        }
        for (reused, alone) in &kept {
            prop_assert_eq!(reused.as_bytes(), alone.as_bytes());
        }
    }
}
