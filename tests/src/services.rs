//! The services `tests/services/start.sh` started, found from the variables it writes to
//! `env.sh`. Each accessor returns `None` (and reports the test as SKIPPED) when its service is
//! not configured, or panics when `SYNCMESH_REQUIRE_SERVICES=1`.

use std::io::Write;
use std::path::PathBuf;

/// The variable that turns a missing service from a skip into a failure (CI sets it).
pub const REQUIRE_VAR: &str = "SYNCMESH_REQUIRE_SERVICES";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// True when `SYNCMESH_REQUIRE_SERVICES` is `1` (or `true`/`yes`).
pub fn services_required() -> bool {
    matches!(
        var(REQUIRE_VAR)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("1" | "true" | "yes")
    )
}

/// Reports a missing service: SKIPPED on stderr (written to the real stderr, not the test
/// harness's capture, so it shows in a normal `cargo test` run), or a panic when services are
/// required.
pub fn missing(service: &str, vars: &[&str]) {
    let unset: Vec<&str> = vars.iter().copied().filter(|v| var(v).is_none()).collect();
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string();
    if services_required() {
        panic!(
            "{REQUIRE_VAR}=1 but {service} is not configured ({} unset) in test {test}: start it \
             with `tests/services/start.sh` and `source /tmp/syncmesh-services/env.sh`, or run \
             tests/run-all.sh",
            unset.join(", ")
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {service} not configured (run tests/run-all.sh) [{test}; {} unset]",
        unset.join(", ")
    );
}

/// A Kafka-protocol broker (tansu in the test setup).
#[derive(Debug, Clone)]
pub struct Kafka {
    /// `host:port[,host:port...]`, from `SYNCMESH_KAFKA_BROKERS`.
    pub brokers: String,
}

/// `SYNCMESH_KAFKA_BROKERS`.
pub fn kafka() -> Option<Kafka> {
    match var("SYNCMESH_KAFKA_BROKERS") {
        Some(brokers) => Some(Kafka { brokers }),
        None => {
            missing("kafka", &["SYNCMESH_KAFKA_BROKERS"]);
            None
        }
    }
}

/// The tansu binary, for tests that run a broker of their own (`SYNCMESH_TANSU_BIN`).
pub fn tansu() -> Option<PathBuf> {
    match var("SYNCMESH_TANSU_BIN") {
        Some(bin) => Some(PathBuf::from(bin)),
        None => {
            missing("tansu", &["SYNCMESH_TANSU_BIN"]);
            None
        }
    }
}

/// A SQL database server, by URL (`mysql://user:pass@host:port/db`, `postgres://...`).
#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
}

/// MariaDB (the MySQL-protocol server), from `SYNCMESH_MYSQL_URL`.
pub fn mysql() -> Option<Database> {
    match var("SYNCMESH_MYSQL_URL") {
        Some(url) => Some(Database { url }),
        None => {
            missing("mariadb", &["SYNCMESH_MYSQL_URL"]);
            None
        }
    }
}

/// PostgreSQL, from `SYNCMESH_POSTGRES_URL`.
pub fn postgres() -> Option<Database> {
    match var("SYNCMESH_POSTGRES_URL") {
        Some(url) => Some(Database { url }),
        None => {
            missing("postgres", &["SYNCMESH_POSTGRES_URL"]);
            None
        }
    }
}

/// An S3-compatible object store (moto in the test setup).
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://host:port`, from `SYNCMESH_S3_ENDPOINT`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// `SYNCMESH_S3_ENDPOINT` (required), `SYNCMESH_S3_ACCESS_KEY`, `SYNCMESH_S3_SECRET_KEY`,
/// `SYNCMESH_S3_REGION` (defaults: `test`, `test`, `us-east-1`).
pub fn s3() -> Option<S3> {
    match var("SYNCMESH_S3_ENDPOINT") {
        Some(endpoint) => Some(S3 {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key: var("SYNCMESH_S3_ACCESS_KEY").unwrap_or_else(|| "test".into()),
            secret_key: var("SYNCMESH_S3_SECRET_KEY").unwrap_or_else(|| "test".into()),
            region: var("SYNCMESH_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        }),
        None => {
            missing("s3", &["SYNCMESH_S3_ENDPOINT"]);
            None
        }
    }
}

/// Prometheus, with the file_sd directory it scrapes (job `syncmesh`).
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// `http://host:port`, from `SYNCMESH_PROMETHEUS_URL`.
    pub url: String,
    /// `SYNCMESH_PROMETHEUS_SD_DIR`: `<name>.json` files here become scrape targets.
    pub sd_dir: PathBuf,
    /// `SYNCMESH_PROMETHEUS_RULES_DIR`: `<name>.yml` rule files (then `POST /-/reload`).
    pub rules_dir: Option<PathBuf>,
    /// `SYNCMESH_PROMTOOL`: the promtool binary, when installed.
    pub promtool: Option<PathBuf>,
}

/// `SYNCMESH_PROMETHEUS_URL` and `SYNCMESH_PROMETHEUS_SD_DIR` (both required).
pub fn prometheus() -> Option<Prometheus> {
    match (
        var("SYNCMESH_PROMETHEUS_URL"),
        var("SYNCMESH_PROMETHEUS_SD_DIR"),
    ) {
        (Some(url), Some(sd_dir)) => Some(Prometheus {
            url: url.trim_end_matches('/').to_string(),
            sd_dir: sd_dir.into(),
            rules_dir: var("SYNCMESH_PROMETHEUS_RULES_DIR").map(Into::into),
            promtool: var("SYNCMESH_PROMTOOL").map(Into::into),
        }),
        _ => {
            missing(
                "prometheus",
                &["SYNCMESH_PROMETHEUS_URL", "SYNCMESH_PROMETHEUS_SD_DIR"],
            );
            None
        }
    }
}

/// A Kubernetes API server (1.20 in the test setup), by kubeconfig.
#[derive(Debug, Clone)]
pub struct Kube {
    /// From `SYNCMESH_KUBECONFIG`.
    pub kubeconfig: PathBuf,
}

/// `SYNCMESH_KUBECONFIG`.
pub fn kube() -> Option<Kube> {
    match var("SYNCMESH_KUBECONFIG") {
        Some(path) => Some(Kube {
            kubeconfig: path.into(),
        }),
        None => {
            missing("kube-apiserver", &["SYNCMESH_KUBECONFIG"]);
            None
        }
    }
}
