//! A restart never hands out root and never hangs (issue 11, items 2, 4 and part of 6).
//!
//! Each test crafts an image the way an attacker or a damaged disk would (a real image
//! read with `image::Reader`, fields changed, written back with `image::Writer`, chowned
//! to an ordinary user) and checks what root's `lifeboat restart` does with it: every
//! UID, GID and group of a user's image is the user's own; files, mappings, directories
//! and the working directory are reached with the user's permissions only; the owner
//! checked is the owner of the file actually read; and a FIFO in a file's place, an
//! overfull pipe, an extra thread or `restart --kill` of a threaded image end with a clear
//! message instead of a hang. Every command runs under a deadline, so a regression fails
//! the test instead of hanging CI.
//!
//! Needs root (processes of other users with setpriv, restored PIDs); fails with a reason
//! otherwise, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

mod common;

use common::*;
use lifeboat_engine::image::container::{
    END_KIND, FILE_HEADER_LEN, FLAG_ZSTD, ImageReader, ImageWriter, SECTION_HEADER_LEN,
};
use lifeboat_engine::image::{Reader, kind};
use lifeboat_engine::model::{FileKind, Image, RegionKind};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const NOBODY: u32 = 65534;
/// The `shadow` group of Debian.
const SHADOW: u32 = 42;

/// Root, setpriv and Debian's `shadow` group, or the test fails saying which is missing.
fn require_root() {
    common::require_root("the restart safety tests need root: they restart users' images as root");
    require_tool(
        SETPRIV,
        "the restart safety tests need setpriv (util-linux) to run processes as other users",
    );
    let shadow = fs::read_to_string("/etc/group").unwrap_or_default();
    assert!(
        shadow.lines().any(|l| l.starts_with("shadow:x:42:")),
        "the restart safety tests need Debian's `shadow` group (GID 42)"
    );
}

/// Runs `lifeboat ARGS` to its end, failing the test if it takes longer than [`TIMEOUT`]
/// (a healthy command needs well under a second): it is killed first, so a hang is
/// reported, not waited out.
fn lifeboat(args: &[&str]) -> CliResult {
    lifeboat_within(&workspace(), args, TIMEOUT)
}

/// Starts `cmd` (standard streams on /dev/null; killed and reaped when dropped) and waits
/// until `ready` holds for its PID.
fn start(cmd: Command, what: &str, ready: impl Fn(i32) -> bool) -> Background {
    let target = Background::quiet(cmd, what);
    let pid = target.pid();
    wait_until(&format!("{what} (PID {pid}) is ready"), || ready(pid));
    target
}

/// `checkpoint --kill` of `target` into `image` (plus `extra` options), which must
/// succeed; the process is reaped.
fn checkpoint_kill(mut target: Background, image: &Path, extra: &[&str]) {
    let pid = target.pid().to_string();
    let mut args = vec!["checkpoint", "--kill", "-f", path_str(image)];
    args.extend_from_slice(extra);
    args.push(&pid);
    lifeboat(&args).assert_success("checkpoint --kill");
    target.wait();
}

/// What a root `restart --no-restore-pid --detach` of `image` did: `Ok(pid)` of a
/// restored process (killed again when the guard drops) or `Err(stderr)`.
fn root_restart(image: &Path) -> Result<Restored, String> {
    restart_detached(image, &["--no-restore-pid"])
}

/// `restart --detach` of `image` with `args`, as [`root_restart`].
fn restart_detached(image: &Path, args: &[&str]) -> Result<Restored, String> {
    let mut all = vec!["restart", "--detach"];
    all.extend_from_slice(args);
    all.push(path_str(image));
    let out = lifeboat(&all);
    if out.status.success() {
        let pid = out.stdout.trim().parse().unwrap();
        Ok(Restored(pid))
    } else {
        assert!(out.stdout.is_empty(), "a failed restart printed a PID");
        Err(out.stderr)
    }
}

/// A restored process, killed when dropped.
struct Restored(i32);

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// `sh -c SCRIPT` run by nobody in `dir`, ready once it has exec'd `sleep` holding `fd`.
fn nobody_sleeper(dir: &Path, script: &str, fd: i32) -> Background {
    let mut c = as_user(NOBODY);
    c.current_dir(dir).args(["sh", "-c", script]);
    start(c, "nobody's sleep", |pid| runs_with_fd(pid, "sleep", fd))
}

