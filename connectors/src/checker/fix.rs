//! The SQL that makes the sink equal to the source for one differing row: `INSERT` a missing
//! row, `DELETE` an extra one, `UPDATE` the differing columns of a changed one, with literal
//! values in the sink's dialect (so an operator can read, review and run it as it is).

use super::canonical::{hex, rescale_round};
use super::sql::Engine;
use crate::event::{ColumnType, Value};
use crate::sinks::table::TableName;
use chrono::Utc;

/// The sink table and its columns (names on the sink, logical types) the statements address.
#[derive(Debug, Clone)]
pub struct FixTarget {
    pub engine: Engine,
    pub table: TableName,
    pub columns: Vec<(String, ColumnType)>,
    /// Indexes into `columns`, in key order.
    pub key: Vec<usize>,
}

impl FixTarget {
    fn q(&self, i: usize) -> String {
        self.engine.quote_ident(&self.columns[i].0)
    }

    fn lit(&self, i: usize, value: &Value) -> String {
        literal(self.engine, &self.columns[i].1, value)
    }

    fn where_key(&self, row: &[Value]) -> String {
        self.key
            .iter()
            .map(|&i| format!("{} = {}", self.q(i), self.lit(i, &row[i])))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `INSERT INTO t (…) VALUES (…)` of the source row.
    pub fn insert(&self, row: &[Value]) -> String {
        let cols = (0..self.columns.len())
            .map(|i| self.q(i))
            .collect::<Vec<_>>()
            .join(", ");
        let values = row
            .iter()
            .enumerate()
            .map(|(i, v)| self.lit(i, v))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({cols}) VALUES ({values})",
            self.engine.quote_table(&self.table)
        )
    }

    /// `DELETE FROM t WHERE <key>` of the sink row.
    pub fn delete(&self, row: &[Value]) -> String {
        format!(
            "DELETE FROM {} WHERE {}",
            self.engine.quote_table(&self.table),
            self.where_key(row)
        )
    }

    /// `UPDATE t SET <columns> WHERE <key>`, setting `columns` to the source row's values.
    pub fn update(&self, source_row: &[Value], columns: &[usize]) -> String {
        let set = columns
            .iter()
            .map(|&i| format!("{} = {}", self.q(i), self.lit(i, &source_row[i])))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {} SET {set} WHERE {}",
            self.engine.quote_table(&self.table),
            self.where_key(source_row)
        )
    }
}

/// `value` as a SQL literal of a column of logical type `ty` in `engine`.
pub fn literal(engine: Engine, ty: &ColumnType, value: &Value) -> String {
    let mysql = matches!(engine, Engine::MySql | Engine::StarRocks);
    match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => match engine {
            Engine::Oracle => if *b { "1" } else { "0" }.into(),
            _ => if *b { "TRUE" } else { "FALSE" }.into(),
        },
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => match ty {
            ColumnType::Decimal { scale, .. } => rescale_round(*d, *scale).to_string(),
            _ => d.to_string(),
        },
        Value::Float(f) if f.is_finite() => format!("{f:e}"),
        Value::Float(f) => quote(engine, &f.to_string()),
        Value::String(s) => quote(engine, s),
        Value::Bytes(b) => match engine {
            Engine::Postgres => format!("'\\x{}'::bytea", hex(b)),
            Engine::Oracle => format!("HEXTORAW('{}')", hex(b)),
            _ => format!("X'{}'", hex(b)),
        },
        Value::Date(d) => {
            let text = d.format("%Y-%m-%d");
            if mysql || engine == Engine::Sqlite {
                format!("'{text}'")
            } else {
                format!("DATE '{text}'")
            }
        }
        Value::Timestamp(t) => {
            let text = t.format("%Y-%m-%d %H:%M:%S%.6f");
            match (engine, ty) {
                (Engine::Postgres, ColumnType::TimestampTz) => {
                    format!("TIMESTAMPTZ '{text}+00:00'")
                }
                (Engine::Postgres | Engine::Oracle, _) => format!("TIMESTAMP '{text}'"),
                _ => format!("'{text}'"),
            }
        }
        Value::TimestampTz(t) => {
            let utc = t.with_timezone(&Utc).naive_utc();
            let text = utc.format("%Y-%m-%d %H:%M:%S%.6f");
            match engine {
                Engine::Postgres => format!("TIMESTAMPTZ '{text}+00:00'"),
                Engine::Oracle => format!("TIMESTAMP '{text} +00:00'"),
                Engine::Sqlite => format!("'{}'", utc.format("%Y-%m-%dT%H:%M:%S%.6f+00:00")),
                _ => format!("'{text}'"),
            }
        }
        Value::Array(_) => quote(engine, &value.to_json().to_string()),
    }
}

/// A string literal: quotes doubled everywhere, backslashes doubled where the server reads
/// them as escapes (MySQL, StarRocks).
fn quote(engine: Engine, s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if matches!(engine, Engine::MySql | Engine::StarRocks) => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decimal;
    use chrono::{DateTime, NaiveDate};

    fn target(engine: Engine) -> FixTarget {
        FixTarget {
            engine,
            table: TableName::new("accounts"),
            columns: vec![
                ("id".into(), ColumnType::Int),
                ("name".into(), ColumnType::String { max_length: None }),
                (
                    "balance".into(),
                    ColumnType::Decimal {
                        precision: 12,
                        scale: 2,
                    },
                ),
                ("photo".into(), ColumnType::Bytes),
                ("at".into(), ColumnType::TimestampTz),
            ],
            key: vec![0],
        }
    }

    fn row() -> Vec<Value> {
        vec![
            Value::Int(7),
            Value::String("O'Brien \\ é".into()),
            Value::Decimal(Decimal::parse("1.5").unwrap()),
            Value::Bytes(vec![0xde, 0xad]),
            Value::TimestampTz(
                DateTime::parse_from_rfc3339("2024-01-02T03:04:05.25+01:00").unwrap(),
            ),
        ]
    }

    #[test]
    fn statements_per_dialect() {
        assert_eq!(
            target(Engine::MySql).insert(&row()),
            "INSERT INTO `accounts` (`id`, `name`, `balance`, `photo`, `at`) VALUES \
             (7, 'O''Brien \\\\ é', 1.50, X'dead', '2024-01-02 02:04:05.250000')"
        );
        assert_eq!(
            target(Engine::Postgres).update(&row(), &[1, 3, 4]),
            "UPDATE \"accounts\" SET \"name\" = 'O''Brien \\ é', \"photo\" = '\\xdead'::bytea, \
             \"at\" = TIMESTAMPTZ '2024-01-02 02:04:05.250000+00:00' WHERE \"id\" = 7"
        );
        assert_eq!(
            target(Engine::Oracle).delete(&row()),
            "DELETE FROM \"accounts\" WHERE \"id\" = 7"
        );
        assert_eq!(
            literal(
                Engine::Sqlite,
                &ColumnType::Date,
                &Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
            ),
            "'2024-02-29'"
        );
        assert_eq!(
            literal(Engine::StarRocks, &ColumnType::Int, &Value::Null),
            "NULL"
        );
    }
}
