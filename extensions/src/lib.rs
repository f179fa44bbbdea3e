//! utp-ext: the two uTP extensions of this project, data carried on the SYN
//! and metadata-framed messages, on top of [`libp2p_utp`].
//!
//! - [`MessageStream`]: whole messages, each with 0 to
//!   [`MAX_METADATA_LEN`] bytes of metadata, over a [`UtpStream`] whose peer
//!   negotiated the metadata extension; `send`/`recv` and
//!   `Sink`/`Stream`, exact boundaries, empty bodies, a size cap, the byte
//!   stream's backpressure.
//! - [`ProstMessageStream`] (feature `prost`, on by default): typed
//!   protobuf messages, the type name in the metadata; see [`prost_codec`].
//! - [`syn_data`]: the first bytes of a connection on its SYN, one round
//!   trip earlier: [`UtpSocket::connect_with_data`].
//! - [`enable`] / [`config`]: turn both extensions on for a socket.
//!
//! Both extensions are negotiated in the handshake and cost nothing with
//! peers that do not know them (libutp, libtorrent): such a peer sees a
//! normal uTP connection, `MessageStream` creation fails with
//! [`NotNegotiated`] (handing the byte stream back), and SYN data is sent
//! again as ordinary data.
//!
//! # Example
//!
//! ```
//! use libp2p_utp::UtpSocket;
//! use utp_ext::{MessageStream, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
//! let client = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
//! let addr = server.local_addr()?;
//!
//! let echo = tokio::spawn(async move {
//!     let mut messages = MessageStream::new(server.accept().await?)?;
//!     while let Some(msg) = messages.recv().await? {
//!         messages.send_message(msg).await?; // same metadata, same body
//!     }
//!     messages.close().await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//!
//! let mut messages = MessageStream::new(client.connect(addr).await?)?;
//! messages.send("greeting", "hello").await?;
//! messages.send("empty", Vec::new()).await?;
//! assert_eq!(messages.recv().await?, Some(Message::new("greeting", "hello")));
//! assert_eq!(messages.recv().await?, Some(Message::new("empty", "")));
//! messages.close().await?;
//! assert_eq!(messages.recv().await?, None);
//! echo.await?.unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Mixing bytes and messages on one connection
//!
//! A [`MessageStream`] is a view of the [`UtpStream`]'s bytes with the
//! boundaries the peer marked; the rules of
//! [`UtpStream`'s section on messages](libp2p_utp::UtpStream#messages-the-metadata-extension)
//! apply. In short: switch between messages (after a message end on both
//! sides); bytes written and not ended become the start of the next
//! message; plain reads discard the message ends they read past; the
//! reader must read a plain prefix with exactly its length.
//! [`MessageStream::into_inner`] gives the byte stream back.
//!
//! # Wire format
//!
//! Everything here is uTP (BEP 29) as libutp and libtorrent speak it, plus
//! extension records `[next_type u8][len u8][len bytes]` chained after the
//! 20-byte header, with this project's meaning of extension type 2. Another
//! implementation can interoperate by following this section.
//!
//! ## Negotiation (SYN and the STATE that answers it)
//!
//! An initiator that wants an extension puts one ext 2 record of exactly 8
//! bytes on its SYN (libutp already sends and accepts 8-byte ext 2 records
//! on SYNs, its "extension bits", and drops any other length):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+-------+---------------+-------------------------------+
//! | type  | ver=1 | extension = 2 |        connection_id          |  uTP header,
//! +-------+-------+---------------+-------------------------------+  20 bytes
//! |                      ... 16 more bytes ...                    |
//! +---------------+---------------+-------------------------------+
//! | next_type = 0 |  len = 8      |  'U' (0x55)   |  'T' (0x54)   |  ext 2 record,
//! +---------------+---------------+---------------+---------------+  10 bytes
//! |  'P' (0x50)   |  'X' (0x58)   |        version = 1 (u16 BE)   |
//! +---------------+---------------+-------------------------------+
//! |        flags (u16 BE)         |  SYN only: payload (SYN data) ...
//! +-------------------------------+-------------------------------
//!
//! flags: bit 0 (0x0001) METADATA  metadata records on DATA (messages)
//!        bit 1 (0x0002) SYN_DATA  the SYN's payload is stream data
//!        other bits: reserved, sent as 0, ignored
//! ```
//!
//! - The acceptor that knows the record answers with the same 8-byte
//!   record on its STATE (the SYN-ACK), `flags` = the offered flags it
//!   accepts (a subset). No record, or a record without the `UTPX` magic
//!   (some libutp builds answer with their own 8 bytes), means nothing is
//!   negotiated. An extension is on only when both flags say so.
//! - Every copy of the SYN-ACK (answers to retransmitted SYNs included)
//!   carries the same record. A reader accepts any version and reads the
//!   flags; this implementation writes version 1.
//! - No ext 2 record in any other form is ever sent to a peer that did not
//!   negotiate `METADATA`.
//!
//! ## SYN data
//!
//! ```text
//!  initiator                                             acceptor
//!      |  SYN seq=S  [ext2 UTPX v1 flags=3]  "request"       |
//!      |---------------------------------------------------->|  application
//!      |  STATE seq=T ack=S  [ext2 UTPX v1 flags=3]          |  reads "request"
//!      |<----------------------------------------------------|  and answers at
//!      |  DATA seq=T ack=S  "response"                       |  once
//!      |<----------------------------------------------------|
//!      |  DATA seq=S+1 ack=T  (next bytes after "request")   |
//!      |---------------------------------------------------->|
//! ```
//!
//! - The SYN's payload (at most one packet, capped by
//!   `TransportConfig::max_syn_data`, 1024 bytes by default) is the first
//!   bytes of the initiator's stream; the SYN still consumes only its own
//!   sequence number S.
//! - An acceptor with `SYN_DATA` enabled, whose cap the payload fits,
//!   delivers it as the first stream bytes when it creates the connection,
//!   and answers with `SYN_DATA` set. A retransmitted SYN (same S, same
//!   payload) gets the identical STATE and delivers nothing again.
//! - If the answer lacks `SYN_DATA` (refused by configuration, over the
//!   acceptor's cap, or a peer that ignores SYN payloads, as libutp and
//!   libtorrent do), the initiator sends the same bytes again as ordinary
//!   DATA from seq S+1. Either way the acceptor's application reads the
//!   same stream.
//! - The acceptor may answer before the handshake completes, within the
//!   anti-amplification limit: at most three times the bytes it received
//!   from the initiator (its SYN, request included) until the initiator
//!   acknowledges the SYN-ACK. A response that fits leaves at once, so a
//!   request on the SYN gets its response after one round trip instead of
//!   two; the rest follows the initiator's acknowledgement.
//!
//! ## Metadata records (framed messages)
//!
//! Between peers that negotiated `METADATA`, a DATA packet may carry an
//! ext 2 record of 0 to 255 bytes (this implementation sends at most 253):
//!
//! ```text
//!  DATA packet that ends a message:
//! +----------------------+-------------------------+--------------------------+---------------+
//! | uTP header, 20 bytes | selective ACK, optional | ext 2 record             | payload: the  |
//! | type DATA (0)        | [next=2][len][bitmask]  | [next=0][len=M][M bytes] | last bytes of |
//! | extension = 1 or 2   |                         |  the metadata, M 0..=255 | the body, or  |
//! +----------------------+-------------------------+--------------------------+ none          |
//!                                                                             +---------------+
//!  A 3000-byte message with metadata "meta", then an empty message:
//!    DATA seq=n    no ext 2        body[0..1382]
//!    DATA seq=n+1  no ext 2        body[1382..2764]
//!    DATA seq=n+2  ext 2 "meta"    body[2764..3000]   <- last packet of the message
//!    DATA seq=n+3  ext 2 ""        no payload         <- a whole message: empty body
//! ```
//!
//! - The record marks its packet as the LAST packet of a message; the
//!   metadata belongs to the whole message. The message's body is the
//!   payload of the DATA packets after the previous packet with a record,
//!   up to and including this one, in sequence order.
//! - Packets never mix two messages. A message may have an empty body: a
//!   DATA packet with the record and no payload.
//! - The record may come anywhere in the chain (this implementation puts a
//!   selective ACK first when it sends one). ext 2 on FIN, STATE and RESET
//!   is not a metadata record.
//! - Flow control: a message end counts against the receive window as
//!   `32 + M` bytes (besides its payload) while the receiver holds it, and
//!   the sender counts it the same way in flight. A sender that does not
//!   only risks having packets dropped at a full window (and resent).
//!
//! The metadata limit: the record's length byte allows 255 bytes, and this
//! implementation accepts up to 255 from a peer. Its engine refuses to
//! *send* more than 253 ([`MAX_METADATA_LEN`]; `WriteError::MetadataTooLong`
//! in `utp-proto`), so a `MessageStream` refuses longer metadata before
//! writing anything.
//!
//! [`UtpSocket::connect_with_data`]: libp2p_utp::UtpSocket::connect_with_data
#![warn(missing_docs)]

