//! Extension records: `[next_type u8][len u8][len bytes]`, chained after the
//! 20-byte header until `next_type == 0`.

use core::fmt;

use super::{Error, PacketType, SeqNr};

/// Extension type 1: selective acknowledgement bitmask.
pub const EXT_SACK: u8 = 1;
/// Extension type 2: libutp's 8-byte "extension bits" on SYN and its answer,
/// and this project's metadata record on DATA between peers that negotiated it.
pub const EXT_BITS: u8 = 2;
/// Extension type 3: libtorrent's close reason (2 reserved bytes + `u16`).
pub const EXT_CLOSE_REASON: u8 = 3;
/// Extension type 0x50: padding (zero bytes) that makes a path MTU probe as
/// large as the size it tests. Only sent to peers that negotiated
/// [`ExtFlags::LARGE_PACKETS`]; parsers skip it (it does not count against
/// [`MAX_EXTENSIONS`] and is not yielded). See [`pad`](super::pad).
pub const EXT_PADDING: u8 = 0x50;

/// The most extension records a packet may carry; a longer chain is rejected
/// with [`Error::TooManyExtensions`]. Real peers send at most two.
pub const MAX_EXTENSIONS: usize = 8;

/// Length of the ext 2 record on SYN and SYN-ACK. libutp drops a packet whose
/// ext 2 record has any other length.
pub const EXTENSION_BITS_LEN: usize = 8;

/// One extension record, typed where the type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension<'a> {
    /// Type 1: selective ACK bitmask of any length. Bit 0 of byte 0 stands for
    /// `ack_nr + 2`; bits run LSB-first inside each byte. See [`SackIter`].
    SelectiveAck(&'a [u8]),
    /// Type 2 with exactly 8 bytes on a SYN or STATE packet: libutp's
    /// extension bits, or this project's negotiation record (see
    /// [`Negotiation::from_bits`]).
    ExtensionBits([u8; EXTENSION_BITS_LEN]),
    /// Type 2 on a DATA packet: the metadata record of a framed message
    /// (0..=255 bytes). Only meaningful between peers that negotiated it.
    Metadata(&'a [u8]),
    /// Type 3 with 4 bytes whose first two are zero: libtorrent's close reason.
    CloseReason(u16),
    /// Any other record, kept raw (also type 2 or 3 in a shape not listed
    /// above) so that it survives a parse/emit round trip unchanged.
    Unknown {
        /// The record's type.
        kind: u8,
        /// The record's bytes.
        data: &'a [u8],
    },
}

impl<'a> Extension<'a> {
    /// Classifies a raw record. Where ext 2 means depends on the packet type.
    #[must_use]
    pub fn classify(packet_type: PacketType, kind: u8, data: &'a [u8]) -> Self {
        match (kind, packet_type) {
            (EXT_SACK, _) => Extension::SelectiveAck(data),
            (EXT_BITS, PacketType::Syn | PacketType::State) if data.len() == EXTENSION_BITS_LEN => {
                let mut bits = [0u8; EXTENSION_BITS_LEN];
                bits.copy_from_slice(data);
                Extension::ExtensionBits(bits)
            }
            (EXT_BITS, PacketType::Data) => Extension::Metadata(data),
            (EXT_CLOSE_REASON, _) if data.len() == 4 && data[0] == 0 && data[1] == 0 => {
                Extension::CloseReason(u16::from_be_bytes([data[2], data[3]]))
            }
            _ => Extension::Unknown { kind, data },
        }
    }

    /// The record's type byte on the wire.
    #[must_use]
    pub fn kind(&self) -> u8 {
        match self {
            Extension::SelectiveAck(_) => EXT_SACK,
            Extension::ExtensionBits(_) | Extension::Metadata(_) => EXT_BITS,
            Extension::CloseReason(_) => EXT_CLOSE_REASON,
            Extension::Unknown { kind, .. } => *kind,
        }
    }

    /// Length of the record's data (without the 2-byte record header).
    #[must_use]
    pub fn data_len(&self) -> usize {
        match self {
            Extension::SelectiveAck(d) | Extension::Metadata(d) => d.len(),
            Extension::Unknown { data, .. } => data.len(),
            Extension::ExtensionBits(_) => EXTENSION_BITS_LEN,
            Extension::CloseReason(_) => 4,
        }
    }

    /// Writes the record's data into `out`, which is exactly `data_len()` long.
    pub(crate) fn write_data(&self, out: &mut [u8]) {
        match self {
            Extension::SelectiveAck(d) | Extension::Metadata(d) => out.copy_from_slice(d),
            Extension::Unknown { data, .. } => out.copy_from_slice(data),
            Extension::ExtensionBits(bits) => out.copy_from_slice(bits),
            Extension::CloseReason(reason) => {
                out[..2].fill(0);
                out[2..4].copy_from_slice(&reason.to_be_bytes());
            }
        }
    }
}

/// Iterates over the raw records of a chain that has already been validated
/// (see [`Packet::new_checked`](super::Packet::new_checked)). Yields
/// `(type, data)`; on a chain that turns out malformed it yields
/// `Err` once and then stops. Padding records ([`EXT_PADDING`]) are checked
/// and skipped, not yielded.
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    buf: &'a [u8],
    offset: usize,
    next_kind: u8,
    count: usize,
}

