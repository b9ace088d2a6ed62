//! Creating eventfds, timerfds, signalfds and epoll instances in the restarter, in the
//! state a checkpoint recorded, to be moved into the restored process like any file.

use super::check;
use libc::c_long;
use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd};

/// `TFD_IOC_SET_TICKS`, `_IOW('T', 0, u64)` (include/uapi/linux/timerfd.h; needs
/// CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

fn own(raw: libc::c_int) -> Result<OwnedFd, Errno> {
    check(c_long::from(raw))?;
    // SAFETY: `raw` is a descriptor the kernel just created for us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An eventfd holding `count`.
pub fn eventfd(count: u64, semaphore: bool) -> Result<OwnedFd, Errno> {
    let flags = libc::EFD_CLOEXEC | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: eventfd takes plain integers.
    let fd = own(unsafe { libc::eventfd(0, flags) })?;
    if count > 0 {
        nix::unistd::write(&fd, &count.to_ne_bytes())?;
    }
    Ok(fd)
}

/// A timerfd on `clock`, next expiring after `value` and then every `interval`, with
/// `ticks` expirations already pending.
pub fn timerfd(
    clock: i32,
    value: (i64, i64),
    interval: (i64, i64),
    ticks: u64,
) -> Result<OwnedFd, Errno> {
    // SAFETY: timerfd_create takes plain integers.
    let fd = own(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC) })?;
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: interval.0,
            tv_nsec: interval.1,
        },
        it_value: libc::timespec {
            tv_sec: value.0,
            tv_nsec: value.1,
        },
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `spec` is a valid itimerspec alive across the call; the old value is not
    // wanted (null).
    let ret = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    check(c_long::from(ret))?;
    if ticks > 0 {
        // SAFETY: the ioctl reads one u64 from `ticks`, which lives across the call.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) };
        check(c_long::from(ret))?;
    }
    Ok(fd)
}

/// A signalfd reading the signals of `mask` (bit N-1 for signal N).
pub fn signalfd(mask: u64) -> Result<OwnedFd, Errno> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole sigset_t it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised by sigemptyset just above.
    let mut set = unsafe { set.assume_init() };
    for sig in 1..=64 {
        if mask & (1u64 << (sig - 1)) != 0 {
            // SAFETY: `set` is an initialised sigset_t we own; sigaddset sets one bit
            // (and refuses numbers the kernel does not know).
            unsafe { libc::sigaddset(&mut set, sig) };
        }
    }
    // SAFETY: `set` is a valid sigset_t alive across the call; -1 asks for a new fd.
    own(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })
}

/// An empty epoll instance (its interest list is rebuilt inside the process).
pub fn epoll() -> Result<OwnedFd, Errno> {
    // SAFETY: epoll_create1 takes a plain flag.
    own(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
}

/// An inotify instance watching what `watches` list, each with its original watch
/// descriptor: descriptors are handed out in increasing order (the kernel allocates them
/// cyclically), so a throw-away watch on `/` is added and removed until the next one is
/// the wanted one. Returns the instance and the paths that could not be watched.
pub fn inotify(watches: &[crate::model::InotifyWatch]) -> Result<(OwnedFd, Vec<String>), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: inotify_init1 takes a plain flag.
    let fd = own(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })?;
    let mut lost = Vec::new();
    let mut next = 1;
    for w in watches {
        while next < w.wd {
            // SAFETY: a NUL-terminated literal path; plain integers otherwise.
            let wd =
                unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c"/".as_ptr(), libc::IN_ATTRIB) };
            check(c_long::from(wd))?;
            // SAFETY: removing the watch just added.
            unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
            next = wd + 1;
        }
        let Ok(path) = std::ffi::CString::new(w.path.as_str()) else {
            lost.push(w.path.clone());
            continue;
        };
        // SAFETY: `path` is NUL-terminated and alive across the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), w.mask) };
        if wd < 0 {
            lost.push(w.path.clone());
        } else {
            next = wd + 1;
        }
    }
    Ok((fd, lost))
}
