//! The canonical encoding of a row, and its 64-bit hash.
//!
//! The same logical row must hash the same in every database, so the text that is hashed is
//! defined per *logical* column type (the source's [`ColumnType`]), not per native type:
//!
//! | logical type | canonical text |
//! |---|---|
//! | `Int` | decimal digits, `-` for negatives (`-42`) |
//! | `Bool` | `1` or `0` |
//! | `Decimal{scale: s}` | exactly `s` fraction digits (`12.50`, `-0.01`, `7` when `s = 0`); values with more digits are rounded half away from zero, as the databases' casts do |
//! | `String` | byte length in UTF-8, `:`, the UTF-8 bytes (`5:héllo` is `6:héllo`) |
//! | `Bytes` | lowercase hex |
//! | `Date` | `YYYY-MM-DD` |
//! | `Timestamp` | `YYYY-MM-DDTHH:MM:SS.ffffff` (six fraction digits, truncated) |
//! | `TimestampTz` | the UTC instant as `YYYY-MM-DDTHH:MM:SS.ffffffZ` |
//! | `Float` | Rust's shortest round-trip exponent form (`1.5e0`); hashed in Rust only |
//! | `Array` | compact JSON; hashed in Rust only |
//!
//! NULL is `N`. Fields are joined with `|`. The encoding is injective: a non-NULL field never
//! is `N` (numbers, dates and hex cannot be, text starts with its length), and the only fields
//! that can contain `|` are text, whose length prefix says where it ends.
//!
//! The row hash is the first 8 bytes of the MD5 of that text, big-endian, because MD5 is what
//! every database offers (`MD5()` in MariaDB, PostgreSQL and StarRocks, `STANDARD_HASH(…,'MD5')`
//! in Oracle). A chunk's digest is its row count and the **sum of its row hashes modulo 2^64**.
//! A sum rather than XOR: XOR cancels the hash of a row that appears twice (a sink without a
//! key constraint can hold duplicates), a sum does not; it can be subtracted, so bisection
//! queries only one half of a range and derives the other.
//!
//! Between two MariaDB ≥ 10.8 servers the checker uses a cheaper hash instead
//! ([`RowHash::Crc32c`], text from [`super::compact`]): there MariaDB's exact `DECIMAL` sum
//! costs more than the hash, so those digests XOR (the row count still sees a duplicate).

use crate::event::{ColumnType, Decimal, Value};
use chrono::{NaiveDate, NaiveDateTime};
use md5::{Digest as _, Md5};
use std::fmt::Write;

/// NULL in the canonical row text.
pub const NULL_FIELD: &str = "N";
/// Between two fields of the canonical row text.
pub const SEPARATOR: char = '|';

/// The per-row hash of a check, the same on both sides.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RowHash {
    /// The first 8 bytes of the MD5 of the canonical text; a chunk's rows are summed modulo
    /// 2^64. Every engine computes it, so it is the cross-engine hash.
    #[default]
    #[serde(rename = "md5-64")]
    Md5,
    /// CRC32 (high 32 bits) and CRC32C (low 32 bits) of the compact text
    /// ([`super::compact`]); a chunk's rows are XORed. MariaDB ≥ 10.8 only (`CRC32C()`), so
    /// it is used when both sides are such MariaDB servers.
    #[serde(rename = "crc32c-64")]
    Crc32c,
}

impl RowHash {
    pub fn name(self) -> &'static str {
        match self {
            RowHash::Md5 => "md5-64",
            RowHash::Crc32c => "crc32c-64",
        }
    }

    /// `md5-64` / `md5`, `crc32c-64` / `crc32c`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "md5-64" | "md5" => Some(RowHash::Md5),
            "crc32c-64" | "crc32c" => Some(RowHash::Crc32c),
            _ => None,
        }
    }
}

impl std::fmt::Display for RowHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A range's row count and its row hashes folded together: summed modulo 2^64 under
/// [`RowHash::Md5`], XORed under [`RowHash::Crc32c`]. Both folds are order-independent and
/// invertible, so the digest of part of a range can be taken out of the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Digest {
    pub rows: u64,
    pub hash: u64,
    pub row_hash: RowHash,
}

impl Digest {
    pub fn empty(row_hash: RowHash) -> Self {
        Self {
            rows: 0,
            hash: 0,
            row_hash,
        }
    }

    pub fn add_row(&mut self, hash: u64) {
        self.rows += 1;
        self.hash = match self.row_hash {
            RowHash::Md5 => self.hash.wrapping_add(hash),
            RowHash::Crc32c => self.hash ^ hash,
        };
    }

    /// The digest of `self` without the rows of `part` (a sub-range of it).
    pub fn minus(self, part: Digest) -> Digest {
        Digest {
            rows: self.rows.saturating_sub(part.rows),
            hash: match self.row_hash {
                RowHash::Md5 => self.hash.wrapping_sub(part.hash),
                RowHash::Crc32c => self.hash ^ part.hash,
            },
            row_hash: self.row_hash,
        }
    }
}

