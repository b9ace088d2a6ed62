//! The agent tests' helpers (`agent.rs`, `agent_abuse.rs`): a running `lifeboat agent` on
//! a fixture root, its configuration file, the python3 workload its rules checkpoint, and
//! the store's index.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::contexts::{free_port, lifeboat_bin};
use super::http::request as http;
use super::processes::{Proc, TIMEOUT};

/// A running agent; killed on drop. Its log (stderr) is kept for failure messages.
pub struct Agent {
    pub proc: Proc,
    pub port: u16,
}

impl Agent {
    /// `lifeboat agent --config CONFIG EXTRA...` on a free port, once `/health` answers.
    pub fn start(config: &Path, extra: &[&str]) -> Agent {
        Agent::start_with(&[], &[], config, extra)
    }

    /// [`Agent::start`] run through `wrapper` (a command that ends by exec'ing its
    /// arguments, such as `prlimit`), with `env` added.
    pub fn start_with(
        wrapper: &[&str],
        env: &[(&str, &str)],
        config: &Path,
        extra: &[&str],
    ) -> Agent {
        let port = free_port();
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(lifeboat_bin());
                c
            }
            None => Command::new(lifeboat_bin()),
        };
        cmd.arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env("LIFEBOAT_LOG", "info")
            .envs(env.iter().copied());
        let proc = Proc::spawn_no_input(cmd, "lifeboat agent");
        let agent = Agent { proc, port };
        agent.wait_for(
            |a| a.get("/health").is_some_and(|(c, _)| c == 200),
            "/health",
        );
        agent
    }

    pub fn log(&self) -> String {
        self.proc.stderr_text()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path, &[], "")
    }

    pub fn wait_for(&self, mut ok: impl FnMut(&Agent) -> bool, what: &str) {
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

    pub fn metric(&self, line_prefix: &str) -> Option<String> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    }
}

/// `DIR/lifeboat.toml`: the agent reads `root`, files its images under `DIR/store` as
/// node `test-node`, polls every second, and runs `rules`.
pub fn write_config(dir: &Path, root: &Path, rules: &str) -> PathBuf {
    let path = dir.join("lifeboat.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nroot = {root:?}\nnode = \"test-node\"\n[agent.store]\ndir = {store:?}\nmin_free_gib = 0.01\n\n[poll]\ninterval = \"1s\"\n\n{rules}",
            root = root.display().to_string(),
            store = dir.join("store").display().to_string(),
        ),
    )
    .expect("write the agent's configuration");
    path
}

/// A python3 workload that counts and prints, with `env` set.
pub fn workload(env: (&str, &str)) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import time\nfor i in range(1, 100000):\n    print(i, flush=True)\n    time.sleep(0.05)\n",
    ])
    .env(env.0, env.1);
    Proc::spawn_no_input(cmd, "the python3 workload")
}

/// The numbers `workload` printed so far.
pub fn counted(p: &Proc) -> Vec<u64> {
    String::from_utf8_lossy(&p.stdout())
        .lines()
        .map(|l| l.parse().expect("the workload prints numbers"))
        .collect()
}

/// The store's index entry of the image of `pid`, if there is one.
pub fn index_entry(dir: &Path, pid: u32) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("store/test-node/index.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["pid"].as_u64() == Some(u64::from(pid)))
}

/// The first file named `name` under `dir` (depth first, in name order).
pub fn find_file(dir: &Path, name: &str) -> PathBuf {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if e.file_name() == name {
                return p;
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}
