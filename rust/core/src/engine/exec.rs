//! Running a pass on the worker threads: rounds of steps in lockstep at a spinning barrier, and
//! `watched` work that the calling thread can cancel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::passes::{route, row_index, Acc, Pass, Share, BLOCK_ROWS};
use super::spec::Hooks;
use crate::calendar::Calendar;
use crate::columns::{BatchView, Decoded, Want};
use crate::error::{from_panic, CoreError, Result};
use crate::kernel::{IdMap, Users};

/// Steps per round: a round is one wake-up of the worker threads, and the calling thread reports
/// progress and polls for Ctrl-C between rounds.
pub(crate) const STEPS_PER_ROUND: usize = 8;

/// How often the calling thread reports progress and polls for Ctrl-C, at most.
pub(crate) const TICK_EVERY: Duration = Duration::from_millis(100);

/// Payload a walk over the users unwinds with when the run is cancelled (see `watched`).
pub(crate) struct Cancelled;

/// Checked once per user by the walks over the users' tables: unwinds out of the walk, every few
/// thousand users, once the run is cancelled. Unwinding needs no cancellation point inside the
/// kernel's walks, and the tables it leaves half-walked are dropped with the run.
pub(crate) struct StopCheck<'a> {
    stop: &'a AtomicBool,
    n: u32,
}

impl<'a> StopCheck<'a> {
    pub(crate) fn new(stop: &'a AtomicBool) -> Self {
        StopCheck { stop, n: 0 }
    }

    #[inline(always)]
    pub(crate) fn check(&mut self) {
        self.n = self.n.wrapping_add(1);
        if self.n & 0xFFF == 0 && self.stop.load(Ordering::Relaxed) {
            std::panic::resume_unwind(Box::new(Cancelled));
        }
    }
}

/// Runs `work` on the pool while the calling thread goes on reporting progress and polling for
/// Ctrl-C (every `TICK_EVERY`). When a tick fails, the stop flag is raised, `work` (which checks it
/// every few milliseconds, see `StopCheck`) is waited for, and the tick's error returned: no worker
/// is left running. A panic in `work` is an error (`OutOfMemory` for a failed allocation).
pub(crate) fn watched<R: Send>(pool: &rayon::ThreadPool, hooks: &dyn Hooks, phase: &'static str, work: impl FnOnce(&AtomicBool) -> R + Send) -> Result<R> {
    let stop = AtomicBool::new(false);
    let caller = std::thread::current();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let outcome = catch_unwind(AssertUnwindSafe(|| pool.install(|| work(&stop))));
            caller.unpark();
            outcome
        });
        let mut failure = None;
        while !worker.is_finished() {
            std::thread::park_timeout(TICK_EVERY);
            if failure.is_none() && !worker.is_finished() {
                if let Err(e) = hooks.tick(phase, 0, false) {
                    stop.store(true, Ordering::Relaxed);
                    failure = Some(e);
                }
            }
        }
        let outcome = worker.join().unwrap_or_else(Err);
        match (failure, outcome) {
            (Some(e), _) => Err(e),
            (None, Ok(r)) => Ok(r),
            (None, Err(panic)) => Err(from_panic(panic)),
        }
    })
}

/// One round of a scan: rows `rows` of a batch, in steps of `step` rows.
pub(crate) struct Round<'a, P> {
    pub(crate) view: &'a BatchView<'a>,
    pub(crate) cal: &'a Calendar,
    pub(crate) want: Want,
    pub(crate) pass: &'a P,
    pub(crate) shares: &'a [[RwLock<Share>; 2]],
    pub(crate) rows: std::ops::Range<usize>,
    pub(crate) step: usize,
    /// Global index of the batch's first row.
    pub(crate) row0: u64,
    pub(crate) ids: IdMap,
}

