//! Eight bytes at a time: the loop the feed escapers share, which skips the
//! long runs of text that need no escaping a word at a time instead of a
//! byte at a time; each escaper brings its own word test and replacements.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Appends `text` to `out` with some of its characters replaced: the one
/// loop of the feed escapers. `attention` flags, in an eight-byte word, the
/// bytes that may need replacing, its lowest flag exactly (see
/// [`matching`]); the loop goes from one flagged byte straight to the next,
/// and `escape(bytes, index)` looks at each: what replaces the character
/// that starts there and how many bytes that character spans, or `None` to
/// keep it. Runs of kept bytes are copied in one go.
#[inline]
pub fn escape_into(
    out: &mut Vec<u8>,
    text: &str,
    attention: impl Fn(u64) -> u64,
    escape: impl Fn(&[u8], usize) -> Option<(&'static [u8], usize)>,
) {
    let bytes = text.as_bytes();
    let (mut start, mut index) = (0, 0);
    while index < bytes.len() {
        let rest = bytes.len() - index;
        let (word, valid) = match (bytes[index..].first_chunk::<WORD>(), bytes.last_chunk::<WORD>()) {
            (Some(word), _) => (u64::from_le_bytes(*word), WORD),
            // The last bytes of a text of a word or more: its last word,
            // shifted down past the bytes already looked at.
            (None, Some(last)) => (u64::from_le_bytes(*last) >> (8 * (WORD - rest)), rest),
            // A text shorter than a word: byte by byte.
            (None, None) => (0, 0),
        };
        if valid > 0 {
            let flags = attention(word) & VALID[valid];
            if flags == 0 {
                index += valid;
                continue;
            }
            // Little-endian: the lowest flag is the first flagged byte.
            index += (flags.trailing_zeros() / 8) as usize;
        }
        match escape(bytes, index) {
            Some((replacement, width)) => {
                copy_run(out, bytes, start, index);
                // A few bytes: a loop, not a call to `memcpy`.
                for byte in replacement {
                    out.push(*byte);
                }
                index += width;
                start = index;
            }
            None => index += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

const WORD: usize = 8;

/// Appends `bytes[start..end]`. Runs between escapes are mostly short
/// (JSON payloads have a quote every few bytes): one of a word or less is
/// copied as a whole word and cut back, a fixed-size copy instead of a
/// call to `memcpy`.
#[inline]
fn copy_run(out: &mut Vec<u8>, bytes: &[u8], start: usize, end: usize) {
    match bytes.get(start..).and_then(<[u8]>::first_chunk::<WORD>) {
        Some(word) if end - start <= WORD => {
            out.extend_from_slice(word);
            out.truncate(out.len() - (WORD - (end - start)));
        }
        _ => out.extend_from_slice(&bytes[start..end]),
    }
}

/// `VALID[n]`: the flag bits of a word's first `n` bytes.
const VALID: [u64; WORD + 1] = {
    let mut masks = [0; WORD + 1];
    let mut n = 1;
    while n <= WORD {
        masks[n] = masks[n - 1] | (0x80 << (8 * (n - 1)));
        n += 1;
    }
    masks
};

/// Flags the bytes of `chunk` equal to `byte`: the high bit of each such
/// byte is set (the classic "has zero byte" test on `chunk ^ byte`). The
/// lowest flag is exact; bytes above a matching one may be flagged too (a
/// borrow runs on), which costs them only a look from `escape`.
#[inline]
pub fn matching(chunk: u64, byte: u8) -> u64 {
    let x = chunk ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Flags the bytes of `chunk` below `bound` (at most 0x80), as
/// [`matching`] does.
#[inline]
pub fn below(chunk: u64, bound: u8) -> u64 {
    chunk.wrapping_sub(ONES * u64::from(bound)) & !chunk & HIGHS
}

/// Flags the bytes of `chunk` that are not ASCII (exactly).
#[inline]
pub fn non_ascii(chunk: u64) -> u64 {
    chunk & HIGHS
}

/// Texts of every length up to 200, mostly `x` with characters from
/// `alphabet` sprinkled in (so that both clean words and every offset of a
/// special character occur): what the escapers' tests run through.
#[cfg(test)]
pub fn mostly_plain_texts(alphabet: &[char]) -> impl Iterator<Item = String> + '_ {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..200).flat_map(move |length| std::iter::repeat_n(length, 20)).map(move |length| {
        (0..length)
            .map(|_| {
                let draw = next();
                if draw % 4 != 0 { 'x' } else { alphabet[(draw >> 8) as usize % alphabet.len()] }
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_tests_flag_the_first_byte_exactly() {
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Bias some bytes towards the interesting values.
            let chunk = seed & !(0x7F_u64 << ((seed >> 58) * 8 % 64));
            let bytes = chunk.to_le_bytes();
            let first = |flags: u64| (flags != 0).then(|| flags.trailing_zeros() as usize / 8);
            for probe in [0, b'"', b'\\', b'&', 0x7F, 0xC2] {
                let expected = bytes.iter().position(|b| *b == probe);
                assert_eq!(first(matching(chunk, probe)), expected, "{chunk:#x} {probe}");
            }
            for bound in [0x20, 0x80] {
                let expected = bytes.iter().position(|b| *b < bound);
                assert_eq!(first(below(chunk, bound)), expected, "{chunk:#x} {bound}");
            }
            assert_eq!(first(non_ascii(chunk)), bytes.iter().position(|b| *b >= 0x80));
        }
    }

    #[test]
    fn every_flagged_byte_is_looked_at_and_the_rest_copied() {
        let escape_quotes = |text: &str| {
            let mut out = b"<".to_vec();
            escape_into(
                &mut out,
                text,
                |chunk| matching(chunk, b'"'),
                |bytes, index| (bytes[index] == b'"').then_some((&b"\\\""[..], 1)),
            );
            String::from_utf8(out).unwrap()
        };
        for (text, expected) in [
            ("", "<"),
            ("ab\"", "<ab\\\""),
            ("0123456789abcdef", "<0123456789abcdef"),
            ("01234567\"9ab\"\"cdef\"", "<01234567\\\"9ab\\\"\\\"cdef\\\""),
            ("\"é\"xxxxxxxxxxxxxx\"", "<\\\"é\\\"xxxxxxxxxxxxxx\\\""),
        ] {
            assert_eq!(escape_quotes(text), expected, "{text}");
        }
    }
}
