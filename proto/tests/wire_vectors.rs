//! The uTP wire test vectors of the Portal network specification, and one
//! test per decode and encode error of the codec.

use utp_proto::wire::{
    Error, ExtFlags, Extension, Extensions, Negotiation, Packet, PacketType, Repr, SackIter, SeqNr,
    Timestamp, HEADER_LEN, MAX_EXTENSIONS,
};

const SYN: &str = "41002741c9b699ba00000000001000002e6c0000";
const ACK: &str = "21002741005e885e36a7e8830010000041a72e6d";
const ACK_SACK: &str = "21012741005e885e36a7e8830010000041a72e6d000401000080";
const DATA: &str = "0100667d0f0cbacf0e710cbf00100000208e41a600010203040506070809";
const FIN: &str = "11004a3b1eb5be8f1e7c94d100100000a05a41a6";
const RESET: &str = "3100f34d2cc6cfbb0000000000000000d87541a7";

fn bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex).expect("valid hex")
}

/// The header fields of a vector, as the Portal specification lists them.
struct Expected {
    packet_type: PacketType,
    connection_id: u16,
    timestamp: u32,
    timestamp_diff: u32,
    wnd_size: u32,
    seq_nr: u16,
    ack_nr: u16,
}

/// Decodes `bytes` through the view and the representation, checks every
/// header field against `want`, re-encodes and checks the bytes are equal.
fn decode_and_reencode<'a>(bytes: &'a [u8], want: &Expected) -> Repr<'a> {
    let packet = Packet::new_checked(bytes).expect("vector is a valid packet");
    assert_eq!(packet.version(), 1);
    assert_eq!(packet.packet_type(), want.packet_type);
    assert_eq!(packet.connection_id(), want.connection_id);
    assert_eq!(packet.timestamp(), Timestamp(want.timestamp));
    assert_eq!(packet.timestamp_diff(), want.timestamp_diff);
    assert_eq!(packet.wnd_size(), want.wnd_size);
    assert_eq!(packet.seq_nr(), SeqNr(want.seq_nr));
    assert_eq!(packet.ack_nr(), SeqNr(want.ack_nr));

    let repr = Repr::parse(&packet).expect("vector parses");
    assert_eq!(Repr::parse_bytes(bytes), Ok(repr));
    assert_eq!(repr.packet_type, want.packet_type);
    assert_eq!(repr.connection_id, want.connection_id);
    assert_eq!(repr.timestamp, Timestamp(want.timestamp));
    assert_eq!(repr.timestamp_diff, want.timestamp_diff);
    assert_eq!(repr.wnd_size, want.wnd_size);
    assert_eq!(repr.seq_nr, SeqNr(want.seq_nr));
    assert_eq!(repr.ack_nr, SeqNr(want.ack_nr));
    assert_eq!(repr.payload, packet.payload());

    assert_eq!(repr.buffer_len(), bytes.len());
    let mut out = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut out), Ok(bytes.len()));
    assert_eq!(out, bytes, "re-encoding differs");
    repr
}

/// Emits `repr` into a buffer of exactly `buffer_len` bytes.
fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut out = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut out), Ok(out.len()));
    out
}

/// Emits `repr`, parses the result and checks it equals `repr`; returns the bytes.
fn round_trip(repr: &Repr<'_>) -> Vec<u8> {
    let out = emit(repr);
    assert_eq!(Repr::parse_bytes(&out), Ok(*repr));
    out
}

/// A 20-byte header with the given type byte and first-extension byte.
fn header(type_ver: u8, first_ext: u8) -> Vec<u8> {
    let mut b = bytes(ACK);
    b[0] = type_ver;
    b[1] = first_ext;
    b
}

/// A header of type `packet_type` followed by raw extension records
/// `(kind, data)`, chained in order, and `payload`.
fn packet_with(packet_type: PacketType, records: &[(u8, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut b = header(((packet_type as u8) << 4) | 1, records.first().map_or(0, |r| r.0));
    for (i, (_, data)) in records.iter().enumerate() {
        b.push(records.get(i + 1).map_or(0, |r| r.0));
        b.push(u8::try_from(data.len()).expect("record of at most 255 bytes"));
        b.extend_from_slice(data);
    }
    b.extend_from_slice(payload);
    b
}

fn extensions<'a>(list: &[Extension<'a>]) -> Extensions<'a> {
    list.iter().copied().collect::<Result<_, _>>().expect("at most MAX_EXTENSIONS records")
}

