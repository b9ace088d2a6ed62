//! What brings a thread back if the checkpointer dies while a system call is injected
//! into it.
//!
//! While a call is injected, the thread's registers point at a `syscall` instruction in
//! its `[vdso]` with the call's arguments, and all its signals are blocked. If the tracer
//! dies then (the OOM killer, a `systemctl stop` that times out, a crash), the kernel
//! detaches and the thread runs on from there. Without help it would run into whatever
//! follows that instruction with a made-up stack and die.
//!
//! So before the first call, the thread is given a way home that needs nobody:
//! - the injected `syscall` is one the `[vdso]` follows with register-only instructions
//!   and a `ret` (the kernel's fallback paths end that way; [`syscall_then_ret`]);
//! - the stack pointer of the injected state points at a signal frame written below the
//!   thread's red zone, whose first word (`pretcode`, where a handler's `ret` would go)
//!   is the address of a `mov $15, %eax; syscall` sequence (`rt_sigreturn`) found in the
//!   process's own code (glibc's and musl's `__restore_rt`, Go's `runtime.sigreturn`;
//!   [`find_sigreturn`]);
//! - the frame's `ucontext` holds the registers the thread must resume with, its own
//!   signal mask, and its XSAVE area; its `uc_stack` is deliberately invalid, so that
//!   `rt_sigreturn` leaves the thread's alternate stack as it is (the kernel ignores
//!   every error of that step but EFAULT).
//!
//! A thread let go at any point of an injection therefore finishes the injected call,
//! returns into `rt_sigreturn`, and continues exactly where it was frozen, with its
//! registers, FPU/SSE/AVX state and signal mask. (A sleep interrupted by the freeze then
//! returns EINTR, as after any signal handler: `rt_sigreturn` drops the restart block.)
//! The bytes under the frame are put back when the injection ends.
//!
//! Layouts: `struct rt_sigframe`, `struct ucontext` and `struct sigcontext_64` of
//! arch/x86/include/{asm/sigframe.h,uapi/asm/sigcontext.h}, include/uapi/asm-generic/
//! ucontext.h; the checks on the XSAVE area are `check_xstate_in_sigframe()` in
//! arch/x86/kernel/fpu/signal.c.

use crate::model::{Regs, reg};

/// `FP_XSTATE_MAGIC1` in the software-reserved bytes of the FXSAVE area.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// `FP_XSTATE_MAGIC2` right after the XSAVE area.
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Offset of `sw_reserved` (`struct _fpx_sw_bytes`) in the FXSAVE area.
const SW_RESERVED: usize = 464;
/// `uc_flags`: the frame has an XSAVE area, `ss` is valid and is restored as is.
const UC_FLAGS: u64 = 0x1 | 0x2 | 0x4;
/// Bytes of `struct rt_sigframe` up to the FP state: pretcode (8), ucontext (304),
/// siginfo (128).
const FRAME_LEN: u64 = 8 + 304 + 128;
/// Offsets in the frame.
const UC_FLAGS_AT: usize = 8;
const UC_STACK_FLAGS_AT: usize = 8 + 8 + 8 + 8;
const MCONTEXT_AT: usize = 8 + 8 + 8 + 24;
const SIGMASK_AT: usize = MCONTEXT_AT + 256;
/// The x86-64 red zone, which signal delivery skips too.
const RED_ZONE: u64 = 128;

/// The two pieces of code a thread goes home through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifeline {
    /// A `syscall` instruction in `[vdso]` followed by register-only code and `ret`.
    pub syscall: u64,
    /// `mov $15, %eax|%rax; syscall` in the process's code.
    pub sigreturn: u64,
}

/// The offset of a `syscall` in `code` (a `[vdso]`) whose next instructions touch only
/// registers (`xor r32, r32`, `nop`) before a `ret`, so that returning from it jumps to
/// the word at the stack pointer.
pub(crate) fn syscall_then_ret(code: &[u8]) -> Option<usize> {
    (0..code.len().saturating_sub(1)).find(|&at| {
        if code[at..at + 2] != [0x0f, 0x05] {
            return false;
        }
        let mut i = at + 2;
        loop {
            match code.get(i..) {
                Some([0xc3, ..]) => return true,
                Some([0x90, ..]) => i += 1,
                // xor r32, r32 (31 /r with a register-to-register ModRM byte).
                Some([0x31, m, ..]) if m & 0xc0 == 0xc0 => i += 2,
                // The same with REX.RB (r8d..r15d).
                Some([0x45, 0x31, m, ..]) if m & 0xc0 == 0xc0 => i += 3,
                _ => return false,
            }
        }
    })
}

