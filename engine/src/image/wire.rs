//! Primitive little-endian encoding of image records: an append-only [`Enc`] and a
//! bounds-checked [`Dec`] that turns any malformed input into a typed [`WireError`].
//!
//! The encoding is deliberately plain:
//!
//! | value            | bytes                                              |
//! |------------------|----------------------------------------------------|
//! | `u8`/`u16`/`u32`/`u64`, `i32`/`i64` | fixed width, little-endian       |
//! | `bool`           | one byte, `0` or `1` (anything else is rejected)   |
//! | bytes / `str`    | `u64` length, then that many bytes (`str` is UTF-8) |
//! | `Option<&str>`   | `bool` tag, then the `str` when the tag is `1`     |
//! | element count    | `u64`, checked by [`Dec::count`] against a caller limit |
//!
//! Decoded data is untrusted: every read checks the remaining length first, lengths and
//! counts can never drive an allocation larger than the input itself, and decoding never
//! panics. Offsets in errors are byte offsets into the decoded buffer.
#![warn(missing_docs)]

/// Why a record could not be decoded. Offsets are byte positions in the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A fixed-size value or a length-prefixed field runs past the end of the buffer.
    #[error("record truncated: {need} more bytes needed at offset {offset}")]
    Truncated {
        /// Where the missing bytes were expected to start.
        offset: usize,
        /// How many bytes were needed from `offset`.
        need: usize,
    },
    /// A boolean byte other than 0 or 1.
    #[error("invalid boolean byte {value:#04x} at offset {offset} (expected 0 or 1)")]
    InvalidBool {
        /// Offset of the offending byte.
        offset: usize,
        /// The byte that was found.
        value: u8,
    },
    /// A string field that is not valid UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's first byte (after its length prefix).
        offset: usize,
    },
    /// The record was fully decoded but bytes are left over.
    #[error("{remaining} unexpected trailing bytes after the record at offset {offset}")]
    TrailingBytes {
        /// Offset of the first byte not consumed.
        offset: usize,
        /// How many bytes were left over.
        remaining: usize,
    },
    /// An element count larger than the caller's limit or than the input could hold.
    #[error("element count {count} at offset {offset} exceeds the limit of {max}")]
    CountTooLarge {
        /// Offset of the count field.
        offset: usize,
        /// The count that was read.
        count: u64,
        /// The effective limit: the smaller of the caller's limit and the bytes remaining.
        max: u64,
    },
    /// A value that decodes but is semantically wrong, reported by the caller through
    /// [`Dec::invalid`].
    #[error("invalid record at offset {offset}: {what}")]
    Invalid {
        /// Decoder position when the problem was noticed.
        offset: usize,
        /// What is wrong, e.g. "signal number out of range".
        what: &'static str,
    },
}

/// Append-only little-endian encoder; see the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Append a little-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a little-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a little-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a little-endian `i32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a little-endian `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Append a boolean as one byte, 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Append a `u64` length prefix followed by the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        // usize is at most 64 bits on every target we build for.
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// Append a string: `u64` length prefix followed by its UTF-8 bytes.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// Append an optional string: a `bool` tag, then the string when present.
    pub fn opt_str(&mut self, v: Option<&str>) {
        self.bool(v.is_some());
        if let Some(s) = v {
            self.str(s);
        }
    }

    /// Number of bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been encoded yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Bounds-checked little-endian decoder over a borrowed buffer.