// ---- The six Portal vectors ----

#[test]
fn vector_syn() {
    let b = bytes(SYN);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::Syn,
            connection_id: 10049,
            timestamp: 3_384_187_322,
            timestamp_diff: 0,
            wnd_size: 1_048_576,
            seq_nr: 11884,
            ack_nr: 0,
        },
    );
    assert!(repr.extensions.is_empty());
    assert!(repr.payload.is_empty());
}

#[test]
fn vector_ack() {
    let b = bytes(ACK);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::State,
            connection_id: 10049,
            timestamp: 6_195_294,
            timestamp_diff: 916_973_699,
            wnd_size: 1_048_576,
            seq_nr: 16807,
            ack_nr: 11885,
        },
    );
    assert!(repr.extensions.is_empty());
    assert!(repr.payload.is_empty());
}

#[test]
fn vector_ack_with_selective_ack() {
    let b = bytes(ACK_SACK);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::State,
            connection_id: 10049,
            timestamp: 6_195_294,
            timestamp_diff: 916_973_699,
            wnd_size: 1_048_576,
            seq_nr: 16807,
            ack_nr: 11885,
        },
    );
    let sack = [1u8, 0, 0, 128];
    assert_eq!(repr.extensions.as_slice(), &[Extension::SelectiveAck(&sack)]);
    assert_eq!(repr.extensions.sack(), Some(&sack[..]));
    let acked: Vec<u16> = SackIter::new(repr.ack_nr, &sack).map(|s| s.0).collect();
    assert_eq!(acked, vec![11887, 11918]);
    assert!(repr.payload.is_empty());
    let text = repr.to_string();
    assert!(text.contains("sack=[11887,11918]/4B"), "{text}");
}

#[test]
fn vector_data() {
    let b = bytes(DATA);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::Data,
            connection_id: 26237,
            timestamp: 252_492_495,
            timestamp_diff: 242_289_855,
            wnd_size: 1_048_576,
            seq_nr: 8334,
            ack_nr: 16806,
        },
    );
    assert!(repr.extensions.is_empty());
    assert_eq!(repr.payload, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(Packet::new_checked(&b[..]).unwrap().payload_offset(), HEADER_LEN);
}

#[test]
fn vector_fin() {
    let b = bytes(FIN);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::Fin,
            connection_id: 19003,
            timestamp: 515_227_279,
            timestamp_diff: 511_481_041,
            wnd_size: 1_048_576,
            seq_nr: 41050,
            ack_nr: 16806,
        },
    );
    assert!(repr.extensions.is_empty());
    assert!(repr.payload.is_empty());
}

#[test]
fn vector_reset() {
    let b = bytes(RESET);
    let repr = decode_and_reencode(
        &b,
        &Expected {
            packet_type: PacketType::Reset,
            connection_id: 62285,
            timestamp: 751_226_811,
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr: 55413,
            ack_nr: 16807,
        },
    );
    assert!(repr.extensions.is_empty());
    assert!(repr.payload.is_empty());
}

#[test]
fn vectors_built_from_fields_encode_to_the_same_bytes() {
    let mut syn = Repr::new(PacketType::Syn, 10049, SeqNr(11884), SeqNr(0));
    syn.timestamp = Timestamp(3_384_187_322);
    syn.wnd_size = 1_048_576;
    assert_eq!(emit(&syn), bytes(SYN));

    let sack = [1u8, 0, 0, 128];
    let mut ack = Repr::new(PacketType::State, 10049, SeqNr(16807), SeqNr(11885));
    ack.timestamp = Timestamp(6_195_294);
    ack.timestamp_diff = 916_973_699;
    ack.wnd_size = 1_048_576;
    assert_eq!(emit(&ack), bytes(ACK));
    ack.extensions = extensions(&[Extension::SelectiveAck(&sack)]);
    assert_eq!(emit(&ack), bytes(ACK_SACK));

    let payload: Vec<u8> = (0..=9).collect();
    let mut data = Repr::new(PacketType::Data, 26237, SeqNr(8334), SeqNr(16806));
    data.timestamp = Timestamp(252_492_495);
    data.timestamp_diff = 242_289_855;
    data.wnd_size = 1_048_576;
    data.payload = &payload;
    assert_eq!(emit(&data), bytes(DATA));

    // The payload placed by the caller after `emit_header`.
    let mut out = vec![0u8; data.buffer_len()];
    let at = data.emit_header(&mut out, payload.len()).unwrap();
    assert_eq!(at, HEADER_LEN);
    out[at..].copy_from_slice(&payload);
    assert_eq!(out, bytes(DATA));
}

