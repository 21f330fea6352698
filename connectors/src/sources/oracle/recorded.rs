//! A recorded Oracle session: answers the connector's labelled statements from a YAML file
//! and a `V$LOGMNR_CONTENTS` CSV export, the way a database holding that redo would. It is
//! how the tests (and a DBA reproducing a problem) run the connector without a database.
//!
//! ```yaml
//! contents: contents.csv        # rows LogMiner returns; each window gets SCN start..=end
//! answers:                      # label (or `label:bind.bind`) -> rows; same answer each call
//!   database: [{LOG_MODE: ARCHIVELOG, SUPPLEMENTAL_LOG_DATA_MIN: "YES", ...}]
//! sequences:                    # label -> successive answers; the last one repeats
//!   current_scn: [[{CURRENT_SCN: 1012}], [{CURRENT_SCN: 1031}]]
//! failures:                     # label -> ORA codes raised by its first calls, in order
//!   start_logmnr: [1291]
//! ```

use super::contents::COLUMNS;
use super::session::{Bind, OracleSession, Rows, SessionError, label};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

type RowMap = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    #[serde(default)]
    pub contents: Option<String>,
    #[serde(default)]
    pub answers: BTreeMap<String, Vec<RowMap>>,
    #[serde(default)]
    pub sequences: BTreeMap<String, Vec<Vec<RowMap>>>,
    #[serde(default)]
    pub failures: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The recorded session. Clones share the call log and the consumed answers.
#[derive(Clone)]
pub struct RecordedSession {
    recording: Arc<Recording>,
    contents: Arc<Vec<(u64, Vec<Option<String>>)>>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    seq_pos: HashMap<String, usize>,
    fail_pos: HashMap<String, usize>,
}

fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn rows_of(maps: &[RowMap]) -> Rows {
    let mut columns: Vec<String> = Vec::new();
    for m in maps {
        for k in m.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = maps
        .iter()
        .map(|m| columns.iter().map(|c| m.get(c).and_then(text)).collect())
        .collect();
    Rows { columns, rows }
}

impl RecordedSession {
    /// Loads `session.yaml`; `contents` is relative to its directory.
    pub fn load(path: &Path) -> Result<Self, RecordingError> {
        let bad = |reason: String| RecordingError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let text_in = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let recording: Recording =
            serde_saphyr::from_str(&text_in).map_err(|e| bad(e.to_string()))?;
        let mut contents = Vec::new();
        if let Some(csv_name) = &recording.contents {
            let csv_path = path.parent().unwrap_or(Path::new(".")).join(csv_name);
            let mut reader = csv::Reader::from_path(&csv_path)
                .map_err(|e| bad(format!("{}: {e}", csv_path.display())))?;
            let headers = reader
                .headers()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(|h| h.trim().to_ascii_uppercase())
                .collect::<Vec<_>>();
            for (n, record) in reader.records().enumerate() {
                let record = record.map_err(|e| bad(format!("{}: {e}", csv_path.display())))?;
                let get = |c: &str| {
                    headers
                        .iter()
                        .position(|h| h == c)
                        .and_then(|i| record.get(i))
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                };
                let scn = get("SCN")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| bad(format!("{} row {}: no SCN", csv_path.display(), n + 1)))?;
                contents.push((scn, COLUMNS.iter().map(|c| get(c)).collect()));
            }
        }
        Ok(Self {
            recording: Arc::new(recording),
            contents: Arc::new(contents),
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    /// Every statement run so far, as `label bind=value ...`.
    pub fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }

    fn record(&self, sql: &str, binds: &[(&str, Bind)]) -> Result<String, SessionError> {
        let label = label(sql)
            .ok_or_else(|| SessionError::Connection(format!("unlabelled statement: {sql}")))?
            .to_string();
        let mut state = self
            .state
            .lock()
            .map_err(|_| SessionError::Connection("recording lock poisoned".into()))?;
        let mut call = label.clone();
        for (n, b) in binds {
            call.push_str(&format!(" {n}={b}"));
        }
        state.calls.push(call);
        if let Some(codes) = self.recording.failures.get(&label) {
            let pos = state.fail_pos.entry(label.clone()).or_default();
            if let Some(code) = codes.get(*pos) {
                *pos += 1;
                return Err(SessionError::Oracle {
                    code: *code,
                    message: format!("recorded failure of {label}"),
                });
            }
        }
        Ok(label)
    }

    fn bind(binds: &[(&str, Bind)], name: &str) -> Option<u64> {
        binds
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, b)| match b {
                Bind::Int(i) => Some(*i),
                Bind::Text(t) => t.parse().ok(),
            })
    }
}

#[async_trait::async_trait]
impl OracleSession for RecordedSession {
    async fn execute(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<(), SessionError> {
        self.record(sql, binds).map(|_| ())
    }

    async fn query(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<Rows, SessionError> {
        let label = self.record(sql, binds)?;
        if label == "contents" {
            let from = Self::bind(binds, "startscn").unwrap_or(0);
            let to = Self::bind(binds, "endscn").unwrap_or(u64::MAX);
            return Ok(Rows {
                columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
                rows: self
                    .contents
                    .iter()
                    .filter(|(scn, _)| *scn >= from && *scn <= to)
                    .map(|(_, r)| r.clone())
                    .collect(),
            });
        }
        let keyed = format!(
            "{label}:{}",
            binds
                .iter()
                .map(|(_, b)| b.to_string())
                .collect::<Vec<_>>()
                .join(".")
        );
        if let Some(seq) = self.recording.sequences.get(&label) {
            let mut state = self
                .state
                .lock()
                .map_err(|_| SessionError::Connection("recording lock poisoned".into()))?;
            let pos = state.seq_pos.entry(label.clone()).or_default();
            let answer = seq.get(*pos).or(seq.last()).cloned().unwrap_or_default();
            *pos += 1;
            return Ok(rows_of(&answer));
        }
        let answer = self
            .recording
            .answers
            .get(&keyed)
            .or_else(|| self.recording.answers.get(&label));
        Ok(answer.map(|a| rows_of(a)).unwrap_or_default())
    }
}