/// Whether a column of this type can be hashed inside the database (floats and arrays have
/// no text form that all databases agree on, so rows with them are streamed and hashed here).
pub fn sql_hashable(ty: &ColumnType) -> bool {
    !matches!(ty, ColumnType::Float | ColumnType::Array(_))
}

/// The canonical text of `value` in a column of logical type `ty`; `None` for NULL. Values of
/// a neighbouring type are accepted where the meaning is the same (an integer in a decimal
/// column, a naive timestamp read from a MySQL `DATETIME` that holds a UTC instant).
pub fn canonical_field(ty: &ColumnType, value: &Value) -> Result<Option<String>, String> {
    let mismatch = || format!("a {ty:?} column cannot hold {value:?}");
    Ok(Some(match (ty, value) {
        (_, Value::Null) => return Ok(None),
        (ColumnType::Int, Value::Int(i)) => i.to_string(),
        (ColumnType::Int, Value::Bool(b)) => bool_text(*b).to_string(),
        (ColumnType::Int, Value::Decimal(d)) => rescale_round(*d, 0).to_string(),
        (ColumnType::Bool, Value::Bool(b)) => bool_text(*b).to_string(),
        (ColumnType::Bool, Value::Int(i)) => bool_text(*i != 0).to_string(),
        (ColumnType::Decimal { scale, .. }, Value::Decimal(d)) => {
            rescale_round(*d, *scale).to_string()
        }
        (ColumnType::Decimal { scale, .. }, Value::Int(i)) => {
            rescale_round(Decimal::new(i128::from(*i), 0), *scale).to_string()
        }
        (ColumnType::Float, Value::Float(f)) => float_text(*f),
        (ColumnType::Float, Value::Int(i)) => float_text(*i as f64),
        (ColumnType::String { .. }, Value::String(s)) => text_field(s),
        (ColumnType::Bytes, Value::Bytes(b)) => hex(b),
        (ColumnType::Date, Value::Date(d)) => date_text(*d),
        (ColumnType::Timestamp, Value::Timestamp(t)) => timestamp_text(*t),
        (ColumnType::Timestamp, Value::Date(d)) => timestamp_text(d.and_time(Default::default())),
        (ColumnType::TimestampTz, Value::TimestampTz(t)) => {
            timestamp_tz_text(t.with_timezone(&chrono::Utc).naive_utc())
        }
        (ColumnType::TimestampTz, Value::Timestamp(t)) => timestamp_tz_text(*t),
        (ColumnType::Array(_), Value::Array(_)) => value.to_json().to_string(),
        (ColumnType::Array(_), Value::String(json)) => json.clone(),
        _ => return Err(mismatch()),
    }))
}

/// The canonical text of a whole row (fields in column order).
pub fn canonical_row<'a>(fields: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut out = String::new();
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(f.unwrap_or(NULL_FIELD));
    }
    out
}

