//! Bytes the application wrote that are not yet acknowledged.
//!
//! The buffer keeps every unacknowledged byte once, addressed by stream
//! offset: packets in flight are only `(offset, len)` ranges into it, so a
//! retransmission copies straight from here and nothing is allocated per
//! packet. Message boundaries (for metadata framing) are kept beside the
//! bytes so that a packet never mixes two messages.

use std::collections::VecDeque;

/// Bytes of buffer (and of receive window) a message end counts for besides
/// its metadata: about what a queued boundary costs in memory. Counting it
/// keeps empty messages from growing the buffers without bound: they too
/// take room, and the peer's window limits how many are in flight.
pub(crate) const MESSAGE_END_OVERHEAD: usize = 32;

/// What a message end with `meta_len` bytes of metadata counts for against
/// the send buffer, the receive buffer and the peer's window.
pub(crate) fn message_end_cost(meta_len: usize) -> usize {
    MESSAGE_END_OVERHEAD + meta_len
}

/// The send buffer's limit never goes below this (or the capacity).
pub(crate) const MIN_SEND_LIMIT: usize = 64 * 1024;

/// The end of a message: the stream offset where it ends and its metadata.
#[derive(Debug)]
struct Boundary {
    end: u64,
    meta: Box<[u8]>,
}

/// What the next packet should carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) offset: u64,
    pub(crate) len: usize,
    /// The packet ends a message and carries its metadata record.
    pub(crate) ends_message: bool,
    /// What the message end counts for in the peer's window
    /// ([`message_end_cost`]); 0 when the packet ends no message.
    pub(crate) end_cost: usize,
}

#[derive(Debug)]
pub(crate) struct SendBuffer {
    data: VecDeque<u8>,
    /// Stream offset of `data[0]`: the oldest unacknowledged byte.
    base: u64,
    /// Stream offset of the first byte not yet put in a packet.
    unsent: u64,
    capacity: usize,
    /// What the buffer may hold now (see [`SendBuffer::set_limit`]).
    limit: usize,
    boundaries: VecDeque<Boundary>,
    /// [`message_end_cost`] of the queued boundaries: they take room too.
    boundary_bytes: usize,
}

