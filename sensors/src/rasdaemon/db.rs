//! Incremental reader of rasdaemon's SQLite database (`ras-mc_event.db`).
//!
//! rasdaemon (`rasdaemon --record`) appends one row per event to one table per event
//! kind, each with an `INTEGER PRIMARY KEY id`. The reader remembers, per table, the
//! last id it counted and the cumulative counts so far, so a poll reads only new rows
//! and still reports totals as counters. A table that does not exist (rasdaemon built
//! without that event, or an older version) is skipped. If the file is replaced (other
//! inode) or a table's ids go backwards, the counts start over, which the counter
//! semantics treat as a reset.
//!
//! Tables and columns are those rasdaemon creates (checked against a database made by
//! the real `rasdaemon` in the tests).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::SensorError;

/// Counts keyed by (reading name, labels).
pub(crate) type Counts = BTreeMap<(&'static str, Vec<(&'static str, String)>), f64>;

/// What one new row adds: (reading name, labels, increment).
type Adds = Vec<(&'static str, Vec<(&'static str, String)>, f64)>;

struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    count: fn(&[Value]) -> Adds,
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.trim().to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Null | Value::Blob(_) => String::new(),
    }
}

fn int(v: &Value) -> f64 {
    match v {
        Value::Integer(i) => (*i).max(0) as f64,
        Value::Text(s) => s.trim().parse::<f64>().unwrap_or(0.0).max(0.0),
        _ => 0.0,
    }
}

fn opt_label(labels: &mut Vec<(&'static str, String)>, key: &'static str, v: &Value) {
    let t = text(v);
    if !t.is_empty() {
        labels.push((key, t));
    }
}

/// UEFI CPER generic error severity (UEFI spec, appendix N), as extlog stores it.
fn cper_severity(v: &Value) -> String {
    match v {
        Value::Integer(0) => "recoverable".into(),
        Value::Integer(1) => "fatal".into(),
        Value::Integer(2) => "corrected".into(),
        Value::Integer(3) => "informational".into(),
        other => text(other),
    }
}

const TABLES: &[Table] = &[
    Table {
        name: "mc_event",
        columns: &["err_type", "label", "err_count"],
        count: |r| {
            let mut l = vec![("err_type", text(&r[0]))];
            opt_label(&mut l, "dimm_label", &r[1]);
            vec![("mc_events", l.clone(), 1.0), ("mc_errors", l, int(&r[2]))]
        },
    },
    Table {
        name: "aer_event",
        columns: &["dev_name", "err_type"],
        count: |r| {
            vec![(
                "aer_events",
                vec![("device", text(&r[0])), ("err_type", text(&r[1]))],
                1.0,
            )]
        },
    },
    Table {
        name: "mce_record",
        columns: &["error_msg"],
        count: |r| {
            let mut l = Vec::new();
            opt_label(&mut l, "error", &r[0]);
            vec![("mce_records", l, 1.0)]
        },
    },
    Table {
        name: "extlog_event",
        columns: &["severity", "error_count"],
        count: |r| {
            let l = vec![("severity", cper_severity(&r[0]))];
            vec![
                ("extlog_events", l.clone(), 1.0),
                ("extlog_errors", l, int(&r[1])),
            ]
        },
    },
    Table {
        name: "arm_event",
        columns: &[],
        count: |_| vec![("arm_events", Vec::new(), 1.0)],
    },
    Table {
        name: "non_standard_event",
        columns: &["severity"],
        count: |r| {
            let mut l = Vec::new();
            opt_label(&mut l, "severity", &r[0]);
            vec![("non_standard_events", l, 1.0)]
        },
    },
    Table {
        name: "devlink_event",
        columns: &["dev_name", "reporter_name"],
        count: |r| {
            let mut l = vec![("device", text(&r[0]))];
            opt_label(&mut l, "reporter", &r[1]);
            vec![("devlink_events", l, 1.0)]
        },
    },
    Table {
        name: "disk_errors",
        columns: &["dev"],
        count: |r| vec![("disk_error_events", vec![("device", text(&r[0]))], 1.0)],
    },
    Table {
        name: "memory_failure_event",
        columns: &["action_result"],
        count: |r| {
            let mut l = Vec::new();
            opt_label(&mut l, "action_result", &r[0]);
            vec![("memory_failure_events", l, 1.0)]
        },
    },
];

/// An open database and what has been counted from it.
pub(crate) struct Db {
    path: PathBuf,
    conn: Connection,
    ident: (u64, u64),
    last_id: HashMap<&'static str, i64>,
    counts: HashMap<&'static str, Counts>,
    /// (mtime, size) of the file at the last poll, and the totals then. rasdaemon
    /// writes in SQLite's default rollback-journal mode, so a commit changes the file;
    /// an unchanged file needs no query.
    stamp: Option<(std::time::SystemTime, u64)>,
    totals: Counts,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("last_id", &self.last_id)
            .finish_non_exhaustive()
    }
}

