//! The reported table as Arrow record batches, where the domain's presentation rules live: a cell
//! that is not complete has null measures (never a zero that reads as "nothing happened"), money is
//! given both exactly (decimal at the run's scale) and as the nearest float, and reconciliations
//! list every reason of their table, zeros included.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};

use crate::engine::{CohortResult, ReconLines};
use crate::error::{CoreError, Result};

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    RecordBatch::try_from_iter(columns).map_err(|e| CoreError::Internal(e.to_string()))
}

fn decimal(b: &mut Decimal128Builder, scale: u8) -> Result<ArrayRef> {
    let s = i8::try_from(scale).map_err(|_| CoreError::Internal(format!("scale {scale}")))?;
    Ok(Arc::new(b.finish().with_precision_and_scale(38, s).map_err(|e| CoreError::Internal(e.to_string()))?))
}

/// Fixed point to the nearest f64, correctly rounded: through the decimal text, which Rust's float
/// parser rounds exactly (an integer division would round twice above 2^53 units).
pub fn to_float(v: i128, scale: u8) -> f64 {
    let digits = v.unsigned_abs().to_string();
    let s = scale as usize;
    let (int, frac) = if digits.len() > s {
        digits.split_at(digits.len() - s)
    } else {
        ("0", digits.as_str())
    };
    let text = format!("{}{int}.{frac:0>s$}e0", if v < 0 { "-" } else { "" });
    text.parse().unwrap_or(f64::NAN)
}

