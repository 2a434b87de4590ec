//! One run: the passes over the inputs into a `Partial` (`accumulate`), then the cut-off by
//! `as_of`/`since` and the final arrays (`Partial::finalize`; `run` does both).
//!
//! Passes: cohorts first (signups, or the paying orders of first-purchase cohorts), then orders are
//! attributed to cells, then activity. Each pass streams batches in steps of rows, grouped in rounds
//! (see `Runner::scan`): workers decode a step in parallel, then each user shard takes its rows (see
//! `kernel`). Completeness is decided only at the end, so one pass suffices even when `as_of`
//! defaults to the last order's period.

use std::sync::RwLock;
use std::time::Instant;

use arrow_array::{RecordBatch, RecordBatchReader};

use crate::calendar::{Calendar, PeriodKind};
use crate::columns::{BatchAt, BatchView, ColumnNames, ColumnSet, Interner, KeyBounds, TsKind, UserFamily};
use crate::error::{CoreError, Result};
use crate::kernel::{dense_ids, Attribution, CellSink, IdMap, Users};
use crate::partial::{CohortKind, Partial, PartialCells, TableTotals};
use crate::reconcile::Reason;

mod exec;
mod groups;
mod output;
mod passes;
mod spec;

use exec::{run_round, Round, STEPS_PER_ROUND, TICK_EVERY};
use groups::{resolve_ties, seal_groups};
use output::count_users;
use passes::{sum_accs, Acc, ActivityPass, FirstPurchasePass, OrdersPass, Pass, Share, SignupPass, Totals};

pub use output::{period_of_point, CellsOut, CohortOut, CohortResult, ReconLines, ACTIVITY_REASONS, ORDER_REASONS_FIRST_PURCHASE, ORDER_REASONS_SIGNUPS, SIGNUP_REASONS};
pub use passes::Paying;
pub(crate) use exec::watched;
pub(crate) use passes::{bad_row_error, status_reason};
pub use spec::{BatchSource, CutOff, Hooks, Inputs, Spec, TimePoint, DEFAULT_CELLS_BUDGET, MAX_CHUNK_ROWS};

pub(crate) struct Runner<'h> {
    pub(crate) spec: Spec,
    pub(crate) cal: Calendar,
    pub(crate) pool: rayon::ThreadPool,
    pub(crate) hooks: &'h dyn Hooks,
    pub(crate) interner: Interner,
    pub(crate) family: Option<(UserFamily, String)>,
    /// One user shard per worker thread (see `kernel`).
    pub(crate) shards: Vec<Users>,
    pub(crate) threads: usize,
    /// How the cohort-defining timestamps map to periods (set by the first pass).
    pub(crate) ts_kind: Option<TsKind>,
    /// How user keys become the shards' ids (see `choose_ids`).
    pub(crate) ids: IdMap,
}

/// A batch stream with the table name its errors should carry.
pub(crate) struct Stream {
    pub(crate) table: &'static str,
    pub(crate) reader: Box<dyn Iterator<Item = Result<RecordBatch>> + Send>,
    pub(crate) schema: arrow_schema::SchemaRef,
}

