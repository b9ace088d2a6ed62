//! The context file: the processes of one checkpoint as a sequence of checksummed sections.
//!
//! The container ([`container`]) gives a versioned header, sections with their own xxh3
//! checksums and an END record, written to a temporary name, fsynced and renamed. This
//! module lays the [`model`](crate::model) out as sections; each kind of state encodes and
//! decodes its own records in its file under `state/`:
//!
//! | kind | section  | content | codec |
//! |------|----------|---------|-------|
//! | 0x01 | META     | engine version, kernel, host, time, frozen time | `state::process` |
//! | 0x0D | ZOMBIES  | processes of the scope that had exited, unreaped: pid, parent, group, session (0 when its leader is outside the PID namespace), exit status (after META) | `state::process` |
//! | 0x02 | PROCESS  | ids, command, cwd, umask, personality, creds, rlimits, mm layout, auxv, sigactions, shared pending signals | `state::process` (+ `creds`, `signals`) |
//! | 0x03 | THREAD   | one per thread, leader first: tid, name, registers, XSAVE area, mask, pending signals, rseq, robust list, clear_child_tid, sigaltstack | `state::threads` |
//! | 0x04 | REGIONS  | every VMA: range, protection, shared, offset, backing (anon/heap/stack/shared anon/file by reference/vdso/vvar/vvar_vclock/vsyscall), advice | `state::memory` |
//! | 0x05 | FILES    | open file descriptions: flags, offset, and what they refer to (file by reference, deleted file content, directory, device, pipe end with buffered bytes, FIFO, eventfd, timerfd, signalfd, epoll with its interest list, unix socket pair, listening TCP socket, TCP connection, inotify) | `state::files` (+ `pipes`, `sockets`, `anon`) |
//! | 0x06 | FDS      | descriptor number → file description, close-on-exec | `state::files` |
//! | 0x08 | PAGES    | raw page data, streamed (optionally zstd) | `state::pages` |
//! | 0x07 | PAGEMAP  | runs `(address, pages)` giving where each page of PAGES goes | `state::pages` |
//! | 0x80000009 | SHMEM | optional: the shmem inode behind each shared anonymous region, so processes that shared it share it again | `state::memory` |
//! | 0x8000000A | SHARED_FILES | optional: open file descriptions shared with an earlier process of the image | `state::files` |
//! | 0x8000000B | LOCKS | optional: flock, POSIX and OFD locks the process holds | `state::locks` |
//! | 0x8000000C | TIMERS | optional: interval timers (setitimer/alarm) and POSIX timers | `state::timers` |
//! | 0x80000010 | SOCKET_SHUTDOWN | optional: unix socket pair ends shut down, by file index | `state::sockets` |
//! | 0x8000000E | THREAD_COUNT | optional: how many threads the process had; a different number of THREAD sections is refused | `state::threads` |
//! | 0x8000000F | FROZEN | optional, once, after the last process: the time the processes were frozen, from the freeze to the image's last byte (META's frozen time is taken before the pages are written; readers prefer this one) | here |
//!
//! An image of several processes (a process tree, a process group, a session) is a META
//! section (and ZOMBIES, if any) followed by one group per process, each starting with its
//! PROCESS section; the first group is the root of the scope; FROZEN, when present, comes
//! after the last group.
//!
//! # How the format evolves
//!
//! This rule holds for every change to the format:
//! - A new kind of state adds an **optional** section: a kind with bit 31 set, listed in
//!   `state::OPTIONAL_SECTIONS`. A reader that does not know it skips it, so older
//!   releases still restart newer images (without that state), and newer releases read
//!   older images (the state is absent: its default).
//! - A new variant of an existing record (a new kind of file in FILES: tag 13, an unbound
//!   or listening unix socket; tag 14, an established TCP connection;
//!   tag 15, a UDP socket) takes a new tag. Only images that hold one are refused by
//!   an older reader, with a message naming the kind; the older engine could not have
//!   saved such a process at all.
//! - A change that an older reader must not ignore (a mandatory section changes its
//!   layout, a new mandatory section) bumps [`container::FORMAT_VERSION`], at most once
//!   per release, and the reader keeps accepting the previous version
//!   ([`container::OLDEST_READABLE_VERSION`]): during a rolling upgrade of a cluster, a
//!   node reads the images other nodes wrote last week.
//! - An unknown kind without bit 31 means the image needs a newer engine: it is refused
//!   with that message, never half-read.
//!
//! Every record is little-endian via [`wire`]. Decoding validates every field the
//! restorer will act on (ranges, counts, signal numbers, descriptor numbers, page runs
//! inside restorable regions): a modified file gives a typed error, never a panic and
//! never a privilege the restarting user does not already have.
//!
//! # Stability
//!
//! [`Reader`] and [`Writer`] are public for tests, fuzzing and tools that inspect or
//! build images; they follow the format rule above. Everything else of the engine is
//! reached through the crate root.