impl<'a> ExtensionIter<'a> {
    /// A chain whose first record has type `first_kind` and starts at
    /// `buf[offset]`.
    pub(crate) fn new(buf: &'a [u8], offset: usize, first_kind: u8) -> Self {
        ExtensionIter { buf, offset, next_kind: first_kind, count: 0 }
    }

    /// Offset of the first byte after the records read so far: after the
    /// iterator is exhausted without error, the payload offset.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_kind == 0 {
                return None;
            }
            let kind = self.next_kind;
            // Stop after an error: pretend the chain ended.
            self.next_kind = 0;
            if self.count == MAX_EXTENSIONS && kind != EXT_PADDING {
                return Some(Err(Error::TooManyExtensions));
            }
            let Some(head) = self.buf.get(self.offset..self.offset + 2) else {
                return Some(Err(Error::ExtensionTruncated { kind }));
            };
            let (next, len) = (head[0], usize::from(head[1]));
            let start = self.offset + 2;
            let Some(data) = self.buf.get(start..start + len) else {
                return Some(Err(Error::ExtensionTruncated { kind }));
            };
            self.offset = start + len;
            self.next_kind = next;
            // Padding takes at least two bytes a record: the walk is bounded
            // by the datagram's length.
            if kind == EXT_PADDING {
                continue;
            }
            self.count += 1;
            return Some(Ok((kind, data)));
        }
    }
}

/// A small, fixed-capacity, ordered list of extension records (at most
/// [`MAX_EXTENSIONS`]); no allocation.
#[derive(Clone, Copy)]
pub struct Extensions<'a> {
    items: [Extension<'a>; MAX_EXTENSIONS],
    len: usize,
}