// ---- Decode errors ----

#[test]
fn truncated_header_is_rejected() {
    let b = bytes(SYN);
    for len in 0..HEADER_LEN {
        assert_eq!(Packet::new_checked(&b[..len]).unwrap_err(), Error::Truncated { len });
        assert_eq!(Repr::parse_bytes(&b[..len]).unwrap_err(), Error::Truncated { len });
    }
}

#[test]
fn version_other_than_1_is_rejected() {
    for version in (0..16u8).filter(|&v| v != 1) {
        let b = header(0x40 | version, 0);
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion(version));
        assert_eq!(Repr::parse_bytes(&b).unwrap_err(), Error::BadVersion(version));
    }
}

#[test]
fn type_above_4_is_rejected() {
    for kind in 5..16u8 {
        let b = header((kind << 4) | 1, 0);
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadType(kind));
        assert_eq!(Repr::parse_bytes(&b).unwrap_err(), Error::BadType(kind));
    }
    for kind in 0..5u8 {
        let b = header((kind << 4) | 1, 0);
        assert_eq!(Repr::parse_bytes(&b).unwrap().packet_type as u8, kind);
    }
}

#[test]
fn truncated_extension_header_is_rejected() {
    // First record announced, but no room for its 2-byte header.
    for tail in [&[][..], &[0][..]] {
        let mut b = header(0x21, 1);
        b.extend_from_slice(tail);
        let err = Error::ExtensionTruncated { kind: 1 };
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), err);
        assert_eq!(Repr::parse_bytes(&b).unwrap_err(), err);
    }
    // A second record, of type 9, announced by the first and cut short.
    let mut b = packet_with(PacketType::State, &[(1, &[0; 4])], &[]);
    b[HEADER_LEN] = 9;
    b.push(0);
    assert_eq!(Repr::parse_bytes(&b).unwrap_err(), Error::ExtensionTruncated { kind: 9 });
}

#[test]
fn extension_data_past_the_end_is_rejected() {
    let good = packet_with(PacketType::State, &[(1, &[0xff; 4])], &[]);
    for cut in 1..=4 {
        let b = &good[..good.len() - cut];
        let err = Error::ExtensionTruncated { kind: 1 };
        assert_eq!(Packet::new_checked(b).unwrap_err(), err);
        assert_eq!(Repr::parse_bytes(b).unwrap_err(), err);
    }
    // A length byte of 255 with 10 bytes behind it.
    let mut b = header(0x01, 0x7f);
    b.extend_from_slice(&[0, 255]);
    b.extend_from_slice(&[0; 10]);
    assert_eq!(Repr::parse_bytes(&b).unwrap_err(), Error::ExtensionTruncated { kind: 0x7f });
}

