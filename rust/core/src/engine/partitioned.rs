//! First-purchase cohorts over orders held in memory, with the rows partitioned by user first
//! (issue 15; docs/engine.md, "Radix partitioning"). The engine's usual passes cost about one cache
//! miss per row each, against tables that outgrow the caches as users grow. Here every valid row is
//! decoded once into a small record and scattered to its user's partition; each partition then runs
//! **both** passes on its own records against a table of its own users, which stay in cache between
//! the two. The same kernel (`Users`) does the work, so the numbers are the plain path's.
//!
//! Two things make both passes possible before every cohort is known:
//! * groups are provisional: a user's group is its cohort period's offset from the earliest period
//!   of any valid row (a cohort lies between the earliest and the latest), and the groups no user
//!   joined are dropped at the end (`Partial::without_empty_groups`);
//! * without segments, the earliest paying order's period is the earliest period of a paying
//!   order, so the first pass keeps periods, not timestamps (periods never decrease with time).
//!
//! Memory: the records take 24 bytes a row. When they would not fit in a third of the input's Arrow
//! bytes, the rows are read in several sweeps, each keeping only the records of a range of
//! partitions, so that the run's peak stays within the input + 50 % (issue 15's target).

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use arrow_array::{Array, RecordBatch};
use rayon::prelude::*;

use super::exec::{watched, StopCheck};
use super::passes::{count_bad, status_reason, sum_accs, Acc, OrdersPass, Pass, BLOCK_ROWS};
use super::{assemble, trace, Runner};
use crate::columns::{status, BatchAt, BatchView, ColumnSet, Decoded, UserFamily, Want};
use crate::error::{CoreError, Result};
use crate::kernel::{Attribution, CellAdd, CellRec, CellSink, FirstRec, IdMap, Users};
use crate::partial::Partial;
use crate::reconcile::Reason;

use super::passes::Paying;

/// A valid order as both passes read it.
#[derive(Clone, Copy)]
struct Order {
    user: u64,
    amount: i64,
    period: i32,
}

/// Orders per chunk of a partition's list: a partition's next write lands in one of a few hundred
/// chunk ends, which stay in cache while the rows stream through.
const CHUNK: usize = 512;

/// Rows per partition aimed at: a partition's users' table and records then fit in L2.
const ROWS_PER_PARTITION: usize = 16 * 1024;

/// Cells of the provisional grid above which the plain path is kept (a long daily history).
const MAX_PROVISIONAL_CELLS: usize = 1 << 20;

/// Orders below this use the plain path unless `LTRCORE_PARTITIONED=1` (the scatter's fixed costs).
const MIN_ROWS: usize = 1 << 21;

/// Whether the job can take this path: first-purchase cohorts (the caller checks), orders in
/// memory, no segments, costs or activity, integer ids, hashed, and not strict (the plain path
/// reports the first bad row it meets; this one would meet another first).
pub(crate) fn eligible(runner: &Runner<'_>, set: &ColumnSet, held_in_memory: bool, has_activity: bool) -> bool {
    held_in_memory
        && !has_activity
        && set.segment.is_none()
        && set.cost.is_none()
        && set.family != UserFamily::Str
        && !runner.spec.strict
        && matches!(runner.ids, IdMap::Hashed)
        && std::env::var("LTRCORE_PARTITIONED").as_deref() != Ok("0")
}

/// Whether an eligible job is large enough to gain. `LTRCORE_PARTITIONED=1` takes the path at any
/// size (tests, A/B), `=0` never.
pub(crate) fn large_enough(rows: usize) -> bool {
    rows >= MIN_ROWS || std::env::var("LTRCORE_PARTITIONED").as_deref() == Ok("1")
}

/// One worker's records of one sweep: for each partition of the sweep, its chunks.
struct Scattered {
    parts: Vec<Vec<Vec<Order>>>,
}

