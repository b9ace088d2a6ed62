//! What a checkpoint or restart did differently than asked, as data.
//!
//! A warning never means the process is lost: the operation succeeded, and the warning
//! says which part of the state came back otherwise (a reattached stream, a changed file,
//! a lock someone else took). Callers print them (`Display`), count them, or match on
//! [`WarningKind`].

use nix::errno::Errno;
use std::fmt;

/// One warning: the process (and descriptor) it concerns, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The process, by its PID in the image.
    pub pid: i32,
    /// The descriptor concerned, if any.
    pub fd: Option<i32>,
    /// What happened.
    pub kind: WarningKind,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// Checkpoint: a thread had no way home had lifeboat died while system calls were
    /// injected into it (it was not harmed: lifeboat did not die).
    InjectionUnprotected {
        /// The thread.
        tid: i32,
        /// Why.
        why: String,
    },
    /// Checkpoint: a zombie whose parent is outside the scope is not saved.
    ZombieOutsideScope {
        /// Its `comm`.
        comm: String,
    },
    /// An open file was deleted: restored from the image as an anonymous file.
    DeletedFileRestoredAnonymous {
        /// Its path at checkpoint time.
        path: String,
    },
    /// The file at an open file's path is another file now.
    FileReplaced {
        /// Path.
        path: String,
    },
    /// An open file changed since the checkpoint.
    FileChanged {
        /// Path.
        path: String,
        /// Size at checkpoint time.
        size_then: u64,
        /// Size now.
        size_now: u64,
    },
    /// A mapped (not executable) file changed since the checkpoint.
    MappedFileChanged {
        /// Path.
        path: String,
    },
    /// A terminal is gone; the descriptor is /dev/null now.
    TerminalGone {
        /// The terminal's path.
        path: String,
        /// Why it could not be opened.
        error: Errno,
    },
    /// The other end of a pipe was outside the image; that end is closed now.
    PipePeerOutside,
    /// A listening TCP socket could not bind or listen again; it is unbound now.
    ListenFailed {
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        error: Errno,
    },
    /// A unix socket could not be bound to its name again; it is unbound now.
    UnixBindFailed {
        /// The name (`@` for an abstract name's leading NUL).
        name: String,
        /// Why.
        error: Errno,
    },
    /// A TCP connection cannot be restored; the descriptor is an unconnected socket.
    TcpConnectionClosed,
    /// A datagram queued on a unix datagram socket could not be queued again.
    UnixQueueLost {
        /// The step that failed.
        step: &'static str,
        /// Why.
        error: Errno,
    },
    /// A UDP socket could not have its address again, or a queued datagram was lost.
    UdpNotRestored {
        /// The address concerned: the socket's, its peer's, or a datagram's sender.
        addr: std::net::SocketAddr,
        /// The step that failed.
        step: &'static str,
        /// Why.
        error: Errno,
    },
    /// An established TCP connection saved in repair mode could not be made again.
    TcpNotRestored {
        /// Local address.
        local: std::net::SocketAddr,
        /// Peer address.
        peer: std::net::SocketAddr,
        /// The step that failed.
        step: &'static str,
        /// Why.
        error: Errno,
    },
    /// An inotify watch could not be set again.
    InotifyWatchLost {
        /// The watched path.
        path: String,
    },
    /// An epoll interest-list entry could not be added again.
    EpollWatchLost {
        /// The descriptor it watched.
        watched: i32,
        /// Why.
        error: Errno,
    },
    /// The kernel cannot recreate POSIX timers with their IDs: none was restored.
    PosixTimersUnsupported {
        /// Why.
        error: Errno,
    },
    /// One POSIX timer could not be recreated.
    PosixTimerLost {
        /// Its ID.
        id: i32,
        /// Why.
        error: Errno,
    },
    /// A lock could not be taken back (someone else holds it now).
    LockNotTaken {
        /// flock, POSIX or OFD.
        lock: crate::model::LockKind,
        /// Why.
        error: Errno,
    },
    /// `PR_SET_MM_MAP` was refused: brk, arguments and the exe link stay the stub's.
    MmLayoutNotRestored {
        /// Why.
        error: Errno,
    },
    /// A resource limit could not be set (raising a hard limit needs CAP_SYS_RESOURCE).
    RlimitNotRestored {
        /// `RLIMIT_*` number.
        resource: u32,
        /// Why.
        error: Errno,
    },
    /// The process group is not in the image; the process joins its parent's.
    ProcessGroupMissing {
        /// The group it had.
        pgid: i32,
    },
}

impl Warning {
    /// A warning about process `pid` as a whole.
    pub fn process(pid: i32, kind: WarningKind) -> Warning {
        Warning {
            pid,
            fd: None,
            kind,
        }
    }

