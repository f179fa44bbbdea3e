//! The UDP socket: creation with the configured kernel buffers, and the
//! batched, non-blocking receive and send used by the driver.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::config::Config;

/// Datagrams received (or sent) per batch at most.
pub(crate) const BATCH: usize = 64;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// Creates a UDP socket bound to `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Applies the configured kernel buffer sizes and non-blocking mode.
pub(crate) fn configure(socket: &StdUdpSocket, config: &Config) -> io::Result<()> {
    let sock = socket2::SockRef::from(socket);
    sock.set_nonblocking(true)?;
    if let Some(size) = config.socket_recv_buffer_size {
        sock.set_recv_buffer_size(size)?;
        let got = sock.recv_buffer_size()?;
        // Linux reports twice what was set (bookkeeping overhead included).
        if got < size {
            warn!(
                requested = size,
                got, "UDP receive buffer capped by the kernel (raise net.core.rmem_max)"
            );
        } else {
            debug!(size = got, "UDP receive buffer");
        }
    }
    if let Some(size) = config.socket_send_buffer_size {
        sock.set_send_buffer_size(size)?;
        let got = sock.send_buffer_size()?;
        if got < size {
            warn!(
                requested = size,
                got, "UDP send buffer capped by the kernel (raise net.core.wmem_max)"
            );
        }
    }
    Ok(())
}

/// Don't-fragment, per send (Linux): datagrams go without it, so that a path
/// smaller than the packets fragments them rather than drops them (as
/// libutp's and libtorrent's packets travel); path MTU probes go with it
/// (`IP_PMTUDISC_DO`: the kernel also refuses with EMSGSIZE a probe larger
/// than a path MTU it learned from ICMP). Elsewhere the system's default
/// applies to everything.
pub(crate) fn set_dont_fragment(socket: &UdpSocket, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let set = |level, name, value| set_int_option(socket, level, name, value);
        let v6 = socket.local_addr()?.is_ipv6();
        let v4_value = if on { libc::IP_PMTUDISC_DO } else { libc::IP_PMTUDISC_DONT };
        let v4 = set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, v4_value);
        if v6 {
            let value = if on { libc::IPV6_PMTUDISC_DO } else { libc::IPV6_PMTUDISC_DONT };
            set(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, value)?;
            // A v6-only socket has no IPv4 option: that is fine.
            return Ok(());
        }
        v4
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, on);
        Ok(())
    }
}

/// Datagrams the kernel dropped on their way into this socket, almost all
/// because its receive buffer was full: the driver did not keep up
/// (`SO_MEMINFO`'s drop count, Linux; it wraps at 2^32). `None` where the
/// system does not say.
pub(crate) fn kernel_drops(socket: &UdpSocket) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        /// The generic number; MIPS and SPARC number it differently (the
        /// count is not read there).
        const SO_MEMINFO: libc::c_int = 55;
        const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
        let other_numbering = cfg!(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc",
            target_arch = "sparc64"
        ));
        if other_numbering {
            return None;
        }
        let mut info = [0u32; DROPS + 1];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: the descriptor is open for the call; the kernel writes at
        // most `len` bytes into `info` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let filled = len as usize / std::mem::size_of::<u32>();
        (rc == 0 && filled > DROPS).then(|| info[DROPS])
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// `setsockopt` of an integer option (Linux).
#[cfg(target_os = "linux")]
pub(crate) fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the socket's descriptor is open for the duration of the call
    // and the option value is a c_int that outlives it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How datagrams move between the socket and the driver.
pub(crate) enum Io {
    /// `quinn-udp`: `recvmmsg` with GRO, `sendmsg` with GSO where the
    /// system supports them (one datagram per call elsewhere).
    Batched(quinn_udp::UdpSocketState),
    /// One `recvfrom`/`sendto` per datagram.
    Plain,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Io::Batched(state) => f
                .debug_struct("Batched")
                .field("max_gso_segments", &state.max_gso_segments())
                .field("gro_segments", &state.gro_segments())
                .finish(),
            Io::Plain => f.write_str("Plain"),
        }
    }
}

