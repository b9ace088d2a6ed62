//! Readers of `/proc/PID/*` text. Kernel text is parsed defensively: a malformed field is
//! a typed error naming the file, never a panic.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Failure to read or understand a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file did not have the expected shape.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

impl ProcError {
    /// Whether the process (or the descriptor) disappeared.
    pub fn is_gone(&self) -> bool {
        matches!(self, ProcError::Read { source, .. } if source.raw_os_error() == Some(libc::ESRCH) || source.kind() == io::ErrorKind::NotFound)
    }
}

/// Path of `/proc/PID/<name>`.
pub fn path(pid: i32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

fn read(path: &Path) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ProcError> {
    fs::read(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_err(path: &Path, what: impl Into<String>) -> ProcError {
    ProcError::Parse {
        path: path.to_owned(),
        what: what.into(),
    }
}

fn hex(path: &Path, s: &str) -> Result<u64, ProcError> {
    u64::from_str_radix(s, 16).map_err(|_| parse_err(path, format!("`{s}` is not a hex number")))
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwx` as `PROT_*` bits.
    pub prot: u32,
    /// `s` (shared) rather than `p`.
    pub shared: bool,
    /// File offset.
    pub offset: u64,
    /// Device as `major:minor` → `makedev`.
    pub dev: u64,
    /// Inode (0 for anonymous).
    pub ino: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`), if any.
    pub name: Option<String>,
    /// Two-letter `VmFlags` from smaps, when read.
    pub vmflags: Vec<String>,
}

impl MapEntry {
    /// The mapped file is gone from its path (`... (deleted)`).
    pub fn deleted(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.ends_with(" (deleted)"))
    }
}

fn parse_map_line(path: &Path, line: &str) -> Result<MapEntry, ProcError> {
    // 7f..-7f.. r-xp 00000000 fd:00 1234    /usr/lib/x.so
    let mut it = line.splitn(6, ' ');
    let mut next = |what: &str| {
        it.next()
            .ok_or_else(|| parse_err(path, format!("line `{line}` lacks {what}")))
    };
    let range = next("the address range")?;
    let perms = next("the permissions")?.as_bytes().to_vec();
    let offset = next("the offset")?;
    let dev = next("the device")?;
    let ino = next("the inode")?;
    let name = it
        .next()
        .map(str::trim_start)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| parse_err(path, format!("bad range in `{line}`")))?;
    if perms.len() != 4 {
        return Err(parse_err(path, format!("bad permissions in `{line}`")));
    }
    let mut prot = 0;
    if perms[0] == b'r' {
        prot |= libc::PROT_READ as u32;
    }
    if perms[1] == b'w' {
        prot |= libc::PROT_WRITE as u32;
    }
    if perms[2] == b'x' {
        prot |= libc::PROT_EXEC as u32;
    }
    let (major, minor) = dev
        .split_once(':')
        .ok_or_else(|| parse_err(path, format!("bad device in `{line}`")))?;
    let (major, minor) = (hex(path, major)?, hex(path, minor)?);
    Ok(MapEntry {
        start: hex(path, start)?,
        end: hex(path, end)?,
        prot,
        shared: perms[3] == b's',
        offset: hex(path, offset)?,
        dev: libc::makedev(major as u32, minor as u32),
        ino: ino
            .parse()
            .map_err(|_| parse_err(path, format!("bad inode in `{line}`")))?,
        name,
        vmflags: Vec::new(),
    })
}

/// `/proc/PID/smaps`: every mapping with its `VmFlags`.
pub fn maps(pid: i32) -> Result<Vec<MapEntry>, ProcError> {
    let path = path(pid, "smaps");
    let text = read(&path)?;
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let last = out
                .last_mut()
                .ok_or_else(|| parse_err(&path, "VmFlags before any mapping"))?;
            last.vmflags = flags.split_whitespace().map(str::to_owned).collect();
        } else if line
            .split_once(' ')
            .is_some_and(|(first, _)| first.contains('-') && !first.ends_with(':'))
        {
            out.push(parse_map_line(&path, line)?);
        }
    }
    Ok(out)
}

