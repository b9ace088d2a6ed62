//! End-to-end tests of `lifeboat sensors` against fixture sysfs trees (issue 3).
//!
//! Each directory of `tests/fixtures/sensors/` is a node's root (made by `generate.py`
//! there); the real binary reads it and its text and JSON output must equal
//! `tests/golden/sensors/<case>.txt` and `.json`. Re-bless after an intended change with
//! `LIFEBOAT_BLESS=1 cargo test -p lifeboat --test sensors`.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// Runs `lifeboat sensors ARGS` from the workspace root; returns (status, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("sensors")
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run lifeboat");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// Compares `actual` with the golden file, or rewrites it under LIFEBOAT_BLESS=1.
fn golden(name: &str, actual: &str) {
    let path = workspace().join("tests/golden/sensors").join(name);
    if std::env::var_os("LIFEBOAT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; bless it with LIFEBOAT_BLESS=1", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output (first at line {}):\n--- expected\n{}\n--- actual\n{}\n\
             (re-bless with LIFEBOAT_BLESS=1 if the change is intended)",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

/// The one check: text and JSON output of `case` equal their golden files, every
/// source in `present` is present and every other is absent, and the JSON agrees with
/// the text on how many readings and errors each source has.
fn check(case: &str, present: &[&str], errors: usize) {
    let root = format!("tests/fixtures/sensors/{case}");
    assert!(workspace().join(&root).is_dir(), "fixture {root} missing");

    let (ok, text, stderr) = run(&["--root", &root]);
    assert!(ok, "{case}: {stderr}");
    golden(&format!("{case}.txt"), &text);

    let (ok, json, stderr) = run(&["--root", &root, "--json"]);
    assert!(ok, "{case}: {stderr}");
    golden(&format!("{case}.json"), &json);

    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let sources = v["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 9, "{case}: one entry per source");
    let mut total_errors = 0;
    for s in sources {
        let name = s["source"].as_str().unwrap();
        let is_present = s["present"].as_bool().unwrap();
        assert_eq!(
            is_present,
            present.contains(&name),
            "{case}: {name} present?"
        );
        let readings = s["readings"].as_array().unwrap();
        let errs = s["errors"].as_array().unwrap().len();
        total_errors += errs;
        if is_present {
            assert!(
                !readings.is_empty(),
                "{case}: {name} present but read nothing"
            );
            assert!(
                text.contains(&format!("{name}: {} readings", readings.len())),
                "{case}: text and JSON disagree on {name}"
            );
            for r in readings {
                assert_eq!(
                    r["source"], s["source"],
                    "{case}: reading in the wrong source"
                );
                assert!(
                    r["value"].as_f64().is_some_and(f64::is_finite),
                    "{case}: {r}"
                );
            }
        } else {
            assert!(
                readings.is_empty() && errs == 0,
                "{case}: absent {name} has data"
            );
            assert!(
                text.contains(&format!("{name}: absent")),
                "{case}: {name} not listed absent"
            );
        }
    }
    assert_eq!(total_errors, errors, "{case}: number of errors");
}

#[test]
fn empty_node_has_every_source_absent() {
    check("empty", &[], 0);
}

#[test]
fn edac_modern_dimm_layout() {
    check("edac-dimm", &["edac"], 0);
}

#[test]
fn edac_legacy_csrow_layout_without_ch1_ue_count() {
    check("edac-csrow", &["edac"], 0);
}

#[test]
fn edac_csrowless_rank_layout() {
    check("edac-rank", &["edac"], 0);
}

#[test]
fn hwmon_coretemp_nvme_fans_voltages_power_and_old_layout() {
    check("hwmon", &["hwmon"], 0);
}

#[test]
fn thermal_zones_with_trip_points() {
    check("thermal", &["thermal"], 0);
}

#[test]
fn infiniband_no_pma_saturated_and_unreadable_counters() {
    check("infiniband", &["infiniband"], 1);
}

#[test]
fn netdev_error_statistics_without_lo() {
    check("netdev", &["netdev"], 0);
}

#[test]
fn pcie_aer_old_and_new_names_and_root_ports() {
    check("pcie-aer", &["pcie_aer"], 0);
}

#[test]
fn rasdaemon_database() {
    check("rasdaemon-db", &["rasdaemon"], 0);
}

#[test]
fn rasdaemon_log_with_malformed_lines() {
    check("rasdaemon-log", &["rasdaemon"], 2);
}

#[test]
fn host_load_and_memory() {
    check("host", &["host"], 0);
}

#[test]
fn large_node() {
    check(
        "large",
        &[
            "edac",
            "hwmon",
            "infiniband",
            "netdev",
            "pcie_aer",
            "rasdaemon",
            "host",
        ],
        0,
    );
}

#[test]
fn missing_root_is_an_error() {
    let (ok, _, stderr) = run(&["--root", "tests/fixtures/sensors/no-such-case"]);
    assert!(!ok);
    assert!(stderr.contains("no-such-case: not a directory"), "{stderr}");
}
