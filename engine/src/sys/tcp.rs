//! TCP repair mode (`TCP_REPAIR`, Linux 3.5; the window, 4.8): the socket options that
//! read and set a connection's sequence numbers, queues, options and window without a
//! packet on the wire, and the queue-length ioctls. The options are declared with nix's
//! `sockopt_impl!`, so their `getsockopt`/`setsockopt` are nix's code; the ioctls, which
//! nix has no wrapper for, are the only `unsafe` here.
//!
//! Values and layouts: `include/uapi/linux/tcp.h` (TCP_REPAIR 19, TCP_REPAIR_QUEUE 20,
//! TCP_QUEUE_SEQ 21, TCP_REPAIR_OPTIONS 22, TCP_TIMESTAMP 24, TCP_REPAIR_WINDOW 29;
//! `struct tcp_repair_opt`, `struct tcp_repair_window`), `include/uapi/linux/sockios.h`
//! (SIOCOUTQNSD 0x894B), and `net/ipv4/tcp.c` for what each does.

use nix::errno::Errno;
// `sockopt_impl!` names its helper macros unqualified: they must be in scope.
use nix::sys::socket::{getsockopt, setsockopt};
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_REPAIR` values: on, off (the kernel then sends a window probe), off without the
/// probe.
pub const REPAIR_ON: i32 = 1;
/// See [`REPAIR_ON`].
pub const REPAIR_OFF: i32 = 0;

/// `TCP_REPAIR_QUEUE` values: which queue `TCP_QUEUE_SEQ`, `send` and `recv` act on.
pub const NO_QUEUE: i32 = 0;
/// The receive queue.
pub const RECV_QUEUE: i32 = 1;
/// The send queue.
pub const SEND_QUEUE: i32 = 2;

/// `TCPOPT_*` codes of `TCP_REPAIR_OPTIONS` (`include/net/tcp.h`).
pub const OPT_MSS: u32 = 2;
/// Window scaling: the value is `snd_wscale | rcv_wscale << 16`.
pub const OPT_WINDOW: u32 = 3;
/// SACK permitted (value 0).
pub const OPT_SACK_PERM: u32 = 4;
/// Timestamps (value 0).
pub const OPT_TIMESTAMP: u32 = 8;

/// `struct tcp_repair_opt`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOpt {
    /// A `TCPOPT_*` code; the kernel skips codes it does not know.
    pub code: u32,
    /// Its value.
    pub val: u32,
}

/// `struct tcp_repair_window`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairWindow {
    /// Sequence number of the segment that last updated the send window.
    pub snd_wl1: u32,
    /// The send window.
    pub snd_wnd: u32,
    /// The largest window the peer offered.
    pub max_window: u32,
    /// The receive window.
    pub rcv_wnd: u32,
    /// `rcv_nxt` when the receive window was last announced.
    pub rcv_wup: u32,
}

/// The options `TCP_REPAIR_OPTIONS` takes at once: MSS, window scaling, SACK, timestamps
/// (an option a connection did not negotiate is sent as a second MSS entry).
pub type RepairOpts = [RepairOpt; 4];

sockopt_impl!(
    /// `TCP_REPAIR`: repair mode on or off (needs CAP_NET_ADMIN).
    Repair,
    SetOnly,
    libc::SOL_TCP,
    libc::TCP_REPAIR,
    i32
);
sockopt_impl!(
    /// `TCP_REPAIR_QUEUE`: the queue the next calls act on.
    RepairQueue,
    SetOnly,
    libc::SOL_TCP,
    libc::TCP_REPAIR_QUEUE,
    i32
);
sockopt_impl!(
    /// `TCP_QUEUE_SEQ`: the selected queue's sequence number (send: `write_seq`, receive:
    /// `rcv_nxt`); settable only before the connection exists.
    QueueSeq,
    Both,
    libc::SOL_TCP,
    libc::TCP_QUEUE_SEQ,
    u32
);
sockopt_impl!(
    /// `TCP_REPAIR_OPTIONS`: the options the handshake negotiated.
    Options,
    SetOnly,
    libc::SOL_TCP,
    libc::TCP_REPAIR_OPTIONS,
    RepairOpts
);
sockopt_impl!(
    /// `TCP_TIMESTAMP`: the connection's timestamp clock (setting it sets the offset).
    Timestamp,
    Both,
    libc::SOL_TCP,
    libc::TCP_TIMESTAMP,
    u32
);
sockopt_impl!(
    /// `TCP_REPAIR_WINDOW`.
    Window,
    Both,
    libc::SOL_TCP,
    libc::TCP_REPAIR_WINDOW,
    RepairWindow
);
sockopt_impl!(
    /// `TCP_INFO` (only its first bytes are used: state, options, window scales).
    Info,
    GetOnly,
    libc::SOL_TCP,
    libc::TCP_INFO,
    libc::tcp_info
);

/// Repair mode on or off.
pub fn set_repair(fd: BorrowedFd<'_>, mode: i32) -> Result<(), Errno> {
    setsockopt(&fd, Repair, &mode)
}

/// Select the queue the next calls act on.
pub fn select_queue(fd: BorrowedFd<'_>, queue: i32) -> Result<(), Errno> {
    setsockopt(&fd, RepairQueue, &queue)
}

/// The selected queue's sequence number.
pub fn queue_seq(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    getsockopt(&fd, QueueSeq)
}

/// Set the selected queue's sequence number.
pub fn set_queue_seq(fd: BorrowedFd<'_>, seq: u32) -> Result<(), Errno> {
    setsockopt(&fd, QueueSeq, &seq)
}

/// Set the negotiated options.
pub fn set_options(fd: BorrowedFd<'_>, opts: &RepairOpts) -> Result<(), Errno> {
    setsockopt(&fd, Options, opts)
}

/// The timestamp clock.
pub fn timestamp(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    getsockopt(&fd, Timestamp)
}

/// Set the timestamp clock.
pub fn set_timestamp(fd: BorrowedFd<'_>, ts: u32) -> Result<(), Errno> {
    setsockopt(&fd, Timestamp, &ts)
}

/// The window.
pub fn window(fd: BorrowedFd<'_>) -> Result<RepairWindow, Errno> {
    getsockopt(&fd, Window)
}

/// Set the window.
pub fn set_window(fd: BorrowedFd<'_>, w: &RepairWindow) -> Result<(), Errno> {
    setsockopt(&fd, Window, w)
}

/// `TCP_INFO`.
pub fn info(fd: BorrowedFd<'_>) -> Result<libc::tcp_info, Errno> {
    getsockopt(&fd, Info)
}

fn ioctl_int(fd: BorrowedFd<'_>, request: libc::c_ulong) -> Result<u32, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ and SIOCOUTQNSD write one int to `n`, which is writable and alive
    // across the call; `fd` is borrowed, so open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut n as *mut libc::c_int) };
    super::check(libc::c_long::from(ret))?;
    Ok(n.max(0) as u32)
}

/// Bytes in the send queue, sent and not acknowledged or not sent yet (`SIOCOUTQ`).
pub fn send_queue_len(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    ioctl_int(fd, libc::TIOCOUTQ)
}

/// Bytes of the send queue not sent yet (`SIOCOUTQNSD`).
pub fn unsent_len(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    ioctl_int(fd, libc::SIOCOUTQNSD)
}
