//! Restart: rebuild the processes of a context file.
//!
//! The order of the steps, and nothing else (each kind of state rebuilds itself in its
//! file under `state/`):
//! 1. Open and validate the image, verify every page checksum; decide credentials
//!    (`state::creds`, which says who may restart what): restored only when the caller is
//!    root, and from an image file owned by a user only that user's own IDs; the owner is
//!    the owner of the descriptor the image is read from.
//! 2. Prepare descriptors in the restarter, with the file-system identity of the caller,
//!    or of the owner of a user's image that root restarts (`creds::ActingAs`): one pipe,
//!    socket pair or memfd for what several processes share; every file opened only as
//!    the type of file it was, and its identity checked; mapped files; the executable;
//!    all lifted above every target number.
//! 3. [`plan`]: the stub tree, nested as the processes were (pure); [`stubs`]: fork it
//!    with clone3 `set_tid` (the original PIDs), each stub entering its working directory
//!    with the same file-system identity as step 2; wait until every stub reports ready,
//!    seize them.
//! 4. Per process, by injected system calls through the stub's `[vdso]`: address space
//!    (`memory`, `pages`), late opens, epoll interest lists, locks, mm layout,
//!    sigactions, threads, pending signals, timers, limits, credentials.
//! 5. Every thread's registers, XSAVE area and mask last; then all detach, children first.
//!
//! Until step 5 completes, a guard kills every stub on any error: a failed restart leaves
//! no half-built process behind (Architecture Invariant). Nothing waits without a
//! deadline: the stubs' reports, each stop of a stub or new thread, and the reaping of
//! killed stubs and threads (`restart --kill`, or a failure) end with an error naming
//! what did not come; no open in steps 2 and 3 can block (FIFOs are opened non-blocking,
//! other files only once they are known not to be FIFOs) and no pipe is refilled beyond
//! its capacity.

pub(crate) mod error;
pub(crate) mod plan;
pub(crate) mod stubs;

pub use error::RestartError;
pub(crate) use error::{inject, sys_err};

use crate::Progress;
use crate::image::{self};
use crate::model::*;
use crate::ptrace::{After, Injector, Remote, Stopped};
use crate::state::common::{FileType, OpenAsError, open_as};
use crate::state::{self, files::LateOpen, memory};
use crate::sys;
use crate::warning::Warning;
use nix::fcntl::OFlag;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// How to restart.
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Recreate the original PID and TIDs (clone3 `set_tid`).
    pub restore_pid: bool,
    /// What the restored process does: run, stay stopped, or be killed.
    pub after: After,
    /// Called with the root's PID once every process is rebuilt, just before any is let
    /// go: what must be said before the job can speak (a `--detach` restart's PID line on
    /// a stdout the job shares) is said here.
    pub before_release: Option<fn(Pid)>,
}

impl Default for RestartOptions {
    fn default() -> Self {
        RestartOptions {
            restore_pid: true,
            after: After::Run,
            before_release: None,
        }
    }
}

/// A restarted process.
#[derive(Debug)]
pub struct Restored {
    /// Its PID (a child of the caller); the root of the tree for an image of several.
    pub pid: Pid,
    /// Every restored process, the root first.
    pub pids: Vec<Pid>,
    /// Things that were restored differently than they were (a reattached stream, a
    /// changed file); each names the descriptor or path.
    pub warnings: Vec<Warning>,
}

