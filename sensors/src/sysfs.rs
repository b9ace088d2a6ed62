//! Small helpers every sysfs/procfs reader shares: read one attribute, list a directory,
//! collect readings and errors without stopping at the first failure.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::SensorError;
use crate::reading::Reading;

/// True for the errors that mean "this file or directory is not there": missing
/// hardware, a driver that does not provide the attribute. They are "no data".
fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The trimmed text of `path`, `Ok(None)` if it does not exist.
pub(crate) fn read_text(path: &Path) -> Result<Option<String>, SensorError> {
    match fs::read_to_string(path) {
        Ok(mut s) => {
            let end = s.trim_end().len();
            s.truncate(end);
            let start = s.len() - s.trim_start().len();
            if start > 0 {
                s.drain(..start);
            }
            Ok(Some(s))
        }
        Err(e) if is_absent(&e) => Ok(None),
        // Attributes are ASCII; a file that is not UTF-8 is a malformed one, not unreadable.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(SensorError::parse(path, "<not UTF-8>", "UTF-8 text"))
        }
        Err(e) => Err(SensorError::read(path, e)),
    }
}

/// The entries of `dir` as (file name, path), sorted in natural order (`dimm2` before
/// `dimm10`); `Ok(None)` if `dir` does not exist. Names that are not UTF-8 are skipped:
/// the kernel names its attributes and devices in ASCII.
pub(crate) fn list_dir(dir: &Path) -> Result<Option<Vec<(String, PathBuf)>>, SensorError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => {
            return Err(SensorError::ListDir {
                path: dir.to_path_buf(),
                source: Arc::new(e),
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| SensorError::ListDir {
            path: dir.to_path_buf(),
            source: Arc::new(e),
        })?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    Ok(Some(out))
}

/// Compares names so that runs of digits compare as numbers: `hwmon2 < hwmon10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na
                    .len()
                    .cmp(&nb.len())
                    .then_with(|| na.cmp(nb))
                    .then(da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

/// `name` split into a prefix and its trailing decimal index: `("hwmon", 3)` for
/// `hwmon3`. `None` if it does not end in digits or the prefix differs.
pub(crate) fn index_of(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses an unsigned decimal attribute (counters). Accepts a `0x` hex form too, which
/// a few drivers print.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok();
    }
    t.parse().ok()
}

/// Parses a signed decimal attribute (temperatures can be negative).
pub(crate) fn parse_i64(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// What one reader collects during a scan: readings, and the errors it went past.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) readings: Vec<Reading>,
    pub(crate) errors: Vec<SensorError>,
}

impl Collector {
    pub(crate) fn new() -> Collector {
        Collector {
            readings: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The value of a fallible step, recording its error and going on without it.
    pub(crate) fn ok<T>(&mut self, r: Result<Option<T>, SensorError>) -> Option<T> {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// The trimmed text of `path`, if present; a read error is recorded.
    pub(crate) fn text(&mut self, path: &Path) -> Option<String> {
        self.ok(read_text(path))
    }

    /// The entries of `dir`, if present; a listing error is recorded.
    pub(crate) fn list(&mut self, dir: &Path) -> Option<Vec<(String, PathBuf)>> {
        self.ok(list_dir(dir))
    }

    /// An unsigned integer attribute, if present; unreadable or malformed is recorded.
    pub(crate) fn u64(&mut self, path: &Path) -> Option<u64> {
        let text = self.text(path)?;
        match parse_u64(&text) {
            Some(v) => Some(v),
            None => {
                self.errors
                    .push(SensorError::parse(path, &text, "an unsigned integer"));
                None
            }
        }
    }

    /// A signed integer attribute, if present; unreadable or malformed is recorded.
    pub(crate) fn i64(&mut self, path: &Path) -> Option<i64> {
        let text = self.text(path)?;
        match parse_i64(&text) {
            Some(v) => Some(v),
            None => {
                self.errors
                    .push(SensorError::parse(path, &text, "an integer"));
                None
            }
        }
    }

    /// Adds a reading.
    pub(crate) fn push(&mut self, r: Reading) {
        self.readings.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["dimm10", "dimm2", "dimm1", "csrow0", "dimm02", "rank3"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["csrow0", "dimm1", "dimm2", "dimm02", "dimm10", "rank3"]);
    }

    #[test]
    fn numbers() {
        for (text, want) in [
            ("17\n", Some(17)),
            (" 4294967295 ", Some(4_294_967_295)),
            ("0x1f", Some(31)),
            ("N/A (no PMA)", None),
            ("-1", None),
            ("", None),
        ] {
            assert_eq!(parse_u64(text), want, "{text:?}");
        }
        assert_eq!(parse_i64("-5000"), Some(-5000));
        assert_eq!(index_of("hwmon12", "hwmon"), Some(12));
        assert_eq!(index_of("hwmon", "hwmon"), None);
        assert_eq!(index_of("hwmonx1", "hwmon"), None);
    }

    #[test]
    fn read_error_is_typed_and_names_the_path() {
        // EINVAL on read cannot be put in a fixture file; reading a directory gives a
        // real read error (EISDIR) through the same path.
        let dir = std::env::temp_dir();
        let err = read_text(&dir).expect_err("a directory is not readable as text");
        assert!(matches!(err, SensorError::Read { .. }), "{err:?}");
        assert_eq!(err.path(), dir.as_path());
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        assert_eq!(read_text(&dir.join("lifeboat-no-such-file")).unwrap(), None);
    }
}
