//! Memory regions: which VMAs a process has and what backs them (anonymous memory, the
//! heap and stack, shared memory, files by reference, the kernel's `[vdso]`/`[vvar]`/
//! `[vvar_vclock]`/`[vsyscall]`), the files mapped, shared memory between processes of an
//! image, and rebuilding a stub's address space. Page contents are `pages.rs`.

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError, MAX_REGIONS, USER_TOP};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs::{self, MapEntry};
use crate::ptrace::{self, Remote, Stopped};
use crate::restart::error::{self as restart, RestartError};
use crate::state::OptionalSection;
use crate::state::common::{
    FileType, OpenAsError, dec_identity, dec_path, enc_identity, identity, open_as,
};
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Every region of `pid`, and the shmem inode behind each shared anonymous one.
pub(crate) fn dump(pid: i32) -> Result<(Vec<Region>, Vec<SharedAnonId>), CheckpointError> {
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
    Ok((regions, shared_anon))
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

// ---------------------------------------------------------------------------------------
// Restart

/// Scratch memory in the stub for syscall arguments.
pub(crate) const SCRATCH: u64 = 64 * 1024;
/// Top of the 47-bit user address space.
const USER_TOP_47: u64 = 0x7fff_ffff_f000;

/// A memfd for every shared anonymous object that several processes of the image map,
/// sized to hold every mapping of it. Keyed by the original shmem inode.
pub(crate) fn shared_memory(imgs: &[&Image]) -> Result<Vec<(u64, OwnedFd)>, RestartError> {
    // (ino, processes mapping it, bytes needed)
    let mut users: Vec<(u64, Vec<usize>, u64)> = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        for id in &img.shared_anon {
            let Some(r) = img.regions.iter().find(|r| r.start == id.start) else {
                continue;
            };
            let end = r.offset.saturating_add(r.len());
            match users.iter_mut().find(|u| u.0 == id.ino) {
                Some(u) => {
                    u.2 = u.2.max(end);
                    if !u.1.contains(&i) {
                        u.1.push(i);
                    }
                }
                None => users.push((id.ino, vec![i], end)),
            }
        }
    }
    let mut out = Vec::new();
    for (ino, procs, size) in users {
        if procs.len() < 2 {
            continue;
        }
        let fd = nix::sys::memfd::memfd_create(
            c"lifeboat-shared",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(restart::sys_err("memfd_create"))?;
        nix::unistd::ftruncate(&fd, size as i64)
            .map_err(restart::sys_err("ftruncate of shared memory"))?;
        out.push((ino, fd));
    }
    Ok(out)
}

/// Open the files mapped by `img` (with this thread's file-system identity: the caller's,
/// or the owner's of a user's image that root restarts), only if they are regular files,
/// checking that they are the files that were mapped; adds to `map_fds` one descriptor per
/// distinct `(path, writable)`.
pub(crate) fn open_mapped_files(
    img: &Image,
    map_fds: &mut Vec<(String, bool, OwnedFd)>,
    lift: &dyn Fn(&OwnedFd) -> Result<OwnedFd, RestartError>,
    warnings: &mut Vec<Warning>,
) -> Result<(), RestartError> {
    let pid = img.process.pid;
    for r in &img.regions {
        let RegionKind::File {
            path: fpath,
            identity,
        } = &r.kind
        else {
            continue;
        };
        let writable = r.shared && r.prot & libc::PROT_WRITE as u32 != 0;
        if map_fds.iter().any(|(p, w, _)| p == fpath && *w == writable) {
            continue;
        }
        let flags = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd =
            open_as(fpath, flags | OFlag::O_CLOEXEC, FileType::Regular).map_err(|e| match e {
                OpenAsError::Open(e) => RestartError::MappedFile {
                    pid,
                    start: r.start,
                    path: fpath.clone(),
                    what: format!("cannot open: {e}"),
                },
                OpenAsError::Type(found) => RestartError::FileType {
                    pid,
                    what: format!("mapping at {:#x}", r.start),
                    path: fpath.clone(),
                    found,
                    wanted: FileType::Regular.name(),
                },
            })?;
        let md = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
            RestartError::MappedFile {
                pid,
                start: r.start,
                path: fpath.clone(),
                what: e.to_string(),
            }
        })?;
        let now = crate::state::common::identity(&md);
        if (now.dev, now.ino) != (identity.dev, identity.ino)
            || now.size != identity.size
            || now.mtime_ns != identity.mtime_ns
        {
            if r.prot & libc::PROT_EXEC as u32 != 0 {
                let what =
                    "has changed since the checkpoint (inode, size or modification time differ)"
                        .to_owned();
                return Err(RestartError::MappedFile {
                    pid,
                    start: r.start,
                    path: fpath.clone(),
                    what,
                });
            }
            warnings.push(Warning::process(
                pid,
                WarningKind::MappedFileChanged {
                    path: fpath.clone(),
                },
            ));
        }
        map_fds.push((fpath.clone(), writable, lift(&fd)?));
    }
    Ok(())
}

