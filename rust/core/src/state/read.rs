//! An update's tables decoded into one list of rows, then sorted by user id.

use rayon::prelude::*;

use super::{part_of, period_label, too_large, LateRow, ORDERS, PARTS, PART_SHIFT, SIGNUPS};
use crate::calendar::{Calendar, PeriodKind};
use crate::columns::{status, BatchAt, BatchView, ColumnNames, ColumnSet, Decoded, Interner, UserFamily, Want};
use crate::engine::{bad_row_error, resolve_columns, status_reason, Hooks, Spec, Stream};
use crate::error::{CoreError, Result};
use crate::kernel::hash_key;
use crate::partial::TableTotals;
use crate::reconcile::Tally;

/// A valid row of an update, with what the walk needs of it, in 40 bytes (every byte of a row is
/// written, moved twice and read: the update's time goes with its size).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rec {
    /// The user's id (`hash_key` of an integer key, `text_id` of a text one; for text, the
    /// interner's key until the ids are known).
    pub(crate) id: u64,
    /// The raw timestamp (the cohort-defining table only).
    pub(crate) ts: i64,
    /// Fixed point at the state's scale (orders only).
    pub(crate) amount: i64,
    /// Amount − cost at the state's scale (orders with a cost column only).
    pub(crate) profit: i64,
    pub(crate) period: i32,
    /// The table in the top 2 bits, the segment code below.
    table_segment: u32,
}

/// Segment codes a row can carry (`Rec::table_segment`).
pub(crate) const MAX_SEGMENTS: u32 = 1 << 30;

impl Rec {
    pub(crate) fn table(&self) -> u8 {
        (self.table_segment >> 30) as u8
    }

    pub(crate) fn segment(&self) -> u32 {
        self.table_segment & (MAX_SEGMENTS - 1)
    }
}

/// Rows decoded at a time.
const BLOCK_ROWS: usize = 1 << 16;
/// Blocks decoded in parallel between two progress ticks.
const BLOCKS_PER_ROUND: usize = 16;

/// Decodes an update's tables into valid rows, counting the others.
pub(crate) struct Reader<'a> {
    pub(crate) pool: &'a rayon::ThreadPool,
    pub(crate) spec: &'a Spec,
    pub(crate) cal: &'a Calendar,
    pub(crate) hooks: &'a dyn Hooks,
    pub(crate) interner: Interner,
    /// The kind of user id, and where it was first seen (a table, or "the state").
    pub(crate) family: Option<(UserFamily, String)>,
    pub(crate) watermark: Option<i32>,
    pub(crate) late_rows: u64,
    pub(crate) first_late: Option<LateRow>,
    /// Last period of any valid row, and of the valid orders.
    pub(crate) max_period: Option<i32>,
    pub(crate) max_orders: Option<i32>,
    /// The valid rows, a chunk per block ordered by partition (integer ids; text ids once their
    /// ids are known), with where each partition starts; and how many rows.
    pub(crate) chunks: Vec<(Vec<Rec>, [usize; PARTS + 1])>,
    pub(crate) rows: usize,
}

