//! Change events as Parquet files and back.
//!
//! A file holds events of one table at one schema version: envelope columns (`__op`,
//! `__source`, `__position`, ...) and then the row's own columns, typed from the
//! [`TableSchema`] where every value of the file fits the declared type (decimals as
//! `Decimal128` with their scale, dates as `Date32`, timestamps as microsecond `Timestamp`,
//! ...). A column whose values do not all fit (a value of another type, a timestamp with
//! nanoseconds, zone offsets that differ between rows, arrays) is written as text holding
//! each value's tagged JSON, and marked so in its field metadata; reading it back is exact.
//! The table schema itself travels in the file's key-value metadata, so a file is read
//! back into the same [`ChangeEvent`]s without any other input.

use crate::event::{
    ChangeEvent, ColumnType, Decimal, Operation, Position, TableSchema, Transaction, Value,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDate, Timelike, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::sync::Arc;

/// File metadata key holding the table schema (JSON).
pub const SCHEMA_KEY: &str = "syncmesh.table_schema";
/// Field metadata key marking a column written as tagged JSON values.
pub const ENCODING_KEY: &str = "syncmesh.encoding";
const VALUE_JSON: &str = "value-json";
/// Rows per record batch handed to the writer.
const CHUNK_ROWS: usize = 8192;

/// Envelope column names; row columns may not use them.
pub const ENVELOPE: [&str; 9] = [
    "__op",
    "__source",
    "__position",
    "__tx",
    "__commit_time",
    "__key",
    "__image",
    "__before",
    "__ddl",
];

/// One encoded data file.
pub struct EncodedFile {
    pub data: Bytes,
    pub rows: u64,
}

/// Why events could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    #[error(
        "table {table}: column `{column}` has the name of an envelope column; rename it in the source"
    )]
    Reserved { table: String, column: String },
    #[error("table {table}, event at {position}: the row has {got} values for {want} columns")]
    RowShape {
        table: String,
        position: String,
        got: usize,
        want: usize,
    },
    #[error("table {table}: {source}")]
    Write {
        table: String,
        source: parquet::errors::ParquetError,
    },
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}, row {row}, column `{column}`: {reason}")]
    Value {
        file: String,
        row: usize,
        column: String,
        reason: String,
    },
}

/// How one row column is stored in one file.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Bool,
    Int,
    Decimal { precision: u8, scale: u8 },
    Float,
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz(FixedOffset),
    Json,
}

impl Plan {
    fn field(&self, name: &str) -> Field {
        let dt = match self {
            Plan::Bool => DataType::Boolean,
            Plan::Int => DataType::Int64,
            Plan::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
            Plan::Float => DataType::Float64,
            Plan::Text | Plan::Json => DataType::Utf8,
            Plan::Bytes => DataType::Binary,
            Plan::Date => DataType::Date32,
            Plan::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Plan::TimestampTz(off) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(off.to_string().into()))
            }
        };
        let field = Field::new(name, dt, true);
        if *self == Plan::Json {
            field.with_metadata(HashMap::from([(ENCODING_KEY.into(), VALUE_JSON.into())]))
        } else {
            field
        }
    }

    /// The typed plan for a declared column type; `None`: tagged JSON.
    fn declared(ty: &ColumnType) -> Option<Plan> {
        Some(match ty {
            ColumnType::Bool => Plan::Bool,
            ColumnType::Int => Plan::Int,
            ColumnType::Decimal { precision, scale } => {
                let precision = if *precision == 0 || *precision > 38 {
                    38
                } else {
                    *precision
                };
                if *scale > precision {
                    return None;
                }
                Plan::Decimal {
                    precision,
                    scale: *scale,
                }
            }
            ColumnType::Float => Plan::Float,
            ColumnType::String { .. } => Plan::Text,
            ColumnType::Bytes => Plan::Bytes,
            ColumnType::Date => Plan::Date,
            ColumnType::Timestamp => Plan::Timestamp,
            // The offset is the first value's; decided in `fits`.
            ColumnType::TimestampTz => Plan::TimestampTz(FixedOffset::east_opt(0)?),
            ColumnType::Array(_) => return None,
        })
    }

    /// Whether `v` is stored exactly by this plan; may settle a zone offset.
    fn fits(&mut self, v: &Value, tz_seen: &mut bool) -> bool {
        match (self, v) {
            (_, Value::Null) => true,
            (Plan::Bool, Value::Bool(_))
            | (Plan::Int, Value::Int(_))
            | (Plan::Float, Value::Float(_))
            | (Plan::Text, Value::String(_))
            | (Plan::Bytes, Value::Bytes(_))
            | (Plan::Date, Value::Date(_)) => true,
            (Plan::Decimal { precision, scale }, Value::Decimal(d)) => {
                d.scale == *scale && d.unscaled.unsigned_abs() < 10u128.pow(u32::from(*precision))
            }
            (Plan::Timestamp, Value::Timestamp(t)) => t.nanosecond() % 1000 == 0,
            (Plan::TimestampTz(off), Value::TimestampTz(t)) => {
                if t.nanosecond() % 1000 != 0 {
                    return false;
                }
                if !*tz_seen {
                    // The zone must survive its text form in the Arrow type.
                    if off_text_roundtrips(t.offset()) {
                        *off = *t.offset();
                        *tz_seen = true;
                        return true;
                    }
                    return false;
                }
                *t.offset() == *off
            }
            _ => false,
        }
    }
}

