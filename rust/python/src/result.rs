//! The engine's result for the Python layer: the core's record batches (`ltrcore_core::report`),
//! exported through the Arrow C stream interface.

use ltrcore_core::CohortResult;
use pyo3::prelude::*;

use crate::arrow_io::ArrowStream;
use crate::errors::to_py;

#[pyclass(module = "ltrcore._core", name = "CoreResult", frozen)]
pub struct CoreResult {
    inner: CohortResult,
}

impl CoreResult {
    pub fn new(inner: CohortResult) -> Self {
        CoreResult { inner }
    }
}

#[pymethods]
impl CoreResult {
    /// One row per reported (segment, cohort, age); measures null where the cell is not complete.
    fn cells(&self) -> PyResult<ArrowStream> {
        Ok(ArrowStream::new(self.inner.cells_batch().map_err(to_py)?))
    }

    /// One row per reported (segment, cohort): size, customers and repeaters.
    fn cohorts(&self) -> PyResult<ArrowStream> {
        Ok(ArrowStream::new(self.inner.cohorts_batch().map_err(to_py)?))
    }

    /// `reason, rows, amount` for "orders"; `reason, rows` for "signups"/"activity" (None if absent).
    fn reconciliation(&self, table: &str) -> PyResult<Option<ArrowStream>> {
        Ok(self.inner.reconciliation_batch(table).map_err(to_py)?.map(ArrowStream::new))
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
    fn has_profit(&self) -> bool {
        self.inner.has_profit
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
