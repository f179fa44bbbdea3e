//! [`UtpStream`]: one connection as a byte stream, and its halves.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::debug;
use utp_proto::wire::ExtFlags;
use utp_proto::{ConnectionHandle, ReadError, Stats, TransportConfig, WriteError};

use crate::shared::{register, Inner, Shared};

/// Longest message metadata a [`UtpStream`] can send (see
/// [`UtpStream::poll_write_message_end`]). The record's length byte would
/// allow 255, but the engine refuses to send more than 253
/// (`WriteError::MetadataTooLong`, here
/// [`InvalidInput`](io::ErrorKind::InvalidInput)). Up to 255 are accepted
/// from a peer.
pub const MAX_METADATA_LEN: usize = 253;

/// What [`UtpStream::read_message_part`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageRead {
    /// This many bytes of the current message's body were copied into the
    /// buffer; the message goes on (its end has not been read yet).
    Data(usize),
    /// The current message ends here (its whole body was read before);
    /// this is its metadata.
    End(Box<[u8]>),
    /// The peer finished sending and everything was read. Bytes read since
    /// the last [`MessageRead::End`] belong to no complete message.
    Eof,
}

/// What every handle of one connection shares. Dropping the last handle
/// gives the connection back to the engine ([`Inner::release`]), which
/// closes it gracefully in the background.
pub(crate) struct StreamShared {
    shared: Arc<Shared>,
    handle: ConnectionHandle,
    peer: SocketAddr,
    /// The connection's settings (the socket's, or the dial's own).
    config: Arc<TransportConfig>,
}

impl fmt::Debug for StreamShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UtpStream")
            .field("local_addr", &self.shared.local_addr)
            .field("peer_addr", &self.peer)
            .field("handle", &self.handle.0)
            .finish()
    }
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        let driver_gone = {
            let mut inner = self.shared.inner.lock();
            inner.release(self.handle);
            inner.streams -= 1;
            inner.stopped.is_some()
        };
        if driver_gone {
            // No driver to send the FIN (or RESET): send it now, once.
            self.shared.flush_now();
        } else {
            self.shared.wake_driver();
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the uTP connection no longer exists")
}

fn write_error(e: WriteError) -> io::Error {
    match e {
        WriteError::Connection(e) => e.into(),
        WriteError::Finished => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the write side of the uTP stream is shut down",
        ),
        e @ WriteError::MessagesNotNegotiated => io::Error::new(io::ErrorKind::Unsupported, e),
        e @ WriteError::MetadataTooLong(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
        e => io::Error::other(e),
    }
}

fn read_error(e: ReadError) -> io::Error {
    match e {
        ReadError::Connection(e) => e.into(),
        e => io::Error::other(e),
    }
}

impl StreamShared {
    /// A handle on a tracked connection; counts as a stream of the socket.
    pub(crate) fn new(
        shared: Arc<Shared>,
        inner: &mut Inner,
        handle: ConnectionHandle,
        peer: SocketAddr,
        config: Arc<TransportConfig>,
    ) -> Arc<Self> {
        inner.streams += 1;
        Arc::new(StreamShared { shared, handle, peer, config })
    }

