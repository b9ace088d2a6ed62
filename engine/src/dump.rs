//! Checkpoint: freeze a process, collect its state and write a context file.
//!
//! Order matters: permission checks happen before anything is touched; the process is
//! frozen; per-process state that only the process itself can report (sigactions,
//! `clear_child_tid`, sigaltstack, dumpable, brk) is read by injected system calls into a
//! scratch page that is unmapped again before `/proc/PID/maps` is read; then files, memory
//! and registers are saved and the process is released. Every `?` after the freeze drops
//! the [`Frozen`] guard, which resumes the process: a failed checkpoint never loses it.

use crate::image::{self, ImageError};
use crate::model::*;
use crate::procfs::{self, MapEntry, ProcError};
use crate::sockets;
use crate::sys;
use crate::tracee::{self, After, Frozen, Injector, TraceError};
use nix::errno::Errno;
use nix::fcntl::{self, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::stat::Mode;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, IoSliceMut, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Failures of a checkpoint. The process keeps running after any of them.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// No such process.
    #[error("no process with PID {pid}")]
    NoProcess {
        /// PID.
        pid: i32,
    },
    /// The caller may not checkpoint this process.
    #[error("PID {pid} belongs to UID {owner}; only its owner or root may checkpoint it")]
    NotPermitted {
        /// PID.
        pid: i32,
        /// Owner.
        owner: u32,
    },
    /// Set-id processes are refused, as core dumps refuse them.
    #[error(
        "PID {pid} runs with changed privileges (set-user-ID or set-group-ID: {detail}); it is refused, as a core dump would be"
    )]
    SetId {
        /// PID.
        pid: i32,
        /// Which IDs differ.
        detail: String,
    },
    /// The process made itself non-dumpable.
    #[error(
        "PID {pid} is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or changed credentials); it is refused, as a core dump would be"
    )]
    NotDumpable {
        /// PID.
        pid: i32,
    },
    /// Kernel threads have no user state.
    #[error("PID {pid} is a kernel thread")]
    KernelThread {
        /// PID.
        pid: i32,
    },
    /// The scope names no process, or one that cannot be saved with the others.
    #[error("{what}")]
    Scope {
        /// What is wrong.
        what: String,
    },
    /// A process cannot checkpoint itself.
    #[error("PID {pid} is lifeboat itself")]
    SelfCheckpoint {
        /// PID.
        pid: i32,
    },
    /// A descriptor of a kind this engine cannot restore yet.
    #[error("PID {pid}: descriptor {fd} is {what}, which this version cannot checkpoint")]
    UnsupportedFd {
        /// PID.
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// What it refers to.
        what: String,
    },
    /// A memory region this engine cannot restore yet.
    #[error(
        "PID {pid}: region {start:#x}-{end:#x} ({what}) cannot be checkpointed by this version"
    )]
    UnsupportedRegion {
        /// PID.
        pid: i32,
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// What it is.
        what: String,
    },
    /// An injected system call failed.
    #[error("PID {pid}: injected {call} failed: {source}")]
    Inject {
        /// PID.
        pid: i32,
        /// Which call.
        call: &'static str,
        /// errno.
        source: Errno,
    },
    /// Reading the process's memory failed.
    #[error("PID {pid}: cannot read memory at {addr:#x}: {source}")]
    ReadMemory {
        /// PID.
        pid: i32,
        /// Address.
        addr: u64,
        /// Cause.
        source: io::Error,
    },
    /// A file the process has open could not be examined.
    #[error("PID {pid}: cannot examine descriptor {fd}: {source}")]
    Fd {
        /// PID.
        pid: i32,
        /// Descriptor.
        fd: i32,
        /// Cause.
        source: io::Error,
    },
    /// Writing the page data failed.
    #[error("{path}: cannot write page data: {source}")]
    WritePages {
        /// Image.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// ptrace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The image could not be written.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Which processes a checkpoint saves (BLCR's scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The one process (`--pid`).
    #[default]
    Pid,
    /// The process and all its descendants (`--tree`).
    Tree,
    /// Every process of the process group whose ID is given (`--pgid`).
    Pgid,
    /// Every process of the session whose ID is given (`--sid`).
    Sid,
}

/// How to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// What happens to the processes afterwards.
    pub after: After,
    /// Compress page data and file contents with zstd.
    pub compress: bool,
    /// Which processes.
    pub scope: Scope,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            after: After::Run,
            compress: false,
            scope: Scope::Pid,
        }
    }
}

/// Progress of a checkpoint, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes of memory examined so far.
    pub done: u64,
    /// Bytes of memory to examine.
    pub total: u64,
}

/// What a checkpoint produced.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    /// The context file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Processes saved (the root first).
    pub pids: Vec<i32>,
    /// Zombies saved for their parents' wait(): their PIDs too are taken again on restart.
    pub zombies: Vec<i32>,
    /// Threads saved, over all processes.
    pub threads: usize,
    /// Pages saved (zero pages elided).
    pub pages: u64,
    /// Wall time of the whole checkpoint.
    pub elapsed: Duration,
    /// Time the processes were frozen.
    pub frozen: Duration,
    /// Things saved differently than asked (a zombie left out).
    pub warnings: Vec<String>,
}

