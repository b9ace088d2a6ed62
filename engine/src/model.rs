//! The state of a checkpointed process, as it is written to and read from a context file.
//!
//! These are plain data: `dump` fills them from a frozen process, `image` encodes them,
//! `restore` validates and applies them. Nothing here touches the system.

/// Size of one page on x86-64; the engine refuses images taken with another size.
pub const PAGE_SIZE: u64 = 4096;
/// Number of classic and real-time signals (1..=64).
pub const NSIG: u32 = 64;
/// Size of a kernel `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

/// Everything about one process except its page contents, which are streamed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Where and when the image was taken.
    pub meta: Meta,
    /// Process-wide state.
    pub process: Process,
    /// Every thread, the thread-group leader first.
    pub threads: Vec<Thread>,
    /// Every memory region in address order.
    pub regions: Vec<Region>,
    /// Open file descriptions, referred to by index from `fds`.
    pub files: Vec<OpenFile>,
    /// The descriptor table.
    pub fds: Vec<Fd>,
    /// Runs of saved pages, in the order their bytes appear in the page data.
    pub pagemap: Vec<PageRun>,
    /// Identity of each shared anonymous region (the shmem inode behind it), so that
    /// processes of one image that share such memory share it again after restart.
    pub shared_anon: Vec<SharedAnonId>,
    /// Open file descriptions this process shares with a process earlier in the image
    /// (inherited across fork: one offset, one set of flags).
    pub shared_files: Vec<SharedFile>,
    /// File locks the process holds (flock, POSIX record locks, OFD locks).
    pub locks: Vec<FileLock>,
    /// Interval timers and POSIX timers.
    pub timers: Timers,
    /// Unix socket pair ends that were shut down (`shutdown(2)`).
    pub socket_shutdown: Vec<SocketShutdown>,
    /// Datagrams waiting on unix datagram sockets that are not pairs.
    pub unix_queues: Vec<UnixQueue>,
}

impl Image {
    /// The first descriptor number through which the process holds open file `file`
    /// (an index into [`Image::files`]), or -1 when none does: what warnings and errors
    /// about that file name.
    pub fn fd_of(&self, file: usize) -> i32 {
        self.fds
            .iter()
            .find(|d| d.file as usize == file)
            .map_or(-1, |d| d.fd)
    }
}

/// Datagrams, oldest first, each with the name of the unix socket that sent it (`None`:
/// an unnamed sender).
pub type UnixDatagrams = Vec<(Option<Vec<u8>>, Vec<u8>)>;

/// The datagrams waiting on an unconnected unix datagram socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixQueue {
    /// Index into [`Image::files`] (a [`FileKind::UnixSocket`]).
    pub file: u32,
    /// Oldest first.
    pub datagrams: UnixDatagrams,
}

/// A socket shut down in one or both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketShutdown {
    /// Index into [`Image::files`] (a unix socket pair end).
    pub file: u32,
    /// Bit 0: no more receptions; bit 1: no more sending (the kernel's `sk_shutdown`).
    pub how: u8,
}

/// A process of the scope that had exited but was not yet reaped by its parent: restart
/// recreates it as a zombie, so that its parent's wait() finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zombie {
    /// PID.
    pub pid: i32,
    /// Parent (in the image).
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Exit status as waitpid(2) reports it.
    pub status: i32,
}

/// The timers of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF` as `(interval, value)`, each
    /// `(seconds, microseconds)`. Both zero: disarmed. A zero value with an interval: a
    /// periodic timer whose tick is pending, re-armed when the tick is delivered.
    pub itimers: [((i64, i64), (i64, i64)); 3],
    /// `timer_create(2)` timers.
    pub posix: Vec<PosixTimer>,
}

impl Timers {
    /// Whether there is anything to restore.
    pub fn is_empty(&self) -> bool {
        self.posix.is_empty() && self.itimers.iter().all(|t| *t == ((0, 0), (0, 0)))
    }
}

/// A POSIX timer (`/proc/PID/timers` plus `timer_gettime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixTimer {
    /// Timer ID, as the process knows it.
    pub id: i32,
    /// `CLOCK_*`.
    pub clock: i32,
    /// `sigev_notify`: `SIGEV_SIGNAL` 0, `SIGEV_NONE` 1, `SIGEV_THREAD_ID` 4.
    pub notify: i32,
    /// Signal sent.
    pub signo: i32,
    /// Thread signalled (`SIGEV_THREAD_ID`), else 0.
    pub tid: i32,
    /// `sigev_value` delivered with the signal.
    pub sival: u64,
    /// Time to the next expiration `(s, ns)`; zero when disarmed.
    pub value: (i64, i64),
    /// Period `(s, ns)`.
    pub interval: (i64, i64),
}

