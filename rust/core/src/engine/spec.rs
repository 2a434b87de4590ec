//! What a run is asked to do: the spec, its inputs and hooks.

use arrow_array::RecordBatchReader;

use crate::error::{CoreError, Result};

/// A point in time given by the caller: an instant, or a wall-clock time in the run's zone.
#[derive(Clone, Copy, Debug)]
pub enum TimePoint {
    InstantMicros(i64),
    LocalMicros(i64),
}

/// Where the reported table is cut: not part of what is accumulated, so one partial is finalized at
/// any cut-off (`Partial::finalize`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CutOff {
    /// A cell is complete when its period ends by `as_of` (default: the start of the last order's
    /// period).
    pub as_of: Option<TimePoint>,
    /// Cohorts before the first whole period from `since` are not used.
    pub since: Option<TimePoint>,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub user: String,
    pub ts: String,
    pub amount: String,
    /// Column of `u32` segment codes: in signups when given, else in orders.
    pub segment: Option<String>,
    pub signup_ts: String,
    pub activity_ts: String,
    /// The user id columns of signups and activity (`user` names the orders').
    pub signup_user: String,
    pub activity_user: String,
    /// The `strftime` layout of text timestamps in every table (`None`: ISO-8601).
    pub ts_format: Option<String>,
    /// Per-order cost column of the orders: each cell then sums its orders' profit (amount − cost).
    pub cost: Option<String>,
    pub horizon: u32,
    pub period: String,
    pub tz: String,
    /// `min_amount` as `mantissa × 10^exponent`.
    pub min_amount: (i128, i32),
    pub float_scale: u8,
    pub strict: bool,
    pub threads: usize,
    /// Rows per parallel step; progress ticks come between rounds of `STEPS_PER_ROUND` steps.
    pub chunk_rows: usize,
    /// Memory all the workers' private copies of the cohort grid may take together; a larger grid
    /// is kept once and shared (see `kernel::CellSink`). `DEFAULT_CELLS_BUDGET` unless testing.
    pub cells_budget: usize,
}

/// The default `Spec::cells_budget`: 256 MiB.
pub const DEFAULT_CELLS_BUDGET: usize = 256 << 20;

impl Spec {
    pub fn validate(&self) -> Result<()> {
        if !(1..=1000).contains(&self.horizon) {
            return Err(CoreError::InvalidArgument(format!(
                "horizon must be between 1 and 1000; got {}",
                self.horizon
            )));
        }
        if self.float_scale > 18 {
            return Err(CoreError::InvalidArgument(format!(
                "scale must be between 0 and 18; got {}",
                self.float_scale
            )));
        }
        if self.threads == 0 || self.threads > 1024 {
            return Err(CoreError::InvalidArgument(format!("threads must be between 1 and 1024; got {}", self.threads)));
        }
        if !(1..=MAX_CHUNK_ROWS).contains(&self.chunk_rows) {
            return Err(CoreError::InvalidArgument(format!("chunk_rows must be between 1 and {MAX_CHUNK_ROWS}")));
        }
        Ok(())
    }
}

/// An input table that can be opened as a stream of record batches.
pub trait BatchSource: Send {
    fn open(&mut self) -> Result<Box<dyn RecordBatchReader + Send>>;
    /// Whether `open` may be called again for a second pass.
    fn reopenable(&self) -> bool;
    /// Whether the rows are held in memory already (a table rather than a stream), so that half a
    /// byte per row to speed up the second pass does not change the memory's order.
    fn held_in_memory(&self) -> bool;
}

/// Called from the calling thread between steps: progress reports and cancellation. `done` marks
/// the last call of a phase.
pub trait Hooks {
    fn tick(&self, phase: &'static str, rows_done: u64, done: bool) -> Result<()>;
}

pub struct Inputs<'a> {
    pub orders: &'a mut dyn BatchSource,
    pub signups: Option<&'a mut dyn BatchSource>,
    pub activity: Option<&'a mut dyn BatchSource>,
    /// With segments: the order of the segment values, as each code's rank (asked for once every
    /// code is known, after the cohorts' pass). A user whose earliest rows tie on the timestamp
    /// takes the smallest segment by this order. Without it, the smallest code.
    pub segment_ranks: Option<&'a mut dyn FnMut() -> Result<Vec<u32>>>,
}

/// Most rows per step (`Spec::chunk_rows`): a row's index within its worker's share of a step is
/// kept in 32 bits.
pub const MAX_CHUNK_ROWS: usize = 1 << 24;
