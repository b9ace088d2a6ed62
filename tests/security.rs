//! Security of checkpoint and restart, with real processes and real users: what ptrace and
//! core dumps refuse is refused, and a modified image never raises privilege.
//!
//! Needs root (to create processes of other users with setpriv); fails with a reason
//! otherwise, never skips.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;

fn require_root() {
    common::require_root(
        "the security tests need root: they run processes as other users with setpriv",
    );
    require_tool(
        SETPRIV,
        "the security tests run processes as other users (util-linux)",
    );
}

/// A process that sleeps (streams on /dev/null), given a moment to start; killed when
/// dropped.
fn sleeper(cmd: Command) -> Background {
    let target = Background::quiet(cmd, "the target");
    std::thread::sleep(Duration::from_millis(200));
    target
}

fn run(cmd: Command) -> CliResult {
    let what = format!("{cmd:?}");
    run_to_end(cmd, &what)
}

#[test]
fn only_the_owner_or_root_may_checkpoint() {
    require_root();
    let dir = shared_scratch("owner");
    let mut target = sleeper({
        let mut c = as_user(NOBODY);
        c.args(["sleep", "30"]);
        c
    });
    let image = dir.join("ctx");
    let mut cmd = as_user(OTHER);
    cmd.arg(lifeboat_bin())
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
        out.stderr
            .contains(&format!("PID {} belongs to UID {NOBODY}", target.pid())),
        "{}",
        out.stderr
    );
    // The refusal says who may (issue 10: errors that teach).
    assert!(
        out.stderr.contains(&format!(
            "lifeboat: hint: access to PID {} needs the right to trace it. Only its owner or root may checkpoint a process: for another user's, run `sudo lifeboat checkpoint`",
            target.pid()
        )),
        "{}",
        out.stderr
    );
    assert!(!image.exists(), "a refused checkpoint left an image");
    assert!(target.alive(), "a refused checkpoint hurt the process");

    // The owner may, and the process keeps running (--run is the default).
    let mut cmd = as_user(NOBODY);
    cmd.current_dir(&dir)
        .arg(lifeboat_bin())
        .args(["checkpoint", "-f"])
        .arg(&image)
        .arg(target.pid().to_string());
    let out = run(cmd);
    assert!(
        out.status.success(),
        "the owner could not checkpoint: {}",
        out.stderr
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
    let dir = shared_scratch("setid");
    // A set-user-ID copy of sleep owned by nobody, started by root: euid != ruid.
    let exe = dir.join("suid-sleep");
    fs::copy("/usr/bin/sleep", &exe).unwrap();
    chown(&exe, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o4755)).unwrap();
    let mut target = sleeper({
        let mut c = Command::new(&exe);
        c.arg("30");
        c
    });
    let out = run({
        let mut c = Command::new(lifeboat_bin());
        c.args(["checkpoint", "-f"])
            .arg(dir.join("ctx"))
            .arg(target.pid().to_string());
        c
    });
    assert!(!out.status.success());
    assert!(out.stderr.contains("set-user-ID"), "{}", out.stderr);
    assert!(target.alive());
}

#[test]
fn non_dumpable_processes_are_refused_and_keep_running() {
    require_root();
    let dir = shared_scratch("dumpable");
    let mut target = sleeper({
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import ctypes, sys, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); open(sys.argv[1], 'w').close(); time.sleep(30)",
        ])
        .arg(dir.join("undumpable"));
        c
    });
    // Checkpointed only once it has made itself non-dumpable (under load python takes
    // its time to get there).
    wait_until("the process to make itself non-dumpable", || {
        dir.join("undumpable").exists()
    });
    let out = run({
        let mut c = Command::new(lifeboat_bin());
        c.args(["checkpoint", "--kill", "-f"])
            .arg(dir.join("ctx"))
            .arg(target.pid().to_string());
        c
    });
    assert!(!out.status.success());
    assert!(out.stderr.contains("not dumpable"), "{}", out.stderr);
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
    let mut target = sleeper({
        let mut c = as_user(NOBODY);
        c.current_dir(dir).args(["sleep", "30"]);
        c
    });
    let out = run({
        let mut c = Command::new(lifeboat_bin());
        c.args(["checkpoint", "--kill", "-f"])
            .arg(&image)
            .arg(target.pid().to_string());
        c
    });
    assert!(out.status.success(), "{}", out.stderr);
    target.wait();
    image
}

#[test]
fn root_restores_the_owner_not_a_forged_root() {
    require_root();
    let dir = shared_scratch("forge");
    let image = nobody_image(&dir);

    // An honest image restarted by root runs as its owner again.
    let out = run({
        let mut c = Command::new(lifeboat_bin());
        c.args(["restart", "--detach"]).arg(&image);
        c
    });
    assert!(out.status.success(), "{}", out.stderr);
    let pid: i32 = out.stdout.trim().parse().unwrap();
    assert_eq!(uid_of(pid), NOBODY, "restored with the wrong UID");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    // A user's image rewritten to claim UID 0 is refused by root, and nothing runs.
    let forged = dir.join("forged");
    forge(&image, &forged, |img| {
        img.process.creds.uid = [0; 4];
        img.process.creds.gid = [0; 4];
    });
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = run({
        let mut c = Command::new(lifeboat_bin());
        c.args(["restart", "--no-restore-pid", "--detach"])
            .arg(&forged);
        c
    });
    assert!(
        !out.status.success(),
        "root restarted a forged image as UID 0"
    );
    assert!(
        out.stderr.contains("owned by UID 65534 but claims UID 0"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_user_restarts_as_itself_whatever_the_image_says() {
    require_root();
    let dir = shared_scratch("user-restart");
    let image = nobody_image(&dir);
    let forged = dir.join("forged");
    forge(&image, &forged, |img| {
        img.process.creds.uid = [0; 4];
        img.process.creds.gid = [0; 4];
    });
    chown(&forged, Some(NOBODY), Some(NOBODY)).unwrap();
    // Without CAP_CHECKPOINT_RESTORE the PID cannot be restored: a clear error.
    let out = run({
        let mut c = as_user(NOBODY);
        c.current_dir(&dir)
            .arg(lifeboat_bin())
            .args(["restart", "--detach"])
            .arg(&forged);
        c
    });
    assert!(!out.status.success());
    assert!(out.stderr.contains("--no-restore-pid"), "{}", out.stderr);
    let out = run({
        let mut c = as_user(NOBODY);
        c.current_dir(&dir)
            .arg(lifeboat_bin())
            .args(["restart", "--no-restore-pid", "--detach"])
            .arg(&forged);
        c
    });
    assert!(out.status.success(), "{}", out.stderr);
    let pid: i32 = out.stdout.trim().parse().unwrap();
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