/// Which kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `flock(2)`: belongs to the open file description.
    Flock,
    /// `fcntl(F_SETLK)`: belongs to the process.
    Posix,
    /// `fcntl(F_OFD_SETLK)`: belongs to the open file description.
    Ofd,
}

/// A lock held on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    /// A descriptor of the locked file (its first one in the process).
    pub fd: i32,
    /// flock, POSIX or OFD.
    pub kind: LockKind,
    /// Exclusive (write) rather than shared (read).
    pub write: bool,
    /// First byte locked (0 for flock).
    pub start: u64,
    /// Last byte locked, or `None` for "to the end of the file, however long".
    pub end: Option<u64>,
}

/// An open file description shared with an earlier process of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFile {
    /// Index into this process's `files`.
    pub file: u32,
    /// The earlier process.
    pub with_pid: i32,
    /// Index into that process's `files`.
    pub with_file: u32,
}

/// The shared-memory object behind a shared anonymous region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedAnonId {
    /// Start of the region.
    pub start: u64,
    /// Inode of its shmem object (`/dev/zero (deleted)` in `/proc/PID/maps`).
    pub ino: u64,
}

/// Provenance of an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Version of the engine that wrote the image.
    pub engine_version: String,
    /// Kernel release the process ran on (`uname -r`).
    pub kernel: String,
    /// Host name of the node.
    pub hostname: String,
    /// Seconds since the epoch at checkpoint time.
    pub created_unix: u64,
    /// Wall time the processes were frozen, in microseconds: from the freeze until the
    /// image's last byte was written (the FROZEN section, which readers prefer); images
    /// without it record the time until their metadata was written.
    pub frozen_us: u64,
}

/// Real, effective, saved and filesystem IDs, plus supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Creds {
    /// UIDs: real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// GIDs: real, effective, saved, filesystem.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// The `mm` fields the kernel reports in `/proc/PID/stat` and restores with `PR_SET_MM_MAP`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MmLayout {
    /// Start of the text segment.
    pub start_code: u64,
    /// End of the text segment.
    pub end_code: u64,
    /// Start of the data segment.
    pub start_data: u64,
    /// End of the data segment.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current program break.
    pub brk: u64,
    /// Start of the main stack.
    pub start_stack: u64,
    /// Start of the argument strings.
    pub arg_start: u64,
    /// End of the argument strings.
    pub arg_end: u64,
    /// Start of the environment strings.
    pub env_start: u64,
    /// End of the environment strings.
    pub env_end: u64,
    /// The auxiliary vector as `u64` words (pairs of type and value).
    pub auxv: Vec<u64>,
}

impl MmLayout {
    /// The layout words in `struct prctl_mm_map` order (and the PROCESS record's): code,
    /// data, brk start, brk, stack start, arguments, environment.
    pub fn words(&self) -> [u64; 11] {
        [
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
        ]
    }

    /// The layout from its words (in [`MmLayout::words`] order) and the auxiliary vector.
    pub fn from_words(w: [u64; 11], auxv: Vec<u64>) -> MmLayout {
        let [
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
        ] = w;
        MmLayout {
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
            auxv,
        }
    }
}

/// A resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A signal disposition as the kernel's `struct sigaction` (x86-64 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigAction {
    /// Signal number, 1..=64.
    pub sig: u32,
    /// Handler address, or 0 (`SIG_DFL`) / 1 (`SIG_IGN`).
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// `sa_restorer` (the libc trampoline that calls `rt_sigreturn`).
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// A queued signal: the kernel's 128-byte `siginfo_t`, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigInfo(pub [u8; SIGINFO_SIZE]);

