//! Real runtimes after a restart: the signals they handle still reach their handlers.
//!
//! Each program runs twice: once uninterrupted, once checkpointed with `--kill` at a
//! point where it waits, restarted, and driven on by the same signals. Both runs write
//! their stdout to a file (restored by reference, at its offset); the files must be
//! byte-identical and the program must exit 0 through its own handler.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Waits until `file` holds a line `line`, printed by the job of PID `pid`, which
/// `ended` says has not ended (the job, or the restarter that waits for it).
fn wait_line(file: &Path, line: &str, pid: i32, mut ended: impl FnMut() -> Option<ExitStatus>) {
    wait_until_within(
        &format!("{} holds the line {line:?}", file.display()),
        TIMEOUT,
        || {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if text.lines().any(|l| l == line) {
                return true;
            }
            if let Some(status) = ended() {
                panic!(
                    "ended ({status}) before printing {line:?}; it printed:\n{text}\n\
                     its standard error:\n{}",
                    stderr_of(file)
                );
            }
            false
        },
        || {
            format!(
                "it printed:\n{}\nits threads:\n{}",
                std::fs::read_to_string(file).unwrap_or_default(),
                describe_threads(pid)
            )
        },
    );
}

/// What the job whose stdout is `out` wrote to its standard error (`drive` sends it to a
/// file beside its stdout, so a restored process writes there too), or why it cannot be
/// read.
fn stderr_of(out: &Path) -> String {
    let err = out.with_extension("err");
    std::fs::read_to_string(&err).unwrap_or_else(|e| format!("({}: {e})", err.display()))
}

/// Waits until the job of PID `pid` has ended, as `ended` says (the job itself, or the
/// restarter that waits for it), with exit status 0.
fn wait_exit(what: &str, out: &Path, pid: i32, mut ended: impl FnMut() -> Option<ExitStatus>) {
    let mut status = None;
    wait_until_within(
        &format!("{what} ends"),
        TIMEOUT,
        || {
            status = ended();
            status.is_some()
        },
        || format!("its threads:\n{}", describe_threads(pid)),
    );
    let status = status.expect("the wait ended with a status");
    assert!(
        status.success(),
        "{what} ended with {status}; its standard error:\n{}",
        stderr_of(out)
    );
}

/// A step of the protocol that drives a program: wait for a line, then send a signal.
type Step = (&'static str, Signal);

/// Run `cmd` with stdout to `out`, driving it with `steps`; with `checkpoint_at`, the
/// process is checkpointed with `--kill` when that line appears and restarted, and the
/// rest of the protocol goes to the restarted process.
/// `scope`: the checkpoint's scope option (`--tree` for a job of several processes), or
/// nothing for the one process.
fn drive(
    dir: &Path,
    name: &str,
    mut cmd: Command,
    steps: &[Step],
    checkpoint_at: Option<&str>,
    scope: &[&str],
) {
    let out = dir.join(format!("{name}.out"));
    let err = out.with_extension("err");
    cmd.stderr(
        std::fs::File::create(&err)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", err.display())),
    );
    let mut job = Background::to_file(cmd, &out, name);
    let pid = job.pid();
    let mut restarted: Option<Proc> = None;
    for (line, sig) in steps {
        match restarted.as_mut() {
            Some(r) => wait_line(&out, line, pid, || r.try_status()),
            None => wait_line(&out, line, pid, || job.try_status()),
        }
        if checkpoint_at == Some(*line) && restarted.is_none() {
            // A job of several processes: its other processes, killed with it, are
            // orphans whose PIDs stay taken until they are reaped, and PID 1 of a bare PID
            // namespace (CI's `unshare --pid`) may never reap them. This test process
            // takes them (a subreaper) and reaps each, so the restart gets its PIDs back.
            let others = if scope.is_empty() {
                Vec::new()
            } else {
                nix::sys::prctl::set_child_subreaper(true).unwrap();
                let mut all = children_of(pid);
                let mut i = 0;
                while i < all.len() {
                    all.extend(children_of(all[i]));
                    i += 1;
                }
                all
            };
            let image = dir.join(format!("{name}.ctx"));
            let started = Instant::now();
            let pid_s = pid.to_string();
            let mut args = vec!["checkpoint", "--kill", "-q", "-f", path_str(&image)];
            args.extend_from_slice(scope);
            args.push(&pid_s);
            lifeboat_in(dir, &args).assert_success(&format!("checkpoint of {name}"));
            // No checkpoint of these small programs loops or waits: a few hundred ms.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "checkpoint of {name} took {:?}",
                started.elapsed()
            );
            job.wait();
            for other in others {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(other), None);
            }
            let mut cmd = Command::new(lifeboat_bin());
            cmd.arg("restart").arg(&image);
            let r = Proc::spawn_no_input(cmd, &format!("the restart of {name}"));
            // It says "restarted ..." once the process runs (with its PID back); signals
            // are sent after that, like a user would.
            r.wait_stderr("lifeboat: restarted");
            restarted = Some(r);
        }
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), *sig) {
            let told = restarted
                .as_ref()
                .map(Proc::stderr_text)
                .unwrap_or_default();
            panic!("cannot send {sig} to {name} (PID {pid}): {e}; the restarter said:\n{told}");
        }
    }
    match restarted.as_mut() {
        Some(r) => wait_exit(&format!("restarted {name}"), &out, pid, || r.try_status()),
        None => wait_exit(name, &out, pid, || job.try_status()),
    }
}

