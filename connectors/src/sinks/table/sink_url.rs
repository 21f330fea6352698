//! Sink URLs and dialect detection.

use super::{Dialect, TableSinkError};
use std::fmt;
use std::str::FromStr;

/// A parsed sink URL:
/// - `sqlite://path/to/file.db`, `sqlite:///abs/path.db` or `sqlite::memory:` (the file is
///   created when missing unless the URL sets `mode=` itself);
/// - `mysql://user:pass@host:port/db` (MySQL and MariaDB; `mariadb://` is accepted too);
/// - `postgres://…` or `postgresql://…`;
/// - `starrocks://user:pass@host:9030/db`, i.e. a MySQL-protocol URL with the StarRocks dialect.
#[derive(Clone, PartialEq, Eq)]
pub struct TableSinkUrl {
    dialect: Dialect,
    /// The URL handed to sqlx (scheme normalised).
    connect: String,
}

impl TableSinkUrl {
    pub fn parse(text: &str) -> Result<Self, TableSinkError> {
        let text = text.trim();
        let bad = |reason: &str| TableSinkError::Url {
            url: redact(text),
            reason: reason.to_string(),
        };
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| bad("no scheme (expected sqlite:, mysql:, postgres: or starrocks:)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (dialect, connect) = match scheme.as_str() {
            "sqlite" => {
                if rest.trim_start_matches('/').is_empty() {
                    return Err(bad("no database file"));
                }
                (Dialect::Sqlite, text.to_string())
            }
            "mysql" | "mariadb" => (Dialect::MySql, format!("mysql:{rest}")),
            "starrocks" => (Dialect::StarRocks, format!("mysql:{rest}")),
            "postgres" | "postgresql" => (Dialect::Postgres, format!("postgres:{rest}")),
            _ => {
                return Err(bad(
                    "unsupported scheme (expected sqlite, mysql, mariadb, postgres, postgresql or starrocks)",
                ));
            }
        };
        if dialect != Dialect::Sqlite {
            let parsed = ::url::Url::parse(&connect).map_err(|e| bad(&e.to_string()))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
        }
        Ok(Self { dialect, connect })
    }

    /// The dialect the URL implies (StarRocks only for `starrocks://`).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL to hand to the driver (with its password).
    pub fn connect_str(&self) -> &str {
        &self.connect
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact(&self.connect)
    }

    /// `sqlite::memory:` and `sqlite://:memory:`: a database that lives in one connection.
    pub fn is_sqlite_memory(&self) -> bool {
        self.dialect == Dialect::Sqlite && self.connect.contains(":memory:")
    }
}

impl FromStr for TableSinkUrl {
    type Err = TableSinkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TableSinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for TableSinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableSinkUrl")
            .field("dialect", &self.dialect)
            .field("url", &self.redacted())
            .finish()
    }
}

/// `url` with the password held by environment variable `var` (a `passwordEnv` of the spec);
/// `url` as it is without `var`. The URL must carry a user and no password of its own, so a
/// password never sits in a manifest beside its reference.
pub fn with_password_env(url: &str, var: Option<&str>) -> Result<String, String> {
    let Some(var) = var else {
        return Ok(url.to_string());
    };
    let password =
        std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?;
    with_password(url, &password)
}

/// `url` with `password` set (percent-encoded as the URL needs).
pub fn with_password(url: &str, password: &str) -> Result<String, String> {
    let mut parsed = ::url::Url::parse(url.trim())
        .map_err(|e| format!("the URL `{}` does not parse: {e}", redact(url)))?;
    if parsed.scheme().eq_ignore_ascii_case("sqlite") {
        return Err("a sqlite:// URL takes no password".into());
    }
    if parsed.username().is_empty() {
        return Err(format!("the URL `{}` names no user", redact(url)));
    }
    if parsed.password().is_some() {
        return Err(format!(
            "the URL `{}` has a password already; remove it or the passwordEnv",
            redact(url)
        ));
    }
    parsed
        .set_password(Some(password))
        .map_err(|()| format!("the URL `{}` cannot carry a password", redact(url)))?;
    Ok(parsed.to_string())
}

fn redact(text: &str) -> String {
    match ::url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_from_the_environment_joins_the_url_encoded_and_redacted() {
        let url = with_password("postgres://sync@db:5432/sink", "p@ss:w/rd").expect("set");
        let parsed = TableSinkUrl::parse(&url).expect("parses");
        assert_eq!(parsed.dialect(), Dialect::Postgres);
        let back = ::url::Url::parse(parsed.connect_str()).expect("url");
        assert_eq!(back.password(), Some("p%40ss%3Aw%2Frd"));
        assert_eq!(parsed.redacted(), "postgres://sync:***@db:5432/sink");
        assert!(!parsed.redacted().contains("p%40ss"));
        for (url, why) in [
            ("sqlite://data/sink.db", "sqlite"),
            ("postgres://db/sink", "no user"),
            ("mysql://sync:old@db/sink", "already"),
        ] {
            let err = with_password(url, "x").expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("old"), "{err}");
        }
        assert_eq!(
            with_password_env("mysql://sync@db/sink", None).as_deref(),
            Ok("mysql://sync@db/sink")
        );
        let unset = with_password_env(
            "mysql://sync@db/sink",
            Some("SYNCMESH_TEST_SURELY_UNSET_VARIABLE"),
        )
        .expect_err("unset");
        assert!(
            unset.contains("`SYNCMESH_TEST_SURELY_UNSET_VARIABLE` is not set"),
            "{unset}"
        );
    }

    #[test]
    fn detects_dialects() {
        let cases = [
            ("sqlite://data/sink.db", Dialect::Sqlite),
            ("sqlite::memory:", Dialect::Sqlite),
            ("mysql://u:p@127.0.0.1:13306/db", Dialect::MySql),
            ("mariadb://u@127.0.0.1/db", Dialect::MySql),
            ("postgres://u:p@localhost/db", Dialect::Postgres),
            ("postgresql://u@localhost:15432/db", Dialect::Postgres),
            ("starrocks://root@fe:9030/db", Dialect::StarRocks),
        ];
        for (url, dialect) in cases {
            assert_eq!(
                TableSinkUrl::parse(url).unwrap().dialect(),
                dialect,
                "{url}"
            );
        }
        assert_eq!(
            TableSinkUrl::parse("starrocks://root@fe:9030/db")
                .unwrap()
                .connect_str(),
            "mysql://root@fe:9030/db"
        );
    }

    #[test]
    fn rejects_and_redacts() {
        assert!(TableSinkUrl::parse("oracle://x/y").is_err());
        assert!(TableSinkUrl::parse("no-scheme").is_err());
        assert!(TableSinkUrl::parse("sqlite://").is_err());
        let url = TableSinkUrl::parse("mysql://me:secret@db:3306/x").unwrap();
        assert!(!url.to_string().contains("secret"));
        assert!(!format!("{url:?}").contains("secret"));
    }
}
