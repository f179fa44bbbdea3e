//! [`MessageStream`]: whole messages with metadata over a [`UtpStream`].

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use libp2p_utp::{ExtFlags, MessageRead, UtpStream};

/// Longest metadata a message can carry. The record's length byte would
/// allow 255 (and this crate receives up to 255 from other
/// implementations); the engine, `utp-proto`, refuses to send more than 253
/// bytes, and so does this crate, with [`MessageError::MetadataTooLong`].
pub const MAX_METADATA_LEN: usize = libp2p_utp::MAX_METADATA_LEN;

/// Default of [`MessageConfig::max_message_size`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Bytes read from the connection at a time while receiving a body.
const READ_CHUNK: usize = 64 * 1024;

/// One message: its metadata and its body.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// 0 to [`MAX_METADATA_LEN`] bytes that travel in the record of the
    /// message's last packet: a type tag, a request id, a content type...
    pub meta: Vec<u8>,
    /// The body, of any length up to the configured maximum (empty allowed).
    pub body: Vec<u8>,
}

impl Message {
    /// A message from its metadata and body.
    pub fn new(meta: impl Into<Vec<u8>>, body: impl Into<Vec<u8>>) -> Self {
        Message { meta: meta.into(), body: body.into() }
    }

    /// The metadata and the body.
    #[must_use]
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        (self.meta, self.body)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("meta", &String::from_utf8_lossy(&self.meta))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Settings of a [`MessageStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageConfig {
    /// Largest body sent or received, in bytes. A received message that
    /// grows past it is dropped (what arrived is discarded as it arrives,
    /// never buffered) and reported as [`MessageError::TooLarge`]; the
    /// stream goes on with the next message. Sending a larger body fails
    /// before anything is written. Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub max_message_size: usize,
}

impl Default for MessageConfig {
    fn default() -> Self {
        MessageConfig { max_message_size: DEFAULT_MAX_MESSAGE_SIZE }
    }
}

impl MessageConfig {
    /// The same settings with another [`max_message_size`](Self::max_message_size).
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}

/// What went wrong sending or receiving a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The connection failed (reset, timed out, closed) or was shut down
    /// for writing; see the [`io::ErrorKind`].
    #[error("uTP connection: {0}")]
    Io(#[from] io::Error),
    /// The metadata is longer than [`MAX_METADATA_LEN`].
    #[error("message metadata of {len} bytes is longer than the {MAX_METADATA_LEN} allowed")]
    MetadataTooLong {
        /// Its length.
        len: usize,
    },
    /// A message is larger than [`MessageConfig::max_message_size`]. When
    /// receiving, the rest of it is skipped and the next
    /// [`recv`](MessageStream::recv) returns the message after it.
    #[error("message of {size} bytes or more exceeds the maximum of {max}")]
    TooLarge {
        /// Its size (when receiving: the bytes seen when it was refused;
        /// the message may be longer).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The peer finished sending in the middle of a message: bytes after
    /// its last message end were never ended.
    #[error("the stream ended {received} bytes into a message that never ended")]
    Truncated {
        /// Bytes of the unfinished message.
        received: usize,
    },
}

impl From<MessageError> for io::Error {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Io(e) => e,
            e @ (MessageError::MetadataTooLong { .. } | MessageError::TooLarge { .. }) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            e @ MessageError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
        }
    }
}

/// [`MessageStream::new`] was given a stream whose peer did not negotiate
/// metadata-framed messages. The stream comes back unharmed with
/// [`into_stream`](Self::into_stream): the byte stream works as before.
pub struct NotNegotiated {
    stream: UtpStream,
    negotiated: ExtFlags,
}

impl NotNegotiated {
    /// The stream, to go on as a byte stream.
    #[must_use]
    pub fn into_stream(self) -> UtpStream {
        self.stream
    }

    /// What the peer did agree to.
    #[must_use]
    pub fn negotiated(&self) -> ExtFlags {
        self.negotiated
    }
}

impl fmt::Debug for NotNegotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotNegotiated")
            .field("peer", &self.stream.peer_addr())
            .field("negotiated", &self.negotiated)
            .finish()
    }
}

impl fmt::Display for NotNegotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the uTP peer {} did not negotiate metadata-framed messages (extension 2, flag \
             METADATA): it may not support them, or one side did not enable \
             ExtFlags::METADATA in TransportConfig::extensions; the byte stream still works",
            self.stream.peer_addr()
        )
    }
}

impl std::error::Error for NotNegotiated {}

impl From<NotNegotiated> for io::Error {
    fn from(e: NotNegotiated) -> Self {
        io::Error::new(io::ErrorKind::Unsupported, e)
    }
}

/// A message handed over and not yet fully with the connection.
struct Outgoing {
    msg: Message,
    written: usize,
}

/// Whole messages, each with its metadata, over a [`UtpStream`] whose peer
/// negotiated the metadata extension.
///
/// - [`send`](Self::send) (or the [`Sink`](futures_sink::Sink) impl) hands a
///   message to the connection: the body is written, then the end with the
///   metadata. It waits while the send buffer is full, like a write to the
///   byte stream: a slow reader slows the sender down. One message at most
///   waits inside the `MessageStream` itself. The peer receives the message
///   with the same boundaries and metadata, however the body was split
///   into packets.
/// - [`recv`](Self::recv) (or the [`Stream`](futures_core::Stream) impl)
///   returns the next whole message, `None` once the peer finished sending
///   (after its last message), [`MessageError::TooLarge`] for a message
///   over [`MessageConfig::max_message_size`] (skipped, never buffered past
///   the limit), [`MessageError::Truncated`] when the stream ends in the
///   middle of a message.
/// - Sending and receiving are independent: split the stream with
///   `futures::StreamExt::split` to use them from two tasks.
///
/// `send` copies the body unless it is given a `Vec`; a send cancelled
/// while waiting is not lost: the message is still sent, in order, by the
/// next `send`, `flush` or `close`.
pub struct MessageStream {
    stream: UtpStream,
    config: MessageConfig,
    /// Body of the message being received.
    body: Vec<u8>,
    /// Where received bytes land before joining `body`.
    scratch: Box<[u8]>,
    /// Skipping the rest of a message that was too large.
    discarding: bool,
    /// The peer finished sending and everything was read.
    eof: bool,
    outgoing: Option<Outgoing>,
}

impl fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageStream")
            .field("stream", &self.stream)
            .field("config", &self.config)
            .field("receiving", &self.body.len())
            .field("sending", &self.outgoing.as_ref().map(|o| o.msg.body.len() - o.written))
            .finish()
    }
}

impl MessageStream {
    /// Messages over `stream` with the default [`MessageConfig`].
    ///
    /// Fails, handing the stream back, when the peer did not negotiate the
    /// metadata extension (see [`UtpStream::negotiated`]).
    pub fn new(stream: UtpStream) -> Result<Self, NotNegotiated> {
        Self::with_config(stream, MessageConfig::default())
    }

    /// Messages over `stream` with `config`; see [`MessageStream::new`].
    pub fn with_config(stream: UtpStream, config: MessageConfig) -> Result<Self, NotNegotiated> {
        let negotiated = stream.negotiated();
        if !negotiated.contains(ExtFlags::METADATA) {
            return Err(NotNegotiated { stream, negotiated });
        }
        Ok(MessageStream {
            stream,
            config,
            body: Vec::new(),
            scratch: Box::default(),
            discarding: false,
            eof: false,
            outgoing: None,
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &MessageConfig {
        &self.config
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr()
    }

    /// The underlying stream (for its statistics, addresses...).
    #[must_use]
    pub fn get_ref(&self) -> &UtpStream {
        &self.stream
    }

    /// The underlying stream. Reading or writing bytes through it in the
    /// middle of a message mixes them into that message (see
    /// [`UtpStream`]'s rules for mixing bytes and messages).
    pub fn get_mut(&mut self) -> &mut UtpStream {
        &mut self.stream
    }

    /// The underlying stream, to go on with bytes. A message handed to
    /// [`Sink::start_send`](futures_sink::Sink::start_send) and not yet
    /// flushed is dropped, and so is a partly received one: flush first,
    /// and switch between messages.
    #[must_use]
    pub fn into_inner(self) -> UtpStream {
        self.stream
    }

    fn check(&self, meta: &[u8], body: &[u8]) -> Result<(), MessageError> {
        if meta.len() > MAX_METADATA_LEN {
            return Err(MessageError::MetadataTooLong { len: meta.len() });
        }
        if body.len() > self.config.max_message_size {
            return Err(MessageError::TooLarge {
                size: body.len(),
                max: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// Sends a message: waits until the message before it is with the
    /// connection, then hands this one over (body, then the end with
    /// `meta`), waiting for room in the send buffer as a write does.
    /// Returns once the connection has the whole message, not once the
    /// peer received it (see [`close`](Self::close)).
    pub async fn send(
        &mut self,
        meta: impl Into<Vec<u8>>,
        body: impl Into<Vec<u8>>,
    ) -> Result<(), MessageError> {
        self.send_message(Message::new(meta, body)).await
    }

    /// Sends a [`Message`]; see [`send`](Self::send).
    pub async fn send_message(&mut self, msg: Message) -> Result<(), MessageError> {
        self.check(&msg.meta, &msg.body)?;
        poll_fn(|cx| self.poll_flush_outgoing(cx)).await?;
        self.outgoing = Some(Outgoing { msg, written: 0 });
        poll_fn(|cx| self.poll_flush_outgoing(cx)).await
    }

    /// Hands the pending message to the connection.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MessageError>> {
        while let Some(out) = self.outgoing.as_mut() {
            while out.written < out.msg.body.len() {
                let body = &out.msg.body[out.written..];
                let n = ready!(tokio::io::AsyncWrite::poll_write(
                    Pin::new(&mut self.stream),
                    cx,
                    body
                ))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                out.written += n;
            }
            ready!(self.stream.poll_write_message_end(cx, &out.msg.meta))?;
            self.outgoing = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Receives the next message; `None` once the peer finished sending
    /// after a complete message. See [`MessageStream`] for the errors.
    pub async fn recv(&mut self) -> Result<Option<Message>, MessageError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message; see [`recv`](Self::recv).
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Message>, MessageError>> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; READ_CHUNK].into_boxed_slice();
        }
        loop {
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            let max = self.config.max_message_size;
            // Read one byte past the limit at most, to notice a message
            // that is too large.
            let room = if self.discarding {
                READ_CHUNK
            } else {
                (max - self.body.len()).saturating_add(1).min(READ_CHUNK)
            };
            let part = ready!(self.stream.poll_read_message_part(cx, &mut self.scratch[..room]))?;
            match part {
                MessageRead::Data(n) => {
                    if self.discarding {
                        continue;
                    }
                    self.body.extend_from_slice(&self.scratch[..n]);
                    if self.body.len() > max {
                        let size = self.body.len();
                        self.body = Vec::new();
                        self.discarding = true;
                        return Poll::Ready(Err(MessageError::TooLarge { size, max }));
                    }
                }
                MessageRead::End(meta) => {
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    let body = std::mem::take(&mut self.body);
                    return Poll::Ready(Ok(Some(Message { meta: meta.into_vec(), body })));
                }
                MessageRead::Eof => {
                    self.eof = true;
                    let received = std::mem::take(&mut self.body).len();
                    if received > 0 || self.discarding {
                        self.discarding = false;
                        return Poll::Ready(Err(MessageError::Truncated { received }));
                    }
                    return Poll::Ready(Ok(None));
                }
                _ => return Poll::Ready(Err(io::Error::other("unknown message part").into())),
            }
        }
    }

    /// Waits until every message sent is with the connection.
    pub async fn flush(&mut self) -> Result<(), MessageError> {
        poll_fn(|cx| self.poll_flush_outgoing(cx)).await
    }

    /// Flushes, then closes the sending side gracefully: a FIN follows the
    /// last message and this waits until the peer acknowledged everything
    /// (see [`UtpStream::close`]). Receiving goes on.
    pub async fn close(&mut self) -> Result<(), MessageError> {
        self.flush().await?;
        self.stream.close().await?;
        Ok(())
    }
}

impl futures_core::Stream for MessageStream {
    type Item = Result<Message, MessageError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Result::transpose)
    }
}

impl futures_core::FusedStream for MessageStream {
    fn is_terminated(&self) -> bool {
        self.eof
    }
}

impl futures_sink::Sink<Message> for MessageStream {
    type Error = MessageError;

    /// Ready once the previous message is with the connection.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_flush_outgoing(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        this.check(&msg.meta, &msg.body)?;
        if this.outgoing.is_some() {
            return Err(io::Error::other("start_send without poll_ready").into());
        }
        this.outgoing = Some(Outgoing { msg, written: 0 });
        Ok(())
    }

    /// Ready once every message is with the connection (not once the peer
    /// received it).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_flush_outgoing(cx)
    }

    /// Flushes, then half-closes: a FIN follows the last message (it does
    /// not wait for the peer's acknowledgement; [`MessageStream::close`]
    /// does).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        ready!(tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut this.stream), cx))?;
        Poll::Ready(Ok(()))
    }
}
