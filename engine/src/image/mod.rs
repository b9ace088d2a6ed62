//! The context file: one process image as a sequence of checksummed sections.
//!
//! The container ([`container`]) gives a versioned header, sections with their own xxh3
//! checksums and an END record, written to a temporary name, fsynced and renamed. This
//! module maps the [`model`](crate::model) onto sections, one per record type:
//!
//! | kind | section  | content |
//! |------|----------|---------|
//! | 0x01 | META     | engine version, kernel, host, time, frozen time |
//! | 0x02 | PROCESS  | ids, command, cwd, umask, personality, creds, rlimits, mm layout, auxv, sigactions, shared pending signals |
//! | 0x03 | THREAD   | one per thread, leader first: tid, name, registers, XSAVE area, mask, pending signals, rseq, robust list, clear_child_tid, sigaltstack |
//! | 0x04 | REGIONS  | every VMA: range, protection, shared, offset, backing (anon/heap/stack/shared anon/file by reference/vdso/vvar/vvar_vclock/vsyscall), advice |
//! | 0x05 | FILES    | open file descriptions: flags, offset, and what they refer to (file by reference, deleted file content, directory, device, pipe end with buffered bytes, FIFO, eventfd, timerfd, signalfd, epoll with its interest list) |
//! | 0x06 | FDS      | descriptor number → file description, close-on-exec |
//! | 0x08 | PAGES    | raw page data, streamed (optionally zstd) |
//! | 0x07 | PAGEMAP  | runs `(address, pages)` giving where each page of PAGES goes |
//! | 0x0D | ZOMBIES  | processes of the scope that had exited, unreaped: pid, parent, group, session (0 when its leader is outside the PID namespace), exit status (after META) |
//! | 0x80000009 | SHMEM | optional: the shmem inode behind each shared anonymous region, so processes that shared it share it again |
//! | 0x8000000A | SHARED_FILES | optional: open file descriptions shared with an earlier process of the image |
//! | 0x8000000B | LOCKS | optional: flock, POSIX and OFD locks the process holds |
//! | 0x8000000C | TIMERS | optional: interval timers (setitimer/alarm) and POSIX timers |
//!
//! An image of several processes (a process tree, a process group, a session) is a META
//! section followed by one group per process, each starting with its PROCESS section;
//! the first group is the root of the scope. A reader that predates trees reads the first
//! group only.
//!
//! Every record is little-endian via [`wire`]. Kinds with bit 31 set are optional: a reader
//! that does not know one skips it; an unknown kind without that bit means the image needs
//! a newer engine. Later record types (process trees, shared resources, sockets, timers)
//! add kinds; per-process sections always follow their own PROCESS section, so an image of
//! several processes is a concatenation of such groups.
//!
//! Decoding validates every field the restorer will act on (ranges, counts, signal numbers,
//! descriptor numbers, page runs inside restorable regions): a modified file gives a typed
//! error, never a panic and never a privilege the restarting user does not already have.

pub mod container;
pub mod wire;

use crate::model::*;
use container::{ContainerError, ImageReader, ImageWriter, SectionInfo};
use std::path::{Path, PathBuf};
use wire::{Dec, Enc, WireError};

/// Section kinds.
pub mod kind {
    /// Provenance.
    pub const META: u32 = 0x01;
    /// Process-wide state.
    pub const PROCESS: u32 = 0x02;
    /// One thread.
    pub const THREAD: u32 = 0x03;
    /// Memory regions.
    pub const REGIONS: u32 = 0x04;
    /// Open file descriptions.
    pub const FILES: u32 = 0x05;
    /// Descriptor table.
    pub const FDS: u32 = 0x06;
    /// Page runs.
    pub const PAGEMAP: u32 = 0x07;
    /// Page data.
    pub const PAGES: u32 = 0x08;
    /// Exited, unreaped processes of the scope.
    pub const ZOMBIES: u32 = 0x0D;
    /// Identity of shared anonymous regions (optional).
    pub const SHMEM: u32 = 0x8000_0009;
    /// Open file descriptions shared with earlier processes (optional).
    pub const SHARED_FILES: u32 = 0x8000_000A;
    /// File locks (optional).
    pub const LOCKS: u32 = 0x8000_000B;
    /// Timers (optional).
    pub const TIMERS: u32 = 0x8000_000C;
    /// Bit set on kinds a reader may skip when it does not know them.
    pub const OPTIONAL: u32 = 0x8000_0000;

    /// Human name of a kind.
    pub fn name(kind: u32) -> &'static str {
        match kind {
            META => "META",
            PROCESS => "PROCESS",
            THREAD => "THREAD",
            REGIONS => "REGIONS",
            FILES => "FILES",
            FDS => "FDS",
            PAGEMAP => "PAGEMAP",
            PAGES => "PAGES",
            SHMEM => "SHMEM",
            ZOMBIES => "ZOMBIES",
            SHARED_FILES => "SHARED_FILES",
            LOCKS => "LOCKS",
            TIMERS => "TIMERS",
            super::container::END_KIND => "END",
            _ => "unknown",
        }
    }
}

/// Highest user-space address on x86-64 with 5-level paging; anything above is invalid.
const USER_TOP: u64 = 1 << 56;
/// Largest metadata section read into memory (file contents of deleted files included).
const MAX_META_SECTION: u64 = 1 << 30;
/// Bounds on record counts, far above real processes, to stop tampered counts early.
const MAX_THREADS: usize = 1 << 16;
const MAX_REGIONS: u64 = 1 << 20;
const MAX_FDS: u64 = 1 << 20;
const MAX_FD_NUMBER: i32 = 1 << 20;

/// Failures reading or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The container (file, header, checksums) is unusable.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A record could not be decoded.
    #[error("{path}: {section} section is malformed: {source}")]
    Decode {
        /// Image file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// Cause.
        source: WireError,
    },
    /// A record decoded but holds a value the engine refuses.
    #[error("{path}: {section} section: {what}")]
    Invalid {
        /// Image file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A required section is missing.
    #[error("{path}: no {section} section (the image is incomplete)")]
    Missing {
        /// Image file.
        path: PathBuf,
        /// Section name.
        section: &'static str,
    },
    /// The image uses a section this engine does not know.
    #[error(
        "{path}: section kind {kind:#x} is not known to this lifeboat (the image needs a newer version)"
    )]
    UnknownSection {
        /// Image file.
        path: PathBuf,
        /// Kind.
        kind: u32,
    },
}

// ---------------------------------------------------------------------------------------
// Encoding

