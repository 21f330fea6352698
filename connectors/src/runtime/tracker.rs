//! The position tracker: which source position every path has acknowledged.
//!
//! Each item the runtime dispatches gets a sequence number and the set of paths it went to.
//! Paths acknowledge in order ("everything up to seq N is durable"), so an item is done once
//! each of its paths has acknowledged at least its seq, and the committed position of a source
//! is the position of its newest item such that every item before it, of any source, is done.
//! One task owns the tracker; nothing here is shared or locked.

use crate::event::Position;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, VecDeque};

/// A set of paths, as a bitmask over path indexes.
pub type PathMask = u8;

#[derive(Debug)]
struct Pending {
    seq: u64,
    source: usize,
    position: Position,
    paths: PathMask,
    /// This item closes a unit of the source (a file read to its end).
    completes: bool,
    /// When the source committed the event, where it says.
    commit_time: Option<DateTime<Utc>>,
}

/// Committed progress of one source: its position and the units (files) finished.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub completed: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Tracker {
    next_seq: u64,
    acked: Vec<u64>,
    pending: VecDeque<Pending>,
    progress: Vec<SourceProgress>,
    dirty: bool,
    /// Commit times of items that became committed since the last `take_committed_times`,
    /// newest per source: the source's lag.
    committed_times: Vec<Option<DateTime<Utc>>>,
}

impl Tracker {
    /// `paths` is the number of paths; `progress` the restored state of each source.
    pub fn new(paths: usize, progress: Vec<SourceProgress>) -> Self {
        assert!(paths <= PathMask::BITS as usize);
        Self {
            next_seq: 1,
            acked: vec![0; paths],
            pending: VecDeque::new(),
            committed_times: vec![None; progress.len()],
            progress,
            dirty: false,
        }
    }

    /// Registers an item sent to `paths` and returns its seq.
    pub fn dispatch(
        &mut self,
        source: usize,
        position: Position,
        paths: PathMask,
        completes: bool,
    ) -> u64 {
        self.dispatch_event(source, position, paths, completes, None)
    }

