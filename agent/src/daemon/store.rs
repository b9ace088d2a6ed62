//! The checkpoint store: where the agent's images go, how they are named, indexed and
//! pruned.
//!
//! Layout under the store directory (which may be a shared filesystem, so several nodes
//! can write to it):
//!
//! ```text
//! DIR/NODE/index.jsonl                     one JSON object per stored image, oldest first
//! DIR/NODE/GROUP/PID/20261125T093000Z.lbctx
//! ```
//!
//! GROUP is `job-ID` when the process belongs to a scheduler job, else its command name.
//! Retention: the newest `keep` images per process, and at most `max_total_bytes` per
//! node (oldest removed first). Before writing, the filesystem must have room for the
//! image plus `min_free_bytes`. A checkpoint that fails leaves no empty directory behind
//! ([`Store::abandon`]), and neither does retention.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Retention and space settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Images kept per process.
    pub keep: usize,
    /// Cap on the node's images in bytes (0: no cap).
    pub max_total_bytes: u64,
    /// Free space left on the filesystem after writing an image.
    pub min_free_bytes: u64,
}

/// One stored image, as recorded in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When the checkpoint was taken (RFC 3339, UTC).
    pub time: String,
    /// The process.
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// Scheduler job, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Rule that asked for it (or `api`).
    pub reason: String,
    /// Image path.
    pub path: PathBuf,
    /// Image size.
    pub bytes: u64,
    /// Checkpoint wall time.
    pub seconds: f64,
}

/// A node's part of the checkpoint store.
#[derive(Debug)]
pub struct Store {
    node_dir: PathBuf,
    limits: Limits,
    /// Held while directories are created or removed, so that a failed checkpoint
    /// removing its empty GROUP directory never races another one creating its PID
    /// directory inside it (never held across an `.await`).
    layout: Mutex<()>,
}

impl Store {
    /// The store for `node` under `dir` (created if missing).
    pub fn open(dir: &Path, node: &str, limits: Limits) -> Result<Store> {
        let node_dir = dir.join(sanitize(node));
        fs::create_dir_all(&node_dir)
            .with_context(|| format!("cannot create checkpoint store {}", node_dir.display()))?;
        Ok(Store {
            node_dir,
            limits,
            layout: Mutex::new(()),
        })
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        &self.node_dir
    }

    fn index_path(&self) -> PathBuf {
        self.node_dir.join("index.jsonl")
    }