/// Replace the stub's address space with the image's regions (empty, writable where pages
/// will be written) and map a scratch area for the injected calls that follow; the
/// injector's `syscall` instruction moves with the `[vdso]`.
pub(crate) fn replace(
    r: &mut Remote,
    leader: &Stopped,
    img: &Image,
    map_fd: &dyn Fn(&str, bool) -> Option<RawFd>,
    shm_fd: &dyn Fn(u64) -> Option<RawFd>,
) -> Result<(), RestartError> {
    let stub_maps = procfs::maps(r.pid().as_raw())?;
    let ip = ptrace::find_syscall_insn(r.pid(), &stub_maps)?;
    r.injector().set_ip(ip);
    if let Some(rseq) = leader.rseq()? {
        restart::inject(
            r,
            "rseq(unregister)",
            libc::SYS_rseq,
            &[rseq.ptr, u64::from(rseq.len), 1, u64::from(rseq.sig)],
        )?;
    }
    let moves = special_moves(&stub_maps, &img.regions)?;
    // Unmap everything of the stub but the special mappings.
    let mut keep: Vec<(u64, u64)> = stub_maps
        .iter()
        .filter(|m| {
            m.name
                .as_deref()
                .is_some_and(|n| SPECIALS.iter().any(|s| s.0 == n) || n == "[vsyscall]")
        })
        .map(|m| (m.start, m.end))
        .collect();
    keep.sort_unstable();
    let mut cursor = 0u64;
    for &(s, e) in keep.iter().filter(|(s, _)| *s < USER_TOP_47) {
        if s > cursor {
            restart::inject(r, "munmap", libc::SYS_munmap, &[cursor, s - cursor])?;
        }
        cursor = e;
    }
    if cursor < USER_TOP_47 {
        restart::inject(
            r,
            "munmap",
            libc::SYS_munmap,
            &[cursor, USER_TOP_47 - cursor],
        )?;
    }
    // Move the special mappings through a temporary area that overlaps neither layout.
    let total: u64 = moves.iter().map(|m| m.2).sum();
    let mut busy: Vec<(u64, u64)> = img.regions.iter().map(|r| (r.start, r.end)).collect();
    busy.extend(keep.iter().copied());
    let tmp = find_gap(&busy, total).ok_or(RestartError::NoGap { size: total })?;
    let remap = |r: &mut Remote, from: u64, len: u64, to: u64| {
        restart::inject(
            r,
            "mremap",
            libc::SYS_mremap,
            &[
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                to,
            ],
        )
    };
    let mut at = tmp;
    let mut staged = Vec::new();
    for &(from, to, len, is_vdso) in &moves {
        remap(r, from, len, at)?;
        if is_vdso {
            r.injector().set_ip(ip - from + at);
        }
        staged.push((at, to, len, is_vdso));
        at += len;
    }
    for &(from, to, len, is_vdso) in &staged {
        remap(r, from, len, to)?;
        if is_vdso {
            let vdso_was = moves.iter().find(|m| m.3).map_or(0, |m| m.0);
            r.injector().set_ip(ip - vdso_was + to);
        }
    }
    busy.retain(|b| !keep.contains(b));
    let scratch = find_gap(&busy, SCRATCH).ok_or(RestartError::NoGap { size: SCRATCH })?;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    restart::inject(
        r,
        "mmap(scratch)",
        libc::SYS_mmap,
        &[scratch, SCRATCH, prot, flags, u64::MAX, 0],
    )?;
    r.set_scratch(scratch);
    map_regions(r, img, map_fd, shm_fd)
}

/// The kernel's special mappings, by name and kind.
const SPECIALS: [(&str, RegionKind); 3] = [
    ("[vvar]", RegionKind::Vvar),
    ("[vvar_vclock]", RegionKind::VvarVclock),
    ("[vdso]", RegionKind::Vdso),
];

