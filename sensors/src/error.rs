//! Why one file or database of a source could not be read: typed, naming the path.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// One failure while reading a source. Every variant names the file (or database) and
/// what was being done; a source keeps going after one and counts them in its
/// [`Scan`](crate::Scan). A missing file or directory is never an error: missing
/// hardware is "no data".
///
/// `Clone` so a scan can be kept and reported more than once; the underlying errors sit
/// behind an [`Arc`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum SensorError {
    /// Reading a file failed (EIO, EINVAL, EACCES, EISDIR, ...).
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: Arc<io::Error>,
    },
    /// Listing a directory failed for another reason than its absence.
    #[error("cannot list {path}: {source}", path = path.display())]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// What the kernel said.
        source: Arc<io::Error>,
    },
    /// A file was read but its text is not what the kernel ABI document describes.
    #[error("{path}: cannot parse {text:?} as {expected}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The offending text (trimmed, at most 80 characters).
        text: String,
        /// What was expected ("an unsigned integer", "`NAME COUNT` lines", ...).
        expected: &'static str,
    },
    /// Opening or querying rasdaemon's SQLite database failed.
    #[error("rasdaemon database {path}: {operation}: {source}", path = path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was being done ("open", "query mc_event", ...).
        operation: String,
        /// What SQLite said.
        source: Arc<rusqlite::Error>,
    },
    /// libsensors refused its configuration or could not read a value.
    #[error("libsensors: {path}: {message}", path = path.display())]
    Libsensors {
        /// The configuration file, or the sysfs attribute of the value.
        path: PathBuf,
        /// What libsensors said (with the line, for a configuration error).
        message: String,
    },
    /// A line of a rasdaemon log is not an event in any known format; it was skipped.
    #[error("{path}:{line}: malformed rasdaemon {event} line: {reason}", path = path.display())]
    LogLine {
        /// The log file.
        path: PathBuf,
        /// 1-based line number within the lines read at this poll.
        line: usize,
        /// The event name the line claimed (`mc_event`, ...).
        event: String,
        /// What did not parse.
        reason: String,
    },
}

impl SensorError {
    /// A read error of `path`.
    pub fn read(path: impl Into<PathBuf>, source: io::Error) -> SensorError {
        SensorError::Read {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// A parse error of `text` read from `path`.
    pub fn parse(path: impl Into<PathBuf>, text: &str, expected: &'static str) -> SensorError {
        let text: String = text.trim().chars().take(80).collect();
        SensorError::Parse {
            path: path.into(),
            text,
            expected,
        }
    }

    /// The file or database the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            SensorError::Read { path, .. }
            | SensorError::ListDir { path, .. }
            | SensorError::Parse { path, .. }
            | SensorError::Database { path, .. }
            | SensorError::Libsensors { path, .. }
            | SensorError::LogLine { path, .. } => path,
        }
    }
}