impl Io {
    /// Batched I/O if `batched` and the socket supports it.
    pub(crate) fn new(socket: &UdpSocket, batched: bool) -> Io {
        let io = Self::create(socket, batched);
        // After quinn-udp, which sets don't-fragment on everything.
        if let Err(e) = set_dont_fragment(socket, false) {
            debug!(error = %e, "could not clear don't-fragment");
        }
        io
    }

    fn create(socket: &UdpSocket, batched: bool) -> Io {
        if !batched {
            return Io::Plain;
        }
        match quinn_udp::UdpSocketState::new(socket.into()) {
            Ok(state) => {
                debug!(
                    gso = state.max_gso_segments(),
                    gro = state.gro_segments(),
                    "batched UDP I/O"
                );
                Io::Batched(state)
            }
            Err(e) => {
                debug!(error = %e, "batched UDP I/O unavailable");
                Io::Plain
            }
        }
    }

    /// Datagrams one send may carry.
    pub(crate) fn max_segments(&self) -> usize {
        match self {
            Io::Batched(state) => state.max_gso_segments(),
            Io::Plain => 1,
        }
    }
}

/// Received datagrams, waiting to be handed to the engine.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    buf: Box<[u8]>,
    /// (source, destination IP if known, start, end) of each datagram in
    /// `buf`. The destination (IP_PKTINFO, batched I/O only) tells which
    /// address a wildcard socket was reached at.
    datagrams: Vec<(SocketAddr, Option<IpAddr>, usize, usize)>,
    meta: Vec<quinn_udp::RecvMeta>,
}

/// Size of one receive buffer of a `recvmmsg` call: one datagram of the
/// largest size, or one GRO train (at most 64 KiB in all).
const RECV_SLOT: usize = MAX_DATAGRAM;

impl RecvBatch {
    /// Starts with room for one receive slot (64 KiB): a socket that sees
    /// little traffic (a dialer, an idle listener) never holds the full
    /// batch. The buffer grows to its full size the first time a receive
    /// fills it (see [`RecvBatch::full_len`]).
    pub(crate) fn new() -> Self {
        RecvBatch {
            buf: vec![0u8; MAX_DATAGRAM.max(RECV_SLOT)].into_boxed_slice(),
            datagrams: Vec::new(),
            meta: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
        }
    }

    /// The buffer's size once grown.
    fn full_len(io: &Io) -> usize {
        match io {
            Io::Batched(_) => quinn_udp::BATCH_SIZE * RECV_SLOT,
            Io::Plain => BATCH * 2048 + MAX_DATAGRAM,
        }
    }

    /// Bytes held for receiving (for tests of the lazy growth).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Receives what the socket holds without waiting: a batch of datagrams
    /// at most; returns `true` if the batch filled up (more may wait).
    pub(crate) fn recv(&mut self, socket: &UdpSocket, io: &Io) -> bool {
        self.datagrams.clear();
        let full = match io {
            Io::Batched(state) => self.recv_batched(socket, state),
            Io::Plain => self.recv_plain(socket),
        };
        let full_len = Self::full_len(io);
        if full && self.buf.len() < full_len {
            // Traffic: grow once. The datagrams received stay readable
            // until the next call, so copy them over.
            let mut grown = vec![0u8; full_len].into_boxed_slice();
            grown[..self.buf.len()].copy_from_slice(&self.buf);
            self.buf = grown;
        }
        full
    }

    fn recv_batched(&mut self, socket: &UdpSocket, state: &quinn_udp::UdpSocketState) -> bool {
        // Only whole slots: an empty buffer would take a datagram and
        // truncate it to nothing.
        let slots = (self.buf.len() / RECV_SLOT).clamp(1, quinn_udp::BATCH_SIZE);
        let mut chunks = self.buf.chunks_mut(RECV_SLOT);
        let mut iov: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let meta = &mut self.meta[..slots];
        let mut retries = 0;
        let n = loop {
            let iov = &mut iov[..slots];
            match socket.try_io(Interest::READABLE, || state.recv(socket.into(), iov, meta)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    return false;
                }
            }
        };
        for (i, m) in self.meta[..n].iter().enumerate() {
            let base = i * RECV_SLOT;
            let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
            let mut start = 0;
            while start < m.len {
                let end = (start + stride).min(m.len);
                self.datagrams.push((m.addr, m.dst_ip, base + start, base + end));
                start = end;
            }
            if m.len == 0 {
                self.datagrams.push((m.addr, m.dst_ip, base, base));
            }
        }
        n == slots
    }

    fn recv_plain(&mut self, socket: &UdpSocket) -> bool {
        let mut used = 0;
        let mut retries = 0;
        while self.datagrams.len() < BATCH && self.buf.len() - used >= MAX_DATAGRAM {
            match socket.try_recv_from(&mut self.buf[used..]) {
                Ok((n, from)) => {
                    self.datagrams.push((from, None, used, used + n));
                    used += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if retry(&e, &mut retries) => {}
                Err(e) => {
                    // ICMP errors reported on some platforms: nothing to do
                    // for a datagram socket shared by many peers.
                    debug!(error = %e, "UDP receive error");
                    return false;
                }
            }
        }
        true
    }

    /// The datagrams received by the last [`RecvBatch::recv`].
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])> + '_ {
        self.datagrams.iter().map(|&(from, dst, start, end)| (from, dst, &self.buf[start..end]))
    }
}