/// Checkpoint `pid` (with the processes its scope adds) into the context file `path`.
///
/// Every process of the scope is frozen before any is examined, so the image is one
/// consistent moment of the whole job; on any error every process is resumed.
pub fn checkpoint(
    pid: i32,
    path: &Path,
    opts: &CheckpointOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckpointReport, CheckpointError> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    let (frozen, zombie_stats) = freeze_scope(pid, opts.scope)?;
    // A zombie is saved when its parent is: restart recreates it for the parent's wait().
    let zombies: Vec<Zombie> = zombie_stats
        .into_iter()
        .filter_map(|(p, st)| {
            if frozen.iter().any(|f| f.pid().as_raw() == st.ppid) {
                Some(Zombie {
                    pid: p,
                    ppid: st.ppid,
                    pgid: st.pgrp,
                    sid: st.session,
                    status: st.exit_code,
                })
            } else {
                warnings.push(format!(
                    "PID {p} (`{}`) is a zombie whose parent is outside the scope; it is not saved",
                    st.comm
                ));
                None
            }
        })
        .collect();
    let frozen_at = Instant::now();
    let mut images = Vec::with_capacity(frozen.len());
    for f in &frozen {
        images.push(collect(f)?);
    }
    find_shared_files(&mut images);
    // A unix socket pair is saved only whole: both ends in the image.
    let inos: Vec<u64> = images
        .iter()
        .flat_map(|i| i.files.iter())
        .filter_map(|f| match f.kind {
            FileKind::UnixPair { ino, .. } => Some(ino),
            _ => None,
        })
        .collect();
    for img in &images {
        for (i, f) in img.files.iter().enumerate() {
            if let FileKind::UnixPair { peer, .. } = f.kind {
                if !inos.contains(&peer) {
                    let fd = img
                        .fds
                        .iter()
                        .find(|d| d.file as usize == i)
                        .map_or(-1, |d| d.fd);
                    return Err(CheckpointError::UnsupportedFd {
                        pid: img.process.pid,
                        fd,
                        what: "a unix socket connected to a process outside the checkpoint's scope (save the whole job with --tree, --pgid or --sid)".into(),
                    });
                }
            }
        }
    }
    let mut writer = image::Writer::create(path, opts.compress)?;
    let mut pages = 0;
    let mut meta = images[0].meta.clone();
    meta.frozen_us = frozen_at.elapsed().as_micros() as u64;
    writer.meta(&meta)?;
    writer.zombies(&zombies)?;
    for image in &images {
        let pid = image.process.pid;
        let maps = procfs::maps(pid)?;
        let plan = plan_pages(pid, &image.regions, &maps)?;
        writer.process(image)?;
        let mut stream = writer.pages()?;
        let (runs, n) = copy_pages(pid, &plan, &mut stream, path, progress)?;
        stream.finish().map_err(ImageError::from)?;
        writer.pagemap(&runs)?;
        pages += n;
    }
    // Every byte of the image is written (not yet fsynced). A process that runs on can
    // be let go now: if the fsync fails, it is still running, as on any error. One that
    // stops, terminates or dies waits until the image is durable under its name.
    let release_all = |frozen: Vec<Frozen>| -> Result<(), CheckpointError> {
        // Children first: a parent resumed first could see a child still frozen.
        let mut first_err = None;
        for f in frozen.into_iter().rev() {
            if let Err(e) = f.release(opts.after) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(e.into()))
    };
    let pids = images.iter().map(|i| i.process.pid).collect();
    let threads = images.iter().map(|i| i.threads.len()).sum();
    let (bytes, frozen_for) = if opts.after == After::Run {
        let frozen_for = frozen_at.elapsed();
        release_all(frozen)?;
        (writer.finish()?, frozen_for)
    } else {
        let bytes = writer.finish()?;
        let frozen_for = frozen_at.elapsed();
        release_all(frozen)?;
        (bytes, frozen_for)
    };
    Ok(CheckpointReport {
        path: path.to_owned(),
        bytes,
        pids,
        zombies: zombies.iter().map(|z| z.pid).collect(),
        threads,
        pages,
        elapsed: started.elapsed(),
        frozen: frozen_for,
        warnings,
    })
}

/// Record which open file descriptions a process shares with an earlier one (inherited
/// across fork), comparing candidates of the same kind and path with kcmp(2). Pipes need
/// nothing here: restart gives every holder of a pipe end the same description.
fn find_shared_files(images: &mut [Image]) {
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

/// The processes of a scope: `(pid, ppid, pgid, sid, state)` of everything on the node,
/// filtered. The root comes first, then parents before their children.
fn scope_members(
    pid: i32,
    scope: Scope,
) -> Result<(i32, Vec<(i32, procfs::Stat)>), CheckpointError> {
    if scope == Scope::Pid {
        let st = procfs::stat(pid).map_err(gone_is_no_process(pid))?;
        return Ok((pid, vec![(pid, st)]));
    }
    let all: Vec<(i32, procfs::Stat)> = procfs::pids()
        .into_iter()
        .filter_map(|p| procfs::stat(p).ok().map(|s| (p, s)))
        .collect();
    let root = match scope {
        Scope::Tree | Scope::Pid => pid,
        // The group or session leader is the root when it still lives; else the member
        // whose parent is outside the scope, lowest PID first.
        Scope::Pgid | Scope::Sid => {
            let member = |s: &procfs::Stat| {
                if scope == Scope::Pgid {
                    s.pgrp == pid
                } else {
                    s.session == pid
                }
            };
            let members: Vec<i32> = all
                .iter()
                .filter(|(_, s)| member(s))
                .map(|(p, _)| *p)
                .collect();
            if members.is_empty() {
                return Err(CheckpointError::Scope {
                    what: format!(
                        "no process has {} {pid}",
                        if scope == Scope::Pgid {
                            "process group"
                        } else {
                            "session"
                        }
                    ),
                });
            }
            if members.contains(&pid) {
                pid
            } else {
                members[0]
            }
        }
    };
    let in_scope = |p: i32, s: &procfs::Stat| match scope {
        Scope::Pid => p == root,
        Scope::Tree => false, // by descent, below
        Scope::Pgid => s.pgrp == pid,
        Scope::Sid => s.session == pid,
    };
    // Breadth-first from the root: parents before children.
    let mut out: Vec<(i32, procfs::Stat)> = Vec::new();
    let Some(root_stat) = all.iter().find(|(p, _)| *p == root).map(|(_, s)| s.clone()) else {
        return Err(CheckpointError::NoProcess { pid: root });
    };
    out.push((root, root_stat));
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        for (p, s) in &all {
            if s.ppid == parent
                && !out.iter().any(|(q, _)| q == p)
                && (scope == Scope::Tree || in_scope(*p, s))
            {
                out.push((*p, s.clone()));
            }
        }
        i += 1;
    }
    // Members of a group or session whose parents are outside it: top-level processes.
    if matches!(scope, Scope::Pgid | Scope::Sid) {
        for (p, s) in &all {
            if in_scope(*p, s) && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, s.clone()));
                let mut j = out.len() - 1;
                while j < out.len() {
                    let parent = out[j].0;
                    for (c, cs) in &all {
                        if cs.ppid == parent && in_scope(*c, cs) && !out.iter().any(|(q, _)| q == c)
                        {
                            out.push((*c, cs.clone()));
                        }
                    }
                    j += 1;
                }
            }
        }
    }
    Ok((root, out))
}

