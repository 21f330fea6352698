//! The production session: Oracle's pure-Rust thin driver (`oracledb`), no Instant Client.
//! The driver is synchronous, so each call runs on a blocking thread.

use super::session::{Bind, OracleSession, Rows, SessionError};
use std::sync::{Arc, Mutex};

pub struct ThinSession {
    conn: Arc<Mutex<oracledb::Connection>>,
}

fn convert(e: oracledb::Error) -> SessionError {
    match e.kind() {
        oracledb::ErrorKind::DbError(db) => SessionError::Oracle {
            code: u32::try_from(db.code()).unwrap_or(u32::MAX),
            message: db.message().to_string(),
        },
        _ => SessionError::Connection(e.to_string()),
    }
}

impl ThinSession {
    /// Connects to `connect_string` (`host:port/service`, or an Easy Connect Plus string).
    pub async fn connect(
        connect_string: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, SessionError> {
        let (cs, user, password) = (
            connect_string.to_string(),
            user.to_string(),
            password.to_string(),
        );
        let conn = tokio::task::spawn_blocking(move || {
            let config = oracledb::Config::default()
                .set_credentials(&user, &password)
                .set_connect_string(&cs)
                .map_err(convert)?;
            oracledb::connect(config).map_err(convert)
        })
        .await
        .map_err(|e| SessionError::Connection(format!("connect task failed: {e}")))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        sql: &str,
        binds: &[(&str, Bind)],
        f: impl FnOnce(
            &oracledb::Connection,
            &str,
            &[(&str, &dyn oracledb::ToDbValue)],
        ) -> Result<T, oracledb::Error>
        + Send
        + 'static,
    ) -> Result<T, SessionError> {
        let conn = self.conn.clone();
        let sql = sql.to_string();
        let binds: Vec<(String, Bind)> = binds
            .iter()
            .map(|(n, b)| ((*n).to_string(), b.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| SessionError::Connection("session lock poisoned".into()))?;
            let ints: Vec<(String, i64)> = binds
                .iter()
                .filter_map(|(n, b)| match b {
                    Bind::Int(i) => Some((n.clone(), i64::try_from(*i).unwrap_or(i64::MAX))),
                    Bind::Text(_) => None,
                })
                .collect();
            let mut params: Vec<(&str, &dyn oracledb::ToDbValue)> = Vec::new();
            for (n, b) in &binds {
                match b {
                    Bind::Text(t) => params.push((n.as_str(), t as &dyn oracledb::ToDbValue)),
                    Bind::Int(_) => {
                        if let Some((name, v)) = ints.iter().find(|(m, _)| m == n) {
                            params.push((name.as_str(), v as &dyn oracledb::ToDbValue));
                        }
                    }
                }
            }
            f(&guard, &sql, &params).map_err(convert)
        })
        .await
        .map_err(|e| SessionError::Connection(format!("session task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl OracleSession for ThinSession {
    async fn execute(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<(), SessionError> {
        self.call(sql, binds, |c, sql, p| c.execute_named(sql, p).map(|_| ()))
            .await
    }

    async fn query(&mut self, sql: &str, binds: &[(&str, Bind)]) -> Result<Rows, SessionError> {
        self.call(sql, binds, |c, sql, p| {
            let cursor = c.query_named(sql, p)?;
            let mut out = Rows::default();
            for row in cursor {
                let row = row?;
                if out.columns.is_empty() {
                    out.columns = row.columns().iter().map(|m| m.name().to_string()).collect();
                }
                let mut values = Vec::with_capacity(out.columns.len());
                for i in 0..out.columns.len() {
                    values.push(row.get::<Option<String>>(i)?);
                }
                out.rows.push(values);
            }
            Ok(out)
        })
        .await
    }
}