/// The uninterrupted run and the restarted run of one program print the same bytes.
fn same_as_uninterrupted(
    name: &str,
    cmd: impl Fn() -> Command,
    steps: &[Step],
    checkpoint_at: &str,
) {
    same_as_uninterrupted_in(&[], name, cmd, steps, checkpoint_at);
}

/// [`same_as_uninterrupted`] with the checkpoint's `scope` (e.g. `--tree`).
fn same_as_uninterrupted_in(
    scope: &[&str],
    name: &str,
    cmd: impl Fn() -> Command,
    steps: &[Step],
    checkpoint_at: &str,
) {
    require_root("these tests ptrace processes of their own: run them as root");
    let dir = scratch(name);
    drive(&dir, "reference", cmd(), steps, None, scope);
    drive(&dir, "restarted", cmd(), steps, Some(checkpoint_at), scope);
    let reference = std::fs::read_to_string(dir.join("reference.out")).unwrap();
    let restarted = std::fs::read_to_string(dir.join("restarted.out")).unwrap();
    assert_eq!(
        restarted, reference,
        "{name}: the restarted run differs from the uninterrupted one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn handlers_of_every_flag_run_on_every_thread_after_a_restart() {
    use nix::sys::signal::Signal::SIGTERM;
    let bin = program("handlers");
    same_as_uninterrupted(
        "handlers",
        || Command::new(&bin),
        &[("ready", SIGTERM)],
        "ready",
    );
}

/// CPython installs every handler with SA_ONSTACK and no alternate stack of its own.
const PY_SIGNALS: &str = r#"
import signal, sys
def usr1(sig, frame):
    print("usr1", flush=True)
def term(sig, frame):
    print("term", flush=True)
    sys.exit(0)
signal.signal(signal.SIGUSR1, usr1)
signal.signal(signal.SIGTERM, term)
for i in range(1, 101):
    print(i, flush=True)
    if i in (20, 50):
        signal.pause()
signal.pause()
"#;

#[test]
fn python_handles_sigusr1_and_sigterm_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    same_as_uninterrupted(
        "python-signals",
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PY_SIGNALS]);
            c
        },
        &[("20", SIGUSR1), ("50", SIGUSR1), ("100", SIGTERM)],
        "20",
    );
}

/// Unix sockets that are not pairs (an unbound one, as a JVM holds; an abstract datagram
/// socket, as each MPICH rank holds; a listening socket on a path) and a seqpacket pair
/// whose one end has shut down with messages queued: after the restart each works, and
/// reads what it held.
const PY_UNIX: &str = r#"
import os, signal, socket, sys
d, tag = sys.argv[1], sys.argv[2]
lone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
name = b"\0lifeboat-test-" + tag.encode()
dg.bind(name)
path = os.path.join(d, "srv.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(4)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
a.send(b"m1")
a.send(b"m2")
a.shutdown(socket.SHUT_WR)
signal.signal(signal.SIGUSR1, lambda s, f: None)
print("ready", flush=True)
signal.pause()
lone.connect(path)
conn, _ = srv.accept()
lone.sendall(b"ping")
print("accepted", conn.recv(4), flush=True)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"hello", name)
print("datagram", dg.recv(16), flush=True)
print("seqpacket", b.recv(8), b.recv(8), b.recv(8), flush=True)
print("done", flush=True)
"#;

