//! Agent benchmark: the real `lifeboat agent` (release build) on the large fixture tree
//! (64 DIMMs, 32 temperatures, 4 IB ports, 8 NICs, 16 PCIe devices); prints figures.
//!
//! 1. CPU and RSS while polling every source every second.
//! 2. `/metrics` response time and CPU per scrape.
//! 3. Latency from a counter change in sysfs to the checkpoint's start and to the image
//!    being indexed in the store.
//! 4. The same scrape figures for node_exporter (Debian `prometheus-node-exporter`) on
//!    the same tree, and a like-for-like comparison of CPU per scrape.
//!
//! Run with `cargo bench -p lifeboat --bench agent` as root (the agent checkpoints a
//! python3 process). `LIFEBOAT_BENCH_QUICK=1` polls for 5 s instead of 30 s with fewer
//! scrapes and latency rounds, which is what CI runs to prove the bench still works.
//! python3 and node_exporter are required: the bench fails, naming the Debian package,
//! when one is missing.

#[path = "../../tests/common/http.rs"]
mod http_client;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The release binary cargo built for this bench.
const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

/// Poll interval of every source in the bench configurations.
const POLL: Duration = Duration::from_secs(1);

/// How long to wait for an agent or exporter to come up, or a checkpoint to happen.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable the checkpoint rule selects its target by.
const JOB_VAR: &str = "LIFEBOAT_BENCH_JOB";

/// Names under which node_exporter is installed (Debian's first).
const NODE_EXPORTERS: &[&str] = &["prometheus-node-exporter", "node_exporter"];

/// The rule of the latency rounds (and, with a log action, of the polling round, where
/// it never fires: the large tree's DIMMs have at most 2 corrected errors).
const CE_WHEN: &str =
    r#"when = { source = "edac", name = "dimm_ce_count", increase = "10m", above = 5 }"#;

struct Settings {
    poll_for: Duration,
    scrapes: usize,
    latency_rounds: usize,
}

