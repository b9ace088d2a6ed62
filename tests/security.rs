//! Security of checkpoint and restart, with real processes and real users: what ptrace and
//! core dumps refuse is refused, and a modified image never raises privilege.
//!
//! Needs root (to create processes of other users with setpriv); fails with a reason
//! otherwise, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

use lifeboat_engine::image::{Reader, Writer};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;

fn lifeboat() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the security tests need root: they run processes as other users with setpriv"
    );
    assert!(
        Path::new("/usr/bin/setpriv").exists(),
        "the security tests need setpriv (util-linux)"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("security-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `setpriv` prefix to run as `uid`.
fn as_user(uid: u32) -> Command {
    let mut c = Command::new("/usr/bin/setpriv");
    c.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &uid.to_string(),
        "--clear-groups",
        "--",
    ]);
    c
}

/// A process that sleeps, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn spawn(mut cmd: Command) -> Sleeper {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Sleeper(child)
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn uid_of(pid: i32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn only_the_owner_or_root_may_checkpoint() {
    require_root();
    let dir = scratch("owner");
    let mut target = Sleeper::spawn({
        let mut c = as_user(NOBODY);
        c.args(["sleep", "30"]);
        c
    });
    let image = dir.join("ctx");
    let mut cmd = as_user(OTHER);
    cmd.arg(lifeboat())
        .args(["checkpoint", "-f"])
        .arg(&image)
        .arg(target.pid().to_string());
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "another user checkpointed PID {}",
        target.pid()
    );
    assert!(
        stderr(&out).contains(&format!("PID {} belongs to UID {NOBODY}", target.pid())),
        "{}",
        stderr(&out)
    );
    assert!(!image.exists(), "a refused checkpoint left an image");
    assert!(target.alive(), "a refused checkpoint hurt the process");

    // The owner may, and the process keeps running (--run is the default).
    let mut cmd = as_user(NOBODY);
    cmd.current_dir(&dir)
        .arg(lifeboat())
        .args(["checkpoint", "-f"])
        .arg(&image)
        .arg(target.pid().to_string());
    let out = run(cmd);
    assert!(
        out.status.success(),
        "the owner could not checkpoint: {}",
        stderr(&out)
    );
    assert!(target.alive());
    assert_eq!(
        fs::metadata(&image)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap(),
        NOBODY
    );
}

#[test]
fn set_id_processes_are_refused() {
    require_root();
    let dir = scratch("setid");
    // A set-user-ID copy of sleep owned by nobody, started by root: euid != ruid.
    let exe = dir.join("suid-sleep");
    fs::copy("/usr/bin/sleep", &exe).unwrap();
    chown(&exe, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o4755)).unwrap();
    let mut target = Sleeper::spawn({
        let mut c = Command::new(&exe);
        c.arg("30");
        c
    });
    let out = run({
        let mut c = Command::new(lifeboat());
        c.args(["checkpoint", "-f"])
            .arg(dir.join("ctx"))
            .arg(target.pid().to_string());
        c
    });
    assert!(!out.status.success());
    assert!(stderr(&out).contains("set-user-ID"), "{}", stderr(&out));
    assert!(target.alive());
}

#[test]
fn non_dumpable_processes_are_refused_and_keep_running() {
    require_root();
    let dir = scratch("dumpable");
    let mut target = Sleeper::spawn({
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import ctypes, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); time.sleep(30)",
        ]);
        c
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = run({
        let mut c = Command::new(lifeboat());
        c.args(["checkpoint", "--kill", "-f"])
            .arg(dir.join("ctx"))
            .arg(target.pid().to_string());
        c
    });
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not dumpable"), "{}", stderr(&out));
    assert!(!dir.join("ctx").exists());
    std::thread::sleep(Duration::from_millis(100));
    assert!(target.alive(), "a refused --kill checkpoint must not kill");
    let state = fs::read_to_string(format!("/proc/{}/stat", target.pid())).unwrap();
    assert!(
        !state.contains(") t ") && !state.contains(") T "),
        "left stopped: {state}"
    );
}

/// Checkpoint `sleep` running as nobody (with --kill) and return the image path.
fn nobody_image(dir: &Path) -> PathBuf {
    let image = dir.join("ctx");
    let mut target = Sleeper::spawn({
        let mut c = as_user(NOBODY);
        c.current_dir(dir).args(["sleep", "30"]);
        c
    });
    let out = run({
        let mut c = Command::new(lifeboat());
        c.args(["checkpoint", "--kill", "-f"])
            .arg(&image)
            .arg(target.pid().to_string());
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = target.0.wait();
    image
}

/// Rewrite an image with other credentials, with valid checksums: a deliberate forgery.
fn forge(src: &Path, dst: &Path, uid: u32) {
    let reader = Reader::open(src).unwrap();
    let mut img = reader.image().clone();
    img.process.creds.uid = [uid; 4];
    img.process.creds.gid = [uid; 4];
    let mut pages = Vec::new();
    if let Some(mut p) = reader.pages().unwrap() {
        p.read_to_end(&mut pages).unwrap();
    }
    let mut w = Writer::create(dst, false).unwrap();
    w.metadata(&img).unwrap();
    let mut s = w.pages().unwrap();
    s.write_all(&pages).unwrap();
    s.finish().unwrap();
    w.commit(&img.pagemap).unwrap();
}

#[test]
fn root_restores_the_owner_not_a_forged_root() {
    require_root();
    let dir = scratch("forge");
    let image = nobody_image(&dir);

    // An honest image restarted by root runs as its owner again.
    let out = run({
        let mut c = Command::new(lifeboat());
        c.args(["restart", "--detach"]).arg(&image);
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(uid_of(pid), NOBODY, "restored with the wrong UID");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    // A user's image rewritten to claim UID 0 is refused by root, and nothing runs.
    let forged = dir.join("forged");
    forge(&image, &forged, 0);
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = run({
        let mut c = Command::new(lifeboat());
        c.args(["restart", "--no-restore-pid", "--detach"])
            .arg(&forged);
        c
    });
    assert!(
        !out.status.success(),
        "root restarted a forged image as UID 0"
    );
    assert!(
        stderr(&out).contains("owned by UID 65534 but claims UID 0"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_user_restarts_as_itself_whatever_the_image_says() {
    require_root();
    let dir = scratch("user-restart");
    let image = nobody_image(&dir);
    let forged = dir.join("forged");
    forge(&image, &forged, 0);
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    // Without CAP_CHECKPOINT_RESTORE the PID cannot be restored: a clear error.
    let out = run({
        let mut c = as_user(NOBODY);
        c.current_dir(&dir)
            .arg(lifeboat())
            .args(["restart", "--detach"])
            .arg(&forged);
        c
    });
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--no-restore-pid"),
        "{}",
        stderr(&out)
    );
    let out = run({
        let mut c = as_user(NOBODY);
        c.current_dir(&dir)
            .arg(lifeboat())
            .args(["restart", "--no-restore-pid", "--detach"])
            .arg(&forged);
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        uid_of(pid),
        NOBODY,
        "a forged image raised the privilege of its restarter"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