impl SigInfo {
    /// `si_signo`.
    pub fn signo(&self) -> i32 {
        i32::from_ne_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
    /// `si_code`.
    pub fn code(&self) -> i32 {
        i32::from_ne_bytes([self.0[8], self.0[9], self.0[10], self.0[11]])
    }
}

/// Process-wide state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Process {
    /// PID (in the checkpointer's PID namespace).
    pub pid: i32,
    /// Parent PID at checkpoint time.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// `comm` of the process.
    pub comm: String,
    /// Command line, lossily decoded.
    pub cmdline: Vec<String>,
    /// Path of the executable.
    pub exe: String,
    /// Working directory.
    pub cwd: String,
    /// File mode creation mask.
    pub umask: u32,
    /// `personality(2)` flags.
    pub personality: u32,
    /// Credentials.
    pub creds: Creds,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Address-space layout fields.
    pub mm: MmLayout,
    /// Dispositions of every signal but SIGKILL and SIGSTOP.
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole process.
    pub shared_pending: Vec<SigInfo>,
    /// The process was in a group stop (SIGSTOP/SIGTSTP) when frozen.
    pub stopped: bool,
}

/// x86-64 general registers in the order of the kernel's `struct user_regs_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs(pub [u64; 27]);

/// Field indices into [`Regs`].
#[allow(missing_docs)]
pub mod reg {
    pub const R15: usize = 0;
    pub const R14: usize = 1;
    pub const R13: usize = 2;
    pub const R12: usize = 3;
    pub const RBP: usize = 4;
    pub const RBX: usize = 5;
    pub const R11: usize = 6;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RCX: usize = 11;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const CS: usize = 17;
    pub const EFLAGS: usize = 18;
    pub const RSP: usize = 19;
    pub const SS: usize = 20;
    pub const FS_BASE: usize = 21;
    pub const GS_BASE: usize = 22;
    pub const DS: usize = 23;
    pub const ES: usize = 24;
    pub const FS: usize = 25;
    pub const GS: usize = 26;
}

impl Regs {
    /// Instruction pointer.
    pub fn rip(&self) -> u64 {
        self.0[reg::RIP]
    }
    /// Stack pointer.
    pub fn rsp(&self) -> u64 {
        self.0[reg::RSP]
    }
}

/// A thread's alternate signal stack (`stack_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AltStack {
    /// Base of the stack.
    pub sp: u64,
    /// `SS_*` flags.
    pub flags: i32,
    /// Size in bytes.
    pub size: u64,
}

/// A thread's rseq registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rseq {
    /// Address of `struct rseq`.
    pub ptr: u64,
    /// Registered length.
    pub len: u32,
    /// Abort signature.
    pub sig: u32,
}

/// Per-thread state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Thread {
    /// Thread ID.
    pub tid: i32,
    /// Thread name (`comm`).
    pub comm: String,
    /// General registers, with an interrupted system call already turned into its restart.
    pub regs: Regs,
    /// The XSAVE area (x87, SSE, AVX, AVX-512, ...), as PTRACE_GETREGSET returns it.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals pending for this thread only.
    pub pending: Vec<SigInfo>,
    /// rseq registration, if any.
    pub rseq: Option<Rseq>,
    /// Robust futex list head and length.
    pub robust_list: (u64, u64),
    /// `clear_child_tid` (set_tid_address), which `pthread_join` relies on.
    pub clear_child_tid: u64,
    /// Alternate signal stack.
    pub altstack: AltStack,
}

/// Identity of a file, to notice it changed between checkpoint and restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// `st_mode`.
    pub mode: u32,
}

/// What backs a memory region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionKind {
    /// Private anonymous memory.
    Anon,
    /// The `brk` heap.
    Heap,
    /// The main thread's stack.
    Stack,
    /// Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`).
    SharedAnon,
    /// A file mapping, by reference.
    File {
        /// Path of the file.
        path: String,
        /// What the file was at checkpoint time.
        identity: FileIdentity,
    },
    /// `[vdso]`: not saved, moved to its address.
    Vdso,
    /// `[vvar]`: not saved, moved to its address.
    Vvar,
    /// `[vvar_vclock]`: not saved, moved to its address.
    VvarVclock,
    /// `[vsyscall]`: fixed by the kernel, left alone.
    Vsyscall,
}

