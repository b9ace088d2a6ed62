//! A readable summary of a context file, for `lifeboat inspect`.

use crate::image::{self, ImageError, kind};
use crate::model::*;
use std::path::Path;

/// What an image holds.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Summary {
    /// Image file.
    pub path: String,
    /// Engine version that wrote it.
    pub engine_version: String,
    /// Kernel it was taken on.
    pub kernel: String,
    /// Host it was taken on.
    pub hostname: String,
    /// Seconds since the epoch.
    pub created_unix: u64,
    /// Time the processes were frozen, in microseconds (as the checkpoint reported it).
    pub frozen_us: u64,
    /// Process name (`comm`).
    pub command: String,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Executable.
    pub exe: String,
    /// Working directory.
    pub cwd: String,
    /// PID, parent, group, session.
    pub pid: i32,
    /// Parent PID.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Real UID.
    pub uid: u32,
    /// Real GID.
    pub gid: u32,
    /// Threads.
    pub threads: Vec<ThreadSummary>,
    /// Memory regions.
    pub regions: Vec<RegionSummary>,
    /// Descriptors.
    pub fds: Vec<FdSummary>,
    /// Signals with a non-default disposition.
    pub signal_handlers: Vec<HandlerSummary>,
    /// Signals pending for the whole process.
    pub pending_signals: Vec<i32>,
    /// Bytes of page data saved.
    pub memory_saved_bytes: u64,
    /// Sections and their checksum status.
    pub sections: Vec<SectionSummary>,
    /// Every section passes its checksum, and every compressed one decompresses.
    pub checksums_ok: bool,
}

/// One thread.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ThreadSummary {
    /// TID.
    pub tid: i32,
    /// Name.
    pub comm: String,
    /// Instruction pointer.
    pub rip: String,
    /// Blocked signals, as a hex mask.
    pub sigmask: String,
    /// Signals pending for this thread.
    pub pending: Vec<i32>,
    /// Bytes of XSAVE state.
    pub xstate_bytes: usize,
    /// Blocked signals, as the mask's bits (bit N-1 is signal N), for naming them.
    pub blocked: u64,
}

/// One region.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RegionSummary {
    /// Range.
    pub start: String,
    /// End.
    pub end: String,
    /// `rwxp`/`rwxs`.
    pub perms: String,
    /// Backing.
    pub kind: String,
    /// Size.
    pub bytes: u64,
    /// Bytes saved in the image.
    pub saved_bytes: u64,
    /// What backs it, as one word for grouping: `file`, `anonymous`, `heap`, `stack`,
    /// `shared_anonymous`, `vdso`, `vvar`, `vvar_vclock` or `vsyscall`.
    pub class: String,
}

/// One descriptor.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FdSummary {
    /// Number.
    pub fd: i32,
    /// What it refers to.
    pub kind: String,
    /// Path or description.
    pub target: String,
    /// Open flags (octal).
    pub flags: String,
    /// Offset.
    pub pos: i64,
    /// Close-on-exec.
    pub cloexec: bool,
    /// Bytes buffered (pipes) or saved (deleted files).
    pub saved_bytes: usize,
    /// Open flags as the number `flags` shows in octal, for naming them.
    pub open_flags: u32,
}

/// One signal disposition.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HandlerSummary {
    /// Signal number.
    pub sig: u32,
    /// `ignore` or `handler 0x...`.
    pub action: String,
    /// `SA_*` flags (hex).
    pub flags: String,
    /// `SA_*` flags as the number, for naming them.
    pub sa_flags: u64,
    /// Signals blocked while the handler runs (bit N-1 is signal N).
    pub mask: u64,
}

/// One section.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SectionSummary {
    /// Kind name.
    pub kind: String,
    /// Stored bytes.
    pub bytes: u64,
    /// `ok`, or the checksum or decompression error.
    pub checksum: String,
}

fn perms(r: &Region) -> String {
    let b = |bit: i32, c: char| if r.prot & bit as u32 != 0 { c } else { '-' };
    format!(
        "{}{}{}{}",
        b(libc::PROT_READ, 'r'),
        b(libc::PROT_WRITE, 'w'),
        b(libc::PROT_EXEC, 'x'),
        if r.shared { 's' } else { 'p' }
    )
}

