//! The LogMiner session: preflight checks, log files for an SCN range (with gap detection),
//! START_LOGMNR / END_LOGMNR with retries, and the contents query over adaptive SCN windows.

use super::contents::{COLUMNS, ContentRow};
use super::events::TableDef;
use super::session::{Bind, OracleSession, SessionError};
use super::stream::{SYSTEM_OWNERS, TableFilter};
use super::values::OracleType;
use crate::event::TableId;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where LogMiner reads the data dictionary from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictionaryMode {
    /// The live catalog: fast; statements are rendered with today's table definitions.
    OnlineCatalog,
    /// A dictionary written into the redo (`DBMS_LOGMNR_D.BUILD`) and tracked through DDL:
    /// statements match the table as it was when the change was made.
    RedoLogs,
}

/// How the miner moves through the redo.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    pub dictionary: DictionaryMode,
    pub window_min: u64,
    pub window_max: u64,
    pub window_initial: u64,
    /// Attempts of START_LOGMNR on ORA-01291 / ORA-00310 before failing.
    pub start_attempts: u32,
    pub retry_backoff: Duration,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            dictionary: DictionaryMode::OnlineCatalog,
            window_min: 1_000,
            window_max: 100_000,
            window_initial: 20_000,
            start_attempts: 5,
            retry_backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    #[error("{statement}: {source}")]
    Session {
        statement: &'static str,
        source: SessionError,
    },
    #[error("preflight: {0}")]
    Preflight(String),
    #[error(
        "log gap on redo thread {thread}: the redo for SCN {from}..{to} is no longer available \
         ({detail}). The resume SCN {from} is not covered, so changes in that range would be \
         lost. Restore the archived logs (RMAN: RESTORE ARCHIVELOG FROM SCN {from} UNTIL SCN \
         {to} THREAD {thread}) and restart the pipeline, or take a new snapshot of the tables \
         and reset this source's position; keep archived logs longer than the pipeline's \
         longest outage (RMAN archivelog deletion policy)"
    )]
    LogGap {
        thread: u16,
        from: u64,
        to: u64,
        detail: String,
    },
    #[error(
        "START_LOGMNR for SCN {from}..{to} kept failing ({attempts} attempts, last: {last}); \
         the log files listed in V$ARCHIVED_LOG are not readable from the database host"
    )]
    StartFailed {
        from: u64,
        to: u64,
        attempts: u32,
        last: SessionError,
    },
    #[error("V$LOGMNR_CONTENTS row {row}: {reason}")]
    Row { row: u64, reason: String },
}

fn session(statement: &'static str) -> impl FnOnce(SessionError) -> MinerError {
    move |source| MinerError::Session { statement, source }
}

