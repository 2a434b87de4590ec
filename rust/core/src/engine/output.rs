//! The end of a run: the per-user counts that go into the partial, and the reported arrays that
//! `Partial::finalize` makes of it.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::exec::StopCheck;
use super::spec::TimePoint;
use crate::calendar::{Calendar, PeriodKind};
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
    pub payments: Vec<i128>,
    /// Sum of the orders' profit (amount − cost); meaningful only with a cost column.
    pub profit: Vec<i128>,
    pub orders: Vec<u64>,
    pub payers: Vec<u64>,
    /// Payers who paid at the age before too (0 at age 0).
    pub retained: Vec<u64>,
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
    /// The orders had a cost column, so `cells.profit` was measured (set by the caller of
    /// `Partial::finalize`, from the spec: the partial's numbers alone cannot tell zero from unknown).
    pub has_profit: bool,
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

pub const ORDER_REASONS_SIGNUPS: [Reason; 12] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::BadTs,
    Reason::TsOutOfRange,
    Reason::NullAmount,
    Reason::NanAmount,
    Reason::UnknownUser,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
pub const ORDER_REASONS_FIRST_PURCHASE: [Reason; 12] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::BadTs,
    Reason::TsOutOfRange,
    Reason::NullAmount,
    Reason::NanAmount,
    Reason::NeverPaid,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
pub const SIGNUP_REASONS: [Reason; 8] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::BadTs,
    Reason::TsOutOfRange,
    Reason::DuplicateUser,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];
pub const ACTIVITY_REASONS: [Reason; 10] = [
    Reason::Used,
    Reason::NullUser,
    Reason::NullTs,
    Reason::BadTs,
    Reason::TsOutOfRange,
    Reason::UnknownUser,
    Reason::BeforeCohort,
    Reason::BeyondHorizon,
    Reason::BeforeSince,
    Reason::NotYetComplete,
];

/// What the users' bitsets give: per group the members, per cell the payers, the payers retained
/// from the age before, the actives, and the histograms of the ages at which members first pay and
/// first repeat (see `partial`).
pub(crate) struct UserCounts {
    pub(crate) members: Vec<u64>,
    pub(crate) payers: Vec<u64>,
    pub(crate) retained: Vec<u64>,
    pub(crate) active: Vec<u64>,
    pub(crate) first_paid: Vec<u64>,
    pub(crate) first_repeat: Vec<u64>,
}

impl UserCounts {
    pub(crate) fn new(groups: usize, cells: usize) -> Self {
        UserCounts {
            members: vec_or_unwind(groups, 0, "the cohort sizes"),
            payers: vec_or_unwind(cells, 0, "the payers per cell"),
            retained: vec_or_unwind(cells, 0, "the retained payers per cell"),
            active: vec_or_unwind(cells, 0, "the actives per cell"),
            first_paid: vec_or_unwind(cells, 0, "the first paying ages"),
            first_repeat: vec_or_unwind(cells, 0, "the first repeat ages"),
        }
    }

    fn per_cell(&mut self) -> [&mut Vec<u64>; 5] {
        [&mut self.payers, &mut self.active, &mut self.first_paid, &mut self.first_repeat, &mut self.retained]
    }

    pub(crate) fn add(&mut self, other: &mut UserCounts) {
        for (p, q) in self.members.iter_mut().zip(&other.members) {
            *p += q;
        }
        for (x, y) in self.per_cell().into_iter().zip(other.per_cell()) {
            for (p, q) in x.iter_mut().zip(y.iter()) {
                *p += q;
            }
        }
    }
}

/// Counts every shard's users in parallel (run under `watched`). Per-cell counts follow the cells'
/// memory model: a private copy per shard while the copies fit `budget`, else one shared copy that
/// each shard adds its users' ages to, `PENDING_ROWS` at a time, under a lock.
pub(crate) fn count_users(shards: &[Users], n_groups: usize, h: usize, has_activity: bool, budget: usize, stop: &AtomicBool) -> UserCounts {
    let n_cells = n_groups * h;
    let private = n_cells.saturating_mul(5 * size_of::<u64>()).saturating_mul(shards.len()) <= budget;
    let shared = Mutex::new(UserCounts::new(0, if private { 0 } else { n_cells }));
    // Each pending entry is (cell, which per-cell count).
    let add_shared = |pending: &mut Vec<(usize, u8)>| {
        let mut counts = shared.lock().unwrap_or_else(PoisonError::into_inner);
        for (cell, which) in pending.drain(..) {
            counts.per_cell()[usize::from(which)][cell] += 1;
        }
    };
    let per_shard: Vec<UserCounts> = shards
        .par_iter()
        .map(|users| {
            let mut c = UserCounts::new(n_groups, if private { n_cells } else { 0 });
            let mut pending: Vec<(usize, u8)> = Vec::new();
            let mut stop = StopCheck::new(stop);
            users.for_each_user(|g, bits| {
                stop.check();
                let g = g as usize;
                c.members[g] += 1;
                let (first, second) = bits.lowest_two(PAID);
                let repeat = match (second, bits.lowest_two(MULTI).0) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let base = g * h;
                if private {
                    bits.count_ages(PAID, &mut c.payers[base..base + h]);
                    bits.for_each_retained_age(|a| c.retained[base + a] += 1);
                    if has_activity {
                        bits.count_ages(ACTIVE, &mut c.active[base..base + h]);
                    }
                    if let Some(a) = first {
                        c.first_paid[base + a] += 1;
                    }
                    if let Some(a) = repeat {
                        c.first_repeat[base + a] += 1;
                    }
                } else {
                    bits.for_each_age(PAID, |a| pending.push((base + a, 0)));
                    bits.for_each_retained_age(|a| pending.push((base + a, 4)));
                    if has_activity {
                        bits.for_each_age(ACTIVE, |a| pending.push((base + a, 1)));
                    }
                    pending.extend(first.map(|a| (base + a, 2)));
                    pending.extend(repeat.map(|a| (base + a, 3)));
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
    for mut c in per_shard {
        total.add(&mut c);
    }
    if !private {
        let shared = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
        (total.payers, total.active, total.first_paid, total.first_repeat, total.retained) =
            (shared.payers, shared.active, shared.first_paid, shared.first_repeat, shared.retained);
    }
    total
}

/// The period holding a caller's time point, which must be a date in the supported range.
pub fn period_of_point(point: TimePoint, cal: &Calendar, name: &str) -> Result<i32> {
    let (kind, micros) = match point {
        TimePoint::InstantMicros(us) => (TsKind::Instant(arrow_schema::TimeUnit::Microsecond), us),
        TimePoint::LocalMicros(us) => (TsKind::Local(arrow_schema::TimeUnit::Microsecond), us),
    };
    match kind.local_day(micros, cal) {
        Some(day) => Ok(cal.period_of_day(day)),
        None => Err(CoreError::InvalidArgument(format!("{name} is outside the supported years 1-9999"))),
    }
}
