//! The partial state: what a run over a user-disjoint slice of the data accumulates, before any
//! cut-off. `finalize` turns it into the reported table for any `as_of` and `since`.
//!
//! Every user's rows go to one accumulator, so each distinct count (members, payers, actives, first
//! paying age, first repeat age) is taken inside one partial, and partials merge by adding their
//! numbers key by key. Keys are (segment code, absolute cohort period, age); the codes are the
//! caller's (the Python layer keeps the segment values and re-codes partials to a common dictionary
//! before merging, see `recode`). Money is exact fixed point at `scale`; partials at different
//! scales merge at the larger one.
//!
//! What makes any cut-off possible: completeness only ever reclassifies whole cells, and a cohort's
//! complete ages are a prefix `0..k`. A member is a customer by age `k` when their first paying age
//! is below `k`, and a repeater when their first repeat age is (a second paying age, or two paying
//! orders within one age), so per-cohort histograms of those two ages give both counts for any `k`.

use std::sync::Arc;

use arrow_array::builder::{Decimal128Builder, Int32Builder, Int64Builder, StringBuilder, UInt32Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, Int64Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hashbrown::HashMap;

use crate::calendar::{day_in_range, Calendar, PeriodKind};
use crate::engine::{CellsOut, CohortOut, CohortResult, CutOff, TimePoint, ORDER_REASONS_FIRST_PURCHASE, ORDER_REASONS_SIGNUPS, SIGNUP_REASONS, ACTIVITY_REASONS};
use crate::engine::period_of_point;
use crate::error::{CoreError, Result};
use crate::reconcile::{Reason, Tally};

/// Version of the partial's Arrow layout; a partial of another version is refused.
pub const PARTIAL_FORMAT_VERSION: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortKind {
    /// The period of each user's earliest paying order.
    FirstPurchase,
    /// The period of each user's earliest signup.
    Signup,
}

/// One input table's rows read, with their exact amount, and the rows set aside before any cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableTotals {
    pub rows: u64,
    pub amount: i128,
    /// Reasons fixed while accumulating (bad data, unknown users, beyond the horizon…). `used`,
    /// `before_since` and `not_yet_complete` are decided by `finalize`, from the cells.
    pub tally: Tally,
}

/// Cell measures, `groups × horizon`, indexed `group * horizon + age`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialCells {
    /// Order rows in the cell (paying or not).
    pub rows: Vec<u64>,
    /// Paying orders (`amount > min_amount`).
    pub orders: Vec<u64>,
    /// Sum of the positive amounts.
    pub gross: Vec<i128>,
    /// Sum of the non-positive amounts (≤ 0).
    pub refunds: Vec<i128>,
    /// Sum of the paying orders' amounts.
    pub payments: Vec<i128>,
    /// Sum of the orders' profit (amount − cost); zero without a cost column (whether it was
    /// measured is the spec's `cost`).
    pub profit: Vec<i128>,
    /// Members with a paying order in the cell.
    pub payers: Vec<u64>,
    /// Members with a paying order in the cell and in the cell of the age before.
    pub retained: Vec<u64>,
    pub activity_rows: Vec<u64>,
    /// Members with activity in the cell.
    pub active: Vec<u64>,
    /// Members whose first paying order falls at this age.
    pub first_paid: Vec<u64>,
    /// Members who become repeaters at this age.
    pub first_repeat: Vec<u64>,
}

impl PartialCells {
    pub(crate) fn zeros(n: usize) -> Result<Self> {
        use crate::error::try_vec;
        let w = "the partial's cells";
        Ok(PartialCells {
            rows: try_vec(n, 0, w)?,
            orders: try_vec(n, 0, w)?,
            gross: try_vec(n, 0, w)?,
            refunds: try_vec(n, 0, w)?,
            payments: try_vec(n, 0, w)?,
            profit: try_vec(n, 0, w)?,
            payers: try_vec(n, 0, w)?,
            retained: try_vec(n, 0, w)?,
            activity_rows: try_vec(n, 0, w)?,
            active: try_vec(n, 0, w)?,
            first_paid: try_vec(n, 0, w)?,
            first_repeat: try_vec(n, 0, w)?,
        })
    }

    fn counts(&self) -> [&Vec<u64>; 8] {
        [&self.rows, &self.orders, &self.payers, &self.activity_rows, &self.active, &self.first_paid, &self.first_repeat, &self.retained]
    }

    fn counts_mut(&mut self) -> [&mut Vec<u64>; 8] {
        [
            &mut self.rows,
            &mut self.orders,
            &mut self.payers,
            &mut self.activity_rows,
            &mut self.active,
            &mut self.first_paid,
            &mut self.first_repeat,
            &mut self.retained,
        ]
    }

    /// Grows (or shrinks) every measure to `n` cells, new cells zero.
    pub(crate) fn resize(&mut self, n: usize) {
        for v in self.counts_mut() {
            v.resize(n, 0);
        }
        for v in self.money_mut() {
            v.resize(n, 0);
        }
    }

