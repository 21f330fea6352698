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

/// A single integer key's smallest and largest value and an estimate of the table's rows
/// (from the database's statistics), so chunks can be cut by arithmetic instead of walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpan {
    pub min: i64,
    pub max: i64,
    pub estimated_rows: u64,
}

impl KeySpan {
    /// The upper bounds of every chunk but the last (which is unbounded), about `chunk_size`
    /// rows apart if the keys are spread evenly; `None` when the keys are too sparse for that
    /// to hold (more than four key values per row) or nothing is estimated, and the index is
    /// walked instead (also past ten million chunks: a bad estimate).
    pub fn chunk_bounds(&self, chunk_size: u64) -> Option<Vec<i64>> {
        let width = i128::from(self.max) - i128::from(self.min) + 1;
        let rows = i128::from(self.estimated_rows);
        if rows == 0 || width <= 0 || width > 4 * rows {
            return None;
        }
        // Key values per chunk: chunk_size rows at the table's density, at least 1.
        let step = (width * i128::from(chunk_size.max(1)) / rows).max(1);
        if width / step > 10_000_000 {
            return None;
        }
        let mut bounds = Vec::new();
        let mut bound = i128::from(self.min) - 1 + step;
        while bound < i128::from(self.max) {
            bounds.push(i64::try_from(bound).ok()?);
            bound += step;
        }
        Some(bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_keys_are_cut_by_arithmetic() {
        let span = |min, max, estimated_rows| KeySpan {
            min,
            max,
            estimated_rows,
        };
        // 1..=100 in chunks of 30: (.., 30], (30, 60], (60, 90], (90, ..).
        assert_eq!(span(1, 100, 100).chunk_bounds(30), Some(vec![30, 60, 90]));
        // Half the keys used: 60 key values per chunk of 30 rows.
        assert_eq!(span(1, 200, 100).chunk_bounds(30), Some(vec![60, 120, 180]));
        // An underestimate only makes chunks larger.
        assert_eq!(span(-9, 0, 5).chunk_bounds(4), Some(vec![-2]));
        assert_eq!(span(7, 7, 1).chunk_bounds(10), Some(vec![]));
        // Sparse keys, no statistics, the whole i64 range: walk.
        assert_eq!(span(1, 1_000, 100).chunk_bounds(10), None);
        assert_eq!(span(1, 100, 0).chunk_bounds(10), None);
        assert_eq!(span(i64::MIN, i64::MAX, u64::MAX).chunk_bounds(10), None);
    }
}
