//! Target `image`: the context-image reader on a file holding the input.
//!
//! Each input is written to a memfd and opened with [`Reader::open`], as `lifeboat
//! restart` and `lifeboat inspect` open a file: container header, section headers,
//! checksums, every record decoded and validated. An image that opens is also verified
//! ([`Reader::verify`], [`Reader::verify_pages`]), summarised by
//! [`lifeboat_engine::inspect`], and its page streams read (at most
//! [`MAX_PAGE_BYTES`] of them).
//!
//! Every section carries xxh3 checksums of its header and payload, so almost every
//! mutation of a record would stop at the checksum. The input is therefore opened twice:
//! as it is (the container's own checks), and [`repair`]ed, with every checksum and the
//! END count recomputed, so that mutated records reach the decoders behind them.

use crate::{Scratch, render};
use lifeboat_engine::image::Reader;
use lifeboat_engine::image::container::{END_KIND, FILE_HEADER_LEN, FLAG_ZSTD, SECTION_HEADER_LEN};
use std::io::Read;
use xxhash_rust::xxh3::xxh3_64;

/// Largest input the target looks at; larger ones return at once (the seeds are far
/// smaller, and a bigger file only makes each execution slower).
pub const MAX_INPUT: usize = 1 << 20;

/// Most decompressed page bytes read per image, so that a compressed page stream that
/// claims gigabytes costs bounded time.
pub const MAX_PAGE_BYTES: u64 = 4 << 20;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    SCRATCH.with(|scratch| {
        open(scratch, data);
        let repaired = repair(data);
        if repaired != data {
            open(scratch, &repaired);
        }
    });
}

fn open(scratch: &Scratch, data: &[u8]) {
    scratch.set(data);
    let path = scratch.path();
    let reader = match Reader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            std::hint::black_box(render(&e));
            return;
        }
    };
    for (_, _, verdict) in reader.verify() {
        if let Err(e) = verdict {
            std::hint::black_box(render(&e));
        }
    }
    if let Err(e) = reader.verify_pages() {
        std::hint::black_box(render(&e));
    }
    for index in 0..reader.images().len() {
        match reader.pages_of(index) {
            Ok(Some(stream)) => {
                let mut sink = Vec::new();
                if let Err(e) = stream.take(MAX_PAGE_BYTES).read_to_end(&mut sink) {
                    std::hint::black_box(render(&e));
                }
            }
            Ok(None) => {}
            Err(e) => {
                std::hint::black_box(render(&e));
            }
        }
    }
    match lifeboat_engine::inspect(&path) {
        Ok(summary) => {
            std::hint::black_box(format!("{summary:?}"));
        }
        Err(e) => {
            std::hint::black_box(render(&e));
        }
    }
}

/// `data` with every checksum the container format holds made to match: each section
/// header's payload checksum and header check, and the END section's count of sections.
///
/// Sections are walked as the reader walks them; a section whose length runs past the
/// end of the input is shortened to what is there. Uncompressed sections get
/// `raw_len = stored_len`. Whatever follows the last whole section header is left as
/// it is. A well-formed image comes back unchanged.
pub fn repair(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let header_len = SECTION_HEADER_LEN as usize;
    let mut pos = FILE_HEADER_LEN as usize;
    let mut sections: u64 = 0;
    while out.len().saturating_sub(pos) >= header_len {
        let payload = pos + header_len;
        let kind = u32_at(&out, pos);
        let flags = u32_at(&out, pos + 4);
        let left = (out.len() - payload) as u64;
        let stored = u64_at(&out, pos + 8).min(left);
        put_u64(&mut out, pos + 8, stored);
        if flags & FLAG_ZSTD == 0 {
            put_u64(&mut out, pos + 16, stored);
        }
        // Bounded by `left` above, so it fits in usize.
        let end = payload + usize::try_from(stored).unwrap_or(0);
        if kind == END_KIND && stored == 8 {
            put_u64(&mut out, payload, sections);
        }
        let checksum = xxh3_64(&out[payload..end]);
        put_u64(&mut out, pos + 24, checksum);
        let check = xxh3_64(&out[pos..pos + 32]);
        put_u64(&mut out, pos + 32, check);
        if kind == END_KIND {
            break;
        }
        sections += 1;
        pos = end;
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