    /// The money measures, in `MONEY_COLUMNS[1..]` order.
    fn money(&self) -> [&Vec<i128>; 4] {
        [&self.gross, &self.refunds, &self.payments, &self.profit]
    }

    fn money_mut(&mut self) -> [&mut Vec<i128>; 4] {
        [&mut self.gross, &mut self.refunds, &mut self.payments, &mut self.profit]
    }

    fn net(&self, i: usize) -> i128 {
        self.gross[i] + self.refunds[i]
    }
}

/// Names of the count columns, in `PartialCells::counts` order.
const COUNT_COLUMNS: [&str; 8] = ["rows", "orders", "payers", "activity_rows", "active", "first_paid", "first_repeat", "retained"];

/// Names of the money columns: a table row's `amount`, then `PartialCells::money` order.
const MONEY_COLUMNS: [&str; 5] = ["amount", "gross", "refunds", "payments", "profit"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    pub horizon: u32,
    pub kind: CohortKind,
    /// Decimal places of every amount.
    pub scale: u8,
    /// Distinct (segment code, cohort period) pairs, sorted.
    pub groups: Vec<(u32, i32)>,
    /// Members of each group.
    pub members: Vec<u64>,
    pub cells: PartialCells,
    pub orders: TableTotals,
    /// Present for signup cohorts.
    pub signups: Option<TableTotals>,
    /// Present when activity was given.
    pub activity: Option<TableTotals>,
    /// Period of the last valid order, if any (the default `as_of` is the start of the next one).
    pub max_period: Option<i32>,
}

fn overflow() -> CoreError {
    CoreError::InvalidArgument("merging partials overflows: a count or an exact amount exceeds its 64- or 128-bit range".into())
}

fn add_u64(a: &mut u64, b: u64) -> Result<()> {
    *a = a.checked_add(b).ok_or_else(overflow)?;
    Ok(())
}

fn add_scaled(a: &mut i128, b: i128, factor: i128) -> Result<()> {
    let b = b.checked_mul(factor).ok_or_else(overflow)?;
    *a = a.checked_add(b).ok_or_else(overflow)?;
    Ok(())
}

impl TableTotals {
    fn add_scaled(&mut self, other: &TableTotals, factor: i128) -> Result<()> {
        add_u64(&mut self.rows, other.rows)?;
        add_scaled(&mut self.amount, other.amount, factor)?;
        for r in Reason::ALL {
            let mut amount = self.tally.amount(r);
            add_scaled(&mut amount, other.tally.amount(r), factor)?;
            let mut rows = self.tally.rows(r);
            add_u64(&mut rows, other.tally.rows(r))?;
            self.tally.set(r, rows, amount);
        }
        Ok(())
    }
}

impl Partial {
    /// The partial of no input: the identity of `merge`.
    pub fn empty(horizon: u32, kind: CohortKind) -> Self {
        Partial {
            horizon,
            kind,
            scale: 0,
            groups: Vec::new(),
            members: Vec::new(),
            cells: PartialCells::default(),
            orders: TableTotals::default(),
            signups: (kind == CohortKind::Signup).then(TableTotals::default),
            activity: None,
            max_period: None,
        }
    }

    fn h(&self) -> usize {
        self.horizon as usize
    }

    /// The same partial with every segment code `c` replaced by `map[c]` (codes of a common
    /// dictionary, before a merge). Groups that come to share a key are added together.
    pub fn recode(self, map: &[u32]) -> Result<Partial> {
        let mut out = self;
        for g in &mut out.groups {
            g.0 = *map.get(g.0 as usize).ok_or_else(|| CoreError::InvalidArgument(format!("segment code {} has no value", g.0)))?;
        }
        Partial::merge(vec![out])
    }

