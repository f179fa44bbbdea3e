//! `MessageStream`, `ProstMessageStream` and SYN data over real sockets on
//! loopback.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libp2p_utp::{Config, ExtFlags, UtpSocket, UtpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_ext::{
    Message, MessageConfig, MessageError, MessageStream, ProstError, ProstMessageStream,
    MAX_METADATA_LEN,
};

const LIMIT: Duration = Duration::from_secs(60);

async fn socket(config: Config) -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0", config).await.expect("bind")
}

/// A connected pair: (client side, server side).
async fn pair(client: Config, server: Config) -> (UtpStream, UtpStream) {
    let s = socket(server).await;
    let c = socket(client).await;
    let addr = s.local_addr().unwrap();
    // A stream keeps its socket's port and task alive.
    let accept = tokio::spawn(async move { s.accept().await.expect("accept") });
    let client = c.connect(addr).await.expect("connect");
    (client, accept.await.unwrap())
}

async fn message_pair() -> (MessageStream, MessageStream) {
    let (c, s) = pair(utp_ext::config(), utp_ext::config()).await;
    (MessageStream::new(c).expect("negotiated"), MessageStream::new(s).expect("negotiated"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_size_both_ways() {
    let (mut a, mut b) = message_pair().await;
    let mut msgs = Vec::new();
    for (i, size) in [0, 1, 1378, 1379, 1380, 1381, 1382, 1383, 4096, 100_000, 10 << 20, 0, 1]
        .into_iter()
        .enumerate()
    {
        msgs.push(Message::new(format!("m{i}"), pattern(size, i as u8)));
    }
    for len in 0..=MAX_METADATA_LEN {
        msgs.push(Message::new(vec![len as u8; len], pattern(len % 5, 0)));
    }
    let sent = msgs.clone();
    let sender = tokio::spawn(async move {
        for m in msgs {
            a.send_message(m).await.unwrap();
        }
        a.close().await.unwrap();
        // And everything the other side sends back.
        let mut back = Vec::new();
        while let Some(m) = a.recv().await.unwrap() {
            back.push(m);
        }
        back
    });
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while let Some(m) = b.recv().await.unwrap() {
            got.push(m);
        }
    })
    .await
    .expect("in time");
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(g == s, "message {i} differs: {g:?} vs {s:?}");
    }
    // Echo them all back (reversed) over the same connection.
    for m in got.into_iter().rev() {
        b.send_message(m).await.unwrap();
    }
    b.close().await.unwrap();
    let back = tokio::time::timeout(LIMIT, sender).await.expect("in time").unwrap();
    assert!(back.iter().eq(sent.iter().rev()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_stream_ten_thousand_messages() {
    let (a, b) = message_pair().await;
    let (mut sink, _) = a.split();
    let msgs: Vec<Message> =
        (0..10_000).map(|i| Message::new(format!("{i}"), pattern(i % 100, i as u8))).collect();
    let expected = msgs.clone();
    let send = tokio::spawn(async move {
        let mut items = futures::stream::iter(msgs.into_iter().map(Ok));
        sink.send_all(&mut items).await.unwrap();
        sink.close().await.unwrap();
        sink
    });
    let got: Vec<Message> =
        tokio::time::timeout(LIMIT, b.map(Result::unwrap).collect()).await.expect("in time");
    assert!(got == expected);
    let _ = send.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_negotiated_gives_the_byte_stream_back() {
    let (c, s) = pair(utp_ext::config(), Config::default()).await;
    // Only what a default server offers: large packets.
    assert_eq!(c.negotiated(), ExtFlags::LARGE_PACKETS);
    let err = MessageStream::new(c).expect_err("the server does not know ext 2");
    assert!(err.to_string().contains("did not negotiate metadata-framed messages"), "{err}");
    let mut c = err.into_stream();
    let err = c.write_message_end(b"x").await.expect_err("no messages");
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    // The byte stream works.
    let mut s = s;
    c.write_all(b"still bytes").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"still bytes");
    assert!(MessageStream::new(s).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_messages_are_skipped_not_buffered() {
    let (c, s) = pair(utp_ext::config(), utp_ext::config()).await;
    let mut a = MessageStream::new(c).unwrap();
    let small = MessageConfig::default().with_max_message_size(1000);
    let mut b = MessageStream::with_config(s, small).unwrap();
    let sender = tokio::spawn(async move {
        a.send("ok", pattern(1000, 1)).await.unwrap();
        a.send("big", pattern(5 << 20, 2)).await.unwrap();
        a.send("after", pattern(10, 3)).await.unwrap();
        a.close().await.unwrap();
    });
    assert_eq!(b.recv().await.unwrap(), Some(Message::new("ok", pattern(1000, 1))));
    match b.recv().await {
        Err(MessageError::TooLarge { size, max: 1000 }) => assert_eq!(size, 1001),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.recv().await.unwrap(), Some(Message::new("after", pattern(10, 3))));
    assert_eq!(b.recv().await.unwrap(), None);
    sender.await.unwrap();
    // The sender checks its own limit before writing anything.
    let err = b.send("x", vec![0; 1001]).await.unwrap_err();
    assert!(matches!(err, MessageError::TooLarge { size: 1001, max: 1000 }), "{err}");
    let err = b.send(vec![0; 254], "").await.unwrap_err();
    assert!(matches!(err, MessageError::MetadataTooLong { len: 254 }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ending_inside_a_message_is_truncated() {
    let (mut a, mut b) = message_pair().await;
    a.send("whole", "body").await.unwrap();
    a.get_mut().write_all(b"half a message").await.unwrap();
    a.close().await.unwrap();
    assert_eq!(b.recv().await.unwrap(), Some(Message::new("whole", "body")));
    assert!(matches!(b.recv().await, Err(MessageError::Truncated { received: 14 })));
    assert_eq!(b.recv().await.unwrap(), None);
}

/// A reader that does not read holds the sender back: it blocks once the
/// send buffer and the receive window are full, then gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_like_the_byte_stream() {
    let mut small = utp_ext::config();
    small.transport_mut().send_buffer_size = 256 * 1024;
    small.transport_mut().receive_buffer_size = 256 * 1024;
    let (c, s) = pair(small.clone(), small).await;
    let mut a = MessageStream::new(c).unwrap();
    let mut b = MessageStream::new(s).unwrap();
    let total = 4000;
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..total {
            // Small and empty messages too: they take room as well.
            let body = if i % 2 == 0 { pattern(1000, i as u8) } else { Vec::new() };
            a.send(format!("{i}"), body).await.unwrap();
            sent += 1;
        }
        a.close().await.unwrap();
        sent
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sender.is_finished(), "2 MB of messages cannot fit 512 KiB of buffers");
    let mut n = 0;
    tokio::time::timeout(LIMIT, async {
        while let Some(m) = b.recv().await.unwrap() {
            assert_eq!(m.meta, format!("{n}").as_bytes());
            assert_eq!(m.body.len(), if n % 2 == 0 { 1000 } else { 0 });
            n += 1;
        }
    })
    .await
    .expect("in time");
    assert_eq!(n, total);
    assert_eq!(sender.await.unwrap(), total);
}

/// Plain bytes, then messages, then plain bytes, on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_then_messages_then_bytes() {
    let (mut c, mut s) = pair(utp_ext::config(), utp_ext::config()).await;
    c.write_all(b"HELLO").await.unwrap();
    let mut a = MessageStream::new(c).unwrap();
    a.send("", "").await.unwrap();
    a.send("m", "body").await.unwrap();
    let mut c = a.into_inner();
    c.write_all(b"tail").await.unwrap();
    c.shutdown().await.unwrap();

    let mut hello = [0u8; 5];
    s.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"HELLO");
    let mut b = MessageStream::new(s).unwrap();
    assert_eq!(b.recv().await.unwrap(), Some(Message::new("", "")));
    assert_eq!(b.recv().await.unwrap(), Some(Message::new("m", "body")));
    let mut s = b.into_inner();
    let mut tail = Vec::new();
    s.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, b"tail");
}

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    text: String,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "utp_ext.test";
}

#[derive(Clone, PartialEq, prost::Message)]
struct Pong {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

impl prost::Name for Pong {
    const NAME: &'static str = "Pong";
    const PACKAGE: &'static str = "utp_ext.test";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_request_response() {
    let (c, s) = pair(utp_ext::config(), utp_ext::config()).await;
    let mut client: ProstMessageStream<Ping, Pong> = ProstMessageStream::new(c).unwrap();
    let server = tokio::spawn(async move {
        let mut server: ProstMessageStream<Pong, Ping> = ProstMessageStream::new(s).unwrap();
        while let Some(ping) = server.next().await {
            let ping = ping.unwrap();
            let data = ping.text.repeat(3).into_bytes();
            server.send(&Pong { id: ping.id, data }).await.unwrap();
        }
        server.close().await.unwrap();
    });
    for id in 0..100 {
        client.send(&Ping { id, text: format!("ping {id}") }).await.unwrap();
        let pong = client.recv().await.unwrap().expect("a pong");
        assert_eq!(pong.id, id);
        assert_eq!(pong.data, format!("ping {id}").repeat(3).into_bytes());
    }
    // The metadata names the type: a Pong where a Ping is expected fails.
    let raw = client.get_mut();
    raw.send_message(utp_ext::prost_codec::encode(&Pong { id: 1, data: vec![] }).unwrap())
        .await
        .unwrap();
    raw.close().await.unwrap();
    server.await.expect_err("the server got a Pong for a Ping");
    let _ = client;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_type_mismatch_is_reported() {
    let (mut a, mut b) = message_pair().await;
    a.send_message(utp_ext::prost_codec::encode(&Pong { id: 7, data: vec![1] }).unwrap())
        .await
        .unwrap();
    a.send("utp_ext.test.Ping", vec![0xff, 0xff]).await.unwrap();
    let m = b.recv().await.unwrap().unwrap();
    assert!(utp_ext::prost_codec::is::<Pong>(&m));
    let err = utp_ext::prost_codec::decode::<Ping>(&m).unwrap_err();
    assert!(matches!(err, ProstError::UnexpectedType { .. }), "{err}");
    assert_eq!(utp_ext::prost_codec::decode::<Pong>(&m).unwrap(), Pong { id: 7, data: vec![1] });
    let m = b.recv().await.unwrap().unwrap();
    assert!(matches!(utp_ext::prost_codec::decode::<Ping>(&m), Err(ProstError::Decode { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_data_reaches_the_server_with_the_syn() {
    for (server_config, on_syn) in [
        (utp_ext::config(), true),
        (
            {
                let mut c = Config::default();
                c.transport_mut().extensions = ExtFlags::METADATA;
                c
            },
            false,
        ),
        (Config::default(), false),
    ] {
        let server = socket(server_config).await;
        let client = socket(utp_ext::config()).await;
        let addr = server.local_addr().unwrap();
        let request = pattern(3000, 9);
        let expected = request.clone();
        let srv = tokio::spawn(async move {
            let mut s = server.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert!(got == expected, "the server reads the same stream");
            s.write_all(b"done").await.unwrap();
            s.close().await.unwrap();
            utp_ext::syn_data::accepted(&s)
        });
        let mut c = client.connect_with_data(addr, &request).await.unwrap();
        assert_eq!(utp_ext::syn_data::accepted(&c), on_syn);
        c.shutdown().await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(LIMIT, c.read_to_end(&mut reply)).await.unwrap().unwrap();
        assert_eq!(reply, b"done");
        assert_eq!(srv.await.unwrap(), on_syn);
    }
}

/// The runtime's own message API, under `MessageStream`: body parts never
/// cross a message end, ends come with their metadata, halves work too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_message_parts_on_split_halves() {
    use libp2p_utp::MessageRead;
    let (c, s) = pair(utp_ext::config(), utp_ext::config()).await;
    let (_c_rd, mut c_wr) = c.into_split();
    assert!(c_wr.negotiated().contains(utp_ext::ALL), "{:?}", c_wr.negotiated());
    c_wr.write_message(b"first", &pattern(5000, 1)).await.unwrap();
    c_wr.write_all(b"ab").await.unwrap();
    c_wr.write_message_end(b"").await.unwrap();
    c_wr.write_message(b"", b"").await.unwrap();
    let err = c_wr.write_message(&[0; 254], b"x").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    c_wr.shutdown().await.unwrap();

    let (mut s_rd, _s_wr) = s.into_split();
    let mut buf = vec![0u8; 100_000];
    let mut parts = Vec::new();
    let mut body = Vec::new();
    loop {
        match s_rd.read_message_part(&mut buf).await.unwrap() {
            MessageRead::Data(n) => body.extend_from_slice(&buf[..n]),
            MessageRead::End(meta) => parts.push((meta.into_vec(), std::mem::take(&mut body))),
            MessageRead::Eof => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(body.is_empty());
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], (b"first".to_vec(), pattern(5000, 1)));
    assert_eq!(parts[1], (Vec::new(), b"ab".to_vec()));
    assert_eq!(parts[2], (Vec::new(), Vec::new()));
}