mod message;
#[cfg(feature = "prost")]
pub mod prost_codec;
pub mod syn_data;

pub use libp2p_utp::{ExtFlags, UtpStream};
pub use message::{
    Message, MessageConfig, MessageError, MessageStream, NotNegotiated, DEFAULT_MAX_MESSAGE_SIZE,
    MAX_METADATA_LEN,
};
#[cfg(feature = "prost")]
pub use prost_codec::{ProstError, ProstMessageStream};

/// Both extensions: metadata-framed messages and SYN data.
pub const ALL: ExtFlags = ExtFlags(ExtFlags::METADATA.0 | ExtFlags::SYN_DATA.0);

/// Offers and accepts both extensions on every connection of a socket
/// configured with `config` (see `TransportConfig::extensions`), besides
/// those already set there (the default `LARGE_PACKETS`, which lets path
/// MTU discovery go past 1500 bytes between peers of this library, stays).
///
/// ```
/// use libp2p_utp::ExtFlags;
/// let mut config = libp2p_utp::Config::default();
/// utp_ext::enable(&mut config);
/// let on = config.transport().extensions;
/// assert!(on.contains(ExtFlags::METADATA) && on.contains(ExtFlags::SYN_DATA));
/// assert!(on.contains(ExtFlags::LARGE_PACKETS));
/// ```
pub fn enable(config: &mut libp2p_utp::Config) {
    let t = config.transport_mut();
    t.extensions = ExtFlags(t.extensions.0 | ALL.0);
}

/// The default socket configuration with both extensions enabled.
#[must_use]
pub fn config() -> libp2p_utp::Config {
    let mut config = libp2p_utp::Config::default();
    enable(&mut config);
    config
}
