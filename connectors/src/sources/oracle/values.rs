//! From `SQL_REDO` literals to typed values: by the column's Oracle type when the dictionary
//! is known, by the literal's own form otherwise (the replay tool).

use super::sql_redo::{Literal, RawStr};
use crate::event::{ColumnType, Decimal, Value};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// A column's type as Oracle's dictionary (`ALL_TAB_COLUMNS.DATA_TYPE`) names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OracleType {
    /// `NUMBER(p,s)`; `None` precision is a bare `NUMBER`.
    Number {
        precision: Option<u8>,
        scale: Option<i8>,
    },
    /// `BINARY_FLOAT`, `BINARY_DOUBLE`, `FLOAT`.
    Float,
    /// `VARCHAR2`, `NVARCHAR2`, `CHAR`, `NCHAR`, `CLOB`, `NCLOB`, `LONG`, intervals.
    Text { max_length: Option<u32> },
    /// `RAW`, `BLOB`, `LONG RAW`.
    Bytes,
    /// `DATE` (carries a time of day).
    Date,
    /// `TIMESTAMP(n)` and `TIMESTAMP(n) WITH LOCAL TIME ZONE`.
    Timestamp,
    /// `TIMESTAMP(n) WITH TIME ZONE`.
    TimestampTz,
}

impl OracleType {
    /// From `DATA_TYPE`, `DATA_PRECISION`, `DATA_SCALE` and `CHAR_LENGTH`.
    pub fn from_dictionary(
        data_type: &str,
        precision: Option<u8>,
        scale: Option<i8>,
        char_length: Option<u32>,
    ) -> Self {
        let t = data_type.to_ascii_uppercase();
        if t == "NUMBER" || t == "INTEGER" {
            OracleType::Number { precision, scale }
        } else if t.starts_with("BINARY_") || t == "FLOAT" {
            OracleType::Float
        } else if t == "DATE" {
            OracleType::Date
        } else if t.starts_with("TIMESTAMP") && t.ends_with("WITH TIME ZONE") {
            OracleType::TimestampTz
        } else if t.starts_with("TIMESTAMP") {
            OracleType::Timestamp
        } else if t == "RAW" || t == "BLOB" || t == "LONG RAW" {
            OracleType::Bytes
        } else {
            OracleType::Text {
                max_length: char_length.filter(|l| *l > 0),
            }
        }
    }

    /// The event model's type.
    pub fn column_type(&self) -> ColumnType {
        match self {
            OracleType::Number {
                precision: Some(p),
                scale,
            } if scale.unwrap_or(0) <= 0 && *p <= 18 => ColumnType::Int,
            OracleType::Number { precision, scale } => ColumnType::Decimal {
                precision: precision.unwrap_or(38),
                scale: scale.unwrap_or(0).max(0) as u8,
            },
            OracleType::Float => ColumnType::Float,
            OracleType::Text { max_length } => ColumnType::String {
                max_length: *max_length,
            },
            OracleType::Bytes => ColumnType::Bytes,
            OracleType::Date | OracleType::Timestamp => ColumnType::Timestamp,
            OracleType::TimestampTz => ColumnType::TimestampTz,
        }
    }
}

