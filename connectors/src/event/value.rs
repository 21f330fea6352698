//! Typed column values. Decimals stay exact (an `i128` unscaled value and a scale), because a
//! ledger that round-trips through `f64` is a ledger that no longer balances.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An exact decimal: `unscaled * 10^-scale`. 38 digits fit in an `i128`, which covers
/// COBOL (31 digits), Oracle NUMBER (38) and MySQL DECIMAL (65 is clamped by the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u8,
}

impl Decimal {
    pub fn new(unscaled: i128, scale: u8) -> Self {
        Self { unscaled, scale }
    }

    /// Parses `-123.4500` keeping the written scale (4 here).
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        let t = text.trim();
        let (neg, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DecimalError::Syntax(text.to_string()));
        }
        if frac_part.len() > 38 {
            return Err(DecimalError::Overflow(text.to_string()));
        }
        let mut unscaled: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            if !b.is_ascii_digit() {
                return Err(DecimalError::Syntax(text.to_string()));
            }
            unscaled = unscaled
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(b - b'0')))
                .ok_or_else(|| DecimalError::Overflow(text.to_string()))?;
        }
        Ok(Self {
            unscaled: if neg { -unscaled } else { unscaled },
            scale: frac_part.len() as u8,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecimalError {
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    #[error("`{0}` does not fit in 38 digits")]
    Overflow(String),
}

impl fmt::Display for Decimal {
    /// Always prints exactly `scale` digits after the point: `-0.71051`, `12.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.unscaled.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let sign = if self.unscaled < 0 { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits
        };
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int_part}.{frac_part}")
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Decimal::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One column value, typed the way the source declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Decimal(Decimal),
    Float(f64),
    String(String),
    /// Raw bytes; JSON renders them as base64 (Debezium's default `binary.handling.mode`).
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// A timestamp without zone (Oracle DATE/TIMESTAMP, MySQL DATETIME).
    Timestamp(NaiveDateTime),
    /// A timestamp with zone (Oracle TIMESTAMP WITH TIME ZONE, PostgreSQL timestamptz).
    TimestampTz(DateTime<FixedOffset>),
    /// A repeated group (COBOL OCCURS).
    Array(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Bytes the value occupies as data: text and binary by length, numbers and times by a
    /// fixed width. Routing rules bound rows by the sum of these.
    pub fn data_len(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) | Value::Timestamp(_) => 8,
            Value::Decimal(_) => 16,
            Value::Date(_) => 4,
            Value::TimestampTz(_) => 12,
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(Value::data_len).sum(),
        }
    }

    /// The plain JSON form used in the Debezium envelope: decimals as strings with their
    /// exact scale, timestamps as ISO-8601, bytes as base64.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Decimal(d) => J::String(d.to_string()),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(base64_encode(b)),
            Value::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
            Value::Timestamp(t) => J::String(IsoTimestamp(t).to_string()),
            Value::TimestampTz(t) => J::String(t.to_rfc3339()),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
        }
    }

    /// A stable text form for keys (Kafka message keys, upsert keys, log lines).
    pub fn key_text(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            // The common key types, without a JSON value in between (same text).
            Value::Int(i) => i.to_string(),
            Value::Decimal(d) => d.to_string(),
            other => match other.to_json() {
                serde_json::Value::String(s) => s,
                j => j.to_string(),
            },
        }
    }
}

/// A timestamp as `%Y-%m-%dT%H:%M:%S%.f` (fraction of 3, 6 or 9 digits, none when zero), the
/// text every JSON rendering and the sink's key matching use. Written by hand for years 0 to
/// 9999 because chrono parses its format string on every call (4 % of the CPU samples of the
/// real-time bench, which renders one timestamp per event).
pub struct IsoTimestamp<'a>(pub &'a NaiveDateTime);

impl fmt::Display for IsoTimestamp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        if !(0..=9999).contains(&t.year()) {
            return write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.f"));
        }
        // A leap second is second 59 with nanoseconds past 1e9: chrono prints it as :60 and
        // the remainder as the fraction.
        let leap = u32::from(t.nanosecond() >= 1_000_000_000);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second() + leap
        )?;
        let nanos = t.nanosecond() % 1_000_000_000;
        if nanos == 0 {
            Ok(())
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, ".{:03}", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, ".{:06}", nanos / 1_000)
        } else {
            write!(f, ".{nanos:09}")
        }
    }
}

/// Standard base64 with padding (Debezium's default `binary.handling.mode`).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn iso_timestamp_is_chronos_text(
            secs in -400_000_000_000i64..400_000_000_000,
            // Whole milliseconds and microseconds often, as sources give them.
            nanos in proptest::prop_oneof![
                0u32..1_000_000_000,
                (0u32..1_000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                1_000_000_000u32..2_000_000_000,
            ],
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos).map(|t| t.naive_utc()) {
                proptest::prop_assert_eq!(
                    IsoTimestamp(&t).to_string(),
                    t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                );
            }
        }
    }

    #[test]
    fn decimal_keeps_its_scale() {
        for text in [
            "-499045978.39",
            "-0.71051",
            "0.41567",
            "12.00",
            "7",
            "-0.01",
        ] {
            assert_eq!(Decimal::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Decimal::new(-5, 3).to_string(), "-0.005");
        assert_eq!(Decimal::new(0, 2).to_string(), "0.00");
    }

    #[test]
    fn decimal_rejects_garbage() {
        assert!(matches!(
            Decimal::parse("1.2.3"),
            Err(DecimalError::Syntax(_))
        ));
        assert!(matches!(Decimal::parse("-"), Err(DecimalError::Syntax(_))));
        assert!(matches!(
            Decimal::parse("1234567890123456789012345678901234567890"),
            Err(DecimalError::Overflow(_))
        ));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }
}
