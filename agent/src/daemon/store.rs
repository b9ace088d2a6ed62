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
//!
//! Images at rest hold process memory and its secrets: each image belongs to the user
//! whose process it holds (owner UID, mode 0600, [`Store::hand_over`]), in a PID
//! directory of that user with mode 0700, so the job's user can restart it and nobody
//! else can read it; NODE and GROUP stay root's. When a PID comes back for another user,
//! that user's images go to `PID-uUID` beside the first one's. The partial files of
//! killed checkpoints are removed at start and at every checkpoint ([`Store::sweep`]).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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

    /// Where a new image of this process, owned by `owner` (its real UID), goes
    /// (directories created: the PID directory is the owner's, mode 0700), after
    /// checking that `expected_bytes` fit with the configured free space to spare.
    pub fn prepare(
        &self,
        pid: i32,
        comm: &str,
        job: Option<&str>,
        now: SystemTime,
        expected_bytes: u64,
        owner: u32,
    ) -> Result<PathBuf> {
        let group = match job {
            Some(j) => format!("job-{}", sanitize(j)),
            None => sanitize(comm),
        };
        let group = self.node_dir.join(group);
        let layout = self.lock_layout();
        let _ = self.sweep_locked(&layout);
        fs::create_dir_all(&group).with_context(|| format!("cannot create {}", group.display()))?;
        let dir = match owned_dir(&group.join(pid.to_string()), owner) {
            Ok(d) => d,
            Err(e) => {
                self.remove_empty_dirs(&group, &layout);
                return Err(e);
            }
        };
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

    /// Give a written image to `owner` (the real UID of the process it holds): its
    /// owner becomes that user (mode 0600, as the engine created it). `lchown`, so a
    /// name swapped for a symbolic link in the owner's directory changes only the link.
    pub fn hand_over(&self, image: &Path, owner: u32) -> Result<()> {
        if nix::unistd::geteuid().as_raw() == owner {
            return Ok(());
        }
        std::os::unix::fs::lchown(image, Some(owner), None)
            .with_context(|| format!("cannot give {} to UID {owner}", image.display()))
    }

    /// Remove the partial files of killed checkpoints (the engine's `.NAME.partial.PID`
    /// left alone for a minute, whose writer is gone) and the directories they leave
    /// empty. Returns the files removed and their bytes.
    pub fn sweep(&self) -> (usize, u64) {
        let layout = self.lock_layout();
        self.sweep_locked(&layout)
    }

    fn sweep_locked(&self, layout: &MutexGuard<'_, ()>) -> (usize, u64) {
        let mut removed = (0, 0);
        let subdirs = |d: &Path| -> Vec<PathBuf> {
            fs::read_dir(d)
                .map(|it| {
                    it.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default()
        };
        for group in subdirs(&self.node_dir) {
            for pid_dir in subdirs(&group) {
                let (n, bytes) = lifeboat_engine::image::container::sweep_stale_partials(
                    &pid_dir,
                    lifeboat_engine::image::container::STALE_AFTER,
                );
                if n > 0 {
                    removed.0 += n;
                    removed.1 += bytes;
                    self.remove_empty_dirs(&pid_dir, layout);
                }
            }
        }
        removed
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

/// The directory `want`, or `want-uOWNER` when `want` belongs to another user (a PID
/// reused), created if missing with mode 0700 and given to `owner`. Refuses anything
/// there that is not a directory (a symbolic link included).
fn owned_dir(want: &Path, owner: u32) -> Result<PathBuf> {
    let mut name = want.as_os_str().to_owned();
    name.push(format!("-u{owner}"));
    for dir in [want.to_path_buf(), PathBuf::from(name)] {
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() && md.uid() == owner => return Ok(dir),
            Ok(md) if md.is_dir() => continue,
            Ok(_) => bail!("{} is not a directory; the store is damaged", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                if nix::unistd::geteuid().as_raw() != owner {
                    std::os::unix::fs::lchown(&dir, Some(owner), None)
                        .with_context(|| format!("cannot give {} to UID {owner}", dir.display()))?;
                }
                return Ok(dir);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", dir.display())),
        }
    }
    bail!(
        "{} and its -u{owner} twin belong to other users; the store is damaged",
        want.display()
    )
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
        let path = store.prepare(pid, "app", Some("77"), t, bytes, 0).unwrap();
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
            .prepare(5, "app", None, SystemTime::now(), 1 << 20, 0)
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
            .prepare(8, "app", Some("77"), SystemTime::now(), 0, 0)
            .unwrap();
        let alone = store
            .prepare(9, "other", None, SystemTime::now(), 0, 0)
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
        assert!(
            full.prepare(10, "big", None, SystemTime::now(), 0, 0)
                .is_err()
        );
        assert!(!dir.join("n/big").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A user's image is that user's alone: PID directory 0700 and the image given to
    /// the process's UID; a PID reused by another user gets a directory of its own.
    #[test]
    fn images_belong_to_the_processes_user() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test gives files to other users: run it as root"
        );
        let dir = temp("owner");
        let limits = Limits {
            keep: 3,
            max_total_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "n", limits).unwrap();
        let image = store
            .prepare(40, "app", None, SystemTime::now(), 0, 4321)
            .unwrap();
        let pid_dir = image.parent().unwrap();
        let md = fs::metadata(pid_dir).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (4321, 0o700));
        // The group directory stays root's: a user cannot swap their directory for a link.
        assert_eq!(fs::metadata(pid_dir.parent().unwrap()).unwrap().uid(), 0);
        fs::write(&image, b"image").unwrap();
        store.hand_over(&image, 4321).unwrap();
        assert_eq!(fs::metadata(&image).unwrap().uid(), 4321);

        let reused = store
            .prepare(40, "app", None, SystemTime::now(), 0, 4322)
            .unwrap();
        assert_eq!(reused.parent().unwrap(), dir.join("n/app/40-u4322"));
        assert_eq!(fs::metadata(reused.parent().unwrap()).unwrap().uid(), 4322);
        // The first user's directory again for the first user.
        let again = store
            .prepare(40, "app", None, SystemTime::now(), 0, 4321)
            .unwrap();
        assert_eq!(again.parent().unwrap(), pid_dir);

        // A symbolic link where a PID directory belongs is refused, never followed.
        std::os::unix::fs::symlink("/etc", dir.join("n/app/41")).unwrap();
        let err = store
            .prepare(41, "app", None, SystemTime::now(), 0, 4321)
            .unwrap_err();
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The partial files of killed checkpoints go at start and at the next checkpoint;
    /// a fresh one (a writer on another node) and a file that is not an image stay.
    #[test]
    fn partial_files_of_killed_checkpoints_are_swept() {
        let dir = temp("sweep");
        let limits = Limits {
            keep: 3,
            max_total_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::open(&dir, "n", limits).unwrap();
        let image = store
            .prepare(50, "app", None, SystemTime::now(), 0, 0)
            .unwrap();
        let pid_dir = image.parent().unwrap().to_owned();
        let old = SystemTime::now() - Duration::from_secs(600);
        // PID 4194304 is above the kernel's PID_MAX_LIMIT: no live process has it.
        let partial = |name: &str, content: &[u8], when: SystemTime| {
            let p = pid_dir.join(format!(".{name}.lbctx.partial.4194304"));
            fs::write(&p, content).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(when)
                .unwrap();
            p
        };
        let mut magic = lifeboat_engine::image::container::MAGIC.to_vec();
        magic.extend_from_slice(&[0; 1000]);
        let stale = partial("a", &magic, old);
        let fresh = partial("b", &magic, SystemTime::now());
        let foreign = partial("c", b"not an image at all", old);
        assert_eq!(store.sweep(), (1, 1008));
        assert!(!stale.exists() && fresh.exists() && foreign.exists());
        // A directory left with nothing goes too.
        fs::remove_file(&fresh).unwrap();
        fs::remove_file(&foreign).unwrap();
        partial("d", b"", old);
        assert_eq!(store.sweep(), (1, 0));
        assert!(!pid_dir.exists());
        // prepare sweeps the whole node.
        let other = store
            .prepare(51, "app", None, SystemTime::now(), 0, 0)
            .unwrap();
        fs::create_dir_all(&pid_dir).unwrap();
        let stale = partial("e", &magic, old);
        store
            .prepare(52, "app", None, SystemTime::now(), 0, 0)
            .unwrap();
        assert!(!stale.exists());
        drop(other);
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
