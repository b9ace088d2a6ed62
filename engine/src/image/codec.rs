//! What every section codec shares: the error type, the decoding context that names the
//! file and section in messages, and the bounds on counts and addresses.

use super::container::ContainerError;
use super::wire::WireError;
use std::path::{Path, PathBuf};

/// Highest user-space address on x86-64 with 5-level paging; anything above is invalid.
pub(crate) const USER_TOP: u64 = 1 << 56;
/// Largest metadata section read into memory (file contents of deleted files included).
pub(crate) const MAX_META_SECTION: u64 = 1 << 30;
/// Most bytes of metadata (every section but PAGES, decompressed) one image may hold, over
/// all its processes: a crafted image of many small compressed sections that each inflate
/// to a gigabyte is refused by its headers, before any is read.
pub(crate) const MAX_META_TOTAL: u64 = 2 << 30;
/// Bounds on record counts, far above real processes, to stop tampered counts early.
pub(crate) const MAX_THREADS: usize = 1 << 16;
pub(crate) const MAX_REGIONS: u64 = 1 << 20;
pub(crate) const MAX_FDS: u64 = 1 << 20;
pub(crate) const MAX_FD_NUMBER: i32 = 1 << 20;
/// Most processes one image may hold.
pub(crate) const MAX_PROCESSES: usize = 1 << 15;

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
    /// A record would be larger than a reader takes: the image is not written.
    #[error(
        "the {section} record would be {bytes} bytes, more than the {limit} a reader accepts; the image is not written"
    )]
    TooLarge {
        /// Section name.
        section: &'static str,
        /// Its size.
        bytes: u64,
        /// The reader's limit.
        limit: u64,
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

/// Where a record is being decoded, for error messages.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// Image file.
    pub path: &'a Path,
    /// Section name.
    pub section: &'static str,
}

impl Ctx<'_> {
    /// Map a wire error to [`ImageError::Decode`] for this section.
    pub(crate) fn wire(&self) -> impl Fn(WireError) -> ImageError + '_ {
        move |source| ImageError::Decode {
            path: self.path.to_owned(),
            section: self.section,
            source,
        }
    }
    /// An [`ImageError::Invalid`] for this section.
    pub(crate) fn invalid(&self, what: impl Into<String>) -> ImageError {
        ImageError::Invalid {
            path: self.path.to_owned(),
            section: self.section,
            what: what.into(),
        }
    }
}
