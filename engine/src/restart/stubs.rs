//! The stubs of a restart: forking the planned tree (clone3 with `set_tid`), waiting
//! until every stub reports ready on the report pipe, seizing them, and the guard that
//! kills them all if the restart fails.

use super::{RestartError, sys_err};
use crate::model::*;
use crate::procfs;
use crate::ptrace::{self, Stopped};
use crate::sys::{self, process::StubPlan, process::StubSession};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Kills every stub created so far unless disarmed: a failed restart leaves nothing.
#[derive(Debug)]
pub(crate) struct StubGuard {
    pids: Vec<Pid>,
    armed: bool,
}

impl StubGuard {
    /// The first top-level stub: the root of the image (or the namespace's init).
    pub(crate) fn root(&self) -> Pid {
        self.pids[0]
    }

    /// Guard these processes or threads too.
    pub(crate) fn add(&mut self, pids: impl IntoIterator<Item = Pid>) {
        self.pids.extend(pids);
    }

    /// The restart succeeded: let them live.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Kill every guarded process and thread and reap them (`restart --kill`, or a failed
    /// restart), within [`REAP_DEADLINE`]. Each is reaped when it is ready, in whatever
    /// order: a traced thread-group leader is reported only once its other threads have
    /// been reaped, so waiting for the leader first would never end.
    pub(crate) fn kill_all(&mut self) -> Result<(), RestartError> {
        self.armed = false;
        // With every thread of theirs: a thread an injected clone3 made is traced by us
        // from its first instruction, even if the restart failed before it was recorded.
        let mut left: Vec<Pid> = self
            .pids
            .iter()
            .flat_map(|&pid| {
                let tasks = procfs::numbered(pid.as_raw(), "task").unwrap_or_default();
                std::iter::once(pid).chain(tasks.into_iter().map(Pid::from_raw))
            })
            .collect();
        left.sort_unstable();
        left.dedup();
        for &pid in &left {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + REAP_DEADLINE;
        loop {
            left.retain(|&pid| !reaped(pid));
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let list: Vec<String> = left.iter().map(ToString::to_string).collect();
                return Err(RestartError::Timeout {
                    what: format!(
                        "the killed restart processes and threads {} to exit",
                        list.join(" ")
                    ),
                    secs: REAP_DEADLINE.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for StubGuard {
    fn drop(&mut self) {
        if self.armed {
            // An error is already on its way. Whatever is not reaped by the deadline has
            // been sent SIGKILL; its parent (or init, once we exit) reaps it.
            let _ = self.kill_all();
        }
    }
}

/// How long killed stubs and threads may take to be reaped.
const REAP_DEADLINE: Duration = Duration::from_secs(10);

/// How long every stub may take to report ready.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Whether `pid`, killed, is gone: reaped now, or not ours to reap (another stub's child
/// that we do not trace yet, or reaped already).
fn reaped(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => true,
        // Not exited yet, or a stop reported on its way out.
        Ok(_) | Err(Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Fork the top-level stubs of `plans` (each forks its own children); `want` is the PID
/// the root should get, for the error when it cannot.
pub(crate) fn spawn(
    plans: &[StubPlan],
    want: i32,
    restore_pid: bool,
) -> Result<StubGuard, RestartError> {
    let mut guard = StubGuard {
        pids: Vec::new(),
        armed: true,
    };
    for top in plans {
        let pid = match sys::process::spawn_stub(top) {
            Ok(pid) => pid,
            Err(e) => {
                return Err(spawn_error(e, top.set_tid.unwrap_or(want), restore_pid));
            }
        };
        guard.pids.push(pid);
        // As a shell does: set the group from the parent too, so that the next member
        // joining it never races the leader's own setpgid.
        match top.session {
            StubSession::GroupLeader => {
                let _ = nix::unistd::setpgid(pid, pid);
            }
            StubSession::Join(g) => {
                let _ = nix::unistd::setpgid(pid, Pid::from_raw(g));
            }
            _ => {}
        }
    }
    Ok(guard)
}

/// Seize every stub while it waits in `pause()`, with all signals blocked until its
/// registers are restored.
pub(crate) fn seize(pids: &[Pid]) -> Result<Vec<Stopped>, RestartError> {
    let mut out = Vec::with_capacity(pids.len());
    for &pid in pids {
        let stub = ptrace::seize_stopped(pid)?;
        stub.set_sigmask(u64::MAX)?;
        out.push(stub);
    }
    Ok(out)
}

/// A process killed by `checkpoint --kill` lingers as a zombie until its parent reaps
/// it; an init that reaps lazily can hold the PID for a moment. Wait up to two seconds
/// for such a zombie to go before trying to take its PID (if it is still there, creating
/// the PID fails naming the zombie and its parent).
pub(crate) fn wait_for_zombie_reaped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while procfs::stat(pid).is_ok_and(|s| s.state == 'Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The error for a root stub that could not be created.
fn spawn_error(e: Errno, pid: i32, restore_pid: bool) -> RestartError {
    match e {
        Errno::EEXIST => pid_in_use(pid),
        source @ (Errno::EPERM | Errno::EINVAL) if restore_pid => {
            RestartError::SetTid { pid, source }
        }
        source => RestartError::Spawn { source },
    }
}

pub(crate) fn pid_in_use(pid: i32) -> RestartError {
    let holder = procfs::stat(pid)
        .map(|s| match s.state {
            'Z' => format!(
                " (by a zombie `{}` that its parent, PID {}, has not reaped yet)",
                s.comm, s.ppid
            ),
            _ => format!(" (by `{}`)", s.comm),
        })
        .unwrap_or_default();
    RestartError::PidInUse { pid, holder }
}

/// Wait until every stub reported ready; returns their PIDs in image order.
pub(crate) fn wait_ready(
    root: Pid,
    report: &OwnedFd,
    imgs: &[&Image],
    zombies: usize,
    restore_pid: bool,
    in_namespace: bool,
    guard: &mut StubGuard,
) -> Result<Vec<Pid>, RestartError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use sys::process::stub_step as s;
    let deadline = Instant::now() + READY_DEADLINE;
    let mut ready: Vec<i32> = Vec::new();
    let mut buf = Vec::new();
    let expected = imgs.len() + zombies;
    while ready.len() < expected {
        if Instant::now() > deadline {
            return Err(RestartError::Timeout {
                what: format!(
                    "the restart processes to report ready ({} of {expected} did)",
                    ready.len()
                ),
                secs: READY_DEADLINE.as_secs(),
            });
        }
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let mut chunk = [0u8; 4096];
        match nix::unistd::read(report, &mut chunk) {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(sys_err("reading the stubs' reports")(e)),
        }
        let whole = buf.len() / 12 * 12;
        let reports = sys::process::parse_reports(&buf[..whole]);
        buf.drain(..whole);
        for (pid, step, errno) in reports {
            let source = Errno::from_raw(errno);
            let step = match step {
                s::READY => {
                    ready.push(pid);
                    // Inside a namespace the PID is the inner one; killing the init
                    // (already guarded) kills them all.
                    if !in_namespace {
                        guard.pids.push(Pid::from_raw(pid));
                    }
                    continue;
                }
                s::CHILD if source == Errno::EEXIST => return Err(pid_in_use(pid)),
                s::CHILD if restore_pid && matches!(source, Errno::EPERM | Errno::EINVAL) => {
                    return Err(RestartError::SetTid { pid, source });
                }
                s::CHILD => "create a child process",
                s::DUP => "set up its descriptors",
                s::CHDIR => {
                    // The image's process (a single one has another PID without
                    // --restore-pid).
                    let img = imgs
                        .iter()
                        .find(|i| i.process.pid == pid)
                        .or_else(|| imgs.first().filter(|_| imgs.len() == 1));
                    match img {
                        Some(img) => {
                            return Err(RestartError::Cwd {
                                pid: img.process.pid,
                                path: img.process.cwd.clone(),
                                source,
                            });
                        }
                        None => "enter its working directory",
                    }
                }
                s::PERSONALITY => "set its personality",
                s::SESSION => "join its session and process group",
                _ => "start",
            };
            return Err(RestartError::Stub { step, source });
        }
        // A root that died without a report (killed from outside) ends the wait.
        if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(root, Some(WaitPidFlag::WNOHANG))
        {
            guard.armed = false;
            return Err(RestartError::Stub {
                step: "start",
                source: Errno::ECHILD,
            });
        }
    }
    // With restored PIDs each process has its image's PID; otherwise there is one.
    if in_namespace {
        outer_pids(root, imgs)
    } else if restore_pid {
        Ok(imgs.iter().map(|i| Pid::from_raw(i.process.pid)).collect())
    } else {
        Ok(vec![root])
    }
}

/// The host PIDs of the processes of `imgs`, restored with their PIDs inside the PID
/// namespace whose init is `init`: each descendant's `NSpid` line ends with its PID in
/// the namespace.
fn outer_pids(init: Pid, imgs: &[&Image]) -> Result<Vec<Pid>, RestartError> {
    let mut inner_to_outer: Vec<(i32, i32)> = Vec::new();
    let mut frontier = vec![init.as_raw()];
    let all: Vec<(i32, i32)> = procfs::pids()
        .into_iter()
        .filter_map(|p| procfs::stat(p).ok().map(|s| (p, s.ppid)))
        .collect();
    while let Some(parent) = frontier.pop() {
        for &(p, ppid) in &all {
            if ppid != parent {
                continue;
            }
            frontier.push(p);
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            if let Some(inner) = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
            {
                inner_to_outer.push((inner, p));
            }
        }
    }
    imgs.iter()
        .map(|img| {
            inner_to_outer
                .iter()
                .find(|(inner, _)| *inner == img.process.pid)
                .map(|(_, outer)| Pid::from_raw(*outer))
                .ok_or_else(|| RestartError::Tree {
                    what: format!(
                        "process {} did not appear in the new PID namespace",
                        img.process.pid
                    ),
                })
        })
        .collect()
}
