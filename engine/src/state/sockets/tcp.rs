//! Established TCP connections, saved and restored in repair mode (`TCP_REPAIR`, the
//! technique CRIU uses; the kernel side is `net/ipv4/tcp.c`, `tcp_repair_*`).
//!
//! Checkpoint ([`save`]): through a duplicate of the process's descriptor
//! (`pidfd_getfd`), the socket goes into repair mode, which stops it sending anything;
//! its addresses, both queues with their sequence numbers, the negotiated options
//! (MSS, window scaling, SACK, timestamps), the timestamp clock and the window are read.
//! The duplicates stay in repair mode in a [`Held`] until the processes' fate is decided:
//! a process that runs on (or a checkpoint that fails) gets its connections back out of
//! repair mode; one that is killed closes them still in repair mode, which sends neither
//! FIN nor RST, so a peer in the same image never learns the connection closed.
//!
//! Restart ([`connections`]): every connection of the image is made again in repair mode
//! before any goes live (two ends of one connection must both exist before either
//! sends a window probe): a socket bound to the local address, its queue sequence
//! numbers set back by the queues' lengths, `connect` (which in repair mode sends no
//! SYN and makes the socket established), the options, the queues refilled (the sent
//! part of the send queue counts as in flight and is retransmitted if the peer did not
//! have it), the window. [`Pending::release`], just before the processes run, takes
//! each out of repair mode and sends what was never sent.
//!
//! Who may: repair mode needs CAP_NET_ADMIN. A checkpointer without it saves the
//! connection as [`FileKind::TcpClosed`] (restored unconnected, with a warning). Root
//! restoring a user's image (which the user could have edited) makes only loopback
//! connections on unprivileged ports in repair mode: anything else would let an edited
//! image send segments with chosen addresses and sequence numbers.

