//! Creating eventfds, timerfds, signalfds, epoll and inotify instances in the restarter, in
//! the state a checkpoint recorded, to be moved into the restored process like any file.
//!
//! nix creates all of them; raw calls remain for what it lacks: `TFD_IOC_SET_TICKS`, adding
//! a real-time signal to a set, and inotify watches by number.

use super::check;
use libc::c_long;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{InitFlags, Inotify};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// `TFD_IOC_SET_TICKS`, `_IOW('T', 0, u64)` (include/uapi/linux/timerfd.h; needs
/// CONFIG_CHECKPOINT_RESTORE). libc does not define it.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

/// An eventfd holding `count`.
pub fn eventfd(count: u64, semaphore: bool) -> Result<OwnedFd, Errno> {
    let mut flags = EfdFlags::EFD_CLOEXEC;
    if semaphore {
        flags |= EfdFlags::EFD_SEMAPHORE;
    }
    // Created empty and then written: the counter is a u64, eventfd(2)'s initial value a u32.
    let fd = EventFd::from_value_and_flags(0, flags)?;
    if count > 0 {
        fd.write(count)?;
    }
    Ok(fd.into())
}

/// A timerfd on `clock`, next expiring after `value` and then every `interval`, with
/// `ticks` expirations already pending.
pub fn timerfd(
    clock: i32,
    value: (i64, i64),
    interval: (i64, i64),
    ticks: u64,
) -> Result<OwnedFd, Errno> {
    let clock = match clock {
        libc::CLOCK_REALTIME => ClockId::CLOCK_REALTIME,
        libc::CLOCK_MONOTONIC => ClockId::CLOCK_MONOTONIC,
        libc::CLOCK_BOOTTIME => ClockId::CLOCK_BOOTTIME,
        libc::CLOCK_REALTIME_ALARM => ClockId::CLOCK_REALTIME_ALARM,
        libc::CLOCK_BOOTTIME_ALARM => ClockId::CLOCK_BOOTTIME_ALARM,
        // timerfd_create(2) refuses every other clock the same way.
        _ => return Err(Errno::EINVAL),
    };
    let fd = TimerFd::new(clock, TimerFlags::TFD_CLOEXEC)?;
    // Relative times (no TFD_TIMER_ABSTIME); `IntervalDelayed` passes both halves to the
    // kernel unchanged, so a zero `value` leaves the timer disarmed whatever `interval` is.
    let spec = |(sec, nsec): (i64, i64)| TimeSpec::new(sec, nsec);
    fd.set(
        Expiration::IntervalDelayed(spec(value), spec(interval)),
        TimerSetTimeFlags::empty(),
    )?;
    if ticks > 0 {
        // SAFETY: the ioctl reads one u64 from `ticks`, which lives across the call; `fd` is
        // the timerfd just created and open.
        let ret = unsafe {
            libc::ioctl(
                fd.as_fd().as_raw_fd(),
                TFD_IOC_SET_TICKS,
                &ticks as *const u64,
            )
        };
        check(c_long::from(ret))?;
    }
    Ok(fd.into())
}

/// A signalfd reading the signals of `mask` (bit N-1 for signal N).
///
/// Made with the raw `signalfd4` call and the kernel's own 8-byte signal set: nix's
/// `SigSet` cannot hold real-time signals, and libc's `sigset_t` is glibc's 128 bytes.
pub fn signalfd(mask: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: `mask` is 8 readable bytes alive across the call, and 8 is the size passed;
    // the kernel only reads it and returns a new descriptor (or -1).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &mask as *const u64,
            size_of::<u64>(),
            libc::SFD_CLOEXEC,
        )
    };
    super::new_fd(ret)
}

/// An empty epoll instance (its interest list is rebuilt inside the process).
pub fn epoll() -> Result<OwnedFd, Errno> {
    Ok(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?.0)
}

/// An inotify instance watching what `watches` list, each with its original watch
/// descriptor: descriptors are handed out in increasing order (the kernel allocates them
/// cyclically), so a throw-away watch on `/` is added and removed until the next one is
/// the wanted one. Returns the instance and the paths that could not be watched.
pub fn inotify(watches: &[crate::model::InotifyWatch]) -> Result<(OwnedFd, Vec<String>), Errno> {
    let fd = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let mut lost = Vec::new();
    let mut next = 1;
    for w in watches {
        while next < w.wd {
            let wd = add_watch(&fd, c"/", libc::IN_ATTRIB)?;
            rm_watch(&fd, wd);
            next = wd + 1;
        }
        let Ok(path) = std::ffi::CString::new(w.path.as_str()) else {
            lost.push(w.path.clone());
            continue;
        };
        match add_watch(&fd, &path, w.mask) {
            Ok(wd) => next = wd + 1,
            Err(_) => lost.push(w.path.clone()),
        }
    }
    Ok((fd.into(), lost))
}

