//! The compact row text hashed by [`RowHash::Crc32c`], the hash of MariaDB ↔ MariaDB checks.
//!
//! The canonical text ([`super::canonical`]) is built so that every engine can produce it; on
//! MariaDB that costs more than the hash itself (`DATE_FORMAT`, length prefixes, `IFNULL` per
//! column). Between two MariaDB servers the checker hashes a cheaper text instead, where a
//! field is what MariaDB already prints for the column whenever its declared type has the
//! field's form, so most columns go into the hash without a conversion:
//!
//! | logical type | field | as read when the column is |
//! |---|---|---|
//! | integer | decimal digits | any integer type |
//! | boolean | `1` / `0` | never (`col <> 0`) |
//! | decimal(p,s) | exactly `s` fraction digits | `DECIMAL(_,s)`, or an integer type when `s` = 0 |
//! | text | the UTF-8 bytes | a UTF-8 (`utf8mb3`/`utf8mb4`/`ascii`) column |
//! | binary | uppercase hex | never (`HEX(col)`) |
//! | date | `YYYY-MM-DD` | `DATE` |
//! | timestamp (with zone) | `YYYY-MM-DD HH:MM:SS.ffffff` | `DATETIME(6)`, `TIMESTAMP(6)` |
//! | float, JSON | the canonical text | (hashed in Rust only) |
//!
//! The row is `CONCAT_WS(0xFF, mask, field…)`: `mask` has one `1` (NULL) or `0` per column
//! that may be NULL on either side (left out when none may), and NULL fields are skipped. The
//! text is injective: the mask says which fields are present, and no field contains the byte
//! 0xFF (valid UTF-8 never does; the other fields are ASCII). Each field is a one-to-one
//! function of the canonical field, so both hashes find the same rows equal.
//!
//! The row hash is `CRC32(text) << 32 | CRC32C(text)`: two 32-bit CRCs with different
//! polynomials. Like `CHECKSUM TABLE`'s CRC32 it finds accidental differences, not crafted
//! ones.

use super::canonical::{RowHash, canonical_field, hash_values};
use crate::event::{ColumnType, Value};
use std::fmt::Write;

/// Between two fields of the compact text.
pub const FIELD_SEPARATOR: u8 = 0xFF;

/// The compact field of `value` in a column of logical type `ty`; `None` for NULL.
pub fn compact_field(ty: &ColumnType, value: &Value) -> Result<Option<Vec<u8>>, String> {
    Ok(Some(match (ty, value) {
        (_, Value::Null) => return Ok(None),
        (ColumnType::String { .. }, Value::String(s)) => s.as_bytes().to_vec(),
        (ColumnType::Bytes, Value::Bytes(b)) => {
            let mut out = String::with_capacity(b.len() * 2);
            for byte in b {
                let _ = write!(out, "{byte:02X}");
            }
            out.into_bytes()
        }
        _ => {
            let Some(text) = canonical_field(ty, value)? else {
                return Ok(None);
            };
            match ty {
                ColumnType::Timestamp | ColumnType::TimestampTz => text
                    .trim_end_matches('Z')
                    .replacen('T', " ", 1)
                    .into_bytes(),
                _ => text.into_bytes(),
            }
        }
    }))
}

/// The compact text of a row: the NULL mask of the columns flagged in `nullable`, then the
/// non-NULL fields, joined by [`FIELD_SEPARATOR`] (what MariaDB's `CONCAT_WS` builds).
pub fn compact_row(fields: &[Option<Vec<u8>>], nullable: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut first = true;
    let mask: Vec<u8> = fields
        .iter()
        .zip(nullable)
        .filter(|(_, n)| **n)
        .map(|(f, _)| if f.is_none() { b'1' } else { b'0' })
        .collect();
    if !mask.is_empty() {
        out.extend_from_slice(&mask);
        first = false;
    }
    for field in fields.iter().flatten() {
        if !first {
            out.push(FIELD_SEPARATOR);
        }
        out.extend_from_slice(field);
        first = false;
    }
    out
}

/// `CRC32(text) << 32 | CRC32C(text)`.
pub fn crc_hash(text: &[u8]) -> u64 {
    (u64::from(crc32fast::hash(text)) << 32) | u64::from(crc32c::crc32c(text))
}

