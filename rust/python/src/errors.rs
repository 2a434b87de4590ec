//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `ltrcore/exceptions.py` so that they can inherit from both
//! `LtrcoreError` and the matching builtin (`KeyError`, `TypeError`, `ValueError`).

use ltrcore_core::CoreError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

fn ltrcore_exception(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py
        .import("ltrcore.exceptions")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

pub fn to_py(py: Python<'_>, err: CoreError) -> PyErr {
    let class = match &err {
        CoreError::ColumnNotFound { .. } => "ColumnNotFoundError",
        CoreError::Dtype { .. } => "DtypeError",
        CoreError::InvalidArgument(_) => "InvalidArgumentError",
        CoreError::BadRow { .. } => "BadRowsError",
        CoreError::Stream { .. } => "StreamError",
        CoreError::Internal(_) => "InternalError",
        CoreError::External(_) => {
            // A Python error raised by a callback or by the source itself: re-raise it unchanged.
            let CoreError::External(inner) = err else { unreachable!() };
            return match inner.downcast::<PyErr>() {
                Ok(pyerr) => *pyerr,
                Err(other) => ltrcore_exception(py, "LtrcoreError", other.to_string()),
            };
        }
    };
    ltrcore_exception(py, class, err.to_string())
}

/// Wraps a Python error so it can travel through the core and come back out unchanged.
pub fn external(err: PyErr) -> CoreError {
    CoreError::External(Box::new(err))
}

/// A panic payload as text, for `InternalError`.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
