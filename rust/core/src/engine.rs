//! One run: the passes over the inputs, then the cut-off by `as_of`/`since` and the final arrays.
//!
//! Passes: cohorts first (signups, or the paying orders of first-purchase cohorts), then orders are
//! attributed to cells, then activity. Each pass streams batches in steps of rows, grouped in rounds
//! (see `Runner::scan`): workers decode a step in parallel, then each user shard takes its rows (see
//! `kernel`). Completeness is decided only at the end, so one pass suffices even when `as_of`
//! defaults to the last order's period.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, RecordBatchReader};
use hashbrown::HashMap;
use rayon::prelude::*;

use crate::calendar::{day_in_range, Calendar, PeriodKind};
use crate::columns::{status, BatchView, ColumnNames, ColumnSet, Decoded, Interner, TsKind, UserFamily, Want};
use crate::error::{from_panic, out_of_memory, CoreError, Result};
use crate::kernel::{
    hash_key, shard_of, vec_or_unwind, Attribution, CellAdd, CellRec, CellSink, Cells, FirstRec, Users, ACTIVE, MULTI, PAID, PENDING_ROWS,
};
use crate::reconcile::{Reason, Tally};

/// A point in time given by the caller: an instant, or a wall-clock time in the run's zone.
#[derive(Clone, Copy, Debug)]
pub enum TimePoint {
    InstantMicros(i64),
    LocalMicros(i64),
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub user: String,
    pub ts: String,
    pub amount: String,
    /// Column of `u32` segment codes: in signups when given, else in orders.
    pub segment: Option<String>,
    pub signup_ts: String,
    pub activity_ts: String,
    pub horizon: u32,
    pub period: String,
    pub tz: String,
    pub as_of: Option<TimePoint>,
    pub since: Option<TimePoint>,
    /// `min_amount` as `mantissa × 10^exponent`.
    pub min_amount: (i128, i32),
    pub float_scale: u8,
    pub strict: bool,
    pub threads: usize,
    /// Rows per parallel step; progress ticks come between rounds of `STEPS_PER_ROUND` steps.
    pub chunk_rows: usize,
    /// Memory all the workers' private copies of the cohort grid may take together; a larger grid
    /// is kept once and shared (see `kernel::CellSink`). `DEFAULT_CELLS_BUDGET` unless testing.
    pub cells_budget: usize,
}

/// The default `Spec::cells_budget`: 256 MiB.
pub const DEFAULT_CELLS_BUDGET: usize = 256 << 20;

impl Spec {
    pub fn validate(&self) -> Result<()> {
        if !(1..=1000).contains(&self.horizon) {
            return Err(CoreError::InvalidArgument(format!(
                "horizon must be between 1 and 1000; got {}",
                self.horizon
            )));
        }
        if self.float_scale > 18 {
            return Err(CoreError::InvalidArgument(format!(
                "scale must be between 0 and 18; got {}",
                self.float_scale
            )));
        }
        if self.threads == 0 || self.threads > 1024 {
            return Err(CoreError::InvalidArgument(format!("threads must be between 1 and 1024; got {}", self.threads)));
        }
        if !(1..=MAX_CHUNK_ROWS).contains(&self.chunk_rows) {
            return Err(CoreError::InvalidArgument(format!("chunk_rows must be between 1 and {MAX_CHUNK_ROWS}")));
        }
        Ok(())
    }
}

/// An input table that can be opened as a stream of record batches.
pub trait BatchSource: Send {
    fn open(&mut self) -> Result<Box<dyn RecordBatchReader + Send>>;
    /// Whether `open` may be called again for a second pass.
    fn reopenable(&self) -> bool;
    /// Whether the rows are held in memory already (a table rather than a stream), so that half a
    /// byte per row to speed up the second pass does not change the memory's order.
    fn held_in_memory(&self) -> bool;
}

/// Called from the calling thread between steps: progress reports and cancellation. `done` marks
/// the last call of a phase.
pub trait Hooks {
    fn tick(&self, phase: &'static str, rows_done: u64, done: bool) -> Result<()>;
}

pub struct Inputs<'a> {
    pub orders: &'a mut dyn BatchSource,
    pub signups: Option<&'a mut dyn BatchSource>,
    pub activity: Option<&'a mut dyn BatchSource>,
    /// With segments: the order of the segment values, as each code's rank (asked for once every
    /// code is known, after the cohorts' pass). A user whose earliest rows tie on the timestamp
    /// takes the smallest segment by this order. Without it, the smallest code.
    pub segment_ranks: Option<&'a mut dyn FnMut() -> Result<Vec<u32>>>,
}

/// A reported (segment, cohort) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CohortOut {
    pub segment: u32,
    pub cohort: i32,
    /// First local day of the cohort period, days since 1970-01-01.
    pub first_day: i64,
    pub size: u64,
    /// Members with a paying order in the complete cells: the customers acquired so far.
    pub customers: u64,
    /// Members with two or more paying orders in the complete cells.
    pub repeaters: u64,
}

/// Cell arrays for the reported cohorts, `cohorts.len() × horizon`, row-major by cohort.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellsOut {
    pub complete: Vec<bool>,
    pub revenue: Vec<i128>,
    pub gross: Vec<i128>,
    pub refunds: Vec<i128>,
    pub orders: Vec<u64>,
    pub payers: Vec<u64>,
    pub active: Vec<u64>,
}

pub type ReconLines = Vec<(Reason, u64, i128)>;

#[derive(Clone, Debug)]
pub struct CohortResult {
    pub horizon: u32,
    pub scale: u8,
    pub period: PeriodKind,
    pub cohorts: Vec<CohortOut>,
    pub cells: CellsOut,
    pub has_activity: bool,
    pub orders_reconciliation: ReconLines,
    pub signups_reconciliation: Option<ReconLines>,
    pub activity_reconciliation: Option<ReconLines>,
    pub last_complete_period: Option<i32>,
    pub first_usable_period: Option<i32>,
    pub input_rows: u64,
    pub input_amount: i128,
    /// Rows excluded for bad data (nulls, NaN), over all inputs.
    pub bad_rows: u64,
}

const ORDER_REASONS_SIGNUPS: [Reason; 11] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::TsOutOfRange,
    Reason::NullAmount,
    Reason::NanAmount,
    Reason::UnknownUser,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
const ORDER_REASONS_FIRST_PURCHASE: [Reason; 11] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::TsOutOfRange,
    Reason::NullAmount,
    Reason::NanAmount,
    Reason::NeverPaid,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