/// Fields of `/proc/PID/stat` the engine needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// `comm` between the parentheses.
    pub comm: String,
    /// State letter (R, S, D, T, t, Z ...).
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// Kernel flags word (field 9; `PF_*` in include/linux/sched.h).
    pub flags: u64,
    /// Fields 26.. that describe the address space.
    pub start_code: u64,
    /// See `MmLayout`.
    pub end_code: u64,
    /// See `MmLayout`.
    pub start_stack: u64,
    /// See `MmLayout`.
    pub start_data: u64,
    /// See `MmLayout`.
    pub end_data: u64,
    /// See `MmLayout`.
    pub start_brk: u64,
    /// See `MmLayout`.
    pub arg_start: u64,
    /// See `MmLayout`.
    pub arg_end: u64,
    /// See `MmLayout`.
    pub env_start: u64,
    /// See `MmLayout`.
    pub env_end: u64,
    /// Exit status as waitpid(2) reports it (field 52; meaningful for zombies).
    pub exit_code: i32,
}

impl Stat {
    /// A zombie (`Z`), or dead and about to vanish (`X`).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }

    /// Exiting: `PF_EXITING` (0x4 in include/linux/sched.h) is set, which do_exit()
    /// does before it releases the address space and long before the task is a zombie.
    pub fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.flags & PF_EXITING != 0
    }
}

/// `/proc/PID/stat` (or `/proc/PID/task/TID/stat`).
pub fn stat_at(path: &Path) -> Result<Stat, ProcError> {
    let text = read(path)?;
    let open = text.find('(').ok_or_else(|| parse_err(path, "no `(`"))?;
    let close = text.rfind(')').ok_or_else(|| parse_err(path, "no `)`"))?;
    let comm = text.get(open + 1..close).unwrap_or_default().to_owned();
    let rest: Vec<&str> = text
        .get(close + 1..)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // Field N of proc_pid_stat(5) is rest[N - 3].
    let field = |n: usize| -> Result<&str, ProcError> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| parse_err(path, format!("missing field {n}")))
    };
    let num = |n: usize| -> Result<u64, ProcError> {
        field(n)?
            .parse::<u64>()
            .map_err(|_| parse_err(path, format!("field {n} is not a number")))
    };
    let int = |n: usize| -> Result<i32, ProcError> {
        field(n)?
            .parse::<i32>()
            .map_err(|_| parse_err(path, format!("field {n} is not a number")))
    };
    Ok(Stat {
        comm,
        state: field(3)?.chars().next().unwrap_or('?'),
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        flags: num(9)?,
        start_code: num(26)?,
        end_code: num(27)?,
        start_stack: num(28)?,
        start_data: num(45)?,
        end_data: num(46)?,
        start_brk: num(47)?,
        arg_start: num(48)?,
        arg_end: num(49)?,
        env_start: num(50)?,
        env_end: num(51)?,
        exit_code: int(52).unwrap_or(0),
    })
}

/// `/proc/PID/stat`.
pub fn stat(pid: i32) -> Result<Stat, ProcError> {
    stat_at(&path(pid, "stat"))
}

/// Fields of `/proc/PID/status` the engine needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Real, effective, saved, filesystem UIDs.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem GIDs.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// File creation mask.
    pub umask: u32,
    /// Thread count.
    pub threads: u32,
    /// Blocked signals of this thread.
    pub sig_blk: u64,
    /// Whether the task is a kernel thread (`Kthread: 1`).
    pub kthread: bool,
}

/// `/proc/PID/status`.
pub fn status(pid: i32) -> Result<Status, ProcError> {
    let path = path(pid, "status");
    let text = read(&path)?;
    let mut st = Status::default();
    let ids = |v: &str| -> Result<[u32; 4], ProcError> {
        let parts: Vec<u32> = v
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| parse_err(&path, format!("bad ids `{v}`")))?;
        parts
            .try_into()
            .map_err(|_| parse_err(&path, format!("expected four ids in `{v}`")))
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => st.uid = ids(value)?,
            "Gid" => st.gid = ids(value)?,
            "Groups" => {
                st.groups = value
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| parse_err(&path, "bad Groups"))?;
            }
            "Umask" => {
                st.umask =
                    u32::from_str_radix(value, 8).map_err(|_| parse_err(&path, "bad Umask"))?
            }
            "Threads" => st.threads = value.parse().map_err(|_| parse_err(&path, "bad Threads"))?,
            "SigBlk" => st.sig_blk = hex(&path, value)?,
            "Kthread" => st.kthread = value == "1",
            _ => {}
        }
    }
    Ok(st)
}

