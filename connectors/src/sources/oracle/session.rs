//! The seam between the connector and Oracle: run a statement or PL/SQL block, fetch rows of
//! named text columns. Every statement the connector issues starts with a
//! `/* syncmesh:LABEL */` comment, so a DBA can find them in `V$SQL` and a recorded session
//! can answer them by label.

use std::collections::HashMap;

/// A bind value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Int(u64),
    Text(String),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Int(i) => write!(f, "{i}"),
            Bind::Text(t) => f.write_str(t),
        }
    }
}

/// Rows of named columns, every value as text (numbers as digits, dates in the session's
/// NLS format) or `None` for NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn index(&self) -> HashMap<String, usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_ascii_uppercase(), i))
            .collect()
    }

    /// Iterates rows as name → value lookups.
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        let index = std::sync::Arc::new(self.index());
        self.rows.iter().map(move |values| RowRef {
            index: index.clone(),
            values,
        })
    }
}

/// One row of `Rows`.
pub struct RowRef<'a> {
    index: std::sync::Arc<HashMap<String, usize>>,
    values: &'a [Option<String>],
}

impl<'a> RowRef<'a> {
    pub fn get(&self, column: &str) -> Option<&'a str> {
        let values: &'a [Option<String>] = self.values;
        self.index
            .get(column)
            .and_then(|i| values.get(*i))
            .and_then(|v| v.as_deref())
    }

    pub fn text(&self, column: &str) -> String {
        self.get(column).unwrap_or_default().to_string()
    }

    pub fn number(&self, column: &str) -> Option<u64> {
        self.get(column).and_then(|v| v.trim().parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// An error the database returned.
    #[error("ORA-{code:05}: {message}")]
    Oracle { code: u32, message: String },
    /// The connection failed or was lost.
    #[error("connection: {0}")]
    Connection(String),
}

impl SessionError {
    pub fn ora(&self) -> Option<u32> {
        match self {
            SessionError::Oracle { code, .. } => Some(*code),
            SessionError::Connection(_) => None,
        }
    }
}

/// A session on one Oracle database.
#[async_trait::async_trait]
pub trait OracleSession: Send {
    /// Runs a statement or PL/SQL block with named binds (`:name`).
    async fn execute(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<(), SessionError>;
    /// Runs a query and returns all its rows.
    async fn query(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<Rows, SessionError>;
}

/// The label of a statement (`/* syncmesh:LABEL */ ...`).
pub fn label(sql: &str) -> Option<&str> {
    let rest = sql.trim_start().strip_prefix("/* syncmesh:")?;
    rest.split_once(" */").map(|(l, _)| l)
}
