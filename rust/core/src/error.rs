//! Errors of the core. The binding maps each variant to one Python exception, in one place.

use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("column {column:?} not found in {table}; available columns: {available}")]
    ColumnNotFound { table: String, column: String, available: String },

    #[error("column {column:?} in {table} has dtype {dtype}, which is not supported; accepted: {accepted}")]
    Dtype { table: String, column: String, dtype: String, accepted: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("strict=True: column {column:?} in {table} has {what} at row {row}")]
    BadRow { table: String, column: String, what: String, row: u64 },

    /// An update of the monthly state refused for rows at or before its watermark.
    #[error("{0}")]
    LateRows(String),

    #[error("reading {table} failed: {message}")]
    Stream { table: String, message: String },

    /// An error raised by a caller-supplied hook (progress callback, Ctrl-C check); passed through as is.
    #[error("{0}")]
    External(Box<dyn StdError + Send + Sync>),

    /// A large allocation failed (tables, cell arrays, buffers): reported, never an abort.
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    #[error("internal error: {0}")]
    Internal(String),
}

/// Allocates `n` copies of `value`, or reports what could not be allocated. Large buffers go
/// through here so that running out of memory is an error, not an abort of the interpreter.
pub fn try_vec<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| out_of_memory(n.saturating_mul(size_of::<T>()), what))?;
    v.resize(n, value);
    Ok(v)
}

pub fn out_of_memory(bytes: usize, what: &str) -> CoreError {
    CoreError::OutOfMemory(alloc_message(bytes, what))
}

/// Unwinds with `AllocFailure`: for allocations in the workers' loops, which cannot return an error.
pub fn unwind_out_of_memory(bytes: usize, what: &str) -> ! {
    std::panic::resume_unwind(Box::new(AllocFailure(alloc_message(bytes, what))))
}

fn alloc_message(bytes: usize, what: &str) -> String {
    format!("could not allocate {} MiB for {what}", bytes.div_ceil(1 << 20))
}

/// The payload a worker unwinds with when an allocation in a hot loop fails (`resume_unwind`, so
/// no panic message is printed); the engine turns it back into `CoreError::OutOfMemory`.
#[derive(Debug)]
pub struct AllocFailure(pub String);

pub type Result<T> = std::result::Result<T, CoreError>;

/// A caught panic as an error: an `AllocFailure` is `OutOfMemory`, anything else a bug.
pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> CoreError {
    if let Some(AllocFailure(what)) = payload.downcast_ref::<AllocFailure>() {
        return CoreError::OutOfMemory(what.clone());
    }
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    CoreError::Internal(format!("panic: {message}"))
}
