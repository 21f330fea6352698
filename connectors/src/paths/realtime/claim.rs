//! Claim checks: a record too large for the brokers is stored in object storage, and Kafka
//! carries a small reference to it instead, so the event is neither dropped nor allowed to
//! halt the pipeline.
//!
//! The object's name is derived from the topic, the event's position and its key, so a retried
//! or replayed batch writes the same object again rather than a new one. The object is written
//! before the Kafka transaction commits: a reader that sees the reference finds the object. An
//! aborted transaction can leave an object no committed record names; the retry overwrites it.

use crate::paths::store::Store;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;

/// Header naming the object on a claim-check record.
pub const HEADER_CLAIM_CHECK: &str = "syncmesh.claim-check";

/// Where oversized records go, and from what size.
#[derive(Clone)]
pub struct ClaimCheck {
    pub store: Store,
    /// A record whose key plus value is larger than this is claim-checked.
    pub max_record_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("claim check: storing {bytes} bytes at {url}: {source}")]
pub struct ClaimCheckError {
    url: String,
    bytes: usize,
    source: object_store::Error,
}

/// What the Kafka record says instead of the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The full URL of the object holding the record's value.
    pub url: String,
    pub bytes: usize,
    /// xxh3-128 of the value, hex, so a reader can verify what it fetched.
    pub xxh3: String,
}

impl Claim {
    /// The record value that replaces the payload: the reference plus enough to route by
    /// without fetching (table, operation, position).
    pub fn record_value(&self, table: &str, op: &str, position: &serde_json::Value) -> Vec<u8> {
        let value = json!({
            "claimCheck": {"url": self.url, "bytes": self.bytes, "xxh3": self.xxh3},
            "table": table,
            "op": op,
            "position": position,
        });
        serde_json::to_vec(&value).expect("JSON values always serialize")
    }
}

impl ClaimCheck {
    pub fn needed(&self, key: &[u8], value: &[u8]) -> bool {
        key.len() + value.len() > self.max_record_bytes
    }

    /// The object name for a record of `topic` at `position` with `key`.
    pub fn object_path(&self, topic: &str, position: &[u8], key: &[u8]) -> ObjectPath {
        let mut id = Vec::with_capacity(topic.len() + position.len() + key.len() + 2);
        id.extend_from_slice(topic.as_bytes());
        id.push(0);
        id.extend_from_slice(position);
        id.push(0);
        id.extend_from_slice(key);
        let name = format!("{:032x}.json", xxhash_rust::xxh3::xxh3_128(&id));
        self.store
            .prefix
            .clone()
            .join("_claim-checks")
            .join(topic)
            .join(name)
    }

    /// Stores `value` and returns the claim that replaces it.
    pub async fn store(
        &self,
        topic: &str,
        position: &[u8],
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<Claim, ClaimCheckError> {
        let path = self.object_path(topic, position, key);
        let bytes = value.len();
        let xxh3 = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&value));
        let url = format!(
            "{}/{}",
            self.store.url.trim_end_matches('/'),
            relative(&self.store.prefix, &path)
        );
        self.store
            .store
            .put(&path, PutPayload::from(value))
            .await
            .map_err(|source| ClaimCheckError {
                url: url.clone(),
                bytes,
                source,
            })?;
        Ok(Claim { url, bytes, xxh3 })
    }
}

/// `path` without the store's `prefix`, as text.
fn relative(prefix: &ObjectPath, path: &ObjectPath) -> String {
    match path.prefix_match(prefix) {
        Some(parts) => parts
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::store::open_store;

    #[tokio::test]
    async fn an_oversized_value_is_stored_once_under_a_stable_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store("claims", dir.path(), None).unwrap();
        let check = ClaimCheck {
            store,
            max_record_bytes: 10,
        };
        assert!(!check.needed(b"k", b"123456789"));
        assert!(check.needed(b"k", b"1234567890"));
        let value = b"a value too large for the brokers".to_vec();
        let claim = check
            .store("t.bank.ledger", b"{\"p\":1}", b"42", value.clone())
            .await
            .unwrap();
        let again = check
            .store("t.bank.ledger", b"{\"p\":1}", b"42", value.clone())
            .await
            .unwrap();
        assert_eq!(claim, again, "a replay writes the same object");
        let other = check
            .store("t.bank.ledger", b"{\"p\":2}", b"42", value.clone())
            .await
            .unwrap();
        assert_ne!(claim.url, other.url, "another position is another object");
        assert_eq!(claim.bytes, value.len());
        let file = claim.url.strip_prefix("file://").unwrap_or(&claim.url);
        assert_eq!(
            std::fs::read(file).unwrap(),
            value,
            "the URL names the stored bytes"
        );
        let reference: serde_json::Value =
            serde_json::from_slice(&claim.record_value("bank.ledger", "c", &json!({"p": 1})))
                .unwrap();
        assert_eq!(reference["claimCheck"]["url"], claim.url.as_str());
        assert_eq!(reference["position"]["p"], 1);
    }
}
