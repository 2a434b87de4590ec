//! `SegmentCoder`: the core's segment coder for the front's `ltrcore.adapters.SegmentCoder`.

use std::sync::Arc;

use arrow_array::{ArrayRef, UInt32Array};
use ltrcore_core::segments::SegmentCoder as Coder;
use ltrcore_core::CoreError;
use pyo3::prelude::*;

use crate::arrow_io::{import_schema, import_stream, ArrowArray};
use crate::errors::{to_py, InvalidArgumentError};
use crate::guarded;

#[pyclass(module = "ltrcore._core", name = "SegmentCoder")]
pub struct SegmentCoder {
    inner: Coder,
}

#[pymethods]
impl SegmentCoder {
    /// A coder for the `by` columns of `schema` (an object with `__arrow_c_schema__`).
    /// `parallel`: look a batch's rows up on all cores.
    #[new]
    #[pyo3(signature = (schema, *, parallel=true))]
    fn new(schema: &Bound<'_, PyAny>, parallel: bool) -> PyResult<Self> {
        let schema = import_schema("the by columns", schema)?;
        Ok(SegmentCoder { inner: Coder::new(&schema, parallel).map_err(to_py)? })
    }

    /// Whether the coder takes every column of `schema`.
    #[staticmethod]
    fn accepts(schema: &Bound<'_, PyAny>) -> PyResult<bool> {
        let schema = import_schema("the by columns", schema)?;
        Ok(schema.fields().iter().all(|f| Coder::accepts(f.data_type())))
    }

    /// The codes of the rows of `keys` (an object with `__arrow_c_stream__` holding the `by`
    /// columns, in order), and the row of each new code's first appearance, in code order.
    fn code(&mut self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<(ArrowArray, Vec<usize>)> {
        let batches = import_stream("the by columns", keys)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InvalidArgumentError::new_err(format!("the by columns: {e}")))?;
        let inner = &mut self.inner;
        let (codes, first_rows) = guarded(py, move || {
            let mut codes: Vec<u32> = Vec::new();
            let mut first_rows = Vec::new();
            for batch in &batches {
                let coded = inner.code(batch.columns())?;
                first_rows.extend(coded.first_rows.iter().map(|r| codes.len() + r));
                if codes.is_empty() {
                    codes = coded.codes;
                } else {
                    codes.extend_from_slice(&coded.codes);
                }
            }
            Ok::<_, CoreError>((codes, first_rows))
        })?;
        let array: ArrayRef = Arc::new(UInt32Array::from(codes));
        Ok((ArrowArray::new(array), first_rows))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}
