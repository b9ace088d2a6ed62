//! `lifeboat inspect`: describe a context file. By default a summary (threads, memory
//! by kind, descriptors by kind, signal handlers and open flags by name, the frozen
//! time); `--regions` and `--all` add the long lists; `--json` is the engine's whole
//! `Summary` as data.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use lifeboat_engine::{self as engine, Summary};

use super::support::{human, status};
use crate::cli::InspectArgs;
use crate::table::{Align, Cell, Table, stdout_color};

/// How much of an image to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    /// Every memory region.
    pub regions: bool,
    /// Every thread, descriptor and section too.
    pub all: bool,
}

/// Run `lifeboat inspect [--json] [--regions] [--all] FILE`; fails if a section does
/// not verify.
pub fn run(a: &InspectArgs) -> Result<ExitCode> {
    let file = &a.file;
    let s = engine::inspect(file).with_context(|| format!("cannot inspect {}", file.display()))?;
    let mut out = io::stdout().lock();
    // A damaged image fails either way (the JSON says which sections).
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
        return Ok(status(s.checksums_ok));
    }
    let detail = Detail {
        regions: a.regions || a.all,
        all: a.all,
    };
    out.write_all(text(&s, detail, stdout_color()).as_bytes())?;
    Ok(status(s.checksums_ok))
}

/// The image as text.
pub fn text(s: &Summary, detail: Detail, color: bool) -> String {
    let mut out = String::new();
    let taken = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s.created_unix));
    let _ = writeln!(
        out,
        "{}: lifeboat {} image of PID {} ({})",
        s.path, s.engine_version, s.pid, s.command
    );
    let _ = writeln!(out, "  command   {}", s.cmdline.join(" "));
    let _ = writeln!(out, "  exe       {}", s.exe);
    let _ = writeln!(out, "  cwd       {}", s.cwd);
    let _ = writeln!(
        out,
        "  ids       pid {} ppid {} pgid {} sid {} uid {} gid {}",
        s.pid, s.ppid, s.pgid, s.sid, s.uid, s.gid
    );
    let _ = writeln!(
        out,
        "  taken     on {} (kernel {}) at {taken}, frozen {:.3} s",
        s.hostname,
        s.kernel,
        s.frozen_us as f64 / 1e6
    );
    threads(&mut out, s, detail, color);
    memory(&mut out, s, detail, color);
    descriptors(&mut out, s, detail, color);
    signals(&mut out, s);
    sections(&mut out, s, detail, color);
    out
}

fn threads(out: &mut String, s: &Summary, detail: Detail, color: bool) {
    let _ = writeln!(out, "threads ({}):", s.threads.len());
    if detail.all {
        let mut t = Table::new(&[
            ("tid", Align::Right),
            ("name", Align::Left),
            ("rip", Align::Left),
            ("blocked", Align::Left),
            ("pending", Align::Left),
        ]);
        for th in &s.threads {
            t.row(vec![
                th.tid.to_string().into(),
                th.comm.as_str().into(),
                th.rip.as_str().into(),
                signal_set(th.blocked).into(),
                signal_list(&th.pending).into(),
            ]);
        }
        out.push_str(&t.render(2, color));
        return;
    }
    // Threads by name, with their TIDs; masks and pending signals only where set.
    let mut names: Vec<(&str, Vec<i32>)> = Vec::new();
    for th in &s.threads {
        match names.iter_mut().find(|(n, _)| *n == th.comm) {
            Some((_, tids)) => tids.push(th.tid),
            None => names.push((&th.comm, vec![th.tid])),
        }
    }
    for (name, tids) in names {
        let _ = writeln!(out, "  {name:<16} {}", tid_list(&tids));
    }
    for th in s
        .threads
        .iter()
        .filter(|t| t.blocked != 0 || !t.pending.is_empty())
    {
        let mut what = Vec::new();
        if th.blocked != 0 {
            what.push(format!("blocks {}", signal_set(th.blocked)));
        }
        if !th.pending.is_empty() {
            what.push(format!("pending {}", signal_list(&th.pending)));
        }
        let _ = writeln!(out, "  thread {}: {}", th.tid, what.join("; "));
    }
}