    /// A warning about descriptor `fd` of process `pid`.
    pub fn fd(pid: i32, fd: i32, kind: WarningKind) -> Warning {
        Warning {
            pid,
            fd: Some(fd),
            kind,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WarningKind as K;
        write!(f, "PID {}: ", self.pid)?;
        match &self.kind {
            K::EpollWatchLost { .. } => {}
            _ => {
                if let Some(fd) = self.fd {
                    write!(f, "descriptor {fd}: ")?;
                }
            }
        }
        match &self.kind {
            K::InjectionUnprotected { tid, why } => write!(
                f,
                "thread {tid} would not have survived lifeboat dying during the checkpoint: {why}"
            ),
            K::ZombieOutsideScope { comm } => write!(
                f,
                "a zombie (`{comm}`) whose parent is outside the scope; it is not saved"
            ),
            K::DeletedFileRestoredAnonymous { path } => write!(
                f,
                "{path} was deleted; restored from the image as an anonymous file"
            ),
            K::FileReplaced { path } => {
                write!(
                    f,
                    "{path} was replaced by another file since the checkpoint"
                )
            }
            K::FileChanged {
                path,
                size_then,
                size_now,
            } => write!(
                f,
                "{path} changed since the checkpoint (size {size_then} -> {size_now})"
            ),
            K::MappedFileChanged { path } => write!(
                f,
                "mapped file {path} has changed since the checkpoint (inode, size or modification time differ)"
            ),
            K::TerminalGone { path, error } => {
                write!(f, "terminal {path} is gone ({error}); using /dev/null")
            }
            K::PipePeerOutside => write!(
                f,
                "the other end of its pipe was outside the image; it is now closed"
            ),
            K::ListenFailed { addr, error } => write!(
                f,
                "cannot listen on {addr} again ({error}); it is an unbound socket now"
            ),
            K::UnixBindFailed { name, error } => write!(
                f,
                "cannot bind a unix socket to {name} again ({error}); it is an unbound socket now"
            ),
            K::UnixQueueLost { step, error } => write!(
                f,
                "a datagram waiting on a unix socket is lost: {step} failed: {error}"
            ),
            K::UdpNotRestored { addr, step, error } => write!(
                f,
                "a UDP socket is not as it was: {step} ({addr}) failed: {error}"
            ),
            K::TcpNotRestored {
                local,
                peer,
                step,
                error,
            } => write!(
                f,
                "the TCP connection {local} -> {peer} cannot be restored ({step}: {error}{}); it is an unconnected socket now",
                if *error == Errno::EPERM {
                    "; repair mode needs CAP_NET_ADMIN"
                } else {
                    ""
                }
            ),
            K::TcpConnectionClosed => write!(
                f,
                "a TCP connection cannot be restored; it is an unconnected socket now"
            ),
            K::InotifyWatchLost { path } => write!(
                f,
                "inotify watch of {path} not restored (gone or not allowed)"
            ),
            K::EpollWatchLost { watched, error } => {
                let epfd = self.fd.unwrap_or(-1);
                write!(
                    f,
                    "epoll descriptor {epfd}: watch of descriptor {watched} not restored: {error}"
                )
            }
            K::PosixTimersUnsupported { error } => write!(
                f,
                "POSIX timers not restored: this kernel cannot recreate timer IDs ({error})"
            ),
            K::PosixTimerLost { id, error } => {
                write!(f, "POSIX timer {id} not restored: {error}")
            }
            K::LockNotTaken { lock, error } => {
                write!(f, "{lock:?} lock not taken back: {error}")
            }
            K::MmLayoutNotRestored { error } => write!(
                f,
                "memory layout (brk, arguments, exe link) not restored: PR_SET_MM_MAP: {error}"
            ),
            K::RlimitNotRestored { resource, error } => {
                write!(f, "resource limit {resource} not restored: {error}")
            }
            K::ProcessGroupMissing { pgid } => write!(
                f,
                "its process group {pgid} is not in the image; it joins its parent's"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_process_and_descriptor() {
        let check = |w: Warning, expected: &str| assert_eq!(w.to_string(), expected);
        check(
            Warning::fd(7, 3, WarningKind::PipePeerOutside),
            "PID 7: descriptor 3: the other end of its pipe was outside the image; it is now closed",
        );
        check(
            Warning::fd(
                7,
                9,
                WarningKind::EpollWatchLost {
                    watched: 4,
                    error: Errno::EBADF,
                },
            ),
            "PID 7: epoll descriptor 9: watch of descriptor 4 not restored: EBADF: Bad file number",
        );
        check(
            Warning::process(
                8,
                WarningKind::RlimitNotRestored {
                    resource: 7,
                    error: Errno::EPERM,
                },
            ),
            "PID 8: resource limit 7 not restored: EPERM: Operation not permitted",
        );
    }
}