    /// Adds partials of disjoint users key by key: associative and commutative, with
    /// `Partial::empty` as identity. Amounts are brought to the largest scale, exactly.
    pub fn merge(parts: Vec<Partial>) -> Result<Partial> {
        let Some(first) = parts.first() else {
            return Err(CoreError::InvalidArgument("merge needs at least one partial".into()));
        };
        let (horizon, kind) = (first.horizon, first.kind);
        if let Some(p) = parts.iter().find(|p| p.horizon != horizon || p.kind != kind) {
            return Err(CoreError::InvalidArgument(format!(
                "partials of different specs cannot be merged: horizon {horizon} and {}, cohorts {:?} and {:?}",
                p.horizon, kind, p.kind
            )));
        }
        let scale = parts.iter().map(|p| p.scale).max().unwrap_or(0);
        let mut keys: Vec<(u32, i32)> = parts.iter().flat_map(|p| p.groups.iter().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        let index: HashMap<(u32, i32), usize, foldhash::fast::FixedState> = keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        let h = horizon as usize;
        let mut out = Partial::empty(horizon, kind);
        out.scale = scale;
        out.members = crate::error::try_vec(keys.len(), 0, "the partial's cohorts")?;
        out.cells = PartialCells::zeros(keys.len() * h)?;
        out.groups = keys;
        for p in &parts {
            let factor = 10i128.checked_pow(u32::from(scale - p.scale)).ok_or_else(overflow)?;
            for (g, key) in p.groups.iter().enumerate() {
                let d = index[key];
                add_u64(&mut out.members[d], p.members[g])?;
                for a in 0..h {
                    let (src, dst) = (g * h + a, d * h + a);
                    for (o, i) in out.cells.counts_mut().into_iter().zip(p.cells.counts()) {
                        add_u64(&mut o[dst], i[src])?;
                    }
                    for (o, i) in out.cells.money_mut().into_iter().zip(p.cells.money()) {
                        add_scaled(&mut o[dst], i[src], factor)?;
                    }
                }
            }
            out.orders.add_scaled(&p.orders, factor)?;
            for (o, i) in [(&mut out.signups, &p.signups), (&mut out.activity, &p.activity)] {
                if let Some(i) = i {
                    o.get_or_insert_with(TableTotals::default).add_scaled(i, factor)?;
                }
            }
            out.max_period = out.max_period.max(p.max_period);
        }
        Ok(out)
    }

    /// Takes `other`'s numbers out of this partial, key by key (the monthly state: a member's
    /// counts that new rows move, waiting rows that leave their reason). Every group of `other`
    /// must be here, at the same scale, and no number may go below zero.
    pub fn subtract(&mut self, other: &Partial) -> Result<()> {
        let below = || CoreError::Internal("subtracting partials went below zero".into());
        if other.scale != self.scale || other.horizon != self.horizon {
            return Err(CoreError::Internal("subtracting partials of different scales or horizons".into()));
        }
        let h = self.h();
        for (g, key) in other.groups.iter().enumerate() {
            let d = self.groups.binary_search(key).map_err(|_| below())?;
            self.members[d] = self.members[d].checked_sub(other.members[g]).ok_or_else(below)?;
            for a in 0..h {
                let (src, dst) = (g * h + a, d * h + a);
                for (o, i) in self.cells.counts_mut().into_iter().zip(other.cells.counts()) {
                    o[dst] = o[dst].checked_sub(i[src]).ok_or_else(below)?;
                }
                for (o, i) in self.cells.money_mut().into_iter().zip(other.cells.money()) {
                    o[dst] -= i[src];
                }
            }
        }
        for (mine, theirs) in [(Some(&mut self.orders), Some(&other.orders)), (self.signups.as_mut(), other.signups.as_ref()), (self.activity.as_mut(), other.activity.as_ref())] {
            let Some(theirs) = theirs else { continue };
            let mine = mine.ok_or_else(below)?;
            mine.rows = mine.rows.checked_sub(theirs.rows).ok_or_else(below)?;
            mine.amount -= theirs.amount;
            for r in Reason::ALL {
                let rows = mine.tally.rows(r).checked_sub(theirs.tally.rows(r)).ok_or_else(below)?;
                mine.tally.set(r, rows, mine.tally.amount(r) - theirs.tally.amount(r));
            }
        }
        Ok(())
    }

    /// The reported table: cells reclassified by completeness (`as_of`, by default the start of the
    /// period after the last order's; `since`), the per-cohort counts for the complete ages, and the
    /// checked reconciliations.
    pub fn finalize(&self, cal: &Calendar, cut: CutOff) -> Result<CohortResult> {
        let h = self.h();
        let CutOff { as_of, since } = cut;
        let last_complete = match as_of {
            Some(point) => Some(period_of_point(point, cal, "as_of")? - 1),
            None => self.max_period.map(|p| p - 1),
        };
        let first_usable = match since {
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
        let lc = last_complete.map_or(i64::MIN, i64::from);
        let fu = first_usable.map_or(i64::MIN, i64::from);
        let is_complete = |cohort: i32, age: usize| i64::from(cohort) + age as i64 <= lc;
        let classify = |cohort: i32, age: usize| {
            if i64::from(cohort) < fu {
                Reason::BeforeSince
            } else if !is_complete(cohort, age) {
                Reason::NotYetComplete
            } else {
                Reason::Used
            }
        };

        let c = &self.cells;
        let mut orders_tally = self.orders.tally.clone();
        let mut activity_tally = self.activity.as_ref().map(|a| a.tally.clone());
        let mut signup_tally = self.signups.as_ref().map(|s| s.tally.clone());
        let mut cohorts = Vec::new();
        let mut out = CellsOut::default();
        for (g, &(segment, cohort)) in self.groups.iter().enumerate() {
            for a in 0..h {
                let i = g * h + a;
                let reason = classify(cohort, a);
                orders_tally.add_many(reason, c.rows[i], c.net(i));
                if let Some(t) = activity_tally.as_mut() {
                    t.add_many(reason, c.activity_rows[i], 0);
                }
            }
            if let Some(t) = signup_tally.as_mut() {
                t.add_many(classify(cohort, 0), self.members[g], 0);
            }
            if i64::from(cohort) < fu || !is_complete(cohort, 0) {
                continue;
            }
            // Complete ages form a prefix: members who first paid (first repeated) within it.
            let complete = (0..h).take_while(|&a| is_complete(cohort, a)).count();
            let within = |hist: &[u64]| hist[g * h..g * h + complete].iter().sum::<u64>();
            cohorts.push(CohortOut {
                segment,
                cohort,
                first_day: cal.first_day(cohort),
                size: self.members[g],
                customers: within(&c.first_paid),
                repeaters: within(&c.first_repeat),
            });
            for a in 0..h {
                let i = g * h + a;
                let done = a < complete;
                out.complete.push(done);
                let z = |v: u64| if done { v } else { 0 };
                let zi = |v: i128| if done { v } else { 0 };
                out.revenue.push(zi(c.net(i)));
                out.gross.push(zi(c.gross[i]));
                out.refunds.push(zi(c.refunds[i]));
                out.payments.push(zi(c.payments[i]));
                out.profit.push(zi(c.profit[i]));
                out.orders.push(z(c.orders[i]));
                out.payers.push(z(c.payers[i]));
                out.retained.push(z(c.retained[i]));
                out.active.push(z(c.active[i]));
            }
        }
        // Every row must be accounted for, exactly.
        let check = |name: &str, tally: &Tally, totals: &TableTotals| {
            if tally.total_rows() != totals.rows || tally.total_amount() != totals.amount {
                return Err(CoreError::Internal(format!(
                    "{name} reconciliation does not add up: {} rows / {} amount counted, {} rows / {} amount read",
                    tally.total_rows(),
                    tally.total_amount(),
                    totals.rows,
                    totals.amount
                )));
            }
            Ok(())
        };
        check("orders", &orders_tally, &self.orders)?;
        for (name, t, totals) in [("signups", &signup_tally, &self.signups), ("activity", &activity_tally, &self.activity)] {
            if let (Some(t), Some(totals)) = (t, totals) {
                check(name, t, totals)?;
            }
        }
        let bad_rows = [Some(&orders_tally), signup_tally.as_ref(), activity_tally.as_ref()].into_iter().flatten().map(Tally::bad_rows).sum();
        Ok(CohortResult {
            horizon: self.horizon,
            scale: self.scale,
            period: cal.kind,
            cohorts,
            cells: out,
            has_activity: self.activity.is_some(),
            has_profit: false,
            orders_reconciliation: orders_tally.lines(match self.kind {
                CohortKind::Signup => &ORDER_REASONS_SIGNUPS,
                CohortKind::FirstPurchase => &ORDER_REASONS_FIRST_PURCHASE,
            }),
            signups_reconciliation: signup_tally.map(|t| t.lines(&SIGNUP_REASONS)),
            activity_reconciliation: activity_tally.map(|t| t.lines(&ACTIVITY_REASONS)),
            last_complete_period: last_complete,
            first_usable_period: first_usable,
            input_rows: self.orders.rows,
            input_amount: self.orders.amount,
            bad_rows,
        })
    }
}

// -------------------------------------------------------------------------------------------------
// The long Arrow layout.

/// What a row of the long layout holds (column `record`).
const CELL: &str = "cell";
const REASON: &str = "reason";
const READ: &str = "read";
const TABLES: [&str; 3] = ["orders", "signups", "activity"];

/// Reasons a partial carries per table: the table's reconciliation lines except those `finalize`
/// decides from the cells.
fn carried(kind: CohortKind, table: &str, reason: Reason) -> bool {
    let listed: &[Reason] = match (table, kind) {
        ("orders", CohortKind::Signup) => &ORDER_REASONS_SIGNUPS,
        ("orders", CohortKind::FirstPurchase) => &ORDER_REASONS_FIRST_PURCHASE,
        ("signups", _) => &SIGNUP_REASONS,
        _ => &ACTIVITY_REASONS,
    };
    listed.contains(&reason) && !matches!(reason, Reason::Used | Reason::BeforeSince | Reason::NotYetComplete)
}

/// The long layout's schema: keys, then measures. Money is `decimal128(38, scale)`; counts are
/// `int64` (what Spark and SQL engines sum natively). `segment` is the caller's code column.
pub fn long_schema(scale: u8) -> SchemaRef {
    let money = DataType::Decimal128(38, i8::try_from(scale).unwrap_or(i8::MAX));
    let mut fields = vec![
        Field::new("record", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("segment", DataType::UInt32, true),
        Field::new("cohort", DataType::Int32, true),
        Field::new("age", DataType::Int32, true),
    ];
    fields.extend(MONEY_COLUMNS.iter().map(|c| Field::new(*c, money.clone(), false)));
    fields.push(Field::new("members", DataType::Int64, false));
    fields.extend(COUNT_COLUMNS.iter().map(|c| Field::new(*c, DataType::Int64, false)));
    fields.push(Field::new("last_period", DataType::Int32, true));
    Arc::new(Schema::new(fields))
}

fn count_value(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoreError::InvalidArgument(format!("a count of {v} does not fit the partial's int64 columns")))
}

struct LongBuilder {
    record: StringBuilder,
    table: StringBuilder,
    reason: StringBuilder,
    segment: UInt32Builder,
    cohort: Int32Builder,
    age: Int32Builder,
    money: [Decimal128Builder; 5],
    members: Int64Builder,
    counts: [Int64Builder; 8],
    last_period: Int32Builder,
}

impl LongBuilder {
    fn new() -> Self {
        LongBuilder {
            record: StringBuilder::new(),
            table: StringBuilder::new(),
            reason: StringBuilder::new(),
            segment: UInt32Builder::new(),
            cohort: Int32Builder::new(),
            age: Int32Builder::new(),
            money: std::array::from_fn(|_| Decimal128Builder::new()),
            members: Int64Builder::new(),
            counts: std::array::from_fn(|_| Int64Builder::new()),
            last_period: Int32Builder::new(),
        }
    }

    /// A row without cell keys: `counts[0]` (rows) and `amount` set, every other measure zero.
    fn table_row(&mut self, record: &str, table: &str, reason: Option<&str>, rows: u64, amount: i128, last_period: Option<i32>) -> Result<()> {
        self.record.append_value(record);
        self.table.append_value(table);
        self.reason.append_option(reason);
        self.segment.append_null();
        self.cohort.append_null();
        self.age.append_null();
        self.money[0].append_value(amount);
        for m in &mut self.money[1..] {
            m.append_value(0);
        }
        self.members.append_value(0);
        self.counts[0].append_value(count_value(rows)?);
        for c in &mut self.counts[1..] {
            c.append_value(0);
        }
        self.last_period.append_option(last_period);
        Ok(())
    }

    fn finish(mut self, scale: u8) -> Result<RecordBatch> {
        let schema = long_schema(scale);
        let s = i8::try_from(scale).unwrap_or(i8::MAX);
        let money = |b: &mut Decimal128Builder| -> Result<ArrayRef> {
            Ok(Arc::new(b.finish().with_precision_and_scale(38, s).map_err(|e| CoreError::Internal(e.to_string()))?))
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.record.finish()),
            Arc::new(self.table.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.segment.finish()),
            Arc::new(self.cohort.finish()),
            Arc::new(self.age.finish()),
        ];
        for m in &mut self.money {
            columns.push(money(m)?);
        }
        columns.push(Arc::new(self.members.finish()));
        columns.extend(self.counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.last_period.finish()));
        RecordBatch::try_new(schema, columns).map_err(|e| CoreError::Internal(e.to_string()))
    }
}

