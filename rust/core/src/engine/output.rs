//! The end of a run: cells reclassified by completeness (`as_of`, `since`), the per-user counts, the
//! reported arrays and the checked reconciliations.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::exec::{watched, StopCheck};
use super::passes::Totals;
use super::spec::TimePoint;
use super::Runner;
use crate::calendar::{day_in_range, Calendar, PeriodKind};
use crate::columns::TsKind;
use crate::error::{CoreError, Result};
use crate::kernel::{vec_or_unwind, Users, ACTIVE, MULTI, PAID, PENDING_ROWS};
use crate::reconcile::Reason;

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

pub(crate) const ORDER_REASONS_SIGNUPS: [Reason; 11] = [
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
pub(crate) const ORDER_REASONS_FIRST_PURCHASE: [Reason; 11] = [
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
pub(crate) const SIGNUP_REASONS: [Reason; 7] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::TsOutOfRange,
    Reason::DuplicateUser,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
pub(crate) const ACTIVITY_REASONS: [Reason; 9] = [
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

/// What the users' bitsets give: per group the cohort size, customers (a paying order in a complete
/// cell) and repeaters (two or more), per cell the payers and the actives.
pub(crate) struct UserCounts {
    sizes: Vec<u64>,
    repeaters: Vec<u64>,
    customers: Vec<u64>,
    payers: Vec<u64>,
    active: Vec<u64>,
}

impl UserCounts {
    pub(crate) fn new(groups: usize, cells: usize) -> Self {
        UserCounts {
            sizes: vec_or_unwind(groups, 0, "the cohort sizes"),
            repeaters: vec_or_unwind(groups, 0, "the cohort sizes"),
            customers: vec_or_unwind(groups, 0, "the cohort sizes"),
            payers: vec_or_unwind(cells, 0, "the payers per cell"),
            active: vec_or_unwind(cells, 0, "the actives per cell"),
        }
    }

    pub(crate) fn add(&mut self, other: &UserCounts) {
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
pub(crate) fn count_users(
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

pub(crate) fn finalize(
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

/// The period holding a caller's time point, which must be a date in the supported range.
pub(crate) fn period_of_point(point: TimePoint, cal: &Calendar, name: &str) -> Result<i32> {
    let (kind, micros) = match point {
        TimePoint::InstantMicros(us) => (TsKind::Instant(arrow_schema::TimeUnit::Microsecond), us),
        TimePoint::LocalMicros(us) => (TsKind::Local(arrow_schema::TimeUnit::Microsecond), us),
    };
    match kind.local_day(micros, cal) {
        Some(day) => Ok(cal.period_of_day(day)),
        None => Err(CoreError::InvalidArgument(format!("{name} is outside the supported years 1-9999"))),
    }
}
