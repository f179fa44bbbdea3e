//! ICMP port unreachables from the socket's error queue (Linux), so that a
//! dial to a closed port fails at once, as a TCP connect does.
//!
//! With `IP_RECVERR` (and `IPV6_RECVERR`) set, the kernel queues every ICMP
//! error for a datagram the socket sent, with the datagram's destination
//! and as much of its payload as the error quotes; the engine decides
//! whether one is the answer to a dial's SYN
//! (`Endpoint::handle_port_unreachable`: only a dial in SYN-SENT whose SYN
//! the quote repeats). The option also makes the kernel report the error
//! once as the result of the socket's next receive or send
//! (`ECONNREFUSED`): `udp.rs` retries those.
//!
//! The queue is drained whenever the reactor reports the socket's error
//! readiness; the queued errors count against the socket's receive buffer,
//! so an unread queue is bounded, and a flood of them costs one syscall
//! each.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Errors read per call at most (the driver comes back for more).
const MAX_PER_CALL: usize = 64;

/// Bytes of the quoted datagram kept: a uTP header and then some.
pub(crate) const QUOTE: usize = 64;

/// Asks the kernel to queue ICMP errors on `socket`. Elsewhere than on
/// Linux nothing changes (a dial to a closed port times out).
pub(crate) fn enable(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use crate::udp::set_int_option;
        // Also on an IPv6 socket: its IPv4-mapped traffic reports through
        // the IPv4 option.
        let v4 = set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVERR, 1);
        if socket.local_addr()?.is_ipv6() {
            set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
            return Ok(());
        }
        v4
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(())
    }
}

/// Reads queued ICMP errors without waiting and calls `port_unreachable`
/// with the destination and the quoted payload of each port unreachable;
/// other errors (host unreachable, fragmentation needed...) are dropped.
/// Returns whether more may be queued, or the error that stops the reading
/// (the caller stops waiting for the queue: its readiness would stay set).
pub(crate) fn drain(
    socket: &UdpSocket,
    mut port_unreachable: impl FnMut(SocketAddr, &[u8]),
) -> io::Result<bool> {
    for _ in 0..MAX_PER_CALL {
        let mut quote = [0u8; QUOTE];
        match socket.try_io(Interest::ERROR, || recv_error(socket, &mut quote)) {
            Ok(Some((destination, len))) => port_unreachable(destination, &quote[..len]),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// One `recvmsg(MSG_ERRQUEUE)`: the destination of the datagram a port
/// unreachable reported and the length of its quote in `quote`, `None` for
/// another error.
#[cfg(target_os = "linux")]
fn recv_error(socket: &UdpSocket, quote: &mut [u8]) -> io::Result<Option<(SocketAddr, usize)>> {
    use std::mem::{size_of, zeroed};
    use std::os::fd::AsRawFd;

    // SAFETY (for every unsafe block below): the message header points at
    // buffers on this stack frame that outlive the call; the control
    // messages are walked with the CMSG macros within `msg_controllen`, and
    // the extended error is read unaligned.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut control = [0u64; 64];
    let mut iov = libc::iovec { iov_base: quote.as_mut_ptr().cast(), iov_len: quote.len() };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>() as _;
    let n = unsafe {
        libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = usize::try_from(n).unwrap_or(0).min(quote.len());
    let mut refused = false;
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        let is_error = (level == libc::IPPROTO_IP && kind == libc::IP_RECVERR)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_RECVERR);
        if is_error {
            let err: libc::sock_extended_err =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let from_icmp = err.ee_origin == libc::SO_EE_ORIGIN_ICMP
                || err.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
            refused |= from_icmp && err.ee_errno == libc::ECONNREFUSED as u32;
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if !refused {
        return Ok(None);
    }
    Ok(socket_addr(&name).map(|destination| (destination, len)))
}

/// The address the kernel wrote into a `sockaddr_storage`.
#[cfg(target_os = "linux")]
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read(std::ptr::from_ref(name).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read(std::ptr::from_ref(name).cast()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn recv_error(_: &UdpSocket, _: &mut [u8]) -> io::Result<Option<(SocketAddr, usize)>> {
    Err(io::ErrorKind::WouldBlock.into())
}
