//! Pipes and FIFOs: the bytes buffered in them are copied without being consumed
//! (`tee(2)`), and restart makes one pipe for every pipe whose ends are held inside the
//! image, refilled, so every holder shares it again.

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs;
use crate::restart::error::{self as restart, RestartError};
use crate::state::common::{dec_path, dup_own, reopen_flags, write_all};
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
    let ends = imgs
        .iter()
        .flat_map(|img| img.files.iter())
        .filter_map(|f| match &f.kind {
            FileKind::Pipe {
                ino,
                read_end,
                data,
                capacity,
            } => Some((*ino, *read_end, data, *capacity)),
            _ => None,
        });
    let all: Vec<_> = ends.collect();
    for &(ino, read_end, data, capacity) in &all {
        if !read_end || out.iter().any(|(i, _, _)| *i == ino) {
            continue;
        }
        if !all.iter().any(|&(i, r, _, _)| i == ino && !r) {
            continue;
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(restart::sys_err("pipe2"))?;
        if capacity as usize > 65536 {
            let _ = fcntl::fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(capacity as _));
        }
        write_all(&w, data).map_err(restart::sys_err("refilling a pipe"))?;
        out.push((ino, r, w));
    }
    Ok(out)
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
    let fail = |op| {
        move |source| RestartError::Descriptor {
            pid,
            fd: first_fd,
            op,
            source,
        }
    };
    match &f.kind {
        FileKind::Pipe {
            ino,
            read_end,
            data,
            ..
        } => match pipes.iter().find(|(i, _, _)| i == ino) {
            // Both ends are in the image: one pipe for every holder.
            Some((_, r, w)) => restart::dup(if *read_end { r } else { w }, "a pipe end"),
            // A std stream into a pipe that was outside: the restarter's own.
            None if std_only => dup_own(first_fd),
            None => {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fail("pipe2"))?;
                if *read_end {
                    write_all(&w, data).map_err(fail("refilling a pipe"))?;
                }
                warnings.push(Warning::fd(pid, first_fd, WarningKind::PipePeerOutside));
                Ok(if *read_end { r } else { w })
            }
        },
        FileKind::Fifo { path, data } => {
            let open_err = |e: Errno| RestartError::OpenFile {
                pid,
                fd: first_fd,
                path: path.clone(),
                source: e.into(),
            };
            let helper = fcntl::open(
                path.as_str(),
                OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(open_err)?;
            let fd = fcntl::open(
                format!("/proc/self/fd/{}", helper.as_raw_fd()).as_str(),
                reopen_flags(f.flags) | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(open_err)?;
            let queued = sys::process::fionread(helper.as_fd()).unwrap_or(0);
            if queued == 0 && !data.is_empty() {
                write_all(&helper, data).map_err(fail("refilling a FIFO"))?;
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

/// Decode the kind after its tag.
pub(crate) fn dec(tag: u8, d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<FileKind, ImageError> {
    let w = cx.wire();
    Ok(match tag {
        TAG_PIPE => FileKind::Pipe {
            ino: d.u64().map_err(&w)?,
            read_end: d.bool().map_err(&w)?,
            data: d.bytes().map_err(&w)?.to_vec(),
            capacity: d.u32().map_err(&w)?,
        },
        _ => FileKind::Fifo {
            path: dec_path(d, cx)?,
            data: d.bytes().map_err(&w)?.to_vec(),
        },
    })
}
