//! Received data: in-order bytes for the application, out-of-order packets
//! waiting for the gap before them, and the selective ACK that describes
//! them. Everything is bounded by the receive buffer size.

use std::collections::VecDeque;

use super::in_order::InOrderBytes;
use super::send_buffer::message_end_cost;
use crate::wire::SeqNr;

/// Most out-of-order packets tracked past the next expected one. Also caps
/// the selective ACK at 32 bytes... of which at most 1024 bits are used.
pub(crate) const MAX_REORDER: usize = 1024;

/// How far one packet may push the buffer past its capacity.
const MAX_PACKET_SLACK: usize = 1500;

/// Bytes of selective ACK bitmask at most (multiple of 4): 256 packets.
pub(crate) const MAX_SACK_BYTES: usize = 32;

#[derive(Debug)]
struct Held {
    payload: Vec<u8>,
    meta: Option<Box<[u8]>>,
    fin: bool,
}

impl Held {
    /// Room it takes in the buffer: payload and message end.
    fn cost(&self) -> usize {
        self.payload.len() + self.meta.as_ref().map_or(0, |m| message_end_cost(m.len()))
    }
}

/// What became of an arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// It filled the next gap; data (and maybe held packets) was delivered.
    InOrder,
    /// Held until the gap before it is filled.
    OutOfOrder,
    /// Already received (or before the current ack): ACK again.
    Duplicate,
    /// Beyond what we track, or no buffer room: dropped.
    Dropped,
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// The last sequence number received in order.
    ack_nr: SeqNr,
    /// `held[i]` is for sequence `ack_nr + 1 + i`; `held[0]` is always None.
    held: VecDeque<Option<Held>>,
    held_bytes: usize,
    /// In-order bytes. A held packet's payload waits in a buffer taken from
    /// here and joins it as that buffer: one copy in, one copy out, and no
    /// allocation per packet once the pool is warm.
    data: InOrderBytes,
    capacity: usize,
    /// Stream offset of the next byte the application reads.
    read_offset: u64,
    /// Message ends received in order: (stream offset of the end, metadata).
    boundaries: VecDeque<(u64, Box<[u8]>)>,
    /// [`message_end_cost`] of `boundaries`: message ends take room in the
    /// window like bytes, so that empty messages cannot grow it unbounded.
    boundary_bytes: usize,
    /// Sequence number of the peer's FIN, once seen.
    fin: Option<SeqNr>,
    /// The FIN was reached in order: no more data will come.
    eof: bool,
}

