//! The node's processes as rule targets see them: PID, command, user, cgroup and
//! environment read from `/proc`, for lifeboat-triggers' selectors (which do no I/O).

use std::fs;

use lifeboat_engine::procfs;
use lifeboat_triggers::ProcessInfo;

/// Every user process on the node except the agent itself. Processes that exit while
/// they are being read, kernel threads and unreadable entries are left out.
pub fn scan() -> Vec<ProcessInfo> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<ProcessInfo> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(read)
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// One process, or `None` if it is gone, a kernel thread or unreadable.
pub fn read(pid: i32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let cmdline: Vec<String> = fs::read(format!("{base}/cmdline"))
        .ok()?
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if cmdline.is_empty() {
        // Kernel threads and zombies have no command line; neither can be saved.
        return None;
    }
    let stat = procfs::stat(pid).ok()?;
    let (comm, ppid) = (stat.comm, stat.ppid);
    let uid = procfs::status(pid).ok()?.uid[0];
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let cgroup = fs::read_to_string(format!("{base}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default();
    let environ = fs::read(format!("{base}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid,
        comm,
        cmdline,
        uid,
        user,
        cgroup,
        environ,
    })
}

/// Resident memory of a process and its descendants, in bytes (about the size of the
/// image of its tree).
pub fn tree_rss_bytes(root: i32) -> u64 {
    // Parent links only: /proc/PID/stat of each process, nothing else.
    let parents: Vec<(i32, i32)> = procfs::pids()
        .into_iter()
        .filter_map(|p| procfs::stat(p).ok().map(|s| (p, s.ppid)))
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree.into_iter().map(rss_bytes).sum()
}

/// Resident memory of a process in bytes (the size its image will roughly have).
pub fn rss_bytes(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("SLURM_JOB_ID", "4242")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // exec may still be in progress: wait for the command line to be sleep's.
        let mut info = None;
        for _ in 0..200 {
            info = read(pid).filter(|p| p.comm == "sleep");
            if info.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let info = info.expect("the child was read");
        assert_eq!(info.cmdline, vec!["sleep", "30"]);
        assert_eq!(info.ppid, std::process::id() as i32);
        assert!(
            info.environ
                .iter()
                .any(|(k, v)| k == "SLURM_JOB_ID" && v == "4242")
        );
        assert!(scan().iter().all(|p| p.pid != std::process::id() as i32));
    }
}
