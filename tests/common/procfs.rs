//! Probes of `/proc` the tests wait on and assert with: whether a PID exists and in what
//! state, its parent, group, children, threads, UID, the fields of its status, its
//! command and descriptors, the syscall it is blocked in and how much it has read; and
//! what its threads are doing, for failure messages.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::processes::TIMEOUT;

/// Syscall numbers (x86-64) seen as the first field of `/proc/PID/syscall`.
pub const SYS_READ: i64 = 0;
pub const SYS_NANOSLEEP: i64 = 35;
pub const SYS_CLOCK_NANOSLEEP: i64 = 230;
pub const SYS_PSELECT6: i64 = 270;

/// The fields of `/proc/PID/stat` after the command name: state, ppid, pgrp, session, ...
/// None if there is no such process.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The state letter from `/proc/PID/stat` (R, S, D, T, t, Z, ...), None if there is no such process.
pub fn proc_state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The parent PID from `/proc/PID/stat`, None if there is no such process.
pub fn ppid_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The process group from `/proc/PID/stat`, None if there is no such process.
pub fn pgid_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// Whether `/proc/PID/cmdline` or `exe` of `pid` mentions one of `tags`.
pub fn looks_like(pid: i32, tags: &[String]) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    tags.iter()
        .any(|t| cmdline.contains(t.as_str()) || exe.contains(t.as_str()))
}

/// The children of `pid` (forked by any of its threads, zombies included): every process
/// whose parent is `pid`, in PID order.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&p| ppid_of(p) == Some(pid))
        .collect();
    out.sort_unstable();
    out
}

/// The thread IDs of `pid`, in order (none if there is no such process).
pub fn tids_of(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// The value of the line `KEY:` of `/proc/PID/status` (a TID works too: that thread's),
/// its fields separated by one space; empty if there is no such line or process.
pub fn status_field(pid: i32, key: &str) -> String {
    let prefix = format!("{key}:");
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What each thread of `pid` is doing, a line per thread (TID, `/proc/TID/syscall`, blocked
/// and pending signals, state): for the message of a test that waited on it in vain.
pub fn describe_threads(pid: i32) -> String {
    let mut out = String::new();
    for tid in tids_of(pid) {
        let syscall = fs::read_to_string(format!("/proc/{tid}/syscall")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{tid}: syscall {}, SigBlk {}, SigPnd {}, State {}",
            syscall.trim(),
            status_field(tid, "SigBlk"),
            status_field(tid, "SigPnd"),
            status_field(tid, "State"),
        );
    }
    out
}

/// Whether `pid` runs the command `comm` (`/proc/PID/comm`) and has descriptor `fd` open:
/// a process started through a shell is ready once it has exec'd and holds its files.
pub fn runs_with_fd(pid: i32, comm: &str, fd: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        && Path::new(&format!("/proc/{pid}/fd/{fd}")).exists()
}

/// Number of threads of `pid`.
pub fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The real UID of `pid` (first field of `Uid:` in `/proc/PID/status`).
pub fn uid_of(pid: i32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no Uid line in /proc/{pid}/status"))
}

/// Bytes `pid` has read so far (`rchar` in `/proc/PID/io`).
pub fn rchar(pid: i32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/io: {e}"));
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io"))
}

/// Waits until the main thread of `pid` is blocked in one of `syscalls` (first field of `/proc/PID/syscall`).
pub fn wait_in_syscall(pid: i32, syscalls: &[i64], what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last =
            fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_else(|e| format!("<{e}>"));
        if let Some(nr) = last
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<i64>().ok())
        {
            if syscalls.contains(&nr) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) was never seen blocked in syscall {syscalls:?} within {TIMEOUT:?}; /proc/{pid}/syscall last said {:?}",
            last.trim()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// A PID that no process or thread uses right now.
pub fn unused_pid() -> i32 {
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (300..max)
        .rev()
        .find(|&p| !pid_exists(p))
        .expect("some PID is free")
}

/// Polls in the background whether a PID exists, to catch processes that live only for a moment.
#[derive(Debug)]
pub struct PidWatch {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<usize>,
}

impl PidWatch {
    /// Starts polling `/proc/PID` about every 100 µs.
    pub fn start(pid: i32) -> PidWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut seen = 0;
            while !flag.load(Ordering::Relaxed) {
                if pid_exists(pid) {
                    seen += 1;
                }
                thread::sleep(Duration::from_micros(100));
            }
            seen
        });
        PidWatch { stop, handle }
    }

    /// Stops polling; returns how many polls saw the PID.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("pid watcher panicked")
    }
}
