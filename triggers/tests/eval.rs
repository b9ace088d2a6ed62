//! Evaluation tests: each case is a rules file, a list of timed readings and the events
//! expected, run through one `check` helper; property tests cover counters, resets and
//! rule order.

use lifeboat_sensors::{Reading, Source};
use lifeboat_triggers::{Config, Evaluator, EventKind};
use proptest::prelude::*;

/// One poll: time and readings.
type Step = (f64, Vec<Reading>);

fn config(rules: &str) -> Config {
    let text = format!("[poll]\ninterval = \"10s\"\n\n{rules}");
    Config::from_str(&text, "test.toml").unwrap_or_else(|d| panic!("{d}"))
}

/// Runs `steps` through `rules`; returns (t, rule, kind) of every event.
fn events(rules: &str, steps: &[Step]) -> Vec<(f64, String, EventKind)> {
    let mut ev = Evaluator::new(&config(rules));
    steps
        .iter()
        .flat_map(|(t, rs)| ev.step(*t, rs))
        .map(|e| (e.t, e.rule, e.kind))
        .collect()
}

fn check(rules: &str, steps: &[Step], expected: &[(f64, &str, EventKind)]) {
    let got = events(rules, steps);
    let want: Vec<(f64, String, EventKind)> = expected
        .iter()
        .map(|&(t, r, k)| (t, r.to_owned(), k))
        .collect();
    assert_eq!(got, want);
}

fn temp(v: f64) -> Reading {
    Reading::gauge(Source::Hwmon, "temp_celsius", v)
        .label("chip", "coretemp.0")
        .label("label", "Package id 0")
}

fn ce(dimm: &str, v: f64) -> Reading {
    Reading::counter(Source::Edac, "dimm_ce_count", v)
        .label("controller", "0")
        .label("dimm", dimm)
}

/// One reading per step, every 10 s from t = 0.
fn series(values: &[f64], make: fn(f64) -> Reading) -> Vec<Step> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64 * 10.0, vec![make(v)]))
        .collect()
}

const HOT: &str = r#"
[[rule]]
name = "hot"
when = { source = "hwmon", name = "temp_celsius", above = 90 }
[[rule.action]]
type = "log"
"#;

use EventKind::{Cleared, Firing, Pending};

#[test]
fn threshold_fires_and_clears() {
    check(
        HOT,
        &series(&[80.0, 91.0, 95.0, 90.0, 92.0], temp),
        &[
            (10.0, "hot", Firing),
            (30.0, "hot", Cleared),
            (40.0, "hot", Firing),
        ],
    );
}

#[test]
fn for_duration_waits_and_resets_silently() {
    let rules = HOT.replace("name = \"hot\"", "name = \"hot\"\nfor = \"30s\"");
    check(
        &rules,
        &series(&[91.0, 91.0, 80.0, 91.0, 91.0, 91.0, 91.0, 70.0], temp),
        &[
            (0.0, "hot", Pending),
            (30.0, "hot", Pending),
            (60.0, "hot", Firing),
            (70.0, "hot", Cleared),
        ],
    );
}

#[test]
fn hysteresis_holds_until_the_clear_level() {
    let rules = HOT.replace("above = 90", "above = 90, clear = 85");
    check(
        &rules,
        &series(&[91.0, 88.0, 86.0, 85.0, 89.0, 91.0], temp),
        &[
            (0.0, "hot", Firing),
            (30.0, "hot", Cleared),
            (50.0, "hot", Firing),
        ],
    );
}

#[test]
fn cooldown_turns_flapping_into_one_firing() {
    let rules = HOT.replace("name = \"hot\"", "name = \"hot\"\ncooldown = \"1m\"");
    // Flaps every poll for 2 minutes, then stays cool.
    let mut values: Vec<f64> = (0..12)
        .map(|i| if i % 2 == 0 { 95.0 } else { 80.0 })
        .collect();
    values.extend([80.0; 4]);
    check(
        &rules,
        &series(&values, temp),
        &[
            (0.0, "hot", Firing),
            (70.0, "hot", Cleared),
            (80.0, "hot", Firing),
            (140.0, "hot", Cleared),
        ],
    );
}

const BURST: &str = r#"
[[rule]]
name = "burst"
when = { source = "edac", name = "dimm_ce_count", increase = "1m", above = 20 }
[[rule.action]]
type = "log"
"#;

