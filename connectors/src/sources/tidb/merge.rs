//! Orders a changefeed spread over Kafka partitions into transactions by commit TS.
//!
//! TiCDC guarantees per partition only that, after a watermark W, every event with a commit
//! TS below W has been sent. So events wait here per partition until every partition has
//! passed a watermark above them, and are then released grouped by commit TS (a transaction),
//! in `(partition, offset)` order within a group, which is the same on every replay.
//!
//! Duplicates: TiCDC delivers at least once. An event whose commit TS is below the
//! partition's last watermark is a resend after a TiCDC restart and is dropped, as TiCDC
//! documents; a resend that arrives before that watermark lands in the same transaction
//! group as its original and is dropped there (same table, key and operation).
//!
//! Resume: every released event carries, per partition, the lowest offset still held here
//! *including its own group*, so replaying from those offsets and skipping everything at or
//! before the committed `(commit_ts, index)` repeats nothing and loses nothing.

use super::message::{DdlChange, Message, RowChange};
use crate::event::{PartitionResume, Position};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// A change released in commit order, with the position it was read at.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    Row(RowChange, Position),
    Ddl(DdlChange, Position),
}

impl Released {
    pub fn position(&self) -> &Position {
        match self {
            Released::Row(_, p) | Released::Ddl(_, p) => p,
        }
    }
}

#[derive(Debug)]
enum Held {
    Row(RowChange),
    Ddl(DdlChange),
}

impl Held {
    fn commit_ts(&self) -> u64 {
        match self {
            Held::Row(r) => r.commit_ts,
            Held::Ddl(d) => d.commit_ts,
        }
    }

    /// What makes two messages of one transaction the same change.
    fn identity(&self) -> String {
        match self {
            Held::Row(r) => format!("{}\u{0}{:?}\u{0}{}", r.table, r.op, r.key_text()),
            Held::Ddl(d) => format!("{}\u{0}ddl\u{0}{}", d.table, d.sql),
        }
    }
}

#[derive(Debug, Default)]
struct Partition {
    watermark: u64,
    next_offset: i64,
    held: VecDeque<(i64, Held)>,
    /// Watermark messages at or after the lowest offset a restart may read from, and the
    /// watermark in force before them: a replay must start with the same watermark the
    /// original read had at that offset, or it would keep resends the original dropped.
    watermarks: VecDeque<(i64, u64)>,
    watermark_base: u64,
}

impl Partition {
    /// The offset a restart reads this partition from, and the watermark before it.
    fn resume(&self) -> PartitionResume {
        let low = self.held.iter().map(|(o, _)| *o).min();
        let offset = low.unwrap_or(self.next_offset).min(self.next_offset);
        let watermark = self
            .watermarks
            .iter()
            .filter(|(o, _)| *o < offset)
            .map(|(_, w)| *w)
            .fold(self.watermark_base, u64::max);
        PartitionResume { offset, watermark }
    }

    /// Folds watermark messages below the resume offset into the base.
    fn prune(&mut self) {
        let PartitionResume { offset, watermark } = self.resume();
        self.watermarks.retain(|(o, _)| *o >= offset);
        self.watermark_base = watermark;
    }
}

/// Counters the source exports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeStats {
    /// Dropped by the watermark rule or within a transaction group.
    pub duplicates: u64,
    /// At or before the committed position on a replay after restart.
    pub replayed: u64,
}

#[derive(Debug)]
pub struct Merger {
    partitions: BTreeMap<String, Partition>,
    committed: Option<(u64, u32)>,
    last_released: Option<(u64, u32)>,
    pub stats: MergeStats,
}

impl Merger {
    /// `resume` is the committed position (its offsets say where to read again).
    pub fn new(partitions: &[String], resume: Option<&Position>) -> Self {
        let (committed, offsets) = match resume {
            Some(Position::Tidb {
                commit_ts,
                index,
                offsets,
                ..
            }) => (Some((*commit_ts, *index)), offsets.clone()),
            _ => (None, BTreeMap::new()),
        };
        let partitions = partitions
            .iter()
            .map(|p| {
                let at = offsets.get(p).copied().unwrap_or(PartitionResume {
                    offset: 0,
                    watermark: 0,
                });
                let part = Partition {
                    next_offset: at.offset,
                    watermark: at.watermark,
                    watermark_base: at.watermark,
                    ..Partition::default()
                };
                (p.clone(), part)
            })
            .collect();
        Self {
            partitions,
            committed,
            last_released: None,
            stats: MergeStats::default(),
        }
    }

    /// Where to start reading each partition.
    pub fn start_offsets(&self) -> BTreeMap<String, i64> {
        self.partitions
            .iter()
            .map(|(p, s)| (p.clone(), s.next_offset))
            .collect()
    }