/// A file of `len` bytes owned by `uid`, mode `mode`.
fn file(path: &Path, len: usize, uid: u32, mode: u32) {
    fs::write(path, vec![b's'; len]).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Item 2: credentials and what a user's image may open

/// Root restarting a user's image: every UID must be the owner's, every GID and group
/// one of the owner's groups; anything else is refused naming the field, and nothing
/// runs. Before: only the real UID was compared, so `[65534, 0, 0, 0]` ran with euid 0.
#[test]
fn root_gives_a_users_image_only_that_users_ids() {
    require_root();
    let dir = shared_scratch("ids");
    let image = dir.join("ctx");
    checkpoint_kill(nobody_sleeper(&dir, "exec sleep 60", 0), &image, &[]);

    // The honest image runs as its owner, every ID of it.
    let p = root_restart(&image).unwrap();
    assert_eq!(status_field(p.0, "Uid"), "65534 65534 65534 65534");
    assert_eq!(status_field(p.0, "Gid"), "65534 65534 65534 65534");
    assert_eq!(status_field(p.0, "Groups"), "");
    drop(p);

    const N: u32 = NOBODY;
    type Edit = fn(&mut Image);
    let forgeries: [(&str, Edit, &str); 8] = [
        (
            "euid",
            |i| i.process.creds.uid = [N, 0, 0, 0],
            "effective UID 0",
        ),
        (
            "suid",
            |i| i.process.creds.uid = [N, N, 0, N],
            "saved UID 0",
        ),
        (
            "fsuid",
            |i| i.process.creds.uid = [N, N, N, 0],
            "filesystem UID 0",
        ),
        (
            "gid",
            |i| i.process.creds.gid = [0, N, N, N],
            "claims GID 0",
        ),
        (
            "egid",
            |i| i.process.creds.gid = [N, 0, N, N],
            "effective GID 0",
        ),
        (
            "fsgid",
            |i| i.process.creds.gid = [N, N, N, 0],
            "filesystem GID 0",
        ),
        (
            "root-group",
            |i| i.process.creds.groups = vec![0],
            "supplementary group 0",
        ),
        (
            "shadow",
            |i| i.process.creds.groups = vec![N, SHADOW],
            "supplementary group 42",
        ),
    ];
    let mut raised = Vec::new();
    for (name, edit, expect) in forgeries {
        let forged = dir.join(name);
        forge(&image, &forged, edit);
        chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
        match root_restart(&forged) {
            Ok(p) => raised.push(format!(
                "{name}: restored with Uid {} Gid {} Groups {}",
                status_field(p.0, "Uid"),
                status_field(p.0, "Gid"),
                status_field(p.0, "Groups")
            )),
            Err(e) => {
                assert!(
                    e.contains("owned by UID 65534") && e.contains(expect),
                    "{name}: the refusal does not name `{expect}`: {e}"
                );
            }
        }
    }
    assert!(raised.is_empty(), "forged IDs were restored: {raised:#?}");

    // A group the owner is in (its primary group) is the owner's to keep.
    let forged = dir.join("own-group");
    forge(&image, &forged, |i| i.process.creds.groups = vec![NOBODY]);
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    let p = root_restart(&forged).unwrap();
    assert_eq!(status_field(p.0, "Groups"), "65534");
}

/// Root restarting a user's image opens its files, mappings, directories and working
/// directory with the user's permissions: a path rewritten to /etc/shadow, to a root-only
/// file, to /root, or through /proc/PID/root, is refused. Before: all were opened as root
/// before the credentials dropped, handing the restored process a descriptor or a shared
/// mapping of them.
#[test]
fn a_users_image_opens_only_what_the_user_may() {
    require_root();
    let dir = shared_scratch("opens");
    file(&dir.join("readable"), 4096, NOBODY, 0o644);
    file(&dir.join("writable"), 4096, NOBODY, 0o644);
    file(&dir.join("shared"), 4096, NOBODY, 0o644);
    let secret = dir.join("root-only");
    file(&secret, 4096, 0, 0o600);
    let secret_s = secret.to_str().unwrap().to_owned();

    let files = dir.join("files.ctx");
    checkpoint_kill(
        nobody_sleeper(&dir, "exec sleep 60 3<readable 4>>writable 5<.", 5),
        &files,
        &[],
    );
    let mapping = dir.join("mapping.ctx");
    {
        let mut c = as_user(NOBODY);
        c.current_dir(&dir).args([
            "/usr/bin/python3",
            "-c",
            "import mmap, time\n\
             f = open('shared', 'r+b')\n\
             m = mmap.mmap(f.fileno(), 4096)\n\
             f.close()\n\
             open('mapped', 'w').close()\n\
             time.sleep(60)",
        ]);
        let mapped = dir.join("mapped");
        let target = start(c, "nobody's python3 with a mapping", |_| mapped.exists());
        checkpoint_kill(target, &mapping, &[]);
    }

    // The honest images restart as root (with the owner's permissions, which suffice).
    let p = root_restart(&files).unwrap();
    for (fd, name) in [(3, "readable"), (4, "writable")] {
        let target = fs::read_link(format!("/proc/{}/fd/{fd}", p.0)).unwrap();
        assert_eq!(target, dir.join(name));
    }
    drop(p);
    drop(root_restart(&mapping).unwrap());

    let ends_with = |path: &str, name: &str| path.ends_with(&format!("/{name}"));
    let retarget = |name: &'static str, to: String| {
        move |i: &mut Image| {
            for f in &mut i.files {
                match &mut f.kind {
                    FileKind::Regular { path, .. } | FileKind::Directory { path }
                        if ends_with(path, name) =>
                    {
                        *path = to.clone();
                    }
                    _ => {}
                }
            }
        }
    };
    let mut opened = Vec::new();
    let mut check = |name: &str, src: &Path, edit: &dyn Fn(&mut Image), expect: &str| {
        let forged = dir.join(format!("{name}.forged"));
        forge(src, &forged, edit);
        chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
        match root_restart(&forged) {
            Ok(p) => opened.push(format!("{name}: restored as PID {}", p.0)),
            Err(e) => assert!(
                e.contains(expect) && e.contains("Permission denied"),
                "{name}: the refusal does not name `{expect}`: {e}"
            ),
        }
    };
    check(
        "read-shadow",
        &files,
        &retarget("readable", "/etc/shadow".into()),
        "cannot open /etc/shadow",
    );
    check(
        "write-root-only",
        &files,
        &retarget("writable", secret_s.clone()),
        "root-only",
    );
    check(
        "list-root",
        &files,
        &|i: &mut Image| {
            for f in &mut i.files {
                if let FileKind::Directory { path } = &mut f.kind {
                    *path = "/root".into();
                }
            }
        },
        "cannot open /root",
    );
    check(
        "cwd-root",
        &files,
        &|i: &mut Image| i.process.cwd = "/root".into(),
        "cannot enter its working directory /root",
    );
    let secret_map = secret_s.clone();
    check(
        "map-root-only",
        &mapping,
        &move |i: &mut Image| {
            for r in &mut i.regions {
                if let RegionKind::File { path, .. } = &mut r.kind
                    && ends_with(path, "shared")
                {
                    *path = secret_map.clone();
                }
            }
        },
        "root-only",
    );
    // A file of the process's own /proc directory is reopened inside the stub, which is
    // still root: a path through its `root` link is refused, whoever owns the image.
    let pid = Reader::open(&files).unwrap().image().process.pid;
    let through = dir.join("proc-root.forged");
    forge(
        &files,
        &through,
        retarget("readable", format!("/proc/{pid}/root/etc/shadow")),
    );
    chown(&through, Some(NOBODY), Some(NOBODY)).unwrap();
    match root_restart(&through) {
        Ok(p) => opened.push(format!("proc-root: restored as PID {}", p.0)),
        Err(e) => assert!(e.contains("a path through one of its links"), "{e}"),
    }
    assert!(
        opened.is_empty(),
        "a user's image reached what the user cannot: {opened:#?}"
    );
}