/// The row's hash under `row_hash`. `nullable` (the columns that may be NULL on either side)
/// only matters to [`RowHash::Crc32c`].
pub fn row_hash_of(
    row_hash: RowHash,
    types: &[&ColumnType],
    nullable: &[bool],
    row: &[Value],
) -> Result<u64, String> {
    match row_hash {
        RowHash::Md5 => Ok(hash_values(types, row)?.1),
        RowHash::Crc32c => {
            let fields = types
                .iter()
                .zip(row)
                .map(|(ty, v)| compact_field(ty, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(crc_hash(&compact_row(&fields, nullable)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decimal;
    use chrono::{DateTime, NaiveDate};
    use std::collections::HashSet;

    fn dec(s: &str) -> Value {
        Value::Decimal(Decimal::parse(s).unwrap())
    }

    #[test]
    fn fields_are_what_mariadb_prints() {
        let d2 = ColumnType::Decimal {
            precision: 18,
            scale: 2,
        };
        let text = ColumnType::String { max_length: None };
        let cases: Vec<(ColumnType, Value, Option<&[u8]>)> = vec![
            (ColumnType::Int, Value::Int(-42), Some(b"-42")),
            (ColumnType::Bool, Value::Bool(true), Some(b"1")),
            (d2.clone(), dec("12.5"), Some(b"12.50")),
            (d2.clone(), Value::Int(7), Some(b"7.00")),
            (
                text.clone(),
                Value::String("héllo|".into()),
                Some("héllo|".as_bytes()),
            ),
            (text.clone(), Value::String(String::new()), Some(b"")),
            (text, Value::Null, None),
            (
                ColumnType::Bytes,
                Value::Bytes(vec![0, 0xab, 0xff]),
                Some(b"00ABFF"),
            ),
            (
                ColumnType::Date,
                Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
                Some(b"2024-02-29"),
            ),
            (
                ColumnType::Timestamp,
                Value::Timestamp(
                    NaiveDate::from_ymd_opt(2024, 1, 2)
                        .unwrap()
                        .and_hms_micro_opt(3, 4, 5, 60)
                        .unwrap(),
                ),
                Some(b"2024-01-02 03:04:05.000060"),
            ),
            (
                ColumnType::TimestampTz,
                Value::TimestampTz(
                    DateTime::parse_from_rfc3339("2024-01-02T03:04:05.5+02:00").unwrap(),
                ),
                Some(b"2024-01-02 01:04:05.500000"),
            ),
        ];
        for (ty, v, want) in cases {
            assert_eq!(
                compact_field(&ty, &v).unwrap().as_deref(),
                want,
                "{ty:?} {v:?}"
            );
        }
    }

    #[test]
    fn rows_join_like_concat_ws_with_a_null_mask() {
        let f = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            compact_row(&[f("1"), None, f("x")], &[false, true, true]),
            b"10\xff1\xffx"
        );
        assert_eq!(compact_row(&[f("1"), f("")], &[false, false]), b"1\xff");
        assert_eq!(compact_row(&[None], &[true]), b"1");
        // CRC32("") = 0, CRC32C("") = 0; CRC32("a") = e8b7be43, CRC32C("a") = c1d04330.
        assert_eq!(crc_hash(b""), 0);
        assert_eq!(crc_hash(b"a"), 0xe8b7be43_c1d04330);
    }

    /// NULL, '', 'N', a trailing space, a separator inside text, a moved field boundary and a
    /// decimal's last digit all give different texts.
    #[test]
    fn look_alike_rows_hash_differently() {
        let s = ColumnType::String { max_length: None };
        let d = ColumnType::Decimal {
            precision: 10,
            scale: 3,
        };
        let types = [&s, &s, &d];
        let nullable = [true, true, true];
        let text = |v: &str| Value::String(v.into());
        let rows = [
            vec![Value::Null, text(""), dec("1.500")],
            vec![text(""), Value::Null, dec("1.500")],
            vec![text(""), text(""), dec("1.500")],
            vec![text("N"), Value::Null, dec("1.500")],
            vec![text("a "), text("b"), dec("1.500")],
            vec![text("a"), text("b"), dec("1.500")],
            vec![text("a|b"), text("c"), dec("1.500")],
            vec![text("a"), text("b|c"), dec("1.500")],
            vec![text("a"), text("b"), dec("1.501")],
            vec![text("a"), text("b"), Value::Null],
        ];
        let hashes: HashSet<u64> = rows
            .iter()
            .map(|r| row_hash_of(RowHash::Crc32c, &types, &nullable, r).unwrap())
            .collect();
        assert_eq!(hashes.len(), rows.len());
        // The same row under MD5 is the canonical hash.
        assert_eq!(
            row_hash_of(RowHash::Md5, &types, &nullable, &rows[0]).unwrap(),
            hash_values(&types, &rows[0]).unwrap().1
        );
    }
}
