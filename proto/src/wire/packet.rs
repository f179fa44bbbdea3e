//! The zero-copy packet view.

use core::fmt;

use super::{Error, ExtensionIter, PacketType, Repr, SeqNr, Timestamp, VERSION};

/// Byte ranges of the header fields.
mod field {
    use core::ops::Range;

    pub(super) const TYPE_VER: usize = 0;
    pub(super) const EXTENSION: usize = 1;
    pub(super) const CONNECTION_ID: Range<usize> = 2..4;
    pub(super) const TIMESTAMP: Range<usize> = 4..8;
    pub(super) const TIMESTAMP_DIFF: Range<usize> = 8..12;
    pub(super) const WND_SIZE: Range<usize> = 12..16;
    pub(super) const SEQ_NR: Range<usize> = 16..18;
    pub(super) const ACK_NR: Range<usize> = 18..20;
}

/// Length of the fixed uTP header.
pub const HEADER_LEN: usize = 20;

/// A view of a uTP packet over any byte buffer.
///
/// Build it with [`Packet::new_checked`], which validates the length, the
/// version, the type and the whole extension chain; after that every
/// accessor is infallible and panic-free. [`Packet::new_unchecked`] exists
/// for buffers this crate is about to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic on a buffer
    /// shorter than the header; use [`Packet::new_checked`] for input.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps and validates a buffer: at least 20 bytes, version 1, a known
    /// type, and an extension chain that ends inside the buffer with at most
    /// [`MAX_EXTENSIONS`](super::MAX_EXTENSIONS) records.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    /// Checks length, version and type but not the extension chain: the
    /// caller walks the chain itself and handles its errors (as
    /// [`Repr::parse_bytes`] does).
    pub(crate) fn new_header_checked(buffer: T) -> Result<Self, Error> {
        let packet = Packet { buffer };
        packet.check_header()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), Error> {
        self.check_header()?;
        for record in self.extensions() {
            record?;
        }
        Ok(())
    }

    fn check_header(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated { len: buf.len() });
        }
        let version = buf[field::TYPE_VER] & 0x0f;
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let kind = buf[field::TYPE_VER] >> 4;
        if PacketType::from_u8(kind).is_none() {
            return Err(Error::BadType(kind));
        }
        Ok(())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The packet type.
    #[must_use]
    pub fn packet_type(&self) -> PacketType {
        // Checked in `new_checked`; an unchecked buffer with a bad type reads as DATA.
        PacketType::from_u8(self.buffer.as_ref()[field::TYPE_VER] >> 4).unwrap_or(PacketType::Data)
    }

    /// The version nibble.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE_VER] & 0x0f
    }

    /// Type of the first extension record (0: none).
    #[must_use]
    pub fn first_extension(&self) -> u8 {
        self.buffer.as_ref()[field::EXTENSION]
    }

    /// The connection id field.
    #[must_use]
    pub fn connection_id(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::CONNECTION_ID])
    }

    /// The sender's timestamp in microseconds.
    #[must_use]
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(be32(&self.buffer.as_ref()[field::TIMESTAMP]))
    }

    /// The sender's last measured one-way delay sample, in microseconds.
    #[must_use]
    pub fn timestamp_diff(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::TIMESTAMP_DIFF])
    }

    /// Bytes the sender can still receive.
    #[must_use]
    pub fn wnd_size(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::WND_SIZE])
    }

    /// The sequence number.
    #[must_use]
    pub fn seq_nr(&self) -> SeqNr {
        SeqNr(be16(&self.buffer.as_ref()[field::SEQ_NR]))
    }

    /// The acknowledgement number.
    #[must_use]
    pub fn ack_nr(&self) -> SeqNr {
        SeqNr(be16(&self.buffer.as_ref()[field::ACK_NR]))
    }

    /// The raw extension records, in wire order.
    pub fn extensions(&self) -> ExtensionIter<'_> {
        ExtensionIter::new(self.buffer.as_ref(), HEADER_LEN, self.first_extension())
    }

    /// Offset of the payload: after the header and every extension record.
    #[must_use]
    pub fn payload_offset(&self) -> usize {
        let mut iter = self.extensions();
        for record in &mut iter {
            if record.is_err() {
                // Only reachable on an unchecked buffer.
                return self.buffer.as_ref().len();
            }
        }
        iter.offset()
    }

    /// The payload after the extension records.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        buf.get(self.payload_offset()..).unwrap_or(&[])
    }

    /// The whole packet's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The whole packet's bytes, with the lifetime of the underlying buffer.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets type and version (always [`VERSION`]).
    pub fn set_packet_type(&mut self, kind: PacketType) {
        self.buffer.as_mut()[field::TYPE_VER] = ((kind as u8) << 4) | VERSION;
    }

    /// Sets the type of the first extension record.
    pub fn set_first_extension(&mut self, kind: u8) {
        self.buffer.as_mut()[field::EXTENSION] = kind;
    }

    /// Sets the connection id.
    pub fn set_connection_id(&mut self, id: u16) {
        self.buffer.as_mut()[field::CONNECTION_ID].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, ts: Timestamp) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&ts.0.to_be_bytes());
    }

    /// Sets the timestamp difference.
    pub fn set_timestamp_diff(&mut self, diff: u32) {
        self.buffer.as_mut()[field::TIMESTAMP_DIFF].copy_from_slice(&diff.to_be_bytes());
    }

    /// Sets the advertised receive window.
    pub fn set_wnd_size(&mut self, wnd: u32) {
        self.buffer.as_mut()[field::WND_SIZE].copy_from_slice(&wnd.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_seq_nr(&mut self, seq: SeqNr) {
        self.buffer.as_mut()[field::SEQ_NR].copy_from_slice(&seq.0.to_be_bytes());
    }

    /// Sets the acknowledgement number.
    pub fn set_ack_nr(&mut self, ack: SeqNr) {
        self.buffer.as_mut()[field::ACK_NR].copy_from_slice(&ack.0.to_be_bytes());
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse_bytes(self.as_bytes()) {
            Ok(repr) => repr.fmt(f),
            Err(e) => write!(f, "uTP ({e})"),
        }
    }
}
