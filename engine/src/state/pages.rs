//! Page contents: which pages of which regions hold the process's own data (pagemap),
//! copying them out in large batches with zero pages dropped, and writing them back into
//! a rebuilt address space. Regions themselves are `memory.rs`.

use crate::Progress;
use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError};
use crate::image::container::SectionRead;
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs::{self, MapEntry, ProcError};
use crate::ptrace::Remote;
use crate::restart::error::{self as restart, RestartError};
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Read the pages of `pid` that `plan_pages` chose into `out`; returns the runs saved
/// and their page count (zero pages are dropped).
pub(crate) fn save(
    pid: i32,
    regions: &[Region],
    out: &mut dyn Write,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<PageRun>, u64), CheckpointError> {
    let maps = procfs::maps(pid)?;
    let plan = plan_pages(pid, regions, &maps)?;
    copy_pages(pid, &plan, out, path, progress)
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
        crate::fault::point("pages");
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

// ---------------------------------------------------------------------------------------
// Restart

/// Write a process's saved pages (its PAGES stream) into its rebuilt address space; reaching the end of
/// the stream verifies the checksum of the whole page data.
pub(crate) fn restore(
    r: &Remote,
    img: &Image,
    pages: Option<SectionRead>,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), RestartError> {
    let Some(mut pages) = pages else {
        return Ok(());
    };
    let read_err = |source| RestartError::ReadPages {
        path: path.to_owned(),
        source,
    };
    let total = img.pagemap.iter().map(|p| p.pages * PAGE_SIZE).sum();
    let mut buf = vec![0u8; 8 << 20];
    let mut done = 0;
    for run in &img.pagemap {
        let mut addr = run.addr;
        let mut left = run.pages * PAGE_SIZE;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pages.read_exact(&mut buf[..n]).map_err(read_err)?;
            restart::poke(r, addr, &buf[..n])?;
            addr += n as u64;
            left -= n as u64;
            done += n as u64;
            progress(Progress { done, total });
        }
    }
    let mut rest = Vec::new();
    pages.read_to_end(&mut rest).map_err(read_err)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Section codec: PAGEMAP (PAGES is the raw stream)

pub(crate) fn enc_pagemap(runs: &[PageRun]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u64(runs.len() as u64);
    for r in runs {
        e.u64(r.addr);
        e.u64(r.pages);
    }
    e.into_vec()
}

pub(crate) fn dec_pagemap(
    data: &[u8],
    regions: &[Region],
    cx: &Ctx<'_>,
) -> Result<Vec<PageRun>, ImageError> {
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
