//! In-order received bytes, kept as a queue of small pooled buffers.
//!
//! A packet's payload is copied once on the way in (into the tail buffer,
//! or into a buffer of its own while it waits out of order) and once on
//! the way out (into the reader's buffer): a packet that arrived out of
//! order joins the queue as the buffer it was held in, it is not copied
//! again. Emptied buffers go back to a small pool, so a steady stream
//! allocates nothing per packet.
//!
//! Memory: every buffer holds [`CHUNK`] bytes of room (larger ones exist
//! only for packets larger than that); buffers join the queue as they are
//! only when at least half full, and a new buffer is started only when the
//! tail one cannot take the bytes, so the queue holds at most about twice
//! the bytes it counts. Emptied buffers are kept while the queue and the
//! pool together stay within the pool's limit (the receive buffer's size):
//! a bulk transfer reuses the same memory over and over, as a ring would,
//! instead of a `malloc` and a `free` per 2 KiB.

use std::collections::VecDeque;

/// Room of one buffer: a packet's payload at the usual path MTU.
pub(crate) const CHUNK: usize = 2048;

/// The pool's limit of [`Chunks::default`] (tests).
const DEFAULT_POOL: usize = 32 * 1024;

/// A held packet's buffer joins the queue as it is from this many bytes
/// on; smaller payloads are copied into the tail (at most half of a
/// buffer would be wasted otherwise).
const ADOPT_MIN: usize = CHUNK / 2;

#[derive(Debug)]
struct Chunk {
    buf: Vec<u8>,
    /// Bytes before this were read.
    read: usize,
}

/// In-order bytes waiting for the application, in pooled buffers.
#[derive(Debug)]
pub(crate) struct Chunks {
    queue: VecDeque<Chunk>,
    len: usize,
    spare: Vec<Vec<u8>>,
    /// Bytes of buffers, queued and pooled, above which emptied ones are
    /// freed instead of kept.
    pool_limit: usize,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks::new(DEFAULT_POOL)
    }
}

impl Chunks {
    /// An empty queue that keeps emptied buffers while queued and pooled
    /// ones take at most `pool_limit` bytes.
    pub(crate) fn new(pool_limit: usize) -> Self {
        Chunks { queue: VecDeque::new(), len: 0, spare: Vec::new(), pool_limit }
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// An empty buffer for a payload of `len` bytes: from the pool for a
    /// payload that will join the queue as it is (see [`Chunks::append`]),
    /// of its own size otherwise, so that tiny payloads (a peer's 1-byte or
    /// empty packets, held out of order) cannot each pin a whole buffer.
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        if (ADOPT_MIN..=CHUNK).contains(&len) {
            return self.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
        }
        Vec::with_capacity(len)
    }

    /// A buffer for the queue's own copies.
    fn chunk(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// Keeps an emptied buffer for later, if it is a pool-sized one and the
    /// pool has room.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        let held = (self.queue.len() + self.spare.len() + 1) * CHUNK;
        if buf.capacity() == CHUNK && held <= self.pool_limit {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn extend(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if let Some(tail) = self.queue.back_mut() {
            let n = (tail.buf.capacity() - tail.buf.len()).min(bytes.len());
            tail.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        while !bytes.is_empty() {
            let mut buf = self.chunk();
            let n = CHUNK.min(bytes.len());
            buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.queue.push_back(Chunk { buf, read: 0 });
        }
    }

    /// Appends the bytes of `buf` (a held packet's payload), taking the
    /// buffer itself when it is worth keeping, copying it otherwise.
    pub(crate) fn append(&mut self, buf: Vec<u8>) {
        let room = self.queue.back().map_or(0, |t| t.buf.capacity() - t.buf.len());
        if buf.len() < ADOPT_MIN || buf.len() <= room {
            self.extend(&buf);
            self.recycle(buf);
        } else {
            self.len += buf.len();
            self.queue.push_back(Chunk { buf, read: 0 });
        }
    }

    /// Copies bytes into `out` and consumes them; returns how many.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(front) = self.queue.front_mut() else { break };
            let avail = &front.buf[front.read..];
            let k = avail.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&avail[..k]);
            n += k;
            front.read += k;
            if front.read == front.buf.len() {
                let chunk = self.queue.pop_front().expect("front exists");
                self.recycle(chunk.buf);
            }
        }
        self.len -= n;
        n
    }

