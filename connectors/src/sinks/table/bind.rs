//! Values as they are bound: each event value converted to its column's type for one dialect,
//! before anything is sent, so a value that does not fit fails the batch with its key instead
//! of being rounded or truncated by the database.

use super::Dialect;
use crate::event::{Column, ColumnType, Decimal, Value};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The SQL type a NULL is bound with (PostgreSQL checks it against the column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
}

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound {
    Null(Kind),
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

impl Bound {
    /// A rough size for statement budgeting.
    pub(crate) fn size(&self) -> usize {
        match self {
            Bound::Text(s) => s.len() + 4,
            Bound::Bytes(b) => b.len() + 4,
            _ => 9,
        }
    }

    /// A canonical text form used to recognise the same key within a batch.
    pub(crate) fn canonical(&self) -> String {
        match self {
            Bound::Null(_) => "\u{0}null".into(),
            Bound::Bool(b) => b.to_string(),
            Bound::Int(i) => i.to_string(),
            Bound::Float(f) => format!("{:016x}", f.to_bits()),
            Bound::Text(s) => s.clone(),
            Bound::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Bound::Date(d) => d.to_string(),
            Bound::Timestamp(t) => crate::event::IsoTimestamp(t).to_string(),
            Bound::TimestampTz(t) => t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
        }
    }
}

/// The kind a column of `ty` is bound as in `dialect`.
pub(crate) fn kind_of(dialect: Dialect, ty: &ColumnType) -> Kind {
    match ty {
        ColumnType::Bool => Kind::Bool,
        ColumnType::Int => Kind::Int,
        ColumnType::Float => Kind::Float,
        ColumnType::Decimal { .. } | ColumnType::String { .. } | ColumnType::Array(_) => Kind::Text,
        ColumnType::Bytes => Kind::Bytes,
        ColumnType::Date => Kind::Date,
        ColumnType::Timestamp => Kind::Timestamp,
        ColumnType::TimestampTz => match dialect {
            // DATETIME(6) holding the UTC instant.
            Dialect::MySql | Dialect::StarRocks => Kind::Timestamp,
            Dialect::Postgres | Dialect::Sqlite => Kind::TimestampTz,
        },
    }
}

/// Converts `value` for `column`. Conversions are exact or refused: an integer fits a decimal
/// or float column when it is exact there, a decimal fits an integer column when it has no
/// fraction, a date fits a timestamp column at midnight, a decimal is rescaled to the column's
/// scale only by adding zeros or dropping trailing zeros.
pub(crate) fn bind(dialect: Dialect, column: &Column, value: &Value) -> Result<Bound, String> {
    let ty = &column.column_type;
    let mismatch = || {
        format!(
            "column `{}` of type {ty:?} cannot take the value {value:?}",
            column.name
        )
    };
    Ok(match (ty, value) {
        (_, Value::Null) => Bound::Null(kind_of(dialect, ty)),
        (ColumnType::Bool, Value::Bool(b)) => Bound::Bool(*b),
        (ColumnType::Bool, Value::Int(i @ (0 | 1))) => Bound::Bool(*i == 1),
        (ColumnType::Int, Value::Int(i)) => Bound::Int(*i),
        (ColumnType::Int, Value::Decimal(d)) => {
            let whole = rescale(*d, 0).map_err(|_| mismatch())?;
            Bound::Int(i64::try_from(whole.unscaled).map_err(|_| mismatch())?)
        }
        (ColumnType::Float, Value::Float(f)) => Bound::Float(*f),
        (ColumnType::Float, Value::Int(i)) if i.unsigned_abs() <= 1 << 53 => {
            Bound::Float(*i as f64)
        }
        (ColumnType::Decimal { precision, scale }, Value::Decimal(d)) => {
            Bound::Text(decimal_text(*d, *precision, *scale, &column.name)?)
        }
        (ColumnType::Decimal { precision, scale }, Value::Int(i)) => Bound::Text(decimal_text(
            Decimal::new(i128::from(*i), 0),
            *precision,
            *scale,
            &column.name,
        )?),
        (ColumnType::String { .. }, Value::String(s)) => Bound::Text(s.clone()),
        (ColumnType::Bytes, Value::Bytes(b)) => Bound::Bytes(b.clone()),
        (ColumnType::Date, Value::Date(d)) => Bound::Date(*d),
        (ColumnType::Timestamp, Value::Timestamp(t)) => Bound::Timestamp(*t),
        (ColumnType::Timestamp, Value::Date(d)) => Bound::Timestamp(d.and_time(Default::default())),
        (ColumnType::TimestampTz, Value::TimestampTz(t)) => {
            let utc = t.with_timezone(&Utc);
            match kind_of(dialect, ty) {
                Kind::Timestamp => Bound::Timestamp(utc.naive_utc()),
                _ => Bound::TimestampTz(utc),
            }
        }
        (ColumnType::Array(_), Value::Array(_)) => Bound::Text(value.to_json().to_string()),
        _ => return Err(mismatch()),
    })
}

/// `d` as text with exactly `scale` decimals, refusing to round and checking `precision`
/// (0 means unconstrained).
fn decimal_text(d: Decimal, precision: u8, scale: u8, column: &str) -> Result<String, String> {
    let scaled = rescale(d, scale).map_err(|()| {
        format!("column `{column}` has scale {scale}; the value {d} would have to be rounded")
    })?;
    if precision > 0 {
        let digits = scaled.unscaled.unsigned_abs().to_string().len();
        let int_digits = digits.saturating_sub(usize::from(scale));
        if int_digits > usize::from(precision.saturating_sub(scale)) {
            return Err(format!(
                "column `{column}` is DECIMAL({precision},{scale}); the value {d} does not fit"
            ));
        }
    }
    Ok(scaled.to_string())
}

/// Rescales exactly: adds zeros, or drops only trailing zeros.
fn rescale(d: Decimal, scale: u8) -> Result<Decimal, ()> {
    use std::cmp::Ordering;
    match d.scale.cmp(&scale) {
        Ordering::Equal => Ok(d),
        Ordering::Less => {
            let factor = 10i128.checked_pow(u32::from(scale - d.scale)).ok_or(())?;
            Ok(Decimal::new(
                d.unscaled.checked_mul(factor).ok_or(())?,
                scale,
            ))
        }
        Ordering::Greater => {
            let factor = 10i128.checked_pow(u32::from(d.scale - scale)).ok_or(())?;
            if d.unscaled % factor != 0 {
                return Err(());
            }
            Ok(Decimal::new(d.unscaled / factor, scale))
        }
    }
}

/// Rebuilds a [`Value`] from the JSON text of an `Array` column (as written by
/// [`Value::to_json`]), guided by the element type.
pub(crate) fn value_from_json(json: &serde_json::Value, ty: &ColumnType) -> Result<Value, String> {
    use serde_json::Value as J;
    let bad = || format!("cannot read {json} as {ty:?}");
    Ok(match (ty, json) {
        (_, J::Null) => Value::Null,
        (ColumnType::Array(inner), J::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| value_from_json(item, inner))
                .collect::<Result<_, _>>()?,
        ),
        (ColumnType::Bool, J::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int, J::Number(n)) => Value::Int(n.as_i64().ok_or_else(bad)?),
        (ColumnType::Float, J::Number(n)) => Value::Float(n.as_f64().ok_or_else(bad)?),
        (ColumnType::Decimal { .. }, J::String(s)) => {
            Value::Decimal(Decimal::parse(s).map_err(|e| e.to_string())?)
        }
        (ColumnType::Decimal { .. }, J::Number(n)) => {
            Value::Decimal(Decimal::parse(&n.to_string()).map_err(|e| e.to_string())?)
        }
        (ColumnType::String { .. }, J::String(s)) => Value::String(s.clone()),
        (ColumnType::Bytes, J::String(s)) => Value::Bytes(base64_decode(s).ok_or_else(bad)?),
        (ColumnType::Date, J::String(s)) => {
            Value::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?)
        }
        (ColumnType::Timestamp, J::String(s)) => Value::Timestamp(
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| bad())?,
        ),
        (ColumnType::TimestampTz, J::String(s)) => {
            Value::TimestampTz(DateTime::parse_from_rfc3339(s).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c)? << (18 - 6 * i);
        }
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&full),
            3 => out.extend_from_slice(&full[..2]),
            2 => out.push(full[0]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(column_type: ColumnType) -> Column {
        Column {
            name: "c".into(),
            column_type,
            nullable: true,
        }
    }

    #[test]
    fn decimals_are_rescaled_exactly_or_refused() {
        let c = col(ColumnType::Decimal {
            precision: 13,
            scale: 2,
        });
        let text = |s: &str| {
            bind(
                Dialect::MySql,
                &c,
                &Value::Decimal(Decimal::parse(s).unwrap()),
            )
        };
        assert_eq!(text("-0.01"), Ok(Bound::Text("-0.01".into())));
        assert_eq!(
            text("12345678901.23"),
            Ok(Bound::Text("12345678901.23".into()))
        );
        assert_eq!(text("1.5"), Ok(Bound::Text("1.50".into())));
        assert_eq!(text("7.000"), Ok(Bound::Text("7.00".into())));
        assert!(text("0.001").unwrap_err().contains("rounded"));
        assert!(
            text("123456789012.00")
                .unwrap_err()
                .contains("does not fit")
        );
        assert_eq!(
            bind(Dialect::Postgres, &c, &Value::Int(-3)),
            Ok(Bound::Text("-3.00".into()))
        );
    }

    #[test]
    fn mismatches_are_refused() {
        let c = col(ColumnType::Int);
        assert!(bind(Dialect::Sqlite, &c, &Value::String("1".into())).is_err());
        assert_eq!(
            bind(Dialect::Sqlite, &c, &Value::Null),
            Ok(Bound::Null(Kind::Int))
        );
    }

    #[test]
    fn arrays_round_trip_through_json() {
        let ty = ColumnType::Array(Box::new(ColumnType::Decimal {
            precision: 5,
            scale: 2,
        }));
        let v = Value::Array(vec![
            Value::Decimal(Decimal::parse("1.20").unwrap()),
            Value::Null,
        ]);
        let json: serde_json::Value = serde_json::from_str(&v.to_json().to_string()).unwrap();
        assert_eq!(value_from_json(&json, &ty), Ok(v));
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
    }
}