fn enc_process(p: &Process) -> Vec<u8> {
    let mut e = Enc::new();
    e.i32(p.pid);
    e.i32(p.ppid);
    e.i32(p.pgid);
    e.i32(p.sid);
    e.str(&p.comm);
    e.u64(p.cmdline.len() as u64);
    for a in &p.cmdline {
        e.str(a);
    }
    e.str(&p.exe);
    e.str(&p.cwd);
    e.u32(p.umask);
    e.u32(p.personality);
    for v in p.creds.uid.iter().chain(&p.creds.gid) {
        e.u32(*v);
    }
    e.u64(p.creds.groups.len() as u64);
    for g in &p.creds.groups {
        e.u32(*g);
    }
    e.u64(p.rlimits.len() as u64);
    for r in &p.rlimits {
        e.u32(r.resource);
        e.u64(r.soft);
        e.u64(r.hard);
    }
    let m = &p.mm;
    for v in [
        m.start_code,
        m.end_code,
        m.start_data,
        m.end_data,
        m.start_brk,
        m.brk,
        m.start_stack,
        m.arg_start,
        m.arg_end,
        m.env_start,
        m.env_end,
    ] {
        e.u64(v);
    }
    e.u64(m.auxv.len() as u64);
    for v in &m.auxv {
        e.u64(*v);
    }
    e.u64(p.sigactions.len() as u64);
    for a in &p.sigactions {
        e.u32(a.sig);
        e.u64(a.handler);
        e.u64(a.flags);
        e.u64(a.restorer);
        e.u64(a.mask);
    }
    enc_siginfos(&mut e, &p.shared_pending);
    e.bool(p.stopped);
    e.into_vec()
}

fn enc_siginfos(e: &mut Enc, list: &[SigInfo]) {
    e.u64(list.len() as u64);
    for s in list {
        e.bytes(&s.0);
    }
}

fn enc_thread(t: &Thread) -> Vec<u8> {
    let mut e = Enc::new();
    e.i32(t.tid);
    e.str(&t.comm);
    for v in t.regs.0 {
        e.u64(v);
    }
    e.bytes(&t.xstate);
    e.u64(t.sigmask);
    enc_siginfos(&mut e, &t.pending);
    e.bool(t.rseq.is_some());
    if let Some(r) = t.rseq {
        e.u64(r.ptr);
        e.u32(r.len);
        e.u32(r.sig);
    }
    e.u64(t.robust_list.0);
    e.u64(t.robust_list.1);
    e.u64(t.clear_child_tid);
    e.u64(t.altstack.sp);
    e.i32(t.altstack.flags);
    e.u64(t.altstack.size);
    e.into_vec()
}

fn enc_identity(e: &mut Enc, id: &FileIdentity) {
    e.u64(id.dev);
    e.u64(id.ino);
    e.u64(id.size);
    e.i64(id.mtime_ns);
    e.u32(id.mode);
}

fn enc_regions(regions: &[Region]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(regions.len() as u64);
    for r in regions {
        e.u64(r.start);
        e.u64(r.end);
        e.u32(r.prot);
        e.bool(r.shared);
        e.u64(r.offset);
        e.u32(r.advice);
        e.bool(r.growsdown);
        match &r.kind {
            RegionKind::Anon => e.u8(0),
            RegionKind::Heap => e.u8(1),
            RegionKind::Stack => e.u8(2),
            RegionKind::SharedAnon => e.u8(3),
            RegionKind::File { path, identity } => {
                e.u8(4);
                e.str(path);
                enc_identity(&mut e, identity);
            }
            RegionKind::Vdso => e.u8(5),
            RegionKind::Vvar => e.u8(6),
            RegionKind::VvarVclock => e.u8(7),
            RegionKind::Vsyscall => e.u8(8),
        }
    }
    e.into_vec()
}

fn enc_files(files: &[OpenFile]) -> Vec<u8> {
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
            FileKind::Pipe {
                ino,
                read_end,
                data,
                capacity,
            } => {
                e.u8(3);
                e.u64(*ino);
                e.bool(*read_end);
                e.bytes(data);
                e.u32(*capacity);
            }
            FileKind::Fifo { path, data } => {
                e.u8(4);
                e.str(path);
                e.bytes(data);
            }
            FileKind::EventFd { count, semaphore } => {
                e.u8(5);
                e.u64(*count);
                e.bool(*semaphore);
            }
            FileKind::TimerFd {
                clock,
                ticks,
                value,
                interval,
            } => {
                e.u8(6);
                e.i32(*clock);
                e.u64(*ticks);
                for t in [value, interval] {
                    e.i64(t.0);
                    e.i64(t.1);
                }
            }
            FileKind::SignalFd { mask } => {
                e.u8(7);
                e.u64(*mask);
            }
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                queued,
            } => {
                e.u8(9);
                e.u64(*ino);
                e.u64(*peer);
                e.i32(*sock_type);
                e.u64(queued.len() as u64);
                for q in queued {
                    e.bytes(q);
                }
            }
            FileKind::TcpListen { addr, backlog } => {
                e.u8(10);
                let (v6, ip) = match addr.ip() {
                    std::net::IpAddr::V4(a) => (false, a.to_ipv6_mapped().octets()),
                    std::net::IpAddr::V6(a) => (true, a.octets()),
                };
                e.bool(v6);
                e.bytes(&ip);
                e.u32(u32::from(addr.port()));
                e.u32(*backlog);
            }
            FileKind::TcpClosed { v6 } => {
                e.u8(11);
                e.bool(*v6);
            }
            FileKind::Inotify { watches } => {
                e.u8(12);
                e.u64(watches.len() as u64);
                for wch in watches {
                    e.i32(wch.wd);
                    e.u32(wch.mask);
                    e.str(&wch.path);
                }
            }
            FileKind::Epoll { watches } => {
                e.u8(8);
                e.u64(watches.len() as u64);
                for wch in watches {
                    e.i32(wch.fd);
                    e.u32(wch.events);
                    e.u64(wch.data);
                }
            }
        }
    }
    e.into_vec()
}

fn enc_fds(fds: &[Fd]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(fds.len() as u64);
    for f in fds {
        e.i32(f.fd);
        e.bool(f.cloexec);
        e.u32(f.file);
    }
    e.into_vec()
}

fn enc_meta(m: &Meta) -> Vec<u8> {
    let mut e = Enc::new();
    e.str(&m.engine_version);
    e.str(&m.kernel);
    e.str(&m.hostname);
    e.u64(m.created_unix);
    e.u64(m.frozen_us);
    e.into_vec()
}

fn enc_pagemap(runs: &[PageRun]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(runs.len() as u64);
    for r in runs {
        e.u64(r.addr);
        e.u64(r.pages);
    }
    e.into_vec()
}

/// Writes an image: META, then for each process its metadata sections, its page stream
/// and its page map; then [`Writer::finish`].
#[derive(Debug)]
pub struct Writer {
    inner: ImageWriter,
    compress: bool,
}

impl Writer {
    /// Start an image at `path` (written under a temporary name until [`Writer::finish`]).
    pub fn create(path: &Path, compress: bool) -> Result<Writer, ImageError> {
        Ok(Writer {
            inner: ImageWriter::create(path)?,
            compress,
        })
    }

    /// Write the META section (once, first).
    pub fn meta(&mut self, meta: &Meta) -> Result<(), ImageError> {
        self.inner.section(kind::META, false, &enc_meta(meta))?;
        Ok(())
    }

    /// Write the ZOMBIES section (after META, before the processes), if there are any.
    pub fn zombies(&mut self, zombies: &[Zombie]) -> Result<(), ImageError> {
        if zombies.is_empty() {
            return Ok(());
        }
        let mut e = Enc::new();
        e.u64(zombies.len() as u64);
        for z in zombies {
            for v in [z.pid, z.ppid, z.pgid, z.sid, z.status] {
                e.i32(v);
            }
        }
        self.inner.section(kind::ZOMBIES, false, &e.into_vec())?;
        Ok(())
    }