fn off_text_roundtrips(off: &FixedOffset) -> bool {
    off.to_string().parse::<FixedOffset>().ok() == Some(*off)
}

/// The row image stored in the typed columns, and whether it is the after image.
fn image(e: &ChangeEvent) -> (Option<&[Value]>, Option<bool>) {
    match (&e.after, &e.before) {
        (Some(a), _) => (Some(a), Some(true)),
        (None, Some(b)) => (Some(b), Some(false)),
        (None, None) => (None, None),
    }
}

fn plans(schema: &TableSchema, events: &[Arc<ChangeEvent>]) -> Vec<Plan> {
    schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let Some(mut plan) = Plan::declared(&c.column_type) else {
                return Plan::Json;
            };
            let mut tz_seen = false;
            for e in events {
                if let (Some(row), _) = image(e)
                    && let Some(v) = row.get(i)
                    && !plan.fits(v, &mut tz_seen)
                {
                    return Plan::Json;
                }
            }
            plan
        })
        .collect()
}

fn opt_str<I: IntoIterator<Item = Option<String>>>(it: I) -> ArrayRef {
    Arc::new(it.into_iter().collect::<StringArray>())
}

fn column(plan: &Plan, rows: &[Option<&[Value]>], i: usize) -> Result<ArrayRef, String> {
    let vals = rows.iter().map(|r| r.and_then(|r| r.get(i)));
    Ok(match plan {
        Plan::Bool => Arc::new(
            vals.map(|v| match v {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            })
            .collect::<BooleanArray>(),
        ),
        Plan::Int => Arc::new(
            vals.map(|v| match v {
                Some(Value::Int(x)) => Some(*x),
                _ => None,
            })
            .collect::<Int64Array>(),
        ),
        Plan::Decimal { precision, scale } => Arc::new(
            vals.map(|v| match v {
                Some(Value::Decimal(d)) => Some(d.unscaled),
                _ => None,
            })
            .collect::<Decimal128Array>()
            .with_precision_and_scale(*precision, *scale as i8)
            .map_err(|e| e.to_string())?,
        ),
        Plan::Float => Arc::new(
            vals.map(|v| match v {
                Some(Value::Float(x)) => Some(*x),
                _ => None,
            })
            .collect::<Float64Array>(),
        ),
        Plan::Text => opt_str(vals.map(|v| match v {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        })),
        Plan::Bytes => Arc::new(
            vals.map(|v| match v {
                Some(Value::Bytes(b)) => Some(b.as_slice()),
                _ => None,
            })
            .collect::<BinaryArray>(),
        ),
        Plan::Date => Arc::new(
            vals.map(|v| match v {
                Some(Value::Date(d)) => Some((*d - epoch_day()).num_days() as i32),
                _ => None,
            })
            .collect::<Date32Array>(),
        ),
        Plan::Timestamp => Arc::new(
            vals.map(|v| match v {
                Some(Value::Timestamp(t)) => Some(t.and_utc().timestamp_micros()),
                _ => None,
            })
            .collect::<TimestampMicrosecondArray>(),
        ),
        Plan::TimestampTz(off) => Arc::new(
            vals.map(|v| match v {
                Some(Value::TimestampTz(t)) => Some(t.timestamp_micros()),
                _ => None,
            })
            .collect::<TimestampMicrosecondArray>()
            .with_timezone(off.to_string()),
        ),
        Plan::Json => opt_str(vals.map(|v| match v {
            None | Some(Value::Null) => None,
            Some(v) => serde_json::to_string(v).ok(),
        })),
    })
}

