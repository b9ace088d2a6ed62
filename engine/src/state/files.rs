//! The descriptor table and the files behind it: regular files (by reference, or their
//! content when deleted), directories, devices and terminals, descriptions shared between
//! descriptors and between processes, and files under `/proc/PID` reopened inside the
//! process. Pipes, sockets and anonymous inodes have files of their own; this one walks
//! the table and hands each descriptor to its kind.

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError, MAX_FD_NUMBER, MAX_FDS};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs;
use crate::ptrace::Remote;
use crate::restart::error::{self as restart, RestartError};
use crate::state::common::{
    FileType, OpenAsError, dec_identity, dec_path, dup_own, enc_identity, identity, is_tty_path,
    open_as, reopen_flags, write_all,
};
use crate::state::{OptionalSection, anon, locks, pipes, sockets};
use crate::sys;
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Open files, the descriptor table, the locks held through them, and sockets shut down.
pub(crate) type Files = (
    Vec<OpenFile>,
    Vec<Fd>,
    Vec<FileLock>,
    Vec<SocketShutdown>,
    Vec<UnixQueue>,
);

/// The descriptor table of `pid`, sharing one [`OpenFile`] between descriptors that share
/// an open file description (checked with kcmp), and the locks held through them.
pub(crate) fn dump(pid: i32, held: &mut sockets::Held) -> Result<Files, CheckpointError> {
    let p = Pid::from_raw(pid);
    let mut files: Vec<OpenFile> = Vec::new();
    let mut owners: Vec<(i32, u64, u64)> = Vec::new(); // (fd, dev, ino) of each file's first fd
    let mut fds = Vec::new();
    let mut locks = Vec::new();
    let mut peeked_pipes: Vec<u64> = Vec::new();
    let mut socket_tables = sockets::Tables::default();
    for fd in procfs::numbered(pid, "fd")? {
        let fd_err = |source: io::Error| CheckpointError::Fd { pid, fd, source };
        let target = procfs::link(pid, &format!("fd/{fd}"))?;
        let info = procfs::fdinfo(pid, fd)?;
        let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
        let flags = info.flags & !(libc::O_CLOEXEC as u32);
        let md = fs::metadata(procfs::path(pid, &format!("fd/{fd}"))).map_err(fd_err)?;
        let shared_with = owners.iter().position(|&(ofd, dev, ino)| {
            dev == md.dev()
                && ino == md.ino()
                && sys::process::same_file(p, ofd, p, fd).unwrap_or(false)
        });
        if let Some(i) = shared_with {
            fds.push(Fd {
                fd,
                cloexec,
                file: i as u32,
            });
            continue;
        }
        let ft = md.file_type();
        let unsupported = |what: String| CheckpointError::UnsupportedFd { pid, fd, what };
        let kind = if let Some(rest) = target.strip_prefix("pipe:[") {
            let ino: u64 = rest.trim_end_matches(']').parse().unwrap_or(md.ino());
            pipes::dump_pipe(pid, fd, ino, flags, &mut peeked_pipes)?
        } else if let Some(rest) = target.strip_prefix("socket:[") {
            let ino: u64 = rest.trim_end_matches(']').parse().unwrap_or(md.ino());
            socket_tables.dump(pid, fd, ino, held)?
        } else if let Some(kind) = target.strip_prefix("anon_inode:") {
            anon::dump(pid, fd, kind, &info.fields)
                .ok_or_else(|| unsupported(format!("an anonymous inode ({target})")))??
        } else if ft.is_file() {
            let (path, deleted) = match target.strip_suffix(" (deleted)") {
                Some(p) if md.nlink() == 0 => (p.to_owned(), true),
                _ => (target.clone(), md.nlink() == 0),
            };
            let content = if deleted {
                // The content travels in the FILES section, which a reader takes only up
                // to MAX_META_SECTION: refuse here, before anything is written or killed.
                let limit = crate::image::MAX_META_SECTION / 2;
                if md.size() > limit {
                    return Err(unsupported(format!(
                        "a deleted file of {} bytes ({path}), more than the {limit} an image holds for deleted files",
                        md.size()
                    )));
                }
                Some(fs::read(procfs::path(pid, &format!("fd/{fd}"))).map_err(fd_err)?)
            } else {
                None
            };
            FileKind::Regular {
                path,
                identity: identity(&md),
                content,
            }
        } else if ft.is_dir() {
            FileKind::Directory { path: target }
        } else if ft.is_char_device() {
            FileKind::Device {
                path: target,
                rdev: md.rdev(),
            }
        } else if ft.is_fifo() {
            pipes::dump_fifo(pid, fd, target)?
        } else {
            return Err(unsupported(format!("`{target}`")));
        };
        // One descriptor per description: dups show the same locks.
        locks.extend(locks::locks_in(fd, &info.fields));
        owners.push((fd, md.dev(), md.ino()));
        files.push(OpenFile {
            flags,
            pos: info.pos,
            kind,
        });
        fds.push(Fd {
            fd,
            cloexec,
            file: (files.len() - 1) as u32,
        });
    }
    let shutdown = socket_tables.shutdowns(&files);
    let queues = socket_tables.unix_queues(&fds);
    Ok((files, fds, locks, shutdown, queues))
}

