// The driver of the `connection` fuzz target, shared with the stable-toolchain
// test `proto/tests/fuzz_connection_corpus.rs` by `include!`, so that the seed
// corpus replayed by `cargo test` meets exactly the assertions the fuzzer does.
//
// Two `Endpoint`s, a virtual clock and two queues of datagrams in flight (one
// per direction) are driven by a sequence of operations decoded by hand from
// the fuzz input (the main crate has no `arbitrary` dependency, and a byte
// format of our own lets the stable test build seed inputs with
// `Op::encode`).
//
// Input format: a 4-byte configuration header (see `Setup::decode`), then
// operations, each an opcode byte followed by fixed arguments (see
// `Op::decode`). A missing byte reads as 0; decoding stops when the input
// ends.
//
// Invariants checked after every operation:
// - nothing panics, `poll_transmit` and `poll_event` return `None` within
//   `MAX_PER_ROUND` calls, delivering everything queued at one instant
//   quiesces within `MAX_QUIESCE_ROUNDS` rounds;
// - every datagram emitted parses with `Repr::parse_bytes`, is at most 1500
//   bytes, and goes to an address the endpoint has heard of;
// - after `handle_timeout(now)` and a poll round, `poll_timeout()` is later
//   than `now` (otherwise a runtime would spin);
// - bytes read on a connection are a prefix of what its peer wrote, unless
//   a datagram was corrupted or injected during the run;
// - memory is bounded: `connection_count() <= max_connections`, readable
//   bytes stay within the receive buffer plus one packet (plus SYN data),
//   free send buffer space within the send buffer, an unreleased handle stays
//   valid, and (when the caller measures it) live heap stays under
//   `MAX_HEAP_BYTES`.

#[allow(dead_code, clippy::all)]
mod connection_check {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use utp_proto::congestion::FixedWindowConfig;
    use utp_proto::wire::{ExtFlags, Extension, PacketType, Repr, SeqNr};
    use utp_proto::{
        ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Incoming, ReadError,
        TransportConfig, WriteError,
    };

    /// Most datagrams (or events) one endpoint may produce in one poll round.
    pub(crate) const MAX_PER_ROUND: usize = 10_000;
    /// Most rounds of "deliver everything queued" at one instant before the
    /// exchange must have died down.
    pub(crate) const MAX_QUIESCE_ROUNDS: usize = 2_000;
    /// Largest datagram an endpoint may emit.
    pub(crate) const MAX_DATAGRAM: usize = 1500;
    /// Live heap allowed while a run goes on (the largest configuration holds
    /// at most 16 connections with 1 MiB send and 256 KiB receive buffers).
    pub(crate) const MAX_HEAP_BYTES: usize = 96 << 20;
    /// Datagrams the driver keeps queued per direction (tail drop beyond).
    const MAX_QUEUED: usize = 1024;
    /// Operations decoded from one input at most.
    const MAX_OPS: usize = 4096;
    /// Recently emitted datagrams kept per direction as injection templates.
    const TEMPLATES: usize = 32;
    /// Incoming connections the application holds undecided at most.
    const MAX_UNDECIDED: usize = 64;

    const SEND_BUFFERS: [usize; 4] = [512, 4096, 65536, 1 << 20];
    const RECV_BUFFERS: [usize; 4] = [1024, 8192, 65536, 256 << 10];
    const WINDOWS: [usize; 4] = [1500, 8192, 65536, 256 << 10];
    const PACKET_SIZES: [usize; 4] = [1402, 1500, 576, 150];
    const MAX_CONNECTIONS: [usize; 4] = [1, 2, 4, 16];
    const MAX_HALF_OPEN: [usize; 4] = [1, 2, 8, 1024];
    const RESET_RATES: [u32; 4] = [0, 1, 10, 100];
    const EXTENSIONS: [ExtFlags; 4] =
        [ExtFlags::NONE, ExtFlags::SYN_DATA, ExtFlags::METADATA, ExtFlags(3)];

    /// Reads the fuzz input; bytes past the end read as 0.
    pub(crate) struct Input<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl<'a> Input<'a> {
        pub(crate) fn new(data: &'a [u8]) -> Self {
            Input { data, pos: 0 }
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.pos >= self.data.len()
        }

        pub(crate) fn u8(&mut self) -> u8 {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            b
        }

        pub(crate) fn u16(&mut self) -> u16 {
            u16::from_le_bytes([self.u8(), self.u8()])
        }

        pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
            let start = self.pos.min(self.data.len());
            let end = self.pos.saturating_add(n).min(self.data.len());
            self.pos = self.pos.saturating_add(n);
            &self.data[start..end]
        }
    }

    /// The configuration of a run: the 4-byte header of an input.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub(crate) struct Setup {
        /// bit 0: accept every incoming connection at once; bit 1: Nagle;
        /// bit 2: IPv6 addresses; bit 3: keepalives; bits 4-5: extensions of
        /// A; bits 6-7: extensions of B.
        pub(crate) flags: u8,
        /// bits 0-1 send buffer, 2-3 receive buffer, 4-5 congestion window,
        /// 6-7 packet size (indexes into the tables above).
        pub(crate) sizes: u8,
        /// bits 0-1 max connections, 2-3 max half open, 4-5 reset rate.
        pub(crate) limits: u8,
        /// Seed of both endpoints' random numbers.
        pub(crate) seed: u8,
    }

    impl Setup {
        pub(crate) const AUTO_ACCEPT: u8 = 1;
        pub(crate) const NAGLE: u8 = 2;
        pub(crate) const IPV6: u8 = 4;
        pub(crate) const KEEPALIVE: u8 = 8;

        pub(crate) fn decode(input: &mut Input<'_>) -> Self {
            Setup { flags: input.u8(), sizes: input.u8(), limits: input.u8(), seed: input.u8() }
        }

        pub(crate) fn encode(&self, out: &mut Vec<u8>) {
            out.extend([self.flags, self.sizes, self.limits, self.seed]);
        }

        fn send_buffer(&self) -> usize {
            SEND_BUFFERS[usize::from(self.sizes & 3)]
        }

        fn recv_buffer(&self) -> usize {
            RECV_BUFFERS[usize::from(self.sizes >> 2 & 3)]
        }

        fn transport(&self, extensions: ExtFlags) -> TransportConfig {
            let packet_size = PACKET_SIZES[usize::from(self.sizes >> 6)];
            TransportConfig {
                max_packet_size_v4: packet_size,
                max_packet_size_v6: packet_size.min(1232),
                send_buffer_size: self.send_buffer(),
                receive_buffer_size: self.recv_buffer(),
                keepalive_interval: (self.flags & Self::KEEPALIVE != 0)
                    .then_some(Duration::from_secs(29)),
                nagle: self.flags & Self::NAGLE != 0,
                extensions,
                congestion: Arc::new(FixedWindowConfig {
                    window: WINDOWS[usize::from(self.sizes >> 4 & 3)],
                }),
                ..TransportConfig::default()
            }
        }

        fn endpoint(&self, side: usize) -> EndpointConfig {
            let ext = EXTENSIONS[usize::from(self.flags >> (4 + 2 * side) & 3)];
            EndpointConfig {
                transport: Arc::new(self.transport(ext)),
                max_connections: MAX_CONNECTIONS[usize::from(self.limits & 3)],
                max_half_open: MAX_HALF_OPEN[usize::from(self.limits >> 2 & 3)],
                reset_rate: RESET_RATES[usize::from(self.limits >> 4 & 3)],
                rng_seed: Some(u64::from(self.seed) * 2 + side as u64),
            }
        }
    }

    /// One step of a run. `ep` picks an endpoint (bit 0), `dir` a queue
    /// (bit 0: 0 = towards A, 1 = towards B), `conn` and `idx` an element
    /// modulo the number available.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Op {
        /// `ep` dials the other endpoint with `syn_len` bytes of SYN data.
        Connect { ep: u8, syn_len: u16 },
        /// `ep` accepts (`how % 3 == 0`), refuses (1) or ignores (2) an
        /// undecided incoming connection.
        Decide { ep: u8, which: u8, how: u8 },
        /// Writes `len` bytes of the connection's pattern.
        Write { ep: u8, conn: u8, len: u16 },
        /// Reads up to `len` bytes.
        Read { ep: u8, conn: u8, len: u16 },
        Shutdown { ep: u8, conn: u8 },
        Reset { ep: u8, conn: u8 },
        /// The application lets go of the handle (never used again).
        Release { ep: u8, conn: u8 },
        /// Ends a message with `meta_len` bytes of metadata.
        EndMessage { ep: u8, conn: u8, meta_len: u8 },
        /// Moves the clock: `code & 0x8000` set means `code & 0x7fff`
        /// seconds, else milliseconds. Timers are not run.
        Advance { code: u16 },
        /// `handle_timeout(now)` on `ep` (2 or 3: both).
        HandleTimeout { ep: u8 },
        /// Jumps to the earliest timeout of either endpoint and runs both.
        AdvanceToTimeout,
        Deliver { dir: u8, idx: u8 },
        Drop { dir: u8, idx: u8 },
        Duplicate { dir: u8, idx: u8 },
        /// Moves a queued datagram to the back of its queue.
        Reorder { dir: u8, idx: u8 },
        /// XORs `mask` into byte `pos` of a queued datagram (taints the run).
        Corrupt { dir: u8, idx: u8, pos: u16, mask: u8 },
        /// Hands raw bytes to `ep`, from its peer (`from & 1 == 0`) or a
        /// stranger (taints the run).
        InjectRaw { ep: u8, from: u8, data: Vec<u8> },
        /// Hands `ep` a mutation of a datagram recently sent to it (see
        /// `mutate`), from its peer or a stranger (taints the run).
        InjectMutated { ep: u8, from: u8, template: u8, mutation: [u8; 16] },
        /// Delivers every datagram queued now, both directions.
        DeliverAll,
        /// Delivers until both queues are empty, at the same instant.
        Quiesce,
        /// Reads everything readable on every connection.
        ReadAll,
        /// Runs the network losslessly: `steps` times, delivers everything
        /// and reads everything, or when nothing is queued jumps to the next
        /// timeout.
        Run { steps: u8 },
    }

    const OPCODES: u8 = 22;

    impl Op {
        pub(crate) fn decode(input: &mut Input<'_>) -> Self {
            match input.u8() % OPCODES {
                0 => Op::Connect { ep: input.u8(), syn_len: input.u16() },
                1 => Op::Decide { ep: input.u8(), which: input.u8(), how: input.u8() },
                2 => Op::Write { ep: input.u8(), conn: input.u8(), len: input.u16() },
                3 => Op::Read { ep: input.u8(), conn: input.u8(), len: input.u16() },
                4 => Op::Shutdown { ep: input.u8(), conn: input.u8() },
                5 => Op::Reset { ep: input.u8(), conn: input.u8() },
                6 => Op::Release { ep: input.u8(), conn: input.u8() },
                7 => Op::EndMessage { ep: input.u8(), conn: input.u8(), meta_len: input.u8() },
                8 => Op::Advance { code: input.u16() },
                9 => Op::HandleTimeout { ep: input.u8() },
                10 => Op::AdvanceToTimeout,
                11 => Op::Deliver { dir: input.u8(), idx: input.u8() },
                12 => Op::Drop { dir: input.u8(), idx: input.u8() },
                13 => Op::Duplicate { dir: input.u8(), idx: input.u8() },
                14 => Op::Reorder { dir: input.u8(), idx: input.u8() },
                15 => Op::Corrupt {
                    dir: input.u8(),
                    idx: input.u8(),
                    pos: input.u16(),
                    mask: input.u8(),
                },
                16 => {
                    let (ep, from) = (input.u8(), input.u8());
                    let len = usize::from(input.u16() % 1600);
                    Op::InjectRaw { ep, from, data: input.bytes(len).to_vec() }
                }
                17 => {
                    let (ep, from, template) = (input.u8(), input.u8(), input.u8());
                    let mut mutation = [0u8; 16];
                    mutation.copy_from_slice(&{
                        let mut m = [0u8; 16];
                        let b = input.bytes(16);
                        m[..b.len()].copy_from_slice(b);
                        m
                    });
                    Op::InjectMutated { ep, from, template, mutation }
                }
                18 => Op::DeliverAll,
                19 => Op::Quiesce,
                20 => Op::ReadAll,
                _ => Op::Run { steps: input.u8() },
            }
        }

        /// The bytes `decode` reads back as this operation.
        pub(crate) fn encode(&self, out: &mut Vec<u8>) {
            match *self {
                Op::Connect { ep, syn_len } => {
                    out.push(0);
                    out.push(ep);
                    out.extend(syn_len.to_le_bytes());
                }
                Op::Decide { ep, which, how } => out.extend([1, ep, which, how]),
                Op::Write { ep, conn, len } => {
                    out.extend([2, ep, conn]);
                    out.extend(len.to_le_bytes());
                }
                Op::Read { ep, conn, len } => {
                    out.extend([3, ep, conn]);
                    out.extend(len.to_le_bytes());
                }
                Op::Shutdown { ep, conn } => out.extend([4, ep, conn]),
                Op::Reset { ep, conn } => out.extend([5, ep, conn]),
                Op::Release { ep, conn } => out.extend([6, ep, conn]),
                Op::EndMessage { ep, conn, meta_len } => out.extend([7, ep, conn, meta_len]),
                Op::Advance { code } => {
                    out.push(8);
                    out.extend(code.to_le_bytes());
                }
                Op::HandleTimeout { ep } => out.extend([9, ep]),
                Op::AdvanceToTimeout => out.push(10),
                Op::Deliver { dir, idx } => out.extend([11, dir, idx]),
                Op::Drop { dir, idx } => out.extend([12, dir, idx]),
                Op::Duplicate { dir, idx } => out.extend([13, dir, idx]),
                Op::Reorder { dir, idx } => out.extend([14, dir, idx]),
                Op::Corrupt { dir, idx, pos, mask } => {
                    out.extend([15, dir, idx]);
                    out.extend(pos.to_le_bytes());
                    out.push(mask);
                }
                Op::InjectRaw { ep, from, ref data } => {
                    assert!(data.len() < 1600, "InjectRaw carries less than 1600 bytes");
                    out.extend([16, ep, from]);
                    out.extend((data.len() as u16).to_le_bytes());
                    out.extend(data);
                }
                Op::InjectMutated { ep, from, template, mutation } => {
                    out.extend([17, ep, from, template]);
                    out.extend(mutation);
                }
                Op::DeliverAll => out.push(18),
                Op::Quiesce => out.push(19),
                Op::ReadAll => out.push(20),
                Op::Run { steps } => out.extend([21, steps]),
            }
        }
    }

    /// A whole input: the setup and the operations.
    pub(crate) fn encode(setup: Setup, ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        setup.encode(&mut out);
        for op in ops {
            op.encode(&mut out);
        }
        out
    }