impl CohortResult {
    /// One row per reported (segment code, cohort, age); measures null where the cell is not complete.
    pub fn cells_batch(&self) -> Result<RecordBatch> {
        let r = self;
        let h = r.horizon as usize;
        let n = r.cohorts.len() * h;
        let (mut seg, mut cohort, mut age) = (UInt32Builder::with_capacity(n), Date32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
        let mut size = UInt64Builder::with_capacity(n);
        let (mut rev, mut gross, mut refunds) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
        let mut rev_exact = Decimal128Builder::with_capacity(n);
        let mut payments = Float64Builder::with_capacity(n);
        let (mut profit, mut profit_exact) = (Float64Builder::with_capacity(n), Decimal128Builder::with_capacity(n));
        let mut retained = UInt64Builder::with_capacity(n);
        let (mut orders, mut payers, mut active) = (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
        let mut complete = BooleanBuilder::with_capacity(n);
        let c = &r.cells;
        for (g, co) in r.cohorts.iter().enumerate() {
            let first_day = i32::try_from(co.first_day).map_err(|_| CoreError::Internal(format!("day {}", co.first_day)))?;
            for a in 0..h {
                let i = g * h + a;
                seg.append_value(co.segment);
                cohort.append_value(first_day);
                #[allow(clippy::cast_possible_truncation)] // an age is below the horizon, at most 1000
                age.append_value(a as u32);
                size.append_value(co.size);
                complete.append_value(c.complete[i]);
                if c.complete[i] {
                    rev.append_value(to_float(c.revenue[i], r.scale));
                    rev_exact.append_value(c.revenue[i]);
                    gross.append_value(to_float(c.gross[i], r.scale));
                    refunds.append_value(to_float(c.refunds[i], r.scale));
                    payments.append_value(to_float(c.payments[i], r.scale));
                    // Null, not zero, without a cost column: profit was not measured.
                    if r.has_profit {
                        profit.append_value(to_float(c.profit[i], r.scale));
                        profit_exact.append_value(c.profit[i]);
                    } else {
                        profit.append_null();
                        profit_exact.append_null();
                    }
                    orders.append_value(c.orders[i]);
                    payers.append_value(c.payers[i]);
                    retained.append_value(c.retained[i]);
                    if r.has_activity {
                        active.append_value(c.active[i]);
                    } else {
                        active.append_null();
                    }
                } else {
                    rev.append_null();
                    rev_exact.append_null();
                    gross.append_null();
                    refunds.append_null();
                    payments.append_null();
                    profit.append_null();
                    profit_exact.append_null();
                    orders.append_null();
                    payers.append_null();
                    retained.append_null();
                    active.append_null();
                }
            }
        }
        batch(vec![
            ("segment", Arc::new(seg.finish())),
            ("cohort", Arc::new(cohort.finish())),
            ("age", Arc::new(age.finish())),
            ("cohort_size", Arc::new(size.finish())),
            ("revenue", Arc::new(rev.finish())),
            ("gross_revenue", Arc::new(gross.finish())),
            ("refunds", Arc::new(refunds.finish())),
            ("payments", Arc::new(payments.finish())),
            ("profit", Arc::new(profit.finish())),
            ("orders", Arc::new(orders.finish())),
            ("payers", Arc::new(payers.finish())),
            ("retained", Arc::new(retained.finish())),
            ("active", Arc::new(active.finish())),
            ("complete", Arc::new(complete.finish())),
            ("revenue_exact", decimal(&mut rev_exact, r.scale)?),
            ("profit_exact", decimal(&mut profit_exact, r.scale)?),
        ])
    }

    /// One row per reported (segment code, cohort): size, customers (a paying order so far) and
    /// repeaters (two or more paying orders so far).
    pub fn cohorts_batch(&self) -> Result<RecordBatch> {
        let mut seg = UInt32Builder::new();
        let mut cohort = Date32Builder::new();
        let (mut size, mut customers, mut repeaters) = (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
        for co in &self.cohorts {
            seg.append_value(co.segment);
            cohort.append_value(i32::try_from(co.first_day).map_err(|_| CoreError::Internal(format!("day {}", co.first_day)))?);
            size.append_value(co.size);
            customers.append_value(co.customers);
            repeaters.append_value(co.repeaters);
        }
        batch(vec![
            ("segment", Arc::new(seg.finish())),
            ("cohort", Arc::new(cohort.finish())),
            ("cohort_size", Arc::new(size.finish())),
            ("customers", Arc::new(customers.finish())),
            ("repeaters", Arc::new(repeaters.finish())),
        ])
    }

    /// `reason, rows, amount` for "orders"; `reason, rows` for "signups" and "activity" (None when
    /// the table was not given).
    pub fn reconciliation_batch(&self, table: &str) -> Result<Option<RecordBatch>> {
        let (lines, with_amount): (&ReconLines, bool) = match table {
            "orders" => (&self.orders_reconciliation, true),
            "signups" => match &self.signups_reconciliation {
                Some(l) => (l, false),
                None => return Ok(None),
            },
            "activity" => match &self.activity_reconciliation {
                Some(l) => (l, false),
                None => return Ok(None),
            },
            other => return Err(CoreError::InvalidArgument(format!("no table {other:?}"))),
        };
        let mut reason = StringBuilder::new();
        let mut rows = UInt64Builder::new();
        let mut amount = Decimal128Builder::new();
        for (re, n, a) in lines {
            reason.append_value(re.name());
            rows.append_value(*n);
            amount.append_value(*a);
        }
        let mut cols: Vec<(&str, ArrayRef)> = vec![("reason", Arc::new(reason.finish())), ("rows", Arc::new(rows.finish()))];
        if with_amount {
            cols.push(("amount", decimal(&mut amount, self.scale)?));
        }
        batch(cols).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::to_float;

    #[test]
    fn fixed_point_converts_to_the_nearest_float() {
        assert_eq!(to_float(123_456_789, 2), 1_234_567.89);
        assert_eq!(to_float(-5, 3), -0.005);
        assert_eq!(to_float(0, 4), 0.0);
        // 2^53 + 1 units at scale 0 is not a float: the nearest (ties to even) is 2^53.
        assert_eq!(to_float((1i128 << 53) + 1, 0), 9_007_199_254_740_992.0);
        // Above 2^53 units with a scale, one correct rounding (a division would round twice).
        assert_eq!(to_float(90_071_992_547_409_935, 1), 9_007_199_254_740_993.5_f64);
        assert_eq!(to_float(i128::MAX, 38), 1.7014118346046923);
    }
}
