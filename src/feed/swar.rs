//! Eight bytes at a time: the loop the feed escapers share, which skips the
//! long runs of text that need no escaping a word at a time instead of a
//! byte at a time; each escaper brings its own word test and replacements.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The first index at or after `from` where an eight-byte word for which
/// `attention` holds begins, or where fewer than eight bytes are left. The
/// caller looks at the bytes from there one by one.
#[inline]
pub fn skip_clean(bytes: &[u8], from: usize, attention: impl Fn(u64) -> bool) -> usize {
    let mut index = from;
    while let Some(chunk) = bytes.get(index..index + 8).and_then(|chunk| <[u8; 8]>::try_from(chunk).ok()) {
        if attention(u64::from_le_bytes(chunk)) {
            break;
        }
        index += 8;
    }
    index
}

/// Appends `text` to `out` with some of its characters replaced: the one
/// loop of the feed escapers. Eight-byte words in which `attention` finds
/// nothing are copied as they are; in a word it flags, `escape(bytes,
/// index)` looks at each byte: what replaces the character that starts
/// there and how many bytes that character spans, or `None` to keep it.
/// Runs of kept bytes are copied in one go.
#[inline]
pub fn escape_into(
    out: &mut Vec<u8>,
    text: &str,
    attention: impl Fn(u64) -> bool,
    escape: impl Fn(&[u8], usize) -> Option<(&'static [u8], usize)>,
) {
    let bytes = text.as_bytes();
    let (mut start, mut index) = (0, 0);
    while index < bytes.len() {
        index = skip_clean(bytes, index, &attention);
        if index >= bytes.len() {
            break;
        }
        match escape(bytes, index) {
            Some((replacement, width)) => {
                out.extend_from_slice(&bytes[start..index]);
                out.extend_from_slice(replacement);
                index += width;
                start = index;
            }
            None => index += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any byte of `chunk` equals `byte` (the classic "has zero byte"
/// test on `chunk ^ byte`, exact for whether any byte matches).
#[inline]
pub fn has_byte(chunk: u64, byte: u8) -> bool {
    let x = chunk ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS != 0
}

/// Whether any byte of `chunk` is below `bound` (at most 0x80; exact for
/// whether any byte is).
#[inline]
pub fn has_below(chunk: u64, bound: u8) -> bool {
    chunk.wrapping_sub(ONES * u64::from(bound)) & !chunk & HIGHS != 0
}

/// Whether any byte of `chunk` is not ASCII.
#[inline]
pub fn has_non_ascii(chunk: u64) -> bool {
    chunk & HIGHS != 0
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
    fn the_word_tests_agree_with_bytewise_tests() {
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Bias some bytes towards the interesting values.
            let chunk = seed & !(0x7F_u64 << ((seed >> 58) * 8 % 64));
            let bytes = chunk.to_le_bytes();
            for probe in [0, b'"', b'\\', b'&', 0x7F, 0xC2] {
                assert_eq!(has_byte(chunk, probe), bytes.contains(&probe), "{chunk:#x} {probe}");
            }
            for bound in [0x20, 0x80] {
                assert_eq!(has_below(chunk, bound), bytes.iter().any(|b| *b < bound), "{chunk:#x} {bound}");
            }
            assert_eq!(has_non_ascii(chunk), bytes.iter().any(|b| *b >= 0x80));
        }
    }

    #[test]
    fn skipping_stops_at_the_word_that_needs_attention() {
        let text = b"0123456789abcdef\"xyz0123456789";
        assert_eq!(skip_clean(text, 0, |chunk| has_byte(chunk, b'"')), 16);
        assert_eq!(skip_clean(text, 17, |chunk| has_byte(chunk, b'"')), 25);
        assert_eq!(skip_clean(b"short", 0, |_| false), 0);
    }
}
