//! ltrcore-core: the pure-Rust cohort engine behind the `ltrcore` Python package.
//!
//! * [`calendar`]: tz-aware period indices (month, ISO week, quarter, day).
//! * [`columns`]: reading Arrow columns into user keys, periods and fixed-point money.
//! * [`kernel`]: sharded per-user state (open addressing, prefetch) and cell accumulation.
//! * [`reconcile`]: the reasons every input row lands under.
//! * [`engine`]: one run over the inputs into a partial.
//! * [`partial`]: the mergeable partial state, its Arrow layout, and the final cohort arrays.
//! * [`report`]: the final arrays as Arrow record batches (nulls for incomplete cells, exact and
//!   float money).

// Every narrowing cast is checked or carries an `allow` saying why it cannot truncate: a period
// index that silently wrapped once turned far-future timestamps into invented cohorts.
#![warn(clippy::cast_possible_truncation)]

pub mod calendar;
pub mod columns;
pub mod engine;
pub mod error;
pub mod kernel;
pub mod partial;
pub mod reconcile;
pub mod segments;
pub mod report;

pub use engine::{accumulate, run, BatchSource, CutOff, CohortResult, Hooks, Inputs, Spec, TimePoint, DEFAULT_CELLS_BUDGET};
pub use error::{CoreError, Result};
pub use partial::{CohortKind, Partial, PARTIAL_FORMAT_VERSION};
pub mod state;