#[test]
fn increase_over_a_window_slides() {
    let c = |v| ce("dimm0", v);
    // +10 at t=20 and +15 at t=30: fires at 30; at t=80 the rise of t=20 has left the
    // 60 s window and 15 remain: cleared.
    check(
        BURST,
        &series(
            &[
                1000.0, 1000.0, 1010.0, 1025.0, 1025.0, 1025.0, 1025.0, 1025.0, 1025.0, 1025.0,
            ],
            c,
        ),
        &[(30.0, "burst", Firing), (80.0, "burst", Cleared)],
    );
}

#[test]
fn the_first_sample_is_a_baseline() {
    let c = |v| ce("dimm0", v);
    check(BURST, &series(&[5000.0, 5000.0, 5001.0], c), &[]);
}

#[test]
fn a_reset_neither_fires_nor_hides_errors() {
    let c = |v| ce("dimm0", v);
    // Reset to zero: nothing.
    check(BURST, &series(&[100.0, 0.0, 0.0, 3.0], c), &[]);
    // +15 before the reset and +10 after it, within a minute: 25 > 20.
    check(
        BURST,
        &series(&[100.0, 115.0, 2.0, 12.0], c),
        &[(30.0, "burst", Firing)],
    );
}

#[test]
fn each_series_counts_on_its_own() {
    // Two DIMMs with +15 each: neither reaches 20.
    let steps = vec![
        (0.0, vec![ce("a", 0.0), ce("b", 0.0)]),
        (10.0, vec![ce("a", 15.0), ce("b", 15.0)]),
    ];
    check(BURST, &steps, &[]);
}

#[test]
fn rate_is_increase_per_second() {
    let rules = BURST.replace(
        "increase = \"1m\", above = 20",
        "rate = \"1m\", above = 0.5",
    );
    let c = |v| ce("dimm0", v);
    // 31 in the window of 60 s: 0.516/s.
    check(
        &rules,
        &series(&[0.0, 30.0, 31.0], c),
        &[(20.0, "r", Firing)].map(|(t, _, k)| (t, "burst", k)),
    );
    check(&rules, &series(&[0.0, 30.0], c), &[]);
}

#[test]
fn labels_select_series() {
    let rules = HOT.replace(
        "name = \"temp_celsius\",",
        "name = \"temp_celsius\", labels = { label = \"Package id *\" }, label_regex = { chip = \"^coretemp\" },",
    );
    let other = Reading::gauge(Source::Hwmon, "temp_celsius", 99.0)
        .label("chip", "nvme")
        .label("label", "Composite");
    check(&rules, &[(0.0, vec![other.clone()])], &[]);
    check(
        &rules,
        &[(0.0, vec![other, temp(95.0)])],
        &[(0.0, "hot", Firing)],
    );
}

const COMBO: &str = r#"
[[rule]]
name = "either"
when = { any = [
  { source = "hwmon", name = "temp_celsius", above = 90 },
  { source = "edac", name = "dimm_ce_count", increase = "1m", above = 5 },
] }
[[rule.action]]
type = "log"

[[rule]]
name = "both"
when = { all = [
  { source = "hwmon", name = "temp_celsius", above = 90 },
  { source = "edac", name = "dimm_ce_count", increase = "1m", above = 5 },
] }
[[rule.action]]
type = "log"
"#;

#[test]
fn any_and_all() {
    let steps = vec![
        (0.0, vec![temp(80.0), ce("a", 0.0)]),
        (10.0, vec![temp(95.0), ce("a", 0.0)]),
        (20.0, vec![temp(95.0), ce("a", 10.0)]),
        (30.0, vec![temp(80.0), ce("a", 10.0)]),
    ];
    check(
        COMBO,
        &steps,
        &[
            (10.0, "either", Firing),
            (20.0, "both", Firing),
            (30.0, "both", Cleared),
        ],
    );
}

