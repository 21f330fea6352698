//! Model checks of the shared breaker.
//!
//! Every `Breaker` method is one critical section, so any concurrent execution of calls from
//! the applier, the checker and the passing of time is equivalent to some interleaving of whole
//! calls. `every_interleaving_keeps_the_invariants` enumerates all interleavings of three such
//! call sequences (tens of thousands) and checks the invariants after every call; the threaded
//! test then hammers one breaker from real threads and checks the same invariants at the end.

use super::*;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Op {
    /// The applier asks where to write and keeps the ticket in `slot`.
    Route(usize),
    /// The applier finishes the write routed with the ticket in `slot` (ms; `None` = failed).
    Record(usize, Option<u64>),
    /// The checker reports a check.
    Check(bool),
    /// Time passes.
    Advance(u64),
}

fn config() -> BreakerConfig {
    BreakerConfig {
        latency_threshold: Duration::from_millis(100),
        min_samples: 2,
        probes_to_close: 2,
        failed_checks: 3,
        cool_down: Duration::from_secs(10),
        ..BreakerConfig::default()
    }
}

fn legal(from: BreakerState, to: BreakerState, cause: &Cause) -> bool {
    use BreakerState::*;
    match (from, to) {
        (Closed, Open) => matches!(cause, Cause::SlowWrites { .. } | Cause::FailedChecks { .. }),
        (Open, HalfOpen) => matches!(cause, Cause::CoolDownElapsed | Cause::CheckPassed),
        (HalfOpen, Closed) => matches!(cause, Cause::HealthyProbes { .. }),
        (HalfOpen, Open) => matches!(cause, Cause::BadProbe { .. } | Cause::FailedChecks { .. }),
        _ => false,
    }
}

/// Runs `ops` on a fresh breaker, checking the invariants after each call.
fn run(ops: &[Op], slots: usize) -> Result<(), String> {
    let c = config();
    let clock = Arc::new(ManualClock::default());
    let b = Breaker::new(
        "t",
        "t_shadow",
        Arc::new(ArcSwap::from_pointee(c.clone())),
        clock.clone(),
        None,
    );
    let mut tickets: Vec<Option<Ticket>> = vec![None; slots];
    let mut seen = 0usize;
    for (step, op) in ops.iter().enumerate() {
        let before_state = b.state();
        let before_gen = lock(&b.inner).core.generation();
        match *op {
            Op::Route(slot) => {
                let t = b.route();
                let expected = match b.state() {
                    BreakerState::Closed => Route::Original,
                    BreakerState::Open => Route::Shadow,
                    BreakerState::HalfOpen => Route::Probe,
                };
                if t.route != expected || t.generation != lock(&b.inner).core.generation() {
                    return Err(format!("step {step}: ticket {t:?} in state {}", b.state()));
                }
                tickets[slot] = Some(t);
            }
            Op::Record(slot, ms) => {
                let Some(t) = tickets[slot].take() else {
                    continue;
                };
                b.record_write(t, ms.map(Duration::from_millis));
                if t.generation != before_gen
                    && (b.state() != before_state || lock(&b.inner).core.generation() != before_gen)
                {
                    return Err(format!("step {step}: a stale ticket changed the state"));
                }
                if t.route == Route::Shadow && b.state() != before_state {
                    return Err(format!("step {step}: a shadow write changed the state"));
                }
            }
            Op::Check(passed) => b.record_check(passed),
            Op::Advance(s) => clock.advance(Duration::from_secs(s)),
        }
        // The history is a chain of legal transitions from Closed to the current state, one
        // per generation, each reported once.
        let inner = lock(&b.inner);
        let history: Vec<&Transition> = inner.history.iter().collect();
        if history.len() as u64 != inner.core.generation() {
            return Err(format!(
                "step {step}: {} transitions for generation {}",
                history.len(),
                inner.core.generation()
            ));
        }
        let mut state = BreakerState::Closed;
        for (i, t) in history.iter().enumerate() {
            if t.from != state || !legal(t.from, t.to, &t.cause) || t.generation != i as u64 + 1 {
                return Err(format!(
                    "step {step}: illegal transition {t:?} after {state}"
                ));
            }
            if let Cause::HealthyProbes { count } = t.cause
                && count < c.probes_to_close
            {
                return Err(format!("step {step}: closed after {count} probes"));
            }
            if let Cause::FailedChecks { consecutive } = t.cause
                && consecutive < c.failed_checks
            {
                return Err(format!(
                    "step {step}: tripped after {consecutive} failed checks"
                ));
            }
            state = t.to;
        }
        if state != inner.core.state() {
            return Err(format!(
                "step {step}: history ends in {state}, state is {}",
                inner.core.state()
            ));
        }
        // A breaker opened by checks never half-opens for time alone.
        for pair in history.windows(2) {
            if pair[0].to == BreakerState::Open
                && pair[0].cause.is_checks()
                && pair[1].cause == Cause::CoolDownElapsed
            {
                return Err(format!("step {step}: a check trip ended by cool-down"));
            }
        }
        if history.len() > seen {
            seen = history.len();
        }
    }
    Ok(())
}

