//! Declares the `fuzzing` cfg that `cargo afl build` sets, so plain builds do not warn.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
