//! Data on the SYN: a request that reaches the server half a round trip
//! after the dial, so that its response arrives one round trip after it
//! instead of two.
//!
//! Dial with [`UtpSocket::connect_with_data`]: the bytes are the first of
//! the stream. With a peer that negotiated [`ExtFlags::SYN_DATA`] they ride
//! on the SYN (up to `TransportConfig::max_syn_data`, 1024 bytes by
//! default, and one packet; the rest follows as data); otherwise they are
//! sent as ordinary data once connected. The server reads them as the first
//! bytes of the accepted stream either way; [`accepted`] says which
//! happened. SYN data is plain bytes: a message end cannot ride the SYN,
//! since whether messages are negotiated is only known from the answer. A
//! protocol that starts with a request on the SYN and goes on with
//! messages frames that first request itself (see the `msg-service`
//! example).
//!
//! ```
//! use libp2p_utp::UtpSocket;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
//! let client = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(async move {
//!     let mut stream = server.accept().await?;
//!     let mut request = [0u8; 4];
//!     stream.read_exact(&mut request).await?; // there already: it came with the SYN
//!     stream.write_all(b"pong").await?;
//!     stream.close().await
//! });
//!
//! let mut stream = client.connect_with_data(addr, b"ping").await?;
//! assert!(utp_ext::syn_data::accepted(&stream)); // the bytes rode on the SYN
//! let mut response = [0u8; 4];
//! stream.read_exact(&mut response).await?;
//! assert_eq!(&response, b"pong");
//! # Ok(())
//! # }
//! ```
//!
//! [`UtpSocket::connect_with_data`]: libp2p_utp::UtpSocket::connect_with_data

use libp2p_utp::{ExtFlags, UtpStream};

/// Whether SYN data was negotiated on this connection: the peer accepts
/// data on the SYN, so the bytes given to
/// [`connect_with_data`](libp2p_utp::UtpSocket::connect_with_data) rode on
/// it (`false`: they were sent again as ordinary data). On the accepting
/// side: whether a SYN payload was taken as stream data. (A plain
/// `connect` to a peer that accepts SYN data also says `true`; it simply
/// had nothing to send early.)
#[must_use]
pub fn accepted(stream: &UtpStream) -> bool {
    stream.negotiated().contains(ExtFlags::SYN_DATA)
}