/// The type a literal implies when no dictionary says otherwise.
pub fn inferred_type(lit: &Literal<'_>) -> ColumnType {
    match lit {
        Literal::Number(_) => ColumnType::Decimal {
            precision: 38,
            scale: 0,
        },
        Literal::Date(..) | Literal::Timestamp(..) => ColumnType::Timestamp,
        Literal::TimestampTz(..) => ColumnType::TimestampTz,
        Literal::HexToRaw(_) | Literal::EmptyBlob => ColumnType::Bytes,
        _ => ColumnType::String { max_length: None },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {what}: {reason}")]
pub struct ValueError {
    pub text: String,
    pub what: &'static str,
    pub reason: String,
}

fn bad(text: &str, what: &'static str, reason: impl Into<String>) -> ValueError {
    ValueError {
        text: text.to_string(),
        what,
        reason: reason.into(),
    }
}

/// Converts one literal; `ty` is the column's dictionary type when known.
pub fn to_value(lit: &Literal<'_>, ty: Option<&OracleType>) -> Result<Value, ValueError> {
    Ok(match (lit, ty) {
        (Literal::Null, _) => Value::Null,
        (Literal::Str(s), Some(OracleType::Number { .. })) => number(&s.text(), ty)?,
        (Literal::Number(n), _) => number(n, ty)?,
        (Literal::Str(s), Some(OracleType::Float)) => float(&s.text())?,
        (Literal::Str(s), Some(OracleType::Bytes)) => Value::Bytes(hex(s.raw)?),
        (Literal::Str(s), _) => Value::String(s.text().into_owned()),
        (Literal::Date(v, f) | Literal::Timestamp(v, f), Some(OracleType::TimestampTz)) => {
            Value::TimestampTz(timestamp_tz(v, f)?)
        }
        (Literal::Date(v, f) | Literal::Timestamp(v, f), _) => Value::Timestamp(timestamp(v, f)?),
        (Literal::TimestampTz(v, f), _) => Value::TimestampTz(timestamp_tz(v, f)?),
        (Literal::HexToRaw(h), _) => Value::Bytes(hex(h.raw)?),
        (Literal::Unistr(u), _) => Value::String(unistr(&u.text())?),
        (Literal::Interval(i), _) => Value::String(i.text().into_owned()),
        (Literal::EmptyClob, _) => Value::String(String::new()),
        (Literal::EmptyBlob, _) => Value::Bytes(Vec::new()),
    })
}

fn number(text: &str, ty: Option<&OracleType>) -> Result<Value, ValueError> {
    if text.contains(['e', 'E']) || matches!(ty, Some(OracleType::Float)) {
        return float(text);
    }
    let d = decimal(text)?;
    match ty.map(OracleType::column_type) {
        Some(ColumnType::Int) if d.scale == 0 => i64::try_from(d.unscaled)
            .map(Value::Int)
            .map_err(|_| bad(text, "number", "does not fit in 64 bits")),
        Some(ColumnType::Decimal { scale, .. }) if scale > d.scale => {
            // Keep the column's declared scale so equal values render alike.
            let factor = 10i128.pow(u32::from(scale - d.scale));
            Ok(Value::Decimal(Decimal::new(
                d.unscaled
                    .checked_mul(factor)
                    .ok_or_else(|| bad(text, "number", "does not fit in 38 digits"))?,
                scale,
            )))
        }
        _ => Ok(Value::Decimal(d)),
    }
}

/// A decimal literal straight into a `Decimal`: up to 18 digits add up in a `u64`; anything
/// else (more digits, spaces, bad syntax) goes through `Decimal::parse` and its errors.
#[inline]
fn decimal(text: &str) -> Result<Decimal, ValueError> {
    let b = text.as_bytes();
    let (neg, start) = match b.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let mut unscaled: u64 = 0;
    let mut digits = 0usize;
    let mut point: Option<usize> = None;
    let mut simple = b.len() - start <= 19;
    if simple {
        for (i, c) in b[start..].iter().enumerate() {
            match c {
                b'0'..=b'9' => {
                    unscaled = unscaled * 10 + u64::from(c - b'0');
                    digits += 1;
                }
                b'.' if point.is_none() => point = Some(i),
                _ => {
                    simple = false;
                    break;
                }
            }
        }
    }
    if simple && digits > 0 {
        let scale = point.map_or(0, |p| b.len() - start - p - 1) as u8;
        let v = i128::from(unscaled);
        return Ok(Decimal::new(if neg { -v } else { v }, scale));
    }
    Decimal::parse(text).map_err(|e| bad(text, "number", e.to_string()))
}

fn float(text: &str) -> Result<Value, ValueError> {
    match text.trim() {
        "Nan" | "NaN" => Ok(Value::Float(f64::NAN)),
        "Inf" | "Infinity" => Ok(Value::Float(f64::INFINITY)),
        "-Inf" | "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
        t => t
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| bad(text, "floating-point number", e.to_string())),
    }
}

/// `HEXTORAW` text: an even number of hex digits.
pub fn hex(text: &str) -> Result<Vec<u8>, ValueError> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(bad(text, "hex string", "odd number of digits"));
    }
    let digit = |c: u8, at: usize| -> Result<u8, ValueError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(bad(
                text,
                "hex string",
                format!("byte {at} is not a hex digit"),
            )),
        }
    };
    b.chunks(2)
        .enumerate()
        .map(|(i, p)| Ok(digit(p[0], 2 * i)? << 4 | digit(p[1], 2 * i + 1)?))
        .collect()
}

