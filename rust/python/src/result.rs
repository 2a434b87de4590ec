//! The engine's result as Arrow record batches for the Python layer.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use ltrcore_core::engine::ReconLines;
use ltrcore_core::CohortResult;
use pyo3::prelude::*;

use crate::arrow_io::ArrowStream;

#[pyclass(module = "ltrcore._core", name = "CoreResult", frozen)]
pub struct CoreResult {
    inner: CohortResult,
}

impl CoreResult {
    pub fn new(inner: CohortResult) -> Self {
        CoreResult { inner }
    }
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> PyResult<RecordBatch> {
    RecordBatch::try_from_iter(columns).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}

/// Fixed point to the nearest f64, correctly rounded: through the decimal text, which Rust's float
/// parser rounds exactly (an integer division would round twice above 2^53 units).
fn to_float(v: i128, scale: u8) -> f64 {
    let digits = v.unsigned_abs().to_string();
    let s = scale as usize;
    let (int, frac) = if digits.len() > s {
        digits.split_at(digits.len() - s)
    } else {
        ("0", digits.as_str())
    };
    let text = format!("{}{int}.{frac:0>s$}e0", if v < 0 { "-" } else { "" });
    text.parse().expect("a decimal literal")
}

#[pymethods]
impl CoreResult {
    /// One row per reported (segment, cohort, age); measures null where the cell is not complete.
    fn cells(&self) -> PyResult<ArrowStream> {
        let r = &self.inner;
        let h = r.horizon as usize;
        let n = r.cohorts.len() * h;
        let (mut seg, mut cohort, mut age) = (UInt32Builder::with_capacity(n), Date32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
        let mut size = UInt64Builder::with_capacity(n);
        let (mut rev, mut gross, mut refunds) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
        let mut rev_exact = Decimal128Builder::with_capacity(n);
        let (mut orders, mut payers, mut active) = (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
        let mut complete = BooleanBuilder::with_capacity(n);
        let c = &r.cells;
        for (g, co) in r.cohorts.iter().enumerate() {
            for a in 0..h {
                let i = g * h + a;
                seg.append_value(co.segment);
                cohort.append_value(co.first_day as i32);
                age.append_value(a as u32);
                size.append_value(co.size);
                complete.append_value(c.complete[i]);
                if c.complete[i] {
                    rev.append_value(to_float(c.revenue[i], r.scale));
                    rev_exact.append_value(c.revenue[i]);
                    gross.append_value(to_float(c.gross[i], r.scale));
                    refunds.append_value(to_float(c.refunds[i], r.scale));
                    orders.append_value(c.orders[i]);
                    payers.append_value(c.payers[i]);
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
                    orders.append_null();
                    payers.append_null();
                    active.append_null();
                }
            }
        }
        let rev_exact = rev_exact
            .finish()
            .with_precision_and_scale(38, r.scale as i8)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Ok(ArrowStream::new(batch(vec![
            ("segment", Arc::new(seg.finish())),
            ("cohort", Arc::new(cohort.finish())),
            ("age", Arc::new(age.finish())),
            ("cohort_size", Arc::new(size.finish())),
            ("revenue", Arc::new(rev.finish())),
            ("gross_revenue", Arc::new(gross.finish())),
            ("refunds", Arc::new(refunds.finish())),
            ("orders", Arc::new(orders.finish())),
            ("payers", Arc::new(payers.finish())),
            ("active", Arc::new(active.finish())),
            ("complete", Arc::new(complete.finish())),
            ("revenue_exact", Arc::new(rev_exact)),
        ])?))
    }

    /// One row per reported (segment, cohort): size, customers (a paying order so far) and
    /// repeaters (two or more paying orders so far).
    fn cohorts(&self) -> PyResult<ArrowStream> {
        let r = &self.inner;
        let mut seg = UInt32Builder::new();
        let mut cohort = Date32Builder::new();
        let (mut size, mut customers, mut repeaters) = (UInt64Builder::new(), UInt64Builder::new(), UInt64Builder::new());
        for co in &r.cohorts {
            seg.append_value(co.segment);
            cohort.append_value(co.first_day as i32);
            size.append_value(co.size);
            customers.append_value(co.customers);
            repeaters.append_value(co.repeaters);
        }
        Ok(ArrowStream::new(batch(vec![
            ("segment", Arc::new(seg.finish())),
            ("cohort", Arc::new(cohort.finish())),
            ("cohort_size", Arc::new(size.finish())),
            ("customers", Arc::new(customers.finish())),
            ("repeaters", Arc::new(repeaters.finish())),
        ])?))
    }

    /// `reason, rows, amount` for "orders"; `reason, rows` for "signups"/"activity" (None if absent).
    fn reconciliation(&self, table: &str) -> PyResult<Option<ArrowStream>> {
        let r = &self.inner;
        let (lines, with_amount): (&ReconLines, bool) = match table {
            "orders" => (&r.orders_reconciliation, true),
            "signups" => match &r.signups_reconciliation {
                Some(l) => (l, false),
                None => return Ok(None),
            },
            "activity" => match &r.activity_reconciliation {
                Some(l) => (l, false),
                None => return Ok(None),
            },
            other => return Err(pyo3::exceptions::PyValueError::new_err(format!("no table {other:?}"))),
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
            let amount = amount
                .finish()
                .with_precision_and_scale(38, r.scale as i8)
                .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
            cols.push(("amount", Arc::new(amount)));
        }
        Ok(Some(ArrowStream::new(batch(cols)?)))
    }

    #[getter]
    fn horizon(&self) -> u32 {
        self.inner.horizon
    }
    #[getter]
    fn scale(&self) -> u8 {
        self.inner.scale
    }
    #[getter]
    fn has_activity(&self) -> bool {
        self.inner.has_activity
    }
    #[getter]
    fn input_rows(&self) -> u64 {
        self.inner.input_rows
    }
    /// Exact sum of the finite input amounts, in fixed point at `scale`.
    #[getter]
    fn input_amount(&self) -> i128 {
        self.inner.input_amount
    }
    #[getter]
    fn bad_rows(&self) -> u64 {
        self.inner.bad_rows
    }
    /// First local day (days since 1970-01-01) of the last complete period, if any.
    #[getter]
    fn last_complete_day(&self) -> Option<i64> {
        self.inner.last_complete_period.map(|p| self.inner.period.first_day(p))
    }
    /// First local day of the first usable period (`since`), if given.
    #[getter]
    fn first_usable_day(&self) -> Option<i64> {
        self.inner.first_usable_period.map(|p| self.inner.period.first_day(p))
    }
}
