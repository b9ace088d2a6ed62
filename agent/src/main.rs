//! `lifeboat`: the binary. Everything is in the library (`src/lib.rs`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lifeboat::main()
}
