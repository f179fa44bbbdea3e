//! A loss-based TCP-like flow (NewReno) for the simulator, as cross traffic:
//! data A -> B in 1472-byte datagrams (a full 1500-byte IP packet), cumulative ACKs B -> A.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::sim::{CrossTraffic, Side};

const MSS: usize = 1472;
const ACK_LEN: usize = 40;

pub struct NewReno {
    start: Instant,
    stop: Instant,
    // sender
    cwnd: f64,
    ssthresh: f64,
    next: u64,
    una: u64,
    dupacks: u32,
    recover: Option<u64>,
    srtt: Option<Duration>,
    rto_at: Option<Instant>,
    backoff: u32,
    sent_at: std::collections::HashMap<u64, Instant>,
    retransmit: VecDeque<u64>,
    // receiver
    expected: u64,
    held: BTreeSet<u64>,
    acks: VecDeque<u64>,
    /// Packets delivered in order at B, with the time.
    pub delivered: Vec<(Instant, u64)>,
}

impl NewReno {
    /// A flow active from `start` to `stop` (it stops sending new data then).
    pub fn new(start: Instant, stop: Instant) -> Self {
        NewReno {
            start,
            stop,
            cwnd: 2.0,
            ssthresh: f64::INFINITY,
            next: 0,
            una: 0,
            dupacks: 0,
            recover: None,
            srtt: None,
            rto_at: None,
            backoff: 0,
            sent_at: Default::default(),
            retransmit: VecDeque::new(),
            expected: 0,
            held: BTreeSet::new(),
            acks: VecDeque::new(),
            delivered: Vec::new(),
        }
    }

    /// Bytes delivered in order at B between two instants.
    pub fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        self.delivered.iter().filter(|(t, _)| *t >= from && *t < to).count() as u64 * MSS as u64
    }

    fn rto(&self) -> Duration {
        let base =
            self.srtt.map_or(Duration::from_secs(1), |s| (s * 2).max(Duration::from_millis(200)));
        base * 2u32.pow(self.backoff.min(6))
    }

    fn packet(seq: u64) -> Vec<u8> {
        let mut d = vec![0u8; MSS];
        d[..8].copy_from_slice(&seq.to_be_bytes());
        d
    }
}

impl CrossTraffic for NewReno {
    fn on_recv(&mut self, now: Instant, to: Side, d: Vec<u8>) {
        let n = u64::from_be_bytes(d[..8].try_into().unwrap());
        match to {
            Side::B => {
                if n == self.expected {
                    self.expected += 1;
                    self.delivered.push((now, n));
                    while self.held.remove(&self.expected) {
                        self.delivered.push((now, self.expected));
                        self.expected += 1;
                    }
                } else if n > self.expected {
                    self.held.insert(n);
                }
                self.acks.push_back(self.expected);
            }
            Side::A => {
                let ack = n;
                if ack > self.una {
                    if let Some(sent) = self.sent_at.get(&(ack - 1)) {
                        let sample = now - *sent;
                        self.srtt = Some(self.srtt.map_or(sample, |s| (s * 7 + sample) / 8));
                    }
                    for s in self.una..ack {
                        self.sent_at.remove(&s);
                    }
                    self.una = ack;
                    self.backoff = 0;
                    self.dupacks = 0;
                    match self.recover {
                        Some(r) if ack < r => self.retransmit.push_back(ack), // partial ACK
                        Some(_) => {
                            self.recover = None;
                            self.cwnd = self.ssthresh;
                        }
                        None if self.cwnd < self.ssthresh => self.cwnd += 1.0,
                        None => self.cwnd += 1.0 / self.cwnd,
                    }
                    self.rto_at = (self.una < self.next).then(|| now + self.rto());
                } else if ack == self.una && self.una < self.next {
                    self.dupacks += 1;
                    if self.dupacks == 3 && self.recover.is_none() {
                        self.ssthresh = (self.cwnd / 2.0).max(2.0);
                        self.cwnd = self.ssthresh + 3.0;
                        self.recover = Some(self.next);
                        self.retransmit.push_back(self.una);
                    } else if self.recover.is_some() {
                        self.cwnd += 1.0;
                    }
                }
            }
        }
    }

    fn poll_send(&mut self, now: Instant) -> Option<(Side, Vec<u8>)> {
        if let Some(ack) = self.acks.pop_front() {
            let mut d = vec![0u8; ACK_LEN];
            d[..8].copy_from_slice(&ack.to_be_bytes());
            return Some((Side::B, d));
        }
        if now < self.start {
            return None;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.ssthresh = (self.cwnd / 2.0).max(2.0);
            self.cwnd = 1.0;
            self.recover = None;
            self.backoff += 1;
            self.retransmit.push_back(self.una);
            self.rto_at = Some(now + self.rto());
        }
        if let Some(seq) = self.retransmit.pop_front() {
            if seq >= self.una {
                self.sent_at.remove(&seq);
                return Some((Side::A, Self::packet(seq)));
            }
        }
        let in_flight = (self.next - self.una) as f64;
        if now < self.stop && in_flight < self.cwnd.floor() {
            let seq = self.next;
            self.next += 1;
            self.sent_at.insert(seq, now);
            if self.rto_at.is_none() {
                self.rto_at = Some(now + self.rto());
            }
            return Some((Side::A, Self::packet(seq)));
        }
        None
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut t = self.rto_at;
        if self.next == 0 {
            t = Some(t.map_or(self.start, |x| x.min(self.start)));
        }
        t
    }
}

/// Lets a test keep a handle on the flow it gave the simulator.
impl<T: CrossTraffic> CrossTraffic for std::rc::Rc<std::cell::RefCell<T>> {
    fn on_recv(&mut self, now: Instant, to: Side, datagram: Vec<u8>) {
        self.borrow_mut().on_recv(now, to, datagram);
    }
    fn poll_send(&mut self, now: Instant) -> Option<(Side, Vec<u8>)> {
        self.borrow_mut().poll_send(now)
    }
    fn next_wakeup(&self) -> Option<Instant> {
        self.borrow().next_wakeup()
    }
}
