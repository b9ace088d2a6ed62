//! The image file container: a versioned header followed by checksummed, optionally
//! zstd-compressed sections, written atomically (temp file, fsync, rename) and read back
//! with every length and checksum verified before it is trusted.
//!
//! # File layout
//!
//! All integers are little-endian.
//!
//! | offset         | size | field        | meaning                                                      |
//! |----------------|------|--------------|--------------------------------------------------------------|
//! | 0              | 8    | magic        | `b"LIFEBOAT"`                                                |
//! | 8              | 4    | version      | [`FORMAT_VERSION`]; any other value is refused               |
//! | 12             | 4    | reserved     | must be 0                                                    |
//! | 16             |      | sections     | zero or more sections, then the END section                  |
//!
//! Each section is a 40-byte header followed by `stored_len` payload bytes:
//!
//! | offset | size | field        | meaning                                                          |
//! |--------|------|--------------|------------------------------------------------------------------|
//! | +0     | 4    | kind         | chosen by the caller; [`END_KIND`] is reserved for the last one   |
//! | +4     | 4    | flags        | bit 0 ([`FLAG_ZSTD`]): payload is one zstd stream; other bits 0  |
//! | +8     | 8    | stored_len   | payload bytes that follow the header                             |
//! | +16    | 8    | raw_len      | payload length after decompression (= `stored_len` if plain)     |
//! | +24    | 8    | checksum     | xxh3-64 of the `stored_len` stored bytes                         |
//! | +32    | 8    | header_check | xxh3-64 of header bytes +0..+32, so a corrupt length is caught before use |
//! | +40    |      | payload      | `stored_len` bytes                                               |
//!
//! The last section has kind [`END_KIND`], flags 0, and an 8-byte payload holding the
//! number of sections before it (`u64`). Nothing may follow it. A file without a valid
//! END section did not finish being written and is reported as
//! [`ContainerError::Truncated`].
//!
//! # Writing
//!
//! [`ImageWriter`] writes to `.{file_name}.partial.{pid}` beside the final path (created
//! with `O_EXCL`, mode 0600) through a 1 MiB buffer. Small payloads go in with
//! [`ImageWriter::section`]; large ones are streamed through [`ImageWriter::stream`],
//! which hashes (and optionally compresses) on the fly and patches the section header
//! when the stream finishes. [`ImageWriter::commit`] appends END, fsyncs, renames into
//! place and fsyncs the directory, so the final name only ever holds a complete image.
//! A writer dropped without `commit` removes its temporary file.
//!
//! # Reading
//!
//! [`ImageReader::open`] checks the header and walks every section header (verifying
//! `header_check`, the flags, and that each payload lies inside the file) without reading
//! payloads. Payloads are read with positioned reads, so one reader can serve several
//! [`SectionRead`] streams at once.
#![warn(missing_docs)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The first eight bytes of every image.
pub const MAGIC: [u8; 8] = *b"LIFEBOAT";
/// The format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Section kind of the mandatory last section; callers cannot use it.
pub const END_KIND: u32 = 0xFFFF_FFFF;
/// Section flag bit: the payload is a zstd stream.
pub const FLAG_ZSTD: u32 = 1;
/// Size of the file header.
pub const FILE_HEADER_LEN: u64 = 16;
/// Size of a section header.
pub const SECTION_HEADER_LEN: u64 = 40;

/// Buffer size under every read and write path.
const IO_BUF: usize = 1 << 20;
/// zstd level for compressed sections: fast enough to keep up with memory dumping.
const ZSTD_LEVEL: i32 = 1;
/// Largest zstd window a reader accepts (8 MiB), so a tampered frame header cannot make
/// the decoder allocate more; every level up to 19 stays within it.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Length of the END section's payload.
const END_PAYLOAD_LEN: u64 = 8;

