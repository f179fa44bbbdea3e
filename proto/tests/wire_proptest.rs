//! Property tests of the wire codec: every valid representation survives
//! emit then parse unchanged, and no input makes a decoder panic.

use proptest::prelude::*;
use utp_proto::wire::{
    Extension, Extensions, Packet, PacketType, Repr, SeqNr, Timestamp, EXTENSION_BITS_LEN,
    HEADER_LEN, MAX_EXTENSIONS,
};

include!("../fuzz/check.rs");

/// An owned extension record, turned into a borrowed [`Extension`] by
/// [`OwnedExt::as_extension`].
#[derive(Debug, Clone)]
enum OwnedExt {
    Sack(Vec<u8>),
    Bits([u8; EXTENSION_BITS_LEN]),
    Metadata(Vec<u8>),
    CloseReason(u16),
    Unknown(u8, Vec<u8>),
}

impl OwnedExt {
    fn as_extension(&self) -> Extension<'_> {
        match self {
            OwnedExt::Sack(d) => Extension::SelectiveAck(d),
            OwnedExt::Bits(b) => Extension::ExtensionBits(*b),
            OwnedExt::Metadata(d) => Extension::Metadata(d),
            OwnedExt::CloseReason(r) => Extension::CloseReason(*r),
            OwnedExt::Unknown(kind, d) => Extension::Unknown { kind: *kind, data: d },
        }
    }
}

/// An owned packet representation.
#[derive(Debug, Clone)]
struct OwnedRepr {
    packet_type: PacketType,
    connection_id: u16,
    timestamp: u32,
    timestamp_diff: u32,
    wnd_size: u32,
    seq_nr: u16,
    ack_nr: u16,
    extensions: Vec<OwnedExt>,
    payload: Vec<u8>,
}

impl OwnedRepr {
    fn repr(&self) -> Repr<'_> {
        let mut repr =
            Repr::new(self.packet_type, self.connection_id, SeqNr(self.seq_nr), SeqNr(self.ack_nr));
        repr.timestamp = Timestamp(self.timestamp);
        repr.timestamp_diff = self.timestamp_diff;
        repr.wnd_size = self.wnd_size;
        repr.extensions = self
            .extensions
            .iter()
            .map(OwnedExt::as_extension)
            .collect::<Result<Extensions<'_>, _>>()
            .expect("at most MAX_EXTENSIONS records");
        repr.payload = &self.payload;
        repr
    }

    fn emit(&self) -> Vec<u8> {
        let repr = self.repr();
        let mut out = vec![0u8; repr.buffer_len()];
        let len = repr.emit(&mut out).expect("a valid repr emits");
        assert_eq!(len, out.len());
        out
    }
}

fn packet_type() -> impl Strategy<Value = PacketType> {
    (0u8..5).prop_map(|t| PacketType::from_u8(t).expect("0..5 are packet types"))
}

fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// Records that `Extension::classify` gives back unchanged on a packet of
/// type `packet_type`.
fn extension(packet_type: PacketType) -> BoxedStrategy<OwnedExt> {
    let syn_or_state = matches!(packet_type, PacketType::Syn | PacketType::State);
    let is_data = packet_type == PacketType::Data;
    let mut choices: Vec<BoxedStrategy<OwnedExt>> = vec![
        data(16).prop_map(OwnedExt::Sack).boxed(),
        any::<u16>().prop_map(OwnedExt::CloseReason).boxed(),
        // Types without a meaning, any data (4 and 255 included).
        // Not the padding type, which parsers skip.
        (4u8..=255, data(40))
            .prop_map(|(k, d)| OwnedExt::Unknown(if k == 0x50 { 0x51 } else { k }, d))
            .boxed(),
        // Type 3 in a shape other than a close reason.
        data(8)
            .prop_filter("not a close reason", |d| !(d.len() == 4 && d[..2] == [0, 0]))
            .prop_map(|d| OwnedExt::Unknown(3, d))
            .boxed(),
    ];
    if syn_or_state {
        choices.push(any::<[u8; EXTENSION_BITS_LEN]>().prop_map(OwnedExt::Bits).boxed());
        choices.push(
            data(12)
                .prop_filter("not 8 bytes", |d| d.len() != EXTENSION_BITS_LEN)
                .prop_map(|d| OwnedExt::Unknown(2, d))
                .boxed(),
        );
    } else if is_data {
        choices.push(data(255).prop_map(OwnedExt::Metadata).boxed());
    } else {
        // FIN and RESET: ext 2 of any shape is raw.
        choices.push(data(12).prop_map(|d| OwnedExt::Unknown(2, d)).boxed());
    }
    prop::strategy::Union::new(choices).boxed()
}

