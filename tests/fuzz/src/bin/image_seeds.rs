//! Writes the crafted seed images of the `image` target into a directory (see
//! `lifeboat_fuzz::seeds`).
//!
//! `cargo run -p lifeboat-fuzz --bin image_seeds -- DIR`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: image_seeds DIR");
        return ExitCode::from(2);
    };
    match lifeboat_fuzz::seeds::write_images(&dir) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", lifeboat_fuzz::render(&e));
            ExitCode::FAILURE
        }
    }
}
