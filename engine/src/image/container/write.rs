//! Writing an image: a temporary file, sections (whole or streamed, hashed and
//! optionally compressed on the fly), then END, fsync and rename on commit.

use super::*;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

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
        sweep_stale_partials(&dir, STALE_AFTER);
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

/// How long a partial file must have been left alone before it counts as abandoned.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Remove the partial files of writers that died (a checkpointer killed mid-image leaves
/// its `.NAME.partial.PID`, up to the size of the image): in `dir`, every such file whose
/// PID is not a live process here, that holds nothing or begins with the image magic,
/// and that nobody wrote for `stale_after` (a writer on another node that shares the
/// directory is still writing). Best effort: failures are ignored. Returns how many
/// files it removed and their bytes.
pub fn sweep_stale_partials(dir: &Path, stale_after: std::time::Duration) -> (usize, u64) {
    let mut removed = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".partial."))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = e.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        let idle = md
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|d| d >= stale_after);
        if !md.is_file() || !idle {
            continue;
        }
        let ours = md.len() == 0 || {
            let mut head = [0u8; 8];
            File::open(&path)
                .and_then(|f| f.read_exact_at(&mut head, 0))
                .is_ok_and(|()| head == MAGIC)
        };
        if ours && fs::remove_file(&path).is_ok() {
            removed.0 += 1;
            removed.1 += md.len();
        }
    }
    removed
}

/// The directory of `final_path` and the temporary file beside it, or `None` if the
/// path has no file name.
pub(super) fn partial_paths(final_path: &Path, pid: u32) -> Option<(PathBuf, PathBuf)> {
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