/// Freeze every process of the scope, re-reading it until no new process appears (a
/// process forked between the scan and the freeze of its parent is caught by the next
/// scan). Zombies are left out with a warning: they have no state but an exit status.
/// Frozen processes and the zombies of the scope.
type FrozenScope = (Vec<Frozen>, Vec<(i32, procfs::Stat)>);

fn freeze_scope(pid: i32, scope: Scope) -> Result<FrozenScope, CheckpointError> {
    let me = std::process::id() as i32;
    let mut frozen: Vec<Frozen> = Vec::new();
    let mut zombies: Vec<(i32, procfs::Stat)> = Vec::new();
    // The PIDs of the last scan, parents before children: a scan that found nothing new
    // is the final order.
    let order: Vec<i32> = loop {
        let (root, members) = scope_members(pid, scope)?;
        let order = members.iter().map(|(p, _)| *p).collect();
        let mut added = false;
        for (p, st) in members {
            if frozen.iter().any(|f| f.pid().as_raw() == p) || zombies.iter().any(|(z, _)| *z == p)
            {
                continue;
            }
            if p == me && scope != Scope::Pid {
                return Err(CheckpointError::Scope {
                    what: format!(
                        "the scope includes lifeboat itself (PID {me}); checkpoint from outside the job"
                    ),
                });
            }
            if st.is_zombie() {
                if p == root {
                    return Err(CheckpointError::NoProcess { pid: p });
                }
                zombies.push((p, st));
                continue;
            }
            let outcome = preflight(p).and_then(|()| {
                Frozen::freeze(Pid::from_raw(p)).map_err(|e| match e {
                    TraceError::NoProcess { pid } => CheckpointError::NoProcess { pid },
                    e => e.into(),
                })
            });
            match outcome {
                Ok(f) => {
                    frozen.push(f);
                    added = true;
                }
                // A member that exited since the scan (a shell's short-lived `sleep`) is
                // gone, or a zombie that its frozen parent may still wait for: scan again
                // to record it as one. Its failed preflight or seize (EPERM on a zombie,
                // ESRCH from a dying process's files) says nothing about the job.
                Err(_) if p != root && exited(p) => added = true,
                Err(e) => return Err(e),
            }
        }
        if !added {
            break order;
        }
    };
    frozen.sort_by_key(|f| {
        order
            .iter()
            .position(|p| *p == f.pid().as_raw())
            .unwrap_or(usize::MAX)
    });
    if frozen.is_empty() {
        return Err(CheckpointError::NoProcess { pid });
    }
    Ok((frozen, zombies))
}

