//! Pipes and FIFOs: the bytes buffered in them are copied without being consumed
//! (`tee(2)`), and restart makes one pipe for every pipe whose ends are held inside the
//! image, refilled, so every holder shares it again. A refill never blocks: the pipe is
//! given its saved capacity (`F_SETPIPE_SZ`) and written non-blocking; saved bytes that
//! do not fit are refused with the sizes named, and an image whose saved bytes exceed the
//! capacity it recorded is refused when it is read.

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs;
use crate::restart::error::{self as restart, RestartError};
use crate::state::common::{FileType, dec_path, dup_own, open_as, reopen_flags, write_all};
use crate::state::files::open_as_err;
use crate::sys;
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// One end of an anonymous pipe; its bytes are saved once, with the first read end seen.
pub(crate) fn dump_pipe(
    pid: i32,
    fd: i32,
    ino: u64,
    flags: u32,
    peeked: &mut Vec<u64>,
) -> Result<FileKind, CheckpointError> {
    let read_end = flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
    let (data, capacity) = if read_end && !peeked.contains(&ino) {
        peeked.push(ino);
        peek_pipe(pid, fd)?
    } else {
        (Vec::new(), 0)
    };
    Ok(FileKind::Pipe {
        ino,
        read_end,
        data,
        capacity,
    })
}

/// A named pipe, with the bytes buffered in it.
pub(crate) fn dump_fifo(pid: i32, fd: i32, path: String) -> Result<FileKind, CheckpointError> {
    let (data, _) = peek_pipe(pid, fd)?;
    Ok(FileKind::Fifo { path, data })
}

/// Copy the bytes buffered in a pipe or FIFO without consuming them (`tee(2)`).
fn peek_pipe(pid: i32, fd: i32) -> Result<(Vec<u8>, u32), CheckpointError> {
    let err = |source: Errno| CheckpointError::Fd {
        pid,
        fd,
        source: source.into(),
    };
    let path = procfs::path(pid, &format!("fd/{fd}"));
    let src = fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let capacity = fcntl::fcntl(src.as_fd(), FcntlArg::F_GETPIPE_SZ).map_err(err)?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(err)?;
    fcntl::fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(capacity as _)).map_err(err)?;
    let n = match fcntl::tee(
        src.as_fd(),
        w.as_fd(),
        capacity as usize,
        SpliceFFlags::SPLICE_F_NONBLOCK,
    ) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => return Err(err(e)),
    };
    drop(w);
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match nix::unistd::read(&r, &mut data[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(err(e)),
        }
    }
    data.truncate(got);
    Ok((data, capacity as u32))
}

// ---------------------------------------------------------------------------------------
// Restart

/// A pipe for every pipe inode whose both ends are held inside the image (by one process
/// or several), filled with its buffered bytes. Keyed by inode.
pub(crate) fn shared_pipes(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd, OwnedFd)>, RestartError> {
    let mut out: Vec<(u64, OwnedFd, OwnedFd)> = Vec::new();
    // (pid, first descriptor, inode, read end, bytes, capacity) of every pipe end.
    let mut all = Vec::new();
    for img in imgs {
        for (i, f) in img.files.iter().enumerate() {
            if let FileKind::Pipe {
                ino,
                read_end,
                data,
                capacity,
            } = &f.kind
            {
                let fd = img.fd_of(i);
                all.push((img.process.pid, fd, *ino, *read_end, data, *capacity));
            }
        }
    }
    for &(pid, fd, ino, read_end, data, capacity) in &all {
        if !read_end || out.iter().any(|(i, _, _)| *i == ino) {
            continue;
        }
        if !all.iter().any(|&(_, _, i, r, _, _)| i == ino && !r) {
            continue;
        }
        let (r, w) = refilled(pid, fd, data, capacity)?;
        out.push((ino, r, w));
    }
    Ok(out)
}