/// The statements, each labelled for `V$SQL` and recorded sessions.
pub mod sql {
    pub const NLS: &str = "/* syncmesh:nls */ ALTER SESSION SET \
        NLS_DATE_FORMAT = 'YYYY-MM-DD HH24:MI:SS' \
        NLS_TIMESTAMP_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF9' \
        NLS_TIMESTAMP_TZ_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF9 TZH:TZM' \
        NLS_NUMERIC_CHARACTERS = '.,'";
    pub const DATABASE: &str = "/* syncmesh:database */ SELECT LOG_MODE, \
        SUPPLEMENTAL_LOG_DATA_MIN, SUPPLEMENTAL_LOG_DATA_ALL, TO_CHAR(CURRENT_SCN) AS CURRENT_SCN \
        FROM V$DATABASE";
    pub const PRIVILEGES: &str = "/* syncmesh:privileges */ SELECT PRIVILEGE FROM SESSION_PRIVS \
        UNION ALL SELECT ROLE FROM SESSION_ROLES";
    pub const TABLE_LOGGING: &str = "/* syncmesh:table_logging */ SELECT OWNER, TABLE_NAME \
        FROM ALL_LOG_GROUPS WHERE LOG_GROUP_TYPE = 'ALL COLUMN LOGGING'";
    pub const CURRENT_SCN: &str =
        "/* syncmesh:current_scn */ SELECT TO_CHAR(CURRENT_SCN) AS CURRENT_SCN FROM V$DATABASE";
    pub const ONLINE_LOGS: &str = "/* syncmesh:online_logs */ SELECT l.THREAD#, l.SEQUENCE#, \
        TO_CHAR(l.FIRST_CHANGE#) AS FIRST_CHANGE#, TO_CHAR(l.NEXT_CHANGE#) AS NEXT_CHANGE#, \
        l.STATUS, f.MEMBER FROM V$LOG l JOIN V$LOGFILE f ON f.GROUP# = l.GROUP# \
        WHERE l.STATUS IN ('CURRENT', 'ACTIVE', 'INACTIVE') AND f.STATUS IS NULL \
        ORDER BY l.THREAD#, l.SEQUENCE#";
    pub const ARCHIVED_LOGS: &str = "/* syncmesh:archived_logs */ SELECT THREAD#, SEQUENCE#, \
        TO_CHAR(FIRST_CHANGE#) AS FIRST_CHANGE#, TO_CHAR(NEXT_CHANGE#) AS NEXT_CHANGE#, NAME, \
        DICTIONARY_BEGIN FROM V$ARCHIVED_LOG WHERE NAME IS NOT NULL AND STATUS = 'A' \
        AND DELETED = 'NO' AND STANDBY_DEST = 'NO' AND NEXT_CHANGE# > :startscn \
        AND DEST_ID IN (SELECT DEST_ID FROM V$ARCHIVE_DEST WHERE STATUS = 'VALID' \
        AND TARGET = 'PRIMARY' AND DESTINATION IS NOT NULL) ORDER BY THREAD#, SEQUENCE#";
    pub const DICTIONARY_BUILD: &str = "/* syncmesh:dictionary_build */ BEGIN \
        DBMS_LOGMNR_D.BUILD(OPTIONS => DBMS_LOGMNR_D.STORE_IN_REDO_LOGS); END;";
    pub const LAST_DICTIONARY: &str = "/* syncmesh:last_dictionary */ SELECT \
        TO_CHAR(MAX(FIRST_CHANGE#)) AS FIRST_CHANGE# FROM V$ARCHIVED_LOG \
        WHERE DICTIONARY_BEGIN = 'YES' AND STATUS = 'A' AND FIRST_CHANGE# <= :startscn";
    pub const ADD_LOGFILE: &str = "/* syncmesh:add_logfile */ BEGIN \
        DBMS_LOGMNR.ADD_LOGFILE(LOGFILENAME => :name, OPTIONS => DBMS_LOGMNR.ADDFILE); END;";
    pub const START_ONLINE: &str = "/* syncmesh:start_logmnr */ BEGIN DBMS_LOGMNR.START_LOGMNR(\
        STARTSCN => :startscn, ENDSCN => :endscn, \
        OPTIONS => DBMS_LOGMNR.DICT_FROM_ONLINE_CATALOG); END;";
    pub const START_REDO: &str = "/* syncmesh:start_logmnr */ BEGIN DBMS_LOGMNR.START_LOGMNR(\
        STARTSCN => :startscn, ENDSCN => :endscn, \
        OPTIONS => DBMS_LOGMNR.DICT_FROM_REDO_LOGS + DBMS_LOGMNR.DDL_DICT_TRACKING); END;";
    pub const END: &str = "/* syncmesh:end_logmnr */ BEGIN DBMS_LOGMNR.END_LOGMNR; END;";
    pub const COLUMNS: &str = "/* syncmesh:columns */ SELECT COLUMN_NAME, DATA_TYPE, \
        TO_CHAR(DATA_PRECISION) AS DATA_PRECISION, TO_CHAR(DATA_SCALE) AS DATA_SCALE, \
        TO_CHAR(CHAR_LENGTH) AS CHAR_LENGTH, NULLABLE FROM ALL_TAB_COLUMNS \
        WHERE OWNER = :owner AND TABLE_NAME = :tbl ORDER BY COLUMN_ID";
    pub const PRIMARY_KEY: &str = "/* syncmesh:primary_key */ SELECT cc.COLUMN_NAME \
        FROM ALL_CONSTRAINTS c JOIN ALL_CONS_COLUMNS cc ON cc.OWNER = c.OWNER \
        AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME WHERE c.CONSTRAINT_TYPE = 'P' \
        AND c.OWNER = :owner AND c.TABLE_NAME = :tbl ORDER BY cc.POSITION";
}