pub(crate) mod codec;
pub mod container;
pub mod wire;

pub use codec::ImageError;
pub(crate) use codec::{Ctx, MAX_PROCESSES, MAX_THREADS};
pub(crate) use codec::{MAX_META_SECTION, MAX_META_TOTAL};

use crate::model::*;
use crate::state;
use container::{ContainerError, ImageReader, ImageWriter, SectionInfo};
use std::path::Path;

/// Kinds of the sections every image has (the optional ones are listed with their codecs
/// in `state::OPTIONAL_SECTIONS`).
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
    /// The time the processes were frozen (optional, once, after the last process).
    pub const FROZEN: u32 = 0x8000_000F;
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
            ZOMBIES => "ZOMBIES",
            FROZEN => "FROZEN",
            super::container::END_KIND => "END",
            k => crate::state::optional_section(k).map_or("unknown", |s| s.name),
        }
    }
}

/// Writes an image: META, then for each process its metadata sections, its page stream
/// and its page map; then [`Writer::finish`].
#[derive(Debug)]
pub struct Writer {
    inner: ImageWriter,
    compress: bool,
    /// Metadata bytes written so far (a reader takes at most MAX_META_TOTAL).
    metadata: u64,
}

impl Writer {
    /// Start an image at `path` (written under a temporary name until [`Writer::finish`]).
    pub fn create(path: &Path, compress: bool) -> Result<Writer, ImageError> {
        Ok(Writer {
            inner: ImageWriter::create(path)?,
            compress,
            metadata: 0,
        })
    }

    /// Write the META section (once, first).
    pub fn meta(&mut self, meta: &Meta) -> Result<(), ImageError> {
        self.section(kind::META, false, &state::process::enc_meta(meta))?;
        Ok(())
    }

    /// Write the ZOMBIES section (after META, before the processes), if there are any.
    pub fn zombies(&mut self, zombies: &[Zombie]) -> Result<(), ImageError> {
        if !zombies.is_empty() {
            self.section(kind::ZOMBIES, false, &state::process::enc_zombies(zombies))?;
        }
        Ok(())
    }