/// Validation bounds every duration, but the evaluator takes any `Config` built in code:
/// the longest durations there are saturate instead of overflowing (issue 11: a poll
/// interval of 4000000000000000000s panicked the agent's brain in `step`).
#[test]
fn the_longest_durations_never_overflow() {
    let mut cfg = config(
        r#"
[[rule]]
name = "hot"
for = "10s"
when = { source = "hwmon", name = "temp_celsius", above = 90 }
[[rule.action]]
type = "log"

[[rule]]
name = "ce"
cooldown = "1m"
when = { source = "edac", name = "dimm_ce_count", increase = "1h", above = 1 }
[[rule.action]]
type = "log"
"#,
    );
    cfg.poll.interval = std::time::Duration::MAX;
    cfg.poll
        .overrides
        .insert(Source::Edac, std::time::Duration::MAX);
    cfg.rules[0].for_duration = std::time::Duration::MAX;
    cfg.rules[1].cooldown = std::time::Duration::MAX;
    let mut ev = Evaluator::new(&cfg);
    let mut kinds = Vec::new();
    for (i, t) in [0.0, 10.0, 1e12].into_iter().enumerate() {
        let v = 95.0 + i as f64 * 10.0;
        kinds.extend(
            ev.step(t, &[temp(v), ce("dimm0", v)])
                .into_iter()
                .map(|e| (e.rule, e.kind)),
        );
    }
    // `for` of Duration::MAX: pending from the first hot reading, never firing; the
    // counter rule fires on its first rise and, with that cooldown, never clears.
    assert_eq!(
        kinds,
        vec![("hot".to_owned(), Pending), ("ce".to_owned(), Firing),]
    );
}

#[test]
fn a_series_that_stops_reporting_stops_counting() {
    // 5 poll intervals (50 s) after its last reading the hot sensor no longer counts.
    let steps = vec![
        (0.0, vec![temp(95.0)]),
        (40.0, vec![]),
        (50.0, vec![]),
        (60.0, vec![]),
    ];
    check(HOT, &steps, &[(0.0, "hot", Firing), (60.0, "hot", Cleared)]);
}

#[test]
fn readings_out_of_order_or_not_finite_are_ignored() {
    let steps = vec![
        (10.0, vec![temp(80.0)]),
        (5.0, vec![temp(99.0)]),
        (20.0, vec![temp(f64::NAN)]),
        (30.0, vec![temp(f64::INFINITY)]),
    ];
    check(HOT, &steps, &[]);
}

#[test]
fn reload_keeps_the_state_of_unchanged_rules_only() {
    let two = format!("{HOT}{}", BURST);
    let mut ev = Evaluator::new(&config(&two));
    assert_eq!(ev.step(0.0, &[temp(95.0), ce("a", 0.0)]).len(), 1);
    ev.step(10.0, &[ce("a", 15.0)]);
    // Change the burst rule's threshold; keep "hot" as is.
    let changed = format!("{HOT}{}", BURST.replace("above = 20", "above = 10"));
    let report = ev.reload(&config(&changed));
    assert_eq!(report.kept, ["hot"]);
    assert_eq!(report.fresh, ["burst"]);
    assert!(report.removed.is_empty());
    // "hot" is still firing (no new firing event), "burst" starts from a new baseline.
    let out = ev.step(20.0, &[temp(95.0), ce("a", 20.0)]);
    assert!(out.is_empty(), "{out:?}");
    let out = ev.step(30.0, &[temp(80.0), ce("a", 31.0)]);
    let kinds: Vec<_> = out.iter().map(|e| (e.rule.as_str(), e.kind)).collect();
    assert_eq!(kinds, [("hot", Cleared), ("burst", Firing)]);
    let report = ev.reload(&config(HOT));
    assert_eq!(report.removed, ["burst"]);
}

#[test]
fn firing_events_carry_actions_matches_and_environment() {
    let rules = r#"
[[rule]]
name = "ue"
severity = "critical"
when = { source = "edac", name = "dimm_ce_count", increase = "1m", above = 1 }
[[rule.action]]
type = "checkpoint"
target = { job_env = "SLURM_JOB_ID", comm = "python*" }
after = "kill"
[[rule.action]]
type = "exec"
command = ["/bin/page", "--now"]
"#;
    let mut ev = Evaluator::new(&config(rules));
    ev.step(
        1_764_061_200.0,
        &[ce("dimm3", 10.0).label("dimm_label", "CPU0_DIMM_A1")],
    );
    let out = ev.step(
        1_764_061_210.0,
        &[ce("dimm3", 14.0).label("dimm_label", "CPU0_DIMM_A1")],
    );
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.actions.len(), 2);
    assert_eq!(e.matches[0].value, 4.0);
    assert_eq!(e.matches[0].reading, 14.0);
    let env: std::collections::BTreeMap<_, _> = e.env().into_iter().collect();
    assert_eq!(env["LIFEBOAT_RULE"], "ue");
    assert_eq!(env["LIFEBOAT_EVENT"], "firing");
    assert_eq!(env["LIFEBOAT_SEVERITY"], "critical");
    assert_eq!(env["LIFEBOAT_VALUE"], "4");
    assert_eq!(env["LIFEBOAT_THRESHOLD"], "1");
    assert_eq!(env["LIFEBOAT_TIME"], "2025-11-25T09:00:10Z");
    assert_eq!(env["LIFEBOAT_LABEL_DIMM_LABEL"], "CPU0_DIMM_A1");
    assert_eq!(env["LIFEBOAT_SOURCE"], "edac");
    assert_eq!(
        e.summary,
        "ue firing (critical): edac:dimm_ce_count{controller=\"0\",dimm=\"dimm3\",dimm_label=\"CPU0_DIMM_A1\"} increase over 1m = 4 (> 1)"
    );
}

