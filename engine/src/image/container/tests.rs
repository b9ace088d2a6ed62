//! Tests of the container: round trips, damage detection, atomic writes.
#![allow(clippy::unwrap_used)] // Tests may unwrap (STYLE.md).

use super::write::{partial_paths, sweep_stale_partials};
use super::*;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique scratch directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "lifeboat-container-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic test data; `compressible` data has long repeats.
fn pattern(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if compressible {
            let run = (x % 64) as usize + 1;
            let byte = (x >> 8) as u8 % 4;
            out.extend(std::iter::repeat_n(byte, run.min(len - out.len())));
        } else {
            let bytes = x.to_le_bytes();
            out.extend_from_slice(&bytes[..8.min(len - out.len())]);
        }
    }
    out
}

type Spec = (u32, bool, Vec<u8>);

fn write_image(path: &Path, sections: &[Spec]) -> u64 {
    let mut w = ImageWriter::create(path).unwrap();
    for (kind, compress, payload) in sections {
        w.section(*kind, *compress, payload).unwrap();
    }
    w.commit().unwrap()
}

fn read_all(r: &ImageReader, info: &SectionInfo) -> Vec<u8> {
    let mut out = Vec::new();
    r.stream(info).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// Write `sections`, read them back every way, and compare.
fn check(name: &str, sections: &[Spec]) {
    let dir = TestDir::new(name);
    let path = dir.path("img");
    let total = write_image(&path, sections);
    assert_eq!(total, fs::metadata(&path).unwrap().len(), "{name}");
    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.path(), path);
    assert_eq!(r.sections().len(), sections.len(), "{name}");
    for ((kind, compress, payload), info) in sections.iter().zip(r.sections()) {
        assert_eq!(info.kind, *kind, "{name}");
        assert!(*compress || !info.compressed, "{name}");
        assert_eq!(info.raw_len, payload.len() as u64, "{name}");
        assert_eq!(&r.read(info, u64::MAX).unwrap(), payload, "{name}");
        assert_eq!(&r.read(info, info.raw_len).unwrap(), payload, "{name}");
        assert_eq!(&read_all(&r, info), payload, "{name}");
        r.verify(info).unwrap();
    }
    for (kind, _, payload) in sections {
        let first = r.first(*kind).unwrap();
        assert_eq!(first.kind, *kind);
        let n = sections.iter().filter(|s| s.0 == *kind).count();
        assert_eq!(r.all(*kind).count(), n, "{name}");
        let _ = payload;
    }
    assert!(r.first(0xdead).is_none());
    assert_eq!(dir.entries(), ["img"], "{name}: temp file left behind");
}

#[test]
fn round_trip_small_sections() {
    check("empty-image", &[]);
    check("one-empty-plain", &[(1, false, vec![])]);
    check("one-empty-compressed", &[(1, true, vec![])]);
    check("one-byte", &[(7, false, vec![42])]);
    check(
        "mixed",
        &[
            (1, false, b"hello".to_vec()),
            (2, true, pattern(100_000, 1, true)),
            (1, true, pattern(5000, 2, false)),
            (3, false, pattern(70_000, 3, false)),
            (0, false, vec![0; 40]),
            (0xFFFF_FFFE, true, vec![9; 1 << 16]),
        ],
    );
}

#[test]
fn compression_is_used_when_it_helps() {
    let dir = TestDir::new("compress");
    let path = dir.path("img");
    let data = pattern(1 << 20, 4, true);
    let noise = pattern(1 << 16, 5, false);
    write_image(&path, &[(1, true, data.clone()), (2, true, noise.clone())]);
    let r = ImageReader::open(&path).unwrap();
    let s = r.sections();
    assert!(s[0].compressed && s[0].stored_len < s[0].raw_len / 4);
    assert!(!s[1].compressed, "incompressible data is stored plain");
    assert_eq!(r.read(&s[0], 1 << 20).unwrap(), data);
    assert_eq!(r.read(&s[1], 1 << 16).unwrap(), noise);
}