    /// Partitions this merger waits on.
    pub fn partitions(&self) -> Vec<String> {
        self.partitions.keys().cloned().collect()
    }

    /// The position "now": after the last released change, reading again from the lowest
    /// held offsets. Given to dead letters, so committing one never skips a held change.
    pub fn current_position(&self) -> Position {
        let (commit_ts, index) = self
            .last_released
            .unwrap_or(self.committed.unwrap_or((0, 0)));
        Position::Tidb {
            commit_ts,
            index,
            offsets: self
                .partitions
                .iter()
                .map(|(p, s)| (p.clone(), s.resume()))
                .collect(),
            snapshot: None,
        }
    }

    /// The smallest watermark over all partitions: everything below it is complete.
    pub fn resolved_ts(&self) -> u64 {
        self.partitions
            .values()
            .map(|p| p.watermark)
            .min()
            .unwrap_or(0)
    }

    /// Changes held, waiting for a watermark.
    pub fn held(&self) -> usize {
        self.partitions.values().map(|p| p.held.len()).sum()
    }

    /// Takes one message read at `offset` of `partition`.
    pub fn push(&mut self, partition: &str, offset: i64, message: Message) {
        let part = self.partitions.entry(partition.to_string()).or_default();
        part.next_offset = part.next_offset.max(offset + 1);
        let items: Vec<Held> = match message {
            Message::Watermark(ts) => {
                part.watermark = part.watermark.max(ts);
                part.watermarks.push_back((offset, ts));
                if part.held.is_empty() {
                    part.prune();
                }
                return;
            }
            Message::Rows(rows) => rows.into_iter().map(Held::Row).collect(),
            Message::Ddl(d) => vec![Held::Ddl(d)],
        };
        for item in items {
            if item.commit_ts() < part.watermark {
                self.stats.duplicates += 1;
            } else {
                part.held.push_back((offset, item));
            }
        }
    }

