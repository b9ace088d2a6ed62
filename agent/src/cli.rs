//! Command-line interface: the engine's BLCR-familiar commands (`run`, `checkpoint`,
//! `restart`, `inspect`, `check`), the node daemon (`agent`), `sensors`, `rules` and `demo`.

use clap::{Args, Parser, Subcommand};
use lifeboat_engine::After;
use std::path::PathBuf;

/// lifeboat saves running processes before the hardware under them fails.
///
/// The engine checkpoints an unmodified Linux process (all threads, memory, registers,
/// signal state, open files and pipes) into a context file and restarts it from there,
/// on this node or another one, with no kernel module and nothing added to the program.
#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a program as a checkpointable job and wait for it.
    ///
    /// The job's PID is printed on stderr; stdio is passed through and lifeboat exits with
    /// the job's exit status (128+N if it died of signal N). SIGINT, SIGTERM and SIGHUP are
    /// forwarded to the job.
    ///
    /// Example: lifeboat run -- python3 train.py --epochs 10
    Run {
        /// Program and arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Save a running process, or a whole job, to a context file.
    ///
    /// Freezes every thread of every process in scope, writes the image (to a temporary
    /// name, fsynced, then renamed, so FILE is never half-written), and then lets the
    /// processes run on (default), stops, terminates or kills them. Only the owner or root
    /// may checkpoint a process; set-id and non-dumpable processes are refused. If
    /// anything fails, every process keeps running.
    ///
    /// Examples:
    ///   lifeboat checkpoint 4242                       # writes ./context.4242
    ///   lifeboat checkpoint --kill -f /shared/job.ctx 4242
    ///   lifeboat checkpoint --tree 4242                # 4242 and its descendants
    ///   lifeboat checkpoint --pgid 4242                # a shell pipeline's process group
    #[command(verbatim_doc_comment)]
    Checkpoint(CheckpointArgs),
    /// Recreate a process (or a whole saved job) from a context file and let it continue.
    ///
    /// The process gets its original PID back (use --no-restore-pid if that PID is taken;
    /// an image of several processes always keeps its PIDs), its memory, threads,
    /// registers, signal handlers, pending signals and files; a job gets its parent links,
    /// process groups, sessions, pipes and shared memory back. Standard streams that were a
    /// terminal or a pipe leading outside the image are attached to this command's own.
    /// Files are reopened with your permissions (as root, with those of the image file's
    /// owner, whose own IDs alone the image may claim). By default lifeboat waits for the
    /// process and exits with its status, forwarding SIGINT, SIGTERM and SIGHUP to it.
    ///
    /// Examples:
    ///   lifeboat restart context.4242
    ///   lifeboat restart --no-restore-pid --detach /shared/job.ctx
    #[command(verbatim_doc_comment)]
    Restart(RestartArgs),
    /// Describe a context file: command, PID, threads, memory, files, signals, checksums.
    ///
    /// By default a summary: threads, memory by kind, descriptors by kind, signal handlers
    /// and open flags by name, the time the processes were frozen. --regions adds every
    /// memory region; --all every region, thread, descriptor and section.
    Inspect(InspectArgs),
    /// Watch lifeboat save a real workload before a simulated node fails (python3 needed,
    /// no sensor hardware): a simulated EDAC node, the real agent with the shipped rules,
    /// rising corrected-error counts, the agent's checkpoint, the "failure", the restart,
    /// and a comparison with an uninterrupted run.
    Demo {
        /// Working directory: the simulated node, the configuration and the checkpoint
        /// store [default: a new directory under $TMPDIR, removed when the demo succeeds].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the node daemon: poll sensors, evaluate rules, checkpoint processes at risk,
    /// serve Prometheus metrics.
    ///
    /// Reads the configuration file (`[agent]` settings and the `[[rule]]`s), polls every
    /// sensor source the node has, and when a rule fires carries out its actions
    /// (checkpoint, drain, exec, log). Reloads the file on SIGHUP or when it changes; a
    /// bad file is rejected and the running rules stay. Logs go to stderr; set
    /// LIFEBOAT_LOG=debug for more.
    ///
    /// Endpoints (default 127.0.0.1:9847):
    ///   GET  /metrics               Prometheus / OpenMetrics
    ///   GET  /health                liveness
    ///   GET  /api/v1/status         sources, rules, recent events
    ///   GET  /api/v1/checkpoints    images in the store
    ///   POST /api/v1/checkpoint     {"pid": N} with Authorization: Bearer TOKEN
    ///
    /// Example: lifeboat agent --config /etc/lifeboat/lifeboat.toml
    #[command(verbatim_doc_comment)]
    Agent(AgentArgs),
    /// Show every fault-precursor reading this node offers, and which sources are absent.
    Sensors(SensorsArgs),
    /// Check trigger rules, and backtest them on recorded traces.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check that this kernel offers everything the engine needs (like `criu check`).
    ///
    /// Each feature is required (without it nothing is checkpointed or restarted) or
    /// optional (lifeboat works without it, at the cost it names). Exits 0 when every
    /// required feature is there; each missing one says what it costs and how to get it.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the completion script of SHELL on stdout (for packaging).
    ///
    /// bash: lifeboat completions bash > /usr/share/bash-completion/completions/lifeboat
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write a man page per command into DIR (lifeboat.1, lifeboat-checkpoint.1, ...),
    /// for packaging.
    #[command(hide = true)]
    Manpages {
        /// Directory to write them into (created if missing).
        dir: PathBuf,
    },
}

/// Options of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print JSON instead of text (everything, whatever the other options).
    #[arg(long)]
    pub json: bool,
    /// Also list every memory region.
    #[arg(long)]
    pub regions: bool,
    /// List everything: every region, thread, descriptor and section.
    #[arg(long)]
    pub all: bool,
    /// Context file.
    pub file: PathBuf,
}

