//! Minimal reproducers of the findings in FINDINGS.md, written out by hand. They state what the
//! README's semantics require, so they fail on a core that still has the finding (an open finding's
//! test is `#[ignore]`d until it is fixed; all are fixed on main as of d158d23).
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use ltrcore_core::reconcile::Reason;
use ltrcore_core::{engine::DEFAULT_CELLS_BUDGET, BatchSource, CutOff, Inputs, Spec, TimePoint};
use ltrcore_fuzz::{NoHooks, VecSourceOf};

/// 2024-03-01: January and February 2024 complete.
fn cut() -> CutOff {
    CutOff { as_of: Some(TimePoint::LocalMicros(1_709_251_200_000_000)), since: None }
}

fn spec(min_amount: (i128, i32)) -> Spec {
    Spec {
        user: "user".into(),
        ts: "ts".into(),
        amount: "amount".into(),
        segment: None,
        signup_ts: "signup_ts".into(),
        activity_ts: "ts".into(),
        signup_user: "user".into(),
        activity_user: "user".into(),
        ts_format: None,
        cost: None,
        horizon: 3,
        period: "month".into(),
        tz: "UTC".into(),
        min_amount,
        float_scale: 0,
        strict: false,
        threads: 1,
        chunk_rows: 1024,
        cells_budget: DEFAULT_CELLS_BUDGET,
    }
}

/// One order of user 1 on 2024-01-15 with the given amount column.
fn orders(amount: ArrayRef) -> VecSourceOf {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("amount", amount.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1])), Arc::new(TimestampMicrosecondArray::from(vec![1_705_276_800_000_000])), amount],
    )
    .unwrap();
    VecSourceOf::new(schema, vec![batch])
}

fn used_rows(r: &ltrcore_core::CohortResult) -> u64 {
    r.orders_reconciliation.iter().find(|l| l.0 == Reason::Used).unwrap().1
}

