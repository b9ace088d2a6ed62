//! File locks: flock(2), POSIX record locks and OFD locks, read from fdinfo and taken
//! back inside the restored process (a POSIX lock belongs to the process that sets it).

use crate::image::codec::{Ctx, ImageError, MAX_FDS};
use crate::image::wire::{Dec, Enc};
use crate::model::*;
use crate::ptrace::Remote;
use crate::restart::error::{self as restart, RestartError};
use crate::state::OptionalSection;
use crate::warning::{Warning, WarningKind};

// ---------------------------------------------------------------------------------------
// Checkpoint

/// Locks held through the process's descriptors: the `lock:` lines of fdinfo, which list
/// the locks on that open file that belong to this process (POSIX) or to the description
/// (flock, OFD): fs/locks.c `lock_get_status`, e.g.
/// `1: POSIX  ADVISORY  READ 22989 fe:00:10010712 10 14`.
pub(crate) fn locks_in(fd: i32, fields: &[(String, String)]) -> Vec<FileLock> {
    let mut out = Vec::new();
    for (_, v) in fields.iter().filter(|(k, _)| k == "lock") {
        let words: Vec<&str> = v.split_whitespace().collect();
        // [id:, kind, ADVISORY|MANDATORY, READ|WRITE, pid, dev:ino, start, end]
        let (Some(kind), Some(mode), Some(start), Some(end)) =
            (words.get(1), words.get(3), words.get(6), words.get(7))
        else {
            continue;
        };
        let kind = match *kind {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            // Leases and others are not locks a process takes back by itself.
            _ => continue,
        };
        let Ok(start) = start.parse::<u64>() else {
            continue;
        };
        let end = match *end {
            "EOF" => None,
            e => match e.parse::<u64>() {
                Ok(e) => Some(e),
                Err(_) => continue,
            },
        };
        out.push(FileLock {
            fd,
            kind,
            write: *mode == "WRITE",
            start,
            end,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Restart

/// Take the locks back. A lock someone else took meanwhile is a warning, not a failure.
pub(crate) fn restore(
    r: &mut Remote,
    locks: &[FileLock],
    warnings: &mut Vec<Warning>,
) -> Result<(), RestartError> {
    let scratch = r.scratch();
    for l in locks {
        let taken = match l.kind {
            LockKind::Flock => {
                let op = if l.write {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                } | libc::LOCK_NB;
                r.call(libc::SYS_flock, &[l.fd as u64, op as u64])?
            }
            LockKind::Posix | LockKind::Ofd => {
                // struct flock (x86-64): short type, short whence, 4 bytes padding,
                // off_t start, off_t len, pid_t pid, 4 bytes padding.
                let mut fl = [0u8; 32];
                let ty: i16 = if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                } as i16;
                fl[..2].copy_from_slice(&ty.to_ne_bytes());
                fl[8..16].copy_from_slice(&(l.start as i64).to_ne_bytes());
                let len = l.end.map_or(0, |e| (e - l.start + 1) as i64);
                fl[16..24].copy_from_slice(&len.to_ne_bytes());
                restart::poke(r, scratch, &fl)?;
                let cmd = if l.kind == LockKind::Posix {
                    libc::F_SETLK
                } else {
                    libc::F_OFD_SETLK
                };
                r.call(libc::SYS_fcntl, &[l.fd as u64, cmd as u64, scratch])?
            }
        };
        if let Err(error) = taken {
            warnings.push(Warning::fd(
                r.pid().as_raw(),
                l.fd,
                WarningKind::LockNotTaken {
                    lock: l.kind,
                    error,
                },
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Section codec: LOCKS (optional)

/// The LOCKS section.
pub(crate) const LOCKS: OptionalSection = OptionalSection {
    kind: 0x8000_000B,
    name: "LOCKS",
    encode: enc_locks,
    decode: |data, image, _, cx| {
        image.locks = dec_locks(data, &image.fds, cx)?;
        Ok(())
    },
};

fn enc_locks(image: &Image) -> Option<Vec<u8>> {
    if image.locks.is_empty() {
        return None;
    }
    let mut e = Enc::new();
    e.u64(image.locks.len() as u64);
    for l in &image.locks {
        e.i32(l.fd);
        e.u8(match l.kind {
            LockKind::Flock => 0,
            LockKind::Posix => 1,
            LockKind::Ofd => 2,
        });
        e.bool(l.write);
        e.u64(l.start);
        e.u64(l.end.unwrap_or(u64::MAX));
    }
    Some(e.into_vec())
}

fn dec_locks(data: &[u8], fds: &[Fd], cx: &Ctx<'_>) -> Result<Vec<FileLock>, ImageError> {
    let w = cx.wire();
    let mut d = Dec::new(data);
    let n = d.count(MAX_FDS).map_err(&w)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let fd = d.i32().map_err(&w)?;
        let kind = match d.u8().map_err(&w)? {
            0 => LockKind::Flock,
            1 => LockKind::Posix,
            2 => LockKind::Ofd,
            k => return Err(cx.invalid(format!("unknown lock kind {k}"))),
        };
        let write = d.bool().map_err(&w)?;
        let start = d.u64().map_err(&w)?;
        let end = match d.u64().map_err(&w)? {
            u64::MAX => None,
            e => Some(e),
        };
        if !fds.iter().any(|f| f.fd == fd) {
            return Err(cx.invalid(format!("lock on descriptor {fd}, which is not open")));
        }
        if start > i64::MAX as u64 || end.is_some_and(|e| e < start || e > i64::MAX as u64) {
            return Err(cx.invalid(format!("lock range {start}..{end:?} is invalid")));
        }
        out.push(FileLock {
            fd,
            kind,
            write,
            start,
            end,
        });
    }
    d.finish().map_err(&w)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[&str]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|l| ("lock".to_owned(), (*l).to_owned()))
            .collect()
    }

    #[test]
    fn fdinfo_lock_lines() {
        // fs/locks.c lock_get_status, as fdinfo shows them.
        let got = locks_in(
            4,
            &fields(&[
                "1: POSIX  ADVISORY  READ 22989 fe:00:10010712 10 14",
                "2: FLOCK  ADVISORY  WRITE 22989 fe:00:10010712 0 EOF",
                "3: OFDLCK ADVISORY  WRITE -1 fe:00:10010712 0 0",
                "4: LEASE  ACTIVE    READ 22989 fe:00:10010712 0 EOF",
                "garbage",
            ]),
        );
        let lock = |kind, write, start, end| FileLock {
            fd: 4,
            kind,
            write,
            start,
            end,
        };
        assert_eq!(
            got,
            [
                lock(LockKind::Posix, false, 10, Some(14)),
                lock(LockKind::Flock, true, 0, None),
                lock(LockKind::Ofd, true, 0, Some(0)),
            ]
        );
    }
}
