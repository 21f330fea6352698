//! One row of `V$LOGMNR_CONTENTS`, read from the database or from a CSV export (SQL*Plus
//! `SET MARKUP CSV ON` or SQLcl `SET SQLFORMAT CSV`: a header row with Oracle's column names).

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `OPERATION_CODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpCode {
    Insert,
    Delete,
    Update,
    Ddl,
    Start,
    Commit,
    Rollback,
    /// Anything else (LOB operations, `SELECT_FOR_UPDATE`, internal or unsupported rows).
    Other(i32),
}

impl OpCode {
    pub fn from_code(code: i32) -> Self {
        match code {
            1 => OpCode::Insert,
            2 => OpCode::Delete,
            3 => OpCode::Update,
            5 => OpCode::Ddl,
            6 => OpCode::Start,
            7 => OpCode::Commit,
            36 => OpCode::Rollback,
            other => OpCode::Other(other),
        }
    }

    pub fn code(self) -> i32 {
        match self {
            OpCode::Insert => 1,
            OpCode::Delete => 2,
            OpCode::Update => 3,
            OpCode::Ddl => 5,
            OpCode::Start => 6,
            OpCode::Commit => 7,
            OpCode::Rollback => 36,
            OpCode::Other(c) => c,
        }
    }

    pub fn is_dml(self) -> bool {
        matches!(self, OpCode::Insert | OpCode::Delete | OpCode::Update)
    }
}

/// The columns the miner selects, in this order (also the CSV header the replay tool needs).
pub const COLUMNS: &[&str] = &[
    "SCN",
    "START_SCN",
    "COMMIT_SCN",
    "TIMESTAMP",
    "COMMIT_TIMESTAMP",
    "XID",
    "OPERATION_CODE",
    "SQL_REDO",
    "CSF",
    "ROLLBACK",
    "RS_ID",
    "SSN",
    "ROW_ID",
    "SEG_OWNER",
    "TABLE_NAME",
    "THREAD#",
    "INFO",
];

/// One `V$LOGMNR_CONTENTS` row, owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRow {
    pub scn: u64,
    pub start_scn: Option<u64>,
    pub commit_scn: Option<u64>,
    pub timestamp: Option<NaiveDateTime>,
    pub commit_timestamp: Option<NaiveDateTime>,
    pub xid: String,
    pub op: OpCode,
    pub sql_redo: String,
    /// `CSF = 1`: `sql_redo` continues in the next row of the same redo record.
    pub csf: bool,
    /// `ROLLBACK = 1`: this row undoes an earlier change of its transaction (same `ROW_ID`).
    pub rollback: bool,
    pub rs_id: String,
    pub ssn: u64,
    pub row_id: String,
    pub seg_owner: String,
    pub table_name: String,
    pub thread: u16,
    pub info: String,
    /// Where the row came from, for error messages: its 1-based number in the fetch or the
    /// CSV export, and its CSV line (0 when not read from a file).
    #[serde(default)]
    pub row: u64,
    #[serde(default)]
    pub line: u64,
}

impl ContentRow {
    /// `row 12 (line 14), SCN 1001, XID 0A00...`: where a problem was found.
    pub fn locator(&self) -> String {
        let mut s = String::new();
        if self.row > 0 {
            s.push_str(&format!("row {}", self.row));
            if self.line > 0 {
                s.push_str(&format!(" (line {})", self.line));
            }
            s.push_str(", ");
        }
        s.push_str(&format!("SCN {}, XID {}", self.scn, self.xid));
        if !self.rs_id.is_empty() {
            s.push_str(&format!(", RS_ID {} SSN {}", self.rs_id.trim(), self.ssn));
        }
        s
    }
}

/// A column of a row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct ColumnError {
    pub column: &'static str,
    pub reason: String,
}

fn col_err(column: &'static str, reason: impl Into<String>) -> ColumnError {
    ColumnError {
        column,
        reason: reason.into(),
    }
}

/// Date masks tried for `TIMESTAMP` / `COMMIT_TIMESTAMP`: the NLS format the miner sets, then
/// the defaults exports commonly carry.
const DATE_MASKS: &[&str] = &[
    "YYYY-MM-DD HH24:MI:SS",
    "YYYY-MM-DD\"T\"HH24:MI:SS",
    "DD-MON-RR HH24:MI:SS",
    "DD-MON-RR",
    "DD-MON-YYYY HH24:MI:SS",
    "YYYY-MM-DD",
];

/// Reads a `DATE` column as exported.
pub fn parse_date(text: &str) -> Option<NaiveDateTime> {
    DATE_MASKS
        .iter()
        .find_map(|mask| super::values::read_datetime(text, mask).ok())
}

impl ContentRow {
    /// Builds a row from named column values (`None` or empty is SQL NULL). Column names are
    /// matched case-insensitively; `THREAD#`, `SEG_OWNER`, `TABLE_NAME`, `INFO`, `RS_ID`,
    /// `SSN`, `ROW_ID`, `CSF` and `ROLLBACK` may be absent (single-instance exports).
    pub fn from_columns<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Self, ColumnError> {
        let text = |c: &'static str| get(c).map(str::trim).filter(|s| !s.is_empty());
        let raw = |c: &'static str| get(c).filter(|s| !s.is_empty()).unwrap_or("");
        let num = |c: &'static str| -> Result<Option<u64>, ColumnError> {
            text(c)
                .map(|t| {
                    t.parse::<u64>()
                        .map_err(|_| col_err(c, format!("`{t}` is not a whole number")))
                })
                .transpose()
        };
        let date = |c: &'static str| -> Result<Option<NaiveDateTime>, ColumnError> {
            text(c)
                .map(|t| parse_date(t).ok_or_else(|| col_err(c, format!("`{t}` is not a date"))))
                .transpose()
        };
        let flag = |c: &'static str| -> Result<bool, ColumnError> {
            match text(c) {
                None | Some("0") => Ok(false),
                Some("1") => Ok(true),
                Some(t) => Err(col_err(c, format!("`{t}` is neither 0 nor 1"))),
            }
        };
        let scn = num("SCN")?.ok_or_else(|| col_err("SCN", "is empty"))?;
        let code = text("OPERATION_CODE").ok_or_else(|| col_err("OPERATION_CODE", "is empty"))?;
        let code = code
            .parse::<i32>()
            .map_err(|_| col_err("OPERATION_CODE", format!("`{code}` is not a number")))?;
        let thread = match text("THREAD#") {
            None => 1,
            Some(t) => t
                .parse::<u16>()
                .map_err(|_| col_err("THREAD#", format!("`{t}` is not a thread number")))?,
        };
        Ok(Self {
            scn,
            start_scn: num("START_SCN")?,
            commit_scn: num("COMMIT_SCN")?,
            timestamp: date("TIMESTAMP")?,
            commit_timestamp: date("COMMIT_TIMESTAMP")?,
            xid: text("XID").unwrap_or("").to_ascii_uppercase(),
            op: OpCode::from_code(code),
            sql_redo: raw("SQL_REDO").to_string(),
            csf: flag("CSF")?,
            rollback: flag("ROLLBACK")?,
            rs_id: text("RS_ID").unwrap_or("").to_string(),
            ssn: num("SSN")?.unwrap_or(0),
            row_id: text("ROW_ID").unwrap_or("").to_string(),
            seg_owner: text("SEG_OWNER").unwrap_or("").to_string(),
            table_name: text("TABLE_NAME").unwrap_or("").to_string(),
            thread,
            info: text("INFO").unwrap_or("").to_string(),
            row: 0,
            line: 0,
        })
    }

    /// A rough in-memory size, for the transaction buffer's accounting.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.sql_redo.len()
            + self.xid.len()
            + self.rs_id.len()
            + self.row_id.len()
            + self.seg_owner.len()
            + self.table_name.len()
            + self.info.len()
    }
}

