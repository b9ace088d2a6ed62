//! End-to-end tests of `lifeboat rules check|test` (issue 4), and the backtests of the
//! default rules in `config/lifeboat.toml` on the traces under `tests/fixtures/traces/`.
//!
//! The traces are generated here, deterministically (a fixed-seed xorshift), and checked
//! in so operators can replay them; `traces_are_up_to_date` fails when the generator and
//! the files disagree. Re-bless traces and golden outputs with `UPDATE_EXPECT=1` (see
//! `common/golden.rs`).

mod common;

use std::fs;

use common::*;
use lifeboat_sensors::{Reading, Source, TracePoint};
use lifeboat_triggers::backtest::replay;
use lifeboat_triggers::{Config, EventKind};

/// Runs `lifeboat ARGS` from the workspace root.
fn lifeboat(args: &[&str]) -> CliResult {
    lifeboat_in(&workspace(), args)
}

/// Compares `actual` with the golden file `tests/golden/rules/NAME`.
fn golden(name: &str, actual: &str) {
    assert_golden(&format!("tests/golden/rules/{name}"), actual);
}

// ---- trace generator ----------------------------------------------------------------

/// 2025-11-25T08:00:00Z.
const T0: f64 = 1_764_057_600.0;
const MIN: f64 = 60.0;

/// xorshift64*: small, deterministic, good enough for noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability p.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in [-a, a].
    fn noise(&mut self, a: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * a
    }
}

/// The sensors of one simulated node: one memory controller with two DIMMs, one CPU
/// package (hwmon and thermal zone), one InfiniBand port, one Ethernet port, one PCIe
/// device with AER.
struct Node {
    rng: Rng,
    dimm_ce: [f64; 2],
    dimm_ue: [f64; 2],
    pkg_temp: f64,
    crit_alarm: f64,
    symbol_error: f64,
    link_downed: f64,
    link_error_recovery: f64,
    port_state: f64,
    rx_crc: f64,
    aer_fatal: f64,
    aer_nonfatal: f64,
    /// Readings of the fast sources (hwmon, thermal) every this many seconds.
    fast_every: f64,
}

const DIMMS: [(&str, &str); 2] = [("dimm0", "CPU0_DIMM_A1"), ("dimm1", "CPU0_DIMM_B1")];

impl Node {
    fn new(seed: u64, fast_every: f64) -> Node {
        Node {
            rng: Rng(seed),
            // Counters as a node has them after months of uptime.
            dimm_ce: [3.0, 0.0],
            dimm_ue: [0.0, 0.0],
            pkg_temp: 62.0,
            crit_alarm: 0.0,
            symbol_error: 1234.0,
            link_downed: 1.0,
            link_error_recovery: 3.0,
            port_state: 4.0,
            rx_crc: 0.0,
            aer_fatal: 0.0,
            aer_nonfatal: 0.0,
            fast_every,
        }
    }

    /// Readings due at offset `s` seconds from T0: counters every 30 s, temperatures
    /// every `fast_every`.
    fn readings(&self, s: f64) -> Vec<Reading> {
        let mut out = Vec::new();
        if s % self.fast_every == 0.0 {
            let temp = (self.pkg_temp * 10.0).round() / 10.0;
            out.push(
                Reading::gauge(Source::Hwmon, "temp_celsius", temp)
                    .label("chip", "coretemp-isa-0000")
                    .label("chip_name", "coretemp")
                    .label("label", "Package id 0")
                    .label("sensor", "temp1"),
            );
            out.push(
                Reading::gauge(Source::Hwmon, "temp_crit_alarm", self.crit_alarm)
                    .label("chip", "coretemp-isa-0000")
                    .label("chip_name", "coretemp")
                    .label("label", "Package id 0")
                    .label("sensor", "temp1"),
            );
            out.push(
                Reading::gauge(Source::Thermal, "zone_temp_celsius", temp)
                    .label("type", "x86_pkg_temp")
                    .label("zone", "thermal_zone1"),
            );
        }
        if s % 30.0 == 0.0 {
            let mc = |name: &str, v: f64| {
                Reading::counter(Source::Edac, name, v)
                    .label("controller", "0")
                    .label("mc_name", "Skylake Socket#0 IMC#0")
            };
            out.push(mc("mc_ce_count", self.dimm_ce.iter().sum()));
            out.push(mc("mc_ue_count", self.dimm_ue.iter().sum()));
            for (i, (dimm, label)) in DIMMS.iter().enumerate() {
                for (name, v) in [
                    ("dimm_ce_count", self.dimm_ce[i]),
                    ("dimm_ue_count", self.dimm_ue[i]),
                ] {
                    out.push(
                        Reading::counter(Source::Edac, name, v)
                            .label("controller", "0")
                            .label("dimm", *dimm)
                            .label("dimm_label", *label),
                    );
                }
            }
            let ib = |name: &str, v: f64, counter: bool| {
                let r = if counter {
                    Reading::counter(Source::Infiniband, name, v)
                } else {
                    Reading::gauge(Source::Infiniband, name, v)
                };
                r.label("device", "mlx5_0").label("port", "1")
            };
            out.push(ib("symbol_error", self.symbol_error, true));
            out.push(ib("link_downed", self.link_downed, true));
            out.push(ib("link_error_recovery", self.link_error_recovery, true));
            out.push(ib("port_state", self.port_state, false));
            out.push(
                Reading::counter(Source::Netdev, "rx_crc_errors", self.rx_crc)
                    .label("device", "eno1"),
            );
            for (name, v) in [
                ("aer_fatal_errors", self.aer_fatal),
                ("aer_nonfatal_errors", self.aer_nonfatal),
            ] {
                out.push(
                    Reading::counter(Source::PcieAer, name, v).label("device", "0000:3b:00.0"),
                );
            }
        }
        out
    }

