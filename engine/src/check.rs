//! `lifeboat check`: probe each kernel feature the engine relies on, like `criu check`.

use crate::procfs;
use crate::ptrace::{self, Frozen};
use crate::sys;
use nix::unistd::Pid;
use std::fs;
use std::process::{Command, Stdio};

/// One probed feature.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Feature {
    /// What was probed.
    pub name: &'static str,
    /// Whether it works.
    pub ok: bool,
    /// What was seen, or why it fails and what that disables.
    pub detail: String,
}

fn cap(bit: u32) -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("CapEff:")
                    .map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0))
            })
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Probe every feature. Spawns a short-lived `sleep` process to trace.
pub fn check() -> Vec<Feature> {
    let mut out = Vec::new();
    let mut add = |name, ok, detail: String| out.push(Feature { name, ok, detail });
    let uname = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    add(
        "x86-64 Linux kernel",
        cfg!(target_arch = "x86_64"),
        format!("kernel {uname}"),
    );
    let scope =
        fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map(|s| s.trim().to_owned());
    add(
        "ptrace permitted (Yama)",
        !matches!(scope.as_deref(), Ok("3")),
        match &scope {
            Ok(v) => format!("kernel.yama.ptrace_scope = {v}"),
            Err(_) => "Yama not present".into(),
        },
    );
    let map_files = fs::read_dir("/proc/self/map_files").is_ok();
    add(
        "CONFIG_CHECKPOINT_RESTORE",
        map_files && fs::metadata("/proc/sys/kernel/ns_last_pid").is_ok(),
        "/proc/PID/map_files and ns_last_pid".into(),
    );
    // Capability bits: CAP_SYS_ADMIN 21, CAP_SYS_RESOURCE 24, CAP_CHECKPOINT_RESTORE 40.
    let cr = cap(40) || cap(21);
    let (ok, no) = (
        "CAP_CHECKPOINT_RESTORE held",
        "needs CAP_CHECKPOINT_RESTORE; restart with --no-restore-pid",
    );
    add(
        "clone3 set_tid (restore PIDs)",
        cr,
        if cr { ok } else { no }.into(),
    );
    let no =
        "needs CAP_CHECKPOINT_RESTORE; /proc/PID/exe of a restarted process will name lifeboat";
    add(
        "PR_SET_MM_MAP exe link",
        cr,
        if cr { ok } else { no }.into(),
    );
    let (ok, no) = (
        "CAP_SYS_RESOURCE held",
        "no CAP_SYS_RESOURCE: limits above the restarter's hard limits are not restored (reported)",
    );
    add(
        "raise hard resource limits",
        cap(24),
        if cap(24) { ok } else { no }.into(),
    );
    let me = procfs::maps(std::process::id() as i32).unwrap_or_default();
    let has = |n: &str| me.iter().any(|m| m.name.as_deref() == Some(n));
    add(
        "[vdso] with a syscall instruction",
        ptrace::find_syscall_insn(Pid::this(), &me).is_ok(),
        "used to inject system calls".into(),
    );
    add(
        "[vvar] and [vvar_vclock]",
        has("[vvar]"),
        format!(
            "vvar {}, vvar_vclock {}",
            has("[vvar]"),
            has("[vvar_vclock]")
        ),
    );
    add(
        "memfd_create",
        nix::sys::memfd::memfd_create(c"lifeboat-check", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .is_ok(),
        "deleted files are restored into memfds".into(),
    );
    let fd = fs::File::open("/proc/self/status");
    add(
        "kcmp",
        fd.as_ref().is_ok_and(|f| {
            use std::os::fd::AsRawFd;
            sys::process::same_file(Pid::this(), f.as_raw_fd(), Pid::this(), f.as_raw_fd())
                .unwrap_or(false)
        }),
        "finds descriptors sharing an open file".into(),
    );
    // Trace a real process.
    match Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Err(e) => add(
            "ptrace a test process",
            false,
            format!("cannot start `sleep`: {e}"),
        ),
        Ok(mut child) => {
            let pid = Pid::from_raw(child.id() as i32);
            std::thread::sleep(std::time::Duration::from_millis(20));
            match Frozen::freeze(pid) {
                Err(e) => add("PTRACE_SEIZE + PTRACE_INTERRUPT", false, e.to_string()),
                Ok(frozen) => {
                    add(
                        "PTRACE_SEIZE + PTRACE_INTERRUPT",
                        true,
                        format!("froze PID {pid}"),
                    );
                    let t = &frozen.threads()[0].thread;
                    let x = t.xstate();
                    add(
                        "PTRACE_GETREGSET NT_X86_XSTATE",
                        x.is_ok(),
                        x.map_or_else(
                            |e| e.to_string(),
                            |v| format!("{} bytes of XSAVE state", v.len()),
                        ),
                    );
                    let r = t.rseq();
                    add(
                        "PTRACE_GET_RSEQ_CONFIGURATION",
                        r.is_ok(),
                        r.map_or_else(
                            |e| e.to_string(),
                            |r| format!("registered: {}", r.is_some()),
                        ),
                    );
                    let s = t.pending(true);
                    add(
                        "PTRACE_PEEKSIGINFO",
                        s.is_ok(),
                        s.map_or_else(|e| e.to_string(), |v| format!("{} queued", v.len())),
                    );
                    let m = t.sigmask();
                    add(
                        "PTRACE_GETSIGMASK",
                        m.is_ok(),
                        m.map_or_else(|e| e.to_string(), |m| format!("{m:#x}")),
                    );
                    let pm = fs::File::open(procfs::path(pid.as_raw(), "pagemap"));
                    add(
                        "/proc/PID/pagemap",
                        pm.is_ok(),
                        "present and swapped pages".into(),
                    );
                    let mut buf = [0u8; 8];
                    let maps = procfs::maps(pid.as_raw()).unwrap_or_default();
                    let stack = maps
                        .iter()
                        .find(|m| m.name.as_deref() == Some("[stack]"))
                        .map_or(0, |m| m.end - 8);
                    let v = nix::sys::uio::process_vm_readv(
                        pid,
                        &mut [std::io::IoSliceMut::new(&mut buf)],
                        &[nix::sys::uio::RemoteIoVec {
                            base: stack as usize,
                            len: 8,
                        }],
                    );
                    add(
                        "process_vm_readv",
                        v.is_ok(),
                        v.map_or_else(|e| e.to_string(), |n| format!("read {n} bytes")),
                    );
                    drop(frozen);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    out
}
