//! The agent's own settings: the `[agent]` table of the configuration file, and [`load`],
//! which reads the whole file once. The rest of the file (`[poll]`, `[drain]`,
//! `[[rule]]`) belongs to lifeboat-triggers, which parses the document and hands the
//! `[agent]` table over deserialized into [`Raw`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lifeboat_triggers::Config;
use serde::Deserialize;

/// `[agent]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    listen: Option<SocketAddr>,
    root: Option<PathBuf>,
    node: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    max_concurrent_checkpoints: Option<usize>,
    compress: Option<bool>,
    #[serde(default)]
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    dir: Option<PathBuf>,
    keep: Option<usize>,
    max_total_gib: Option<f64>,
    min_free_gib: Option<f64>,
}

/// Validated agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// HTTP listen address (`/metrics` and the API).
    pub listen: SocketAddr,
    /// Root under which sysfs, procfs and /var are read.
    pub root: PathBuf,
    /// This node's name in the store and in drain commands.
    pub node: String,
    /// Bearer token for `POST /api/v1/checkpoint`; `None` disables the endpoint.
    pub token: Option<String>,
    /// Checkpoints running at once.
    pub max_concurrent_checkpoints: usize,
    /// Compress images with zstd.
    pub compress: bool,
    /// Store directory.
    pub store_dir: PathBuf,
    /// Store retention.
    pub store: super::store::Limits,
}

/// Default listen address: loopback only; expose it deliberately.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9847";

/// Settings the command line gives instead of the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
}

/// Reads the configuration file once and validates all of it: the `[agent]` settings
/// (with `overrides` applied) and the rules. Every error names the file; the shape errors
/// of either part point at their line and column.
pub fn load(path: &Path, overrides: &Overrides) -> Result<(AgentConfig, Config)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let (rules, raw) =
        Config::with_agent_table::<Raw>(&text, path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut agent = AgentConfig::validate(raw, path)?;
    if let Some(root) = &overrides.root {
        agent.root.clone_from(root);
    }
    if let Some(listen) = overrides.listen {
        agent.listen = listen;
    }
    Ok((agent, rules))
}

impl AgentConfig {
    /// Validate the `[agent]` table of the file at `path` (the token file is read here,
    /// relative to it).
    pub fn validate(raw: Raw, path: &Path) -> Result<AgentConfig> {
        let token = match (raw.token, raw.token_file) {
            (Some(_), Some(_)) => {
                bail!(
                    "{}: [agent] sets both token and token_file; keep one",
                    path.display()
                )
            }
            (Some(t), None) => Some(t),
            (None, Some(f)) => {
                let f = if f.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(f)
                } else {
                    f
                };
                let t = std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read the API token file {}", f.display()))?;
                Some(t.trim().to_owned())
            }
            (None, None) => None,
        };
        if token.as_deref().is_some_and(|t| t.len() < 16) {
            bail!(
                "{}: the API token is shorter than 16 characters; use a random one (e.g. `openssl rand -hex 32`)",
                path.display()
            );
        }
        let gib = |v: Option<f64>, default: f64, what: &str| -> Result<u64> {
            let v = v.unwrap_or(default);
            if !(v >= 0.0 && v.is_finite()) {
                bail!(
                    "{}: [agent.store] {what} must be a non-negative number of GiB",
                    path.display()
                );
            }
            Ok((v * (1u64 << 30) as f64) as u64)
        };
        let max_concurrent = raw.max_concurrent_checkpoints.unwrap_or(2);
        if max_concurrent == 0 {
            bail!(
                "{}: [agent] max_concurrent_checkpoints must be at least 1",
                path.display()
            );
        }
        Ok(AgentConfig {
            listen: raw
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address")),
            root: raw.root.unwrap_or_else(|| PathBuf::from("/")),
            node: match raw.node {
                Some(n) => n,
                None => nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "localhost".into()),
            },
            token,
            max_concurrent_checkpoints: max_concurrent,
            compress: raw.compress.unwrap_or(false),
            store_dir: raw
                .store
                .dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/lifeboat/checkpoints")),
            store: super::store::Limits {
                keep: raw.store.keep.unwrap_or(3).max(1),
                max_total_bytes: gib(raw.store.max_total_gib, 0.0, "max_total_gib")?,
                min_free_bytes: gib(raw.store.min_free_gib, 1.0, "min_free_gib")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[agent]` settings of a file with this text, as [`load`] reads them.
    fn parse(text: &str, p: &Path) -> Result<AgentConfig> {
        let (_, raw) =
            Config::with_agent_table::<Raw>(text, p).map_err(|d| anyhow::anyhow!("{d}"))?;
        AgentConfig::validate(raw, p)
    }

    const RULE: &str = "[[rule]]\nname = \"x\"\nwhen = { source = \"host\", name = \"load1\", above = 9 }\n[[rule.action]]\ntype = \"log\"\n";

    #[test]
    fn defaults_and_overrides() {
        let p = Path::new("lifeboat.toml");
        let c = parse(RULE, p).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.store.keep, 3);
        assert_eq!(c.store.min_free_bytes, 1 << 30);
        let c = parse(
            "[agent]\nlisten = \"127.0.0.1:1\"\nnode = \"n1\"\n[agent.store]\ndir = \"/x\"\nkeep = 5\nmax_total_gib = 0.5\n",
            p,
        )
        .unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(c.store.keep, 5);
        assert_eq!(c.store.max_total_bytes, 1 << 29);
        assert_eq!(c.store_dir, PathBuf::from("/x"));
    }

    #[test]
    fn typos_point_at_the_line() {
        let p = Path::new("lifeboat.toml");
        let err = parse("[agent]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("lifeboat.toml:3:1:"), "{err}");
        assert!(err.contains("unknown field `lsiten`"), "{err}");
        assert!(err.contains("did you mean `listen`?"), "{err}");
    }
}
