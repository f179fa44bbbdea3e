//! In-order received bytes: a ring for the packets that arrive in order,
//! and, between its runs, the buffers of packets that waited out of order.
//!
//! A packet's payload is copied once on the way in and once on the way
//! out. In order, it is appended to the ring. Out of order, it is copied
//! into a buffer of its own (from a small pool), and when the gap before it
//! closes that buffer joins the queue as it is, between two runs of the
//! ring: it is not copied again. Reads walk the queue in order.
//!
//! Why not one buffer addressed by stream offset, as a TCP reassembler
//! (smoltcp's assembler) does: uTP numbers packets, not bytes, so where an
//! out-of-order packet's bytes go is unknown until the packets before it
//! arrive. And why not a queue of small buffers for everything: a
//! connection's buffers would then be allocated 2 KiB at a time, a
//! `malloc` and a `free` per packet's worth of data for every new
//! connection (measured: 18-20 % more receiver CPU with 200 or 10,000
//! connections in the cross-process bench); the ring grows by doubling and
//! then goes round the same memory.
//!
//! Memory: the ring holds the bytes it counts (its capacity at most twice
//! that, as any `VecDeque`); a held buffer joins as it is only when at
//! least half full ([`ADOPT_MIN`]), smaller payloads are copied into the
//! ring, so joined buffers hold at most twice their bytes too. The pool
//! keeps [`SPARE_BUFFERS`] emptied buffers of [`CHUNK`] bytes.

use std::collections::VecDeque;

/// Room of one held packet's buffer: a payload at the usual path MTU.
pub(crate) const CHUNK: usize = 2048;

/// Emptied held-packet buffers kept for the next ones, at most: 32 KiB
/// (the allowance for reusable payload buffers in the memory bound).
const SPARE_BUFFERS: usize = 16;

/// A held packet's buffer joins the queue as it is from this many bytes
/// on; smaller payloads are copied into the ring.
const ADOPT_MIN: usize = CHUNK / 2;

#[derive(Debug)]
enum Segment {
    /// The next this many bytes of the ring.
    Ring(usize),
    /// A held packet's payload; bytes before `read` were read.
    Held { buf: Vec<u8>, read: usize },
}

/// In-order bytes waiting for the application.
#[derive(Debug, Default)]
pub(crate) struct InOrderBytes {
    ring: VecDeque<u8>,
    segments: VecDeque<Segment>,
    len: usize,
    spare: Vec<Vec<u8>>,
}