    /// Everyday noise: temperature wandering with load, rare CEs and symbol errors.
    fn healthy_tick(&mut self, dt: f64) {
        let target = 64.0 + self.rng.noise(6.0);
        self.pkg_temp += (target - self.pkg_temp) * 0.2 + self.rng.noise(1.0);
        let per_sec = dt / 3600.0;
        if self.rng.chance(0.6 * per_sec) {
            let i = (self.rng.next() % 2) as usize;
            self.dimm_ce[i] += 1.0;
        }
        if self.rng.chance(4.0 * per_sec) {
            self.symbol_error += (1 + self.rng.next() % 3) as f64;
        }
        if self.rng.chance(0.5 * per_sec) {
            self.rx_crc += 1.0;
        }
    }
}

/// A generated trace and when the hardware failed in it (None: healthy).
struct Scenario {
    name: &'static str,
    about: &'static str,
    points: Vec<TracePoint>,
    failure: Option<f64>,
}

/// Runs `node` for `duration` seconds at a 10 s tick, calling `script(node, s)` first at
/// each tick.
fn simulate(
    mut node: Node,
    duration: f64,
    mut script: impl FnMut(&mut Node, f64),
) -> Vec<TracePoint> {
    let mut points = Vec::new();
    let mut s = 0.0;
    while s <= duration {
        script(&mut node, s);
        for reading in node.readings(s) {
            points.push(TracePoint { t: T0 + s, reading });
        }
        s += 10.0;
    }
    points
}

/// DIMM CPU0_DIMM_A1 degrades: sparse CEs from 09:00, about one a minute from 10:00, a
/// storm from 10:40 and an uncorrectable error at 10:55. The EDAC driver is reloaded at
/// 08:30 (counters reset to zero).
fn ce_burst_to_ue() -> Scenario {
    let failure = 175.0 * MIN;
    let node = Node::new(0x00C0_FFEE, 30.0);
    let points = simulate(node, 180.0 * MIN, |n, s| {
        n.healthy_tick(10.0);
        if s == 30.0 * MIN {
            n.dimm_ce = [0.0, 0.0];
        }
        let m = s / MIN;
        if (60.0..120.0).contains(&m) && n.rng.chance(10.0 / 300.0) {
            n.dimm_ce[0] += 1.0;
        }
        if (120.0..160.0).contains(&m) && n.rng.chance(10.0 / 60.0) {
            n.dimm_ce[0] += 1.0;
        }
        if (160.0..175.0).contains(&m) {
            n.dimm_ce[0] += (n.rng.next() % 3) as f64;
        }
        if s == failure {
            n.dimm_ue[0] += 1.0;
        }
    });
    Scenario {
        name: "ce-burst-to-ue",
        about: "correctable errors on one DIMM, rising to a storm, then an uncorrectable error at 10:55",
        points,
        failure: Some(T0 + failure),
    }
}

