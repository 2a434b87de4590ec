//! The plain reference: what `ltrcore_core::run` must return for a case, written from the README's
//! "Semantics" (and `tests/reference.py`) with no sharding, no tables, no tricks: every row is
//! classified by one `if` chain, members live in a `BTreeMap`, cells are summed in maps.
//!
//! Rules newer than the README (from the fuzzing brief):
//! * every timestamp maps to its local date: tz-aware ones converted to the run's zone with jiff,
//!   naive timestamps, date32 and date64 taken as wall clock; a local date outside
//!   0001-01-01 ..= 9999-12-31 makes the row `ts_out_of_range` (after null_user and null_ts, before
//!   null_amount), and such a row carries its amount like null_user/null_ts rows do;
//! * a non-null amount that does not fit i64 at its scale fails the whole run (InvalidArgument);
//! * a decimal with negative scale s is value × 10^(−s) at scale 0.
//!
//! Errors are predicted in the order the core meets them (spec, then each table's columns, then its
//! batches in order, then as_of/since); within one batch any of its error kinds is accepted.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use ltrcore_core::calendar::PeriodKind;
use ltrcore_core::engine::{CellsOut, CohortOut};
use ltrcore_core::reconcile::Reason;
use ltrcore_core::TimePoint;

use crate::case::{AmountT, Amt, Case, Family, Key, Table, TsT, UserT, MAX_DAY, MIN_DAY};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrKind {
    InvalidArgument,
    Dtype,
    ColumnNotFound,
    BadRow,
    Stream,
    /// Any clean error will do (the core's choice of kind is not pinned down).
    AnyClean,
}