/// Whether `pid` exited since the scan: gone, a zombie, or exiting, in which case it is
/// given up to a second to become a zombie, so that the next scan records it as one.
fn exited(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match procfs::stat(pid) {
            Err(e) => return e.is_gone(),
            Ok(st) if st.is_zombie() => return true,
            Ok(st) if !st.exiting() || Instant::now() >= deadline => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// A `/proc` read of `pid` that failed because the process is gone is `NoProcess`.
fn gone_is_no_process(pid: i32) -> impl Fn(ProcError) -> CheckpointError {
    move |e| {
        if e.is_gone() {
            CheckpointError::NoProcess { pid }
        } else {
            e.into()
        }
    }
}

/// Refuse what ptrace and core dumps refuse, before touching the process.
fn preflight(pid: i32) -> Result<(), CheckpointError> {
    if pid == std::process::id() as i32 {
        return Err(CheckpointError::SelfCheckpoint { pid });
    }
    let status = procfs::status(pid).map_err(gone_is_no_process(pid))?;
    if status.kthread {
        return Err(CheckpointError::KernelThread { pid });
    }
    let caller = sys::process::geteuid();
    if caller != 0 && status.uid.iter().any(|&u| u != caller) {
        return Err(CheckpointError::NotPermitted {
            pid,
            owner: status.uid[0],
        });
    }
    let (u, g) = (status.uid, status.gid);
    if u[..3].iter().any(|&x| x != u[0]) || g[..3].iter().any(|&x| x != g[0]) {
        return Err(CheckpointError::SetId {
            pid,
            detail: format!("uids {u:?}, gids {g:?}"),
        });
    }
    let auxv = procfs::auxv(pid).map_err(gone_is_no_process(pid))?;
    const AT_SECURE: u64 = 23;
    if auxv
        .chunks_exact(2)
        .any(|kv| kv[0] == AT_SECURE && kv[1] != 0)
    {
        return Err(CheckpointError::SetId {
            pid,
            detail: "AT_SECURE is set".into(),
        });
    }
    Ok(())
}

/// Syscall numbers (x86-64) used by injection.
mod nr {
    pub const MMAP: i64 = 9;
    pub const MUNMAP: i64 = 11;
    pub const BRK: i64 = 12;
    pub const RT_SIGACTION: i64 = 13;
    pub const SIGALTSTACK: i64 = 131;
    pub const PRCTL: i64 = 157;
    pub const GETITIMER: i64 = 36;
    pub const TIMER_GETTIME: i64 = 224;
}

fn inject_ok(pid: i32, call: &'static str, r: Result<u64, Errno>) -> Result<u64, CheckpointError> {
    r.map_err(|source| CheckpointError::Inject { pid, call, source })
}

/// Everything but page contents.
fn collect(frozen: &Frozen) -> Result<Image, CheckpointError> {
    let pid = frozen.pid().as_raw();
    let leader = frozen.threads()[0].tid;
    let maps0 = procfs::maps(pid)?;
    let ip = tracee::find_syscall_insn(frozen.pid(), &maps0)?;
    let mem = File::open(procfs::path(pid, "mem")).map_err(|source| ProcError::Read {
        path: procfs::path(pid, "mem"),
        source,
    })?;
    let read_remote = |addr: u64, len: usize| -> Result<Vec<u8>, CheckpointError> {
        let mut buf = vec![0u8; len];
        mem.read_exact_at(&mut buf, addr)
            .map_err(|source| CheckpointError::ReadMemory { pid, addr, source })?;
        Ok(buf)
    };
    let u64_at =
        |b: &[u8], i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());

    // Injected state. Signals are blocked while we inject so none is delivered (and lost)
    // on the way; each thread gets its mask and its (restart-adjusted) registers back.
    let mut threads = Vec::new();
    let mut sigactions = Vec::new();
    let mut timers = Timers::default();
    let posix_listed = procfs::timers(pid)?;
    let mut brk = 0;
    let mut scratch = 0;
    for (i, st) in frozen.threads().iter().enumerate() {
        let tid = st.tid;
        let mask = sys::ptrace::get_sigmask(tid).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_GETSIGMASK",
            tid: tid.as_raw(),
            source,
        })?;
        sys::ptrace::set_sigmask(tid, u64::MAX).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_SETSIGMASK",
            tid: tid.as_raw(),
            source,
        })?;
        let mut inj = Injector::new(tid, ip)?;
        let outcome = (|| -> Result<(u64, AltStack), CheckpointError> {
            if i == 0 {
                let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
                scratch = inject_ok(
                    pid,
                    "mmap",
                    inj.call(nr::MMAP, &[0, PAGE_SIZE, prot, flags, u64::MAX, 0])?,
                )?;
                if inject_ok(
                    pid,
                    "prctl(PR_GET_DUMPABLE)",
                    inj.call(nr::PRCTL, &[libc::PR_GET_DUMPABLE as u64])?,
                )? == 0
                {
                    return Err(CheckpointError::NotDumpable { pid });
                }
                brk = inject_ok(pid, "brk", inj.call(nr::BRK, &[0])?)?;
                for sig in 1..=NSIG {
                    if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
                        continue;
                    }
                    inject_ok(
                        pid,
                        "rt_sigaction",
                        inj.call(nr::RT_SIGACTION, &[u64::from(sig), 0, scratch, 8])?,
                    )?;
                    let b = read_remote(scratch, 32)?;
                    sigactions.push(SigAction {
                        sig,
                        handler: u64_at(&b, 0),
                        flags: u64_at(&b, 1),
                        restorer: u64_at(&b, 2),
                        mask: u64_at(&b, 3),
                    });
                }
                // Interval timers: struct itimerval {interval, value}, each {s, us}.
                for which in 0..3u64 {
                    inject_ok(
                        pid,
                        "getitimer",
                        inj.call(nr::GETITIMER, &[which, scratch])?,
                    )?;
                    let b = read_remote(scratch, 32)?;
                    timers.itimers[which as usize] = (
                        (u64_at(&b, 0) as i64, u64_at(&b, 1) as i64),
                        (u64_at(&b, 2) as i64, u64_at(&b, 3) as i64),
                    );
                }
                // POSIX timers: struct itimerspec {interval, value}, each {s, ns}.
                for t in &posix_listed {
                    inject_ok(
                        pid,
                        "timer_gettime",
                        inj.call(nr::TIMER_GETTIME, &[t.id as u64, scratch])?,
                    )?;
                    let b = read_remote(scratch, 32)?;
                    timers.posix.push(PosixTimer {
                        interval: (u64_at(&b, 0) as i64, u64_at(&b, 1) as i64),
                        value: (u64_at(&b, 2) as i64, u64_at(&b, 3) as i64),
                        ..*t
                    });
                }
            }
            inject_ok(
                pid,
                "prctl(PR_GET_TID_ADDRESS)",
                inj.call(nr::PRCTL, &[libc::PR_GET_TID_ADDRESS as u64, scratch])?,
            )?;
            let ctid = u64_at(&read_remote(scratch, 8)?, 0);
            inject_ok(
                pid,
                "sigaltstack",
                inj.call(nr::SIGALTSTACK, &[0, scratch])?,
            )?;
            let b = read_remote(scratch, 24)?;
            let alt = AltStack {
                sp: u64_at(&b, 0),
                flags: u64_at(&b, 1) as u32 as i32,
                size: u64_at(&b, 2),
            };
            Ok((ctid, alt))
        })();
        // Put the thread back even if an injected call failed.
        let live = tracee::restart_regs(&st.regs, true);
        ptrace_set(tid, &live, mask)?;
        let (clear_child_tid, altstack) = match outcome {
            Ok(v) => v,
            Err(e) => {
                if scratch != 0 && i > 0 {
                    let mut l = Injector::new(leader, ip)?;
                    let _ = l.call(nr::MUNMAP, &[scratch, PAGE_SIZE]);
                    ptrace_set(
                        leader,
                        &tracee::restart_regs(&frozen.threads()[0].regs, true),
                        sys::ptrace::get_sigmask(leader).unwrap_or(0),
                    )?;
                }
                return Err(e);
            }
        };
        let xstate = sys::ptrace::get_xstate(tid).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_GETREGSET(NT_X86_XSTATE)",
            tid: tid.as_raw(),
            source,
        })?;
        let pending =
            sys::ptrace::peek_siginfo(tid, false).map_err(|source| TraceError::Ptrace {
                op: "PTRACE_PEEKSIGINFO",
                tid: tid.as_raw(),
                source,
            })?;
        let rseq = sys::ptrace::rseq_config(tid)
            .map_err(|source| TraceError::Ptrace {
                op: "PTRACE_GET_RSEQ_CONFIGURATION",
                tid: tid.as_raw(),
                source,
            })?
            .map(|r| Rseq {
                ptr: r.ptr,
                len: r.len,
                sig: r.sig,
            });
        let robust_list =
            sys::process::get_robust_list(tid).map_err(|source| TraceError::Ptrace {
                op: "get_robust_list",
                tid: tid.as_raw(),
                source,
            })?;
        let comm = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default();
        threads.push(Thread {
            tid: tid.as_raw(),
            comm,
            regs: tracee::restart_regs(&st.regs, false),
            xstate,
            sigmask: mask,
            pending: pending.into_iter().map(SigInfo).collect(),
            rseq,
            robust_list,
            clear_child_tid,
            altstack,
        });
    }
    {
        let mask = sys::ptrace::get_sigmask(leader).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_GETSIGMASK",
            tid: leader.as_raw(),
            source,
        })?;
        sys::ptrace::set_sigmask(leader, u64::MAX).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_SETSIGMASK",
            tid: leader.as_raw(),
            source,
        })?;
        let mut inj = Injector::new(leader, ip)?;
        let r = inj.call(nr::MUNMAP, &[scratch, PAGE_SIZE])?;
        ptrace_set(
            leader,
            &tracee::restart_regs(&frozen.threads()[0].regs, true),
            mask,
        )?;
        inject_ok(pid, "munmap", r)?;
    }

    let stat = procfs::stat(pid)?;
    let status = procfs::status(pid)?;
    let rlimits = procfs::limits(pid)?
        .into_iter()
        .zip(0u32..)
        .map(|((soft, hard), resource)| Rlimit {
            resource,
            soft,
            hard,
        })
        .collect();
    let shared_pending =
        sys::ptrace::peek_siginfo(leader, true).map_err(|source| TraceError::Ptrace {
            op: "PTRACE_PEEKSIGINFO",
            tid: leader.as_raw(),
            source,
        })?;
    let process = Process {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm.clone(),
        cmdline: procfs::cmdline(pid)?,
        exe: procfs::link(pid, "exe")?,
        cwd: procfs::link(pid, "cwd")?,
        umask: status.umask,
        personality: procfs::personality(pid)?,
        creds: Creds {
            uid: status.uid,
            gid: status.gid,
            groups: status.groups.clone(),
        },
        rlimits,
        mm: MmLayout {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
            auxv: procfs::auxv(pid)?,
        },
        sigactions,
        shared_pending: shared_pending.into_iter().map(SigInfo).collect(),
        stopped: frozen.group_stopped(),
    };
    let maps = procfs::maps(pid)?;
    let regions = maps
        .iter()
        .map(|m| region(pid, m))
        .collect::<Result<Vec<_>, _>>()?;
    let shared_anon = maps
        .iter()
        .zip(&regions)
        .filter(|(_, r)| r.kind == RegionKind::SharedAnon)
        .map(|(m, r)| SharedAnonId {
            start: r.start,
            ino: m.ino,
        })
        .collect();
    let (files, fds, locks) = files(pid)?;
    let meta = Meta {
        engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        frozen_us: 0,
    };
    Ok(Image {
        meta,
        process,
        threads,
        regions,
        files,
        fds,
        pagemap: Vec::new(),
        shared_anon,
        shared_files: Vec::new(),
        locks,
        timers,
    })
}

