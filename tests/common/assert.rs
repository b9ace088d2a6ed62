//! Comparisons of what a checkpointed and restarted workload printed with what an
//! uninterrupted run prints, naming the first line that differs and where it came from,
//! and of how a process ended.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::processes::{count_lines, status_text};

fn line_at(b: &[u8], idx: usize) -> String {
    b.split(|&c| c == b'\n')
        .nth(idx)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_else(|| "<end of output>".into())
}

/// Index of the first line where `a` and `b` differ, if they do.
fn first_diff_line(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    Some(count_lines(&a[..common]))
}

/// Asserts that `parts`, concatenated, equal the reference output, naming the first differing line and which part it came from.
pub fn assert_continuation(reference: &[u8], parts: &[(&str, &[u8])], what: &str) {
    let actual: Vec<u8> = parts.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let Some(line) = first_diff_line(reference, &actual) else {
        return;
    };
    let mut msg = format!(
        "{what}: output differs from the uninterrupted run at line {} (1-based)\n  expected: {:?}\n  actual:   {:?}\n  reference has {} lines ({} bytes), actual {} lines ({} bytes)\n  actual output is made of:",
        line + 1,
        line_at(reference, line),
        line_at(&actual, line),
        count_lines(reference),
        reference.len(),
        count_lines(&actual),
        actual.len()
    );
    let mut start = 0;
    for (name, p) in parts {
        let n = count_lines(p);
        let _ = write!(
            msg,
            "\n    {name}: lines {}..{} ({} bytes{})",
            start + 1,
            start + n,
            p.len(),
            if p.ends_with(b"\n") || p.is_empty() {
                ""
            } else {
                ", ends mid-line"
            }
        );
        start += n;
    }
    let text = String::from_utf8_lossy(&actual);
    let lines: Vec<&str> = text.lines().collect();
    let lo = line.saturating_sub(3);
    let hi = (line + 4).min(lines.len());
    let _ = write!(
        msg,
        "\n  actual lines {}..{}:\n    {}",
        lo + 1,
        hi,
        lines[lo.min(hi)..hi].join("\n    ")
    );
    panic!("{msg}");
}

/// Asserts that `copy` is exactly a suffix of the reference that starts at a line boundary no earlier than byte `min_start` (and, if given, exactly at `exact_start`), and ends with the reference's `done` line.
pub fn assert_suffix(
    reference: &[u8],
    copy: &[u8],
    min_start: usize,
    exact_start: Option<usize>,
    what: &str,
) {
    assert!(
        !copy.is_empty(),
        "{what}: the restored copy printed nothing"
    );
    if !reference.ends_with(copy) {
        // Align on the copy's first line to point at the first difference.
        let first = copy.split(|&c| c == b'\n').next().unwrap_or_default();
        let at = reference
            .split(|&c| c == b'\n')
            .position(|l| l == first)
            .map(|i| {
                reference
                    .split_inclusive(|&c| c == b'\n')
                    .take(i)
                    .map(<[u8]>::len)
                    .sum::<usize>()
            });
        match at {
            None => panic!(
                "{what}: the copy's first line {:?} appears nowhere in the reference output",
                String::from_utf8_lossy(first)
            ),
            Some(off) => {
                let sub = &reference[off..];
                let l = first_diff_line(sub, copy).unwrap_or(0);
                panic!(
                    "{what}: the copy's output is not a suffix of the reference. Aligned on its first line (reference line {}), they differ at the copy's line {}:\n  expected: {:?}\n  actual:   {:?}\n  the copy printed {} lines, the reference has {} from there",
                    count_lines(&reference[..off]) + 1,
                    l + 1,
                    line_at(sub, l),
                    line_at(copy, l),
                    count_lines(copy),
                    count_lines(sub)
                );
            }
        }
    }
    let start = reference.len() - copy.len();
    assert!(
        start == 0 || reference[start - 1] == b'\n',
        "{what}: the copy's output starts in the middle of reference line {}",
        count_lines(&reference[..start]) + 1
    );
    assert!(
        start >= min_start,
        "{what}: the copy resumed at reference line {}, before line {} which had already been printed when the checkpoint was taken",
        count_lines(&reference[..start]) + 1,
        count_lines(&reference[..min_start]) + 1
    );
    if let Some(exact) = exact_start {
        assert!(
            start == exact,
            "{what}: the copy resumed at reference line {}, but the process was stopped for the checkpoint right after line {}",
            count_lines(&reference[..start]) + 1,
            count_lines(&reference[..exact])
        );
    }
    let last = String::from_utf8_lossy(copy)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("done"),
        "{what}: the copy's last line is {last:?}, not the `done` line"
    );
}

/// Asserts that `status` is death by `signal`.
pub fn assert_killed_by(status: ExitStatus, signal: i32, what: &str) {
    assert_eq!(
        status.signal(),
        Some(signal),
        "{what} should have been killed by signal {signal}, it ended with {}",
        status_text(status)
    );
}
