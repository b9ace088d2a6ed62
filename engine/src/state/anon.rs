//! Anonymous inodes: eventfd, timerfd, signalfd, epoll and inotify instances, read from
//! their fdinfo (fs/eventfd.c, fs/timerfd.c, fs/signalfd.c, fs/eventpoll.c,
//! fs/notify/fdinfo.c), created again in the restarter in their recorded state, and the
//! epoll interest lists rebuilt inside the process once every descriptor is in place.

use crate::checkpoint::error::CheckpointError;
use crate::image::codec::{Ctx, ImageError, MAX_FDS};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::procfs;
use crate::ptrace::Remote;
use crate::restart::error::{self as restart, RestartError};
use crate::state::common::dec_path;
use crate::sys;
use crate::warning::{Warning, WarningKind};
use std::os::fd::{OwnedFd, RawFd};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// The state of an eventfd, timerfd, signalfd or epoll instance from its fdinfo
/// (fs/eventfd.c, fs/timerfd.c, fs/signalfd.c, fs/eventpoll.c `*_show_fdinfo`); `None`
/// for other anonymous inodes.
pub(crate) fn dump(
    pid: i32,
    fd: i32,
    kind: &str,
    fields: &[(String, String)],
) -> Option<Result<FileKind, CheckpointError>> {
    let bad = |what: &str| {
        Err(CheckpointError::UnsupportedFd {
            pid,
            fd,
            what: format!("an {kind} whose fdinfo has no readable {what}"),
        })
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    // `(123, 456)` as printed for it_value and it_interval.
    let pair = |v: &str| -> Option<(i64, i64)> {
        let (a, b) = v.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    Some(match kind {
        "[eventfd]" => match get("eventfd-count").and_then(|v| u64::from_str_radix(v, 16).ok()) {
            Some(count) => Ok(FileKind::EventFd {
                count,
                semaphore: get("eventfd-semaphore") == Some("1"),
            }),
            None => bad("eventfd-count"),
        },
        "[timerfd]" => {
            let clock = get("clockid").and_then(|v| v.parse().ok());
            let ticks = get("ticks").and_then(|v| v.parse().ok());
            let value = get("it_value").and_then(pair);
            let interval = get("it_interval").and_then(pair);
            match (clock, ticks, value, interval) {
                (Some(clock), Some(ticks), Some(value), Some(interval)) => Ok(FileKind::TimerFd {
                    clock,
                    ticks,
                    // An expired periodic timer shows 0 left until it is read: it is
                    // still armed, its next expiry at most one period away.
                    value: if value == (0, 0) { interval } else { value },
                    interval,
                }),
                _ => bad("timer settings"),
            }
        }
        "[signalfd]" => match get("sigmask").and_then(|v| u64::from_str_radix(v, 16).ok()) {
            Some(mask) => Ok(FileKind::SignalFd { mask }),
            None => bad("sigmask"),
        },
        "inotify" => inotify_watches(pid, fd, fields).map(|watches| FileKind::Inotify { watches }),
        "[eventpoll]" => {
            let mut watches = Vec::new();
            for (k, v) in fields {
                if k != "tfd" {
                    continue;
                }
                // "   5 events:       19 data:                5  pos:0 ino:.. sdev:.."
                let words: Vec<&str> = v.split_whitespace().collect();
                let after = |key: &str| {
                    words
                        .iter()
                        .position(|w| *w == key)
                        .and_then(|i| words.get(i + 1))
                };
                let watch = (|| {
                    Some(EpollWatch {
                        fd: words.first()?.parse().ok()?,
                        events: u32::from_str_radix(after("events:")?, 16).ok()?,
                        data: u64::from_str_radix(after("data:")?, 16).ok()?,
                    })
                })();
                match watch {
                    Some(w) => watches.push(w),
                    None => return Some(bad("interest list")),
                }
            }
            Ok(FileKind::Epoll { watches })
        }
        _ => return None,
    })
}

/// The watches of an inotify instance: fdinfo gives each watch's descriptor, mask and file
/// handle (fs/notify/fdinfo.c); the handle, opened on the mount of its device, gives the
/// path to watch again.
fn inotify_watches(
    pid: i32,
    fd: i32,
    fields: &[(String, String)],
) -> Result<Vec<InotifyWatch>, CheckpointError> {
    let mut out = Vec::new();
    // "inotify wd:1 ino:a1b2 sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8
    //  fhandle-type:1 f_handle:b2a1000000000000", split at its first colon.
    for (k, rest) in fields.iter().filter(|(k, _)| k.starts_with("inotify")) {
        let v = &format!("{}:{rest}", k.trim_start_matches("inotify").trim());
        let get = |key: &str| {
            v.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        };
        let hex = |key: &str| get(key).and_then(|x| u64::from_str_radix(x, 16).ok());
        let bad = |what: &str| CheckpointError::UnsupportedFd {
            pid,
            fd,
            what: format!("an inotify instance with a watch whose {what} cannot be read ({v})"),
        };
        let wd = hex("wd").ok_or_else(|| bad("descriptor"))? as i32;
        let mask = hex("mask").ok_or_else(|| bad("mask"))? as u32;
        let sdev = hex("sdev").ok_or_else(|| bad("device"))?;
        let htype = hex("fhandle-type").ok_or_else(|| bad("file handle"))? as i32;
        let handle: Vec<u8> = get("f_handle")
            .map(|h| {
                (0..h.len() / 2)
                    .filter_map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
                    .collect()
            })
            .ok_or_else(|| bad("file handle"))?;
        // s_dev in the kernel's internal encoding: major << 20 | minor.
        let (major, minor) = (sdev >> 20, sdev & 0xfffff);
        let mount = procfs::mount_point(pid, major, minor).ok_or_else(|| bad("mount"))?;
        let path = sys::process::path_of_handle(&mount, htype, &handle)
            .map_err(|e| bad(&format!("file (open_by_handle_at: {e})")))?;
        out.push(InotifyWatch { wd, mask, path });
    }
    out.sort_by_key(|w| w.wd);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Restart

/// The descriptor for an anonymous inode of the image; an epoll instance is created
/// empty and its watches queued in `epolls` for [`restore_epoll_watches`].
pub(crate) fn open(
    pid: i32,
    first_fd: i32,
    kind: &FileKind,
    epolls: &mut Vec<(RawFd, Vec<EpollWatch>)>,
    warnings: &mut Vec<Warning>,
) -> Result<OwnedFd, RestartError> {
    let fail = |op| {
        move |source| RestartError::Descriptor {
            pid,
            fd: first_fd,
            op,
            source,
        }
    };
    match kind {
        FileKind::EventFd { count, semaphore } => {
            sys::anonfd::eventfd(*count, *semaphore).map_err(fail("eventfd"))
        }
        FileKind::TimerFd {
            clock,
            ticks,
            value,
            interval,
        } => sys::anonfd::timerfd(*clock, *value, *interval, *ticks).map_err(fail("timerfd")),
        FileKind::SignalFd { mask } => sys::anonfd::signalfd(*mask).map_err(fail("signalfd")),
        FileKind::Epoll { watches } => {
            epolls.push((first_fd, watches.clone()));
            sys::anonfd::epoll().map_err(fail("epoll_create1"))
        }
        FileKind::Inotify { watches } => {
            let (fd, lost) = sys::anonfd::inotify(watches).map_err(fail("inotify"))?;
            for path in lost {
                warnings.push(Warning::fd(
                    pid,
                    first_fd,
                    WarningKind::InotifyWatchLost { path },
                ));
            }
            Ok(fd)
        }
        _ => Err(RestartError::Tree {
            what: format!("descriptor {first_fd} is not an anonymous inode"),
        }),
    }
}

/// Rebuild epoll interest lists: `epoll_ctl(EPOLL_CTL_ADD)` inside the process, once
/// every descriptor is in place (epoll keys its entries by descriptor number).
pub(crate) fn restore_epoll_watches(
    r: &mut Remote,
    epolls: &[(RawFd, Vec<EpollWatch>)],
    warnings: &mut Vec<Warning>,
) -> Result<(), RestartError> {
    let scratch = r.scratch();
    for (epfd, watches) in epolls {
        for w in watches {
            // struct epoll_event is packed on x86-64: u32 events, u64 data.
            let mut ev = [0u8; 12];
            ev[..4].copy_from_slice(&w.events.to_ne_bytes());
            ev[4..].copy_from_slice(&w.data.to_ne_bytes());
            restart::poke(r, scratch, &ev)?;
            let added = r.call(
                libc::SYS_epoll_ctl,
                &[
                    *epfd as u64,
                    libc::EPOLL_CTL_ADD as u64,
                    w.fd as u64,
                    scratch,
                ],
            )?;
            if let Err(error) = added {
                warnings.push(Warning::fd(
                    r.pid().as_raw(),
                    *epfd,
                    WarningKind::EpollWatchLost {
                        watched: w.fd,
                        error,
                    },
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Codec (the anonymous-inode kinds of a FILES record)

/// Tags of anonymous-inode kinds in FILES.
pub(crate) const TAG_EVENTFD: u8 = 5;
pub(crate) const TAG_TIMERFD: u8 = 6;
pub(crate) const TAG_SIGNALFD: u8 = 7;
pub(crate) const TAG_EPOLL: u8 = 8;
pub(crate) const TAG_INOTIFY: u8 = 12;

/// Encode this kind (tag included) in a FILES record.
pub(crate) fn enc(e: &mut Enc, kind: &FileKind) {
    match kind {
        FileKind::EventFd { count, semaphore } => {
            e.u8(TAG_EVENTFD);
            e.u64(*count);
            e.bool(*semaphore);
        }
        FileKind::TimerFd {
            clock,
            ticks,
            value,
            interval,
        } => {
            e.u8(TAG_TIMERFD);
            e.i32(*clock);
            e.u64(*ticks);
            for t in [value, interval] {
                e.i64(t.0);
                e.i64(t.1);
            }
        }
        FileKind::SignalFd { mask } => {
            e.u8(TAG_SIGNALFD);
            e.u64(*mask);
        }
        FileKind::Epoll { watches } => {
            e.u8(TAG_EPOLL);
            e.u64(watches.len() as u64);
            for wch in watches {
                e.i32(wch.fd);
                e.u32(wch.events);
                e.u64(wch.data);
            }
        }
        FileKind::Inotify { watches } => {
            e.u8(TAG_INOTIFY);
            e.u64(watches.len() as u64);
            for wch in watches {
                e.i32(wch.wd);
                e.u32(wch.mask);
                e.str(&wch.path);
            }
        }
        _ => {}
    }
}

/// Decode this kind after its tag.
pub(crate) fn dec(tag: u8, d: &mut Dec<'_>, cx: &Ctx<'_>) -> Result<FileKind, ImageError> {
    let w = cx.wire();
    Ok(match tag {
        TAG_EVENTFD => FileKind::EventFd {
            count: d.u64().map_err(&w)?,
            semaphore: d.bool().map_err(&w)?,
        },
        TAG_TIMERFD => {
            let clock = d.i32().map_err(&w)?;
            // CLOCK_REALTIME, _MONOTONIC, _BOOTTIME, _REALTIME_ALARM, _BOOTTIME_ALARM:
            // the clocks timerfd_create(2) accepts.
            if ![0, 1, 7, 8, 9].contains(&clock) {
                return Err(cx.invalid(format!(
                    "timerfd clock {clock} is not one timerfd_create accepts"
                )));
            }
            let ticks = d.u64().map_err(&w)?;
            let mut t = [(0i64, 0i64); 2];
            for slot in &mut t {
                *slot = (d.i64().map_err(&w)?, d.i64().map_err(&w)?);
                if slot.0 < 0 || !(0..1_000_000_000).contains(&slot.1) {
                    return Err(
                        cx.invalid(format!("timerfd time {slot:?} is not a valid timespec"))
                    );
                }
            }
            FileKind::TimerFd {
                clock,
                ticks,
                value: t[0],
                interval: t[1],
            }
        }
        TAG_SIGNALFD => FileKind::SignalFd {
            mask: d.u64().map_err(&w)?,
        },
        TAG_EPOLL => {
            let n = d.count(MAX_FDS).map_err(&w)?;
            let mut watches = Vec::with_capacity(n);
            for _ in 0..n {
                let wch = EpollWatch {
                    fd: d.i32().map_err(&w)?,
                    events: d.u32().map_err(&w)?,
                    data: d.u64().map_err(&w)?,
                };
                if wch.fd < 0 {
                    return Err(cx.invalid(format!("epoll watch of descriptor {}", wch.fd)));
                }
                watches.push(wch);
            }
            FileKind::Epoll { watches }
        }
        TAG_INOTIFY => {
            let n = d.count(1 << 20).map_err(&w)?;
            let mut watches = Vec::with_capacity(n);
            for _ in 0..n {
                let wd = d.i32().map_err(&w)?;
                let mask = d.u32().map_err(&w)?;
                let path = dec_path(d, cx)?;
                if wd <= 0 {
                    return Err(cx.invalid(format!("inotify watch descriptor {wd}")));
                }
                watches.push(InotifyWatch { wd, mask, path });
            }
            watches.sort_by_key(|w| w.wd);
            if watches.windows(2).any(|p| p[0].wd == p[1].wd) {
                return Err(cx.invalid("inotify watch descriptor twice"));
            }
            FileKind::Inotify { watches }
        }
        k => return Err(cx.invalid(format!("unknown file kind {k}"))),
    })
}