/// `UNISTR` text: `\XXXX` UTF-16 code units (surrogate pairs joined) and `\\`.
pub fn unistr(text: &str) -> Result<String, ValueError> {
    let mut units: Vec<u16> = Vec::with_capacity(text.len());
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let flush = |units: &mut Vec<u16>, out: &mut String| -> Result<(), ValueError> {
        if !units.is_empty() {
            let s = String::from_utf16(units)
                .map_err(|_| bad(text, "UNISTR string", "unpaired UTF-16 surrogate"))?;
            out.push_str(&s);
            units.clear();
        }
        Ok(())
    };
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                flush(&mut units, &mut out)?;
                out.push('\\');
                i += 2;
                continue;
            }
            let code = text
                .get(i + 1..i + 5)
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(text, "UNISTR string", format!("bad escape at byte {i}")))?;
            units.push(code);
            i += 5;
        } else {
            flush(&mut units, &mut out)?;
            let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch_len]);
            i += ch_len;
        }
    }
    flush(&mut units, &mut out)?;
    Ok(out)
}

/// The parts an Oracle datetime format mask can set.
#[derive(Default)]
struct Parts {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    pm: Option<bool>,
    /// Zone offset as written: sign, hours, minutes.
    offset: Option<(bool, i32, i32)>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Reads `value` by the Oracle format `mask` (`YYYY-MM-DD HH24:MI:SS.FF TZH:TZM` and the
/// usual elements: YYYY RR YY MM MON DD HH24 HH12 HH MI SS FF[1-9] AM PM TZH TZM, quoted
/// literals and punctuation).
fn read_mask(value: &str, mask: &str, what: &'static str) -> Result<Parts, ValueError> {
    let v = value.as_bytes();
    let m = mask.to_ascii_uppercase();
    let mb = m.as_bytes();
    let mut p = Parts {
        month: 1,
        day: 1,
        ..Default::default()
    };
    let (mut i, mut j) = (0usize, 0usize);
    let fail = |why: String| bad(value, what, format!("{why} (format `{mask}`)"));
    let digits = |i: &mut usize, max: usize| -> Option<(u32, usize)> {
        let start = *i;
        let mut n: u32 = 0;
        while *i < v.len() && *i - start < max && v[*i].is_ascii_digit() {
            n = n * 10 + u32::from(v[*i] - b'0');
            *i += 1;
        }
        (*i > start).then_some((n, *i - start))
    };
    while j < mb.len() {
        let rest = &m[j..];
        let take = |n: &str| rest.starts_with(n);
        if take("YYYY") {
            let (n, _) = digits(&mut i, 4).ok_or_else(|| fail(format!("no year at byte {i}")))?;
            p.year = n as i32;
            j += 4;
        } else if take("RRRR") {
            let (n, _) = digits(&mut i, 4).ok_or_else(|| fail(format!("no year at byte {i}")))?;
            p.year = n as i32;
            j += 4;
        } else if take("RR") || take("YY") {
            let (n, _) = digits(&mut i, 2).ok_or_else(|| fail(format!("no year at byte {i}")))?;
            // RR: 00-49 is 20xx, 50-99 is 19xx (relative to a current year in 2000-2049).
            p.year = if n < 50 {
                2000 + n as i32
            } else {
                1900 + n as i32
            };
            j += 2;
        } else if take("MONTH") || take("MON") {
            let name = value
                .get(i..i + 3)
                .map(str::to_ascii_uppercase)
                .unwrap_or_default();
            let idx = MONTHS
                .iter()
                .position(|m| *m == name)
                .ok_or_else(|| fail(format!("no month name at byte {i}")))?;
            p.month = idx as u32 + 1;
            i += 3;
            while i < v.len() && v[i].is_ascii_alphabetic() {
                i += 1;
            }
            j += if take("MONTH") { 5 } else { 3 };
        } else if take("MM") {
            p.month = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no month at byte {i}")))?
                .0;
            j += 2;
        } else if take("MI") {
            p.minute = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no minutes at byte {i}")))?
                .0;
            j += 2;
        } else if take("DD") {
            p.day = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no day at byte {i}")))?
                .0;
            j += 2;
        } else if take("HH24") || take("HH12") || take("HH") {
            p.hour = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no hour at byte {i}")))?
                .0;
            j += if take("HH") && !take("HH24") && !take("HH12") {
                2
            } else {
                4
            };
        } else if take("SS") {
            p.second = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no seconds at byte {i}")))?
                .0;
            j += 2;
        } else if take("FF") {
            j += 2;
            if mb.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            // Fractional digits: as many as written (up to 9).
            let (n, len) = digits(&mut i, 9).unwrap_or((0, 0));
            p.nanos = n * 10u32.pow(9 - len as u32);
        } else if take("AM") || take("PM") {
            let word = value.get(i..i + 2).map(str::to_ascii_uppercase);
            p.pm = match word.as_deref() {
                Some("AM") => Some(false),
                Some("PM") => Some(true),
                _ => return Err(fail(format!("no AM/PM at byte {i}"))),
            };
            i += 2;
            j += 2;
        } else if take("TZH") {
            let neg = match v.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let h = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no zone hour at byte {i}")))?
                .0 as i32;
            p.offset = Some((neg, h, 0));
            j += 3;
        } else if take("TZM") {
            let mi = digits(&mut i, 2)
                .ok_or_else(|| fail(format!("no zone minutes at byte {i}")))?
                .0 as i32;
            let (neg, h, _) = p.offset.unwrap_or((false, 0, 0));
            p.offset = Some((neg, h, mi));
            j += 3;
        } else if mb[j] == b'"' {
            let end = m[j + 1..]
                .find('"')
                .ok_or_else(|| fail("unclosed quote in format".into()))?;
            let lit = &mask[j + 1..j + 1 + end];
            if !value[i.min(value.len())..].starts_with(lit) {
                return Err(fail(format!("expected `{lit}` at byte {i}")));
            }
            i += lit.len();
            j += end + 2;
        } else if mb[j].is_ascii_alphabetic() {
            return Err(fail(format!("unsupported format element at `{rest}`")));
        } else {
            // Punctuation in the mask matches any one punctuation or space in the value.
            if i < v.len() && !v[i].is_ascii_alphanumeric() {
                i += 1;
            } else if mb[j] != b' ' {
                return Err(fail(format!("expected `{}` at byte {i}", mb[j] as char)));
            }
            j += 1;
        }
    }
    if i < v.len() && !value[i..].trim().is_empty() {
        return Err(fail(format!("unexpected `{}` at byte {i}", &value[i..])));
    }
    if let Some(pm) = p.pm {
        p.hour = match (pm, p.hour) {
            (false, 12) => 0,
            (true, h) if h < 12 => h + 12,
            (_, h) => h,
        };
    }
    Ok(p)
}

fn naive(p: &Parts, value: &str, what: &'static str) -> Result<NaiveDateTime, ValueError> {
    let date = NaiveDate::from_ymd_opt(p.year, p.month, p.day)
        .ok_or_else(|| bad(value, what, "no such date"))?;
    let time = NaiveTime::from_hms_nano_opt(p.hour, p.minute, p.second, p.nanos)
        .ok_or_else(|| bad(value, what, "no such time of day"))?;
    Ok(date.and_time(time))
}

/// Reads `value` by an Oracle datetime format mask.
pub fn read_datetime(value: &str, mask: &str) -> Result<NaiveDateTime, ValueError> {
    let p = parts(value, mask, "date/time")?;
    naive(&p, value, "date/time")
}

/// The masks the miner's NLS settings make LogMiner write (`YYYY-MM-DD HH24:MI:SS`, with
/// `.FF[n]` and ` TZH:TZM` for timestamps) read at fixed places; `None` sends anything that
/// does not fit exactly to `read_mask`, which gives the same answer or the error.
#[inline]
fn nls_parts(value: &str, mask: &str) -> Option<Parts> {
    const BASE: &[u8] = b"YYYY-MM-DD HH24:MI:SS";
    let m = mask.as_bytes();
    if m.len() < BASE.len() || !m[..BASE.len()].eq_ignore_ascii_case(BASE) {
        return None;
    }
    let mut rest = &m[BASE.len()..];
    let fraction = if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b".FF") {
        rest = &rest[3..];
        if rest.first().is_some_and(|c| (b'1'..=b'9').contains(c)) {
            rest = &rest[1..];
        }
        true
    } else {
        false
    };
    let zone = rest.eq_ignore_ascii_case(b" TZH:TZM");
    if !zone && !rest.is_empty() {
        return None;
    }
    let v = value.as_bytes();
    let num = |at: usize, len: usize| -> Option<u32> {
        let d = v.get(at..at + len)?;
        d.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    // Separators: what `read_mask` accepts, one non-alphanumeric byte.
    let sep = |at: usize| v.get(at).is_some_and(|c| !c.is_ascii_alphanumeric());
    if !(sep(4) && sep(7) && sep(10) && sep(13) && sep(16)) {
        return None;
    }
    let mut p = Parts {
        year: num(0, 4)? as i32,
        month: num(5, 2)?,
        day: num(8, 2)?,
        hour: num(11, 2)?,
        minute: num(14, 2)?,
        second: num(17, 2)?,
        ..Default::default()
    };
    let mut i = 19;
    if fraction {
        if !sep(i) {
            return None;
        }
        i += 1;
        let start = i;
        let mut n = 0u32;
        while i < v.len() && i - start < 9 && v[i].is_ascii_digit() {
            n = n * 10 + u32::from(v[i] - b'0');
            i += 1;
        }
        if i == start {
            return None;
        }
        p.nanos = n * 10u32.pow(9 - (i - start) as u32);
    }
    if zone {
        if v.get(i) != Some(&b' ') {
            return None;
        }
        let neg = match v.get(i + 1) {
            Some(b'-') => true,
            Some(b'+') => false,
            _ => return None,
        };
        if v.get(i + 4) != Some(&b':') {
            return None;
        }
        p.offset = Some((neg, num(i + 2, 2)? as i32, num(i + 5, 2)? as i32));
        i += 7;
    }
    (i == v.len()).then_some(p)
}

fn parts(value: &str, mask: &str, what: &'static str) -> Result<Parts, ValueError> {
    match nls_parts(value, mask) {
        Some(p) => Ok(p),
        None => read_mask(value, mask, what),
    }
}

fn timestamp(v: &RawStr<'_>, f: &RawStr<'_>) -> Result<NaiveDateTime, ValueError> {
    let value = v.text();
    let p = parts(&value, &f.text(), "date/time")?;
    naive(&p, &value, "date/time")
}

fn timestamp_tz(v: &RawStr<'_>, f: &RawStr<'_>) -> Result<DateTime<FixedOffset>, ValueError> {
    let value = v.text();
    let p = parts(&value, &f.text(), "timestamp with time zone")?;
    let local = naive(&p, &value, "timestamp with time zone")?;
    let (neg, h, mi) = p.offset.unwrap_or((false, 0, 0));
    let minutes = if neg { -(h * 60 + mi) } else { h * 60 + mi };
    let offset = FixedOffset::east_opt(minutes * 60)
        .ok_or_else(|| bad(&value, "timestamp with time zone", "offset out of range"))?;
    offset
        .from_local_datetime(&local)
        .single()
        .ok_or_else(|| bad(&value, "timestamp with time zone", "ambiguous local time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> RawStr<'_> {
        RawStr { raw: s }
    }

    #[test]
    fn dates_follow_their_format_mask() {
        let v = to_value(
            &Literal::Date(raw("2024-02-29 13:05:09"), raw("YYYY-MM-DD HH24:MI:SS")),
            None,
        )
        .unwrap();
        assert_eq!(v.to_json(), "2024-02-29T13:05:09");
        let v = to_value(
            &Literal::Date(raw("29-FEB-24 01.05.09 PM"), raw("DD-MON-RR HH.MI.SS AM")),
            None,
        )
        .unwrap();
        assert_eq!(v.to_json(), "2024-02-29T13:05:09");
        let v = to_value(
            &Literal::Timestamp(
                raw("2024-02-29 13:05:09.123"),
                raw("YYYY-MM-DD HH24:MI:SS.FF"),
            ),
            None,
        )
        .unwrap();
        assert_eq!(v.to_json(), "2024-02-29T13:05:09.123");
        let v = to_value(
            &Literal::TimestampTz(
                raw("2024-02-29 13:05:09.5 -05:30"),
                raw("YYYY-MM-DD HH24:MI:SS.FF TZH:TZM"),
            ),
            None,
        )
        .unwrap();
        assert_eq!(v.to_json(), "2024-02-29T13:05:09.500-05:30");
        let e = to_value(
            &Literal::Date(raw("2023-02-29 00:00:00"), raw("YYYY-MM-DD HH24:MI:SS")),
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason, "no such date");
    }

    #[test]
    fn numbers_follow_the_column_type() {
        let int = OracleType::Number {
            precision: Some(10),
            scale: Some(0),
        };
        let money = OracleType::Number {
            precision: Some(12),
            scale: Some(2),
        };
        let s = Literal::Str(raw("42"));
        assert_eq!(to_value(&s, Some(&int)).unwrap(), Value::Int(42));
        assert_eq!(to_value(&s, Some(&money)).unwrap().to_json(), "42.00");
        assert_eq!(to_value(&s, None).unwrap(), Value::String("42".into()));
        assert!(to_value(&Literal::Str(raw("4x")), Some(&int)).is_err());
        assert_eq!(
            to_value(&Literal::Number("1.5E+3"), None).unwrap(),
            Value::Float(1500.0)
        );
    }

    #[test]
    fn unistr_and_hex() {
        assert_eq!(unistr(r"caf\00E9 \D83D\DE00 a\\b").unwrap(), "café 😀 a\\b");
        assert!(unistr(r"\D83D").is_err());
        assert_eq!(hex("0aFF").unwrap(), vec![10, 255]);
        assert!(hex("0g").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// The fixed-place reading of the NLS masks agrees with the general mask reader,
        /// for values that fit and values that do not.
        #[test]
        fn nls_fast_path_agrees_with_read_mask(
            y in 0u32..10000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61,
            s in 0u32..61, frac in "(\\.[0-9]{0,11})?", tz in "( [+-]?[0-9]{1,2}:[0-9]{1,2})?",
            junk in "[ 0-9.:+-]{0,2}",
            mask in prop::sample::select(vec![
                "YYYY-MM-DD HH24:MI:SS",
                "YYYY-MM-DD HH24:MI:SS.FF",
                "yyyy-mm-dd hh24:mi:ss.ff9",
                "YYYY-MM-DD HH24:MI:SS.FF3 TZH:TZM",
                "YYYY-MM-DD HH24:MI:SS TZH:TZM",
            ]),
        ) {
            let value = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}{tz}{junk}");
            let general = read_mask(&value, mask, "date/time")
                .map(|p| (p.year, p.month, p.day, p.hour, p.minute, p.second, p.nanos, p.offset));
            let fast = parts(&value, mask, "date/time")
                .map(|p| (p.year, p.month, p.day, p.hour, p.minute, p.second, p.nanos, p.offset));
            prop_assert_eq!(fast, general);
        }

        /// Numbers read straight into a `Decimal` equal `Decimal::parse`, errors included.
        #[test]
        fn decimal_fast_path_agrees_with_decimal_parse(
            text in "[+-]?[0-9]{0,40}(\\.[0-9]{0,40})?[ .e-]?",
        ) {
            let general = Decimal::parse(&text).map_err(|e| bad(&text, "number", e.to_string()));
            prop_assert_eq!(decimal(&text), general);
        }
    }
}
