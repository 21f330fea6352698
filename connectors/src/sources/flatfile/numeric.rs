//! The hot loops of number decoding: eight zoned digits at a time (SWAR in a `u64`) and packed
//! decimals a byte (two digits) at a time through a table. Each returns `None` on anything
//! unusual; the caller then takes the byte-by-byte path, which finds and names the error.

/// The most digits the fast paths take: 18 always fit a `u64` with room for one more.
pub(crate) const FAST_DIGITS: usize = 18;

const LOW_NIBBLES: u64 = 0x0F0F_0F0F_0F0F_0F0F;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const SIXES: u64 = 0x0606_0606_0606_0606;

#[inline]
fn le8(c: &[u8]) -> u64 {
    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
}

/// The value of eight digit bytes whose zone is `zone` (0x30 ASCII, 0xF0 EBCDIC), the first
/// byte most significant, or `None` if one is not a digit.
#[inline]
pub(crate) fn eight_digits(chunk: &[u8], zone: u8) -> Option<u64> {
    let d = le8(chunk) ^ (u64::from(zone) * 0x0101_0101_0101_0101);
    // Every byte 0..=9: no high nibble, and adding 6 carries no low nibble over.
    if d & HIGH_NIBBLES != 0 || (d + SIXES) & HIGH_NIBBLES != 0 {
        return None;
    }
    let v = (d & LOW_NIBBLES).wrapping_mul(10 * 256 + 1) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1) >> 16;
    Some((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1) >> 32)
}

/// Up to eight digits, padded in front with zeros to one SWAR step.
#[inline]
fn short_digits(bytes: &[u8], zone: u8) -> Option<u64> {
    // Shift the bytes in from the top: the first lands at byte 8 - n, zeros fill the bottom
    // (a register loop, where a copy into a padded array would call memcpy).
    let mut w = u64::from(zone) * 0x0101_0101_0101_0101;
    for &b in bytes {
        w = (w >> 8) | (u64::from(b) << 56);
    }
    eight_digits(&w.to_le_bytes(), zone)
}

/// `acc` followed by the digits of `bytes` (zone `zone`), or `None` if one is not a digit.
/// The caller keeps the total within [`FAST_DIGITS`]. A field's length is fixed, so the
/// branches below go the same way for every record.
#[inline(always)]
pub(crate) fn digits(acc: u64, bytes: &[u8], zone: u8) -> Option<u64> {
    const E8: u64 = 100_000_000;
    let n = bytes.len();
    Some(match n {
        0 => acc,
        1..=7 => acc * 10u64.pow(n as u32) + short_digits(bytes, zone)?,
        8 => acc * E8 + eight_digits(bytes, zone)?,
        9..=16 => {
            let (head, tail) = bytes.split_at(n - 8);
            (acc * 10u64.pow(head.len() as u32) + short_digits(head, zone)?) * E8
                + eight_digits(tail, zone)?
        }
        _ => {
            let (head, rest) = bytes.split_at(n - 16);
            let (mid, tail) = rest.split_at(8);
            let head = digits(acc, head, zone)?;
            (head * E8 + eight_digits(mid, zone)?) * E8 + eight_digits(tail, zone)?
        }
    })
}

/// The length of `bytes` without trailing `space` and NUL bytes, eight bytes a step.
#[inline]
pub(crate) fn trim_end(bytes: &[u8], space: u8) -> usize {
    let spaces = u64::from(space) * 0x0101_0101_0101_0101;
    let mut e = bytes.len();
    while e >= 8 {
        let w = le8(&bytes[e - 8..e]);
        if w == spaces || w == 0 {
            e -= 8;
            continue;
        }
        // The last byte is the most significant: count the spaces at the top.
        e -= ((w ^ spaces).leading_zeros() / 8) as usize;
        break;
    }
    while e > 0 && (bytes[e - 1] == space || bytes[e - 1] == 0) {
        e -= 1;
    }
    e
}

/// Byte -> its UTF-8 form (one or two bytes, as code points below U+0100 take) and length.
pub(crate) type Utf8Table = [[u8; 3]; 256];

/// The UTF-8 table of a byte -> code point table.
pub(crate) fn utf8_table(code_points: &[u8; 256]) -> Box<Utf8Table> {
    let mut t = Box::new([[0u8; 3]; 256]);
    for (b, &c) in code_points.iter().enumerate() {
        t[b] = if c < 0x80 {
            [c, 0, 1]
        } else {
            [0xC0 | (c >> 6), 0x80 | (c & 0x3F), 2]
        };
    }
    t
}

/// Appends the UTF-8 text of `bytes` through `table`.
#[inline]
pub(crate) fn transcode(table: &Utf8Table, bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    let dst = &mut out[start..];
    let mut j = 0;
    for &b in bytes {
        let [first, second, len] = table[usize::from(b)];
        // Both bytes are written; a one-byte form is overwritten by the next character.
        if let Some(pair) = dst.get_mut(j..j + 2) {
            pair[0] = first;
            pair[1] = second;
        }
        j += usize::from(len);
    }
    out.truncate(start + j);
}

/// byte -> its two packed digits as a number 0..=99, or 0xFF if a nibble is not a digit.
static PAIRS: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut b = 0;
    while b < 256 {
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi <= 9 && lo <= 9 {
            t[b] = (hi * 10 + lo) as u8;
        }
        b += 1;
    }
    t
};