#[test]
fn chain_longer_than_max_extensions_is_rejected() {
    let empty: &[u8] = &[];
    let records = vec![(9u8, empty); MAX_EXTENSIONS + 1];
    let at_limit = packet_with(PacketType::State, &records[..MAX_EXTENSIONS], b"x");
    let repr = Repr::parse_bytes(&at_limit).expect("MAX_EXTENSIONS records are fine");
    assert_eq!(repr.extensions.len(), MAX_EXTENSIONS);
    assert_eq!(repr.payload, b"x");
    assert_eq!(emit(&repr), at_limit);

    let over = packet_with(PacketType::State, &records, b"x");
    assert_eq!(Packet::new_checked(&over[..]).unwrap_err(), Error::TooManyExtensions);
    assert_eq!(Repr::parse_bytes(&over).unwrap_err(), Error::TooManyExtensions);

    // A chain of empty records that would run on through a long buffer is
    // rejected at the limit, not walked to the end.
    let mut long = header(0x21, 9);
    for _ in 0..500 {
        long.extend_from_slice(&[9, 0]);
    }
    assert_eq!(Repr::parse_bytes(&long).unwrap_err(), Error::TooManyExtensions);
    // A Repr cannot hold more records either.
    let mut list = extensions(&[Extension::Unknown { kind: 9, data: &[] }; MAX_EXTENSIONS]);
    assert_eq!(list.push(Extension::CloseReason(1)), Err(Error::TooManyExtensions));
}

// ---- Extensions ----

#[test]
fn selective_ack_of_any_length_is_accepted() {
    // libtorrent sends 1..3 bytes for short gaps; some peers send 0.
    let cases: [(&[u8], &[u16]); 4] =
        [(&[], &[]), (&[0b101], &[102, 104]), (&[0, 0x80], &[117]), (&[1, 0, 1], &[102, 118])];
    for (bits, acked) in cases {
        let b = packet_with(PacketType::State, &[(1, bits)], &[]);
        let repr = Repr::parse_bytes(&b).expect("any SACK length is accepted");
        assert_eq!(repr.extensions.as_slice(), &[Extension::SelectiveAck(bits)]);
        let got: Vec<u16> = SackIter::new(SeqNr(100), bits).map(|s| s.0).collect();
        assert_eq!(got, acked);
        assert_eq!(emit(&repr), b);
    }
}

#[test]
fn ext2_of_8_bytes_on_syn_and_state_is_extension_bits() {
    let utpx = Negotiation::new(ExtFlags::METADATA | ExtFlags::SYN_DATA).to_bits();
    let libutp = [0u8; 8];
    for packet_type in [PacketType::Syn, PacketType::State] {
        let b = packet_with(packet_type, &[(2, &utpx)], &[]);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.as_slice(), &[Extension::ExtensionBits(utpx)]);
        assert_eq!(repr.extensions.extension_bits(), Some(utpx));
        let negotiation = repr.extensions.negotiation().expect("UTPX magic");
        assert_eq!(negotiation.version, 1);
        assert_eq!(negotiation.flags, ExtFlags(3));
        assert_eq!(emit(&repr), b);

        // libutp's own bits: extension bits, but not our negotiation record.
        let b = packet_with(packet_type, &[(2, &libutp)], &[]);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.extension_bits(), Some(libutp));
        assert_eq!(repr.extensions.negotiation(), None);
        assert_eq!(emit(&repr), b);

        // Any other length is not extension bits; kept raw.
        let b = packet_with(packet_type, &[(2, &utpx[..7])], &[]);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.as_slice(), &[Extension::Unknown { kind: 2, data: &utpx[..7] }]);
        assert_eq!(repr.extensions.negotiation(), None);
        assert_eq!(emit(&repr), b);
    }
    // 8 bytes of ext 2 on FIN and RESET mean nothing: kept raw.
    for packet_type in [PacketType::Fin, PacketType::Reset] {
        let b = packet_with(packet_type, &[(2, &utpx)], &[]);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.as_slice(), &[Extension::Unknown { kind: 2, data: &utpx }]);
        assert_eq!(emit(&repr), b);
    }
}