fn epoch_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn arrow_schema(schema: &TableSchema, plans: &[Plan]) -> Schema {
    let mut fields = vec![
        Field::new("__op", DataType::Utf8, false),
        Field::new("__source", DataType::Utf8, false),
        Field::new("__position", DataType::Utf8, false),
        Field::new("__tx", DataType::Utf8, true),
        Field::new(
            "__commit_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("__key", DataType::Utf8, false),
        Field::new("__image", DataType::Utf8, true),
        Field::new("__before", DataType::Utf8, true),
        Field::new("__ddl", DataType::Utf8, true),
    ];
    for (c, plan) in schema.columns.iter().zip(plans) {
        fields.push(plan.field(&c.name));
    }
    Schema::new(fields)
}

fn record_batch(
    schema: &Arc<Schema>,
    plans: &[Plan],
    events: &[Arc<ChangeEvent>],
) -> Result<RecordBatch, String> {
    let images: Vec<(Option<&[Value]>, Option<bool>)> = events.iter().map(|e| image(e)).collect();
    let mut cols: Vec<ArrayRef> = vec![
        opt_str(events.iter().map(|e| Some(e.op.code().to_string()))),
        opt_str(events.iter().map(|e| Some(e.source.to_string()))),
        opt_str(events.iter().map(|e| Some(json(&e.position)))),
        opt_str(events.iter().map(|e| e.transaction.as_ref().map(json))),
        Arc::new(
            events
                .iter()
                .map(|e| e.commit_time().map(|t| t.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        opt_str(events.iter().map(|e| {
            let key: Vec<serde_json::Value> = e.key().iter().map(|v| v.to_json()).collect();
            Some(serde_json::Value::Array(key).to_string())
        })),
        opt_str(
            images
                .iter()
                .map(|(_, after)| after.map(|a| if a { "after" } else { "before" }.to_string())),
        ),
        opt_str(events.iter().map(|e| match (&e.after, &e.before) {
            (Some(_), Some(b)) => Some(json(b)),
            _ => None,
        })),
        opt_str(events.iter().map(|e| e.ddl.clone())),
    ];
    let rows: Vec<Option<&[Value]>> = images.iter().map(|(r, _)| *r).collect();
    for (i, plan) in plans.iter().enumerate() {
        cols.push(column(plan, &rows, i)?);
    }
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
}

/// JSON of envelope parts; they are plain data with string map keys, so this cannot fail.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Writes `events` (one table, in order) as Parquet files of about `max_file_bytes` each;
/// a new file starts where the schema version changes.
pub fn encode(
    events: &[Arc<ChangeEvent>],
    max_file_bytes: usize,
) -> Result<Vec<EncodedFile>, ColumnarError> {
    let mut files = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let schema = &events[start].schema;
        let end = events[start..]
            .iter()
            .position(|e| !Arc::ptr_eq(&e.schema, schema) && e.schema != *schema)
            .map_or(events.len(), |n| start + n);
        encode_group(&events[start..end], max_file_bytes, &mut files)?;
        start = end;
    }
    Ok(files)
}

fn encode_group(
    events: &[Arc<ChangeEvent>],
    max_file_bytes: usize,
    files: &mut Vec<EncodedFile>,
) -> Result<(), ColumnarError> {
    let schema = &events[0].schema;
    let table = schema.table.to_string();
    if let Some(c) = schema
        .columns
        .iter()
        .find(|c| ENVELOPE.contains(&c.name.as_str()))
    {
        return Err(ColumnarError::Reserved {
            table,
            column: c.name.clone(),
        });
    }
    for e in events {
        if let (Some(row), _) = image(e)
            && row.len() != schema.columns.len()
        {
            return Err(ColumnarError::RowShape {
                table,
                position: e.position.to_string(),
                got: row.len(),
                want: schema.columns.len(),
            });
        }
    }
    let plans = plans(schema, events);
    let arrow = Arc::new(arrow_schema(schema, &plans));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SCHEMA_KEY.to_string(),
            serde_json::to_string(schema.as_ref()).unwrap_or_default(),
        )]))
        .build();
    let werr = |source| ColumnarError::Write {
        table: table.clone(),
        source,
    };
    let new_writer = || {
        ArrowWriter::try_new(
            Vec::with_capacity(1 << 20),
            arrow.clone(),
            Some(props.clone()),
        )
    };
    let mut writer = new_writer().map_err(werr)?;
    let mut rows = 0u64;
    for chunk in events.chunks(CHUNK_ROWS) {
        let batch = record_batch(&arrow, &plans, chunk)
            .map_err(|reason| werr(parquet::errors::ParquetError::General(reason)))?;
        writer.write(&batch).map_err(werr)?;
        rows += chunk.len() as u64;
        if writer.bytes_written() + writer.in_progress_size() >= max_file_bytes {
            let full = std::mem::replace(&mut writer, new_writer().map_err(werr)?);
            files.push(EncodedFile {
                data: Bytes::from(full.into_inner().map_err(werr)?),
                rows,
            });
            rows = 0;
        }
    }
    if rows > 0 {
        files.push(EncodedFile {
            data: Bytes::from(writer.into_inner().map_err(werr)?),
            rows,
        });
    }
    Ok(())
}