/// `inotify_add_watch(2)`, returning the watch descriptor's number (nix's `WatchDescriptor`
/// keeps it private, and a restart must know which number each watch got).
fn add_watch(inotify: &Inotify, path: &CStr, mask: u32) -> Result<i32, Errno> {
    // SAFETY: `path` is NUL-terminated and alive across the call; the instance is open (we
    // borrow it) and the mask a plain integer.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_fd().as_raw_fd(), path.as_ptr(), mask) };
    check(c_long::from(wd)).map(|_| wd)
}

/// `inotify_rm_watch(2)` by number; a failure only leaves a watch nobody asked about.
fn rm_watch(inotify: &Inotify, wd: i32) {
    // SAFETY: plain integers: an instance we borrow (so open) and a watch number.
    unsafe { libc::inotify_rm_watch(inotify.as_fd().as_raw_fd(), wd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `key` in this process's `/proc/self/fdinfo/FD`.
    fn fdinfo(fd: &OwnedFd, key: &str) -> String {
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{key}:")));
        let line = line.unwrap_or_else(|| panic!("no {key} in {path}: {text}"));
        line[key.len() + 1..].trim().to_string()
    }

    #[test]
    fn eventfd_holds_its_count() {
        let check = |count: u64, semaphore: bool| {
            let fd = eventfd(count, semaphore).unwrap();
            let got = u64::from_str_radix(&fdinfo(&fd, "eventfd-count"), 16).unwrap();
            assert_eq!(got, count, "count {count}, semaphore {semaphore}");
        };
        check(0, false);
        check(7, true);
        check(u64::MAX - 1, false);
        assert_eq!(eventfd(u64::MAX, false).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn timerfd_keeps_value_interval_and_ticks() {
        // (value, interval, ticks, whether the timer is disarmed)
        let check = |value: (i64, i64), interval: (i64, i64), ticks: u64, disarmed: bool| {
            let fd = timerfd(libc::CLOCK_MONOTONIC, value, interval, ticks).unwrap();
            let case = format!("{value:?} {interval:?} {ticks}");
            assert_eq!(
                fdinfo(&fd, "clockid"),
                libc::CLOCK_MONOTONIC.to_string(),
                "{case}"
            );
            assert_eq!(fdinfo(&fd, "it_value") == "(0, 0)", disarmed, "{case}");
            let want = format!("({}, {})", interval.0, interval.1);
            assert_eq!(fdinfo(&fd, "it_interval"), want, "{case}");
            assert_eq!(fdinfo(&fd, "ticks"), ticks.to_string(), "{case}");
            // Relative, as recorded.
            assert_eq!(fdinfo(&fd, "settime flags"), "00", "{case}");
        };
        check((100, 0), (0, 500), 0, false);
        check((0, 0), (0, 0), 0, true);
        // A zero value disarms the timer whatever the interval.
        check((0, 0), (5, 0), 0, true);
        check((3600, 1), (1, 0), 3, false);
    }

    #[test]
    fn timerfd_refuses_the_clocks_the_kernel_refuses() {
        for clock in [
            libc::CLOCK_MONOTONIC_RAW,
            libc::CLOCK_PROCESS_CPUTIME_ID,
            -1,
            99,
        ] {
            assert_eq!(
                timerfd(clock, (1, 0), (0, 0), 0).err(),
                Some(Errno::EINVAL),
                "{clock}"
            );
        }
        for clock in [libc::CLOCK_REALTIME, libc::CLOCK_BOOTTIME] {
            assert!(timerfd(clock, (1, 0), (0, 0), 0).is_ok(), "{clock}");
        }
    }

    #[test]
    fn signalfd_mask_includes_real_time_signals() {
        let check = |mask: u64| {
            let fd = signalfd(mask).unwrap();
            let got = u64::from_str_radix(&fdinfo(&fd, "sigmask"), 16).unwrap();
            assert_eq!(got, mask, "{mask:#x}");
        };
        check(0);
        check(1 << (libc::SIGUSR1 - 1));
        check(1 << (libc::SIGUSR1 - 1) | 1 << (libc::SIGTERM - 1));
        // SIGRTMIN+6 and the last real-time signal.
        check(1 << 39 | 1 << 63);
    }
}