/// The offset of `mov $15, %rax; syscall` or `mov $15, %eax; syscall` (`rt_sigreturn`,
/// `__NR_rt_sigreturn` = 15) in `code`.
pub(crate) fn find_sigreturn(code: &[u8]) -> Option<usize> {
    const MOV_RAX: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    const MOV_EAX: [u8; 7] = [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    code.windows(MOV_RAX.len())
        .position(|w| w == MOV_RAX)
        .or_else(|| code.windows(MOV_EAX.len()).position(|w| w == MOV_EAX))
}

/// A signal frame for a thread, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Address of the first byte written (the frame; the XSAVE area follows it).
    pub at: u64,
    /// The bytes to write there.
    pub bytes: Vec<u8>,
    /// Stack pointer of the injected state: the frame's `pretcode` word.
    pub sp: u64,
}

/// Build the frame through which a thread that would resume with `regs`, blocked
/// signals `mask` and XSAVE area `xstate` (as PTRACE_GETREGSET returns it: standard
/// format, the thread's XCR0 in the first word of the software-reserved bytes, where gdb
/// reads it) returns home through `sigreturn`. `None` when `xstate` is too short or says
/// no XCR0 (the kernel would then restore only the legacy FPU state).
pub(crate) fn frame(regs: &Regs, mask: u64, xstate: &[u8], sigreturn: u64) -> Option<Frame> {
    let xsize = xstate.len();
    let xcr0 = u64::from_ne_bytes(xstate.get(SW_RESERVED..SW_RESERVED + 8)?.try_into().ok()?);
    if xsize < 512 + 64 || xcr0 == 0 {
        return None;
    }
    let rsp = regs.0[reg::RSP];
    let fpstate = rsp.checked_sub(RED_ZONE + xsize as u64 + 4)? & !63;
    // The frame below the XSAVE area, with `pretcode` at 8 modulo 16 as a handler's
    // entry would have it.
    let at = ((fpstate.checked_sub(FRAME_LEN)?) & !15).checked_sub(8)?;
    let mut bytes = vec![0u8; (fpstate - at) as usize + xsize + 4];
    let put = |b: &mut [u8], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put(&mut bytes, 0, sigreturn);
    put(&mut bytes, UC_FLAGS_AT, UC_FLAGS);
    // uc_stack.ss_flags: an invalid mode (3), so rt_sigreturn changes no alternate stack.
    bytes[UC_STACK_FLAGS_AT..UC_STACK_FLAGS_AT + 4].copy_from_slice(&3u32.to_ne_bytes());
    let r = &regs.0;
    let mc = [
        r[reg::R8],
        r[reg::R9],
        r[reg::R10],
        r[reg::R11],
        r[reg::R12],
        r[reg::R13],
        r[reg::R14],
        r[reg::R15],
        r[reg::RDI],
        r[reg::RSI],
        r[reg::RBP],
        r[reg::RBX],
        r[reg::RDX],
        r[reg::RAX],
        r[reg::RCX],
        r[reg::RSP],
        r[reg::RIP],
        r[reg::EFLAGS],
    ];
    for (i, v) in mc.iter().enumerate() {
        put(&mut bytes, MCONTEXT_AT + i * 8, *v);
    }
    // cs, gs, fs, ss as u16s.
    let sel = MCONTEXT_AT + 18 * 8;
    for (i, v) in [r[reg::CS], r[reg::GS], r[reg::FS], r[reg::SS]]
        .iter()
        .enumerate()
    {
        bytes[sel + i * 2..sel + i * 2 + 2].copy_from_slice(&(*v as u16).to_ne_bytes());
    }
    // err, trapno, oldmask, cr2, then fpstate.
    put(&mut bytes, MCONTEXT_AT + 23 * 8, fpstate);
    put(&mut bytes, SIGMASK_AT, mask);
    let x = (fpstate - at) as usize;
    bytes[x..x + xsize].copy_from_slice(xstate);
    // struct _fpx_sw_bytes, as a signal frame has it: magic1, extended_size, xfeatures,
    // xstate_size, padding; then magic2 after the area.
    let sw = x + SW_RESERVED;
    bytes[sw..sw + 48].fill(0);
    bytes[sw..sw + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_ne_bytes());
    bytes[sw + 4..sw + 8].copy_from_slice(&(xsize as u32 + 4).to_ne_bytes());
    bytes[sw + 8..sw + 16].copy_from_slice(&xcr0.to_ne_bytes());
    bytes[sw + 16..sw + 20].copy_from_slice(&(xsize as u32).to_ne_bytes());
    bytes[x + xsize..x + xsize + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_ne_bytes());
    Some(Frame { at, bytes, sp: at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_must_return_through_register_only_code() {
        // This kernel's __vdso_getcpu fallback: syscall; xor edx,edx; xor ecx,ecx;
        // xor esi,esi; xor edi,edi; xor r11d,r11d; ret.
        let getcpu = [
            0x0f, 0x05, 0x31, 0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, 0x45, 0x31, 0xdb, 0xc3,
        ];
        assert_eq!(syscall_then_ret(&getcpu), Some(0));
        // syscall; leave; ... and syscall; add $0x30,%rsp; ... touch the stack: refused.
        assert_eq!(
            syscall_then_ret(&[0x0f, 0x05, 0xc9, 0x31, 0xd2, 0xc3]),
            None
        );
        assert_eq!(
            syscall_then_ret(&[0x0f, 0x05, 0x48, 0x83, 0xc4, 0x30, 0xc3]),
            None
        );
        // xor with a memory operand is refused; the second syscall is taken.
        let mixed = [0x0f, 0x05, 0x31, 0x10, 0xc3, 0x0f, 0x05, 0x90, 0xc3];
        assert_eq!(syscall_then_ret(&mixed), Some(5));
        assert_eq!(syscall_then_ret(&[0x0f, 0x05]), None);
        assert_eq!(syscall_then_ret(&[]), None);
    }

    #[test]
    fn sigreturn_in_either_encoding() {
        let glibc = [0x90, 0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05];
        assert_eq!(find_sigreturn(&glibc), Some(1));
        let short = [0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05];
        assert_eq!(find_sigreturn(&short), Some(0));
        assert_eq!(find_sigreturn(&[0xb8, 0x0e, 0, 0, 0, 0x0f, 0x05]), None);
    }

    /// An XSAVE area as PTRACE_GETREGSET gives it: XCR0 at the software-reserved bytes.
    fn xstate(size: usize) -> Vec<u8> {
        let mut x = vec![0xAA; size];
        x[SW_RESERVED..SW_RESERVED + 8].copy_from_slice(&0xe7u64.to_ne_bytes());
        x
    }

    #[test]
    fn the_frame_is_what_rt_sigreturn_reads() {
        let mut regs = Regs::default();
        regs.0[reg::RSP] = 0x7fff_0000_1238;
        regs.0[reg::RIP] = 0x40_1000;
        regs.0[reg::RAX] = 7;
        regs.0[reg::R8] = 8;
        regs.0[reg::CS] = 0x33;
        regs.0[reg::SS] = 0x2b;
        let xs = xstate(2696);
        let f = frame(&regs, 0xdead, &xs, 0x5555_0000).unwrap();
        let u64_at = |off: usize| u64::from_ne_bytes(f.bytes[off..off + 8].try_into().unwrap());
        // rt_sigreturn reads the frame at rsp - 8 after `ret` popped pretcode.
        assert_eq!(f.sp, f.at);
        assert_eq!(f.at % 16, 8);
        assert_eq!(u64_at(0), 0x5555_0000);
        assert_eq!(u64_at(UC_FLAGS_AT), UC_FLAGS);
        assert_eq!(u64_at(MCONTEXT_AT), 8, "r8 first");
        assert_eq!(u64_at(MCONTEXT_AT + 13 * 8), 7, "rax");
        assert_eq!(u64_at(MCONTEXT_AT + 15 * 8), 0x7fff_0000_1238, "rsp");
        assert_eq!(u64_at(MCONTEXT_AT + 16 * 8), 0x40_1000, "rip");
        assert_eq!(u64_at(SIGMASK_AT), 0xdead);
        let cs = MCONTEXT_AT + 18 * 8;
        assert_eq!(&f.bytes[cs..cs + 8], &[0x33, 0, 0, 0, 0, 0, 0x2b, 0]);
        // The XSAVE area is 64-byte aligned, above the frame, below the red zone, with
        // the second magic word right after it.
        let fp = u64_at(MCONTEXT_AT + 23 * 8);
        assert_eq!(fp % 64, 0);
        assert!(fp >= f.at + FRAME_LEN);
        let end = fp + 2696 + 4;
        assert!(end <= regs.0[reg::RSP] - RED_ZONE);
        assert_eq!(f.at + f.bytes.len() as u64, end);
        let x = (fp - f.at) as usize;
        assert_eq!(&f.bytes[x..x + SW_RESERVED], &xs[..SW_RESERVED]);
        assert_eq!(&f.bytes[x + 512..x + 2696], &xs[512..]);
        let sw =
            |o: usize| u32::from_ne_bytes(f.bytes[x + SW_RESERVED + o..][..4].try_into().unwrap());
        assert_eq!(sw(0), FP_XSTATE_MAGIC1);
        assert_eq!(sw(4), 2700, "extended size");
        assert_eq!(sw(8), 0xe7, "xfeatures: the thread's XCR0");
        assert_eq!(sw(16), 2696, "xstate size");
        assert_eq!(
            u32::from_ne_bytes(f.bytes[x + 2696..x + 2700].try_into().unwrap()),
            FP_XSTATE_MAGIC2
        );
        // Without XCR0, no frame (the kernel would restore legacy state only).
        assert!(frame(&regs, 0, &vec![0; 4096], 1).is_none());
        assert!(frame(&regs, 0, &xs[..500], 1).is_none());
    }
}
