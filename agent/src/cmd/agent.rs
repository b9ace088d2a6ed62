//! `lifeboat agent`: logging to stderr, the validation of the configuration and the
//! start-up summary ([`crate::preflight`]), the async runtime, and the daemon
//! ([`crate::daemon`]). `--check` validates and summarizes, then exits.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lifeboat_sensors::{Root, all_sensors, lm_sensors, read_all};

use super::support::{Hinted, status};
use crate::cli::AgentArgs;
use crate::daemon::{self, Options, config::Overrides};
use crate::preflight::{self, NodeSummary};

/// Run the agent until SIGINT or SIGTERM; with `--check`, validate and exit.
pub fn run(args: &AgentArgs) -> Result<ExitCode> {
    let overrides = Overrides {
        root: args.root.clone(),
        listen: args.listen,
    };
    if args.check {
        return check(args, &overrides);
    }
    init_logging(args.log_json);
    // The same validation as `rules check` and `agent --check`; the daemon reads the
    // file again when it starts (and on every reload).
    let checked = preflight::validate(&args.config, &overrides)?;
    let Some((agent, rules)) = &checked.config else {
        anyhow::bail!("{}", checked.diags);
    };
    if !checked.passes(args.strict) {
        anyhow::bail!(
            "{}\n{}: {} (--strict: warnings are errors)",
            checked.diags,
            args.config.display(),
            checked.diags.summary()
        );
    }
    let root = Root::new(&agent.root);
    let scans = read_all(&root, &mut all_sensors());
    NodeSummary::new(rules, &scans, &root, lm_sensors::BUILT).log();
    let listen = agent.listen;
    let opts = Options {
        config: args.config.clone(),
        record: args.record.clone(),
        overrides,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lifeboat-agent")
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(daemon::serve(&opts));
    if served.as_ref().is_err_and(addr_in_use) {
        let flag = if args.listen.is_some() {
            "another --listen"
        } else {
            "--listen ADDR (or `listen` in [agent])"
        };
        return served.map(|()| ExitCode::SUCCESS).hint(format!(
            "another program (another lifeboat agent?) listens on {listen}: stop it, \
             or give this agent {flag}; `ss -ltnp 'sport = :{}'` names it",
            listen.port()
        ));
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Whether the error is a listen address already taken.
fn addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// `agent --check`: the file's verdict as `rules check` prints it, the settings, and
/// what the rules can do on this node.
fn check(args: &AgentArgs, overrides: &Overrides) -> Result<ExitCode> {
    let checked = preflight::validate(&args.config, overrides)?;
    let mut out = std::io::stdout().lock();
    super::rules::report(&mut out, &checked, args.strict)?;
    let ok = checked.passes(args.strict);
    if let Some((agent, rules)) = &checked.config {
        writeln!(
            out,
            "agent: listen {}, node {}, store {} (keep {} per process), API checkpoints {}",
            agent.listen,
            agent.node,
            agent.store_dir.display(),
            agent.store.keep,
            if agent.token.is_some() {
                "on (token set)"
            } else {
                "off (no token)"
            }
        )?;
        let root = Root::new(&agent.root);
        if !root.path().is_dir() {
            anyhow::bail!("root {}: not a directory", root.path().display());
        }
        let scans = read_all(&root, &mut all_sensors());
        let summary = NodeSummary::new(rules, &scans, &root, lm_sensors::BUILT);
        write!(out, "{}", summary.text(&root))?;
    }
    Ok(status(ok))
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