/// Stream `data` into one section in uneven chunks, plus sections around it.
fn check_streamed(name: &str, data: &[u8], compress: bool) {
    let dir = TestDir::new(name);
    let path = dir.path("big.img");
    let mut w = ImageWriter::create(&path).unwrap();
    w.section(1, false, b"before").unwrap();
    let before = w.bytes_written();
    let mut s = w.stream(2, compress).unwrap();
    let mut rest = data;
    let mut step = 1usize;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        s.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
        step = (step * 3 + 7) % (3 << 20) + 1;
    }
    assert_eq!(s.raw_len(), data.len() as u64);
    let stored = s.finish().unwrap();
    assert_eq!(w.bytes_written(), before + SECTION_HEADER_LEN + stored);
    assert!(!path.exists(), "final file exists before commit");
    w.stream(3, compress).unwrap().finish().unwrap();
    w.section(4, true, b"after").unwrap();
    let total = w.commit().unwrap();
    assert_eq!(total, fs::metadata(&path).unwrap().len());

    let r = ImageReader::open(&path).unwrap();
    let kinds: Vec<u32> = r.sections().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [1, 2, 3, 4]);
    let big = r.first(2).unwrap();
    assert_eq!(big.compressed, compress);
    assert_eq!(big.stored_len, stored);
    assert_eq!(big.raw_len, data.len() as u64);
    assert!(
        read_all(&r, big) == data,
        "{name}: streamed payload differs"
    );
    assert!(
        r.read(big, u64::MAX).unwrap() == data,
        "{name}: read payload differs"
    );
    r.verify(big).unwrap();
    let empty = r.first(3).unwrap();
    assert_eq!(r.read(empty, 0).unwrap(), b"");
    assert_eq!(r.read(r.first(1).unwrap(), 6).unwrap(), b"before");
    assert_eq!(r.read(r.first(4).unwrap(), 5).unwrap(), b"after");
}

#[test]
fn streamed_64mib_round_trip_plain() {
    check_streamed("stream-plain", &pattern(64 << 20, 6, false), false);
}

#[test]
fn streamed_64mib_round_trip_compressed() {
    check_streamed("stream-zstd", &pattern(64 << 20, 7, true), true);
}

#[test]
fn streamed_small_round_trips() {
    for (i, len) in [0usize, 1, 4095, 4096, 4097, 300_000]
        .into_iter()
        .enumerate()
    {
        for compress in [false, true] {
            let data = pattern(len, i as u64, i % 2 == 0);
            check_streamed(&format!("stream-small-{len}-{compress}"), &data, compress);
        }
    }
}

/// Section header offsets of the image at `path`, END included.
fn header_offsets(path: &Path) -> Vec<u64> {
    let r = ImageReader::open(path).unwrap();
    let mut out: Vec<u64> = r
        .sections()
        .iter()
        .map(|s| s.offset - SECTION_HEADER_LEN)
        .collect();
    let end = r
        .sections()
        .last()
        .map_or(FILE_HEADER_LEN, |s| s.offset + s.stored_len);
    out.push(end);
    out
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// Rewrite the section header at `at` with a valid header_check.
fn rewrite_header(path: &Path, at: u64, change: impl FnOnce(&mut SectionHeader)) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut raw = [0u8; SECTION_HEADER_LEN as usize];
    f.read_exact_at(&mut raw, at).unwrap();
    let mut h = SectionHeader::decode(&raw).unwrap();
    change(&mut h);
    f.write_all_at(&h.encode(), at).unwrap();
}

fn sample(dir: &TestDir) -> PathBuf {
    let path = dir.path("img");
    write_image(
        &path,
        &[
            (10, false, pattern(3000, 8, false)),
            (11, true, pattern(50_000, 9, true)),
            (12, false, b"tail".to_vec()),
        ],
    );
    path
}

#[test]
fn flipped_payload_byte_fails_checksum() {
    for (index, at) in [(0usize, 0u64), (0, 2999), (1, 0), (1, 100), (2, 3)] {
        let dir = TestDir::new("flip-payload");
        let path = sample(&dir);
        let info = ImageReader::open(&path).unwrap().sections()[index];
        flip(&path, info.offset + at);
        // The header walk does not read payloads: the image still opens.
        let r = ImageReader::open(&path).unwrap();
        let expected = |e: &ContainerError| {
            matches!(e, ContainerError::ChecksumMismatch { kind, offset, .. }
                if *kind == info.kind && *offset == info.offset)
        };
        let e = r.read(&info, u64::MAX).unwrap_err();
        assert!(expected(&e), "read: {e:?}");
        let e = r.verify(&info).unwrap_err();
        assert!(expected(&e), "verify: {e:?}");
        let e = r
            .stream(&info)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("section {:#x}", info.kind)) && msg.contains("img"),
            "{msg}"
        );
        let inner = e
            .into_inner()
            .unwrap()
            .downcast::<ContainerError>()
            .unwrap();
        assert!(expected(&inner), "stream: {inner:?}");
        // Untouched sections still read.
        for other in r.sections().iter().filter(|s| s.kind != info.kind) {
            r.read(other, u64::MAX).unwrap();
        }
    }
}

