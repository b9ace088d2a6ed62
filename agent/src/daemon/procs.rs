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

/// The agent's ancestors, parent first, up to PID 1 (included): the processes whose
/// tree contains the agent. A process whose stat cannot be read ends the chain.
pub fn ancestors_of_self() -> Vec<i32> {
    let mut out = Vec::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 {
        match procfs::stat(pid) {
            Ok(st) if st.ppid > 0 && !out.contains(&st.ppid) => {
                out.push(st.ppid);
                pid = st.ppid;
            }
            _ => break,
        }
    }
    out
}

/// Why the agent must refuse to checkpoint `pid` (with its tree) before it freezes
/// anything, or `None`. `me` is the agent's PID, `ancestors` the processes whose tree
/// contains the agent ([`ancestors_of_self`]). The engine refuses these too, but only
/// once it meets the offending member, after it froze the ones before it: PID 1 first
/// of all, and with it, for a moment, every process of the node.
pub fn refusal(pid: i32, me: i32, ancestors: &[i32]) -> Option<String> {
    if pid <= 0 {
        Some(format!("PID {pid} is not a process"))
    } else if pid == 1 {
        Some("PID 1 is never checkpointed: its tree is every process of the node".into())
    } else if pid == me {
        Some(format!("PID {pid} is the lifeboat agent itself"))
    } else if ancestors.contains(&pid) {
        Some(format!(
            "the tree of PID {pid} contains the lifeboat agent (PID {me}); checkpoint from outside the job"
        ))
    } else {
        None
    }
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
    fn refuses_init_itself_and_its_ancestors() {
        let refused = |pid| refusal(pid, 100, &[50, 1]);
        assert!(
            refused(1)
                .unwrap()
                .starts_with("PID 1 is never checkpointed")
        );
        assert!(refused(0).is_some() && refused(-3).is_some());
        assert_eq!(
            refused(100).as_deref(),
            Some("PID 100 is the lifeboat agent itself")
        );
        assert!(
            refused(50)
                .unwrap()
                .contains("contains the lifeboat agent (PID 100)")
        );
        assert_eq!(refused(51), None);
        assert_eq!(refused(101), None);
        let mine = ancestors_of_self();
        assert_eq!(mine.first(), Some(&(nix::unistd::getppid().as_raw())));
        assert!(mine.iter().all(|&p| p >= 1));
    }

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