const SIGNUP_REASONS: [Reason; 7] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::TsOutOfRange,
    Reason::DuplicateUser,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
const ACTIVITY_REASONS: [Reason; 9] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::TsOutOfRange,
    Reason::UnknownUser,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];

/// Per-thread state of one pass. Aligned so two threads' counters never share a cache line.
#[derive(Default)]
#[repr(align(128))]
struct Acc {
    tally: Tally,
    cells: CellSink,
    max_period: Option<i32>,
    input_rows: u64,
    input_amount: i128,
}

/// A pass's accumulators summed over the threads.
#[derive(Default)]
struct Totals {
    tally: Tally,
    cells: Cells,
    max_period: Option<i32>,
    input_rows: u64,
    input_amount: i128,
}


/// Which amounts are paying orders: those above `min_amount`, decided exactly on fixed-point values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paying {
    /// Amounts above this pay: the floor of `min_amount` at the amounts' scale, clamped to i64.
    above: i64,
    /// `min_amount` is below every i64 (then even `i64::MIN` pays, which the clamp alone would miss).
    all: bool,
}

impl Paying {
    /// From `min_amount` as `mantissa × 10^exponent`, for amounts at `scale`.
    pub fn new(min_amount: (i128, i32), scale: u8) -> Self {
        let (m, e) = min_amount;
        let shift = e + i32::from(scale);
        let floor: i128 = if shift >= 0 {
            10i128.checked_pow(shift.unsigned_abs()).and_then(|p| m.checked_mul(p)).unwrap_or(if m < 0 { i128::MIN } else { i128::MAX })
        } else {
            match 10i128.checked_pow(shift.unsigned_abs()) {
                Some(p) => m.div_euclid(p),
                None => if m < 0 { -1 } else { 0 },
            }
        };
        Paying { above: i64::try_from(floor).unwrap_or(if floor < 0 { i64::MIN } else { i64::MAX }), all: floor < i128::from(i64::MIN) }
    }

    #[inline(always)]
    pub fn pays(self, amount: i64) -> bool {
        amount > self.above || self.all
    }
}

/// A valid row routed to its user's shard, with what the shard's loop reads packed together: the
/// loop then streams one array (half of it written by another core) instead of picking from five.
#[derive(Clone, Copy, Debug, Default)]
struct Routed {
    /// The user's id (`kernel::hash_key` of the key).
    user: u64,
    /// The timestamp (passes that fix cohorts) or the fixed-point amount (attribution).
    value: i64,
    /// The period (attribution), or for the first-purchase pass 1 when the order pays, else 0.
    period: i32,
    /// The row's index in its worker's share of the step.
    index: u32,
}

/// A worker's share of a step as the shards' loops read it. The worker decodes the share in blocks
/// of `BLOCK_ROWS` and routes each block at once; only the routed rows stay.
#[derive(Default)]
struct Share {
    /// The valid rows of each user shard.
    by_shard: Vec<Vec<Routed>>,
    /// The rows' segment codes (empty without segments), by row index.
    segment: Vec<u32>,
    /// Global index of the share's first row.
    base: u64,
}

/// What one pass over a table does with its rows.
trait Pass: Sync {
    /// Which columns the pass needs decoded.
    fn want(&self) -> Want;
    /// Counts a decoded chunk as a whole (input rows and amounts).
    fn summarize(&self, _d: &Decoded, _acc: &mut Acc) {}
    /// Accounts for a row whose status is not valid (or fails under `strict`).
    fn bad(&self, d: &Decoded, k: usize, row: u64, acc: &mut Acc) -> Result<()>;
    /// Packs what `process` needs of valid row `k`, whose user id is `user`.
    fn routed(&self, d: &Decoded, k: usize, user: u64) -> Routed;
    /// Processes a valid row in its user's shard.
    fn process(&self, users: &mut Users, cells: &mut impl CellAdd, tally: &mut Tally, share: &Share, r: &Routed);
    /// Processes a shard's rows of one share, each row's bucket asked for a few rows ahead. One
    /// call per share, not per row, so that `process` is inlined into the loop, and the kind of
    /// cell sink is settled once per share too.
    #[inline(never)]
    fn process_rows(&self, users: &mut Users, acc: &mut Acc, share: &Share, rows: &[Routed]) {
        match &mut acc.cells {
            CellSink::Private(cells) => self.process_each(users, cells, &mut acc.tally, share, rows),
            CellSink::Shared(cells) => self.process_each(users, cells, &mut acc.tally, share, rows),
        }
    }

    #[inline(always)]
    fn process_each(&self, users: &mut Users, cells: &mut impl CellAdd, tally: &mut Tally, share: &Share, rows: &[Routed]) {
        let state_outside = users.state_outside();
        let replaying = users.replaying();
        for (i, r) in rows.iter().enumerate() {
            if let Some(ahead) = rows.get(i + PREFETCH_BUCKET) {
                if replaying {
                    users.prefetch_replayed(PREFETCH_BUCKET, ahead.user);
                } else {
                    users.prefetch(ahead.user);
                }
            }
            if state_outside {
                if let Some(ahead) = rows.get(i + PREFETCH_STATE) {
                    users.prefetch_state(ahead.user);
                }
            }
            self.process(users, cells, tally, share, r);
        }
    }
}

/// Sorts a decoded block's rows out: bad rows go to `pass.bad`, valid rows to `by_shard`, the list
/// of their user's shard (so a shard's loop has no data-dependent branch), indexed from `offset`.
fn route<P: Pass>(pass: &P, block: &Decoded, by_shard: &mut [Vec<Routed>], offset: u32, acc: &mut Acc) -> Result<()> {
    pass.summarize(block, acc);
    for (k, &key) in block.key.iter().enumerate() {
        if !block.all_valid && block.status[k] != status::VALID {
            pass.bad(block, k, block.base + k as u64, acc)?;
            continue;
        }
        let user = hash_key(key);
        let mut routed = pass.routed(block, k, user);
        routed.index += offset;
        by_shard[shard_of(user, by_shard.len())].push(routed);
    }
    Ok(())
}

/// Rows decoded and routed at a time: small enough that the decoded columns are still in the
/// nearest caches when `route` reads them back.
const BLOCK_ROWS: usize = 4096;

/// Most rows per step (`Spec::chunk_rows`): a row's index within its worker's share of a step is
/// kept in 32 bits.
pub const MAX_CHUNK_ROWS: usize = 1 << 24;

