//! JSON lines straight from a decoded [`Row`] into a byte buffer: the same text as
//! [`record_to_json`](super::record_to_json) rendered by serde_json, without building a
//! `serde_json::Value` per record.

use super::numeric::format_u128;
use super::row::{FieldRef, Fields, Row};
use crate::event::{Column, Decimal};

/// Writes rows of one decoder as JSON objects keyed by column name.
#[derive(Debug, Clone)]
pub struct JsonWriter {
    /// `{"NAME":` for the first column, `,"NAME":` for the others.
    keys: Vec<Vec<u8>>,
}

impl JsonWriter {
    pub fn new(columns: &[Column]) -> Self {
        let keys = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut k = vec![if i == 0 { b'{' } else { b',' }];
                write_str(&mut k, &c.name);
                k.push(b':');
                k
            })
            .collect();
        Self { keys }
    }

    /// Appends the row as one JSON object (no newline). Integers, and decimals without
    /// decimal places, are numbers (as strings when outside the 64-bit range); decimals with
    /// an implied point are strings with exactly `scale` decimals; text is a string.
    pub fn write(&self, row: &Row<'_>, out: &mut Vec<u8>) {
        let mut any = false;
        for (key, value) in self.keys.iter().zip(row.fields()) {
            out.extend_from_slice(key);
            write_value(out, value);
            any = true;
        }
        out.push(if any { b'}' } else { b'{' });
        if !any {
            out.push(b'}');
        }
    }
}

fn write_value(out: &mut Vec<u8>, v: FieldRef<'_>) {
    match v {
        FieldRef::Null => out.extend_from_slice(b"null"),
        FieldRef::Int(i) => write_int(out, i128::from(i)),
        FieldRef::Decimal(d) => write_decimal(out, d),
        FieldRef::Text(s) => write_str(out, s),
        FieldRef::Array(items) => write_array(out, items),
    }
}

fn write_array(out: &mut Vec<u8>, items: Fields<'_>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, item);
    }
    out.push(b']');
}

#[inline]
fn write_int(out: &mut Vec<u8>, v: i128) {
    let mut buf = [0u8; 40];
    let start = format_u128(v.unsigned_abs(), &mut buf);
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[start..]);
}

fn write_decimal(out: &mut Vec<u8>, d: Decimal) {
    if d.scale == 0 {
        // serde_json numbers reach from i64::MIN to u64::MAX; beyond that, a string.
        let number = d.unscaled >= i128::from(i64::MIN) && d.unscaled <= i128::from(u64::MAX);
        if !number {
            out.push(b'"');
        }
        write_int(out, d.unscaled);
        if !number {
            out.push(b'"');
        }
        return;
    }
    let mut buf = [0u8; 40];
    let start = format_u128(d.unscaled.unsigned_abs(), &mut buf);
    let digits = &buf[start..];
    let scale = usize::from(d.scale);
    out.push(b'"');
    if d.unscaled < 0 {
        out.push(b'-');
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    } else {
        let (int_part, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int_part);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
    out.push(b'"');
}

/// A JSON string, escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0F)]);
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_serde_json() {
        let all: String = (0u8..0x80)
            .map(char::from)
            .chain("é€\u{85}".chars())
            .collect();
        for s in ["", "plain", "quote \" back \\ slash", all.as_str()] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn decimals_match_display() {
        for (u, scale) in [
            (0i128, 2u8),
            (-1, 5),
            (-71_051, 5),
            (41_567, 5),
            (-49_904_597_839, 2),
            (i128::MAX, 38),
            (i128::MIN + 1, 3),
            (100, 2),
        ] {
            let d = Decimal::new(u, scale);
            let mut out = Vec::new();
            write_decimal(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{d}\""));
        }
        for (u, want) in [
            (i128::from(u64::MAX), "18446744073709551615".to_string()),
            (i128::from(i64::MIN), i64::MIN.to_string()),
            (
                i128::from(u64::MAX) + 1,
                "\"18446744073709551616\"".to_string(),
            ),
            (
                i128::from(i64::MIN) - 1,
                "\"-9223372036854775809\"".to_string(),
            ),
        ] {
            let mut out = Vec::new();
            write_decimal(&mut out, Decimal::new(u, 0));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
