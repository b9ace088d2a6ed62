//! Sockets: unix socket pairs (made again with socketpair(2), refilled, shut down again),
//! unix sockets that are not pairs (unbound, bound to a path or an abstract name,
//! listening: made, bound and listening again), listening TCP sockets (bound and listening
//! again), established TCP connections (in repair mode: [`tcp`]; restored unconnected when
//! the checkpointer could not use it), UDP sockets ([`udp`]). What the kernel says about
//! them is in [`diag`].

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError, MAX_FDS};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::restart::error::{self as restart, RestartError};
use crate::state::OptionalSection;
use crate::sys;
use crate::warning::{Warning, WarningKind};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

mod diag;
mod options;
mod tcp;
mod udp;
mod unix_dgram;
use diag::{
    TcpInfo, UdpInfo, UnixInfo, peek_datagrams, peek_stream, tcp_sockets, udp_sockets, unix_sockets,
};
pub(crate) use tcp::{Held, Pending, connections};
pub(crate) use udp::refill as refill_datagrams;
pub(crate) use unix_dgram::{QUEUES, refill as refill_unix_datagrams};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// The socket tables of the node, read at the first socket of a process.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    unix: Option<HashMap<u64, UnixInfo>>,
    tcp: Option<HashMap<u64, TcpInfo>>,
    udp: Option<HashMap<u64, UdpInfo>>,
    /// Queues of unconnected unix datagram sockets, by descriptor.
    unix_queues: Vec<(i32, UnixDatagrams)>,
}

impl Tables {
    /// The queues peeked from unconnected unix datagram sockets, by file index (`fds`:
    /// the process's descriptor table).
    pub(crate) fn unix_queues(&mut self, fds: &[Fd]) -> Vec<UnixQueue> {
        std::mem::take(&mut self.unix_queues)
            .into_iter()
            .filter_map(|(fd, datagrams)| {
                let file = fds.iter().find(|d| d.fd == fd)?.file;
                Some(UnixQueue { file, datagrams })
            })
            .collect()
    }

    /// The socket pair ends among `files` that were shut down.
    pub(crate) fn shutdowns(&self, files: &[OpenFile]) -> Vec<SocketShutdown> {
        files
            .iter()
            .zip(0u32..)
            .filter_map(|(f, file)| match f.kind {
                FileKind::UnixPair { ino, .. } => {
                    let how = self.unix.as_ref()?.get(&ino)?.shutdown;
                    (how != 0).then_some(SocketShutdown { file, how })
                }
                _ => None,
            })
            .collect()
    }

