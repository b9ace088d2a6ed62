//! What the kernel says about a process's sockets: AF_UNIX sockets through sock_diag
//! netlink (type, state, peer, name, queues, shutdown; `include/uapi/linux/unix_diag.h`),
//! TCP sockets through `/proc/PID/net/tcp{,6}` (`Documentation/networking/proc_net_tcp.rst`),
//! and the bytes queued on a socket, peeked through a duplicate of its descriptor.

use crate::sys;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// An AF_UNIX socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixInfo {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sock_type: i32,
    /// TCP-like state: 1 established (connected), 7 close, 10 listen.
    pub state: u8,
    /// Inode of the peer, if connected.
    pub peer: Option<u64>,
    /// What waits to be read: bytes (stream, seqpacket: all of them; datagram: the first
    /// datagram's), or connections (listening).
    pub rqueue: u32,
    /// Bytes not yet read by the peer, or the backlog (listening).
    pub wqueue: u32,
    /// The name it is bound to: a path, or an abstract name with its leading NUL.
    pub name: Option<Vec<u8>>,
    /// `sk_shutdown`: bit 0 receptions, bit 1 sending shut down.
    pub shutdown: u8,
}

// Constants of include/uapi/linux/sock_diag.h, unix_diag.h and netlink.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// Every AF_UNIX socket of our network namespace, by inode.
pub(crate) fn unix_sockets() -> Result<HashMap<u64, UnixInfo>, Errno> {
    let nl = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8);
    req.push(0); // protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    sendto(
        nl.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut msgs = &buf[..n];
        while msgs.len() >= 16 {
            let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
            let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < 16 || len > msgs.len() {
                return Err(Errno::EBADMSG);
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = msgs
                        .get(16..20)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return Err(Errno::from_raw(-code));
                }
                _ => {
                    if let Some((ino, info)) = parse_unix(&msgs[16..len]) {
                        out.insert(ino, info);
                    }
                }
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// One unix_diag_msg with its attributes.
fn parse_unix(m: &[u8]) -> Option<(u64, UnixInfo)> {
    let sock_type = i32::from(*m.get(1)?);
    let state = *m.get(2)?;
    let ino = u64::from(u32::from_ne_bytes(m.get(4..8)?.try_into().ok()?));
    let mut info = UnixInfo {
        sock_type,
        state,
        peer: None,
        rqueue: 0,
        wqueue: 0,
        name: None,
        shutdown: 0,
    };
    let mut attrs = m.get(16..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match ty {
            UNIX_DIAG_PEER if data.len() >= 4 => {
                let p = u32::from_ne_bytes(data[..4].try_into().ok()?);
                info.peer = (p != 0).then_some(u64::from(p));
            }
            UNIX_DIAG_SHUTDOWN if !data.is_empty() => info.shutdown = data[0] & 3,
            UNIX_DIAG_RQLEN if data.len() >= 8 => {
                info.rqueue = u32::from_ne_bytes(data[..4].try_into().ok()?);
                info.wqueue = u32::from_ne_bytes(data[4..8].try_into().ok()?);
            }
            // A path may come with its terminating NUL (as bind(2) was given it); an
            // abstract name starts with NUL and every byte of it counts.
            UNIX_DIAG_NAME => {
                let name = match data.first() {
                    Some(0) => data,
                    _ => data.split(|&c| c == 0).next().unwrap_or_default(),
                };
                info.name = (!name.is_empty()).then(|| name.to_vec());
            }
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some((ino, info))
}

/// A TCP socket from `/proc/PID/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    /// Local address.
    pub local: SocketAddr,
    /// `st` column: 0x0A listen, 0x01 established, ...
    pub state: u8,
    /// For a listener, the `tx_queue` column: its accept backlog.
    pub backlog: u32,
}

/// The TCP sockets of `pid`'s network namespace, by inode.
pub(crate) fn tcp_sockets(pid: i32) -> HashMap<u64, TcpInfo> {
    let mut out = HashMap::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(queues), Some(ino)) =
                (f.get(1), f.get(3), f.get(4), f.get(9))
            else {
                continue;
            };
            let (Some(local), Ok(state), Ok(ino)) = (
                parse_addr(local, v6),
                u8::from_str_radix(st, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            let backlog = queues
                .split_once(':')
                .and_then(|(tx, _)| u32::from_str_radix(tx, 16).ok())
                .unwrap_or(0);
            out.insert(
                ino,
                TcpInfo {
                    local,
                    state,
                    backlog,
                },
            );
        }
    }
    out
}

/// A datagram socket from `/proc/PID/net/{udp,udplite,icmp}{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpInfo {
    /// `IPPROTO_UDP`, `IPPROTO_UDPLITE`, `IPPROTO_ICMP` or `IPPROTO_ICMPV6` (a ping
    /// socket).
    pub protocol: i32,
    /// Local address (port 0: unbound).
    pub local: SocketAddr,
    /// The peer it is connected to, if it is (`st` 01).
    pub peer: Option<SocketAddr>,
    /// Bytes waiting to be read (`rx_queue`).
    pub rqueue: u32,
}

