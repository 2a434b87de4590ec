//! The passes over a table: what each does with a decoded row, how rows are routed to their user's
//! shard, and the per-thread accumulators.

use super::spec::MAX_CHUNK_ROWS;
use crate::columns::{status, ColumnSet, Decoded, Want};
use crate::error::{CoreError, Result};
use crate::kernel::{Attribution, CellAdd, CellRec, CellSink, Cells, FirstRec, IdMap, Users};
use crate::reconcile::{Reason, Tally};

/// Per-thread state of one pass. Aligned so two threads' counters never share a cache line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Acc {
    pub(crate) tally: Tally,
    pub(crate) cells: CellSink,
    pub(crate) max_period: Option<i32>,
    pub(crate) input_rows: u64,
    pub(crate) input_amount: i128,
}

/// A pass's accumulators summed over the threads.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) tally: Tally,
    pub(crate) cells: Cells,
    pub(crate) max_period: Option<i32>,
    pub(crate) input_rows: u64,
    pub(crate) input_amount: i128,
}

/// Which amounts are paying orders: those above `min_amount`, decided exactly on fixed-point values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paying {
    /// Amounts above this pay: the floor of `min_amount` at the amounts' scale, clamped to i64.
    pub(crate) above: i64,
    /// `min_amount` is below every i64 (then even `i64::MIN` pays, which the clamp alone would miss).
    pub(crate) all: bool,
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
pub(crate) struct Routed {
    /// The user's id (`kernel::IdMap::place` of the key).
    pub(crate) user: u64,
    /// The timestamp (passes that fix cohorts) or the fixed-point amount (attribution).
    pub(crate) value: i64,
    /// The period (attribution), or for the first-purchase pass 1 when the order pays, else 0.
    pub(crate) period: i32,
    /// The row's index in its worker's share of the step.
    pub(crate) index: u32,
}

/// A worker's share of a step as the shards' loops read it. The worker decodes the share in blocks
/// of `BLOCK_ROWS` and routes each block at once; only the routed rows stay.
#[derive(Default)]
pub(crate) struct Share {
    /// The valid rows of each user shard.
    pub(crate) by_shard: Vec<Vec<Routed>>,
    /// The rows' segment codes (empty without segments), by row index.
    pub(crate) segment: Vec<u32>,
    /// The rows' profit (empty without a cost column), by row index.
    pub(crate) profit: Vec<i64>,
    /// Global index of the share's first row.
    pub(crate) base: u64,
}

/// What one pass over a table does with its rows.
pub(crate) trait Pass: Sync {
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
pub(crate) fn route<P: Pass>(pass: &P, ids: IdMap, block: &Decoded, by_shard: &mut [Vec<Routed>], offset: u32, acc: &mut Acc) -> Result<()> {
    pass.summarize(block, acc);
    // One loop per id map, so the per-row work has no branch on it.
    match ids {
        IdMap::Hashed => route_with(pass, IdMap::Hashed, block, by_shard, offset, acc),
        dense => route_with(pass, dense, block, by_shard, offset, acc),
    }
}

#[inline(always)]
fn route_with<P: Pass>(pass: &P, ids: IdMap, block: &Decoded, by_shard: &mut [Vec<Routed>], offset: u32, acc: &mut Acc) -> Result<()> {
    let shards = by_shard.len();
    for (k, &key) in block.key.iter().enumerate() {
        if !block.all_valid && block.status[k] != status::VALID {
            pass.bad(block, k, block.base + k as u64, acc)?;
            continue;
        }
        let (user, shard) = ids.place(key, shards);
        let mut routed = pass.routed(block, k, user);
        routed.index += offset;
        by_shard[shard].push(routed);
    }
    Ok(())
}

/// Rows decoded and routed at a time: small enough that the decoded columns are still in the
/// nearest caches when `route` reads them back.
pub(crate) const BLOCK_ROWS: usize = 4096;

/// A row's index within a worker's share of a step, below `MAX_CHUNK_ROWS` (`Spec::validate`).
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn row_index(k: usize) -> u32 {
    debug_assert!(k < MAX_CHUNK_ROWS);
    k as u32
}

/// Signups: each user's earliest signup fixes the cohort; later ones are duplicates.
pub(crate) struct SignupPass<'a> {
    pub(crate) set: &'a ColumnSet,
    pub(crate) strict: bool,
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
pub(crate) struct FirstPurchasePass<'a> {
    pub(crate) set: &'a ColumnSet,
    pub(crate) strict: bool,
    pub(crate) paying: Paying,
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
pub(crate) struct OrdersPass<'a> {
    pub(crate) set: &'a ColumnSet,
    pub(crate) strict: bool,
    pub(crate) paying: Paying,
    pub(crate) at: Attribution<'a>,
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
    fn process(&self, users: &mut Users, cells: &mut impl CellAdd, tally: &mut Tally, share: &Share, r: &Routed) {
        let profit = share.profit.get(r.index as usize).copied().unwrap_or(0);
        let rec = CellRec { user: r.user, amount: r.value, profit, period: r.period, paying: self.paying.pays(r.value) };
        users.attribute_order(&rec, &self.at, cells, tally)
    }
}

/// Activity into cells.
pub(crate) struct ActivityPass<'a> {
    pub(crate) set: &'a ColumnSet,
    pub(crate) strict: bool,
    pub(crate) at: Attribution<'a>,
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
        let rec = CellRec { user: r.user, amount: 0, profit: 0, period: r.period, paying: false };
        users.attribute_activity(&rec, &self.at, cells, tally)
    }
}

/// How many rows ahead a shard prefetches the bucket it will probe, and then the user's state when
/// it lives outside the table.
pub(crate) const PREFETCH_BUCKET: usize = 32;
pub(crate) const PREFETCH_STATE: usize = 12;

pub(crate) fn sum_accs(accs: Vec<Acc>) -> Totals {
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

pub(crate) fn bad_row_error(set: &ColumnSet, reason: Reason, row: u64) -> CoreError {
    let column = match reason {
        Reason::NullUser => set.user.1.clone(),
        Reason::NullTs | Reason::BadTs | Reason::TsOutOfRange => set.ts.1.clone(),
        _ => set.amount.as_ref().map(|a| a.1.clone()).unwrap_or_default(),
    };
    let what = match reason {
        Reason::NanAmount => "a NaN or infinite value",
        Reason::TsOutOfRange => "a timestamp whose local date is outside the supported years 1-9999",
        Reason::BadTs => "a text timestamp that does not parse",
        _ => "a null",
    };
    CoreError::BadRow { table: set.table.clone(), column, what: what.to_string(), row }
}

pub(crate) fn status_reason(st: u8) -> Reason {
    match st {
        status::NULL_USER => Reason::NullUser,
        status::NULL_TS => Reason::NullTs,
        status::BAD_TS => Reason::BadTs,
        status::TS_OUT_OF_RANGE => Reason::TsOutOfRange,
        status::NULL_AMOUNT => Reason::NullAmount,
        _ => Reason::NanAmount,
    }
}

#[inline]
pub(crate) fn seg(share: &Share, k: u32) -> u32 {
    share.segment.get(k as usize).copied().unwrap_or(0)
}

/// Counts a bad-data row under its reason, or fails under `strict`.
pub(crate) fn count_bad(reason: Reason, amount: i64, strict: bool, acc: &mut Acc, set: &ColumnSet, row: u64) -> Result<()> {
    if strict {
        return Err(bad_row_error(set, reason, row));
    }
    acc.tally.add(reason, amount);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