    /// [`Tracker::dispatch`] for an event whose source commit time is known, so that its
    /// acknowledgement can be timed.
    pub fn dispatch_event(
        &mut self,
        source: usize,
        position: Position,
        paths: PathMask,
        completes: bool,
        commit_time: Option<DateTime<Utc>>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Pending {
            seq,
            source,
            position,
            paths,
            completes,
            commit_time,
        });
        self.advance();
        seq
    }

    /// The source commit times of the items that an ack of `seq` by `path` newly covers,
    /// to be read before [`Tracker::ack`]. Pending items are in seq order, so the range is
    /// found by binary search.
    pub fn newly_acked(&self, path: usize, seq: u64) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let old = self.acked[path];
        let from = self.pending.partition_point(|p| p.seq <= old);
        let to = self.pending.partition_point(|p| p.seq <= seq);
        self.pending
            .range(from..to.max(from))
            .filter(move |p| p.paths & (1 << path) != 0)
            .filter_map(|p| p.commit_time)
    }

    /// Per source, the commit time of the newest item committed since the last call.
    pub fn take_committed_times(&mut self) -> Vec<(usize, DateTime<Utc>)> {
        self.committed_times
            .iter_mut()
            .enumerate()
            .filter_map(|(i, t)| t.take().map(|t| (i, t)))
            .collect()
    }

    /// Sends the pending item `seq` to `paths(what it had)` instead, returning what it had.
    /// Only for an item no path it loses has received, and sent to the paths it gains before
    /// any later seq: acknowledgements stay "everything up to seq".
    pub fn reroute(
        &mut self,
        seq: u64,
        paths: impl FnOnce(PathMask) -> PathMask,
    ) -> Option<PathMask> {
        let i = self.pending.partition_point(|p| p.seq < seq);
        let item = self.pending.get_mut(i).filter(|p| p.seq == seq)?;
        let had = item.paths;
        item.paths = paths(had);
        self.advance();
        Some(had)
    }

    /// Path `path` has made everything up to `seq` durable.
    pub fn ack(&mut self, path: usize, seq: u64) {
        let acked = &mut self.acked[path];
        *acked = (*acked).max(seq);
        self.advance();
    }

    fn is_done(&self, p: &Pending) -> bool {
        (0..self.acked.len()).all(|i| p.paths & (1 << i) == 0 || self.acked[i] >= p.seq)
    }

    fn advance(&mut self) {
        while let Some(front) = self.pending.front() {
            if !self.is_done(front) {
                break;
            }
            let Some(done) = self.pending.pop_front() else {
                break;
            };
            let progress = &mut self.progress[done.source];
            if done.completes
                && let Position::File { file, .. } = &done.position
            {
                progress.completed.insert(file.clone());
            }
            progress.position = Some(done.position);
            if done.commit_time.is_some() {
                self.committed_times[done.source] = done.commit_time;
            }
            self.dirty = true;
        }
    }

    /// Items dispatched but not yet acknowledged by all their paths.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub fn progress(&self) -> &[SourceProgress] {
        &self.progress
    }

    /// True once since the committed progress last changed.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(record: u64) -> Position {
        Position::File {
            file: "f".into(),
            offset: record * 10,
            length: 10,
            record,
        }
    }

    fn record_of(t: &Tracker) -> Option<u64> {
        match &t.progress()[0].position {
            Some(Position::File { record, .. }) => Some(*record),
            _ => None,
        }
    }

    #[test]
    fn a_rerouted_item_waits_for_its_new_path_only() {
        let mut t = Tracker::new(2, vec![SourceProgress::default()]);
        let a = t.dispatch(0, pos(1), 0b10, false);
        let b = t.dispatch(0, pos(2), 0b01, false);
        let c = t.dispatch(0, pos(3), 0b01, false);
        assert_eq!(t.reroute(b, |_| 0b10), Some(0b01));
        assert_eq!(t.reroute(99, |_| 0b10), None);
        // Path 0 acknowledging up to c no longer covers b.
        t.ack(0, c);
        assert_eq!(record_of(&t), None);
        t.ack(1, a);
        assert_eq!(record_of(&t), Some(1), "b waits for path 1");
        t.ack(1, b);
        assert_eq!(record_of(&t), Some(3));
    }

    #[test]
    fn commits_only_what_every_path_acknowledged() {
        let mut t = Tracker::new(2, vec![SourceProgress::default()]);
        let a = t.dispatch(0, pos(1), 0b11, false);
        let b = t.dispatch(0, pos(2), 0b01, false);
        let c = t.dispatch(0, pos(3), 0b10, false);
        t.ack(0, b);
        assert_eq!(record_of(&t), None, "path 1 has not acked record 1");
        t.ack(1, a);
        assert_eq!(record_of(&t), Some(2));
        t.ack(1, c);
        assert_eq!(record_of(&t), Some(3));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn items_routed_nowhere_commit_with_their_predecessors() {
        let mut t = Tracker::new(1, vec![SourceProgress::default()]);
        let a = t.dispatch(0, pos(1), 0b1, false);
        t.dispatch(0, pos(2), 0, true);
        assert_eq!(record_of(&t), None);
        t.ack(0, a);
        assert_eq!(record_of(&t), Some(2));
        assert!(t.progress()[0].completed.contains("f"));
    }

    /// Every interleaving of two paths' acknowledgements of three items: the committed
    /// position never passes an item some path has not acknowledged.
    #[test]
    fn never_commits_past_an_unacknowledged_item_in_any_order() {
        let masks = [0b11u8, 0b01, 0b10];
        // Acks: path 0 acks its items in order, path 1 likewise; interleave them all ways.
        let path_items: Vec<Vec<u64>> = (0..2)
            .map(|p| {
                (1..=3u64)
                    .filter(|s| masks[(*s - 1) as usize] & (1 << p) != 0)
                    .collect()
            })
            .collect();
        let total = path_items[0].len() + path_items[1].len();
        for order in 0u32..(1 << total) {
            if order.count_ones() as usize != path_items[1].len() {
                continue;
            }
            let mut t = Tracker::new(2, vec![SourceProgress::default()]);
            for (i, m) in masks.iter().enumerate() {
                t.dispatch(0, pos(i as u64 + 1), *m, false);
            }
            let (mut i0, mut i1) = (0, 0);
            let mut acked: [u64; 2] = [0, 0];
            for step in 0..total {
                let p = ((order >> step) & 1) as usize;
                let seq = if p == 0 {
                    i0 += 1;
                    path_items[0][i0 - 1]
                } else {
                    i1 += 1;
                    path_items[1][i1 - 1]
                };
                t.ack(p, seq);
                acked[p] = seq;
                if let Some(r) = record_of(&t) {
                    for s in 1..=r {
                        let m = masks[(s - 1) as usize];
                        for (q, a) in acked.iter().enumerate() {
                            assert!(
                                m & (1 << q) == 0 || *a >= s,
                                "order {order:b}: committed {r}"
                            );
                        }
                    }
                }
            }
            assert_eq!(record_of(&t), Some(3));
        }
    }

    /// A heartbeat is dispatched to no path: it commits exactly when everything before it
    /// (of any source) is done, never ahead of an unacknowledged event, and times nothing.
    #[test]
    fn a_heartbeat_behind_an_unacknowledged_event_does_not_move_the_checkpoint() {
        let mut t = Tracker::new(2, vec![SourceProgress::default(); 2]);
        let a = t.dispatch_event(0, pos(1), 0b01, false, DateTime::from_timestamp(100, 0));
        let other = t.dispatch(1, pos(7), 0b10, false);
        // Source 0 has read up to record 5 with nothing more to emit.
        t.dispatch(0, pos(5), 0, false);
        assert!(!t.take_dirty(), "nothing is committed yet");
        assert_eq!(record_of(&t), None, "the heartbeat waits behind record 1");
        t.ack(0, a);
        assert_eq!(record_of(&t), Some(1), "and behind source 1's item");
        assert!(t.progress()[0].completed.is_empty());
        t.ack(1, other);
        assert_eq!(record_of(&t), Some(5));
        assert!(t.take_dirty());
        assert_eq!(t.in_flight(), 0);
        // Only the event's commit time was reported.
        assert_eq!(
            t.take_committed_times(),
            vec![(0, DateTime::from_timestamp(100, 0).unwrap())]
        );
        // Once nothing is pending, a heartbeat commits at once.
        t.dispatch(0, pos(9), 0, false);
        assert_eq!(record_of(&t), Some(9));
    }

    #[test]
    fn acks_yield_the_commit_times_they_cover_once_and_per_path() {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);
        let mut t = Tracker::new(2, vec![SourceProgress::default()]);
        t.dispatch_event(0, pos(1), 0b01, false, at(100));
        t.dispatch_event(0, pos(2), 0b11, false, at(200));
        t.dispatch_event(0, pos(3), 0b10, false, None);
        t.dispatch_event(0, pos(4), 0b11, false, at(400));
        let seen: Vec<_> = t.newly_acked(0, 2).collect();
        assert_eq!(seen, vec![at(100).unwrap(), at(200).unwrap()]);
        t.ack(0, 2);
        // Item 2 still waits for path 1: nothing new is committed past item 1.
        assert_eq!(t.take_committed_times(), vec![(0, at(100).unwrap())]);
        assert_eq!(t.take_committed_times(), vec![]);
        // Path 1 covers 2 and 4 (3 has no commit time); a repeated ack covers nothing.
        let seen: Vec<_> = t.newly_acked(1, 4).collect();
        assert_eq!(seen, vec![at(200).unwrap(), at(400).unwrap()]);
        t.ack(1, 4);
        assert_eq!(t.newly_acked(1, 4).count(), 0);
        assert_eq!(t.take_committed_times(), vec![(0, at(200).unwrap())]);
        t.ack(0, 4);
        assert_eq!(t.take_committed_times(), vec![(0, at(400).unwrap())]);
        assert_eq!(t.in_flight(), 0);
    }
}
