//! `CoreState`: the core's monthly state. The Python `ltrcore.CohortState` around it keeps the spec,
//! the segment values, and the file.

use std::sync::Mutex;

use ltrcore_core::calendar::{Calendar, PeriodKind};
use ltrcore_core::engine::period_of_point;
use ltrcore_core::state::{family_name, family_of_name, period_label, Late, State, StateInputs};
use ltrcore_core::{BatchSource, CohortKind, Spec};
use pyo3::prelude::*;

use crate::arrow_io::{import_stream, ArrowStream, PySource};
use crate::errors::{to_py, InvalidArgumentError};
use crate::partial::CorePartial;
use crate::{guarded, ranks_from, time_point, PyHooks};

#[pyclass(module = "ltrcore._core", name = "CoreState", frozen)]
pub struct CoreState {
    inner: State,
}

fn batches(table: &str, data: &Bound<'_, PyAny>) -> PyResult<Vec<arrow_array::RecordBatch>> {
    let reader = import_stream(table, data)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| InvalidArgumentError::new_err(format!("{table}: {e}")))
}

#[pymethods]
impl CoreState {
    #[staticmethod]
    fn empty(horizon: u32, signup: bool) -> Self {
        CoreState { inner: State::empty(horizon, if signup { CohortKind::Signup } else { CohortKind::FirstPurchase }) }
    }

    /// A state from its saved parts, checked (see `State::from_parts`).
    #[staticmethod]
    fn from_parts(py: Python<'_>, partial: PyRef<'_, CorePartial>, watermark: Option<i32>, family: &str, users: Bound<'_, PyAny>, waiting: Bound<'_, PyAny>) -> PyResult<Self> {
        let family = family_of_name(family).map_err(to_py)?;
        let (users, waiting) = (batches("state users", &users)?, batches("state waiting rows", &waiting)?);
        let partial = partial.inner.clone();
        Ok(CoreState { inner: guarded(py, || State::from_parts(partial, watermark, family, &users, &waiting))? })
    }

    /// The state with new rows added (see `State::update`); this one is left as it was.
    #[pyo3(signature = (
        *, orders, signups, activity, user, ts, amount, segment, signup_ts, activity_ts,
        signup_user, activity_user, ts_format, cost, period, tz, min_amount, scale,
        strict, late, through, threads, progress, segment_ranks=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        py: Python<'_>,
        orders: Option<Py<PyAny>>,
        signups: Option<Py<PyAny>>,
        activity: Option<Py<PyAny>>,
        user: String,
        ts: String,
        amount: String,
        segment: Option<String>,
        signup_ts: String,
        activity_ts: String,
        signup_user: String,
        activity_user: String,
        ts_format: Option<String>,
        cost: Option<String>,
        period: String,
        tz: String,
        min_amount: (i128, i32),
        scale: u8,
        strict: bool,
        late: &str,
        through: Option<(String, i64)>,
        threads: usize,
        progress: Option<Py<PyAny>>,
        segment_ranks: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let late = match late {
            "refuse" => Late::Refuse,
            "apply" => Late::Apply,
            other => return Err(InvalidArgumentError::new_err(format!("late must be \"refuse\" or \"apply\"; got {other:?}"))),
        };
        let kind = PeriodKind::parse(&period).map_err(to_py)?;
        let cal = Calendar::new(kind, &tz).map_err(to_py)?;
        let through = match time_point(through)? {
            Some(point) => Some(period_of_point(point, &cal, "through").map_err(to_py)?),
            None => None,
        };
        let spec = Spec {
            user,
            ts,
            amount,
            segment,
            signup_ts,
            activity_ts,
            signup_user,
            activity_user,
            ts_format,
            cost,
            horizon: self.inner.partial.horizon,
            period,
            tz,
            min_amount,
            float_scale: scale,
            strict,
            threads,
            chunk_rows: 1 << 16,
            cells_budget: ltrcore_core::DEFAULT_CELLS_BUDGET,
        };
        let source = |table: &'static str, opener: Option<Py<PyAny>>| opener.map(|opener| PySource { table, opener, reopenable: false, in_memory: false });
        let (mut orders, mut signups, mut activity) = (source("orders", orders), source("signups", signups), source("activity", activity));
        let hooks = PyHooks { progress, last_progress: Mutex::new(None) };
        let mut ranks = segment_ranks.map(ranks_from);
        let state = &self.inner;
        let inner = guarded(py, || {
            let inputs = StateInputs {
                orders: orders.as_mut().map(|s| s as &mut dyn BatchSource),
                signups: signups.as_mut().map(|s| s as &mut dyn BatchSource),
                activity: activity.as_mut().map(|s| s as &mut dyn BatchSource),
                segment_ranks: ranks.as_mut().map(|f| f as &mut dyn FnMut() -> ltrcore_core::Result<Vec<u32>>),
            };
            state.update(&spec, inputs, late, through, &hooks)
        })?;
        Ok(CoreState { inner })
    }

    fn users_arrow(&self) -> PyResult<ArrowStream> {
        Ok(ArrowStream::new(self.inner.users_batch().map_err(to_py)?))
    }

    fn waiting_arrow(&self) -> PyResult<ArrowStream> {
        Ok(ArrowStream::new(self.inner.waiting_batch().map_err(to_py)?))
    }

    #[getter]
    fn partial(&self) -> CorePartial {
        CorePartial { inner: self.inner.partial.clone() }
    }

    #[getter]
    fn watermark(&self) -> Option<i32> {
        self.inner.watermark
    }

    #[getter]
    fn family(&self) -> &'static str {
        family_name(self.inner.family)
    }

    #[getter]
    fn users(&self) -> usize {
        self.inner.user_count()
    }

    #[getter]
    fn waiting_rows(&self) -> usize {
        self.inner.waiting_count()
    }

    /// The segment codes the users hold, sorted and distinct.
    fn segment_codes(&self) -> Vec<u32> {
        let mut codes: Vec<u32> = self.inner.users.iter().flat_map(|u| u.segment.iter().copied()).collect();
        codes.sort_unstable();
        codes.dedup();
        codes
    }

    /// The same state with segment code `c` replaced by `codes[c]` (users and partial).
    fn recode(&self, py: Python<'_>, codes: Vec<u32>) -> PyResult<Self> {
        let state = self.inner.clone();
        Ok(CoreState { inner: guarded(py, || state.recode(&codes))? })
    }

    /// The first day of a period (`YYYY-MM-DD`), for messages.
    #[staticmethod]
    fn period_label(period: &str, value: i32) -> PyResult<String> {
        Ok(period_label(PeriodKind::parse(period).map_err(to_py)?, value))
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}
