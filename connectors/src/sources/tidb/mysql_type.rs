//! MySQL column types as TiCDC names them (`mysqlType` in canal-json, `typeName` in debezium
//! schema changes) and the typing of the text values TiCDC sends for them.
//!
//! TiCDC writes every canal-json value as a string; this is where `"2147483647"` becomes an
//! integer and `"123.4560"` an exact decimal, never a float.

use crate::event::{ColumnType, Decimal, Value};
use chrono::{NaiveDate, NaiveDateTime};

/// The family of a MySQL type: what its values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Int,
    Decimal,
    Float,
    Text,
    /// BINARY, VARBINARY and the BLOBs: bytes, sent by TiCDC as ISO-8859-1 text.
    Binary,
    Date,
    DateTime,
    Time,
    Year,
    Json,
    /// ENUM, SET and BIT: TiCDC sends the number (enum index, set bitmask, bit value).
    Number,
}

/// A parsed `mysqlType`: `int`, `int unsigned`, `decimal(10,4)`, `varchar(16)`, `enum('a','b')`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlType {
    pub name: String,
    pub family: Family,
    pub unsigned: bool,
    /// `(M)` or `(M,D)` when the type text carries them (TiCDC omits them by default).
    pub params: Option<(u32, Option<u32>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TypeError {
    #[error("unknown MySQL type `{0}`")]
    Unknown(String),
    #[error("`{value}` is not a valid {ty} value")]
    BadValue { ty: String, value: String },
}

impl MysqlType {
    pub fn parse(text: &str) -> Result<Self, TypeError> {
        let lower = text.trim().to_ascii_lowercase();
        let (head, params) = match lower.split_once('(') {
            Some((h, rest)) => (h.trim(), rest.split_once(')').map(|(p, _)| p)),
            None => (lower.as_str(), None),
        };
        let mut words = head.split_whitespace();
        let name = words.next().unwrap_or("").to_string();
        let unsigned = lower.contains("unsigned");
        let family = match name.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bool"
            | "boolean" => Family::Int,
            "decimal" | "numeric" | "dec" | "fixed" => Family::Decimal,
            "float" | "double" | "real" => Family::Float,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Family::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Family::Binary
            }
            "date" => Family::Date,
            "datetime" | "timestamp" => Family::DateTime,
            "time" => Family::Time,
            "year" => Family::Year,
            "json" => Family::Json,
            "enum" | "set" | "bit" => Family::Number,
            _ => return Err(TypeError::Unknown(text.to_string())),
        };
        // enum('a','b') carries values, not sizes.
        let params = match (family, params) {
            (Family::Number, _) | (_, None) => None,
            (_, Some(p)) => {
                let mut it = p.split(',').map(|s| s.trim().parse::<u32>().ok());
                it.next().flatten().map(|m| (m, it.next().flatten()))
            }
        };
        Ok(Self {
            name,
            family,
            unsigned,
            params,
        })
    }

    /// The column type for the change-event schema. `sample_scale` is the scale of a decimal
    /// value seen for this column, used when the type text carries no `(M,D)`: TiCDC formats a
    /// decimal with its column's scale, so every value of a column shows the same scale.
    pub fn column_type(&self, sample_scale: Option<u8>) -> ColumnType {
        match self.family {
            Family::Int if self.name == "bigint" && self.unsigned => ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
            Family::Int if matches!(self.name.as_str(), "bool" | "boolean") => ColumnType::Bool,
            Family::Int | Family::Year => ColumnType::Int,
            Family::Number if self.name == "bit" => ColumnType::Decimal {
                precision: 20,
                scale: 0,
            },
            Family::Number => ColumnType::Int,
            Family::Decimal => {
                let (precision, scale) = match self.params {
                    Some((m, d)) => (m.min(38) as u8, d.unwrap_or(0).min(38) as u8),
                    None => (38, sample_scale.unwrap_or(0)),
                };
                ColumnType::Decimal { precision, scale }
            }
            Family::Float => ColumnType::Float,
            Family::Text | Family::Json | Family::Time => ColumnType::String {
                max_length: match (self.family, self.params) {
                    (Family::Text, Some((m, _))) if self.name.ends_with("char") => Some(m),
                    _ => None,
                },
            },
            Family::Binary => ColumnType::Bytes,
            Family::Date => ColumnType::Date,
            Family::DateTime => ColumnType::Timestamp,
        }
    }

    /// Types one value as TiCDC's canal-json writes it.
    pub fn value(&self, text: &str) -> Result<Value, TypeError> {
        let bad = || TypeError::BadValue {
            ty: self.name.clone(),
            value: text.to_string(),
        };
        Ok(match self.family {
            Family::Int | Family::Year | Family::Number => match text.parse::<i64>() {
                Ok(i) => Value::Int(i),
                // BIGINT UNSIGNED and BIT(64) above i64::MAX stay exact as decimals.
                Err(_) => match text.parse::<u64>() {
                    Ok(u) => Value::Decimal(Decimal::new(i128::from(u), 0)),
                    Err(_) => return Err(bad()),
                },
            },
            Family::Decimal => Value::Decimal(Decimal::parse(text).map_err(|_| bad())?),
            Family::Float => Value::Float(text.parse::<f64>().map_err(|_| bad())?),
            Family::Text | Family::Json | Family::Time => Value::String(text.to_string()),
            Family::Binary => Value::Bytes(latin1_bytes(text).ok_or_else(bad)?),
            Family::Date => {
                Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?)
            }
            Family::DateTime => Value::Timestamp(parse_datetime(text).ok_or_else(bad)?),
        })
    }
}