    /// What a socket descriptor is, for the kinds that can be restored: one end of an AF_UNIX
    /// pair (with its queued data, peeked through a duplicate of the descriptor), a listening
    /// TCP socket, or a TCP connection (restored closed).
    pub(crate) fn dump(
        &mut self,
        pid: i32,
        fd: i32,
        ino: u64,
        held: &mut Held,
    ) -> Result<FileKind, CheckpointError> {
        let unsupported = |what: String| CheckpointError::UnsupportedFd { pid, fd, what };
        let (unix, tcp, udp) = (&mut self.unix, &mut self.tcp, &mut self.udp);
        if unix.is_none() {
            *unix = Some(
                unix_sockets()
                    .map_err(|e| unsupported(format!("a socket (sock_diag failed: {e})")))?,
            );
        }
        if let Some(info) = unix.as_ref().and_then(|m| m.get(&ino)).cloned() {
            // state: 1 established, 7 close (never connected, or disconnected), 10 listen.
            let Some(peer) = info.peer.filter(|_| info.state == 1) else {
                if info.state == 10 && info.rqueue > 0 {
                    return Err(unsupported(format!(
                        "a listening unix socket with {} connections waiting to be accepted (not saved yet)",
                        info.rqueue
                    )));
                }
                if info.state != 10 && info.rqueue > 0 {
                    if info.sock_type != libc::SOCK_DGRAM {
                        return Err(unsupported(
                            "an unconnected unix stream socket with data waiting to be read (not saved yet)"
                                .into(),
                        ));
                    }
                    let queue = sys::process::pidfd_getfd(pid, fd)
                        .and_then(|dup| unix_dgram::peek(&dup))
                        .map_err(|e| {
                            unsupported(format!(
                                "a unix datagram socket whose queue cannot be read ({e})"
                            ))
                        })?;
                    self.unix_queues.push((fd, queue));
                }
                return Ok(FileKind::UnixSocket {
                    sock_type: info.sock_type,
                    name: info.name,
                    listen: (info.state == 10).then_some(info.wqueue),
                });
            };
            let dup = sys::process::pidfd_getfd(pid, fd).map_err(|e| {
                unsupported(format!("a unix socket whose queue cannot be read ({e})"))
            })?;
            let queued = if info.sock_type == libc::SOCK_STREAM {
                let data = peek_stream(&dup, info.rqueue as usize).map_err(|e| {
                    unsupported(format!("a unix socket whose queue cannot be read ({e})"))
                })?;
                if data.is_empty() {
                    Vec::new()
                } else {
                    vec![data]
                }
            } else {
                let bytes = (info.sock_type == libc::SOCK_SEQPACKET).then_some(info.rqueue);
                peek_datagrams(&dup, bytes).map_err(|e| {
                    unsupported(format!("a unix socket whose queue cannot be read ({e})"))
                })?
            };
            return Ok(FileKind::UnixPair {
                ino,
                peer,
                sock_type: info.sock_type,
                queued,
            });
        }
        if tcp.is_none() {
            *tcp = Some(tcp_sockets(pid));
        }
        match tcp.as_ref().and_then(|m| m.get(&ino)) {
            // TCP_LISTEN
            Some(t) if t.state == 0x0A => Ok(FileKind::TcpListen {
                addr: t.local,
                backlog: t.backlog,
            }),
            // TCP_ESTABLISHED: in repair mode when the checkpointer may (CAP_NET_ADMIN).
            Some(t) if t.state == 0x01 => match tcp::save(pid, fd, ino, held) {
                Ok(c) => Ok(FileKind::TcpEstablished(Box::new(c))),
                Err(_) => Ok(FileKind::TcpClosed {
                    v6: t.local.is_ipv6(),
                }),
            },
            Some(t) => Ok(FileKind::TcpClosed {
                v6: t.local.is_ipv6(),
            }),
            None => {
                if udp.is_none() {
                    *udp = Some(udp_sockets(pid));
                }
                // A UDP socket never bound is in no table: asked through a duplicate.
                let unbound = || udp::unbound(pid, fd);
                match udp
                    .as_ref()
                    .and_then(|m| m.get(&ino))
                    .copied()
                    .or_else(unbound)
                {
                    Some(info) => udp::save(pid, fd, &info)
                        .map(|u| FileKind::Udp(Box::new(u)))
                        .map_err(|e| {
                            unsupported(format!("a UDP socket whose queue cannot be read ({e})"))
                        }),
                    None => Err(unsupported(format!(
                        "a socket of a kind this version cannot save (socket:[{ino}]: not AF_UNIX, TCP or UDP)"
                    ))),
                }
            }
        }
    }
}