fn ptrace_set(tid: Pid, regs: &Regs, mask: u64) -> Result<(), TraceError> {
    nix::sys::ptrace::setregs(tid, tracee::regs_to(regs)).map_err(|source| TraceError::Ptrace {
        op: "PTRACE_SETREGS",
        tid: tid.as_raw(),
        source,
    })?;
    sys::ptrace::set_sigmask(tid, mask).map_err(|source| TraceError::Ptrace {
        op: "PTRACE_SETSIGMASK",
        tid: tid.as_raw(),
        source,
    })
}

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

fn region(pid: i32, m: &MapEntry) -> Result<Region, CheckpointError> {
    let mut advice = 0;
    for f in &m.vmflags {
        advice |= match f.as_str() {
            "dd" => advice::DONTDUMP,
            "dc" => advice::DONTFORK,
            "wf" => advice::WIPEONFORK,
            "hg" => advice::HUGEPAGE,
            "nh" => advice::NOHUGEPAGE,
            "mg" => advice::MERGEABLE,
            _ => 0,
        };
    }
    let growsdown = m.vmflags.iter().any(|f| f == "gd");
    let unsupported = |what: &str| CheckpointError::UnsupportedRegion {
        pid,
        start: m.start,
        end: m.end,
        what: what.to_owned(),
    };
    let kind = match m.name.as_deref() {
        None => {
            if m.shared {
                RegionKind::SharedAnon
            } else {
                RegionKind::Anon
            }
        }
        Some("[heap]") => RegionKind::Heap,
        Some("[stack]") => RegionKind::Stack,
        Some("[vdso]") => RegionKind::Vdso,
        Some("[vvar]") => RegionKind::Vvar,
        Some("[vvar_vclock]") => RegionKind::VvarVclock,
        Some("[vsyscall]") => RegionKind::Vsyscall,
        Some("/dev/zero (deleted)") if m.shared => RegionKind::SharedAnon,
        // Shared memory a restart of several processes set up (see restore::shared_memory).
        Some(n) if m.shared && n.starts_with("/memfd:lifeboat-shared") => RegionKind::SharedAnon,
        Some(n) if n.starts_with('[') => RegionKind::Anon, // [anon:name] and friends
        // A shared mapping of a file deleted since (POSIX semaphores and shared memory in
        // /dev/shm, as Python's multiprocessing makes them): shared memory, restored from
        // its pages and shared again by inode.
        Some(_) if m.deleted() && m.shared => RegionKind::SharedAnon,
        Some(n) if m.deleted() => {
            return Err(unsupported(&format!(
                "private mapping of deleted file {n} (a program or library replaced while it runs)"
            )));
        }
        Some(path) => {
            // Identity by path, as restart checks it; a file replaced since it was mapped
            // shows as "(deleted)" above.
            let md = fs::metadata(path).map_err(|e| unsupported(&format!("{path}: {e}")))?;
            if !md.is_file() {
                if path == "/dev/zero" && !m.shared {
                    RegionKind::Anon
                } else {
                    return Err(unsupported(&format!("mapping of device {path}")));
                }
            } else {
                RegionKind::File {
                    path: path.to_owned(),
                    identity: identity(&md),
                }
            }
        }
    };
    Ok(Region {
        start: m.start,
        end: m.end,
        prot: m.prot,
        shared: m.shared,
        offset: m.offset,
        kind,
        advice,
        growsdown,
    })
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

/// The descriptor table, sharing one [`OpenFile`] between descriptors that share an open
/// file description (checked with kcmp).
/// Open files, the descriptor table, and the locks held through them.
type Files = (Vec<OpenFile>, Vec<Fd>, Vec<FileLock>);

fn files(pid: i32) -> Result<Files, CheckpointError> {
    let p = Pid::from_raw(pid);
    let mut files: Vec<OpenFile> = Vec::new();
    let mut owners: Vec<(i32, u64, u64)> = Vec::new(); // (fd, dev, ino) of each file's first fd
    let mut fds = Vec::new();
    let mut locks = Vec::new();
    let mut peeked_pipes: Vec<u64> = Vec::new();
    // Socket tables, read at the first socket.
    let mut unix: Option<HashMap<u64, sockets::UnixInfo>> = None;
    let mut tcp: Option<HashMap<u64, sockets::TcpInfo>> = None;
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
            let read_end = flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
            let (data, capacity) = if read_end && !peeked_pipes.contains(&ino) {
                peeked_pipes.push(ino);
                peek_pipe(pid, fd)?
            } else {
                (Vec::new(), 0)
            };
            FileKind::Pipe {
                ino,
                read_end,
                data,
                capacity,
            }
        } else if let Some(rest) = target.strip_prefix("socket:[") {
            let ino: u64 = rest.trim_end_matches(']').parse().unwrap_or(md.ino());
            socket(pid, fd, ino, &mut unix, &mut tcp)?
        } else if let Some(kind) = target.strip_prefix("anon_inode:") {
            anon_inode(pid, fd, kind, &info.fields)
                .ok_or_else(|| unsupported(format!("an anonymous inode ({target})")))??
        } else if ft.is_file() {
            let (path, deleted) = match target.strip_suffix(" (deleted)") {
                Some(p) if md.nlink() == 0 => (p.to_owned(), true),
                _ => (target.clone(), md.nlink() == 0),
            };
            let content = if deleted {
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
            let (data, _) = peek_pipe(pid, fd)?;
            FileKind::Fifo { path: target, data }
        } else {
            return Err(unsupported(format!("`{target}`")));
        };
        // One descriptor per description: dups show the same locks.
        locks.extend(locks_in(fd, &info.fields));
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
    Ok((files, fds, locks))
}

/// What a socket descriptor is, for the kinds that can be restored: one end of an AF_UNIX
/// pair (with its queued data, peeked through a duplicate of the descriptor), a listening
/// TCP socket, or a TCP connection (restored closed).
fn socket(
    pid: i32,
    fd: i32,
    ino: u64,
    unix: &mut Option<HashMap<u64, sockets::UnixInfo>>,
    tcp: &mut Option<HashMap<u64, sockets::TcpInfo>>,
) -> Result<FileKind, CheckpointError> {
    let unsupported = |what: String| CheckpointError::UnsupportedFd { pid, fd, what };
    if unix.is_none() {
        *unix = Some(
            sockets::unix_sockets()
                .map_err(|e| unsupported(format!("a socket (sock_diag failed: {e})")))?,
        );
    }
    if let Some(info) = unix.as_ref().and_then(|m| m.get(&ino)).copied() {
        let Some(peer) = info.peer.filter(|_| info.state == 1 && !info.named) else {
            return Err(unsupported(format!(
                "a unix socket that is {} (only connected socket pairs are saved)",
                if info.state == 10 {
                    "listening"
                } else if info.named {
                    "bound to a name"
                } else {
                    "not connected"
                }
            )));
        };
        let dup = sys::process::pidfd_getfd(pid, fd)
            .map_err(|e| unsupported(format!("a unix socket whose queue cannot be read ({e})")))?;
        let queued = if info.sock_type == libc::SOCK_STREAM {
            let data = sockets::peek_stream(&dup, info.rqueue as usize).map_err(|e| {
                unsupported(format!("a unix socket whose queue cannot be read ({e})"))
            })?;
            if data.is_empty() {
                Vec::new()
            } else {
                vec![data]
            }
        } else {
            sockets::peek_datagrams(&dup, u32::MAX).map_err(|e| {
                unsupported(format!("a unix socket whose queue cannot be read ({e})"))
            })?
        };
        return Ok(FileKind::UnixPair {
            ino,
            peer,
            sock_type: info.sock_type,
            queued,
        });
    }
    if tcp.is_none() {
        *tcp = Some(sockets::tcp_sockets(pid));
    }
    match tcp.as_ref().and_then(|m| m.get(&ino)) {
        // TCP_LISTEN
        Some(t) if t.state == 0x0A => Ok(FileKind::TcpListen {
            addr: t.local,
            backlog: t.backlog,
        }),
        Some(t) => Ok(FileKind::TcpClosed {
            v6: t.local.is_ipv6(),
        }),
        None => Err(unsupported(format!(
            "a socket of a kind this version cannot save (socket:[{ino}]: not AF_UNIX, not TCP)"
        ))),
    }
}

/// The watches of an inotify instance: fdinfo gives each watch's descriptor, mask and file
/// handle (fs/notify/fdinfo.c); the handle, opened on the mount of its device, gives the
/// path to watch again.
fn inotify_watches(
    pid: i32,
    fields: &[(String, String)],
) -> Result<Vec<InotifyWatch>, CheckpointError> {
    let mut out = Vec::new();
    // "inotify wd:1 ino:a1b2 sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8
    //  fhandle-type:1 f_handle:b2a1000000000000", split at its first colon.
    for (k, rest) in fields.iter().filter(|(k, _)| k.starts_with("inotify")) {
        let v = &format!("{}:{rest}", k.trim_start_matches("inotify").trim());
        let get = |key: &str| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        };
        let hex = |key: &str| get(key).and_then(|x| u64::from_str_radix(x, 16).ok());
        let bad = |what: &str| CheckpointError::Scope {
            what: format!("PID {pid}: an inotify watch whose {what} cannot be read ({v})"),
        };
        let wd = hex("wd").ok_or_else(|| bad("descriptor"))? as i32;
        let mask = hex("mask").ok_or_else(|| bad("mask"))? as u32;
        let sdev = hex("sdev").ok_or_else(|| bad("device"))?;
        let htype = hex("fhandle-type").ok_or_else(|| bad("file handle"))? as i32;
        let handle: Vec<u8> = get("f_handle")
            .map(|h| {
                (0..h.len() / 2)
                    .filter_map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
                    .collect()
            })
            .ok_or_else(|| bad("file handle"))?;
        // s_dev in the kernel's internal encoding: major << 20 | minor.
        let (major, minor) = (sdev >> 20, sdev & 0xfffff);
        let mount = procfs::mount_point(pid, major, minor).ok_or_else(|| bad("mount"))?;
        let path = sys::process::path_of_handle(&mount, htype, &handle)
            .map_err(|e| bad(&format!("file (open_by_handle_at: {e})")))?;
        out.push(InotifyWatch { wd, mask, path });
    }
    out.sort_by_key(|w| w.wd);
    Ok(out)
}

