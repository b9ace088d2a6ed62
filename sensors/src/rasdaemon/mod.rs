//! rasdaemon: counts of the RAS events it recorded, from its SQLite database or, where
//! there is none, from its text log.
//!
//! - Database: `var/lib/rasdaemon/ras-mc_event.db` under the root ([`DB_PATH`]), written
//!   by `rasdaemon --record`; read incrementally by row id ([`db`]).
//! - Log: `var/log/rasdaemon.log` under the root ([`LOG_PATH`]) unless set with
//!   [`RasdaemonSensor::with_log_path`]: where a unit that runs `rasdaemon -f` sends its
//!   output, or a syslog file filtered to rasdaemon. Read only when the database is
//!   absent (both hold the same events); read incrementally by byte offset (a file that
//!   shrank was rotated: counting starts over) and parsed by [`log`].
//!
//! Readings (counters; the same names from either origin):
//!
//! | name | from | labels |
//! |---|---|---|
//! | `mc_events` | `mc_event` rows / lines | `err_type` (`Corrected`, `Uncorrected`, ...), `dimm_label` (the event's label, when present) |
//! | `mc_errors` | sum of `err_count` / the line's count | as `mc_events` |
//! | `aer_events` | `aer_event` | `device` (PCI address), `err_type` (`Corrected`, `Uncorrected (Non-Fatal)`, `Uncorrected (Fatal)`) |
//! | `mce_records` | `mce_record` | `error` (the row's `error_msg`; database only) |
//! | `extlog_events`, `extlog_errors` | `extlog_event` (rows, sum of `error_count`; the log gives events only) | `severity` (`corrected`, `recoverable`, `fatal`, `informational`) |
//! | `arm_events` | `arm_event` | |
//! | `non_standard_events` | `non_standard_event` | `severity` when present |
//! | `devlink_events` | `devlink_event` / `devlink_health_report` | `device`, `reporter` |
//! | `disk_error_events` | `disk_errors` / `block_rq_error` | `device` (`major:minor`) |
//! | `memory_failure_events` | `memory_failure_event` | `action_result` |
//! | `log_malformed_lines` | log lines naming an event that did not parse | |
//!
//! The source is present when the database or the log exists.

pub mod db;
pub mod log;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::reading::{Reading, Source};
use crate::{Root, Scan, Sensor, SensorError, timed};
use db::{Counts, Db};
use log::RasEvent;

/// rasdaemon's database, relative to the root.
pub const DB_PATH: &str = "var/lib/rasdaemon/ras-mc_event.db";

/// The default rasdaemon log, relative to the root.
pub const LOG_PATH: &str = "var/log/rasdaemon.log";

/// At most this many bytes of log are read per poll (a first read of a long history
/// is spread over several polls).
const MAX_LOG_BYTES: u64 = 16 << 20;

/// At most this many malformed log lines are reported as errors per poll; all are
/// counted in `log_malformed_lines`.
const MAX_LINE_ERRORS: usize = 10;

/// Reads rasdaemon's database or log, remembering how far it got.
#[derive(Debug)]
pub struct RasdaemonSensor {
    log_path: PathBuf,
    db: Option<Db>,
    log: LogState,
}

#[derive(Debug, Default)]
struct LogState {
    path: Option<PathBuf>,
    offset: u64,
    lines: usize,
    counts: Counts,
    malformed: u64,
}

impl Default for RasdaemonSensor {
    fn default() -> Self {
        RasdaemonSensor::new()
    }
}

impl RasdaemonSensor {
    /// A reader of [`DB_PATH`] and [`LOG_PATH`].
    pub fn new() -> RasdaemonSensor {
        RasdaemonSensor {
            log_path: PathBuf::from(LOG_PATH),
            db: None,
            log: LogState::default(),
        }
    }

    /// The same reader with another log file, relative to the root.
    #[must_use]
    pub fn with_log_path(mut self, rel: impl Into<PathBuf>) -> RasdaemonSensor {
        self.log_path = rel.into();
        self
    }

    /// The database file under `root`, for watching it for changes.
    pub fn db_path(root: &Root) -> PathBuf {
        root.join(DB_PATH)
    }

    /// The log file under `root`, for watching it for changes.
    pub fn log_path(&self, root: &Root) -> PathBuf {
        root.join(&self.log_path)
    }
}

impl Sensor for RasdaemonSensor {
    fn source(&self) -> Source {
        Source::Rasdaemon
    }