impl Reader<'_> {
    pub(crate) fn columns(&mut self, stream: &Stream, names: &ColumnNames<'_>) -> Result<ColumnSet> {
        resolve_columns(stream, names, self.spec.float_scale, &mut self.family)
    }

    pub(crate) fn family(&self) -> Option<UserFamily> {
        self.family.as_ref().map(|f| f.0)
    }

    /// Reads one table: its totals and bad rows into `totals`, its valid rows into `chunks`.
    /// Amounts are multiplied by `factor` (to the state's scale). Blocks of rows are decoded in
    /// parallel, a few at a time, with progress and Ctrl-C checked between them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(&mut self, stream: Stream, set: &ColumnSet, table: u8, defining: bool, factor: i64, totals: &mut TableTotals) -> Result<()> {
        let phase = match table {
            SIGNUPS => "state: signups",
            ORDERS => "state: orders",
            _ => "state: activity",
        };
        let how = BlockSpec {
            want: Want { ts: defining, period: true },
            text: set.family == UserFamily::Str,
            segments: defining && set.segment.is_some(),
            table,
            factor,
            watermark: self.watermark,
            strict: self.spec.strict,
        };
        let mut row0: u64 = 0;
        let hooks = self.hooks;
        hooks.tick(phase, 0, false)?;
        for batch in stream.reader {
            let batch = batch?;
            let at = BatchAt { cal: self.cal, first_row: row0, strict: self.spec.strict, pool: Some(self.pool) };
            let view = BatchView::new(&batch, set, &mut self.interner, at, &mut || Ok(()))?;
            let starts: Vec<usize> = (0..view.len).step_by(BLOCK_ROWS).collect();
            for group in starts.chunks(BLOCKS_PER_ROUND) {
                let cal = self.cal;
                let blocks: Vec<Result<Block>> = self.pool.install(|| {
                    group
                        .par_iter()
                        .map_init(
                            || (Decoded::default(), Vec::new()),
                            |(d, scratch), &lo| decode_block(&view, lo, view.len.min(lo + BLOCK_ROWS), cal, &how, set, row0, d, scratch),
                        )
                        .collect()
                });
                for block in blocks {
                    let block = block?;
                    totals.rows += block.rows;
                    totals.amount += block.amount;
                    totals.tally.merge(&block.tally);
                    self.max_period = self.max_period.max(block.max_period);
                    if table == ORDERS {
                        self.max_orders = self.max_orders.max(block.max_period);
                    }
                    self.late_rows += block.late_rows;
                    if self.first_late.is_none() {
                        self.first_late = block.first_late;
                    }
                    self.rows += block.recs.len();
                    self.chunks.push((block.recs, block.parts));
                }
                hooks.tick(phase, row0 + group.last().map_or(0, |&lo| view.len.min(lo + BLOCK_ROWS)) as u64, false)?;
            }
            row0 += view.len as u64;
        }
        hooks.tick(phase, row0, true)?;
        Ok(())
    }

    pub(crate) fn late_message(&self, kind: PeriodKind) -> String {
        let first = self.first_late.as_ref().expect("a late row was noted");
        let texts = self.interner.texts();
        format!(
            "{} row(s) fall at or before the state's watermark (the period starting {}); the first is {} row {}, user {}, in the period starting {}. \
             Nothing was changed; late=\"apply\" (CLI: --late apply) applies late rows that change no user's cohort",
            self.late_rows,
            period_label(kind, self.watermark.unwrap_or(0)),
            super::table_name(first.table),
            first.row,
            super::show_key(self.family(), first.key, &texts),
            period_label(kind, first.period),
        )
    }
}

/// How a table's blocks are decoded.
struct BlockSpec {
    want: Want,
    text: bool,
    segments: bool,
    table: u8,
    factor: i64,
    watermark: Option<i32>,
    strict: bool,
}

