//! Errors of the core. The binding maps each variant to one Python exception, in one place.

use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("column {column:?} not found in {table}; available columns: {available}")]
    ColumnNotFound { table: String, column: String, available: String },

    #[error("column {column:?} in {table} has dtype {dtype}, which is not supported; accepted: {accepted}")]
    Dtype { table: String, column: String, dtype: String, accepted: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("strict=True: column {column:?} in {table} has {what} at row {row}")]
    BadRow { table: String, column: String, what: String, row: u64 },

    #[error("reading {table} failed: {message}")]
    Stream { table: String, message: String },

    /// An error raised by a caller-supplied hook (progress callback, Ctrl-C check); passed through as is.
    #[error("{0}")]
    External(Box<dyn StdError + Send + Sync>),

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;