/// A row's index within a worker's share of a step, below `MAX_CHUNK_ROWS` (`Spec::validate`).
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
fn row_index(k: usize) -> u32 {
    debug_assert!(k < MAX_CHUNK_ROWS);
    k as u32
}

/// Signups: each user's earliest signup fixes the cohort; later ones are duplicates.
struct SignupPass<'a> {
    set: &'a ColumnSet,
    strict: bool,
}

impl Pass for SignupPass<'_> {
    fn want(&self) -> Want {
        Want { ts: true, period: false }
    }
    fn summarize(&self, d: &Decoded, acc: &mut Acc) {
        acc.input_rows += d.len() as u64;
    }
    fn bad(&self, d: &Decoded, k: usize, row: u64, acc: &mut Acc) -> Result<()> {
        count_bad(status_reason(d.status[k]), 0, self.strict, acc, self.set, row)
    }
    fn routed(&self, d: &Decoded, k: usize, user: u64) -> Routed {
        Routed { user, value: d.ts[k], period: 0, index: row_index(k) }
    }
    #[inline(always)]
    fn process(&self, users: &mut Users, _cells: &mut impl CellAdd, tally: &mut Tally, share: &Share, r: &Routed) {
        let rec = FirstRec { user: r.user, ts: r.value, segment: seg(share, r.index) };
        if !users.assign(&rec) {
            tally.add(Reason::DuplicateUser, 0);
        }
    }
}

/// First-purchase cohorts: each user's earliest paying order. Bad rows are counted by the orders
/// pass; `strict` fails here, as early as it can.
struct FirstPurchasePass<'a> {
    set: &'a ColumnSet,
    strict: bool,
    paying: Paying,
}

impl Pass for FirstPurchasePass<'_> {
    fn want(&self) -> Want {
        Want { ts: true, period: false }
    }
    fn bad(&self, d: &Decoded, k: usize, row: u64, _acc: &mut Acc) -> Result<()> {
        if self.strict {
            return Err(bad_row_error(self.set, status_reason(d.status[k]), row));
        }
        Ok(())
    }
    /// Takes every valid row, as the orders pass does, so that a shard's trail lines up with the
    /// rows of that pass; only paying rows can fix a cohort.
    fn routed(&self, d: &Decoded, k: usize, user: u64) -> Routed {
        Routed { user, value: d.ts[k], period: i32::from(self.paying.pays(d.amount[k])), index: row_index(k) }
    }
    #[inline(always)]
    fn process(&self, users: &mut Users, _cells: &mut impl CellAdd, _tally: &mut Tally, share: &Share, r: &Routed) {
        if r.period != 0 {
            users.assign(&FirstRec { user: r.user, ts: r.value, segment: seg(share, r.index) });
        } else {
            users.pass_over();
        }
    }
}

/// Orders into cells.
struct OrdersPass<'a> {
    set: &'a ColumnSet,
    strict: bool,
    paying: Paying,
    at: Attribution<'a>,
}

impl Pass for OrdersPass<'_> {
    fn want(&self) -> Want {
        Want { ts: false, period: true }
    }
    fn summarize(&self, d: &Decoded, acc: &mut Acc) {
        acc.input_rows += d.len() as u64;
        acc.input_amount += d.amount.iter().map(|&a| a as i128).sum::<i128>();
        let max = if d.all_valid {
            d.period.iter().copied().max()
        } else {
            d.period.iter().zip(&d.status).filter(|(_, &st)| st == status::VALID).map(|(&p, _)| p).max()
        };
        acc.max_period = acc.max_period.max(max);
    }
    fn bad(&self, d: &Decoded, k: usize, row: u64, acc: &mut Acc) -> Result<()> {
        count_bad(status_reason(d.status[k]), d.amount[k], self.strict, acc, self.set, row)
    }
    fn routed(&self, d: &Decoded, k: usize, user: u64) -> Routed {
        Routed { user, value: d.amount[k], period: d.period[k], index: row_index(k) }
    }
    #[inline(always)]
    fn process(&self, users: &mut Users, cells: &mut impl CellAdd, tally: &mut Tally, _share: &Share, r: &Routed) {
        let rec = CellRec { user: r.user, amount: r.value, period: r.period, paying: self.paying.pays(r.value) };
        users.attribute_order(&rec, &self.at, cells, tally)
    }
}

/// Activity into cells.
struct ActivityPass<'a> {
    set: &'a ColumnSet,
    strict: bool,
    at: Attribution<'a>,
}

impl Pass for ActivityPass<'_> {
    fn want(&self) -> Want {
        Want { ts: false, period: true }
    }
    fn summarize(&self, d: &Decoded, acc: &mut Acc) {
        acc.input_rows += d.len() as u64;
    }
    fn bad(&self, d: &Decoded, k: usize, row: u64, acc: &mut Acc) -> Result<()> {
        count_bad(status_reason(d.status[k]), 0, self.strict, acc, self.set, row)
    }
    fn routed(&self, d: &Decoded, k: usize, user: u64) -> Routed {
        Routed { user, value: 0, period: d.period[k], index: row_index(k) }
    }
    #[inline(always)]
    fn process(&self, users: &mut Users, cells: &mut impl CellAdd, tally: &mut Tally, _share: &Share, r: &Routed) {
        let rec = CellRec { user: r.user, amount: 0, period: r.period, paying: false };
        users.attribute_activity(&rec, &self.at, cells, tally)
    }
}

/// Steps per round: a round is one wake-up of the worker threads, and the calling thread reports
/// progress and polls for Ctrl-C between rounds.
const STEPS_PER_ROUND: usize = 8;

/// How often the calling thread reports progress and polls for Ctrl-C, at most.
const TICK_EVERY: Duration = Duration::from_millis(100);

/// Payload a walk over the users unwinds with when the run is cancelled (see `watched`).
struct Cancelled;

/// Checked once per user by the walks over the users' tables: unwinds out of the walk, every few
/// thousand users, once the run is cancelled. Unwinding needs no cancellation point inside the
/// kernel's walks, and the tables it leaves half-walked are dropped with the run.
struct StopCheck<'a> {
    stop: &'a AtomicBool,
    n: u32,
}

impl<'a> StopCheck<'a> {
    fn new(stop: &'a AtomicBool) -> Self {
        StopCheck { stop, n: 0 }
    }

