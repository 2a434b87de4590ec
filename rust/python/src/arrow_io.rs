//! Arrow in and out through the C stream interface (PyCapsule protocol), using arrow-rs FFI.

use std::ffi::CStr;

use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use ltrcore_core::BatchSource;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::errors::external;

const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

/// Imports any object with `__arrow_c_stream__` as a record batch reader (zero-copy).
pub fn import_stream(obj: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
    let capsule = obj.call_method1("__arrow_c_stream__", (obj.py().None(),))?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let ptr = capsule.pointer_checked(Some(STREAM_CAPSULE))?;
    // SAFETY: the capsule holds an FFI_ArrowArrayStream; `from_raw` moves it out and leaves the
    // released (empty) stream behind, so the capsule's own destructor does nothing more.
    unsafe { ArrowArrayStreamReader::from_raw(ptr.as_ptr() as *mut FFI_ArrowArrayStream) }
        .map_err(|e| PyValueError::new_err(format!("could not import the Arrow stream: {e}")))
}

/// An input table: a Python callable that returns a fresh Arrow stream each time it is called.
pub struct PySource {
    pub opener: Py<PyAny>,
    pub reopenable: bool,
    pub in_memory: bool,
}

impl BatchSource for PySource {
    fn open(&mut self) -> ltrcore_core::Result<Box<dyn RecordBatchReader + Send>> {
        Python::attach(|py| {
            let obj = self.opener.call0(py)?;
            let reader = import_stream(obj.bind(py))?;
            Ok::<_, PyErr>(Box::new(reader) as Box<dyn RecordBatchReader + Send>)
        })
        .map_err(external)
    }

    fn reopenable(&self) -> bool {
        self.reopenable
    }

    fn held_in_memory(&self) -> bool {
        self.in_memory
    }
}

/// Record batches exported to Python through `__arrow_c_stream__`.
#[pyclass(module = "ltrcore._core", name = "ArrowStream", frozen)]
pub struct ArrowStream {
    batch: RecordBatch,
}

impl ArrowStream {
    pub fn new(batch: RecordBatch) -> Self {
        ArrowStream { batch }
    }
}

#[pymethods]
impl ArrowStream {
    /// Exports the batch as an Arrow C stream. May be called any number of times.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema; // the schema is fixed; consumers cast if they need to
        let reader = RecordBatchIterator::new([Ok(self.batch.clone())], self.batch.schema());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM_CAPSULE)
    }
}
