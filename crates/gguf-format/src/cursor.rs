//! Bounds-checked little-endian reads over a borrowed byte slice.
//!
//! Every read goes through `take`, which compares against the bytes left before slicing, so
//! no header number is ever trusted for indexing or allocation.

use crate::error::GgufError;

#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Absolute file offset of `bytes[0]`, for error reports.
    base: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self::with_base(bytes, 0)
    }

    pub(crate) fn with_base(bytes: &'a [u8], base: u64) -> Self {
        Cursor {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Index of the next byte within the slice.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// The bytes from `start` (a previous `position()`) up to the current position.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start..self.pos]
    }

    pub(crate) fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                available,
            });
        }
        let start = self.pos;
        // n <= remaining <= usize::MAX, so the cast is exact.
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a `u64` count of items that each occupy at least `min_item` bytes, and rejects it
    /// unless that many items could fit in what is left.
    pub(crate) fn count(&mut self, what: &'static str, min_item: u64) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(what)?;
        let needed = count.saturating_mul(min_item);
        let available = self.remaining();
        if needed > available {
            return Err(GgufError::TooLong {
                what,
                offset,
                count,
                needed,
                available,
            });
        }
        Ok(count)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<&'a str, GgufError> {
        let len = self.count(what, 1)?;
        let start = self.offset();
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what,
            offset: start,
        })
    }

    /// Steps over `n` length-prefixed strings, validating their UTF-8 if `check`.
    ///
    /// Vocabulary arrays hold hundreds of thousands of short strings, and `from_utf8` per
    /// string dominated parsing. A length below 128 has eight ASCII bytes as its prefix, and a
    /// multi-byte UTF-8 sequence can neither contain nor straddle an ASCII byte, so a run of
    /// such strings is valid string by string exactly when the whole run, prefixes included,
    /// is valid: one `from_utf8` call per run. Longer strings end a run and are checked alone.
    /// When a run fails, it is walked string by string to report the first bad one, so errors
    /// are the same, in the same order, as checking each string separately.
    pub(crate) fn skip_strings(&mut self, n: u64, check: bool) -> Result<(), GgufError> {
        const WHAT: &str = "string value";
        let mut run = self.pos;
        for _ in 0..n {
            let item = self.pos;
            let len = match self.count(WHAT, 1) {
                Ok(len) => len,
                Err(e) => return self.check_run(run, item, check).and(Err(e)),
            };
            let start = self.offset();
            let bytes = match self.take(len, WHAT) {
                Ok(bytes) => bytes,
                Err(e) => return self.check_run(run, item, check).and(Err(e)),
            };
            if len >= 128 {
                self.check_run(run, item, check)?;
                if check && std::str::from_utf8(bytes).is_err() {
                    return Err(GgufError::InvalidUtf8 {
                        what: WHAT,
                        offset: start,
                    });
                }
                run = self.pos;
            }
        }
        self.check_run(run, self.pos, check)
    }

    /// Checks the run of short strings in `bytes[from..to]`; see `skip_strings`.
    fn check_run(&self, from: usize, to: usize, check: bool) -> Result<(), GgufError> {
        if !check || std::str::from_utf8(&self.bytes[from..to]).is_ok() {
            return Ok(());
        }
        let mut walk = Cursor {
            bytes: &self.bytes[..to],
            pos: from,
            base: self.base,
        };
        while walk.pos < to {
            walk.string("string value")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_truncation() {
        let bytes = [1, 0, 0, 0, 2, 0, 0];
        let mut c = Cursor::with_base(&bytes, 10);
        assert_eq!(c.u32("a").unwrap(), 1);
        let err = c.u32("b").unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    what: "b",
                    offset: 14,
                    needed: 4,
                    available: 3
                }
            ),
            "{err}"
        );
        // A failed read consumes nothing.
        assert_eq!(c.offset(), 14);
    }

    #[test]
    fn huge_string_length_is_too_long_not_an_allocation() {
        let mut bytes = (1u64 << 63).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let err = Cursor::new(&bytes).string("key").unwrap_err();
        assert!(
            matches!(err, GgufError::TooLong { what: "key", offset: 0, count, available: 3, .. } if count == 1 << 63),
            "{err}"
        );
    }

    fn strings(items: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in items {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
        out
    }

    /// The batched check agrees with checking each string alone, on every split of a
    /// multi-byte character across neighbouring strings and around long strings.
    #[test]
    fn batched_utf8_check_matches_per_string_check() {
        let long_ok = "\u{2581}".repeat(50);
        let mut long_bad = long_ok.clone().into_bytes();
        long_bad[100] = 0xff;
        let pieces: [&[u8]; 9] = [
            b"ab",
            "\u{2581}x".as_bytes(),
            &[0xe2, 0x96],
            &[0x81],
            b"",
            &[0xc3],
            long_ok.as_bytes(),
            &long_bad,
            &[0xf0, 0x9f, 0x98, 0x80],
        ];
        for a in 0..pieces.len() {
            for b in 0..pieces.len() {
                for c in 0..pieces.len() {
                    let items = [pieces[a], pieces[b], pieces[c]];
                    let bytes = strings(&items);
                    let mut one_by_one = Cursor::with_base(&bytes, 7);
                    let want = (0..3).try_for_each(|_| one_by_one.string("string value").map(drop));
                    let got = Cursor::with_base(&bytes, 7).skip_strings(3, true);
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{items:?}");
                }
            }
        }
    }

    #[test]
    fn batched_check_reports_errors_in_order() {
        // A bad string before a length that runs past the end: the utf-8 error comes first.
        let mut bytes = strings(&[b"ok", &[0xff]]);
        bytes.extend_from_slice(&100u64.to_le_bytes());
        let err = Cursor::new(&bytes).skip_strings(3, true).unwrap_err();
        assert!(
            matches!(err, GgufError::InvalidUtf8 { offset: 18, .. }),
            "{err}"
        );
        let err = Cursor::new(&bytes).skip_strings(3, false).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::TooLong {
                    offset: 19,
                    count: 100,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_names_the_string_start() {
        let mut bytes = 2u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        let err = Cursor::with_base(&bytes, 4).string("key").unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::InvalidUtf8 {
                    what: "key",
                    offset: 12
                }
            ),
            "{err}"
        );
    }
}