/// Record which open file descriptions a process shares with an earlier one (inherited
/// across fork), comparing candidates of the same kind and path with kcmp(2). Pipes need
/// nothing here: restart gives every holder of a pipe end the same description.
pub(crate) fn find_shared_files(images: &mut [Image]) {
    let key = |f: &OpenFile| match &f.kind {
        FileKind::Regular { path, .. }
        | FileKind::Directory { path }
        | FileKind::Device { path, .. }
        | FileKind::Fifo { path, .. } => Some(path.clone()),
        _ => None,
    };
    let first_fd = |img: &Image, file: usize| {
        img.fds
            .iter()
            .find(|f| f.file as usize == file)
            .map(|f| f.fd)
    };
    for i in 1..images.len() {
        let (earlier, rest) = images.split_at_mut(i);
        let me = &mut rest[0];
        let my_pid = Pid::from_raw(me.process.pid);
        for (fi, f) in me.files.iter().enumerate() {
            let (Some(path), Some(fd)) = (key(f), first_fd(me, fi)) else {
                continue;
            };
            let found = earlier.iter().find_map(|other| {
                other.files.iter().enumerate().find_map(|(gi, g)| {
                    let ofd = first_fd(other, gi)?;
                    (key(g).as_deref() == Some(path.as_str())
                        && std::mem::discriminant(&g.kind) == std::mem::discriminant(&f.kind)
                        && sys::process::same_file(
                            my_pid,
                            fd,
                            Pid::from_raw(other.process.pid),
                            ofd,
                        )
                        .unwrap_or(false))
                    .then_some(SharedFile {
                        file: fi as u32,
                        with_pid: other.process.pid,
                        with_file: gi as u32,
                    })
                })
            });
            me.shared_files.extend(found);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Restart

/// A descriptor prepared for the stub.
pub(crate) struct Prepared {
    pub fd: OwnedFd,
    pub target: RawFd,
    pub cloexec: bool,
}

/// A file to open inside the stub by injection (paths under `/proc/PID` of the process).
pub(crate) struct LateOpen {
    target: RawFd,
    path: String,
    flags: u32,
    pos: i64,
    cloexec: bool,
}

/// Descriptors for the stub, files opened late by injection, and epoll interest lists to
/// rebuild by injection `(epoll descriptor, watches)`.
pub(crate) type PreparedFiles = (Vec<Prepared>, Vec<LateOpen>, Vec<(RawFd, Vec<EpollWatch>)>);

/// Open every file description of `img` with this thread's file-system identity (the
/// caller's, or the owner's of a user's image that root restarts), each path only as the
/// type of file it was; descriptions it shares with an earlier process of the image are
/// that process's, duplicated.
/// One anonymous file per deleted file of the images (by inode), its saved content
/// written in: every process that held the file holds the same one again. When the
/// processes also mapped it shared (an MPI job's segment in /dev/shm, a POSIX shared
/// memory object unlinked), it is the shared memory of those mappings (`shm`, from
/// `memory::shared_memory`), so the descriptor and the mappings are one object again.
pub(crate) fn deleted_files(
    imgs: &[&Image],
    shm: &[(u64, OwnedFd)],
) -> Result<Vec<(u64, OwnedFd)>, RestartError> {
    let mut out: Vec<(u64, OwnedFd)> = Vec::new();
    for img in imgs {
        for (i, f) in img.files.iter().enumerate() {
            let FileKind::Regular {
                path,
                identity,
                content: Some(content),
            } = &f.kind
            else {
                continue;
            };
            if out.iter().any(|(ino, _)| *ino == identity.ino) {
                continue;
            }
            let fd_num = img.fd_of(i);
            let open_err = |e: Errno| RestartError::OpenFile {
                pid: img.process.pid,
                fd: fd_num,
                path: path.clone(),
                source: e.into(),
            };
            let fd = match shm.iter().find(|(ino, _)| *ino == identity.ino) {
                Some((_, shared)) => restart::dup(shared, "shared memory")?,
                None => nix::sys::memfd::memfd_create(
                    c"lifeboat-deleted",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .map_err(open_err)?,
            };
            write_all(&fd, content).map_err(open_err)?;
            out.push((identity.ino, fd));
        }
    }
    Ok(out)
}

pub(crate) fn prepare_files(
    img: &Image,
    pipes_of: &[(u64, OwnedFd, OwnedFd)],
    socks: &[(u64, OwnedFd)],
    deleted: &[(u64, OwnedFd)],
    earlier: &[(i32, Vec<Option<OwnedFd>>)],
    warnings: &mut Vec<Warning>,
) -> Result<(PreparedFiles, Vec<Option<OwnedFd>>), RestartError> {
    let pid = img.process.pid;
    let mut epolls = Vec::new();
    let mut opened: Vec<Option<OwnedFd>> = (0..img.files.len()).map(|_| None).collect();
    // Descriptions shared with an earlier process (inherited across fork) are the same
    // description again, not a second open.
    for sf in &img.shared_files {
        let theirs = earlier
            .iter()
            .find(|(p, _)| *p == sf.with_pid)
            .and_then(|(_, files)| files.get(sf.with_file as usize))
            .and_then(Option::as_ref);
        if let Some(fd) = theirs {
            opened[sf.file as usize] = Some(restart::dup(fd, "a shared file")?);
        }
    }
    let mut late = Vec::new();
    let fds_of = |file: usize| {
        img.fds
            .iter()
            .filter(move |f| f.file as usize == file)
            .map(|f| f.fd)
    };
    let std_only = |file: usize| fds_of(file).all(|fd| (0..=2).contains(&fd));
    let proc_prefix = format!("/proc/{pid}/");
    for (i, f) in img.files.iter().enumerate() {
        if opened[i].is_some() {
            continue;
        }
        let first_fd = fds_of(i).next().unwrap_or(-1);
        let open_err = |path: &str| {
            let path = path.to_owned();
            move |e: Errno| RestartError::OpenFile {
                pid,
                fd: first_fd,
                path,
                source: e.into(),
            }
        };
        let warn = |kind| Warning::fd(pid, first_fd, kind);
        let fd = match &f.kind {
            FileKind::Regular { path, .. } if path.starts_with(&proc_prefix) => {
                // Opened inside the stub, which is still root: only a file of the
                // process's own, never through a link out of it.
                if let Some(why) = late_path_refused(&path[proc_prefix.len()..]) {
                    return Err(RestartError::FileType {
                        pid,
                        what: format!("descriptor {first_fd}"),
                        path: path.clone(),
                        found: why,
                        wanted: "a file of the process's own /proc directory",
                    });
                }
                for fd in fds_of(i) {
                    let cloexec = img.fds.iter().any(|x| x.fd == fd && x.cloexec);
                    late.push(LateOpen {
                        target: fd,
                        path: path.clone(),
                        flags: f.flags,
                        pos: f.pos,
                        cloexec,
                    });
                }
                continue;
            }
            FileKind::Regular {
                path,
                identity,
                content: Some(_),
            } => {
                let made = deleted.iter().find(|(ino, _)| *ino == identity.ino).ok_or(
                    RestartError::Tree {
                        what: format!("deleted file {path} was not made again"),
                    },
                )?;
                warnings.push(warn(WarningKind::DeletedFileRestoredAnonymous {
                    path: path.clone(),
                }));
                restart::dup(&made.1, "a deleted file")?
            }
            FileKind::Regular {
                path,
                identity,
                content: None,
            } => {
                let fd = open_as(path, reopen_flags(f.flags), FileType::Regular)
                    .map_err(open_as_err(pid, first_fd, path, FileType::Regular))?;
                let md =
                    fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
                        RestartError::OpenFile {
                            pid,
                            fd: first_fd,
                            path: path.clone(),
                            source: e,
                        }
                    })?;
                let now = crate::state::common::identity(&md);
                if (now.dev, now.ino) != (identity.dev, identity.ino) {
                    warnings.push(warn(WarningKind::FileReplaced { path: path.clone() }));
                } else if now.size != identity.size || now.mtime_ns != identity.mtime_ns {
                    warnings.push(warn(WarningKind::FileChanged {
                        path: path.clone(),
                        size_then: identity.size,
                        size_now: now.size,
                    }));
                }
                fd
            }
            FileKind::Directory { path } => fcntl::open(
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(open_err(path))?,
            FileKind::Device { path, .. } if is_tty_path(path) && std_only(i) => dup_own(first_fd)?,
            FileKind::Device { path, .. } => {
                // Opened non-blocking (a serial line's open waits for its carrier), then
                // switched to the image's flags.
                let flags = reopen_flags(f.flags) | OFlag::O_NONBLOCK;
                match open_as(path, flags, FileType::CharDevice) {
                    Ok(fd) => {
                        if f.flags & libc::O_NONBLOCK as u32 == 0 {
                            blocking(&fd).map_err(open_err(path))?;
                        }
                        fd
                    }
                    Err(OpenAsError::Open(error)) if is_tty_path(path) => {
                        warnings.push(warn(WarningKind::TerminalGone {
                            path: path.clone(),
                            error,
                        }));
                        fcntl::open("/dev/null", reopen_flags(f.flags), Mode::empty())
                            .map_err(open_err("/dev/null"))?
                    }
                    Err(e) => {
                        return Err(open_as_err(pid, first_fd, path, FileType::CharDevice)(e));
                    }
                }
            }
            FileKind::Pipe { .. } | FileKind::Fifo { .. } => {
                pipes::open(pid, first_fd, f, std_only(i), pipes_of, warnings)?
            }
            FileKind::EventFd { .. }
            | FileKind::TimerFd { .. }
            | FileKind::SignalFd { .. }
            | FileKind::Epoll { .. }
            | FileKind::Inotify { .. } => {
                anon::open(pid, first_fd, &f.kind, &mut epolls, warnings)?
            }
            FileKind::UnixPair { .. }
            | FileKind::UnixSocket { .. }
            | FileKind::TcpListen { .. }
            | FileKind::TcpClosed { .. }
            | FileKind::TcpEstablished(_)
            | FileKind::Udp(_) => sockets::open(pid, first_fd, &f.kind, socks, warnings)?,
        };
        opened[i] = Some(fd);
    }
    // Status flags (O_NONBLOCK, O_APPEND) and offsets on the descriptions we created.
    let mut out = Vec::new();
    for (i, f) in img.files.iter().enumerate() {
        let Some(fd) = &opened[i] else { continue };
        let status =
            OFlag::from_bits_truncate(f.flags as i32) & (OFlag::O_NONBLOCK | OFlag::O_APPEND);
        if !matches!(&f.kind, FileKind::Device { path, .. } if is_tty_path(path))
            && !matches!(f.kind, FileKind::Pipe { .. } if std_only(i))
        {
            let _ = fcntl::fcntl(fd.as_fd(), FcntlArg::F_SETFL(status));
        }
        if let FileKind::Regular { path, .. } = &f.kind {
            nix::unistd::lseek(fd, f.pos, nix::unistd::Whence::SeekSet).map_err(|e| {
                RestartError::OpenFile {
                    pid,
                    fd: fds_of(i).next().unwrap_or(-1),
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
        }
        for fd_entry in img.fds.iter().filter(|x| x.file as usize == i) {
            out.push(Prepared {
                fd: restart::dup(fd, "a descriptor")?,
                target: fd_entry.fd,
                cloexec: fd_entry.cloexec,
            });
        }
    }
    Ok(((out, late, epolls), opened))
}

/// The error of [`open_as`] for descriptor `fd` of `pid`.
pub(crate) fn open_as_err(
    pid: i32,
    fd: RawFd,
    path: &str,
    wanted: FileType,
) -> impl FnOnce(OpenAsError) -> RestartError {
    let path = path.to_owned();
    move |e| match e {
        OpenAsError::Open(e) => RestartError::OpenFile {
            pid,
            fd,
            path,
            source: e.into(),
        },
        OpenAsError::Type(found) => RestartError::FileType {
            pid,
            what: format!("descriptor {fd}"),
            path,
            found,
            wanted: wanted.name(),
        },
    }
}

/// Clear `O_NONBLOCK` on a description opened with it.
fn blocking(fd: &OwnedFd) -> Result<(), Errno> {
    let fl = OFlag::from_bits_truncate(fcntl::fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl::fcntl(fd, FcntlArg::F_SETFL(fl & !OFlag::O_NONBLOCK)).map(drop)
}

/// Why a path under a process's own `/proc/PID/` (`rest`, after that prefix) is not
/// reopened inside the restored process, if it is not. The checkpoint records what the
/// kernel's links resolve to, so such a path names a file of `/proc/PID` itself; one that
/// climbs out (`..`) or passes through one of the links to other files (`cwd`, `root`,
/// `exe`, `fd/N`, `map_files/...`, per process or per thread) comes from a forged image,
/// and would be opened by the stub with root's permissions.
fn late_path_refused(rest: &str) -> Option<&'static str> {
    const LINKS: [&str; 5] = ["cwd", "root", "exe", "fd", "map_files"];
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Some("a path with an empty, `.` or `..` component");
    }
    // The links of the process, or of one of its threads (task/TID/...).
    let own = match parts.as_slice() {
        ["task", tid, rest @ ..] if tid.bytes().all(|b| b.is_ascii_digit()) => rest,
        all => all,
    };
    if own.first().is_some_and(|first| LINKS.contains(first)) {
        return Some("a path through one of its links to other files");
    }
    None
}

/// Open, inside the process, the files under its own `/proc/PID` (their new PID's).
pub(crate) fn late_opens(
    r: &mut Remote,
    image_pid: i32,
    late: &[LateOpen],
) -> Result<(), RestartError> {
    let old = format!("/proc/{image_pid}/");
    let new = format!("/proc/{}/", r.pid());
    let scratch = r.scratch();
    for l in late {
        let path =
            CString::new(l.path.replacen(&old, &new, 1)).map_err(|_| RestartError::Descriptor {
                pid: image_pid,
                fd: l.target,
                op: "a path with a NUL byte",
                source: Errno::EINVAL,
            })?;
        restart::poke(r, scratch, path.as_bytes_with_nul())?;
        let flags = reopen_flags(l.flags).bits() as u64;
        let fd = restart::inject(
            r,
            &format!("open of {}", l.path),
            libc::SYS_openat,
            &[libc::AT_FDCWD as i64 as u64, scratch, flags, 0],
        )?;
        if fd != l.target as u64 {
            let cloexec = if l.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            restart::inject(r, "dup3", libc::SYS_dup3, &[fd, l.target as u64, cloexec])?;
            restart::inject(r, "close", libc::SYS_close, &[fd])?;
        }
        restart::inject(
            r,
            "lseek",
            libc::SYS_lseek,
            &[l.target as u64, l.pos as u64, 0],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Section codecs: FILES, FDS, SHARED_FILES (optional)

pub(crate) fn enc_files(files: &[OpenFile]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(files.len() as u64);
    for f in files {
        e.u32(f.flags);
        e.i64(f.pos);
        match &f.kind {
            FileKind::Regular {
                path,
                identity,
                content,
            } => {
                e.u8(0);
                e.str(path);
                enc_identity(&mut e, identity);
                e.bool(content.is_some());
                if let Some(c) = content {
                    e.bytes(c);
                }
            }
            FileKind::Directory { path } => {
                e.u8(1);
                e.str(path);
            }
            FileKind::Device { path, rdev } => {
                e.u8(2);
                e.str(path);
                e.u64(*rdev);
            }
            FileKind::Pipe { .. } | FileKind::Fifo { .. } => pipes::enc(&mut e, &f.kind),
            FileKind::EventFd { .. }
            | FileKind::TimerFd { .. }
            | FileKind::SignalFd { .. }
            | FileKind::Epoll { .. }
            | FileKind::Inotify { .. } => anon::enc(&mut e, &f.kind),
            FileKind::UnixPair { .. }
            | FileKind::UnixSocket { .. }
            | FileKind::TcpListen { .. }
            | FileKind::TcpClosed { .. }
            | FileKind::TcpEstablished(_)
            | FileKind::Udp(_) => sockets::enc(&mut e, &f.kind),
        }
    }
    e.into_vec()
}

pub(crate) fn dec_files(data: &[u8], cx: &Ctx<'_>) -> Result<Vec<OpenFile>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_FDS).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = d.u32().map_err(&w)?;
        let pos = d.i64().map_err(&w)?;
        let kind = match d.u8().map_err(&w)? {
            0 => {
                let path = dec_path(&mut d, cx)?;
                let identity = dec_identity(&mut d).map_err(&w)?;
                let content = if d.bool().map_err(&w)? {
                    Some(d.bytes().map_err(&w)?.to_vec())
                } else {
                    None
                };
                FileKind::Regular {
                    path,
                    identity,
                    content,
                }
            }
            1 => FileKind::Directory {
                path: dec_path(&mut d, cx)?,
            },
            2 => FileKind::Device {
                path: dec_path(&mut d, cx)?,
                rdev: d.u64().map_err(&w)?,
            },
            t @ (pipes::TAG_PIPE | pipes::TAG_FIFO) => pipes::dec(t, &mut d, cx)?,
            t @ (anon::TAG_EVENTFD
            | anon::TAG_TIMERFD
            | anon::TAG_SIGNALFD
            | anon::TAG_EPOLL
            | anon::TAG_INOTIFY) => anon::dec(t, &mut d, cx)?,
            t @ (sockets::TAG_UNIX_PAIR
            | sockets::TAG_UNIX_SOCKET
            | sockets::TAG_TCP_LISTEN
            | sockets::TAG_TCP_CLOSED
            | sockets::TAG_TCP_ESTABLISHED
            | sockets::TAG_UDP) => sockets::dec(t, &mut d, cx)?,
            k => return Err(cx.invalid(format!("unknown file kind {k}"))),
        };
        if pos < 0 {
            return Err(cx.invalid(format!("file offset {pos} is negative")));
        }
        out.push(OpenFile { flags, pos, kind });
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

pub(crate) fn enc_fds(fds: &[Fd]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(fds.len() as u64);
    for f in fds {
        e.i32(f.fd);
        e.bool(f.cloexec);
        e.u32(f.file);
    }
    e.into_vec()
}

pub(crate) fn dec_fds(data: &[u8], files: usize, cx: &Ctx<'_>) -> Result<Vec<Fd>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_FDS).map_err(&w)?;
    let mut out: Vec<Fd> = Vec::with_capacity(n);
    for _ in 0..n {
        let fd = Fd {
            fd: d.i32().map_err(&w)?,
            cloexec: d.bool().map_err(&w)?,
            file: d.u32().map_err(&w)?,
        };
        if !(0..MAX_FD_NUMBER).contains(&fd.fd) || fd.file as usize >= files {
            return Err(cx.invalid(format!(
                "descriptor {} (file #{}) is out of range",
                fd.fd, fd.file
            )));
        }
        if out.iter().any(|f| f.fd == fd.fd) {
            return Err(cx.invalid(format!("descriptor {} appears twice", fd.fd)));
        }
        out.push(fd);
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

/// The SHARED_FILES section.
pub(crate) const SHARED_FILES: OptionalSection = OptionalSection {
    kind: 0x8000_000A,
    name: "SHARED_FILES",
    encode: enc_shared_files,
    decode: |data, image, earlier, cx| {
        image.shared_files = dec_shared_files(data, image.files.len(), earlier, cx)?;
        Ok(())
    },
};

fn enc_shared_files(image: &Image) -> Option<Vec<u8>> {
    if image.shared_files.is_empty() {
        return None;
    }
    let mut e = Enc::new();
    e.u64(image.shared_files.len() as u64);
    for sf in &image.shared_files {
        e.u32(sf.file);
        e.i32(sf.with_pid);
        e.u32(sf.with_file);
    }
    Some(e.into_vec())
}

fn dec_shared_files(
    data: &[u8],
    files: usize,
    before: &[Image],
    cx: &Ctx<'_>,
) -> Result<Vec<SharedFile>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_FDS).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sf = SharedFile {
            file: d.u32().map_err(&w)?,
            with_pid: d.i32().map_err(&w)?,
            with_file: d.u32().map_err(&w)?,
        };
        let Some(other) = before.iter().find(|i| i.process.pid == sf.with_pid) else {
            return Err(cx.invalid(format!(
                "shares a file with process {}, which is not earlier in the image",
                sf.with_pid
            )));
        };
        if sf.file as usize >= files || sf.with_file as usize >= other.files.len() {
            return Err(cx.invalid("shared file index out of range"));
        }
        out.push(sf);
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_opens_stay_inside_the_processs_own_proc_directory() {
        let check = |rest: &str, refused: bool| {
            assert_eq!(late_path_refused(rest).is_some(), refused, "{rest}");
        };
        for own in [
            "status",
            "stat",
            "maps",
            "environ",
            "fdinfo/3",
            "task/12/stat",
            "net/tcp",
        ] {
            check(own, false);
        }
        for out in [
            "root/etc/shadow",
            "cwd/secret",
            "exe",
            "fd/3",
            "map_files/400000-401000",
            "task/12/root/etc/shadow",
            "task/12/fd/0",
            "../1/environ",
            "task/../../1/status",
            "./status",
            "net//tcp",
        ] {
            check(out, true);
        }
    }
}
