//! Reading an image: the header and every section header checked at open, payloads
//! read with positioned reads and verified (length, checksum, decompression) as they
//! stream.

use super::*;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// Where one section lives in an image, as read from its header. Pass it back only to
/// the [`ImageReader`] it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionInfo {
    /// The caller-defined section kind.
    pub kind: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// File offset of the payload (just after the section header).
    pub offset: u64,
    /// Payload bytes stored in the file.
    pub stored_len: u64,
    /// Payload length after decompression (equal to `stored_len` when not compressed).
    pub raw_len: u64,
    /// xxh3-64 of the stored bytes.
    pub checksum: u64,
}

/// An opened, structurally verified image.
///
/// Opening checks the header and every section header; payload checksums are verified as
/// payloads are read ([`read`](Self::read), [`stream`](Self::stream),
/// [`verify`](Self::verify)).
#[derive(Debug)]
pub struct ImageReader {
    path: PathBuf,
    file: Arc<File>,
    /// `fstat` of `file`, the descriptor every section is read from.
    metadata: fs::Metadata,
    sections: Vec<SectionInfo>,
}

impl ImageReader {
    /// Open an image and walk its section headers (payloads are not read).
    pub fn open(path: &Path) -> Result<Self, ContainerError> {
        let p = || path.to_path_buf();
        let not_regular = || ContainerError::Open {
            path: p(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        };
        // Opened without blocking, so that a FIFO (or a device) in the image's place cannot
        // block the open; the file is then judged by `fstat` of this very descriptor, and
        // only regular files are read (where O_NONBLOCK changes nothing).
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| ContainerError::Open { path: p(), source })?;
        let meta = file
            .metadata()
            .map_err(|source| ContainerError::Open { path: p(), source })?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        let len = meta.len();
        let read_at = |buf: &mut [u8], offset: u64| {
            file.read_exact_at(buf, offset)
                .map_err(|source| ContainerError::Read {
                    path: p(),
                    offset,
                    source,
                })
        };

        // File header. A short file whose bytes match the magic so far is truncated.
        let mut head = [0u8; FILE_HEADER_LEN as usize];
        let have = usize::try_from(len.min(FILE_HEADER_LEN)).unwrap_or(0);
        read_at(&mut head[..have], 0)?;
        let magic_len = have.min(MAGIC.len());
        if head[..magic_len] != MAGIC[..magic_len] {
            return Err(ContainerError::BadMagic { path: p() });
        }
        if have < head.len() {
            return Err(ContainerError::Truncated {
                path: p(),
                offset: 0,
            });
        }
        let word =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let found = word(8);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(ContainerError::UnsupportedVersion {
                path: p(),
                found,
                oldest: OLDEST_READABLE_VERSION,
                supported: FORMAT_VERSION,
            });
        }
        if word(12) != 0 {
            return Err(ContainerError::CorruptHeader {
                path: p(),
                offset: 12,
            });
        }

