//! Arrow in and out through the C data interface (PyCapsule protocol), using arrow-rs FFI.
//!
//! An input source opens to one of two things:
//! * an object with `__arrow_c_stream__`: a C stream, read without touching Python (tables,
//!   DataFrames, DuckDB readers);
//! * a Python iterator of record batches with a `schema` (`ltrcore.adapters.Batches`): each batch
//!   is pulled with the GIL and imported through `__arrow_c_array__`, with its own schema, so the
//!   core can check it against the stream's, and a Python exception raised while producing it
//!   (Ctrl-C included) comes back out unchanged.

use std::ffi::CStr;
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ArrayRef;
use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StructArray};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use ltrcore_core::BatchSource;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

use crate::errors::{external, InvalidArgumentError};

const STREAM_CAPSULE: &CStr = c"arrow_array_stream";
const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
const ARRAY_CAPSULE: &CStr = c"arrow_array";

/// A capsule that is not what the protocol promises is the caller's mistake, not a crash.
fn bad_capsule(table: &str, method: &str, err: PyErr) -> PyErr {
    InvalidArgumentError::new_err(format!("{table}: {method}() did not return a valid Arrow capsule: {err}"))
}

/// Imports any object with `__arrow_c_stream__` as a record batch reader (zero-copy).
pub fn import_stream(table: &str, obj: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
    let capsule = obj.call_method1("__arrow_c_stream__", (obj.py().None(),))?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|e| bad_capsule(table, "__arrow_c_stream__", e.into()))?;
    let ptr = capsule.pointer_checked(Some(STREAM_CAPSULE)).map_err(|e| bad_capsule(table, "__arrow_c_stream__", e))?;
    // SAFETY: the capsule holds an FFI_ArrowArrayStream (its name says so); `from_raw` moves it out
    // and leaves the released (empty) stream behind, so the capsule's destructor does nothing more.
    unsafe { ArrowArrayStreamReader::from_raw(ptr.as_ptr() as *mut FFI_ArrowArrayStream) }
        .map_err(|e| InvalidArgumentError::new_err(format!("{table}: could not import the Arrow stream: {e}")))
}

pub fn import_schema(table: &str, obj: &Bound<'_, PyAny>) -> PyResult<Schema> {
    let capsule = obj.call_method0("__arrow_c_schema__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|e| bad_capsule(table, "__arrow_c_schema__", e.into()))?;
    let ptr = capsule.pointer_checked(Some(SCHEMA_CAPSULE)).map_err(|e| bad_capsule(table, "__arrow_c_schema__", e))?;
    // SAFETY: the capsule holds an FFI_ArrowSchema, which stays owned by the capsule (borrowed here).
    let ffi = unsafe { &*(ptr.as_ptr() as *const FFI_ArrowSchema) };
    Schema::try_from(ffi).map_err(|e| InvalidArgumentError::new_err(format!("{table}: unreadable Arrow schema: {e}")))
}

/// Imports one record batch through `__arrow_c_array__` (zero-copy), with the batch's own schema.
fn import_batch(table: &str, obj: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    let pair = obj.call_method1("__arrow_c_array__", (obj.py().None(),))?;
    let pair = pair.cast::<PyTuple>().map_err(|e| bad_capsule(table, "__arrow_c_array__", e.into()))?;
    let (schema, array) = (pair.get_item(0)?, pair.get_item(1)?);
    let schema = schema.cast::<PyCapsule>().map_err(|e| bad_capsule(table, "__arrow_c_array__", e.into()))?;
    let array = array.cast::<PyCapsule>().map_err(|e| bad_capsule(table, "__arrow_c_array__", e.into()))?;
    let schema_ptr = schema.pointer_checked(Some(SCHEMA_CAPSULE)).map_err(|e| bad_capsule(table, "__arrow_c_array__", e))?;
    let array_ptr = array.pointer_checked(Some(ARRAY_CAPSULE)).map_err(|e| bad_capsule(table, "__arrow_c_array__", e))?;
    // SAFETY: the capsules hold an FFI_ArrowSchema and an FFI_ArrowArray (their names say so).
    // `from_raw` moves the array out and leaves a released one behind for the capsule to drop.
    let data = unsafe {
        let ffi_array = FFI_ArrowArray::from_raw(array_ptr.as_ptr() as *mut FFI_ArrowArray);
        from_ffi(ffi_array, &*(schema_ptr.as_ptr() as *const FFI_ArrowSchema))
    };
    let invalid = |e: String| InvalidArgumentError::new_err(format!("{table}: not a record batch: {e}"));
    let data = data.map_err(|e| invalid(e.to_string()))?;
    if !matches!(data.data_type(), arrow_schema::DataType::Struct(_)) {
        return Err(invalid(format!("got an array of {}", data.data_type())));
    }
    let batch = StructArray::from(data);
    if batch.null_count() > 0 {
        return Err(invalid("the batch has null rows".into()));
    }
    Ok(RecordBatch::from(batch))
}

/// Batches pulled from a Python iterator, one at a time, with the GIL.
struct PyBatchReader {
    table: &'static str,
    iter: Py<PyAny>,
    schema: SchemaRef,
}

impl Iterator for PyBatchReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        Python::attach(|py| match self.iter.bind(py).call_method0("__next__") {
            Ok(obj) => Some(import_batch(self.table, &obj).map_err(|e| ArrowError::ExternalError(Box::new(e)))),
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => None,
            Err(e) => Some(Err(ArrowError::ExternalError(Box::new(e)))),
        })
    }
}

impl RecordBatchReader for PyBatchReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// An input table: a Python callable that returns a fresh stream each time it is called.
pub struct PySource {
    pub table: &'static str,
    pub opener: Py<PyAny>,
    pub reopenable: bool,
    pub in_memory: bool,
}

impl BatchSource for PySource {
    fn open(&mut self) -> ltrcore_core::Result<Box<dyn RecordBatchReader + Send>> {
        let table = self.table;
        Python::attach(|py| {
            let obj = self.opener.call0(py)?;
            let obj = obj.bind(py);
            if obj.hasattr("__arrow_c_stream__")? {
                return Ok::<_, PyErr>(Box::new(import_stream(table, obj)?) as Box<dyn RecordBatchReader + Send>);
            }
            let schema = Arc::new(import_schema(table, &obj.getattr("schema")?)?);
            let iter = obj.try_iter()?.into_any().unbind();
            Ok(Box::new(PyBatchReader { table, iter, schema }) as Box<dyn RecordBatchReader + Send>)
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

/// One array exported to Python through `__arrow_c_array__` (`pyarrow.array(obj)`).
#[pyclass(module = "ltrcore._core", name = "ArrowArray", frozen)]
pub struct ArrowArray {
    array: ArrayRef,
}

impl ArrowArray {
    pub fn new(array: ArrayRef) -> Self {
        ArrowArray { array }
    }
}

#[pymethods]
impl ArrowArray {
    /// Exports the array (its schema and its data). May be called any number of times.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Bound<'py, PyCapsule>)> {
        let _ = requested_schema; // the dtype is fixed; consumers cast if they need to
        let data = self.array.to_data();
        let schema = FFI_ArrowSchema::try_from(data.data_type()).map_err(|e| crate::errors::InternalError::new_err(format!("exporting an array: {e}")))?;
        let array = FFI_ArrowArray::new(&data);
        Ok((PyCapsule::new_with_value(py, schema, SCHEMA_CAPSULE)?, PyCapsule::new_with_value(py, array, ARRAY_CAPSULE)?))
    }
}