fn db_err(path: &Path, operation: impl Into<String>, e: rusqlite::Error) -> SensorError {
    SensorError::Database {
        path: path.to_path_buf(),
        operation: operation.into(),
        source: Arc::new(e),
    }
}

impl Db {
    /// Opens `path` read-only; `Ok(None)` if it does not exist.
    pub(crate) fn open(path: &Path) -> Result<Option<Db>, SensorError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SensorError::read(path, e)),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_err(path, "open", e))?;
        // rasdaemon may be writing; wait a little rather than fail the poll.
        conn.busy_timeout(std::time::Duration::from_millis(200))
            .map_err(|e| db_err(path, "set busy timeout", e))?;
        Ok(Some(Db {
            path: path.to_path_buf(),
            conn,
            ident: (meta.dev(), meta.ino()),
            last_id: HashMap::new(),
            counts: HashMap::new(),
            stamp: None,
            totals: Counts::new(),
        }))
    }

    /// The last row id counted in `table`.
    #[cfg(test)]
    pub(crate) fn last_id(&self, table: &str) -> Option<i64> {
        self.last_id.get(table).copied()
    }

    /// The file this reader has open.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` is still the file that was opened.
    pub(crate) fn is_current(&self, path: &Path) -> bool {
        self.path == path && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == self.ident)
    }

    /// Counts the rows added since the last poll; returns the cumulative counts.
    pub(crate) fn poll(&mut self, errors: &mut Vec<SensorError>) -> &Counts {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        // Filesystems with coarse timestamps can hide a second commit within the same
        // tick: a file modified in the last two seconds is always queried.
        let settled = stamp.is_some_and(|(mtime, _)| {
            mtime
                .elapsed()
                .is_ok_and(|age| age > std::time::Duration::from_secs(2))
        });
        if settled && stamp == self.stamp {
            return &self.totals;
        }
        let errors_before = errors.len();
        let existing: Vec<String> = match self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect())
        {
            Ok(v) => v,
            Err(e) => {
                errors.push(db_err(&self.path, "list tables", e));
                Vec::new()
            }
        };
        for table in TABLES {
            if !existing.iter().any(|t| t == table.name) {
                continue;
            }
            if let Err(e) = self.poll_table(table) {
                errors.push(db_err(&self.path, format!("query {}", table.name), e));
            }
        }
        let mut all = Counts::new();
        for counts in self.counts.values() {
            for (k, v) in counts {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        self.totals = all;
        // After a failed query, look again at the next poll even if nothing changed.
        self.stamp = if errors.len() == errors_before {
            stamp
        } else {
            None
        };
        &self.totals
    }

    fn poll_table(&mut self, table: &Table) -> rusqlite::Result<()> {
        let last = self.last_id.get(table.name).copied().unwrap_or(0);
        let max: Option<i64> =
            self.conn
                .query_row(&format!("SELECT max(id) FROM {}", table.name), [], |r| {
                    r.get(0)
                })?;
        let last = if max.unwrap_or(0) < last {
            // Rows went away: the table was recreated. Start over.
            self.counts.remove(table.name);
            0
        } else {
            last
        };
        let mut cols = String::from("id");
        for c in table.columns {
            cols.push_str(", ");
            cols.push_str(c);
        }
        let sql = format!(
            "SELECT {cols} FROM {} WHERE id > ?1 ORDER BY id",
            table.name
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st.query([last])?;
        let counts = self.counts.entry(table.name).or_default();
        let mut new_last = last;
        let mut values = Vec::with_capacity(table.columns.len());
        while let Some(row) = rows.next()? {
            new_last = row.get(0)?;
            values.clear();
            for i in 0..table.columns.len() {
                values.push(row.get::<_, Value>(i + 1)?);
            }
            for (name, mut labels, add) in (table.count)(&values) {
                labels.sort();
                *counts.entry((name, labels)).or_default() += add;
            }
        }
        self.last_id.insert(table.name, new_last);
        Ok(())
    }
}
