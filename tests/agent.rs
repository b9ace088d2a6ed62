//! End-to-end tests of `lifeboat agent`: the real binary against fixture sysfs trees,
//! scraped over HTTP (and by a real Prometheus server), reloading its configuration,
//! and checkpointing a real process when a rule fires or the API asks.
//!
//! Needs root (checkpoints), python3, and Debian's `prometheus` package (promtool and the
//! server); each test fails with the reason when something is missing, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::*;
use common::http::request as http;
use common::*;

const CE_RULE: &str = r#"
[[rule]]
name = "dimm-ce"
when = { source = "edac", name = "dimm_ce_count", increase = "1h", above = 5 }
[[rule.action]]
type = "log"
"#;

/// The reading metrics of a scrape, sorted: what the golden files hold. The agent's own
/// metrics are left out (durations and counts vary run to run).
fn reading_lines(body: &str) -> String {
    let own = [
        "lifeboat_build",
        "lifeboat_scrape_",
        "lifeboat_rule",
        "lifeboat_actions",
        "lifeboat_checkpoint",
        "lifeboat_store_",
        "lifeboat_config_",
        "lifeboat_task_",
        "lifeboat_http_",
    ];
    let mut lines: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !own.iter().any(|p| l.starts_with(p)))
        .collect();
    lines.sort_unstable();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[test]
fn metrics_match_golden_and_pass_promtool() {
    let promtool = promtool();
    for case in ["large", "edac-csrow", "hwmon", "infiniband", "empty"] {
        let dir = scratch(&format!("golden-{case}"));
        let config = write_config(&dir, &sensor_fixture(case), CE_RULE);
        let agent = Agent::start(&config, &[]);
        agent.wait_for(
            |a| {
                // Every source has reported once.
                a.get("/api/v1/status")
                    .is_some_and(|(_, b)| b.matches("\"present\":").count() == 9)
            },
            "the first scan",
        );
        let (code, body) = agent.get("/metrics").unwrap();
        assert_eq!(code, 200);
        assert_golden(
            &format!("tests/golden/agent/metrics-{case}.txt"),
            &reading_lines(&body),
        );

        let mut cmd = Command::new(&promtool);
        cmd.args(["check", "metrics"]);
        let mut check = Proc::spawn(cmd, "promtool check metrics");
        check.write_raw(body.as_bytes());
        check.close_stdin();
        let (status, out) = check.finish();
        assert!(
            status.success(),
            "promtool check metrics failed for {case}: {}{}",
            String::from_utf8_lossy(&out),
            check.stderr_text()
        );

        // OpenMetrics for scrapers that ask for it.
        let (code, om) = http(
            agent.port,
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text;version=1.0.0")],
            "",
        )
        .unwrap();
        assert_eq!(code, 200);
        assert!(
            om.ends_with("# EOF\n"),
            "{case}: OpenMetrics ends with # EOF"
        );
    }
}

#[test]
fn node_without_sources_says_so_and_serves() {
    let dir = scratch("empty");
    let config = write_config(&dir, &sensor_fixture("empty"), CE_RULE);
    let agent = Agent::start(&config, &[]);
    agent.wait_for(
        |a| a.log().contains("no fault-precursor source found"),
        "the no-source warning",
    );
    assert_eq!(
        agent
            .metric("lifeboat_scrape_collector_present{collector=\"edac\"}")
            .as_deref(),
        Some("0")
    );
    assert_eq!(agent.metric("lifeboat_rules ").as_deref(), Some("1"));
}

