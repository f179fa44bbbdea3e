//! Typed protobuf messages with [`prost`]: the body is the encoded message,
//! the metadata its fully qualified type name ([`prost::Name::full_name`],
//! for example `echo.v1.Request`), checked on receipt.
//!
//! - [`ProstMessageStream<S, R>`] sends `S` and receives `R` (the same type
//!   by default): a client of a request/response protocol is a
//!   `ProstMessageStream<Request, Response>`, its server a
//!   `ProstMessageStream<Response, Request>`.
//! - [`encode`], [`decode`] and [`is`] work on [`Message`]s, for
//!   connections that carry several message types: dispatch on the
//!   metadata, then decode.
//!
//! Messages derived with `#[derive(prost::Message)]` implement
//! [`prost::Name`] by hand (two constants); `prost-build` generates it with
//! `enable_type_names()`.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use libp2p_utp::UtpStream;

use crate::message::{Message, MessageConfig, MessageError, MessageStream, NotNegotiated};
use crate::MAX_METADATA_LEN;

/// What went wrong with a typed message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProstError {
    /// Sending or receiving the message failed.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The body is not a valid encoding of the expected type.
    #[error("message {type_name} does not decode: {source}")]
    Decode {
        /// The expected type.
        type_name: String,
        /// Why.
        source: prost::DecodeError,
    },
    /// The metadata names another type than the one expected.
    #[error("expected a {expected} message, received {received:?}")]
    UnexpectedType {
        /// The type expected.
        expected: String,
        /// The metadata received (as text, lossily).
        received: String,
    },
    /// The type's full name is too long to be carried as metadata.
    #[error("type name {type_name} is longer than the {MAX_METADATA_LEN} bytes of metadata")]
    NameTooLong {
        /// The name.
        type_name: String,
    },
}

impl From<ProstError> for io::Error {
    fn from(e: ProstError) -> Self {
        match e {
            ProstError::Message(e) => e.into(),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// `msg` as a [`Message`]: its full type name as metadata, its encoding as
/// body.
pub fn encode<M: prost::Name>(msg: &M) -> Result<Message, ProstError> {
    let type_name = M::full_name();
    if type_name.len() > MAX_METADATA_LEN {
        return Err(ProstError::NameTooLong { type_name });
    }
    Ok(Message { meta: type_name.into_bytes(), body: msg.encode_to_vec() })
}

/// `true` when `msg`'s metadata names type `M`.
#[must_use]
pub fn is<M: prost::Name>(msg: &Message) -> bool {
    msg.meta == M::full_name().as_bytes()
}

/// Decodes `msg` as an `M`, after checking that its metadata names `M`.
pub fn decode<M: prost::Name + Default>(msg: &Message) -> Result<M, ProstError> {
    let expected = M::full_name();
    if msg.meta != expected.as_bytes() {
        return Err(ProstError::UnexpectedType {
            expected,
            received: String::from_utf8_lossy(&msg.meta).into_owned(),
        });
    }
    M::decode(msg.body.as_slice())
        .map_err(|source| ProstError::Decode { type_name: expected, source })
}

/// Typed protobuf messages over a [`MessageStream`]: sends `S`, receives
/// `R`. See the [module](self) for the format.
///
/// Implements [`Sink<S>`](futures_sink::Sink) and
/// [`Stream<Item = Result<R, ProstError>>`](futures_core::Stream), with the
/// backpressure and limits of the [`MessageStream`] under it.
pub struct ProstMessageStream<S, R = S> {
    inner: MessageStream,
    _types: PhantomData<fn(S) -> R>,
}

impl<S, R> fmt::Debug for ProstMessageStream<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProstMessageStream")
            .field("send", &std::any::type_name::<S>())
            .field("recv", &std::any::type_name::<R>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: prost::Name, R: prost::Name + Default> ProstMessageStream<S, R> {
    /// Typed messages over `stream` (default [`MessageConfig`]); fails,
    /// handing the stream back, when the peer did not negotiate messages.
    pub fn new(stream: UtpStream) -> Result<Self, NotNegotiated> {
        Ok(Self::from_message_stream(MessageStream::new(stream)?))
    }

    /// Typed messages over `stream` with `config`.
    pub fn with_config(stream: UtpStream, config: MessageConfig) -> Result<Self, NotNegotiated> {
        Ok(Self::from_message_stream(MessageStream::with_config(stream, config)?))
    }

    /// Typed messages over a message stream.
    #[must_use]
    pub fn from_message_stream(inner: MessageStream) -> Self {
        ProstMessageStream { inner, _types: PhantomData }
    }

    /// The message stream under it.
    #[must_use]
    pub fn get_ref(&self) -> &MessageStream {
        &self.inner
    }

    /// The message stream under it (for untyped messages in between).
    pub fn get_mut(&mut self) -> &mut MessageStream {
        &mut self.inner
    }

    /// The message stream under it.
    #[must_use]
    pub fn into_inner(self) -> MessageStream {
        self.inner
    }

    /// Sends `msg`; see [`MessageStream::send`].
    pub async fn send(&mut self, msg: &S) -> Result<(), ProstError> {
        let msg = encode(msg)?;
        Ok(self.inner.send_message(msg).await?)
    }

    /// Receives the next message; `None` once the peer finished sending.
    pub async fn recv(&mut self) -> Result<Option<R>, ProstError> {
        match self.inner.recv().await? {
            Some(msg) => decode(&msg).map(Some),
            None => Ok(None),
        }
    }

    /// Flushes, then closes the sending side and waits for the peer's
    /// acknowledgement; see [`MessageStream::close`].
    pub async fn close(&mut self) -> Result<(), ProstError> {
        Ok(self.inner.close().await?)
    }
}

impl<S, R: prost::Name + Default> futures_core::Stream for ProstMessageStream<S, R> {
    type Item = Result<R, ProstError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match ready!(this.inner.poll_recv(cx)) {
            Ok(Some(msg)) => Poll::Ready(Some(decode(&msg))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

impl<S: prost::Name, R> futures_sink::Sink<S> for ProstMessageStream<S, R> {
    type Error = ProstError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx).map_err(Into::into)
    }

    fn start_send(self: Pin<&mut Self>, item: S) -> Result<(), Self::Error> {
        let msg = encode(&item)?;
        Pin::new(&mut self.get_mut().inner).start_send(msg).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx).map_err(Into::into)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx).map_err(Into::into)
    }
}