/// `/proc/PID/auxv` as 64-bit words.
pub fn auxv(pid: i32) -> Result<Vec<u64>, ProcError> {
    let bytes = read_bytes(&path(pid, "auxv"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// `/proc/PID/cmdline`, split at NULs and lossily decoded.
pub fn cmdline(pid: i32) -> Result<Vec<String>, ProcError> {
    let bytes = read_bytes(&path(pid, "cmdline"))?;
    Ok(bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `/proc/PID/personality`.
pub fn personality(pid: i32) -> Result<u32, ProcError> {
    let path = path(pid, "personality");
    let text = read(&path)?;
    u32::from_str_radix(text.trim(), 16).map_err(|_| parse_err(&path, "not a hex number"))
}

/// Target of a `/proc` symlink such as `exe`, `cwd` or `fd/N`.
pub fn link(pid: i32, name: &str) -> Result<String, ProcError> {
    let path = path(pid, name);
    let target = fs::read_link(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    target
        .into_os_string()
        .into_string()
        .map_err(|_| parse_err(&path, "target is not UTF-8"))
}

/// Numeric entries of a `/proc` directory (`task`, `fd`), sorted.
/// The POSIX timers of a process from `/proc/PID/timers` (fs/proc/base.c `show_timer`):
/// ID, signal and `sigev_value`, notification and target, clock. Times are left zero.
pub fn timers(pid: i32) -> Result<Vec<crate::model::PosixTimer>, ProcError> {
    let p = path(pid, "timers");
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ProcError::Read { path: p, source }),
    };
    let bad = |what: &str| parse_err(&p, what);
    let mut out: Vec<crate::model::PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == "ID" {
            out.push(crate::model::PosixTimer {
                id: value.parse().map_err(|_| bad("bad timer ID"))?,
                clock: 0,
                notify: 0,
                signo: 0,
                tid: 0,
                sival: 0,
                value: (0, 0),
                interval: (0, 0),
            });
            continue;
        }
        let Some(t) = out.last_mut() else {
            continue;
        };
        match key {
            // "14/0000000000000000": signal / sigev_value
            "signal" => {
                let (sig, val) = value
                    .split_once('/')
                    .ok_or_else(|| bad("bad timer signal"))?;
                t.signo = sig.parse().map_err(|_| bad("bad timer signal"))?;
                t.sival = u64::from_str_radix(val, 16).map_err(|_| bad("bad timer value"))?;
            }
            // "signal/pid.1234", "signal/tid.1235", "none/pid.1234"
            "notify" => {
                let (how, target) = value.split_once('/').ok_or_else(|| bad("bad notify"))?;
                let (kind, id) = target.split_once('.').ok_or_else(|| bad("bad notify"))?;
                t.notify = match (how, kind) {
                    ("none", _) => libc::SIGEV_NONE,
                    (_, "tid") => libc::SIGEV_THREAD_ID,
                    _ => libc::SIGEV_SIGNAL,
                };
                if kind == "tid" {
                    t.tid = id.parse().map_err(|_| bad("bad notify thread"))?;
                }
            }
            "ClockID" => t.clock = value.parse().map_err(|_| bad("bad timer clock"))?,
            _ => {}
        }
    }
    Ok(out)
}

/// A mount point (as seen from `pid`'s root) of the filesystem on device `major:minor`,
/// from `/proc/PID/mountinfo`.
pub fn mount_point(pid: i32, major: u64, minor: u64) -> Option<std::path::PathBuf> {
    let text = fs::read_to_string(path(pid, "mountinfo")).ok()?;
    let dev = format!("{major}:{minor}");
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // id parent major:minor root mount-point ...
        (f.get(2) == Some(&dev.as_str()))
            .then(|| {
                f.get(4)
                    .map(|m| path(pid, "root").join(m.trim_start_matches('/')))
            })
            .flatten()
    })
}

/// Every PID in `/proc` now (processes come and go while it is read).
pub fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Numbered entries of `/proc/PID/DIR` (`task`, `fd`).
pub fn numbered(pid: i32, dir: &str) -> Result<Vec<i32>, ProcError> {
    let path = path(pid, dir);
    let entries = fs::read_dir(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let mut out: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Fields of `/proc/PID/fdinfo/N`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File offset.
    pub pos: i64,
    /// `O_*` flags including `O_CLOEXEC`.
    pub flags: u32,
    /// Every line as `(key, value)`, values trimmed, in order: the kind-specific ones
    /// (eventfd count, timerfd settings, one `tfd` per epoll watch, `lock` lines, ...).
    pub fields: Vec<(String, String)>,
}

/// `/proc/PID/fdinfo/N`.
pub fn fdinfo(pid: i32, fd: i32) -> Result<FdInfo, ProcError> {
    let path = path(pid, &format!("fdinfo/{fd}"));
    let text = read(&path)?;
    let mut info = FdInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        info.fields.push((key.trim().to_owned(), value.to_owned()));
        match key {
            "pos" => info.pos = value.parse().map_err(|_| parse_err(&path, "bad pos"))?,
            "flags" => {
                info.flags =
                    u32::from_str_radix(value, 8).map_err(|_| parse_err(&path, "bad flags"))?
            }
            _ => {}
        }
    }
    Ok(info)
}

/// `/proc/PID/limits` as `(soft, hard)` per `RLIMIT_*` number, in the kernel's row order
/// (fs/proc/base.c `lnames`); `unlimited` is `RLIM_INFINITY`. Readable wherever ptrace
/// is allowed, unlike prlimit(2), which needs CAP_SYS_RESOURCE for other users.
pub fn limits(pid: i32) -> Result<Vec<(u64, u64)>, ProcError> {
    let path = path(pid, "limits");
    let text = read(&path)?;
    let value = |s: &str| -> Result<u64, ProcError> {
        match s.trim() {
            "unlimited" => Ok(u64::MAX),
            v => v
                .parse()
                .map_err(|_| parse_err(&path, format!("bad limit `{v}`"))),
        }
    };
    // Columns: name (26 wide), soft (21), hard (21), units.
    text.lines()
        .skip(1)
        .map(|line| {
            let soft = line
                .get(26..47)
                .ok_or_else(|| parse_err(&path, format!("short line `{line}`")))?;
            let hard = line
                .get(47..68)
                .ok_or_else(|| parse_err(&path, format!("short line `{line}`")))?;
            Ok((value(soft)?, value(hard)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines() {
        let p = Path::new("maps");
        let e = parse_map_line(p, "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(
            (e.start, e.end, e.prot, e.shared, e.name.as_deref()),
            (0x7f00_0000_0000, 0x7f00_0002_1000, 3, false, None)
        );
        let e = parse_map_line(
            p,
            "55d0c0a00000-55d0c0a21000 r-xs 00001000 fd:01 131 /tmp/a file (deleted)",
        )
        .unwrap();
        assert_eq!(e.name.as_deref(), Some("/tmp/a file (deleted)"));
        assert!(e.deleted() && e.shared && e.offset == 0x1000 && e.ino == 131);
        assert!(parse_map_line(p, "garbage").is_err());
    }

    #[test]
    fn own_process() {
        let me = std::process::id() as i32;
        let st = stat(me).unwrap();
        assert!("RS".contains(st.state), "state {}", st.state);
        assert!(
            maps(me)
                .unwrap()
                .iter()
                .any(|m| m.name.as_deref() == Some("[stack]"))
        );
        assert!(!numbered(me, "task").unwrap().is_empty());
        let lim = limits(me).unwrap();
        assert_eq!(lim.len(), 16);
        let nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(lim[7], nofile);
    }
}
