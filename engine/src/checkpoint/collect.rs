//! The state of one frozen process, in the order it is read.
//!
//! First the injection window: for each thread in turn, the thread is given its way home
//! (`ptrace::lifeline`: if lifeboat dies now, the thread finishes the injected call and
//! resumes as it was), all its signals are blocked (so none is delivered, and lost, on
//! the way), system calls are injected through its `[vdso]`, and it gets its mask and its
//! restart-adjusted registers back before the next one; the leader maps a scratch page
//! for the results first and unmaps it last. Then everything `/proc` and ptrace can tell
//! without the process's help.

use super::{CheckpointError, inject};
use crate::model::*;
use crate::procfs;
use crate::ptrace::{self, Frozen, FrozenThread, Injector, Lifeline, Remote};
use crate::state::{self, threads::Injected};
use crate::warning::{Warning, WarningKind};

/// What the injected calls found: per process, and per thread.
struct Window {
    brk: u64,
    sigactions: Vec<SigAction>,
    timers: Timers,
    threads: Vec<Injected>,
}

/// Everything of one process but its page contents.
pub(crate) fn collect(
    frozen: &Frozen,
    warnings: &mut Vec<Warning>,
    held: &mut state::sockets::Held,
) -> Result<Image, CheckpointError> {
    let pid = frozen.pid().as_raw();
    let maps = procfs::maps(pid)?;
    let ip = ptrace::find_syscall_insn(frozen.pid(), &maps)?;
    let line = ptrace::find_lifeline(frozen.pid(), &maps);
    if let Err(why) = &line {
        warnings.push(Warning::process(
            pid,
            WarningKind::InjectionUnprotected {
                tid: pid,
                why: why.clone(),
            },
        ));
    }
    let listed = procfs::timers(pid)?;
    let window = injection_window(frozen, ip, line.as_ref().ok(), &listed, warnings)?;
    let mut threads = Vec::with_capacity(frozen.threads().len());
    for (ft, injected) in frozen.threads().iter().zip(window.threads) {
        threads.push(state::threads::dump(pid, ft, injected)?);
    }
    let leader = &frozen.threads()[0].thread;
    let mut process = state::process::dump(pid, window.brk)?;
    process.sigactions = window.sigactions;
    process.shared_pending = state::signals::dump_shared_pending(leader)?;
    process.stopped = frozen.group_stopped();
    let (regions, shared_anon) = state::memory::dump(pid)?;
    let (files, fds, locks, socket_shutdown, unix_queues) = state::files::dump(pid, held)?;
    Ok(Image {
        meta: state::process::meta(),
        process,
        threads,
        regions,
        files,
        fds,
        pagemap: Vec::new(),
        shared_anon,
        shared_files: Vec::new(),
        locks,
        socket_shutdown,
        unix_queues,
        timers: window.timers,
    })
}

/// Run the injected reads in every thread, leader first.
fn injection_window(
    frozen: &Frozen,
    ip: u64,
    line: Option<&Lifeline>,
    listed: &[PosixTimer],
    warnings: &mut Vec<Warning>,
) -> Result<Window, CheckpointError> {
    let pid = frozen.pid();
    let mut window = Window {
        brk: 0,
        sigactions: Vec::new(),
        timers: Timers::default(),
        threads: Vec::new(),
    };
    let mut scratch = 0;
    for (i, ft) in frozen.threads().iter().enumerate() {
        let t = &ft.thread;
        let mask = t.sigmask()?;
        let live = state::threads::restart_regs(&ft.regs, true);
        let inj = armed(frozen, ft, ip, line, &live, mask, warnings)?;
        t.set_sigmask(u64::MAX)?;
        let mut r = Remote::new(pid, inj);
        r.set_scratch(scratch);
        let outcome = (|| -> Result<Injected, CheckpointError> {
            if i == 0 {
                let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
                scratch = inject(
                    &mut r,
                    "mmap",
                    libc::SYS_mmap,
                    &[0, PAGE_SIZE, prot, flags, u64::MAX, 0],
                )?;
                r.set_scratch(scratch);
                window.brk = state::process::dump_injected(&mut r)?;
                window.sigactions = state::signals::dump_actions(&mut r)?;
                window.timers = state::timers::dump(&mut r, listed)?;
            }
            let (clear_child_tid, altstack) = state::threads::dump_injected(&mut r)?;
            Ok(Injected {
                sigmask: mask,
                clear_child_tid,
                altstack,
            })
        })();
        // Put the thread back even if an injected call failed: the mask first, so that a
        // thread let go in between is still in the injected state and goes home by its
        // frame with its own mask; then its registers; then the stack under the frame.
        t.set_sigmask(mask)?;
        t.set_regs(&live)?;
        r.injector().disarm(pid);
        match outcome {
            Ok(v) => window.threads.push(v),
            Err(e) => {
                if scratch != 0 && i > 0 {
                    let _ = unmap_scratch(frozen, ip, line, scratch);
                }
                return Err(e);
            }
        }
    }
    unmap_scratch(frozen, ip, line, scratch)?;
    Ok(window)
}

/// An injector into `ft` with its way home armed, or a warning saying why it has none.
fn armed(
    frozen: &Frozen,
    ft: &FrozenThread,
    ip: u64,
    line: Option<&Lifeline>,
    live: &Regs,
    mask: u64,
    warnings: &mut Vec<Warning>,
) -> Result<Injector, CheckpointError> {
    let mut inj = Injector::new(&ft.thread, ip)?;
    if let Some(line) = line {
        let xstate = ft.thread.xstate()?;
        if let Err(why) = inj.arm(frozen.pid(), line, live, mask, &xstate) {
            warnings.push(Warning::process(
                frozen.pid().as_raw(),
                WarningKind::InjectionUnprotected {
                    tid: ft.thread.tid().as_raw(),
                    why,
                },
            ));
        }
    }
    Ok(inj)
}

/// Unmap the scratch page, from the leader, and put the leader back as it was.
fn unmap_scratch(
    frozen: &Frozen,
    ip: u64,
    line: Option<&Lifeline>,
    scratch: u64,
) -> Result<(), CheckpointError> {
    let ft = &frozen.threads()[0];
    let leader = &ft.thread;
    let mask = leader.sigmask()?;
    let live = state::threads::restart_regs(&ft.regs, true);
    let mut inj = armed(frozen, ft, ip, line, &live, mask, &mut Vec::new())?;
    leader.set_sigmask(u64::MAX)?;
    let r = inj.call(libc::SYS_munmap, &[scratch, PAGE_SIZE]);
    leader.set_sigmask(mask)?;
    leader.set_regs(&live)?;
    inj.disarm(frozen.pid());
    r?.map_err(|source| CheckpointError::Inject {
        pid: frozen.pid().as_raw(),
        call: "munmap",
        source,
    })?;
    Ok(())
}