/// Most bytes one segmented (GSO) send carries.
const MAX_GSO_BYTES: usize = 64_000;

/// One transmit the engine produced: a datagram, or a run of datagrams of
/// `segment_size` bytes (the last may be shorter) to one destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued {
    pub(crate) destination: SocketAddr,
    pub(crate) len: usize,
    pub(crate) segment_size: Option<usize>,
    pub(crate) dont_fragment: bool,
    /// Set for replies from a wildcard socket: they leave from the address
    /// the peer reached.
    pub(crate) src: Option<IpAddr>,
}

/// Transmits produced by the engine, waiting to be sent, back to back in
/// one buffer. The engine forms the runs of equal-size datagrams
/// (`Endpoint::poll_transmit_run`); this only moves them: one segmented
/// send per run with batched I/O.
#[derive(Debug)]
pub(crate) struct SendBatch {
    buf: Box<[u8]>,
    /// Room every datagram is formed in (the largest one there may be).
    slot: usize,
    /// Each transmit and where its bytes start in `buf`.
    queued: Vec<(usize, Queued)>,
    /// Transmits already sent.
    sent: usize,
    /// Probes the kernel refused with EMSGSIZE: (destination, size), for
    /// the engine.
    too_big: Vec<(SocketAddr, usize)>,
    /// The last fill ran out of room: grow before the next one.
    grow: bool,
}

impl SendBatch {
    /// A batch for datagrams of at most `slot` bytes. It starts with room
    /// for two of them and grows, the first time the engine has more to
    /// send than fits, to `BATCH` datagrams of up to 2 KiB or at least 8 of
    /// the largest size: an idle or dial-only socket keeps little memory.
    pub(crate) fn new(slot: usize) -> Self {
        SendBatch {
            buf: vec![0u8; 2 * slot].into_boxed_slice(),
            slot,
            queued: Vec::new(),
            sent: 0,
            too_big: Vec::new(),
            grow: false,
        }
    }

    fn full_len(&self) -> usize {
        (BATCH * self.slot.min(2048)).max(8 * self.slot)
    }

    /// Bytes held for sending (for tests of the lazy growth).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Takes the probes refused with EMSGSIZE since the last call.
    pub(crate) fn take_too_big(&mut self) -> Vec<(SocketAddr, usize)> {
        std::mem::take(&mut self.too_big)
    }