    /// Ready once the handshake completed (or failed).
    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        inner.check_running()?;
        let conn = inner.endpoint.connection(self.handle).ok_or_else(gone)?;
        if conn.is_connected() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = conn.error() {
            return Poll::Ready(Err(e.into()));
        }
        if conn.is_closed() {
            return Poll::Ready(Err(gone()));
        }
        register(&mut inner.wakers(self.handle).ok_or_else(gone)?.connect, cx.waker());
        Poll::Pending
    }

    /// After a read: the engine decides whether the peer needs a window
    /// update (the window had nearly closed); if so the driver sends it.
    fn after_read(&self, ack_due: bool) {
        if ack_due {
            self.shared.wake_driver();
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_read_with(cx, |conn| conn.read(buf))
    }

    /// A read: `read` runs under the lock, with the connection (so that it
    /// may size its buffer by what is readable).
    fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut utp_proto::Connection) -> Result<usize, ReadError>,
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        let conn = inner.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
        match read(conn) {
            Ok(n) => {
                let ack_due = conn.ack_due();
                drop(guard);
                self.after_read(ack_due);
                Poll::Ready(Ok(n))
            }
            Err(ReadError::Blocked) => {
                inner.check_running()?;
                register(&mut inner.wakers(self.handle).ok_or_else(gone)?.read, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(read_error(e))),
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        inner.check_running()?;
        let conn = inner.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
        match conn.write(buf) {
            Ok(n) => {
                drop(guard);
                self.shared.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                register(&mut inner.wakers(self.handle).ok_or_else(gone)?.write, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }

    fn negotiated(&self) -> ExtFlags {
        let inner = self.shared.inner.lock();
        inner.endpoint.connection(self.handle).map_or(ExtFlags::NONE, |c| c.negotiated())
    }

    /// Reads within the current message: never past its end, and the end
    /// itself as [`MessageRead::End`].
    fn poll_read_message(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<MessageRead>> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        let conn = inner.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
        let want = match conn.next_message_end() {
            Some((0, _)) => {
                let meta = conn.take_message_end().unwrap_or_default();
                let ack_due = conn.ack_due();
                drop(guard);
                self.after_read(ack_due);
                return Poll::Ready(Ok(MessageRead::End(meta)));
            }
            Some((to_end, _)) => to_end.min(buf.len()),
            None => buf.len(),
        };
        if want == 0 {
            return Poll::Ready(Ok(MessageRead::Data(0)));
        }
        match conn.read(&mut buf[..want]) {
            Ok(0) => Poll::Ready(Ok(MessageRead::Eof)),
            Ok(n) => {
                let ack_due = conn.ack_due();
                drop(guard);
                self.after_read(ack_due);
                Poll::Ready(Ok(MessageRead::Data(n)))
            }
            Err(ReadError::Blocked) => {
                inner.check_running()?;
                register(&mut inner.wakers(self.handle).ok_or_else(gone)?.read, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(read_error(e))),
        }
    }

    /// Ends the current message; waits while the send buffer is full.
    fn poll_write_message_end(&self, cx: &mut Context<'_>, meta: &[u8]) -> Poll<io::Result<()>> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        inner.check_running()?;
        let conn = inner.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
        match conn.end_message(meta) {
            Ok(()) => {
                drop(guard);
                self.shared.wake_driver();
                Poll::Ready(Ok(()))
            }
            Err(WriteError::Blocked) => {
                register(&mut inner.wakers(self.handle).ok_or_else(gone)?.write, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }

    /// Writes all of `body`, then ends the message with `meta`.
    async fn write_message(&self, meta: &[u8], body: &[u8]) -> io::Result<()> {
        if meta.len() > MAX_METADATA_LEN {
            return Err(write_error(WriteError::MetadataTooLong(meta.len())));
        }
        if !self.negotiated().contains(ExtFlags::METADATA) {
            return Err(write_error(WriteError::MessagesNotNegotiated));
        }
        let mut written = 0;
        while written < body.len() {
            written += poll_fn(|cx| self.poll_write(cx, &body[written..])).await?;
        }
        poll_fn(|cx| self.poll_write_message_end(cx, meta)).await
    }

    fn poll_flush(&self) -> Poll<io::Result<()>> {
        // Written bytes are with the engine and the driver was told: there
        // is nothing to push further, except a held SYN (an early-data
        // dial), which goes now with what was written.
        let mut inner = self.shared.inner.lock();
        inner.check_running()?;
        let held = inner.endpoint.connection(self.handle).is_some_and(|c| c.is_syn_held());
        if held {
            if let Some(conn) = inner.endpoint.connection_mut(self.handle) {
                conn.release_syn();
            }
            drop(inner);
            self.shared.wake_driver();
        }
        Poll::Ready(Ok(()))
    }

    /// Half-closes: queues a FIN after the data written so far.
    fn shutdown(&self) -> io::Result<()> {
        {
            let mut inner = self.shared.inner.lock();
            let conn = inner.endpoint.connection_mut(self.handle).ok_or_else(gone)?;
            if let Some(e) = conn.error() {
                return Err(e.into());
            }
            conn.shutdown();
        }
        self.shared.wake_driver();
        Ok(())
    }

    /// Ready once our FIN was acknowledged (or the connection ended).
    fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.shared.inner.lock();
        let inner = &mut *guard;
        inner.check_running()?;
        let conn = inner.endpoint.connection(self.handle).ok_or_else(gone)?;
        if conn.is_finished() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = conn.error() {
            return Poll::Ready(Err(e.into()));
        }
        if conn.is_closed() {
            return Poll::Ready(Ok(()));
        }
        register(&mut inner.wakers(self.handle).ok_or_else(gone)?.close, cx.waker());
        Poll::Pending
    }

    async fn close(&self) -> io::Result<()> {
        let timeout = self.config.close_timeout;
        debug!(peer = %self.peer, "closing");
        self.shutdown()?;
        match tokio::time::timeout(timeout, poll_fn(|cx| self.poll_finished(cx))).await {
            Ok(Ok(())) => {
                debug!(peer = %self.peer, "closed");
                Ok(())
            }
            Ok(Err(e)) => {
                debug!(peer = %self.peer, error = %e, "close failed");
                Err(e)
            }
            Err(_) => {
                let stats = self.stats();
                debug!(peer = %self.peer, ?stats, "close timed out");
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "closing the uTP stream to {} timed out after {timeout:?}: the peer did \
                         not acknowledge all data (bytes in flight: {}, retransmission \
                         timeouts: {}, packets received from the peer: {})",
                        self.peer, stats.bytes_in_flight, stats.timeouts, stats.packets_received
                    ),
                ))
            }
        }
    }

    fn reset(&self) {
        {
            let mut inner = self.shared.inner.lock();
            if let Some(conn) = inner.endpoint.connection_mut(self.handle) {
                conn.reset();
            }
        }
        debug!(peer = %self.peer, "reset");
        self.shared.wake_driver();
    }

    fn stats(&self) -> Stats {
        let inner = self.shared.inner.lock();
        inner.endpoint.connection(self.handle).map(|c| c.stats()).unwrap_or_default()
    }

    fn local_addr(&self) -> SocketAddr {
        let local = self.shared.local_addr;
        if !local.ip().is_unspecified() {
            return local;
        }
        let inner = self.shared.inner.lock();
        inner.local_ips.get(&self.handle).map_or(local, |&ip| SocketAddr::new(ip, local.port()))
    }
}

/// A uTP connection: a reliable, ordered byte stream.
///
/// Implements both tokio's [`AsyncRead`](tokio::io::AsyncRead) /
/// [`AsyncWrite`](tokio::io::AsyncWrite) and the `futures` crate's
/// [`AsyncRead`](futures_io::AsyncRead) /
/// [`AsyncWrite`](futures_io::AsyncWrite); both share one implementation.
///
/// - A read returns `0` once the peer finished sending (its FIN arrived) and
///   everything was read; an aborted connection fails with
///   [`ConnectionReset`](io::ErrorKind::ConnectionReset) (the peer sent a
///   RESET), [`TimedOut`](io::ErrorKind::TimedOut) (the peer stopped
///   answering) or [`ConnectionAborted`](io::ErrorKind::ConnectionAborted)
///   (this side called [`UtpStream::reset`]).
/// - A write takes what fits in the connection's send buffer
///   ([`TransportConfig::send_buffer_size`]) and waits when it is full: a
///   slow reader slows the writer down through the receive window.
/// - Flushing returns at once: written bytes are already with the
///   connection, which sends them as fast as the peer and the network allow.
/// - Shutting down (tokio's `poll_shutdown`, futures' `poll_close`) is a
///   half-close: it queues a FIN after the data written so far and returns
///   at once, waiting neither for the data to be sent nor for the FIN to be
///   acknowledged. Reading goes on. Further writes fail with
///   [`BrokenPipe`](io::ErrorKind::BrokenPipe). To wait until the peer
///   received everything, use [`UtpStream::close`].
/// - Dropping the stream (both halves, if split) without closing it lets the
///   connection close gracefully in the background: the data written so
///   far is still delivered, then a FIN; the connection is freed once
///   closed (at the latest after [`TransportConfig::close_timeout`]).
///
/// # Messages (the metadata extension)
///
/// When both sides enable [`ExtFlags::METADATA`] in
/// [`TransportConfig::extensions`], the connection also carries message
/// boundaries: [`negotiated`](UtpStream::negotiated) says whether the peer
/// agreed. A message is the bytes written since the previous message end
/// (or since the start), followed by an end that carries 0 to
/// [`MAX_METADATA_LEN`] bytes of metadata:
/// [`write_message_end`](UtpStream::write_message_end) (or
/// [`write_message`](UtpStream::write_message) for body and end at once).
/// On the wire the end is a record on the message's last packet, and no
/// packet holds bytes of two messages. The reader sees the boundaries with
/// [`read_message_part`](UtpStream::read_message_part): it returns body
/// bytes, never reading past the end of the current message, then the end
/// with its metadata. The `utp-ext` crate builds whole-message
/// `Sink`/`Stream` types on this.
///
/// Bytes and messages are one stream, so the two APIs mix by these rules:
/// - Bytes written with `AsyncWrite` are part of the next message to be
///   ended: writing bytes and then ending a message makes them (the start
///   of) its body. Bytes written after the last message end and never
///   ended are plain bytes at the end of the stream.
/// - `AsyncRead` reads bytes across message boundaries. A message end it
///   reads past is discarded; an end exactly where the read stops is kept,
///   and the next [`read_message_part`](UtpStream::read_message_part)
///   returns it at once.
/// - So one connection can carry plain bytes, then messages, then plain
///   bytes again, provided the reader switches at the same points: it reads
///   the plain prefix with `AsyncRead` for exactly its length (a buffered
///   reader that reads ahead would eat into the first message), reads
///   messages until the last end, then reads plain bytes again.
/// - With a peer that did not negotiate messages, ending a message fails
///   with [`Unsupported`](io::ErrorKind::Unsupported) and nothing is sent;
///   the byte stream works as before.
/// - Message ends take room in the send buffer and in the peer's receive
///   window (their metadata plus a 32-byte overhead), so a sender of many
///   small or empty messages waits like a sender of bytes.
pub struct UtpStream {
    inner: Arc<StreamShared>,
}

impl fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Resets a stream from elsewhere (a Ctrl-C handler, a supervisor) without
/// owning it: cheap to clone, and it keeps nothing alive. Made by
/// [`UtpStream::abort_handle`] (and the halves' `abort_handle`).
///
/// ```no_run
/// # async fn demo(stream: libp2p_utp::UtpStream) {
/// let abort = stream.abort_handle();
/// tokio::spawn(async move {
///     // A deadline (or a Ctrl-C handler, as utpcat has).
///     tokio::time::sleep(std::time::Duration::from_secs(30)).await;
///     abort.reset(); // the peer sees a RESET, not a clean end
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AbortHandle {
    inner: std::sync::Weak<StreamShared>,
}

impl AbortHandle {
    /// Whether the stream still exists (was not dropped).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.inner.strong_count() > 0
    }

    /// Resets the stream (see [`UtpStream::reset`]) if it still exists;
    /// returns whether it did.
    pub fn reset(&self) -> bool {
        match self.inner.upgrade() {
            Some(stream) => {
                stream.reset();
                true
            }
            None => false,
        }
    }
}

impl UtpStream {
    pub(crate) fn new(inner: Arc<StreamShared>) -> Self {
        UtpStream { inner }
    }

    /// A handle that resets this stream from elsewhere (see
    /// [`AbortHandle`]).
    #[must_use]
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle { inner: Arc::downgrade(&self.inner) }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The local address: the socket's, or, on a socket bound to a
    /// wildcard address, the address the peer reached for an accepted
    /// connection (the destination of its SYN; with batched I/O).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The connection's counters and estimates (bytes, packets,
    /// retransmissions, RTT, windows).
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Closes gracefully: queues a FIN after the data written so far (like
    /// shutting down), then waits until the peer acknowledged it, that is
    /// until it received every byte written.
    ///
    /// Waits at most [`TransportConfig::close_timeout`] from the call and
    /// then fails with [`TimedOut`](io::ErrorKind::TimedOut) (the connection
    /// goes on closing in the background). The peer may still send: reading
    /// goes on after `close`.
    ///
    /// What a close guarantees: `Ok` means the peer has every byte. A stream
    /// dropped without `close` still sends its data and FIN from the
    /// socket's background task. If that task goes first (the program
    /// returns from `main` and its runtime shuts down), what is queued (the
    /// data, FINs and RESETs of streams already dropped, and those dropped
    /// afterwards) is sent once, best effort, as it goes; nothing is
    /// retransmitted after that. Await `close` before exiting to be sure.
    pub async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }

    /// Aborts the connection: sends a RESET and returns at once. Unsent and
    /// unread data is discarded; the peer's next read or write fails with
    /// [`ConnectionReset`](io::ErrorKind::ConnectionReset), ours with
    /// [`ConnectionAborted`](io::ErrorKind::ConnectionAborted).
    pub fn reset(&self) {
        self.inner.reset();
    }

    /// The extensions both sides agreed on in the handshake (see
    /// [`TransportConfig::extensions`]): [`ExtFlags::METADATA`] for
    /// messages, [`ExtFlags::SYN_DATA`] when the bytes given to
    /// [`UtpSocket::connect_with_data`](crate::UtpSocket::connect_with_data)
    /// rode on the SYN.
    #[must_use]
    pub fn negotiated(&self) -> ExtFlags {
        self.inner.negotiated()
    }

    /// Splits the stream into halves that can move to different tasks.
    /// Dropping the write half shuts down writing (queues a FIN); the
    /// connection is released when both halves are dropped.
    #[must_use]
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let read = OwnedReadHalf { inner: self.inner.clone() };
        (read, OwnedWriteHalf { inner: self.inner, shutdown_on_drop: true })
    }

    /// Splits a borrowed stream into a reading and a writing half, to use
    /// both at once in one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf { inner: &self.inner }, WriteHalf { inner: &self.inner })
    }
}