#[test]
fn unix_sockets_of_every_kind_work_after_a_restart() {
    use nix::sys::signal::Signal::SIGUSR1;
    let tag = format!("{}", std::process::id());
    let dir = scratch("unix-sockets-workdir");
    same_as_uninterrupted(
        "unix-sockets",
        || {
            // Each run binds its own path: the reference's socket file is gone by then.
            let _ = std::fs::remove_file(dir.join("srv.sock"));
            let mut c = Command::new("python3");
            c.args(["-c", PY_UNIX]).arg(&dir).arg(&tag);
            c
        },
        &[("ready", SIGUSR1)],
        "ready",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Established TCP connections (issue 12): one process holds both ends of a loopback
/// connection, with 3 MiB in flight from the server (filling the client's receive queue
/// and the server's send queue, part of it never sent) and a greeting unread the other
/// way. Checkpointed with `--kill` (in repair mode: neither end sees a FIN or RST),
/// restarted, it reads the whole stream intact, ping-pongs, and exits through its
/// SIGTERM handler.
const PY_TCP: &str = r#"
import hashlib, os, select, signal, socket, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
cli = socket.create_connection(ls.getsockname())
srv, _ = ls.accept()
cli.sendall(b"hello from the client\n")
cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 12345)
stream = bytes(range(256)) * (3 * 4096)
srv.setblocking(False)
sent = 0
try:
    while sent < len(stream):
        sent += srv.send(stream[sent:sent + 65536])
except BlockingIOError:
    pass
print("queued", "all" if sent == len(stream) else "part", flush=True)
print("ready", flush=True)
signal.pause()
got = bytearray()
cli.setblocking(False)
while len(got) < len(stream):
    w = [srv] if sent < len(stream) else []
    r, w, _ = select.select([cli], w, [], 5)
    if not r and not w:
        print("stalled at", len(got), flush=True)
        sys.exit(1)
    if w:
        sent += srv.send(stream[sent:sent + 65536])
    if r:
        got += cli.recv(1 << 20)
print("stream", len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(stream).hexdigest(), flush=True)
print("greeting", srv.recv(100), flush=True)
print("options", [cli.getsockopt(l, o) for l, o in [(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), (socket.IPPROTO_TCP, socket.TCP_NODELAY)]],
    srv.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), flush=True)
srv.setblocking(True)
cli.setblocking(True)
for i in range(3):
    cli.sendall(b"ping %d" % i)
    srv.sendall(srv.recv(100).replace(b"ping", b"pong"))
    print(cli.recv(100), flush=True)
print("done", flush=True)
signal.pause()
"#;

#[test]
fn established_tcp_connections_carry_on_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    same_as_uninterrupted(
        "tcp",
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PY_TCP]);
            c
        },
        &[("ready", SIGUSR1), ("done", SIGTERM)],
        "ready",
    );
}

/// UDP sockets (issue 12): two bound loopback sockets, one connected to the other, with
/// datagrams queued both ways, two never bound (IPv4 and IPv6), and a UDP-Lite pair
/// with a datagram queued. After the restart
/// each queued datagram is read from the address that sent it, the connected one still
/// talks to its peer only, and the unbound ones bind on first use.
const PY_UDP: &str = r#"
import signal, socket, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
a.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
a.bind(("127.0.0.1", 0))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.bind(("127.0.0.1", 0))
b.connect(a.getsockname())
lone4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
lone6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
lite = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)  # IPPROTO_UDPLITE
lite.bind(("127.0.0.1", 0))
lite_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
lite_sender.sendto(b"udp-lite", lite.getsockname())
for i in range(5):
    b.send(b"datagram %d" % i)
a.sendto(b"to b", b.getsockname())
print("ready", flush=True)
signal.pause()
for i in range(5):
    d, src = a.recvfrom(100)
    print(d, src == b.getsockname(), flush=True)
