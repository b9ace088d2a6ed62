//! What several kinds of file share: a file's identity (to notice it changed), absolute
//! paths in records, the flags a reopen may pass, the restarter's standard streams, and
//! writing a whole buffer.

use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc, WireError};
use crate::model::FileIdentity;
use crate::restart::error::RestartError;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

/// Identity of a file from its metadata.
pub(crate) fn identity(md: &fs::Metadata) -> FileIdentity {
    FileIdentity {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        mode: md.mode(),
    }
}

/// Flags worth passing to open(2) again: access mode and status flags, never creation.
pub(crate) fn reopen_flags(flags: u32) -> OFlag {
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_NONBLOCK
        | libc::O_DIRECT
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME
        | libc::O_LARGEFILE
        | libc::O_DIRECTORY
        | libc::O_NOFOLLOW;
    OFlag::from_bits_truncate((flags as i32) & keep) | OFlag::O_CLOEXEC
}

pub(crate) fn is_tty_path(path: &str) -> bool {
    path.starts_with("/dev/pts/") || path.starts_with("/dev/tty") || path == "/dev/console"
}

/// A new descriptor for one of our own standard streams (0, 1, 2).
pub(crate) fn dup_own(fd: RawFd) -> Result<OwnedFd, RestartError> {
    let dup = match fd {
        0 => io::stdin().as_fd().try_clone_to_owned(),
        1 => io::stdout().as_fd().try_clone_to_owned(),
        _ => io::stderr().as_fd().try_clone_to_owned(),
    };
    dup.map_err(|source| RestartError::Dup {
        what: "one of our standard streams",
        source,
    })
}

pub(crate) fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn enc_identity(e: &mut Enc, id: &FileIdentity) {
    e.u64(id.dev);
    e.u64(id.ino);
    e.u64(id.size);
    e.i64(id.mtime_ns);
    e.u32(id.mode);
}

pub(crate) fn dec_identity(d: &mut Dec<'_>) -> Result<FileIdentity, WireError> {
    Ok(FileIdentity {
        dev: d.u64()?,
        ino: d.u64()?,
        size: d.u64()?,
        mtime_ns: d.i64()?,
        mode: d.u32()?,
    })
}

pub(crate) fn dec_path(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<String, ImageError> {
    let p = d.str().map_err(cx.wire())?;
    if !p.starts_with('/') || p.contains('\0') {
        return Err(cx.invalid(format!("path `{p}` is not absolute")));
    }
    Ok(p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_status_flags_and_never_creates() {
        let check = |flags: i32, expected: OFlag| {
            assert_eq!(
                reopen_flags(flags as u32),
                expected | OFlag::O_CLOEXEC,
                "{flags:#o}"
            );
        };
        check(libc::O_RDONLY, OFlag::O_RDONLY);
        check(
            libc::O_WRONLY | libc::O_APPEND,
            OFlag::O_WRONLY | OFlag::O_APPEND,
        );
        check(
            libc::O_RDWR | libc::O_NONBLOCK,
            OFlag::O_RDWR | OFlag::O_NONBLOCK,
        );
        // Creation and truncation must never happen again on restart.
        check(
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL,
            OFlag::O_WRONLY,
        );
        check(libc::O_RDONLY | libc::O_DIRECTORY, OFlag::O_DIRECTORY);
    }

    #[test]
    fn terminals_by_path() {
        for tty in ["/dev/pts/3", "/dev/tty", "/dev/tty1", "/dev/console"] {
            assert!(is_tty_path(tty), "{tty}");
        }
        for other in ["/dev/null", "/dev/ptmx", "/tmp/tty"] {
            assert!(!is_tty_path(other), "{other}");
        }
    }
}
