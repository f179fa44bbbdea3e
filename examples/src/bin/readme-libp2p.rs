use libp2p::core::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, ping, yamux, Multiaddr, Transport as _};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(libp2p_utp::Transport::default()
                // V1Lazy: noise starts without waiting for multistream-select's
                // answer, one round trip less (SwarmBuilder's TCP does the same).
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })?
        .with_behaviour(|_| ping::Behaviour::default())?
        .build();
    swarm.listen_on("/ip4/127.0.0.1/udp/0/utp".parse()?)?;
    // Give it the address another instance printed to ping that one.
    if let Some(peer) = std::env::args().nth(1) {
        swarm.dial(peer.parse::<Multiaddr>()?)?;
    }
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => println!("listening on {address}"),
            SwarmEvent::Behaviour(event) => println!("{event:?}"),
            _ => {}
        }
    }
}