    /// Nothing left to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.queued.len()
    }

    /// Fills the batch from `poll(buf, max_segments, max_run_bytes)`, which
    /// writes a transmit into `buf` (room for a run of `max_run_bytes` and
    /// a datagram of the largest size beyond it) and describes it; returns
    /// `true` if the batch filled up (more may be waiting). A batch holds
    /// `BATCH` datagrams at most, runs included, so that the driver goes
    /// back to receiving (acknowledgements) as often with runs as without.
    pub(crate) fn fill(
        &mut self,
        max_segments: usize,
        mut poll: impl FnMut(&mut [u8], usize, usize) -> Option<Queued>,
    ) -> bool {
        debug_assert!(self.is_empty());
        self.queued.clear();
        self.sent = 0;
        if self.grow {
            self.grow = false;
            self.buf = vec![0u8; self.full_len()].into_boxed_slice();
        }
        let mut used = 0;
        let mut datagrams = 0;
        while datagrams < BATCH && used + self.slot <= self.buf.len() {
            let room = self.buf.len() - used;
            let max_run = (room - self.slot).min(MAX_GSO_BYTES);
            let segments = max_segments.clamp(1, BATCH - datagrams);
            match poll(&mut self.buf[used..], segments, max_run) {
                Some(q) => {
                    self.queued.push((used, q));
                    used += q.len;
                    datagrams += q.segment_size.map_or(1, |s| q.len.div_ceil(s.max(1)));
                }
                None => return false,
            }
        }
        self.grow = self.buf.len() < self.full_len() && datagrams < BATCH;
        true
    }

    /// Sends without waiting; returns `false` if the socket is full (wait
    /// for it to become writable, the unsent transmits are kept).
    pub(crate) fn send(&mut self, socket: &UdpSocket, io: &Io) -> bool {
        let mut interrupted = 0;
        // The transmit at `sent` failed once with an error an ICMP message
        // for an earlier datagram may have left on the socket.
        let mut retried = false;
        while self.sent < self.queued.len() {
            let (start, q) = self.queued[self.sent];
            let contents = &self.buf[start..start + q.len];
            if q.dont_fragment {
                if let Err(e) = set_dont_fragment(socket, true) {
                    debug!(error = %e, "could not set don't-fragment");
                }
            }
            let result = match io {
                Io::Batched(state) => {
                    let transmit = quinn_udp::Transmit {
                        destination: q.destination,
                        ecn: None,
                        contents,
                        segment_size: q.segment_size,
                        src_ip: q.src,
                    };
                    // `try_send`: quinn-udp's `send` reports every error
                    // but WouldBlock as success, which would lose a whole
                    // run to an ICMP error of an earlier datagram.
                    socket.try_io(Interest::WRITABLE, || state.try_send(socket.into(), &transmit))
                }
                // (No runs: the engine is asked for one datagram at a time.)
                Io::Plain => socket.try_send_to(contents, q.destination).map(|_| ()),
            };
            if q.dont_fragment {
                if let Err(e) = set_dont_fragment(socket, false) {
                    debug!(error = %e, "could not clear don't-fragment");
                }
            }
            match result {
                Ok(()) => {
                    self.sent += 1;
                    retried = false;
                }
                Err(e) if q.dont_fragment && is_emsgsize(&e) => {
                    let (to, size) = (q.destination, q.len);
                    debug!(%to, size, "path MTU probe larger than the route allows");
                    self.too_big.push((to, size));
                    self.sent += 1;
                    retried = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                    interrupted += 1;
                }
                // Most likely an earlier datagram's ICMP error, reported
                // once: this transmit did not leave; it goes again.
                Err(e) if !retried && is_pending_icmp_error(&e) => retried = true,
                Err(e) => {
                    // Unreachable network, bad address family...: the
                    // datagrams are lost; the connection retransmits or
                    // times out.
                    debug!(error = %e, to = %q.destination, "UDP send error");
                    self.sent += 1;
                    retried = false;
                }
            }
        }
        true
    }
}

/// Retries a receive that failed for no reason of its own: interrupted, or
/// handed the error of an ICMP message for an earlier datagram, which the
/// kernel reports once as the result of the socket's next call (with
/// `IP_RECVERR`; the message itself waits in the error queue, see
/// `icmp.rs`). A few times per batch at most, so that a flood of ICMP
/// errors cannot hold the driver in a loop.
fn retry(e: &io::Error, retries: &mut u32) -> bool {
    let transient = e.kind() == io::ErrorKind::Interrupted || is_pending_icmp_error(e);
    if transient && *retries < 8 {
        *retries += 1;
        return true;
    }
    false
}

/// An error that an ICMP message for an earlier datagram may leave on the
/// socket (port, host or network unreachable, fragmentation needed, time
/// exceeded, parameter problem, administratively prohibited): it fails the
/// next call once, whatever that call sends.
fn is_pending_icmp_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNREFUSED
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EHOSTDOWN
                    | libc::EPROTO
                    | libc::ENOPROTOOPT
                    | libc::EMSGSIZE
                    | libc::EACCES
            )
        )
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::ConnectionRefused
    }
}