impl Partial {
    /// The long layout: one `cell` row per (segment, cohort, age) with anything in it (age 0 always,
    /// holding the members), one `reason` row per table and carried reason with rows, and one `read`
    /// row per table given (the orders' holds `last_period`). Summing rows key by key (`last_period`
    /// by maximum) merges partials.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let h = self.h();
        let c = &self.cells;
        let mut b = LongBuilder::new();
        for (g, &(segment, cohort)) in self.groups.iter().enumerate() {
            for a in 0..h {
                let i = g * h + a;
                let members = if a == 0 { self.members[g] } else { 0 };
                let empty = members == 0 && c.money().iter().all(|v| v[i] == 0) && c.counts().iter().all(|v| v[i] == 0);
                if empty {
                    continue;
                }
                b.record.append_value(CELL);
                b.table.append_null();
                b.reason.append_null();
                b.segment.append_value(segment);
                b.cohort.append_value(cohort);
                #[allow(clippy::cast_possible_truncation)] // an age is below the horizon, at most 1000
                b.age.append_value(a as i32);
                b.money[0].append_value(0);
                for (col, v) in b.money[1..].iter_mut().zip(c.money()) {
                    col.append_value(v[i]);
                }
                b.members.append_value(count_value(members)?);
                for (col, v) in b.counts.iter_mut().zip(c.counts()) {
                    col.append_value(count_value(v[i])?);
                }
                b.last_period.append_null();
            }
        }
        for (name, totals) in [("orders", Some(&self.orders)), ("signups", self.signups.as_ref()), ("activity", self.activity.as_ref())] {
            let Some(t) = totals else { continue };
            for r in Reason::ALL {
                if carried(self.kind, name, r) && t.tally.rows(r) > 0 {
                    b.table_row(REASON, name, Some(r.name()), t.tally.rows(r), t.tally.amount(r), None)?;
                }
            }
            let last = if name == "orders" { self.max_period } else { None };
            b.table_row(READ, name, None, t.rows, t.amount, last)?;
        }
        b.finish(self.scale)
    }

    /// Reads the long layout back, adding rows that share a key, and checks that the numbers are
    /// those of a partial: known records, tables and reasons, ages within the horizon, cohorts in the
    /// supported years, no negative counts, and every table's rows accounted for.
    pub fn from_batches(batches: &[RecordBatch], horizon: u32, kind: CohortKind, period: PeriodKind) -> Result<Partial> {
        let mut acc = Accumulating::new(horizon, kind, period);
        for batch in batches {
            acc.add_batch(batch)?;
        }
        acc.finish()
    }
}

