//! Fuzz targets of the parsers that read untrusted input: context images, rules files,
//! rasdaemon's text log and the agent's HTTP requests.
//!
//! Each target is a function of one input, `run(&[u8])`, that must return for every
//! input without panicking, quickly and within bounded memory. The binaries under
//! `src/bin/` wrap them: built with `cargo afl build` (cfg `fuzzing`) as AFL++
//! persistent-mode harnesses, built by plain cargo as replayers of the files they are
//! given. `tests/replay.rs` replays every committed corpus and crash input through the
//! same functions. How to run a campaign: `tests/fuzz/README.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod http;
pub mod image;
pub mod rasdaemon_log;
pub mod rules;
pub mod seeds;

use std::error::Error;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Renders an error and its whole chain of causes, as the CLI prints it, so that every
/// `Display` implementation on the way is exercised too.
pub fn render(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A memory-backed regular file (memfd) that a target rewrites for every input and
/// hands to code that opens paths, as `/proc/self/fd/N`.
///
/// It has no name in any directory, so nothing is left behind when the fuzzer kills the
/// process; `/proc/self/fd/N` opens it as the regular file it is.
#[derive(Debug)]
pub struct Scratch {
    file: File,
}

impl Scratch {
    /// Creates the file.
    pub fn new() -> Scratch {
        let fd =
            nix::sys::memfd::memfd_create(c"lifeboat-fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .unwrap_or_else(|e| panic!("memfd_create: {e} (the fuzz targets need memfd)"));
        Scratch {
            file: File::from(fd),
        }
    }

    /// Replaces the file's content with `data`.
    pub fn set(&self, data: &[u8]) {
        let write = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(data, 0));
        if let Err(e) = write {
            panic!("rewriting the scratch memfd: {e}");
        }
    }

    /// The descriptor's number, the name of the file under `/proc/self/fd`.
    pub fn fd_name(&self) -> String {
        self.file.as_raw_fd().to_string()
    }

    /// A path that opens the file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd_name()))
    }
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch::new()
    }
}

/// The body of every target binary: under `cargo afl build`, the AFL++ persistent loop
/// over `target`; otherwise a replay of each file named on the command line (directories
/// are walked one level), printing one line per input, for reproducing a finding.
#[macro_export]
macro_rules! target_main {
    ($target:path) => {
        #[cfg(fuzzing)]
        fn main() {
            afl::fuzz!(|data: &[u8]| {
                $target(data);
            });
        }

        #[cfg(not(fuzzing))]
        fn main() -> std::process::ExitCode {
            $crate::replay_args($target)
        }
    };
}

/// Replays the files (or directories of files) named on the command line through
/// `target`. Used by the binaries when they are not built for fuzzing.
pub fn replay_args(target: fn(&[u8])) -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: TARGET FILE|DIR... (replays each input through the target)");
        return std::process::ExitCode::from(2);
    }
    let mut status = std::process::ExitCode::SUCCESS;
    for arg in args {
        let files = match inputs(&arg) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("{}: {e}", arg.display());
                status = std::process::ExitCode::FAILURE;
                continue;
            }
        };
        for file in files {
            match std::fs::read(&file) {
                Ok(data) => {
                    let started = std::time::Instant::now();
                    target(&data);
                    println!(
                        "{}: {} bytes, ok in {:?}",
                        file.display(),
                        data.len(),
                        started.elapsed()
                    );
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    status = std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    status
}

/// The regular files of `path`: itself, or those directly inside it, sorted by name
/// (dot files such as `.gitkeep` and AFL++'s `README.txt` left out).
pub fn inputs(path: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "README.txt" || !entry.file_type()?.is_file() {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}