impl<'a> Extensions<'a> {
    const EMPTY: Extension<'static> = Extension::Unknown { kind: 0, data: &[] };

    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        Extensions { items: [Self::EMPTY; MAX_EXTENSIONS], len: 0 }
    }

    /// Appends a record; fails with [`Error::TooManyExtensions`] when full.
    pub fn push(&mut self, ext: Extension<'a>) -> Result<(), Error> {
        let slot = self.items.get_mut(self.len).ok_or(Error::TooManyExtensions)?;
        *slot = ext;
        self.len += 1;
        Ok(())
    }

    /// The records as a slice, in wire order.
    #[must_use]
    pub fn as_slice(&self) -> &[Extension<'a>] {
        &self.items[..self.len]
    }

    /// Number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when there are no records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates over the records in wire order.
    pub fn iter(&self) -> core::slice::Iter<'_, Extension<'a>> {
        self.as_slice().iter()
    }

    /// The first selective ACK bitmask, if any.
    #[must_use]
    pub fn sack(&self) -> Option<&'a [u8]> {
        self.iter().find_map(|e| match e {
            Extension::SelectiveAck(d) => Some(*d),
            _ => None,
        })
    }

    /// The first 8-byte extension-bits record, if any.
    #[must_use]
    pub fn extension_bits(&self) -> Option<[u8; EXTENSION_BITS_LEN]> {
        self.iter().find_map(|e| match e {
            Extension::ExtensionBits(b) => Some(*b),
            _ => None,
        })
    }

    /// This project's negotiation record, if an ext 2 record carries its magic.
    #[must_use]
    pub fn negotiation(&self) -> Option<Negotiation> {
        self.extension_bits().and_then(|b| Negotiation::from_bits(&b))
    }

    /// The first metadata record, if any.
    #[must_use]
    pub fn metadata(&self) -> Option<&'a [u8]> {
        self.iter().find_map(|e| match e {
            Extension::Metadata(d) => Some(*d),
            _ => None,
        })
    }

    /// libtorrent's close reason, if any.
    #[must_use]
    pub fn close_reason(&self) -> Option<u16> {
        self.iter().find_map(|e| match e {
            Extension::CloseReason(r) => Some(*r),
            _ => None,
        })
    }

    /// Bytes the chain takes on the wire (2-byte header per record + data).
    #[must_use]
    pub fn wire_len(&self) -> usize {
        self.iter().map(|e| 2 + e.data_len()).sum()
    }
}

impl Default for Extensions<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Extensions<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Extensions<'_> {}

impl fmt::Debug for Extensions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<Extension<'a>> for Result<Extensions<'a>, Error> {
    fn from_iter<I: IntoIterator<Item = Extension<'a>>>(iter: I) -> Self {
        let mut list = Extensions::new();
        for ext in iter {
            list.push(ext)?;
        }
        Ok(list)
    }
}

/// Iterates over the sequence numbers a selective ACK bitmask acknowledges.
///
/// Bit `i` (byte `i / 8`, bit `i % 8`, LSB first) stands for
/// `ack_nr + 2 + i`: `ack_nr + 1` is by definition missing, or the ACK would
/// have covered it.
#[derive(Debug, Clone)]
pub struct SackIter<'a> {
    base: SeqNr,
    bits: &'a [u8],
    index: usize,
}

impl<'a> SackIter<'a> {
    /// The numbers acknowledged by `bits` on a packet whose ack number is
    /// `ack_nr`.
    #[must_use]
    pub fn new(ack_nr: SeqNr, bits: &'a [u8]) -> Self {
        SackIter { base: ack_nr + 2, bits, index: 0 }
    }
}

impl Iterator for SackIter<'_> {
    type Item = SeqNr;

    fn next(&mut self) -> Option<SeqNr> {
        let total = self.bits.len() * 8;
        while self.index < total {
            let i = self.index;
            self.index += 1;
            // Skip whole zero bytes quickly.
            if i % 8 == 0 && self.bits[i / 8] == 0 {
                self.index = i + 8;
                continue;
            }
            if self.bits[i / 8] & (1 << (i % 8)) != 0 {
                // A bitmask is at most 255 bytes = 2040 bits: fits in u16.
                return Some(self.base + i as u16);
            }
        }
        None
    }
}

/// Flags of this project's negotiation record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExtFlags(pub u16);

impl ExtFlags {
    /// No extension.
    pub const NONE: ExtFlags = ExtFlags(0);
    /// Bit 0: metadata records on DATA (framed messages).
    pub const METADATA: ExtFlags = ExtFlags(1);
    /// Bit 1: payload carried on the SYN.
    pub const SYN_DATA: ExtFlags = ExtFlags(2);
    /// Bit 2: this side receives datagrams of up to 65 535 bytes intact and
    /// skips padding records, so path MTU probing may go past the 1500
    /// bytes that libtorrent's receive buffer holds (it cuts longer
    /// datagrams silently) and probes may be padded. Offered by default.
    pub const LARGE_PACKETS: ExtFlags = ExtFlags(4);