fn invalid(what: String) -> CoreError {
    CoreError::InvalidArgument(format!("not a valid ltrcore partial: {what}"))
}

/// `from_batches` in progress: groups in first-seen order, sorted at the end.
struct Accumulating {
    h: usize,
    period: PeriodKind,
    scale: Option<u8>,
    index: HashMap<(u32, i32), usize, foldhash::fast::FixedState>,
    part: Partial,
}

impl Accumulating {
    fn new(horizon: u32, kind: CohortKind, period: PeriodKind) -> Self {
        Accumulating { h: horizon as usize, period, scale: None, index: HashMap::default(), part: Partial::empty(horizon, kind) }
    }

    fn column<'b>(batch: &'b RecordBatch, name: &str, dtype: impl Fn(&DataType) -> bool, expected: &str) -> Result<&'b ArrayRef> {
        let col = batch.column_by_name(name).ok_or_else(|| invalid(format!("no column {name:?}")))?;
        if !dtype(col.data_type()) {
            return Err(invalid(format!("column {name:?} is {} where {expected} was expected", col.data_type())));
        }
        Ok(col)
    }

    fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let utf8 = |t: &DataType| matches!(t, DataType::Utf8);
        let record = Self::column(batch, "record", utf8, "utf8")?.as_string::<i32>();
        let table = Self::column(batch, "table", utf8, "utf8")?.as_string::<i32>();
        let reason = Self::column(batch, "reason", utf8, "utf8")?.as_string::<i32>();
        let segment = Self::column(batch, "segment", |t| *t == DataType::UInt32, "uint32")?.as_primitive::<UInt32Type>();
        let int32 = |name| Self::column(batch, name, |t| *t == DataType::Int32, "int32").map(|c| c.as_primitive::<Int32Type>());
        let (cohort, age, last_period) = (int32("cohort")?, int32("age")?, int32("last_period")?);
        let mut money = Vec::new();
        for name in MONEY_COLUMNS {
            let col = Self::column(batch, name, |t| matches!(t, DataType::Decimal128(38, s) if (0..=38).contains(s)), "decimal128(38, scale)")?;
            let DataType::Decimal128(_, s) = col.data_type() else { unreachable!() };
            let s = u8::try_from(*s).unwrap_or(0);
            if *self.scale.get_or_insert(s) != s {
                return Err(invalid(format!("column {name:?} has scale {s} where the others have {}", self.scale.unwrap_or(0))));
            }
            money.push(col.as_primitive::<Decimal128Type>());
        }
        let int64 = |name| Self::column(batch, name, |t| *t == DataType::Int64, "int64").map(|c| c.as_primitive::<Int64Type>());
        let members = int64("members")?;
        let counts = COUNT_COLUMNS.iter().map(|&n| int64(n)).collect::<Result<Vec<_>>>()?;
        let non_negative = |name: &str, v: Option<i64>, row: usize| -> Result<u64> {
            let v = v.ok_or_else(|| invalid(format!("column {name:?} is null at row {row}")))?;
            u64::try_from(v).map_err(|_| invalid(format!("column {name:?} is negative ({v}) at row {row}")))
        };
        let amount_at = |k: usize, row: usize| -> Result<i128> {
            if money[k].is_null(row) {
                return Err(invalid(format!("a money column is null at row {row}")));
            }
            Ok(money[k].value(row))
        };
        for row in 0..batch.num_rows() {
            let rec = record.is_valid(row).then(|| record.value(row));
            match rec {
                Some(CELL) => {
                    let (Some(seg), Some(co), Some(a)) = (
                        segment.is_valid(row).then(|| segment.value(row)),
                        cohort.is_valid(row).then(|| cohort.value(row)),
                        age.is_valid(row).then(|| age.value(row)),
                    ) else {
                        return Err(invalid(format!("cell row {row} lacks its segment, cohort or age")));
                    };
                    let a = usize::try_from(a).ok().filter(|&a| a < self.h).ok_or_else(|| {
                        invalid(format!("row {row} has age {a}, outside the horizon 0..{}", self.h))
                    })?;
                    let i = self.group((seg, co), row)? * self.h + a;
                    let g = i / self.h;
                    let m = non_negative("members", members.is_valid(row).then(|| members.value(row)), row)?;
                    if m > 0 && a != 0 {
                        return Err(invalid(format!("row {row} has members at age {a}; members join at age 0")));
                    }
                    add_u64(&mut self.part.members[g], m)?;
                    for (k, dst) in self.part.cells.counts_mut().into_iter().enumerate() {
                        let col = counts[k];
                        add_u64(&mut dst[i], non_negative(COUNT_COLUMNS[k], col.is_valid(row).then(|| col.value(row)), row)?)?;
                    }
                    let (gross, refunds) = (amount_at(1, row)?, amount_at(2, row)?);
                    let (payments, profit) = (amount_at(3, row)?, amount_at(4, row)?);
                    if gross < 0 || refunds > 0 {
                        return Err(invalid(format!("row {row} has negative gross or positive refunds")));
                    }
                    for (dst, v) in self.part.cells.money_mut().into_iter().zip([gross, refunds, payments, profit]) {
                        add_scaled(&mut dst[i], v, 1)?;
                    }
                }
                Some(REASON) | Some(READ) => {
                    let name = table.is_valid(row).then(|| table.value(row)).filter(|t| TABLES.contains(t));
                    let name = name.ok_or_else(|| invalid(format!("row {row} names no known table")))?;
                    if name == "signups" && self.part.kind == CohortKind::FirstPurchase {
                        return Err(invalid("signups in a first-purchase partial".into()));
                    }
                    let rows = non_negative("rows", counts[0].is_valid(row).then(|| counts[0].value(row)), row)?;
                    let amount = amount_at(0, row)?;
                    if name != "orders" && amount != 0 {
                        return Err(invalid(format!("row {row}: {name} rows carry no amount")));
                    }
                    let totals = match name {
                        "orders" => &mut self.part.orders,
                        "signups" => self.part.signups.get_or_insert_with(TableTotals::default),
                        _ => self.part.activity.get_or_insert_with(TableTotals::default),
                    };
                    if rec == Some(READ) {
                        add_u64(&mut totals.rows, rows)?;
                        add_scaled(&mut totals.amount, amount, 1)?;
                        if last_period.is_valid(row) {
                            if name != "orders" {
                                return Err(invalid(format!("row {row}: only the orders carry last_period")));
                            }
                            let p = last_period.value(row);
                            if !day_in_range(self.period.first_day(p)) {
                                return Err(invalid(format!("row {row} has last_period {p}, outside the supported years 1-9999")));
                            }
                            self.part.max_period = self.part.max_period.max(Some(p));
                        }
                    } else {
                        let r = reason.is_valid(row).then(|| reason.value(row));
                        let kind = self.part.kind;
                        let r = Reason::ALL.into_iter().find(|x| Some(x.name()) == r && carried(kind, name, *x));
                        let r = r.ok_or_else(|| invalid(format!("row {row} has no reason a partial carries for {name}")))?;
                        let (mut n, mut amt) = (totals.tally.rows(r), totals.tally.amount(r));
                        add_u64(&mut n, rows)?;
                        add_scaled(&mut amt, amount, 1)?;
                        totals.tally.set(r, n, amt);
                    }
                }
                Some(other) => return Err(invalid(format!("row {row} has record {other:?}; expected cell, reason or read"))),
                None => return Err(invalid(format!("row {row} has a null record"))),
            }
        }
        Ok(())
    }

    /// The index of group `key`, added (with zeroed cells) when new.
    fn group(&mut self, key: (u32, i32), row: usize) -> Result<usize> {
        if let Some(&g) = self.index.get(&key) {
            return Ok(g);
        }
        if !day_in_range(self.period.first_day(key.1)) {
            return Err(invalid(format!("row {row} has cohort period {}, outside the supported years 1-9999", key.1)));
        }
        let g = self.part.groups.len();
        self.index.insert(key, g);
        self.part.groups.push(key);
        self.part.members.push(0);
        let h = self.h;
        self.part.cells.resize((g + 1) * h);
        Ok(g)
    }

    fn finish(self) -> Result<Partial> {
        let mut part = self.part;
        part.scale = self.scale.unwrap_or(0);
        let h = self.h;
        let c = &part.cells;
        // Sums of counts as u128: a tampered table must not overflow them.
        let total = |v: &[u64]| v.iter().map(|&x| u128::from(x)).sum::<u128>();
        for (g, &(_, cohort)) in part.groups.iter().enumerate() {
            let m = part.members[g];
            let cells = g * h..(g + 1) * h;
            if m == 0 {
                return Err(invalid(format!("cohort period {cohort} has cells but no members")));
            }
            let over = |v: &[u64]| total(&v[cells.clone()]) > u128::from(m);
            if over(&c.first_paid) || over(&c.first_repeat) || cells.clone().any(|i| c.payers[i] > m || c.active[i] > m || c.orders[i] > c.rows[i]) {
                return Err(invalid(format!(
                    "cohort period {cohort} counts more customers, payers or actives than members, or more orders than rows"
                )));
            }
        }
        // Every row read must be in a reason or a cell.
        let cell_amount = (0..c.rows.len()).try_fold(0i128, |sum, i| sum.checked_add(c.net(i))).ok_or_else(overflow)?;
        let checks = [
            ("orders", Some(&part.orders), total(&c.rows), cell_amount),
            // Signup cohorts' members are their signups; first-purchase members come from orders.
            ("signups", part.signups.as_ref(), if part.kind == CohortKind::Signup { total(&part.members) } else { 0 }, 0),
            ("activity", part.activity.as_ref(), total(&c.activity_rows), 0),
        ];
        for (name, totals, in_cells, amount_in_cells) in checks {
            let Some(t) = totals else {
                if in_cells > 0 {
                    return Err(invalid(format!("{name} in cells, but no {name} read")));
                }
                continue;
            };
            let rows = Reason::ALL.iter().map(|&r| u128::from(t.tally.rows(r))).sum::<u128>() + in_cells;
            let amount = Reason::ALL.iter().try_fold(amount_in_cells, |sum, &r| sum.checked_add(t.tally.amount(r)));
            if rows != u128::from(t.rows) || amount != Some(t.amount) {
                return Err(invalid(format!("{name}: the rows and amounts in reasons and cells do not add up to those read")));
            }
        }
        // Groups sorted, as every partial keeps them.
        Partial::merge(vec![part])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cohorts of one segment, horizon 2: members, a payer who repeats, a refund, a tally.
    fn sample(scale: u8) -> Partial {
        let mut p = Partial::empty(2, CohortKind::FirstPurchase);
        p.scale = scale;
        p.groups = vec![(0, 650), (0, 651)];
        p.members = vec![2, 1];
        p.cells = PartialCells::zeros(4).unwrap();
        let c = &mut p.cells;
        (c.rows[0], c.orders[0], c.gross[0], c.payers[0], c.first_paid[0]) = (3, 3, 300, 2, 2);
        (c.rows[1], c.orders[1], c.gross[1], c.refunds[1], c.payers[1], c.first_repeat[1]) = (2, 1, 50, -20, 1, 1);
        (c.rows[2], c.orders[2], c.gross[2], c.payers[2], c.first_paid[2]) = (1, 1, 10, 1, 1);
        p.orders.tally.add_many(Reason::NullUser, 4, 7);
        p.orders.rows = 3 + 2 + 1 + 4;
        p.orders.amount = 300 + 50 - 20 + 10 + 7;
        p.max_period = Some(652);
        p
    }

    #[test]
    fn the_long_layout_round_trips() {
        let p = sample(2);
        let batch = p.to_batch().unwrap();
        assert_eq!(Partial::from_batches(&[batch], 2, CohortKind::FirstPurchase, PeriodKind::Month).unwrap(), p);
    }

    #[test]
    fn rows_that_share_a_key_add_up() {
        let p = sample(2);
        let batch = p.to_batch().unwrap();
        let twice = Partial::from_batches(&[batch.clone(), batch], 2, CohortKind::FirstPurchase, PeriodKind::Month).unwrap();
        assert_eq!(twice, Partial::merge(vec![p.clone(), p.clone()]).unwrap());
        assert_eq!(twice.members, vec![4, 2]);
        assert_eq!(twice.orders.tally.rows(Reason::NullUser), 8);
    }

    #[test]
    fn merge_has_the_empty_partial_as_identity_and_rescales_exactly() {
        let p = sample(2);
        assert_eq!(Partial::merge(vec![Partial::empty(2, CohortKind::FirstPurchase), p.clone()]).unwrap(), p);
        let merged = Partial::merge(vec![sample(0), sample(2)]).unwrap();
        assert_eq!(merged.scale, 2);
        assert_eq!(merged.cells.gross[0], 300 * 100 + 300);
        assert_eq!(merged.orders.amount, 347 * 100 + 347);
        assert!(Partial::merge(vec![p.clone(), Partial::empty(3, CohortKind::FirstPurchase)]).is_err());
    }

    #[test]
    fn recode_moves_groups_to_their_new_codes() {
        let mut p = sample(0);
        p.groups = vec![(0, 650), (1, 650)];
        let merged = p.recode(&[7, 7]).unwrap();
        assert_eq!(merged.groups, vec![(7, 650)]);
        assert_eq!(merged.members, vec![3]);
        assert!(sample(0).recode(&[]).is_err());
    }

    #[test]
    fn finalize_counts_customers_and_repeaters_within_the_complete_ages() {
        let p = sample(0);
        let cal = Calendar::new(PeriodKind::Month, "UTC").unwrap();
        // Default as_of: the start of period 652, so 651 is the last complete period.
        let r = p.finalize(&cal, CutOff::default()).unwrap();
        assert_eq!(r.cohorts.len(), 2);
        // Cohort 650: both ages complete; two customers, one repeater.
        assert_eq!((r.cohorts[0].customers, r.cohorts[0].repeaters), (2, 1));
        // Cohort 651: only age 0 is complete.
        assert_eq!((r.cohorts[1].customers, r.cohorts[1].repeaters), (1, 0));
        let used = r.orders_reconciliation.iter().find(|l| l.0 == Reason::Used).unwrap();
        assert_eq!((used.1, used.2), (6, 340));
    }
}
