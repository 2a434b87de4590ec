//! `CorePartial`: the core's partial state, keyed by segment codes. The Python `ltrcore.Partial`
//! around it keeps the segment values and the spec.

use ltrcore_core::calendar::{Calendar, PeriodKind};
use ltrcore_core::{CohortKind, Partial};
use pyo3::prelude::*;

use crate::arrow_io::{import_stream, ArrowStream};
use crate::errors::to_py;
use crate::guarded;
use crate::result::CoreResult;
use crate::time_point;

#[pyclass(module = "ltrcore._core", name = "CorePartial", frozen)]
pub struct CorePartial {
    pub(crate) inner: Partial,
}

fn kind(signup: bool) -> CohortKind {
    if signup {
        CohortKind::Signup
    } else {
        CohortKind::FirstPurchase
    }
}

#[pymethods]
impl CorePartial {
    /// The partial of no input.
    #[staticmethod]
    fn empty(horizon: u32, signup: bool) -> Self {
        CorePartial { inner: Partial::empty(horizon, kind(signup)) }
    }

    /// Reads the long layout (with a uint32 `segment` code column), adding rows that share a key.
    #[staticmethod]
    fn from_arrow(py: Python<'_>, data: Bound<'_, PyAny>, horizon: u32, signup: bool, period: &str) -> PyResult<Self> {
        let period = PeriodKind::parse(period).map_err(to_py)?;
        let reader = import_stream("partial", &data)?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| crate::errors::InvalidArgumentError::new_err(format!("partial: {e}")))?;
        let inner = guarded(py, || Partial::from_batches(&batches, horizon, kind(signup), period))?;
        Ok(CorePartial { inner })
    }

    /// Adds partials key by key (their codes must come from one dictionary: see `recode`).
    #[staticmethod]
    fn merge(py: Python<'_>, parts: Vec<PyRef<'_, CorePartial>>) -> PyResult<Self> {
        let parts: Vec<Partial> = parts.iter().map(|p| p.inner.clone()).collect();
        Ok(CorePartial { inner: guarded(py, || Partial::merge(parts))? })
    }

    /// The same partial with segment code `c` replaced by `codes[c]`.
    fn recode(&self, py: Python<'_>, codes: Vec<u32>) -> PyResult<Self> {
        let part = self.inner.clone();
        Ok(CorePartial { inner: guarded(py, || part.recode(&codes))? })
    }

    fn to_arrow(&self) -> PyResult<ArrowStream> {
        Ok(ArrowStream::new(self.inner.to_batch().map_err(to_py)?))
    }

    /// The reported table at `as_of` and `since` (see `ltrcore.cohorts`).
    /// `profit`: the spec has a cost column, so the cells' profit is reported (else it is null).
    #[pyo3(signature = (*, period, tz, as_of, since, profit=false))]
    fn finalize(&self, py: Python<'_>, period: &str, tz: &str, as_of: Option<(String, i64)>, since: Option<(String, i64)>, profit: bool) -> PyResult<CoreResult> {
        let cal = Calendar::new(PeriodKind::parse(period).map_err(to_py)?, tz).map_err(to_py)?;
        let cut = ltrcore_core::CutOff { as_of: time_point(as_of)?, since: time_point(since)? };
        let mut result = guarded(py, || self.inner.finalize(&cal, cut))?;
        result.has_profit = profit;
        Ok(CoreResult::new(result))
    }

    /// The segment codes the partial uses, sorted.
    fn segment_codes(&self) -> Vec<u32> {
        let mut codes: Vec<u32> = self.inner.groups.iter().map(|g| g.0).collect();
        codes.dedup();
        codes
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
    fn signup(&self) -> bool {
        self.inner.kind == CohortKind::Signup
    }
    #[getter]
    fn has_activity(&self) -> bool {
        self.inner.activity.is_some()
    }
    #[getter]
    fn cohort_groups(&self) -> usize {
        self.inner.groups.len()
    }
    #[getter]
    fn input_rows(&self) -> u64 {
        self.inner.orders.rows
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}
