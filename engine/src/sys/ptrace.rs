//! ptrace requests that `nix` lacks: XSAVE state, signal masks, queued siginfo, rseq config.

use super::check;
use libc::{c_void, iovec};
use nix::errno::Errno;
use nix::unistd::Pid;

/// `NT_X86_XSTATE` from `include/uapi/linux/elf.h`: the full XSAVE area of a thread.
const NT_X86_XSTATE: usize = 0x202;
/// Upper bound for the XSAVE area (AVX-512 + AMX fit in 11 KiB today); the kernel shrinks
/// `iov_len` to the real size on GETREGSET.
pub const XSTATE_MAX: usize = 16 * 1024;
/// Size of one `siginfo_t` on x86-64.
pub const SIGINFO_SIZE: usize = 128;

/// Read the XSAVE area of a stopped tracee (FPU, SSE, AVX, AVX-512, PKRU ...).
pub fn get_xstate(tid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = iovec {
        iov_base: buf.as_mut_ptr().cast::<c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf` (XSTATE_MAX bytes, owned, alive across the call); the
    // kernel writes at most `iov_len` bytes into it and stores the length used in `iov_len`.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid.as_raw(),
            NT_X86_XSTATE,
            &mut iov as *mut iovec,
        )
    };
    check(ret)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Write the XSAVE area of a stopped tracee; the kernel validates the header.
pub fn set_xstate(tid: Pid, xstate: &[u8]) -> Result<(), Errno> {
    let mut copy = xstate.to_vec();
    let mut iov = iovec {
        iov_base: copy.as_mut_ptr().cast::<c_void>(),
        iov_len: copy.len(),
    };
    // SAFETY: `iov` describes `copy`, owned and alive across the call; SETREGSET only reads it.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid.as_raw(),
            NT_X86_XSTATE,
            &mut iov as *mut iovec,
        )
    };
    check(ret).map(drop)
}

/// The blocked-signal mask of a stopped tracee (bit `n-1` is signal `n`).
pub fn get_sigmask(tid: Pid) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    // SAFETY: `mask` is 8 writable bytes alive across the call, and 8 is the size we pass.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGMASK,
            tid.as_raw(),
            size_of::<u64>(),
            &mut mask as *mut u64,
        )
    };
    check(ret)?;
    Ok(mask)
}

/// Set the blocked-signal mask of a stopped tracee.
pub fn set_sigmask(tid: Pid, mask: u64) -> Result<(), Errno> {
    // SAFETY: `mask` is 8 readable bytes alive across the call, and 8 is the size we pass.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            tid.as_raw(),
            size_of::<u64>(),
            &mask as *const u64,
        )
    };
    check(ret).map(drop)
}

/// Copy the queued signals of a stopped tracee without dequeuing them: the thread's own
/// queue, or the process-wide one when `shared`.
pub fn peek_siginfo(tid: Pid, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, Errno> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = libc::ptrace_peeksiginfo_args {
            off: out.len() as u64,
            // PTRACE_PEEKSIGINFO_SHARED: the process-wide queue instead of the thread's.
            flags: if shared {
                libc::PTRACE_PEEKSIGINFO_SHARED
            } else {
                0
            },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        // SAFETY: `args` is a valid request alive across the call; `buf` has room for `nr`
        // siginfo records (BATCH * 128 bytes), owned and alive across the call.
        let ret = unsafe {
            libc::ptrace(
                libc::PTRACE_PEEKSIGINFO,
                tid.as_raw(),
                &args as *const libc::ptrace_peeksiginfo_args,
                buf.as_mut_ptr(),
            )
        };
        let n = check(ret)? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// A thread's rseq registration: area address, length and abort signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rseq {
    /// Address of `struct rseq` in the tracee.
    pub ptr: u64,
    /// Registered length of the area.
    pub len: u32,
    /// Abort signature the thread registered with.
    pub sig: u32,
}

/// The rseq registration of a stopped tracee, or `None` when it has none.
pub fn rseq_config(tid: Pid) -> Result<Option<Rseq>, Errno> {
    let mut conf = libc::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    // SAFETY: `conf` is a writable `ptrace_rseq_configuration` alive across the call and its
    // size is what we pass; the kernel writes at most that many bytes.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_RSEQ_CONFIGURATION,
            tid.as_raw(),
            size_of::<libc::ptrace_rseq_configuration>(),
            &mut conf as *mut libc::ptrace_rseq_configuration,
        )
    };
    check(ret)?;
    Ok((conf.rseq_abi_pointer != 0).then_some(Rseq {
        ptr: conf.rseq_abi_pointer,
        len: conf.rseq_abi_size,
        sig: conf.signature,
    }))
}

/// Wait for a state change of traced thread `tid` (`waitpid` with `__WALL`), returning the
/// raw status: nix's `WaitStatus` cannot name a stop or a death by a real-time signal.
pub fn wait_status(tid: Pid) -> Result<i32, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int to `status`, which is ours and alive across the call.
    let ret = unsafe { libc::waitpid(tid.as_raw(), &mut status, libc::__WALL) };
    check(libc::c_long::from(ret))?;
    Ok(status)
}

/// Detach from `tid`, delivering signal `sig` to it (0 for none) as it resumes; any signal
/// number, real-time ones included (nix's `detach` takes only the classic ones).
pub fn detach_with(tid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_DETACH reads no memory of ours; the signal travels as the data word.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            tid.as_raw(),
            std::ptr::null_mut::<c_void>(),
            sig as libc::c_long as *mut c_void,
        )
    };
    check(ret).map(drop)
}