/// Locks held through the process's descriptors: the `lock:` lines of fdinfo, which list
/// the locks on that open file that belong to this process (POSIX) or to the description
/// (flock, OFD): fs/locks.c `lock_get_status`, e.g.
/// `1: POSIX  ADVISORY  READ 22989 fe:00:10010712 10 14`.
fn locks_in(fd: i32, fields: &[(String, String)]) -> Vec<FileLock> {
    let mut out = Vec::new();
    for (_, v) in fields.iter().filter(|(k, _)| k == "lock") {
        let words: Vec<&str> = v.split_whitespace().collect();
        // [id:, kind, ADVISORY|MANDATORY, READ|WRITE, pid, dev:ino, start, end]
        let (Some(kind), Some(mode), Some(start), Some(end)) =
            (words.get(1), words.get(3), words.get(6), words.get(7))
        else {
            continue;
        };
        let kind = match *kind {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            // Leases and others are not locks a process takes back by itself.
            _ => continue,
        };
        let Ok(start) = start.parse::<u64>() else {
            continue;
        };
        let end = match *end {
            "EOF" => None,
            e => match e.parse::<u64>() {
                Ok(e) => Some(e),
                Err(_) => continue,
            },
        };
        out.push(FileLock {
            fd,
            kind,
            write: *mode == "WRITE",
            start,
            end,
        });
    }
    out
}