#[test]
fn real_prometheus_scrapes_the_agent() {
    require_tool(
        "prometheus",
        "the prometheus server is missing: install Debian's `prometheus` package",
    );
    let dir = scratch("prometheus");
    let config = write_config(&dir, &sensor_fixture("edac-dimm"), CE_RULE);
    let agent = Agent::start(&config, &[]);
    let prom_port = free_port();
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lifeboat\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            agent.port
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let prom = Background::quiet(cmd, "prometheus");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let found = loop {
        if Instant::now() > deadline {
            break false;
        }
        if let Some((200, body)) = http(
            prom_port,
            "GET",
            "/api/v1/query?query=lifeboat_edac_dimm_ce_count_total",
            &[],
            "",
        ) {
            if body.contains("\"dimm_label\"") {
                last = body;
                break true;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let up = http(prom_port, "GET", "/api/v1/query?query=up", &[], "");
    drop(prom);
    assert!(
        found,
        "Prometheus never returned lifeboat_edac_dimm_ce_count_total; last answer: {last}"
    );
    let (_, up) = up.unwrap();
    assert!(
        up.contains("\"job\":\"lifeboat\"") && up.contains("\"1\"]"),
        "the target is up: {up}"
    );
}

#[test]
fn bad_reload_keeps_the_old_rules() {
    let dir = scratch("reload");
    let config = write_config(&dir, &sensor_fixture("edac-dimm"), CE_RULE);
    let agent = Agent::start(&config, &[]);
    assert_eq!(agent.metric("lifeboat_rules ").as_deref(), Some("1"));

    // A typo: rejected with file:line:col, the old rule keeps running.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("above = 5", "abov = 5")).unwrap();
    agent.wait_for(
        |a| a.metric("lifeboat_config_last_reload_success ").as_deref() == Some("0"),
        "the bad file to be rejected",
    );
    let (_, status) = agent.get("/api/v1/status").unwrap();
    assert!(status.contains("abov"), "status names the error: {status}");
    assert!(
        agent.log().contains("lifeboat.toml:"),
        "the log points into the file:\n{}",
        agent.log()
    );
    assert_eq!(agent.metric("lifeboat_rules ").as_deref(), Some("1"));
    assert!(status.contains("\"name\":\"dimm-ce\""));

    // A good file with two rules, applied on SIGHUP as well as on change.
    let two = format!("{good}\n{}", CE_RULE.replace("dimm-ce", "dimm-ce-2"));
    std::fs::write(&config, two).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.proc.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    agent.wait_for(
        |a| a.metric("lifeboat_rules ").as_deref() == Some("2"),
        "the good file to load",
    );
    assert_eq!(
        agent
            .metric("lifeboat_config_last_reload_success ")
            .as_deref(),
        Some("1")
    );
}

#[test]
fn firing_rule_checkpoints_a_process_that_restarts_and_continues() {
    let dir = scratch("fire");
    let tree = dir.join("tree");
    copy_tree(&sensor_fixture("edac-dimm"), &tree);
    let rules = r#"
[[rule]]
name = "dimm-ce-burst"
when = { source = "edac", name = "dimm_ce_count", increase = "10m", above = 20 }
[[rule.action]]
type = "checkpoint"
target = { job_env = "LIFEBOAT_TEST_JOB", job_id = "fire-1" }
after = "kill"
"#;
    let config = write_config(&dir, &tree, rules);
    let mut child = workload(("LIFEBOAT_TEST_JOB", "fire-1"));
    let pid = child.pid() as u32;
    // Running, then the agent, then the errors.
    child.wait_lines(1);
    let first = String::from_utf8_lossy(&child.stdout()).into_owned();
    assert_eq!(first.lines().next(), Some("1"));
    let agent = Agent::start(&config, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let ce = find_file(&tree, "dimm_ce_count");
    let before: u64 = std::fs::read_to_string(&ce)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(&ce, format!("{}\n", before + 50)).unwrap();
    agent.wait_for(|_| index_entry(&dir, pid).is_some(), "the checkpoint");
    // `after = "kill"`: the agent killed it once the image was safe.
    let (status, _) = child.finish();
    assert!(!status.success(), "the workload was killed: {status}");
    let last_before = *counted(&child).iter().max().unwrap();
    assert!(
        agent.log().contains("dimm-ce-burst"),
        "the log names the rule:\n{}",
        agent.log()
    );
    assert_eq!(
        agent
            .metric("lifeboat_checkpoints_total{result=\"ok\"}")
            .as_deref(),
        Some("1")
    );
    let entry = index_entry(&dir, pid).unwrap();
    assert_eq!(entry["reason"], "dimm-ce-burst");
    assert_eq!(entry["job"], "fire-1");
    let image = PathBuf::from(entry["path"].as_str().unwrap());
    assert!(image.starts_with(dir.join("store/test-node/job-fire-1")));

    // Restart: the counter goes on from where the checkpoint was.
    let mut cmd = Command::new(lifeboat_bin());
    cmd.args(["restart", "--no-restore-pid"]).arg(&image);
    let restarted = Proc::spawn_no_input(cmd, "`lifeboat restart --no-restore-pid`");
    restarted.wait_lines(2);
    let out = String::from_utf8_lossy(&restarted.stdout()).into_owned();
    let mut after = out.lines().map(|l| l.parse::<u64>().unwrap());
    let next = after.next().unwrap();
    let then = after.next().unwrap();
    // The restored workload is the restarter's child: stop it, and with it the restarter.
    kill_all(&children_of(restarted.pid()));
    drop(restarted);
    assert!(
        next <= last_before + 1 && next > 1,
        "continues from the checkpoint: printed {next} after {last_before}"
    );
    assert_eq!(then, next + 1);
}

#[test]
fn api_checkpoint_requires_the_token() {
    let dir = scratch("api");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let config = write_config(&dir, &sensor_fixture("empty"), CE_RULE);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\ntoken_file = \"token\"\n");
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config, &[]);
    let mut child = workload(("X", "y"));
    child.wait_lines(1);
    let body = format!("{{\"pid\": {}}}", child.pid());
    let json = ("Content-Type", "application/json");

    let (code, _) = http(agent.port, "POST", "/api/v1/checkpoint", &[json], &body).unwrap();
    assert_eq!(code, 401, "no token");
    let (code, _) = http(
        agent.port,
        "POST",
        "/api/v1/checkpoint",
        &[json, ("Authorization", "Bearer wrong-token-wrong-token")],
        &body,
    )
    .unwrap();
    assert_eq!(code, 401, "wrong token");
    let auth = format!("Bearer {token}");
    let (code, answer) = http(
        agent.port,
        "POST",
        "/api/v1/checkpoint",
        &[json, ("Authorization", &auth)],
        &body,
    )
    .unwrap();
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["result"], "ok");
    let image = v["path"].as_str().unwrap();
    // Still running (`after` defaults to run), and the image is a valid one.
    assert!(child.try_status().is_none());
    let inspect = lifeboat_in(&dir, &["inspect", image]);
    assert!(inspect.status.success(), "{}", inspect.stderr);
    let (_, list) = agent.get("/api/v1/checkpoints").unwrap();
    assert!(list.contains(image), "{list}");
    drop(child);
}

/// Images at rest are the job's user's alone (issue 11): the agent, as root, checkpoints
/// nobody's process; the image belongs to nobody with mode 0600 in a PID directory of
/// nobody's with mode 0700, another user cannot read it, and nobody restarts it (as
/// nobody) and it counts on.
#[test]
fn a_users_image_is_that_users_alone() {
    const NOBODY: u32 = 65534;
    let dir = scratch("owner");
    // Other users must reach the store (NODE and GROUP are world-searchable).
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let config = write_config(&dir, &sensor_fixture("empty"), CE_RULE);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", &format!("[agent]\ntoken = \"{token}\"\n"));
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config, &[]);
    let mut cmd = as_user(NOBODY);
    // Debian's python3: the one on PATH may live in root's home (pyenv).
    cmd.current_dir("/").args([
        "/usr/bin/python3",
        "-c",
        "import time\nfor i in range(1, 100000):\n    print(i, flush=True)\n    time.sleep(0.05)\n",
    ]);
    let mut child = Proc::spawn_no_input(cmd, "nobody's python3 workload");
    child.wait_lines(2);
    let body = format!("{{\"pid\": {}, \"after\": \"kill\"}}", child.pid());
    let auth = format!("Bearer {token}");
    let (code, answer) = http(
        agent.port,
        "POST",
        "/api/v1/checkpoint",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let image = PathBuf::from(v["path"].as_str().unwrap());
    let (status, _) = child.finish();
    assert!(!status.success(), "after = kill: {status}");
    let last_before = *counted(&child).iter().max().unwrap();

    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&image).unwrap();
    assert_eq!(
        (md.uid(), md.mode() & 0o777),
        (NOBODY, 0o600),
        "{}",
        image.display()
    );
    let pid_dir = std::fs::metadata(image.parent().unwrap()).unwrap();
    assert_eq!((pid_dir.uid(), pid_dir.mode() & 0o777), (NOBODY, 0o700));
    let other = as_user(NOBODY - 1).arg("cat").arg(&image).output().unwrap();
    assert!(!other.status.success(), "another user read nobody's image");

    let mut cmd = as_user(NOBODY);
    cmd.current_dir("/")
        .arg(lifeboat_bin())
        .args(["restart", "--no-restore-pid"])
        .arg(&image);
    let restarted = Proc::spawn_no_input(cmd, "nobody's `lifeboat restart`");
    restarted.wait_lines(2);
    let kids = children_of(restarted.pid());
    let uid_line = std::fs::read_to_string(format!("/proc/{}/status", kids[0]))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    let out = String::from_utf8_lossy(&restarted.stdout()).into_owned();
    kill_all(&kids);
    drop(restarted);
    assert_eq!(
        uid_line,
        format!("Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}")
    );
    let next: u64 = out.lines().next().unwrap().parse().unwrap();
    assert!(
        next <= last_before + 1 && next > 1,
        "continues from the checkpoint: printed {next} after {last_before}"
    );
}