/// Read and summarise an image. Every section's checksum is verified, and every
/// compressed section (PAGES, FILES) decompressed.
pub fn inspect(path: &Path) -> Result<Summary, ImageError> {
    let reader = image::Reader::open(path)?;
    let img = reader.image();
    let p = &img.process;
    let saved_in = |r: &Region| -> u64 {
        img.pagemap
            .iter()
            .map(|run| {
                (run.addr + run.pages * PAGE_SIZE)
                    .min(r.end)
                    .saturating_sub(run.addr.max(r.start))
            })
            .sum()
    };
    let sections: Vec<SectionSummary> = reader
        .verify()
        .into_iter()
        .map(|(k, bytes, r)| SectionSummary {
            kind: kind::name(k).to_owned(),
            bytes,
            checksum: r.map_or_else(|e| e.to_string(), |()| "ok".into()),
        })
        .collect();
    Ok(Summary {
        path: path.display().to_string(),
        engine_version: img.meta.engine_version.clone(),
        kernel: img.meta.kernel.clone(),
        hostname: img.meta.hostname.clone(),
        created_unix: img.meta.created_unix,
        frozen_us: img.meta.frozen_us,
        command: p.comm.clone(),
        cmdline: p.cmdline.clone(),
        exe: p.exe.clone(),
        cwd: p.cwd.clone(),
        pid: p.pid,
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        uid: p.creds.uid[0],
        gid: p.creds.gid[0],
        threads: img
            .threads
            .iter()
            .map(|t| ThreadSummary {
                tid: t.tid,
                comm: t.comm.clone(),
                rip: format!("{:#x}", t.regs.rip()),
                sigmask: format!("{:#x}", t.sigmask),
                pending: t.pending.iter().map(SigInfo::signo).collect(),
                xstate_bytes: t.xstate.len(),
                blocked: t.sigmask,
            })
            .collect(),
        regions: img
            .regions
            .iter()
            .map(|r| RegionSummary {
                start: format!("{:#x}", r.start),
                end: format!("{:#x}", r.end),
                perms: perms(r),
                kind: match &r.kind {
                    RegionKind::File { path, .. } => path.clone(),
                    RegionKind::Anon => "anonymous".into(),
                    RegionKind::Heap => "[heap]".into(),
                    RegionKind::Stack => "[stack]".into(),
                    RegionKind::SharedAnon => "shared anonymous".into(),
                    RegionKind::Vdso => "[vdso]".into(),
                    RegionKind::Vvar => "[vvar]".into(),
                    RegionKind::VvarVclock => "[vvar_vclock]".into(),
                    RegionKind::Vsyscall => "[vsyscall]".into(),
                },
                bytes: r.len(),
                saved_bytes: saved_in(r),
                class: match &r.kind {
                    RegionKind::File { .. } => "file",
                    RegionKind::Anon => "anonymous",
                    RegionKind::Heap => "heap",
                    RegionKind::Stack => "stack",
                    RegionKind::SharedAnon => "shared_anonymous",
                    RegionKind::Vdso => "vdso",
                    RegionKind::Vvar => "vvar",
                    RegionKind::VvarVclock => "vvar_vclock",
                    RegionKind::Vsyscall => "vsyscall",
                }
                .to_owned(),
            })
            .collect(),
        fds: img
            .fds
            .iter()
            .map(|fd| {
                let f = &img.files[fd.file as usize];
                let (kind, target, saved) = match &f.kind {
                    FileKind::Regular { path, content, .. } => {
                        ("file", path.clone(), content.as_ref().map_or(0, Vec::len))
                    }
                    FileKind::Directory { path } => ("directory", path.clone(), 0),
                    FileKind::Device { path, .. } => ("device", path.clone(), 0),
                    FileKind::Pipe {
                        ino,
                        read_end,
                        data,
                        ..
                    } => (
                        "pipe",
                        format!(
                            "pipe:[{ino}] {} end",
                            if *read_end { "read" } else { "write" }
                        ),
                        data.len(),
                    ),
                    FileKind::Fifo { path, data } => ("fifo", path.clone(), data.len()),
                    FileKind::EventFd { count, semaphore } => (
                        "eventfd",
                        format!(
                            "count {count}{}",
                            if *semaphore { ", semaphore" } else { "" }
                        ),
                        0,
                    ),
                    FileKind::TimerFd {
                        clock,
                        value,
                        interval,
                        ticks,
                    } => (
                        "timerfd",
                        format!(
                            "clock {clock}, next in {}.{:09} s, every {}.{:09} s, {ticks} unread",
                            value.0, value.1, interval.0, interval.1
                        ),
                        0,
                    ),
                    FileKind::UnixPair {
                        ino, peer, queued, ..
                    } => (
                        "unix",
                        format!("socket {ino} paired with {peer}"),
                        queued.iter().map(Vec::len).sum(),
                    ),
                    FileKind::TcpListen { addr, backlog } => {
                        ("tcp", format!("listening on {addr} (backlog {backlog})"), 0)
                    }
                    FileKind::Inotify { watches } => (
                        "inotify",
                        watches
                            .iter()
                            .map(|w| format!("{} {} ({:#x})", w.wd, w.path, w.mask))
                            .collect::<Vec<_>>()
                            .join(", "),
                        0,
                    ),
                    FileKind::TcpClosed { .. } => {
                        ("tcp", "connection (restored closed)".to_owned(), 0)
                    }
                    FileKind::Udp(u) => (
                        "udp",
                        format!(
                            "{}{}{}",
                            if u.local.port() == 0 {
                                "unbound".to_owned()
                            } else {
                                format!("bound to {}", u.local)
                            },
                            u.peer
                                .map(|p| format!(", connected to {p}"))
                                .unwrap_or_default(),
                            if u.queued.is_empty() {
                                String::new()
                            } else {
                                format!(", {} datagrams queued", u.queued.len())
                            }
                        ),
                        u.queued.iter().map(|(_, d)| d.len()).sum(),
                    ),
                    FileKind::TcpEstablished(c) => (
                        "tcp",
                        format!(
                            "connection {} -> {} (send queue {} B, {} unsent; receive queue {} B)",
                            c.local,
                            c.peer,
                            c.send_queue.len(),
                            c.unsent,
                            c.recv_queue.len()
                        ),
                        c.send_queue.len() + c.recv_queue.len(),
                    ),
                    FileKind::UnixSocket {
                        sock_type,
                        name,
                        listen,
                    } => (
                        "unix",
                        format!(
                            "{} socket{}{}",
                            match *sock_type {
                                libc::SOCK_DGRAM => "datagram",
                                libc::SOCK_SEQPACKET => "seqpacket",
                                _ => "stream",
                            },
                            name.as_ref().map_or(String::new(), |n| format!(
                                " bound to {}",
                                String::from_utf8_lossy(n).replace('\0', "@")
                            )),
                            listen.map_or(String::new(), |b| format!(", listening (backlog {b})")),
                        ),
                        0,
                    ),
                    FileKind::SignalFd { mask } => ("signalfd", format!("mask {mask:#x}"), 0),
                    FileKind::Epoll { watches } => (
                        "epoll",
                        format!(
                            "watching {}",
                            watches
                                .iter()
                                .map(|w| format!("{} ({:#x})", w.fd, w.events))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        0,
                    ),
                };
                FdSummary {
                    fd: fd.fd,
                    kind: kind.into(),
                    target,
                    flags: format!("{:o}", f.flags),
                    pos: f.pos,
                    cloexec: fd.cloexec,
                    saved_bytes: saved,
                    open_flags: f.flags,
                }
            })
            .collect(),
        signal_handlers: p
            .sigactions
            .iter()
            .filter(|a| a.handler != 0)
            .map(|a| HandlerSummary {
                sig: a.sig,
                action: if a.handler == 1 {
                    "ignore".into()
                } else {
                    format!("handler {:#x}", a.handler)
                },
                flags: format!("{:#x}", a.flags),
                sa_flags: a.flags,
                mask: a.mask,
            })
            .collect(),
        pending_signals: p.shared_pending.iter().map(SigInfo::signo).collect(),
        memory_saved_bytes: img.pagemap.iter().map(|r| r.pages * PAGE_SIZE).sum(),
        checksums_ok: sections.iter().all(|s| s.checksum == "ok"),
        sections,
    })
}
