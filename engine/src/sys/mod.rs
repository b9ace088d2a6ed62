//! Thin, `Result`-returning wrappers over the system calls `nix` does not cover.
//!
//! This module is the only home of `unsafe` in the engine (STYLE.md): every block does one
//! operation and names the invariant that makes it sound. Everything above `sys` is safe Rust.
#![allow(unsafe_code)]

pub mod anonfd;
pub mod process;
pub mod ptrace;

use nix::errno::Errno;

/// Turn a raw `-1 / errno` return into a `Result` (firecracker's `SyscallReturnCode` idiom).
fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}