/// The state of an eventfd, timerfd, signalfd or epoll instance from its fdinfo
/// (fs/eventfd.c, fs/timerfd.c, fs/signalfd.c, fs/eventpoll.c `*_show_fdinfo`); `None`
/// for other anonymous inodes.
fn anon_inode(
    pid: i32,
    fd: i32,
    kind: &str,
    fields: &[(String, String)],
) -> Option<Result<FileKind, CheckpointError>> {
    let bad = |what: &str| {
        Err(CheckpointError::UnsupportedFd {
            pid,
            fd,
            what: format!("an {kind} whose fdinfo has no readable {what}"),
        })
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    // `(123, 456)` as printed for it_value and it_interval.
    let pair = |v: &str| -> Option<(i64, i64)> {
        let (a, b) = v.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    Some(match kind {
        "[eventfd]" => match get("eventfd-count").and_then(|v| u64::from_str_radix(v, 16).ok()) {
            Some(count) => Ok(FileKind::EventFd {
                count,
                semaphore: get("eventfd-semaphore") == Some("1"),
            }),
            None => bad("eventfd-count"),
        },
        "[timerfd]" => {
            let clock = get("clockid").and_then(|v| v.parse().ok());
            let ticks = get("ticks").and_then(|v| v.parse().ok());
            let value = get("it_value").and_then(pair);
            let interval = get("it_interval").and_then(pair);
            match (clock, ticks, value, interval) {
                (Some(clock), Some(ticks), Some(value), Some(interval)) => Ok(FileKind::TimerFd {
                    clock,
                    ticks,
                    // An expired periodic timer shows 0 left until it is read: it is
                    // still armed, its next expiry at most one period away.
                    value: if value == (0, 0) { interval } else { value },
                    interval,
                }),
                _ => bad("timer settings"),
            }
        }
        "[signalfd]" => match get("sigmask").and_then(|v| u64::from_str_radix(v, 16).ok()) {
            Some(mask) => Ok(FileKind::SignalFd { mask }),
            None => bad("sigmask"),
        },
        "inotify" => inotify_watches(pid, fields).map(|watches| FileKind::Inotify { watches }),
        "[eventpoll]" => {
            let mut watches = Vec::new();
            for (k, v) in fields {
                if k != "tfd" {
                    continue;
                }
                // "   5 events:       19 data:                5  pos:0 ino:.. sdev:.."
                let words: Vec<&str> = v.split_whitespace().collect();
                let after = |key: &str| {
                    words
                        .iter()
                        .position(|w| *w == key)
                        .and_then(|i| words.get(i + 1))
                };
                let watch = (|| {
                    Some(EpollWatch {
                        fd: words.first()?.parse().ok()?,
                        events: u32::from_str_radix(after("events:")?, 16).ok()?,
                        data: u64::from_str_radix(after("data:")?, 16).ok()?,
                    })
                })();
                match watch {
                    Some(w) => watches.push(w),
                    None => return Some(bad("interest list")),
                }
            }
            Ok(FileKind::Epoll { watches })
        }
        _ => return None,
    })
}

/// `/proc/PID/pagemap` bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Pages to read, as runs, per readable-or-not region.
struct PagePlan {
    /// `(run, readable)`: readable regions are read with process_vm_readv, the others
    /// through /proc/PID/mem (which may read PROT_NONE memory).
    runs: Vec<(PageRun, bool)>,
    total_pages: u64,
}

fn plan_pages(
    pid: i32,
    regions: &[Region],
    maps: &[MapEntry],
) -> Result<PagePlan, CheckpointError> {
    let path = procfs::path(pid, "pagemap");
    let pagemap = File::open(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let mut runs: Vec<(PageRun, bool)> = Vec::new();
    let mut total_pages = 0;
    let mut entries = vec![0u8; 8 * 65536];
    for r in regions {
        // Which pages hold state of the process's own: all of private anonymous memory,
        // the copied-on-write pages of private file mappings, shared anonymous memory.
        let want: fn(u64) -> bool = match (&r.kind, r.shared) {
            (RegionKind::Anon | RegionKind::Heap | RegionKind::Stack, false) => {
                |e| e & (PM_PRESENT | PM_SWAP) != 0
            }
            (RegionKind::File { .. }, false) => {
                |e| (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0
            }
            // Shared memory: every page, present in this process's page table or not (a
            // page another process wrote, or that this process has not touched since the
            // object was filled through write(2), as sem_open(3) does, is in the object
            // but not in our page table). Reading it faults it in; zero pages are dropped
            // by the copy.
            (RegionKind::SharedAnon, _) | (RegionKind::Anon, true) => |_| true,
            _ => continue,
        };
        debug_assert!(maps.iter().any(|m| m.start == r.start));
        let readable = r.prot & libc::PROT_READ as u32 != 0;
        let npages = r.len() / PAGE_SIZE;
        let mut done = 0;
        while done < npages {
            let n = (npages - done).min(65536);
            let buf = &mut entries[..(n * 8) as usize];
            let off = (r.start / PAGE_SIZE + done) * 8;
            pagemap
                .read_exact_at(buf, off)
                .map_err(|source| ProcError::Read {
                    path: path.clone(),
                    source,
                })?;
            for (i, e) in buf.chunks_exact(8).enumerate() {
                let e = u64::from_ne_bytes(e.try_into().unwrap_or_default());
                if !want(e) {
                    continue;
                }
                let addr = r.start + (done + i as u64) * PAGE_SIZE;
                total_pages += 1;
                match runs.last_mut() {
                    Some((last, rd))
                        if *rd == readable && last.addr + last.pages * PAGE_SIZE == addr =>
                    {
                        last.pages += 1
                    }
                    _ => runs.push((PageRun { addr, pages: 1 }, readable)),
                }
            }
            done += n;
        }
    }
    Ok(PagePlan { runs, total_pages })
}

/// Bytes read from the process per batch.
const BATCH: usize = 8 << 20;
/// Most remote iovecs per process_vm_readv (IOV_MAX).
const MAX_IOV: usize = 1024;

/// Read the planned pages, drop zero pages, stream the rest; return the saved runs.
fn copy_pages(
    pid: i32,
    plan: &PagePlan,
    out: &mut dyn Write,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<PageRun>, u64), CheckpointError> {
    let mem_path = procfs::path(pid, "mem");
    let mem = File::open(&mem_path).map_err(|source| ProcError::Read {
        path: mem_path,
        source,
    })?;
    let mut buf = vec![0u8; BATCH];
    let mut saved: Vec<PageRun> = Vec::new();
    let mut saved_pages = 0;
    let total = plan.total_pages * PAGE_SIZE;
    let mut done = 0u64;
    let mut queue = plan.runs.iter().copied().peekable();
    let mut carry: Option<(PageRun, bool)> = None;
    loop {
        // Fill one batch with up to BATCH bytes from consecutive runs.
        let mut batch: Vec<(u64, usize)> = Vec::new();
        let mut filled = 0;
        let mut readable_batch = true;
        while filled < BATCH && batch.len() < MAX_IOV {
            let Some((run, readable)) = carry.take().or_else(|| queue.next()) else {
                break;
            };
            if !batch.is_empty() && readable != readable_batch {
                carry = Some((run, readable));
                break;
            }
            readable_batch = readable;
            let room = ((BATCH - filled) as u64 / PAGE_SIZE).min(run.pages);
            batch.push((run.addr, (room * PAGE_SIZE) as usize));
            filled += (room * PAGE_SIZE) as usize;
            if room < run.pages {
                carry = Some((
                    PageRun {
                        addr: run.addr + room * PAGE_SIZE,
                        pages: run.pages - room,
                    },
                    readable,
                ));
            }
        }
        if batch.is_empty() {
            break;
        }
        read_batch(pid, &mem, &batch, &mut buf[..filled], readable_batch)?;
        let mut off = 0;
        for &(addr, len) in &batch {
            for page in 0..len / PAGE_SIZE as usize {
                let bytes =
                    &buf[off + page * PAGE_SIZE as usize..off + (page + 1) * PAGE_SIZE as usize];
                if is_zero(bytes) {
                    continue;
                }
                out.write_all(bytes)
                    .map_err(|source| CheckpointError::WritePages {
                        path: path.to_owned(),
                        source,
                    })?;
                let a = addr + page as u64 * PAGE_SIZE;
                saved_pages += 1;
                match saved.last_mut() {
                    Some(last) if last.addr + last.pages * PAGE_SIZE == a => last.pages += 1,
                    _ => saved.push(PageRun { addr: a, pages: 1 }),
                }
            }
            off += len;
        }
        done += filled as u64;
        progress(Progress { done, total });
    }
    Ok((saved, saved_pages))
}

fn read_batch(
    pid: i32,
    mem: &File,
    batch: &[(u64, usize)],
    buf: &mut [u8],
    readable: bool,
) -> Result<(), CheckpointError> {
    if readable {
        let remote: Vec<RemoteIoVec> = batch
            .iter()
            .map(|&(base, len)| RemoteIoVec {
                base: base as usize,
                len,
            })
            .collect();
        let want = buf.len();
        if let Ok(n) = process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(buf)], &remote)
            && n == want
        {
            return Ok(());
        }
    }
    // Fallback, and the only way for PROT_NONE memory: /proc/PID/mem reads with FOLL_FORCE.
    let mut off = 0;
    for &(addr, len) in batch {
        mem.read_exact_at(&mut buf[off..off + len], addr)
            .map_err(|source| CheckpointError::ReadMemory { pid, addr, source })?;
        off += len;
    }
    Ok(())
}

/// Whether a page is all zeros (compared 16 bytes at a time; the compiler vectorises it).
fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages() {
        let mut page = vec![0u8; 4096];
        assert!(is_zero(&page));
        page[4095] = 1;
        assert!(!is_zero(&page));
    }
}