/// The reading half of a [`UtpStream`], from [`UtpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<StreamShared>,
}

impl OwnedReadHalf {
    /// A handle that resets the stream from elsewhere (see
    /// [`AbortHandle`]).
    #[must_use]
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle { inner: Arc::downgrade(&self.inner) }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The local address: the socket's, or, on a socket bound to a
    /// wildcard address, the address the peer reached for an accepted
    /// connection (the destination of its SYN; with batched I/O).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The connection's counters and estimates.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Puts the stream together again; fails (handing both halves back) if
    /// they come from different streams.
    pub fn reunite(self, mut write: OwnedWriteHalf) -> Result<UtpStream, ReuniteError> {
        if Arc::ptr_eq(&self.inner, &write.inner) {
            write.shutdown_on_drop = false;
            Ok(UtpStream { inner: self.inner })
        } else {
            Err(ReuniteError(self, write))
        }
    }
}

/// The writing half of a [`UtpStream`], from [`UtpStream::into_split`].
/// Dropping it shuts down writing (the peer reads the end of the stream
/// after the data written so far).
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<StreamShared>,
    shutdown_on_drop: bool,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            let _ = self.inner.shutdown();
        }
    }
}

impl OwnedWriteHalf {
    /// A handle that resets the stream from elsewhere (see
    /// [`AbortHandle`]).
    #[must_use]
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle { inner: Arc::downgrade(&self.inner) }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// The local address: the socket's, or, on a socket bound to a
    /// wildcard address, the address the peer reached for an accepted
    /// connection (the destination of its SYN; with batched I/O).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The connection's counters and estimates.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Closes the writing side gracefully and waits until the peer
    /// acknowledged every byte; see [`UtpStream::close`].
    pub async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }

    /// Aborts the connection with a RESET; see [`UtpStream::reset`].
    pub fn reset(&self) {
        self.inner.reset();
    }
}

