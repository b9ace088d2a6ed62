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
//! | 8              | 4    | version      | [`OLDEST_READABLE_VERSION`]..=[`FORMAT_VERSION`]; others refused |
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
//! A writer dropped without `commit` removes its temporary file; a writer that was killed
//! cannot, so creating a writer first sweeps the directory of abandoned partial files
//! (their PID is gone, they begin with the magic or are empty, and nobody wrote them for
//! a minute).
//!
//! # Reading
//!
//! [`ImageReader::open`] checks the header and walks every section header (verifying
//! `header_check`, the flags, and that each payload lies inside the file) without reading
//! payloads. Payloads are read with positioned reads, so one reader can serve several
//! [`SectionRead`] streams at once.//!
//! The code is in three parts: this module holds the format's constants, errors and
//! section header; [`write`] the atomic writer and its section streams; [`read`] the
//! reader and its checked section streams.

mod read;
mod write;

pub use read::{ImageReader, SectionInfo, SectionRead};
pub use write::{ImageWriter, STALE_AFTER, SectionStream, sweep_stale_partials};

use std::io;
use std::path::PathBuf;
use xxhash_rust::xxh3::xxh3_64;

/// The first eight bytes of every image.
pub const MAGIC: [u8; 8] = *b"LIFEBOAT";
/// The format version this code writes. It changes only when a change an older reader
/// must not ignore is made, at most once per release (see the evolution rule in
/// `image`'s documentation); new kinds of state are optional sections instead.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format version this code still reads: always the previous release's
/// version too, so a cluster in a rolling upgrade reads the images its other nodes wrote.
pub const OLDEST_READABLE_VERSION: u32 = 1;
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
    #[error("{path}: image format version {found} is not supported (this build reads versions {oldest} to {supported}); use a lifeboat release that reads it", path = .path.display())]
    UnsupportedVersion {
        /// The image.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads (the one it writes).
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

#[cfg(test)]
mod tests;