/// The contents query: the needed columns, dates as text in a fixed format, the SCN window,
/// and the table filter pushed down (transaction markers always pass). With `lobs`, the LOB
/// rows too: SEL_LOB_LOCATOR (9), LOB_WRITE (10), LOB_TRIM (11), LOB_ERASE (29).
pub fn contents_query(filter: &TableFilter, lobs: bool) -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| match *c {
            "TIMESTAMP" | "COMMIT_TIMESTAMP" => {
                format!("TO_CHAR({c}, 'YYYY-MM-DD HH24:MI:SS') AS {c}")
            }
            "SCN" | "START_SCN" | "COMMIT_SCN" => format!("TO_CHAR({c}) AS {c}"),
            "XID" => "RAWTOHEX(XID) AS XID".to_string(),
            c => c.to_string(),
        })
        .collect();
    let owners = SYSTEM_OWNERS
        .iter()
        .map(|o| format!("'{o}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut tables = String::new();
    // Plain `OWNER.TABLE` names push down exactly; patterns are left to the client side.
    let plain: Vec<(&str, &str)> = filter
        .include_patterns
        .iter()
        .filter(|p| !p.contains(['*', '?', '[', '{']))
        .filter_map(|p| p.split_once('.'))
        .collect();
    if !plain.is_empty() && plain.len() == filter.include_patterns.len() {
        let list = plain
            .iter()
            .map(|(o, t)| format!("('{}', '{}')", o.replace('\'', "''"), t.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        tables = format!(" AND (SEG_OWNER, TABLE_NAME) IN ({list})");
    }
    let changes = if lobs {
        "1, 2, 3, 5, 9, 10, 11, 29"
    } else {
        "1, 2, 3, 5"
    };
    format!(
        "/* syncmesh:contents */ SELECT {} FROM V$LOGMNR_CONTENTS \
         WHERE SCN >= :startscn AND SCN <= :endscn AND (OPERATION_CODE IN (6, 7, 36) \
         OR (OPERATION_CODE IN ({changes}) AND SEG_OWNER NOT IN ({owners}){tables}))",
        cols.join(", ")
    )
}

/// One redo log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub thread: u16,
    pub sequence: u64,
    pub first_scn: u64,
    /// The first SCN of the next log (for the current online log: effectively infinite).
    pub next_scn: u64,
    pub name: String,
    pub online: bool,
    pub dictionary_begin: bool,
}

/// Picks the logs covering `from..=to` on every thread, one file per (thread, sequence)
/// (archived copies preferred over online members), and fails with the missing SCN range
/// when a thread's logs no longer reach back to `from` or skip a sequence.
pub fn select_logs(logs: &[LogFile], from: u64, to: u64) -> Result<Vec<LogFile>, MinerError> {
    let mut by_thread: BTreeMap<u16, BTreeMap<u64, LogFile>> = BTreeMap::new();
    for log in logs {
        let slot = by_thread.entry(log.thread).or_default();
        match slot.get(&log.sequence) {
            Some(existing) if !existing.online => {}
            _ => {
                slot.insert(log.sequence, log.clone());
            }
        }
    }
    let mut chosen = Vec::new();
    for (thread, seqs) in by_thread {
        // Logs listed from `from` on: the earliest must reach back to it, unless it is the
        // thread's first log ever (a thread enabled later).
        if let Some(earliest) = seqs.values().next()
            && earliest.first_scn > from
            && earliest.sequence > 1
        {
            return Err(MinerError::LogGap {
                thread,
                from,
                to: earliest.first_scn - 1,
                detail: format!(
                    "the oldest log still listed is sequence {} starting at SCN {}",
                    earliest.sequence, earliest.first_scn
                ),
            });
        }
        let relevant: Vec<&LogFile> = seqs
            .values()
            .filter(|l| l.next_scn > from && l.first_scn <= to)
            .collect();
        for pair in relevant.windows(2) {
            if pair[1].sequence != pair[0].sequence + 1 {
                return Err(MinerError::LogGap {
                    thread,
                    from: pair[0].next_scn,
                    to: pair[1].first_scn.saturating_sub(1),
                    detail: format!(
                        "sequences {}..{} are missing",
                        pair[0].sequence + 1,
                        pair[1].sequence - 1
                    ),
                });
            }
        }
        chosen.extend(relevant.into_iter().cloned());
    }
    Ok(chosen)
}

/// Preflight results worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub current_scn: u64,
}

/// The privileges LogMiner CDC needs (Oracle 12c+ names), any of each group.
const NEEDED: &[(&[&str], &str)] = &[
    (&["CREATE SESSION"], "CREATE SESSION"),
    (&["LOGMINING"], "LOGMINING"),
    (&["SELECT ANY TRANSACTION"], "SELECT ANY TRANSACTION"),
    (
        &["SELECT ANY DICTIONARY", "SELECT_CATALOG_ROLE"],
        "SELECT ANY DICTIONARY (or SELECT_CATALOG_ROLE)",
    ),
    (
        &["EXECUTE_CATALOG_ROLE", "EXECUTE ANY PROCEDURE"],
        "EXECUTE_CATALOG_ROLE (for DBMS_LOGMNR)",
    ),
];

/// Sets the NLS formats SQL_REDO literals are parsed with, then checks ARCHIVELOG mode,
/// supplemental logging and privileges, naming every problem and its fix.
pub async fn preflight(
    s: &mut dyn OracleSession,
    filter: &TableFilter,
) -> Result<Preflight, MinerError> {
    s.execute(sql::NLS, &[])
        .await
        .map_err(session("ALTER SESSION (NLS formats)"))?;
    let db = s
        .query(sql::DATABASE, &[])
        .await
        .map_err(session("V$DATABASE"))?;
    let Some(row) = db.iter().next() else {
        return Err(MinerError::Preflight("V$DATABASE returned no row".into()));
    };
    let mut problems = Vec::new();
    if row.get("LOG_MODE") != Some("ARCHIVELOG") {
        problems.push(format!(
            "the database is in {} mode: LogMiner CDC needs ARCHIVELOG (SHUTDOWN IMMEDIATE; \
             STARTUP MOUNT; ALTER DATABASE ARCHIVELOG; ALTER DATABASE OPEN)",
            row.get("LOG_MODE").unwrap_or("an unknown")
        ));
    }
    if !matches!(
        row.get("SUPPLEMENTAL_LOG_DATA_MIN"),
        Some("YES" | "IMPLICIT")
    ) {
        problems.push(
            "minimal supplemental logging is off (ALTER DATABASE ADD SUPPLEMENTAL LOG DATA)"
                .to_string(),
        );
    }
    let current_scn = row
        .number("CURRENT_SCN")
        .ok_or_else(|| MinerError::Preflight("V$DATABASE.CURRENT_SCN is not a number".into()))?;
    if row.get("SUPPLEMENTAL_LOG_DATA_ALL") != Some("YES") {
        // Then every captured table needs its own all-column log group.
        let groups = s
            .query(sql::TABLE_LOGGING, &[])
            .await
            .map_err(session("ALL_LOG_GROUPS"))?;
        let logged: Vec<(String, String)> = groups
            .iter()
            .map(|r| (r.text("OWNER"), r.text("TABLE_NAME")))
            .collect();
        let covered = |o: &str, t: &str| logged.iter().any(|(a, b)| a == o && b == t);
        let plain: Vec<&String> = filter.include_patterns.iter().collect();
        if plain.is_empty() {
            problems.push(
                "all-column supplemental logging is off for the database and no tables are \
                 listed: ALTER DATABASE ADD SUPPLEMENTAL LOG DATA (ALL) COLUMNS, or list the \
                 tables and add it per table"
                    .to_string(),
            );
        }
        for p in plain {
            match p.split_once('.') {
                Some((o, t)) if !p.contains(['*', '?', '[']) => {
                    if !covered(o, t) {
                        problems.push(format!(
                            "table {o}.{t} has no all-column supplemental logging \
                             (ALTER TABLE \"{o}\".\"{t}\" ADD SUPPLEMENTAL LOG DATA (ALL) COLUMNS)"
                        ));
                    }
                }
                _ => problems.push(format!(
                    "`{p}` is a pattern, and all-column supplemental logging is off for the \
                     database: enable it for the database (ALTER DATABASE ADD SUPPLEMENTAL LOG \
                     DATA (ALL) COLUMNS) or list the tables by name"
                )),
            }
        }
    }
    let privs = s
        .query(sql::PRIVILEGES, &[])
        .await
        .map_err(session("SESSION_PRIVS"))?;
    let have: Vec<String> = privs
        .iter()
        .filter_map(|r| r.get("PRIVILEGE").map(str::to_string))
        .collect();
    let has_dba = have.iter().any(|p| p == "DBA");
    for (any_of, name) in NEEDED {
        if !has_dba && !any_of.iter().any(|p| have.iter().any(|h| h == p)) {
            problems.push(format!(
                "the connector's user lacks {name} (GRANT {} TO <user>)",
                any_of[0]
            ));
        }
    }
    if problems.is_empty() {
        Ok(Preflight { current_scn })
    } else {
        Err(MinerError::Preflight(problems.join("; ")))
    }
}

pub async fn current_scn(s: &mut dyn OracleSession) -> Result<u64, MinerError> {
    let rows = s
        .query(sql::CURRENT_SCN, &[])
        .await
        .map_err(session("V$DATABASE.CURRENT_SCN"))?;
    rows.iter()
        .next()
        .and_then(|r| r.number("CURRENT_SCN"))
        .ok_or_else(|| MinerError::Preflight("V$DATABASE.CURRENT_SCN returned nothing".into()))
}

/// Online and archived logs that may hold `from` onwards.
pub async fn list_logs(s: &mut dyn OracleSession, from: u64) -> Result<Vec<LogFile>, MinerError> {
    let mut logs = Vec::new();
    let archived = s
        .query(sql::ARCHIVED_LOGS, &[("startscn", Bind::Int(from))])
        .await
        .map_err(session("V$ARCHIVED_LOG"))?;
    for r in archived.iter() {
        logs.push(LogFile {
            thread: r.number("THREAD#").unwrap_or(1) as u16,
            sequence: r.number("SEQUENCE#").unwrap_or(0),
            first_scn: r.number("FIRST_CHANGE#").unwrap_or(0),
            next_scn: r.number("NEXT_CHANGE#").unwrap_or(u64::MAX),
            name: r.text("NAME"),
            online: false,
            dictionary_begin: r.get("DICTIONARY_BEGIN") == Some("YES"),
        });
    }
    let online = s
        .query(sql::ONLINE_LOGS, &[])
        .await
        .map_err(session("V$LOG"))?;
    for r in online.iter() {
        logs.push(LogFile {
            thread: r.number("THREAD#").unwrap_or(1) as u16,
            sequence: r.number("SEQUENCE#").unwrap_or(0),
            first_scn: r.number("FIRST_CHANGE#").unwrap_or(0),
            next_scn: r.number("NEXT_CHANGE#").unwrap_or(u64::MAX),
            name: r.text("MEMBER"),
            online: true,
            dictionary_begin: false,
        });
    }
    Ok(logs)
}

/// Reads a table's definition from the dictionary; `None` if it does not exist (dropped).
pub async fn table_def(
    s: &mut dyn OracleSession,
    table: &TableId,
) -> Result<Option<TableDef>, MinerError> {
    let binds = [
        ("owner", Bind::Text(table.schema.clone())),
        ("tbl", Bind::Text(table.table.clone())),
    ];
    let cols = s
        .query(sql::COLUMNS, &binds)
        .await
        .map_err(session("ALL_TAB_COLUMNS"))?;
    if cols.is_empty() {
        return Ok(None);
    }
    let pk = s
        .query(sql::PRIMARY_KEY, &binds)
        .await
        .map_err(session("ALL_CONSTRAINTS"))?;
    let columns = cols
        .iter()
        .map(|r| {
            let ty = OracleType::from_dictionary(
                r.get("DATA_TYPE").unwrap_or("VARCHAR2"),
                r.number("DATA_PRECISION")
                    .and_then(|p| u8::try_from(p).ok()),
                r.get("DATA_SCALE").and_then(|v| v.trim().parse().ok()),
                r.number("CHAR_LENGTH").and_then(|l| u32::try_from(l).ok()),
            );
            (r.text("COLUMN_NAME"), ty, r.get("NULLABLE") != Some("N"))
        })
        .collect();
    Ok(Some(TableDef {
        table: table.clone(),
        columns,
        primary_key: pk.iter().map(|r| r.text("COLUMN_NAME")).collect(),
    }))
}

/// Adds the logs and starts LogMiner for `from..=to`, retrying when a log vanished or was
/// replaced between listing and starting (ORA-01291 missing file, ORA-00310 wrong sequence):
/// the logs are listed again each time.
pub async fn start_window(
    s: &mut dyn OracleSession,
    config: &MinerConfig,
    from: u64,
    to: u64,
    dictionary_from: Option<u64>,
) -> Result<Vec<LogFile>, MinerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let list_from = dictionary_from.unwrap_or(from).min(from);
        let logs = list_logs(s, list_from).await?;
        let chosen = select_logs(&logs, list_from, to)?;
        let result = async {
            for log in &chosen {
                s.execute(sql::ADD_LOGFILE, &[("name", Bind::Text(log.name.clone()))])
                    .await?;
            }
            let start = match config.dictionary {
                DictionaryMode::OnlineCatalog => sql::START_ONLINE,
                DictionaryMode::RedoLogs => sql::START_REDO,
            };
            s.execute(
                start,
                &[
                    ("startscn", Bind::Int(list_from)),
                    ("endscn", Bind::Int(to)),
                ],
            )
            .await
        }
        .await;
        match result {
            Ok(()) => return Ok(chosen),
            Err(e) if matches!(e.ora(), Some(1291 | 310)) && attempt < config.start_attempts => {
                tracing::warn!(error = %e, attempt, "START_LOGMNR failed on the log files; listing them again");
                let _ = s.execute(sql::END, &[]).await;
                tokio::time::sleep(config.retry_backoff * attempt).await;
            }
            Err(e) if matches!(e.ora(), Some(1291 | 310)) => {
                let _ = s.execute(sql::END, &[]).await;
                return Err(MinerError::StartFailed {
                    from,
                    to,
                    attempts: attempt,
                    last: e,
                });
            }
            Err(e) => {
                let _ = s.execute(sql::END, &[]).await;
                return Err(MinerError::Session {
                    statement: "DBMS_LOGMNR.START_LOGMNR",
                    source: e,
                });
            }
        }
    }
}