#[test]
fn failed_stream_keeps_failing() {
    let dir = TestDir::new("keeps-failing");
    let path = sample(&dir);
    let info = ImageReader::open(&path).unwrap().sections()[2];
    flip(&path, info.offset);
    let r = ImageReader::open(&path).unwrap();
    let mut s = r.stream(&info).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).unwrap(), 4);
    assert!(s.read(&mut buf).is_err());
    assert!(
        s.read(&mut buf).is_err(),
        "a failed stream must not turn into EOF"
    );
}

#[test]
fn corrupt_section_header_is_detected() {
    // Byte offsets inside a section header: kind, flags, stored_len (low and high
    // bytes), raw_len, checksum, header_check.
    for field in [0u64, 5, 8, 15, 16, 24, 32, 39] {
        for which in 0..4 {
            let dir = TestDir::new("corrupt-header");
            let path = sample(&dir);
            let at = header_offsets(&path)[which];
            flip(&path, at + field);
            match ImageReader::open(&path) {
                Err(ContainerError::CorruptHeader { offset, .. }) => assert_eq!(offset, at),
                other => panic!("field {field} of header {which}: {other:?}"),
            }
        }
    }
}

#[test]
fn truncation_anywhere_is_reported() {
    let dir = TestDir::new("truncate");
    let path = sample(&dir);
    let full = fs::read(&path).unwrap();
    let cut_path = dir.path("cut");
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((64..full.len()).step_by(97));
    for h in header_offsets(&path) {
        let h = h as usize;
        cuts.extend([h - 1, h, h + 1, h + 39, h + 40, h + 41]);
    }
    cuts.push(full.len() - 1);
    for cut in cuts.into_iter().filter(|&c| c < full.len()) {
        fs::write(&cut_path, &full[..cut]).unwrap();
        match ImageReader::open(&cut_path) {
            Err(ContainerError::Truncated { offset, .. }) => {
                assert!(offset <= cut as u64, "cut {cut}: offset {offset}")
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn random_damage_is_always_detected() {
    // Every byte of an image is covered by some check (magic, version, reserved
    // word, header_check, payload checksum), so any change must be reported, and
    // never by a panic.
    let dir = TestDir::new("damage");
    let path = sample(&dir);
    let pristine = fs::read(&path).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..400 {
        let mut bytes = pristine.clone();
        for _ in 0..=next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] ^= (next() % 255) as u8 + 1;
        }
        fs::write(&path, &bytes).unwrap();
        let Ok(r) = ImageReader::open(&path) else {
            continue;
        };
        let mut detected = false;
        for info in r.sections() {
            let read = r.read(info, 1 << 20).is_err();
            let streamed = r
                .stream(info)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .is_err();
            let verified = r.verify(info).is_err();
            assert_eq!(read, streamed, "round {round}");
            assert!(verified <= read, "round {round}");
            detected |= read;
        }
        assert!(detected, "round {round}: damage went unnoticed");
    }
}

#[test]
fn trailing_data_after_end() {
    let dir = TestDir::new("trailing");
    let path = sample(&dir);
    let len = fs::metadata(&path).unwrap().len();
    patch(&path, len, b"x");
    match ImageReader::open(&path) {
        Err(ContainerError::TrailingData { offset, .. }) => assert_eq!(offset, len),
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_header_errors() {
    let dir = TestDir::new("file-header");
    let path = sample(&dir);
    let pristine = fs::read(&path).unwrap();
    let reset = || fs::write(&path, &pristine).unwrap();

    flip(&path, 0);
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::BadMagic { .. })
    ));
    reset();
    fs::write(&path, b"LIFEBOA").unwrap();
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::Truncated { offset: 0, .. })
    ));
    fs::write(&path, b"#!/bin/sh\n").unwrap();
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::BadMagic { .. })
    ));
    reset();
    patch(&path, 8, &2u32.to_le_bytes());
    match ImageReader::open(&path) {
        Err(
            e @ ContainerError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            },
        ) => {
            assert!(e.to_string().contains("version 2"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Every version from the oldest readable one to the current one is read; older ones
    // are refused like newer ones.
    for v in OLDEST_READABLE_VERSION..=FORMAT_VERSION {
        reset();
        patch(&path, 8, &v.to_le_bytes());
        ImageReader::open(&path).unwrap();
    }
    reset();
    patch(&path, 8, &(OLDEST_READABLE_VERSION - 1).to_le_bytes());
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::UnsupportedVersion { .. })
    ));
    reset();
    patch(&path, 12, &1u32.to_le_bytes());
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::CorruptHeader { offset: 12, .. })
    ));
    reset();
    ImageReader::open(&path).unwrap();
}

