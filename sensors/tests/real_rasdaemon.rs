//! The rasdaemon database reader and the EDAC reader checked against the real tools:
//! a database created by the real `rasdaemon --record`, counts cross-checked with
//! `ras-mc-ctl --summary`, per-DIMM counts with `ras-mc-ctl --error-count`.
//!
//! Needs root and the Debian packages `rasdaemon` (which brings `ras-mc-ctl`, sqlite3
//! and libdbd-sqlite3-perl) and `util-linux` (`unshare`, `mount`). Nothing on the host
//! is changed: each tool runs in a private mount namespace (`unshare -m`) where a tmpfs
//! covers `/var/lib` and the test's directory is bind-mounted on
//! `/var/lib/rasdaemon`, tracefs and debugfs are mounted if they are not, and, for
//! `--error-count`, a tmpfs covers `/sys/devices/system` with the `edac-dimm` fixture
//! copied in. rasdaemon runs in the foreground, is stopped with SIGINT once its
//! database has its tables, and is waited for. When something is missing the test
//! fails and says what to install; it is never skipped.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat_sensors::edac::EdacSensor;
use lifeboat_sensors::rasdaemon::RasdaemonSensor;
use lifeboat_sensors::{Root, Scan, Sensor};
use rusqlite::Connection;

fn require_tools() {
    let id = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "this test runs rasdaemon in a private mount namespace and needs root"
    );
    // ras-mc-ctl exits silently with status 1 when modprobe (package kmod) is missing.
    // --error-count runs dmidecode (package dmidecode) and fails without it.
    for tool in [
        "rasdaemon",
        "ras-mc-ctl",
        "modprobe",
        "dmidecode",
        "unshare",
        "mount",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} not found: install the Debian packages rasdaemon, kmod, dmidecode and util-linux \
             (apt-get install -y rasdaemon kmod dmidecode)"
        );
    }
}

/// Runs `script` with sh in a new private mount namespace, `$ROOT` set to `root`.
fn in_namespace(root: &Path, script: &str) -> Output {
    let full = format!(
        "set -eu\n\
         mount --make-rprivate /\n\
         mount -t tmpfs lifeboat-test /var/lib\n\
         mkdir -p /var/lib/rasdaemon\n\
         mount --bind \"$ROOT/var/lib/rasdaemon\" /var/lib/rasdaemon\n\
         {script}"
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &full])
        .env("ROOT", root)
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "namespace script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn temp_root(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lifeboat-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("var/lib/rasdaemon")).unwrap();
    dir
}

/// Lets the real rasdaemon create its database under `root`.
fn create_db_with_rasdaemon(root: &Path) -> PathBuf {
    in_namespace(
        root,
        "mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug\n\
         mountpoint -q /sys/kernel/tracing || mount -t tracefs none /sys/kernel/tracing\n\
         rasdaemon -f -r >/var/lib/rasdaemon/rasdaemon.out 2>&1 &\n\
         pid=$!\n\
         i=0\n\
         while [ $i -lt 100 ] && ! grep -q 'Listening to events' /var/lib/rasdaemon/rasdaemon.out; do\n\
           sleep 0.1; i=$((i+1))\n\
         done\n\
         kill -INT $pid\n\
         wait $pid || true\n",
    );
    let db = RasdaemonSensor::db_path(&Root::new(root));
    let log =
        std::fs::read_to_string(root.join("var/lib/rasdaemon/rasdaemon.out")).unwrap_or_default();
    assert!(
        db.is_file(),
        "rasdaemon did not create {} (tracefs/debugfs not mountable, or no ras events \
         in this kernel?); its output:\n{log}",
        db.display()
    );
    db
}

fn tables(db: &Connection) -> BTreeMap<String, Vec<String>> {
    let names: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|t| {
            let cols: Vec<String> = db
                .prepare(&format!("PRAGMA table_info({t})"))
                .unwrap()
                .query_map([], |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (t, cols)
        })
        .collect()
}