    /// Write one process's metadata sections (all but PAGES and PAGEMAP).
    pub fn process(&mut self, image: &Image) -> Result<(), ImageError> {
        self.inner
            .section(kind::PROCESS, false, &enc_process(&image.process))?;
        for t in &image.threads {
            self.inner.section(kind::THREAD, false, &enc_thread(t))?;
        }
        self.inner
            .section(kind::REGIONS, false, &enc_regions(&image.regions))?;
        self.inner
            .section(kind::FILES, self.compress, &enc_files(&image.files))?;
        self.inner.section(kind::FDS, false, &enc_fds(&image.fds))?;
        if !image.shared_anon.is_empty() {
            self.inner
                .section(kind::SHMEM, false, &enc_shmem(&image.shared_anon))?;
        }
        if !image.shared_files.is_empty() {
            let mut e = Enc::new();
            e.u64(image.shared_files.len() as u64);
            for sf in &image.shared_files {
                e.u32(sf.file);
                e.i32(sf.with_pid);
                e.u32(sf.with_file);
            }
            self.inner
                .section(kind::SHARED_FILES, false, &e.into_vec())?;
        }
        if !image.locks.is_empty() {
            let mut e = Enc::new();
            e.u64(image.locks.len() as u64);
            for l in &image.locks {
                e.i32(l.fd);
                e.u8(match l.kind {
                    LockKind::Flock => 0,
                    LockKind::Posix => 1,
                    LockKind::Ofd => 2,
                });
                e.bool(l.write);
                e.u64(l.start);
                e.u64(l.end.unwrap_or(u64::MAX));
            }
            self.inner.section(kind::LOCKS, false, &e.into_vec())?;
        }
        if !image.timers.is_empty() {
            let mut e = Enc::new();
            for (interval, value) in &image.timers.itimers {
                for v in [interval.0, interval.1, value.0, value.1] {
                    e.i64(v);
                }
            }
            e.u64(image.timers.posix.len() as u64);
            for t in &image.timers.posix {
                for v in [t.id, t.clock, t.notify, t.signo, t.tid] {
                    e.i32(v);
                }
                e.u64(t.sival);
                for v in [t.value.0, t.value.1, t.interval.0, t.interval.1] {
                    e.i64(v);
                }
            }
            self.inner.section(kind::TIMERS, false, &e.into_vec())?;
        }
        Ok(())
    }

    /// META and one process's metadata (the single-process case).
    pub fn metadata(&mut self, image: &Image) -> Result<(), ImageError> {
        self.meta(&image.meta)?;
        self.process(image)
    }

    /// A stream for the current process's page data.
    pub fn pages(&mut self) -> Result<container::SectionStream<'_>, ImageError> {
        Ok(self.inner.stream(kind::PAGES, self.compress)?)
    }

    /// Write the current process's page map.
    pub fn pagemap(&mut self, pagemap: &[PageRun]) -> Result<(), ImageError> {
        self.inner
            .section(kind::PAGEMAP, false, &enc_pagemap(pagemap))?;
        Ok(())
    }

    /// Write END, fsync and rename into place; returns the file size.
    pub fn finish(self) -> Result<u64, ImageError> {
        Ok(self.inner.commit()?)
    }

    /// Write the page map, END, fsync and rename into place; returns the file size.
    pub fn commit(mut self, pagemap: &[PageRun]) -> Result<u64, ImageError> {
        self.pagemap(pagemap)?;
        self.finish()
    }
}

fn enc_shmem(ids: &[SharedAnonId]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(ids.len() as u64);
    for id in ids {
        e.u64(id.start);
        e.u64(id.ino);
    }
    e.into_vec()
}

// ---------------------------------------------------------------------------------------
// Decoding

struct Ctx<'a> {
    path: &'a Path,
    section: &'static str,
}

impl Ctx<'_> {
    fn wire(&self) -> impl Fn(WireError) -> ImageError + '_ {
        move |source| ImageError::Decode {
            path: self.path.to_owned(),
            section: self.section,
            source,
        }
    }
    fn invalid(&self, what: impl Into<String>) -> ImageError {
        ImageError::Invalid {
            path: self.path.to_owned(),
            section: self.section,
            what: what.into(),
        }
    }
}

fn dec_siginfos(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<Vec<SigInfo>, ImageError> {
    let n = d.count(1 << 16).map_err(cx.wire())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let raw: [u8; SIGINFO_SIZE] = d
            .bytes()
            .map_err(cx.wire())?
            .try_into()
            .map_err(|_| cx.invalid("a siginfo is not 128 bytes"))?;
        let info = SigInfo(raw);
        if !(1..=NSIG as i32).contains(&info.signo()) {
            return Err(cx.invalid(format!(
                "pending signal number {} is out of range",
                info.signo()
            )));
        }
        out.push(info);
    }
    Ok(out)
}

fn dec_process(data: &[u8], cx: &Ctx<'_>) -> Result<Process, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut p = Process {
        pid: d.i32().map_err(&w)?,
        ppid: d.i32().map_err(&w)?,
        pgid: d.i32().map_err(&w)?,
        sid: d.i32().map_err(&w)?,
        comm: d.str().map_err(&w)?.to_owned(),
        ..Process::default()
    };
    let n = d.count(1 << 20).map_err(&w)?;
    for _ in 0..n {
        p.cmdline.push(d.str().map_err(&w)?.to_owned());
    }
    p.exe = d.str().map_err(&w)?.to_owned();
    p.cwd = d.str().map_err(&w)?.to_owned();
    p.umask = d.u32().map_err(&w)?;
    p.personality = d.u32().map_err(&w)?;
    for i in 0..4 {
        p.creds.uid[i] = d.u32().map_err(&w)?;
    }
    for i in 0..4 {
        p.creds.gid[i] = d.u32().map_err(&w)?;
    }
    let n = d.count(1 << 16).map_err(&w)?;
    for _ in 0..n {
        p.creds.groups.push(d.u32().map_err(&w)?);
    }
    let n = d.count(64).map_err(&w)?;
    for _ in 0..n {
        p.rlimits.push(Rlimit {
            resource: d.u32().map_err(&w)?,
            soft: d.u64().map_err(&w)?,
            hard: d.u64().map_err(&w)?,
        });
    }
    let mut mm = [0u64; 11];
    for v in &mut mm {
        *v = d.u64().map_err(&w)?;
    }
    let [
        start_code,
        end_code,
        start_data,
        end_data,
        start_brk,
        brk,
        start_stack,
        arg_start,
        arg_end,
        env_start,
        env_end,
    ] = mm;
    let n = d.count(1 << 12).map_err(&w)?;
    let mut auxv = Vec::with_capacity(n);
    for _ in 0..n {
        auxv.push(d.u64().map_err(&w)?);
    }
    p.mm = MmLayout {
        start_code,
        end_code,
        start_data,
        end_data,
        start_brk,
        brk,
        start_stack,
        arg_start,
        arg_end,
        env_start,
        env_end,
        auxv,
    };
    let n = d.count(u64::from(NSIG)).map_err(&w)?;
    for _ in 0..n {
        let a = SigAction {
            sig: d.u32().map_err(&w)?,
            handler: d.u64().map_err(&w)?,
            flags: d.u64().map_err(&w)?,
            restorer: d.u64().map_err(&w)?,
            mask: d.u64().map_err(&w)?,
        };
        if !(1..=NSIG).contains(&a.sig)
            || a.sig == libc::SIGKILL as u32
            || a.sig == libc::SIGSTOP as u32
        {
            return Err(cx.invalid(format!("sigaction for signal {} cannot be restored", a.sig)));
        }
        p.sigactions.push(a);
    }
    p.shared_pending = dec_siginfos(&mut d, cx)?;
    p.stopped = d.bool().map_err(&w)?;
    d.finish().map_err(&w)?;
    if p.pid <= 0 {
        return Err(cx.invalid(format!("PID {} is not valid", p.pid)));
    }
    if !p.cwd.starts_with('/') || p.cwd.contains('\0') {
        return Err(cx.invalid(format!(
            "working directory `{}` is not an absolute path",
            p.cwd
        )));
    }
    if p.umask > 0o777 {
        return Err(cx.invalid(format!("umask {:o} is not valid", p.umask)));
    }
    if p.mm.auxv.len() % 2 != 0 {
        return Err(cx.invalid("the auxiliary vector has an odd number of words"));
    }
    Ok(p)
}