/// Reads a data file written by [`encode`] back into its events. `file` names it in errors.
pub fn decode(data: Bytes, file: &str) -> Result<Vec<ChangeEvent>, ColumnarError> {
    let rerr = |reason: String| ColumnarError::Read {
        file: file.to_string(),
        reason,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| rerr(e.to_string()))?;
    let schema_json = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == SCHEMA_KEY))
        .and_then(|k| k.value.clone())
        .ok_or_else(|| {
            rerr(format!(
                "no `{SCHEMA_KEY}` metadata: not a syncmesh snapshot file"
            ))
        })?;
    let schema: Arc<TableSchema> = Arc::new(
        serde_json::from_str(&schema_json).map_err(|e| rerr(format!("table schema: {e}")))?,
    );
    let reader = builder.build().map_err(|e| rerr(e.to_string()))?;
    let mut out = Vec::new();
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| rerr(e.to_string()))?;
        decode_batch(&batch, &schema, file, out.len(), &mut sources, &mut out)?;
    }
    Ok(out)
}

fn decode_batch(
    batch: &RecordBatch,
    schema: &Arc<TableSchema>,
    file: &str,
    first_row: usize,
    sources: &mut HashMap<String, Arc<str>>,
    out: &mut Vec<ChangeEvent>,
) -> Result<(), ColumnarError> {
    let verr = |row: usize, column: &str, reason: String| ColumnarError::Value {
        file: file.to_string(),
        row,
        column: column.to_string(),
        reason,
    };
    let text = |name: &'static str| {
        text_column(batch, name).ok_or_else(|| verr(first_row, name, "missing or not text".into()))
    };
    let (op_col, source_col, position_col, tx_col, image_col, before_col, ddl_col) = (
        text("__op")?,
        text("__source")?,
        text("__position")?,
        text("__tx")?,
        text("__image")?,
        text("__before")?,
        text("__ddl")?,
    );
    let mut columns = Vec::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let idx = batch
            .schema()
            .index_of(&c.name)
            .map_err(|e| verr(first_row, &c.name, e.to_string()))?;
        let json = batch
            .schema()
            .field(idx)
            .metadata()
            .get(ENCODING_KEY)
            .map(String::as_str)
            == Some(VALUE_JSON);
        columns.push((c.name.as_str(), batch.column(idx).clone(), json));
    }
    for r in 0..batch.num_rows() {
        let row_no = first_row + r;
        let op = match op_col.value(r) {
            "c" => Operation::Insert,
            "u" => Operation::Update,
            "d" => Operation::Delete,
            "r" => Operation::Read,
            "ddl" => Operation::Ddl,
            other => return Err(verr(row_no, "__op", format!("unknown operation `{other}`"))),
        };
        let src = source_col.value(r);
        let src = sources
            .entry(src.to_string())
            .or_insert_with(|| Arc::from(src))
            .clone();
        let position: Position = serde_json::from_str(position_col.value(r))
            .map_err(|e| verr(row_no, "__position", e.to_string()))?;
        let transaction: Option<Transaction> = get(tx_col, r)
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| verr(row_no, "__tx", e.to_string()))?;
        let before_json: Option<Vec<Value>> = get(before_col, r)
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| verr(row_no, "__before", e.to_string()))?;
        let row = match get(image_col, r) {
            None => None,
            Some(_) => {
                let mut vals = Vec::with_capacity(columns.len());
                for (name, col, json) in &columns {
                    vals.push(
                        value_at(col, r, *json).map_err(|reason| verr(row_no, name, reason))?,
                    );
                }
                Some(vals)
            }
        };
        let (after, before) = match get(image_col, r) {
            Some("after") => (row, before_json),
            Some("before") => (None, row),
            None => (None, None),
            Some(other) => {
                return Err(verr(row_no, "__image", format!("unknown image `{other}`")));
            }
        };
        out.push(ChangeEvent {
            source: src,
            position,
            transaction,
            schema: schema.clone(),
            op,
            before,
            after,
            ddl: get(ddl_col, r).map(str::to_string),
        });
    }
    Ok(())
}