/// `madvise` advice recorded from `VmFlags` and re-applied on restart.
pub mod advice {
    /// `dd`: MADV_DONTDUMP.
    pub const DONTDUMP: u32 = 1 << 0;
    /// `dc`: MADV_DONTFORK.
    pub const DONTFORK: u32 = 1 << 1;
    /// `wf`: MADV_WIPEONFORK.
    pub const WIPEONFORK: u32 = 1 << 2;
    /// `hg`: MADV_HUGEPAGE.
    pub const HUGEPAGE: u32 = 1 << 3;
    /// `nh`: MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: u32 = 1 << 4;
    /// `mg`: MADV_MERGEABLE.
    pub const MERGEABLE: u32 = 1 << 5;
    /// All known bits.
    pub const ALL: u32 = (1 << 6) - 1;
}

/// One memory region (a VMA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `PROT_READ | PROT_WRITE | PROT_EXEC` bits.
    pub prot: u32,
    /// `MAP_SHARED` (otherwise private).
    pub shared: bool,
    /// Offset into the file, in bytes.
    pub offset: u64,
    /// What backs it.
    pub kind: RegionKind,
    /// `advice::*` bits.
    pub advice: u32,
    /// `MAP_GROWSDOWN`.
    pub growsdown: bool,
}

impl Region {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether the region is empty (never true for a valid region).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// Whether the kernel provides this region itself.
    pub fn is_special(&self) -> bool {
        matches!(
            self.kind,
            RegionKind::Vdso | RegionKind::Vvar | RegionKind::VvarVclock | RegionKind::Vsyscall
        )
    }
}

/// What an open file description refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file, by reference; `content` is set when it was deleted while open.
    Regular {
        /// Path at checkpoint time (without the ` (deleted)` suffix).
        path: String,
        /// What the file was at checkpoint time.
        identity: FileIdentity,
        /// Whole content of a deleted file.
        content: Option<Vec<u8>>,
    },
    /// A directory.
    Directory {
        /// Path.
        path: String,
    },
    /// A character device such as /dev/null or a terminal.
    Device {
        /// Path.
        path: String,
        /// Device number.
        rdev: u64,
    },
    /// One end of an anonymous pipe.
    Pipe {
        /// Pipe inode, shared by both ends.
        ino: u64,
        /// This description is the read end.
        read_end: bool,
        /// Bytes buffered in the pipe (saved once, on the read end).
        data: Vec<u8>,
        /// Pipe capacity (`F_GETPIPE_SZ`).
        capacity: u32,
    },
    /// A named pipe.
    Fifo {
        /// Path.
        path: String,
        /// Bytes buffered in it.
        data: Vec<u8>,
    },
    /// An eventfd (`anon_inode:[eventfd]`).
    EventFd {
        /// Its counter.
        count: u64,
        /// `EFD_SEMAPHORE`.
        semaphore: bool,
    },
    /// A timerfd (`anon_inode:[timerfd]`).
    TimerFd {
        /// `CLOCK_*` id.
        clock: i32,
        /// Expirations not yet read.
        ticks: u64,
        /// Time to the next expiration `(s, ns)`; zero when disarmed.
        value: (i64, i64),
        /// Period `(s, ns)`; zero for a one-shot timer.
        interval: (i64, i64),
    },
    /// A signalfd (`anon_inode:[signalfd]`).
    SignalFd {
        /// The signals it reads (bit N-1 for signal N).
        mask: u64,
    },
    /// An epoll instance (`anon_inode:[eventpoll]`) with its interest list.
    Epoll {
        /// Watched descriptors.
        watches: Vec<EpollWatch>,
    },
    /// One end of a connected AF_UNIX socket pair whose other end is in the image too.
    UnixPair {
        /// Socket inode.
        ino: u64,
        /// The peer's inode.
        peer: u64,
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        sock_type: i32,
        /// What waits to be read on this end: one chunk for a stream, one per datagram.
        queued: Vec<Vec<u8>>,
    },
    /// An AF_UNIX socket that is not one end of a pair in the image: unconnected (maybe
    /// bound to a name) or listening with no connection pending. Restored as a new socket
    /// of the type, bound to the name again and listening again.
    UnixSocket {
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        sock_type: i32,
        /// The address it is bound to: a path, or an abstract name with its leading NUL.
        name: Option<Vec<u8>>,
        /// Listening, with this backlog.
        listen: Option<u32>,
    },
    /// A listening TCP socket, bound and listening again on restart.
    TcpListen {
        /// Local address.
        addr: std::net::SocketAddr,
        /// Accept backlog.
        backlog: u32,
    },
    /// An inotify instance with its watches (queued events are not kept).
    Inotify {
        /// Watches, by watch descriptor.
        watches: Vec<InotifyWatch>,
    },
    /// A TCP connection that could not be saved in repair mode (no CAP_NET_ADMIN):
    /// restarted as an unconnected socket, with a warning, as BLCR did.
    TcpClosed {
        /// IPv6 rather than IPv4.
        v6: bool,
    },
    /// An established TCP connection, saved in repair mode (`TCP_REPAIR`) and restored
    /// as the same connection: no packet goes on the wire for either.
    TcpEstablished(Box<TcpConnection>),
    /// A UDP, UDP-Lite or ping socket: bound, connected, with the datagrams waiting to
    /// be read.
    Udp(Box<UdpSocket>),
}

