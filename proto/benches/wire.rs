//! Parse and emit cost of typical packets: a full-size DATA packet and a
//! STATE carrying a 4-byte selective ACK.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use utp_proto::wire::{Extension, Extensions, Packet, PacketType, Repr, SeqNr, Timestamp};

fn data_repr(payload: &[u8]) -> Repr<'_> {
    let mut repr = Repr::new(PacketType::Data, 4242, SeqNr(1000), SeqNr(77));
    repr.timestamp = Timestamp(123_456_789);
    repr.timestamp_diff = 5_000;
    repr.wnd_size = 1 << 20;
    repr.payload = payload;
    repr
}

fn sack_repr(bits: &[u8]) -> Repr<'_> {
    let mut repr = Repr::new(PacketType::State, 4242, SeqNr(1000), SeqNr(77));
    repr.timestamp = Timestamp(123_456_789);
    repr.wnd_size = 1 << 20;
    let mut exts = Extensions::new();
    exts.push(Extension::SelectiveAck(bits)).expect("room for one record");
    repr.extensions = exts;
    repr
}

fn bench(c: &mut Criterion) {
    let payload = vec![0xabu8; 1382];
    let sack_bits = [0b1011_0110u8, 0xff, 0, 0x80];
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));

    for (name, repr) in [("data_1402", data_repr(&payload)), ("state_sack4", sack_repr(&sack_bits))]
    {
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).expect("emit");
        group.bench_function(format!("emit/{name}"), |b| {
            let mut out = vec![0u8; 1500];
            b.iter(|| black_box(&repr).emit(black_box(&mut out)).expect("emit"))
        });
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| {
                let packet = Packet::new_checked(black_box(&buf[..])).expect("valid");
                let repr = Repr::parse(&packet).expect("valid");
                black_box(repr.payload.len())
            })
        });
        group.bench_function(format!("view/{name}"), |b| {
            b.iter(|| {
                let packet = Packet::new_checked(black_box(&buf[..])).expect("valid");
                black_box((packet.seq_nr(), packet.ack_nr(), packet.payload().len()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
