//! The one place where core errors become Python exceptions.
//!
//! The exception classes live in `ltrcore/exceptions.py` so that they can inherit from both
//! `LtrcoreError` and the matching builtin (`KeyError`, `TypeError`, `ValueError`, `MemoryError`).
//! `import_exception!` links each one by name at compile time, so a misspelt class cannot silently
//! become a plain `RuntimeError`.

use ltrcore_core::CoreError;
use pyo3::prelude::*;

pyo3::import_exception!(ltrcore.exceptions, LtrcoreError);
pyo3::import_exception!(ltrcore.exceptions, ColumnNotFoundError);
pyo3::import_exception!(ltrcore.exceptions, DtypeError);
pyo3::import_exception!(ltrcore.exceptions, InvalidArgumentError);
pyo3::import_exception!(ltrcore.exceptions, BadRowsError);
pyo3::import_exception!(ltrcore.exceptions, StreamError);
pyo3::import_exception!(ltrcore.exceptions, LateRowsError);
pyo3::import_exception!(ltrcore.exceptions, OutOfMemoryError);
pyo3::import_exception!(ltrcore.exceptions, InternalError);

pub fn to_py(err: CoreError) -> PyErr {
    let message = err.to_string();
    match err {
        CoreError::ColumnNotFound { .. } => ColumnNotFoundError::new_err(message),
        CoreError::Dtype { .. } => DtypeError::new_err(message),
        CoreError::InvalidArgument(_) => InvalidArgumentError::new_err(message),
        CoreError::BadRow { .. } => BadRowsError::new_err(message),
        CoreError::Stream { .. } => StreamError::new_err(message),
        CoreError::LateRows(_) => LateRowsError::new_err(message),
        CoreError::OutOfMemory(_) => OutOfMemoryError::new_err(message),
        CoreError::Internal(_) => InternalError::new_err(message),
        // A Python error raised by a callback or by the source itself (Ctrl-C included): re-raised
        // unchanged.
        CoreError::External(inner) => match inner.downcast::<PyErr>() {
            Ok(pyerr) => *pyerr,
            Err(other) => LtrcoreError::new_err(other.to_string()),
        },
        // `CoreError` is non-exhaustive to other crates: a new variant is at least an ltrcore error.
        #[allow(unreachable_patterns)]
        _ => LtrcoreError::new_err(message),
    }
}

/// Wraps a Python error so it can travel through the core and come back out unchanged.
pub fn external(err: PyErr) -> CoreError {
    CoreError::External(Box::new(err))
}

/// A panic payload as a core error: an allocation that failed in a hot loop is `OutOfMemory`,
/// anything else a bug (`InternalError`).
pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> CoreError {
    ltrcore_core::error::from_panic(payload)
}