/// Errors of the image container. Every variant names the file and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The temporary image file could not be created.
    #[error("{path}: cannot create the image file (check that the directory exists and is writable, and remove a stale partial file)", path = .path.display())]
    Create {
        /// The file that could not be created.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing to the temporary image file failed.
    #[error("{path}: cannot write the image", path = .path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A section payload could not be compressed.
    #[error("{path}: cannot compress section {kind:#x}", path = .path.display())]
    Compress {
        /// The file being written.
        path: PathBuf,
        /// Kind of the section being written.
        kind: u32,
        /// The underlying error.
        source: io::Error,
    },
    /// Flushing a file or directory to stable storage failed.
    #[error("{path}: cannot flush the image to stable storage", path = .path.display())]
    Sync {
        /// The file or directory being synced.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The finished temporary file could not be renamed to its final name.
    #[error("cannot move the finished image {from} into place as {to}", from = .from.display(), to = .to.display())]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The final path.
        to: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The caller tried to write a section with the reserved END kind.
    #[error("{path}: section kind {kind:#x} is reserved for the end marker and cannot be written", path = .path.display())]
    ReservedKind {
        /// The file being written.
        path: PathBuf,
        /// The rejected kind.
        kind: u32,
    },
    /// An earlier write failed, or a section stream was dropped before `finish`, so the
    /// image cannot be completed.
    #[error("{path}: an earlier write failed or a section stream was abandoned, so this image cannot be completed; start a new one", path = .path.display())]
    Incomplete {
        /// The file being written.
        path: PathBuf,
    },
    /// The image file could not be opened.
    #[error("{path}: cannot open the image", path = .path.display())]
    Open {
        /// The file that could not be opened.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the image failed at the operating-system level.
    #[error("{path}: cannot read the image at offset {offset}", path = .path.display())]
    Read {
        /// The image.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// The file does not start with the image magic.
    #[error("{path}: not a lifeboat image (wrong magic number)", path = .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The image was written in a format version this build cannot read.
    #[error("{path}: image format version {found} is not supported (this build reads version {supported}); use the lifeboat release that wrote it", path = .path.display())]
    UnsupportedVersion {
        /// The image.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// A header fails its own check or holds impossible values.
    #[error("{path}: the header at offset {offset} is corrupt (the image is damaged or was modified)", path = .path.display())]
    CorruptHeader {
        /// The image.
        path: PathBuf,
        /// Offset of the bad header (or of the bad field in the file header).
        offset: u64,
    },
    /// The file ends before its END section.
    #[error("{path}: the image is truncated: the part starting at offset {offset} is incomplete or missing (the checkpoint did not finish or the file was cut short); take a new checkpoint", path = .path.display())]
    Truncated {
        /// The image.
        path: PathBuf,
        /// Offset of the first incomplete or missing part (file header or section).
        offset: u64,
    },
    /// Data follows the END section.
    #[error("{path}: unexpected data after the end of the image at offset {offset} (the file was modified or appended to)", path = .path.display())]
    TrailingData {
        /// The image.
        path: PathBuf,
        /// Offset of the first byte after the END section.
        offset: u64,
    },
    /// A section's stored bytes do not match its checksum.
    #[error("{path}: section {kind:#x} at offset {offset} fails its checksum (the image is corrupt or was modified)", path = .path.display())]
    ChecksumMismatch {
        /// The image.
        path: PathBuf,
        /// Kind of the failing section.
        kind: u32,
        /// Offset of the section's payload.
        offset: u64,
    },
    /// A compressed section could not be decompressed, or decompressed to a length other
    /// than its header says.
    #[error("{path}: section {kind:#x} cannot be decompressed (the image is corrupt)", path = .path.display())]
    Decompress {
        /// The image.
        path: PathBuf,
        /// Kind of the failing section.
        kind: u32,
        /// The underlying error.
        source: io::Error,
    },
    /// A section is larger than the caller allows for its kind.
    #[error("{path}: section {kind:#x} is {len} bytes, more than the {max} bytes allowed for it (the image is corrupt or was modified)", path = .path.display())]
    TooLarge {
        /// The image.
        path: PathBuf,
        /// Kind of the section.
        kind: u32,
        /// Its decompressed length.
        len: u64,
        /// The caller's limit.
        max: u64,
    },
    /// A section header sets flag bits this build does not know.
    #[error("{path}: section {kind:#x} has unknown flags {flags:#x} (the image was written by a newer lifeboat or is corrupt)", path = .path.display())]
    UnknownFlags {
        /// The image.
        path: PathBuf,
        /// Kind of the section.
        kind: u32,
        /// The flags found.
        flags: u32,
    },
}

impl ContainerError {
    /// The `io::ErrorKind` this error maps to when it travels inside an `io::Error`.
    fn io_kind(&self) -> io::ErrorKind {
        match self {
            Self::Create { source, .. }
            | Self::Write { source, .. }
            | Self::Compress { source, .. }
            | Self::Sync { source, .. }
            | Self::Rename { source, .. }
            | Self::Open { source, .. }
            | Self::Read { source, .. } => source.kind(),
            Self::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            Self::ReservedKind { .. } | Self::Incomplete { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl From<ContainerError> for io::Error {
    /// Wrap the error so that it can cross an `io::Read`/`io::Write` boundary; it can be
    /// recovered with `io::Error::into_inner` and `downcast`.
    fn from(err: ContainerError) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

/// Whether `err` carries a [`ContainerError`].
fn carries_container(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<ContainerError>())
}

/// Recover the [`ContainerError`] inside `err`, or classify a foreign error with `wrap`.
fn unwrap_io(err: io::Error, wrap: impl FnOnce(io::Error) -> ContainerError) -> ContainerError {
    if !carries_container(&err) {
        return wrap(err);
    }
    let kind = err.kind();
    match err.into_inner().map(|e| e.downcast::<ContainerError>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => wrap(io::Error::new(kind, other)),
        None => wrap(io::Error::from(kind)),
    }
}

/// A section header as it appears on disk, minus `header_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SectionHeader {
    kind: u32,
    flags: u32,
    stored_len: u64,
    raw_len: u64,
    checksum: u64,
}

impl SectionHeader {
    fn encode(&self) -> [u8; SECTION_HEADER_LEN as usize] {
        let mut out = [0u8; SECTION_HEADER_LEN as usize];
        let fields = [
            (0..4, &self.kind.to_le_bytes()[..]),
            (4..8, &self.flags.to_le_bytes()[..]),
            (8..16, &self.stored_len.to_le_bytes()[..]),
            (16..24, &self.raw_len.to_le_bytes()[..]),
            (24..32, &self.checksum.to_le_bytes()[..]),
        ];
        for (range, bytes) in fields {
            out[range].copy_from_slice(bytes);
        }
        let check = xxh3_64(&out[..32]);
        out[32..].copy_from_slice(&check.to_le_bytes());
        out
    }

    /// Decode a header; `None` if it fails its `header_check`.
    fn decode(raw: &[u8; SECTION_HEADER_LEN as usize]) -> Option<Self> {
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&raw[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if xxh3_64(&raw[..32]) != u64_at(32) {
            return None;
        }
        Some(Self {
            kind: u32_at(0),
            flags: u32_at(4),
            stored_len: u64_at(8),
            raw_len: u64_at(16),
            checksum: u64_at(24),
        })
    }
}

/// Writes one image to a temporary file and moves it into place on [`commit`].
///
/// Dropping the writer without committing (an error path, a panic) removes the temporary
/// file; the final path is never touched until `commit`.
///
/// [`commit`]: ImageWriter::commit
#[derive(Debug)]
pub struct ImageWriter {
    out: BufWriter<File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    /// Bytes handed to `out` so far: the logical file length.
    written: u64,
    /// Sections completed so far (END excluded).
    sections: u64,
    /// Set while a stream is open and after any failed write; blocks further use.
    poisoned: bool,
    /// Set once the temporary file has been renamed away.
    committed: bool,
}

impl ImageWriter {
    /// Start an image that will appear at `final_path` on [`commit`](Self::commit).
    ///
    /// Creates `.{file_name}.partial.{pid}` in the same directory (`O_EXCL`, mode 0600)
    /// and writes the file header.
    pub fn create(final_path: &Path) -> Result<Self, ContainerError> {
        let Some((dir, temp_path)) = partial_paths(final_path, std::process::id()) else {
            return Err(ContainerError::Create {
                path: final_path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
            });
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|source| ContainerError::Create {
                path: temp_path.clone(),
                source,
            })?;
        let mut writer = Self {
            out: BufWriter::with_capacity(IO_BUF, file),
            temp_path,
            final_path: final_path.to_path_buf(),
            dir,
            written: 0,
            sections: 0,
            poisoned: false,
            committed: false,
        };
        let mut header = [0u8; FILE_HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        writer.put(&header)?;
        Ok(writer)
    }

    /// Bytes written to the image so far (headers included), for progress reports.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Append bytes, poisoning the writer on failure.
    fn put(&mut self, bytes: &[u8]) -> Result<(), ContainerError> {
        if let Err(source) = self.out.write_all(bytes) {
            self.poisoned = true;
            return Err(ContainerError::Write {
                path: self.temp_path.clone(),
                source,
            });
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Refuse to write after a failure or with the reserved kind.
    fn check_usable(&self, kind: u32) -> Result<(), ContainerError> {
        if self.poisoned {
            return Err(ContainerError::Incomplete {
                path: self.temp_path.clone(),
            });
        }
        if kind == END_KIND {
            return Err(ContainerError::ReservedKind {
                path: self.temp_path.clone(),
                kind,
            });
        }
        Ok(())
    }

    /// Write a whole section whose payload is in memory.
    ///
    /// With `compress`, the payload is compressed with zstd; if that does not make it
    /// smaller it is stored plain instead (the reader handles both transparently, and
    /// [`SectionInfo::compressed`] tells which happened).
    pub fn section(
        &mut self,
        kind: u32,
        compress: bool,
        payload: &[u8],
    ) -> Result<(), ContainerError> {
        self.check_usable(kind)?;
        let compressed;
        let (flags, stored) = if compress {
            compressed = zstd::bulk::compress(payload, ZSTD_LEVEL).map_err(|source| {
                ContainerError::Compress {
                    path: self.temp_path.clone(),
                    kind,
                    source,
                }
            })?;
            if compressed.len() < payload.len() {
                (FLAG_ZSTD, compressed.as_slice())
            } else {
                (0, payload)
            }
        } else {
            (0, payload)
        };
        let header = SectionHeader {
            kind,
            flags,
            stored_len: stored.len() as u64,
            raw_len: payload.len() as u64,
            checksum: xxh3_64(stored),
        };
        self.put(&header.encode())?;
        self.put(stored)?;
        self.sections += 1;
        Ok(())
    }

    /// Start a section whose payload is streamed through the returned writer, for
    /// payloads too large to hold in memory. The section is complete only after
    /// [`SectionStream::finish`]; until then no other section can be written, and if the
    /// stream is dropped unfinished the image can no longer be committed.
    ///
    /// Each stream flushes the write buffer when it finishes, so prefer
    /// [`section`](Self::section) for small payloads.
    pub fn stream(
        &mut self,
        kind: u32,
        compress: bool,
    ) -> Result<SectionStream<'_>, ContainerError> {
        self.check_usable(kind)?;
        let header_pos = self.written;
        // Placeholder: all zeroes fails header_check, so an unfinished stream can never
        // be mistaken for a valid section.
        self.put(&[0u8; SECTION_HEADER_LEN as usize])?;
        self.poisoned = true;
        let sink = HashingSink {
            out: &mut self.out,
            written: &mut self.written,
            path: &self.temp_path,
            hasher: Xxh3::new(),
            stored: 0,
        };
        let sink = if compress {
            let encoder =
                zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(|source| {
                    ContainerError::Compress {
                        path: self.temp_path.clone(),
                        kind,
                        source,
                    }
                })?;
            Sink::Zstd(encoder)
        } else {
            Sink::Plain(sink)
        };
        Ok(SectionStream {
            sink,
            path: &self.temp_path,
            kind,
            header_pos,
            raw_len: 0,
            failed: false,
            poisoned: &mut self.poisoned,
            sections: &mut self.sections,
        })
    }

    /// Finish the image: write the END section, flush and fsync the file, rename it to
    /// the final path (replacing any file there) and fsync the directory. Returns the
    /// image's total size in bytes.
    pub fn commit(mut self) -> Result<u64, ContainerError> {
        if self.poisoned {
            return Err(ContainerError::Incomplete {
                path: self.temp_path.clone(),
            });
        }
        let payload = self.sections.to_le_bytes();
        let end = SectionHeader {
            kind: END_KIND,
            flags: 0,
            stored_len: END_PAYLOAD_LEN,
            raw_len: END_PAYLOAD_LEN,
            checksum: xxh3_64(&payload),
        };
        self.put(&end.encode())?;
        self.put(&payload)?;
        self.out.flush().map_err(|source| ContainerError::Write {
            path: self.temp_path.clone(),
            source,
        })?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|source| ContainerError::Sync {
                path: self.temp_path.clone(),
                source,
            })?;
        fs::rename(&self.temp_path, &self.final_path).map_err(|source| ContainerError::Rename {
            from: self.temp_path.clone(),
            to: self.final_path.clone(),
            source,
        })?;
        self.committed = true;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| ContainerError::Sync {
                path: self.dir.clone(),
                source,
            })?;
        Ok(self.written)
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: nothing useful can be done with a failure here, and the
            // file's name marks it as partial.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// The directory of `final_path` and the temporary file beside it, or `None` if the
/// path has no file name.
fn partial_paths(final_path: &Path, pid: u32) -> Option<(PathBuf, PathBuf)> {
    let file_name = final_path.file_name()?;
    let dir = match final_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".partial.{pid}"));
    let temp_path = dir.join(temp_name);
    Some((dir, temp_path))
}

/// The byte sink under a section stream: hashes and counts the stored bytes.
struct HashingSink<'a> {
    out: &'a mut BufWriter<File>,
    written: &'a mut u64,
    path: &'a Path,
    hasher: Xxh3,
    stored: u64,
}

impl Write for HashingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf).map_err(|source| {
            io::Error::from(ContainerError::Write {
                path: self.path.to_path_buf(),
                source,
            })
        })?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hasher.update(done);
        self.stored += done.len() as u64;
        *self.written += done.len() as u64;
        Ok(done.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|source| {
            io::Error::from(ContainerError::Write {
                path: self.path.to_path_buf(),
                source,
            })
        })
    }
}

enum Sink<'a> {
    Plain(HashingSink<'a>),
    Zstd(zstd::stream::write::Encoder<'static, HashingSink<'a>>),
}

/// A section being streamed into an [`ImageWriter`]; see [`ImageWriter::stream`].
///
/// Write errors carry a [`ContainerError`] inside the `io::Error` (recover it with
/// `into_inner` and `downcast`). Call [`finish`](Self::finish) to complete the section.
pub struct SectionStream<'a> {
    sink: Sink<'a>,
    path: &'a Path,
    kind: u32,
    header_pos: u64,
    raw_len: u64,
    /// A write or flush failed: the stored bytes may not match what was accepted.
    failed: bool,
    poisoned: &'a mut bool,
    sections: &'a mut u64,
}

impl std::fmt::Debug for SectionStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SectionStream")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("compressed", &matches!(self.sink, Sink::Zstd(_)))
            .field("header_pos", &self.header_pos)
            .field("raw_len", &self.raw_len)
            .finish_non_exhaustive()
    }
}

impl SectionStream<'_> {
    fn hashing_sink(&self) -> &HashingSink<'_> {
        match &self.sink {
            Sink::Plain(s) => s,
            Sink::Zstd(e) => e.get_ref(),
        }
    }

    /// Bytes written to the image file so far, including earlier sections (compressed
    /// data still inside the encoder is not counted yet).
    pub fn bytes_written(&self) -> u64 {
        *self.hashing_sink().written
    }

    /// Payload bytes accepted so far, before compression.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Complete the section: flush the compressor, then patch the section header with
    /// the final lengths and checksum. Returns the stored (possibly compressed) length.
    ///
    /// Fails with [`ContainerError::Incomplete`] if any write to the stream failed.
    pub fn finish(self) -> Result<u64, ContainerError> {
        let path = self.path;
        if self.failed {
            return Err(ContainerError::Incomplete {
                path: path.to_path_buf(),
            });
        }
        let kind = self.kind;
        let write_err = |source| ContainerError::Write {
            path: path.to_path_buf(),
            source,
        };
        let (flags, sink) = match self.sink {
            Sink::Plain(s) => (0, s),
            Sink::Zstd(e) => {
                let sink = e.finish().map_err(|err| {
                    unwrap_io(err, |source| ContainerError::Compress {
                        path: path.to_path_buf(),
                        kind,
                        source,
                    })
                })?;
                (FLAG_ZSTD, sink)
            }
        };
        let header = SectionHeader {
            kind,
            flags,
            stored_len: sink.stored,
            raw_len: self.raw_len,
            checksum: sink.hasher.digest(),
        };
        // The placeholder may still sit in the buffer: flush before patching it in place.
        sink.out.flush().map_err(write_err)?;
        sink.out
            .get_ref()
            .write_all_at(&header.encode(), self.header_pos)
            .map_err(write_err)?;
        *self.poisoned = false;
        *self.sections += 1;
        Ok(sink.stored)
    }
}