        // Section headers, up to and including END.
        let mut sections = Vec::new();
        let mut pos = FILE_HEADER_LEN;
        loop {
            // Invariant: pos <= len.
            if len - pos < SECTION_HEADER_LEN {
                return Err(ContainerError::Truncated {
                    path: p(),
                    offset: pos,
                });
            }
            let mut raw = [0u8; SECTION_HEADER_LEN as usize];
            read_at(&mut raw, pos)?;
            let corrupt = || ContainerError::CorruptHeader {
                path: p(),
                offset: pos,
            };
            let header = SectionHeader::decode(&raw).ok_or_else(corrupt)?;
            let payload = pos + SECTION_HEADER_LEN;
            if header.flags & !FLAG_ZSTD != 0 {
                return Err(ContainerError::UnknownFlags {
                    path: p(),
                    kind: header.kind,
                    flags: header.flags,
                });
            }
            if header.stored_len > len - payload {
                return Err(ContainerError::Truncated {
                    path: p(),
                    offset: pos,
                });
            }
            let compressed = header.flags & FLAG_ZSTD != 0;
            if !compressed && header.raw_len != header.stored_len {
                return Err(corrupt());
            }
            if header.kind == END_KIND {
                if compressed || header.stored_len != END_PAYLOAD_LEN {
                    return Err(corrupt());
                }
                let mut count = [0u8; END_PAYLOAD_LEN as usize];
                read_at(&mut count, payload)?;
                if xxh3_64(&count) != header.checksum {
                    return Err(ContainerError::ChecksumMismatch {
                        path: p(),
                        kind: END_KIND,
                        offset: payload,
                    });
                }
                if u64::from_le_bytes(count) != sections.len() as u64 {
                    return Err(corrupt());
                }
                let end = payload + END_PAYLOAD_LEN;
                if end != len {
                    return Err(ContainerError::TrailingData {
                        path: p(),
                        offset: end,
                    });
                }
                break;
            }
            sections.push(SectionInfo {
                kind: header.kind,
                compressed,
                offset: payload,
                stored_len: header.stored_len,
                raw_len: header.raw_len,
                checksum: header.checksum,
            });
            pos = payload + header.stored_len;
        }

        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(file),
            metadata: meta,
            sections,
        })
    }

    /// `fstat` of the descriptor the image is read from, taken when it was opened: its
    /// owner is the owner of the bytes read, whatever happens to the path afterwards.
    pub fn metadata(&self) -> &fs::Metadata {
        &self.metadata
    }

    /// The image's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every section in file order, END excluded.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The first section of `kind`, if any.
    pub fn first(&self, kind: u32) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// Every section of `kind`, in file order.
    pub fn all(&self, kind: u32) -> impl Iterator<Item = &SectionInfo> + '_ {
        self.sections.iter().filter(move |s| s.kind == kind)
    }

    /// Read a whole section into memory, decompressed and checksum-verified.
    ///
    /// Fails with [`ContainerError::TooLarge`] before reading anything if the section's
    /// decompressed length exceeds `max_len`; within that limit memory is only committed
    /// as data actually arrives, so a tampered length cannot drive the allocation.
    /// Meant for metadata-sized sections: stream large ones with [`stream`](Self::stream).
    pub fn read(&self, info: &SectionInfo, max_len: u64) -> Result<Vec<u8>, ContainerError> {
        let too_large = || ContainerError::TooLarge {
            path: self.path.clone(),
            kind: info.kind,
            len: info.raw_len,
            max: max_len,
        };
        if info.raw_len > max_len {
            return Err(too_large());
        }
        let len = usize::try_from(info.raw_len).map_err(|_| too_large())?;
        let mut stream = self.stream(info)?;
        // A plain payload is backed by that many bytes in the file. A compressed one
        // may claim any raw_len up to max_len, so its buffer grows with the data that
        // actually decompresses instead of trusting the claim up front.
        let initial = if info.compressed {
            let guess = info.stored_len.saturating_mul(4).max(IO_BUF as u64);
            usize::try_from(guess).unwrap_or(len).min(len)
        } else {
            len
        };
        let mut out = vec![0u8; initial];
        let mut filled = 0;
        let mut probe = [0u8; 1];
        loop {
            if filled == out.len() && out.len() < len {
                let grown = out.len().saturating_mul(2).max(IO_BUF).min(len);
                out.resize(grown, 0);
            }
            let n = match out.get_mut(filled..) {
                Some(rest) if !rest.is_empty() => stream.read_checked(rest)?,
                // Full: one more read confirms the end and runs the final checks.
                _ => stream.read_checked(&mut probe)?,
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        // read_checked guarantees exactly raw_len bytes at the end.
        out.truncate(filled);
        Ok(out)
    }

    /// Stream a section's decompressed payload.
    ///
    /// The checksum covers the whole payload, so it is checked when the stream reaches
    /// its end: the final read fails with an `io::Error` of kind `InvalidData` (carrying
    /// [`ContainerError::ChecksumMismatch`]) instead of returning `Ok(0)`. Data read
    /// before then must be treated as provisional until end of stream is reached.
    pub fn stream(&self, info: &SectionInfo) -> Result<SectionRead, ContainerError> {
        let capacity = usize::try_from(info.stored_len)
            .unwrap_or(IO_BUF)
            .clamp(4096, IO_BUF);
        let region = Region {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            pos: info.offset,
            end: info.offset.saturating_add(info.stored_len),
            hasher: Xxh3::new(),
        };
        let buffered = BufReader::with_capacity(capacity, region);
        let inner = if info.compressed {
            let decompress_err = |source| ContainerError::Decompress {
                path: self.path.clone(),
                kind: info.kind,
                source,
            };
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(buffered).map_err(decompress_err)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(decompress_err)?;
            Source::Zstd(decoder)
        } else {
            Source::Plain(buffered)
        };
        Ok(SectionRead {
            inner,
            info: *info,
            produced: 0,
            state: ReadState::Reading,
        })
    }

    /// Verify one section's checksum by streaming its stored bytes (without
    /// decompressing them).
    pub fn verify(&self, info: &SectionInfo) -> Result<(), ContainerError> {
        let mut region = Region {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            pos: info.offset,
            end: info.offset.saturating_add(info.stored_len),
            hasher: Xxh3::new(),
        };
        region.drain()?;
        if region.hasher.digest() != info.checksum {
            return Err(ContainerError::ChecksumMismatch {
                path: self.path.clone(),
                kind: info.kind,
                offset: info.offset,
            });
        }
        Ok(())
    }
}

impl ImageReader {
    /// Verify one section completely: its checksum and, when it is compressed, that it
    /// decompresses to exactly its recorded length. The checksum covers the stored
    /// bytes, so a compressed payload forged or damaged with a matching checksum is
    /// found only by decompressing it.
    pub fn verify_decoded(&self, info: &SectionInfo) -> Result<(), ContainerError> {
        self.verify(info)?;
        if !info.compressed {
            return Ok(());
        }
        let mut stream = self.stream(info)?;
        let mut buf = vec![0u8; IO_BUF];
        while stream.read_checked(&mut buf)? > 0 {}
        Ok(())
    }
}

/// The stored bytes of one section, read with positioned reads and hashed as they pass.
struct Region {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    end: u64,
    hasher: Xxh3,
}

impl Region {
    fn read_region(&mut self, buf: &mut [u8]) -> Result<usize, ContainerError> {
        let left = self.end.saturating_sub(self.pos);
        // Bounded so that the bytes just read are still in cache when they are hashed.
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .min(IO_BUF);
        if want == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..want];
        let n = loop {
            match self.file.read_at(buf, self.pos) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ContainerError::Read {
                        path: self.path.clone(),
                        offset: self.pos,
                        source,
                    });
                }
            }
        };
        if n == 0 {
            // The file shrank after it was opened.
            return Err(ContainerError::Truncated {
                path: self.path.clone(),
                offset: self.pos,
            });
        }
        let got = buf.get(..n).unwrap_or(buf);
        self.hasher.update(got);
        self.pos += got.len() as u64;
        Ok(got.len())
    }

    /// Read and hash whatever is left of the region.
    fn drain(&mut self) -> Result<(), ContainerError> {
        let mut scratch =
            vec![
                0u8;
                IO_BUF.min(usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(IO_BUF))
            ];
        while self.read_region(&mut scratch)? > 0 {}
        Ok(())
    }
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.read_region(buf)?)
    }
}