impl Stream {
    /// Opens a source. Every batch is checked against the stream's schema: a C stream's arrays
    /// carry no types of their own, so a batch that does not match would be read as something else.
    pub(crate) fn open(table: &'static str, source: &mut dyn BatchSource) -> Result<Self> {
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

    pub(crate) fn replay(table: &'static str, schema: arrow_schema::SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Stream { table, reader: Box::new(batches.into_iter().map(Ok)), schema }
    }
}

/// A batch must have the stream's columns, in order, with the same names and dtypes.
pub(crate) fn check_batch_schema(table: &str, index: usize, expected: &arrow_schema::Schema, batch: &RecordBatch) -> Result<()> {
    match schema_mismatch(expected, &batch.schema()) {
        None => Ok(()),
        Some(what) => Err(CoreError::Stream { table: table.to_string(), message: format!("batch {index} {what}") }),
    }
}

/// How `got` differs from `expected` (columns, in order, by name and dtype), if it does.
pub(crate) fn schema_mismatch(expected: &arrow_schema::Schema, got: &arrow_schema::Schema) -> Option<String> {
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

/// Resolves a stream's columns and checks that its user ids are of the kind `seen` first (the kind,
/// and where it was seen: a table, or "the state"); the first table sets it.
pub(crate) fn resolve_columns(stream: &Stream, names: &ColumnNames<'_>, float_scale: u8, seen: &mut Option<(UserFamily, String)>) -> Result<ColumnSet> {
    let set = ColumnSet::resolve(&stream.schema, names, float_scale)?;
    match seen {
        None => *seen = Some((set.family, stream.table.to_string())),
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

impl<'h> Runner<'h> {
    pub(crate) fn columns(&mut self, stream: &Stream, names: ColumnNames<'_>) -> Result<ColumnSet> {
        let first = self.family.is_none();
        let set = resolve_columns(stream, &names, self.spec.float_scale, &mut self.family)?;
        if first && set.family == UserFamily::Str {
            self.ids = interned_ids(self.threads);
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
    pub(crate) fn scan<P: Pass>(
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
        // Time spent reading batches' user ids before their rounds (interning strings, mostly).
        let mut reading = std::time::Duration::ZERO;
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
                let at = BatchAt { cal: &self.cal, first_row: row0, strict: self.spec.strict, pool: Some(&self.pool) };
                let read_at = Instant::now();
                let view = BatchView::new(&batch, set, &mut self.interner, at, &mut poll)?;
                reading += read_at.elapsed();
                if self.ts_kind.is_none() {
                    self.ts_kind = Some(view.ts_kind());
                }
                let n = view.len;
                let mut lo = 0;
                while lo < n {
                    let hi = n.min(lo.saturating_add(step.saturating_mul(STEPS_PER_ROUND)));
                    let round = Round { view: &view, cal: &self.cal, want, pass, shares: &shares, rows: lo..hi, step, row0, ids: self.ids };
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
        trace(&format!("{phase}: {row0} rows ({reading:?} of it reading batches)"), started);
        self.hooks.tick(phase, row0, true)?;
        Ok(accs)
    }

    /// One accumulator per worker, over a grid of `cells` cells.
    pub(crate) fn fresh_accs(&self, cells: usize) -> Result<Vec<Acc>> {
        let sinks = CellSink::for_workers(cells, self.threads, self.spec.cells_budget)?;
        Ok(sinks.into_iter().map(|cells| Acc { cells, ..Acc::default() }).collect())
    }
}

/// Accumulates the inputs and finalizes at `cut`.
pub fn run(spec: Spec, cut: CutOff, inputs: Inputs<'_>, hooks: &dyn Hooks) -> Result<CohortResult> {
    let cal = Calendar::new(PeriodKind::parse(&spec.period)?, &spec.tz)?;
    accumulate(spec, inputs, hooks)?.finalize(&cal, cut)
}

/// Runs the passes over the inputs: the partial of their users.
pub fn accumulate(spec: Spec, inputs: Inputs<'_>, hooks: &dyn Hooks) -> Result<Partial> {
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
    let Inputs { orders, signups, activity, segment_ranks } = inputs;
    let orders_names = |segment| ColumnNames {
        table: "orders",
        user: &names.user,
        ts: &names.ts,
        amount: Some(&names.amount),
        segment,
        ts_format: names.ts_format.as_deref(),
        cost: names.cost.as_deref(),
    };
    let (ids, shards) = match choose_ids(orders, &orders_names(None), spec.float_scale, threads)? {
        Some((ids, capacity)) => (ids, (0..threads).map(|_| Users::with_capacity(tracks_segments, capacity)).collect()),
        None => (IdMap::Hashed, (0..threads).map(|_| Users::new(tracks_segments)).collect()),
    };
    let mut runner = Runner {
        spec,
        cal,
        pool,
        hooks,
        interner: Interner::default(),
        family: None,
        shards,
        threads,
        ts_kind: None,
        ids,
    };

    // Pass 1: who belongs to which cohort.
    if let Some(src) = signups {
        let stream = Stream::open("signups", src)?;
        let set = runner.columns(
            &stream,
            ColumnNames {
                table: "signups",
                user: &names.signup_user,
                ts: &names.signup_ts,
                amount: None,
                segment: names.segment.as_deref(),
                ts_format: names.ts_format.as_deref(),
                cost: None,
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
        // And 4 bytes a row of string keys: the second pass then interns nothing.
        runner.interner.remember();
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

/// The run's id map and the size of each shard's table, when its user ids are dense (see
/// `kernel::dense_ids`); `None` keeps hashed ids. Only orders held in memory are read ahead for
/// their range (one more read of the user column); streams and files are not, since reading them
/// ahead would mean reading them once more, so their ids are hashed. Keys of other tables outside
/// the range are still right, by probing. An orders table the run will refuse (a missing column,
/// an unaccepted dtype) is left to the passes, which report it in their order.
fn choose_ids(orders: &mut dyn BatchSource, names: &ColumnNames<'_>, float_scale: u8, threads: usize) -> Result<Option<(IdMap, usize)>> {
    if !(orders.held_in_memory() && orders.reopenable()) || std::env::var_os("LTRCORE_HASHED_IDS").is_some() {
        return Ok(None);
    }
    let started = Instant::now();
    let stream = Stream::open("orders", orders)?;
    let Ok(set) = ColumnSet::resolve(&stream.schema, names, float_scale) else { return Ok(None) };
    let batches = stream.reader.collect::<Result<Vec<RecordBatch>>>()?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut bounds = KeyBounds::default();
    // Block by block, stopping as soon as the range is too wide: sparse ids are told apart within
    // the first block.
    const BLOCK: usize = 1 << 16;
    for batch in &batches {
        for lo in (0..batch.num_rows()).step_by(BLOCK) {
            let block = batch.slice(lo, BLOCK.min(batch.num_rows() - lo));
            let dense = bounds.add(&block, &set) && bounds.range(&set).is_none_or(|(min, max)| dense_ids(min, max, rows, threads).is_some());
            if !dense {
                trace("key range: hashed", started);
                return Ok(None);
            }
        }
    }
    let chosen = bounds.range(&set).and_then(|(min, max)| dense_ids(min, max, rows, threads));
    trace(&format!("key range: {}", if chosen.is_some() { "dense" } else { "hashed" }), started);
    Ok(chosen)
}

/// The id map of a run whose user ids are strings, chosen at its first table, before any row:
/// their keys are the interner's, a string's number in its part and the part (`Interner`), so that
/// in each shard the ids are numbers from 0 with few gaps, each in its own bucket (`IdMap::Dense`).
/// The tables still grow as the users come, and any key is placed rightly (a gap costs a probe).
/// `LTRCORE_HASHED_IDS` keeps hashed ids (to compare the two).
fn interned_ids(threads: usize) -> IdMap {
    if !threads.is_power_of_two() || std::env::var_os("LTRCORE_HASHED_IDS").is_some() {
        return IdMap::Hashed;
    }
    IdMap::Dense { min: 0, shard_bits: threads.trailing_zeros() }
}

/// With `LTRCORE_TRACE` set, prints how long a step took (for profiling; off by default).
pub(crate) fn trace(step: &str, since: Instant) {
    if std::env::var_os("LTRCORE_TRACE").is_some() {
        eprintln!("ltrcore: {step} in {:?}", since.elapsed());
    }
}

pub(crate) fn finish(
    mut runner: Runner<'_>,
    stream: Stream,
    orders_set: ColumnSet,
    has_signups: bool,
    signup_acc: Option<Totals>,
    activity: Option<&mut dyn BatchSource>,
) -> Result<Partial> {
    let horizon = runner.spec.horizon;
    let strict = runner.spec.strict;
    let sealing = Instant::now();
    let groups = seal_groups(&mut runner, if activity.is_some() { 3 } else { 2 })?;
    runner.shards.iter_mut().for_each(Users::replay_trail);
    runner.interner.recall();
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
    runner.interner.forget();
    let orders_acc = sum_accs(accs);

    // Pass 3: activity.
    let activity_acc = match activity {
        Some(src) => {
            let stream = Stream::open("activity", src)?;
            let (user, ts, format) = (runner.spec.activity_user.clone(), runner.spec.activity_ts.clone(), runner.spec.ts_format.clone());
            let ts_format = format.as_deref();
            let names = ColumnNames { table: "activity", user: &user, ts: &ts, amount: None, segment: None, ts_format, cost: None };
            let set = runner.columns(&stream, names)?;
            let at = Attribution { horizon, group_cohort: &group_cohort, missing: Reason::UnknownUser };
            let accs = runner.fresh_accs(n_cells)?;
            let accs = runner.scan(stream, &set, "activity", None, accs, &ActivityPass { set: &set, strict, at })?;
            Some(sum_accs(accs))
        }
        None => None,
    };

    let counting = Instant::now();
    let n_groups = groups.len();
    let h = horizon as usize;
    let has_activity = activity_acc.is_some();
    let (shards, budget) = (&runner.shards, runner.spec.cells_budget);
    let counts = watched(&runner.pool, runner.hooks, "finalizing", |stop| count_users(shards, n_groups, h, has_activity, budget, stop))?;
    trace("count users", counting);
    let Totals { tally, cells, max_period, input_rows, input_amount } = orders_acc;
    let activity_rows = match &activity_acc {
        Some(a) => a.cells.activity_rows.clone(),
        None => crate::error::try_vec(n_cells, 0, "the partial's cells")?,
    };
    let table = |t: Totals| TableTotals { rows: t.input_rows, amount: t.input_amount, tally: t.tally };
    Ok(Partial {
        horizon,
        kind: if has_signups { CohortKind::Signup } else { CohortKind::FirstPurchase },
        scale: orders_set.scale,
        groups,
        members: counts.members,
        cells: PartialCells {
            rows: cells.rows,
            orders: cells.orders,
            gross: cells.gross,
            refunds: cells.refunds,
            payments: cells.payments,
            profit: cells.profit,
            payers: counts.payers,
            retained: counts.retained,
            activity_rows,
            active: counts.active,
            first_paid: counts.first_paid,
            first_repeat: counts.first_repeat,
        },
        orders: TableTotals { rows: input_rows, amount: input_amount, tally },
        signups: signup_acc.map(table),
        activity: activity_acc.map(table),
        max_period,
    })
}