/// A packed decimal of at most 10 bytes (19 digits): (negative, magnitude), or `None` for a bad
/// nibble, a bad sign, or a negative sign in an unsigned field.
#[inline]
pub(crate) fn packed(b: &[u8], signed: bool) -> Option<(bool, u64)> {
    let (&last, head) = b.split_last()?;
    if head.len() >= 10 {
        return None;
    }
    let mut acc = 0u64;
    for &byte in head {
        let p = PAIRS[usize::from(byte)];
        if p == 0xFF {
            return None;
        }
        acc = acc * 100 + u64::from(p);
    }
    let hi = last >> 4;
    if hi > 9 {
        return None;
    }
    let neg = match last & 0x0F {
        0xC | 0xF => false,
        0xD if signed => true,
        _ => return None,
    };
    Some((neg, acc * 10 + u64::from(hi)))
}

/// Writes the decimal digits of `v` into the end of `buf`; returns where they start.
#[inline]
pub(crate) fn format_u128(mut v: u128, buf: &mut [u8; 40]) -> usize {
    let mut i = buf.len();
    if v <= u128::from(u64::MAX) {
        let mut w = v as u64;
        loop {
            i -= 1;
            buf[i] = b'0' + (w % 10) as u8;
            w /= 10;
            if w == 0 {
                return i;
            }
        }
    }
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_digits_matches_the_plain_loop() {
        for zone in [0x30u8, 0xF0] {
            for n in [
                0u64, 1, 9, 10, 12_345_678, 99_999_999, 10_000_001, 90_817_263,
            ] {
                let chunk: Vec<u8> = format!("{n:08}")
                    .bytes()
                    .map(|c| (c - b'0') | zone)
                    .collect();
                assert_eq!(eight_digits(&chunk, zone), Some(n), "{n} zone {zone:X}");
            }
            for bad in [b'9' + 1, b'0' - 1, b' ', b'{', 0x40, 0xFA, 0xC1, 0x3A] {
                for at in 0..8 {
                    let mut chunk = vec![zone; 8];
                    chunk[at] = bad;
                    assert_eq!(eight_digits(&chunk, zone), None, "{bad:X} at {at}");
                }
            }
        }
    }

    #[test]
    fn digits_of_every_length() {
        for zone in [0x30u8, 0xF0] {
            for n in 0..=18usize {
                let text: String = "918273645546372819".chars().take(n).collect();
                let bytes: Vec<u8> = text.bytes().map(|c| (c - b'0') | zone).collect();
                let want = text.parse::<u64>().unwrap_or(0);
                assert_eq!(digits(0, &bytes, zone), Some(want), "{n} digits");
                if n > 0 && n < 18 {
                    assert_eq!(
                        digits(7, &bytes, zone),
                        Some(7 * 10u64.pow(n as u32) + want)
                    );
                    let mut bad = bytes.clone();
                    bad[n / 2] = b' ';
                    assert_eq!(digits(0, &bad, zone), None);
                }
            }
        }
    }

    #[test]
    fn trims_spaces_and_nuls() {
        for (text, want) in [
            (&b""[..], 0),
            (b"a", 1),
            (b"a      ", 1),
            (b"abcdefgh        ", 8),
            (b"abcdefghi       ", 9),
            (b"abc \0 \0        \0\0", 3),
            (b"                ", 0),
            (b"x \0\0\0\0\0\0\0\0", 1),
            (b"\0a\0", 2),
        ] {
            assert_eq!(trim_end(text, b' '), want, "{text:?}");
        }
        assert_eq!(
            trim_end(
                &[0xC1, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40],
                0x40
            ),
            1
        );
    }

    #[test]
    fn transcodes_through_the_table() {
        let mut identity = [0u8; 256];
        for (i, b) in identity.iter_mut().enumerate() {
            *b = i as u8;
        }
        let table = utf8_table(&identity);
        let mut out = b"x".to_vec();
        transcode(&table, &[0x41, 0xE9, 0x20, 0xFF, 0x7F], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "xAé \u{FF}\u{7F}");
    }

    #[test]
    fn digits_and_packed() {
        assert_eq!(digits(7, b"0123456789012", 0x30), Some(70_123_456_789_012));
        assert_eq!(digits(0, b"12x", 0x30), None);
        assert_eq!(packed(&[0x12, 0x34, 0x5D], true), Some((true, 12_345)));
        assert_eq!(packed(&[0x12, 0x34, 0x5D], false), None);
        assert_eq!(packed(&[0x1A, 0x34, 0x5C], true), None);
        assert_eq!(packed(&[0x12, 0x34, 0x5B], true), None);
        assert_eq!(packed(&[0x9F], false), Some((false, 9)));
        let nines = [0x99; 10];
        assert_eq!(packed(&nines, true), None);
        let mut max = [0x99u8; 10];
        max[9] = 0x9C;
        assert_eq!(packed(&max, true), Some((false, 9_999_999_999_999_999_999)));
    }

    #[test]
    fn formats() {
        let mut buf = [0u8; 40];
        for v in [0u128, 7, 10, u128::from(u64::MAX), u128::MAX, 1 << 70] {
            let i = format_u128(v, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[i..]).unwrap(), v.to_string());
        }
    }
}