/// The owner checked is the owner of the file read: a symlink flipped between a user's
/// image that claims UID 0 and a root-owned file never makes root restore UID 0. Before:
/// the owner was read with `metadata(path)` after the image was read, and the race was won.
#[test]
fn the_owner_checked_is_the_owner_of_the_file_read() {
    require_root();
    let dir = shared_scratch("race");
    let image = dir.join("ctx");
    checkpoint_kill(nobody_sleeper(&dir, "exec sleep 60", 0), &image, &[]);
    let forged = dir.join("forged");
    forge(&image, &forged, |i| {
        i.process.creds.uid = [0; 4];
        i.process.creds.gid = [0; 4];
    });
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    // A root-owned file that is not an image.
    let decoy = dir.join("decoy");
    file(&decoy, 4096, 0, 0o644);

    let link = dir.join("link");
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir, link) = (Arc::clone(&stop), dir.clone(), link.clone());
        let (a, b) = (forged.clone(), decoy.clone());
        std::thread::spawn(move || {
            let tmp = dir.join("link.tmp");
            while !stop.load(Ordering::Relaxed) {
                for target in [&a, &b] {
                    let _ = fs::remove_file(&tmp);
                    symlink(target, &tmp).unwrap();
                    fs::rename(&tmp, &link).unwrap();
                }
            }
        })
    };
    wait_until("the symlink exists", || link.exists());
    let mut won = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        match root_restart(&link) {
            Ok(p) => won.push(format!("PID {} with Uid {}", p.0, status_field(p.0, "Uid"))),
            Err(e) => outcomes.push(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(won.is_empty(), "the race was won: {won:#?}");
    for e in &outcomes {
        assert!(
            e.contains("owned by UID 65534 but claims UID 0") || e.contains("not a lifeboat"),
            "unexpected refusal: {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Item 4: restart never hangs

/// A Python process with three more threads, checkpointed with `--kill` into `image`
/// and reaped; returns its TIDs, the leader first.
fn threaded_image(image: &Path) -> Vec<i32> {
    let mut c = Command::new("/usr/bin/python3");
    c.args([
        "-c",
        "import threading, time\n\
         for _ in range(3):\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
         time.sleep(60)",
    ]);
    let target = start(c, "a python3 with four threads", |pid| {
        thread_count(pid) == 4
    });
    let pid = target.pid();
    let mut tids = tids_of(pid);
    assert_eq!(tids.len(), 4, "the threads of PID {pid}: {tids:?}");
    tids.sort_unstable_by_key(|&t| (t != pid, t));
    checkpoint_kill(target, image, &[]);
    wait_gone(pid, "the checkpointed python3");
    tids
}

fn assert_gone(tids: &[i32], what: &str) {
    for &tid in tids {
        assert!(
            !pid_exists(tid),
            "{what}: thread {tid} is left behind: {}",
            status_field(tid, "State")
        );
    }
}

/// `restart --kill` of a multi-threaded image returns, and leaves no thread behind.
/// Before: the traced threads stayed zombies nobody reaped and the restart hung.
#[test]
fn restart_kill_of_a_threaded_image_returns() {
    require_root();
    let dir = shared_scratch("kill-threads");
    let image = dir.join("ctx");
    let tids = threaded_image(&image);
    lifeboat(&["restart", "--kill", path_str(&image)])
        .assert_success("restart --kill of a threaded image");
    assert_gone(&tids, "restart --kill");
}

/// A FIFO where the image had a regular file, an executable or a mapped file is refused
/// at once. Before: it was opened without O_NONBLOCK and the restart waited forever for a
/// writer.
#[test]
fn a_fifo_in_place_of_a_file_is_refused() {
    require_root();
    let dir = shared_scratch("fifo");
    file(&dir.join("readable"), 4096, 0, 0o644);
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let fifo_s = fifo.to_str().unwrap().to_owned();
    let image = dir.join("ctx");
    let mut c = Command::new("sh");
    c.current_dir(&dir).args(["-c", "exec sleep 60 3<readable"]);
    let target = start(c, "a sleep holding a file", |pid| {
        runs_with_fd(pid, "sleep", 3)
    });
    checkpoint_kill(target, &image, &[]);

    type Edit<'a> = Box<dyn Fn(&mut Image) + 'a>;
    let cases: [(&str, Edit); 3] = [
        (
            "file",
            Box::new(|i: &mut Image| {
                for f in &mut i.files {
                    if let FileKind::Regular { path, .. } = &mut f.kind {
                        *path = fifo_s.clone();
                    }
                }
            }),
        ),
        (
            "exe",
            Box::new(|i: &mut Image| i.process.exe = fifo_s.clone()),
        ),
        (
            "mapping",
            Box::new(|i: &mut Image| {
                for r in &mut i.regions {
                    if let RegionKind::File { path, .. } = &mut r.kind {
                        *path = fifo_s.clone();
                    }
                }
            }),
        ),
    ];
    for (name, edit) in cases {
        let forged = dir.join(format!("{name}.forged"));
        forge(&image, &forged, edit);
        let e = root_restart(&forged)
            .err()
            .unwrap_or_else(|| panic!("{name}: a FIFO restored as a file"));
        assert!(
            e.contains(&fifo_s) && e.contains("not a regular file"),
            "{name}: {e}"
        );
    }
}

/// A pipe whose saved bytes exceed its capacity is refused when the image is read; one
/// whose recorded capacity holds them gets that capacity back. Before: the refill blocked
/// on the full pipe forever.
#[test]
fn a_pipe_is_refilled_only_up_to_its_capacity() {
    require_root();
    let dir = shared_scratch("pipe");
    let image = dir.join("ctx");
    let mut c = Command::new("/usr/bin/python3");
    c.current_dir(&dir).args([
        "-c",
        "import os, time\n\
         r, w = os.pipe()\n\
         os.write(w, b'x' * 10)\n\
         open('ready', 'w').close()\n\
         time.sleep(60)",
    ]);
    let ready = dir.join("ready");
    let target = start(c, "a python3 holding a pipe", |_| ready.exists());
    checkpoint_kill(target, &image, &[]);
    let refill = |data: usize, capacity: Option<u32>| {
        move |i: &mut Image| {
            for f in &mut i.files {
                if let FileKind::Pipe {
                    read_end: true,
                    data: d,
                    capacity: c,
                    ..
                } = &mut f.kind
                {
                    *d = vec![b'y'; data];
                    if let Some(cap) = capacity {
                        *c = cap;
                    }
                }
            }
        }
    };
    let overfull = dir.join("overfull");
    forge(&image, &overfull, refill(256 << 10, None));
    let e = root_restart(&overfull)
        .err()
        .expect("an overfull pipe was restored");
    assert!(
        e.contains("262144 bytes") && e.contains("capacity of 65536"),
        "{e}"
    );

    let grown = dir.join("grown");
    forge(&image, &grown, refill(256 << 10, Some(512 << 10)));
    drop(root_restart(&grown).unwrap());
}

/// Copy every section of `src` into `dst`, letting `edit` replace one section's payload
/// by several (kind and payload), with valid checksums.
fn rewrite_sections(src: &Path, dst: &Path, edit: impl Fn(u32, &[u8]) -> Vec<(u32, Vec<u8>)>) {
    let r = ImageReader::open(src).unwrap();
    let _ = fs::remove_file(dst);
    let mut w = ImageWriter::create(dst).unwrap();
    for s in r.sections() {
        let payload = r.read(s, 1 << 30).unwrap();
        for (kind, data) in edit(s.kind, &payload) {
            w.section(kind, false, &data).unwrap();
        }
    }
    w.commit().unwrap();
}

/// A THREAD section beyond the process's recorded threads is refused when the image is
/// read; a thread whose TID is taken fails the restart with that message and leaves no
/// thread behind. Before: an extra thread was created (with a free TID) or the restart
/// hung (a taken one: the threads already created were never reaped).
#[test]
fn an_extra_or_taken_thread_is_refused() {
    require_root();
    let dir = shared_scratch("extra-thread");
    let image = dir.join("ctx");
    let tids = threaded_image(&image);
    let free = unused_pid();
    // An extra THREAD section, a copy of the last one with another TID: init's (taken)
    // or a free one.
    let extra = |tid: i32| {
        let last = *tids.last().unwrap();
        move |kind: u32, data: &[u8]| {
            let mut out = vec![(kind, data.to_vec())];
            if kind == kind::THREAD && data[..4] == last.to_le_bytes() {
                let mut copy = data.to_vec();
                copy[..4].copy_from_slice(&tid.to_le_bytes());
                out.push((kind, copy));
            }
            out
        }
    };
    for (name, tid) in [("taken", 1), ("free", free)] {
        let forged = dir.join(name);
        rewrite_sections(&image, &forged, extra(tid));
        for args in [&[][..], &["--no-restore-pid"]] {
            let e = restart_detached(&forged, args).err().unwrap_or_else(|| {
                panic!("{name} {args:?}: an image with an extra thread restored")
            });
            assert!(
                e.contains("THREAD") && e.contains("5 THREAD sections") && e.contains("had 4"),
                "{name} {args:?}: {e}"
            );
        }
    }
    // The last thread's TID taken (by init): the restart fails naming it, promptly,
    // with the three threads made before it gone.
    let taken = dir.join("taken-tid");
    forge(&image, &taken, |i| i.threads[3].tid = 1);
    let e = restart_detached(&taken, &[])
        .err()
        .expect("a taken TID was restored");
    assert!(e.contains("PID 1 is in use (as a thread ID)"), "{e}");
    assert_gone(&tids, "a failed restart");
}

// ---------------------------------------------------------------------------------------
// Item 6 (part): inspect and the frozen time

/// `inspect` fails on page data whose checksum matches but which does not decompress.
/// Before: it said "checksums ok" and exited 0.
#[test]
fn inspect_fails_on_page_data_that_does_not_decompress() {
    require_root();
    let dir = shared_scratch("inspect");
    let image = dir.join("ctx");
    let mut c = Command::new("sh");
    c.args(["-c", "exec sleep 60"]);
    let target = start(c, "a sleep", |pid| runs_with_fd(pid, "sleep", 0));
    checkpoint_kill(target, &image, &["--compress"]);

    // Walk the section headers (the container's format table), garble the compressed
    // PAGES payload and give it a matching checksum.
    let mut bytes = fs::read(&image).unwrap();
    let mut pos = FILE_HEADER_LEN as usize;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let mut garbled = false;
    loop {
        let kind = u32_at(&bytes, pos);
        let flags = u32_at(&bytes, pos + 4);
        let stored = u64_at(&bytes, pos + 8) as usize;
        let payload = pos + SECTION_HEADER_LEN as usize;
        if kind == END_KIND {
            break;
        }
        if kind == kind::PAGES && flags & FLAG_ZSTD != 0 && stored > 16 {
            for b in &mut bytes[payload + 8..payload + stored - 4] {
                *b = 0x5a;
            }
            let sum = xxhash_rust::xxh3::xxh3_64(&bytes[payload..payload + stored]);
            bytes[pos + 24..pos + 32].copy_from_slice(&sum.to_le_bytes());
            let check = xxhash_rust::xxh3::xxh3_64(&bytes[pos..pos + 32]);
            bytes[pos + 32..pos + 40].copy_from_slice(&check.to_le_bytes());
            garbled = true;
        }
        pos = payload + stored;
    }
    assert!(garbled, "the image has no compressed PAGES section");
    let bad = dir.join("bad");
    fs::write(&bad, &bytes).unwrap();
    // The damage passes the checksum: only decompressing finds it.
    let r = ImageReader::open(&bad).unwrap();
    assert!(r.sections().iter().all(|s| r.verify(s).is_ok()));

    for json in [false, true] {
        let mut args = vec!["inspect"];
        if json {
            args.push("--json");
        }
        args.push(path_str(&bad));
        let out = lifeboat(&args);
        let all = out.text();
        assert!(
            !out.status.success(),
            "inspect (json {json}) exited 0: {all}"
        );
        assert!(
            all.contains("PAGES") && all.contains("decompress"),
            "json {json}: {all}"
        );
    }
}

/// The frozen time an image records is the time the processes were frozen, as the
/// checkpoint reports it: from the freeze to the release, the page data included.
/// Before: META's time was taken before the pages were written.
#[test]
fn the_recorded_frozen_time_is_the_reported_one() {
    require_root();
    let dir = shared_scratch("frozen");
    for after in ["--run", "--kill"] {
        let image = dir.join(format!("ctx{after}"));
        let mut c = Command::new("/usr/bin/python3");
        c.current_dir(&dir).args([
            "-c",
            "import os, time\n\
             data = bytearray(os.urandom(64 << 20))\n\
             open('ready', 'w').close()\n\
             time.sleep(60)",
        ]);
        let _ = fs::remove_file(dir.join("ready"));
        let ready = dir.join("ready");
        let target = start(c, "a python3 with 64 MiB", |_| ready.exists());
        let pid = target.pid().to_string();
        let out = lifeboat(&["checkpoint", after, "-f", path_str(&image), &pid]);
        out.assert_success(&format!("checkpoint {after}"));
        drop(target);
        let frozen = |s: &str| {
            s.split("frozen ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .map(|v| v.trim_end_matches(')').to_owned())
                .unwrap_or_default()
        };
        let reported = frozen(&out.stdout);
        let inspect = lifeboat(&["inspect", path_str(&image)]);
        let recorded = frozen(&inspect.stdout);
        assert!(!reported.is_empty(), "{}", out.stdout);
        assert_eq!(
            reported, recorded,
            "{after}: checkpoint reported frozen {reported} s, the image records {recorded} s"
        );
    }
}