/// The halves given to [`OwnedReadHalf::reunite`] belong to different
/// streams; both are handed back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of different uTP streams")
    }
}

impl std::error::Error for ReuniteError {}

/// The reading half of a borrowed [`UtpStream`], from [`UtpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    inner: &'a StreamShared,
}

/// The writing half of a borrowed [`UtpStream`], from [`UtpStream::split`].
/// Dropping it does not shut down writing.
#[derive(Debug)]
pub struct WriteHalf<'a> {
    inner: &'a StreamShared,
}

/// tokio's and futures' `AsyncRead` for a type with an `inner` that derefs
/// to [`StreamShared`].
macro_rules! impl_read {
    ($($ty:ty),*) => {$(
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                let n = std::task::ready!(self.inner.poll_read_with(cx, |conn| {
                    // Zero only what the read may fill, not all of an
                    // uninitialised buffer (a `Vec`'s spare capacity).
                    let want = buf.remaining().min(conn.readable_bytes().max(1));
                    conn.read(buf.initialize_unfilled_to(want))
                }))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }

        impl futures_io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_read(cx, buf)
            }
        }
    )*};
}

/// tokio's and futures' `AsyncWrite` for a type with an `inner` that derefs
/// to [`StreamShared`].
macro_rules! impl_write {
    ($($ty:ty),*) => {$(
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner.poll_flush()
            }

            /// Half-close: queues a FIN and returns at once (see
            /// [`UtpStream`]).
            fn poll_shutdown(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(self.inner.shutdown())
            }
        }

        impl futures_io::AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner.poll_flush()
            }

            /// Half-close: queues a FIN and returns at once (see
            /// [`UtpStream`]).
            fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(self.inner.shutdown())
            }
        }
    )*};
}

