//! Encodes and decodes the six public uTP wire test vectors and prints them.
//!
//! Run with `cargo run -p utp-examples --bin wire-demo`.

use utp_proto::wire::{Packet, Repr};

const VECTORS: [(&str, &str); 6] = [
    ("SYN", "41002741c9b699ba00000000001000002e6c0000"),
    ("ACK", "21002741005e885e36a7e8830010000041a72e6d"),
    ("ACK+SACK", "21012741005e885e36a7e8830010000041a72e6d000401000080"),
    ("DATA", "0100667d0f0cbacf0e710cbf00100000208e41a600010203040506070809"),
    ("FIN", "11004a3b1eb5be8f1e7c94d100100000a05a41a6"),
    ("RESET", "3100f34d2cc6cfbb0000000000000000d87541a7"),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn main() {
    for (name, hex) in VECTORS {
        let bytes = unhex(hex);
        let packet = match Packet::new_checked(&bytes[..]) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        };
        let repr = Repr::parse(&packet).expect("checked packet parses");
        let mut out = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut out).expect("buffer is large enough");
        let same = out[..n] == bytes[..];
        println!("{name:<9} {repr}  round-trip: {}", if same { "identical" } else { "DIFFERS" });
    }
}