/// One block's valid rows and counts.
struct Block {
    recs: Vec<Rec>,
    parts: [usize; PARTS + 1],
    rows: u64,
    amount: i128,
    tally: Tally,
    max_period: Option<i32>,
    late_rows: u64,
    first_late: Option<LateRow>,
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn decode_block(
    view: &BatchView<'_>,
    lo: usize,
    hi: usize,
    cal: &Calendar,
    how: &BlockSpec,
    set: &ColumnSet,
    row0: u64,
    d: &mut Decoded,
    scratch: &mut Vec<Rec>,
) -> Result<Block> {
    view.decode(lo, hi, cal, how.want, d)?;
    let mut out = Block { recs: Vec::new(), parts: [0; PARTS + 1], rows: d.len() as u64, amount: 0, tally: Tally::default(), max_period: None, late_rows: 0, first_late: None };
    // The rows go to the reused `scratch` first, then once into the block's own buffer, in
    // partition order.
    let valid = scratch;
    valid.clear();
    if valid.try_reserve(d.len()).is_err() || out.recs.try_reserve_exact(d.len()).is_err() {
        return Err(crate::error::out_of_memory(d.len() * size_of::<Rec>(), "the update's rows"));
    }
    for k in 0..d.len() {
        let amount = d.amount[k].checked_mul(how.factor).ok_or_else(|| too_large("an amount"))?;
        out.amount += i128::from(amount);
        if !d.all_valid && d.status[k] != status::VALID {
            let reason = status_reason(d.status[k]);
            if how.strict {
                return Err(bad_row_error(set, reason, row0 + (lo + k) as u64));
            }
            out.tally.add(reason, amount);
            continue;
        }
        let period = d.period[k];
        out.max_period = out.max_period.max(Some(period));
        if how.watermark.is_some_and(|w| period <= w) {
            out.late_rows += 1;
            if out.first_late.is_none() {
                out.first_late = Some(LateRow { table: how.table, row: row0 + (lo + k) as u64, key: d.key[k], period });
            }
        }
        let key = d.key[k];
        let segment = if how.segments { d.segment[k] } else { 0 };
        if segment >= MAX_SEGMENTS {
            return Err(CoreError::InvalidArgument(format!("the state keeps at most {MAX_SEGMENTS} segments")));
        }
        valid.push(Rec {
            id: if how.text { key } else { hash_key(key) },
            ts: if how.want.ts { d.ts[k] } else { 0 },
            amount,
            profit: match d.profit.get(k) {
                Some(&p) => p.checked_mul(how.factor).ok_or_else(|| too_large("a profit"))?,
                None => 0,
            },
            period,
            table_segment: u32::from(how.table) << 30 | segment,
        });
    }
    if how.text {
        out.recs.extend_from_slice(valid);
    } else {
        out.parts = order_by_part(valid, &mut out.recs);
    }
    Ok(out)
}

/// A block's rows in partition order (the top bits of the id) in `out`, with where each
/// partition's rows start: a counting sort. Ids are hashes, so the partitions are even.
pub(crate) fn order_by_part(rows: &[Rec], out: &mut Vec<Rec>) -> [usize; PARTS + 1] {
    let mut starts = [0usize; PARTS + 1];
    for r in rows {
        starts[part_of(r.id) + 1] += 1;
    }
    for p in 0..PARTS {
        starts[p + 1] += starts[p];
    }
    out.clear();
    out.reserve_exact(rows.len());
    let mut next = starts;
    let slots = &mut out.spare_capacity_mut()[..rows.len()];
    for r in rows {
        let p = part_of(r.id);
        slots[next[p]].write(*r);
        next[p] += 1;
    }
    // SAFETY: every one of the first `rows.len()` slots was written above.
    unsafe { out.set_len(rows.len()) };
    starts
}

/// One partition's rows, gathered from every chunk straight into buckets of the id bits below the
/// partition's, then each bucket sorted in cache: runs of a few rows, for insertion.
pub(crate) fn gather_sorted(chunks: &[(Vec<Rec>, [usize; PARTS + 1])], p: usize, rows: &mut Vec<Rec>, scratch: &mut Vec<Rec>) {
    let slices = || chunks.iter().map(move |(c, parts)| &c[parts[p]..parts[p + 1]]);
    // About four rows a bucket.
    let n: usize = slices().map(<[Rec]>::len).sum();
    let bits = (usize::BITS - (n / 4).leading_zeros()).clamp(4, 16);
    let shift = PART_SHIFT - bits;
    let digit = |r: &Rec| (r.id >> shift) as usize & ((1 << bits) - 1);
    let mut starts = vec![0usize; (1 << bits) + 1];
    for r in slices().flatten() {
        starts[digit(r) + 1] += 1;
    }
    for b in 0..1 << bits {
        starts[b + 1] += starts[b];
    }
    rows.clear();
    rows.reserve(n);
    let mut next = starts.clone();
    let slots = &mut rows.spare_capacity_mut()[..n];
    for r in slices().flatten() {
        let d = digit(r);
        slots[next[d]].write(*r);
        next[d] += 1;
    }
    // SAFETY: every one of the first `n` slots was written above.
    unsafe { rows.set_len(n) };
    for b in 0..1 << bits {
        sort_by_id(&mut rows[starts[b]..starts[b + 1]], scratch, shift);
    }
}

/// Sorts one partition's rows by id, in cache: buckets of the 8 bits below `shift` (a most
/// significant digit radix sort) until the runs are short, then insertion.
pub(crate) fn sort_by_id(rows: &mut [Rec], scratch: &mut Vec<Rec>, shift: u32) {
    if rows.len() <= 32 || shift < 8 {
        insertion_sort(rows);
        return;
    }
    scratch.clear();
    scratch.reserve(rows.len());
    let starts = scatter(rows, &mut scratch.spare_capacity_mut()[..rows.len()], shift - 8);
    // SAFETY: `scatter` wrote every one of the first `rows.len()` slots.
    unsafe { scratch.set_len(rows.len()) };
    rows.copy_from_slice(scratch);
    for b in 0..RADIX {
        sort_by_id(&mut rows[starts[b]..starts[b + 1]], scratch, shift - 8);
    }
}

const RADIX: usize = 256;

fn digit(r: &Rec, shift: u32) -> usize {
    (r.id >> shift) as usize & (RADIX - 1)
}

/// Writes `recs` into `out` grouped by the 8 bits of the id from `shift` up (a stable counting
/// sort); returns where each group starts.
#[inline(never)]
fn scatter(recs: &[Rec], out: &mut [std::mem::MaybeUninit<Rec>], shift: u32) -> [usize; RADIX + 1] {
    let mut starts = [0usize; RADIX + 1];
    for r in recs {
        starts[digit(r, shift) + 1] += 1;
    }
    for b in 0..RADIX {
        starts[b + 1] += starts[b];
    }
    let mut next = starts;
    for r in recs {
        let d = digit(r, shift);
        out[next[d]].write(*r);
        next[d] += 1;
    }
    starts
}

/// Sorts a run by id: by insertion when short (the usual case), else by the library's sort
/// (keys crafted to share their top bits must not make the sort quadratic).
#[inline(never)]
fn insertion_sort(rows: &mut [Rec]) {
    if rows.len() > 64 {
        rows.sort_unstable_by_key(|r| r.id);
        return;
    }
    for i in 1..rows.len() {
        let mut j = i;
        let r = rows[i];
        while j > 0 && rows[j - 1].id > r.id {
            rows[j] = rows[j - 1];
            j -= 1;
        }
        rows[j] = r;
    }
}