print(b.recv(100), flush=True)
b.send(b"after")
print(a.recvfrom(100)[0], flush=True)
lone4.sendto(b"from the unbound one", a.getsockname())
d, src = a.recvfrom(100)
print(d, src[1] == lone4.getsockname()[1], flush=True)
print("options", a.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), a.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST),
    b.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST), flush=True)
d, src = lite.recvfrom(100)
print(d, src[1] == lite_sender.getsockname()[1], flush=True)
lone6.bind(("::1", 0))
print("v6 bound", lone6.getsockname()[0], flush=True)
print("done", flush=True)
signal.pause()
"#;

#[test]
fn udp_sockets_keep_their_addresses_and_queues_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    same_as_uninterrupted(
        "udp",
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PY_UDP]);
            c
        },
        &[("ready", SIGUSR1), ("done", SIGTERM)],
        "ready",
    );
}

/// sqlite in WAL mode (issue 12): the database, its write-ahead log and the shared-memory
/// index (`-shm`, mapped shared) are open and half-way through 2000 inserts when the
/// process is checkpointed and restarted; it inserts the rest, a second connection sees
/// every row, and the integrity check passes.
const PY_SQLITE: &str = r#"
import os, signal, sqlite3, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", db.execute("select count(*), sum(v) from t").fetchone(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
path = sys.argv[1]
for suffix in ("", "-wal", "-shm"):
    try:
        os.unlink(path + suffix)
    except FileNotFoundError:
        pass
db = sqlite3.connect(path, isolation_level=None)
print(db.execute("pragma journal_mode=wal").fetchone(), flush=True)
db.execute("create table t (k integer primary key, v integer)")
for i in range(1, 2001):
    db.execute("insert into t (v) values (?)", (i,))
    if i == 1000:
        print("ready", db.execute("select count(*) from t").fetchone(), flush=True)
        signal.pause()
print("rows", db.execute("select count(*), sum(v) from t").fetchone(), flush=True)
print("another connection sees", sqlite3.connect(path).execute("select count(*) from t").fetchone(), flush=True)
print("integrity", db.execute("pragma integrity_check").fetchone(), flush=True)
print("done", flush=True)
signal.pause()
"#;

#[test]
fn sqlite_in_wal_mode_finishes_its_inserts_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    let dir = scratch("sqlite-workdir");
    let db = dir.join("t.db");
    same_as_uninterrupted(
        "sqlite",
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PY_SQLITE]).arg(&db);
            c
        },
        &[("ready (1000,)", SIGUSR1), ("done", SIGTERM)],
        "ready (1000,)",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Go program (issue 12): goroutines, a ticker and `signal.Notify`, built here with
/// Debian's golang-go from `tests/programs/go-count`.
#[test]
fn go_finishes_and_handles_its_signals_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    let version = Command::new("go").arg("version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "the Go test builds a Go program and cannot run `go version` ({version:?}): apt-get install golang-go"
    );
    let dir = scratch("go-build");
    let bin = dir.join("go-count");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(tests_dir().join("programs/go-count"))
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    same_as_uninterrupted(
        "go",
        || Command::new(&bin),
        &[("ready", SIGUSR1), ("done", SIGTERM)],
        "ready",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// numpy with OpenBLAS threads (issue 12), on Debian's python3 (python3-numpy,
/// libopenblas0-pthread): repeated 400x400 products, checkpointed half-way.
const PY_NUMPY: &str = r#"
import signal, sys
import numpy as np
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
a = np.random.default_rng(42).standard_normal((400, 400))
acc = np.eye(400)
for i in range(1, 41):
    acc = acc @ a
    acc /= np.linalg.norm(acc)
    print(i, "%.9f" % acc.sum(), flush=True)
    if i == 20:
        print("ready", flush=True)
        signal.pause()
print("done", flush=True)
signal.pause()
"#;

#[test]
fn numpy_with_openblas_threads_finishes_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import numpy"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "Debian's python3 has no numpy (apt-get install python3-numpy libopenblas0-pthread): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    same_as_uninterrupted(
        "numpy",
        || {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-c", PY_NUMPY]).env("OPENBLAS_NUM_THREADS", "4");
            c
        },
        &[("ready", SIGUSR1), ("done", SIGTERM)],
        "ready",
    );
}