/// Runs one round on every thread of the pool at once (a broadcast, so the threads really run side
/// by side and the barrier cannot deadlock). Worker `w` owns user shard `w` and accumulator `w`.
///
/// Errors and panics are recorded with the step they stop the round after, and every worker decides
/// whether to stop only from failures that all of them are sure to see at that barrier: a failure
/// while decoding step k stops the round after barrier k, one while processing step k (after the
/// barrier, when another worker may already have looked) stops it after barrier k + 1. So all
/// workers stop at the same step and nobody is left waiting. The error reported is the one from
/// the earliest rows.
pub(crate) fn run_round<P: Pass>(pool: &rayon::ThreadPool, shards: &mut [Users], accs: &mut [Acc], round: &Round<'_, P>) -> Result<()> {
    let t = shards.len();
    let lanes: Vec<Mutex<(&mut Users, &mut Acc)>> = shards.iter_mut().zip(accs.iter_mut()).map(Mutex::new).collect();
    let barrier = SpinBarrier::new(t);
    // Failures are ranked by `step × (t + 1) + worker` (processing failures rank after every decoding
    // failure of their step), and the round stops after step `stop_at / (t + 1)`.
    let stop_at = AtomicUsize::new(usize::MAX);
    let failure: Mutex<Option<(usize, CoreError)>> = Mutex::new(None);
    let fail = |rank: usize, e: CoreError| {
        stop_at.fetch_min(rank, Ordering::AcqRel);
        let mut slot = failure.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(|(r, _)| rank < *r) {
            *slot = Some((rank, e));
        }
    };
    let stops_after = |step: usize| stop_at.load(Ordering::Acquire) / (t + 1) <= step;
    pool.broadcast(|ctx| {
        let w = ctx.index();
        let mut lane = lanes[w].lock().unwrap_or_else(PoisonError::into_inner);
        let (users, acc) = &mut *lane;
        let mut block = Decoded::default();
        let mut lo = round.rows.start;
        let mut step = 0;
        while lo < round.rows.end {
            let hi = round.rows.end.min(lo + round.step);
            let parity = step % 2;
            if !stops_after(step) {
                let decoded = catch_unwind(AssertUnwindSafe(|| {
                    let mut guard = round.shares[w][parity].write().unwrap_or_else(PoisonError::into_inner);
                    let mine = &mut *guard;
                    let (a, b) = (lo + (hi - lo) * w / t, lo + (hi - lo) * (w + 1) / t);
                    mine.base = round.row0 + a as u64;
                    mine.segment.clear();
                    mine.profit.clear();
                    mine.by_shard.resize_with(t, Vec::new);
                    for rows in &mut mine.by_shard {
                        rows.clear();
                        rows.reserve(b - a);
                    }
                    for start in (a..b).step_by(BLOCK_ROWS) {
                        let end = b.min(start + BLOCK_ROWS);
                        // The next block's rows, one block ahead: they arrive while this one is
                        // decoded and are still in the core's own cache when read.
                        round.view.prefetch(end, b.min(end + BLOCK_ROWS));
                        round.view.decode(start, end, round.cal, round.want, &mut block)?;
                        block.base = round.row0 + start as u64;
                        route(round.pass, round.ids, &block, &mut mine.by_shard, row_index(start - a), acc)?;
                        mine.segment.extend_from_slice(&block.segment);
                        mine.profit.extend_from_slice(&block.profit);
                    }
                    Ok(())
                }));
                let rank = step * (t + 1) + w;
                match decoded {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => fail(rank, e),
                    Err(panic) => fail(rank, from_panic(panic)),
                }
            }
            // Every share of this step is decoded past this point.
            barrier.wait();
            if stops_after(step) {
                break;
            }
            let processed = catch_unwind(AssertUnwindSafe(|| {
                for shares in round.shares {
                    let share = shares[parity].read().unwrap_or_else(PoisonError::into_inner);
                    round.pass.process_rows(users, acc, &share, &share.by_shard[w]);
                }
            }));
            if let Err(panic) = processed {
                fail((step + 1) * (t + 1) + t, from_panic(panic));
            }
            lo = hi;
            step += 1;
        }
    });
    match failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// A barrier for threads that each run on their own core: waiting spins briefly (a step takes tens
/// of microseconds, less than a sleeping thread takes to wake), then yields.
pub(crate) struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    parties: usize,
    /// How long a waiter spins before it yields: not at all when there are more parties than cores
    /// (a spinning waiter would then hold the core the last one needs to arrive).
    spins: u32,
}