enum Source {
    Plain(BufReader<Region>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Region>>),
}

impl Source {
    fn region(&mut self) -> &mut Region {
        match self {
            Self::Plain(r) => r.get_mut(),
            Self::Zstd(d) => d.get_mut().get_mut(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    Done,
    /// An error was reported; every later read reports it again.
    Failed(FailKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Checksum,
    Decompress,
    Other,
}

/// A section's decompressed payload as an `io::Read`; see [`ImageReader::stream`].
///
/// Errors are `io::Error`s carrying a [`ContainerError`] (recover it with `into_inner`
/// and `downcast`); a checksum failure has kind `InvalidData`.
pub struct SectionRead {
    inner: Source,
    info: SectionInfo,
    produced: u64,
    state: ReadState,
}

impl std::fmt::Debug for SectionRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectionRead")
            .field("info", &self.info)
            .field("produced", &self.produced)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SectionRead {
    /// The section being read.
    pub fn info(&self) -> &SectionInfo {
        &self.info
    }

    fn path(&mut self) -> PathBuf {
        self.inner.region().path.clone()
    }

    fn checksum_error(&mut self) -> ContainerError {
        ContainerError::ChecksumMismatch {
            path: self.path(),
            kind: self.info.kind,
            offset: self.info.offset,
        }
    }

    fn length_error(&mut self, detail: String) -> ContainerError {
        ContainerError::Decompress {
            path: self.path(),
            kind: self.info.kind,
            source: io::Error::new(io::ErrorKind::InvalidData, detail),
        }
    }

    /// Hash the rest of the stored bytes; `Some(error)` if they fail the checksum.
    fn checksum_verdict(&mut self) -> Result<Option<ContainerError>, ContainerError> {
        let region = self.inner.region();
        region.drain()?;
        if region.hasher.digest() == self.info.checksum {
            Ok(None)
        } else {
            Ok(Some(self.checksum_error()))
        }
    }

    fn fail(&mut self, kind: FailKind, err: ContainerError) -> ContainerError {
        self.state = ReadState::Failed(kind);
        err
    }

    /// `read` with a typed error.
    fn read_checked(&mut self, buf: &mut [u8]) -> Result<usize, ContainerError> {
        match self.state {
            ReadState::Reading => {}
            ReadState::Done => return Ok(0),
            ReadState::Failed(FailKind::Checksum) => return Err(self.checksum_error()),
            ReadState::Failed(FailKind::Decompress) => {
                return Err(self.length_error("the stream already failed".into()));
            }
            ReadState::Failed(FailKind::Other) => {
                return Err(ContainerError::Read {
                    path: self.path(),
                    offset: self.info.offset,
                    source: io::Error::other("the stream already failed"),
                });
            }
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let result = match &mut self.inner {
            Source::Plain(r) => r.read(buf),
            Source::Zstd(d) => d.read(buf),
        };
        match result {
            Ok(0) => {
                if let Some(err) = self
                    .checksum_verdict()
                    .map_err(|e| self.fail(FailKind::Other, e))?
                {
                    return Err(self.fail(FailKind::Checksum, err));
                }
                if self.produced != self.info.raw_len {
                    let detail = format!(
                        "payload ends after {} bytes but the header says {}",
                        self.produced, self.info.raw_len
                    );
                    let err = self.length_error(detail);
                    return Err(self.fail(FailKind::Decompress, err));
                }
                self.state = ReadState::Done;
                Ok(0)
            }
            Ok(n) => {
                self.produced += n as u64;
                if self.produced > self.info.raw_len {
                    // Corrupt stored bytes are the likelier cause; name them if so.
                    let err = match self.checksum_verdict() {
                        Ok(Some(checksum)) => checksum,
                        _ => self.length_error(format!(
                            "payload is longer than the {} bytes the header says",
                            self.info.raw_len
                        )),
                    };
                    let kind = if matches!(err, ContainerError::ChecksumMismatch { .. }) {
                        FailKind::Checksum
                    } else {
                        FailKind::Decompress
                    };
                    return Err(self.fail(kind, err));
                }
                Ok(n)
            }
            Err(e) if carries_container(&e) => {
                let err = unwrap_io(e, |source| ContainerError::Read {
                    path: self.inner.region().path.clone(),
                    offset: self.info.offset,
                    source,
                });
                Err(self.fail(FailKind::Other, err))
            }
            Err(e) => {
                // Only the zstd decoder produces foreign errors. Report a checksum
                // failure in preference: corruption is the likelier cause.
                let err = match self.checksum_verdict() {
                    Ok(Some(checksum)) => checksum,
                    Ok(None) => ContainerError::Decompress {
                        path: self.path(),
                        kind: self.info.kind,
                        source: e,
                    },
                    Err(other) => other,
                };
                let kind = match err {
                    ContainerError::ChecksumMismatch { .. } => FailKind::Checksum,
                    ContainerError::Decompress { .. } => FailKind::Decompress,
                    _ => FailKind::Other,
                };
                Err(self.fail(kind, err))
            }
        }
    }
}

impl Read for SectionRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.read_checked(buf)?)
    }
}