    #[inline(always)]
    fn check(&mut self) {
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
fn watched<R: Send>(pool: &rayon::ThreadPool, hooks: &dyn Hooks, phase: &'static str, work: impl FnOnce(&AtomicBool) -> R + Send) -> Result<R> {
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

/// How many rows ahead a shard prefetches the bucket it will probe, and then the user's state when
/// it lives outside the table.
const PREFETCH_BUCKET: usize = 32;
const PREFETCH_STATE: usize = 12;

/// One round of a scan: rows `rows` of a batch, in steps of `step` rows.
struct Round<'a, P> {
    view: &'a BatchView<'a>,
    cal: &'a Calendar,
    want: Want,
    pass: &'a P,
    shares: &'a [[RwLock<Share>; 2]],
    rows: std::ops::Range<usize>,
    step: usize,
    /// Global index of the batch's first row.
    row0: u64,
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
fn run_round<P: Pass>(pool: &rayon::ThreadPool, shards: &mut [Users], accs: &mut [Acc], round: &Round<'_, P>) -> Result<()> {
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
                        route(round.pass, &block, &mut mine.by_shard, row_index(start - a), acc)?;
                        mine.segment.extend_from_slice(&block.segment);
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
struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    parties: usize,
    /// How long a waiter spins before it yields: not at all when there are more parties than cores
    /// (a spinning waiter would then hold the core the last one needs to arrive).
    spins: u32,
}

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let spins = if parties <= cores { 1 << 14 } else { 0 };
        SpinBarrier { arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0), parties, spins }
    }

    fn wait(&self) {
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

struct Runner<'h> {
    spec: Spec,
    cal: Calendar,
    pool: rayon::ThreadPool,
    hooks: &'h dyn Hooks,
    interner: Interner,
    family: Option<(UserFamily, String)>,
    /// One user shard per worker thread (see `kernel`).
    shards: Vec<Users>,
    threads: usize,
    /// How the cohort-defining timestamps map to periods (set by the first pass).
    ts_kind: Option<TsKind>,
}

/// A batch stream with the table name its errors should carry.
struct Stream {
    table: &'static str,
    reader: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    schema: arrow_schema::SchemaRef,
}

impl Stream {
    /// Opens a source. Every batch is checked against the stream's schema: a C stream's arrays
    /// carry no types of their own, so a batch that does not match would be read as something else.
    fn open(table: &'static str, source: &mut dyn BatchSource) -> Result<Self> {
        let reader = source.open()?;
        let schema = reader.schema();
        let expected = schema.clone();
        let reader = Box::new(reader.enumerate().map(move |(i, b)| match b {
            Ok(batch) => check_batch_schema(table, i, &expected, &batch).map(|()| batch),
            // An error raised by the source itself (a Python exception): passed through unchanged.
            Err(arrow_schema::ArrowError::ExternalError(inner)) => Err(CoreError::External(inner)),
            Err(e) => Err(CoreError::Stream { table: table.to_string(), message: e.to_string() }),
        }));
        Ok(Stream { table, reader, schema })
    }

    fn replay(table: &'static str, schema: arrow_schema::SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Stream { table, reader: Box::new(batches.into_iter().map(Ok)), schema }
    }
}

/// A batch must have the stream's columns, in order, with the same names and dtypes.
fn check_batch_schema(table: &str, index: usize, expected: &arrow_schema::Schema, batch: &RecordBatch) -> Result<()> {
    match schema_mismatch(expected, &batch.schema()) {
        None => Ok(()),
        Some(what) => Err(CoreError::Stream { table: table.to_string(), message: format!("batch {index} {what}") }),
    }
}

/// How `got` differs from `expected` (columns, in order, by name and dtype), if it does.
fn schema_mismatch(expected: &arrow_schema::Schema, got: &arrow_schema::Schema) -> Option<String> {
    if got.fields().len() != expected.fields().len() {
        return Some(format!("has {} columns where the stream's schema has {}", got.fields().len(), expected.fields().len()));
    }
    got.fields().iter().zip(expected.fields()).enumerate().find_map(|(j, (g, e))| {
        (g.name() != e.name() || g.data_type() != e.data_type()).then(|| {
            format!(
                "does not match the stream's schema: column {j} is {:?} ({}) where the schema has {:?} ({})",
                g.name(),
                g.data_type(),
                e.name(),
                e.data_type()
            )
        })
    })
}

impl<'h> Runner<'h> {
    fn columns(&mut self, stream: &Stream, names: ColumnNames<'_>) -> Result<ColumnSet> {
        let set = ColumnSet::resolve(&stream.schema, &names, self.spec.float_scale)?;
        match &self.family {
            None => self.family = Some((set.family, stream.table.to_string())),
            Some((family, table)) if *family != set.family => {
                return Err(CoreError::Dtype {
                    table: stream.table.to_string(),
                    column: names.user.to_string(),
                    dtype: stream.schema.field(set.user.0).data_type().to_string(),
                    accepted: format!(
                        "the same kind of user id as in {table} ({}); integers and strings (or uint64 and signed integers) cannot be matched",
                        match family {
                            UserFamily::Signed => "signed or small unsigned integers",
                            UserFamily::Unsigned64 => "uint64",
                            UserFamily::Str => "strings",
                        }
                    ),
                });
            }
            _ => {}
        }
        Ok(set)
    }

    /// Streams `stream` in rounds of steps. Every worker thread runs one round in lockstep: for each
    /// step it decodes its share of the step's rows and `pass` sorts them out (bad rows counted,
    /// wanted rows listed by user shard); after a barrier, it processes the listed rows of its own
    /// shard from every worker's share. Steps are small, so the decoded rows are still in cache when
    /// the shards read them, and a round is one wake-up of the pool rather than one per step. The
    /// calling thread reports progress and polls for Ctrl-C between rounds. `keep` collects the
    /// batches for a later replay.
    fn scan<P: Pass>(
        &mut self,
        stream: Stream,
        set: &ColumnSet,
        phase: &'static str,
        mut keep: Option<&mut Vec<RecordBatch>>,
        mut accs: Vec<Acc>,
        pass: &P,
    ) -> Result<Vec<Acc>> {
        let step = self.spec.chunk_rows;
        let want = pass.want();
        // Each worker's decoded share of a step, double-buffered: a worker decodes step k + 1 while
        // others may still read its share of step k (see `run_round`).
        let shares: Vec<[RwLock<Share>; 2]> = (0..self.threads).map(|_| Default::default()).collect();
        let mut row0: u64 = 0;
        let mut last_tick = Instant::now();
        let started = Instant::now();
        self.hooks.tick(phase, 0, false)?;
        for batch in stream.reader {
            let batch = batch?;
            {
                let hooks = self.hooks;
                let mut poll = || -> Result<()> {
                    if last_tick.elapsed() >= TICK_EVERY {
                        hooks.tick(phase, row0, false)?;
                        last_tick = Instant::now();
                    }
                    Ok(())
                };
                let view = BatchView::new(&batch, set, &mut self.interner, &mut poll)?;
                if self.ts_kind.is_none() {
                    self.ts_kind = Some(view.ts_kind());
                }
                let n = view.len;
                let mut lo = 0;
                while lo < n {
                    let hi = n.min(lo.saturating_add(step.saturating_mul(STEPS_PER_ROUND)));
                    let round = Round { view: &view, cal: &self.cal, want, pass, shares: &shares, rows: lo..hi, step, row0 };
                    run_round(&self.pool, &mut self.shards, &mut accs, &round)?;
                    if last_tick.elapsed() >= TICK_EVERY {
                        self.hooks.tick(phase, row0 + hi as u64, false)?;
                        last_tick = Instant::now();
                    }
                    lo = hi;
                }
                row0 += n as u64;
            }
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(batch);
            }
        }
        trace(&format!("{phase}: {row0} rows"), started);
        self.hooks.tick(phase, row0, true)?;
        Ok(accs)
    }