impl SpinBarrier {
    pub(crate) fn new(parties: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let spins = if parties <= cores { 1 << 14 } else { 0 };
        SpinBarrier { arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0), parties, spins }
    }

    pub(crate) fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < self.spins {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use rayon::prelude::*;

    use super::*;
    use crate::calendar::PeriodKind;
    use crate::columns::{BatchAt, BatchView, ColumnNames, ColumnSet, Decoded, Interner, Want};
    use crate::error::AllocFailure;
    use crate::kernel::{hash_key, CellAdd};
    use crate::reconcile::{Reason, Tally};
    use super::super::passes::{Acc, Pass, Routed, Share};
    use super::super::spec::Hooks;

    /// Counts rows; panics while processing one row, or fails on a bad (null-user) row the way
    /// `strict` does, to check that a round stops cleanly.
    struct Probe {
        panic_at: Option<u64>,
        null_user_at: Option<usize>,
    }

    impl Pass for Probe {
        fn want(&self) -> Want {
            Want { ts: true, period: false }
        }
        fn bad(&self, _d: &Decoded, _k: usize, row: u64, _acc: &mut Acc) -> Result<()> {
            Err(CoreError::Internal(format!("bad row {row}")))
        }
        fn routed(&self, _d: &Decoded, k: usize, user: u64) -> Routed {
            Routed { user, index: k as u32, ..Routed::default() }
        }
        fn process(&self, _users: &mut Users, _cells: &mut impl CellAdd, tally: &mut Tally, share: &Share, r: &Routed) {
            let row = share.base + r.index as u64;
            assert!(self.panic_at != Some(row), "deliberate panic at row {row}");
            // Row i's user is i % 97 (see `round_over`): the record must point back at its own row.
            assert_eq!(r.user, hash_key(row % 97), "row {row} carries another row's user");
            tally.add(Reason::Used, row as i64);
        }
    }

    /// Runs one round of `pass` over `rows` rows; returns the rows processed and the sum of their
    /// row numbers.
    fn round_over(rows: usize, threads: usize, step: usize, pass: &Probe) -> Result<(u64, i128)> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("amount", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter((0..rows).map(|i| (Some(i) != pass.null_user_at).then_some(i as i64 % 97)))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(0..rows as i64)),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
            ],
        )
        .unwrap();
        let names =
            ColumnNames { table: "orders", user: "user_id", ts: "ts", amount: Some("amount"), segment: None, ts_format: None, cost: None };
        let set = ColumnSet::resolve(&schema, &names, 4).unwrap();
        let cal = Calendar::new(PeriodKind::Month, "UTC").unwrap();
        let at = BatchAt { cal: &cal, first_row: 0, strict: false, pool: None };
        let view = BatchView::new(&batch, &set, &mut Interner::default(), at, &mut || Ok(())).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut shards: Vec<Users> = (0..threads).map(|_| Users::new(false)).collect();
        let mut accs: Vec<Acc> = (0..threads).map(|_| Acc::default()).collect();
        let shares: Vec<[RwLock<Share>; 2]> = (0..threads).map(|_| Default::default()).collect();
        let round = Round { view: &view, cal: &cal, want: pass.want(), pass, shares: &shares, rows: 0..rows, step, row0: 0, ids: IdMap::Hashed };
        run_round(&pool, &mut shards, &mut accs, &round)?;
        Ok((accs.iter().map(|a| a.tally.rows(Reason::Used)).sum(), accs.iter().map(|a| a.tally.amount(Reason::Used)).sum()))
    }

    #[test]
    fn a_round_processes_every_row_once_in_any_step_size() {
        // Steps of one row, of a few, and of several decoding blocks per worker.
        for (rows, threads, step) in [(1_000, 1, 1), (1_000, 2, 1), (1_000, 2, 7), (1_000, 3, 64), (1_000, 2, 10_000), (50_000, 2, 30_000), (50_000, 3, 50_000)] {
            let pass = Probe { panic_at: None, null_user_at: None };
            let (count, row_sum) = round_over(rows, threads, step, &pass).unwrap();
            assert_eq!(count, rows as u64, "rows {rows} threads {threads} step {step}");
            assert_eq!(row_sum, (rows * (rows - 1) / 2) as i128, "each row once: rows {rows} threads {threads} step {step}");
        }
    }

    #[test]
    fn a_panicking_worker_stops_the_round_without_a_hang() {
        for threads in [1, 2, 4] {
            let pass = Probe { panic_at: Some(333), null_user_at: None };
            match round_over(1_000, threads, 10, &pass) {
                Err(CoreError::Internal(msg)) => assert!(msg.contains("deliberate panic at row 333"), "{msg}"),
                other => panic!("expected an internal error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_failing_worker_stops_the_round_with_its_error() {
        for threads in [1, 2, 4] {
            let pass = Probe { panic_at: None, null_user_at: Some(777) };
            match round_over(1_000, threads, 10, &pass) {
                Err(CoreError::Internal(msg)) => assert_eq!(msg, "bad row 777"),
                other => panic!("expected the bad row's error, got {other:?}"),
            }
        }
    }

    /// Hooks whose `tick` fails from the `fail_at`-th call on, as Ctrl-C does.
    struct FailingHooks {
        calls: AtomicUsize,
        fail_at: usize,
    }

    impl Hooks for FailingHooks {
        fn tick(&self, _phase: &'static str, _rows: u64, _done: bool) -> Result<()> {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_at {
                return Err(CoreError::InvalidArgument("interrupted".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn watched_work_stops_soon_after_a_tick_fails() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let hooks = FailingHooks { calls: AtomicUsize::new(0), fail_at: 3 };
        let steps = AtomicUsize::new(0);
        let started = Instant::now();
        // Work that would take minutes, checking the flag as the walks over users do.
        let outcome = watched(&pool, &hooks, "test", |stop| {
            (0..2).into_par_iter().for_each(|_| {
                let mut check = StopCheck::new(stop);
                for _ in 0..u64::MAX {
                    check.check();
                    steps.fetch_add(1, Ordering::Relaxed);
                    std::hint::spin_loop();
                }
            })
        });
        match outcome {
            Err(CoreError::InvalidArgument(m)) => assert_eq!(m, "interrupted"),
            other => panic!("expected the tick's error, got {:?}", other.map(|_| ())),
        }
        // Three ticks, 100 ms apart; the workers stop within a few thousand steps of the third.
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let after = steps.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(steps.load(Ordering::Relaxed), after, "a worker is still running");
    }

    #[test]
    fn watched_work_returns_its_result_or_its_panic() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let hooks = FailingHooks { calls: AtomicUsize::new(0), fail_at: usize::MAX };
        assert_eq!(watched(&pool, &hooks, "test", |_| 42).unwrap(), 42);
        match watched(&pool, &hooks, "test", |_| -> u32 { std::panic::resume_unwind(Box::new(AllocFailure("a test".into()))) }) {
            Err(CoreError::OutOfMemory(m)) => assert_eq!(m, "a test"),
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }

    #[test]
    fn barrier_keeps_workers_in_step() {
        let barrier = SpinBarrier::new(3);
        let counter = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for round in 0..200 {
                        counter.fetch_add(1, Ordering::SeqCst);
                        barrier.wait();
                        // Everyone has counted this round before anyone counts the next one.
                        assert!(counter.load(Ordering::SeqCst) >= 3 * (round + 1));
                        barrier.wait();
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::SeqCst), 600);
    }
}