fn main() {
    let quick = std::env::var_os("LIFEBOAT_BENCH_QUICK").is_some();
    let settings = if quick {
        Settings {
            poll_for: Duration::from_secs(5),
            scrapes: 50,
            latency_rounds: 3,
        }
    } else {
        Settings {
            poll_for: Duration::from_secs(30),
            scrapes: 300,
            latency_rounds: 5,
        }
    };
    let started = Instant::now();
    let node_exporter = find_node_exporter();
    require_python3();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the agent benchmark must run as root: the agent checkpoints a process with ptrace \
         and writes images as root (run `sudo -E cargo bench -p lifeboat --bench agent`)"
    );
    let tick = clock_ticks();
    let large = repo().join("tests/fixtures/sensors/large");
    assert!(
        large.join("sys").is_dir(),
        "the large fixture tree is missing: {}",
        large.display()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create the bench directory");

    println!("agent benchmark: {} against {}", BIN, large.display());
    println!(
        "  every source polled every {} s; CPU from /proc/PID/stat (utime+stime, {} ticks/s{}); {}",
        POLL.as_secs(),
        tick.per_second,
        if tick.from_getconf {
            ", getconf CLK_TCK"
        } else {
            ", assumed: getconf unavailable"
        },
        if quick {
            "quick run (LIFEBOAT_BENCH_QUICK)"
        } else {
            "full run"
        }
    );
    println!(
        "  the tree is a copy of the fixture with two files a real kernel has and node_exporter needs:"
    );
    println!(
        "  hwmonN/device links (else both coretemp chips get one name and node_exporter fails on"
    );
    println!(
        "  duplicate series) and infiniband/*/board_id (else its infiniband collector fails)."
    );
    println!();

    let tree = prepare_tree(&dir, &large);
    let lb = bench_lifeboat(&dir, &tree, &settings, tick);
    let ne = bench_node_exporter(&node_exporter, &tree, &settings, tick);
    compare(&lb, &ne);
    latency(&dir, &tree, &settings);
    println!();
    println!(
        "agent benchmark finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// 1 + 2: lifeboat polling and scrapes

/// What the lifeboat part measured.
struct LifeboatFigures {
    /// CPU ms per poll round of every source.
    poll_cpu_ms: f64,
    scrape: ScrapeFigures,
}

fn bench_lifeboat(
    dir: &Path,
    large: &Path,
    settings: &Settings,
    tick: ClockTick,
) -> LifeboatFigures {
    let work = dir.join("poll");
    fs::create_dir_all(&work).expect("create the polling directory");
    let rules =
        format!("[[rule]]\nname = \"dimm-ce\"\n{CE_WHEN}\n[[rule.action]]\ntype = \"log\"\n");
    let config = write_config(&work, large, &rules);
    let agent = Agent::start(&config);
    let pid = agent.pid();
    // Every source has been read once and the tokio pools have started.
    agent.wait_for_metric("lifeboat_edac_dimm_ce_count_total");
    std::thread::sleep(2 * POLL);

    // 1. Idle polling.
    let cpu0 = cpu_seconds(pid, tick);
    let t0 = Instant::now();
    std::thread::sleep(settings.poll_for);
    let cpu1 = cpu_seconds(pid, tick);
    let wall = t0.elapsed().as_secs_f64();
    let mem = memory(pid);
    let rounds = wall / POLL.as_secs_f64();
    let idle_rate = (cpu1 - cpu0) / wall;
    let poll_cpu_ms = (cpu1 - cpu0) * 1000.0 / rounds;
    println!(
        "1. lifeboat agent polling the large tree every {} s for {:.0} s",
        POLL.as_secs(),
        wall
    );
    println!(
        "   CPU           {:8.1} ms total, {:.2} ms per poll round ({:.0} rounds), {:.3} % of one core",
        (cpu1 - cpu0) * 1000.0,
        poll_cpu_ms,
        rounds,
        idle_rate * 100.0
    );
    println!(
        "   memory        RSS {:.1} MiB now, peak (VmHWM) {:.1} MiB",
        mem.rss_mib, mem.hwm_mib
    );
    println!("   sources       {}", sources(agent.port));
    println!();

    // 2. Scrapes, on top of the polling.
    let scrape = scrape_many(agent.port, settings.scrapes, pid, tick, idle_rate);
    println!(
        "2. lifeboat /metrics: {} sequential GETs (HTTP/1.1, Connection: close, classic text format)",
        settings.scrapes
    );
    print_scrape(&scrape, "lifeboat");
    let om = http_get(
        agent.port,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .expect("scrape lifeboat /metrics as OpenMetrics");
    println!(
        "   OpenMetrics   {} bytes when asked with Accept: application/openmetrics-text",
        om.body.len()
    );
    let mem = memory(pid);
    println!(
        "   memory        RSS {:.1} MiB after the scrapes, peak (VmHWM) {:.1} MiB",
        mem.rss_mib, mem.hwm_mib
    );
    println!();
    drop(agent);
    LifeboatFigures {
        poll_cpu_ms,
        scrape,
    }
}

// ---------------------------------------------------------------------------------------
// 4: node_exporter

/// What the node_exporter part measured.
struct NodeExporterFigures {
    scrape: ScrapeFigures,
    collectors: Vec<(String, String)>,
}

fn bench_node_exporter(
    exe: &str,
    large: &Path,
    settings: &Settings,
    tick: ClockTick,
) -> NodeExporterFigures {
    // Only collectors that read sysfs/procfs under the given paths and overlap lifeboat's
    // sources: edac, hwmon, thermal_zone, infiniband, netclass (the NICs; netdev would
    // read the host's interfaces over netlink), loadavg and meminfo (lifeboat's host
    // source). node_exporter has no PCIe AER nor rasdaemon collector.
    let collectors = [
        "edac",
        "hwmon",
        "thermal_zone",
        "infiniband",
        "netclass",
        "loadavg",
        "meminfo",
    ];
    let port = free_port();
    let mut cmd = Command::new(exe);
    cmd.arg("--collector.disable-defaults");
    for c in collectors {
        cmd.arg(format!("--collector.{c}"));
    }
    cmd.arg(format!("--path.sysfs={}", large.join("sys").display()))
        .arg(format!("--path.procfs={}", large.join("proc").display()))
        .arg(format!("--path.rootfs={}", large.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = Guard::spawn(&mut cmd, "node_exporter");
    let pid = child.pid();
    let deadline = Instant::now() + TIMEOUT;
    let first = loop {
        if let Some(r) = http_get(port, "/metrics", &[]) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "node_exporter did not answer on 127.0.0.1:{port} within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let collectors_ok: Vec<(String, String)> = first
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("node_scrape_collector_success{collector=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(c, v)| (c.to_owned(), v.to_owned()))
        .collect();

    // Its idle CPU (Go runtime housekeeping), subtracted like lifeboat's polling.
    let idle_for = Duration::from_secs(3);
    let cpu0 = cpu_seconds(pid, tick);
    std::thread::sleep(idle_for);
    let idle_rate = (cpu_seconds(pid, tick) - cpu0) / idle_for.as_secs_f64();

    let scrape = scrape_many(port, settings.scrapes, pid, tick, idle_rate);
    let version = Command::new(exe)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "3. node_exporter on the same tree: {} sequential GETs ({version})",
        settings.scrapes
    );
    println!(
        "   collectors    {}",
        collectors_ok
            .iter()
            .map(|(c, v)| format!("{c}={}", if v == "1" { "ok" } else { "failed" }))
            .collect::<Vec<_>>()
            .join(" ")
    );
    print_scrape(&scrape, "node_exporter");
    let mem = memory(pid);
    println!(
        "   memory        RSS {:.1} MiB, peak (VmHWM) {:.1} MiB; idle CPU {:.3} % of one core",
        mem.rss_mib,
        mem.hwm_mib,
        idle_rate * 100.0
    );
    println!();
    drop(child);
    NodeExporterFigures {
        scrape,
        collectors: collectors_ok,
    }
}

fn compare(lb: &LifeboatFigures, ne: &NodeExporterFigures) {
    let lb_total = lb.poll_cpu_ms + lb.scrape.cpu_ms;
    let failed: Vec<&str> = ne
        .collectors
        .iter()
        .filter(|(_, v)| v != "1")
        .map(|(c, _)| c.as_str())
        .collect();
    println!(
        "   Comparison of CPU per scrape, when Prometheus scrapes as often as lifeboat polls (both 1 s):"
    );
    println!(
        "   node_exporter reads the sensors inside each scrape; lifeboat reads them on its own poll"
    );
    println!(
        "   schedule and a scrape only renders what it holds, so one scrape interval costs lifeboat"
    );
    println!("   one poll round + one scrape.");
    let per_series = |cpu_ms: f64, series: usize| cpu_ms * 1000.0 / series.max(1) as f64;
    println!(
        "   {:<34} {:>9} {:>9} {:>9} {:>13}",
        "", "CPU ms", "p50 ms", "series", "CPU us/series"
    );
    println!(
        "   {:<34} {:>9.2} {:>9.2} {:>9} {:>13.2}",
        "lifeboat, poll round + scrape",
        lb_total,
        ms(lb.scrape.p50),
        lb.scrape.series,
        per_series(lb_total, lb.scrape.series)
    );
    println!(
        "   {:<34} {:>9.2}",
        "  of which the poll round", lb.poll_cpu_ms
    );
    println!(
        "   {:<34} {:>9.2}",
        "  of which the scrape", lb.scrape.cpu_ms
    );
    println!(
        "   {:<34} {:>9.2} {:>9.2} {:>9} {:>13.2}",
        "node_exporter, scrape",
        ne.scrape.cpu_ms,
        ms(ne.scrape.p50),
        ne.scrape.series,
        per_series(ne.scrape.cpu_ms, ne.scrape.series)
    );
    if ne.scrape.cpu_ms > 0.0 {
        println!(
            "   lifeboat / node_exporter: {:.2}x the CPU per scrape interval",
            lb_total / ne.scrape.cpu_ms
        );
    }
    println!(
        "   Caveats: lifeboat also reads PCIe AER and the rasdaemon database and evaluates the rules"
    );
    println!(
        "   each round; node_exporter reads EDAC per csrow only (the tree has per-DIMM counters){}.",
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " and its {} collector{} failed here",
                failed.join(", "),
                if failed.len() == 1 { "" } else { "s" }
            )
        }
    );
    println!(
        "   With a slower poll than scrape (the shipped config polls every 10-60 s) lifeboat's share"
    );
    println!("   per scrape falls towards the scrape cost alone.");
    println!();
}

// ---------------------------------------------------------------------------------------
// 3: counter change → checkpoint

fn latency(dir: &Path, tree: &Path, settings: &Settings) {
    let work = dir.join("latency");
    fs::create_dir_all(&work).expect("create the latency directory");
    let ce = tree.join("sys/devices/system/edac/mc/mc0/dimm0/dimm_ce_count");
    assert!(ce.is_file(), "no {} in the large tree", ce.display());

    // The job: an interpreter that sleeps, as a batch job would between outputs.
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import time\nwhile True:\n    time.sleep(1)\n"])
        .env(JOB_VAR, "bench-1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let job = Guard::spawn(&mut cmd, "python3");
    let job_pid = job.pid();

    let rules = format!(
        "[[rule]]\nname = \"dimm-ce\"\n{CE_WHEN}\n[[rule.action]]\ntype = \"checkpoint\"\n\
         target = {{ job_env = \"{JOB_VAR}\" }}\nafter = \"continue\"\n"
    );
    let mut started = Vec::new();
    let mut indexed = Vec::new();
    let mut image_bytes = 0;
    for round in 0..settings.latency_rounds {
        // A new agent and store per round: the rule fires once per agent.
        let rdir = work.join(format!("round{round}"));
        fs::create_dir_all(&rdir).expect("create a round directory");
        let config = write_config(&rdir, tree, &rules);
        let index = rdir.join("store/bench-node/index.jsonl");
        let agent = Agent::start(&config);
        agent.wait_for_metric("lifeboat_edac_dimm_ce_count_total");
        // At least one more poll for the baseline, then a change at a different phase of
        // the poll cycle each round.
        let phase = POLL.mul_f64(round as f64 / settings.latency_rounds as f64);
        std::thread::sleep(POLL + POLL / 10 + phase);
        let before: u64 = fs::read_to_string(&ce)
            .expect("read dimm_ce_count")
            .trim()
            .parse()
            .expect("dimm_ce_count holds a number");
        let tmp = ce.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", before + 50)).expect("write the new count");
        fs::rename(&tmp, &ce).expect("replace dimm_ce_count");
        let changed = Instant::now();

        let mut t_started = None;
        let mut t_indexed = None;
        while t_started.is_none() || t_indexed.is_none() {
            while let Ok((at, message)) = agent.events.try_recv() {
                if message == "checkpoint started" && t_started.is_none() {
                    t_started = Some(at);
                }
            }
            if t_indexed.is_none()
                && fs::read_to_string(&index).is_ok_and(|t| {
                    t.lines().any(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .is_ok_and(|v| v["pid"].as_u64() == Some(u64::from(job_pid)))
                    })
                })
            {
                t_indexed = Some(Instant::now());
            }
            assert!(
                changed.elapsed() < TIMEOUT,
                "round {round}: no checkpoint of PID {job_pid} within {TIMEOUT:?} of the change; \
                 the agent's log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let (Some(s), Some(i)) = (t_started, t_indexed) else {
            unreachable!("the loop ends when both are set")
        };
        started.push(s.saturating_duration_since(changed));
        indexed.push(i.saturating_duration_since(changed));
        image_bytes = image_size(&index, job_pid).unwrap_or(image_bytes);
        drop(agent);
        // The same count for the next agent's baseline.
        fs::write(&ce, format!("{before}\n")).expect("restore dimm_ce_count");
    }
    drop(job);

    // In the order of the rounds for the listing, sorted for the statistics.
    let (started_list, indexed_list) = (list_ms(&started), list_ms(&indexed));
    started.sort();
    indexed.sort();
    println!(
        "4. counter change -> checkpoint: {} rounds, a new agent each round (rule `dimm-ce`: dimm_ce_count",
        settings.latency_rounds
    );
    println!(
        "   rises by more than 5 within 10 m; checkpoint of a python3 job selected by ${JOB_VAR}, after = continue)"
    );
    println!(
        "   {:<34} {:>10} {:>10}   (each round, ms)",
        "", "median", "max"
    );
    println!(
        "   {:<34} {:>7.0} ms {:>7.0} ms   ({})",
        "change -> \"checkpoint started\" log",
        ms(median(&started)),
        ms(*started.last().expect("at least one round")),
        started_list
    );
    println!(
        "   {:<34} {:>7.0} ms {:>7.0} ms   ({})",
        "change -> image in index.jsonl",
        ms(median(&indexed)),
        ms(*indexed.last().expect("at least one round")),
        indexed_list
    );
    println!(
        "   image {:.1} MiB. The agent reads the EDAC counters every {} s, so the change waits up to one",
        image_bytes as f64 / (1024.0 * 1024.0),
        POLL.as_secs()
    );
    println!(
        "   poll interval to be seen (the rounds change the counter at spread phases of the cycle):"
    );
    println!(
        "   expected latency <= interval + the read, rule evaluation and process selection (a few ms);"
    );
    println!("   a shorter edac interval lowers it in proportion.");
}

// ---------------------------------------------------------------------------------------
// Scrapes

struct ScrapeFigures {
    p50: Duration,
    p95: Duration,
    max: Duration,
    body_bytes: usize,
    series: usize,
    /// CPU ms per scrape, the idle rate subtracted.
    cpu_ms: f64,
}

fn scrape_many(port: u16, n: usize, pid: u32, tick: ClockTick, idle_rate: f64) -> ScrapeFigures {
    let mut times = Vec::with_capacity(n);
    let mut body = String::new();
    let cpu0 = cpu_seconds(pid, tick);
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let r = http_get(port, "/metrics", &[])
            .unwrap_or_else(|| panic!("scrape {i} of 127.0.0.1:{port}/metrics failed"));
        times.push(t.elapsed());
        assert_eq!(r.code, 200, "scrape {i} of port {port} answered {}", r.code);
        body = r.body;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid, tick) - cpu0;
    times.sort();
    ScrapeFigures {
        p50: percentile(&times, 50.0),
        p95: percentile(&times, 95.0),
        max: *times.last().expect("at least one scrape"),
        body_bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
        cpu_ms: ((cpu - idle_rate * wall) * 1000.0 / n as f64).max(0.0),
    }
}

fn print_scrape(s: &ScrapeFigures, who: &str) {
    println!(
        "   response      p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ms(s.p50),
        ms(s.p95),
        ms(s.max)
    );
    println!(
        "   body          {} bytes, {} series",
        s.body_bytes, s.series
    );
    println!(
        "   CPU           {:.2} ms per scrape ({who}'s CPU over the scrapes minus its idle rate)",
        s.cpu_ms
    );
}

// ---------------------------------------------------------------------------------------
// Processes

/// A child process, killed and reaped when dropped (also when the bench panics).
struct Guard {
    child: Child,
}

impl Guard {
    fn spawn(cmd: &mut Command, what: &str) -> Guard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Guard { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `lifeboat agent --log-json`; its log lines kept and its messages sent on
/// `events` with the instant each was read.
struct Agent {
    guard: Guard,
    port: u16,
    log: Arc<Mutex<String>>,
    events: Receiver<(Instant, String)>,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-json")
            .env("LIFEBOAT_LOG", "info")
            .env_remove(JOB_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd, "lifeboat agent");
        let err = guard.child.stderr.take().expect("agent stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let at = Instant::now();
                let message = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned));
                if let Some(m) = message {
                    let _ = tx.send((at, m));
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let agent = Agent {
            guard,
            port,
            log,
            events,
        };
        let deadline = Instant::now() + TIMEOUT;
        while http_get(port, "/health", &[]).is_none_or(|r| r.code != 200) {
            assert!(
                Instant::now() < deadline,
                "lifeboat agent did not answer /health within {TIMEOUT:?}; its log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wait_for_metric(&self, name: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !http_get(self.port, "/metrics", &[])
            .is_some_and(|r| r.body.lines().any(|l| l.starts_with(name)))
        {
            assert!(
                Instant::now() < deadline,
                "lifeboat agent: no {name} in /metrics within {TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The sources the agent found, with their number of readings, from `/api/v1/status`.
fn sources(port: u16) -> String {
    let Some(status) = http_get(port, "/api/v1/status", &[])
        .and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
    else {
        return "(no /api/v1/status)".to_owned();
    };
    let Some(all) = status["sources"].as_object() else {
        return "(no sources in /api/v1/status)".to_owned();
    };
    all.iter()
        .filter(|(_, s)| s["present"].as_bool() == Some(true))
        .map(|(name, s)| format!("{name} ({})", s["readings"].as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_node_exporter() -> String {
    for name in NODE_EXPORTERS {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return (*name).to_owned();
        }
    }
    panic!(
        "node_exporter is missing: the agent benchmark compares against it; install Debian's \
         `prometheus-node-exporter` package (apt-get install prometheus-node-exporter)"
    );
}

fn require_python3() {
    let ok = Command::new("python3")
        .args(["-c", "pass"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 is missing: the agent benchmark checkpoints a python3 job; install Debian's \
         `python3` package (apt-get install python3)"
    );
}

// ---------------------------------------------------------------------------------------
// /proc

#[derive(Debug, Clone, Copy)]
struct ClockTick {
    per_second: f64,
    from_getconf: bool,
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ), from `getconf CLK_TCK`.
fn clock_ticks() -> ClockTick {
    let got = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|&t| t > 0.0);
    match got {
        Some(per_second) => ClockTick {
            per_second,
            from_getconf: true,
        },
        None => ClockTick {
            per_second: 100.0,
            from_getconf: false,
        },
    }
}

/// User + system CPU seconds of a process (all its threads).
fn cpu_seconds(pid: u32, tick: ClockTick) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(") ")
        .unwrap_or_else(|| panic!("{path}: no command name in {stat:?}"))
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{path}: field {} is not a number", i + 3))
    };
    (num(11) + num(12)) / tick.per_second
}

struct Memory {
    rss_mib: f64,
    hwm_mib: f64,
}

fn memory(pid: u32) -> Memory {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{path}: no {key}"))
    };
    Memory {
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    }
}

// ---------------------------------------------------------------------------------------
// HTTP and files

struct Response {
    code: u16,
    body: String,
}

/// A GET; `None` when the server is not there.
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
    http_client::request(port, "GET", path, headers, "").map(|(code, body)| Response { code, body })
}

fn write_config(dir: &Path, root: &Path, rules: &str) -> PathBuf {
    let path = dir.join("lifeboat.toml");
    let text = format!(
        "[agent]\nroot = {root:?}\nnode = \"bench-node\"\n[agent.store]\ndir = {store:?}\n\
         min_free_gib = 0.01\n\n[poll]\ninterval = \"{}s\"\n\n{rules}",
        POLL.as_secs(),
        root = root.display().to_string(),
        store = dir.join("store").display().to_string(),
    );
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A copy of the large fixture with what a real kernel also has and node_exporter needs:
/// `hwmonN/device` links (it names chips by their device) and `board_id` of each
/// InfiniBand device (its sysfs reader fails without one). Both agents read this copy.
fn prepare_tree(dir: &Path, large: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let status = Command::new("cp")
        .arg("-a")
        .arg(large)
        .arg(&tree)
        .status()
        .expect("run cp -a");
    assert!(
        status.success(),
        "cp -a {} {} failed",
        large.display(),
        tree.display()
    );
    let platform = tree.join("sys/devices/platform");
    for entry in fs::read_dir(&platform)
        .unwrap_or_else(|e| panic!("read {}: {e}", platform.display()))
        .flatten()
    {
        let hwmon = entry.path().join("hwmon");
        let Ok(chips) = fs::read_dir(&hwmon) else {
            continue;
        };
        for chip in chips.flatten() {
            let link = chip.path().join("device");
            if !link.exists() {
                std::os::unix::fs::symlink(Path::new("../../..").join(entry.file_name()), &link)
                    .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
            }
        }
    }
    let ib = tree.join("sys/class/infiniband");
    for entry in fs::read_dir(&ib)
        .unwrap_or_else(|e| panic!("read {}: {e}", ib.display()))
        .flatten()
    {
        let board = entry.path().join("board_id");
        if !board.exists() {
            fs::write(&board, "MT_0000000223\n")
                .unwrap_or_else(|e| panic!("write {}: {e}", board.display()));
        }
    }
    tree
}

/// Size of the image the index lists for `pid`.
fn image_size(index: &Path, pid: u32) -> Option<u64> {
    let text = fs::read_to_string(index).ok()?;
    let path = text.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["pid"].as_u64()? == u64::from(pid)).then(|| v["path"].as_str().map(PathBuf::from))?
    })?;
    fs::metadata(path).ok().map(|m| m.len())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate is inside the workspace")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[Duration]) -> Duration {
    percentile(sorted, 50.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn list_ms(ds: &[Duration]) -> String {
    ds.iter()
        .map(|d| format!("{:.0}", ms(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}