/// Where each special mapping of the stub must go: `(from, to, len, is_vdso)`. The stub
/// and the image must have the same kinds with the same sizes (the same kernel).
fn special_moves(
    stub_maps: &[MapEntry],
    regions: &[Region],
) -> Result<Vec<(u64, u64, u64, bool)>, RestartError> {
    let mut moves = Vec::new();
    for (name, kind) in &SPECIALS {
        let now = stub_maps.iter().find(|m| m.name.as_deref() == Some(*name));
        let then = regions.iter().find(|r| r.kind == *kind);
        match (now, then) {
            (Some(n), Some(t)) if n.end - n.start == t.len() => {
                moves.push((n.start, t.start, t.len(), *kind == RegionKind::Vdso))
            }
            (None, None) => {}
            (n, t) => {
                return Err(RestartError::Vdso {
                    what: name,
                    detail: format!(
                        "here {:?} bytes, in the image {:?}",
                        n.map(|m| m.end - m.start),
                        t.map(Region::len)
                    ),
                });
            }
        }
    }
    Ok(moves)
}

/// Whether any saved page falls in `r`.
pub(crate) fn has_pages(img: &Image, r: &Region) -> bool {
    img.pagemap
        .iter()
        .any(|p| p.addr < r.end && p.addr + p.pages * PAGE_SIZE > r.start)
}

/// Map every region of the image, writable while its pages are written.
fn map_regions(
    r: &mut Remote,
    img: &Image,
    map_fd: &dyn Fn(&str, bool) -> Option<RawFd>,
    shm_fd: &dyn Fn(u64) -> Option<RawFd>,
) -> Result<(), RestartError> {
    for reg in img.regions.iter().filter(|r| !r.is_special()) {
        let prot = if has_pages(img, reg) {
            reg.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32
        } else {
            reg.prot
        };
        let mut flags = libc::MAP_FIXED
            | if reg.shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
        if reg.growsdown {
            flags |= libc::MAP_GROWSDOWN;
        }
        // Shared anonymous memory that other processes of the image map too comes from
        // one memfd, so they share it again.
        let shared_obj = (reg.kind == RegionKind::SharedAnon)
            .then(|| img.shared_anon.iter().find(|id| id.start == reg.start))
            .flatten()
            .and_then(|id| shm_fd(id.ino));
        let fd = match &reg.kind {
            RegionKind::File { path, .. } => {
                map_fd(path, writable_shared(reg)).map_or(u64::MAX, |fd| fd as u64)
            }
            RegionKind::SharedAnon if shared_obj.is_some() => {
                shared_obj.map_or(u64::MAX, |fd| fd as u64)
            }
            _ => {
                flags |= libc::MAP_ANONYMOUS;
                u64::MAX
            }
        };
        let got = restart::inject(
            r,
            &format!("mmap of {:#x}-{:#x}", reg.start, reg.end),
            libc::SYS_mmap,
            &[
                reg.start,
                reg.len(),
                u64::from(prot),
                flags as u64,
                fd,
                reg.offset,
            ],
        )?;
        if got != reg.start {
            return Err(RestartError::Inject {
                pid: img.process.pid,
                call: format!("mmap of {:#x}", reg.start),
                source: Errno::EFAULT,
            });
        }
    }
    Ok(())
}

/// Once the pages are in: each region's own protection and `madvise` advice.
pub(crate) fn protect(r: &mut Remote, img: &Image) -> Result<(), RestartError> {
    for reg in img.regions.iter().filter(|r| !r.is_special()) {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        if has_pages(img, reg) && reg.prot != reg.prot | rw {
            restart::inject(
                r,
                "mprotect",
                libc::SYS_mprotect,
                &[reg.start, reg.len(), u64::from(reg.prot)],
            )?;
        }
        for (bit, advice) in [
            (advice::DONTDUMP, libc::MADV_DONTDUMP),
            (advice::DONTFORK, libc::MADV_DONTFORK),
            (advice::WIPEONFORK, libc::MADV_WIPEONFORK),
            (advice::HUGEPAGE, libc::MADV_HUGEPAGE),
            (advice::NOHUGEPAGE, libc::MADV_NOHUGEPAGE),
            (advice::MERGEABLE, libc::MADV_MERGEABLE),
        ] {
            if reg.advice & bit != 0 {
                // Advice is a hint; a kernel without THP or KSM refusing it is harmless.
                let _ = r.call(libc::SYS_madvise, &[reg.start, reg.len(), advice as u64])?;
            }
        }
    }
    Ok(())
}