#[test]
fn demo_runs_end_to_end() {
    let dir = scratch("demo");
    let out = lifeboat_in(&dir, &["demo", "--dir", path_str(&dir)]);
    let text = &out.stdout;
    assert!(
        out.status.success(),
        "lifeboat demo failed:\n{text}\n{}",
        out.stderr
    );
    for needle in [
        "rule firing",
        "checkpoint written",
        "workload (restored): finished",
        "same result",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
}

/// New rasdaemon records count at once: the agent watches rasdaemon's files and reads
/// them when they change, without waiting for the (here hour-long) poll interval.
#[test]
fn rasdaemon_log_lines_are_read_as_they_come() {
    let dir = scratch("rasdaemon-events");
    let tree = dir.join("tree");
    copy_tree(&sensor_fixture("rasdaemon-log"), &tree);
    let config = write_config(&dir, &tree, CE_RULE);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "interval = \"1s\"\n",
        "interval = \"1s\"\nrasdaemon = \"1h\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config, &[]);
    let corrected = |a: &Agent| -> f64 {
        let (_, body) = a.get("/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| {
                l.starts_with("lifeboat_rasdaemon_mc_events_total") && l.contains("Corrected")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    agent.wait_for(|a| corrected(a) > 0.0, "the first read of the log");
    let before = corrected(&agent);
    let log = tree.join("var/log/rasdaemon.log");
    let line = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("mc_event:") && l.contains("Corrected"))
        .expect("the fixture has a corrected mc_event")
        .to_owned();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{line}").unwrap();
    drop(f);
    let appended = Instant::now();
    agent.wait_for(|a| corrected(a) > before, "the new line to be counted");
    assert!(
        appended.elapsed() < Duration::from_secs(10),
        "read on the file event, not the hourly poll"
    );
}

/// `lifeboat agent --record` writes the JSON Lines trace that `lifeboat rules test`
/// replays: the same rules fire on the recording.
#[test]
fn recorded_trace_replays_with_rules_test() {
    let dir = scratch("record");
    let config = write_config(&dir, &sensor_fixture("edac-dimm"), CE_RULE);
    let trace = dir.join("trace.jsonl");
    let agent = Agent::start(&config, &["--record", trace.to_str().unwrap()]);
    agent.wait_for(
        |_| {
            std::fs::read_to_string(&trace)
                .is_ok_and(|t| t.lines().filter(|l| l.contains("dimm_ce_count")).count() >= 8)
        },
        "two polls in the trace",
    );
    drop(agent);
    let text = std::fs::read_to_string(&trace).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["t"].as_f64().is_some() && v["source"].is_string() && v["name"].is_string());
    }
    let out = lifeboat_in(
        &dir,
        &[
            "rules",
            "test",
            "--rules",
            path_str(&config),
            "--trace",
            path_str(&trace),
        ],
    );
    assert!(
        out.status.success(),
        "rules test on the recording: {}{}",
        out.stdout,
        out.stderr
    );
}

