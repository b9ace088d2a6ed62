//! What several kinds of file share: a file's identity (to notice it changed), absolute
//! paths in records, the flags a reopen may pass, opening a path only as the type of file
//! its record says, the restarter's standard streams, and writing a whole buffer.

use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc, WireError};
use crate::model::FileIdentity;
use crate::restart::error::RestartError;
use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{Mode, fstat};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
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

/// The type of file a record says its path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileType {
    /// A regular file (open files, mapped files, executables).
    Regular,
    /// A character device.
    CharDevice,
    /// A FIFO.
    Fifo,
}

impl FileType {
    fn mode(self) -> libc::mode_t {
        match self {
            FileType::Regular => libc::S_IFREG,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::Fifo => libc::S_IFIFO,
        }
    }

    /// As in "... is a FIFO, not a regular file".
    pub(crate) fn name(self) -> &'static str {
        type_name(self.mode())
    }
}

/// The type of file of `mode`, named.
fn type_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "a file of unknown type",
    }
}

/// Why [`open_as`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenAsError {
    /// The lookup or the open failed (missing, permission denied ...).
    Open(Errno),
    /// The path is another type of file: which one.
    Type(&'static str),
}

/// Open `path` with `flags` only if it is a file of type `wanted`. The path is looked up
/// with `O_PATH` first, which opens nothing (no FIFO or device open runs, so none can
/// block) but checks search permission on every directory on the way; the type is
/// checked with `fstat` of that descriptor; the file is then opened for real through
/// `/proc/self/fd/N`, so the file checked is the file opened even if the path changes
/// meanwhile. The opens check permissions as usual, for this thread's file-system
/// identity (the user's, when root restarts a user's image).
pub(crate) fn open_as(path: &str, flags: OFlag, wanted: FileType) -> Result<OwnedFd, OpenAsError> {
    let found = fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC | (flags & OFlag::O_NOFOLLOW),
        Mode::empty(),
    )
    .map_err(OpenAsError::Open)?;
    let st = fstat(&found).map_err(OpenAsError::Open)?;
    if st.st_mode & libc::S_IFMT != wanted.mode() {
        return Err(OpenAsError::Type(type_name(st.st_mode)));
    }
    // O_NOFOLLOW would refuse the /proc link itself; the lookup above honoured it.
    fcntl::open(
        format!("/proc/self/fd/{}", found.as_raw_fd()).as_str(),
        flags & !OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(OpenAsError::Open)
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
    fn paths_open_only_as_their_recorded_type() {
        let dir = std::env::temp_dir().join(format!("lifeboat-open-as-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        let ro = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let check =
            |path: &str, flags: OFlag, wanted: FileType, expected: Result<(), OpenAsError>| {
                let got = open_as(path, flags, wanted).map(drop);
                assert_eq!(got, expected, "{path} as {wanted:?}");
            };
        check(&s(&file), ro, FileType::Regular, Ok(()));
        // A FIFO with no writer: the plain open would block; this one never opens it.
        check(
            &s(&fifo),
            ro,
            FileType::Regular,
            Err(OpenAsError::Type("a FIFO")),
        );
        check(&s(&fifo), ro | OFlag::O_NONBLOCK, FileType::Fifo, Ok(()));
        check(
            &s(&dir),
            ro,
            FileType::Regular,
            Err(OpenAsError::Type("a directory")),
        );
        check("/dev/null", ro, FileType::CharDevice, Ok(()));
        check(
            "/dev/null",
            ro,
            FileType::Regular,
            Err(OpenAsError::Type("a character device")),
        );
        check(&s(&link), ro, FileType::Regular, Ok(()));
        check(
            &s(&link),
            ro | OFlag::O_NOFOLLOW,
            FileType::Regular,
            Err(OpenAsError::Type("a symbolic link")),
        );
        check(
            &s(&dir.join("missing")),
            ro,
            FileType::Regular,
            Err(OpenAsError::Open(Errno::ENOENT)),
        );
        // The descriptor is the file, opened with the flags asked for.
        let fd = open_as(
            &s(&file),
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            FileType::Regular,
        )
        .unwrap();
        let fl = fcntl::fcntl(&fd, fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(fl & libc::O_ACCMODE, libc::O_RDWR);
        assert_eq!(
            fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
            file
        );
        fs::remove_dir_all(&dir).unwrap();
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