/// `4242-4245, 4250`.
fn tid_list(tids: &[i32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tids.len() {
        let mut j = i;
        while j + 1 < tids.len() && tids[j + 1] == tids[j] + 1 {
            j += 1;
        }
        parts.push(if j > i + 1 {
            format!("{}-{}", tids[i], tids[j])
        } else if j == i + 1 {
            format!("{}, {}", tids[i], tids[j])
        } else {
            tids[i].to_string()
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// The readable name of a region class.
fn class_name(class: &str) -> &str {
    match class {
        "file" => "mapped files",
        "shared_anonymous" => "shared anonymous",
        other => other,
    }
}

fn memory(out: &mut String, s: &Summary, detail: Detail, color: bool) {
    let total: u64 = s.regions.iter().map(|r| r.bytes).sum();
    let _ = writeln!(
        out,
        "memory ({} regions, {} mapped, {} saved):",
        s.regions.len(),
        human(total),
        human(s.memory_saved_bytes)
    );
    let mut t = Table::new(&[
        ("kind", Align::Left),
        ("regions", Align::Right),
        ("mapped", Align::Right),
        ("saved", Align::Right),
    ]);
    let mut classes: Vec<&str> = Vec::new();
    for r in &s.regions {
        if !classes.contains(&r.class.as_str()) {
            classes.push(&r.class);
        }
    }
    // Largest first.
    let sum = |c: &str, f: fn(&engine::RegionSummary) -> u64| -> u64 {
        s.regions.iter().filter(|r| r.class == c).map(f).sum()
    };
    classes.sort_by_key(|c| std::cmp::Reverse(sum(c, |r| r.bytes)));
    for c in classes {
        let n = s.regions.iter().filter(|r| r.class == c).count();
        let files = if c == "file" {
            let mut paths: Vec<&str> = s
                .regions
                .iter()
                .filter(|r| r.class == c)
                .map(|r| r.kind.as_str())
                .collect();
            paths.sort_unstable();
            paths.dedup();
            format!(" ({} files)", paths.len())
        } else {
            String::new()
        };
        t.row(vec![
            format!("{}{files}", class_name(c)).into(),
            n.to_string().into(),
            human(sum(c, |r| r.bytes)).into(),
            human(sum(c, |r| r.saved_bytes)).into(),
        ]);
    }
    out.push_str(&t.render(2, color));
    if detail.regions {
        let _ = writeln!(out, "regions:");
        for r in &s.regions {
            let _ = writeln!(
                out,
                "  {:>14}-{:<14} {} {:>10} saved {:>10}  {}",
                r.start,
                r.end,
                r.perms,
                human(r.bytes),
                human(r.saved_bytes),
                r.kind
            );
        }
    } else if !s.regions.is_empty() {
        let _ = writeln!(out, "  (every region: --regions)");
    }
}

/// Descriptors listed per kind in the summary; more are counted.
const FDS_PER_KIND: usize = 8;

fn descriptors(out: &mut String, s: &Summary, detail: Detail, color: bool) {
    let _ = writeln!(out, "descriptors ({}):", s.fds.len());
    let describe = |f: &engine::FdSummary| {
        let mut d = format!("{} {} ({})", f.fd, f.target, open_flags(f.open_flags));
        if f.cloexec {
            d.push_str(" cloexec");
        }
        if f.pos != 0 {
            let _ = write!(d, " at {}", f.pos);
        }
        if f.saved_bytes > 0 {
            let _ = write!(d, ", {} saved", human(f.saved_bytes as u64));
        }
        d
    };
    if detail.all {
        for f in &s.fds {
            let _ = writeln!(out, "  {:>4} {:<9} {}", f.fd, f.kind, describe(f));
        }
        return;
    }
    let mut kinds: Vec<&str> = Vec::new();
    for f in &s.fds {
        if !kinds.contains(&f.kind.as_str()) {
            kinds.push(&f.kind);
        }
    }
    let mut t = Table::new(&[
        ("kind", Align::Left),
        ("count", Align::Right),
        ("descriptors", Align::Left),
    ]);
    for k in kinds {
        let fds: Vec<&engine::FdSummary> = s.fds.iter().filter(|f| f.kind == k).collect();
        let mut list: Vec<String> = fds.iter().take(FDS_PER_KIND).map(|f| describe(f)).collect();
        if fds.len() > FDS_PER_KIND {
            list.push(format!("and {} more (--all)", fds.len() - FDS_PER_KIND));
        }
        t.row(vec![
            k.into(),
            fds.len().to_string().into(),
            list.join("; ").into(),
        ]);
    }
    out.push_str(&t.render(2, color));
}

fn signals(out: &mut String, s: &Summary) {
    let _ = writeln!(out, "signal handlers ({}):", s.signal_handlers.len());
    for h in &s.signal_handlers {
        let mut line = format!("  {:<10} {}", signal_name(h.sig as i32), h.action);
        let flags = sa_flags(h.sa_flags);
        if !flags.is_empty() {
            let _ = write!(line, " ({flags})");
        }
        if h.mask != 0 {
            let _ = write!(line, ", blocks {}", signal_set(h.mask));
        }
        let _ = writeln!(out, "{line}");
    }
    if !s.pending_signals.is_empty() {
        let _ = writeln!(
            out,
            "pending signals (process): {}",
            signal_list(&s.pending_signals)
        );
    }
}

fn sections(out: &mut String, s: &Summary, detail: Detail, color: bool) {
    let bytes: u64 = s.sections.iter().map(|x| x.bytes).sum();
    let shown = s
        .sections
        .iter()
        .filter(|sec| detail.all || sec.checksum != "ok")
        .count();
    let _ = writeln!(
        out,
        "sections ({}, {}), checksums {}{}",
        s.sections.len(),
        human(bytes),
        if s.checksums_ok { "ok" } else { "FAILED" },
        if shown > 0 { ":" } else { "" }
    );
    let mut t = Table::new(&[
        ("section", Align::Left),
        ("stored", Align::Right),
        ("check", Align::Left),
    ]);
    for sec in s
        .sections
        .iter()
        .filter(|sec| detail.all || sec.checksum != "ok")
    {
        t.row(vec![
            sec.kind.as_str().into(),
            human(sec.bytes).into(),
            Cell::alert(sec.checksum.as_str(), sec.checksum != "ok"),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render(2, color));
    }
}

/// `SIGINT`, `SIGRTMIN+3` (glibc's numbering, as `kill -l`: SIGRTMIN is 34), `SIG32`.
pub fn signal_name(sig: i32) -> String {
    // Signals 32 and 33 are real-time signals glibc keeps for itself (threads, set*id).
    const RTMIN: i32 = 34;
    const RTMAX: i32 = 64;
    match sig {
        32 | 33 => format!("SIG{sig}"),
        RTMIN => "SIGRTMIN".to_owned(),
        RTMAX => "SIGRTMAX".to_owned(),
        n if (RTMIN..RTMAX).contains(&n) => format!("SIGRTMIN+{}", n - RTMIN),
        n => nix::sys::signal::Signal::try_from(n)
            .map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_owned()),
    }
}

/// The signals of a mask (bit N-1 is signal N): `SIGINT|SIGTERM`, or `none`.
pub fn signal_set(mask: u64) -> String {
    let names: Vec<String> = (1..=64)
        .filter(|n| mask & (1u64 << (n - 1)) != 0)
        .map(signal_name)
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join("|")
    }
}

fn signal_list(sigs: &[i32]) -> String {
    if sigs.is_empty() {
        return "none".to_owned();
    }
    sigs.iter()
        .map(|s| signal_name(*s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `O_RDWR|O_APPEND|O_NONBLOCK`: the access mode, then every other flag set.
pub fn open_flags(flags: u32) -> String {
    let flags = flags as i32;
    let mut names = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY".to_owned(),
        libc::O_WRONLY => "O_WRONLY".to_owned(),
        libc::O_RDWR => "O_RDWR".to_owned(),
        other => format!("access mode {other}"),
    }];
    let known = [
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_SYNC & !libc::O_DSYNC, "O_SYNC"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        // The kernel's value on x86-64 (glibc's O_LARGEFILE is 0 there).
        (0o100000, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
    ];
    let mut rest = flags & !libc::O_ACCMODE;
    for (bit, name) in known {
        if rest & bit == bit && bit != 0 {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#o}"));
    }
    names.join("|")
}

/// `SA_RESTART|SA_SIGINFO`, or empty.
pub fn sa_flags(flags: u64) -> String {
    let known: [(u64, &str); 8] = [
        (libc::SA_NOCLDSTOP as u64, "SA_NOCLDSTOP"),
        (libc::SA_NOCLDWAIT as u64, "SA_NOCLDWAIT"),
        (libc::SA_SIGINFO as u64, "SA_SIGINFO"),
        (libc::SA_ONSTACK as u64, "SA_ONSTACK"),
        (libc::SA_RESTART as u64, "SA_RESTART"),
        (libc::SA_NODEFER as u64, "SA_NODEFER"),
        (libc::SA_RESETHAND as u64, "SA_RESETHAND"),
        (0x0400_0000, "SA_RESTORER"),
    ];
    let mut names = Vec::new();
    let mut rest = flags;
    for (bit, name) in known {
        if rest & bit != 0 {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden;
    use engine::{FdSummary, HandlerSummary, RegionSummary, SectionSummary, ThreadSummary};

    /// An image like the one of issue 10: a python3 with 104 regions, five threads,
    /// handlers and descriptors of several kinds.
    fn python() -> Summary {
        let region = |i: u64, class: &str, kind: &str, bytes: u64, saved: u64| RegionSummary {
            start: format!("{:#x}", 0x5500_0000_0000 + i * 0x10_0000),
            end: format!("{:#x}", 0x5500_0000_0000 + i * 0x10_0000 + bytes),
            perms: "rw-p".into(),
            kind: kind.into(),
            bytes,
            saved_bytes: saved,
            class: class.into(),
        };
        let mut regions = vec![
            region(0, "heap", "[heap]", 1 << 21, 1 << 20),
            region(1, "stack", "[stack]", 132 << 10, 36 << 10),
            region(2, "vdso", "[vdso]", 8 << 10, 0),
            region(3, "vvar", "[vvar]", 16 << 10, 0),
        ];
        for i in 0..60 {
            regions.push(region(
                4 + i,
                "file",
                &format!("/usr/lib/lib{}.so", i / 4),
                64 << 10,
                4 << 10,
            ));
        }
        for i in 0..40 {
            regions.push(region(64 + i, "anonymous", "anonymous", 4 << 20, 1 << 20));
        }
        let thread = |tid: i32, comm: &str, blocked: u64, pending: Vec<i32>| ThreadSummary {
            tid,
            comm: comm.into(),
            rip: "0x7f0000001234".into(),
            sigmask: format!("{blocked:#x}"),
            pending,
            xstate_bytes: 2688,
            blocked,
        };
        let fd = |fd: i32, kind: &str, target: &str, open_flags: u32, cloexec: bool| FdSummary {
            fd,
            kind: kind.into(),
            target: target.into(),
            flags: format!("{open_flags:o}"),
            pos: 0,
            cloexec,
            saved_bytes: 0,
            open_flags,
        };
        let handler = |sig: u32, action: &str, sa_flags: u64| HandlerSummary {
            sig,
            action: action.into(),
            flags: format!("{sa_flags:#x}"),
            sa_flags,
            mask: 0,
        };
        Summary {
            path: "job.ctx".into(),
            engine_version: "0.1.0".into(),
            kernel: "6.1.0".into(),
            hostname: "node17".into(),
            created_unix: 1_764_057_600,
            frozen_us: 84_321,
            command: "python3".into(),
            cmdline: vec!["python3".into(), "train.py".into()],
            exe: "/usr/bin/python3.11".into(),
            cwd: "/home/u".into(),
            pid: 4242,
            ppid: 4200,
            pgid: 4242,
            sid: 4100,
            uid: 1000,
            gid: 1000,
            threads: vec![
                thread(4242, "python3", 0, vec![]),
                thread(4243, "python3", 0, vec![]),
                thread(4244, "python3", 0, vec![]),
                thread(4245, "loader", 1 << 9, vec![10]),
                thread(4250, "loader", 0, vec![]),
            ],
            regions,
            fds: vec![
                fd(0, "device", "/dev/pts/3", 0o100002, false),
                fd(1, "file", "/home/u/train.log", 0o102001, false),
                fd(2, "file", "/home/u/train.log", 0o102001, false),
                fd(3, "pipe", "pipe:[4711] read end", 0o4000, true),
                fd(4, "pipe", "pipe:[4711] write end", 0o4001, true),
                fd(
                    5,
                    "tcp",
                    "listening on 127.0.0.1:8888 (backlog 128)",
                    0o2,
                    true,
                ),
            ],
            signal_handlers: vec![
                handler(2, "handler 0x7f0000002000", 0x0c00_0000),
                handler(13, "ignore", 0),
                handler(15, "handler 0x7f0000002000", 0x1c00_0004),
                handler(33, "handler 0x7f0000003000", 0x1c00_0004),
            ],
            pending_signals: vec![34],
            memory_saved_bytes: 44 << 20,
            sections: vec![
                SectionSummary {
                    kind: "META".into(),
                    bytes: 63,
                    checksum: "ok".into(),
                },
                SectionSummary {
                    kind: "PAGES".into(),
                    bytes: 44 << 20,
                    checksum: "ok".into(),
                },
            ],
            checksums_ok: true,
        }
    }

    /// The summary of issue 10: no list of 104 regions, signals and flags by name, the
    /// frozen time; `--regions` adds the regions, `--all` everything.
    #[test]
    fn the_summary_is_short_and_names_things() {
        let s = python();
        let none = Detail {
            regions: false,
            all: false,
        };
        let summary = text(&s, none, false);
        golden::assert_golden("tests/golden/inspect/summary.txt", &summary);
        assert_eq!(summary, text(&s, none, true), "nothing to highlight");
        let regions = text(
            &s,
            Detail {
                regions: true,
                all: false,
            },
            false,
        );
        assert_eq!(
            regions.lines().filter(|l| l.contains(" saved ")).count(),
            104
        );
        let all = text(
            &s,
            Detail {
                regions: true,
                all: true,
            },
            false,
        );
        golden::assert_golden("tests/golden/inspect/all.txt", &all);
        // A section that fails is listed in the summary too, highlighted.
        let mut bad = s.clone();
        bad.sections[1].checksum = "PAGES: cannot decompress".into();
        bad.checksums_ok = false;
        let t = text(&bad, none, true);
        assert!(t.contains("checksums FAILED:"), "{t}");
        assert!(
            t.contains("\x1b[1;31mPAGES: cannot decompress\x1b[0m"),
            "{t}"
        );
    }

    #[test]
    fn names_of_signals_and_flags() {
        assert_eq!(signal_name(2), "SIGINT");
        assert_eq!(signal_name(37), "SIGRTMIN+3");
        assert_eq!(signal_name(64), "SIGRTMAX");
        assert_eq!(signal_name(33), "SIG33");
        assert_eq!(signal_set(0), "none");
        assert_eq!(signal_set((1 << 1) | (1 << 14)), "SIGINT|SIGTERM");
        assert_eq!(open_flags(0o2), "O_RDWR");
        assert_eq!(open_flags(0o102001), "O_WRONLY|O_APPEND|O_LARGEFILE");
        assert_eq!(open_flags(0o4000), "O_RDONLY|O_NONBLOCK");
        assert_eq!(sa_flags(0x1400_0004), "SA_SIGINFO|SA_RESTART|SA_RESTORER");
        assert_eq!(sa_flags(0), "");
        assert_eq!(tid_list(&[10, 11, 12, 13, 20, 22, 23]), "10-13, 20, 22, 23");
    }
}