    /// One accumulator per worker, over a grid of `cells` cells.
    fn fresh_accs(&self, cells: usize) -> Result<Vec<Acc>> {
        let sinks = CellSink::for_workers(cells, self.threads, self.spec.cells_budget)?;
        Ok(sinks.into_iter().map(|cells| Acc { cells, ..Acc::default() }).collect())
    }
}

fn sum_accs(accs: Vec<Acc>) -> Totals {
    let mut total = Totals::default();
    let mut sinks = Vec::with_capacity(accs.len());
    for a in accs {
        total.tally.merge(&a.tally);
        total.max_period = total.max_period.max(a.max_period);
        total.input_rows += a.input_rows;
        total.input_amount += a.input_amount;
        sinks.push(a.cells);
    }
    total.cells = CellSink::total(sinks);
    total
}

pub fn run(spec: Spec, inputs: Inputs<'_>, hooks: &dyn Hooks) -> Result<CohortResult> {
    spec.validate()?;
    let kind = PeriodKind::parse(&spec.period)?;
    let cal = Calendar::new(kind, &spec.tz)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.threads)
        .thread_name(|i| format!("ltrcore-{i}"))
        .build()
        .map_err(|e| CoreError::Internal(format!("thread pool: {e}")))?;
    let threads = spec.threads;
    let strict = spec.strict;
    let names = spec.clone();
    let tracks_segments = spec.segment.is_some();
    let mut runner = Runner {
        spec,
        cal,
        pool,
        hooks,
        interner: Interner::default(),
        family: None,
        shards: (0..threads).map(|_| Users::new(tracks_segments)).collect(),
        threads,
        ts_kind: None,
    };
    let Inputs { orders, signups, activity, segment_ranks } = inputs;
    let orders_names = |segment| ColumnNames {
        table: "orders",
        user: &names.user,
        ts: &names.ts,
        amount: Some(&names.amount),
        segment,
    };

    // Pass 1: who belongs to which cohort.
    if let Some(src) = signups {
        let stream = Stream::open("signups", src)?;
        let set = runner.columns(
            &stream,
            ColumnNames {
                table: "signups",
                user: &names.user,
                ts: &names.signup_ts,
                amount: None,
                segment: names.segment.as_deref(),
            },
        )?;
        let accs = runner.fresh_accs(0)?;
        let accs = runner.scan(stream, &set, "signups", None, accs, &SignupPass { set: &set, strict })?;
        let signup_acc = sum_accs(accs);
        resolve_ties(&mut runner, segment_ranks)?;
        let stream = Stream::open("orders", orders)?;
        let orders_set = runner.columns(&stream, orders_names(None))?;
        return finish(runner, stream, orders_set, true, Some(signup_acc), activity);
    }

    // First-purchase cohorts: the earliest paying order of each user.
    let stream = Stream::open("orders", orders)?;
    let orders_set = runner.columns(&stream, orders_names(names.segment.as_deref()))?;
    let paying = Paying::new(runner.spec.min_amount, orders_set.scale);
    let schema = stream.schema.clone();
    let mut kept = Vec::new();
    let keep = if orders.reopenable() { None } else { Some(&mut kept) };
    // The trail costs half a byte per row: fine when the rows are in memory anyway.
    if orders.held_in_memory() || !orders.reopenable() {
        runner.shards.iter_mut().for_each(Users::record_trail);
    }
    let accs = runner.fresh_accs(0)?;
    let pass = FirstPurchasePass { set: &orders_set, strict, paying };
    runner.scan(stream, &orders_set, "orders: first purchases", keep, accs, &pass)?;
    resolve_ties(&mut runner, segment_ranks)?;
    let second = if orders.reopenable() {
        // Columns were found by position in the first reading: the second must have the same.
        let again = Stream::open("orders", orders)?;
        if let Some(what) = schema_mismatch(&schema, &again.schema) {
            return Err(CoreError::Stream {
                table: "orders".into(),
                message: format!("the source changed between its two readings: the second reading {what}"),
            });
        }
        again
    } else {
        Stream::replay("orders", schema, kept)
    };
    finish(runner, second, orders_set, false, None, activity)
}

/// A user whose earliest rows tie on the timestamp takes the smallest of their segments (see
/// `Inputs::segment_ranks`). The ranks are asked for only when some user has such a tie.
fn resolve_ties(runner: &mut Runner<'_>, segment_ranks: Option<&mut dyn FnMut() -> Result<Vec<u32>>>) -> Result<()> {
    if !runner.shards.iter().any(Users::has_ties) {
        return Ok(());
    }
    let ranks = match segment_ranks {
        Some(ranks) => Some(ranks()?),
        None => None,
    };
    let rank = |code: u32| ranks.as_ref().map_or(code, |r| r.get(code as usize).copied().unwrap_or(u32::MAX));
    runner.shards.iter_mut().for_each(|users| users.resolve_ties(rank));
    Ok(())
}

/// The period holding a caller's time point, which must be a date in the supported range.
fn period_of_point(point: TimePoint, cal: &Calendar, name: &str) -> Result<i32> {
    let (kind, micros) = match point {
        TimePoint::InstantMicros(us) => (TsKind::Instant(arrow_schema::TimeUnit::Microsecond), us),
        TimePoint::LocalMicros(us) => (TsKind::Local(arrow_schema::TimeUnit::Microsecond), us),
    };
    match kind.local_day(micros, cal) {
        Some(day) => Ok(cal.period_of_day(day)),
        None => Err(CoreError::InvalidArgument(format!("{name} is outside the supported years 1-9999"))),
    }
}