// ---- validation, start-up summary and hints (issue 10) ---------------------------------

/// `agent --check`: the file's verdict, the settings, the sources of the node and which
/// rules can fire there; the agent does not start.
#[test]
fn agent_check_says_which_rules_can_fire_on_this_node() {
    let out = lifeboat_in(
        &workspace(),
        &[
            "agent",
            "--check",
            "--config",
            "tests/fixtures/rules/agent/edac-node.toml",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_golden("tests/golden/agent/check-edac-node.txt", &out.stdout);
    // --root overrides the file's root, as it does for the running agent.
    let out = lifeboat_in(
        &workspace(),
        &[
            "agent",
            "--check",
            "--config",
            "tests/fixtures/rules/agent/edac-node.toml",
            "--root",
            "tests/fixtures/sensors/large",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("rules: 3 of 4 can fire on this node"),
        "{}",
        out.stdout
    );
}

/// At start the agent logs which sources it found and which rules can never fire
/// here, and it says nothing about watching rasdaemon's files when rasdaemon is absent.
#[test]
fn agent_start_logs_what_can_fire_on_this_node() {
    let dir = scratch("summary");
    let hot = "\n[[rule]]\nname = \"cpu-hot\"\nwhen = { source = \"hwmon\", name = \"temp_celsius\", above = 90 }\n[[rule.action]]\ntype = \"log\"\n";
    let config = write_config(
        &dir,
        &sensor_fixture("edac-dimm"),
        &format!("{CE_RULE}{hot}"),
    );
    let agent = Agent::start(&config, &[]);
    agent.wait_for(
        |a| a.log().contains("start-up summary: 1 of 2 rules can fire"),
        "the start-up summary",
    );
    let log = agent.log();
    assert!(
        log.contains("start-up summary: sources present=edac (28 readings) absent=hwmon, thermal, infiniband, netdev, pcie_aer, rasdaemon, lm_sensors, host"),
        "{log}"
    );
    let never = log
        .lines()
        .find(|l| l.contains("rule can never fire on this node"))
        .unwrap_or_else(|| panic!("no never-fire line: {log}"));
    assert!(
        never.contains("rule=cpu-hot") && never.contains("why=hwmon is absent (no "),
        "{never}"
    );
    assert!(!log.contains("rule=dimm-ce"), "{log}");
    assert!(!log.contains("watching event files"), "{log}");
}

/// A listen address already taken: the error says what to do.
#[test]
fn agent_on_a_taken_address_hints_at_listen() {
    let dir = scratch("addr-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(&dir, &sensor_fixture("empty"), CE_RULE);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[agent]\n",
        &format!("[agent]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let out = lifeboat_in(&dir, &["agent", "--config", path_str(&config)]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "lifeboat: error: cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("lifeboat: hint: another program (another lifeboat agent?) listens on")
            && out
                .stderr
                .contains("--listen ADDR (or `listen` in [agent])"),
        "{}",
        out.stderr
    );
    drop(taken);
}

/// A configuration that is not there: the error says where one comes from.
#[test]
fn agent_without_its_configuration_hints_at_config() {
    let out = lifeboat_in(
        &workspace(),
        &[
            "agent",
            "--config",
            "tests/fixtures/rules/agent/no-such.toml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.stderr,
        "lifeboat: error: cannot read the configuration tests/fixtures/rules/agent/no-such.toml: No such file or directory (os error 2)\n\
         lifeboat: hint: give `--config` an existing file (without --config: /etc/lifeboat/lifeboat.toml); config/lifeboat.toml in a checkout is the shipped one, with every setting commented\n"
    );
}

// ---- packaging (issue 10) ----------------------------------------------------------------

/// The man pages and completions the package installs come from the clap definitions:
/// a page per visible command, a script per shell that knows the subcommands.
#[test]
fn man_pages_and_completions_come_from_the_command_line() {
    let dir = scratch("manpages");
    let out = lifeboat_in(&dir, &["manpages", "man"]);
    assert!(out.status.success(), "{}", out.stderr);
    let mut pages: Vec<String> = std::fs::read_dir(dir.join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "lifeboat-agent.1",
            "lifeboat-check.1",
            "lifeboat-checkpoint.1",
            "lifeboat-demo.1",
            "lifeboat-inspect.1",
            "lifeboat-restart.1",
            "lifeboat-rules-check.1",
            "lifeboat-rules-test.1",
            "lifeboat-rules.1",
            "lifeboat-run.1",
            "lifeboat-sensors.1",
            "lifeboat.1",
        ],
        "the hidden commands have no page"
    );
    let page = std::fs::read_to_string(dir.join("man/lifeboat-checkpoint.1")).unwrap();
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "roff: {}",
        &page[..80.min(page.len())]
    );
    assert!(page.contains("\\-\\-tree"), "the options are in the page");
    for shell in ["bash", "zsh", "fish"] {
        let out = lifeboat_in(&dir, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", out.stderr);
        for word in ["checkpoint", "restart", "inspect", "regions", "strict"] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    // Hidden from the help, as the man pages are.
    let help = lifeboat_in(&dir, &["--help"]);
    assert!(!help.stdout.contains("manpages") && !help.stdout.contains("completions"));
}

/// The README says how to install lifeboat and where the binary is, apart from the two
/// set-up commands, and how to operate it.
#[test]
fn the_readme_says_how_to_install_and_operate() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = |title: &str| {
        let start = readme
            .find(&format!("\n## {title}\n"))
            .unwrap_or_else(|| panic!("README has no `## {title}` section"));
        let rest = &readme[start + 4..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
    };
    let install = section("Install");
    for needle in [
        ".ci/package",
        "/usr/bin/lifeboat",
        "cargo install --locked --path agent",
        "~/.cargo/bin",
        "man lifeboat",
    ] {
        assert!(install.contains(needle), "Install lacks {needle:?}");
    }
    assert!(
        !install.contains("cargo run"),
        "Install is not the try-it commands"
    );
    let operate = section("Operating lifeboat");
    for needle in [
        "**Install**",
        "**Configure**",
        "**Check**",
        "**Start**",
        "**Watch**",
        "**Upgrade**",
        "lifeboat agent --check",
        "lifeboat-fleet.json",
        "lifeboat.alerts.yml",
    ] {
        assert!(operate.contains(needle), "Operating lacks {needle:?}");
    }
    let try_it = readme.find("## Try it").unwrap();
    let install_at = readme.find("## Install").unwrap();
    let engine = readme.find("## Use the engine").unwrap();
    assert!(
        try_it < install_at && install_at < engine,
        "Install comes before any lifeboat command"
    );
}

/// The engine benchmark prints what it measured and nothing else: no figures of other
/// tools typed into the source beside the measured ones.
#[test]
fn the_engine_bench_prints_only_measured_figures() {
    let bench = std::fs::read_to_string(workspace().join("agent/benches/engine.rs")).unwrap();
    assert!(
        !bench.contains("CRIU"),
        "agent/benches/engine.rs prints CRIU figures"
    );
}