    /// Where a new image of this process goes (directories created), after checking
    /// that `expected_bytes` fit with the configured free space to spare.
    pub fn prepare(
        &self,
        pid: i32,
        comm: &str,
        job: Option<&str>,
        now: SystemTime,
        expected_bytes: u64,
    ) -> Result<PathBuf> {
        let group = match job {
            Some(j) => format!("job-{}", sanitize(j)),
            None => sanitize(comm),
        };
        let dir = self.node_dir.join(group).join(pid.to_string());
        let layout = self.lock_layout();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let free = match free_bytes(&dir) {
            Ok(f) => f,
            Err(e) => {
                self.remove_empty_dirs(&dir, &layout);
                return Err(e);
            }
        };
        let needed = expected_bytes.saturating_add(self.limits.min_free_bytes);
        if free < needed {
            self.remove_empty_dirs(&dir, &layout);
            bail!(
                "not enough space in {}: {} MiB free, the image needs about {} MiB and {} MiB must stay free",
                dir.display(),
                free >> 20,
                expected_bytes >> 20,
                self.limits.min_free_bytes >> 20
            );
        }
        let mut path = dir.join(format!("{}.lbctx", stamp(now)));
        // Two checkpoints of one process within a second get distinct names.
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = dir.join(format!("{}-{n}.lbctx", stamp(now)));
        }
        Ok(path)
    }

    /// A checkpoint into `image` (a path [`Store::prepare`] gave) failed: remove the
    /// directories made for it if they are empty. Files are never removed here: the
    /// engine removes its own temporary file, and an image written but not indexed stays.
    pub fn abandon(&self, image: &Path) {
        if let Some(dir) = image.parent() {
            let layout = self.lock_layout();
            self.remove_empty_dirs(dir, &layout);
        }
    }

    fn lock_layout(&self) -> MutexGuard<'_, ()> {
        self.layout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove `dir` and then its parents while they are empty, up to (not including) the
    /// node's directory. Needs the layout lock (the guard proves it is held).
    fn remove_empty_dirs(&self, dir: &Path, _layout: &MutexGuard<'_, ()>) {
        let mut dir = Some(dir);
        while let Some(d) = dir.filter(|d| d.starts_with(&self.node_dir) && *d != self.node_dir) {
            // Fails (and stops) on a directory that is not empty.
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Record a written image and apply retention; returns the paths removed.
    pub fn commit(&self, entry: Entry) -> Result<Vec<PathBuf>> {
        let mut entries = self.entries()?;
        entries.push(entry.clone());
        let mut removed = Vec::new();

        // The newest `keep` per process.
        let same: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.pid == entry.pid && e.comm == entry.comm)
            .map(|(i, _)| i)
            .collect();
        let excess = same.len().saturating_sub(self.limits.keep.max(1));
        let mut drop: Vec<usize> = same[..excess].to_vec();

        // The node's total.
        if self.limits.max_total_bytes > 0 {
            let mut total: u64 = entries
                .iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, e)| e.bytes)
                .sum();
            for (i, e) in entries.iter().enumerate() {
                // Never the image just written: it is the one the node may need.
                if total <= self.limits.max_total_bytes || i + 1 == entries.len() {
                    break;
                }
                if !drop.contains(&i) {
                    drop.push(i);
                    total = total.saturating_sub(e.bytes);
                }
            }
        }
        drop.sort_unstable();
        for &i in drop.iter().rev() {
            let e = entries.remove(i);
            match fs::remove_file(&e.path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("cannot remove old image {}", e.path.display()));
                }
            }
            if let Some(parent) = e.path.parent() {
                // Empty per-process and group directories go too; non-empty ones stay.
                let layout = self.lock_layout();
                self.remove_empty_dirs(parent, &layout);
            }
            removed.push(e.path);
        }
        self.write_index(&entries)?;
        removed.reverse();
        Ok(removed)
    }

    /// Every stored image, oldest first. Lines that do not parse are skipped (the index
    /// may be shared and hand-edited); images whose file is gone are left out.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let path = self.index_path();
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                if e.path.exists() {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Bytes and count of the stored images.
    pub fn usage(&self) -> Result<(u64, usize)> {
        let entries = self.entries()?;
        Ok((entries.iter().map(|e| e.bytes).sum(), entries.len()))
    }

    fn write_index(&self, entries: &[Entry]) -> Result<()> {
        let path = self.index_path();
        let tmp = self.node_dir.join(".index.jsonl.tmp");
        let mut text = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut text, e).context("encoding an index entry")?;
            text.push(b'\n');
        }
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("cannot stat the filesystem of {}", dir.display()))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// `20261125T093000Z` for a file name.
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// A path component made of the name's safe characters.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lifeboat-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn write(store: &Store, pid: i32, secs: u64, bytes: u64) -> Entry {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        let path = store.prepare(pid, "app", Some("77"), t, bytes).unwrap();
        fs::write(&path, vec![0u8; bytes as usize]).unwrap();
        Entry {
            time: humantime::format_rfc3339_seconds(t).to_string(),
            pid,
            comm: "app".into(),
            job: Some("77".into()),
            reason: "test".into(),
            path,
            bytes,
            seconds: 0.1,
        }
    }

    #[test]
    fn layout_and_keep_per_process() {
        let dir = temp("keep");
        let limits = Limits {
            keep: 2,
            max_total_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "node/1", limits).unwrap();
        let mut paths = Vec::new();
        for s in 0..3 {
            let e = write(&store, 10, 1_764_061_200 + s, 100);
            paths.push(e.path.clone());
            store.commit(e).unwrap();
        }
        let other = write(&store, 11, 1_764_061_300, 100);
        store.commit(other).unwrap();

        assert_eq!(
            paths[0],
            dir.join("node_1/job-77/10/20251125T090000Z.lbctx")
        );
        assert!(
            !paths[0].exists(),
            "the oldest of three is pruned with keep = 2"
        );
        assert!(paths[1].exists() && paths[2].exists());
        let entries = store.entries().unwrap();
        assert_eq!(
            entries.iter().map(|e| e.pid).collect::<Vec<_>>(),
            vec![10, 10, 11]
        );
        assert_eq!(store.usage().unwrap(), (300, 3));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn total_cap_removes_oldest_but_never_the_newest() {
        let dir = temp("cap");
        let limits = Limits {
            keep: 10,
            max_total_bytes: 250,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "n", limits).unwrap();
        let a = write(&store, 1, 1000, 100);
        let b = write(&store, 2, 1001, 100);
        let c = write(&store, 3, 1002, 300);
        store.commit(a.clone()).unwrap();
        store.commit(b.clone()).unwrap();
        let removed = store.commit(c.clone()).unwrap();
        assert_eq!(removed, vec![a.path.clone(), b.path.clone()]);
        assert!(c.path.exists());
        assert_eq!(store.usage().unwrap(), (300, 1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_when_space_is_short() {
        let dir = temp("space");
        let limits = Limits {
            keep: 1,
            max_total_bytes: 0,
            min_free_bytes: u64::MAX / 2,
        };
        let store = Store::open(&dir, "n", limits).unwrap();
        let err = store
            .prepare(5, "app", None, SystemTime::now(), 1 << 20)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not enough space"),
            "got: {err:#}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Nothing of a failed checkpoint stays in the store: not the directories made for
    /// its image (issue 11), not those of a checkpoint refused for lack of space.
    #[test]
    fn failed_checkpoints_leave_no_empty_directories() {
        let dir = temp("abandon");
        let limits = Limits {
            keep: 1,
            max_total_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "n", limits.clone()).unwrap();
        let kept = write(&store, 7, 1000, 10);
        store.commit(kept.clone()).unwrap();
        let failed = store
            .prepare(8, "app", Some("77"), SystemTime::now(), 0)
            .unwrap();
        let alone = store
            .prepare(9, "other", None, SystemTime::now(), 0)
            .unwrap();
        store.abandon(&failed);
        store.abandon(&alone);
        assert!(kept.path.exists(), "the group's other image stays");
        assert!(!dir.join("n/job-77/8").exists());
        assert!(!dir.join("n/other").exists(), "an emptied group goes too");
        assert!(dir.join("n").is_dir(), "the node's directory stays");

        let full = Store::open(
            &dir,
            "n",
            Limits {
                min_free_bytes: u64::MAX / 2,
                ..limits
            },
        )
        .unwrap();
        assert!(full.prepare(10, "big", None, SystemTime::now(), 0).is_err());
        assert!(!dir.join("n/big").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sanitize_names() {
        assert_eq!(sanitize("python3"), "python3");
        assert_eq!(sanitize("../etc"), ".._etc");
        assert_eq!(sanitize(".."), "_");
        assert_eq!(sanitize("a b/c"), "a_b_c");
    }
}