impl InOrderBytes {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// An empty buffer for a payload of `len` bytes held out of order: from
    /// the pool for a payload that will join the queue as it is (see
    /// [`InOrderBytes::append`]), of its own size otherwise, so that tiny
    /// payloads (a peer's 1-byte or empty packets) cannot each pin a whole
    /// buffer.
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        if (ADOPT_MIN..=CHUNK).contains(&len) {
            return self.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
        }
        Vec::with_capacity(len)
    }

    /// Keeps an emptied buffer for later, if it is a pool-sized one and the
    /// pool has room.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == CHUNK && self.spare.len() < SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.ring.extend(bytes);
        self.len += bytes.len();
        match self.segments.back_mut() {
            Some(Segment::Ring(n)) => *n += bytes.len(),
            _ => self.segments.push_back(Segment::Ring(bytes.len())),
        }
    }

    /// Appends the bytes of `buf` (a held packet's payload), taking the
    /// buffer itself when it is at least half full, copying it otherwise.
    pub(crate) fn append(&mut self, buf: Vec<u8>) {
        if buf.len() < ADOPT_MIN || buf.len() * 2 < buf.capacity() {
            self.extend(&buf);
            self.recycle(buf);
        } else {
            self.len += buf.len();
            self.segments.push_back(Segment::Held { buf, read: 0 });
        }
    }

    /// Copies bytes into `out` and consumes them; returns how many.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let want = out.len() - n;
            match self.segments.front_mut() {
                None => break,
                Some(Segment::Ring(left)) => {
                    let k = want.min(*left);
                    let (a, b) = self.ring.as_slices();
                    let from_a = k.min(a.len());
                    out[n..n + from_a].copy_from_slice(&a[..from_a]);
                    out[n + from_a..n + k].copy_from_slice(&b[..k - from_a]);
                    self.ring.drain(..k);
                    *left -= k;
                    n += k;
                    if *left == 0 {
                        self.segments.pop_front();
                    }
                }
                Some(Segment::Held { buf, read }) => {
                    let k = want.min(buf.len() - *read);
                    out[n..n + k].copy_from_slice(&buf[*read..*read + k]);
                    *read += k;
                    n += k;
                    if *read == buf.len() {
                        if let Some(Segment::Held { buf, .. }) = self.segments.pop_front() {
                            self.recycle(buf);
                        }
                    }
                }
            }
        }
        self.len -= n;
        n
    }

    /// Drops every byte and frees all memory, the pool's too.
    pub(crate) fn free(&mut self) {
        *self = InOrderBytes::default();
    }

    /// Whether a held buffer starting at `ptr` is queued (for tests of the
    /// copies).
    #[cfg(test)]
    pub(crate) fn holds(&self, ptr: *const u8) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Held { buf, .. } if buf.as_ptr() == ptr))
    }

    /// Bytes of memory held: the ring's capacity and the joined buffers'
    /// (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> usize {
        let held: usize = self
            .segments
            .iter()
            .map(|s| if let Segment::Held { buf, .. } = s { buf.capacity() } else { 0 })
            .sum();
        self.ring.capacity() + held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut InOrderBytes) -> Vec<u8> {
        let mut out = vec![0u8; c.len() + 7];
        let n = c.read(&mut out);
        out.truncate(n);
        out
    }

    fn held(c: &mut InOrderBytes, bytes: &[u8]) -> Vec<u8> {
        let mut buf = c.buffer(bytes.len());
        buf.extend_from_slice(bytes);
        buf
    }

    #[test]
    fn bytes_come_out_in_order_across_segments() {
        let mut c = InOrderBytes::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        c.extend(&data[..1400]);
        c.extend(&data[1400..5000]);
        let h = held(&mut c, &data[5000..6500]);
        c.append(h);
        c.extend(&data[6500..]);
        assert_eq!(c.len(), 10_000);
        let mut first = [0u8; 3];
        assert_eq!(c.read(&mut first), 3);
        assert_eq!(first, [0, 1, 2]);
        // Reads that end inside a segment and resume there.
        let mut part = vec![0u8; 4999];
        assert_eq!(c.read(&mut part), 4999);
        assert_eq!(part, data[3..5002]);
        assert_eq!(drain(&mut c), data[5002..]);
        assert_eq!(c.len(), 0);
        assert_eq!(c.read(&mut first), 0);
    }

    /// A held packet's buffer joins as it is: no copy, the same memory.
    #[test]
    fn a_held_buffer_joins_without_a_copy() {
        let mut c = InOrderBytes::default();
        c.extend(&[1; 100]);
        let h = held(&mut c, &[2; 1400]);
        let ptr = h.as_ptr();
        c.append(h);
        assert!(c.holds(ptr));
        assert_eq!(c.len(), 1500);
    }

    /// Small held payloads are copied into the ring instead, so tiny
    /// packets cannot each pin a buffer.
    #[test]
    fn tiny_payloads_go_to_the_ring() {
        let mut c = InOrderBytes::default();
        for i in 0..10_000u32 {
            if i % 2 == 0 {
                c.extend(&[i as u8]);
            } else {
                let h = held(&mut c, &[i as u8]);
                c.append(h);
            }
        }
        assert_eq!(c.segments.len(), 1, "one run of the ring");
        let out = drain(&mut c);
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    /// The worst mix of joined buffers and 1-byte packets in order keeps
    /// memory within about twice the bytes queued.
    #[test]
    fn memory_stays_within_twice_the_bytes() {
        let mut c = InOrderBytes::default();
        for _ in 0..1000 {
            let h = held(&mut c, &[0; ADOPT_MIN]);
            c.append(h);
            c.extend(&[0; 1]);
        }
        assert!(c.memory() <= 2 * c.len() + 4096, "{} bytes for {}", c.memory(), c.len());
    }

    /// A steady stream goes round the ring's memory and the pool's buffers:
    /// after the first round nothing new is allocated.
    #[test]
    fn a_steady_stream_reuses_memory() {
        let mut c = InOrderBytes::default();
        let mut out = vec![0u8; 64 * 1024];
        c.extend(&[0; 64 * 1024]);
        for _ in 0..4 {
            let h = held(&mut c, &[1; 1400]);
            c.append(h);
        }
        drain(&mut c);
        let ring = c.ring.capacity();
        let pooled: Vec<*const u8> = c.spare.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(pooled.len(), 4);
        c.extend(&[0; 64 * 1024]);
        let h = held(&mut c, &[1; 1400]);
        assert!(pooled.contains(&h.as_ptr()));
        c.append(h);
        assert_eq!(c.ring.capacity(), ring);
        assert_eq!(c.read(&mut out), 64 * 1024);
    }

    #[test]
    fn payloads_larger_than_a_buffer() {
        let mut c = InOrderBytes::default();
        let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        c.extend(&big);
        let h = held(&mut c, &big);
        c.append(h);
        let out = drain(&mut c);
        assert_eq!(out.len(), 120_000);
        assert_eq!(out[..60_000], big[..]);
        assert_eq!(out[60_000..], big[..]);
        assert!(c.spare.len() <= SPARE_BUFFERS);
        assert!(c.segments.is_empty());
    }

    #[test]
    fn free_drops_everything() {
        let mut c = InOrderBytes::default();
        c.extend(&[0; 5000]);
        let h = held(&mut c, &[1; 1400]);
        c.append(h);
        c.free();
        assert_eq!((c.len(), c.ring.capacity(), c.spare.len()), (0, 0, 0));
        assert_eq!(drain(&mut c), b"");
        c.extend(b"again");
        assert_eq!(drain(&mut c), b"again");
    }
}