impl SendBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        SendBuffer {
            data: VecDeque::new(),
            base: 0,
            unsent: 0,
            capacity,
            limit: capacity.min(MIN_SEND_LIMIT),
            boundaries: VecDeque::new(),
            boundary_bytes: 0,
        }
    }

    /// Appends as much of `bytes` as fits; returns how much.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.free());
        self.data.extend(&bytes[..n]);
        n
    }

    /// Marks the end of a message at the current end of the stream; returns
    /// `false` (and queues nothing) when the buffer has no room for it. An
    /// empty buffer always takes it.
    pub(crate) fn end_message(&mut self, meta: &[u8]) -> bool {
        let cost = message_end_cost(meta.len());
        if cost > self.free() && !(self.data.is_empty() && self.boundaries.is_empty()) {
            return false;
        }
        self.boundaries.push_back(Boundary { end: self.end(), meta: meta.into() });
        self.boundary_bytes += cost;
        true
    }

    /// Room left: the limit minus the unacknowledged bytes and the
    /// message ends not yet sent.
    pub(crate) fn free(&self) -> usize {
        self.limit.saturating_sub(self.data.len() + self.boundary_bytes)
    }

    /// Sets what the buffer may hold, within [`MIN_SEND_LIMIT`] and the
    /// capacity: the connection keeps it at four congestion windows (TCP
    /// sizes its send buffer at about two; with two, bytes beyond a lost
    /// packet filled the buffer and cost goodput under loss in the
    /// simulator). A writer faster than the network then
    /// waits with a few windows buffered rather than the whole capacity, and
    /// the buffer's ring goes round the same memory (a connection that
    /// buffered its capacity at once touched that much fresh memory: page
    /// faults were a large part of a short connection's cost).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.clamp(MIN_SEND_LIMIT.min(self.capacity), self.capacity);
    }

    /// Nothing to send or to be acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty() && self.boundaries.is_empty()
    }

    /// Stream offset one past the last byte written.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.data.len() as u64
    }

    pub(crate) fn unsent(&self) -> u64 {
        self.unsent
    }

    /// Bytes (and pending message ends) not yet put in a packet.
    pub(crate) fn unsent_len(&self) -> usize {
        (self.end() - self.unsent) as usize
    }

    /// `true` when a packet could be formed now (bytes or an empty message).
    pub(crate) fn has_unsent(&self) -> bool {
        self.unsent_len() > 0 || !self.boundaries.is_empty()
    }

    /// The next packet to form, at most `max_payload` bytes, never crossing a
    /// message end. A packet that ends a message loses `2 + meta.len()`
    /// bytes of room to the metadata record.
    pub(crate) fn peek_segment(&self, max_payload: usize) -> Option<Segment> {
        let offset = self.unsent;
        match self.boundaries.front() {
            Some(b) => {
                let to_end = (b.end - offset) as usize;
                let room_last = max_payload.saturating_sub(2 + b.meta.len());
                if to_end <= room_last {
                    let end_cost = message_end_cost(b.meta.len());
                    Some(Segment { offset, len: to_end, ends_message: true, end_cost })
                } else {
                    let len = to_end.min(max_payload);
                    Some(Segment { offset, len, ends_message: false, end_cost: 0 })
                }
            }
            None => {
                let len = self.unsent_len().min(max_payload);
                (len > 0).then_some(Segment { offset, len, ends_message: false, end_cost: 0 })
            }
        }
    }

    /// Commits a segment returned by `peek_segment`; returns the metadata
    /// of the message it ends, if it ends one.
    pub(crate) fn take_segment(&mut self, seg: Segment) -> Option<Box<[u8]>> {
        self.unsent = seg.offset + seg.len as u64;
        if seg.ends_message {
            let b = self.boundaries.pop_front()?;
            self.boundary_bytes -= message_end_cost(b.meta.len());
            Some(b.meta)
        } else {
            None
        }
    }

    /// Forgets that `from..` was sent (SYN data the peer did not take).
    pub(crate) fn rewind(&mut self, from: u64) {
        self.unsent = self.unsent.min(from.max(self.base));
    }

    /// Copies `out.len()` bytes starting at stream offset `offset`.
    pub(crate) fn copy_out(&self, offset: u64, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let start = (offset - self.base) as usize;
        let (a, b) = self.data.as_slices();
        let mut written = 0;
        if start < a.len() {
            let n = (a.len() - start).min(out.len());
            out[..n].copy_from_slice(&a[start..start + n]);
            written = n;
        }
        if written < out.len() {
            let from = start + written - a.len();
            let n = out.len() - written;
            out[written..].copy_from_slice(&b[from..from + n]);
        }
    }

    /// Drops every byte before `offset` (acknowledged).
    pub(crate) fn ack_to(&mut self, offset: u64) {
        if offset > self.base {
            let n = ((offset - self.base) as usize).min(self.data.len());
            self.data.drain(..n);
            self.base += n as u64;
            self.unsent = self.unsent.max(self.base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_respect_capacity_and_messages() {
        let mut buf = SendBuffer::new(10);
        assert_eq!(buf.write(b"hello world"), 10);
        assert_eq!(buf.free(), 0);
        let seg = buf.peek_segment(4).unwrap();
        assert_eq!(seg, Segment { offset: 0, len: 4, ends_message: false, end_cost: 0 });
        assert!(buf.take_segment(seg).is_none());
        let mut out = [0u8; 4];
        buf.copy_out(0, &mut out);
        assert_eq!(&out, b"hell");
        buf.ack_to(4);
        assert_eq!(buf.free(), 4);
        // A message end takes room too (2 + 32 here): none left while data waits.
        assert!(!buf.end_message(b"m"));
        buf.capacity = 100;
        buf.limit = 100;
        assert!(buf.end_message(b"m"));
        assert_eq!(buf.free(), 100 - 6 - message_end_cost(1));
        // 6 bytes to the end of the message; room for 7 - 3 = 4 with the record.
        let seg = buf.peek_segment(7).unwrap();
        assert_eq!(seg.len, 6);
        assert!(!seg.ends_message);
        buf.take_segment(seg);
        // The message end now goes out as an empty packet with the record.
        let seg = buf.peek_segment(7).unwrap();
        let end_cost = message_end_cost(1);
        assert_eq!(seg, Segment { offset: 10, len: 0, ends_message: true, end_cost });
        assert_eq!(buf.take_segment(seg).as_deref(), Some(&b"m"[..]));
        assert!(!buf.has_unsent());
        assert_eq!(buf.free(), 100 - 6, "a message end frees its room once sent");
    }

    #[test]
    fn empty_buffer_always_takes_a_message_end() {
        let mut buf = SendBuffer::new(8);
        assert!(buf.end_message(&[7; 200]));
        assert_eq!(buf.free(), 0);
        assert!(!buf.end_message(b""));
        assert_eq!(buf.write(b"x"), 0);
    }

    #[test]
    fn copy_out_across_ring_wrap() {
        let mut buf = SendBuffer::new(8);
        buf.write(b"abcdefgh");
        buf.ack_to(6);
        buf.write(b"ijklmn");
        let mut out = [0u8; 8];
        buf.copy_out(6, &mut out);
        assert_eq!(&out, b"ghijklmn");
    }

    #[test]
    fn rewind_resends_syn_data() {
        let mut buf = SendBuffer::new(100);
        buf.write(b"early");
        let seg = buf.peek_segment(100).unwrap();
        buf.take_segment(seg);
        assert!(!buf.has_unsent());
        buf.rewind(0);
        assert_eq!(buf.peek_segment(100).unwrap().len, 5);
    }
}
