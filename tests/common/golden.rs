//! The workspace's one golden-file mechanism: output compared with a file checked in
//! under the workspace root (`tests/golden/...`, the generated traces of
//! `tests/fixtures/traces/`), through `expect-test`'s `expect_file!`.
//!
//! - Bless: `UPDATE_EXPECT=1 cargo test --workspace --all-features` rewrites every golden
//!   file whose content differs from the output (any test binary or single test works
//!   the same way). Nothing else rewrites them.
//! - A missing golden file fails the test, blessing or not: goldens are never created by
//!   a test run. A new one is made on purpose: create the file (empty), then bless.
//! - A mismatch shows expect-test's diff. Beyond [`DIFF_LIMIT`] it shows the first line
//!   that differs instead: the diff's cost grows with the product of the two sizes, and a
//!   changed megabyte trace would take minutes.
//!
//! Standalone (std and expect-test only): `tests/` includes it as `common::golden`, and
//! the tests of other workspace members include it by path.

use std::path::{Path, PathBuf};

/// Up to this many bytes on each side, a mismatch is shown as a full diff.
pub const DIFF_LIMIT: usize = 32 * 1024;

/// The workspace root: every member's manifest directory is one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in a workspace directory")
        .to_path_buf()
}

/// Whether this run blesses (expect-test's own switch).
pub fn blessing() -> bool {
    std::env::var("UPDATE_EXPECT").is_ok()
}

/// Asserts that the golden file `path` (relative to the workspace root) holds exactly
/// `actual`; under `UPDATE_EXPECT=1`, makes it hold `actual`. Fails when the file is
/// missing.
pub fn assert_golden(path: &str, actual: &str) {
    let abs = workspace_root().join(path);
    assert!(
        abs.is_file(),
        "golden file {path} is missing ({}). Golden files are never created by a test run: \
         if this output is new, create the file (empty) and fill it with `UPDATE_EXPECT=1 cargo test`",
        abs.display()
    );
    let file = expect_test::expect_file![abs];
    if !blessing() {
        let expected = file.data();
        if expected == actual {
            return;
        }
        if expected.len() > DIFF_LIMIT || actual.len() > DIFF_LIMIT {
            panic!("{}", first_difference(path, &expected, actual));
        }
    }
    file.assert_eq(actual);
}

/// Where `expected` and `actual` part: the first differing line, with both versions.
fn first_difference(path: &str, expected: &str, actual: &str) -> String {
    let mut want = expected.split_inclusive('\n');
    let mut got = actual.split_inclusive('\n');
    let mut line = 1;
    let (w, g) = loop {
        match (want.next(), got.next()) {
            (Some(w), Some(g)) if w == g => line += 1,
            (w, g) => break (w.unwrap_or("<end of file>"), g.unwrap_or("<end of output>")),
        }
    };
    format!(
        "golden file {path} differs from the output, first at line {line} \
         ({} lines expected, {} in the output; too large for a full diff):\n  \
         expected: {w:?}\n  actual:   {g:?}\n\
         If the change is intended, bless it with `UPDATE_EXPECT=1 cargo test`.",
        expected.lines().count(),
        actual.lines().count(),
    )
}