fn bad_row_error(set: &ColumnSet, reason: Reason, row: u64) -> CoreError {
    let column = match reason {
        Reason::NullUser => set.user.1.clone(),
        Reason::NullTs | Reason::TsOutOfRange => set.ts.1.clone(),
        _ => set.amount.as_ref().map(|a| a.1.clone()).unwrap_or_default(),
    };
    let what = match reason {
        Reason::NanAmount => "a NaN or infinite value",
        Reason::TsOutOfRange => "a timestamp whose local date is outside the supported years 1-9999",
        _ => "a null",
    };
    CoreError::BadRow { table: set.table.clone(), column, what: what.to_string(), row }
}

/// With `LTRCORE_TRACE` set, prints how long a step took (for profiling; off by default).
fn trace(step: &str, since: Instant) {
    if std::env::var_os("LTRCORE_TRACE").is_some() {
        eprintln!("ltrcore: {step} in {:?}", since.elapsed());
    }
}

fn status_reason(st: u8) -> Reason {
    match st {
        status::NULL_USER => Reason::NullUser,
        status::NULL_TS => Reason::NullTs,
        status::TS_OUT_OF_RANGE => Reason::TsOutOfRange,
        status::NULL_AMOUNT => Reason::NullAmount,
        _ => Reason::NanAmount,
    }
}

#[inline]
fn seg(share: &Share, k: u32) -> u32 {
    share.segment.get(k as usize).copied().unwrap_or(0)
}

/// Counts a bad-data row under its reason, or fails under `strict`.
fn count_bad(reason: Reason, amount: i64, strict: bool, acc: &mut Acc, set: &ColumnSet, row: u64) -> Result<()> {
    if strict {
        return Err(bad_row_error(set, reason, row));
    }
    acc.tally.add(reason, amount);
    Ok(())
}

/// A few recent lookups of a (segment, cohort) pair, direct-mapped: users come in hash order but
/// share few distinct groups, so nearly every lookup is a repeat and skips the hash map.
struct GroupMemo {
    slots: [Option<((u32, i32), u32)>; 64],
}

impl GroupMemo {
    fn new() -> Self {
        GroupMemo { slots: [None; 64] }
    }

    #[inline]
    fn get_or(&mut self, key: (u32, i32), miss: impl FnOnce() -> u32) -> u32 {
        let slot = &mut self.slots[(key.0 as usize).wrapping_mul(31).wrapping_add(key.1 as usize) & 63];
        match *slot {
            Some((k, v)) if k == key => v,
            _ => {
                let v = miss();
                *slot = Some((key, v));
                v
            }
        }
    }
}

/// What the users' bitsets give: per group the cohort size, customers (a paying order in a complete
/// cell) and repeaters (two or more), per cell the payers and the actives.
struct UserCounts {
    sizes: Vec<u64>,
    repeaters: Vec<u64>,
    customers: Vec<u64>,
    payers: Vec<u64>,
    active: Vec<u64>,
}

impl UserCounts {
    fn new(groups: usize, cells: usize) -> Self {
        UserCounts {
            sizes: vec_or_unwind(groups, 0, "the cohort sizes"),
            repeaters: vec_or_unwind(groups, 0, "the cohort sizes"),
            customers: vec_or_unwind(groups, 0, "the cohort sizes"),
            payers: vec_or_unwind(cells, 0, "the payers per cell"),
            active: vec_or_unwind(cells, 0, "the actives per cell"),
        }
    }

    fn add(&mut self, other: &UserCounts) {
        for (x, y) in [
            (&mut self.sizes, &other.sizes),
            (&mut self.repeaters, &other.repeaters),
            (&mut self.customers, &other.customers),
            (&mut self.payers, &other.payers),
            (&mut self.active, &other.active),
        ] {
            for (p, q) in x.iter_mut().zip(y) {
                *p += q;
            }
        }
    }
}

/// Counts every shard's users in parallel (run under `watched`). Per-cell counts follow the cells'
/// memory model: a private copy per shard while the copies fit `budget`, else one
/// shared copy that each shard adds its users' ages to, `PENDING_ROWS` at a time, under a lock.
#[allow(clippy::too_many_arguments)]
fn count_users(
    shards: &[Users],
    n_groups: usize,
    h: usize,
    complete_ages: &[usize],
    has_activity: bool,
    budget: usize,
    stop: &AtomicBool,
) -> UserCounts {
    let n_cells = n_groups * h;
    let private = n_cells.saturating_mul(2 * size_of::<u64>()).saturating_mul(shards.len()) <= budget;
    let shared = Mutex::new(UserCounts::new(0, if private { 0 } else { n_cells }));
    let add_shared = |pending: &mut Vec<(usize, bool)>| {
        let mut counts = shared.lock().unwrap_or_else(PoisonError::into_inner);
        for (cell, is_active) in pending.drain(..) {
            if is_active {
                counts.active[cell] += 1;
            } else {
                counts.payers[cell] += 1;
            }
        }
    };
    let per_shard: Vec<UserCounts> = shards
        .par_iter()
        .map(|users| {
            let mut c = UserCounts::new(n_groups, if private { n_cells } else { 0 });
            let mut pending: Vec<(usize, bool)> = Vec::new();
            let mut stop = StopCheck::new(stop);
            users.for_each_user(|g, bits| {
                stop.check();
                let g = g as usize;
                c.sizes[g] += 1;
                let paid_complete = bits.count_below(PAID, complete_ages[g]);
                let multi_complete = bits.count_below(MULTI, complete_ages[g]) > 0;
                c.repeaters[g] += u64::from(paid_complete >= 2 || multi_complete);
                c.customers[g] += u64::from(paid_complete >= 1);
                let cells = g * h..(g + 1) * h;
                if private {
                    bits.count_ages(PAID, &mut c.payers[cells.clone()]);
                    if has_activity {
                        bits.count_ages(ACTIVE, &mut c.active[cells]);
                    }
                } else {
                    bits.for_each_age(PAID, |a| pending.push((g * h + a, false)));
                    if has_activity {
                        bits.for_each_age(ACTIVE, |a| pending.push((g * h + a, true)));
                    }
                    if pending.len() >= PENDING_ROWS {
                        add_shared(&mut pending);
                    }
                }
            });
            add_shared(&mut pending);
            c
        })
        .collect();
    let mut total = UserCounts::new(n_groups, if private { n_cells } else { 0 });
    for c in &per_shard {
        total.add(c);
    }
    if !private {
        let shared = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
        (total.payers, total.active) = (shared.payers, shared.active);
    }
    total
}

