//! The directory every reader reads under: `/` on a node, a fixture tree in tests.

use std::path::{Path, PathBuf};

/// The filesystem root the readers resolve `sys/...`, `proc/...` and `var/...` under.
///
/// Readers never name an absolute host path: they call [`Root::join`] with a relative
/// one, so the same code reads a node (`Root::host()`) and a fixture tree
/// (`Root::new("tests/fixtures/sensors/edac-dimm")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// A root at `path` (a fixture tree, a chroot, a container's view of the host).
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    /// The host's own root, `/`. The only place the literal appears in this crate.
    pub fn host() -> Root {
        Root::new("/")
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` under the root. A leading `/` in `rel` is ignored, so `join("/sys")` and
    /// `join("sys")` name the same place and never escape to the host's `/sys`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.path.join(rel)
    }
}

impl Default for Root {
    fn default() -> Root {
        Root::host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(root: &str, rel: &str, expected: &str) {
        assert_eq!(
            Root::new(root).join(rel),
            PathBuf::from(expected),
            "{root} + {rel}"
        );
    }

    #[test]
    fn join_stays_under_root() {
        check("/tmp/fx", "sys/class/hwmon", "/tmp/fx/sys/class/hwmon");
        check("/tmp/fx", "/sys/class/hwmon", "/tmp/fx/sys/class/hwmon");
        check("/", "proc/loadavg", "/proc/loadavg");
        assert_eq!(Root::host().path(), Path::new("/"));
    }
}