    fn read(&mut self, root: &Root) -> Scan {
        let db_path = Self::db_path(root);
        let log_path = self.log_path(root);
        timed(Source::Rasdaemon, |c| {
            if self.db.as_ref().is_some_and(|d| !d.is_current(&db_path)) {
                self.db = None;
            }
            if self.db.is_none() {
                match Db::open(&db_path) {
                    Ok(db) => self.db = db,
                    Err(e) => {
                        c.errors.push(e);
                        return true;
                    }
                }
            }
            if let Some(db) = &mut self.db {
                debug_assert_eq!(db.path(), db_path);
                let counts = db.poll(&mut c.errors);
                emit(counts, &mut c.readings);
                return true;
            }
            match read_log(&mut self.log, &log_path, &mut c.errors) {
                Ok(false) => false,
                Ok(true) => {
                    emit(&self.log.counts, &mut c.readings);
                    c.readings.push(Reading::counter(
                        Source::Rasdaemon,
                        "log_malformed_lines",
                        self.log.malformed as f64,
                    ));
                    true
                }
                Err(e) => {
                    c.errors.push(e);
                    true
                }
            }
        })
    }
}

fn emit(counts: &Counts, out: &mut Vec<Reading>) {
    for ((name, labels), v) in counts {
        let mut r = Reading::counter(Source::Rasdaemon, *name, *v);
        for (k, l) in labels {
            r = r.label(*k, l.as_str());
        }
        out.push(r);
    }
}

/// Reads the lines appended since the last poll. `Ok(false)` if there is no log.
fn read_log(
    st: &mut LogState,
    path: &Path,
    errors: &mut Vec<SensorError>,
) -> Result<bool, SensorError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(SensorError::read(path, e)),
    };
    let len = f.metadata().map_err(|e| SensorError::read(path, e))?.len();
    if st.path.as_deref() != Some(path) || len < st.offset {
        *st = LogState {
            path: Some(path.to_path_buf()),
            ..LogState::default()
        };
    }
    f.seek(SeekFrom::Start(st.offset))
        .map_err(|e| SensorError::read(path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_LOG_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| SensorError::read(path, e))?;
    // Only whole lines; a partial last line is read at the next poll.
    let Some(end) = buf.iter().rposition(|&b| b == b'\n').map(|p| p + 1) else {
        return Ok(true);
    };
    st.offset += end as u64;
    let text = String::from_utf8_lossy(&buf[..end]);
    let parsed = log::parse_log(&text);
    for (_, ev) in &parsed.events {
        for (name, mut labels, add) in log_counts(ev) {
            labels.sort();
            *st.counts.entry((name, labels)).or_default() += add;
        }
    }
    st.malformed += parsed.malformed.len() as u64;
    for m in parsed.malformed.iter().take(MAX_LINE_ERRORS) {
        errors.push(SensorError::LogLine {
            path: path.to_path_buf(),
            line: st.lines + m.line,
            event: m.event.clone(),
            reason: m.reason.clone(),
        });
    }
    st.lines += text.lines().count();
    Ok(true)
}

type Adds = Vec<(&'static str, Vec<(&'static str, String)>, f64)>;

fn log_counts(ev: &RasEvent) -> Adds {
    match ev {
        RasEvent::Mc(e) => {
            let mut l = vec![("err_type", e.err_type.clone())];
            if let Some(label) = &e.label {
                l.push(("dimm_label", label.clone()));
            }
            vec![
                ("mc_events", l.clone(), 1.0),
                ("mc_errors", l, f64::from(e.count)),
            ]
        }
        RasEvent::Aer(e) => vec![(
            "aer_events",
            vec![
                ("device", e.device.clone()),
                ("err_type", e.err_type.clone()),
            ],
            1.0,
        )],
        RasEvent::Mce(_) => vec![("mce_records", Vec::new(), 1.0)],
        RasEvent::Extlog(e) => vec![("extlog_events", severity(e), 1.0)],
        RasEvent::NonStandard(e) => vec![("non_standard_events", severity(e), 1.0)],
        RasEvent::Arm(_) => vec![("arm_events", Vec::new(), 1.0)],
        RasEvent::Devlink(e) => vec![(
            "devlink_events",
            vec![
                ("device", e.dev_name.clone()),
                ("reporter", e.reporter_name.clone()),
            ],
            1.0,
        )],
        RasEvent::DiskError(e) => vec![("disk_error_events", vec![("device", e.dev.clone())], 1.0)],
        RasEvent::MemoryFailure(e) => vec![(
            "memory_failure_events",
            vec![("action_result", e.action_result.clone())],
            1.0,
        )],
    }
}