/// Restart the processes saved in `path`: one process, or a whole tree (a process with
/// its descendants, a process group, a session), with their PIDs, parent links, groups
/// and sessions, and the pipes and shared memory between them. The root of the image
/// becomes a child of the caller.
pub fn restart(
    path: &Path,
    opts: &RestartOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Restored, RestartError> {
    let reader = image::Reader::open(path)?;
    reader.verify_pages()?;
    let imgs: Vec<&Image> = reader.images().collect();
    let mut warnings = Vec::new();
    let creds = state::creds::decide(reader.owner(), path, &imgs)?;
    // Processes remember each other's PIDs (a shell's job table, a parent's child list):
    // a job restarted without its PIDs on the host gets them back inside a new PID
    // namespace, beside whatever holds them outside.
    let in_namespace = imgs.len() > 1 && !opts.restore_pid;
    let set_pids = opts.restore_pid || in_namespace;

    // Everything is opened as the owner of a user's image that root restarts.
    let (prepared, cwd_as) = match &creds.act_as {
        Some(user) => {
            let acting = state::creds::ActingAs::new(user)?;
            let prepared = prepare(&imgs, true, &mut warnings)?;
            (prepared, Some((user, acting.back().clone())))
        }
        None => (prepare(&imgs, false, &mut warnings)?, None),
    };
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(sys_err("pipe2"))?;
    let report_w = lift(&report_w, prepared.first_free)?;
    let mut plans = plan::stub_plans(
        &imgs,
        reader.zombies(),
        set_pids,
        &prepared.moves_of,
        &prepared.keep_of,
        prepared.first_free,
        report_w.as_raw_fd(),
        &mut warnings,
    )?;
    if let Some((user, back)) = &cwd_as {
        plan::enter_cwd_as(&mut plans, user, back);
    }
    if opts.restore_pid {
        for img in &imgs {
            stubs::wait_for_zombie_reaped(img.process.pid);
        }
    }
    if in_namespace {
        plans = vec![plan::namespace_init(plans, prepared.first_free)?];
    }
    let report_fd = plans[0].report_fd;
    let mut guard = stubs::spawn(&plans, imgs[0].process.pid, opts.restore_pid)?;
    let root = guard.root();
    let Opened {
        holders,
        late_of,
        epolls_of,
        map_fds,
        shm_fds,
        exe_fds,
        keep_of,
        mut tcp,
        ..
    } = prepared;
    drop(holders);
    drop(report_w);
    let pids = stubs::wait_ready(
        root,
        &report_r,
        &imgs,
        reader.zombies().len(),
        set_pids,
        in_namespace,
        &mut guard,
    )?;
    let leaders = stubs::seize(&pids)?;
    // Traced by us, so ours to reap if the restart fails (inside a new PID namespace they
    // are not the children of the restarter).
    guard.add(pids.iter().copied());

    // Rebuild every process; none runs until all are rebuilt.
    let map_fd_of = |path: &str, writable: bool| {
        map_fds
            .iter()
            .find(|(p, w, _)| p == path && *w == writable)
            .map(|(_, _, fd)| fd.as_raw_fd())
    };
    let shm_fd_of = |ino: u64| {
        shm_fds
            .iter()
            .find(|(i, _)| *i == ino)
            .map(|(_, fd)| fd.as_raw_fd())
    };
    let mut all_threads: Vec<(Stopped, Vec<Stopped>)> = Vec::with_capacity(imgs.len());
    for (i, (img, leader)) in imgs.iter().zip(leaders).enumerate() {
        let pid = pids[i];
        let image_pid = img.process.pid;
        let mut r = Remote::new(pid, Injector::new(&leader, 0)?);
        memory::replace(&mut r, &leader, img, &map_fd_of, &shm_fd_of)?;
        state::pages::restore(&r, img, reader.pages_of(i)?, path, progress)?;
        memory::protect(&mut r, img)?;
        // What the stub kept for the restorer: mapped files, shared memory, the report
        // pipe (the same number in every stub) and the exe.
        let exe = exe_fds[i].as_ref().map(|f| f.as_raw_fd());
        let mut to_close: Vec<RawFd> = keep_of[i].clone();
        to_close.push(report_fd);
        for &fd in to_close.iter().filter(|&&fd| Some(fd) != exe) {
            inject(&mut r, "close", libc::SYS_close, &[fd as u64])?;
        }
        state::files::late_opens(&mut r, image_pid, &late_of[i])?;
        state::anon::restore_epoll_watches(&mut r, &epolls_of[i], &mut warnings)?;
        state::locks::restore(&mut r, &img.locks, &mut warnings)?;
        state::process::restore_mm(&mut r, &img.process.mm, exe, &mut warnings)?;
        if let Some(fd) = exe {
            inject(&mut r, "close", libc::SYS_close, &[fd as u64])?;
        }
        state::signals::restore_actions(&mut r, &img.process.sigactions)?;
        let threads = state::threads::create(&mut r, img, set_pids)?;
        guard.add(threads.iter().map(Stopped::tid));
        let tids: Vec<Pid> = std::iter::once(leader.tid())
            .chain(threads.iter().map(Stopped::tid))
            .collect();
        state::signals::restore_pending(&mut r, img, &tids)?;
        state::timers::restore(&mut r, &img.timers, &mut warnings)?;
        state::creds::restore_limits(pid, &img.process.rlimits, &mut warnings);
        let every: Vec<&Stopped> = std::iter::once(&leader).chain(&threads).collect();
        if creds.restore[i] {
            state::creds::restore(&mut r, &every, &img.process.creds)?;
        }
        let scratch = r.scratch();
        inject(
            &mut r,
            "munmap",
            libc::SYS_munmap,
            &[scratch, memory::SCRATCH],
        )?;
        state::threads::set_registers(img, &every)?;
        all_threads.push((leader, threads));
    }

    if opts.after == After::Kill {
        drop(all_threads);
        guard.kill_all()?;
        return Ok(Restored {
            pid: root,
            pids,
            warnings,
        });
    }
    if let Some(announce) = opts.before_release {
        announce(root);
    }
    // Every connection exists now, both ends of each: out of repair mode, before any
    // process runs.
    tcp.release(&mut warnings);
    // Children first, so no parent runs before its children exist as they were.
    for (i, (img, (leader, threads))) in imgs.iter().zip(all_threads).enumerate().rev() {
        if opts.after == After::Stop || img.process.stopped {
            signal::kill(pids[i], Signal::SIGSTOP).map_err(sys_err("kill"))?;
        }
        let stopped = opts.after == After::Stop || img.process.stopped;
        let every = std::iter::once(leader).chain(threads).zip(&img.threads);
        for (thread, t) in every {
            if stopped {
                thread.detach()?;
            } else {
                state::threads::release(thread, t, pids[i])?;
            }
        }
    }
    guard.disarm();
    Ok(Restored {
        pid: root,
        pids,
        warnings,
    })
}

/// Everything the restarter opens before it forks: per process the moves into place,
/// files to open late, epoll lists; mapped files, shared memory and exe descriptors.
struct Opened {
    holders: Vec<OwnedFd>,
    /// TCP connections made again, in repair mode until the processes run.
    tcp: state::sockets::Pending,
    moves_of: Vec<Vec<(RawFd, RawFd, bool)>>,
    late_of: Vec<Vec<LateOpen>>,
    epolls_of: Vec<Vec<(RawFd, Vec<EpollWatch>)>>,
    map_fds: Vec<(String, bool, OwnedFd)>,
    shm_fds: Vec<(u64, OwnedFd)>,
    exe_fds: Vec<Option<OwnedFd>>,
    keep_of: Vec<Vec<RawFd>>,
    first_free: RawFd,
}

/// Step 2: every descriptor of every process, opened with this thread's file-system
/// identity (see [`restart`]) and lifted above every target number (so the stubs can move
/// them into place without clobbering).
fn prepare(
    imgs: &[&Image],
    as_user: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Opened, RestartError> {
    // Pipes, socket pairs, TCP connections and shared memory that several processes of
    // the image hold: one each.
    let pipes = state::pipes::shared_pipes(imgs)?;
    let mut socks = state::sockets::socket_pairs(imgs)?;
    let (connections, tcp) =
        state::sockets::connections(imgs, as_user, warnings).map_err(sys_err("socket"))?;
    socks.extend(connections);
    let shm = memory::shared_memory(imgs)?;
    let deleted = state::files::deleted_files(imgs, &shm)?;
    let mut per_proc = Vec::with_capacity(imgs.len());
    let mut opened_by: Vec<(i32, Vec<Option<OwnedFd>>)> = Vec::with_capacity(imgs.len());
    for img in imgs {
        let (prepared, opened) =
            state::files::prepare_files(img, &pipes, &socks, &deleted, &opened_by, warnings)?;
        per_proc.push(prepared);
        opened_by.push((img.process.pid, opened));
    }
    // Every socket exists: the datagrams queued between them can go back.
    state::sockets::refill_datagrams(imgs, &opened_by, warnings);
    state::sockets::refill_unix_datagrams(imgs, &opened_by, warnings);
    drop(opened_by);
    drop(deleted);
    drop(socks);
    drop(pipes);
    let first_free = imgs
        .iter()
        .flat_map(|img| img.fds.iter().map(|f| f.fd))
        .max()
        .unwrap_or(2)
        .max(2)
        + 1;
    let mut holders: Vec<OwnedFd> = Vec::new();
    let mut moves_of = Vec::with_capacity(imgs.len());
    let mut late_of = Vec::with_capacity(imgs.len());
    let mut epolls_of = Vec::with_capacity(imgs.len());
    for (prepared, late, epolls) in per_proc {
        epolls_of.push(epolls);
        let mut moves = Vec::new();
        for p in &prepared {
            let high = lift(&p.fd, first_free)?;
            moves.push((high.as_raw_fd(), p.target, p.cloexec));
            holders.push(high);
        }
        moves_of.push(moves);
        late_of.push(late);
    }
    // Files for mappings, one descriptor per distinct (path, writable).
    let mut map_fds: Vec<(String, bool, OwnedFd)> = Vec::new();
    let lifted = |fd: &OwnedFd| lift(fd, first_free);
    for img in imgs {
        memory::open_mapped_files(img, &mut map_fds, &lifted, warnings)?;
    }
    let shm_fds: Vec<(u64, OwnedFd)> = shm
        .into_iter()
        .map(|(ino, fd)| Ok((ino, lift(&fd, first_free)?)))
        .collect::<Result<_, RestartError>>()?;
    let root = sys::process::geteuid() == 0;
    let exe_fds: Vec<Option<OwnedFd>> = imgs
        .iter()
        .map(|img| {
            if !root {
                return Ok(None);
            }
            let exe = &img.process.exe;
            match open_as(exe, OFlag::O_RDONLY | OFlag::O_CLOEXEC, FileType::Regular) {
                Ok(fd) => lift(&fd, first_free).map(Some),
                // An executable that cannot be opened is not set (as for a user).
                Err(OpenAsError::Open(_)) => Ok(None),
                Err(OpenAsError::Type(found)) => Err(RestartError::FileType {
                    pid: img.process.pid,
                    what: "the executable".into(),
                    path: exe.clone(),
                    found,
                    wanted: FileType::Regular.name(),
                }),
            }
        })
        .collect::<Result<_, _>>()?;
    // What each process keeps for the restorer: its mapped files, shared memory and exe.
    let keep_of: Vec<Vec<RawFd>> = imgs
        .iter()
        .zip(&exe_fds)
        .map(|(img, exe)| {
            let mut keep: Vec<RawFd> = img
                .regions
                .iter()
                .filter_map(|r| match &r.kind {
                    RegionKind::File { path, .. } => {
                        let w = memory::writable_shared(r);
                        map_fds
                            .iter()
                            .find(|(p, wr, _)| p == path && *wr == w)
                            .map(|(_, _, fd)| fd.as_raw_fd())
                    }
                    _ => None,
                })
                .chain(img.shared_anon.iter().filter_map(|id| {
                    shm_fds
                        .iter()
                        .find(|(ino, _)| *ino == id.ino)
                        .map(|(_, fd)| fd.as_raw_fd())
                }))
                .chain(exe.as_ref().map(|f| f.as_raw_fd()))
                .collect();
            keep.sort_unstable();
            keep.dedup();
            keep
        })
        .collect();
    Ok(Opened {
        holders,
        tcp,
        moves_of,
        late_of,
        epolls_of,
        map_fds,
        shm_fds,
        exe_fds,
        keep_of,
        first_free,
    })
}

/// A duplicate of `fd` at a number at least `first_free`, close-on-exec.
fn lift(fd: &OwnedFd, first_free: RawFd) -> Result<OwnedFd, RestartError> {
    sys::process::dup_above(fd.as_fd(), first_free).map_err(sys_err("F_DUPFD_CLOEXEC"))
}
