//! uTP multiaddresses: `/ip4|ip6/<ip>/udp/<port>/utp[/p2p/<peer id>]`.

use std::net::{IpAddr, SocketAddr};

use libp2p_core::multiaddr::{Multiaddr, Protocol};

/// The socket address of a uTP multiaddress; `None` for anything else
/// (another transport, a missing part, trailing protocols other than one
/// `/p2p`). Port 0 and unspecified IPs pass: listening accepts them.
pub(crate) fn to_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    let ip: IpAddr = match iter.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = iter.next()? else { return None };
    let Protocol::Utp = iter.next()? else { return None };
    match (iter.next(), iter.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// The uTP multiaddress of a socket address (IPv4-mapped IPv6 addresses
/// become IPv4).
pub(crate) fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().to_canonical().into())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::Utp)
}

/// Whether two socket addresses are the same peer (an IPv4 address and its
/// IPv4-mapped IPv6 form are).
pub(crate) fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<SocketAddr> {
        to_socket_addr(&s.parse::<Multiaddr>().unwrap())
    }

    #[test]
    fn accepts_utp_addresses() {
        assert_eq!(parse("/ip4/127.0.0.1/udp/4001/utp"), Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(parse("/ip6/::1/udp/4001/utp"), Some("[::1]:4001".parse().unwrap()));
        assert_eq!(parse("/ip4/0.0.0.0/udp/0/utp"), Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(
            parse("/ip4/127.0.0.1/udp/4001/utp/p2p/12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5"),
            Some("127.0.0.1:4001".parse().unwrap())
        );
    }

    #[test]
    fn refuses_other_addresses() {
        for s in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/udp/4001",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/ip4/127.0.0.1/utp",
            "/ip4/127.0.0.1/tcp/4001/utp",
            "/dns4/localhost/udp/4001/utp",
            "/ip4/127.0.0.1/udp/4001/utp/utp",
            "/ip4/127.0.0.1/udp/4001/utp/p2p/12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5/p2p-circuit",
            "/udp/4001/utp",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }

    #[test]
    fn round_trips() {
        let a: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(to_socket_addr(&to_multiaddr(a)), Some(a));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(to_multiaddr(mapped).to_string(), "/ip4/127.0.0.1/udp/9/utp");
        assert!(same_peer(mapped, "127.0.0.1:9".parse().unwrap()));
        assert!(!same_peer(mapped, "127.0.0.1:10".parse().unwrap()));
    }
}
