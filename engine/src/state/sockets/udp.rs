//! UDP sockets: bound, connected, and the datagrams waiting to be read, each with its
//! sender's address.
//!
//! Checkpoint ([`save`]): the addresses come from `/proc/PID/net/udp{,6}`
//! ([`super::diag::udp_sockets`]); the queue is peeked through a duplicate of the
//! descriptor (`pidfd_getfd`, `SO_PEEK_OFF` so each peek reads the next datagram),
//! bounded in count and bytes.
//!
//! Restart ([`again`]): a socket of the family, bound to its address again (unless it
//! never was), connected to its peer again. Once every socket of the image exists,
//! [`refill`] sends each queued datagram to it again from the image's socket bound to the
//! datagram's sender, or from a short-lived socket bound to that address (`IP_FREEBIND`,
//! so a sender that was not this node works too): the process reads it from the address
//! it came from.
//! A datagram whose sender's address is taken now is a warning, as is an address the
//! socket cannot have again: UDP promises no delivery, but the restart says what it lost.

use super::diag::{UdpInfo, inet_address};
use crate::model::UdpSocket;
use crate::sys;
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockType, SockaddrStorage, bind, connect, getsockname, getsockopt,
    recvmsg, sendto, setsockopt, sockopt,
};
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Most datagrams and bytes saved from one queue (the kernel bounds it by `SO_RCVBUF`,
/// 208 KiB by default): a queue beyond either is refused (E2BIG), so no peek loop runs
/// unbounded.
pub(crate) const MAX_DATAGRAMS: usize = 1 << 16;
/// See [`MAX_DATAGRAMS`].
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// Save the UDP socket behind descriptor `fd` of `pid`, which the kernel describes as
/// `info`.
pub(crate) fn save(pid: i32, fd: i32, info: &UdpInfo) -> Result<UdpSocket, Errno> {
    let mut queued = Vec::new();
    let dup = sys::process::pidfd_getfd(pid, fd)?;
    if info.rqueue > 0 {
        sys::process::set_peek_offset(dup.as_fd(), 0)?;
        let peeked = peek_all(&dup, &mut queued);
        sys::process::set_peek_offset(dup.as_fd(), -1)?;
        peeked?;
    }
    Ok(UdpSocket {
        protocol: info.protocol,
        local: info.local,
        peer: info.peer,
        queued,
        options: super::options::read(dup.as_fd(), false),
    })
}

/// The protocols of the datagram sockets saved here.
pub(crate) const PROTOCOLS: [i32; 4] = [
    libc::IPPROTO_UDP,
    libc::IPPROTO_UDPLITE,
    libc::IPPROTO_ICMP,
    libc::IPPROTO_ICMPV6,
];

fn is_ping(protocol: i32) -> bool {
    protocol == libc::IPPROTO_ICMP || protocol == libc::IPPROTO_ICMPV6
}

/// The description of descriptor `fd` of `pid` if it is a UDP socket that was never
/// bound (the kernel lists only bound ones in `/proc/PID/net/udp`).
pub(crate) fn unbound(pid: i32, fd: i32) -> Option<UdpInfo> {
    let dup = sys::process::pidfd_getfd(pid, fd).ok()?;
    let ty = getsockopt(&dup, sockopt::SockType).ok()?;
    let proto = sys::process::socket_protocol(dup.as_fd()).ok()?;
    if ty != SockType::Datagram || !PROTOCOLS.contains(&proto) {
        return None;
    }
    let local = inet_address(getsockname::<SockaddrStorage>(dup.as_raw_fd()).ok()?)?;
    (local.port() == 0).then_some(UdpInfo {
        protocol: proto,
        local,
        peer: None,
        rqueue: 0,
    })
}

fn peek_all(fd: &OwnedFd, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Result<(), Errno> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        if out.len() >= MAX_DATAGRAMS || total >= MAX_BYTES {
            return Err(Errno::E2BIG);
        }
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            fd.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (n, from) = (msg.bytes, msg.address.and_then(inet_address));
        let Some(from) = from else {
            return Err(Errno::EAFNOSUPPORT);
        };
        total += n;
        out.push((from, buf[..n].to_vec()));
    }
}