use super::diag::inet_address;
use crate::model::{FileKind, Image, TcpConnection};
use crate::sys::tcp::{
    self as repair, NO_QUEUE, OPT_MSS, OPT_SACK_PERM, OPT_TIMESTAMP, OPT_WINDOW, RECV_QUEUE,
    REPAIR_OFF, REPAIR_ON, RepairOpt, RepairWindow, SEND_QUEUE,
};
use crate::sys::{self};
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage, bind, connect,
    getpeername, getsockname, getsockopt, recv, send, setsockopt, socket, sockopt,
};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// A step that failed, and why.
pub(crate) type Failed = (&'static str, Errno);

/// The largest queue saved (the kernel's queues are bounded by the socket buffers,
/// `net.ipv4.tcp_wmem`/`tcp_rmem`, a few MiB by default).
pub(crate) const MAX_QUEUE: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Connections in repair mode, held until the processes' fate is decided. Dropped as is
/// (a checkpoint that failed), they leave repair mode and carry on.
#[derive(Debug, Default)]
pub(crate) struct Held {
    fds: Vec<OwnedFd>,
}

impl Held {
    /// The processes run on: the connections leave repair mode (the kernel sends a
    /// window probe) and carry on as if nothing happened.
    pub(crate) fn resume(&mut self) {
        for fd in self.fds.drain(..) {
            // Best effort: a socket that cannot leave repair mode is lost either way.
            let _ = repair::set_repair(fd.as_fd(), REPAIR_OFF);
        }
    }

    /// The processes are gone (or going): close the connections still in repair mode,
    /// so that no FIN or RST tells the peer.
    pub(crate) fn discard(mut self) {
        self.fds.clear();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.resume();
    }
}

/// Save the established connection behind descriptor `fd` of `pid` (socket inode
/// `ino`), leaving it in repair mode in `held`.
pub(crate) fn save(pid: i32, fd: i32, ino: u64, held: &mut Held) -> Result<TcpConnection, Failed> {
    let dup = sys::process::pidfd_getfd(pid, fd).map_err(|e| ("pidfd_getfd", e))?;
    repair::set_repair(dup.as_fd(), REPAIR_ON).map_err(|e| ("TCP_REPAIR", e))?;
    match read(dup.as_fd(), ino) {
        Ok(conn) => {
            held.fds.push(dup);
            Ok(conn)
        }
        Err(e) => {
            let _ = repair::set_repair(dup.as_fd(), REPAIR_OFF);
            Err(e)
        }
    }
}

fn read(fd: BorrowedFd<'_>, ino: u64) -> Result<TcpConnection, Failed> {
    let local = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(inet_address)
        .ok_or(("getsockname", Errno::EAFNOSUPPORT))?;
    let peer = getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(inet_address)
        .ok_or(("getpeername", Errno::ENOTCONN))?;
    let info = repair::info(fd).map_err(|e| ("TCP_INFO", e))?;
    // TCP_ESTABLISHED is 1 (include/net/tcp_states.h).
    if info.tcpi_state != 1 {
        return Err((
            "TCP_INFO: the connection is not established",
            Errno::ENOTCONN,
        ));
    }
    // `tcpi_options` bits (include/uapi/linux/tcp.h): TCPI_OPT_TIMESTAMPS 1, SACK 2, WSCALE 4.
    let opts = info.tcpi_options;
    let wscale = (opts & 4 != 0).then_some((
        info.tcpi_snd_rcv_wscale & 0xf,
        info.tcpi_snd_rcv_wscale >> 4,
    ));
    let mss = getsockopt(&fd, sockopt::TcpMaxSeg).map_err(|e| ("TCP_MAXSEG", e))?;

    repair::select_queue(fd, SEND_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    let snd_seq = repair::queue_seq(fd).map_err(|e| ("TCP_QUEUE_SEQ", e))?;
    let outq = repair::send_queue_len(fd).map_err(|e| ("SIOCOUTQ", e))? as usize;
    let unsent = repair::unsent_len(fd).map_err(|e| ("SIOCOUTQNSD", e))?;
    let send_queue = peek(fd, outq).map_err(|e| ("peeking the send queue", e))?;
    repair::select_queue(fd, RECV_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    let rcv_seq = repair::queue_seq(fd).map_err(|e| ("TCP_QUEUE_SEQ", e))?;
    let inq = sys::process::fionread(fd).map_err(|e| ("SIOCINQ", e))?;
    let recv_queue = peek(fd, inq).map_err(|e| ("peeking the receive queue", e))?;
    repair::select_queue(fd, NO_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    let ts = repair::timestamp(fd).map_err(|e| ("TCP_TIMESTAMP", e))?;
    let w = repair::window(fd).map_err(|e| ("TCP_REPAIR_WINDOW", e))?;
    Ok(TcpConnection {
        ino,
        local,
        peer,
        snd_seq,
        rcv_seq,
        send_queue,
        unsent: unsent.min(outq as u32),
        recv_queue,
        mss,
        wscale,
        sack: opts & 2 != 0,
        timestamps: opts & 1 != 0,
        ts,
        window: [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup],
        options: super::options::read(fd, true),
    })
}

/// All `len` bytes of the selected queue, peeked (in repair mode, `MSG_PEEK` reads the
/// send queue too); a queue of another length than the kernel said is an error.
fn peek(fd: BorrowedFd<'_>, len: usize) -> Result<Vec<u8>, Errno> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if len > MAX_QUEUE {
        return Err(Errno::E2BIG);
    }
    let mut buf = vec![0u8; len];
    let n = recv(
        fd.as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )?;
    if n != len {
        return Err(Errno::EAGAIN);
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------
// Restart

/// Connections made again in repair mode, waiting for their processes to run.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Each socket, with the bytes it had never sent, and who holds it (for warnings).
    live: Vec<Live>,
}

#[derive(Debug)]
struct Live {
    sock: OwnedFd,
    unsent: Vec<u8>,
    /// SO_REUSEADDR as the program had it (on while in repair mode).
    reuse_addr: bool,
    pid: i32,
    fd: i32,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Pending {
    /// Take every connection out of repair mode and send what it had never sent: just
    /// before the processes run. A connection that cannot leave repair mode, or take
    /// its unsent bytes (the buffer was made to hold them), is a warning.
    pub(crate) fn release(&mut self, warnings: &mut Vec<Warning>) {
        for l in self.live.drain(..) {
            let fd = l.sock.as_fd();
            let result = repair::set_repair(fd, REPAIR_OFF)
                .map_err(|e| ("leaving repair mode", e))
                .and_then(|()| {
                    setsockopt(&fd, sockopt::ReuseAddr, &l.reuse_addr)
                        .map_err(|e| ("SO_REUSEADDR", e))
                })
                .and_then(|()| push(fd, &l.unsent).map_err(|e| ("sending its unsent bytes", e)));
            if let Err((step, error)) = result {
                warnings.push(Warning::fd(
                    l.pid,
                    l.fd,
                    WarningKind::TcpNotRestored {
                        local: l.local,
                        peer: l.peer,
                        step,
                        error,
                    },
                ));
            }
        }
    }
}

/// Every established connection of the images, made again in repair mode (see the
/// module header), keyed by the socket's inode at checkpoint; `Pending` holds them in
/// repair mode until [`Pending::release`]. A connection that cannot be made is an
/// unconnected socket, with a warning naming the step and the reason. `as_user`: root
/// restores a user's image (see the module header).
pub(crate) fn connections(
    imgs: &[&Image],
    as_user: bool,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<(u64, OwnedFd)>, Pending), Errno> {
    let mut socks: Vec<(u64, OwnedFd)> = Vec::new();
    let mut pending = Pending::default();
    for img in imgs {
        for (i, f) in img.files.iter().enumerate() {
            let FileKind::TcpEstablished(c) = &f.kind else {
                continue;
            };
            if socks.iter().any(|(ino, _)| *ino == c.ino) {
                continue;
            }
            let fd = img.fd_of(i);
            let made = if as_user && !user_may_repair(c) {
                Err((
                    "a user's image: only loopback connections on unprivileged ports are made in repair mode",
                    Errno::EPERM,
                ))
            } else {
                make(c)
            };
            match made {
                Ok(sock) => {
                    let dup = sock
                        .try_clone()
                        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EMFILE)))?;
                    let unsent = c.send_queue[c.send_queue.len() - c.unsent as usize..].to_vec();
                    pending.live.push(Live {
                        sock,
                        unsent,
                        reuse_addr: c.options.reuse_addr,
                        pid: img.process.pid,
                        fd,
                        local: c.local,
                        peer: c.peer,
                    });
                    socks.push((c.ino, dup));
                }
                Err((step, error)) => {
                    warnings.push(Warning::fd(
                        img.process.pid,
                        fd,
                        WarningKind::TcpNotRestored {
                            local: c.local,
                            peer: c.peer,
                            step,
                            error,
                        },
                    ));
                    let family = if c.local.is_ipv6() {
                        AddressFamily::Inet6
                    } else {
                        AddressFamily::Inet
                    };
                    socks.push((
                        c.ino,
                        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?,
                    ));
                }
            }
        }
    }
    Ok((socks, pending))
}

/// Root restores a user's image: loopback at both ends and a local port a user may bind.
fn user_may_repair(c: &TcpConnection) -> bool {
    let unprivileged_from =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
            .unwrap_or(1024);
    c.local.ip().is_loopback() && c.peer.ip().is_loopback() && c.local.port() >= unprivileged_from
}

/// One connection again, in repair mode, established, its queues refilled.
fn make(c: &TcpConnection) -> Result<OwnedFd, Failed> {
    let family = if c.local.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let sock = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| ("socket", e))?;
    let fd = sock.as_fd();
    repair::set_repair(fd, REPAIR_ON).map_err(|e| ("TCP_REPAIR", e))?;
    super::options::apply(fd, &c.options, true)?;
    // The original's port may linger in the kernel's tables a moment after it closed.
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| ("SO_REUSEADDR", e))?;
    // In repair mode the kernel lets the bind share the port with a listener of the
    // image (an accepted connection's port is its listener's) and with the other
    // connections accepted from it; SO_REUSEADDR stays on until repair mode ends, so the
    // listener, bound after, may share it too. `Pending::release` sets the saved value.
    bind(fd.as_raw_fd(), &SockaddrStorage::from(c.local)).map_err(|e| ("bind", e))?;
    let sent = c.send_queue.len() - c.unsent as usize;
    repair::select_queue(fd, SEND_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    // The queues' data is sent again below, which advances each sequence number back
    // to where it was; the unsent part follows after repair mode.
    repair::set_queue_seq(fd, c.snd_seq.wrapping_sub(c.send_queue.len() as u32))
        .map_err(|e| ("TCP_QUEUE_SEQ", e))?;
    repair::select_queue(fd, RECV_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    repair::set_queue_seq(fd, c.rcv_seq.wrapping_sub(c.recv_queue.len() as u32))
        .map_err(|e| ("TCP_QUEUE_SEQ", e))?;
    let peer = SockaddrStorage::from(c.peer);
    debug_assert!(peer.len() > 0);
    connect(fd.as_raw_fd(), &peer).map_err(|e| ("connect", e))?;
    let mss = RepairOpt {
        code: OPT_MSS,
        val: c.mss,
    };
    let mut opts = [mss; 4];
    if let Some((snd, rcv)) = c.wscale {
        opts[1] = RepairOpt {
            code: OPT_WINDOW,
            val: u32::from(snd) | u32::from(rcv) << 16,
        };
    }
    if c.sack {
        opts[2] = RepairOpt {
            code: OPT_SACK_PERM,
            val: 0,
        };
    }
    if c.timestamps {
        opts[3] = RepairOpt {
            code: OPT_TIMESTAMP,
            val: 0,
        };
    }
    repair::set_options(fd, &opts).map_err(|e| ("TCP_REPAIR_OPTIONS", e))?;
    if c.timestamps {
        repair::set_timestamp(fd, c.ts).map_err(|e| ("TCP_TIMESTAMP", e))?;
    }
    // The original's buffers had grown to hold its queues (autotuning); a new socket's
    // are small: room for the whole of each queue, so no byte waits outside the kernel.
    for (queue, force) in [(&c.send_queue, true), (&c.recv_queue, false)] {
        if queue.len() > 64 << 10 {
            let size = queue.len().saturating_mul(2).min(MAX_QUEUE * 2);
            let set = if force {
                setsockopt(&fd, sockopt::SndBufForce, &size)
            } else {
                setsockopt(&fd, sockopt::RcvBufForce, &size)
            };
            set.map_err(|e| {
                (
                    if force {
                        "SO_SNDBUFFORCE"
                    } else {
                        "SO_RCVBUFFORCE"
                    },
                    e,
                )
            })?;
        }
    }
    repair::select_queue(fd, SEND_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    push(fd, &c.send_queue[..sent]).map_err(|e| ("refilling the send queue", e))?;
    repair::select_queue(fd, RECV_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    push(fd, &c.recv_queue).map_err(|e| ("refilling the receive queue", e))?;
    repair::select_queue(fd, NO_QUEUE).map_err(|e| ("TCP_REPAIR_QUEUE", e))?;
    let [snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup] = c.window;
    let w = RepairWindow {
        snd_wl1,
        snd_wnd,
        max_window,
        rcv_wnd,
        rcv_wup,
    };
    repair::set_window(fd, &w).map_err(|e| ("TCP_REPAIR_WINDOW", e))?;
    Ok(sock)
}

/// Send all of `data` into the selected queue (repair mode: nothing goes on the wire).
fn push(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        let n = send(
            fd.as_raw_fd(),
            data,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        )?;
        if n == 0 {
            return Err(Errno::EAGAIN);
        }
        data = &data[n..];
    }
    Ok(())
}
