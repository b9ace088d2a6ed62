//! End-to-end tests of `lifeboat agent`: the real binary against fixture sysfs trees,
//! scraped over HTTP (and by a real Prometheus server), reloading its configuration,
//! and checkpointing a real process when a rule fires or the API asks.
//!
//! Needs root (checkpoints), python3, and Debian's `prometheus` package (promtool and the
//! server); each test fails with the reason when something is missing, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/http.rs"]
mod http_client;
use http_client::request as http;

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
const TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(case: &str) -> PathBuf {
    repo().join("tests/fixtures/sensors").join(case)
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("agent-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running agent; killed (and its log kept for failure messages) on drop.
struct Agent {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(config: &Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let mut child = Command::new(BIN)
            .arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("LIFEBOAT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lifeboat agent");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let agent = Agent { child, port, log };
        agent.wait_for(
            |a| a.get("/health").is_some_and(|(c, _)| c == 200),
            "/health",
        );
        agent
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path, &[], "")
    }

    fn wait_for(&self, mut ok: impl FnMut(&Agent) -> bool, what: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent: timed out waiting for {what}; its log:\n{}",
            self.log()
        );
    }

    fn metric(&self, line_prefix: &str) -> Option<String> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, root: &Path, rules: &str) -> PathBuf {
    let path = dir.join("lifeboat.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nroot = {root:?}\nnode = \"test-node\"\n[agent.store]\ndir = {store:?}\nmin_free_gib = 0.01\n\n[poll]\ninterval = \"1s\"\n\n{rules}",
            root = root.display().to_string(),
            store = dir.join("store").display().to_string(),
        ),
    )
    .unwrap();
    path
}

const CE_RULE: &str = r#"
[[rule]]
name = "dimm-ce"
when = { source = "edac", name = "dimm_ce_count", increase = "1h", above = 5 }
[[rule.action]]
type = "log"
"#;

fn promtool() -> &'static str {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool is missing: install Debian's `prometheus` package (apt-get install prometheus)"
    );
    "promtool"
}

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

fn check_golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden/agent").join(name);
    if std::env::var_os("LIFEBOAT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (create it with LIFEBOAT_BLESS=1)",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .filter(|l| !actual.contains(l))
            .map(|l| format!("- {l}"))
            .chain(
                actual
                    .lines()
                    .filter(|l| !expected.contains(l))
                    .map(|l| format!("+ {l}")),
            )
            .take(40)
            .collect();
        panic!(
            "{} differs from the agent's /metrics (re-bless with LIFEBOAT_BLESS=1 if the change is intended):\n{}",
            path.display(),
            diff.join("\n")
        );
    }
}

#[test]
fn metrics_match_golden_and_pass_promtool() {
    let promtool = promtool();
    for case in ["large", "edac-csrow", "hwmon", "infiniband", "empty"] {
        let dir = scratch(&format!("golden-{case}"));
        let config = write_config(&dir, &fixture(case), CE_RULE);
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
        check_golden(&format!("metrics-{case}.txt"), &reading_lines(&body));

        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed for {case}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
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
    let config = write_config(&dir, &fixture("empty"), CE_RULE);
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
    let ok = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the prometheus server is missing: install Debian's `prometheus` package"
    );
    let dir = scratch("prometheus");
    let config = write_config(&dir, &fixture("edac-dimm"), CE_RULE);
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
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    let _ = prom.kill();
    let _ = prom.wait();
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
    let config = write_config(&dir, &fixture("edac-dimm"), CE_RULE);
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
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
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

/// A python3 workload that counts and prints; returns the child and its stdout lines.
fn workload(env: (&str, &str)) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import time\nfor i in range(1, 100000):\n    print(i, flush=True)\n    time.sleep(0.05)\n",
        ])
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Killed mid-print at the end of a test, python would report a broken pipe.
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn index_entry(dir: &Path, pid: u32) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("store/test-node/index.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["pid"].as_u64() == Some(u64::from(pid)))
}

#[test]
fn firing_rule_checkpoints_a_process_that_restarts_and_continues() {
    let dir = scratch("fire");
    let tree = dir.join("tree");
    copy_tree(&fixture("edac-dimm"), &tree);
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
    let (mut child, lines) = workload(("LIFEBOAT_TEST_JOB", "fire-1"));
    let pid = child.id();
    // Running, then the agent, then the errors.
    let first = lines.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(first, "1");
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
    let status = child.wait().unwrap();
    assert!(!status.success(), "the workload was killed: {status}");
    let mut seen: Vec<u64> = lines.try_iter().map(|l| l.parse().unwrap()).collect();
    seen.insert(0, 1);
    let last_before = *seen.iter().max().unwrap();
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
    let mut restarted = Command::new(BIN)
        .args(["restart", "--no-restore-pid"])
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = restarted.stdout.take().unwrap();
    let mut after = BufReader::new(out).lines().map_while(Result::ok);
    let next: u64 = after.next().unwrap().parse().unwrap();
    let then: u64 = after.next().unwrap().parse().unwrap();
    let _ = restarted.kill();
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &restarted.id().to_string()])
        .status();
    let _ = restarted.wait();
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
    let config = write_config(&dir, &fixture("empty"), CE_RULE);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\ntoken_file = \"token\"\n");
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config, &[]);
    let (mut child, lines) = workload(("X", "y"));
    lines.recv_timeout(TIMEOUT).unwrap();
    let body = format!("{{\"pid\": {}}}", child.id());
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
    assert!(child.try_wait().unwrap().is_none());
    let inspect = Command::new(BIN)
        .arg("inspect")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let (_, list) = agent.get("/api/v1/checkpoints").unwrap();
    assert!(list.contains(image), "{list}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn demo_runs_end_to_end() {
    let dir = scratch("demo");
    let out = Command::new(BIN)
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lifeboat demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
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

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn find_file(dir: &Path, name: &str) -> PathBuf {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e.file_name() == name {
                return p;
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}

/// New rasdaemon records count at once: the agent watches rasdaemon's files and reads
/// them when they change, without waiting for the (here hour-long) poll interval.
#[test]
fn rasdaemon_log_lines_are_read_as_they_come() {
    let dir = scratch("rasdaemon-events");
    let tree = dir.join("tree");
    copy_tree(&fixture("rasdaemon-log"), &tree);
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
    let config = write_config(&dir, &fixture("edac-dimm"), CE_RULE);
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
    let out = Command::new(BIN)
        .args(["rules", "test", "--rules"])
        .arg(&config)
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rules test on the recording: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