fn text_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
}

/// Row `r` of a text column, `None` when null.
fn get(a: &StringArray, r: usize) -> Option<&str> {
    (!a.is_null(r)).then(|| a.value(r))
}

fn value_at(col: &ArrayRef, r: usize, json: bool) -> Result<Value, String> {
    if col.is_null(r) {
        return Ok(Value::Null);
    }
    if json {
        let s = col
            .as_string_opt::<i32>()
            .ok_or("tagged JSON column is not text")?;
        return serde_json::from_str(s.value(r)).map_err(|e| e.to_string());
    }
    Ok(match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(r)),
        DataType::Int64 => Value::Int(col.as_primitive::<Int64Type>().value(r)),
        DataType::Float64 => Value::Float(col.as_primitive::<Float64Type>().value(r)),
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(r).to_string()),
        DataType::Binary => Value::Bytes(col.as_binary::<i32>().value(r).to_vec()),
        DataType::Decimal128(_, scale) => Value::Decimal(Decimal::new(
            col.as_primitive::<Decimal128Type>().value(r),
            u8::try_from(*scale).map_err(|_| format!("negative decimal scale {scale}"))?,
        )),
        DataType::Date32 => {
            let days = col.as_primitive::<Date32Type>().value(r);
            Value::Date(
                epoch_day()
                    .checked_add_signed(chrono::Duration::days(i64::from(days)))
                    .ok_or_else(|| format!("date {days} days from 1970 is out of range"))?,
            )
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let micros = col.as_primitive::<TimestampMicrosecondType>().value(r);
            let t = DateTime::<Utc>::from_timestamp_micros(micros)
                .ok_or_else(|| format!("timestamp {micros} µs is out of range"))?;
            match tz {
                None => Value::Timestamp(t.naive_utc()),
                Some(tz) => {
                    let off: FixedOffset = tz
                        .parse()
                        .map_err(|_| format!("zone `{tz}` is not a fixed offset"))?;
                    Value::TimestampTz(t.with_timezone(&off))
                }
            }
        }
        other => return Err(format!("unexpected column type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Column, TableId};
    use chrono::NaiveDateTime;

    fn col(name: &str, column_type: ColumnType) -> Column {
        Column {
            name: name.into(),
            column_type,
            nullable: true,
        }
    }

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            table: TableId::new("bank", "every_type"),
            version: 3,
            columns: vec![
                col("id", ColumnType::Int),
                col("flag", ColumnType::Bool),
                col(
                    "amount",
                    ColumnType::Decimal {
                        precision: 12,
                        scale: 2,
                    },
                ),
                col("ratio", ColumnType::Float),
                col(
                    "name",
                    ColumnType::String {
                        max_length: Some(40),
                    },
                ),
                col("blob", ColumnType::Bytes),
                col("day", ColumnType::Date),
                col("at", ColumnType::Timestamp),
                col("at_tz", ColumnType::TimestampTz),
                col("items", ColumnType::Array(Box::new(ColumnType::Int))),
                // Declared decimal(5,2) but a value with another scale: tagged JSON.
                col(
                    "odd",
                    ColumnType::Decimal {
                        precision: 5,
                        scale: 2,
                    },
                ),
            ],
            primary_key: vec![0],
        })
    }

    fn ts(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn row(id: i64, odd: Value) -> Vec<Value> {
        let off = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        vec![
            Value::Int(id),
            Value::Bool(id % 2 == 0),
            Value::Decimal(Decimal::parse("-12345678.90").unwrap()),
            Value::Float(0.1 + id as f64),
            Value::String(format!("naïve ☃ {id}")),
            Value::Bytes(vec![0, 255, id as u8]),
            Value::Date(NaiveDate::from_ymd_opt(1601, 12, 31).unwrap()),
            Value::Timestamp(ts("9999-12-31 23:59:59.999999")),
            Value::TimestampTz(
                ts("2026-03-29 01:30:00.123456")
                    .and_utc()
                    .with_timezone(&off),
            ),
            Value::Array(vec![Value::Int(1), Value::Null, Value::String("x".into())]),
            odd,
        ]
    }

    fn event(
        schema: &Arc<TableSchema>,
        n: u32,
        op: Operation,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Arc<ChangeEvent> {
        Arc::new(ChangeEvent {
            source: Arc::from(if n.is_multiple_of(2) { "tidb" } else { "other" }),
            position: Position::tidb(1000 + u64::from(n), n),
            transaction: (!n.is_multiple_of(3)).then(|| Transaction {
                id: format!("tx-{n}"),
                commit_time: (n % 3 == 1)
                    .then(|| DateTime::<Utc>::from_timestamp(1_780_000_000, 123_456_789).unwrap()),
            }),
            schema: schema.clone(),
            op,
            before,
            after,
            ddl: (op == Operation::Ddl).then(|| "ALTER TABLE t ADD c INT".into()),
        })
    }

    #[test]
    fn every_value_type_and_operation_survives_a_round_trip() {
        let s = schema();
        let nulls = vec![Value::Null; s.columns.len()];
        let events = vec![
            event(
                &s,
                1,
                Operation::Insert,
                None,
                Some(row(1, Value::Decimal(Decimal::new(5, 3)))),
            ),
            event(
                &s,
                2,
                Operation::Update,
                Some(row(2, Value::Null)),
                Some(row(2, Value::Decimal(Decimal::new(-5, 2)))),
            ),
            event(&s, 3, Operation::Update, None, Some(nulls.clone())),
            event(&s, 4, Operation::Delete, Some(row(4, Value::Null)), None),
            event(&s, 5, Operation::Read, None, Some(row(5, Value::Null))),
            event(&s, 6, Operation::Ddl, None, None),
        ];
        let files = encode(&events, 64 << 20).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].rows, events.len() as u64);
        let back = decode(files[0].data.clone(), "t.parquet").unwrap();
        let want: Vec<ChangeEvent> = events.iter().map(|e| (**e).clone()).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn declared_types_become_typed_columns_and_misfits_tagged_json() {
        let s = schema();
        let events = vec![event(
            &s,
            1,
            Operation::Insert,
            None,
            Some(row(1, Value::Int(7))),
        )];
        let files = encode(&events, 64 << 20).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(files[0].data.clone()).unwrap();
        let arrow = reader.schema().clone();
        let ty = |n: &str| arrow.field_with_name(n).unwrap().data_type().clone();
        assert_eq!(ty("id"), DataType::Int64);
        assert_eq!(ty("amount"), DataType::Decimal128(12, 2));
        assert_eq!(ty("day"), DataType::Date32);
        assert_eq!(ty("at"), DataType::Timestamp(TimeUnit::Microsecond, None));
        assert_eq!(
            ty("at_tz"),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+05:30".into()))
        );
        assert_eq!(ty("blob"), DataType::Binary);
        for json in ["items", "odd"] {
            assert_eq!(
                arrow
                    .field_with_name(json)
                    .unwrap()
                    .metadata()
                    .get(ENCODING_KEY),
                Some(&VALUE_JSON.to_string()),
                "{json}"
            );
        }
        let meta = reader.metadata().row_group(0).column(0).compression();
        assert!(matches!(meta, Compression::ZSTD(_)), "{meta:?}");
    }

    #[test]
    fn files_are_cut_by_size_and_at_schema_changes() {
        let s = schema();
        let mut s2 = (*s).clone();
        s2.version += 1;
        let s2 = Arc::new(s2);
        let mut events: Vec<_> = (0..20_000)
            .map(|i| {
                event(
                    &s,
                    i,
                    Operation::Insert,
                    None,
                    Some(row(i64::from(i), Value::Null)),
                )
            })
            .collect();
        events.push(event(
            &s2,
            1,
            Operation::Insert,
            None,
            Some(row(1, Value::Null)),
        ));
        let files = encode(&events, 256 << 10).unwrap();
        assert!(files.len() > 2, "{} files", files.len());
        assert_eq!(
            files.iter().map(|f| f.rows).sum::<u64>(),
            events.len() as u64
        );
        let last = decode(files.last().unwrap().data.clone(), "last").unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].schema.version, s2.version);
        let all: Vec<ChangeEvent> = files
            .iter()
            .flat_map(|f| decode(f.data.clone(), "f").unwrap())
            .collect();
        assert_eq!(all.len(), events.len());
        assert_eq!(all[12_345], *events[12_345]);
    }

    #[test]
    fn reserved_names_and_misshapen_rows_are_refused_with_their_table() {
        let mut s = (*schema()).clone();
        s.columns[1].name = "__op".into();
        let s = Arc::new(s);
        let e = event(&s, 1, Operation::Insert, None, Some(row(1, Value::Null)));
        let err = encode(&[e], 1 << 20).err().unwrap().to_string();
        assert!(
            err.contains("bank.every_type") && err.contains("__op"),
            "{err}"
        );
        let s = schema();
        let e = event(&s, 9, Operation::Insert, None, Some(vec![Value::Int(1)]));
        let err = encode(&[e], 1 << 20).err().unwrap().to_string();
        assert!(
            err.contains("1 values for 11 columns") && err.contains("1009"),
            "{err}"
        );
    }

    #[test]
    fn a_foreign_file_is_refused_by_name() {
        let err = decode(Bytes::from_static(b"PAR1 not really"), "x/y.parquet")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("x/y.parquet"), "{err}");
    }
}
