//! Crafted seed images of the `image` target, written with the engine's own [`Writer`]:
//! small images that between them hold every kind of record the reader decodes (every
//! file kind, locks, timers, shared memory, shared descriptions, zombies, several
//! processes, compressed and plain sections).

use lifeboat_engine::image::container::ContainerError;
use lifeboat_engine::image::{ImageError, Writer};
use lifeboat_engine::model::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Writes the crafted images into `dir` (which must exist) and returns their paths.
pub fn write_images(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let root = process(100, 1, 0x11);
    let mut written = vec![
        write(&dir.join("crafted-one.lbctx"), false, &[&root], &[])?,
        write(&dir.join("crafted-one-zstd.lbctx"), true, &[&root], &[])?,
    ];

    let mut child = process(101, 100, 0x22);
    child.regions[1].kind = RegionKind::SharedAnon;
    child.regions[1].shared = true;
    child.shared_anon = vec![SharedAnonId {
        start: child.regions[1].start,
        ino: 4242,
    }];
    child.shared_files = vec![SharedFile {
        file: 0,
        with_pid: 100,
        with_file: 0,
    }];
    let zombie = Zombie {
        pid: 102,
        ppid: 100,
        pgid: 0,
        sid: 0,
        status: 3 << 8,
    };
    written.push(write(
        &dir.join("crafted-tree.lbctx"),
        false,
        &[&root, &child],
        &[zombie],
    )?);

    let mut bare = process(200, 1, 0);
    bare.pagemap.clear();
    bare.files.clear();
    bare.fds.clear();
    bare.locks.clear();
    bare.unix_queues.clear();
    bare.timers = Timers::default();
    bare.threads.truncate(1);
    written.push(write(
        &dir.join("crafted-bare.lbctx"),
        false,
        &[&bare],
        &[],
    )?);
    Ok(written)
}

/// Writes one image; each process's pages are one byte value repeated.
fn write(
    path: &Path,
    compress: bool,
    images: &[&Image],
    zombies: &[Zombie],
) -> Result<PathBuf, ImageError> {
    let mut w = Writer::create(path, compress)?;
    w.meta(&images[0].meta)?;
    w.zombies(zombies)?;
    for img in images {
        w.process(img)?;
        let pages: u64 = img.pagemap.iter().map(|r| r.pages).sum();
        let byte = (img.process.pid & 0xff) as u8;
        let mut s = w.pages()?;
        s.write_all(&vec![byte; (pages * PAGE_SIZE) as usize])
            .map_err(|source| ContainerError::Write {
                path: path.to_owned(),
                source,
            })?;
        s.finish()?;
        w.pagemap(&img.pagemap)?;
    }
    w.finish()?;
    Ok(path.to_owned())
}

