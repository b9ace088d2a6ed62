//! The kinds of process state, one file each, with both halves side by side.
//!
//! Each file holds, in this order: how its state is read from a frozen process (the
//! checkpoint half), how it is rebuilt in a restart stub (the restart half), its records'
//! encoding in the image (the section codec), then its unit tests. `checkpoint/` and
//! `restart/` only say in which order the halves run. A reader who wants to know how
//! timerfds survive a restart opens `anon.rs`.
//!
//! | file | state |
//! |------|-------|
//! | `process.rs` | ids, command, cwd, umask, personality, mm layout (`PR_SET_MM_MAP`), provenance, zombies |
//! | `creds.rs` | credentials and resource limits, and who may restore them |
//! | `threads.rs` | registers (interrupted system calls), XSAVE, rseq, robust list, `clear_child_tid`, sigaltstack, thread names; creating threads |
//! | `signals.rs` | dispositions, pending signals (per thread and shared) |
//! | `timers.rs` | interval timers and POSIX timers |
//! | `memory.rs` | memory regions, mapped files, shared memory, the kernel's special mappings |
//! | `pages.rs` | page contents: which pages are saved, copying them out and back in |
//! | `files.rs` | the descriptor table, regular files, directories, devices, shared descriptions |
//! | `pipes.rs` | pipes and FIFOs with their buffered bytes |
//! | `sockets/` | unix sockets (pairs and others), listening TCP sockets, TCP connections; `diag.rs`: what the kernel says |
//! | `anon.rs` | anonymous inodes: eventfd, timerfd, signalfd, epoll, inotify |
//! | `locks.rs` | flock, POSIX record and OFD locks |
//! | `common.rs` | what several kinds of file share: identities, paths, reopen flags |
//!
//! A kind of state that an older reader may ignore is an optional section: its file
//! defines an [`OptionalSection`] and one line in [`OPTIONAL_SECTIONS`] registers it (the
//! image reader, writer and `inspect` find it there).

pub(crate) mod anon;
pub(crate) mod common;
pub(crate) mod creds;
pub(crate) mod files;
pub(crate) mod locks;
pub(crate) mod memory;
pub(crate) mod pages;
pub(crate) mod pipes;
pub(crate) mod process;
pub(crate) mod signals;
pub(crate) mod sockets;
pub(crate) mod threads;
pub(crate) mod timers;

use crate::image::codec::{Ctx, ImageError};
use crate::model::Image;

/// An optional per-process section: a kind (bit 31 set) that a reader which does not
/// know it skips, with its codec.
#[derive(Debug)]
pub(crate) struct OptionalSection {
    /// Section kind; bit 31 set.
    pub kind: u32,
    /// Name in messages and `inspect`.
    pub name: &'static str,
    /// The payload for `image`, or `None` when it has nothing of this kind.
    pub encode: fn(&Image) -> Option<Vec<u8>>,
    /// Decode a payload into `image`, whose mandatory records are already decoded;
    /// `earlier` are the processes before it in the file.
    pub decode: DecodeFn,
}

/// Decodes an optional section's payload into its image (see [`OptionalSection::decode`]).
pub(crate) type DecodeFn = fn(&[u8], &mut Image, &[Image], &Ctx<'_>) -> Result<(), ImageError>;

/// Every optional section, in the order they are written after a process's FDS section.
pub(crate) const OPTIONAL_SECTIONS: &[OptionalSection] = &[
    memory::SHMEM,
    files::SHARED_FILES,
    locks::LOCKS,
    timers::TIMERS,
    threads::THREAD_COUNT,
    sockets::SHUTDOWN,
    sockets::QUEUES,
];

/// The registry entry of an optional section kind.
pub(crate) fn optional_section(kind: u32) -> Option<&'static OptionalSection> {
    OPTIONAL_SECTIONS.iter().find(|s| s.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_kinds_are_optional_and_distinct() {
        for (i, s) in OPTIONAL_SECTIONS.iter().enumerate() {
            assert_ne!(s.kind & crate::image::kind::OPTIONAL, 0, "{}", s.name);
            assert_ne!(s.kind, crate::image::kind::FROZEN, "{}", s.name);
            assert!(
                OPTIONAL_SECTIONS[..i]
                    .iter()
                    .all(|o| o.kind != s.kind && o.name != s.name),
                "{} registered twice",
                s.name
            );
        }
    }
}