/// Groups: the distinct (segment, cohort) pairs, sorted; seals every shard's users.
fn seal_groups(runner: &mut Runner<'_>, kinds: usize) -> Result<Vec<(u32, i32)>> {
    let cal = &runner.cal;
    let kind = runner.ts_kind.unwrap_or(TsKind::Date32);
    let band = kind.band();
    type GroupSet = hashbrown::HashSet<(u32, i32), foldhash::fast::FixedState>;
    let shards = &mut runner.shards;
    let distinct: GroupSet = watched(&runner.pool, runner.hooks, "cohorts", |stop| {
        shards
            .par_iter_mut()
            .map(|users| {
                let mut set = GroupSet::default();
                let mut memo = GroupMemo::new();
                let mut stop = StopCheck::new(stop);
                users.map_firsts(|ts, segment| {
                    stop.check();
                    let period = kind.period(band, ts, cal);
                    let g = (segment, period);
                    memo.get_or(g, || {
                        set.insert(g);
                        0
                    });
                    i64::from(period)
                });
                set
            })
            .reduce(GroupSet::default, |mut a, b| {
                a.extend(b);
                a
            })
    })?;
    let mut groups: Vec<(u32, i32)> = distinct.into_iter().collect();
    groups.sort_unstable();
    let n_groups = u32::try_from(groups.len()).map_err(|_| out_of_memory(usize::MAX, "more than 2^32 cohort groups"))?;
    let index: HashMap<(u32, i32), u32, foldhash::fast::FixedState> = groups.iter().zip(0..n_groups).map(|(&g, i)| (g, i)).collect();
    let horizon = runner.spec.horizon as usize;
    let shards = &mut runner.shards;
    watched(&runner.pool, runner.hooks, "cohorts", |stop| {
        shards.par_iter_mut().for_each(|users| {
            let mut memo = GroupMemo::new();
            let mut stop = StopCheck::new(stop);
            users.seal(
                |period, segment| {
                    stop.check();
                    // `map_firsts` above stored the period, an i32, in the i64.
                    #[allow(clippy::cast_possible_truncation)]
                    let g = (segment, period as i32);
                    memo.get_or(g, || index[&g])
                },
                groups.len(),
                horizon,
                kinds,
            );
        })
    })?;
    Ok(groups)
}

fn finish(
    mut runner: Runner<'_>,
    stream: Stream,
    orders_set: ColumnSet,
    has_signups: bool,
    signup_acc: Option<Totals>,
    activity: Option<&mut dyn BatchSource>,
) -> Result<CohortResult> {
    let horizon = runner.spec.horizon;
    let strict = runner.spec.strict;
    let sealing = Instant::now();
    let groups = seal_groups(&mut runner, if activity.is_some() { 3 } else { 2 })?;
    runner.shards.iter_mut().for_each(Users::replay_trail);
    trace("seal", sealing);
    let group_cohort: Vec<i32> = groups.iter().map(|g| g.1).collect();
    let n_cells = groups.len() * horizon as usize;
    let paying = Paying::new(runner.spec.min_amount, orders_set.scale);
    let missing = if has_signups { Reason::UnknownUser } else { Reason::NeverPaid };

    // Pass 2: orders into cells.
    let at = Attribution { horizon, group_cohort: &group_cohort, missing };
    let accs = runner.fresh_accs(n_cells)?;
    let pass = OrdersPass { set: &orders_set, strict, paying, at };
    let accs = runner.scan(stream, &orders_set, "orders", None, accs, &pass)?;
    runner.shards.iter_mut().for_each(Users::end_trail);
    let orders_acc = sum_accs(accs);

    // Pass 3: activity.
    let activity_acc = match activity {
        Some(src) => {
            let stream = Stream::open("activity", src)?;
            let (user, ts) = (runner.spec.user.clone(), runner.spec.activity_ts.clone());
            let names = ColumnNames { table: "activity", user: &user, ts: &ts, amount: None, segment: None };
            let set = runner.columns(&stream, names)?;
            let at = Attribution { horizon, group_cohort: &group_cohort, missing: Reason::UnknownUser };
            let accs = runner.fresh_accs(n_cells)?;
            let accs = runner.scan(stream, &set, "activity", None, accs, &ActivityPass { set: &set, strict, at })?;
            Some(sum_accs(accs))
        }
        None => None,
    };

    let finalizing = Instant::now();
    let result = finalize(runner, groups, orders_set.scale, has_signups, orders_acc, signup_acc, activity_acc);
    trace("finalize", finalizing);
    result
}