/// Sum of the values of readings named `name` whose labels include all of `labels`.
fn total(scan: &Scan, name: &str, labels: &[(&str, &str)]) -> f64 {
    scan.readings
        .iter()
        .filter(|r| r.name == name)
        .filter(|r| {
            labels
                .iter()
                .all(|(k, v)| r.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|r| r.value)
        .sum()
}

#[test]
fn database_made_by_real_rasdaemon_agrees_with_ras_mc_ctl_summary() {
    require_tools();
    let root = temp_root("ras-summary");
    let path = create_db_with_rasdaemon(&root);

    // The tables and columns the reader uses are those rasdaemon created.
    let db = Connection::open(&path).unwrap();
    let schema = tables(&db);
    for (table, cols) in [
        ("mc_event", &["id", "err_count", "err_type", "label"][..]),
        ("aer_event", &["id", "dev_name", "err_type"][..]),
        ("mce_record", &["id", "error_msg"][..]),
        ("extlog_event", &["id", "severity", "error_count"][..]),
    ] {
        let have = schema
            .get(table)
            .unwrap_or_else(|| panic!("rasdaemon created no {table} table: {schema:?}"));
        for c in cols {
            assert!(
                have.iter().any(|h| h == c),
                "{table} has no column {c}: {have:?}"
            );
        }
    }

    let mut sensor = RasdaemonSensor::new();
    let root_ = Root::new(&root);
    let scan = sensor.read(&root_);
    assert!(scan.present && scan.errors.is_empty(), "{scan:?}");
    assert!(
        scan.readings.is_empty(),
        "fresh database has events: {scan:?}"
    );

    // Events as rasdaemon's handlers store them.
    for (count, ty, label) in [
        (1, "Corrected", "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"),
        (2, "Corrected", "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"),
        (1, "Uncorrected", "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"),
    ] {
        db.execute(
            "INSERT INTO mc_event (timestamp, err_count, err_type, err_msg, label, mc, top_layer, middle_layer, lower_layer, address, grain, syndrome, driver_detail) \
             VALUES ('2026-11-20 10:00:00 +0000', ?1, ?2, 'memory read error', ?3, 0, 0, 0, -1, 4096, 32, 0, '')",
            rusqlite::params![count, ty, label],
        )
        .unwrap();
    }
    for (dev, ty, msg) in [
        ("0000:3b:00.0", "Corrected", "Receiver Error"),
        ("0000:3b:00.0", "Corrected", "Receiver Error"),
        (
            "0000:00:1c.0",
            "Uncorrected (Non-Fatal)",
            "Completion Timeout",
        ),
    ] {
        db.execute(
            "INSERT INTO aer_event (timestamp, dev_name, err_type, err_msg) VALUES ('2026-11-20 11:00:00 +0000', ?1, ?2, ?3)",
            rusqlite::params![dev, ty, msg],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO mce_record (timestamp, bank, cpu, error_msg) VALUES ('2026-11-20 12:00:00 +0000', 7, 0, 'MEMORY CONTROLLER RD_CHANNEL1_ERR')",
        [],
    )
    .unwrap();

    let scan = sensor.read(&root_);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);

    let out = in_namespace(&root, "ras-mc-ctl --summary\n");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    // Memory: "\t<type> on DIMM Label(s): '<label>' location: m:t:m:l errors: <rows>"
    let mut checked = 0;
    let mut aer_rows: BTreeMap<String, f64> = BTreeMap::new();
    for line in summary.lines() {
        let line = line.trim();
        if let Some((head, n)) = line.split_once(" errors: ") {
            if let Some((ty, rest)) = head.split_once(" on DIMM Label(s): '") {
                let label = rest.split('\'').next().unwrap();
                let n: f64 = n.trim().parse().unwrap();
                let ours = total(
                    &scan,
                    "mc_events",
                    &[("err_type", ty), ("dimm_label", label)],
                );
                assert_eq!(ours, n, "mc_events for {ty} {label}: {summary}");
                checked += 1;
                continue;
            }
            // AER: "\t<rows> <type> errors: <msg>"
            if let Some((n, ty)) = head.split_once(' ') {
                if let Ok(n) = n.parse::<f64>() {
                    *aer_rows.entry(ty.to_string()).or_insert(0.0) += n;
                    checked += 1;
                }
            }
        } else if let Some(rest) = line.strip_suffix(" errors") {
            // MCE: "\t<rows> <error_msg> errors"
            if let Some((n, msg)) = rest.split_once(' ') {
                if let Ok(n) = n.parse::<f64>() {
                    assert_eq!(
                        total(&scan, "mce_records", &[("error", msg)]),
                        n,
                        "{summary}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(
        checked,
        2 + 2 + 1,
        "lines of ras-mc-ctl --summary checked:\n{summary}"
    );
    // AER rows are grouped by type and message there; compare the per-type sums.
    assert_eq!(aer_rows.len(), 2, "{summary}");
    for (ty, n) in &aer_rows {
        assert_eq!(
            total(&scan, "aer_events", &[("err_type", ty)]),
            *n,
            "aer_events {ty}: {summary}"
        );
    }
    // Totals the summary does not show per device.
    assert_eq!(
        total(&scan, "aer_events", &[("device", "0000:3b:00.0")]),
        2.0
    );
    assert_eq!(total(&scan, "mc_errors", &[("err_type", "Corrected")]), 3.0);

    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn edac_dimm_counts_agree_with_ras_mc_ctl_error_count() {
    require_tools();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sensors/edac-dimm");
    let fixture = fixture.canonicalize().expect("edac-dimm fixture");
    let scan = EdacSensor.read(&Root::new(&fixture));
    assert!(scan.present && scan.errors.is_empty(), "{scan:?}");

    let root = temp_root("ras-error-count");
    let script = format!(
        "mount -t tmpfs lifeboat-test /sys/devices/system\n\
         cp -a '{}/sys/devices/system/edac' /sys/devices/system/\n\
         ras-mc-ctl --error-count\n",
        fixture.display()
    );
    let out = in_namespace(&root, &script);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut rows = 0;
    for line in text.lines().skip_while(|l| !l.starts_with("Label")).skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let [label, ce, ue] = f[..] else {
            panic!("unexpected ras-mc-ctl line {line:?} in:\n{text}");
        };
        for (name, want) in [("dimm_ce_count", ce), ("dimm_ue_count", ue)] {
            let want: f64 = want.trim().parse().unwrap();
            assert_eq!(
                total(&scan, name, &[("dimm_label", label.trim())]),
                want,
                "{name} {label}"
            );
        }
        rows += 1;
    }
    assert_eq!(
        rows, 6,
        "one ras-mc-ctl row per DIMM of the fixture:\n{text}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
