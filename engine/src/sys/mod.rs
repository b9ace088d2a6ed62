//! Thin, `Result`-returning wrappers over system calls, through `nix` wherever it has a safe
//! call and raw `libc` only where it has none.
//!
//! This module is the only home of `unsafe` in the engine (STYLE.md): every block does one
//! operation and names the invariant that makes it sound. Everything above `sys` is safe Rust.
//! System call numbers come from `libc::SYS_*`; there is no generic "any syscall" wrapper.
//!
//! What remains unsafe, and why:
//! - `ptrace.rs`: `PTRACE_GETREGSET`/`SETREGSET` with `NT_X86_XSTATE` (nix's `RegisterSet`
//!   needs a fixed-size register type; the XSAVE area has a size the kernel decides),
//!   `PTRACE_GETSIGMASK`/`SETSIGMASK`, `PTRACE_PEEKSIGINFO`, `PTRACE_GET_RSEQ_CONFIGURATION`:
//!   nix has no wrapper for any of them; `waitpid` of a tracee and `PTRACE_DETACH` with a
//!   signal, by number (nix's `WaitStatus` and `Signal` cannot name real-time signals).
//! - `process.rs`: `clone3` with `set_tid`, `close_range`, `_exit` (nix has none of the three);
//!   in the stub `dup2` onto a bare number (nix's `dup2` wants the target as an `OwnedFd`,
//!   and its `dup2_raw` does not check for failure), borrowing a plan's descriptor number
//!   (`BorrowedFd::borrow_raw`, once, in `with_fd`), `waitpid` (nix's `WaitStatus` cannot
//!   hold a death by a real-time signal), `signal` and `kill` with a signal number nix's
//!   `Signal` cannot name (real-time signals); `get_robust_list`, `kcmp`, `prlimit` on
//!   another process, `pidfd_open`, `pidfd_getfd`, `open_by_handle_at`, `FIONREAD` (nix has
//!   none); `socket` with a protocol number (nix's enum has no UDP-Lite or ICMP);
//!   `setgroups` as the raw system call, which changes the calling thread only
//!   (nix's is glibc's, which changes every thread of the process).
//! - `anonfd.rs`: `TFD_IOC_SET_TICKS`; `signalfd4` with the kernel's 8-byte signal set
//!   (nix's `SigSet` has no real-time signals); `inotify_add_watch`/`inotify_rm_watch` by number (nix's `WatchDescriptor`
//!   hides the number, and a restart must recreate each watch under its own).
//! - `tcp.rs`: `SIOCOUTQ` and `SIOCOUTQNSD`, the send queue's lengths (nix has neither);
//!   its repair-mode socket options are declared with nix's `sockopt_impl!`.
//! - here: taking ownership of a descriptor a raw call above has just created.
//!
//! `SO_PEEK_OFF`, which nix does not define, is declared with nix's public `sockopt_impl!`,
//! so its `setsockopt` is nix's code (expanded here) rather than a block of ours.
#![allow(unsafe_code)]

pub mod anonfd;
pub mod process;
pub mod ptrace;
pub mod tcp;

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Turn a raw `-1 / errno` return into a `Result` (firecracker's `SyscallReturnCode` idiom).
fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Take ownership of the descriptor that a call creating one has just returned (or its
/// error). Only for the return value of such a call, passed straight in: `F_DUPFD_CLOEXEC`,
/// `pidfd_open`, `pidfd_getfd`, `open_by_handle_at`, `signalfd4`.
pub(crate) fn new_fd(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    // A descriptor is an int; the kernel returns it widened to a long.
    let raw = check(ret)? as RawFd;
    // SAFETY: `raw` is not -1 (check) and, by this function's contract, is a descriptor the
    // kernel created for this very call: open, and owned by nothing else yet.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
