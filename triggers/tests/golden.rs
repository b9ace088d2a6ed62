//! Golden tests of validation messages: every file under `tests/fixtures/rules/bad/` must
//! be rejected and every file under `tests/fixtures/rules/warnings/` accepted with
//! warnings; the rendered diagnostics must equal `tests/golden/rules/<dir>/<name>.txt`.
//! Re-bless with `UPDATE_EXPECT=1 cargo test -p lifeboat-triggers --test golden`: the
//! workspace's one golden mechanism, `tests/common/golden.rs`, included here by path.

#[path = "../../tests/common/golden.rs"]
mod golden;

use std::fs;
use std::path::{Path, PathBuf};

use golden::assert_golden;
use lifeboat_triggers::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Renders each fixture of `dir` and compares with its golden file; returns the number
/// of fixtures checked.
fn check_dir(dir: &str, expect_ok: bool) -> usize {
    let fixtures = repo().join("tests/fixtures/rules").join(dir);
    let mut names: Vec<PathBuf> = fs::read_dir(&fixtures)
        .expect("fixture directory")
        .map(|e| e.expect("fixture directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    for path in &names {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("fixture names are UTF-8");
        let shown = format!("tests/fixtures/rules/{dir}/{stem}.toml");
        let text = fs::read_to_string(path).expect("read fixture");
        let rendered = match Config::from_str(&text, &shown) {
            Ok(c) => {
                assert!(expect_ok, "{shown}: accepted, but it is in bad/");
                assert!(!c.warnings.is_empty(), "{shown}: no warning");
                let mut s = String::new();
                for w in &c.warnings {
                    s.push_str(&format!("{w}\n\n"));
                }
                s
            }
            Err(d) => {
                assert!(!expect_ok, "{shown}: rejected:\n{d}");
                assert!(!d.errors.is_empty(), "{shown}: rejected without error");
                format!("{d}\n\n{}\n", d.summary())
            }
        };
        assert_golden(&format!("tests/golden/rules/{dir}/{stem}.txt"), &rendered);
    }
    names.len()
}

#[test]
fn bad_rule_files_are_rejected_with_the_golden_messages() {
    assert!(check_dir("bad", false) >= 15);
}

#[test]
fn questionable_rule_files_are_accepted_with_the_golden_warnings() {
    assert!(check_dir("warnings", true) >= 2);
}

#[test]
fn the_shipped_configuration_is_clean() {
    let path = repo().join("config/lifeboat.toml");
    let text = fs::read_to_string(&path).unwrap();
    let config = Config::from_str(&text, "config/lifeboat.toml").unwrap_or_else(|d| panic!("{d}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.rules.len() >= 8);
    assert_eq!(
        config.drain.command,
        [
            "scontrol",
            "update",
            "nodename={node}",
            "state=drain",
            "reason={reason}"
        ]
    );
}