/// A unix socket pair is saved only whole: both ends in the image.
pub(crate) fn check_pairs_whole(images: &[Image]) -> Result<(), CheckpointError> {
    let inos: Vec<u64> = images
        .iter()
        .flat_map(|i| i.files.iter())
        .filter_map(|f| match f.kind {
            FileKind::UnixPair { ino, .. } => Some(ino),
            _ => None,
        })
        .collect();
    for img in images {
        for (i, f) in img.files.iter().enumerate() {
            if let FileKind::UnixPair { peer, .. } = f.kind
                && !inos.contains(&peer)
            {
                let fd = img.fd_of(i);
                return Err(CheckpointError::UnsupportedFd {
                    pid: img.process.pid,
                    fd,
                    what: "a unix socket connected to a process outside the checkpoint's scope (save the whole job with --tree, --pgid or --sid)".into(),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Restart

/// Both ends of every AF_UNIX socket pair of the image, created with socketpair(2) and
/// refilled: what waited on one end is sent again from the other. Keyed by inode.
/// The shutdown bits of the pair end with inode `ino`, in whichever image holds it.
fn shutdown_of(imgs: &[&Image], ino: u64) -> Option<u8> {
    imgs.iter().find_map(|img| {
        img.socket_shutdown
            .iter()
            .find_map(|s| match img.files.get(s.file as usize)?.kind {
                FileKind::UnixPair { ino: i, .. } if i == ino => Some(s.how),
                _ => None,
            })
    })
}

pub(crate) fn socket_pairs(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd)>, RestartError> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, Shutdown, SockFlag, SockType, send, socketpair,
    };
    let ends: Vec<(u64, u64, i32, &Vec<Vec<u8>>)> = imgs
        .iter()
        .flat_map(|img| img.files.iter())
        .filter_map(|f| match &f.kind {
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                queued,
            } => Some((*ino, *peer, *sock_type, queued)),
            _ => None,
        })
        .collect();
    let mut out: Vec<(u64, OwnedFd)> = Vec::new();
    for &(ino, peer, ty, queued) in &ends {
        if out.iter().any(|(i, _)| *i == ino) {
            continue;
        }
        let Some(&(_, _, _, peer_queued)) = ends.iter().find(|e| e.0 == peer) else {
            continue; // refused at checkpoint; prepare_files reports it
        };
        let ty = match ty {
            libc::SOCK_DGRAM => SockType::Datagram,
            libc::SOCK_SEQPACKET => SockType::SeqPacket,
            _ => SockType::Stream,
        };
        let (a, b) = socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)
            .map_err(restart::sys_err("socketpair"))?;
        for (to_queue, via) in [(queued, &b), (peer_queued, &a)] {
            for chunk in to_queue {
                let mut rest = &chunk[..];
                loop {
                    let n = send(via.as_raw_fd(), rest, MsgFlags::MSG_DONTWAIT)
                        .map_err(restart::sys_err("refilling a socket"))?;
                    rest = &rest[n..];
                    if rest.is_empty() || ty != SockType::Stream {
                        break;
                    }
                }
            }
        }
        // Then each end's own shutdown (after the refill: a shut-down end sends nothing).
        for (end, fd) in [(ino, &a), (peer, &b)] {
            if let Some(how) = shutdown_of(imgs, end) {
                let mode = match how {
                    1 => Shutdown::Read,
                    2 => Shutdown::Write,
                    _ => Shutdown::Both,
                };
                nix::sys::socket::shutdown(fd.as_raw_fd(), mode)
                    .map_err(restart::sys_err("shutdown of a socket"))?;
            }
        }
        out.push((ino, a));
        out.push((peer, b));
    }
    Ok(out)
}

/// A TCP socket listening on `addr` again; the second value says why it could not be
/// bound or listen, if so (the socket is then returned unbound).
fn listen_again(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> Result<(OwnedFd, Option<Errno>), RestartError> {
    use nix::sys::socket::{Backlog, SockaddrStorage, bind, listen, setsockopt, sockopt};
    let mut fd = tcp_socket(addr.is_ipv6())?;
    let _ = setsockopt(&fd, sockopt::ReuseAddr, &true);
    let sa = SockaddrStorage::from(addr);
    if let Err(e) = bind(fd.as_raw_fd(), &sa) {
        // An IPv6 listener whose port is taken on IPv4 by a listener of the same job (an
        // MPI rank listens on both): the original had IPV6_V6ONLY, or it could not have
        // been bound beside it.
        if e != Errno::EADDRINUSE || !addr.is_ipv6() {
            return Ok((fd, Some(e)));
        }
        fd = tcp_socket(true)?;
        let _ = setsockopt(&fd, sockopt::ReuseAddr, &true);
        let _ = setsockopt(&fd, sockopt::Ipv6V6Only, &true);
        if let Err(e) = bind(fd.as_raw_fd(), &sa) {
            return Ok((fd, Some(e)));
        }
    }
    let backlog =
        Backlog::new(i32::try_from(backlog.max(1)).unwrap_or(128)).unwrap_or(Backlog::MAXCONN);
    Ok(match listen(&fd, backlog) {
        Ok(()) => (fd, None),
        Err(e) => (fd, Some(e)),
    })
}

fn tcp_socket(v6: bool) -> Result<OwnedFd, RestartError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(restart::sys_err("socket"))
}

/// The descriptor for a socket of the image.
pub(crate) fn open(
    pid: i32,
    first_fd: i32,
    kind: &FileKind,
    socks: &[(u64, OwnedFd)],
    warnings: &mut Vec<Warning>,
) -> Result<OwnedFd, RestartError> {
    match kind {
        FileKind::UnixPair { ino, .. } => {
            let end = socks
                .iter()
                .find(|(i, _)| i == ino)
                .ok_or(RestartError::Tree {
                    what: format!("unix socket {ino} has no peer in the image"),
                })?;
            restart::dup(&end.1, "a socket")
        }
        FileKind::TcpListen { addr, backlog } => {
            let (fd, problem) = listen_again(*addr, *backlog)?;
            if let Some(error) = problem {
                warnings.push(Warning::fd(
                    pid,
                    first_fd,
                    WarningKind::ListenFailed { addr: *addr, error },
                ));
            }
            Ok(fd)
        }
        FileKind::TcpClosed { v6 } => {
            warnings.push(Warning::fd(pid, first_fd, WarningKind::TcpConnectionClosed));
            tcp_socket(*v6)
        }
        FileKind::Udp(u) => {
            udp::again(pid, first_fd, u, warnings).map_err(restart::sys_err("a UDP socket"))
        }
        FileKind::TcpEstablished(c) => {
            let made = socks
                .iter()
                .find(|(i, _)| *i == c.ino)
                .ok_or(RestartError::Tree {
                    what: format!("TCP connection {} -> {} was not made", c.local, c.peer),
                })?;
            restart::dup(&made.1, "a socket")
        }
        FileKind::UnixSocket {
            sock_type,
            name,
            listen,
        } => unix_again(
            pid,
            first_fd,
            *sock_type,
            name.as_deref(),
            *listen,
            warnings,
        ),
        _ => Err(RestartError::Tree {
            what: format!("descriptor {first_fd} is not a socket"),
        }),
    }
}

/// An AF_UNIX socket of `sock_type` again, bound to `name` and listening with `backlog`
/// as it was. A path still taken by the dead original's socket file (nobody answers on it)
/// is unlinked and bound again; a name someone else holds leaves the socket unbound, with a
/// warning.
fn unix_again(
    pid: i32,
    fd: i32,
    sock_type: i32,
    name: Option<&[u8]>,
    listen: Option<u32>,
    warnings: &mut Vec<Warning>,
) -> Result<OwnedFd, RestartError> {
    use nix::sys::socket::{Backlog, UnixAddr, bind, connect};
    let ty = match sock_type {
        libc::SOCK_DGRAM => SockType::Datagram,
        libc::SOCK_SEQPACKET => SockType::SeqPacket,
        _ => SockType::Stream,
    };
    let fail = |op| {
        move |source| RestartError::Descriptor {
            pid,
            fd,
            op,
            source,
        }
    };
    let sock = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(fail("socket(AF_UNIX)"))?;
    let Some(name) = name else {
        return Ok(sock);
    };
    let shown = String::from_utf8_lossy(name).replace('\0', "@");
    let addr = match name.strip_prefix(b"\0") {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name),
        None => UnixAddr::new(std::ffi::OsStr::from_bytes(name)),
    };
    let addr = match addr {
        Ok(a) => a,
        Err(error) => {
            warnings.push(Warning::fd(
                pid,
                fd,
                WarningKind::UnixBindFailed { name: shown, error },
            ));
            return Ok(sock);
        }
    };
    let mut bound = bind(sock.as_raw_fd(), &addr);
    if bound == Err(Errno::EADDRINUSE) && !name.starts_with(b"\0") {
        // The original's socket file: gone stale if nobody accepts on it any more.
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
        let is_socket = std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        let probe = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None);
        let stale = is_socket
            && probe.is_ok_and(|p| connect(p.as_raw_fd(), &addr) == Err(Errno::ECONNREFUSED));
        if stale && std::fs::remove_file(path).is_ok() {
            bound = bind(sock.as_raw_fd(), &addr);
        }
    }
    if let Err(error) = bound {
        warnings.push(Warning::fd(
            pid,
            fd,
            WarningKind::UnixBindFailed { name: shown, error },
        ));
        return Ok(sock);
    }
    if let Some(backlog) = listen {
        let backlog =
            Backlog::new(i32::try_from(backlog.max(1)).unwrap_or(128)).unwrap_or(Backlog::MAXCONN);
        nix::sys::socket::listen(&sock, backlog).map_err(fail("listen"))?;
    }
    Ok(sock)
}

