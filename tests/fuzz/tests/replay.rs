//! Replays every committed input of every fuzz target: the minimized corpora under
//! `corpus/TARGET/` and the inputs of past findings under `crashes/TARGET/`. A target
//! that panics, or an input that used to crash, fails the test with the file named.
//! Also checks the image target's checksum repair on real and damaged images.

use lifeboat_engine::image::Reader;
use lifeboat_fuzz::{http, image, inputs, rasdaemon_log, rules, seeds};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `target` on every file under `rel`; returns how many there were.
fn replay(target: fn(&[u8]), rel: &str) -> usize {
    let path = dir(rel);
    if !path.exists() {
        return 0;
    }
    let files = inputs(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
    files.len()
}

fn check(name: &str, target: fn(&[u8]), min_corpus: usize) {
    let corpus = replay(target, &format!("corpus/{name}"));
    assert!(
        corpus >= min_corpus,
        "corpus/{name} holds {corpus} inputs, expected at least {min_corpus}"
    );
    replay(target, &format!("crashes/{name}"));
}

#[test]
fn image_corpus_and_crashes_replay() {
    check("image", image::run, 5);
}

#[test]
fn rules_corpus_and_crashes_replay() {
    check("rules", rules::run, 10);
}

#[test]
fn http_corpus_and_crashes_replay() {
    check("http", http::run, 8);
}

/// The harness's agent answers as `lifeboat agent` does, and its checkpoint requests
/// stop before the engine: a live process named in an authorized request is untouched.
#[test]
fn http_harness_answers_and_never_checkpoints() {
    let text = |req: String| String::from_utf8(http::exchange(req.as_bytes(), 1 << 20)).unwrap();
    let health = text("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".into());
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    let metrics =
        text("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n".into());
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );
    assert!(metrics.contains("# EOF"), "{metrics}");

    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let body = format!(r#"{{"pid": {}, "after": "kill"}}"#, child.id());
    let post = |token: &str| {
        text(format!(
            "POST /api/v1/checkpoint HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let denied = post("wrong-token-0123456789");
    assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
    // `spawn` returns once the child's exec is past its point of no return, a moment
    // before its command line exists: until then the agent sees no process to save.
    let started = std::time::Instant::now();
    while std::fs::read(format!("/proc/{}/cmdline", child.id())).is_ok_and(|c| c.is_empty()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "sleep never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let dry = post(http::TOKEN);
    assert!(dry.starts_with("HTTP/1.1 409 "), "{dry}");
    assert!(dry.contains("dry run: the process was not frozen"), "{dry}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process named in the request must still run"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn rasdaemon_log_corpus_and_crashes_replay() {
    check("rasdaemon_log", rasdaemon_log::run, 10);
}

/// Well-formed images, crafted and real, come out of `repair` unchanged, so the
/// target opens a seed once; a damaged checksum is repaired so that the record behind
/// it is decoded.
#[test]
fn repair_keeps_good_images_and_fixes_checksums() {
    let tmp = std::env::temp_dir().join(format!("lifeboat-fuzz-repair-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut images = seeds::write_images(&tmp).unwrap();
    images.extend(
        inputs(&dir("corpus/image"))
            .unwrap()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("real-")
            }),
    );
    assert!(images.len() >= 5, "{images:?}");
    for path in &images {
        let data = std::fs::read(path).unwrap();
        Reader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            image::repair(&data) == data,
            "{}: repair changed a good image",
            path.display()
        );

        // One flipped byte in the first section's payload (after the 16-byte file
        // header and the 40-byte section header): the checksum catches it, the repair
        // makes it match again.
        let mut damaged = data.clone();
        damaged[16 + 40] ^= 0x01;
        let bad = tmp.join("damaged");
        std::fs::write(&bad, &damaged).unwrap();
        let err = Reader::open(&bad).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{}: {err}", path.display());
        let fixed = image::repair(&damaged);
        assert!(fixed != damaged, "{}: nothing repaired", path.display());
        std::fs::write(&bad, &fixed).unwrap();
        if let Err(e) = Reader::open(&bad) {
            let msg = e.to_string();
            assert!(!msg.contains("checksum"), "{}: {msg}", path.display());
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Inputs over a target's cap are ignored, not parsed.
#[test]
fn oversized_inputs_return_at_once() {
    let big = vec![
        b'a';
        image::MAX_INPUT
            .max(rules::MAX_INPUT)
            .max(rasdaemon_log::MAX_INPUT)
            .max(http::MAX_INPUT)
            + 1
    ];
    let started = std::time::Instant::now();
    image::run(&big);
    rules::run(&big);
    rasdaemon_log::run(&big);
    http::run(&big);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}