/// The whole run, or `None` when the provisional grid would be too large (the caller then takes
/// the plain path; nothing here has touched the runner's state).
pub(crate) fn first_purchase(runner: &mut Runner<'_>, batches: &[RecordBatch], set: &ColumnSet, paying: Paying) -> Result<Option<Partial>> {
    let started = Instant::now();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let input_bytes: usize = batches.iter().map(|b| b.columns().iter().map(|c| c.get_array_memory_size()).sum::<usize>()).sum();
    let partitions = (rows / ROWS_PER_PARTITION).clamp(16, 4096).next_power_of_two();
    let record_bytes = rows.saturating_mul(size_of::<Order>());
    let sweeps = record_bytes.div_ceil((input_bytes / 3).max(1)).clamp(1, partitions);
    let sweeps = std::env::var("LTRCORE_SWEEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(sweeps);
    let threads = runner.threads;
    let horizon = runner.spec.horizon;
    let h = horizon as usize;

    // The views once for every sweep (integer ids: nothing to intern).
    let mut views = Vec::with_capacity(batches.len());
    let mut row0 = 0u64;
    for batch in batches {
        let at = BatchAt { cal: &runner.cal, first_row: row0, strict: false };
        let view = BatchView::new(batch, set, &mut runner.interner, at, &mut || Ok(()))?;
        if runner.ts_kind.is_none() {
            runner.ts_kind = Some(view.ts_kind());
        }
        views.push(view);
        row0 += batch.num_rows() as u64;
    }
    let starts: Vec<usize> = views.iter().scan(0, |at, v| Some(std::mem::replace(at, *at + v.len))).collect();

    let pass = OrdersPass { set, strict: false, paying, at: Attribution { horizon, group_cohort: &[], missing: Reason::NeverPaid } };
    let mut tables: Vec<Option<Users>> = (0..partitions).map(|_| None).collect();
    let mut grid: Option<(i32, Vec<i32>, Vec<Mutex<Acc>>)> = None;
    for sweep in 0..sweeps {
        let range = sweep * partitions / sweeps..(sweep + 1) * partitions / sweeps;
        let (cal, views, starts) = (&runner.cal, &views, &starts);
        let first = sweep == 0;
        let scatter_started = Instant::now();
        let outs: Vec<Result<(Scattered, Acc, Option<i32>)>> = watched(&runner.pool, runner.hooks, "orders", |stop| {
            (0..threads)
                .into_par_iter()
                .map(|w| scatter(views, starts, cal, &pass, w * rows / threads..(w + 1) * rows / threads, partitions, range.clone(), first, stop))
                .collect()
        })?;
        let mut scattered = Vec::with_capacity(threads);
        let mut summaries = Vec::with_capacity(threads);
        let mut min_period: Option<i32> = None;
        for out in outs {
            let (s, acc, min) = out?;
            scattered.push(s);
            summaries.push(acc);
            min_period = match (min_period, min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        trace(&format!("partitioned: sweep {sweep} scattered"), scatter_started);
        if first {
            // The provisional groups: every period from the earliest valid row's to the latest's.
            let max_period = summaries.iter().filter_map(|a| a.max_period).max();
            let (lo, n_groups) = match (min_period, max_period) {
                (Some(lo), Some(hi)) => (lo, usize::try_from(i64::from(hi) - i64::from(lo) + 1).unwrap_or(usize::MAX)),
                _ => (0, 0),
            };
            if n_groups.saturating_mul(h) > MAX_PROVISIONAL_CELLS {
                trace("partitioned: grid too large, plain path", started);
                return Ok(None);
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // n_groups ≤ MAX_PROVISIONAL_CELLS
            let cohorts: Vec<i32> = (0..n_groups).map(|g| lo + g as i32).collect();
            let accs = runner.fresh_accs(n_groups * h)?;
            let accs = accs
                .into_iter()
                .zip(summaries)
                .map(|(mut acc, summary)| {
                    acc.tally.merge(&summary.tally);
                    acc.max_period = summary.max_period;
                    acc.input_rows = summary.input_rows;
                    acc.input_amount = summary.input_amount;
                    Mutex::new(acc)
                })
                .collect();
            grid = Some((lo, cohorts, accs));
        }
        let Some((lo, cohorts, accs)) = &grid else { unreachable!("the grid is set by the first sweep") };
        let at = Attribution { horizon, group_cohort: cohorts, missing: Reason::NeverPaid };
        let processing = Instant::now();
        let done: Vec<(usize, Users)> = watched(&runner.pool, runner.hooks, "orders", |stop| {
            range
                .clone()
                .into_par_iter()
                .map(|p| {
                    let mut stop = StopCheck::new(stop);
                    let orders = || scattered.iter().flat_map(|s| s.parts[p - range.start].iter()).flatten();
                    let rows: usize = scattered.iter().flat_map(|s| s.parts[p - range.start].iter()).map(Vec::len).sum();
                    let users = both_passes(orders, rows / 16, paying, *lo, &at, accs, &mut stop);
                    (p, users)
                })
                .collect()
        })?;
        for (p, users) in done {
            tables[p] = Some(users);
        }
        trace(&format!("partitioned: sweep {sweep} of {sweeps}, partitions {range:?} of {partitions}"), processing);
        runner.hooks.tick("orders", (sweep as u64 + 1) * rows as u64 / sweeps as u64, false)?;
    }
    runner.hooks.tick("orders", rows as u64, true)?;
    let Some((lo, _, accs)) = grid else { unreachable!("at least one sweep") };
    runner.shards = tables.into_iter().map(|t| t.unwrap_or_else(|| Users::new(false))).collect();
    let orders_acc = sum_accs(accs.into_iter().map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner)).collect());
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // below the checked grid size
    let groups: Vec<(u32, i32)> = (0..orders_acc.cells.rows.len() / h.max(1)).map(|g| (0, lo + g as i32)).collect();
    let partial = assemble(runner, groups, orders_acc, set.scale, None, None)?;
    trace("partitioned: both passes", started);
    partial.without_empty_groups().map(Some)
}

/// Decodes worker `w`'s rows and keeps the records of the partitions in `keep`; on the first
/// sweep it also sums the rows (`OrdersPass::summarize`), counts the bad rows, and finds the
/// earliest period of a valid row.
#[allow(clippy::too_many_arguments)]
fn scatter(
    views: &[BatchView<'_>],
    starts: &[usize],
    cal: &crate::calendar::Calendar,
    pass: &OrdersPass<'_>,
    rows: std::ops::Range<usize>,
    partitions: usize,
    keep: std::ops::Range<usize>,
    first: bool,
    stop: &AtomicBool,
) -> Result<(Scattered, Acc, Option<i32>)> {
    let mut parts: Vec<Vec<Vec<Order>>> = (0..keep.len()).map(|_| vec![Vec::with_capacity(CHUNK)]).collect();
    let mut acc = Acc::default();
    let mut min_period: Option<i32> = None;
    let mut block = Decoded::default();
    let mut stop = StopCheck::new(stop);
    let want = Want { ts: false, period: true };
    for (view, &start) in views.iter().zip(starts) {
        let lo = rows.start.max(start);
        let hi = rows.end.min(start + view.len);
        for at in (lo..hi).step_by(BLOCK_ROWS) {
            stop.check();
            let end = hi.min(at + BLOCK_ROWS);
            // As the plain scan does: the next block's rows, one block ahead.
            view.prefetch(end - start, hi.min(end + BLOCK_ROWS) - start);
            view.decode(at - start, end - start, cal, want, &mut block)?;
            block.base = at as u64;
            if first {
                pass.summarize(&block, &mut acc);
            }
            for k in 0..block.len() {
                if !block.all_valid && block.status[k] != status::VALID {
                    if first {
                        count_bad(status_reason(block.status[k]), block.amount[k], false, &mut acc, pass.set, block.base + k as u64)?;
                    }
                    continue;
                }
                let period = block.period[k];
                if first {
                    min_period = Some(min_period.map_or(period, |m| m.min(period)));
                }
                let (user, p) = IdMap::Hashed.place(block.key[k], partitions);
                if keep.contains(&p) {
                    let chunks = &mut parts[p - keep.start];
                    let last = chunks.last_mut().filter(|c| c.len() < CHUNK);
                    let chunk = match last {
                        Some(c) => c,
                        None => {
                            chunks.push(Vec::with_capacity(CHUNK));
                            chunks.last_mut().ok_or_else(|| CoreError::Internal("a partition without chunks".into()))?
                        }
                    };
                    chunk.push(Order { user, amount: block.amount[k], period });
                }
            }
        }
    }
    Ok((Scattered { parts }, acc, min_period))
}

/// Both passes over one partition's orders, against a table of its own users: the earliest paying
/// period of each user, its provisional group (`period − lo`), then every order into the cells.
fn both_passes<'o, I: Iterator<Item = &'o Order>>(
    orders: impl Fn() -> I,
    expected_users: usize,
    paying: Paying,
    lo: i32,
    at: &Attribution<'_>,
    accs: &[Mutex<Acc>],
    stop: &mut StopCheck<'_>,
) -> Users {
    let mut users = Users::for_partition(expected_users);
    for o in orders() {
        stop.check();
        if paying.pays(o.amount) {
            users.assign(&FirstRec { user: o.user, ts: i64::from(o.period), segment: 0 });
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // lo ≤ every period; the grid's size was checked
    users.seal(|period, _| (period - i64::from(lo)) as u32, at.group_cohort.len(), at.horizon as usize, 2);
    let worker = rayon::current_thread_index().unwrap_or(0) % accs.len();
    let mut acc = accs[worker].lock().unwrap_or_else(PoisonError::into_inner);
    let Acc { tally, cells, .. } = &mut *acc;
    fn attribute<'o>(users: &mut Users, orders: impl Iterator<Item = &'o Order>, paying: Paying, at: &Attribution<'_>, cells: &mut impl CellAdd, tally: &mut crate::reconcile::Tally, stop: &mut StopCheck<'_>) {
        for o in orders {
            stop.check();
            let rec = CellRec { user: o.user, amount: o.amount, profit: 0, period: o.period, paying: paying.pays(o.amount) };
            users.attribute_order(&rec, at, cells, tally);
        }
    }
    match cells {
        CellSink::Private(cells) => attribute(&mut users, orders(), paying, at, cells, tally, stop),
        CellSink::Shared(cells) => attribute(&mut users, orders(), paying, at, cells, tally, stop),
    }
    users
}