    /// Write one process's metadata sections (all but PAGES and PAGEMAP).
    pub fn process(&mut self, image: &Image) -> Result<(), ImageError> {
        self.section(
            kind::PROCESS,
            false,
            &state::process::enc_process(&image.process),
        )?;
        for t in &image.threads {
            self.section(kind::THREAD, false, &state::threads::enc_thread(t))?;
        }
        self.section(
            kind::REGIONS,
            false,
            &state::memory::enc_regions(&image.regions),
        )?;
        let files = state::files::enc_files(&image.files);
        self.section(kind::FILES, self.compress, &files)?;
        self.section(kind::FDS, false, &state::files::enc_fds(&image.fds))?;
        for s in state::OPTIONAL_SECTIONS {
            if let Some(payload) = (s.encode)(image) {
                self.section(s.kind, false, &payload)?;
            }
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
        self.section(kind::PAGEMAP, false, &state::pages::enc_pagemap(pagemap))?;
        Ok(())
    }

    /// Write the FROZEN section: how long the processes were frozen, measured after the
    /// last page was written (once, after the last process, before [`Writer::finish`]).
    pub fn frozen(&mut self, frozen: std::time::Duration) -> Result<(), ImageError> {
        let us = u64::try_from(frozen.as_micros()).unwrap_or(u64::MAX);
        self.section(kind::FROZEN, false, &us.to_le_bytes())?;
        Ok(())
    }

    /// Write one metadata section, unless a reader would refuse it or the image it makes
    /// (a section beyond MAX_META_SECTION, an image beyond MAX_META_TOTAL): a checkpoint
    /// never writes what cannot be restarted.
    fn section(&mut self, kind: u32, compress: bool, payload: &[u8]) -> Result<(), ImageError> {
        let bytes = payload.len() as u64;
        let too_large = |limit| ImageError::TooLarge {
            section: kind::name(kind),
            bytes,
            limit,
        };
        if bytes > MAX_META_SECTION {
            return Err(too_large(MAX_META_SECTION));
        }
        self.metadata = self.metadata.saturating_add(bytes);
        if self.metadata > MAX_META_TOTAL {
            return Err(too_large(MAX_META_TOTAL));
        }
        self.inner.section(kind, compress, payload)?;
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

/// Refuse, from its section headers alone, an image whose metadata (every section but
/// PAGES, decompressed) would exceed MAX_META_TOTAL.
fn metadata_budget(path: &Path, sections: &[SectionInfo]) -> Result<(), ImageError> {
    let metadata: u64 = sections
        .iter()
        .filter(|s| s.kind != kind::PAGES && s.kind != container::END_KIND)
        .map(|s| s.raw_len)
        .fold(0, u64::saturating_add);
    if metadata > MAX_META_TOTAL {
        return Err(ImageError::Invalid {
            path: path.to_owned(),
            section: "META",
            what: format!(
                "its sections hold {metadata} bytes of metadata, more than the {MAX_META_TOTAL} an image may"
            ),
        });
    }
    Ok(())
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
    /// Optional sections by kind, decoded once the mandatory ones are.
    optional: Vec<(u32, Vec<u8>)>,
    pages: Option<SectionInfo>,
}

/// An opened image: every record decoded and validated; page data ready to stream.
#[derive(Debug)]
pub struct Reader {
    inner: ImageReader,
    /// One image per process, the root of the scope first.
    images: Vec<Image>,
    /// The page data of each image.
    pages: Vec<Option<SectionInfo>>,
    /// Exited, unreaped processes of the scope.
    zombies: Vec<Zombie>,
}

impl Reader {
    /// Open `path`, verify the container, decode and validate every record.
    pub fn open(path: &Path) -> Result<Reader, ImageError> {
        let inner = ImageReader::open(path)?;
        metadata_budget(path, inner.sections())?;
        let mut meta = None;
        let mut frozen_us = None;
        let mut zombies: Vec<Zombie> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for info in inner.sections() {
            let section = kind::name(info.kind);
            let cx = Ctx { path, section };
            let optional = state::optional_section(info.kind).is_some();
            let known = optional
                || matches!(
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
                        | kind::FROZEN
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
                kind::META | kind::ZOMBIES | kind::FROZEN => {}
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
            match info.kind {
                kind::META => {
                    meta = Some(state::process::dec_meta(&data, &cx)?);
                    continue;
                }
                kind::ZOMBIES => {
                    zombies.extend(state::process::dec_zombies(&data, &cx)?);
                    continue;
                }
                kind::FROZEN => {
                    let bytes: [u8; 8] = data
                        .as_slice()
                        .try_into()
                        .map_err(|_| cx.invalid(format!("{} bytes, not 8", data.len())))?;
                    if frozen_us.replace(u64::from_le_bytes(bytes)).is_some() {
                        return Err(cx.invalid("appears twice"));
                    }
                    continue;
                }
                _ => {}
            }
            let Some(g) = groups.last_mut() else {
                return Err(cx.invalid("section before the first PROCESS section"));
            };
            match info.kind {
                kind::PROCESS => g.process = Some(state::process::dec_process(&data, &cx)?),
                kind::THREAD => {
                    if g.threads.len() >= MAX_THREADS {
                        return Err(cx.invalid("too many threads"));
                    }
                    g.threads.push(state::threads::dec_thread(&data, &cx)?);
                }
                kind::REGIONS => g.regions = Some(state::memory::dec_regions(&data, &cx)?),
                kind::FILES => g.files = Some(state::files::dec_files(&data, &cx)?),
                kind::FDS => g.fds_raw = Some(data),
                kind::PAGEMAP => g.pagemap_raw = Some(data),
                k => g.optional.push((k, data)),
            }
        }
        let missing = |section| ImageError::Missing {
            path: path.to_owned(),
            section,
        };
        let mut meta = meta.ok_or_else(|| missing("META"))?;
        if let Some(us) = frozen_us {
            meta.frozen_us = us;
        }
        if groups.is_empty() {
            return Err(missing("PROCESS"));
        }
        let mut images: Vec<Image> = Vec::with_capacity(groups.len());
        let mut pages = Vec::with_capacity(groups.len());
        for g in groups {
            let (image, p) = Self::assemble(path, &meta, g, &images)?;
            images.push(image);
            pages.push(p);
        }
        for z in &zombies {
            if images.iter().any(|i| i.process.pid == z.pid)
                || !images.iter().any(|i| i.process.pid == z.ppid)
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
            pages,
            zombies,
        })
    }

    /// Validate one process's sections into an [`Image`].
    fn assemble(
        path: &Path,
        meta: &Meta,
        g: Group,
        before: &[Image],
    ) -> Result<(Image, Option<SectionInfo>), ImageError> {
        let missing = |section| ImageError::Missing {
            path: path.to_owned(),
            section,
        };
        let cx = |section| Ctx { path, section };
        let process = g.process.ok_or_else(|| missing("PROCESS"))?;
        if before.iter().any(|i| i.process.pid == process.pid) {
            return Err(cx("PROCESS").invalid(format!("process {} appears twice", process.pid)));
        }
        let regions = g.regions.ok_or_else(|| missing("REGIONS"))?;
        let files = g.files.ok_or_else(|| missing("FILES"))?;
        let fds = state::files::dec_fds(
            &g.fds_raw.ok_or_else(|| missing("FDS"))?,
            files.len(),
            &cx("FDS"),
        )?;
        let pagemap = state::pages::dec_pagemap(
            &g.pagemap_raw.ok_or_else(|| missing("PAGEMAP"))?,
            &regions,
            &cx("PAGEMAP"),
        )?;
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
        let mut image = Image {
            meta: meta.clone(),
            process,
            threads,
            regions,
            files,
            fds,
            pagemap,
            shared_anon: Vec::new(),
            shared_files: Vec::new(),
            locks: Vec::new(),
            socket_shutdown: Vec::new(),
            unix_queues: Vec::new(),
            timers: Timers::default(),
        };
        // Optional state, in the order of the registry (each may refer to the mandatory
        // records decoded above, or to earlier processes).
        for s in state::OPTIONAL_SECTIONS {
            for (_, raw) in g.optional.iter().filter(|(k, _)| *k == s.kind) {
                (s.decode)(raw, &mut image, before, &cx(s.name))?;
            }
        }
        Ok((image, g.pages))
    }

    /// Every process of the image, the root of the scope first.
    pub fn images(&self) -> impl ExactSizeIterator<Item = &Image> + '_ {
        self.images.iter()
    }

    /// The page data of process `index` (in [`Reader::images`] order), checked at the end.
    pub fn pages_of(&self, index: usize) -> Result<Option<container::SectionRead>, ImageError> {
        self.pages
            .get(index)
            .and_then(Option::as_ref)
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
        &self.images[0]
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
        for p in self.pages.iter().flatten() {
            self.inner.verify(p)?;
        }
        Ok(())
    }

    /// Size of the image file's sections, and whether each passes its checksum and, when
    /// compressed, decompresses to its recorded length (every section is read whole).
    pub fn verify(&self) -> Vec<(u32, u64, Result<(), ContainerError>)> {
        self.inner
            .sections()
            .iter()
            .map(|s| (s.kind, s.stored_len, self.inner.verify_decoded(s)))
            .collect()
    }

    /// The UID owning the image file, from `fstat` of the descriptor it is read from (the
    /// owner of the bytes decoded here, whatever the path points to now).
    pub fn owner(&self) -> u32 {
        std::os::unix::fs::MetadataExt::uid(self.inner.metadata())
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
    use std::path::PathBuf;

    #[test]
    fn metadata_beyond_the_budget_is_refused_by_its_headers() {
        let section = |kind, raw_len| SectionInfo {
            kind,
            compressed: true,
            offset: 0,
            stored_len: 100,
            raw_len,
            checksum: 0,
        };
        let path = Path::new("crafted");
        // Three compressed FILES sections that each inflate to the per-section limit.
        let bomb = [
            section(kind::FILES, MAX_META_SECTION),
            section(kind::FILES, MAX_META_SECTION),
            section(kind::FILES, MAX_META_SECTION),
        ];
        let err = metadata_budget(path, &bomb).unwrap_err();
        assert!(err.to_string().contains("bytes of metadata"), "{err}");
        // Page data does not count; two gigabytes of metadata do not pass, one does.
        let pages = [
            section(kind::PAGES, u64::MAX),
            section(kind::FILES, 1 << 30),
        ];
        metadata_budget(path, &pages).unwrap();
        let two = [
            section(kind::FILES, MAX_META_TOTAL),
            section(kind::THREAD, 1),
        ];
        assert!(metadata_budget(path, &two).is_err());
    }

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
            socket_shutdown: Vec::new(),
            unix_queues: Vec::new(),
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

    /// The frozen time written after the last process is the one read back; an image
    /// without it keeps META's; twice is refused.
    #[test]
    fn frozen_time_comes_after_the_pages() {
        let path = tmp("frozen");
        let img = sample();
        let write_frozen = |times: &[u64]| {
            let mut w = Writer::create(&path, false).unwrap();
            w.metadata(&img).unwrap();
            let mut s = w.pages().unwrap();
            s.write_all(&[0xab; 8192]).unwrap();
            s.finish().unwrap();
            w.pagemap(&img.pagemap).unwrap();
            for &us in times {
                w.frozen(std::time::Duration::from_micros(us)).unwrap();
            }
            w.finish().unwrap();
        };
        write_frozen(&[]);
        assert_eq!(Reader::open(&path).unwrap().image().meta.frozen_us, 2);
        write_frozen(&[1_234_567]);
        let r = Reader::open(&path).unwrap();
        assert_eq!(r.image().meta.frozen_us, 1_234_567);
        assert!(r.verify().iter().any(|(k, _, _)| *k == kind::FROZEN));
        assert_eq!(kind::name(kind::FROZEN), "FROZEN");
        write_frozen(&[1, 2]);
        let err = Reader::open(&path).unwrap_err().to_string();
        assert!(err.contains("FROZEN") && err.contains("twice"), "{err}");
    }

    /// A THREAD section more than the process had is refused.
    #[test]
    fn thread_sections_match_the_recorded_count() {
        let path = tmp("threads");
        let img = sample();
        write(&path, &img, &[0xab; 8192]);
        let r = ImageReader::open(&path).unwrap();
        let extra = r
            .sections()
            .iter()
            .find(|s| s.kind == kind::THREAD)
            .unwrap();
        let mut thread = r.read(extra, 1 << 20).unwrap();
        thread[..4].copy_from_slice(&102i32.to_le_bytes());
        let forged = tmp("threads-forged");
        let mut w = ImageWriter::create(&forged).unwrap();
        for s in r.sections() {
            w.section(s.kind, false, &r.read(s, 1 << 20).unwrap())
                .unwrap();
            if s == extra {
                w.section(kind::THREAD, false, &thread).unwrap();
            }
        }
        w.commit().unwrap();
        let err = Reader::open(&forged).unwrap_err().to_string();
        assert!(
            err.contains("THREAD_COUNT section: 3 THREAD sections, but process 100 had 2 threads"),
            "{err}"
        );
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