impl RecvBuffer {
    pub(crate) fn new(ack_nr: SeqNr, capacity: usize) -> Self {
        RecvBuffer {
            ack_nr,
            held: VecDeque::new(),
            held_bytes: 0,
            data: InOrderBytes::default(),
            capacity,
            read_offset: 0,
            boundaries: VecDeque::new(),
            boundary_bytes: 0,
            fin: None,
            eof: false,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn ack_nr(&self) -> SeqNr {
        self.ack_nr
    }

    pub(crate) fn set_ack_nr(&mut self, ack_nr: SeqNr) {
        self.ack_nr = ack_nr;
    }

    /// Bytes the peer may still send: the advertised window.
    pub(crate) fn window(&self) -> usize {
        self.capacity.saturating_sub(self.used())
    }

    /// Room taken: in-order bytes, held packets, unconsumed message ends.
    fn used(&self) -> usize {
        self.data.len() + self.held_bytes + self.boundary_bytes
    }

    pub(crate) fn readable(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn is_eof(&self) -> bool {
        self.eof
    }

    pub(crate) fn has_gaps(&self) -> bool {
        !self.held.is_empty()
    }

    /// Takes one arriving DATA (or FIN, `fin = true`, empty payload) packet.
    pub(crate) fn insert(
        &mut self,
        seq: SeqNr,
        payload: &[u8],
        meta: Option<&[u8]>,
        fin: bool,
    ) -> Arrival {
        if self.eof || !seq.is_after(self.ack_nr) {
            return Arrival::Duplicate;
        }
        if let Some(f) = self.fin {
            if !fin && !seq.is_before(f) {
                // Nothing exists past the FIN.
                return Arrival::Dropped;
            }
        }
        let index = usize::from(self.ack_nr.distance_to(seq)) - 1;
        if index >= MAX_REORDER {
            return Arrival::Dropped;
        }
        // Bound memory: the buffer may exceed its capacity by one packet at
        // most (a zero-window probe, or a sender rounding up to a packet).
        // A packet larger than the slack (path MTU discovery and large
        // packets go up to 64 KiB) fits while the window is open: dropped
        // every time, it could never get through.
        // The next in-order packet always gets room if out-of-order data
        // holds it: the furthest held packets are dropped for it (they will
        // be sent again), or the gap could never close.
        let cost = payload.len() + meta.map_or(0, |m| message_end_cost(m.len()));
        if index == 0 {
            while !self.fits(cost) {
                match self.held.pop_back() {
                    Some(Some(h)) => {
                        self.held_bytes -= h.cost();
                        self.data.recycle(h.payload);
                    }
                    Some(None) => {}
                    None => break,
                }
            }
        }
        if !self.fits(cost) {
            return Arrival::Dropped;
        }
        if fin {
            self.fin = Some(seq);
        }
        if index == 0 {
            self.deliver(payload, meta, fin);
            self.ack_nr = seq;
            if !self.held.is_empty() {
                self.held.pop_front();
            }
            while let Some(Some(_)) = self.held.front() {
                let Some(Some(h)) = self.held.pop_front() else { break };
                self.held_bytes -= h.cost();
                self.ack_nr = self.ack_nr.next();
                self.deliver_held(h);
            }
            Arrival::InOrder
        } else {
            if self.held.len() <= index {
                self.held.resize_with(index + 1, || None);
            }
            if self.held[index].is_some() {
                return Arrival::Duplicate;
            }
            self.held_bytes += cost;
            let mut buf = self.data.buffer(payload.len());
            buf.extend_from_slice(payload);
            self.held[index] = Some(Held { payload: buf, meta: meta.map(Box::from), fin });
            Arrival::OutOfOrder
        }
    }

    /// Room for a packet that takes `cost`: up to the slack past the
    /// capacity, or any packet while the window is open.
    fn fits(&self, cost: usize) -> bool {
        self.used() + cost <= self.capacity + MAX_PACKET_SLACK || self.used() < self.capacity
    }

    /// Delivers SYN data: the first bytes of the stream, before any packet.
    pub(crate) fn deliver_syn_data(&mut self, payload: &[u8]) {
        self.data.extend(payload);
    }

    fn deliver(&mut self, payload: &[u8], meta: Option<&[u8]>, fin: bool) {
        self.data.extend(payload);
        self.delivered(meta.map(Box::from), fin);
    }

    /// Delivers a held packet: its buffer joins the in-order bytes.
    fn deliver_held(&mut self, h: Held) {
        self.data.append(h.payload);
        self.delivered(h.meta, h.fin);
    }

    /// Records what ends at the current end of the in-order bytes.
    fn delivered(&mut self, meta: Option<Box<[u8]>>, fin: bool) {
        if let Some(meta) = meta {
            let end = self.read_offset + self.data.len() as u64;
            self.boundary_bytes += message_end_cost(meta.len());
            self.boundaries.push_back((end, meta));
        }
        if fin {
            self.eof = true;
            for h in std::mem::take(&mut self.held).into_iter().flatten() {
                self.data.recycle(h.payload);
            }
            self.held_bytes = 0;
        }
    }

    /// Drops everything received and not yet read, and frees the memory
    /// (local abort).
    pub(crate) fn discard(&mut self) {
        self.drop_readable();
        self.held = VecDeque::new();
        self.held_bytes = 0;
    }

    /// Drops the in-order bytes and message ends nobody will read (the
    /// application let go of the connection) and frees their memory.
    /// Sequence tracking goes on: what arrives is still acknowledged.
    pub(crate) fn drop_readable(&mut self) {
        self.read_offset += self.data.len() as u64;
        // Freed, not kept: a released connection lingers (TIME-WAIT, or
        // until its peer finishes), and memory kept by thousands of them
        // was memory every new connection faulted in afresh (10,000 x
        // 64 KiB bench: +20 % receiver CPU when kept).
        self.data.free();
        self.boundaries = VecDeque::new();
        self.boundary_bytes = 0;
    }

    /// Copies in-order bytes into `buf`; returns how many.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.data.read(buf);
        self.read_offset += n as u64;
        // A plain read past message ends discards them (an end exactly at
        // the new read position stays: it ends the bytes just read).
        while self.boundaries.front().is_some_and(|(end, _)| *end < self.read_offset) {
            self.pop_boundary();
        }
        n
    }

    fn pop_boundary(&mut self) -> Option<Box<[u8]>> {
        let (_, meta) = self.boundaries.pop_front()?;
        self.boundary_bytes -= message_end_cost(meta.len());
        Some(meta)
    }

    /// Bytes readable before the next message end, and whether a message
    /// end (with its metadata) lies within the readable bytes.
    pub(crate) fn next_message_end(&self) -> Option<(usize, &[u8])> {
        self.boundaries.front().map(|(end, meta)| ((end - self.read_offset) as usize, &meta[..]))
    }

    /// Consumes the message end at the read position.
    pub(crate) fn pop_message_end(&mut self) -> Option<Box<[u8]>> {
        match self.boundaries.front() {
            Some((end, _)) if *end == self.read_offset => self.pop_boundary(),
            _ => None,
        }
    }

    /// Writes the selective ACK bitmask into `out` (at most
    /// [`MAX_SACK_BYTES`]); returns its length, a multiple of 4, or 0 when
    /// nothing is held out of order.
    pub(crate) fn sack(&self, out: &mut [u8; MAX_SACK_BYTES]) -> usize {
        // Bit i stands for ack_nr + 2 + i, i.e. held[i + 1].
        let last = match self.held.iter().rposition(Option::is_some) {
            Some(last) if last >= 1 => last,
            _ => return 0,
        };
        let bits = (last).min(MAX_SACK_BYTES * 8);
        let len = bits.div_ceil(32) * 4;
        out[..len].fill(0);
        for i in 0..bits.min(len * 8) {
            if self.held.get(i + 1).is_some_and(Option::is_some) {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorders_and_acks() {
        let mut rb = RecvBuffer::new(SeqNr(100), 1000);
        assert_eq!(rb.insert(SeqNr(103), b"d", None, false), Arrival::OutOfOrder);
        assert_eq!(rb.insert(SeqNr(102), b"c", None, false), Arrival::OutOfOrder);
        let mut sack = [0u8; MAX_SACK_BYTES];
        assert_eq!(rb.sack(&mut sack), 4);
        // bit 0 = 102, bit 1 = 103
        assert_eq!(sack[0], 0b11);
        assert_eq!(rb.insert(SeqNr(102), b"c", None, false), Arrival::Duplicate);
        assert_eq!(rb.insert(SeqNr(101), b"ab", None, false), Arrival::InOrder);
        assert_eq!(rb.ack_nr(), SeqNr(103));
        assert_eq!(rb.sack(&mut sack), 0);
        let mut out = [0u8; 8];
        assert_eq!(rb.read(&mut out), 4);
        assert_eq!(&out[..4], b"abcd");
        assert_eq!(rb.insert(SeqNr(103), b"x", None, false), Arrival::Duplicate);
    }

    /// One copy in: an out-of-order packet's payload is copied into a
    /// buffer once, and that buffer joins the in-order bytes when the gap
    /// closes. After the first loss episode, the next one's packets take
    /// the buffers read empty (no allocation each).
    #[test]
    fn held_payloads_join_without_a_second_copy() {
        let mut rb = RecvBuffer::new(SeqNr(0), 1 << 20);
        let packet = [7u8; 1400];
        for seq in 2..6 {
            rb.insert(SeqNr(seq), &packet, None, false);
        }
        let held: Vec<*const u8> = rb.held.iter().flatten().map(|h| h.payload.as_ptr()).collect();
        assert_eq!(held.len(), 4);
        rb.insert(SeqNr(1), &packet, None, false);
        assert!(held.iter().all(|&p| rb.data.holds(p)), "held buffers delivered as they are");
        let mut out = vec![0u8; 8 * 1400];
        assert_eq!(rb.read(&mut out), 5 * 1400);
        for seq in 7..11 {
            rb.insert(SeqNr(seq), &packet, None, false);
        }
        let again: Vec<*const u8> = rb.held.iter().flatten().map(|h| h.payload.as_ptr()).collect();
        assert!(again.iter().all(|p| held.contains(p)), "the second episode reused them");
        rb.insert(SeqNr(6), &packet, None, false);
        assert_eq!(rb.read(&mut out), 5 * 1400, "the second episode delivered in order");
        assert!(out[..5 * 1400].iter().all(|&b| b == 7));
    }

    /// Tiny packets held out of order take buffers of their own size, not
    /// pooled 2 KiB ones: a peer's 1023 one-byte packets behind a gap
    /// cannot pin 2 MiB (they count for 1023 bytes of window).
    #[test]
    fn tiny_held_packets_take_little_memory() {
        let mut rb = RecvBuffer::new(SeqNr(0), 1 << 20);
        for seq in 2..=MAX_REORDER as u16 {
            assert_eq!(rb.insert(SeqNr(seq), b"x", None, false), Arrival::OutOfOrder);
        }
        let held: usize = rb.held.iter().flatten().map(|h| h.payload.capacity()).sum();
        assert!(held <= 16 * MAX_REORDER, "{held} bytes of buffers for 1023 bytes");
        assert_eq!(rb.insert(SeqNr(1), b"x", None, false), Arrival::InOrder);
        assert_eq!(rb.readable(), MAX_REORDER);
    }

    #[test]
    fn fin_with_gap_below() {
        let mut rb = RecvBuffer::new(SeqNr(0xfffe), 1000);
        assert_eq!(rb.insert(SeqNr(1), b"", None, true), Arrival::OutOfOrder);
        assert!(!rb.is_eof());
        assert_eq!(rb.insert(SeqNr(2), b"late", None, false), Arrival::Dropped);
        assert_eq!(rb.insert(SeqNr(0xffff), b"a", None, false), Arrival::InOrder);
        assert!(!rb.is_eof());
        assert_eq!(rb.insert(SeqNr(0), b"b", None, false), Arrival::InOrder);
        assert!(rb.is_eof());
        assert_eq!(rb.ack_nr(), SeqNr(1));
        assert_eq!(rb.readable(), 2);
    }

    #[test]
    fn message_ends_take_room_and_reads_past_them_discard_them() {
        let mut rb = RecvBuffer::new(SeqNr(0), 1000);
        assert_eq!(rb.insert(SeqNr(1), b"ab", Some(b"m1"), false), Arrival::InOrder);
        assert_eq!(rb.insert(SeqNr(2), b"", Some(b""), false), Arrival::InOrder);
        assert_eq!(rb.insert(SeqNr(3), b"cd", None, false), Arrival::InOrder);
        assert_eq!(rb.window(), 1000 - 4 - message_end_cost(2) - message_end_cost(0));
        assert_eq!(rb.next_message_end(), Some((2, &b"m1"[..])));
        // A plain read of 3 bytes passes both ends (at offset 2).
        let mut out = [0u8; 3];
        assert_eq!(rb.read(&mut out), 3);
        assert_eq!(rb.next_message_end(), None);
        assert_eq!(rb.window(), 1000 - 1);
        // An end exactly at the read position stays until taken.
        assert_eq!(rb.insert(SeqNr(4), b"", Some(b"z"), false), Arrival::InOrder);
        assert_eq!(rb.read(&mut out[..1]), 1);
        assert_eq!(rb.next_message_end(), Some((0, &b"z"[..])));
        assert_eq!(rb.pop_message_end().as_deref(), Some(&b"z"[..]));
        assert_eq!(rb.window(), 1000);
    }

    #[test]
    fn empty_messages_fill_the_window() {
        let cap = 10 * message_end_cost(0);
        let mut rb = RecvBuffer::new(SeqNr(0), cap);
        let mut seq = SeqNr(0);
        let mut taken = 0;
        loop {
            seq = seq.next();
            match rb.insert(seq, b"", Some(b""), false) {
                Arrival::InOrder => taken += 1,
                Arrival::Dropped => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rb.window(), 0);
        assert!(taken <= 10 + MAX_PACKET_SLACK / message_end_cost(0));
    }

    #[test]
    fn bounded() {
        let mut rb = RecvBuffer::new(SeqNr(0), 10);
        assert_eq!(rb.insert(SeqNr(1), &[0; 10], None, false), Arrival::InOrder);
        assert_eq!(rb.window(), 0);
        assert_eq!(rb.insert(SeqNr(2), &[0; 4000], None, false), Arrival::Dropped);
        assert_eq!(rb.insert(SeqNr(MAX_REORDER as u16 + 5), b"x", None, false), Arrival::Dropped);
    }
}