fn dec_thread(data: &[u8], cx: &Ctx<'_>) -> Result<Thread, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut t = Thread {
        tid: d.i32().map_err(&w)?,
        comm: d.str().map_err(&w)?.to_owned(),
        ..Thread::default()
    };
    for v in &mut t.regs.0 {
        *v = d.u64().map_err(&w)?;
    }
    t.xstate = d.bytes().map_err(&w)?.to_vec();
    t.sigmask = d.u64().map_err(&w)?;
    t.pending = dec_siginfos(&mut d, cx)?;
    if d.bool().map_err(&w)? {
        t.rseq = Some(Rseq {
            ptr: d.u64().map_err(&w)?,
            len: d.u32().map_err(&w)?,
            sig: d.u32().map_err(&w)?,
        });
    }
    t.robust_list = (d.u64().map_err(&w)?, d.u64().map_err(&w)?);
    t.clear_child_tid = d.u64().map_err(&w)?;
    t.altstack = AltStack {
        sp: d.u64().map_err(&w)?,
        flags: d.i32().map_err(&w)?,
        size: d.u64().map_err(&w)?,
    };
    d.finish().map_err(&w)?;
    if t.tid <= 0 {
        return Err(cx.invalid(format!("TID {} is not valid", t.tid)));
    }
    if t.xstate.len() > crate::sys::ptrace::XSTATE_MAX || t.xstate.len() < 576 {
        return Err(cx.invalid(format!(
            "thread {}: XSAVE area of {} bytes is not valid",
            t.tid,
            t.xstate.len()
        )));
    }
    Ok(t)
}

fn dec_identity(d: &mut Dec<'_>) -> Result<FileIdentity, WireError> {
    Ok(FileIdentity {
        dev: d.u64()?,
        ino: d.u64()?,
        size: d.u64()?,
        mtime_ns: d.i64()?,
        mode: d.u32()?,
    })
}