/// The UDP, UDP-Lite and ping sockets of `pid`'s network namespace, by inode (the
/// kernel lists them in one layout).
pub(crate) fn udp_sockets(pid: i32) -> HashMap<u64, UdpInfo> {
    let mut out = HashMap::new();
    for (file, v6, protocol) in [
        ("udp", false, libc::IPPROTO_UDP),
        ("udp6", true, libc::IPPROTO_UDP),
        ("udplite", false, libc::IPPROTO_UDPLITE),
        ("udplite6", true, libc::IPPROTO_UDPLITE),
        ("icmp", false, libc::IPPROTO_ICMP),
        ("icmp6", true, libc::IPPROTO_ICMPV6),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(rem), Some(st), Some(queues), Some(ino)) =
                (f.get(1), f.get(2), f.get(3), f.get(4), f.get(9))
            else {
                continue;
            };
            let (Some(local), Some(rem), Ok(state), Ok(ino)) = (
                parse_addr(local, v6),
                parse_addr(rem, v6),
                u8::from_str_radix(st, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            let rqueue = queues
                .split_once(':')
                .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
            out.insert(
                ino,
                UdpInfo {
                    protocol,
                    local,
                    peer: (state == 0x01).then_some(rem),
                    rqueue,
                },
            );
        }
    }
    out
}

/// The IPv4 or IPv6 address in `a`, if it holds one.
pub(crate) fn inet_address(a: nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), in the kernel's byte order:
/// each 32-bit word as the host prints it.
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        let mut b = [0u8; 16];
        for (i, chunk) in b.chunks_exact_mut(4).enumerate() {
            let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        let w = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// The bytes queued on a stream socket (peeked, not consumed).
pub(crate) fn peek_stream(fd: &OwnedFd, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len.max(1)];
    let n = match recv(
        fd.as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => return Err(e),
    };
    buf.truncate(n);
    Ok(buf)
}

/// Most datagrams peeked from one socket, and most bytes: a queue beyond either is
/// refused (E2BIG), so no peek loop runs unbounded.
const MAX_PEEKED_DATAGRAMS: usize = 1 << 16;
const MAX_PEEKED_BYTES: usize = 256 << 20;

/// Every message queued on a datagram or seqpacket socket (peeked with `SO_PEEK_OFF`,
/// which is switched off again afterwards). `bytes`: for a seqpacket socket, the bytes
/// queued (sock_diag's count): peeking stops once they are all read, since a seqpacket
/// socket whose peer is gone answers every further peek with an empty end of file.
pub(crate) fn peek_datagrams(fd: &OwnedFd, bytes: Option<u32>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut out = Vec::new();
    if bytes == Some(0) {
        return Ok(out);
    }
    sys::process::set_peek_offset(fd.as_fd(), 0)?;
    let mut buf = vec![0u8; 1 << 17];
    let result = (|| {
        let mut total = 0usize;
        loop {
            if bytes.is_some_and(|b| total >= b as usize) {
                return Ok(());
            }
            if out.len() >= MAX_PEEKED_DATAGRAMS || total >= MAX_PEEKED_BYTES {
                return Err(Errno::E2BIG);
            }
            match recv(
                fd.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    total += n;
                    out.push(buf[..n].to_vec());
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })();
    sys::process::set_peek_offset(fd.as_fd(), -1)?;
    result.map(|()| out)
}