impl Write for SectionStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = match &mut self.sink {
            Sink::Plain(s) => s.write(buf),
            Sink::Zstd(e) => e.write(buf),
        };
        let n = result.inspect_err(|_| self.failed = true)?;
        self.raw_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = match &mut self.sink {
            Sink::Plain(s) => s.flush(),
            Sink::Zstd(e) => e.flush(),
        };
        result.inspect_err(|_| self.failed = true)
    }
}

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
        // Checked before opening too, so that a FIFO cannot block the open.
        match fs::metadata(path) {
            Ok(meta) if !meta.is_file() => return Err(not_regular()),
            Ok(_) => {}
            Err(source) => return Err(ContainerError::Open { path: p(), source }),
        }
        let file = File::open(path).map_err(|source| ContainerError::Open { path: p(), source })?;
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
        if found != FORMAT_VERSION {
            return Err(ContainerError::UnsupportedVersion {
                path: p(),
                found,
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
            sections,
        })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (STYLE.md).
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique scratch directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "lifeboat-container-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic test data; `compressible` data has long repeats.
    fn pattern(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if compressible {
                let run = (x % 64) as usize + 1;
                let byte = (x >> 8) as u8 % 4;
                out.extend(std::iter::repeat_n(byte, run.min(len - out.len())));
            } else {
                let bytes = x.to_le_bytes();
                out.extend_from_slice(&bytes[..8.min(len - out.len())]);
            }
        }
        out
    }

    type Spec = (u32, bool, Vec<u8>);

    fn write_image(path: &Path, sections: &[Spec]) -> u64 {
        let mut w = ImageWriter::create(path).unwrap();
        for (kind, compress, payload) in sections {
            w.section(*kind, *compress, payload).unwrap();
        }
        w.commit().unwrap()
    }

    fn read_all(r: &ImageReader, info: &SectionInfo) -> Vec<u8> {
        let mut out = Vec::new();
        r.stream(info).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// Write `sections`, read them back every way, and compare.
    fn check(name: &str, sections: &[Spec]) {
        let dir = TestDir::new(name);
        let path = dir.path("img");
        let total = write_image(&path, sections);
        assert_eq!(total, fs::metadata(&path).unwrap().len(), "{name}");
        let r = ImageReader::open(&path).unwrap();
        assert_eq!(r.path(), path);
        assert_eq!(r.sections().len(), sections.len(), "{name}");
        for ((kind, compress, payload), info) in sections.iter().zip(r.sections()) {
            assert_eq!(info.kind, *kind, "{name}");
            assert!(*compress || !info.compressed, "{name}");
            assert_eq!(info.raw_len, payload.len() as u64, "{name}");
            assert_eq!(&r.read(info, u64::MAX).unwrap(), payload, "{name}");
            assert_eq!(&r.read(info, info.raw_len).unwrap(), payload, "{name}");
            assert_eq!(&read_all(&r, info), payload, "{name}");
            r.verify(info).unwrap();
        }
        for (kind, _, payload) in sections {
            let first = r.first(*kind).unwrap();
            assert_eq!(first.kind, *kind);
            let n = sections.iter().filter(|s| s.0 == *kind).count();
            assert_eq!(r.all(*kind).count(), n, "{name}");
            let _ = payload;
        }
        assert!(r.first(0xdead).is_none());
        assert_eq!(dir.entries(), ["img"], "{name}: temp file left behind");
    }

    #[test]
    fn round_trip_small_sections() {
        check("empty-image", &[]);
        check("one-empty-plain", &[(1, false, vec![])]);
        check("one-empty-compressed", &[(1, true, vec![])]);
        check("one-byte", &[(7, false, vec![42])]);
        check(
            "mixed",
            &[
                (1, false, b"hello".to_vec()),
                (2, true, pattern(100_000, 1, true)),
                (1, true, pattern(5000, 2, false)),
                (3, false, pattern(70_000, 3, false)),
                (0, false, vec![0; 40]),
                (0xFFFF_FFFE, true, vec![9; 1 << 16]),
            ],
        );
    }

    #[test]
    fn compression_is_used_when_it_helps() {
        let dir = TestDir::new("compress");
        let path = dir.path("img");
        let data = pattern(1 << 20, 4, true);
        let noise = pattern(1 << 16, 5, false);
        write_image(&path, &[(1, true, data.clone()), (2, true, noise.clone())]);
        let r = ImageReader::open(&path).unwrap();
        let s = r.sections();
        assert!(s[0].compressed && s[0].stored_len < s[0].raw_len / 4);
        assert!(!s[1].compressed, "incompressible data is stored plain");
        assert_eq!(r.read(&s[0], 1 << 20).unwrap(), data);
        assert_eq!(r.read(&s[1], 1 << 16).unwrap(), noise);
    }

    /// Stream `data` into one section in uneven chunks, plus sections around it.
    fn check_streamed(name: &str, data: &[u8], compress: bool) {
        let dir = TestDir::new(name);
        let path = dir.path("big.img");
        let mut w = ImageWriter::create(&path).unwrap();
        w.section(1, false, b"before").unwrap();
        let before = w.bytes_written();
        let mut s = w.stream(2, compress).unwrap();
        let mut rest = data;
        let mut step = 1usize;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            s.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            step = (step * 3 + 7) % (3 << 20) + 1;
        }
        assert_eq!(s.raw_len(), data.len() as u64);
        let stored = s.finish().unwrap();
        assert_eq!(w.bytes_written(), before + SECTION_HEADER_LEN + stored);
        assert!(!path.exists(), "final file exists before commit");
        w.stream(3, compress).unwrap().finish().unwrap();
        w.section(4, true, b"after").unwrap();
        let total = w.commit().unwrap();
        assert_eq!(total, fs::metadata(&path).unwrap().len());

        let r = ImageReader::open(&path).unwrap();
        let kinds: Vec<u32> = r.sections().iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [1, 2, 3, 4]);
        let big = r.first(2).unwrap();
        assert_eq!(big.compressed, compress);
        assert_eq!(big.stored_len, stored);
        assert_eq!(big.raw_len, data.len() as u64);
        assert!(
            read_all(&r, big) == data,
            "{name}: streamed payload differs"
        );
        assert!(
            r.read(big, u64::MAX).unwrap() == data,
            "{name}: read payload differs"
        );
        r.verify(big).unwrap();
        let empty = r.first(3).unwrap();
        assert_eq!(r.read(empty, 0).unwrap(), b"");
        assert_eq!(r.read(r.first(1).unwrap(), 6).unwrap(), b"before");
        assert_eq!(r.read(r.first(4).unwrap(), 5).unwrap(), b"after");
    }

    #[test]
    fn streamed_64mib_round_trip_plain() {
        check_streamed("stream-plain", &pattern(64 << 20, 6, false), false);
    }

    #[test]
    fn streamed_64mib_round_trip_compressed() {
        check_streamed("stream-zstd", &pattern(64 << 20, 7, true), true);
    }

    #[test]
    fn streamed_small_round_trips() {
        for (i, len) in [0usize, 1, 4095, 4096, 4097, 300_000]
            .into_iter()
            .enumerate()
        {
            for compress in [false, true] {
                let data = pattern(len, i as u64, i % 2 == 0);
                check_streamed(&format!("stream-small-{len}-{compress}"), &data, compress);
            }
        }
    }

    /// Section header offsets of the image at `path`, END included.
    fn header_offsets(path: &Path) -> Vec<u64> {
        let r = ImageReader::open(path).unwrap();
        let mut out: Vec<u64> = r
            .sections()
            .iter()
            .map(|s| s.offset - SECTION_HEADER_LEN)
            .collect();
        let end = r
            .sections()
            .last()
            .map_or(FILE_HEADER_LEN, |s| s.offset + s.stored_len);
        out.push(end);
        out
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, at).unwrap();
    }

    fn flip(path: &Path, at: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
    }

    /// Rewrite the section header at `at` with a valid header_check.
    fn rewrite_header(path: &Path, at: u64, change: impl FnOnce(&mut SectionHeader)) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut raw = [0u8; SECTION_HEADER_LEN as usize];
        f.read_exact_at(&mut raw, at).unwrap();
        let mut h = SectionHeader::decode(&raw).unwrap();
        change(&mut h);
        f.write_all_at(&h.encode(), at).unwrap();
    }

    fn sample(dir: &TestDir) -> PathBuf {
        let path = dir.path("img");
        write_image(
            &path,
            &[
                (10, false, pattern(3000, 8, false)),
                (11, true, pattern(50_000, 9, true)),
                (12, false, b"tail".to_vec()),
            ],
        );
        path
    }

    #[test]
    fn flipped_payload_byte_fails_checksum() {
        for (index, at) in [(0usize, 0u64), (0, 2999), (1, 0), (1, 100), (2, 3)] {
            let dir = TestDir::new("flip-payload");
            let path = sample(&dir);
            let info = ImageReader::open(&path).unwrap().sections()[index];
            flip(&path, info.offset + at);
            // The header walk does not read payloads: the image still opens.
            let r = ImageReader::open(&path).unwrap();
            let expected = |e: &ContainerError| {
                matches!(e, ContainerError::ChecksumMismatch { kind, offset, .. }
                    if *kind == info.kind && *offset == info.offset)
            };
            let e = r.read(&info, u64::MAX).unwrap_err();
            assert!(expected(&e), "read: {e:?}");
            let e = r.verify(&info).unwrap_err();
            assert!(expected(&e), "verify: {e:?}");
            let e = r
                .stream(&info)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("section {:#x}", info.kind)) && msg.contains("img"),
                "{msg}"
            );
            let inner = e
                .into_inner()
                .unwrap()
                .downcast::<ContainerError>()
                .unwrap();
            assert!(expected(&inner), "stream: {inner:?}");
            // Untouched sections still read.
            for other in r.sections().iter().filter(|s| s.kind != info.kind) {
                r.read(other, u64::MAX).unwrap();
            }
        }
    }

    #[test]
    fn failed_stream_keeps_failing() {
        let dir = TestDir::new("keeps-failing");
        let path = sample(&dir);
        let info = ImageReader::open(&path).unwrap().sections()[2];
        flip(&path, info.offset);
        let r = ImageReader::open(&path).unwrap();
        let mut s = r.stream(&info).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        assert!(s.read(&mut buf).is_err());
        assert!(
            s.read(&mut buf).is_err(),
            "a failed stream must not turn into EOF"
        );
    }

    #[test]
    fn corrupt_section_header_is_detected() {
        // Byte offsets inside a section header: kind, flags, stored_len (low and high
        // bytes), raw_len, checksum, header_check.
        for field in [0u64, 5, 8, 15, 16, 24, 32, 39] {
            for which in 0..4 {
                let dir = TestDir::new("corrupt-header");
                let path = sample(&dir);
                let at = header_offsets(&path)[which];
                flip(&path, at + field);
                match ImageReader::open(&path) {
                    Err(ContainerError::CorruptHeader { offset, .. }) => assert_eq!(offset, at),
                    other => panic!("field {field} of header {which}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn truncation_anywhere_is_reported() {
        let dir = TestDir::new("truncate");
        let path = sample(&dir);
        let full = fs::read(&path).unwrap();
        let cut_path = dir.path("cut");
        let mut cuts: Vec<usize> = (0..64).collect();
        cuts.extend((64..full.len()).step_by(97));
        for h in header_offsets(&path) {
            let h = h as usize;
            cuts.extend([h - 1, h, h + 1, h + 39, h + 40, h + 41]);
        }
        cuts.push(full.len() - 1);
        for cut in cuts.into_iter().filter(|&c| c < full.len()) {
            fs::write(&cut_path, &full[..cut]).unwrap();
            match ImageReader::open(&cut_path) {
                Err(ContainerError::Truncated { offset, .. }) => {
                    assert!(offset <= cut as u64, "cut {cut}: offset {offset}")
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn random_damage_is_always_detected() {
        // Every byte of an image is covered by some check (magic, version, reserved
        // word, header_check, payload checksum), so any change must be reported, and
        // never by a panic.
        let dir = TestDir::new("damage");
        let path = sample(&dir);
        let pristine = fs::read(&path).unwrap();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let mut bytes = pristine.clone();
            for _ in 0..=next() % 3 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] ^= (next() % 255) as u8 + 1;
            }
            fs::write(&path, &bytes).unwrap();
            let Ok(r) = ImageReader::open(&path) else {
                continue;
            };
            let mut detected = false;
            for info in r.sections() {
                let read = r.read(info, 1 << 20).is_err();
                let streamed = r
                    .stream(info)
                    .unwrap()
                    .read_to_end(&mut Vec::new())
                    .is_err();
                let verified = r.verify(info).is_err();
                assert_eq!(read, streamed, "round {round}");
                assert!(verified <= read, "round {round}");
                detected |= read;
            }
            assert!(detected, "round {round}: damage went unnoticed");
        }
    }

    #[test]
    fn trailing_data_after_end() {
        let dir = TestDir::new("trailing");
        let path = sample(&dir);
        let len = fs::metadata(&path).unwrap().len();
        patch(&path, len, b"x");
        match ImageReader::open(&path) {
            Err(ContainerError::TrailingData { offset, .. }) => assert_eq!(offset, len),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_header_errors() {
        let dir = TestDir::new("file-header");
        let path = sample(&dir);
        let pristine = fs::read(&path).unwrap();
        let reset = || fs::write(&path, &pristine).unwrap();

        flip(&path, 0);
        assert!(matches!(
            ImageReader::open(&path),
            Err(ContainerError::BadMagic { .. })
        ));
        reset();
        fs::write(&path, b"LIFEBOA").unwrap();
        assert!(matches!(
            ImageReader::open(&path),
            Err(ContainerError::Truncated { offset: 0, .. })
        ));
        fs::write(&path, b"#!/bin/sh\n").unwrap();
        assert!(matches!(
            ImageReader::open(&path),
            Err(ContainerError::BadMagic { .. })
        ));
        reset();
        patch(&path, 8, &2u32.to_le_bytes());
        match ImageReader::open(&path) {
            Err(
                e @ ContainerError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                },
            ) => {
                assert!(e.to_string().contains("version 2"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        reset();
        patch(&path, 12, &1u32.to_le_bytes());
        assert!(matches!(
            ImageReader::open(&path),
            Err(ContainerError::CorruptHeader { offset: 12, .. })
        ));
        reset();
        ImageReader::open(&path).unwrap();
    }

    #[test]
    fn unknown_flags_are_refused() {
        let dir = TestDir::new("flags");
        let path = sample(&dir);
        let at = header_offsets(&path)[1];
        rewrite_header(&path, at, |h| h.flags |= 0x8000_0000);
        match ImageReader::open(&path) {
            Err(ContainerError::UnknownFlags {
                kind: 11, flags, ..
            }) => {
                assert_eq!(flags, 0x8000_0001)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inconsistent_headers_are_corrupt() {
        type Change = fn(&mut SectionHeader);
        let cases: [(usize, Change); 5] = [
            // Plain section whose raw_len differs from stored_len.
            (0, |h| h.raw_len += 1),
            // END with the wrong length, compressed, or a wrong count.
            (3, |h| h.raw_len = 9),
            (3, |h| h.flags = FLAG_ZSTD),
            (3, |h| h.stored_len = 0),
            (3, |h| h.checksum ^= 1),
        ];
        for (i, (which, change)) in cases.into_iter().enumerate() {
            let dir = TestDir::new("inconsistent");
            let path = sample(&dir);
            let at = header_offsets(&path)[which];
            rewrite_header(&path, at, change);
            let got = ImageReader::open(&path);
            let ok = match &got {
                Err(ContainerError::CorruptHeader { offset, .. }) => *offset == at,
                Err(ContainerError::ChecksumMismatch { kind, .. }) => *kind == END_KIND && i == 4,
                Err(ContainerError::TrailingData { .. }) => i == 3,
                _ => false,
            };
            assert!(ok, "case {i}: {got:?}");
        }
        // A valid END whose count disagrees with the sections present.
        let dir = TestDir::new("end-count");
        let path = sample(&dir);
        let at = header_offsets(&path)[3];
        let count = 2u64.to_le_bytes();
        patch(&path, at + SECTION_HEADER_LEN, &count);
        rewrite_header(&path, at, |h| h.checksum = xxh3_64(&count));
        assert!(matches!(
            ImageReader::open(&path),
            Err(ContainerError::CorruptHeader { .. })
        ));
    }

    #[test]
    fn too_large_is_refused_before_reading() {
        let dir = TestDir::new("too-large");
        let path = sample(&dir);
        let r = ImageReader::open(&path).unwrap();
        let info = r.sections()[1];
        match r.read(&info, 49_999) {
            Err(ContainerError::TooLarge {
                kind: 11,
                len: 50_000,
                max: 49_999,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // A tampered raw_len on a compressed section cannot drive the allocation either.
        let at = info.offset - SECTION_HEADER_LEN;
        rewrite_header(&path, at, |h| h.raw_len = u64::MAX);
        let r = ImageReader::open(&path).unwrap();
        assert!(matches!(
            r.read(&r.sections()[1], 1 << 30),
            Err(ContainerError::TooLarge { .. })
        ));
        // Even with no limit, a 16 EiB claim fails on the data, not on the allocator.
        assert!(matches!(
            r.read(&r.sections()[1], u64::MAX),
            Err(ContainerError::Decompress { .. })
        ));
    }

    #[test]
    fn decompression_errors() {
        // raw_len that disagrees with the compressed data, either way.
        for delta in [1i64, -1, -49_999] {
            let dir = TestDir::new("raw-len");
            let path = sample(&dir);
            let info = ImageReader::open(&path).unwrap().sections()[1];
            rewrite_header(&path, info.offset - SECTION_HEADER_LEN, |h| {
                h.raw_len = h.raw_len.wrapping_add_signed(delta)
            });
            let r = ImageReader::open(&path).unwrap();
            let info = r.sections()[1];
            let e = r.read(&info, u64::MAX).unwrap_err();
            assert!(
                matches!(e, ContainerError::Decompress { kind: 11, .. }),
                "{delta}: {e:?}"
            );
            let e = r
                .stream(&info)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{delta}");
        }
        // Garbage that carries a valid checksum (written by something other than us).
        let dir = TestDir::new("garbage");
        let path = sample(&dir);
        let info = ImageReader::open(&path).unwrap().sections()[0];
        rewrite_header(&path, info.offset - SECTION_HEADER_LEN, |h| {
            h.flags = FLAG_ZSTD;
            h.raw_len = 10_000;
        });
        let r = ImageReader::open(&path).unwrap();
        let e = r.read(&r.sections()[0], u64::MAX).unwrap_err();
        assert!(
            matches!(e, ContainerError::Decompress { kind: 10, .. }),
            "{e:?}"
        );
        r.verify(&r.sections()[0]).unwrap();
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = TestDir::new("drop");
        let path = dir.path("img");
        {
            let mut w = ImageWriter::create(&path).unwrap();
            w.section(1, false, b"x").unwrap();
            let mut s = w.stream(2, true).unwrap();
            s.write_all(&[0; 10_000]).unwrap();
            s.finish().unwrap();
            let pid = std::process::id();
            assert_eq!(dir.entries(), [format!(".img.partial.{pid}")]);
            assert!(!path.exists());
        }
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());

        // Same after a panic mid-stream.
        let p = path.clone();
        let result = std::panic::catch_unwind(move || {
            let mut w = ImageWriter::create(&p).unwrap();
            let mut s = w.stream(2, false).unwrap();
            s.write_all(&[1; 3 << 20]).unwrap();
            panic!("simulated failure");
        });
        assert!(result.is_err());
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());
    }

    #[test]
    fn final_file_appears_only_at_commit() {
        let dir = TestDir::new("commit");
        let path = dir.path("img");
        fs::write(&path, b"previous image").unwrap();
        let mut w = ImageWriter::create(&path).unwrap();
        w.section(1, false, &[5; 2 << 20]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"previous image");
        let total = w.commit().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), total);
        assert_eq!(dir.entries(), ["img"]);
        let r = ImageReader::open(&path).unwrap();
        assert_eq!(r.read(&r.sections()[0], 2 << 20).unwrap(), vec![5; 2 << 20]);
    }

    #[test]
    fn temp_file_is_private_and_exclusive() {
        let dir = TestDir::new("exclusive");
        let path = dir.path("img");
        let w = ImageWriter::create(&path).unwrap();
        let temp = dir.path(&format!(".img.partial.{}", std::process::id()));
        let mode = fs::metadata(&temp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        match ImageWriter::create(&path) {
            Err(ContainerError::Create { path, source }) => {
                assert_eq!(path, temp);
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
            }
            other => panic!("{other:?}"),
        }
        // The failed second writer must not have removed the first one's file.
        assert!(temp.exists());
        w.commit().unwrap();
        assert_eq!(dir.entries(), ["img"]);
    }

    #[test]
    fn writer_misuse_is_refused() {
        let dir = TestDir::new("misuse");
        let path = dir.path("img");
        let mut w = ImageWriter::create(&path).unwrap();
        assert!(matches!(
            w.section(END_KIND, false, b""),
            Err(ContainerError::ReservedKind { kind: END_KIND, .. })
        ));
        assert!(matches!(
            w.stream(END_KIND, true),
            Err(ContainerError::ReservedKind { .. })
        ));
        w.section(1, false, b"fine").unwrap();
        // A stream dropped without finish leaves a placeholder header: no commit.
        drop(w.stream(2, false).unwrap());
        assert!(matches!(
            w.section(3, false, b""),
            Err(ContainerError::Incomplete { .. })
        ));
        assert!(matches!(w.commit(), Err(ContainerError::Incomplete { .. })));
        assert!(dir.entries().is_empty());
    }

    #[test]
    fn filesystem_errors_name_the_path() {
        let dir = TestDir::new("fs-errors");
        let missing = dir.path("no/such/dir/img");
        match ImageWriter::create(&missing) {
            Err(e @ ContainerError::Create { .. }) => {
                assert!(e.to_string().contains("no/such/dir"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        match ImageReader::open(&dir.path("absent")) {
            Err(e @ ContainerError::Open { .. }) => {
                assert!(e.to_string().contains("absent"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ImageWriter::create(Path::new("/")),
            Err(ContainerError::Create { .. })
        ));
        assert!(matches!(
            ImageReader::open(&dir.0),
            Err(ContainerError::Open { .. })
        ));
        // The final path is a non-empty directory: rename fails, temp is cleaned up.
        let target = dir.path("taken");
        fs::create_dir_all(target.join("child")).unwrap();
        let w = ImageWriter::create(&target).unwrap();
        match w.commit() {
            Err(ContainerError::Rename { from, to, .. }) => {
                assert_eq!(to, target);
                assert!(!from.exists());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(dir.entries(), ["taken"]);
    }

    #[test]
    fn temp_file_sits_beside_the_final_path() {
        let check = |final_path: &str, expected: Option<(&str, &str)>| {
            let got = partial_paths(Path::new(final_path), 42);
            let expected = expected.map(|(d, t)| (PathBuf::from(d), PathBuf::from(t)));
            assert_eq!(got, expected, "{final_path}");
        };
        check("img", Some((".", "./.img.partial.42")));
        check("./img", Some((".", "./.img.partial.42")));
        check("a/b.lbi", Some(("a", "a/.b.lbi.partial.42")));
        check(
            "/var/lib/x/ck.1",
            Some(("/var/lib/x", "/var/lib/x/.ck.1.partial.42")),
        );
        check("/", None);
        check("a/..", None);
        check("", None);
    }

    #[test]
    fn types_cross_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<ImageWriter>();
        send::<ImageReader>();
        sync::<ImageReader>();
        send::<SectionRead>();
        send::<ContainerError>();
        sync::<ContainerError>();
    }

    #[test]
    fn concurrent_streams_from_one_reader() {
        let dir = TestDir::new("concurrent");
        let path = dir.path("img");
        let a = pattern(300_000, 10, false);
        let b = pattern(300_000, 11, true);
        write_image(&path, &[(1, false, a.clone()), (2, true, b.clone())]);
        let r = ImageReader::open(&path).unwrap();
        let mut sa = r.stream(&r.sections()[0]).unwrap();
        let mut sb = r.stream(&r.sections()[1]).unwrap();
        assert_eq!(sa.info().kind, 1);
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 7919];
        loop {
            let na = sa.read(&mut buf).unwrap();
            got_a.extend_from_slice(&buf[..na]);
            let nb = sb.read(&mut buf).unwrap();
            got_b.extend_from_slice(&buf[..nb]);
            if na == 0 && nb == 0 {
                break;
            }
        }
        assert!(got_a == a && got_b == b);
    }

    #[test]
    fn messages_are_actionable() {
        let e = ContainerError::ChecksumMismatch {
            path: PathBuf::from("/tmp/x.img"),
            kind: 0x12,
            offset: 56,
        };
        assert_eq!(
            e.to_string(),
            "/tmp/x.img: section 0x12 at offset 56 fails its checksum (the image is corrupt or was modified)"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }
}