fn severity(e: &log::GenericEvent) -> Vec<(&'static str, String)> {
    e.severity
        .iter()
        .map(|s| ("severity", s.to_ascii_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lifeboat-ras-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// (name, labels as k=v joined by ',', value) of every reading, for comparing.
    fn summary(scan: &Scan) -> Vec<String> {
        scan.readings
            .iter()
            .map(|r| {
                let l: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}{{{}}} {}", r.name, l.join(","), r.value)
            })
            .collect()
    }

    fn create_db(path: &Path) -> Connection {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let db = Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, err_count INTEGER, err_type TEXT, err_msg TEXT, label TEXT, mc INTEGER, top_layer INTEGER, middle_layer INTEGER, lower_layer INTEGER, address INTEGER, grain INTEGER, syndrome INTEGER, driver_detail TEXT);
             CREATE TABLE aer_event (id INTEGER PRIMARY KEY, timestamp TEXT, dev_name TEXT, err_type TEXT, err_msg TEXT);",
        )
        .unwrap();
        db
    }

    fn add_mc(db: &Connection, count: i64, ty: &str, label: &str) {
        db.execute(
            "INSERT INTO mc_event (timestamp, err_count, err_type, err_msg, label, mc) VALUES ('t', ?1, ?2, 'memory read error', ?3, 0)",
            rusqlite::params![count, ty, label],
        )
        .unwrap();
    }

    #[test]
    fn database_is_read_incrementally_with_cumulative_counts() {
        let dir = temp_root("db");
        let root = Root::new(&dir);
        let path = RasdaemonSensor::db_path(&root);
        let mut sensor = RasdaemonSensor::new();
        assert!(!sensor.read(&root).present, "no database yet: absent");

        let db = create_db(&path);
        let scan = sensor.read(&root);
        assert!(
            scan.present && scan.readings.is_empty() && scan.errors.is_empty(),
            "{scan:?}"
        );

        add_mc(&db, 1, "Corrected", "DIMM_A1");
        add_mc(&db, 2, "Corrected", "DIMM_A1");
        let scan = sensor.read(&root);
        assert_eq!(
            summary(&scan),
            [
                "mc_errors{dimm_label=DIMM_A1,err_type=Corrected} 3",
                "mc_events{dimm_label=DIMM_A1,err_type=Corrected} 2",
            ]
        );
        assert_eq!(sensor.db.as_ref().unwrap().last_id("mc_event"), Some(2));

        add_mc(&db, 1, "Uncorrected", "");
        let scan = sensor.read(&root);
        assert_eq!(
            summary(&scan),
            [
                "mc_errors{dimm_label=DIMM_A1,err_type=Corrected} 3",
                "mc_errors{err_type=Uncorrected} 1",
                "mc_events{dimm_label=DIMM_A1,err_type=Corrected} 2",
                "mc_events{err_type=Uncorrected} 1",
            ]
        );
        assert_eq!(sensor.db.as_ref().unwrap().last_id("mc_event"), Some(3));

        // A new database file (rasdaemon reinstalled, file replaced): counts start over.
        drop(db);
        std::fs::remove_file(&path).unwrap();
        let db = create_db(&path);
        add_mc(&db, 5, "Corrected", "DIMM_B1");
        let scan = sensor.read(&root);
        assert_eq!(
            summary(&scan),
            [
                "mc_errors{dimm_label=DIMM_B1,err_type=Corrected} 5",
                "mc_events{dimm_label=DIMM_B1,err_type=Corrected} 1",
            ]
        );

        // A database that is not one: a counted error naming the path, not a panic.
        drop(db);
        std::fs::write(&path, b"this is not sqlite").unwrap();
        let scan = sensor.read(&root);
        assert!(scan.present);
        assert!(!scan.errors.is_empty(), "{scan:?}");
        assert!(
            scan.errors.iter().all(|e| e.path() == path),
            "{:?}",
            scan.errors
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_is_read_incrementally_by_whole_lines_and_restarts_when_rotated() {
        let dir = temp_root("log");
        let root = Root::new(&dir);
        let mut sensor = RasdaemonSensor::new();
        let path = sensor.log_path(&root);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let line = "mc_event: 2024-01-10 08:40:46 +0100 1 Corrected error: x on A1 (mc: 0)\n";
        std::fs::write(&path, line.repeat(2)).unwrap();
        let scan = sensor.read(&root);
        assert_eq!(
            summary(&scan),
            [
                "mc_errors{dimm_label=A1,err_type=Corrected} 2",
                "mc_events{dimm_label=A1,err_type=Corrected} 2",
                "log_malformed_lines{} 0",
            ]
        );
        // Half a line is left for the next poll; a malformed line is counted.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"mc_event: bogus\nmc_event: 1 Corrected err")
            .unwrap();
        let scan = sensor.read(&root);
        assert_eq!(scan.readings[0].value, 2.0);
        assert_eq!(scan.readings[2].value, 1.0, "{scan:?}");
        assert_eq!(scan.errors.len(), 1);
        assert!(
            matches!(&scan.errors[0], SensorError::LogLine { line: 3, .. }),
            "{:?}",
            scan.errors
        );
        f.write_all(b"or: y on A1 (mc: 0)\n").unwrap();
        let scan = sensor.read(&root);
        assert_eq!(scan.readings[0].value, 3.0, "{scan:?}");
        // Rotated: the file is shorter than what was read; count it from the start.
        std::fs::write(&path, line).unwrap();
        let scan = sensor.read(&root);
        assert_eq!(scan.readings[0].value, 1.0, "{scan:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