fn dec_path(d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<String, ImageError> {
    let p = d.str().map_err(cx.wire())?;
    if !p.starts_with('/') || p.contains('\0') {
        return Err(cx.invalid(format!("path `{p}` is not absolute")));
    }
    Ok(p.to_owned())
}

fn dec_regions(data: &[u8], cx: &Ctx<'_>) -> Result<Vec<Region>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_REGIONS).map_err(&w)?;
    let mut out: Vec<Region> = Vec::with_capacity(n);
    for _ in 0..n {
        let start = d.u64().map_err(&w)?;
        let end = d.u64().map_err(&w)?;
        let prot = d.u32().map_err(&w)?;
        let shared = d.bool().map_err(&w)?;
        let offset = d.u64().map_err(&w)?;
        let advice = d.u32().map_err(&w)?;
        let growsdown = d.bool().map_err(&w)?;
        let kind = match d.u8().map_err(&w)? {
            0 => RegionKind::Anon,
            1 => RegionKind::Heap,
            2 => RegionKind::Stack,
            3 => RegionKind::SharedAnon,
            4 => RegionKind::File {
                path: dec_path(&mut d, cx)?,
                identity: dec_identity(&mut d).map_err(&w)?,
            },
            5 => RegionKind::Vdso,
            6 => RegionKind::Vvar,
            7 => RegionKind::VvarVclock,
            8 => RegionKind::Vsyscall,
            k => return Err(cx.invalid(format!("unknown region kind {k}"))),
        };
        let r = Region {
            start,
            end,
            prot,
            shared,
            offset,
            kind,
            advice,
            growsdown,
        };
        let aligned = |v: u64| v % PAGE_SIZE == 0;
        if !(aligned(start) && aligned(end) && aligned(offset) && start < end) {
            return Err(cx.invalid(format!(
                "region {start:#x}-{end:#x} is not a page-aligned range"
            )));
        }
        if end > USER_TOP && r.kind != RegionKind::Vsyscall {
            return Err(cx.invalid(format!(
                "region {start:#x}-{end:#x} lies outside user space"
            )));
        }
        if prot & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u32 != 0
            || advice & !advice::ALL != 0
        {
            return Err(cx.invalid(format!(
                "region {start:#x}-{end:#x} has unknown protection or advice bits"
            )));
        }
        if out.last().is_some_and(|prev| prev.end > start) {
            return Err(cx.invalid(format!(
                "region {start:#x}-{end:#x} overlaps the previous one or is out of order"
            )));
        }
        out.push(r);
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

fn dec_files(data: &[u8], cx: &Ctx<'_>) -> Result<Vec<OpenFile>, ImageError> {
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
            3 => FileKind::Pipe {
                ino: d.u64().map_err(&w)?,
                read_end: d.bool().map_err(&w)?,
                data: d.bytes().map_err(&w)?.to_vec(),
                capacity: d.u32().map_err(&w)?,
            },
            4 => FileKind::Fifo {
                path: dec_path(&mut d, cx)?,
                data: d.bytes().map_err(&w)?.to_vec(),
            },
            5 => FileKind::EventFd {
                count: d.u64().map_err(&w)?,
                semaphore: d.bool().map_err(&w)?,
            },
            6 => {
                let clock = d.i32().map_err(&w)?;
                // CLOCK_REALTIME, _MONOTONIC, _BOOTTIME, _REALTIME_ALARM, _BOOTTIME_ALARM:
                // the clocks timerfd_create(2) accepts.
                if ![0, 1, 7, 8, 9].contains(&clock) {
                    return Err(cx.invalid(format!(
                        "timerfd clock {clock} is not one timerfd_create accepts"
                    )));
                }
                let ticks = d.u64().map_err(&w)?;
                let mut t = [(0i64, 0i64); 2];
                for slot in &mut t {
                    *slot = (d.i64().map_err(&w)?, d.i64().map_err(&w)?);
                    if slot.0 < 0 || !(0..1_000_000_000).contains(&slot.1) {
                        return Err(
                            cx.invalid(format!("timerfd time {slot:?} is not a valid timespec"))
                        );
                    }
                }
                FileKind::TimerFd {
                    clock,
                    ticks,
                    value: t[0],
                    interval: t[1],
                }
            }
            7 => FileKind::SignalFd {
                mask: d.u64().map_err(&w)?,
            },
            8 => {
                let n = d.count(MAX_FDS).map_err(&w)?;
                let mut watches = Vec::with_capacity(n);
                for _ in 0..n {
                    let wch = EpollWatch {
                        fd: d.i32().map_err(&w)?,
                        events: d.u32().map_err(&w)?,
                        data: d.u64().map_err(&w)?,
                    };
                    if wch.fd < 0 {
                        return Err(cx.invalid(format!("epoll watch of descriptor {}", wch.fd)));
                    }
                    watches.push(wch);
                }
                FileKind::Epoll { watches }
            }
            9 => {
                let ino = d.u64().map_err(&w)?;
                let peer = d.u64().map_err(&w)?;
                let sock_type = d.i32().map_err(&w)?;
                if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&sock_type)
                {
                    return Err(cx.invalid(format!("unix socket type {sock_type}")));
                }
                let n = d.count(1 << 20).map_err(&w)?;
                let mut queued = Vec::with_capacity(n);
                for _ in 0..n {
                    queued.push(d.bytes().map_err(&w)?.to_vec());
                }
                FileKind::UnixPair {
                    ino,
                    peer,
                    sock_type,
                    queued,
                }
            }
            10 => {
                let v6 = d.bool().map_err(&w)?;
                let raw = d.bytes().map_err(&w)?;
                let ip: [u8; 16] = raw
                    .try_into()
                    .map_err(|_| cx.invalid("TCP address is not 16 bytes"))?;
                let port = u16::try_from(d.u32().map_err(&w)?)
                    .map_err(|_| cx.invalid("TCP port out of range"))?;
                let ip6 = std::net::Ipv6Addr::from(ip);
                let ip = match (v6, ip6.to_ipv4_mapped()) {
                    (false, Some(v4)) => std::net::IpAddr::V4(v4),
                    (false, None) => return Err(cx.invalid("IPv4 address not v4-mapped")),
                    (true, _) => std::net::IpAddr::V6(ip6),
                };
                FileKind::TcpListen {
                    addr: std::net::SocketAddr::new(ip, port),
                    backlog: d.u32().map_err(&w)?,
                }
            }
            11 => FileKind::TcpClosed {
                v6: d.bool().map_err(&w)?,
            },
            12 => {
                let n = d.count(1 << 20).map_err(&w)?;
                let mut watches = Vec::with_capacity(n);
                for _ in 0..n {
                    let wd = d.i32().map_err(&w)?;
                    let mask = d.u32().map_err(&w)?;
                    let path = dec_path(&mut d, cx)?;
                    if wd <= 0 {
                        return Err(cx.invalid(format!("inotify watch descriptor {wd}")));
                    }
                    watches.push(InotifyWatch { wd, mask, path });
                }
                watches.sort_by_key(|w| w.wd);
                if watches.windows(2).any(|p| p[0].wd == p[1].wd) {
                    return Err(cx.invalid("inotify watch descriptor twice"));
                }
                FileKind::Inotify { watches }
            }
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

fn dec_fds(data: &[u8], files: usize, cx: &Ctx<'_>) -> Result<Vec<Fd>, ImageError> {
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

fn dec_meta(data: &[u8], cx: &Ctx<'_>) -> Result<Meta, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let m = Meta {
        engine_version: d.str().map_err(&w)?.to_owned(),
        kernel: d.str().map_err(&w)?.to_owned(),
        hostname: d.str().map_err(&w)?.to_owned(),
        created_unix: d.u64().map_err(&w)?,
        frozen_us: d.u64().map_err(&w)?,
    };
    d.finish().map_err(&w)?;
    Ok(m)
}

fn dec_pagemap(data: &[u8], regions: &[Region], cx: &Ctx<'_>) -> Result<Vec<PageRun>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(u64::MAX).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let run = PageRun {
            addr: d.u64().map_err(&w)?,
            pages: d.u64().map_err(&w)?,
        };
        let end = run
            .pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| run.addr.checked_add(len));
        // A run may cross from one region into the next (.data into .bss); every byte must
        // lie in a region whose pages the image may carry.
        let inside = end.is_some_and(|end| {
            let mut cursor = run.addr;
            while cursor < end {
                let Some(r) = regions.iter().find(|r| r.start <= cursor && cursor < r.end) else {
                    return false;
                };
                if r.is_special() || (r.shared && matches!(r.kind, RegionKind::File { .. })) {
                    return false;
                }
                cursor = r.end;
            }
            true
        });
        if run.addr % PAGE_SIZE != 0 || run.pages == 0 || !inside {
            return Err(cx.invalid(format!(
                "page run at {:#x} ({} pages) is not inside a restorable region",
                run.addr, run.pages
            )));
        }
        out.push(run);
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

fn dec_shmem(
    data: &[u8],
    regions: &[Region],
    cx: &Ctx<'_>,
) -> Result<Vec<SharedAnonId>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_REGIONS).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = SharedAnonId {
            start: d.u64().map_err(&w)?,
            ino: d.u64().map_err(&w)?,
        };
        if !regions
            .iter()
            .any(|r| r.start == id.start && r.kind == RegionKind::SharedAnon)
        {
            return Err(cx.invalid(format!(
                "{:#x} is not the start of a shared anonymous region",
                id.start
            )));
        }
        out.push(id);
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

fn dec_timers(data: &[u8], cx: &Ctx<'_>) -> Result<Timers, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let mut timers = Timers::default();
    let time = |t: (i64, i64), unit: i64| -> Result<(i64, i64), ImageError> {
        if t.0 < 0 || !(0..unit).contains(&t.1) {
            return Err(cx.invalid(format!("timer time {t:?} is invalid")));
        }
        Ok(t)
    };
    for slot in &mut timers.itimers {
        let mut v = [0i64; 4];
        for x in &mut v {
            *x = d.i64().map_err(&w)?;
        }
        *slot = (
            time((v[0], v[1]), 1_000_000)?,
            time((v[2], v[3]), 1_000_000)?,
        );
    }
    let n = d.count(1 << 16).map_err(&w)?;
    for _ in 0..n {
        let mut h = [0i32; 5];
        for x in &mut h {
            *x = d.i32().map_err(&w)?;
        }
        let sival = d.u64().map_err(&w)?;
        let mut v = [0i64; 4];
        for x in &mut v {
            *x = d.i64().map_err(&w)?;
        }
        let t = PosixTimer {
            id: h[0],
            clock: h[1],
            notify: h[2],
            signo: h[3],
            tid: h[4],
            sival,
            value: time((v[0], v[1]), 1_000_000_000)?,
            interval: time((v[2], v[3]), 1_000_000_000)?,
        };
        if t.id < 0 || ![0, 1, 4].contains(&t.notify) || !(0..=64).contains(&t.signo) {
            return Err(cx.invalid(format!("POSIX timer {t:?} is invalid")));
        }
        timers.posix.push(t);
    }
    d.finish().map_err(&w)?;
    Ok(timers)
}

fn dec_locks(data: &[u8], fds: &[Fd], cx: &Ctx<'_>) -> Result<Vec<FileLock>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_FDS).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let fd = d.i32().map_err(&w)?;
        let kind = match d.u8().map_err(&w)? {
            0 => LockKind::Flock,
            1 => LockKind::Posix,
            2 => LockKind::Ofd,
            k => return Err(cx.invalid(format!("unknown lock kind {k}"))),
        };
        let write = d.bool().map_err(&w)?;
        let start = d.u64().map_err(&w)?;
        let end = match d.u64().map_err(&w)? {
            u64::MAX => None,
            e => Some(e),
        };
        if !fds.iter().any(|f| f.fd == fd) {
            return Err(cx.invalid(format!("lock on descriptor {fd}, which is not open")));
        }
        if start > i64::MAX as u64 || end.is_some_and(|e| e < start || e > i64::MAX as u64) {
            return Err(cx.invalid(format!("lock range {start}..{end:?} is invalid")));
        }
        out.push(FileLock {
            fd,
            kind,
            write,
            start,
            end,
        });
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

fn dec_shared_files(
    data: &[u8],
    files: usize,
    before: &[(Image, Option<SectionInfo>)],
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
        let Some((other, _)) = before.iter().find(|(i, _)| i.process.pid == sf.with_pid) else {
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

/// Sections of one process, as found in the file.
#[derive(Default)]
struct Group {
    process: Option<Process>,
    threads: Vec<Thread>,
    regions: Option<Vec<Region>>,
    files: Option<Vec<OpenFile>>,
    fds_raw: Option<Vec<u8>>,
    pagemap_raw: Option<Vec<u8>>,
    shmem_raw: Option<Vec<u8>>,
    shared_files_raw: Option<Vec<u8>>,
    locks_raw: Option<Vec<u8>>,
    timers_raw: Option<Vec<u8>>,
    pages: Option<SectionInfo>,
}

/// Most processes one image may hold.
const MAX_PROCESSES: usize = 1 << 15;

/// An opened image: every record decoded and validated; page data ready to stream.
#[derive(Debug)]
pub struct Reader {
    inner: ImageReader,
    /// One image per process, the root of the scope first, with its page data.
    images: Vec<(Image, Option<SectionInfo>)>,
    /// Exited, unreaped processes of the scope.
    zombies: Vec<Zombie>,
}

impl Reader {
    /// Open `path`, verify the container, decode and validate every record.
    pub fn open(path: &Path) -> Result<Reader, ImageError> {
        let inner = ImageReader::open(path)?;
        let mut meta = None;
        let mut zombies: Vec<Zombie> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for info in inner.sections() {
            let section = kind::name(info.kind);
            let cx = Ctx { path, section };
            let known = matches!(
                info.kind,
                kind::META
                    | kind::ZOMBIES
                    | kind::PROCESS
                    | kind::THREAD
                    | kind::REGIONS
                    | kind::FILES
                    | kind::FDS
                    | kind::PAGEMAP
                    | kind::PAGES
                    | kind::SHMEM
                    | kind::SHARED_FILES
                    | kind::LOCKS
                    | kind::TIMERS
            );
            match info.kind {
                container::END_KIND => continue,
                k if !known && k & kind::OPTIONAL != 0 => continue,
                k if !known => {
                    return Err(ImageError::UnknownSection {
                        path: path.to_owned(),
                        kind: k,
                    });
                }
                kind::PROCESS => {
                    if groups.len() >= MAX_PROCESSES {
                        return Err(cx.invalid("too many processes"));
                    }
                    groups.push(Group::default());
                }
                kind::META => {}
                kind::ZOMBIES => {}
                _ if groups.is_empty() => {
                    return Err(cx.invalid("section before the first PROCESS section"));
                }
                _ => {}
            }
            if info.kind == kind::PAGES {
                if let Some(g) = groups.last_mut() {
                    g.pages = Some(*info);
                }
                continue;
            }
            let data = inner.read(info, MAX_META_SECTION)?;
            if info.kind == kind::META {
                meta = Some(dec_meta(&data, &cx)?);
                continue;
            }
            if info.kind == kind::ZOMBIES {
                let w = cx.wire();
                let mut d = Dec::new(&data);
                let n = d.count(MAX_PROCESSES as u64).map_err(&w)?;
                for _ in 0..n {
                    let mut v = [0i32; 5];
                    for x in &mut v {
                        *x = d.i32().map_err(&w)?;
                    }
                    // The process and its parent are in the image, so both have PIDs.
                    // Group and session may be 0: /proc reports 0 for a leader outside
                    // the checkpointer's PID namespace (a CI runner or container).
                    if v[0] <= 0 || v[1] <= 0 || v[2] < 0 || v[3] < 0 {
                        return Err(cx.invalid(format!("zombie record {v:?} has a bad PID")));
                    }
                    zombies.push(Zombie {
                        pid: v[0],
                        ppid: v[1],
                        pgid: v[2],
                        sid: v[3],
                        status: v[4],
                    });
                }
                d.finish().map_err(&w)?;
                continue;
            }
            let Some(g) = groups.last_mut() else {
                return Err(cx.invalid("section before the first PROCESS section"));
            };
            match info.kind {
                kind::PROCESS => g.process = Some(dec_process(&data, &cx)?),
                kind::THREAD => {
                    if g.threads.len() >= MAX_THREADS {
                        return Err(cx.invalid("too many threads"));
                    }
                    g.threads.push(dec_thread(&data, &cx)?);
                }
                kind::REGIONS => g.regions = Some(dec_regions(&data, &cx)?),
                kind::FILES => g.files = Some(dec_files(&data, &cx)?),
                kind::FDS => g.fds_raw = Some(data),
                kind::SHMEM => g.shmem_raw = Some(data),
                kind::SHARED_FILES => g.shared_files_raw = Some(data),
                kind::LOCKS => g.locks_raw = Some(data),
                kind::TIMERS => g.timers_raw = Some(data),
                _ => g.pagemap_raw = Some(data),
            }
        }
        let missing = |section| ImageError::Missing {
            path: path.to_owned(),
            section,
        };
        let meta = meta.ok_or_else(|| missing("META"))?;
        if groups.is_empty() {
            return Err(missing("PROCESS"));
        }
        let mut images = Vec::with_capacity(groups.len());
        for g in groups {
            let image = Self::assemble(path, &meta, g, &images)?;
            images.push(image);
        }
        for z in &zombies {
            if images.iter().any(|(i, _)| i.process.pid == z.pid)
                || !images.iter().any(|(i, _)| i.process.pid == z.ppid)
            {
                return Err(ImageError::Invalid {
                    path: path.to_owned(),
                    section: "ZOMBIES",
                    what: format!(
                        "zombie {} is also a live process, or its parent {} is not in the image",
                        z.pid, z.ppid
                    ),
                });
            }
        }
        Ok(Reader {
            inner,
            images,
            zombies,
        })
    }

    /// Validate one process's sections into an [`Image`].
    fn assemble(
        path: &Path,
        meta: &Meta,
        g: Group,
        before: &[(Image, Option<SectionInfo>)],
    ) -> Result<(Image, Option<SectionInfo>), ImageError> {
        let missing = |section| ImageError::Missing {
            path: path.to_owned(),
            section,
        };
        let cx = |section| Ctx { path, section };
        let process = g.process.ok_or_else(|| missing("PROCESS"))?;
        if before.iter().any(|(i, _)| i.process.pid == process.pid) {
            return Err(cx("PROCESS").invalid(format!("process {} appears twice", process.pid)));
        }
        let regions = g.regions.ok_or_else(|| missing("REGIONS"))?;
        let files = g.files.ok_or_else(|| missing("FILES"))?;
        let fds = dec_fds(
            &g.fds_raw.ok_or_else(|| missing("FDS"))?,
            files.len(),
            &cx("FDS"),
        )?;
        let pagemap = dec_pagemap(
            &g.pagemap_raw.ok_or_else(|| missing("PAGEMAP"))?,
            &regions,
            &cx("PAGEMAP"),
        )?;
        let shared_anon = match &g.shmem_raw {
            Some(raw) => dec_shmem(raw, &regions, &cx("SHMEM"))?,
            None => Vec::new(),
        };
        let shared_files = match &g.shared_files_raw {
            Some(raw) => dec_shared_files(raw, files.len(), before, &cx("SHARED_FILES"))?,
            None => Vec::new(),
        };
        let locks = match &g.locks_raw {
            Some(raw) => dec_locks(raw, &fds, &cx("LOCKS"))?,
            None => Vec::new(),
        };
        let timers = match &g.timers_raw {
            Some(raw) => dec_timers(raw, &cx("TIMERS"))?,
            None => Timers::default(),
        };
        let threads = g.threads;
        if threads.first().map(|t| t.tid) != Some(process.pid) {
            return Err(cx("THREAD").invalid("the first thread is not the thread-group leader"));
        }
        for (i, t) in threads.iter().enumerate() {
            if threads[..i].iter().any(|o| o.tid == t.tid) {
                return Err(cx("THREAD").invalid(format!("thread {} appears twice", t.tid)));
            }
        }
        let total: u64 = pagemap
            .iter()
            .map(|r| r.pages)
            .sum::<u64>()
            .saturating_mul(PAGE_SIZE);
        let stored = g.pages.as_ref().map_or(0, |p| p.raw_len);
        if total != stored {
            return Err(cx("PAGEMAP").invalid(format!(
                "maps {total} bytes of pages but PAGES holds {stored}"
            )));
        }
        Ok((
            Image {
                meta: meta.clone(),
                process,
                threads,
                regions,
                files,
                fds,
                pagemap,
                shared_anon,
                shared_files,
                locks,
                timers,
            },
            g.pages,
        ))
    }

    /// Every process of the image, the root of the scope first.
    pub fn images(&self) -> impl ExactSizeIterator<Item = &Image> + '_ {
        self.images.iter().map(|(i, _)| i)
    }

    /// The page data of process `index` (in [`Reader::images`] order), checked at the end.
    pub fn pages_of(&self, index: usize) -> Result<Option<container::SectionRead>, ImageError> {
        self.images
            .get(index)
            .and_then(|(_, p)| p.as_ref())
            .map(|p| self.inner.stream(p))
            .transpose()
            .map_err(ImageError::from)
    }

    /// Exited, unreaped processes of the scope.
    pub fn zombies(&self) -> &[Zombie] {
        &self.zombies
    }

    /// The root process's image.
    pub fn image(&self) -> &Image {
        &self.images[0].0
    }

    /// The root process's page data, checked at the end.
    pub fn pages(&self) -> Result<Option<container::SectionRead>, ImageError> {
        self.pages_of(0)
    }

    /// Check the page data's checksum without using it. Restart calls this
    /// before it creates any process, so a damaged image never yields even a
    /// short-lived stub; the pass costs one read of the stored pages (usually
    /// from the page cache, at several GB/s).
    pub fn verify_pages(&self) -> Result<(), ImageError> {
        for p in self.images.iter().filter_map(|(_, p)| p.as_ref()) {
            self.inner.verify(p)?;
        }
        Ok(())
    }

    /// Size of the image file's sections, and whether each passes its checksum.
    pub fn verify(&self) -> Vec<(u32, u64, Result<(), ContainerError>)> {
        self.inner
            .sections()
            .iter()
            .map(|s| (s.kind, s.stored_len, self.inner.verify(s)))
            .collect()
    }

    /// The container reader.
    pub fn container(&self) -> &ImageReader {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Image {
        let mut regs = Regs::default();
        regs.0[reg::RIP] = 0x40_1000;
        let thread = |tid| Thread {
            tid,
            comm: "t".into(),
            regs,
            xstate: vec![7; 1024],
            sigmask: 1 << 9,
            ..Thread::default()
        };
        Image {
            meta: Meta {
                engine_version: "0.1.0".into(),
                kernel: "6.18".into(),
                hostname: "n1".into(),
                created_unix: 1,
                frozen_us: 2,
            },
            process: Process {
                pid: 100,
                ppid: 1,
                pgid: 100,
                sid: 100,
                comm: "app".into(),
                cmdline: vec!["app".into(), "--x".into()],
                exe: "/bin/app".into(),
                cwd: "/tmp".into(),
                umask: 0o22,
                creds: Creds {
                    uid: [1000; 4],
                    gid: [1000; 4],
                    groups: vec![1000, 27],
                },
                rlimits: vec![Rlimit {
                    resource: 7,
                    soft: 1024,
                    hard: 4096,
                }],
                mm: MmLayout {
                    brk: 0x60_0000,
                    auxv: vec![6, 4096, 0, 0],
                    ..MmLayout::default()
                },
                sigactions: vec![SigAction {
                    sig: 10,
                    handler: 0x40_2000,
                    flags: 4,
                    restorer: 0x40_3000,
                    mask: 0,
                }],
                ..Process::default()
            },
            threads: vec![thread(100), thread(101)],
            regions: vec![
                Region {
                    start: 0x40_0000,
                    end: 0x40_2000,
                    prot: 5,
                    shared: false,
                    offset: 0,
                    kind: RegionKind::File {
                        path: "/bin/app".into(),
                        identity: FileIdentity::default(),
                    },
                    advice: 0,
                    growsdown: false,
                },
                Region {
                    start: 0x60_0000,
                    end: 0x60_4000,
                    prot: 3,
                    shared: false,
                    offset: 0,
                    kind: RegionKind::Heap,
                    advice: advice::HUGEPAGE,
                    growsdown: false,
                },
            ],
            files: vec![
                OpenFile {
                    flags: 2,
                    pos: 5,
                    kind: FileKind::Regular {
                        path: "/tmp/log".into(),
                        identity: FileIdentity::default(),
                        content: None,
                    },
                },
                OpenFile {
                    flags: 0,
                    pos: 0,
                    kind: FileKind::Pipe {
                        ino: 9,
                        read_end: true,
                        data: b"abc".to_vec(),
                        capacity: 65536,
                    },
                },
            ],
            fds: vec![
                Fd {
                    fd: 1,
                    cloexec: false,
                    file: 0,
                },
                Fd {
                    fd: 5,
                    cloexec: true,
                    file: 1,
                },
            ],
            pagemap: vec![PageRun {
                addr: 0x60_1000,
                pages: 2,
            }],
            shared_anon: Vec::new(),
            shared_files: Vec::new(),
            locks: Vec::new(),
            timers: Timers::default(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lifeboat-image-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn write(path: &Path, img: &Image, pages: &[u8]) {
        let mut w = Writer::create(path, false).unwrap();
        w.metadata(img).unwrap();
        let mut s = w.pages().unwrap();
        s.write_all(pages).unwrap();
        s.finish().unwrap();
        w.commit(&img.pagemap).unwrap();
    }

    use std::fs;

    #[test]
    fn round_trip() {
        let path = tmp("round-trip");
        let img = sample();
        write(&path, &img, &[0xab; 8192]);
        let r = Reader::open(&path).unwrap();
        assert_eq!(r.image(), &img);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut r.pages().unwrap().unwrap(), &mut data).unwrap();
        assert_eq!(data, vec![0xab; 8192]);
        assert!(r.verify().iter().all(|(_, _, ok)| ok.is_ok()));
    }

    /// Several processes in one image: each group keeps its own records and pages, and
    /// the identity of shared anonymous memory survives.
    #[test]
    fn tree_round_trip() {
        let path = tmp("tree");
        let root = sample();
        let mut child = sample();
        child.process.pid = 101;
        child.process.ppid = 100;
        child.threads[0].tid = 101;
        child.threads.truncate(1);
        child.regions[1].kind = RegionKind::SharedAnon;
        child.regions[1].shared = true;
        child.shared_anon = vec![SharedAnonId {
            start: child.regions[1].start,
            ino: 4242,
        }];
        let mut w = Writer::create(&path, true).unwrap();
        w.meta(&root.meta).unwrap();
        for (img, byte) in [(&root, 0xab), (&child, 0xcd)] {
            w.process(img).unwrap();
            let mut s = w.pages().unwrap();
            s.write_all(&[byte; 8192]).unwrap();
            s.finish().unwrap();
            w.pagemap(&img.pagemap).unwrap();
        }
        w.finish().unwrap();

        let r = Reader::open(&path).unwrap();
        let got: Vec<&Image> = r.images().collect();
        assert_eq!(got, vec![&root, &child]);
        for (i, byte) in [(0, 0xab), (1, 0xcd)] {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut r.pages_of(i).unwrap().unwrap(), &mut data).unwrap();
            assert_eq!(data, vec![byte; 8192]);
        }
        r.verify_pages().unwrap();

        // The same PID twice is refused.
        let mut w = Writer::create(&path, false).unwrap();
        w.meta(&root.meta).unwrap();
        for _ in 0..2 {
            w.process(&root).unwrap();
            let mut s = w.pages().unwrap();
            s.write_all(&[1; 8192]).unwrap();
            s.finish().unwrap();
            w.pagemap(&root.pagemap).unwrap();
        }
        w.finish().unwrap();
        let err = Reader::open(&path).unwrap_err().to_string();
        assert!(err.contains("process 100 appears twice"), "{err}");
    }

    /// Zombies keep their records; a group or session of 0 (a leader outside the
    /// checkpointer's PID namespace, as under a container or CI runner) is accepted, a
    /// zombie without a PID is not.
    #[test]
    fn zombies_round_trip() {
        let path = tmp("zombies");
        let root = sample();
        let write_with = |zombies: &[Zombie]| {
            let mut w = Writer::create(&path, false).unwrap();
            w.meta(&root.meta).unwrap();
            w.zombies(zombies).unwrap();
            w.process(&root).unwrap();
            let mut s = w.pages().unwrap();
            s.write_all(&[1; 8192]).unwrap();
            s.finish().unwrap();
            w.pagemap(&root.pagemap).unwrap();
            w.finish().unwrap();
        };
        let zombies = [
            Zombie {
                pid: 101,
                ppid: 100,
                pgid: 100,
                sid: 100,
                status: 7 << 8,
            },
            Zombie {
                pid: 102,
                ppid: 100,
                pgid: 0,
                sid: 0,
                status: 9,
            },
        ];
        write_with(&zombies);
        assert_eq!(Reader::open(&path).unwrap().zombies(), &zombies);

        write_with(&[Zombie {
            pid: 0,
            ppid: 100,
            pgid: 100,
            sid: 100,
            status: 0,
        }]);
        let err = Reader::open(&path).unwrap_err().to_string();
        assert!(err.contains("has a bad PID"), "{err}");
    }

    /// Well-formed, correctly checksummed images whose content is refused, with the message.
    #[test]
    fn invalid_content_is_refused() {
        let check = |name: &str, edit: &dyn Fn(&mut Image), expect: &str| {
            let path = tmp(name);
            let mut img = sample();
            edit(&mut img);
            write(&path, &img, &[0xab; 8192]);
            let err = Reader::open(&path).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: `{err}` lacks `{expect}`");
        };
        check(
            "run-outside",
            &|i| i.pagemap[0].addr = 0x70_0000,
            "is not inside a restorable region",
        );
        check(
            "run-vdso",
            &|i| i.regions[1].kind = RegionKind::Vdso,
            "not inside a restorable region",
        );
        check(
            "kernel-address",
            &|i| i.regions[1].end = 0xffff_8000_0000_0000,
            "outside user space",
        );
        check(
            "unaligned",
            &|i| i.regions[1].start = 0x60_0001,
            "page-aligned",
        );
        check("overlap", &|i| i.regions[0].end = 0x60_1000, "overlaps");
        check(
            "sigkill",
            &|i| i.process.sigactions[0].sig = 9,
            "signal 9 cannot be restored",
        );
        check("fd-range", &|i| i.fds[0].fd = -1, "out of range");
        check("fd-file", &|i| i.fds[0].file = 7, "out of range");
        check("fd-twice", &|i| i.fds[1].fd = 1, "appears twice");
        check("leader", &|i| i.threads.swap(0, 1), "thread-group leader");
        check("xstate", &|i| i.threads[0].xstate.clear(), "XSAVE area");
        check("umask", &|i| i.process.umask = 0o7777, "umask");
        check(
            "relative-path",
            &|i| i.process.cwd = "tmp".into(),
            "not an absolute path",
        );
        check("pages-short", &|i| i.pagemap[0].pages = 1, "PAGES holds");
    }

    #[test]
    fn corrupt_file_is_refused() {
        let path = tmp("corrupt");
        write(&path, &sample(), &[0xab; 8192]);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let err = Reader::open(&path)
            .map(|r| r.verify().into_iter().find_map(|(_, _, r)| r.err()))
            .unwrap_or_else(|e| {
                Some(ContainerError::BadMagic {
                    path: PathBuf::from(e.to_string()),
                })
            });
        assert!(err.is_some(), "a flipped byte went unnoticed");
        fs::write(&path, &bytes[..n - 100]).unwrap();
        assert!(
            Reader::open(&path)
                .unwrap_err()
                .to_string()
                .contains("truncated")
                || Reader::open(&path).is_err()
        );
    }
}