/// The send failed because the datagram is larger than the route's MTU.
fn is_emsgsize(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::EMSGSIZE)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send batch starts small and grows once the engine has more to
    /// send than fits.
    #[test]
    fn send_batch_grows_on_demand() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let one = |len| Queued {
            destination: to,
            len,
            segment_size: None,
            dont_fragment: false,
            src: None,
        };
        let mut batch = SendBatch::new(65_535);
        assert_eq!(batch.capacity(), 2 * 65_535);
        // Two datagrams of 1500 bytes: room enough, no growth.
        let mut left = 2;
        assert!(!batch.fill(1, |_, _, _| (left > 0).then(|| {
            left -= 1;
            one(1500)
        })));
        batch.sent = batch.queued.len();
        assert!(!batch.grow);
        // An endless supply of large datagrams: the batch fills, then grows.
        assert!(batch.fill(1, |_, _, _| Some(one(65_000))));
        assert_eq!(batch.queued.len(), 2);
        batch.sent = batch.queued.len();
        assert!(batch.fill(1, |_, _, _| Some(one(65_000))));
        assert_eq!(batch.capacity(), 8 * 65_535);
        assert_eq!(batch.queued.len(), 8);
    }

    /// Runs count for every datagram they hold: a batch ends at `BATCH`
    /// datagrams, and each run may use at most the room left beyond one
    /// datagram of the largest size.
    #[test]
    fn send_batch_counts_the_datagrams_of_runs() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut batch = SendBatch::new(1500);
        batch.grow = true;
        let mut asked = Vec::new();
        assert!(batch.fill(16, |buf, segments, max_run| {
            asked.push((segments, max_run));
            assert!(buf.len() >= max_run + 1500);
            let len = (segments * 1000).min(max_run).max(1000);
            Some(Queued {
                destination: to,
                len,
                segment_size: Some(1000),
                dont_fragment: false,
                src: None,
            })
        }));
        let datagrams: usize = batch.queued.iter().map(|(_, q)| q.len.div_ceil(1000)).sum();
        assert!(datagrams <= BATCH, "{datagrams}");
        assert_eq!(asked[0].0, 16);
        assert!(asked.iter().all(|&(s, _)| s <= 16));
    }

    /// With ICMP errors queued (`IP_RECVERR`), the port unreachable of an
    /// earlier datagram fails the next send once: the transmit goes again
    /// instead of being lost (quinn-udp's `send` reported it as sent).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_earlier_datagrams_icmp_error_does_not_lose_the_next() {
        for batched in [true, false] {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let io = Io::new(&socket, batched);
            crate::icmp::enable(&socket).unwrap();
            let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let to = peer.local_addr().unwrap();
            // Draws a port unreachable: the socket's next call fails once.
            socket.send_to(b"x", closed).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut batch = SendBatch::new(1500);
            let mut once = true;
            batch.fill(1, |buf, _, _| {
                std::mem::take(&mut once).then(|| {
                    buf[..5].copy_from_slice(b"hello");
                    Queued {
                        destination: to,
                        len: 5,
                        segment_size: None,
                        dont_fragment: false,
                        src: None,
                    }
                })
            });
            assert!(batch.send(&socket, &io));
            let mut got = [0u8; 16];
            let (n, _) = peer.recv_from(&mut got).expect("the datagram arrived");
            assert_eq!(&got[..n], b"hello", "batched {batched}");
        }
    }

    /// A receive batch starts with one slot and grows when a receive fills
    /// it; no datagram is lost on the way.
    #[tokio::test]
    async fn recv_batch_grows_on_demand() {
        for batched in [true, false] {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let io = Io::new(&socket, batched);
            let mut rx = RecvBatch::new();
            let small = rx.capacity();
            assert!(small <= 2 * MAX_DATAGRAM, "{small}");
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..20u8 {
                sender.send_to(&[i; 100], socket.local_addr().unwrap()).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut got = Vec::new();
            for _ in 0..40 {
                rx.recv(&socket, &io);
                got.extend(rx.iter().map(|(_, _, d)| d[0]));
                if got.len() == 20 {
                    break;
                }
            }
            assert_eq!(got, (0..20).collect::<Vec<u8>>(), "batched {batched}");
            assert!(rx.capacity() > small, "grew under traffic (batched {batched})");
        }
    }
}