/// A process with one or two of every kind of record.
fn process(pid: i32, ppid: i32, seed: u8) -> Image {
    let mut regs = Regs::default();
    regs.0[reg::RIP] = 0x40_1000;
    regs.0[reg::RSP] = 0x7ff0_0000_0ff0;
    let thread = |tid| Thread {
        tid,
        comm: format!("t{tid}"),
        regs,
        xstate: vec![seed; 576],
        sigmask: 1 << 9,
        ..Thread::default()
    };
    let region = |start: u64, pages: u64, prot: u32, kind: RegionKind| Region {
        start,
        end: start + pages * PAGE_SIZE,
        prot,
        shared: false,
        offset: 0,
        kind,
        advice: 0,
        growsdown: false,
    };
    let file = |flags: u32, kind: FileKind| OpenFile {
        flags,
        pos: 0,
        kind,
    };
    let files = vec![
        file(
            0o2,
            FileKind::Regular {
                path: "/tmp/log".into(),
                identity: FileIdentity {
                    dev: 2049,
                    ino: 77,
                    size: 5,
                    mtime_ns: 1_700_000_000_000_000_000,
                    mode: 0o100644,
                },
                content: None,
            },
        ),
        file(
            0o2,
            FileKind::Regular {
                path: "/tmp/gone".into(),
                identity: FileIdentity::default(),
                content: Some(b"deleted but open".to_vec()),
            },
        ),
        file(
            0o200000,
            FileKind::Directory {
                path: "/tmp".into(),
            },
        ),
        file(
            0o2,
            FileKind::Device {
                path: "/dev/null".into(),
                rdev: 0x103,
            },
        ),
        file(
            0,
            FileKind::Pipe {
                ino: 9,
                read_end: true,
                data: b"abc".to_vec(),
                capacity: 65536,
            },
        ),
        file(
            1,
            FileKind::Pipe {
                ino: 9,
                read_end: false,
                data: Vec::new(),
                capacity: 65536,
            },
        ),
        file(
            0,
            FileKind::Fifo {
                path: "/tmp/fifo".into(),
                data: b"x".to_vec(),
            },
        ),
        file(
            0o2,
            FileKind::EventFd {
                count: 3,
                semaphore: true,
            },
        ),
        file(
            0o2,
            FileKind::TimerFd {
                clock: 1,
                ticks: 2,
                value: (0, 5_000_000),
                interval: (0, 20_000_000),
            },
        ),
        file(0o2, FileKind::SignalFd { mask: 1 << 9 }),
        file(
            0o2,
            FileKind::Epoll {
                watches: vec![EpollWatch {
                    fd: 10,
                    events: 0x8000_0001,
                    data: 0x71,
                }],
            },
        ),
        file(
            0o2,
            FileKind::UnixPair {
                ino: 500,
                peer: 501,
                sock_type: 1,
                queued: vec![b"hello".to_vec()],
            },
        ),
        file(
            0o2,
            FileKind::UnixPair {
                ino: 501,
                peer: 500,
                sock_type: 1,
                queued: Vec::new(),
            },
        ),
        file(
            0o2,
            FileKind::TcpListen {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                backlog: 128,
            },
        ),
        file(
            0o2,
            FileKind::Inotify {
                watches: vec![InotifyWatch {
                    wd: 1,
                    mask: 0x100,
                    path: "/tmp".into(),
                }],
            },
        ),
        file(0o2, FileKind::TcpClosed { v6: true }),
        file(
            0o2,
            FileKind::TcpEstablished(Box::new(TcpConnection {
                ino: 9001,
                local: "127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}")),
                peer: "127.0.0.1:6379".parse().unwrap_or_else(|e| panic!("{e}")),
                snd_seq: 1000,
                rcv_seq: 2000,
                send_queue: b"sent, then unsent".to_vec(),
                unsent: 6,
                recv_queue: b"+OK\r\n".to_vec(),
                mss: 65483,
                wscale: Some((7, 7)),
                sack: true,
                timestamps: true,
                ts: 123_456,
                window: [2000, 65536, 65536, 65536, 2000],
                options: SocketOptions {
                    nodelay: true,
                    keepalive: true,
                    keep_idle: 77,
                    linger: Some(5),
                    ..SocketOptions::default()
                },
            })),
        ),
        file(
            0o2,
            FileKind::Udp(Box::new(UdpSocket {
                protocol: 17, // IPPROTO_UDP
                local: "[::1]:5353".parse().unwrap_or_else(|e| panic!("{e}")),
                peer: Some("[::1]:53".parse().unwrap_or_else(|e| panic!("{e}"))),
                queued: vec![(
                    "[::1]:53".parse().unwrap_or_else(|e| panic!("{e}")),
                    b"answer".to_vec(),
                )],
                options: SocketOptions {
                    reuse_addr: true,
                    broadcast: true,
                    ..SocketOptions::default()
                },
            })),
        ),
        file(
            0o2,
            FileKind::UnixSocket {
                sock_type: 2, // SOCK_DGRAM
                name: Some(b"\0fuzz-rank-0".to_vec()),
                listen: None,
            },
        ),
    ];
    let unix_dgram = (files.len() - 1) as u32;
    let fds = (0..files.len())
        .map(|i| Fd {
            fd: i as i32,
            cloexec: i % 2 == 1,
            file: i as u32,
        })
        .collect();
    Image {
        meta: Meta {
            engine_version: "0.1.0".into(),
            kernel: "6.1.0".into(),
            hostname: "fuzz".into(),
            created_unix: 1_700_000_000,
            frozen_us: 1500,
        },
        process: Process {
            pid,
            ppid,
            pgid: pid,
            sid: 1,
            comm: "app".into(),
            cmdline: vec!["app".into(), "--x".into()],
            exe: "/bin/app".into(),
            cwd: "/tmp".into(),
            umask: 0o22,
            creds: Creds {
                uid: [1000; 4],
                gid: [1000; 4],
                groups: vec![1000, 27],
            },
            rlimits: vec![Rlimit {
                resource: 7,
                soft: 1024,
                hard: 4096,
            }],
            mm: MmLayout {
                brk: 0x60_0000,
                auxv: vec![6, 4096, 0, 0],
                ..MmLayout::default()
            },
            sigactions: vec![SigAction {
                sig: 10,
                handler: 0x40_2000,
                flags: 4,
                restorer: 0x40_3000,
                mask: 0,
            }],
            ..Process::default()
        },
        threads: vec![thread(pid), thread(pid + 1000)],
        regions: vec![
            region(
                0x40_0000,
                2,
                5,
                RegionKind::File {
                    path: "/bin/app".into(),
                    identity: FileIdentity::default(),
                },
            ),
            region(0x60_0000, 4, 3, RegionKind::Heap),
            region(0x7ff0_0000_0000, 1, 3, RegionKind::Stack),
            region(0x7fff_f000_0000, 2, 5, RegionKind::Vdso),
        ],
        files,
        fds,
        pagemap: vec![
            PageRun {
                addr: 0x60_1000,
                pages: 2,
            },
            PageRun {
                addr: 0x7ff0_0000_0000,
                pages: 1,
            },
        ],
        shared_anon: Vec::new(),
        shared_files: Vec::new(),
        locks: vec![
            FileLock {
                fd: 0,
                kind: LockKind::Posix,
                write: true,
                start: 0,
                end: Some(99),
            },
            FileLock {
                fd: 0,
                kind: LockKind::Flock,
                write: false,
                start: 0,
                end: None,
            },
        ],
        timers: Timers {
            itimers: [((0, 100_000), (1, 0)), ((0, 0), (0, 0)), ((0, 0), (0, 0))],
            posix: vec![PosixTimer {
                id: 0,
                clock: 1,
                notify: 0,
                signo: 14,
                tid: pid,
                sival: 7,
                value: (1, 0),
                interval: (0, 0),
            }],
        },
        socket_shutdown: Vec::new(),
        unix_queues: vec![UnixQueue {
            file: unix_dgram,
            datagrams: vec![
                (Some(b"\0fuzz-rank-1".to_vec()), b"from rank 1".to_vec()),
                (None, b"from nobody".to_vec()),
            ],
        }],
    }
}