/// The 64-bit hash of a canonical row text: the first 8 bytes of its MD5, big-endian.
pub fn row_hash(canonical: &str) -> u64 {
    let digest = Md5::digest(canonical.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The canonical fields of `row` under `types`, and the row's hash.
pub fn hash_values(
    types: &[&ColumnType],
    row: &[Value],
) -> Result<(Vec<Option<String>>, u64), String> {
    let fields = types
        .iter()
        .zip(row)
        .map(|(ty, v)| canonical_field(ty, v))
        .collect::<Result<Vec<_>, _>>()?;
    let hash = row_hash(&canonical_row(fields.iter().map(Option::as_deref)));
    Ok((fields, hash))
}

/// Reduces a sum the database computed exactly (a `DECIMAL`/`NUMERIC` rendered as text,
/// possibly negative when the database summed signed 64-bit values) modulo 2^64.
pub fn sum_mod_2_64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.split_once('.').map_or(t, |(int, _)| int);
    let value: i128 = t
        .parse()
        .map_err(|_| format!("`{text}` is not an exact sum of row hashes"))?;
    Ok(value.rem_euclid(1i128 << 64) as u64)
}

fn bool_text(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// `<utf8 byte length>:<text>`.
pub fn text_field(s: &str) -> String {
    format!("{}:{s}", s.len())
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn float_text(f: f64) -> String {
    format!("{f:e}")
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn timestamp_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn timestamp_tz_text(utc: NaiveDateTime) -> String {
    utc.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `d` at exactly `scale` digits, rounding half away from zero when digits are dropped (what
/// `CAST(… AS DECIMAL(p,s))`, `round(numeric, s)` and Oracle's `TO_CHAR` formats do).
pub fn rescale_round(d: Decimal, scale: u8) -> Decimal {
    use std::cmp::Ordering;
    match d.scale.cmp(&scale) {
        Ordering::Equal => d,
        Ordering::Less => {
            let factor = 10i128.saturating_pow(u32::from(scale - d.scale));
            Decimal::new(d.unscaled.saturating_mul(factor), scale)
        }
        Ordering::Greater => {
            let factor = 10i128.saturating_pow(u32::from(d.scale - scale));
            let q = d.unscaled / factor;
            let r = d.unscaled % factor;
            let q = if r.unsigned_abs() * 2 >= factor.unsigned_abs() {
                q + d.unscaled.signum()
            } else {
                q
            };
            Decimal::new(q, scale)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};

    fn dec(s: &str) -> Value {
        Value::Decimal(Decimal::parse(s).unwrap())
    }

    #[test]
    fn fields_per_type() {
        let d2 = ColumnType::Decimal {
            precision: 12,
            scale: 2,
        };
        let cases: Vec<(ColumnType, Value, Option<&str>)> = vec![
            (ColumnType::Int, Value::Int(-42), Some("-42")),
            (ColumnType::Bool, Value::Bool(true), Some("1")),
            (ColumnType::Bool, Value::Int(0), Some("0")),
            (d2.clone(), dec("12.5"), Some("12.50")),
            (d2.clone(), dec("-0.005"), Some("-0.01")),
            (d2.clone(), dec("0.004"), Some("0.00")),
            (d2.clone(), Value::Int(7), Some("7.00")),
            (
                ColumnType::Decimal {
                    precision: 20,
                    scale: 0,
                },
                dec("18446744073709551615"),
                Some("18446744073709551615"),
            ),
            (
                ColumnType::String { max_length: None },
                Value::String("héllo|".into()),
                Some("7:héllo|"),
            ),
            (
                ColumnType::String { max_length: None },
                Value::String(String::new()),
                Some("0:"),
            ),
            (ColumnType::String { max_length: None }, Value::Null, None),
            (
                ColumnType::Bytes,
                Value::Bytes(vec![0, 0xab, 0xff]),
                Some("00abff"),
            ),
            (
                ColumnType::Date,
                Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
                Some("2024-02-29"),
            ),
            (
                ColumnType::Timestamp,
                Value::Timestamp(
                    NaiveDate::from_ymd_opt(2024, 1, 2)
                        .unwrap()
                        .and_hms_micro_opt(3, 4, 5, 60)
                        .unwrap(),
                ),
                Some("2024-01-02T03:04:05.000060"),
            ),
            (
                ColumnType::TimestampTz,
                Value::TimestampTz(
                    DateTime::parse_from_rfc3339("2024-01-02T03:04:05.5+02:00").unwrap(),
                ),
                Some("2024-01-02T01:04:05.500000Z"),
            ),
            (ColumnType::Float, Value::Float(1.5), Some("1.5e0")),
        ];
        for (ty, v, want) in cases {
            assert_eq!(
                canonical_field(&ty, &v).unwrap().as_deref(),
                want,
                "{ty:?} {v:?}"
            );
        }
        assert!(canonical_field(&ColumnType::Int, &Value::String("1".into())).is_err());
    }

    #[test]
    fn null_empty_and_separators_do_not_collide() {
        let s = ColumnType::String { max_length: None };
        let t = [&s, &s];
        let rows = [
            vec![Value::Null, Value::String(String::new())],
            vec![Value::String(String::new()), Value::Null],
            vec![Value::String("N".into()), Value::Null],
            vec![Value::String("a|b".into()), Value::String("c".into())],
            vec![Value::String("a".into()), Value::String("b|c".into())],
        ];
        let hashes: std::collections::HashSet<u64> =
            rows.iter().map(|r| hash_values(&t, r).unwrap().1).collect();
        assert_eq!(hashes.len(), rows.len());
    }

    #[test]
    fn hash_is_the_md5_prefix() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(row_hash(""), 0xd41d8cd98f00b204);
        assert_eq!(canonical_row([Some("1"), None, Some("3:abc")]), "1|N|3:abc");
    }

    #[test]
    fn sums_reduce_modulo_2_64_and_subtract() {
        assert_eq!(sum_mod_2_64("18446744073709551617").unwrap(), 1);
        assert_eq!(sum_mod_2_64("-1").unwrap(), u64::MAX);
        assert_eq!(sum_mod_2_64("0").unwrap(), 0);
        assert!(sum_mod_2_64("x").is_err());
        let mut whole = Digest::default();
        let mut part = Digest::default();
        for h in [u64::MAX, 5, 7] {
            whole.add_row(h);
        }
        part.add_row(u64::MAX);
        let rest = whole.minus(part);
        assert_eq!(rest.rows, 2);
        assert_eq!(rest.hash, 12);
        // A duplicated row does not cancel out of a sum.
        let mut dup = Digest::default();
        dup.add_row(9);
        dup.add_row(9);
        assert_ne!(dup.hash, 0);
        // XOR digests subtract by XOR; a duplicate cancels its hash but not its count.
        let mut whole = Digest::empty(RowHash::Crc32c);
        let mut part = Digest::empty(RowHash::Crc32c);
        for h in [u64::MAX, 5, 9, 9] {
            whole.add_row(h);
        }
        part.add_row(u64::MAX);
        let rest = whole.minus(part);
        assert_eq!((rest.rows, rest.hash), (3, 5));
        assert_ne!(rest, Digest::empty(RowHash::Crc32c));
        assert_eq!(RowHash::parse("CRC32C-64"), Some(RowHash::Crc32c));
        assert_eq!(RowHash::Md5.to_string(), "md5-64");
    }
}