/// Socket options of a TCP or UDP socket (`state/sockets/options.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_REUSEADDR.
    pub reuse_addr: bool,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// SO_LINGER, when on: seconds.
    pub linger: Option<u32>,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// IP_FREEBIND.
    pub freebind: bool,
    /// SO_BROADCAST.
    pub broadcast: bool,
    /// TCP_KEEPIDLE, seconds (0: not read).
    pub keep_idle: u32,
    /// TCP_KEEPINTVL, seconds (0: not read).
    pub keep_interval: u32,
    /// TCP_KEEPCNT (0: not read).
    pub keep_count: u32,
    /// TCP_USER_TIMEOUT, milliseconds.
    pub user_timeout: u32,
}

/// A UDP socket (`/proc/PID/net/udp`, its queue peeked with the senders' addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSocket {
    /// `IPPROTO_UDP`, `IPPROTO_UDPLITE`, or `IPPROTO_ICMP`/`IPPROTO_ICMPV6` for a ping
    /// socket (whose "port" is its ICMP identifier).
    pub protocol: i32,
    /// Local address; port 0 when it was never bound.
    pub local: std::net::SocketAddr,
    /// The peer it is connected to.
    pub peer: Option<std::net::SocketAddr>,
    /// Datagrams waiting to be read, oldest first, each with its sender.
    pub queued: Vec<(std::net::SocketAddr, Vec<u8>)>,
    /// Its options.
    pub options: SocketOptions,
}

/// An established TCP connection as repair mode reads it (`net/ipv4/tcp.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnection {
    /// Socket inode at checkpoint: a connection several processes hold is made once.
    pub ino: u64,
    /// Local address.
    pub local: std::net::SocketAddr,
    /// Peer address.
    pub peer: std::net::SocketAddr,
    /// `write_seq`: the sequence number after the last byte the process wrote.
    pub snd_seq: u32,
    /// `rcv_nxt`: the sequence number after the last byte received.
    pub rcv_seq: u32,
    /// The send queue: sent and not acknowledged, then not sent yet.
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never sent.
    pub unsent: u32,
    /// The receive queue: received, not read by the process yet.
    pub recv_queue: Vec<u8>,
    /// Maximum segment size.
    pub mss: u32,
    /// Window scaling negotiated: (send, receive) shifts, if any.
    pub wscale: Option<(u8, u8)>,
    /// SACK negotiated.
    pub sack: bool,
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// The timestamp clock (`TCP_TIMESTAMP`).
    pub ts: u32,
    /// `TCP_REPAIR_WINDOW`: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
    /// Its options.
    pub options: SocketOptions,
}

/// One inotify watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    /// Watch descriptor, as the process knows it.
    pub wd: i32,
    /// `IN_*` event mask.
    pub mask: u32,
    /// Path of the watched file or directory, found from its file handle.
    pub path: String,
}

/// One entry of an epoll interest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollWatch {
    /// Descriptor number watched, in the process.
    pub fd: i32,
    /// `EPOLL*` event bits, flags such as `EPOLLET` included.
    pub events: u32,
    /// The user data returned with events.
    pub data: u64,
}

/// An open file description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFile {
    /// `O_*` status flags and access mode (as in fdinfo `flags`, without `O_CLOEXEC`).
    pub flags: u32,
    /// File offset.
    pub pos: i64,
    /// What it refers to.
    pub kind: FileKind,
}

/// One descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fd {
    /// Descriptor number.
    pub fd: i32,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
    /// Index into [`Image::files`].
    pub file: u32,
}

/// A run of consecutive saved pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// Address of the first page.
    pub addr: u64,
    /// Number of pages.
    pub pages: u64,
}