fn owned_repr() -> impl Strategy<Value = OwnedRepr> {
    packet_type().prop_flat_map(|packet_type| {
        (
            (any::<u16>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            prop::collection::vec(extension(packet_type), 0..=MAX_EXTENSIONS),
            data(300),
        )
            .prop_map(
                move |(
                    (connection_id, timestamp, timestamp_diff, wnd_size, seq_nr, ack_nr),
                    extensions,
                    payload,
                )| OwnedRepr {
                    packet_type,
                    connection_id,
                    timestamp,
                    timestamp_diff,
                    wnd_size,
                    seq_nr,
                    ack_nr,
                    extensions,
                    payload,
                },
            )
    })
}

/// A valid packet with some of its bytes overwritten, some cut off or some
/// appended: inputs that get past the header and deep into the chain.
fn mutated_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        owned_repr(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
        data(8),
    )
        .prop_map(|(owned, edits, cut, truncate, tail)| {
            let mut bytes = owned.emit();
            // Keep the header valid so that the chain is what gets exercised.
            for (at, value) in edits {
                let body = bytes.len() - 1;
                bytes[1 + at.index(body)] = value;
            }
            if truncate {
                bytes.truncate(HEADER_LEN + cut.index(bytes.len() - HEADER_LEN + 1));
            }
            bytes.extend_from_slice(&tail);
            bytes
        })
}

/// A valid header followed by a random chain of records whose lengths may
/// or may not match the bytes that follow.
fn header_then_chain() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..5,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), HEADER_LEN - 2),
        prop::collection::vec((0u8..16, prop::bool::weighted(0.9), any::<u8>(), data(6)), 0..12),
    )
        .prop_map(|(kind, first, rest, records)| {
            let mut bytes = vec![(kind << 4) | 1, first % 16];
            bytes.extend_from_slice(&rest);
            for (next, exact, len, body) in records {
                bytes.push(next);
                // Mostly the true length, sometimes a wrong one.
                bytes.push(if exact { body.len() as u8 } else { len % 8 });
                bytes.extend_from_slice(&body);
            }
            bytes
        })
}

proptest! {
    // About a second in all in a debug build.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn emit_then_parse_gives_the_same_repr(owned in owned_repr()) {
        let repr = owned.repr();
        for ext in repr.extensions.iter() {
            // The generator only makes records that classify as themselves:
            // emit the record alone and classify its data.
            let mut probe = Repr::new(repr.packet_type, 0, SeqNr(0), SeqNr(0));
            probe.extensions.push(*ext).unwrap();
            let mut buf = vec![0u8; probe.buffer_len()];
            probe.emit(&mut buf).unwrap();
            let raw = &buf[HEADER_LEN + 2..];
            prop_assert_eq!(Extension::classify(repr.packet_type, ext.kind(), raw), *ext);
        }
        let bytes = owned.emit();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(
            repr.header_len(),
            HEADER_LEN + owned.extensions.iter().map(|e| 2 + e.as_extension().data_len()).sum::<usize>()
        );
        let packet = Packet::new_checked(&bytes[..]).expect("emitted packets are valid");
        let parsed = Repr::parse(&packet).expect("emitted packets parse");
        prop_assert_eq!(parsed, repr);
        prop_assert_eq!(packet.payload(), &owned.payload[..]);
        prop_assert_eq!(packet.payload_offset(), repr.header_len());

        // Header first, payload placed by the caller: the same bytes.
        let mut split = vec![0u8; bytes.len()];
        let at = repr.emit_header(&mut split, repr.payload.len()).unwrap();
        split[at..].copy_from_slice(repr.payload);
        prop_assert_eq!(&split, &bytes);

        check_parse(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in data(120)) {
        check_parse(&bytes);
    }

    #[test]
    fn header_then_random_chain_never_panics(bytes in header_then_chain()) {
        check_parse(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(bytes in mutated_packet()) {
        check_parse(&bytes);
    }

    #[test]
    fn seq_order_is_consistent(a in any::<u16>(), step in near_half(0x8000u16)) {
        let (a, b) = (SeqNr(a), SeqNr(a) + step);
        prop_assert_eq!(a.distance_to(b), step);
        prop_assert_eq!(a.is_before(b), b.is_after(a));
        prop_assert_eq!(a.is_after(b), b.is_before(a));
        prop_assert!(!(a.is_before(b) && a.is_after(b)));
        // Before means 1..=0x7fff steps ahead; 0x8000 apart is neither way.
        prop_assert_eq!(a.is_before(b), (1..=0x7fff).contains(&step));
        prop_assert_eq!(a.is_after(b), step > 0x8000);
        prop_assert_eq!(b.diff(a), step as i16);
        prop_assert_eq!(a.next().prev(), a);
    }

    #[test]
    fn timestamp_order_is_consistent(a in any::<u32>(), step in near_half(0x8000_0000u32)) {
        let (a, b) = (Timestamp(a), Timestamp(a.wrapping_add(step)));
        prop_assert_eq!(b.wrapping_since(a), step);
        prop_assert!(!(a.is_after(b) && b.is_after(a)));
        prop_assert_eq!(b.is_after(a), (1..0x8000_0000).contains(&step));
    }
}

/// Any value, with the values around `half` (half the number space) and 0
/// drawn often.
fn near_half<T>(half: T) -> impl Strategy<Value = T>
where
    T: Arbitrary
        + Copy
        + core::fmt::Debug
        + core::ops::Add<Output = T>
        + core::ops::Sub<Output = T>
        + From<u8>
        + 'static,
{
    prop_oneof![
        Just(T::from(0)),
        Just(T::from(1)),
        Just(half - T::from(1)),
        Just(half),
        Just(half + T::from(1)),
        any::<T>(),
    ]
}