// ---------------------------------------------------------------------------------------
// Codec (the UnixPair, UnixSocket, TcpListen and TcpClosed kinds of a FILES record)

/// Tags of socket kinds in FILES.
pub(crate) const TAG_UNIX_PAIR: u8 = 9;
pub(crate) const TAG_TCP_LISTEN: u8 = 10;
pub(crate) const TAG_TCP_CLOSED: u8 = 11;
pub(crate) const TAG_UNIX_SOCKET: u8 = 13;
pub(crate) const TAG_TCP_ESTABLISHED: u8 = 14;
pub(crate) const TAG_UDP: u8 = 15;

/// Encode this kind (tag included) in a FILES record.
pub(crate) fn enc(e: &mut Enc, kind: &FileKind) {
    match kind {
        FileKind::UnixPair {
            ino,
            peer,
            sock_type,
            queued,
        } => {
            e.u8(TAG_UNIX_PAIR);
            e.u64(*ino);
            e.u64(*peer);
            e.i32(*sock_type);
            e.u64(queued.len() as u64);
            for q in queued {
                e.bytes(q);
            }
        }
        FileKind::TcpListen { addr, backlog } => {
            e.u8(TAG_TCP_LISTEN);
            enc_addr(e, *addr);
            e.u32(*backlog);
        }
        FileKind::TcpClosed { v6 } => {
            e.u8(TAG_TCP_CLOSED);
            e.bool(*v6);
        }
        FileKind::Udp(u) => {
            e.u8(TAG_UDP);
            e.i32(u.protocol);
            enc_addr(e, u.local);
            e.bool(u.peer.is_some());
            enc_addr(e, u.peer.unwrap_or(u.local));
            e.u64(u.queued.len() as u64);
            for (from, data) in &u.queued {
                enc_addr(e, *from);
                e.bytes(data);
            }
            options::enc(e, &u.options);
        }
        FileKind::TcpEstablished(c) => {
            e.u8(TAG_TCP_ESTABLISHED);
            e.u64(c.ino);
            enc_addr(e, c.local);
            enc_addr(e, c.peer);
            e.u32(c.snd_seq);
            e.u32(c.rcv_seq);
            e.bytes(&c.send_queue);
            e.u32(c.unsent);
            e.bytes(&c.recv_queue);
            e.u32(c.mss);
            e.bool(c.wscale.is_some());
            let (snd, rcv) = c.wscale.unwrap_or_default();
            e.u8(snd);
            e.u8(rcv);
            e.bool(c.sack);
            e.bool(c.timestamps);
            e.u32(c.ts);
            for w in c.window {
                e.u32(w);
            }
            options::enc(e, &c.options);
        }
        FileKind::UnixSocket {
            sock_type,
            name,
            listen,
        } => {
            e.u8(TAG_UNIX_SOCKET);
            e.i32(*sock_type);
            e.bool(name.is_some());
            e.bytes(name.as_deref().unwrap_or_default());
            e.bool(listen.is_some());
            e.u32(listen.unwrap_or(0));
        }
        _ => {}
    }
}