    /// Drops every byte; emptied buffers go to the pool.
    pub(crate) fn clear(&mut self) {
        while let Some(chunk) = self.queue.pop_front() {
            self.recycle(chunk.buf);
        }
        self.len = 0;
    }

    /// Drops every byte and frees every buffer, the pool's too.
    pub(crate) fn free(&mut self) {
        *self = Chunks::new(self.pool_limit);
    }

    /// Whether a queued buffer starts at `ptr` (for tests of the copies).
    #[cfg(test)]
    pub(crate) fn holds(&self, ptr: *const u8) -> bool {
        self.queue.iter().any(|c| c.buf.as_ptr() == ptr)
    }

    /// Buffers queued and pooled (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn buffers(&self) -> (usize, usize) {
        (self.queue.len(), self.spare.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut Chunks) -> Vec<u8> {
        let mut out = vec![0u8; c.len() + 7];
        let n = c.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn bytes_come_out_in_order_across_buffers() {
        let mut c = Chunks::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        c.extend(&data[..1400]);
        c.extend(&data[1400..5000]);
        let mut held = c.buffer(1500);
        held.extend_from_slice(&data[5000..6500]);
        c.append(held);
        c.extend(&data[6500..]);
        assert_eq!(c.len(), 10_000);
        let mut first = [0u8; 3];
        assert_eq!(c.read(&mut first), 3);
        assert_eq!(first, [0, 1, 2]);
        assert_eq!(drain(&mut c), data[3..]);
        assert_eq!(c.len(), 0);
        assert_eq!(c.read(&mut first), 0);
    }

    /// A held packet's buffer joins as it is: no copy, the same memory.
    #[test]
    fn a_held_buffer_joins_without_a_copy() {
        let mut c = Chunks::default();
        c.extend(&[1; CHUNK]);
        let mut held = c.buffer(1400);
        held.extend_from_slice(&[2; 1400]);
        let ptr = held.as_ptr();
        c.append(held);
        assert_eq!(c.queue.back().unwrap().buf.as_ptr(), ptr);
        assert_eq!(c.len(), CHUNK + 1400);
    }

    /// Small held payloads are copied into the tail instead, so tiny
    /// packets cannot each pin a whole buffer.
    #[test]
    fn tiny_payloads_share_buffers() {
        let mut c = Chunks::default();
        for i in 0..10_000u32 {
            if i % 2 == 0 {
                c.extend(&[i as u8]);
            } else {
                let mut held = c.buffer(1);
                held.push(i as u8);
                c.append(held);
            }
        }
        let (queued, _) = c.buffers();
        assert_eq!(queued, 10_000usize.div_ceil(CHUNK));
        let out = drain(&mut c);
        assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    /// The worst mix of adopted buffers and small in-order packets keeps
    /// memory within about twice the bytes queued.
    #[test]
    fn memory_stays_within_twice_the_bytes() {
        let mut c = Chunks::default();
        for _ in 0..1000 {
            let mut held = c.buffer(ADOPT_MIN);
            held.extend_from_slice(&[0; ADOPT_MIN]);
            c.append(held);
            c.extend(&[0; 1]);
        }
        let (queued, _) = c.buffers();
        assert!(queued * CHUNK <= 2 * c.len() + CHUNK, "{queued} buffers for {} bytes", c.len());
    }

    /// A steady stream reuses its buffers: after the first round nothing
    /// new is allocated.
    #[test]
    fn a_steady_stream_reuses_buffers() {
        let mut c = Chunks::default();
        let round = DEFAULT_POOL;
        let mut out = vec![0u8; round];
        c.extend(&vec![0; round]);
        assert_eq!(c.read(&mut out), round);
        let pooled: Vec<*const u8> = c.spare.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(pooled.len(), DEFAULT_POOL / CHUNK);
        c.extend(&vec![0; round]);
        let used: Vec<*const u8> = c.queue.iter().map(|k| k.buf.as_ptr()).collect();
        assert!(used.iter().all(|p| pooled.contains(p)));
    }

    #[test]
    fn payloads_larger_than_a_buffer() {
        let mut c = Chunks::default();
        let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        c.extend(&big);
        let mut held = c.buffer(big.len());
        held.extend_from_slice(&big);
        c.append(held);
        let out = drain(&mut c);
        assert_eq!(out.len(), 120_000);
        assert_eq!(out[..60_000], big[..]);
        assert_eq!(out[60_000..], big[..]);
        let (queued, pooled) = c.buffers();
        assert_eq!(queued, 0);
        assert!(pooled * CHUNK <= DEFAULT_POOL);
    }
}