#[test]
fn unknown_flags_are_refused() {
    let dir = TestDir::new("flags");
    let path = sample(&dir);
    let at = header_offsets(&path)[1];
    rewrite_header(&path, at, |h| h.flags |= 0x8000_0000);
    match ImageReader::open(&path) {
        Err(ContainerError::UnknownFlags {
            kind: 11, flags, ..
        }) => {
            assert_eq!(flags, 0x8000_0001)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inconsistent_headers_are_corrupt() {
    type Change = fn(&mut SectionHeader);
    let cases: [(usize, Change); 5] = [
        // Plain section whose raw_len differs from stored_len.
        (0, |h| h.raw_len += 1),
        // END with the wrong length, compressed, or a wrong count.
        (3, |h| h.raw_len = 9),
        (3, |h| h.flags = FLAG_ZSTD),
        (3, |h| h.stored_len = 0),
        (3, |h| h.checksum ^= 1),
    ];
    for (i, (which, change)) in cases.into_iter().enumerate() {
        let dir = TestDir::new("inconsistent");
        let path = sample(&dir);
        let at = header_offsets(&path)[which];
        rewrite_header(&path, at, change);
        let got = ImageReader::open(&path);
        let ok = match &got {
            Err(ContainerError::CorruptHeader { offset, .. }) => *offset == at,
            Err(ContainerError::ChecksumMismatch { kind, .. }) => *kind == END_KIND && i == 4,
            Err(ContainerError::TrailingData { .. }) => i == 3,
            _ => false,
        };
        assert!(ok, "case {i}: {got:?}");
    }
    // A valid END whose count disagrees with the sections present.
    let dir = TestDir::new("end-count");
    let path = sample(&dir);
    let at = header_offsets(&path)[3];
    let count = 2u64.to_le_bytes();
    patch(&path, at + SECTION_HEADER_LEN, &count);
    rewrite_header(&path, at, |h| h.checksum = xxh3_64(&count));
    assert!(matches!(
        ImageReader::open(&path),
        Err(ContainerError::CorruptHeader { .. })
    ));
}

#[test]
fn too_large_is_refused_before_reading() {
    let dir = TestDir::new("too-large");
    let path = sample(&dir);
    let r = ImageReader::open(&path).unwrap();
    let info = r.sections()[1];
    match r.read(&info, 49_999) {
        Err(ContainerError::TooLarge {
            kind: 11,
            len: 50_000,
            max: 49_999,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A tampered raw_len on a compressed section cannot drive the allocation either.
    let at = info.offset - SECTION_HEADER_LEN;
    rewrite_header(&path, at, |h| h.raw_len = u64::MAX);
    let r = ImageReader::open(&path).unwrap();
    assert!(matches!(
        r.read(&r.sections()[1], 1 << 30),
        Err(ContainerError::TooLarge { .. })
    ));
    // Even with no limit, a 16 EiB claim fails on the data, not on the allocator.
    assert!(matches!(
        r.read(&r.sections()[1], u64::MAX),
        Err(ContainerError::Decompress { .. })
    ));
}

#[test]
fn decompression_errors() {
    // raw_len that disagrees with the compressed data, either way.
    for delta in [1i64, -1, -49_999] {
        let dir = TestDir::new("raw-len");
        let path = sample(&dir);
        let info = ImageReader::open(&path).unwrap().sections()[1];
        rewrite_header(&path, info.offset - SECTION_HEADER_LEN, |h| {
            h.raw_len = h.raw_len.wrapping_add_signed(delta)
        });
        let r = ImageReader::open(&path).unwrap();
        let info = r.sections()[1];
        let e = r.read(&info, u64::MAX).unwrap_err();
        assert!(
            matches!(e, ContainerError::Decompress { kind: 11, .. }),
            "{delta}: {e:?}"
        );
        let e = r
            .stream(&info)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{delta}");
        // The stored bytes are intact: only a full verification finds it.
        r.verify(&info).unwrap();
        let e = r.verify_decoded(&info).unwrap_err();
        assert!(
            matches!(e, ContainerError::Decompress { kind: 11, .. }),
            "{delta}: {e:?}"
        );
    }
    // Garbage that carries a valid checksum (written by something other than us).
    let dir = TestDir::new("garbage");
    let path = sample(&dir);
    let info = ImageReader::open(&path).unwrap().sections()[0];
    rewrite_header(&path, info.offset - SECTION_HEADER_LEN, |h| {
        h.flags = FLAG_ZSTD;
        h.raw_len = 10_000;
    });
    let r = ImageReader::open(&path).unwrap();
    let e = r.read(&r.sections()[0], u64::MAX).unwrap_err();
    assert!(
        matches!(e, ContainerError::Decompress { kind: 10, .. }),
        "{e:?}"
    );
    r.verify(&r.sections()[0]).unwrap();
    let e = r.verify_decoded(&r.sections()[0]).unwrap_err();
    assert!(
        matches!(e, ContainerError::Decompress { kind: 10, .. }),
        "{e:?}"
    );
    // Sound sections, plain or compressed, pass both.
    let dir = TestDir::new("sound");
    let path = sample(&dir);
    let r = ImageReader::open(&path).unwrap();
    for info in r.sections() {
        r.verify_decoded(info).unwrap();
    }
}

#[test]
fn dropped_writer_leaves_nothing() {
    let dir = TestDir::new("drop");
    let path = dir.path("img");
    {
        let mut w = ImageWriter::create(&path).unwrap();
        w.section(1, false, b"x").unwrap();
        let mut s = w.stream(2, true).unwrap();
        s.write_all(&[0; 10_000]).unwrap();
        s.finish().unwrap();
        let pid = std::process::id();
        assert_eq!(dir.entries(), [format!(".img.partial.{pid}")]);
        assert!(!path.exists());
    }
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());

    // Same after a panic mid-stream.
    let p = path.clone();
    let result = std::panic::catch_unwind(move || {
        let mut w = ImageWriter::create(&p).unwrap();
        let mut s = w.stream(2, false).unwrap();
        s.write_all(&[1; 3 << 20]).unwrap();
        panic!("simulated failure");
    });
    assert!(result.is_err());
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn final_file_appears_only_at_commit() {
    let dir = TestDir::new("commit");
    let path = dir.path("img");
    fs::write(&path, b"previous image").unwrap();
    let mut w = ImageWriter::create(&path).unwrap();
    w.section(1, false, &[5; 2 << 20]).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"previous image");
    let total = w.commit().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), total);
    assert_eq!(dir.entries(), ["img"]);
    let r = ImageReader::open(&path).unwrap();
    assert_eq!(r.read(&r.sections()[0], 2 << 20).unwrap(), vec![5; 2 << 20]);
}

#[test]
fn temp_file_is_private_and_exclusive() {
    let dir = TestDir::new("exclusive");
    let path = dir.path("img");
    let w = ImageWriter::create(&path).unwrap();
    let temp = dir.path(&format!(".img.partial.{}", std::process::id()));
    let mode = fs::metadata(&temp).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    match ImageWriter::create(&path) {
        Err(ContainerError::Create { path, source }) => {
            assert_eq!(path, temp);
            assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
        }
        other => panic!("{other:?}"),
    }
    // The failed second writer must not have removed the first one's file.
    assert!(temp.exists());
    w.commit().unwrap();
    assert_eq!(dir.entries(), ["img"]);
}

#[test]
fn writer_misuse_is_refused() {
    let dir = TestDir::new("misuse");
    let path = dir.path("img");
    let mut w = ImageWriter::create(&path).unwrap();
    assert!(matches!(
        w.section(END_KIND, false, b""),
        Err(ContainerError::ReservedKind { kind: END_KIND, .. })
    ));
    assert!(matches!(
        w.stream(END_KIND, true),
        Err(ContainerError::ReservedKind { .. })
    ));
    w.section(1, false, b"fine").unwrap();
    // A stream dropped without finish leaves a placeholder header: no commit.
    drop(w.stream(2, false).unwrap());
    assert!(matches!(
        w.section(3, false, b""),
        Err(ContainerError::Incomplete { .. })
    ));
    assert!(matches!(w.commit(), Err(ContainerError::Incomplete { .. })));
    assert!(dir.entries().is_empty());
}

#[test]
fn filesystem_errors_name_the_path() {
    let dir = TestDir::new("fs-errors");
    let missing = dir.path("no/such/dir/img");
    match ImageWriter::create(&missing) {
        Err(e @ ContainerError::Create { .. }) => {
            assert!(e.to_string().contains("no/such/dir"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match ImageReader::open(&dir.path("absent")) {
        Err(e @ ContainerError::Open { .. }) => {
            assert!(e.to_string().contains("absent"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ImageWriter::create(Path::new("/")),
        Err(ContainerError::Create { .. })
    ));
    assert!(matches!(
        ImageReader::open(&dir.0),
        Err(ContainerError::Open { .. })
    ));
    // The final path is a non-empty directory: rename fails, temp is cleaned up.
    let target = dir.path("taken");
    fs::create_dir_all(target.join("child")).unwrap();
    let w = ImageWriter::create(&target).unwrap();
    match w.commit() {
        Err(ContainerError::Rename { from, to, .. }) => {
            assert_eq!(to, target);
            assert!(!from.exists());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dir.entries(), ["taken"]);
}

#[test]
fn temp_file_sits_beside_the_final_path() {
    let check = |final_path: &str, expected: Option<(&str, &str)>| {
        let got = partial_paths(Path::new(final_path), 42);
        let expected = expected.map(|(d, t)| (PathBuf::from(d), PathBuf::from(t)));
        assert_eq!(got, expected, "{final_path}");
    };
    check("img", Some((".", "./.img.partial.42")));
    check("./img", Some((".", "./.img.partial.42")));
    check("a/b.lbi", Some(("a", "a/.b.lbi.partial.42")));
    check(
        "/var/lib/x/ck.1",
        Some(("/var/lib/x", "/var/lib/x/.ck.1.partial.42")),
    );
    check("/", None);
    check("a/..", None);
    check("", None);
}

#[test]
fn types_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<ImageWriter>();
    send::<ImageReader>();
    sync::<ImageReader>();
    send::<SectionRead>();
    send::<ContainerError>();
    sync::<ContainerError>();
}

#[test]
fn concurrent_streams_from_one_reader() {
    let dir = TestDir::new("concurrent");
    let path = dir.path("img");
    let a = pattern(300_000, 10, false);
    let b = pattern(300_000, 11, true);
    write_image(&path, &[(1, false, a.clone()), (2, true, b.clone())]);
    let r = ImageReader::open(&path).unwrap();
    let mut sa = r.stream(&r.sections()[0]).unwrap();
    let mut sb = r.stream(&r.sections()[1]).unwrap();
    assert_eq!(sa.info().kind, 1);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 7919];
    loop {
        let na = sa.read(&mut buf).unwrap();
        got_a.extend_from_slice(&buf[..na]);
        let nb = sb.read(&mut buf).unwrap();
        got_b.extend_from_slice(&buf[..nb]);
        if na == 0 && nb == 0 {
            break;
        }
    }
    assert!(got_a == a && got_b == b);
}

#[test]
fn messages_are_actionable() {
    let e = ContainerError::ChecksumMismatch {
        path: PathBuf::from("/tmp/x.img"),
        kind: 0x12,
        offset: 56,
    };
    assert_eq!(
        e.to_string(),
        "/tmp/x.img: section 0x12 at offset 56 fails its checksum (the image is corrupt or was modified)"
    );
    let io: io::Error = e.into();
    assert_eq!(io.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn abandoned_partial_files_are_swept() {
    let dir = TestDir::new("sweep");
    // A writer that died: a finished child's PID.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let image_bytes = {
        let p = dir.path("real");
        write_image(&p, &[(1, false, b"x".to_vec())]);
        fs::read(&p).unwrap()
    };
    let put = |name: &str, bytes: &[u8]| {
        let p = dir.path(name);
        fs::write(&p, bytes).unwrap();
        p
    };
    let stale = put(&format!(".a.partial.{dead}"), &image_bytes);
    let empty = put(&format!(".b.partial.{dead}"), b"");
    let not_ours = put(&format!(".c.partial.{dead}"), b"someone else's data");
    let live = put(".d.partial.1", &image_bytes);
    // Idle for "long enough" (0 s here), and a second pass with a long delay.
    sweep_stale_partials(&dir.0, std::time::Duration::from_secs(3600));
    assert!(
        stale.exists() && empty.exists(),
        "recent files are left alone"
    );
    sweep_stale_partials(&dir.0, std::time::Duration::ZERO);
    assert!(!stale.exists() && !empty.exists(), "{:?}", dir.entries());
    assert!(not_ours.exists(), "only lifeboat's partial files go");
    assert!(live.exists(), "a live writer's file stays");
}