/// An IPv4 or IPv6 address and port: v6 flag, 16 bytes (IPv4 v4-mapped), port.
fn enc_addr(e: &mut Enc, addr: std::net::SocketAddr) {
    let (v6, ip) = match addr.ip() {
        std::net::IpAddr::V4(a) => (false, a.to_ipv6_mapped().octets()),
        std::net::IpAddr::V6(a) => (true, a.octets()),
    };
    e.bool(v6);
    e.bytes(&ip);
    e.u32(u32::from(addr.port()));
}

fn dec_addr(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<std::net::SocketAddr, ImageError> {
    let w = cx.wire();
    let v6 = d.bool().map_err(&w)?;
    let raw = d.bytes().map_err(&w)?;
    let ip: [u8; 16] = raw
        .try_into()
        .map_err(|_| cx.invalid("TCP address is not 16 bytes"))?;
    let port =
        u16::try_from(d.u32().map_err(&w)?).map_err(|_| cx.invalid("TCP port out of range"))?;
    let ip6 = std::net::Ipv6Addr::from(ip);
    let ip = match (v6, ip6.to_ipv4_mapped()) {
        (false, Some(v4)) => std::net::IpAddr::V4(v4),
        (false, None) => return Err(cx.invalid("IPv4 address not v4-mapped")),
        (true, _) => std::net::IpAddr::V6(ip6),
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Decode this kind after its tag.
pub(crate) fn dec(tag: u8, d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<FileKind, ImageError> {
    let w = cx.wire();
    Ok(match tag {
        TAG_UNIX_PAIR => {
            let ino = d.u64().map_err(&w)?;
            let peer = d.u64().map_err(&w)?;
            let sock_type = d.i32().map_err(&w)?;
            if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sock_type) {
                return Err(cx.invalid(format!("unix socket type {sock_type}")));
            }
            let n = d.count(1 << 20).map_err(&w)?;
            let mut queued = Vec::with_capacity(n);
            for _ in 0..n {
                queued.push(d.bytes().map_err(&w)?.to_vec());
            }
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                queued,
            }
        }
        TAG_TCP_LISTEN => FileKind::TcpListen {
            addr: dec_addr(d, cx)?,
            backlog: d.u32().map_err(&w)?,
        },
        TAG_UDP => {
            let protocol = d.i32().map_err(&w)?;
            if !udp::PROTOCOLS.contains(&protocol) {
                return Err(cx.invalid(format!("datagram socket protocol {protocol}")));
            }
            let local = dec_addr(d, cx)?;
            let connected = d.bool().map_err(&w)?;
            let peer = dec_addr(d, cx)?;
            let n = d.count(udp::MAX_DATAGRAMS as u64).map_err(&w)?;
            let mut queued = Vec::with_capacity(n);
            let mut bytes = 0usize;
            for _ in 0..n {
                let from = dec_addr(d, cx)?;
                let data = d.bytes().map_err(&w)?.to_vec();
                bytes += data.len();
                if data.len() > 1 << 16
                    || bytes > udp::MAX_BYTES
                    || from.is_ipv6() != local.is_ipv6()
                {
                    return Err(cx.invalid("UDP datagram out of range"));
                }
                queued.push((from, data));
            }
            if peer.is_ipv6() != local.is_ipv6() {
                return Err(cx.invalid("UDP socket between an IPv4 and an IPv6 address"));
            }
            FileKind::Udp(Box::new(UdpSocket {
                protocol,
                local,
                peer: connected.then_some(peer),
                queued,
                options: options::dec(d, cx)?,
            }))
        }
        TAG_TCP_ESTABLISHED => {
            let ino = d.u64().map_err(&w)?;
            let local = dec_addr(d, cx)?;
            let peer = dec_addr(d, cx)?;
            if local.is_ipv6() != peer.is_ipv6() {
                return Err(cx.invalid("TCP connection between an IPv4 and an IPv6 address"));
            }
            let snd_seq = d.u32().map_err(&w)?;
            let rcv_seq = d.u32().map_err(&w)?;
            let send_queue = d.bytes().map_err(&w)?.to_vec();
            let unsent = d.u32().map_err(&w)?;
            let recv_queue = d.bytes().map_err(&w)?.to_vec();
            if send_queue.len() > tcp::MAX_QUEUE
                || recv_queue.len() > tcp::MAX_QUEUE
                || unsent as usize > send_queue.len()
            {
                return Err(cx.invalid("TCP queue out of range"));
            }
            let mss = d.u32().map_err(&w)?;
            let scaled = d.bool().map_err(&w)?;
            let (snd, rcv) = (d.u8().map_err(&w)?, d.u8().map_err(&w)?);
            // TCP_MAX_WSCALE is 14 (include/net/tcp.h).
            if snd > 14 || rcv > 14 {
                return Err(cx.invalid("TCP window scale out of range"));
            }
            let sack = d.bool().map_err(&w)?;
            let timestamps = d.bool().map_err(&w)?;
            let ts = d.u32().map_err(&w)?;
            let mut window = [0u32; 5];
            for v in &mut window {
                *v = d.u32().map_err(&w)?;
            }
            FileKind::TcpEstablished(Box::new(TcpConnection {
                ino,
                local,
                peer,
                snd_seq,
                rcv_seq,
                send_queue,
                unsent,
                recv_queue,
                mss,
                wscale: scaled.then_some((snd, rcv)),
                sack,
                timestamps,
                ts,
                window,
                options: options::dec(d, cx)?,
            }))
        }
        TAG_TCP_CLOSED => FileKind::TcpClosed {
            v6: d.bool().map_err(&w)?,
        },
        TAG_UNIX_SOCKET => {
            let sock_type = d.i32().map_err(&w)?;
            if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sock_type) {
                return Err(cx.invalid(format!("unix socket type {sock_type}")));
            }
            let named = d.bool().map_err(&w)?;
            let raw = d.bytes().map_err(&w)?;
            // sun_path holds 108 bytes; a path name has no NUL, an abstract one starts
            // with one.
            if raw.len() > 108 || (named && raw.is_empty()) || (!named && !raw.is_empty()) {
                return Err(cx.invalid("unix socket name out of range"));
            }
            if named && raw[0] != 0 && (raw.contains(&0) || raw[0] != b'/') {
                return Err(cx.invalid("unix socket path is not an absolute path"));
            }
            let listening = d.bool().map_err(&w)?;
            let backlog = d.u32().map_err(&w)?;
            FileKind::UnixSocket {
                sock_type,
                name: named.then(|| raw.to_vec()),
                listen: listening.then_some(backlog),
            }
        }
        k => return Err(cx.invalid(format!("unknown file kind {k}"))),
    })
}

// ---------------------------------------------------------------------------------------
// Section codec: SOCKET_SHUTDOWN (optional)

/// The SOCKET_SHUTDOWN section: pair ends shut down, by file index.
pub(crate) const SHUTDOWN: OptionalSection = OptionalSection {
    kind: 0x8000_0010,
    name: "SOCKET_SHUTDOWN",
    encode: |image| {
        if image.socket_shutdown.is_empty() {
            return None;
        }
        let mut e = Enc::new();
        e.u64(image.socket_shutdown.len() as u64);
        for s in &image.socket_shutdown {
            e.u32(s.file);
            e.u8(s.how);
        }
        Some(e.into_vec())
    },
    decode: |data, image, _, cx| {
        let w = cx.wire();
        let mut d = Dec::new(data);
        let n = d.count(MAX_FDS).map_err(&w)?;
        for _ in 0..n {
            let s = SocketShutdown {
                file: d.u32().map_err(&w)?,
                how: d.u8().map_err(&w)?,
            };
            let pair = image
                .files
                .get(s.file as usize)
                .is_some_and(|f| matches!(f.kind, FileKind::UnixPair { .. }));
            if !pair || !(1..=3).contains(&s.how) {
                return Err(cx.invalid(format!("socket shutdown {s:?} is invalid")));
            }
            image.socket_shutdown.push(s);
        }
        d.finish().map_err(&w)?;
        Ok(())
    },
};