/// Calls `f` with every interleaving of `threads` (each thread's order kept).
fn interleavings(threads: &[Vec<Op>], f: &mut impl FnMut(&[Op])) -> usize {
    fn go(
        threads: &[Vec<Op>],
        next: &mut Vec<usize>,
        out: &mut Vec<Op>,
        f: &mut impl FnMut(&[Op]),
    ) -> usize {
        let mut count = 0;
        let mut any = false;
        for t in 0..threads.len() {
            if next[t] < threads[t].len() {
                any = true;
                out.push(threads[t][next[t]]);
                next[t] += 1;
                count += go(threads, next, out, f);
                next[t] -= 1;
                out.pop();
            }
        }
        if !any {
            f(out);
            return 1;
        }
        count
    }
    let mut next = vec![0; threads.len()];
    go(threads, &mut next, &mut Vec::new(), f)
}

#[test]
fn every_interleaving_keeps_the_invariants() {
    // The applier: two slow writes (trip), then two fast ones (probes), routed and recorded as
    // separate calls so that checks and time can fall between route and record.
    let applier = vec![
        Op::Route(0),
        Op::Record(0, Some(900)),
        Op::Route(0),
        Op::Record(0, None),
        Op::Route(0),
        Op::Record(0, Some(5)),
        Op::Route(1),
        Op::Route(0),
        Op::Record(0, Some(5)),
        Op::Record(1, Some(5)),
    ];
    let checker = vec![
        Op::Check(false),
        Op::Check(false),
        Op::Check(false),
        Op::Check(true),
    ];
    let time = vec![Op::Advance(10), Op::Advance(10)];
    let mut failures = Vec::new();
    let mut states = std::collections::BTreeSet::new();
    let n = interleavings(&[applier, checker, time], &mut |ops| {
        if let Err(e) = run(ops, 2)
            && failures.len() < 5
        {
            failures.push(format!("{e}\n  ops: {ops:?}"));
        }
        // Which final states the interleavings reach (all three must be reachable, or the
        // model exercises less than it claims).
        let c = config();
        let clock = Arc::new(ManualClock::default());
        let b = Breaker::new(
            "t",
            "s",
            Arc::new(ArcSwap::from_pointee(c)),
            clock.clone(),
            None,
        );
        let mut tickets = [None, None];
        for op in ops {
            match *op {
                Op::Route(s) => tickets[s] = Some(b.route()),
                Op::Record(s, ms) => {
                    if let Some(t) = tickets[s].take() {
                        b.record_write(t, ms.map(Duration::from_millis));
                    }
                }
                Op::Check(p) => b.record_check(p),
                Op::Advance(s) => clock.advance(Duration::from_secs(s)),
            }
        }
        states.insert(b.state().as_str());
    });
    assert_eq!(n, 16 * 15 * 14 * 13 * 12 * 11 / (24 * 2)); // 16! / (10! 4! 2!)
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(states.len(), 3, "reached only {states:?}");
}

#[test]
fn threads_hammering_one_breaker_keep_a_consistent_history() {
    let m = crate::metrics::Metrics::new();
    let clock = Arc::new(ManualClock::default());
    let c = BreakerConfig {
        max_samples: 8,
        ..config()
    };
    let breakers = Arc::new(Breakers::new(
        c,
        clock.clone(),
        Some(BreakerMetrics::from_metrics("p", &m)),
    ));
    let b = breakers.get_or_create("t", "t_shadow");
    let mut handles = Vec::new();
    for seed in 1..=4u64 {
        let b = b.clone();
        let clock = clock.clone();
        handles.push(std::thread::spawn(move || {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for _ in 0..5_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 8 {
                    0 => b.record_check(x % 3 != 0),
                    1 => clock.advance(Duration::from_secs(1)),
                    _ => {
                        let t = b.route();
                        let ms = (x >> 8) % 200;
                        b.record_write(t, (ms != 199).then(|| Duration::from_millis(ms)));
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join().expect("no thread panicked");
    }
    let generation = lock(&b.inner).core.generation();
    assert!(
        generation > 10,
        "the run exercised transitions ({generation})"
    );
    let text = m.render();
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("syncmesh_sink_breaker_transitions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, generation, "each transition counted exactly once");
    let history = b.history();
    for pair in history.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
        assert_eq!(pair[0].generation + 1, pair[1].generation);
        assert!(
            legal(pair[1].from, pair[1].to, &pair[1].cause),
            "{:?}",
            pair[1]
        );
    }
    assert_eq!(history.last().map(|t| t.to), Some(b.state()));
}