/// A new pipe holding `data`, with `capacity` (the saved one) when this restarter may set
/// it; both ends blocking again afterwards (the image's own flags are set later).
fn refilled(
    pid: i32,
    fd: i32,
    data: &[u8],
    capacity: u32,
) -> Result<(OwnedFd, OwnedFd), RestartError> {
    let fail = |op| {
        move |source| RestartError::Descriptor {
            pid,
            fd,
            op,
            source,
        }
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(fail("pipe2"))?;
    make_room(pid, fd, &w, data.len(), capacity as usize)?;
    write_all(&w, data).map_err(fail("refilling a pipe"))?;
    for end in [&r, &w] {
        fcntl::fcntl(end, FcntlArg::F_SETFL(OFlag::empty())).map_err(fail("F_SETFL"))?;
    }
    Ok((r, w))
}

/// Give the pipe behind `w` room for `len` bytes: its `capacity` (or `len`, if larger)
/// when it has less. A capacity this restarter may not set (beyond
/// `/proc/sys/fs/pipe-max-size` without CAP_SYS_RESOURCE) is left as it is if the bytes
/// fit anyway; otherwise the pipe cannot be restored.
fn make_room(
    pid: i32,
    fd: i32,
    w: &OwnedFd,
    len: usize,
    capacity: usize,
) -> Result<(), RestartError> {
    let size_err = |source| RestartError::Descriptor {
        pid,
        fd,
        op: "F_GETPIPE_SZ",
        source,
    };
    let size = fcntl::fcntl(w, FcntlArg::F_GETPIPE_SZ).map_err(size_err)? as usize;
    let wanted = capacity.max(len);
    if wanted <= size {
        return Ok(());
    }
    let raised = i32::try_from(wanted)
        .map_err(|_| Errno::EINVAL)
        .and_then(|n| fcntl::fcntl(w, FcntlArg::F_SETPIPE_SZ(n)));
    let size = fcntl::fcntl(w, FcntlArg::F_GETPIPE_SZ).map_err(size_err)? as usize;
    if len <= size {
        return Ok(());
    }
    Err(RestartError::PipeTooSmall {
        pid,
        fd,
        len,
        size,
        why: raised
            .err()
            .map(|e| format!("; raising it to {wanted} bytes failed: {e}"))
            .unwrap_or_default(),
    })
}

/// The descriptor for a pipe end or a FIFO of the image.
pub(crate) fn open(
    pid: i32,
    first_fd: i32,
    f: &OpenFile,
    std_only: bool,
    pipes: &[(u64, OwnedFd, OwnedFd)],
    warnings: &mut Vec<Warning>,
) -> Result<OwnedFd, RestartError> {
    match &f.kind {
        FileKind::Pipe {
            ino,
            read_end,
            data,
            capacity,
        } => match pipes.iter().find(|(i, _, _)| i == ino) {
            // Both ends are in the image: one pipe for every holder.
            Some((_, r, w)) => restart::dup(if *read_end { r } else { w }, "a pipe end"),
            // A std stream into a pipe that was outside: the restarter's own.
            None if std_only => dup_own(first_fd),
            None => {
                let (r, w) = if *read_end {
                    refilled(pid, first_fd, data, *capacity)?
                } else {
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| {
                        RestartError::Descriptor {
                            pid,
                            fd: first_fd,
                            op: "pipe2",
                            source,
                        }
                    })?
                };
                warnings.push(Warning::fd(pid, first_fd, WarningKind::PipePeerOutside));
                Ok(if *read_end { r } else { w })
            }
        },
        FileKind::Fifo { path, data } => {
            // Read-write and non-blocking: opening never waits for a peer, and the
            // refill never waits for a reader. Only a FIFO is opened (a regular file at
            // the path would be written to).
            let helper = open_as(
                path,
                OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                FileType::Fifo,
            )
            .map_err(open_as_err(pid, first_fd, path, FileType::Fifo))?;
            let fd = fcntl::open(
                format!("/proc/self/fd/{}", helper.as_raw_fd()).as_str(),
                reopen_flags(f.flags) | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| RestartError::OpenFile {
                pid,
                fd: first_fd,
                path: path.clone(),
                source: e.into(),
            })?;
            let queued = sys::process::fionread(helper.as_fd()).unwrap_or(0);
            if queued == 0 && !data.is_empty() {
                make_room(pid, first_fd, &helper, data.len(), 0)?;
                write_all(&helper, data).map_err(|source| RestartError::Descriptor {
                    pid,
                    fd: first_fd,
                    op: "refilling a FIFO",
                    source,
                })?;
            }
            Ok(fd)
        }
        _ => Err(RestartError::Tree {
            what: format!("descriptor {first_fd} is not a pipe"),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Codec (the Pipe and Fifo kinds of a FILES record)

/// Tag of a pipe end in FILES.
pub(crate) const TAG_PIPE: u8 = 3;
/// Tag of a FIFO in FILES.
pub(crate) const TAG_FIFO: u8 = 4;

/// Encode a Pipe or Fifo kind (tag included).
pub(crate) fn enc(e: &mut Enc, kind: &FileKind) {
    match kind {
        FileKind::Pipe {
            ino,
            read_end,
            data,
            capacity,
        } => {
            e.u8(TAG_PIPE);
            e.u64(*ino);
            e.bool(*read_end);
            e.bytes(data);
            e.u32(*capacity);
        }
        FileKind::Fifo { path, data } => {
            e.u8(TAG_FIFO);
            e.str(path);
            e.bytes(data);
        }
        _ => {}
    }
}

/// What is wrong with a pipe record whose saved bytes exceed the capacity it records
/// (the checkpoint copies at most the pipe's capacity): no pipe could hold them.
fn overfull(kind: &FileKind) -> Option<String> {
    match kind {
        FileKind::Pipe {
            ino,
            data,
            capacity,
            ..
        } if data.len() > *capacity as usize => Some(format!(
            "pipe:[{ino}] holds {} bytes, more than its capacity of {capacity}",
            data.len()
        )),
        _ => None,
    }
}

/// Decode the kind after its tag.
pub(crate) fn dec(tag: u8, d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<FileKind, ImageError> {
    let w = cx.wire();
    Ok(match tag {
        TAG_PIPE => {
            let kind = FileKind::Pipe {
                ino: d.u64().map_err(&w)?,
                read_end: d.bool().map_err(&w)?,
                data: d.bytes().map_err(&w)?.to_vec(),
                capacity: d.u32().map_err(&w)?,
            };
            if let Some(what) = overfull(&kind) {
                return Err(cx.invalid(what));
            }
            kind
        }
        _ => FileKind::Fifo {
            path: dec_path(d, cx)?,
            data: d.bytes().map_err(&w)?.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_bytes_never_exceed_the_saved_capacity() {
        let pipe = |len: usize, capacity: u32| FileKind::Pipe {
            ino: 7,
            read_end: true,
            data: vec![0; len],
            capacity,
        };
        assert_eq!(overfull(&pipe(0, 0)), None, "a second read end");
        assert_eq!(overfull(&pipe(10, 65536)), None);
        assert_eq!(overfull(&pipe(65536, 65536)), None);
        assert_eq!(
            overfull(&pipe(262_144, 65536)).as_deref(),
            Some("pipe:[7] holds 262144 bytes, more than its capacity of 65536")
        );
    }

    #[test]
    fn a_refill_grows_the_pipe_or_says_why_not() {
        // Room is made for what the capacity says.
        let (r, w) = refilled(1, 3, &[1; 100_000], 131_072).unwrap();
        let size = fcntl::fcntl(&w, FcntlArg::F_GETPIPE_SZ).unwrap();
        assert!(size >= 131_072, "{size}");
        assert_eq!(sys::process::fionread(r.as_fd()), Ok(100_000));
        // Both ends block again.
        for end in [&r, &w] {
            let fl = fcntl::fcntl(end, FcntlArg::F_GETFL).unwrap();
            assert_eq!(fl & libc::O_NONBLOCK, 0);
        }
        // Bytes no pipe can hold (a pipe holds at most 2 GiB) are refused.
        let err = make_room(1, 3, &w, 3 << 30, 0).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "PID 1: descriptor 3: the 3221225472 bytes saved in the pipe do not fit: it holds"
            ) && err.contains("raising it to 3221225472 bytes failed: EINVAL"),
            "{err}"
        );
    }
}