/// Options of `checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Context file to write [default: context.PID in the current directory].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Let the process continue after the checkpoint (default).
    #[arg(long, group = "after")]
    pub run: bool,
    /// Leave the process stopped (SIGSTOP) after the checkpoint.
    #[arg(long, group = "after")]
    pub stop: bool,
    /// Send SIGTERM to the process after the checkpoint.
    #[arg(long, group = "after")]
    pub term: bool,
    /// Kill the process (SIGKILL) after the checkpoint, before it runs again.
    #[arg(long, group = "after")]
    pub kill: bool,
    /// Compress memory pages and file contents with zstd (smaller, slower).
    #[arg(long)]
    pub compress: bool,
    /// Save only this process [default, except for jobs started with `lifeboat run`].
    #[arg(long = "pid", group = "scope")]
    pub scope_pid: bool,
    /// Save the process and all its descendants, with the pipes and shared memory
    /// between them [default for jobs started with `lifeboat run`].
    #[arg(long, group = "scope")]
    pub tree: bool,
    /// Save every process of process group ID (the ID is given instead of a PID).
    #[arg(long, group = "scope")]
    pub pgid: bool,
    /// Save every process of session ID (the ID is given instead of a PID).
    #[arg(long, group = "scope")]
    pub sid: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Process to save (a process group ID with --pgid, a session ID with --sid).
    #[arg(value_name = "ID")]
    pub pid: i32,
}

impl CheckpointArgs {
    /// What happens to the processes once they are saved (`--run` by default).
    pub fn after(&self) -> After {
        if self.stop {
            After::Stop
        } else if self.term {
            After::Term
        } else if self.kill {
            After::Kill
        } else {
            After::Run
        }
    }
}

/// Options of `restart`.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Give the process a new PID instead of its original one.
    #[arg(long)]
    pub no_restore_pid: bool,
    /// Print the new PID and return at once instead of waiting for the process.
    #[arg(long)]
    pub detach: bool,
    /// Let the restored process run (default).
    #[arg(long, group = "after")]
    pub run: bool,
    /// Leave the restored process stopped (SIGSTOP); continue it with `kill -CONT`.
    #[arg(long, group = "after")]
    pub stop: bool,
    /// Kill the restored process right away (checks that an image restores).
    #[arg(long, group = "after")]
    pub kill: bool,
    /// Print nothing but errors and warnings.
    #[arg(short, long)]
    pub quiet: bool,
    /// Context file.
    pub file: PathBuf,
}

impl RestartArgs {
    /// What happens to the restored processes (`--run` by default).
    pub fn after(&self) -> After {
        if self.stop {
            After::Stop
        } else if self.kill {
            After::Kill
        } else {
            After::Run
        }
    }
}

/// Where the package installs the configuration, and where `agent` looks by default.
pub const DEFAULT_CONFIG: &str = "/etc/lifeboat/lifeboat.toml";

/// Options of `agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file: `[agent]` settings and the rules.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Validate the configuration as the agent would (the whole file, as `rules check`
    /// does), read every sensor source once, say which rules can fire on this node, and
    /// exit: 0 if the file is good, 1 if not.
    #[arg(long)]
    pub check: bool,
    /// Treat warnings in the configuration as errors (with --check, or at start).
    #[arg(long)]
    pub strict: bool,
    /// Also append every reading to FILE as JSON Lines (replay it with `lifeboat rules test`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Read the sensors' sysfs, procfs and /var files under DIR instead of the configured
    /// root (processes to checkpoint are always the host's).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Listen on ADDR instead of the configured address (port 0 picks a free port; the
    /// address is logged).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// Options of `sensors`.
#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Read sysfs, procfs and /var under this directory instead of the host's root
    /// (fixture trees, a container's view of the host).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `rules`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a configuration file; exit 0 if it is good, else print each error with
    /// its line.
    ///
    /// The whole file is checked as the agent reads it: the rules, [poll], [drain] and
    /// the [agent] settings. Errors and warnings are printed as FILE:LINE:COL: followed
    /// by the offending line. Warnings alone do not fail the check, unless --strict.
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Treat warnings as errors: exit 1 if there is any.
        #[arg(long)]
        strict: bool,
        /// Rules file (TOML).
        file: PathBuf,
    },
    /// Replay a recorded trace through the rules and print when each would fire and clear.
    ///
    /// With --expect, compare the events with an expectations file and exit 1 when they
    /// differ (like `promtool test rules`). Expectations are TOML:
    ///   quiet = ["cpu-overheat"]          # rules that must never fire
    ///   [[event]]                          # every firing/cleared event of the rule, in order
    ///   rule = "memory-uncorrected"
    ///   kind = "firing"                    # pending | firing | cleared
    ///   at = "2025-11-25T12:00:00Z"
    #[command(verbatim_doc_comment)]
    Test {
        /// Rules file (TOML).
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
        /// Trace of readings (JSON Lines, as `lifeboat agent --record` writes).
        #[arg(long, value_name = "TRACE")]
        trace: PathBuf,
        /// Expected events (TOML); exit 1 if the replay differs.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Print each event as one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}