/// A CSV row that could not be read: its 1-based data row number and CSV line.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the header has no {column} column (found: {found})")]
    MissingColumn {
        path: String,
        column: &'static str,
        found: String,
    },
    #[error("{path}: row {row} (line {line}): {message}")]
    Row {
        path: String,
        row: u64,
        line: u64,
        message: String,
    },
}

/// Reads a `V$LOGMNR_CONTENTS` CSV export row by row.
pub struct ContentsCsv {
    path: String,
    reader: csv::Reader<std::fs::File>,
    index: Vec<(&'static str, Option<usize>)>,
    record: csv::StringRecord,
    row: u64,
}

impl ContentsCsv {
    pub fn open(path: &Path) -> Result<Self, CsvError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| CsvError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
        let headers = reader
            .headers()
            .map_err(|e| CsvError::Row {
                path: shown.clone(),
                row: 0,
                line: 1,
                message: e.to_string(),
            })?
            .clone();
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().trim_matches('"').eq_ignore_ascii_case(name))
        };
        let mut index = Vec::with_capacity(COLUMNS.len());
        for column in COLUMNS {
            let at = find(column);
            if at.is_none() && matches!(*column, "SCN" | "XID" | "OPERATION_CODE" | "SQL_REDO") {
                return Err(CsvError::MissingColumn {
                    path: shown,
                    column,
                    found: headers.iter().collect::<Vec<_>>().join(","),
                });
            }
            index.push((*column, at));
        }
        Ok(Self {
            path: shown,
            reader,
            index,
            record: csv::StringRecord::new(),
            row: 0,
        })
    }

    /// The next row with its 1-based row number and CSV line; `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<(u64, u64, ContentRow), CsvError>> {
        // The reader stops on the last line of the record it read: the next starts on the line
        // after it (a quoted SQL_REDO may span lines).
        let start_line = self.reader.position().line() + 1;
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => {
                self.row += 1;
                let line = e.position().map_or(start_line, |p| p.line());
                Some(Err(CsvError::Row {
                    path: self.path.clone(),
                    row: self.row,
                    line,
                    message: e.to_string(),
                }))
            }
            Ok(true) => {
                self.row += 1;
                let line = start_line;
                let record = &self.record;
                let index = &self.index;
                let got = ContentRow::from_columns(|c| {
                    index
                        .iter()
                        .find(|(name, _)| *name == c)
                        .and_then(|(_, at)| at.and_then(|i| record.get(i)))
                });
                let row = self.row;
                Some(
                    got.map(|mut r| {
                        r.row = row;
                        r.line = line;
                        (row, line, r)
                    })
                    .map_err(|e| CsvError::Row {
                        path: self.path.clone(),
                        row: self.row,
                        line,
                        message: e.to_string(),
                    }),
                )
            }
        }
    }
}