/// A cooling failure at 08:30: the package heats from the low 60s to its 100 °C limit
/// by 09:10, raises the critical alarm, and the CPU trips at 09:12. A one-sample spike
/// to 93 °C at 08:15 must not fire (`for = 30s`).
fn thermal_runaway() -> Scenario {
    let failure = 72.0 * MIN;
    let node = Node::new(0x0000_BEEF, 10.0);
    let points = simulate(node, failure, |n, s| {
        let m = s / MIN;
        if m < 30.0 {
            n.healthy_tick(10.0);
            if s == 15.0 * MIN {
                n.pkg_temp = 93.0;
            }
        } else {
            // Linear rise of ~0.9 °C/min plus jitter, capped at the trip point.
            let target = 64.0 + (m - 30.0) * 0.9;
            n.pkg_temp = (target + n.rng.noise(0.8)).min(101.0);
        }
        n.crit_alarm = if n.pkg_temp >= 100.0 { 1.0 } else { 0.0 };
    });
    Scenario {
        name: "thermal-runaway",
        about: "cooling fails at 08:30, the CPU package reaches 100 °C and trips at 09:12",
        points,
        failure: Some(T0 + failure),
    }
}

/// An InfiniBand cable degrades: symbol errors from 08:40, link retrains from 08:50,
/// the link drops twice and goes down for good at 09:05. Link training at 08:05 gives
/// a few symbol errors and one recovery that must not fire.
fn link_flapping() -> Scenario {
    let failure = 65.0 * MIN;
    let node = Node::new(0x0001_F1A9, 30.0);
    let points = simulate(node, 90.0 * MIN, |n, s| {
        n.healthy_tick(10.0);
        let m = s / MIN;
        if s == 5.0 * MIN {
            n.symbol_error += 7.0;
            n.link_error_recovery += 1.0;
        }
        if (40.0..65.0).contains(&m) {
            n.symbol_error += (30 + n.rng.next() % 40) as f64;
        }
        for at in [50.0, 53.0, 55.0, 57.0, 58.0] {
            if s == at * MIN {
                n.link_error_recovery += 1.0;
            }
        }
        if s == 56.0 * MIN || s == 61.0 * MIN {
            n.link_downed += 1.0;
        }
        if s == failure {
            n.link_downed += 1.0;
            n.port_state = 1.0;
        }
    });
    Scenario {
        name: "link-flapping",
        about: "symbol errors from 08:40, link retrains and drops, down for good at 09:05",
        points,
        failure: Some(T0 + failure),
    }
}

/// Four hours of a healthy node: temperatures wander, a few CEs, symbol errors and CRC
/// errors trickle in, the InfiniBand counters are cleared at 10:00 (perfquery -x), one
/// link retrain, one 30 s reading at 91 °C.
fn healthy_noise() -> Scenario {
    let node = Node::new(0x0000_5EED, 30.0);
    let points = simulate(node, 240.0 * MIN, |n, s| {
        n.healthy_tick(10.0);
        if s == 120.0 * MIN {
            n.symbol_error = 0.0;
            n.link_downed = 0.0;
            n.link_error_recovery = 0.0;
        }
        if s == 150.0 * MIN {
            n.link_error_recovery += 1.0;
        }
        if s == 200.0 * MIN {
            n.pkg_temp = 91.0;
        }
    });
    Scenario {
        name: "healthy-noise",
        about: "a healthy node for four hours: noise, counter clears, one hot reading",
        points,
        failure: None,
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        ce_burst_to_ue(),
        thermal_runaway(),
        link_flapping(),
        healthy_noise(),
    ]
}

fn jsonl(points: &[TracePoint]) -> String {
    let mut s = String::new();
    for p in points {
        s.push_str(&serde_json::to_string(p).expect("trace points serialize"));
        s.push('\n');
    }
    s
}

