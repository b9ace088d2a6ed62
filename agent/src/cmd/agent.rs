//! `lifeboat agent`: logging to stderr, the async runtime, and the daemon ([`crate::daemon`]).

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::AgentArgs;
use crate::daemon::{self, Options, config::Overrides};

/// Run the agent until SIGINT or SIGTERM.
pub fn run(args: &AgentArgs) -> Result<ExitCode> {
    init_logging(args.log_json);
    let opts = Options {
        config: args.config.clone(),
        record: args.record.clone(),
        overrides: Overrides {
            root: args.root.clone(),
            listen: args.listen,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lifeboat-agent")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon::serve(&opts))?;
    Ok(ExitCode::SUCCESS)
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
