//! libp2p-chat: a libp2p Swarm over uTP (noise + yamux) that sends each line
//! of stdin to every connected peer and prints what they send.
//!
//! ```text
//! # terminal 1: listen
//! libp2p-chat --listen /ip4/127.0.0.1/udp/4001/utp
//! # terminal 2: listen too, and dial the first
//! libp2p-chat --listen /ip4/127.0.0.1/udp/4002/utp /ip4/127.0.0.1/udp/4001/utp
//! ```
//!
//! Each line goes out as a request-response message that the peer
//! acknowledges. A side that dialed exits at the end of its input once every
//! line was acknowledged (so `echo hi | libp2p-chat ADDR` works in scripts);
//! a side that only listens runs until interrupted.

use std::collections::HashSet;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, Transport as _};
use tokio::io::{AsyncBufReadExt, BufReader};

const CHAT: StreamProtocol = StreamProtocol::new("/libp2p-utp/chat/1");
const MAX_LINE: u64 = 64 * 1024;

/// Chat over libp2p on uTP: lines of stdin go to every connected peer.
#[derive(Parser, Debug)]
#[command(name = "libp2p-chat", version)]
struct Cli {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "/ip4/127.0.0.1/udp/0/utp", value_name = "MULTIADDR")]
    listen: Multiaddr,

    /// Peers to dial, e.g. `/ip4/127.0.0.1/udp/4001/utp` (a trailing
    /// `/p2p/<peer id>` is checked against the peer's key).
    #[arg(value_name = "MULTIADDR")]
    peers: Vec<Multiaddr>,

    /// Give up dialing after this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    connect_timeout: u64,

    /// Log what libp2p and uTP do (-v: debug, -vv: trace) to stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// A chat line travels as a request; the response is an empty
/// acknowledgement.
#[derive(Debug, Clone, Default)]
struct LineCodec;

impl request_response::Codec for LineCodec {
    type Protocol = StreamProtocol;
    type Request = String;
    type Response = ();

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<String> {
        let mut line = String::new();
        io.take(MAX_LINE).read_to_string(&mut line).await?;
        Ok(line)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<()> {
        let mut rest = Vec::new();
        io.take(1).read_to_end(&mut rest).await?;
        Ok(())
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        line: String,
    ) -> io::Result<()> {
        io.write_all(line.as_bytes()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        (): (),
    ) -> io::Result<()> {
        Ok(())
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    chat: request_response::Behaviour<LineCodec>,
    ping: ping::Behaviour,
}

fn swarm(connect_timeout: Duration) -> Result<Swarm<Behaviour>, Box<dyn std::error::Error>> {
    let mut utp = libp2p_utp::transport::Config::default();
    utp.socket.transport_mut().connect_timeout = connect_timeout;
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(libp2p_utp::Transport::new(utp)
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })?
        .with_behaviour(|_| Behaviour {
            chat: request_response::Behaviour::new(
                [(CHAT, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
            ping: ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_base58();
    s[s.len().saturating_sub(6)..].to_string()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose > 0 {
        let level = if cli.verbose == 1 { "debug" } else { "trace" };
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "libp2p_utp={level},libp2p_swarm={level},info"
            )))
            .init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("libp2p-chat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut swarm = swarm(Duration::from_secs(cli.connect_timeout))?;
    let me = *swarm.local_peer_id();
    swarm.listen_on(cli.listen.clone())?;
    let dialer = !cli.peers.is_empty();
    for peer in &cli.peers {
        swarm.dial(peer.clone())?;
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut connected: HashSet<PeerId> = HashSet::new();
    // Lines typed before any peer connected wait here.
    let mut backlog: Vec<String> = Vec::new();
    let mut unacked = 0usize;
    let mut dials_left = cli.peers.len();

    loop {
        if dialer && !stdin_open && backlog.is_empty() && unacked == 0 {
            return Ok(());
        }
        tokio::select! {
            line = stdin.next_line(), if stdin_open => match line? {
                Some(line) if connected.is_empty() => backlog.push(line),
                Some(line) => {
                    for peer in &connected {
                        swarm.behaviour_mut().chat.send_request(peer, line.clone());
                        unacked += 1;
                    }
                }
                None => stdin_open = false,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    println!("listening on {}", address.with_p2p(me).unwrap_or_else(|a| a));
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    println!("connected to {peer_id} at {}", endpoint.get_remote_address());
                    connected.insert(peer_id);
                    for line in backlog.drain(..) {
                        swarm.behaviour_mut().chat.send_request(&peer_id, line);
                        unacked += 1;
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    println!("disconnected from {peer_id}");
                    connected.remove(&peer_id);
                }
                SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                    eprintln!("dialing {} failed: {error}", peer_id.map(|p| p.to_string()).unwrap_or_default());
                    dials_left = dials_left.saturating_sub(1);
                    if dials_left == 0 && connected.is_empty() {
                        return Err("could not reach any peer".into());
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Chat(event)) => match event {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            println!("{}> {request}", short(&peer));
                            let _ = swarm.behaviour_mut().chat.send_response(channel, ());
                        }
                        request_response::Message::Response { .. } => {
                            unacked = unacked.saturating_sub(1);
                        }
                    },
                    request_response::Event::OutboundFailure { peer, error, .. } => {
                        eprintln!("a line to {} was lost: {error}", short(&peer));
                        unacked = unacked.saturating_sub(1);
                    }
                    _ => {}
                },
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                    peer,
                    result: Ok(rtt),
                    ..
                })) if cli.verbose > 0 => {
                    eprintln!("ping {}: {rtt:?}", short(&peer));
                }
                _ => {}
            },
        }
    }
}