// ---- properties ---------------------------------------------------------------------

/// Steps of one counter: 10 s apart, value built from (rise, reset) pairs.
fn counter_steps(ops: &[(u8, bool)]) -> Vec<Step> {
    let mut v = 50.0;
    ops.iter()
        .enumerate()
        .map(|(i, &(rise, reset))| {
            if reset {
                v = f64::from(rise % 4);
            } else {
                v += f64::from(rise);
            }
            (i as f64 * 10.0, vec![ce("a", v)])
        })
        .collect()
}

proptest! {
    /// A counter that never rises (flat, or dropping through resets) never fires.
    #[test]
    fn a_counter_never_fires_without_an_increase(drops in proptest::collection::vec(0u16..100, 1..60)) {
        let mut v = 10_000.0;
        let steps: Vec<Step> = drops
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                v -= f64::from(d);
                (i as f64 * 10.0, vec![ce("a", v)])
            })
            .collect();
        let rules = BURST.replace("above = 20", "above = 0");
        prop_assert!(events(&rules, &steps).is_empty());
    }

    /// With resets anywhere, the rule is firing exactly when the sum of the rises within
    /// the window (a drop counting as none) exceeds the threshold.
    #[test]
    fn counter_rule_matches_a_reference_model(ops in proptest::collection::vec((0u8..12, proptest::bool::weighted(0.15)), 1..80)) {
        let steps = counter_steps(&ops);
        let mut ev = Evaluator::new(&config(BURST));
        let mut firing = false;
        let values: Vec<(f64, f64)> = steps.iter().map(|(t, r)| (*t, r[0].value)).collect();
        for (k, (t, rs)) in steps.iter().enumerate() {
            for e in ev.step(*t, rs) {
                firing = e.kind == Firing;
            }
            let increase: f64 = (1..=k)
                .filter(|&i| values[i].0 > t - 60.0)
                .map(|i| (values[i].1 - values[i - 1].1).max(0.0))
                .sum();
            prop_assert_eq!(firing, increase > 20.0, "t={} increase={}", t, increase);
        }
    }

    /// Rules that do not depend on each other give the same events in any order.
    #[test]
    fn reordering_rules_changes_nothing(
        order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        temps in proptest::collection::vec(60.0f64..100.0, 1..40),
        rises in proptest::collection::vec(0u8..15, 1..40),
    ) {
        let rules = [
            HOT.to_owned(),
            BURST.to_owned(),
            COMBO.to_owned(),
            HOT.replace("name = \"hot\"", "name = \"hot-for\"\nfor = \"20s\"\ncooldown = \"30s\""),
        ];
        let shuffled: String = order.iter().map(|&i| rules[i].as_str()).collect();
        let original: String = rules.concat();
        let mut c = 0.0;
        let steps: Vec<Step> = temps
            .iter()
            .zip(rises.iter().cycle())
            .enumerate()
            .map(|(i, (&t, &r))| {
                c += f64::from(r);
                (i as f64 * 10.0, vec![temp(t.round()), ce("a", c)])
            })
            .collect();
        let mut a = events(&original, &steps);
        let mut b = events(&shuffled, &steps);
        a.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        b.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        prop_assert_eq!(a, b);
    }

    /// A firing rule with a cooldown fires at most once per cooldown.
    #[test]
    fn cooldown_bounds_the_firing_rate(temps in proptest::collection::vec(prop_oneof![Just(80.0f64), Just(95.0)], 1..120)) {
        let rules = HOT.replace("name = \"hot\"", "name = \"hot\"\ncooldown = \"2m\"");
        let firings: Vec<f64> = events(&rules, &series(&temps, temp))
            .into_iter()
            .filter(|e| e.2 == Firing)
            .map(|e| e.0)
            .collect();
        for w in firings.windows(2) {
            prop_assert!(w[1] - w[0] > 120.0, "{:?}", firings);
        }
    }
}
