//! The datagrams waiting on unix datagram sockets that are not pairs (an MPICH rank's
//! abstract-name socket holds messages from the others), each with its sender's name.
//!
//! Checkpoint ([`peek`]): through a duplicate of the descriptor, `SO_PEEK_OFF` so each
//! peek reads the next datagram, bounded in count and bytes. The queues go in the
//! optional section UNIX_QUEUES ([`QUEUES`]): the socket itself stays a
//! `FileKind::UnixSocket` (FILES tag 13, whose layout is fixed), so an older reader
//! restores the socket without its queue.
//!
//! Restart ([`refill`]): once every socket exists, each datagram is sent again to its
//! socket's name, from the image's own socket bound to the sender's name if there is
//! one, else from a socket bound to that name for the moment (abstract names, and paths
//! nobody holds; the path is removed after), else from an unnamed socket when the sender
//! had no name. What cannot be sent again is a warning.

use crate::image::codec::MAX_FDS;
use crate::image::wire::{Dec, Enc};
use crate::model::{FileKind, Image, UnixDatagrams as Datagrams, UnixQueue};
use crate::state::OptionalSection;
use crate::sys;
use crate::warning::{Warning, WarningKind};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, UnixAddr, bind, getsockname,
    recvmsg, sendto, socket,
};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Most datagrams and bytes saved from one queue (the kernel bounds it by
/// `net.unix.max_dgram_qlen` and the socket buffer): a queue beyond either is refused
/// (E2BIG), so no peek loop runs unbounded.
const MAX_DATAGRAMS: usize = 1 << 16;
const MAX_BYTES: usize = 64 << 20;

/// Every datagram queued on `fd`, with its sender's name (a path, or an abstract name
/// with its leading NUL).
pub(crate) fn peek(fd: &OwnedFd) -> Result<Datagrams, Errno> {
    sys::process::set_peek_offset(fd.as_fd(), 0)?;
    let mut out = Vec::new();
    let peeked = peek_all(fd, &mut out);
    sys::process::set_peek_offset(fd.as_fd(), -1)?;
    peeked.map(|()| out)
}

fn peek_all(fd: &OwnedFd, out: &mut Datagrams) -> Result<(), Errno> {
    // A unix datagram is at most the sender's buffer (208 KiB by default, `wmem_max`).
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        if out.len() >= MAX_DATAGRAMS || total >= MAX_BYTES {
            return Err(Errno::E2BIG);
        }
        let (n, from) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            // As a SockaddrStorage: an unnamed sender comes with an empty address, which
            // nix's UnixAddr refuses with a panic.
            match recvmsg::<SockaddrStorage>(
                fd.as_raw_fd(),
                &mut iov,
                None,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => (
                    m.bytes,
                    m.address
                        .as_ref()
                        .and_then(|a| a.as_unix_addr())
                        .and_then(name_of),
                ),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        if n > buf.len() {
            // MSG_TRUNC: the datagram's real length. The peek offset has moved past the
            // part read, so it cannot be peeked again whole: refused.
            return Err(Errno::EMSGSIZE);
        }
        total += n;
        out.push((from, buf[..n].to_vec()));
    }
}

/// A unix address as the image records names: a path, or an abstract name with its
/// leading NUL; `None` unnamed.
fn name_of(a: &UnixAddr) -> Option<Vec<u8>> {
    if let Some(p) = a.path() {
        return Some(p.as_os_str().as_bytes().to_vec());
    }
    a.as_abstract().map(|n| {
        let mut v = vec![0u8];
        v.extend_from_slice(n);
        v
    })
}

fn addr_of(name: &[u8]) -> Result<UnixAddr, Errno> {
    match name.strip_prefix(b"\0") {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name),
        None => UnixAddr::new(std::ffi::OsStr::from_bytes(name)),
    }
}

