//! Kill points for tests (cargo feature `fault-injection`, off in every normal build):
//! with `LIFEBOAT_DIE_AT=KIND:N` in the environment, the process SIGKILLs itself the N-th
//! time it reaches a point of that kind, the way the OOM killer or a `systemctl stop`
//! that timed out would kill a checkpointer. Kinds: `seize` (a process of the scope was
//! just frozen), `inject` (a thread is stopped inside an injected system call), `pages`
//! (a batch of pages was just copied).

#[cfg(feature = "fault-injection")]
pub(crate) fn point(kind: &'static str) {
    use std::sync::Mutex;
    use std::sync::OnceLock;
    static WANT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static SEEN: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());
    let want = WANT.get_or_init(|| {
        let v = std::env::var("LIFEBOAT_DIE_AT").ok()?;
        let (k, n) = v.split_once(':')?;
        Some((k.to_owned(), n.parse().ok()?))
    });
    let Some((k, n)) = want else { return };
    if k != kind {
        return;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let count = match seen.iter_mut().find(|(s, _)| *s == kind) {
        Some((_, c)) => {
            *c += 1;
            *c
        }
        None => {
            seen.push((kind, 1));
            1
        }
    };
    if count == *n {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}

/// Nothing, in a normal build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_kind: &'static str) {}