impl_read!(UtpStream, OwnedReadHalf, ReadHalf<'_>);
impl_write!(UtpStream, OwnedWriteHalf, WriteHalf<'_>);

/// The reading side of the message API for a type with an `inner` that
/// derefs to [`StreamShared`].
macro_rules! impl_message_read {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Polls for the next part of the current message: body bytes
            /// ([`MessageRead::Data`], never past the message's end), its
            /// end with the metadata ([`MessageRead::End`]), or the end of
            /// the stream ([`MessageRead::Eof`]). Without a message end in
            /// sight every readable byte counts as body. With an empty
            /// `buf` it returns `Data(0)` unless an end is next. See
            /// [`UtpStream`]'s section on messages.
            pub fn poll_read_message_part(
                &mut self,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<MessageRead>> {
                self.inner.poll_read_message(cx, buf)
            }

            /// Reads the next part of the current message; see
            /// [`poll_read_message_part`](Self::poll_read_message_part).
            pub async fn read_message_part(&mut self, buf: &mut [u8]) -> io::Result<MessageRead> {
                poll_fn(|cx| self.inner.poll_read_message(cx, buf)).await
            }
        }
    )*};
}

/// `negotiated` for the halves.
macro_rules! impl_negotiated {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// The extensions negotiated with the peer; see
            /// [`UtpStream::negotiated`].
            #[must_use]
            pub fn negotiated(&self) -> ExtFlags {
                self.inner.negotiated()
            }
        }
    )*};
}