///
/// Every method either consumes exactly the bytes of one value or returns an error and
/// leaves the position where the failing value started.
#[derive(Debug, Clone)]
pub struct Dec<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    /// A decoder positioned at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Current position: the number of bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Number of bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// An [`WireError::Invalid`] at the current position, for semantic checks done by
    /// the caller (e.g. "signal number out of range").
    pub fn invalid(&self, what: &'static str) -> WireError {
        WireError::Invalid {
            offset: self.pos,
            what,
        }
    }

    /// Consume exactly `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let truncated = WireError::Truncated {
            offset: self.pos,
            need: n,
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let out = self.data.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Consume exactly `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Read one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Read a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    /// Read a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    /// Read a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Read a little-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        self.array().map(i32::from_le_bytes)
    }

    /// Read a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.array().map(i64::from_le_bytes)
    }

    /// Read a boolean byte; only 0 and 1 are accepted.
    pub fn bool(&mut self) -> Result<bool, WireError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => {
                self.pos = offset;
                Err(WireError::InvalidBool { offset, value })
            }
        }
    }

    /// Read a `u64`-length-prefixed byte string, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let len = self.u64()?;
        let Ok(n) = usize::try_from(len) else {
            let err = WireError::Truncated {
                offset: self.pos,
                need: usize::MAX,
            };
            self.pos = start;
            return Err(err);
        };
        self.take(n).inspect_err(|_| self.pos = start)
    }

    /// Read a length-prefixed UTF-8 string, borrowed from the input.
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let start = self.pos;
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|_| {
            let offset = self.pos - raw.len();
            self.pos = start;
            WireError::InvalidUtf8 { offset }
        })
    }

    /// Read an optional string written by [`Enc::opt_str`].
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        let start = self.pos;
        if !self.bool()? {
            return Ok(None);
        }
        self.str().map(Some).inspect_err(|_| self.pos = start)
    }

    /// Read a `u64` element count and check it against `max` and against the bytes that
    /// remain (every element takes at least one byte), so that a tampered count can never
    /// size an allocation beyond the input. The result is safe to pass to
    /// `Vec::with_capacity`.
    pub fn count(&mut self, max: u64) -> Result<usize, WireError> {
        let offset = self.pos;
        let count = self.u64()?;
        let room = u64::try_from(self.remaining()).unwrap_or(u64::MAX);
        let limit = max.min(room);
        match usize::try_from(count) {
            Ok(n) if count <= limit => Ok(n),
            _ => {
                self.pos = offset;
                Err(WireError::CountTooLarge {
                    offset,
                    count,
                    max: limit,
                })
            }
        }
    }

    /// Finish decoding: succeeds only if every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(WireError::TrailingBytes {
                offset: self.pos,
                remaining,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One decoding case: input bytes, the decode steps, and the expected outcome.
    fn check<'a, T: std::fmt::Debug + PartialEq>(
        input: &'a [u8],
        decode: impl FnOnce(&mut Dec<'a>) -> Result<T, WireError>,
        expected: Result<T, WireError>,
    ) {
        let mut d = Dec::new(input);
        let got = decode(&mut d);
        assert_eq!(got, expected, "input {input:02x?}");
    }

    #[test]
    fn round_trip_every_primitive() {
        let mut e = Enc::new();
        assert!(e.is_empty());
        e.u8(0xab);
        e.u16(0xbeef);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.i32(-5);
        e.i64(i64::MIN);
        e.bool(true);
        e.bool(false);
        e.bytes(&[1, 2, 3]);
        e.bytes(&[]);
        e.str("héllo");
        e.opt_str(None);
        e.opt_str(Some("x"));
        e.opt_str(Some(""));
        let len = e.len();
        let buf = e.into_vec();
        assert_eq!(buf.len(), len);

        let mut d = Dec::new(&buf);
        assert_eq!(d.u8(), Ok(0xab));
        assert_eq!(d.u16(), Ok(0xbeef));
        assert_eq!(d.u32(), Ok(0xdead_beef));
        assert_eq!(d.u64(), Ok(u64::MAX - 1));
        assert_eq!(d.i32(), Ok(-5));
        assert_eq!(d.i64(), Ok(i64::MIN));
        assert_eq!(d.bool(), Ok(true));
        assert_eq!(d.bool(), Ok(false));
        assert_eq!(d.bytes(), Ok(&[1u8, 2, 3][..]));
        assert_eq!(d.bytes(), Ok(&[][..]));
        assert_eq!(d.str(), Ok("héllo"));
        assert_eq!(d.opt_str(), Ok(None));
        assert_eq!(d.opt_str(), Ok(Some("x")));
        assert_eq!(d.opt_str(), Ok(Some("")));
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn layout_is_little_endian_with_u64_prefixes() {
        let mut e = Enc::new();
        e.u16(0x0102);
        e.i32(-2);
        e.str("ab");
        assert_eq!(
            e.into_vec(),
            [
                2, 1, 0xfe, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b'
            ]
        );
    }

    #[test]
    fn truncated_reads() {
        fn t<T>(offset: usize, need: usize) -> Result<T, WireError> {
            Err(WireError::Truncated { offset, need })
        }
        check(&[], |d| d.u8(), t(0, 1));
        check(&[1], |d| d.u16(), t(0, 2));
        check(&[1, 2, 3], |d| d.u32(), t(0, 4));
        check(&[0; 7], |d| d.u64(), t(0, 8));
        check(&[0; 3], |d| d.i32(), t(0, 4));
        check(&[0; 7], |d| d.i64(), t(0, 8));
        check(&[], |d| d.bool(), t(0, 1));
        // Length prefix itself truncated.
        check(&[3, 0, 0], |d| d.bytes(), t(0, 8));
        // Payload shorter than its prefix says.
        check(&[3, 0, 0, 0, 0, 0, 0, 0, b'a'], |d| d.str(), t(8, 3));
        // A huge length prefix is a truncation, not an allocation.
        check(&[0xff; 8], |d| d.bytes().map(<[u8]>::len), t(8, usize::MAX));
        // Option tag present, string missing.
        check(&[1], |d| d.opt_str(), t(1, 8));
        // The second value fails after the first succeeded.
        check(
            &[7, 0],
            |d| {
                d.u8()?;
                d.u16()
            },
            t(1, 2),
        );
    }

    #[test]
    fn failed_read_does_not_advance() {
        let mut d = Dec::new(&[5, 0, 0, 0, 0, 0, 0, 0, b'a']);
        assert!(d.bytes().is_err());
        assert_eq!(d.offset(), 0);
        assert_eq!(d.u8(), Ok(5));
    }

    #[test]
    fn bool_accepts_only_zero_and_one() {
        check(&[0], |d| d.bool(), Ok(false));
        check(&[1], |d| d.bool(), Ok(true));
        check(
            &[2],
            |d| d.bool(),
            Err(WireError::InvalidBool {
                offset: 0,
                value: 2,
            }),
        );
        check(
            &[0, 0xff],
            |d| {
                d.u8()?;
                d.bool()
            },
            Err(WireError::InvalidBool {
                offset: 1,
                value: 0xff,
            }),
        );
        check(
            &[9],
            |d| d.opt_str(),
            Err(WireError::InvalidBool {
                offset: 0,
                value: 9,
            }),
        );
    }

    #[test]
    fn bad_utf8() {
        let mut e = Enc::new();
        e.u8(0);
        e.bytes(&[b'o', b'k', 0xc3, 0x28]);
        let buf = e.into_vec();
        check(
            &buf,
            |d| {
                d.u8()?;
                d.str()
            },
            Err(WireError::InvalidUtf8 { offset: 9 }),
        );
        // Bytes are not validated.
        check(
            &buf,
            |d| {
                d.u8()?;
                d.bytes().map(<[u8]>::len)
            },
            Ok(4),
        );
        let mut e = Enc::new();
        e.bool(true);
        e.bytes(&[0xff]);
        check(
            &e.into_vec(),
            |d| d.opt_str(),
            Err(WireError::InvalidUtf8 { offset: 9 }),
        );
    }

    #[test]
    fn count_limits() {
        let with_count = |count: u64, tail: usize| {
            let mut e = Enc::new();
            e.u64(count);
            let mut v = e.into_vec();
            v.resize(8 + tail, 0);
            v
        };
        let too_large = |count, max| {
            Err(WireError::CountTooLarge {
                offset: 0,
                count,
                max,
            })
        };
        check(&with_count(0, 0), |d| d.count(10), Ok(0));
        check(&with_count(3, 3), |d| d.count(10), Ok(3));
        check(&with_count(10, 100), |d| d.count(10), Ok(10));
        // Over the caller's limit.
        check(&with_count(11, 100), |d| d.count(10), too_large(11, 10));
        // Over what the remaining input could possibly hold.
        check(&with_count(4, 3), |d| d.count(10), too_large(4, 3));
        check(
            &with_count(u64::MAX, 16),
            |d| d.count(u64::MAX),
            too_large(u64::MAX, 16),
        );
        // Count field itself truncated.
        check(
            &[1, 0],
            |d| d.count(10),
            Err(WireError::Truncated { offset: 0, need: 8 }),
        );
        // After an error the decoder is still at the count.
        let buf = with_count(11, 0);
        let mut d = Dec::new(&buf);
        assert!(d.count(1).is_err());
        assert_eq!(d.offset(), 0);
    }

    #[test]
    fn trailing_bytes() {
        let d = Dec::new(&[1, 2, 3]);
        assert_eq!(
            d.finish(),
            Err(WireError::TrailingBytes {
                offset: 0,
                remaining: 3
            })
        );
        let mut d = Dec::new(&[1, 2, 3]);
        assert_eq!(d.u16(), Ok(0x0201));
        assert_eq!(
            d.finish(),
            Err(WireError::TrailingBytes {
                offset: 2,
                remaining: 1
            })
        );
        assert_eq!(Dec::new(&[]).finish(), Ok(()));
    }

    #[test]
    fn caller_validation_error() {
        check(
            &[0x41, 0, 0, 0],
            |d| {
                let sig = d.i32()?;
                if (1..=64).contains(&sig) {
                    Ok(sig)
                } else {
                    Err(d.invalid("signal number out of range"))
                }
            },
            Err(WireError::Invalid {
                offset: 4,
                what: "signal number out of range",
            }),
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..200usize {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly small bytes, so lengths and counts are sometimes plausible.
                    if x % 3 == 0 { x as u8 } else { (x % 4) as u8 }
                })
                .collect();
            let mut d = Dec::new(&buf);
            let decoded = (|| -> Result<(), WireError> {
                let n = d.count(16)?;
                for _ in 0..n {
                    d.bool()?;
                    d.opt_str()?;
                    d.bytes()?;
                    d.i64()?;
                }
                Ok(())
            })();
            if decoded.is_ok() {
                let _ = d.finish();
            }
        }
    }

    #[test]
    fn messages_name_the_offset() {
        let msg = WireError::CountTooLarge {
            offset: 12,
            count: 99,
            max: 4,
        }
        .to_string();
        assert_eq!(msg, "element count 99 at offset 12 exceeds the limit of 4");
    }
}
