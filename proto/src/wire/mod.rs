//! The uTP wire format: zero-copy packet views and owned representations.
//!
//! Two layers, after smoltcp's `wire` module:
//! - [`Packet`] is a view over a byte buffer. [`Packet::new_checked`]
//!   validates the header and walks the whole extension chain once; after
//!   that no accessor can panic, whatever the bytes were.
//! - [`Repr`] is a parsed, borrowed representation: [`Repr::parse`] from a
//!   checked packet, [`Repr::emit`] into a buffer of at least
//!   [`Repr::buffer_len`] bytes.
//!
//! ```
//! use utp_proto::wire::{Packet, PacketType, Repr};
//!
//! let bytes = hex_literal(b"41002741c9b699ba00000000001000002e6c0000");
//! let packet = Packet::new_checked(&bytes[..]).unwrap();
//! let repr = Repr::parse(&packet).unwrap();
//! assert_eq!(repr.packet_type, PacketType::Syn);
//! assert_eq!(repr.connection_id, 10049);
//!
//! let mut out = vec![0; repr.buffer_len()];
//! repr.emit(&mut out).unwrap();
//! assert_eq!(out, bytes);
//! # fn hex_literal(s: &[u8]) -> Vec<u8> {
//! #     s.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect()
//! # }
//! ```

mod extension;
mod packet;
mod repr;
mod seq;

pub use extension::{
    ExtFlags, Extension, ExtensionIter, Extensions, Negotiation, SackIter, EXTENSION_BITS_LEN,
    EXT_BITS, EXT_CLOSE_REASON, EXT_PADDING, EXT_SACK, MAX_EXTENSIONS,
};
pub use packet::{Packet, HEADER_LEN};
pub use repr::Repr;
pub use seq::{SeqNr, Timestamp};

use core::fmt;

/// The uTP protocol version this crate speaks; packets of any other version
/// are rejected.
pub const VERSION: u8 = 1;

/// The five uTP packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// `ST_DATA`: carries payload.
    Data = 0,
    /// `ST_FIN`: the sender has no more data; has its own sequence number.
    Fin = 1,
    /// `ST_STATE`: an acknowledgement; does not consume a sequence number.
    State = 2,
    /// `ST_RESET`: abort the connection.
    Reset = 3,
    /// `ST_SYN`: opens a connection.
    Syn = 4,
}

impl PacketType {
    /// The type for a 4-bit type field, or `None` for 5..=15.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }

    /// The name used in logs and in BEP 29 (`ST_DATA` is `DATA`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Data => "DATA",
            PacketType::Fin => "FIN",
            PacketType::State => "STATE",
            PacketType::Reset => "RESET",
            PacketType::Syn => "SYN",
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a datagram is not a valid uTP packet, or why a packet cannot be
/// emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than the 20-byte header.
    #[error("datagram of {len} bytes is shorter than the 20-byte uTP header")]
    Truncated {
        /// Length of the datagram.
        len: usize,
    },
    /// The version nibble is not 1.
    #[error("unsupported uTP version {0} (only version 1 exists)")]
    BadVersion(u8),
    /// The type nibble is not one of the five packet types.
    #[error("unknown uTP packet type {0}")]
    BadType(u8),
    /// An extension record's header or data runs past the end of the datagram.
    #[error("extension record of type {kind} runs past the end of the datagram")]
    ExtensionTruncated {
        /// Type of the record that was cut short.
        kind: u8,
    },
    /// More than [`MAX_EXTENSIONS`] extension records are chained.
    #[error("more than {MAX_EXTENSIONS} extension records chained")]
    TooManyExtensions,
    /// Emitting: an extension record's data is longer than 255 bytes.
    #[error("extension record of type {kind} has {len} bytes; at most 255 fit")]
    ExtensionTooLong {
        /// Type of the record.
        kind: u8,
        /// Its length.
        len: usize,
    },
    /// Emitting: an extension record has type 0, which would end the chain.
    #[error("extension type 0 cannot be emitted: it marks the end of the chain")]
    ExtensionTypeZero,
    /// Padding: the packet cannot grow by exactly that many bytes (a
    /// padding record takes at least 2).
    #[error("cannot pad a {len}-byte packet to {target} bytes")]
    BadPadding {
        /// Length of the packet.
        len: usize,
        /// Size asked for.
        target: usize,
    },
    /// Emitting: the output buffer is smaller than [`Repr::buffer_len`].
    #[error("output buffer of {have} bytes is smaller than the {need} bytes needed")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Grows the packet in `buf[..len]` to exactly `target` bytes by chaining
/// [`EXT_PADDING`] records (zero-filled, up to 255 bytes each) after its
/// extensions and moving the payload behind them; returns `target`.
///
/// This is how a path MTU probe is made from an ordinary DATA packet: if the
/// probe is lost, the same packet goes again without padding, so a failed
/// probe never needs its payload split. Only for peers that negotiated
/// [`ExtFlags::LARGE_PACKETS`]: libutp drops a packet whose first extension
/// type is 3 or higher.
///
/// Fails when `target - len` is 0 or 1, when `buf` is shorter than
/// `target`, or when the packet is malformed.
///
/// ```
/// use utp_proto::wire::{pad, PacketType, Repr, SeqNr};
///
/// let mut repr = Repr::new(PacketType::Data, 7, SeqNr(1), SeqNr(2));
/// repr.payload = b"hello";
/// let mut buf = [0u8; 2000];
/// let len = repr.emit(&mut buf).unwrap();
/// let padded = pad(&mut buf, len, 1500).unwrap();
/// assert_eq!(padded, 1500);
/// let parsed = Repr::parse_bytes(&buf[..padded]).unwrap();
/// assert_eq!(parsed.payload, b"hello");
/// assert!(parsed.extensions.is_empty());
/// ```
pub fn pad(buf: &mut [u8], len: usize, target: usize) -> Result<usize, Error> {
    let bad = Error::BadPadding { len, target };
    let extra = target.checked_sub(len).ok_or(bad)?;
    if extra < 2 || buf.len() < target || len < HEADER_LEN {
        return Err(bad);
    }
    // Find the byte that ends the chain (the header's first-extension byte
    // when there is no record) and the payload's offset.
    let mut terminator = 1;
    let mut kind = buf[1];
    let mut at = HEADER_LEN;
    while kind != 0 {
        if at + 2 > len {
            return Err(bad);
        }
        terminator = at;
        kind = buf[at];
        at += 2 + usize::from(buf[at + 1]);
    }
    if at > len {
        return Err(bad);
    }
    buf.copy_within(at..len, at + extra);
    buf[terminator] = EXT_PADDING;
    // Records of 2..=257 bytes (header included), as even as possible.
    let records = extra.div_ceil(257);
    let (base, rem) = (extra / records, extra % records);
    for i in 0..records {
        let size = base + usize::from(i < rem);
        buf[at] = if i + 1 < records { EXT_PADDING } else { 0 };
        // `size` is at most 257, so the data length fits a byte.
        buf[at + 1] = (size - 2) as u8;
        buf[at + 2..at + size].fill(0);
        at += size;
    }
    Ok(target)
}