/// The writing side of the message API for a type with an `inner` that
/// derefs to [`StreamShared`].
macro_rules! impl_message_write {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Polls to end the current message with `meta` (0 to
            /// [`MAX_METADATA_LEN`] bytes): the bytes written since the
            /// previous end become its body. Pending while the send buffer
            /// has no room for the end. Fails with
            /// [`Unsupported`](io::ErrorKind::Unsupported) when the peer
            /// did not negotiate messages, with
            /// [`InvalidInput`](io::ErrorKind::InvalidInput) when `meta` is
            /// too long. See [`UtpStream`]'s section on messages.
            pub fn poll_write_message_end(
                &mut self,
                cx: &mut Context<'_>,
                meta: &[u8],
            ) -> Poll<io::Result<()>> {
                self.inner.poll_write_message_end(cx, meta)
            }

            /// Ends the current message with `meta`; see
            /// [`poll_write_message_end`](Self::poll_write_message_end).
            pub async fn write_message_end(&mut self, meta: &[u8]) -> io::Result<()> {
                poll_fn(|cx| self.inner.poll_write_message_end(cx, meta)).await
            }

            /// Writes `body` and ends the message with `meta`, waiting for
            /// room as a write does. Checks `meta` and the negotiation
            /// before writing anything.
            pub async fn write_message(&mut self, meta: &[u8], body: &[u8]) -> io::Result<()> {
                self.inner.write_message(meta, body).await
            }
        }
    )*};
}

impl_message_read!(UtpStream, OwnedReadHalf, ReadHalf<'_>);
impl_message_write!(UtpStream, OwnedWriteHalf, WriteHalf<'_>);
impl_negotiated!(OwnedReadHalf, OwnedWriteHalf, ReadHalf<'_>, WriteHalf<'_>);