    /// Releases every transaction below the resolved TS, in commit order.
    pub fn release(&mut self) -> Vec<Released> {
        let resolved = self.resolved_ts();
        let mut out = Vec::new();
        loop {
            let next = self
                .partitions
                .values()
                .flat_map(|p| p.held.iter().map(|(_, h)| h.commit_ts()))
                .filter(|ts| *ts < resolved)
                .min();
            let Some(ts) = next else { break };
            // The resume offsets are taken before the group leaves: a restart must read it again.
            let offsets: BTreeMap<String, PartitionResume> = self
                .partitions
                .iter()
                .map(|(p, s)| (p.clone(), s.resume()))
                .collect();
            let mut group: Vec<(String, i64, Held)> = Vec::new();
            for (p, s) in self.partitions.iter_mut() {
                let mut keep = VecDeque::with_capacity(s.held.len());
                for (o, h) in s.held.drain(..) {
                    if h.commit_ts() == ts {
                        group.push((p.clone(), o, h));
                    } else {
                        keep.push_back((o, h));
                    }
                }
                s.held = keep;
            }
            for s in self.partitions.values_mut() {
                s.prune();
            }
            group.sort_by(|(p, o, _), (q, r, _)| (p, o).cmp(&(q, r)));
            let mut seen = HashSet::new();
            let mut index = 0u32;
            for (_, _, held) in group {
                if !seen.insert(held.identity()) {
                    self.stats.duplicates += 1;
                    continue;
                }
                let position = Position::Tidb {
                    commit_ts: ts,
                    index,
                    offsets: offsets.clone(),
                    snapshot: None,
                };
                index += 1;
                self.last_released = Some((ts, index - 1));
                if self.committed.is_some_and(|c| (ts, index - 1) <= c) {
                    self.stats.replayed += 1;
                    continue;
                }
                out.push(match held {
                    Held::Row(r) => Released::Row(r, position),
                    Held::Ddl(d) => Released::Ddl(d, position),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Operation, TableId, Value};
    use crate::sources::tidb::message::ColumnInfo;
    use proptest::prelude::*;

    fn row(ts: u64, key: i64) -> Message {
        Message::Rows(vec![RowChange {
            commit_ts: ts,
            table: TableId::new("db", "t"),
            op: Operation::Insert,
            columns: vec![ColumnInfo {
                name: "id".into(),
                column_type: crate::event::ColumnType::Int,
            }],
            primary_key: vec!["id".into()],
            before: None,
            after: Some(vec![Value::Int(key)]),
            event_time_ms: None,
        }])
    }

    fn keys(released: &[Released]) -> Vec<(u64, i64)> {
        released
            .iter()
            .map(|r| match r {
                Released::Row(r, p) => {
                    let Position::Tidb { commit_ts, .. } = p else {
                        panic!()
                    };
                    assert_eq!(*commit_ts, r.commit_ts);
                    let Some(Value::Int(k)) = r.after.as_ref().and_then(|a| a.first()) else {
                        panic!()
                    };
                    (r.commit_ts, *k)
                }
                Released::Ddl(..) => (0, 0),
            })
            .collect()
    }

    #[test]
    fn waits_for_every_partition_and_orders_by_commit_ts() {
        let mut m = Merger::new(&["t/0".into(), "t/1".into()], None);
        m.push("t/0", 0, row(20, 2));
        m.push("t/1", 0, row(10, 1));
        m.push("t/0", 1, Message::Watermark(30));
        assert!(m.release().is_empty(), "partition 1 has no watermark yet");
        m.push("t/1", 1, Message::Watermark(15));
        assert_eq!(keys(&m.release()), [(10, 1)]);
        m.push("t/1", 2, Message::Watermark(30));
        assert_eq!(keys(&m.release()), [(20, 2)]);
    }

    #[test]
    fn drops_resends_after_a_watermark_and_within_a_transaction() {
        let mut m = Merger::new(&["t/0".into()], None);
        m.push("t/0", 0, row(10, 1));
        m.push("t/0", 1, row(10, 1)); // TiCDC restarted before its watermark: same transaction
        m.push("t/0", 2, Message::Watermark(11));
        m.push("t/0", 3, row(10, 1)); // resend after the watermark
        m.push("t/0", 4, Message::Watermark(12));
        assert_eq!(keys(&m.release()), [(10, 1)]);
        assert_eq!(m.stats.duplicates, 2);
    }

    /// A changefeed of `n` transactions over `parts` partitions with watermarks and resends.
    fn feed(n: u64, parts: i32, seed: u64) -> Vec<(i32, Message)> {
        let mut out = Vec::new();
        let mut s = seed;
        let mut rnd = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        for ts in 1..=n {
            for k in 0..(1 + rnd() % 3) as i64 {
                let p = (rnd() % parts as u64) as i32;
                out.push((p, row(ts * 10, k)));
                if rnd() % 5 == 0 {
                    out.push((p, row(ts * 10, k)));
                }
                if ts > 3 && rnd() % 4 == 0 {
                    // a resend of an older transaction, after its watermark
                    out.push((p, row((ts - 3) * 10, 0)));
                }
            }
            if ts % 3 == 0 || ts == n {
                for p in 0..parts {
                    out.push((p, Message::Watermark(ts * 10 + 1)));
                }
            }
        }
        out
    }

    fn run(
        feed: &[(i32, Message)],
        parts: i32,
        resume: Option<&Position>,
        stop: usize,
    ) -> Vec<Released> {
        let ids: Vec<String> = (0..parts).map(|p| format!("t/{p}")).collect();
        let mut m = Merger::new(&ids, resume);
        let start = m.start_offsets();
        let mut offsets = vec![0i64; parts as usize];
        let mut out = Vec::new();
        for (p, msg) in feed {
            let o = offsets[*p as usize];
            offsets[*p as usize] += 1;
            let key = format!("t/{p}");
            if o < start[&key] {
                continue;
            }
            m.push(&key, o, msg.clone());
            out.extend(m.release());
            if out.len() >= stop {
                break;
            }
        }
        out
    }

    proptest! {
        /// Stopping after any released event and resuming from its position yields exactly the
        /// rest of the uninterrupted run.
        #[test]
        fn resume_from_any_position_repeats_and_loses_nothing(
            n in 1u64..30, parts in 1i32..4, seed in any::<u64>(), cut in 0usize..80
        ) {
            let f = feed(n, parts, seed);
            let all = run(&f, parts, None, usize::MAX);
            let cut = cut.min(all.len());
            if cut > 0 {
                let first = run(&f, parts, None, cut);
                prop_assert_eq!(&first[..cut], &all[..cut]);
                let rest = run(&f, parts, Some(first[cut - 1].position()), usize::MAX);
                let keys_rest: Vec<_> = rest.iter().map(|r| match r { Released::Row(r, _) => (r.commit_ts, r.after.clone()), _ => (0, None) }).collect();
                let keys_all: Vec<_> = all[cut..].iter().map(|r| match r { Released::Row(r, _) => (r.commit_ts, r.after.clone()), _ => (0, None) }).collect();
                prop_assert_eq!(keys_rest, keys_all);
            }
            // exactly once: every (ts, key) once
            let mut seen = HashSet::new();
            for k in keys(&all) { prop_assert!(seen.insert(k), "duplicate {:?}", k); }
        }
    }
}