fn default_rules() -> Config {
    let text = fs::read_to_string(workspace().join("config/lifeboat.toml"))
        .expect("read config/lifeboat.toml");
    Config::from_str(&text, "config/lifeboat.toml").unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn traces_are_up_to_date() {
    for sc in scenarios() {
        // Shown with the failure, if any: what the trace is.
        eprintln!("{}: {}", sc.name, sc.about);
        assert_golden(
            &format!("tests/fixtures/traces/{}.jsonl", sc.name),
            &jsonl(&sc.points),
        );
    }
}

// ---- backtests ----------------------------------------------------------------------

/// Rules that must have fired before the failure of each failure trace.
const MUST_WARN: [(&str, &[&str]); 3] = [
    (
        "ce-burst-to-ue",
        &[
            "memory-ce-nhc-rate",
            "memory-ce-rasdaemon-threshold",
            "memory-ce-burst",
        ],
    ),
    ("thermal-runaway", &["cpu-overheat", "hwmon-critical-alarm"]),
    ("link-flapping", &["ib-symbol-errors", "ib-link-flapping"]),
];

#[test]
fn default_rules_fire_before_each_failure_and_stay_quiet_when_healthy() {
    let config = default_rules();
    for sc in scenarios() {
        let events = replay(&config, &sc.points);
        let firing: Vec<(&str, f64)> = events
            .iter()
            .filter(|e| e.kind == EventKind::Firing)
            .map(|e| (e.rule.as_str(), e.t))
            .collect();
        match sc.failure {
            None => assert!(firing.is_empty(), "{}: {firing:?}", sc.name),
            Some(failure) => {
                let (_, rules) = MUST_WARN.iter().find(|(n, _)| *n == sc.name).unwrap();
                for rule in *rules {
                    let first = firing.iter().find(|(r, _)| r == rule);
                    assert!(
                        first.is_some_and(|&(_, t)| t < failure),
                        "{}: {rule} did not fire before the failure: {firing:?}",
                        sc.name
                    );
                }
                // Nothing fires during the healthy first 30 minutes of any trace.
                assert!(
                    firing.iter().all(|&(_, t)| t >= T0 + 30.0 * MIN),
                    "{}: early firing {firing:?}",
                    sc.name
                );
            }
        }
    }
}

#[test]
fn rules_test_replays_each_trace_and_meets_its_expectations() {
    for sc in scenarios() {
        let trace = format!("tests/fixtures/traces/{}.jsonl", sc.name);
        let expect = format!("tests/fixtures/traces/{}.expect.toml", sc.name);
        let out = lifeboat(&[
            "rules",
            "test",
            "--rules",
            "config/lifeboat.toml",
            "--trace",
            &trace,
            "--expect",
            &expect,
        ]);
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            sc.name,
            out.stdout,
            out.stderr
        );
        assert_eq!(out.stderr, "", "{}", sc.name);
        golden(&format!("backtest/{}.txt", sc.name), &out.stdout);
    }
}

