//! msg-service: a small key-value request/response service over uTP framed
//! messages (`utp-ext`), typed with protobuf (`prost`), whose first request
//! rides on the SYN.
//!
//! ```text
//! msg-service server 127.0.0.1:4000
//! msg-service client 127.0.0.1:4000 put greeting hello
//! msg-service client 127.0.0.1:4000 get greeting
//! msg-service demo --requests 1000      # server and client in this process
//! ```
//!
//! The protocol (`kv.v1`), on one uTP connection with both extensions of
//! this project negotiated:
//!
//! 1. The client's stream starts with its first request as a raw
//!    length-delimited protobuf `kv.v1.Request` (a varint length, then the
//!    bytes). The client gives it to `connect_with_data`, so it rides on the
//!    SYN: the server answers before the handshake has even completed on
//!    the client's side, one round trip after the dial instead of two.
//! 2. Everything after it, both ways, is framed messages whose metadata is
//!    the protobuf type name (`kv.v1.Request`, `kv.v1.Response`) and whose
//!    body is the encoded message. The server answers every request with
//!    one response, in order.
//!
//! The first request cannot be a framed message: a message end cannot ride
//! the SYN (whether messages are negotiated is only known from the
//! answer). This is the "plain bytes first, then messages" case of the
//! rules for mixing both on one connection: the server reads exactly the
//! length-delimited prefix with plain reads, then switches to messages.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use libp2p_utp::{UtpSocket, UtpStream};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_ext::ProstMessageStream;

/// A request: `get` when `value` is absent, `put` when present.
#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    /// Echoed in the response.
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "vec", optional, tag = "3")]
    value: Option<Vec<u8>>,
}

impl prost::Name for Request {
    const NAME: &'static str = "Request";
    const PACKAGE: &'static str = "kv.v1";
}

/// The answer: the value (for a put, the previous one), if there was one.
#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(bool, tag = "2")]
    found: bool,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

impl prost::Name for Response {
    const NAME: &'static str = "Response";
    const PACKAGE: &'static str = "kv.v1";
}

/// A key-value service over uTP framed messages, first request on the SYN.
#[derive(Parser, Debug)]
#[command(name = "msg-service", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the key-value store on ADDR until interrupted.
    Server {
        /// Address to listen on, e.g. `127.0.0.1:4000`.
        addr: SocketAddr,
    },
    /// Send one request to the server at ADDR and print the answer.
    Client {
        /// The server.
        addr: SocketAddr,
        /// Do not put the request on the SYN (connect, then write it).
        #[arg(long)]
        no_syn_data: bool,
        #[command(subcommand)]
        op: Op,
    },
    /// Run a server and a client in this process over loopback: time to
    /// the first response with and without SYN data, then a burst of
    /// requests as framed messages.
    Demo {
        /// Requests in the burst.
        #[arg(long, default_value_t = 1000)]
        requests: u64,
        /// Connections (each timed) per mode.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

#[derive(Subcommand, Debug, Clone)]
enum Op {
    /// Look a key up.
    Get {
        /// The key.
        key: String,
    },
    /// Store a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

type Store = Arc<Mutex<HashMap<String, Vec<u8>>>>;

fn answer(store: &Store, req: Request) -> Response {
    let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
    let previous = match req.value {
        Some(value) => store.insert(req.key, value),
        None => store.get(&req.key).cloned(),
    };
    Response { id: req.id, found: previous.is_some(), value: previous.unwrap_or_default() }
}

/// Reads the raw length-delimited first request: exactly its bytes, so
/// that the framed messages after it stay intact.
async fn read_first_request(stream: &mut UtpStream) -> io::Result<Request> {
    let mut len: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = stream.read_u8().await?;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "first request too large"));
    }
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Request::decode(buf.as_slice()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn serve_connection(mut stream: UtpStream, store: Store) -> io::Result<u64> {
    let first = read_first_request(&mut stream).await?;
    let mut messages: ProstMessageStream<Response, Request> = ProstMessageStream::new(stream)?;
    messages.send(&answer(&store, first)).await?;
    let mut served = 1;
    while let Some(req) = messages.recv().await? {
        messages.send(&answer(&store, req)).await?;
        served += 1;
    }
    messages.close().await?;
    Ok(served)
}

async fn serve(socket: UtpSocket, store: Store) -> io::Result<()> {
    loop {
        let stream = socket.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            let peer = stream.peer_addr();
            if let Err(e) = serve_connection(stream, store).await {
                eprintln!("msg-service: connection from {peer}: {e}");
            }
        });
    }
}