#[test]
fn metadata_of_0_and_255_bytes_on_data() {
    let long: Vec<u8> = (0..=254).collect();
    for (meta, payload) in [(&[][..], &b""[..]), (&long[..], &b"last fragment"[..])] {
        let b = packet_with(PacketType::Data, &[(2, meta)], payload);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.as_slice(), &[Extension::Metadata(meta)]);
        assert_eq!(repr.extensions.metadata(), Some(meta));
        assert_eq!(repr.extensions.extension_bits(), None);
        assert_eq!(repr.payload, payload);
        assert_eq!(repr.header_len(), HEADER_LEN + 2 + meta.len());
        assert_eq!(emit(&repr), b);
    }
    // 8 bytes of ext 2 on DATA are metadata, not extension bits.
    let b = packet_with(PacketType::Data, &[(2, b"UTPX\0\x01\0\x03")], b"body");
    let repr = Repr::parse_bytes(&b).unwrap();
    assert_eq!(repr.extensions.metadata(), Some(&b"UTPX\0\x01\0\x03"[..]));
    assert_eq!(repr.extensions.negotiation(), None);

    // Built from fields.
    let mut repr = Repr::new(PacketType::Data, 7, SeqNr(1), SeqNr(2));
    repr.extensions = extensions(&[Extension::Metadata(&long)]);
    repr.payload = b"body";
    round_trip(&repr);
}

#[test]
fn close_reason_on_fin_and_reset() {
    for packet_type in [PacketType::Fin, PacketType::Reset] {
        let b = packet_with(packet_type, &[(3, &[0, 0, 0x01, 0x02])], &[]);
        let repr = Repr::parse_bytes(&b).unwrap();
        assert_eq!(repr.extensions.as_slice(), &[Extension::CloseReason(0x0102)]);
        assert_eq!(repr.extensions.close_reason(), Some(0x0102));
        assert_eq!(emit(&repr), b);
        assert!(repr.to_string().contains("close_reason=258"));

        // After a SACK record.
        let b = packet_with(packet_type, &[(1, &[0; 4]), (3, &[0, 0, 0, 7])], &[]);
        assert_eq!(Repr::parse_bytes(&b).unwrap().extensions.close_reason(), Some(7));

        // Reserved bytes not zero, or a length other than 4: kept raw.
        for data in [&[1, 0, 0, 7][..], &[0, 0, 7], &[0, 0, 0, 7, 0]] {
            let b = packet_with(packet_type, &[(3, data)], &[]);
            let repr = Repr::parse_bytes(&b).unwrap();
            assert_eq!(repr.extensions.as_slice(), &[Extension::Unknown { kind: 3, data }]);
            assert_eq!(repr.extensions.close_reason(), None);
            assert_eq!(emit(&repr), b);
        }
    }
    let mut repr = Repr::new(PacketType::Reset, 9, SeqNr(3), SeqNr(4));
    repr.extensions = extensions(&[Extension::CloseReason(u16::MAX)]);
    assert_eq!(&round_trip(&repr)[HEADER_LEN..], &[0, 4, 0, 0, 0xff, 0xff]);
}

#[test]
fn unknown_extension_is_kept_raw_and_round_trips() {
    // Unknown first, unknown after a SACK, and an empty unknown record.
    let b = packet_with(
        PacketType::Data,
        &[(0x7f, b"raw bytes"), (1, &[0x80]), (200, &[]), (4, &[1, 2, 3])],
        b"payload",
    );
    let repr = Repr::parse_bytes(&b).unwrap();
    assert_eq!(
        repr.extensions.as_slice(),
        &[
            Extension::Unknown { kind: 0x7f, data: b"raw bytes" },
            Extension::SelectiveAck(&[0x80]),
            Extension::Unknown { kind: 200, data: &[] },
            Extension::Unknown { kind: 4, data: &[1, 2, 3] },
        ]
    );
    assert_eq!(repr.payload, b"payload");
    assert_eq!(emit(&repr), b);
    let text = repr.to_string();
    assert!(text.contains("ext127=9B") && text.contains("ext200=0B"), "{text}");

    let mut repr = Repr::new(PacketType::Syn, 1, SeqNr(2), SeqNr(0));
    repr.extensions = extensions(&[Extension::Unknown { kind: 255, data: &[0xaa; 255] }]);
    round_trip(&repr);
}

// ---- Encode errors ----

