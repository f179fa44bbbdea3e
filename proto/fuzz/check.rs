// The checks of the `parse` fuzz target, shared with the stable-toolchain
// tests (`proto/tests/fuzz_corpus.rs`, `proto/tests/wire_proptest.rs`) by
// `include!`, so that the corpus replayed by `cargo test` meets exactly the
// assertions the fuzzer does.

/// Runs every decoder of `utp_proto::wire` on `data` and checks that they
/// agree with each other, never panic, and that a packet which parses
/// re-emits to the very same bytes.
fn check_parse(data: &[u8]) {
    use std::fmt::Write as _;
    use utp_proto::wire::{Extension, Packet, PacketType, Repr, SackIter, HEADER_LEN, VERSION};

    let mut text = String::new();

    // Display must not panic whatever the buffer, even unchecked.
    write!(text, "{}", Packet::new_unchecked(data)).expect("formatting into a String");

    let checked = Packet::new_checked(data);
    let parsed = Repr::parse_bytes(data);
    match (&checked, &parsed) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "new_checked and parse_bytes disagree on the error"),
        _ => panic!("new_checked {checked:?} but parse_bytes {parsed:?}"),
    }
    let Ok(packet) = checked else { return };

    // Every accessor of a checked packet.
    assert!(data.len() >= HEADER_LEN);
    assert_eq!(packet.version(), VERSION);
    let packet_type = packet.packet_type();
    assert_eq!(packet_type as u8, data[0] >> 4);
    assert_eq!(packet.first_extension(), data[1]);
    let _ = (packet.connection_id(), packet.timestamp(), packet.timestamp_diff());
    let _ = (packet.wnd_size(), packet.seq_nr(), packet.ack_nr());
    let offset = packet.payload_offset();
    assert!((HEADER_LEN..=data.len()).contains(&offset));
    assert_eq!(packet.payload(), &data[offset..]);
    assert_eq!(packet.as_bytes(), data);
    assert_eq!(packet.bytes(), data);
    let mut records = 0;
    for record in packet.extensions() {
        let (kind, ext_data) = record.expect("a checked packet's chain has no error");
        assert_ne!(kind, 0);
        assert!(ext_data.len() <= 255);
        records += 1;
    }
    assert!(records <= utp_proto::wire::MAX_EXTENSIONS);
    write!(text, "{packet}").expect("formatting into a String");

    // The parsed representation agrees with the view.
    let repr = Repr::parse(&packet).expect("a checked packet parses");
    assert_eq!(Ok(repr), parsed);
    assert_eq!(repr.packet_type, packet_type);
    assert_eq!(repr.connection_id, packet.connection_id());
    assert_eq!(repr.timestamp, packet.timestamp());
    assert_eq!(repr.timestamp_diff, packet.timestamp_diff());
    assert_eq!(repr.wnd_size, packet.wnd_size());
    assert_eq!(repr.seq_nr, packet.seq_nr());
    assert_eq!(repr.ack_nr, packet.ack_nr());
    assert_eq!(repr.payload, packet.payload());
    assert_eq!(repr.extensions.len(), records);
    // Padding records are skipped: they sit between the extensions kept and
    // the payload.
    assert!(repr.header_len() <= offset);
    let padding = offset - repr.header_len();
    assert_eq!(repr.buffer_len() + padding, data.len());
    for (ext, raw) in repr.extensions.iter().zip(packet.extensions()) {
        let (kind, ext_data) = raw.expect("checked above");
        assert_eq!(ext.kind(), kind);
        assert_eq!(ext.data_len(), ext_data.len());
        assert_eq!(*ext, Extension::classify(packet_type, kind, ext_data));
        match *ext {
            Extension::SelectiveAck(bits) => {
                let acked: Vec<_> = SackIter::new(repr.ack_nr, bits).collect();
                let ones: u32 = bits.iter().map(|b| b.count_ones()).sum();
                assert_eq!(acked.len(), ones as usize);
                for seq in acked {
                    let step = repr.ack_nr.distance_to(seq);
                    assert!(step >= 2 && usize::from(step) < 2 + bits.len() * 8);
                }
            }
            Extension::ExtensionBits(_) => {
                assert!(matches!(packet_type, PacketType::Syn | PacketType::State));
            }
            Extension::Metadata(_) => assert_eq!(packet_type, PacketType::Data),
            Extension::CloseReason(_) | Extension::Unknown { .. } => {}
        }
    }
    let _ = (repr.extensions.sack(), repr.extensions.extension_bits());
    let _ = (repr.extensions.negotiation(), repr.extensions.metadata());
    let _ = repr.extensions.close_reason();
    write!(text, "{repr}").expect("formatting into a String");

    // Re-emitting reproduces the input byte for byte, whole or header first
    // (without its padding records, which parsing drops: then the re-emitted
    // packet is the canonical form, and parses to the same representation).
    let mut out = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut out), Ok(data.len() - padding));
    if padding == 0 {
        assert_eq!(out, data, "re-emitted bytes differ from the input");
        let mut out = vec![0u8; data.len()];
        assert_eq!(repr.emit_header(&mut out, repr.payload.len()), Ok(offset));
        assert_eq!(out[..offset], data[..offset]);
    } else {
        let again = Repr::parse_bytes(&out).expect("a re-emitted packet parses");
        assert_eq!(again, repr, "re-emitted padded packet parses differently");
        assert_eq!(out[repr.header_len()..], data[offset..], "payload moved");
        // Padding it back to the input's length gives a packet that parses
        // to the same representation again.
        if padding >= 2 {
            let mut padded = out.clone();
            padded.resize(data.len(), 0);
            let len = utp_proto::wire::pad(&mut padded, out.len(), data.len())
                .expect("padding a valid packet");
            assert_eq!(len, data.len());
            assert_eq!(Repr::parse_bytes(&padded), Ok(repr), "re-padded packet differs");
        }
    }
    if let Some(short) = repr.buffer_len().checked_sub(1) {
        assert!(repr.emit(&mut vec![0u8; short]).is_err());
    }
}
