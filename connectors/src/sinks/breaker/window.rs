//! The sliding window of write latencies and its p99.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A failed write counts as a write that took forever.
pub const FAILED: Duration = Duration::MAX;

/// Write latencies of the last `window` (at most `max_samples` of them), oldest first.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: VecDeque<(Instant, Duration)>,
}

impl LatencyWindow {
    pub fn push(&mut self, at: Instant, latency: Duration, window: Duration, max_samples: usize) {
        self.samples.push_back((at, latency));
        self.prune(at, window, max_samples);
    }

    /// Drops samples older than `window` before `now` and the oldest beyond `max_samples`.
    pub fn prune(&mut self, now: Instant, window: Duration, max_samples: usize) {
        while self.samples.len() > max_samples.max(1) {
            self.samples.pop_front();
        }
        while let Some((at, _)) = self.samples.front() {
            if now.saturating_duration_since(*at) > window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The nearest-rank 99th percentile: the smallest latency that at least 99 % of the
    /// samples do not exceed. `None` when empty.
    pub fn p99(&self) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().map(|(_, d)| *d).collect();
        sorted.sort_unstable();
        let rank = (sorted.len() * 99).div_ceil(100);
        Some(sorted[rank.max(1) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn p99_is_nearest_rank() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        for i in 1..=100 {
            w.push(t0, ms(i), Duration::from_secs(60), 1000);
        }
        assert_eq!(w.p99(), Some(ms(99)));
        // One outlier in 100 writes does not move the p99; two do.
        let mut w = LatencyWindow::default();
        for _ in 0..99 {
            w.push(t0, ms(10), Duration::from_secs(60), 1000);
        }
        w.push(t0, FAILED, Duration::from_secs(60), 1000);
        assert_eq!(w.p99(), Some(ms(10)));
        w.push(t0, FAILED, Duration::from_secs(60), 1000);
        assert_eq!(w.p99(), Some(FAILED));
        // Few samples: the p99 is the maximum.
        let mut w = LatencyWindow::default();
        w.push(t0, ms(5), Duration::from_secs(60), 1000);
        w.push(t0, ms(700), Duration::from_secs(60), 1000);
        assert_eq!(w.p99(), Some(ms(700)));
    }

    #[test]
    fn old_and_excess_samples_leave() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        w.push(t0, ms(900), Duration::from_secs(10), 3);
        w.push(
            t0 + Duration::from_secs(5),
            ms(1),
            Duration::from_secs(10),
            3,
        );
        w.push(
            t0 + Duration::from_secs(11),
            ms(2),
            Duration::from_secs(10),
            3,
        );
        assert_eq!(w.len(), 2, "the first sample is older than the window");
        assert_eq!(w.p99(), Some(ms(2)));
        for i in 0..5 {
            w.push(
                t0 + Duration::from_secs(12),
                ms(i),
                Duration::from_secs(10),
                3,
            );
        }
        assert_eq!(w.len(), 3);
    }
}
