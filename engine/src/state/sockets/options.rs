//! The socket options a program sets on its TCP and UDP sockets and relies on finding
//! again: address reuse, keepalive and its timers, linger, TCP_NODELAY, the TCP user
//! timeout, IP_FREEBIND, SO_BROADCAST. Read through the checkpointer's duplicate of the
//! descriptor, set on the new socket before it is bound (the reuse options must be).
//! Buffer sizes are not among them: a size the program never set is the kernel's
//! autotuning, which setting it would switch off.

use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::SocketOptions;
use nix::errno::Errno;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use std::os::fd::BorrowedFd;

/// The options of `fd`; `tcp` adds the TCP-level ones. An option the kernel will not
/// tell is left at its default.
pub(crate) fn read(fd: BorrowedFd<'_>, tcp: bool) -> SocketOptions {
    let mut o = SocketOptions {
        reuse_addr: getsockopt(&fd, sockopt::ReuseAddr).unwrap_or(false),
        reuse_port: getsockopt(&fd, sockopt::ReusePort).unwrap_or(false),
        keepalive: getsockopt(&fd, sockopt::KeepAlive).unwrap_or(false),
        linger: getsockopt(&fd, sockopt::Linger)
            .ok()
            .filter(|l| l.l_onoff != 0)
            .map(|l| l.l_linger.max(0) as u32),
        freebind: getsockopt(&fd, sockopt::IpFreebind).unwrap_or(false),
        broadcast: getsockopt(&fd, sockopt::Broadcast).unwrap_or(false),
        ..SocketOptions::default()
    };
    if tcp {
        o.nodelay = getsockopt(&fd, sockopt::TcpNoDelay).unwrap_or(false);
        o.keep_idle = getsockopt(&fd, sockopt::TcpKeepIdle).unwrap_or(0);
        o.keep_interval = getsockopt(&fd, sockopt::TcpKeepInterval).unwrap_or(0);
        o.keep_count = getsockopt(&fd, sockopt::TcpKeepCount).unwrap_or(0);
        o.user_timeout = getsockopt(&fd, sockopt::TcpUserTimeout).unwrap_or(0);
    }
    o
}

/// Set `o` on `fd` (a new socket, not bound yet); `tcp` as for [`read`]. The first
/// option the kernel refuses is the error, with its name.
pub(crate) fn apply(
    fd: BorrowedFd<'_>,
    o: &SocketOptions,
    tcp: bool,
) -> Result<(), (&'static str, Errno)> {
    let named = |name| move |e| (name, e);
    setsockopt(&fd, sockopt::ReuseAddr, &o.reuse_addr).map_err(named("SO_REUSEADDR"))?;
    setsockopt(&fd, sockopt::ReusePort, &o.reuse_port).map_err(named("SO_REUSEPORT"))?;
    setsockopt(&fd, sockopt::KeepAlive, &o.keepalive).map_err(named("SO_KEEPALIVE"))?;
    if let Some(secs) = o.linger {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: i32::try_from(secs).unwrap_or(i32::MAX),
        };
        setsockopt(&fd, sockopt::Linger, &l).map_err(named("SO_LINGER"))?;
    }
    if o.freebind {
        setsockopt(&fd, sockopt::IpFreebind, &true).map_err(named("IP_FREEBIND"))?;
    }
    if o.broadcast {
        setsockopt(&fd, sockopt::Broadcast, &true).map_err(named("SO_BROADCAST"))?;
    }
    if tcp {
        setsockopt(&fd, sockopt::TcpNoDelay, &o.nodelay).map_err(named("TCP_NODELAY"))?;
        // 0: the value was not read; the kernel's default stays.
        if o.keep_idle > 0 {
            setsockopt(&fd, sockopt::TcpKeepIdle, &o.keep_idle).map_err(named("TCP_KEEPIDLE"))?;
        }
        if o.keep_interval > 0 {
            setsockopt(&fd, sockopt::TcpKeepInterval, &o.keep_interval)
                .map_err(named("TCP_KEEPINTVL"))?;
        }
        if o.keep_count > 0 {
            setsockopt(&fd, sockopt::TcpKeepCount, &o.keep_count).map_err(named("TCP_KEEPCNT"))?;
        }
        setsockopt(&fd, sockopt::TcpUserTimeout, &o.user_timeout)
            .map_err(named("TCP_USER_TIMEOUT"))?;
    }
    Ok(())
}

pub(crate) fn enc(e: &mut Enc, o: &SocketOptions) {
    let flags = u32::from(o.reuse_addr)
        | u32::from(o.reuse_port) << 1
        | u32::from(o.keepalive) << 2
        | u32::from(o.linger.is_some()) << 3
        | u32::from(o.nodelay) << 4
        | u32::from(o.freebind) << 5
        | u32::from(o.broadcast) << 6;
    e.u32(flags);
    e.u32(o.linger.unwrap_or(0));
    e.u32(o.keep_idle);
    e.u32(o.keep_interval);
    e.u32(o.keep_count);
    e.u32(o.user_timeout);
}

pub(crate) fn dec(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<SocketOptions, ImageError> {
    let w = cx.wire();
    let flags = d.u32().map_err(&w)?;
    if flags >> 7 != 0 {
        return Err(cx.invalid(format!("socket option flags {flags:#x}")));
    }
    let linger = d.u32().map_err(&w)?;
    let o = SocketOptions {
        reuse_addr: flags & 1 != 0,
        reuse_port: flags & 2 != 0,
        keepalive: flags & 4 != 0,
        linger: (flags & 8 != 0).then_some(linger),
        nodelay: flags & 16 != 0,
        freebind: flags & 32 != 0,
        broadcast: flags & 64 != 0,
        keep_idle: d.u32().map_err(&w)?,
        keep_interval: d.u32().map_err(&w)?,
        keep_count: d.u32().map_err(&w)?,
        user_timeout: d.u32().map_err(&w)?,
    };
    // The kernel's own bounds (net/ipv4/tcp.c): idle and interval up to 32767 s, count
    // up to 127; linger is an int.
    if o.keep_idle > 32767
        || o.keep_interval > 32767
        || o.keep_count > 127
        || linger > i32::MAX as u32
    {
        return Err(cx.invalid("socket option out of range"));
    }
    Ok(o)
}