fn finalize(
    runner: Runner<'_>,
    groups: Vec<(u32, i32)>,
    scale: u8,
    has_signups: bool,
    orders: Totals,
    signups: Option<Totals>,
    activity: Option<Totals>,
) -> Result<CohortResult> {
    let h = runner.spec.horizon as usize;
    let cal = &runner.cal;
    let last_complete = match runner.spec.as_of {
        Some(point) => Some(period_of_point(point, cal, "as_of")? - 1),
        None => orders.max_period.map(|p| p - 1),
    };
    let first_usable = match runner.spec.since {
        Some(point) => {
            period_of_point(point, cal, "since")?;
            Some(match point {
                TimePoint::InstantMicros(us) => cal.first_period_starting_at_or_after_instant(us),
                TimePoint::LocalMicros(us) => cal.first_period_starting_at_or_after_local(us),
            })
        }
        None => None,
    };
    // Both are reported as the first day of a period, which must be a date in the supported range.
    if last_complete.is_some_and(|p| !day_in_range(cal.first_day(p))) {
        return Err(CoreError::InvalidArgument(
            "as_of (by default, the last order's period) falls in the first period of the supported years 1-9999, so no period before it is complete".into(),
        ));
    }
    if first_usable.is_some_and(|p| !day_in_range(cal.first_day(p))) {
        return Err(CoreError::InvalidArgument(
            "since falls in the last period of the supported years 1-9999, so no whole period starts after it".into(),
        ));
    }
    let lc = last_complete.map_or(i64::MIN, |p| p as i64);
    let fu = first_usable.map_or(i64::MIN, |p| p as i64);
    let is_complete = |cohort: i32, age: usize| cohort as i64 + age as i64 <= lc;
    let classify = |cohort: i32, age: usize| {
        if (cohort as i64) < fu {
            Reason::BeforeSince
        } else if !is_complete(cohort, age) {
            Reason::NotYetComplete
        } else {
            Reason::Used
        }
    };

    // Per-user counts: cohort sizes, payers and actives per cell, repeaters.
    let n_groups = groups.len();
    // Complete ages form a prefix: how many there are in each group.
    let complete_ages: Vec<usize> = groups.iter().map(|&(_, c)| (0..h).take_while(|&a| is_complete(c, a)).count()).collect();
    let has_activity = activity.is_some();
    let shards = &runner.shards;
    let budget = runner.spec.cells_budget;
    let counts = watched(&runner.pool, runner.hooks, "finalizing", |stop| {
        count_users(shards, n_groups, h, &complete_ages, has_activity, budget, stop)
    })?;
    let UserCounts { sizes, repeaters, customers, payers, active } = counts;

    // Cells: reclassify by completeness, and the reported arrays.
    let cells = &orders.cells;
    let mut orders_tally = orders.tally.clone();
    let mut activity_tally = activity.as_ref().map(|a| a.tally.clone());
    let mut signup_tally = signups.as_ref().map(|s| s.tally.clone());
    let mut cohorts = Vec::new();
    let mut out = CellsOut::default();
    for (g, &(segment, cohort)) in groups.iter().enumerate() {
        for a in 0..h {
            let i = g * h + a;
            let reason = classify(cohort, a);
            orders_tally.add_many(reason, cells.rows[i], cells.net(i));
            if let (Some(t), Some(act)) = (activity_tally.as_mut(), activity.as_ref()) {
                t.add_many(reason, act.cells.activity_rows[i], 0);
            }
        }
        if let Some(t) = signup_tally.as_mut() {
            t.add_many(classify(cohort, 0), sizes[g], 0);
        }
        let reported = cohort as i64 >= fu && is_complete(cohort, 0);
        if !reported {
            continue;
        }
        cohorts.push(CohortOut {
            segment,
            cohort,
            first_day: runner.cal.first_day(cohort),
            size: sizes[g],
            customers: customers[g],
            repeaters: repeaters[g],
        });
        for a in 0..h {
            let i = g * h + a;
            let done = is_complete(cohort, a);
            out.complete.push(done);
            let z = |v: u64| if done { v } else { 0 };
            let zi = |v: i128| if done { v } else { 0 };
            out.revenue.push(zi(cells.net(i)));
            out.gross.push(zi(cells.gross[i]));
            out.refunds.push(zi(cells.refunds[i]));
            out.orders.push(z(cells.orders[i]));
            out.payers.push(z(payers[i]));
            out.active.push(z(activity.as_ref().map_or(0, |_| active[i])));
        }
    }
    // Every row must be accounted for, exactly.
    if orders_tally.total_rows() != orders.input_rows || orders_tally.total_amount() != orders.input_amount {
        return Err(CoreError::Internal(format!(
            "reconciliation does not add up: {} rows / {} amount counted, {} rows / {} amount read",
            orders_tally.total_rows(),
            orders_tally.total_amount(),
            orders.input_rows,
            orders.input_amount
        )));
    }
    let mut bad_rows = orders_tally.bad_rows();
    for t in [&signup_tally, &activity_tally].into_iter().flatten() {
        bad_rows += t.bad_rows();
    }
    for (t, acc) in [(&signup_tally, &signups), (&activity_tally, &activity)] {
        if let (Some(t), Some(acc)) = (t, acc) {
            if t.total_rows() != acc.input_rows {
                return Err(CoreError::Internal(format!(
                    "reconciliation does not add up: {} rows counted, {} read",
                    t.total_rows(),
                    acc.input_rows
                )));
            }
        }
    }
    Ok(CohortResult {
        horizon: runner.spec.horizon,
        scale,
        period: runner.cal.kind,
        cohorts,
        cells: out,
        has_activity: activity.is_some(),
        orders_reconciliation: orders_tally.lines(if has_signups {
            &ORDER_REASONS_SIGNUPS
        } else {
            &ORDER_REASONS_FIRST_PURCHASE
        }),
        signups_reconciliation: signup_tally.map(|t| t.lines(&SIGNUP_REASONS)),
        activity_reconciliation: activity_tally.map(|t| t.lines(&ACTIVITY_REASONS)),
        last_complete_period: last_complete,
        first_usable_period: first_usable,
        input_rows: orders.input_rows,
        input_amount: orders.input_amount,
        bad_rows,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::error::AllocFailure;

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
        let names = ColumnNames { table: "orders", user: "user_id", ts: "ts", amount: Some("amount"), segment: None };
        let set = ColumnSet::resolve(&schema, &names, 4).unwrap();
        let view = BatchView::new(&batch, &set, &mut Interner::default(), &mut || Ok(())).unwrap();
        let cal = Calendar::new(PeriodKind::Month, "UTC").unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut shards: Vec<Users> = (0..threads).map(|_| Users::new(false)).collect();
        let mut accs: Vec<Acc> = (0..threads).map(|_| Acc::default()).collect();
        let shares: Vec<[RwLock<Share>; 2]> = (0..threads).map(|_| Default::default()).collect();
        let round = Round { view: &view, cal: &cal, want: pass.want(), pass, shares: &shares, rows: 0..rows, step, row0: 0 };
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
    fn paying_is_decided_exactly_whatever_min_amount() {
        let at = |min_amount, scale| Paying::new(min_amount, scale);
        // 0.57 at scale 2: 57 does not pay, 58 does.
        assert!(!at((57, -2), 2).pays(57) && at((57, -2), 2).pays(58));
        // 0.575 at scale 2: the floor is 57, so 57 does not pay and 58 does.
        assert!(!at((575, -3), 2).pays(57) && at((575, -3), 2).pays(58));
        // -0.5 at scale 0: the floor is -1, so 0 pays and -1 does not.
        assert!(at((-5, -1), 0).pays(0) && !at((-5, -1), 0).pays(-1));
        // Below every i64: everything pays, i64::MIN too. Above every i64: nothing pays.
        assert!(at((-1, 30), 0).pays(i64::MIN));
        assert!(!at((1, 30), 0).pays(i64::MAX));
        assert!(!at((i64::MIN.into(), 0), 0).pays(i64::MIN) && at((i64::MIN.into(), 0), 0).pays(i64::MIN + 1));
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