/// Queue every saved datagram again (see the module header); `opened_by`: per process,
/// its PID and its descriptors by file index.
pub(crate) fn refill(
    imgs: &[&Image],
    opened_by: &[(i32, Vec<Option<OwnedFd>>)],
    warnings: &mut Vec<Warning>,
) {
    // The image's named unix datagram sockets, by name.
    let mut named: Vec<(&[u8], &OwnedFd)> = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        for (f, file) in img.files.iter().enumerate() {
            if let FileKind::UnixSocket {
                sock_type: libc::SOCK_DGRAM,
                name: Some(name),
                ..
            } = &file.kind
                && let Some(Some(fd)) = opened_by.get(i).and_then(|o| o.1.get(f))
            {
                named.push((name, fd));
            }
        }
    }
    for (i, img) in imgs.iter().enumerate() {
        for q in &img.unix_queues {
            let fd_num = img.fd_of(q.file as usize);
            let mut lost = |step: &'static str, error: Errno| {
                warnings.push(Warning::fd(
                    img.process.pid,
                    fd_num,
                    WarningKind::UnixQueueLost { step, error },
                ));
            };
            let Some(Some(sock)) = opened_by.get(i).and_then(|o| o.1.get(q.file as usize)) else {
                lost("the socket was not made again", Errno::EBADF);
                continue;
            };
            let Ok(to) = getsockname::<UnixAddr>(sock.as_raw_fd()) else {
                lost("getsockname", Errno::EBADF);
                continue;
            };
            if name_of(&to).is_none() {
                // Its name could not be bound again (a warning said so): nobody can
                // send to it.
                lost("sending to a socket without its name", Errno::EDESTADDRREQ);
                continue;
            }
            for (from, data) in &q.datagrams {
                let own = from
                    .as_deref()
                    .and_then(|f| named.iter().find(|(n, _)| *n == f).map(|(_, s)| *s));
                let sent = match (own, from) {
                    (Some(s), _) => send(s, data, &to),
                    (None, from) => send_from(from.as_deref(), data, &to),
                };
                if let Err((step, e)) = sent {
                    lost(step, e);
                }
            }
        }
    }
}

fn send(sock: &OwnedFd, data: &[u8], to: &UnixAddr) -> Result<(), (&'static str, Errno)> {
    let n = sendto(sock.as_raw_fd(), data, to, MsgFlags::MSG_DONTWAIT)
        .map_err(|e| ("queueing a datagram again", e))?;
    if n != data.len() {
        return Err(("queueing a datagram again", Errno::EMSGSIZE));
    }
    Ok(())
}

/// From a socket bound to `from` for the moment (unnamed when `None`).
fn send_from(from: Option<&[u8]>, data: &[u8], to: &UnixAddr) -> Result<(), (&'static str, Errno)> {
    let tmp = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ("socket", e))?;
    let Some(name) = from else {
        return send(&tmp, data, to);
    };
    let addr = addr_of(name).map_err(|e| ("a queued datagram's sender name", e))?;
    bind(tmp.as_raw_fd(), &addr).map_err(|e| ("binding to a queued datagram's sender", e))?;
    let sent = send(&tmp, data, to);
    if !name.starts_with(b"\0") {
        let _ = std::fs::remove_file(std::ffi::OsStr::from_bytes(name));
    }
    sent
}

/// The UNIX_QUEUES section: per unix datagram socket (by file index), its datagrams.
pub(crate) const QUEUES: OptionalSection = OptionalSection {
    kind: 0x8000_0011,
    name: "UNIX_QUEUES",
    encode: |image| {
        if image.unix_queues.is_empty() {
            return None;
        }
        let mut e = Enc::new();
        e.u64(image.unix_queues.len() as u64);
        for q in &image.unix_queues {
            e.u32(q.file);
            e.u64(q.datagrams.len() as u64);
            for (from, data) in &q.datagrams {
                e.bool(from.is_some());
                e.bytes(from.as_deref().unwrap_or_default());
                e.bytes(data);
            }
        }
        Some(e.into_vec())
    },
    decode: |data, image, _, cx| {
        let w = cx.wire();
        let mut d = Dec::new(data);
        let n = d.count(MAX_FDS).map_err(&w)?;
        for _ in 0..n {
            let file = d.u32().map_err(&w)?;
            let dgram = image.files.get(file as usize).is_some_and(|f| {
                matches!(
                    f.kind,
                    FileKind::UnixSocket {
                        sock_type: libc::SOCK_DGRAM,
                        ..
                    }
                )
            });
            if !dgram || image.unix_queues.iter().any(|q| q.file == file) {
                return Err(cx.invalid(format!(
                    "unix queue of file {file}, which is not a unix datagram socket"
                )));
            }
            let count = d.count(MAX_DATAGRAMS as u64).map_err(&w)?;
            let mut datagrams = Vec::with_capacity(count);
            let mut bytes = 0usize;
            for _ in 0..count {
                let named = d.bool().map_err(&w)?;
                let from = d.bytes().map_err(&w)?;
                // sun_path holds 108 bytes.
                if from.len() > 108 || named == from.is_empty() {
                    return Err(cx.invalid("unix datagram sender name out of range"));
                }
                let payload = d.bytes().map_err(&w)?.to_vec();
                bytes += payload.len();
                if bytes > MAX_BYTES {
                    return Err(cx.invalid("unix datagram queue too large"));
                }
                datagrams.push((named.then(|| from.to_vec()), payload));
            }
            image.unix_queues.push(UnixQueue { file, datagrams });
        }
        d.finish().map_err(&w)?;
        Ok(())
    },
};