/// A shared mapping that can be written: its file is opened read-write.
pub(crate) fn writable_shared(r: &Region) -> bool {
    r.shared && r.prot & libc::PROT_WRITE as u32 != 0
}

/// Lowest page-aligned gap of `size` bytes above 64 KiB and below the 47-bit top that
/// overlaps none of `busy`.
fn find_gap(busy: &[(u64, u64)], size: u64) -> Option<u64> {
    let mut spans: Vec<(u64, u64)> = busy.to_vec();
    spans.sort_unstable();
    // Prefer high addresses below the usual mmap base, away from the heap.
    let mut candidate = 0x2000_0000_0000u64;
    for &(s, e) in &spans {
        if e <= candidate {
            continue;
        }
        if s >= candidate + size {
            break;
        }
        candidate = e.max(candidate);
    }
    (candidate + size <= USER_TOP_47).then_some(candidate)
}

// ---------------------------------------------------------------------------------------
// Section codecs: REGIONS, SHMEM (optional)

pub(crate) fn enc_regions(regions: &[Region]) -> Vec<u8> {
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

pub(crate) fn dec_regions(data: &[u8], cx: &Ctx<'_>) -> Result<Vec<Region>, ImageError> {
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

/// The SHMEM section.
pub(crate) const SHMEM: OptionalSection = OptionalSection {
    kind: 0x8000_0009,
    name: "SHMEM",
    encode: |image| (!image.shared_anon.is_empty()).then(|| enc_shmem(&image.shared_anon)),
    decode: |data, image, _, cx| {
        image.shared_anon = dec_shmem(data, &image.regions, cx)?;
        Ok(())
    },
};

fn enc_shmem(ids: &[SharedAnonId]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(ids.len() as u64);
    for id in ids {
        e.u64(id.start);
        e.u64(id.ino);
    }
    e.into_vec()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_avoid_every_busy_range() {
        let base = 0x2000_0000_0000u64;
        let check = |busy: &[(u64, u64)], size: u64, expected: Option<u64>| {
            assert_eq!(find_gap(busy, size), expected, "{busy:x?} size {size:#x}");
        };
        check(&[], 0x1000, Some(base));
        check(&[(0x40_0000, 0x50_0000)], 0x1000, Some(base));
        check(&[(base, base + 0x3000)], 0x1000, Some(base + 0x3000));
        // Unsorted, touching and overlapping ranges.
        check(
            &[
                (base + 0x2000, base + 0x5000),
                (base, base + 0x2000),
                (base + 0x4000, base + 0x6000),
            ],
            0x1000,
            Some(base + 0x6000),
        );
        // A hole too small is skipped.
        check(
            &[(base, base + 0x1000), (base + 0x1800, base + 0x3000)],
            0x1000,
            Some(base + 0x3000),
        );
        check(&[(base, USER_TOP_47)], 0x1000, None);
    }

    fn region(start: u64, end: u64, kind: RegionKind) -> Region {
        Region {
            start,
            end,
            prot: 5,
            shared: false,
            offset: 0,
            kind,
            advice: 0,
            growsdown: false,
        }
    }

    fn map(start: u64, end: u64, name: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            name: Some(name.into()),
            ..MapEntry::default()
        }
    }

    #[test]
    fn special_mappings_move_to_their_recorded_addresses() {
        let stub = [map(0x1000, 0x3000, "[vvar]"), map(0x3000, 0x5000, "[vdso]")];
        let image = [
            region(0x7000, 0x9000, RegionKind::Vvar),
            region(0x9000, 0xb000, RegionKind::Vdso),
        ];
        let moves = special_moves(&stub, &image).unwrap();
        assert_eq!(
            moves,
            [
                (0x1000, 0x7000, 0x2000, false),
                (0x3000, 0x9000, 0x2000, true)
            ]
        );
        // Another kernel: sizes or kinds differ.
        let other = [region(0x9000, 0xc000, RegionKind::Vdso)];
        assert!(special_moves(&stub[1..], &other).is_err());
        assert!(special_moves(&stub, &image[1..]).is_err());
    }
}
