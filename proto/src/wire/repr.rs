//! The parsed representation of a packet.

use core::fmt;

use super::{
    Error, Extension, ExtensionIter, Extensions, Packet, PacketType, SackIter, SeqNr, Timestamp,
    HEADER_LEN,
};

/// A parsed uTP packet, borrowing its extension data and payload.
///
/// [`Repr::parse`] then [`Repr::emit`] reproduces a checked packet byte for
/// byte: extension records keep their order and unknown records are kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// The packet type.
    pub packet_type: PacketType,
    /// The connection id (the receiver's receive id, except on SYN).
    pub connection_id: u16,
    /// The sender's clock, microseconds, wrapping.
    pub timestamp: Timestamp,
    /// The sender's latest one-way delay sample, microseconds.
    pub timestamp_diff: u32,
    /// Bytes the sender can still receive.
    pub wnd_size: u32,
    /// Sequence number.
    pub seq_nr: SeqNr,
    /// Acknowledgement number.
    pub ack_nr: SeqNr,
    /// Extension records in wire order.
    pub extensions: Extensions<'a>,
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// A header with no extensions and no payload; fill the fields you need.
    #[must_use]
    pub fn new(packet_type: PacketType, connection_id: u16, seq_nr: SeqNr, ack_nr: SeqNr) -> Self {
        Repr {
            packet_type,
            connection_id,
            timestamp: Timestamp(0),
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr,
            ack_nr,
            extensions: Extensions::new(),
            payload: &[],
        }
    }

    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Self, Error> {
        Self::parse_bytes(packet.bytes())
    }

    /// Parses a datagram directly (checks it first).
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        // One walk of the chain: check the header, then read the records.
        let packet = Packet::new_header_checked(bytes)?;
        let packet_type = packet.packet_type();
        let mut extensions = Extensions::new();
        let mut iter = ExtensionIter::new(bytes, HEADER_LEN, packet.first_extension());
        for record in &mut iter {
            let (kind, data) = record?;
            extensions.push(Extension::classify(packet_type, kind, data))?;
        }
        Ok(Repr {
            packet_type,
            connection_id: packet.connection_id(),
            timestamp: packet.timestamp(),
            timestamp_diff: packet.timestamp_diff(),
            wnd_size: packet.wnd_size(),
            seq_nr: packet.seq_nr(),
            ack_nr: packet.ack_nr(),
            extensions,
            payload: &bytes[iter.offset()..],
        })
    }

    /// Bytes the packet takes on the wire.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.extensions.wire_len() + self.payload.len()
    }

    /// Bytes the header and extensions take (everything but the payload).
    #[must_use]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.extensions.wire_len()
    }

    /// Writes the packet into `buf` and returns its length.
    ///
    /// Fails when `buf` is shorter than [`Repr::buffer_len`], when an
    /// extension record is longer than 255 bytes, or has type 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let payload_at = self.emit_header(buf, self.payload.len())?;
        let end = payload_at + self.payload.len();
        buf[payload_at..end].copy_from_slice(self.payload);
        Ok(end)
    }

    /// The packet as a new buffer of exactly [`Repr::buffer_len`] bytes
    /// (tests, tools; a sender on the hot path reuses its buffer with
    /// [`Repr::emit`]).
    ///
    /// Fails as [`Repr::emit`] does for a malformed extension record.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; self.buffer_len()];
        let n = self.emit(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes header and extension records only, checking that `payload_len`
    /// more bytes fit after them; returns the payload offset. Lets a sender
    /// place the payload itself (for example straight from its send buffer),
    /// ignoring `self.payload`.
    pub fn emit_header(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, Error> {
        let header_len = self.header_len();
        // Saturating: an absurd `payload_len` must fail, not overflow.
        let need = header_len.saturating_add(payload_len);
        if buf.len() < need {
            return Err(Error::BufferTooSmall { need, have: buf.len() });
        }
        for ext in self.extensions.iter() {
            if ext.data_len() > 255 {
                return Err(Error::ExtensionTooLong { kind: ext.kind(), len: ext.data_len() });
            }
            if ext.kind() == 0 {
                return Err(Error::ExtensionTypeZero);
            }
        }
        let mut packet = Packet::new_unchecked(&mut buf[..need]);
        packet.set_packet_type(self.packet_type);
        packet.set_first_extension(self.extensions.as_slice().first().map_or(0, Extension::kind));
        packet.set_connection_id(self.connection_id);
        packet.set_timestamp(self.timestamp);
        packet.set_timestamp_diff(self.timestamp_diff);
        packet.set_wnd_size(self.wnd_size);
        packet.set_seq_nr(self.seq_nr);
        packet.set_ack_nr(self.ack_nr);
        let exts = self.extensions.as_slice();
        let mut at = HEADER_LEN;
        for (i, ext) in exts.iter().enumerate() {
            let len = ext.data_len();
            buf[at] = exts.get(i + 1).map_or(0, Extension::kind);
            // Checked above: len <= 255.
            buf[at + 1] = len as u8;
            ext.write_data(&mut buf[at + 2..at + 2 + len]);
            at += 2 + len;
        }
        Ok(at)
    }
}

impl fmt::Display for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uTP {} conn={} seq={} ack={} wnd={} ts={} tsdiff={}",
            self.packet_type,
            self.connection_id,
            self.seq_nr,
            self.ack_nr,
            self.wnd_size,
            self.timestamp.0,
            self.timestamp_diff
        )?;
        for ext in self.extensions.iter() {
            match ext {
                Extension::SelectiveAck(bits) => {
                    f.write_str(" sack=[")?;
                    for (i, seq) in SackIter::new(self.ack_nr, bits).enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{seq}")?;
                    }
                    write!(f, "]/{}B", bits.len())?;
                }
                Extension::ExtensionBits(bits) => {
                    write!(f, " extbits=")?;
                    for b in bits {
                        write!(f, "{b:02x}")?;
                    }
                }
                Extension::Metadata(meta) => write!(f, " meta={}B", meta.len())?,
                Extension::CloseReason(reason) => write!(f, " close_reason={reason}")?,
                Extension::Unknown { kind, data } => write!(f, " ext{kind}={}B", data.len())?,
            }
        }
        write!(f, " len={}", self.payload.len())
    }
}
