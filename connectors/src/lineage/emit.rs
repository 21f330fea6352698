//! Where run events go: a JSON-lines file, an OpenLineage HTTP endpoint, or nowhere.
//!
//! A Kafka emitter (one topic, keyed by job) is later work; it will implement the same trait
//! on the rdkafka producer the real-time path already owns.

use super::model::RunEvent;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("lineage file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the lineage event: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("invalid lineage endpoint `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("POST {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("POST {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// Sends run events somewhere. Emitting is best effort for the pipeline (a lineage outage must
/// not stop data), so callers log and count errors rather than fail the run on them.
#[async_trait]
pub trait LineageEmitter: Send + Sync {
    async fn emit(&self, event: &RunEvent) -> Result<(), LineageError>;
}

#[async_trait]
impl<T: LineageEmitter + ?Sized> LineageEmitter for Arc<T> {
    async fn emit(&self, event: &RunEvent) -> Result<(), LineageError> {
        (**self).emit(event).await
    }
}

#[async_trait]
impl<T: LineageEmitter + ?Sized> LineageEmitter for Box<T> {
    async fn emit(&self, event: &RunEvent) -> Result<(), LineageError> {
        (**self).emit(event).await
    }
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopEmitter;

#[async_trait]
impl LineageEmitter for NoopEmitter {
    async fn emit(&self, _event: &RunEvent) -> Result<(), LineageError> {
        Ok(())
    }
}

/// Appends one JSON object per line to a file (created if missing, parent directories too).
/// Each line is written whole under a lock; terminal events (COMPLETE, FAIL, ABORT) are
/// fsynced before `emit` returns. Lineage is off the hot path, so holding the lock across the
/// write is fine here.
#[derive(Debug)]
pub struct FileEmitter {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl FileEmitter {
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LineageError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| LineageError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(io_err)?;
        Ok(Self {
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl LineageEmitter for FileEmitter {
    async fn emit(&self, event: &RunEvent) -> Result<(), LineageError> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let io_err = |source| LineageError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.lock().await;
        file.write_all(&line).await.map_err(io_err)?;
        file.flush().await.map_err(io_err)?;
        if event.event_type.is_terminal() {
            file.sync_data().await.map_err(io_err)?;
        }
        Ok(())
    }
}

/// POSTs each event as JSON to `<base>/api/v1/lineage`, the endpoint of Marquez (and of
/// DataHub's OpenLineage receiver under its own base path).
#[derive(Debug, Clone)]
pub struct HttpEmitter {
    endpoint: String,
    client: reqwest::Client,
    api_key: Option<String>,
}

impl HttpEmitter {
    /// Default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// `base_url` is the server (`http://marquez:5000`); a URL that already ends in
    /// `/api/v1/lineage` is used as it is.
    pub fn new(base_url: &str) -> Result<Self, LineageError> {
        Self::with_timeout(base_url, Self::DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self, LineageError> {
        let bad = |reason: String| LineageError::Url {
            url: base_url.to_string(),
            reason,
        };
        let parsed = ::url::Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        let base = base_url.trim_end_matches('/');
        let endpoint = if base.ends_with("/api/v1/lineage") {
            base.to_string()
        } else {
            format!("{base}/api/v1/lineage")
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("syncmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| LineageError::Http {
                url: endpoint.clone(),
                source,
            })?;
        Ok(Self {
            endpoint,
            client,
            api_key: None,
        })
    }

    /// Sends `Authorization: Bearer <key>` (Marquez behind a gateway, DataHub tokens).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait]
impl LineageEmitter for HttpEmitter {
    async fn emit(&self, event: &RunEvent) -> Result<(), LineageError> {
        let body = serde_json::to_vec(event)?;
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let http_err = |source| LineageError::Http {
            url: self.endpoint.clone(),
            source,
        };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > 512 {
            let mut cut = 512;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        Err(LineageError::Status {
            url: self.endpoint.clone(),
            status: status.as_u16(),
            body,
        })
    }
}
