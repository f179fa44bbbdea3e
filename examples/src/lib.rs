//! utp-examples: the `utpcat` command, the `utp-bench` cross-process
//! benchmark and runnable examples of this project. The library holds what
//! the binaries share.

/// A byte count with an optional K, M or G suffix (powers of 1024): `512K`,
/// `64M`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix {c:?}: use K, M or G")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 =
        num.parse().map_err(|_| format!("{s:?} is not a size (examples: 512K, 64M, 1G)"))?;
    n.checked_mul(mult).filter(|&n| n > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// Deterministic bytes, cheap to make: the bench measures the transport.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

pub mod stdio;