/// A connected client: the first response and the message stream.
struct Session {
    messages: ProstMessageStream<Request, Response>,
    first: Response,
    /// From the dial to the first response.
    first_response: Duration,
    /// Whether the first request rode on the SYN.
    on_syn: bool,
}

async fn open(
    socket: &UtpSocket,
    addr: SocketAddr,
    first: &Request,
    syn: bool,
) -> io::Result<Session> {
    let raw = first.encode_length_delimited_to_vec();
    let t0 = Instant::now();
    let stream = if syn {
        socket.connect_with_data(addr, &raw).await?
    } else {
        let mut stream = socket.connect(addr).await?;
        stream.write_all(&raw).await?;
        stream
    };
    let on_syn = syn && utp_ext::syn_data::accepted(&stream);
    let mut messages: ProstMessageStream<Request, Response> = ProstMessageStream::new(stream)?;
    let first = messages.recv().await?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed without answering")
    })?;
    Ok(Session { messages, first, first_response: t0.elapsed(), on_syn })
}

async fn client(addr: SocketAddr, syn: bool, op: Op) -> io::Result<()> {
    let socket = UtpSocket::bind_with_config("0.0.0.0:0", utp_ext::config()).await?;
    let req = match op {
        Op::Get { key } => Request { id: 1, key, value: None },
        Op::Put { key, value } => Request { id: 1, key, value: Some(value.into_bytes()) },
    };
    let mut s = open(&socket, addr, &req, syn).await?;
    let value = String::from_utf8_lossy(&s.first.value);
    match (&req.value, s.first.found) {
        (None, true) => println!("{}: {value}", req.key),
        (None, false) => println!("{}: not found", req.key),
        (Some(_), true) => println!("{}: stored (was {value})", req.key),
        (Some(_), false) => println!("{}: stored", req.key),
    }
    eprintln!(
        "first response after {:.2?} ({})",
        s.first_response,
        if s.on_syn { "request on the SYN" } else { "request after the handshake" }
    );
    s.messages.close().await?;
    Ok(())
}

async fn demo(requests: u64, rounds: usize) -> io::Result<()> {
    let server = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
    let addr = server.local_addr()?;
    tokio::spawn(serve(server, Store::default()));
    let socket = UtpSocket::bind_with_config("127.0.0.1:0", utp_ext::config()).await?;
    let put = Request { id: 0, key: "greeting".into(), value: Some(b"hello".to_vec()) };
    for syn in [false, true, false, true] {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let mut s = open(&socket, addr, &put, syn).await?;
            times.push(s.first_response);
            s.messages.close().await?;
        }
        times.sort();
        println!(
            "first response, {:<27}: median {:>9.2?} (min {:.2?}, max {:.2?}, {rounds} connections)",
            if syn { "request on the SYN" } else { "connect, then request" },
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
        );
    }
    let get = Request { id: 0, key: "greeting".into(), value: None };
    let mut s = open(&socket, addr, &get, true).await?;
    assert_eq!(s.first.value, b"hello");
    let t0 = Instant::now();
    for id in 1..=requests {
        let req =
            Request { id, key: format!("k{}", id % 16), value: Some(id.to_be_bytes().into()) };
        s.messages.send(&req).await?;
        let resp = s.messages.recv().await?.expect("a response");
        assert_eq!(resp.id, id);
    }
    let elapsed = t0.elapsed();
    println!(
        "{requests} requests one after the other as framed messages: {elapsed:.2?} ({:.1?} each)",
        elapsed / requests.max(1) as u32
    );
    s.messages.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server { addr } => {
            async {
                let socket = UtpSocket::bind_with_config(addr, utp_ext::config()).await?;
                eprintln!("msg-service: serving kv.v1 on {}", socket.local_addr()?);
                serve(socket, Store::default()).await
            }
            .await
        }
        Command::Client { addr, no_syn_data, op } => client(addr, !no_syn_data, op).await,
        Command::Demo { requests, rounds } => demo(requests, rounds).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msg-service: {e}");
            ExitCode::FAILURE
        }
    }
}