/// Fetches the window's rows and ends the LogMiner session.
pub async fn fetch_window(
    s: &mut dyn OracleSession,
    query: &str,
    from: u64,
    to: u64,
) -> Result<Vec<ContentRow>, MinerError> {
    let result = s
        .query(
            query,
            &[("startscn", Bind::Int(from)), ("endscn", Bind::Int(to))],
        )
        .await;
    let end = s.execute(sql::END, &[]).await;
    let rows = result.map_err(session("V$LOGMNR_CONTENTS"))?;
    end.map_err(session("DBMS_LOGMNR.END_LOGMNR"))?;
    let index: Vec<(String, usize)> = rows
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_ascii_uppercase(), i))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (n, values) in rows.rows.iter().enumerate() {
        let get = |c: &'static str| {
            index
                .iter()
                .find(|(name, _)| name == c)
                .and_then(|(_, i)| values.get(*i))
                .and_then(|v| v.as_deref())
        };
        let mut row = ContentRow::from_columns(get).map_err(|e| MinerError::Row {
            row: n as u64 + 1,
            reason: e.to_string(),
        })?;
        row.row = n as u64 + 1;
        out.push(row);
    }
    Ok(out)
}

/// The next window size: doubled while behind the current SCN, halved once caught up.
pub fn next_window(config: &MinerConfig, window: u64, reached: u64, current: u64) -> u64 {
    if reached < current {
        (window.saturating_mul(2)).min(config.window_max)
    } else {
        (window / 2).max(config.window_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(thread: u16, sequence: u64, first: u64, next: u64, online: bool) -> LogFile {
        LogFile {
            thread,
            sequence,
            first_scn: first,
            next_scn: next,
            name: format!(
                "/arch/{thread}_{sequence}{}",
                if online { ".redo" } else { ".arc" }
            ),
            online,
            dictionary_begin: false,
        }
    }

    #[test]
    fn logs_cover_the_window_on_every_thread() {
        let logs = vec![
            log(1, 10, 100, 200, false),
            log(1, 11, 200, 300, false),
            log(1, 11, 200, 300, true),
            log(1, 12, 300, u64::MAX, true),
            log(2, 5, 150, 400, false),
        ];
        let names: Vec<String> = select_logs(&logs, 250, 350)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(
            names,
            ["/arch/1_11.arc", "/arch/1_12.redo", "/arch/2_5.arc"]
        );
    }

    #[test]
    fn a_log_gap_names_the_missing_range() {
        let logs = vec![log(1, 12, 300, 400, false), log(1, 13, 400, u64::MAX, true)];
        let e = select_logs(&logs, 250, 450).unwrap_err();
        assert!(
            matches!(
                e,
                MinerError::LogGap {
                    thread: 1,
                    from: 250,
                    to: 299,
                    ..
                }
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains("SCN 250..299"), "{text}");
        assert!(
            text.contains("RESTORE ARCHIVELOG FROM SCN 250 UNTIL SCN 299 THREAD 1"),
            "{text}"
        );
        let logs = vec![log(1, 12, 300, 400, false), log(1, 14, 500, u64::MAX, true)];
        let e = select_logs(&logs, 350, 550).unwrap_err();
        assert!(
            matches!(
                e,
                MinerError::LogGap {
                    from: 400,
                    to: 499,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn windows_grow_when_behind_and_shrink_when_caught_up() {
        let c = MinerConfig {
            window_min: 100,
            window_max: 1000,
            window_initial: 200,
            ..Default::default()
        };
        assert_eq!(next_window(&c, 200, 500, 10_000), 400);
        assert_eq!(next_window(&c, 800, 500, 10_000), 1000);
        assert_eq!(next_window(&c, 400, 10_000, 10_000), 200);
        assert_eq!(next_window(&c, 150, 10_000, 10_000), 100);
    }

    #[test]
    fn contents_query_pushes_plain_tables_down_and_keeps_markers() {
        let f = TableFilter::new(&["BANK.ACCOUNTS".into()], &[]).unwrap();
        let q = contents_query(&f, false);
        assert!(q.contains("OPERATION_CODE IN (6, 7, 36)"));
        assert!(q.contains("OPERATION_CODE IN (1, 2, 3, 5) AND"));
        assert!(
            contents_query(&f, true).contains("OPERATION_CODE IN (1, 2, 3, 5, 9, 10, 11, 29) AND")
        );
        assert!(q.contains("(SEG_OWNER, TABLE_NAME) IN (('BANK', 'ACCOUNTS'))"));
        assert!(q.contains("TO_CHAR(TIMESTAMP, 'YYYY-MM-DD HH24:MI:SS') AS TIMESTAMP"));
        let f = TableFilter::new(&["BANK.*".into()], &[]).unwrap();
        assert!(!contents_query(&f, true).contains("(SEG_OWNER, TABLE_NAME) IN"));
    }
}