/// F1: 9.21e18 at scale 0 fits i64 (max 9.223e18), but the core refused it as out of range
/// (fixed on main in bcf1611).
#[test]
fn f1_a_float_amount_that_fits_i64_is_accepted() {
    let mut src = orders(Arc::new(Float64Array::from(vec![9.21e18])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    let r = ltrcore_core::run(spec((0, 0)), cut(), inputs, &NoHooks).expect("9.21e18 fits 64-bit fixed point at scale 0");
    assert_eq!(r.input_amount, 9_210_000_000_000_000_000);
    assert_eq!(used_rows(&r), 1);
}

/// F2: with min_amount = -1e20, an amount of i64::MIN (> -1e20) is a paying order (the core
/// clamped the threshold to i64, so i64::MIN never paid; fixed on main in bcf1611).
#[test]
fn f2_i64_min_pays_when_min_amount_is_below_it() {
    let mut src = orders(Arc::new(Int64Array::from(vec![i64::MIN])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    let r = ltrcore_core::run(spec((-(10i128.pow(20)), 0)), cut(), inputs, &NoHooks).unwrap();
    // The user's only order pays, so the user is a member of cohort 2024-01 and the row is used.
    let never_paid = r.orders_reconciliation.iter().find(|l| l.0 == Reason::NeverPaid).unwrap().1;
    assert_eq!((used_rows(&r), never_paid), (1, 0), "{:?}", r.orders_reconciliation);
    assert_eq!(r.cohorts.len(), 1);
    assert_eq!(r.cells.orders[0], 1);
}

/// F1b: a float amount of exactly −2^63 (at scale 0) is i64::MIN, which fits; the core refused it
/// (fixed on main in 072c553).
#[test]
fn f1b_a_float_amount_of_exactly_minus_2_pow_63_is_accepted() {
    let mut src = orders(Arc::new(Float64Array::from(vec![-9_223_372_036_854_775_808.0])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    let r = ltrcore_core::run(spec((i128::MIN, 0)), cut(), inputs, &NoHooks).expect("-2^63 is i64::MIN");
    assert_eq!(r.input_amount, i64::MIN as i128);
}

/// The same cases with amounts one step inside the core's limits pass (the tests above fail only
/// on the edge).
#[test]
fn just_inside_the_edges() {
    let mut src = orders(Arc::new(Float64Array::from(vec![9.1e18])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    assert_eq!(used_rows(&ltrcore_core::run(spec((0, 0)), cut(), inputs, &NoHooks).unwrap()), 1);
    let mut src = orders(Arc::new(Int64Array::from(vec![i64::MIN + 1])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    assert_eq!(used_rows(&ltrcore_core::run(spec((-(10i128.pow(20)), 0)), cut(), inputs, &NoHooks).unwrap()), 1);
}

/// F3: `since` = 9999-12-31 00:00 in Berlin, as an instant (9999-12-30 23:00 UTC), is exactly the
/// start of the day period 9999-12-31, so that is the first usable period. The core computes the
/// period's start instant with jiff, which cannot represent instants after 9999-12-30 22:00 UTC,
/// falls back to midnight UTC, finds that `since` is not a period start, and moves on to the next
/// period, which is past year 9999: an InvalidArgument instead of a result (fixed on main in
/// 072c553).
#[test]
fn f3_since_at_the_start_of_the_last_day_in_a_zone_east_of_utc() {
    let mut s = spec((0, 0));
    s.tz = "Europe/Berlin".into();
    s.period = "day".into();
    let max_day = 2_932_896i64; // 9999-12-31
    let cut = CutOff { since: Some(TimePoint::InstantMicros((max_day * 86_400 - 3_600) * 1_000_000)), ..cut() };
    let mut src = orders(Arc::new(Int64Array::from(vec![5])));
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    let r = ltrcore_core::run(s, cut, inputs, &NoHooks).expect("since is the start of the day 9999-12-31 in Berlin");
    assert_eq!(r.first_usable_period, Some(max_day as i32));
}

/// A re-openable source whose second opening lists the same columns in another order (a parquet
/// directory or glob rewritten between the passes, say).
struct Reordering {
    opened: usize,
}

impl BatchSource for Reordering {
    fn open(&mut self) -> ltrcore_core::Result<Box<dyn arrow_array::RecordBatchReader + Send>> {
        self.opened += 1;
        let ts = || Arc::new(TimestampMicrosecondArray::from(vec![1_705_276_800_000_000; 2])) as ArrayRef;
        let (users, amounts) = (Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef, Arc::new(Int64Array::from(vec![100, 200])) as ArrayRef);
        let field = |name: &str, dt: DataType| Field::new(name, dt, true);
        let tsf = || field("ts", DataType::Timestamp(TimeUnit::Microsecond, None));
        let (schema, columns) = if self.opened == 1 {
            (Schema::new(vec![field("user", DataType::Int64), tsf(), field("amount", DataType::Int64)]), vec![users, ts(), amounts])
        } else {
            (Schema::new(vec![field("amount", DataType::Int64), tsf(), field("user", DataType::Int64)]), vec![amounts, ts(), users])
        };
        let schema = Arc::new(schema);
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        Ok(Box::new(arrow_array::RecordBatchIterator::new(vec![Ok(batch)], schema)))
    }
    fn reopenable(&self) -> bool {
        true
    }
    fn held_in_memory(&self) -> bool {
        false
    }
}

/// F4: first-purchase cohorts read the orders twice; the second opening's columns are taken at
/// the first opening's positions. When a re-opened source lists its columns in another order
/// (same dtypes), the second pass reads amounts as user ids and user ids as amounts: every row is
/// `never_paid`, with a reconciliation that adds up (to the wrong total), and no error.
#[test]
fn f4_a_reopened_source_with_reordered_columns_is_refused_or_read_by_name() {
    let mut src = Reordering { opened: 0 };
    let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
    match ltrcore_core::run(spec((0, 0)), cut(), inputs, &NoHooks) {
        // Refusing the changed stream is fine; reading it by name is fine too.
        Err(e) => assert!(!matches!(e, ltrcore_core::CoreError::Internal(_)), "{e:?}"),
        Ok(r) => {
            assert_eq!(r.input_amount, 300, "{:?}", r.orders_reconciliation);
            assert_eq!(used_rows(&r), 2, "{:?}", r.orders_reconciliation);
        }
    }
}

/// F4, second face: with a segment column, the second opening's column at the segment's first
/// position is read as `uint32` without a look at its dtype (`as_primitive::<UInt32Type>()` in
/// `BatchView::with_user`): another dtype there panics on the calling thread, out of `run` (the
/// Python binding turns it into an InternalError).
#[test]
fn f4_a_reopened_source_with_another_dtype_at_the_segment_position_is_a_clean_error() {
    struct SegmentMoves {
        opened: usize,
    }
    impl BatchSource for SegmentMoves {
        fn open(&mut self) -> ltrcore_core::Result<Box<dyn arrow_array::RecordBatchReader + Send>> {
            self.opened += 1;
            let ts = Arc::new(TimestampMicrosecondArray::from(vec![1_705_276_800_000_000; 2])) as ArrayRef;
            let users = Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef;
            let amounts = Arc::new(Int64Array::from(vec![100, 200])) as ArrayRef;
            let seg = Arc::new(arrow_array::UInt32Array::from(vec![0, 1])) as ArrayRef;
            let f = |name: &str, dt: DataType| Field::new(name, dt, true);
            let tsf = f("ts", DataType::Timestamp(TimeUnit::Microsecond, None));
            let (fields, columns) = if self.opened == 1 {
                (vec![f("user", DataType::Int64), tsf, f("amount", DataType::Int64), f("seg", DataType::UInt32)], vec![users, ts, amounts, seg])
            } else {
                (vec![f("user", DataType::Int64), tsf, f("seg", DataType::UInt32), f("amount", DataType::Int64)], vec![users, ts, seg, amounts])
            };
            let schema = Arc::new(Schema::new(fields));
            let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
            Ok(Box::new(arrow_array::RecordBatchIterator::new(vec![Ok(batch)], schema)))
        }
        fn reopenable(&self) -> bool {
            true
        }
        fn held_in_memory(&self) -> bool {
            false
        }
    }
    let mut s = spec((0, 0));
    s.segment = Some("seg".into());
    let mut src = SegmentMoves { opened: 0 };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let inputs = Inputs { orders: &mut src as &mut dyn BatchSource, signups: None, activity: None, segment_ranks: None };
        ltrcore_core::run(s, cut(), inputs, &NoHooks).map(|r| r.input_amount)
    }));
    match outcome {
        Err(_) => panic!("the core panicked"),
        Ok(Err(e)) => assert!(!matches!(e, ltrcore_core::CoreError::Internal(_)), "{e:?}"),
        Ok(Ok(amount)) => assert_eq!(amount, 300),
    }
}