/// TiCDC writes each byte of a binary value as the character with that code point
/// (ISO-8859-1); a character above U+00FF cannot come from bytes.
pub fn latin1_bytes(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// `2021-12-16 10:11:12` with an optional fraction of up to 6 digits.
pub fn parse_datetime(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// The scale a decimal text is written with (`"-12.340"` → 3).
pub fn written_scale(text: &str) -> Option<u8> {
    Some(text.split_once('.').map_or(0, |(_, f)| f.len()) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(t: &str) -> MysqlType {
        MysqlType::parse(t).unwrap()
    }

    #[test]
    fn parses_ticdc_and_canal_type_texts() {
        assert_eq!(ty("int").family, Family::Int);
        assert!(ty("bigint unsigned").unsigned);
        assert_eq!(ty("decimal(10, 4)").params, Some((10, Some(4))));
        assert_eq!(ty("varchar(16)").params, Some((16, None)));
        assert_eq!(ty("enum('a','b')").family, Family::Number);
        assert_eq!(ty("enum('a','b')").params, None);
        assert_eq!(ty("LONGBLOB").family, Family::Binary);
        assert!(matches!(
            MysqlType::parse("geometry"),
            Err(TypeError::Unknown(_))
        ));
    }

    #[test]
    fn types_values_exactly() {
        assert_eq!(
            ty("bigint").value("9223372036854775807"),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            ty("bigint unsigned").value("18446744073709551615"),
            Ok(Value::Decimal(Decimal::new(18446744073709551615, 0)))
        );
        assert_eq!(
            ty("decimal").value("-123.4560"),
            Ok(Value::Decimal(Decimal::new(-1234560, 4)))
        );
        assert_eq!(
            ty("datetime").value("2021-12-16 10:11:12.123456"),
            Ok(Value::Timestamp(
                parse_datetime("2021-12-16 10:11:12.123456").unwrap()
            ))
        );
        assert!(ty("int").value("12a").is_err());
        assert!(ty("date").value("2021-13-01").is_err());
    }

    #[test]
    fn binary_values_come_back_as_the_bytes_ticdc_encoded() {
        // The example from TiCDC's canal-json documentation, as JSON decodes it.
        let text: String =
            serde_json::from_str(r#""\u0005\u0007\n\u000f$2+cx\u003c\u0026ÿþ-7F""#).unwrap();
        assert_eq!(
            ty("varbinary").value(&text),
            Ok(Value::Bytes(vec![
                5, 7, 10, 15, 36, 50, 43, 99, 120, 60, 38, 255, 254, 45, 55, 70
            ]))
        );
        assert!(ty("blob").value("€").is_err(), "U+20AC is not a byte");
    }

    #[test]
    fn decimal_column_scale_comes_from_params_or_values() {
        assert_eq!(
            ty("decimal(10,4)").column_type(None),
            ColumnType::Decimal {
                precision: 10,
                scale: 4
            }
        );
        assert_eq!(
            ty("decimal").column_type(written_scale("1.250")),
            ColumnType::Decimal {
                precision: 38,
                scale: 3
            }
        );
    }
}