/// A shared-memory segment in /dev/shm that the processes of a job unlinked while they
/// hold it open and mapped (issue 12: an OpenMPI job's segment came back as one private
/// copy per process): after a restart of the tree the child's write through its
/// mapping is seen by the parent through its mapping and through its descriptor.
const PY_DELETED_SHM: &str = r#"
import mmap, os, signal, sys
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
path = "/dev/shm/lifeboat-test-" + sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
os.unlink(path)
m[0:5] = b"hello"
r, w = os.pipe()
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.read(r, 1)
    m[100:112] = b"from the kid"
    os.write(w, b"!")
    os._exit(0)
print("ready", m[0:5], flush=True)
signal.pause()
os.write(w, b"go")
os.waitpid(child, 0)
print("mapping", m[100:112], flush=True)
print("descriptor", os.pread(fd, 12, 100), flush=True)
print("done", flush=True)
signal.pause()
"#;

#[test]
fn a_deleted_shared_memory_file_stays_one_object_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    let tag = std::process::id().to_string();
    same_as_uninterrupted_in(
        &["--tree"],
        "deleted-shm",
        || {
            let mut c = Command::new("python3");
            c.args(["-c", PY_DELETED_SHM]).arg(&tag);
            c
        },
        &[("ready b'hello'", SIGUSR1), ("done", SIGTERM)],
        "ready b'hello'",
    );
}

