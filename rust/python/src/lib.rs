//! `ltrcore._core`: the thin binding over `ltrcore-core`.
//!
//! It converts arguments, imports Arrow streams, releases the GIL while the core runs, reports
//! progress and checks for Ctrl-C from the calling thread, and maps errors (and panics) to Python
//! exceptions in `errors.rs`.

mod arrow_io;
mod errors;
mod partial;
mod result;
mod segments;
mod state;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ltrcore_core::{accumulate as accumulate_inputs, Hooks, Inputs, Spec, TimePoint};
use pyo3::prelude::*;

use crate::arrow_io::{ArrowStream, PySource};
use crate::errors::{external, from_panic, to_py};
use crate::partial::CorePartial;
use crate::result::CoreResult;

/// Progress and cancellation, polled by the core from the calling thread.
pub(crate) struct PyHooks {
    pub(crate) progress: Option<Py<PyAny>>,
    /// When and in which phase the callback was last called.
    pub(crate) last_progress: Mutex<Option<(Instant, &'static str)>>,
}

impl Hooks for PyHooks {
    fn tick(&self, phase: &'static str, rows_done: u64, done: bool) -> ltrcore_core::Result<()> {
        Python::attach(|py| {
            // Ctrl-C: Python's handler only sets a flag while we hold no GIL; this raises it.
            py.check_signals()?;
            if let Some(cb) = &self.progress {
                let mut last = self.last_progress.lock().expect("progress lock");
                let due = match *last {
                    None => true,
                    Some((at, last_phase)) => done || last_phase != phase || at.elapsed() >= Duration::from_millis(500),
                };
                if due {
                    *last = Some((Instant::now(), phase));
                    cb.call1(py, (phase, rows_done))?;
                }
            }
            Ok::<(), PyErr>(())
        })
        .map_err(external)
    }
}

pub(crate) fn time_point(value: Option<(String, i64)>) -> PyResult<Option<TimePoint>> {
    match value {
        None => Ok(None),
        Some((kind, micros)) => match kind.as_str() {
            "instant" => Ok(Some(TimePoint::InstantMicros(micros))),
            "local" => Ok(Some(TimePoint::LocalMicros(micros))),
            other => Err(pyo3::exceptions::PyValueError::new_err(format!("unknown time point kind {other:?}"))),
        },
    }
}

/// The order of the segment values, from the front's coder: a callable the core calls once.
pub(crate) fn ranks_from(callable: Py<PyAny>) -> impl FnMut() -> ltrcore_core::Result<Vec<u32>> + Send {
    move || Python::attach(|py| callable.call0(py)?.extract::<Vec<u32>>(py)).map_err(external)
}

/// Runs `f` without the GIL, with its errors and panics mapped to Python exceptions.
pub(crate) fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> ltrcore_core::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py(err)),
        Err(payload) => Err(to_py(from_panic(payload))),
    }
}

/// Runs the engine's passes over the inputs into a partial. Called by `ltrcore.Accumulator`, which
/// resolves inputs and validates arguments.
#[pyfunction]
#[pyo3(signature = (
    *, orders, orders_reopenable, orders_in_memory, user, ts, amount, segment, signups, signup_ts, activity, activity_ts,
    signup_user, activity_user, ts_format, cost,
    horizon, period, tz, min_amount, scale, strict, threads, chunk_rows, progress,
    segment_ranks=None, cells_budget=None
))]
#[allow(clippy::too_many_arguments)]
fn accumulate(
    py: Python<'_>,
    orders: Py<PyAny>,
    orders_reopenable: bool,
    orders_in_memory: bool,
    user: String,
    ts: String,
    amount: String,
    segment: Option<String>,
    signups: Option<Py<PyAny>>,
    signup_ts: String,
    activity: Option<Py<PyAny>>,
    activity_ts: String,
    signup_user: String,
    activity_user: String,
    ts_format: Option<String>,
    cost: Option<String>,
    horizon: u32,
    period: String,
    tz: String,
    min_amount: (i128, i32),
    scale: u8,
    strict: bool,
    threads: usize,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
    segment_ranks: Option<Py<PyAny>>,
    cells_budget: Option<usize>,
) -> PyResult<CorePartial> {
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
        horizon,
        period,
        tz,
        min_amount,
        float_scale: scale,
        strict,
        threads,
        chunk_rows,
        cells_budget: cells_budget.unwrap_or(ltrcore_core::DEFAULT_CELLS_BUDGET),
    };
    let mut orders = PySource { table: "orders", opener: orders, reopenable: orders_reopenable, in_memory: orders_in_memory };
    let mut signups = signups.map(|opener| PySource { table: "signups", opener, reopenable: false, in_memory: false });
    let mut activity = activity.map(|opener| PySource { table: "activity", opener, reopenable: false, in_memory: false });
    let hooks = PyHooks { progress, last_progress: Mutex::new(None) };
    // The order of the segment values, from the front's coder (called once, after the cohorts' pass).
    let mut ranks = segment_ranks.map(ranks_from);
    let inner = guarded(py, || {
        let inputs = Inputs {
            orders: &mut orders,
            signups: signups.as_mut().map(|s| s as &mut dyn ltrcore_core::BatchSource),
            activity: activity.as_mut().map(|s| s as &mut dyn ltrcore_core::BatchSource),
            segment_ranks: ranks.as_mut().map(|f| f as &mut dyn FnMut() -> ltrcore_core::Result<Vec<u32>>),
        };
        accumulate_inputs(spec, inputs, &hooks)
    })?;
    Ok(CorePartial { inner })
}

/// Checks that `tz` names a zone of the time-zone database the engine uses.
#[pyfunction]
fn check_tz(tz: &str) -> PyResult<()> {
    ltrcore_core::calendar::Calendar::new(ltrcore_core::calendar::PeriodKind::Month, tz).map(|_| ()).map_err(to_py)
}

/// Checks that `format` is a `strftime` layout the engine can parse text timestamps with.
#[pyfunction]
fn check_ts_format(format: &str) -> PyResult<()> {
    ltrcore_core::columns::check_ts_format(format).map_err(to_py)
}

/// Raises a Rust panic inside the same guard `compute` uses (tests check it becomes `InternalError`).
#[pyfunction]
fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    guarded(py, || -> ltrcore_core::Result<()> { panic!("deliberate panic for testing") })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(accumulate, m)?)?;
    m.add_function(wrap_pyfunction!(check_tz, m)?)?;
    m.add_function(wrap_pyfunction!(check_ts_format, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_class::<CoreResult>()?;
    m.add_class::<CorePartial>()?;
    m.add_class::<state::CoreState>()?;
    m.add_class::<ArrowStream>()?;
    m.add_class::<arrow_io::ArrowArray>()?;
    m.add_class::<segments::SegmentCoder>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("STATE_FORMAT_VERSION", ltrcore_core::state::STATE_FORMAT_VERSION)?;
    Ok(())
}