#[derive(Debug)]
pub struct ExpectedErr {
    pub kinds: BTreeSet<ErrKind>,
    pub why: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RefResult {
    pub horizon: u32,
    pub scale: u8,
    pub period: PeriodKind,
    pub cohorts: Vec<CohortOut>,
    pub cells: CellsOut,
    pub has_activity: bool,
    pub orders_reconciliation: Vec<(Reason, u64, i128)>,
    pub signups_reconciliation: Option<Vec<(Reason, u64, i128)>>,
    pub activity_reconciliation: Option<Vec<(Reason, u64, i128)>>,
    pub last_complete_period: Option<i32>,
    pub first_usable_period: Option<i32>,
    pub input_rows: u64,
    pub input_amount: i128,
    pub bad_rows: u64,
}

pub enum Expected {
    Ok(Box<RefResult>),
    Err(ExpectedErr),
}

fn err(kind: ErrKind, why: impl Into<String>) -> ExpectedErr {
    ExpectedErr { kinds: [kind].into(), why: why.into() }
}

// Reconciliation lines, in the order the core lists them (engine.rs).
const ORDER_REASONS_SIGNUPS: [Reason; 12] = [
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
const ORDER_REASONS_FIRST_PURCHASE: [Reason; 12] = [
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
const SIGNUP_REASONS: [Reason; 8] =
    [Reason::Used, Reason::NullUser, Reason::NullTs, Reason::BadTs, Reason::TsOutOfRange, Reason::DuplicateUser, Reason::BeforeSince, Reason::NotYetComplete];
const ACTIVITY_REASONS: [Reason; 10] = [
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

// ---------------------------------------------------------------------------------------------
// Calendar, with jiff.
// ---------------------------------------------------------------------------------------------

fn epoch() -> jiff::civil::Date {
    jiff::civil::date(1970, 1, 1)
}

fn days_of(d: jiff::civil::Date) -> i64 {
    d.since(epoch()).unwrap().get_days() as i64
}

fn date_of(days: i64) -> jiff::civil::Date {
    epoch().checked_add(jiff::Span::new().days(days)).unwrap()
}

fn in_range(day: i64) -> bool {
    (MIN_DAY..=MAX_DAY).contains(&day)
}

/// Local date (days since 1970-01-01) of an instant given in whole seconds, or None outside years
/// 1..=9999. Beyond jiff's own range (which ends on 9999-12-30 22:00 UTC) the zone's offset at that
/// end is used: the local date there can still be 9999-12-31.
fn instant_local_day(second: i64, tz: &TimeZone) -> Option<i64> {
    let day = match Timestamp::from_second(second) {
        Ok(ts) => days_of(ts.to_zoned(tz.clone()).date()),
        Err(_) => {
            let end = if second < 0 { Timestamp::MIN } else { Timestamp::MAX };
            let off = tz.to_offset(end).seconds() as i128;
            let d = (second as i128 + off).div_euclid(86_400);
            d.clamp(i64::MIN as i128, i64::MAX as i128) as i64
        }
    };
    in_range(day).then_some(day)
}

/// The local date of a stored timestamp value of dtype `t`, or None when out of range.
fn local_day(raw: i64, t: TsT, tz: &TimeZone) -> Option<i64> {
    let ups = t.units_per_second();
    let day = match t {
        TsT::Ts(_, Some(_)) => return instant_local_day(raw.div_euclid(ups), tz),
        TsT::Ts(_, None) | TsT::Date64 => raw.div_euclid(ups * 86_400),
        TsT::Date32 => raw,
        TsT::Int64 => unreachable!("not a timestamp"),
    };
    in_range(day).then_some(day)
}

/// Period index of an in-range local date: month = (year − 1970)·12 + month − 1, quarter = month
/// div 3, ISO week = (date − 1970-01-05) div 7, day = date − 1970-01-01 (div floors).
fn period_of_day(day: i64, kind: PeriodKind) -> i32 {
    let d = date_of(day);
    let month = (d.year() as i64 - 1970) * 12 + d.month() as i64 - 1;
    (match kind {
        PeriodKind::Day => day,
        PeriodKind::Week => (day - 4).div_euclid(7),
        PeriodKind::Month => month,
        PeriodKind::Quarter => month.div_euclid(3),
    }) as i32
}

/// First local date of a period, if it is in range.
fn first_day(p: i32, kind: PeriodKind) -> Option<i64> {
    let from_month = |m: i64| {
        let year = 1970 + m.div_euclid(12);
        (1..=9999).contains(&year).then(|| days_of(jiff::civil::date(year as i16, (m.rem_euclid(12) + 1) as i8, 1)))
    };
    match kind {
        PeriodKind::Day => Some(p as i64).filter(|&d| in_range(d)),
        PeriodKind::Week => Some(p as i64 * 7 + 4).filter(|&d| in_range(d)),
        PeriodKind::Month => from_month(p as i64),
        PeriodKind::Quarter => from_month(p as i64 * 3),
    }
}

fn point_day(p: TimePoint, tz: &TimeZone) -> Option<i64> {
    match p {
        TimePoint::InstantMicros(us) => instant_local_day(us.div_euclid(1_000_000), tz),
        TimePoint::LocalMicros(us) => Some(us.div_euclid(86_400_000_000)).filter(|&d| in_range(d)),
    }
}

/// First period starting at or after `since` (whose own period is `p`, in range). A period starts
/// at the first instant of its first local day (jiff's start of that day, DST gaps included).
fn first_usable(since: TimePoint, p: i32, kind: PeriodKind, tz: &TimeZone) -> i32 {
    let day = first_day(p, kind).expect("the period of an in-range day starts in range");
    let starts_here = match since {
        TimePoint::LocalMicros(us) => day as i128 * 86_400_000_000 == us as i128,
        TimePoint::InstantMicros(us) => {
            let start = match date_of(day).to_zoned(tz.clone()) {
                Ok(z) => z.timestamp().as_microsecond() as i128,
                // Past jiff's last instant (9999-12-30 22:00 UTC): the zone's offset there.
                Err(_) => (day as i128 * 86_400 - tz.to_offset(Timestamp::MAX).seconds() as i128) * 1_000_000,
            };
            start == us as i128
        }
    };
    if starts_here {
        p
    } else {
        p + 1
    }
}

// ---------------------------------------------------------------------------------------------
// Money.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Money {
    Null,
    NotFinite,
    /// Does not fit i64 at the column's scale: the run fails.
    OutOfRange,
    Fixed(i64),
}

const POW10: [f64; 19] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18];

fn money(a: Amt, t: AmountT, float_scale: u8) -> Money {
    let fit = |v: i128| i64::try_from(v).map_or(Money::OutOfRange, Money::Fixed);
    match (a, t) {
        (Amt::Null, _) => Money::Null,
        (Amt::Float(x), AmountT::F32 | AmountT::F64) => {
            if !x.is_finite() {
                return Money::NotFinite;
            }
            // Half away from zero, on the float64 product (f64::round rounds half away from zero).
            let r = (x * POW10[float_scale as usize]).round();
            if r >= -9_223_372_036_854_775_808.0 && r < 9_223_372_036_854_775_808.0 {
                Money::Fixed(r as i64)
            } else {
                Money::OutOfRange
            }
        }
        (Amt::Int(v), AmountT::Int(_)) => fit(v),
        (Amt::Int(v), AmountT::Dec(s)) if s >= 0 => fit(v),
        (Amt::Int(v), AmountT::Dec(s)) => {
            if v == 0 {
                return Money::Fixed(0);
            }
            match 10i128.checked_pow(s.unsigned_abs() as u32).and_then(|p| v.checked_mul(p)) {
                Some(x) => fit(x),
                None => Money::OutOfRange,
            }
        }
        other => unreachable!("amount {other:?}"),
    }
}

fn amount_scale(t: AmountT, float_scale: u8) -> u8 {
    match t {
        AmountT::F32 | AmountT::F64 => float_scale,
        AmountT::Dec(s) if s > 0 => s as u8,
        _ => 0,
    }
}

/// Whether known deviations of the core are let through (see `FINDINGS.md`): unless
/// `LTRCORE_FUZZ_STRICT` is set to something other than 0.
pub fn tolerant() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !*STRICT.get_or_init(|| std::env::var_os("LTRCORE_FUZZ_STRICT").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Whether `a` (at `scale`) is more than `m × 10^e`, exactly.
fn pays(a: i64, (m, e): (i128, i32), scale: u8) -> bool {
    let shift = e + scale as i32;
    let a = a as i128;
    if shift >= 0 {
        match 10i128.checked_pow(shift as u32).and_then(|p| m.checked_mul(p)) {
            Some(t) => a > t,
            // |m × 10^shift| > 2^127 > |a|
            None => m < 0,
        }
    } else {
        // a > m / 10^k  ⟺  a × 10^k > m
        if a == 0 {
            return 0 > m;
        }
        match 10i128.checked_pow(shift.unsigned_abs()).and_then(|p| a.checked_mul(p)) {
            Some(x) => x > m,
            None => a > 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Columns and batches: which error a table raises first.
// ---------------------------------------------------------------------------------------------

fn accepted_user(t: UserT) -> bool {
    matches!(t, UserT::Plain(_) | UserT::Dict(..) | UserT::Float)
}

/// The first error resolving a table's columns, then its family against the earlier tables'.
fn resolve(t: &Table, segment: bool, family: &mut Option<Family>) -> Result<(), ExpectedErr> {
    let name = format!("{:?}", t.role);
    if t.layout.duplicate_user {
        return Err(err(ErrKind::InvalidArgument, format!("{name}: user column ambiguous")));
    }
    if !accepted_user(t.user_t) {
        return Err(err(ErrKind::Dtype, format!("{name}: user dtype {:?}", t.user_t)));
    }
    if t.layout.missing_ts {
        return Err(err(ErrKind::ColumnNotFound, format!("{name}: no ts column")));
    }
    if t.ts_t == TsT::Int64 {
        return Err(err(ErrKind::Dtype, format!("{name}: ts dtype int64")));
    }
    if t.amount_t == Some(AmountT::Bool) {
        return Err(err(ErrKind::Dtype, format!("{name}: amount dtype bool")));
    }
    if segment {
        if !t.layout.has_segment {
            return Err(err(ErrKind::ColumnNotFound, format!("{name}: no segment column")));
        }
        if t.layout.segment_not_u32 {
            return Err(err(ErrKind::Dtype, format!("{name}: segment dtype int32")));
        }
    }
    let f = t.user_t.family().unwrap();
    match family {
        None => *family = Some(f),
        Some(prev) if *prev != f => return Err(err(ErrKind::Dtype, format!("{name}: user family {f:?} after {prev:?}"))),
        _ => {}
    }
    Ok(())
}

/// A row's bad-data reason, if any (checked in the core's order).
fn bad_reason(user: &Option<Key>, day: Option<Option<i64>>, m: Option<Money>) -> Option<Reason> {
    if user.is_none() {
        Some(Reason::NullUser)
    } else if day.is_none() {
        Some(Reason::NullTs)
    } else if day == Some(None) {
        Some(Reason::TsOutOfRange)
    } else if m == Some(Money::Null) {
        Some(Reason::NullAmount)
    } else if m == Some(Money::NotFinite) {
        Some(Reason::NanAmount)
    } else {
        None
    }
}

/// The errors the batches of a table raise, in order: the first failing batch's kinds.
fn scan_errors(t: &Table, case: &Case, tz: &TimeZone) -> Result<(), ExpectedErr> {
    let name = format!("{:?}", t.role);
    for (b, (rows, flags)) in t.rows.iter().zip(&t.flags).enumerate() {
        if flags.schema_mismatch {
            return Err(err(ErrKind::Stream, format!("{name} batch {b}: schema mismatch")));
        }
        if flags.bad_offsets {
            return Err(err(ErrKind::AnyClean, format!("{name} batch {b}: string offsets outside the data")));
        }
        if flags.bad_dictionary {
            return Err(err(ErrKind::AnyClean, format!("{name} batch {b}: dictionary key out of range")));
        }
        // A float user id that is not a whole number (the cases write 1.5) is refused as its batch is read.
        if t.user_t == UserT::Float && rows.iter().any(|r| r.user.is_some()) {
            return Err(err(ErrKind::InvalidArgument, format!("{name} batch {b}: float user id 1.5")));
        }
        let mut kinds = BTreeSet::new();
        let mut why = vec![];
        for (i, r) in rows.iter().enumerate() {
            let m = t.amount_t.map(|at| money(r.amount, at, case.spec.float_scale));
            if m == Some(Money::OutOfRange) {
                kinds.insert(ErrKind::InvalidArgument);
                why.push(format!("row {i}: amount {:?} out of range", r.amount));
            }
            let day = r.ts.map(|raw| local_day(raw, t.ts_t, tz));
            if case.spec.strict {
                if let Some(reason) = bad_reason(&r.user, day, m) {
                    kinds.insert(ErrKind::BadRow);
                    why.push(format!("row {i}: strict and {}", reason.name()));
                }
            }
        }
        if !kinds.is_empty() {
            return Err(ExpectedErr { kinds, why: format!("{name} batch {b}: {}", why.join("; ")) });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The reference run.
// ---------------------------------------------------------------------------------------------

/// One row of a table with everything the classification needs.
struct Seen {
    user: Option<Key>,
    raw_ts: Option<i64>,
    /// None: null ts; Some(None): out of range.
    day: Option<Option<i64>>,
    money: Option<Money>,
    segment: u32,
}

/// Each user's earliest row among the rows `take` accepts, by row index: the smallest raw
/// timestamp, and on a tie the smallest segment code (the core's rule without segment ranks);
/// which of several rows equal in both is kept does not matter. `take` only accepts rows with a user.
fn earliest_per_user(rows: &[Seen], take: impl Fn(&Seen) -> bool) -> BTreeMap<Key, usize> {
    let mut earliest: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, s) in rows.iter().enumerate().filter(|(_, s)| take(s)) {
        let u = s.user.clone().unwrap();
        if earliest.get(&u).is_none_or(|&k| (rows[k].raw_ts, rows[k].segment) > (s.raw_ts, s.segment)) {
            earliest.insert(u, i);
        }
    }
    earliest
}

fn seen_rows(t: &Table, case: &Case, tz: &TimeZone) -> Vec<Seen> {
    t.rows
        .iter()
        .flatten()
        .map(|r| Seen {
            user: r.user.clone(),
            raw_ts: r.ts,
            day: r.ts.map(|raw| local_day(raw, t.ts_t, tz)),
            money: t.amount_t.map(|at| money(r.amount, at, case.spec.float_scale)),
            segment: r.segment.unwrap_or(0),
        })
        .collect()
}

#[derive(Default)]
struct Tally(BTreeMap<Reason, (u64, i128)>);

impl Tally {
    fn add(&mut self, r: Reason, amount: i128) {
        let e = self.0.entry(r).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    fn lines(&self, order: &[Reason]) -> Vec<(Reason, u64, i128)> {
        order.iter().map(|&r| {
            let (n, a) = self.0.get(&r).copied().unwrap_or_default();
            (r, n, a)
        }).collect()
    }
    fn bad(&self) -> u64 {
        self.0.iter().filter(|(r, _)| r.is_bad_data()).map(|(_, v)| v.0).sum()
    }
}

pub fn expected(case: &Case) -> Expected {
    match run(case) {
        Ok(r) => Expected::Ok(Box::new(r)),
        Err(e) => Expected::Err(e),
    }
}

fn run(case: &Case) -> Result<RefResult, ExpectedErr> {
    let spec = &case.spec;
    // The spec.
    if !(1..=1000).contains(&spec.horizon) {
        return Err(err(ErrKind::InvalidArgument, "horizon"));
    }
    if spec.float_scale > 18 {
        return Err(err(ErrKind::InvalidArgument, "float_scale"));
    }
    if spec.threads == 0 || spec.threads > 1024 {
        return Err(err(ErrKind::InvalidArgument, "threads"));
    }
    if spec.chunk_rows == 0 {
        return Err(err(ErrKind::InvalidArgument, "chunk_rows"));
    }
    let kind = match spec.period.as_str() {
        "day" => PeriodKind::Day,
        "week" => PeriodKind::Week,
        "month" => PeriodKind::Month,
        "quarter" => PeriodKind::Quarter,
        _ => return Err(err(ErrKind::InvalidArgument, "period")),
    };
    let tz = TimeZone::get(&spec.tz).map_err(|_| err(ErrKind::InvalidArgument, "tz"))?;
    let segmented = spec.segment.is_some();

    // Tables in the order the core reads them.
    let mut family = None;
    if let Some(s) = &case.signups {
        resolve(s, segmented, &mut family)?;
        scan_errors(s, case, &tz)?;
        resolve(&case.orders, false, &mut family)?;
    } else {
        resolve(&case.orders, segmented, &mut family)?;
    }
    scan_errors(&case.orders, case, &tz)?;
    if let Some(a) = &case.activity {
        resolve(a, false, &mut family)?;
        scan_errors(a, case, &tz)?;
    }

    let scale = amount_scale(case.orders.amount_t.unwrap(), spec.float_scale);
    let orders = seen_rows(&case.orders, case, &tz);
    let fixed = |s: &Seen| match s.money {
        Some(Money::Fixed(v)) => v,
        _ => 0,
    };
    let valid = |s: &Seen| bad_reason(&s.user, s.day, s.money).is_none();
    let period = |s: &Seen| period_of_day(s.day.unwrap().unwrap(), kind);
    let paying = |s: &Seen| pays(fixed(s), spec.min_amount, scale);

    // as_of / since.
    let last_complete = match case.cut.as_of {
        Some(p) => Some(period_of_day(point_day(p, &tz).ok_or_else(|| err(ErrKind::InvalidArgument, "as_of out of range"))?, kind) - 1),
        None => orders.iter().filter(|s| valid(s)).map(period).max().map(|p| p - 1),
    };
    let first_usable = match case.cut.since {
        Some(p) => {
            let day = point_day(p, &tz).ok_or_else(|| err(ErrKind::InvalidArgument, "since out of range"))?;
            Some(first_usable(p, period_of_day(day, kind), kind, &tz))
        }
        None => None,
    };
    if let Some(lc) = last_complete {
        if first_day(lc, kind).is_none() {
            return Err(err(ErrKind::InvalidArgument, "last complete period starts before year 1"));
        }
    }
    if let Some(fu) = first_usable {
        if first_day(fu, kind).is_none() {
            return Err(err(ErrKind::InvalidArgument, "first usable period starts after year 9999"));
        }
    }
    let classify = |cohort: i32, age: i64| -> Reason {
        if age < 0 {
            Reason::BeforeCohort
        } else if age >= spec.horizon as i64 {
            Reason::BeyondHorizon
        } else if first_usable.is_some_and(|fu| cohort < fu) {
            Reason::BeforeSince
        } else if last_complete.is_none_or(|lc| cohort as i64 + age > lc as i64) {
            Reason::NotYetComplete
        } else {
            Reason::Used
        }
    };

    // Members: user → (cohort, segment), from the earliest signup or the earliest paying order
    // (earliest by stored timestamp; ties to the first row in input order).
    let mut members: BTreeMap<Key, (i32, u32)> = BTreeMap::new();
    let mut signup_tally = None;
    if let Some(st) = &case.signups {
        let rows = seen_rows(st, case, &tz);
        let best = earliest_per_user(&rows, valid);
        for (u, &j) in &best {
            members.insert(u.clone(), (period(&rows[j]), rows[j].segment));
        }
        let kept: BTreeSet<usize> = best.values().copied().collect();
        let mut tally = Tally::default();
        for (j, s) in rows.iter().enumerate() {
            let r = match bad_reason(&s.user, s.day, None) {
                Some(r) => r,
                None if !kept.contains(&j) => Reason::DuplicateUser,
                None => classify(members[s.user.as_ref().unwrap()].0, 0),
            };
            tally.add(r, 0);
        }
        signup_tally = Some(tally);
    } else {
        let first = earliest_per_user(&orders, |s| valid(s) && paying(s));
        for (u, &i) in &first {
            members.insert(u.clone(), (period(&orders[i]), orders[i].segment));
        }
    }

    // Orders: one reason each; used rows into cells.
    #[derive(Default, Clone)]
    struct Cell {
        net: i128,
        gross: i128,
        refunds: i128,
        payments: i128,
        orders: u64,
        payers: BTreeSet<Key>,
        active: BTreeSet<Key>,
    }
    let mut cells: BTreeMap<(u32, i32, i64), Cell> = BTreeMap::new();
    let mut paying_used: BTreeMap<Key, u64> = BTreeMap::new();
    let mut tally = Tally::default();
    let missing = if case.signups.is_some() { Reason::UnknownUser } else { Reason::NeverPaid };
    for s in &orders {
        let carried = fixed(s) as i128;
        if let Some(r) = bad_reason(&s.user, s.day, s.money) {
            tally.add(r, carried);
            continue;
        }
        let u = s.user.as_ref().unwrap();
        let Some(&(cohort, seg)) = members.get(u) else {
            tally.add(missing, carried);
            continue;
        };
        let age = period(s) as i64 - cohort as i64;
        let r = classify(cohort, age);
        tally.add(r, carried);
        if r == Reason::Used {
            let c = cells.entry((seg, cohort, age)).or_default();
            c.net += carried;
            if carried > 0 {
                c.gross += carried;
            } else {
                c.refunds += carried;
            }
            if paying(s) {
                c.orders += 1;
                c.payments += carried;
                c.payers.insert(u.clone());
                *paying_used.entry(u.clone()).or_default() += 1;
            }
        }
    }

    // Activity.
    let activity_tally = case.activity.as_ref().map(|at| {
        let mut t = Tally::default();
        for s in seen_rows(at, case, &tz) {
            if let Some(r) = bad_reason(&s.user, s.day, None) {
                t.add(r, 0);
                continue;
            }
            let u = s.user.as_ref().unwrap();
            let Some(&(cohort, seg)) = members.get(u) else {
                t.add(Reason::UnknownUser, 0);
                continue;
            };
            let age = period(&s) as i64 - cohort as i64;
            let r = classify(cohort, age);
            t.add(r, 0);
            if r == Reason::Used {
                cells.entry((seg, cohort, age)).or_default().active.insert(u.clone());
            }
        }
        t
    });

    // Cohorts: every (segment, cohort) with members, sorted; reported when at or after the first
    // usable period and its age 0 is complete.
    let mut groups: BTreeMap<(u32, i32), (u64, u64, u64)> = BTreeMap::new(); // size, customers, repeaters
    for (u, &(cohort, seg)) in &members {
        let g = groups.entry((seg, cohort)).or_default();
        g.0 += 1;
        let n = paying_used.get(u).copied().unwrap_or(0);
        g.1 += u64::from(n >= 1);
        g.2 += u64::from(n >= 2);
    }
    let h = spec.horizon as i64;
    let mut cohorts = vec![];
    let mut out = CellsOut::default();
    for (&(seg, cohort), &(size, customers, repeaters)) in &groups {
        let reported = first_usable.is_none_or(|fu| cohort >= fu) && last_complete.is_some_and(|lc| cohort <= lc);
        if !reported {
            continue;
        }
        cohorts.push(CohortOut { segment: seg, cohort, first_day: first_day(cohort, kind).unwrap(), size, customers, repeaters });
        let lc = last_complete.unwrap() as i64;
        for age in 0..h {
            let complete = cohort as i64 + age <= lc;
            let empty = Cell::default();
            let c = if complete { cells.get(&(seg, cohort, age)).unwrap_or(&empty) } else { &empty };
            out.complete.push(complete);
            out.revenue.push(c.net);
            out.gross.push(c.gross);
            out.refunds.push(c.refunds);
            out.payments.push(c.payments);
            // The cases carry no cost column: every cell's profit stays zero (reported as null).
            out.profit.push(0);
            out.orders.push(c.orders);
            out.payers.push(c.payers.len() as u64);
            // Payers of this age who paid at the age before too.
            let before = if complete && age > 0 { cells.get(&(seg, cohort, age - 1)) } else { None };
            out.retained.push(before.map_or(0, |b| c.payers.intersection(&b.payers).count() as u64));
            out.active.push(c.active.len() as u64);
        }
    }

    let order_lines = tally.lines(if case.signups.is_some() { &ORDER_REASONS_SIGNUPS } else { &ORDER_REASONS_FIRST_PURCHASE });
    let bad_rows = tally.bad() + signup_tally.as_ref().map_or(0, Tally::bad) + activity_tally.as_ref().map_or(0, Tally::bad);
    Ok(RefResult {
        horizon: spec.horizon,
        scale,
        period: kind,
        cohorts,
        cells: out,
        has_activity: case.activity.is_some(),
        orders_reconciliation: order_lines,
        signups_reconciliation: signup_tally.map(|t| t.lines(&SIGNUP_REASONS)),
        activity_reconciliation: activity_tally.map(|t| t.lines(&ACTIVITY_REASONS)),
        last_complete_period: last_complete,
        first_usable_period: first_usable,
        input_rows: orders.len() as u64,
        input_amount: orders.iter().map(|s| fixed(s) as i128).sum(),
        bad_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let d = |y, m, dd| days_of(jiff::civil::date(y, m, dd));
        assert_eq!(period_of_day(d(1970, 1, 5), PeriodKind::Week), 0);
        assert_eq!(period_of_day(d(1970, 1, 4), PeriodKind::Week), -1);
        assert_eq!(period_of_day(d(1969, 12, 31), PeriodKind::Quarter), -1);
        assert_eq!(period_of_day(d(2024, 8, 15), PeriodKind::Month), 54 * 12 + 7);
        assert_eq!(first_day(54 * 12 + 7, PeriodKind::Month), Some(d(2024, 8, 1)));
        assert_eq!(d(1, 1, 1), MIN_DAY);
        assert_eq!(d(9999, 12, 31), MAX_DAY);
        assert_eq!(first_day(period_of_day(MIN_DAY, PeriodKind::Month) - 1, PeriodKind::Month), None);
        assert_eq!(first_day(period_of_day(MIN_DAY, PeriodKind::Week), PeriodKind::Week), Some(MIN_DAY));
        assert_eq!(first_day(period_of_day(MAX_DAY, PeriodKind::Quarter) + 1, PeriodKind::Quarter), None);
    }

    #[test]
    fn instants_at_the_top_end() {
        let utc = TimeZone::UTC;
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s = (MAX_DAY * 86_400) + 10 * 3600; // 9999-12-31T10:00Z, past jiff's last instant
        assert_eq!(instant_local_day(s, &utc), Some(MAX_DAY));
        assert_eq!(instant_local_day(s, &berlin), Some(MAX_DAY));
        assert_eq!(instant_local_day(s + 14 * 3600, &utc), None);
        assert_eq!(instant_local_day(MIN_DAY * 86_400 - 1, &utc), None);
        assert_eq!(instant_local_day(MIN_DAY * 86_400 - 1, &berlin), Some(MIN_DAY));
    }

    #[test]
    fn money_rounding_and_range() {
        assert_eq!(money(Amt::Float(0.145), AmountT::F64, 4), Money::Fixed(1450));
        assert_eq!(money(Amt::Float(-2.5), AmountT::F64, 0), Money::Fixed(-3));
        assert_eq!(money(Amt::Float(f64::NAN), AmountT::F64, 0), Money::NotFinite);
        assert_eq!(money(Amt::Float(1e300), AmountT::F64, 0), Money::OutOfRange);
        assert_eq!(money(Amt::Int(7), AmountT::Dec(-3), 4), Money::Fixed(7000));
        assert_eq!(money(Amt::Int(7), AmountT::Dec(-128), 4), Money::OutOfRange);
        assert_eq!(money(Amt::Int(0), AmountT::Dec(-128), 4), Money::Fixed(0));
        assert_eq!(money(Amt::Int(u64::MAX as i128), AmountT::Int(crate::case::IntT::U64), 4), Money::OutOfRange);
    }

    #[test]
    fn paying_threshold() {
        assert!(!pays(57, (57, -2), 2));
        assert!(pays(58, (57, -2), 2));
        assert!(pays(1, (0, 0), 4));
        assert!(!pays(0, (0, 0), 4));
        assert!(pays(0, (-3, -45), 4));
        assert!(!pays(-1, (-3, -45), 4));
        assert!(!pays(i64::MAX, (i128::MAX, 5), 4));
        assert!(pays(i64::MIN, (i128::MIN, -3), 0));
    }
}
