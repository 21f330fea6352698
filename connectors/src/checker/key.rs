//! Primary-key values and the key ranges chunks are made of.

use crate::event::Value;
use serde::Serialize;

/// The primary-key values of one row, in key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Key(pub Vec<Value>);

/// The rows whose key is after `lower` (exclusive) and up to `upper` (inclusive); `None` is
/// unbounded on that side. The first chunk has no lower bound and the last no upper bound,
/// so rows the sink holds beyond the source's first or last key still land in a chunk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRange {
    pub lower: Option<Key>,
    pub upper: Option<Key>,
}

impl KeyRange {
    /// `(lower, mid]` and `(mid, upper]`.
    pub fn split_at(&self, mid: Key) -> (KeyRange, KeyRange) {
        (
            KeyRange {
                lower: self.lower.clone(),
                upper: Some(mid.clone()),
            },
            KeyRange {
                lower: Some(mid),
                upper: self.upper.clone(),
            },
        )
    }
}