/// The UDP socket of the image again (see the module header); what it could not have
/// again is a warning of process `pid`'s descriptor `fd`.
pub(crate) fn again(
    pid: i32,
    fd: i32,
    u: &UdpSocket,
    warnings: &mut Vec<Warning>,
) -> Result<OwnedFd, Errno> {
    let family = if u.local.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let sock = sys::process::socket_with_protocol(family as i32, libc::SOCK_DGRAM, u.protocol)?;
    let mut lost = |addr: SocketAddr, step: &'static str, error: Errno| {
        warnings.push(Warning::fd(
            pid,
            fd,
            WarningKind::UdpNotRestored { addr, step, error },
        ));
    };
    if let Err((step, e)) = super::options::apply(sock.as_fd(), &u.options, false) {
        lost(u.local, step, e);
    }
    if u.local.port() != 0
        && let Err(e) = bind(sock.as_raw_fd(), &SockaddrStorage::from(u.local))
    {
        lost(u.local, "bind", e);
        return Ok(sock);
    }
    if let Some(peer) = u.peer
        && let Err(e) = connect(sock.as_raw_fd(), &SockaddrStorage::from(peer))
    {
        lost(peer, "connect", e);
        return Ok(sock);
    }
    Ok(sock)
}

/// Queue every saved datagram again on its restored socket, once every socket of the
/// image exists (`opened_by`: per process, its PID and its descriptors by file index):
/// sent from the image's own socket bound to the sender's address when there is one,
/// else from a short-lived socket bound to that address.
pub(crate) fn refill(
    imgs: &[&crate::model::Image],
    opened_by: &[(i32, Vec<Option<OwnedFd>>)],
    warnings: &mut Vec<Warning>,
) {
    use crate::model::FileKind;
    let udp_of = |img: usize, file: usize| -> Option<(&UdpSocket, &OwnedFd)> {
        match &imgs.get(img)?.files.get(file)?.kind {
            FileKind::Udp(u) => Some((u, opened_by.get(img)?.1.get(file)?.as_ref()?)),
            _ => None,
        }
    };
    let all: Vec<(&UdpSocket, &OwnedFd)> = (0..imgs.len())
        .flat_map(|i| (0..imgs[i].files.len()).filter_map(move |f| udp_of(i, f)))
        .collect();
    for (i, img) in imgs.iter().enumerate() {
        for file in 0..img.files.len() {
            let Some((u, sock)) = udp_of(i, file) else {
                continue;
            };
            if u.queued.is_empty() {
                continue;
            }
            let fd = img.fd_of(file);
            let mut lost = |addr: SocketAddr, step: &'static str, error: Errno| {
                warnings.push(Warning::fd(
                    img.process.pid,
                    fd,
                    WarningKind::UdpNotRestored { addr, step, error },
                ));
            };
            let Some(here) = getsockname::<SockaddrStorage>(sock.as_raw_fd())
                .ok()
                .and_then(inet_address)
            else {
                lost(u.local, "getsockname", Errno::EAFNOSUPPORT);
                continue;
            };
            // A socket bound to any address is reached on loopback.
            let here = match here.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), here.port())
                }
                IpAddr::V6(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), here.port())
                }
                _ => here,
            };
            let to = SockaddrStorage::from(here);
            let family = if here.is_ipv6() {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            };
            if is_ping(u.protocol) {
                // Echo replies cannot be sent to a ping socket: only the kernel makes them.
                lost(u.local, "queueing echo replies again", Errno::EOPNOTSUPP);
                continue;
            }
            for (from, data) in &u.queued {
                // The image's socket bound there (to that address, or to any address
                // on that port: an unbound sender bound itself so on its first send).
                let own = all
                    .iter()
                    .find(|(o, _)| {
                        o.protocol == u.protocol
                            && o.local.port() == from.port()
                            && (o.local.ip() == from.ip() || o.local.ip().is_unspecified())
                    })
                    .map(|(_, s)| *s);
                let sent = match own {
                    Some(s) => send_whole(s, data, &to),
                    None => send_from(family, u.protocol, *from, data, &to),
                };
                if let Err((step, e)) = sent {
                    lost(*from, step, e);
                }
            }
        }
    }
}

/// Send all of `data` to `to` from `sock`.
fn send_whole(
    sock: &OwnedFd,
    data: &[u8],
    to: &SockaddrStorage,
) -> Result<(), (&'static str, Errno)> {
    let n = sendto(sock.as_raw_fd(), data, to, MsgFlags::MSG_DONTWAIT)
        .map_err(|e| ("queueing a datagram again", e))?;
    if n != data.len() {
        return Err(("queueing a datagram again", Errno::EMSGSIZE));
    }
    Ok(())
}

/// Send `data` to `to` from a socket bound to `from`.
fn send_from(
    family: AddressFamily,
    protocol: i32,
    from: SocketAddr,
    data: &[u8],
    to: &SockaddrStorage,
) -> Result<(), (&'static str, Errno)> {
    let tmp = sys::process::socket_with_protocol(family as i32, libc::SOCK_DGRAM, protocol)
        .map_err(|e| ("socket", e))?;
    let _ = setsockopt(&tmp, sockopt::IpFreebind, &true);
    bind(tmp.as_raw_fd(), &SockaddrStorage::from(from))
        .map_err(|e| ("binding to a queued datagram's sender", e))?;
    send_whole(&tmp, data, to)
}