#[test]
fn rules_test_fails_when_expectations_differ() {
    let dir = scratch("expectations");
    let wrong = dir.join("wrong.expect.toml");
    fs::write(
        &wrong,
        "quiet = [\"memory-ce-burst\"]\n\n[[event]]\nrule = \"memory-uncorrected\"\nkind = \"firing\"\nat = \"2025-11-25T10:00:00Z\"\n",
    )
    .unwrap();
    let out = lifeboat(&[
        "rules",
        "test",
        "--rules",
        "config/lifeboat.toml",
        "--trace",
        "tests/fixtures/traces/ce-burst-to-ue.jsonl",
        "--expect",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = out.stderr;
    assert!(
        err.contains("FAILED: the replay differs from the expectations"),
        "{err}"
    );
    assert!(
        err.contains("rule memory-uncorrected:\n  expected: firing at 2025-11-25T10:00:00Z\n  got:      firing at 2025-11-25T10:55:00Z"),
        "{err}"
    );
    assert!(
        err.contains("rule memory-ce-burst:\n  expected: (nothing)"),
        "{err}"
    );
}

#[test]
fn rules_test_json_prints_one_event_per_line() {
    let out = lifeboat(&[
        "rules",
        "test",
        "--json",
        "--rules",
        "config/lifeboat.toml",
        "--trace",
        "tests/fixtures/traces/thermal-runaway.jsonl",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let firing = events
        .iter()
        .find(|e| e["kind"] == "firing" && e["rule"] == "cpu-overheat")
        .expect("cpu-overheat fires");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["actions"][0]["type"], "checkpoint");
    assert_eq!(firing["actions"][0]["target"]["job"]["env"], "SLURM_JOB_ID");
    assert_eq!(firing["actions"][1]["type"], "drain");
    assert_eq!(firing["matches"][0]["series"]["source"], "hwmon");
}

// ---- check ----------------------------------------------------------------------------

#[test]
fn rules_check_accepts_the_shipped_configuration() {
    let out = lifeboat(&["rules", "check", "config/lifeboat.toml"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    golden("check-default.txt", &out.stdout);
}

#[test]
fn rules_check_rejects_a_bad_file_with_located_errors() {
    let file = "tests/fixtures/rules/bad/unknown-top-level.toml";
    let out = lifeboat(&["rules", "check", file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, "");
    golden("check-bad.txt", &out.stderr);
}

/// Issue 11: `rules check` accepted a poll interval of 4000000000000000000s, on which the
/// agent's brain panicked. Every duration is bounded, and the message points at it.
#[test]
fn rules_check_rejects_durations_longer_than_ten_years() {
    let file = "tests/fixtures/rules/bad/overflowing-duration.toml";
    let out = lifeboat(&["rules", "check", file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, "");
    golden("check-overflow.txt", &out.stderr);
}

#[test]
fn rules_check_prints_warnings_and_still_succeeds() {
    let file = "tests/fixtures/rules/warnings/raw-counter-and-short-for.toml";
    let out = lifeboat(&["rules", "check", file]);
    assert!(out.status.success());
    let err = out.stderr;
    assert!(
        err.contains(&format!("{file}:7:7: warning: `for` of 20s")),
        "{err}"
    );
    assert!(out.stdout.contains("OK: 1 rules (0 errors, 2 warnings)"));
}

#[test]
fn rules_check_json_lists_errors_with_positions() {
    let out = lifeboat(&[
        "rules",
        "check",
        "--json",
        "tests/fixtures/rules/bad/unknown-field.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 4);
    assert_eq!(v["errors"][0]["col"], 51);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown field `treshold`")
    );
}

#[test]
fn rules_check_of_a_missing_file_names_it() {
    let out = lifeboat(&["rules", "check", "tests/fixtures/rules/no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = out.stderr;
    assert!(
        err.contains("cannot read rules file tests/fixtures/rules/no-such-file.toml"),
        "{err}"
    );
}

// ---- one validation of the whole file (issue 10) ---------------------------------------

/// `[agent] lisen = ...` used to pass `rules check` and then stop the agent.
#[test]
fn rules_check_validates_the_agent_table() {
    for (file, golden_name) in [
        (
            "tests/fixtures/rules/agent/misspelt-key.toml",
            "check-agent-misspelt-key.txt",
        ),
        (
            "tests/fixtures/rules/agent/short-token.toml",
            "check-agent-short-token.txt",
        ),
    ] {
        let out = lifeboat(&["rules", "check", file]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{file}");
        golden(golden_name, &out.stderr);
        // The agent refuses the file with the same message, and so does `agent --check`.
        let check = lifeboat(&["agent", "--check", "--config", file]);
        assert_eq!(check.status.code(), Some(1), "{file}: {}", check.stderr);
        assert_eq!(check.stderr, out.stderr, "{file}: agent --check differs");
    }
    let out = lifeboat(&[
        "rules",
        "check",
        "--json",
        "tests/fixtures/rules/agent/misspelt-key.toml",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 3);
    assert_eq!(v["errors"][0]["help"], "did you mean `listen`?");
}

/// A misspelt reading name is a warning: exit 0, unless --strict.
#[test]
fn rules_check_strict_turns_warnings_into_errors() {
    let file = "tests/fixtures/rules/warnings/unknown-names-and-labels.toml";
    let out = lifeboat(&["rules", "check", file]);
    assert!(out.status.success(), "{}", out.stderr);
    let strict = lifeboat(&["rules", "check", "--strict", file]);
    assert_eq!(strict.status.code(), Some(1), "{}", strict.stderr);
    assert_eq!(strict.stdout, "");
    golden("check-strict.txt", &strict.stderr);
    let json = lifeboat(&["rules", "check", "--strict", "--json", file]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["strict"].clone()),
        (false.into(), true.into())
    );
    assert!(!v["warnings"].as_array().unwrap().is_empty());
    // The shipped configuration has no warning: strict passes.
    let shipped = lifeboat(&["rules", "check", "--strict", "config/lifeboat.toml"]);
    assert!(shipped.status.success(), "{}", shipped.stderr);
}

/// `rules test --trace /dev/null` used to succeed silently.
#[test]
fn rules_test_on_an_empty_trace_is_an_error() {
    let out = lifeboat(&[
        "rules",
        "test",
        "--rules",
        "config/lifeboat.toml",
        "--trace",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert_eq!(out.stdout, "");
    golden("test-empty-trace.txt", &out.stderr);
}