/// A 4-rank MPICH job (issue 12: refused, a rank's abstract unix datagram socket had
/// messages queued), Debian's mpich with UCX, checkpointed from `mpiexec.mpich` as a tree
/// (the launcher, its proxy and the ranks) half-way round its ring, restarted, finishes
/// with the sum an uninterrupted run prints.
#[test]
fn an_mpich_job_finishes_after_a_restart() {
    use nix::sys::signal::Signal::SIGCONT;
    let dir = scratch("mpich-build");
    let bin = dir.join("ring");
    let built = Command::new("mpicc.mpich")
        .arg("-O2")
        .arg("-o")
        .arg(&bin)
        .arg(tests_dir().join("programs/mpi/ring.c"))
        .output();
    assert!(
        built.as_ref().is_ok_and(|o| o.status.success()),
        "cannot build the MPI ring with mpicc.mpich ({built:?}): apt-get install mpich libmpich-dev"
    );
    require_root("these tests ptrace processes of their own: run them as root");
    let ring = || {
        let mut c = Command::new("mpiexec.mpich");
        c.args(["-n", "4"]).arg(&bin);
        c
    };
    // The ring runs on by itself: the checkpoint is taken as it passes round 60, and
    // SIGCONT (which every process takes without a handler) is all the protocol sends.
    let steps = [("round 60 token 2190", SIGCONT)];
    drive(&dir, "reference", ring(), &steps, None, &["--tree"]);
    drive(
        &dir,
        "restarted",
        ring(),
        &steps,
        Some(steps[0].0),
        &["--tree"],
    );
    let reference = std::fs::read_to_string(dir.join("reference.out")).unwrap();
    let restarted = std::fs::read_to_string(dir.join("restarted.out")).unwrap();
    // Known gap: SysV shared memory comes back as shared mappings, not as SysV
    // attachments, so UCX's shmdt(2) at MPI_Finalize fails (EINVAL) and UCX prints a
    // warning per segment, on stdout. Those lines, and only those, are the difference.
    let (warned, results): (Vec<&str>, Vec<&str>) = restarted
        .lines()
        .partition(|l| l.contains("UCX  WARN  Unable to detach shared memory segment"));
    assert_eq!(
        results.join("\n") + "\n",
        reference,
        "mpich: the restarted run's results differ from the uninterrupted one"
    );
    assert!(reference.ends_with("done 85192\n"), "{reference}");
    assert!(warned.len() <= 4 * 8, "{restarted}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every socket kind the engine saves, in one process, each with something queued where
/// it can be: unix pairs (stream, datagram, seqpacket), unix sockets unbound, bound,
/// abstract and listening, an unconnected unix datagram socket with messages waiting, a
/// TCP listener, an established connection with 1 MiB in flight, UDP bound, connected
/// and unbound with datagrams waiting, UDP-Lite. Its checkpoint must finish within 20 s
/// under a 1 GiB address-space limit (no peek loop runs unbounded, nothing grows with
/// the queues beyond them), and its image must restart (issue 12's bound).
const PY_EVERY_SOCKET: &str = r#"
import os, signal, socket, sys
d = sys.argv[1]
keep = []
for t in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
    a, b = socket.socketpair(socket.AF_UNIX, t)
    a.send(b"x" * 1000)
    keep += [a, b]
keep.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
bound.bind(os.path.join(d, "bound.sock"))
listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listening.bind(os.path.join(d, "listen.sock"))
listening.listen(8)
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(b"\0lifeboat-every-" + sys.argv[2].encode())
# net.unix.max_dgram_qlen is 10 by default: a sender blocks beyond.
for i in range(8):
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"m%d" % i, b"\0lifeboat-every-" + sys.argv[2].encode())
keep += [bound, listening, dg]
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(4)
cli = socket.create_connection(ls.getsockname())
srv, _ = ls.accept()
srv.setblocking(False)
try:
    srv.send(b"y" * (1 << 20))
except BlockingIOError:
    pass
keep += [ls, cli, srv]
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.connect(u1.getsockname())
for i in range(100):
    u2.send(b"z" * 1000)
lite = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
lite.bind(("127.0.0.1", 0))
keep += [u1, u2, lite, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
signal.signal(signal.SIGUSR1, lambda s, f: None)
print("ready", flush=True)
signal.pause()
"#;

#[test]
fn a_checkpoint_of_every_socket_kind_is_bounded_in_time_and_memory() {
    require_root("these tests ptrace processes of their own: run them as root");
    let dir = scratch("every-socket");
    let out = dir.join("out");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_EVERY_SOCKET])
        .arg(&dir)
        .arg(std::process::id().to_string());
    let mut job = Background::to_file(cmd, &out, "every socket kind");
    let pid = job.pid();
    wait_line(&out, "ready", pid, || job.try_status());
    let image = dir.join("every.ctx");
    // `ulimit -v` (RLIMIT_AS, KiB): the checkpointer may not map more than 1 GiB.
    let script = format!(
        "ulimit -v 1048576 && exec {} checkpoint --kill -q -f {} {pid}",
        lifeboat_bin(),
        image.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    let started = Instant::now();
    let r = run_within(
        sh,
        "a checkpoint of every socket kind",
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(r.status.success(), "{}", r.text());
    job.wait();
    let inspect = lifeboat_in(&dir, &["inspect", path_str(&image)]);
    assert!(inspect.status.success(), "{}", inspect.text());
    for kind in ["unix", "tcp", "udp"] {
        assert!(
            inspect.stdout.contains(&format!("  {kind} ")),
            "{kind}: {}",
            inspect.stdout
        );
    }
    let _ = std::fs::remove_file(dir.join("bound.sock"));
    let _ = std::fs::remove_file(dir.join("listen.sock"));
    let mut cmd = Command::new(lifeboat_bin());
    cmd.arg("restart").arg(&image);
    let mut r = Proc::spawn_no_input(cmd, "the restart of every socket kind");
    r.wait_stderr("lifeboat: restarted");
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = r.finish_within(Duration::from_secs(20));
    eprintln!("checkpoint of every socket kind: {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-server and its client in one tree (issue 12: the client's next command got
/// EPIPE after a restart): the client starts redis as its child, counts with INCR over
/// one TCP connection, is checkpointed with `--tree --kill` (both processes, both ends
/// of the connection) while it waits, restarted, counts on, and on SIGTERM shuts redis
/// down and exits.
const PY_REDIS: &str = r#"
import signal, socket, subprocess, sys, time
port = sys.argv[1]
signal.signal(signal.SIGUSR1, lambda s, f: None)
def term(s, f):
    print("term", cmd(b"SHUTDOWN", b"NOSAVE"), flush=True)
    print("redis exited", srv.wait(), flush=True)
    sys.exit(0)
srv = subprocess.Popen(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", ""],
    stdout=subprocess.DEVNULL)
for _ in range(200):
    try:
        c = socket.create_connection(("127.0.0.1", int(port)))
        break
    except OSError:
        time.sleep(0.05)
f = c.makefile("rb")
def cmd(*args):
    c.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    reply = f.readline().rstrip().decode()
    # A bulk string: its length, then the bytes on the next line.
    return f.readline().rstrip().decode() if reply.startswith("$") else reply
signal.signal(signal.SIGTERM, term)
print("set", cmd(b"SET", b"k", b"0"), flush=True)
for i in range(1, 101):
    print(cmd(b"INCR", b"k"), flush=True)
    if i == 40:
        print("ready", flush=True)
        signal.pause()
print("get", cmd(b"GET", b"k"), flush=True)
print("done", flush=True)
signal.pause()
"#;

#[test]
fn redis_and_its_client_keep_their_connection_after_a_restart() {
    use nix::sys::signal::Signal::{SIGTERM, SIGUSR1};
    require_tool(
        "redis-server",
        "the redis test runs a real redis server (apt-get install redis-server)",
    );
    same_as_uninterrupted_in(
        &["--tree"],
        "redis",
        || {
            // A free port for each run: the reference's may still be in TIME_WAIT.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut c = Command::new("python3");
            c.args(["-c", PY_REDIS]).arg(port.to_string());
            c
        },
        &[("ready", SIGUSR1), ("done", SIGTERM)],
        "ready",
    );
}

/// A JVM with four worker threads: checkpointed while it counts, restarted, then stopped
/// with SIGTERM, which its shutdown hook handles.
const JAVA: &str = r#"
import java.util.concurrent.atomic.AtomicLong;
public class Count {
    public static void main(String[] args) throws Exception {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("term");
            System.out.flush();
            Runtime.getRuntime().halt(0);
        }));
        AtomicLong total = new AtomicLong();
        Thread[] workers = new Thread[4];
        for (int t = 0; t < 4; t++) {
            final int id = t;
            workers[t] = new Thread(() -> {
                for (int i = 0; i < 200; i++) {
                    total.addAndGet(i * (id + 1));
                    try { Thread.sleep(5); } catch (InterruptedException e) { return; }
                }
            });
            workers[t].start();
        }
        for (int i = 1; i <= 100; i++) {
            System.out.println(i);
            Thread.sleep(10);
        }
        for (Thread w : workers) w.join();
        System.out.println("total " + total.get());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
"#;

#[test]
fn a_jvm_finishes_and_handles_sigterm_after_a_restart() {
    use nix::sys::signal::Signal::SIGTERM;
    require_tool(
        "javac",
        "the JVM test compiles a Java program (Debian: openjdk-17-jdk-headless)",
    );
    let src = scratch("java-src");
    std::fs::write(src.join("Count.java"), JAVA).unwrap();
    let built = Command::new("javac")
        .arg("-d")
        .arg(&src)
        .arg(src.join("Count.java"))
        .status()
        .unwrap();
    assert!(built.success(), "javac failed: {built}");
    same_as_uninterrupted(
        "java",
        || {
            let mut c = Command::new("java");
            c.arg("-cp").arg(&src).arg("Count");
            c
        },
        &[("total 199000", SIGTERM)],
        "20",
    );
    let _ = std::fs::remove_dir_all(&src);
}

/// Node.js: a timer loop, checkpointed while it runs, restarted, stopped by SIGTERM,
/// which it handles.
const NODE: &str = r#"
let i = 0;
process.on("SIGTERM", () => { console.log("term"); process.exit(0); });
const t = setInterval(() => {
  i += 1;
  console.log(String(i));
  if (i === 100) { clearInterval(t); console.log("waiting"); setInterval(() => {}, 1 << 30); }
}, 10);
"#;

#[test]
fn node_finishes_and_handles_sigterm_after_a_restart() {
    use nix::sys::signal::Signal::SIGTERM;
    require_tool("node", "the Node.js test runs a script (Debian: nodejs)");
    same_as_uninterrupted(
        "node",
        || {
            let mut c = Command::new("node");
            c.args(["-e", NODE]);
            c
        },
        &[("waiting", SIGTERM)],
        "20",
    );
}