#[test]
fn emit_into_a_buffer_too_small_fails() {
    let payload = [7u8; 10];
    let mut repr = Repr::new(PacketType::Data, 1, SeqNr(2), SeqNr(3));
    repr.extensions = extensions(&[Extension::SelectiveAck(&[0; 4])]);
    repr.payload = &payload;
    let need = HEADER_LEN + 6 + 10;
    assert_eq!(repr.buffer_len(), need);
    for have in [0, HEADER_LEN, need - 1] {
        let mut buf = vec![0u8; have];
        assert_eq!(repr.emit(&mut buf), Err(Error::BufferTooSmall { need, have }));
    }
    // A larger buffer is fine; the length written is returned.
    let mut buf = vec![0u8; need + 100];
    assert_eq!(repr.emit(&mut buf), Ok(need));

    // emit_header counts the payload the caller will place.
    let mut buf = vec![0u8; HEADER_LEN + 6];
    assert_eq!(repr.emit_header(&mut buf, 0), Ok(HEADER_LEN + 6));
    assert_eq!(repr.emit_header(&mut buf, 1), Err(Error::BufferTooSmall { need: 27, have: 26 }));
    assert!(matches!(
        repr.emit_header(&mut buf, usize::MAX),
        Err(Error::BufferTooSmall { have: 26, .. })
    ));
}

#[test]
fn emit_of_a_record_over_255_bytes_fails() {
    let big = [0u8; 256];
    for ext in [
        Extension::SelectiveAck(&big),
        Extension::Metadata(&big),
        Extension::Unknown { kind: 9, data: &big },
    ] {
        let mut repr = Repr::new(PacketType::Data, 1, SeqNr(2), SeqNr(3));
        repr.extensions = extensions(&[Extension::CloseReason(1), ext]);
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(
            repr.emit(&mut buf),
            Err(Error::ExtensionTooLong { kind: ext.kind(), len: 256 })
        );
    }
}

#[test]
fn emit_of_a_type_0_record_fails() {
    let mut repr = Repr::new(PacketType::State, 1, SeqNr(2), SeqNr(3));
    repr.extensions =
        extensions(&[Extension::SelectiveAck(&[0; 4]), Extension::Unknown { kind: 0, data: &[1] }]);
    let mut buf = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut buf), Err(Error::ExtensionTypeZero));
}

#[test]
fn errors_have_messages() {
    let errors = [
        Error::Truncated { len: 3 },
        Error::BadVersion(2),
        Error::BadType(9),
        Error::ExtensionTruncated { kind: 1 },
        Error::TooManyExtensions,
        Error::ExtensionTooLong { kind: 2, len: 300 },
        Error::ExtensionTypeZero,
        Error::BufferTooSmall { need: 30, have: 20 },
    ];
    for err in errors {
        assert!(!err.to_string().is_empty());
    }
    let b = header(0x42, 0);
    let text = Packet::new_unchecked(&b[..]).to_string();
    assert!(text.contains("version 2"), "{text}");
}

/// Padding (path MTU probes): any growth of 2 bytes or more keeps the
/// header, the other extensions and the payload; the parser skips the
/// padding records however many there are; 0 or 1 byte of growth fails.
#[test]
fn padding_round_trips() {
    use utp_proto::wire::{pad, Extension, Extensions, PacketType, Repr, SeqNr};
    let sack = [0b1010_0101u8, 0, 0, 1];
    let mut repr = Repr::new(PacketType::Data, 9, SeqNr(100), SeqNr(7));
    let mut exts = Extensions::new();
    exts.push(Extension::SelectiveAck(&sack)).unwrap();
    repr.extensions = exts;
    let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    repr.payload = &payload;
    let mut buf = vec![0u8; 70_000];
    let len = repr.emit(&mut buf).unwrap();
    for extra in (2..700).chain([1400, 8000, 64_000]) {
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(pad(&mut buf, n, len + extra).unwrap(), len + extra);
        let parsed = Repr::parse_bytes(&buf[..len + extra]).unwrap();
        assert_eq!(parsed, repr, "grown by {extra}");
    }
    for extra in [0, 1] {
        let n = repr.emit(&mut buf).unwrap();
        assert!(pad(&mut buf, n, len + extra).is_err());
    }
    // No extension before the padding: the header's byte 1 starts the chain.
    let plain = Repr::new(PacketType::Data, 9, SeqNr(100), SeqNr(7));
    let n = plain.emit(&mut buf).unwrap();
    pad(&mut buf, n, 1500).unwrap();
    assert_eq!(Repr::parse_bytes(&buf[..1500]).unwrap(), plain);
}
