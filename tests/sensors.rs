//! End-to-end tests of `lifeboat sensors` against fixture sysfs trees (issue 3).
//!
//! Each directory of `tests/fixtures/sensors/` is a node's root (made by `generate.py`
//! there); the real binary reads it and its text and JSON output must equal
//! `tests/golden/sensors/<case>.txt` and `.json`. Re-bless after an intended change with
//! `UPDATE_EXPECT=1 cargo test -p lifeboat --test sensors` (see `common/golden.rs`).

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// Runs `lifeboat sensors ARGS` from the workspace root; returns (status, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["sensors"];
    all.extend_from_slice(args);
    let out = lifeboat_in(&workspace(), &all);
    (out.status.success(), out.stdout, out.stderr)
}

/// Compares `actual` with the golden file `tests/golden/sensors/NAME`.
fn golden(name: &str, actual: &str) {
    assert_golden(&format!("tests/golden/sensors/{name}"), actual);
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

/// The same chips read as a fixture root: hwmon reads them raw (the unparsable
/// `temp3_input` is its one error); libsensors reads only the host's /sys, so under a
/// fixture root lm_sensors is absent.
#[test]
fn lm_sensors_fixture_as_a_root() {
    check("lm-sensors", &["hwmon"], 1);
}

/// libsensors (the `libsensors-dev` build) on the host's root, with the lm-sensors
/// fixture mounted over `/sys/class` and `/sys/devices` and its sensors3.conf over
/// `/etc/sensors3.conf`, in a private mount namespace (libsensors reads only `/sys`,
/// and checks that it is sysfs). Its configuration applies (labels, a compute, an
/// ignore), chips get libsensors' names by bus, and every value equals what the real
/// `sensors -u` prints in the same namespace.
#[cfg(feature = "libsensors-dev")]
#[test]
fn libsensors_applies_the_node_configuration_and_agrees_with_sensors() {
    use std::path::Path;
    use std::process::Command;

    require_root("the libsensors test mounts a fixture over /sys: it must run as root");
    for (tool, package) in [("unshare", "util-linux"), ("sensors", "lm-sensors")] {
        require_tool(
            tool,
            &format!("the libsensors test needs `{tool}` (Debian package {package})"),
        );
    }
    assert!(
        Path::new("/etc/sensors3.conf").exists() && Path::new("/etc/sensors.d").is_dir(),
        "/etc/sensors3.conf and /etc/sensors.d are mounted over: install libsensors-config"
    );
    let fx = sensor_fixture("lm-sensors");
    let scratch = scratch("libsensors");
    std::fs::create_dir_all(scratch.join("sensors.d")).unwrap();
    std::fs::write(
        scratch.join("broken.conf"),
        "chip \"nct6776-*\"\n    label in0 \"Vcore\"\n    bogus in1\n",
    )
    .unwrap();
    let script = r#"set -e
mount --make-rprivate /
mount --bind "$FX/sys/class" /sys/class
mount --bind "$FX/sys/devices" /sys/devices
mount --bind "$OUT/sensors.d" /etc/sensors.d
mount --bind "$FX/etc/sensors3.conf" /etc/sensors3.conf
sensors -u > "$OUT/sensors.txt" 2> "$OUT/sensors.err" || true
"$BIN" sensors --json > "$OUT/lifeboat.json"
umount /etc/sensors3.conf
mount --bind "$OUT/broken.conf" /etc/sensors3.conf
"$BIN" sensors --json > "$OUT/broken.json"
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", script])
        .env("FX", &fx)
        .env("OUT", &scratch)
        .env("BIN", lifeboat_bin());
    let out = run_to_end(cmd, "the run in a private mount namespace");
    assert!(
        out.status.success(),
        "the run in a private mount namespace failed: {}",
        out.stderr
    );
    // A configuration libsensors cannot parse is an error naming the file and line, not
    // text on stderr; the chips are still read.
    // One source of a `lifeboat sensors --json` output written in the namespace.
    let source = |file: &str, name: &str| {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(scratch.join(file)).unwrap()).unwrap();
        json["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == name)
            .unwrap()
            .clone()
    };
    let broken = source("broken.json", "lm_sensors");
    let errs = broken["errors"].to_string();
    assert!(
        errs.contains("/etc/sensors3.conf: line 3"),
        "the configuration error names the file and line: {errs}"
    );
    assert!(!broken["readings"].as_array().unwrap().is_empty());
    let lm = source("lifeboat.json", "lm_sensors");
    let hw = source("lifeboat.json", "hwmon");
    let readings = |s: &serde_json::Value| s["readings"].as_array().unwrap().clone();
    let find = |rs: &[serde_json::Value], chip: &str, sensor: &str, name: &str| {
        rs.iter()
            .find(|r| {
                r["labels"]["chip_name"] == chip
                    && r["labels"]["sensor"] == sensor
                    && r["name"] == name
            })
            .cloned()
    };
    let (lm_r, hw_r) = (readings(&lm), readings(&hw));

    // Chip names by bus, as libsensors forms them.
    let mut chips: Vec<&str> = lm_r
        .iter()
        .map(|r| r["labels"]["chip_name"].as_str().unwrap())
        .collect();
    chips.sort_unstable();
    chips.dedup();
    assert_eq!(
        chips,
        [
            "acpitz-virtual-0",
            "amdgpu-pci-0100",
            "coretemp-isa-0000",
            "nct6776-isa-0290"
        ]
    );
    // compute in1 @*12: 1.008 V at the pin is 12.096 V on the rail; hwmon reads the pin.
    let in1 = find(&lm_r, "nct6776-isa-0290", "in1", "in_volts").expect("lm_sensors in1");
    assert!(
        (in1["value"].as_f64().unwrap() - 12.096).abs() < 1e-9,
        "{in1}"
    );
    assert_eq!(in1["labels"]["label"], "+12V");
    let raw = find(&hw_r, "nct6776", "in1", "in_volts").expect("hwmon in1");
    assert_eq!(raw["value"].as_f64(), Some(1.008));
    // ignore fan2: hidden from lm_sensors, still read raw by hwmon.
    assert!(find(&lm_r, "nct6776-isa-0290", "fan2", "fan_rpm").is_none());
    assert!(find(&hw_r, "nct6776", "fan2", "fan_rpm").is_some());
    // A configured label overrides the driver's; unconfigured ones keep it.
    let label = |sensor: &str| {
        find(&lm_r, "coretemp-isa-0000", sensor, "temp_celsius").unwrap()["labels"]["label"].clone()
    };
    assert_eq!(
        (label("temp1"), label("temp2")),
        ("Package id 0".into(), "Core zero".into())
    );
    // The attribute that does not parse is an error naming it; the rest is read.
    let errors = lm["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].as_str().unwrap().contains("hwmon1/temp3_input"),
        "{errors:?}"
    );

    // Every value `sensors -u` prints for an attribute lifeboat reads is lifeboat's.
    let suffix_of = |name: &str| match name {
        "temp_celsius" | "fan_rpm" | "in_volts" => "input",
        "temp_max_celsius" | "in_max_volts" => "max",
        "in_min_volts" | "fan_min_rpm" => "min",
        "temp_crit_celsius" => "crit",
        "temp_emergency_celsius" => "emergency",
        "temp_crit_alarm" => "crit_alarm",
        "temp_max_alarm" => "max_alarm",
        "in_alarm" | "fan_alarm" => "alarm",
        "power_average_watts" => "average",
        other => panic!("no sensors -u name for {other}"),
    };
    let mut ours: Vec<(String, String, String)> = lm_r
        .iter()
        .map(|r| {
            let l = &r["labels"];
            (
                l["chip_name"].as_str().unwrap().to_owned(),
                format!(
                    "{}_{}",
                    l["sensor"].as_str().unwrap(),
                    suffix_of(r["name"].as_str().unwrap())
                ),
                format!("{:.3}", r["value"].as_f64().unwrap()),
            )
        })
        .collect();
    let text = std::fs::read_to_string(scratch.join("sensors.txt")).unwrap();
    let mut theirs = Vec::new();
    let mut chip = String::new();
    for line in text.lines() {
        if let Some(sub) = line.strip_prefix("  ") {
            let (name, value) = sub.split_once(": ").unwrap();
            theirs.push((chip.clone(), name.to_owned(), value.to_owned()));
        } else if !line.is_empty() && !line.ends_with(':') && !line.starts_with("Adapter:") {
            chip = line.to_owned();
        }
    }
    ours.sort();
    theirs.sort();
    assert_eq!(
        ours, theirs,
        "lifeboat's lm_sensors and `sensors -u` disagree"
    );
}