    /// `true` when every flag of `other` is set in `self`.
    #[must_use]
    pub fn contains(self, other: ExtFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags set in both.
    #[must_use]
    pub fn intersection(self, other: ExtFlags) -> ExtFlags {
        ExtFlags(self.0 & other.0)
    }

    /// `true` when no flag is set.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for ExtFlags {
    type Output = ExtFlags;
    fn bitor(self, rhs: ExtFlags) -> ExtFlags {
        ExtFlags(self.0 | rhs.0)
    }
}

/// This project's extension negotiation record, carried in the 8-byte ext 2
/// record of a SYN and of the STATE that answers it: ASCII `UTPX`, a `u16`
/// version (1) and a `u16` flag set, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negotiation {
    /// Version of the record; this crate writes 1 and reads any.
    pub version: u16,
    /// The extensions offered (on a SYN) or accepted (on the answer).
    pub flags: ExtFlags,
}

impl Negotiation {
    /// The magic at the start of the record.
    pub const MAGIC: [u8; 4] = *b"UTPX";
    /// The version this crate writes.
    pub const VERSION: u16 = 1;

    /// A record of the current version with the given flags.
    #[must_use]
    pub fn new(flags: ExtFlags) -> Self {
        Negotiation { version: Self::VERSION, flags }
    }

    /// Reads the record from libutp-style extension bits; `None` when the
    /// magic does not match (for example real libutp extension bits).
    #[must_use]
    pub fn from_bits(bits: &[u8; EXTENSION_BITS_LEN]) -> Option<Self> {
        if bits[..4] != Self::MAGIC {
            return None;
        }
        Some(Negotiation {
            version: u16::from_be_bytes([bits[4], bits[5]]),
            flags: ExtFlags(u16::from_be_bytes([bits[6], bits[7]])),
        })
    }

    /// The 8 bytes of the record.
    #[must_use]
    pub fn to_bits(&self) -> [u8; EXTENSION_BITS_LEN] {
        let mut out = [0u8; EXTENSION_BITS_LEN];
        out[..4].copy_from_slice(&Self::MAGIC);
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6..8].copy_from_slice(&self.flags.0.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sack_bits_lsb_first() {
        // ack_nr 10: bit 0 -> 12, bit 3 -> 15, byte 1 bit 7 -> 12 + 15 = 27.
        let bits = [0b0000_1001, 0b1000_0000, 0, 0];
        let got: Vec<u16> = SackIter::new(SeqNr(10), &bits).map(|s| s.0).collect();
        assert_eq!(got, vec![12, 15, 27]);
        assert_eq!(SackIter::new(SeqNr(10), &[]).count(), 0);
    }

    #[test]
    fn sack_wraps() {
        let got: Vec<u16> = SackIter::new(SeqNr(0xfffe), &[0b11]).map(|s| s.0).collect();
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn negotiation_round_trip_and_magic() {
        let n = Negotiation::new(ExtFlags::METADATA | ExtFlags::SYN_DATA);
        let bits = n.to_bits();
        assert_eq!(&bits, b"UTPX\x00\x01\x00\x03");
        assert_eq!(Negotiation::from_bits(&bits), Some(n));
        assert_eq!(Negotiation::from_bits(&[0; 8]), None);
    }

    #[test]
    fn ext2_meaning_depends_on_type() {
        let eight = [1u8; 8];
        assert!(matches!(
            Extension::classify(PacketType::Syn, 2, &eight),
            Extension::ExtensionBits(_)
        ));
        assert!(matches!(Extension::classify(PacketType::Data, 2, &eight), Extension::Metadata(_)));
        assert!(matches!(
            Extension::classify(PacketType::Syn, 2, &eight[..7]),
            Extension::Unknown { kind: 2, .. }
        ));
        assert!(matches!(
            Extension::classify(PacketType::Fin, 2, &eight),
            Extension::Unknown { kind: 2, .. }
        ));
        assert_eq!(
            Extension::classify(PacketType::Reset, 3, &[0, 0, 0, 7]),
            Extension::CloseReason(7)
        );
        assert!(matches!(
            Extension::classify(PacketType::Reset, 3, &[1, 0, 0, 7]),
            Extension::Unknown { kind: 3, .. }
        ));
    }
}
