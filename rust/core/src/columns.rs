//! Reading the input columns of a record batch: dtype checks, user keys, periods and fixed-point money.
//!
//! Readers borrow the Arrow buffers and decode a chunk of rows column by column into small reusable
//! arrays (keys, periods, fixed-point amounts, a status byte). The only per-batch work is interning
//! string user ids, which must be sequential to give every id one key across batches and tables.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Schema, TimeUnit};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use foldhash::fast::FixedState;
use rayon::prelude::*;

use crate::calendar::{day_in_range, Calendar, MAX_DAY, MIN_DAY, SECONDS_PER_DAY};
use crate::kernel::prefetch_read;
use crate::error::{out_of_memory, CoreError, Result};

pub const USER_ACCEPTED: &str =
    "int8/16/32/64, uint8/16/32/64, float32/64 holding whole numbers, string, large_string, string_view, or a dictionary of those";
pub const TS_ACCEPTED: &str =
    "timestamp[s|ms|us|ns] (naive or tz-aware), date32, date64, \
     or text (string, large_string, string_view) in ISO-8601 or the ts_format layout";

/// What to do about float user ids that are not whole numbers (pandas turns integer ids with nulls into float64).
const FLOAT_ID_FIX: &str =
    "read the file with pd.read_parquet(..., dtype_backend=\"pyarrow\") (or cast the column to Int64) to keep the ids integers";

/// Largest magnitude up to which every integer is a float64 exactly (2^53), and a float32 (2^24):
/// beyond it a float id may stand for several integers.
const FLOAT64_EXACT: f64 = 9_007_199_254_740_992.0;
const FLOAT32_EXACT: f64 = 16_777_216.0;
pub const AMOUNT_ACCEPTED: &str = "float32, float64, int8/16/32/64, uint8/16/32/64, decimal128";

/// How user ids are compared across tables: as 64-bit integers, or as interned strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserFamily {
    Signed,
    Unsigned64,
    Str,
}

fn user_family(dt: &DataType) -> Option<UserFamily> {
    use DataType::*;
    match dt {
        // Floats holding whole numbers are integer ids (pandas' integers with nulls): see `float_keys`.
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | Float32 | Float64 => Some(UserFamily::Signed),
        UInt64 => Some(UserFamily::Unsigned64),
        Utf8 | LargeUtf8 | Utf8View => Some(UserFamily::Str),
        // One level only: a dictionary of dictionaries is not a user id column.
        Dictionary(_, values) if !matches!(values.as_ref(), Dictionary(..) | Float32 | Float64) => user_family(values),
        _ => None,
    }
}

fn is_ts(dt: &DataType) -> bool {
    matches!(dt, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64) || is_text(dt)
}

fn is_text(dt: &DataType) -> bool {
    matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Fixed-point scale an amount column is summed at.
fn amount_scale(dt: &DataType, float_scale: u8) -> Option<u8> {
    use DataType::*;
    match dt {
        Float32 | Float64 => Some(float_scale),
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Some(0),
        // A negative scale is an integer column times 10^-scale: summed at scale 0.
        Decimal128(_, s) => u8::try_from(*s).ok().or(Some(0)),
        _ => None,
    }
}

/// Positions and checked dtypes of the columns one table contributes.
#[derive(Clone, Debug)]
pub struct ColumnSet {
    pub table: String,
    pub user: (usize, String),
    pub ts: (usize, String),
    pub amount: Option<(usize, String)>,
    pub segment: Option<(usize, String)>,
    pub family: UserFamily,
    /// Scale of the amount column (0 without one).
    pub scale: u8,
    /// The `strftime` layout of a text timestamp column (`None`: ISO-8601).
    pub ts_format: Option<String>,
    /// Per-order cost of the orders (profit = amount − cost), and what its fixed-point values are
    /// multiplied by to reach the amount's scale.
    pub cost: Option<(usize, String)>,
    pub cost_factor: i64,
}

pub struct ColumnNames<'a> {
    pub table: &'a str,
    pub user: &'a str,
    pub ts: &'a str,
    pub amount: Option<&'a str>,
    pub segment: Option<&'a str>,
    /// Layout of text timestamps (`Spec::ts_format`).
    pub ts_format: Option<&'a str>,
    /// Per-order cost column (orders only, with an amount).
    pub cost: Option<&'a str>,
}

impl ColumnSet {
    pub fn resolve(schema: &Schema, names: &ColumnNames<'_>, float_scale: u8) -> Result<Self> {
        let find = |name: &str| -> Result<(usize, &DataType)> {
            let positions: Vec<usize> = schema.fields().iter().enumerate().filter(|(_, f)| f.name() == name).map(|(i, _)| i).collect();
            match positions[..] {
                [i] => Ok((i, schema.field(i).data_type())),
                [_, _, ..] => Err(CoreError::InvalidArgument(format!(
                    "column {name:?} is ambiguous in {}: it appears {} times (at positions {}); rename or drop the duplicates",
                    names.table,
                    positions.len(),
                    positions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ))),
                [] => Err(CoreError::ColumnNotFound {
                    table: names.table.to_string(),
                    column: name.to_string(),
                    // The segment column is the front's own (codes of the `by` values): never named to the user.
                    available: schema
                        .fields()
                        .iter()
                        .filter(|f| Some(f.name().as_str()) != names.segment)
                        .map(|f| format!("{:?}", f.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        };
        let dtype_err = |column: &str, dt: &DataType, accepted: &str| CoreError::Dtype {
            table: names.table.to_string(),
            column: column.to_string(),
            dtype: dt.to_string(),
            accepted: accepted.to_string(),
        };
        let (ui, udt) = find(names.user)?;
        let family = user_family(udt).ok_or_else(|| dtype_err(names.user, udt, USER_ACCEPTED))?;
        let (ti, tdt) = find(names.ts)?;
        if !is_ts(tdt) {
            return Err(dtype_err(names.ts, tdt, TS_ACCEPTED));
        }
        if let Some(format) = names.ts_format {
            check_ts_format(format)?;
        }
        let mut scale = 0;
        let amount = match names.amount {
            Some(name) => {
                let (ai, adt) = find(name)?;
                scale = amount_scale(adt, float_scale).ok_or_else(|| dtype_err(name, adt, AMOUNT_ACCEPTED))?;
                Some((ai, name.to_string()))
            }
            None => None,
        };
        let mut cost_factor = 1;
        let cost = match (names.cost, names.amount) {
            (Some(name), Some(amount)) => {
                let (ci, cdt) = find(name)?;
                let cost_scale = amount_scale(cdt, float_scale).ok_or_else(|| dtype_err(name, cdt, AMOUNT_ACCEPTED))?;
                // A float cost is rounded at the amount's scale, as a float amount is at its own.
                let cost_scale = if matches!(cdt, DataType::Float32 | DataType::Float64) { scale } else { cost_scale };
                if cost_scale > scale {
                    return Err(CoreError::InvalidArgument(format!(
                        "column {name:?} in {}: the cost has {cost_scale} decimal places, more than the {scale} of the amount {amount:?}; \
                         profit is amount − cost exactly at the amount's scale, so cast the cost to at most {scale} decimal places \
                         (or the amount to more)",
                        names.table
                    )));
                }
                cost_factor = 10i64.pow(u32::from(scale - cost_scale));
                Some((ci, name.to_string()))
            }
            _ => None,
        };
        let segment = match names.segment {
            Some(name) => {
                let (si, sdt) = find(name)?;
                if sdt != &DataType::UInt32 {
                    return Err(dtype_err(name, sdt, "uint32 segment codes"));
                }
                Some((si, name.to_string()))
            }
            None => None,
        };
        Ok(ColumnSet {
            table: names.table.to_string(),
            user: (ui, names.user.to_string()),
            ts: (ti, names.ts.to_string()),
            amount,
            segment,
            family,
            scale,
            ts_format: names.ts_format.map(str::to_string),
            cost,
            cost_factor,
        })
    }
}

/// Refuses a `ts_format` that is not a `strftime` layout (an unknown directive), before any row
/// is read: otherwise every row would fail to parse.
pub fn check_ts_format(format: &str) -> Result<()> {
    let probe = jiff::civil::date(2024, 1, 2).at(3, 4, 5, 0).to_zoned(jiff::tz::TimeZone::UTC);
    match probe.map_err(|e| e.to_string()).and_then(|z| jiff::fmt::strtime::format(format, &z).map_err(|e| e.to_string())) {
        Ok(_) if !format.trim().is_empty() => Ok(()),
        Ok(_) => Err(CoreError::InvalidArgument(
            "ts_format must be a strftime layout such as \"%d.%m.%Y %H:%M\"; got an empty string".into(),
        )),
        Err(e) => Err(CoreError::InvalidArgument(format!("ts_format {format:?} is not a strftime layout: {e}"))),
    }
}

/// A text timestamp as µs since the epoch (an instant), or `None` when it does not parse. With an
/// offset (or `Z`) the text is an instant; without, a wall-clock time in `tz` (as naive timestamps
/// are), and a date alone is that date's local midnight. A wall-clock time a DST change skips or
/// repeats is taken as the clocks read before the change (jiff's "compatible" rule).
pub fn parse_text_ts(text: &str, format: Option<&str>, tz: &jiff::tz::TimeZone) -> Option<i64> {
    use jiff::civil::{Date, DateTime};
    let text = text.trim();
    let local = |dt: DateTime| tz.to_ambiguous_timestamp(dt).compatible().ok();
    let instant = match format {
        Some(format) => {
            let parts = jiff::fmt::strtime::parse(format, text).ok()?;
            if parts.offset().is_some() {
                parts.to_timestamp().ok()?
            } else if let Ok(dt) = parts.to_datetime() {
                local(dt)?
            } else {
                local(parts.to_date().ok()?.at(0, 0, 0, 0))?
            }
        }
        None => match text.parse::<jiff::Timestamp>() {
            Ok(ts) => ts,
            Err(_) => match text.parse::<DateTime>() {
                Ok(dt) => local(dt)?,
                Err(_) => local(text.parse::<Date>().ok()?.at(0, 0, 0, 0))?,
            },
        },
    };
    Some(instant.as_microsecond())
}

/// The keys of a float user column, and its nulls (NaN is a null user too). Every other value
/// must be a whole number of magnitude at most 2^53, so that it stands for exactly one integer id:
/// it then gets the key that integer gets in an integer column.
fn float_keys(array: &dyn Array, set: &ColumnSet) -> Result<(Vec<u64>, Option<NullBuffer>)> {
    let (values, exact, bits): (Vec<f64>, f64, u8) = match array.data_type() {
        DataType::Float64 => (array.as_primitive::<Float64Type>().values().to_vec(), FLOAT64_EXACT, 53),
        DataType::Float32 => (array.as_primitive::<Float32Type>().values().iter().map(|&x| f64::from(x)).collect(), FLOAT32_EXACT, 24),
        other => return Err(internal_dtype(&set.user.1, other)),
    };
    let nulls = counted_nulls(array);
    let mut keys = Vec::new();
    keys.try_reserve_exact(values.len()).map_err(|_| out_of_memory(values.len() * 8, "the user keys of a batch"))?;
    let mut valid = Vec::new();
    for (i, &x) in values.iter().enumerate() {
        let is_null = nulls.as_ref().is_some_and(|n| n.is_null(i)) || x.is_nan();
        valid.push(!is_null);
        if is_null {
            keys.push(u64::MAX);
            continue;
        }
        if x.fract() != 0.0 || x.abs() > exact {
            let what = if x.is_infinite() || x.abs() > exact {
                format!("is too large to stand for one integer exactly (beyond 2^{bits})")
            } else {
                "is not a whole number".to_string()
            };
            return Err(CoreError::InvalidArgument(format!(
                "column {:?} in {}: float user ids must be whole numbers (pandas stores integer ids with nulls as float64), \
                 but the value {x:?} at batch row {i} {what}; {FLOAT_ID_FIX}",
                set.user.1, set.table
            )));
        }
        #[allow(clippy::cast_possible_truncation)] // a whole number of magnitude at most 2^53
        keys.push(x as i64 as u64);
    }
    let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid));
    Ok((keys, nulls))
}

/// Gives every distinct string user id a key, shared by all tables of one run.
///
/// The strings are spread over `PARTS` parts by the top bits of their hash, each with its own
/// table and its own copy of the strings, so that several threads can intern one batch at once,
/// each filling the parts it owns (`keys_of`). A string's key is its number in its part (in the
/// order the rows first brought it) and the part's index, so keys do not depend on the number of
/// threads, nor on how the rows are cut into batches. Rows are looked up in blocks: each row's
/// hash is taken first, and its slot (then its text) asked from memory a few rows ahead, so the
/// cache misses of many rows overlap instead of adding up.
///
/// The strings are copied into one arena per part, not boxed one by one: a run with tens of
/// millions of ids would otherwise spend a second just freeing them (after Ctrl-C too).
#[derive(Default)]
pub struct Interner {
    /// `PARTS` parts, or none before the first string.
    parts: Vec<Part>,
    hasher: FixedState,
    /// The keys of the last dictionary's values, so that batches sharing a dictionary (a
    /// categorical column, a table whose chunks share one) do not intern its values again.
    dictionary: Option<PerValue<u64>>,
    /// Each row's hash in the block being interned (scratch).
    hashes: Vec<u64>,
    /// The keys of string columns read while remembering (see `remember`), oldest first.
    remembered: VecDeque<(ArrayData, Arc<Vec<u32>>)>,
    remembering: bool,
}

/// Interned strings are spread over this many parts (see `Interner`). Fixed, so that keys do not
/// depend on the thread count; enough for the parts to share out evenly over many threads, and for
/// a part's table to fit a core's cache up to a few million users.
const PART_BITS: u32 = 6;
const PARTS: usize = 1 << PART_BITS;

#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // the top PART_BITS bits
fn part_of(hash: u64) -> usize {
    (hash >> (64 - PART_BITS)) as usize
}

/// A key: a string's number in its part, and the part. Below `u32::MAX` (see `MAX_PER_PART`), so
/// that a row's key takes 4 bytes and `u32::MAX` can stand for a null.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // `number < MAX_PER_PART`, `part < PARTS`
fn key_of(number: u32, part: usize) -> u32 {
    (number << PART_BITS) | part as u32
}

/// Strings a part holds at most.
const MAX_PER_PART: u32 = (u32::MAX >> PART_BITS) - 1;

/// The key a null row gets (no string has it).
const NULL_KEY: u32 = u32::MAX;

/// Something computed once per value of a dictionary (a key, a segment part), kept for the batches
/// that share the dictionary or grow it. The values are held, not just named by address: their
/// buffers then cannot be freed and reused by another dictionary while the cache points at them,
/// and Arrow buffers are immutable, so the same buffers mean the same values.
pub(crate) struct PerValue<T> {
    values: ArrayData,
    items: Arc<[T]>,
}

impl<T: Copy> PerValue<T> {
    /// The items of `values`: the cached ones when `values` is the cached dictionary (the same
    /// buffers) or holds its values again; when it starts with them (a dictionary that grows from
    /// batch to batch), the cached ones plus `more` of the values past them. The cache then holds
    /// `values`' items. Values other than the cached buffers are checked (`check_layout`, an error
    /// made by `invalid`) before they are compared or read.
    pub(crate) fn of(
        cache: &mut Option<Self>,
        values: &ArrayRef,
        invalid: impl FnOnce(String) -> CoreError,
        more: impl FnOnce(ArrayRef) -> Result<Vec<T>>,
        what: &str,
    ) -> Result<Arc<[T]>> {
        let data = values.to_data();
        let mut known: &[T] = &[];
        if let Some(cached) = cache.as_ref().filter(|c| c.values.ptr_eq(&data)) {
            return Ok(cached.items.clone());
        }
        check_layout(values.as_ref()).map_err(invalid)?;
        if let Some(cached) = cache {
            let n = cached.values.len();
            if data.len() >= n && data.data_type() == cached.values.data_type() && data.slice(0, n) == cached.values {
                known = &cached.items;
            }
        }
        let n = known.len();
        let mut items = Vec::new();
        items.try_reserve_exact(data.len()).map_err(|_| out_of_memory(data.len() * size_of::<T>(), what))?;
        items.extend_from_slice(known);
        if n < data.len() {
            items.extend(more(values.slice(n, data.len() - n))?);
        }
        let items: Arc<[T]> = items.into();
        *cache = Some(PerValue { values: data, items: items.clone() });
        Ok(items)
    }
}

/// One part's strings: an open-addressing table (linear probing, at most 4/5 full) holding short
/// strings in their slots, and the bytes of the longer ones.
#[derive(Default)]
struct Part {
    slots: Vec<Slot>,
    /// Strings held.
    len: u32,
    bytes: Vec<u8>,
}

/// Strings of up to this many bytes (most ids) are held in their slot: a lookup then reads one
/// cache line, not a second one elsewhere for the text.
const INLINE: usize = 20;

/// A slot of a part's table, 32 bytes (two to a cache line).
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    /// The hash's low 32 bits: where the slot's string belongs (`home`), so that the table grows
    /// without reading the strings, and a first comparison most other strings fail.
    tag: u32,
    /// 1 + the string's number in its part; 0 for an empty slot.
    number: u32,
    /// The string's length in bytes.
    len: u32,
    /// The string when it has at most `INLINE` bytes, else where it starts in `bytes` (8 bytes,
    /// little-endian).
    text: [u8; INLINE],
}

#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // 32 bits of the hash, on purpose
fn tag_of(hash: u64) -> u32 {
    hash as u32
}

/// The slot where a lookup starts: from the tag alone (parts have far fewer than 2^32 slots).
#[inline(always)]
fn home(hash: u64, mask: usize) -> usize {
    tag_of(hash) as usize & mask
}

impl Part {
    #[inline(always)]
    fn text<'a>(&'a self, slot: &'a Slot) -> &'a [u8] {
        let len = slot.len as usize;
        match len.checked_sub(INLINE + 1) {
            None => &slot.text[..len],
            Some(_) => {
                let start = Self::start(slot);
                &self.bytes[start..start + len]
            }
        }
    }

    /// Whether `slot`, whose string has `s`'s length, holds `s`. A short one is compared in a few
    /// word loads: a call to `memcmp` per row was a seventh of interning.
    #[inline(always)]
    fn holds(&self, slot: &Slot, s: &[u8]) -> bool {
        if s.len() <= INLINE {
            short_eq(&slot.text, s)
        } else {
            self.text(slot) == s
        }
    }

    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // positions in an arena held in memory
    fn start(slot: &Slot) -> usize {
        let mut start = [0u8; 8];
        start.copy_from_slice(&slot.text[..8]);
        u64::from_le_bytes(start) as usize
    }

    /// Asks for the slot where a lookup of `hash` starts, and the next cache line: up to 4/5 full,
    /// a lookup reads 2.4 slots on average, often past its first line.
    #[inline(always)]
    fn prefetch_slot(&self, hash: u64) {
        if !self.slots.is_empty() {
            let mask = self.slots.len() - 1;
            let at = home(hash, mask);
            prefetch_read(&self.slots[at]);
            prefetch_read(&self.slots[((at | 1) + 1) & mask]);
        }
    }

    /// Asks for the text of a long string in that slot, if it may be the one (its slot is in
    /// cache by now). Not for a short string (`len` bytes): it is compared within its slot, and
    /// reading the slot here would wait for it.
    #[inline(always)]
    fn prefetch_text(&self, hash: u64, len: usize) {
        if len <= INLINE {
            return;
        }
        if let Some(slot) = self.slots.get(home(hash, self.slots.len().wrapping_sub(1))) {
            if slot.number != 0 && slot.tag == tag_of(hash) && slot.len as usize > INLINE {
                prefetch_read(self.bytes.as_ptr().wrapping_add(Self::start(slot)));
            }
        }
    }

    /// The slot holding `s` (of hash `hash`), or the empty slot where it would go.
    #[inline(always)]
    fn slot_of(&self, hash: u64, s: &[u8]) -> usize {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = home(hash, mask);
        loop {
            let slot = &self.slots[i];
            if slot.number == 0 || (slot.tag == tag && slot.len as usize == s.len() && self.holds(slot, s)) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The key of `s` in this part (`part`), if it was interned.
    fn find(&self, hash: u64, s: &[u8], part: usize) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = &self.slots[self.slot_of(hash, s)];
        (slot.number != 0).then(|| key_of(slot.number - 1, part))
    }

    /// The key of `s` in this part (`part`), interning it if new.
    #[inline(always)]
    fn key(&mut self, hash: u64, s: &[u8], part: usize) -> Result<u32> {
        if !self.slots.is_empty() {
            let number = self.slots[self.slot_of(hash, s)].number;
            if number != 0 {
                return Ok(key_of(number - 1, part));
            }
        }
        self.insert(hash, s, part)
    }

    /// Interns `s`, not yet in this part. Out of the lookup's loop: most rows find their string.
    #[cold]
    #[inline(never)]
    fn insert(&mut self, hash: u64, s: &[u8], part: usize) -> Result<u32> {
        if (self.len as usize + 1) * 5 > self.slots.len() * 4 {
            self.grow()?;
        }
        let i = self.slot_of(hash, s);
        let tag = tag_of(hash);
        let (Ok(len), Some(number)) = (u32::try_from(s.len()), self.len.checked_add(1).filter(|&n| n <= MAX_PER_PART)) else {
            return Err(CoreError::InvalidArgument(format!(
                "too many distinct user ids, or one too long ({} bytes): at most about 4 billion ids of at most 4 GiB each",
                s.len()
            )));
        };
        let mut text = [0u8; INLINE];
        if s.len() <= INLINE {
            text[..s.len()].copy_from_slice(s);
        } else {
            if self.bytes.try_reserve(s.len()).is_err() {
                return Err(out_of_memory(self.bytes.capacity().max(s.len()), "the text of the interned user ids"));
            }
            text[..8].copy_from_slice(&(self.bytes.len() as u64).to_le_bytes());
            self.bytes.extend_from_slice(s);
        }
        self.slots[i] = Slot { tag, number, len, text };
        self.len = number;
        Ok(key_of(number - 1, part))
    }

    /// Doubles the table (from the slots alone: the strings are not read).
    fn grow(&mut self) -> Result<()> {
        let capacity = (self.slots.len() * 2).max(1 << 8);
        let mut slots = Vec::new();
        if slots.try_reserve_exact(capacity).is_err() {
            return Err(out_of_memory(capacity * size_of::<Slot>(), "the table of interned user ids"));
        }
        crate::kernel::advise_huge_pages_for(&slots);
        slots.resize(capacity, Slot::default());
        let mask = capacity - 1;
        for old in self.slots.iter().filter(|s| s.number != 0) {
            let mut i = home(u64::from(old.tag), mask);
            while slots[i].number != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = *old;
        }
        self.slots = slots;
        Ok(())
    }
}

/// `held[..s.len()] == s` for `s` of at most `INLINE` bytes, by two overlapping loads of each
/// side (every load in bounds: `held` has `INLINE` bytes).
#[inline(always)]
fn short_eq(held: &[u8; INLINE], s: &[u8]) -> bool {
    fn at<const N: usize>(x: &[u8], from: usize) -> [u8; N] {
        let mut word = [0u8; N];
        word.copy_from_slice(&x[from..from + N]);
        word
    }
    let n = s.len();
    match n {
        16..=INLINE => at::<16>(held, 0) == at::<16>(s, 0) && at::<4>(held, n - 4) == at::<4>(s, n - 4),
        8..=15 => at::<8>(held, 0) == at::<8>(s, 0) && at::<8>(held, n - 8) == at::<8>(s, n - 8),
        4..=7 => at::<4>(held, 0) == at::<4>(s, 0) && at::<4>(held, n - 4) == at::<4>(s, n - 4),
        _ => held[..n] == *s,
    }
}

/// Rows between a row's slot being asked for and its lookup (and half that for its text).
const LOOK_AHEAD: usize = 16;

/// The parts `first..first + parts.len()` that one thread fills: it looks up the rows (of `rows`,
/// whose hashes are `hashes`) whose strings fall in them, and writes their keys into `found`.
fn intern_parts<'s>(
    parts: &mut [Part],
    first: usize,
    hashes: &[u64],
    text: &impl Fn(usize) -> Option<&'s [u8]>,
    long: bool,
    found: &[AtomicU32],
    mine: &mut Vec<u32>,
) -> Result<()> {
    let owned = first..first + parts.len();
    mine.clear();
    mine.try_reserve_exact(hashes.len()).map_err(|_| out_of_memory(hashes.len() * 4, "the rows of a block of user ids"))?;
    #[allow(clippy::cast_possible_truncation)] // a block has fewer than 2^32 rows
    mine.extend((0..hashes.len()).filter(|&i| found[i].load(Ordering::Relaxed) != NULL_KEY && owned.contains(&part_of(hashes[i]))).map(|i| i as u32));
    for (j, &i) in mine.iter().enumerate() {
        if let Some(&ahead) = mine.get(j + LOOK_AHEAD) {
            let h = hashes[ahead as usize];
            parts[part_of(h) - first].prefetch_slot(h);
        }
        if let Some(&ahead) = mine.get(j + LOOK_AHEAD / 2).filter(|_| long) {
            let h = hashes[ahead as usize];
            parts[part_of(h) - first].prefetch_text(h, text(ahead as usize).map_or(0, <[u8]>::len));
        }
        let i = i as usize;
        let h = hashes[i];
        let p = part_of(h);
        let s = text(i).unwrap_or_default();
        found[i].store(parts[p - first].key(h, s, p)?, Ordering::Relaxed);
    }
    Ok(())
}

/// Every interned string, by key (a snapshot: keys interned later are not in it).
pub struct Texts<'a> {
    list: Vec<&'a [u8]>,
    /// Where each part's strings start in `list`.
    first: Vec<usize>,
}

impl<'a> Texts<'a> {
    /// Every string, each once (in the order of `index`).
    pub fn list(&self) -> &[&'a [u8]] {
        &self.list
    }

    /// The position of a key's string in `list`.
    #[allow(clippy::cast_possible_truncation)] // numbers of strings held in memory
    pub fn index(&self, key: u64) -> usize {
        self.first[key as usize & (PARTS - 1)] + (key >> PART_BITS) as usize
    }

    pub fn get(&self, key: u64) -> Option<&'a [u8]> {
        self.list.get(self.index(key)).copied()
    }
}

impl Interner {
    /// Every interned string.
    pub fn texts(&self) -> Texts<'_> {
        let mut first = Vec::with_capacity(PARTS + 1);
        let mut total = 0;
        for part in &self.parts {
            first.push(total);
            total += part.len as usize;
        }
        first.resize(PARTS + 1, total);
        let mut list = vec![&[][..]; total];
        for (p, part) in self.parts.iter().enumerate() {
            for slot in part.slots.iter().filter(|s| s.number != 0) {
                list[first[p] + slot.number as usize - 1] = part.text(slot);
            }
        }
        Texts { list, first }
    }

    /// The key of every value of a dictionary (`u64::MAX` for a null value). Batches that share
    /// the dictionary (the same buffers), or whose dictionary holds the same values again, reuse
    /// the keys found for the first; a dictionary that starts with the last one's values (one that
    /// grows from batch to batch) has only its new values interned. So a categorical column costs
    /// each row an index into this array, and each batch at most one comparison of dictionaries.
    /// The key of `s`, if it was interned.
    pub(crate) fn find(&self, s: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash_one(s);
        let part = part_of(hash);
        self.parts.get(part)?.find(hash, s, part).map(u64::from)
    }

    /// The key of `s`, interned now if it was not (one string at a time: `keys_of` interns columns).
    pub(crate) fn key(&mut self, s: &[u8]) -> Result<u64> {
        if self.parts.is_empty() {
            self.parts.resize_with(PARTS, Part::default);
        }
        let hash = self.hasher.hash_one(s);
        let part = part_of(hash);
        self.parts[part].key(hash, s, part).map(u64::from)
    }

    /// Values other than the last dictionary's buffers are checked (`check_layout`) before they
    /// are compared or read.
    fn dictionary_keys(&mut self, values: &ArrayRef, set: &ColumnSet, pool: Option<&rayon::ThreadPool>, poll: &mut dyn FnMut() -> Result<()>) -> Result<Arc<[u64]>> {
        let mut cache = self.dictionary.take();
        let keys = PerValue::of(
            &mut cache,
            values,
            |problem| invalid_user_column(set, &problem),
            |more| match IntUsers::of(more.as_ref()) {
                Some(ints) => Ok((0..more.len()).map(|i| ints.get(i)).collect()),
                None => Ok(self.keys_of(more.as_ref(), pool, poll)?.into_iter().map(widen).collect()),
            },
            "the keys of a dictionary's values",
        );
        self.dictionary = cache;
        keys
    }

    /// From now on, keeps the keys of every string column read (4 bytes a row), so that reading the
    /// same columns again in the same order (the second pass over orders held in memory, after
    /// `recall`) looks nothing up.
    pub fn remember(&mut self) {
        self.remembering = true;
    }

    /// Stops remembering: the columns read next take the remembered keys, oldest first.
    pub fn recall(&mut self) {
        self.remembering = false;
    }

    /// Drops the remembered keys.
    pub fn forget(&mut self) {
        self.remembering = false;
        self.remembered = VecDeque::new();
    }

    /// The remembered keys of a column (`NULL_KEY` on null rows), when it is the oldest column
    /// remembered: the same buffers, offset and length, so the same strings, already checked.
    fn recalled_keys(&mut self, column: &ArrayRef) -> Option<Arc<Vec<u32>>> {
        if self.remembering || !is_text(column.data_type()) {
            return None;
        }
        let (seen, keys) = self.remembered.pop_front()?;
        if seen.ptr_eq(&column.to_data()) {
            return Some(keys);
        }
        // Read in another order or cut: the rest would not match either.
        self.remembered = VecDeque::new();
        None
    }

    /// The keys of a string column (`NULL_KEY` on null rows), interned, and remembered while
    /// remembering.
    fn column_keys(&mut self, column: &ArrayRef, pool: Option<&rayon::ThreadPool>, poll: &mut dyn FnMut() -> Result<()>) -> Result<Arc<Vec<u32>>> {
        let keys = Arc::new(self.keys_of(column.as_ref(), pool, poll)?);
        if self.remembering {
            self.remembered.push_back((column.to_data(), keys.clone()));
        }
        Ok(keys)
    }

    /// Strings interned between two calls of `poll`: a few milliseconds of work.
    const POLL_EVERY: usize = 1 << 18;

    /// The key of every row of a string column (`NULL_KEY` for a null). With a pool, its threads
    /// share the work, each filling its own parts.
    fn keys_of(&mut self, array: &dyn Array, pool: Option<&rayon::ThreadPool>, poll: &mut dyn FnMut() -> Result<()>) -> Result<Vec<u32>> {
        match array.data_type() {
            DataType::Utf8 => {
                let a = array.as_string::<i32>();
                self.keys_of_rows(array, &|i| Some(a.value(i).as_bytes()), pool, poll)
            }
            DataType::LargeUtf8 => {
                let a = array.as_string::<i64>();
                self.keys_of_rows(array, &|i| Some(a.value(i).as_bytes()), pool, poll)
            }
            DataType::Utf8View => {
                let a = array.as_string_view();
                self.keys_of_rows(array, &|i| Some(a.value(i).as_bytes()), pool, poll)
            }
            other => Err(CoreError::Internal(format!("interning {other}"))),
        }
    }

    fn keys_of_rows<'s>(
        &mut self,
        array: &dyn Array,
        text: &(impl Fn(usize) -> Option<&'s [u8]> + Sync),
        pool: Option<&rayon::ThreadPool>,
        poll: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<u32>> {
        let n = array.len();
        // Each row's key, as the threads write them.
        let mut keys: Vec<AtomicU32> = Vec::new();
        keys.try_reserve_exact(n).map_err(|_| out_of_memory(n * 4, "the user keys of a batch"))?;
        keys.resize_with(n, AtomicU32::default);
        if self.parts.is_empty() {
            self.parts.resize_with(PARTS, Part::default);
        }
        let threads = pool.map_or(1, rayon::ThreadPool::current_num_threads).clamp(1, PARTS);
        let nulls = array.logical_nulls();
        for lo in (0..n).step_by(Self::POLL_EVERY) {
            poll()?;
            let hi = n.min(lo + Self::POLL_EVERY);
            let Interner { parts, hasher, hashes, .. } = self;
            // Null slots get a dummy key (and no hash); validity is checked separately.
            let valid = |i: usize| nulls.as_ref().is_none_or(|b| b.is_valid(i));
            // Also says whether a row's string is too long to be held in its slot.
            let hash_rows = |hashes: &mut [u64], found: &[AtomicU32], from: usize| {
                let mut long = false;
                for (k, h) in hashes.iter_mut().enumerate() {
                    let i = from + k;
                    let s = text(i).unwrap_or_default();
                    long |= s.len() > INLINE;
                    *h = if valid(i) { hasher.hash_one(s) } else { 0 };
                    found[i - lo].store(if valid(i) { 0 } else { NULL_KEY }, Ordering::Relaxed);
                }
                long
            };
            hashes.clear();
            hashes.try_reserve_exact(hi - lo).map_err(|_| out_of_memory((hi - lo) * 8, "the hashes of a block of user ids"))?;
            hashes.resize(hi - lo, 0);
            let found = &keys[lo..hi];
            let failure: Mutex<Option<CoreError>> = Mutex::new(None);
            // Each thread's share of parts: contiguous, so that each gets a `&mut` of its own.
            let per = PARTS.div_ceil(threads);
            match pool.filter(|_| threads > 1) {
                None => {
                    let long = hash_rows(hashes, found, lo);
                    intern_parts(parts, 0, hashes, &|k| text(lo + k), long, found, &mut Vec::new())?;
                }
                Some(pool) => {
                    let chunk = (hi - lo).div_ceil(threads);
                    let long = pool.install(|| hashes.par_chunks_mut(chunk).enumerate().map(|(c, h)| hash_rows(h, found, lo + c * chunk)).reduce(|| false, |a, b| a | b));
                    let hashes: &[u64] = hashes;
                    let lanes: Vec<Mutex<&mut [Part]>> = parts.chunks_mut(per).map(Mutex::new).collect();
                    pool.broadcast(|ctx| {
                        let Some(lane) = lanes.get(ctx.index()) else { return };
                        let mut mine = lane.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Err(e) = intern_parts(&mut mine, ctx.index() * per, hashes, &|k| text(lo + k), long, found, &mut Vec::new()) {
                            failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                        }
                    });
                }
            }
            if let Some(e) = failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
                return Err(e);
            }
        }
        // In place: an atomic has its integer's layout.
        Ok(keys.into_iter().map(AtomicU32::into_inner).collect())
    }
}

/// An interned key as the tables take it: `NULL_KEY` (null rows, read only through their null
/// flag) stays out of every string's range.
#[inline(always)]
fn widen(key: u32) -> u64 {
    if key == NULL_KEY { u64::MAX } else { u64::from(key) }
}

/// Integer user ids read as 64-bit keys (signed values sign-extended).
pub(crate) enum IntUsers<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

impl<'a> IntUsers<'a> {
    #[inline]
    pub(crate) fn get(&self, i: usize) -> u64 {
        match self {
            Self::I8(v) => v[i] as i64 as u64,
            Self::I16(v) => v[i] as i64 as u64,
            Self::I32(v) => v[i] as i64 as u64,
            Self::I64(v) => v[i] as u64,
            Self::U8(v) => v[i] as u64,
            Self::U16(v) => v[i] as u64,
            Self::U32(v) => v[i] as u64,
            Self::U64(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        self.raw().2
    }

    /// The largest key (signed values sign-extended, so a negative one is larger than any other).
    fn max(&self) -> Option<u64> {
        match self {
            Self::I8(v) => v.iter().map(|&x| x as i64 as u64).max(),
            Self::I16(v) => v.iter().map(|&x| x as i64 as u64).max(),
            Self::I32(v) => v.iter().map(|&x| x as i64 as u64).max(),
            Self::I64(v) => v.iter().map(|&x| x as u64).max(),
            Self::U8(v) => v.iter().map(|&x| x as u64).max(),
            Self::U16(v) => v.iter().map(|&x| x as u64).max(),
            Self::U32(v) => v.iter().map(|&x| x as u64).max(),
            Self::U64(v) => v.iter().copied().max(),
        }
    }

    pub(crate) fn of(array: &'a dyn Array) -> Option<IntUsers<'a>> {
        Some(match array.data_type() {
            DataType::Int8 => Self::I8(array.as_primitive::<Int8Type>().values()),
            DataType::Int16 => Self::I16(array.as_primitive::<Int16Type>().values()),
            DataType::Int32 => Self::I32(array.as_primitive::<Int32Type>().values()),
            DataType::Int64 => Self::I64(array.as_primitive::<Int64Type>().values()),
            DataType::UInt8 => Self::U8(array.as_primitive::<UInt8Type>().values()),
            DataType::UInt16 => Self::U16(array.as_primitive::<UInt16Type>().values()),
            DataType::UInt32 => Self::U32(array.as_primitive::<UInt32Type>().values()),
            DataType::UInt64 => Self::U64(array.as_primitive::<UInt64Type>().values()),
            _ => return None,
        })
    }
}

/// A column's values as raw bytes: where row 0 starts, bytes per row, and rows.
type RawColumn = (*const u8, usize, usize);

fn raw<T>(v: &[T]) -> RawColumn {
    (v.as_ptr() as *const u8, size_of::<T>(), v.len())
}

impl IntUsers<'_> {
    fn raw(&self) -> RawColumn {
        match self {
            Self::I8(v) => raw(v),
            Self::I16(v) => raw(v),
            Self::I32(v) => raw(v),
            Self::I64(v) => raw(v),
            Self::U8(v) => raw(v),
            Self::U16(v) => raw(v),
            Self::U32(v) => raw(v),
            Self::U64(v) => raw(v),
        }
    }
}

enum UserReader<'a> {
    Ints(IntUsers<'a>),
    /// Keys computed for the batch up front (floats).
    Keys(Vec<u64>),
    /// Keys of interned strings (`Interner::column_keys`).
    Interned(Arc<Vec<u32>>),
    /// Dictionary codes, and the key of each dictionary value (see `Interner::dictionary_keys`).
    Codes(IntUsers<'a>, Arc<[u64]>),
}

/// A timestamp column's values: the batch's own buffers, or (text) the values parsed from it.
enum TsReader {
    Instant(ScalarBuffer<i64>, TimeUnit),
    Local(ScalarBuffer<i64>, TimeUnit),
    Date32(ScalarBuffer<i32>),
    Date64(ScalarBuffer<i64>),
}

fn to_seconds(v: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => v,
        TimeUnit::Millisecond => v.div_euclid(1_000),
        TimeUnit::Microsecond => v.div_euclid(1_000_000),
        TimeUnit::Nanosecond => v.div_euclid(1_000_000_000),
    }
}

enum AmountReader<'a> {
    F64(&'a [f64], f64),
    F32(&'a [f32], f64),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    /// Decimal values and the factor for a negative scale (`None`: 10^-scale overflows, so only
    /// zero is representable).
    Dec(&'a [i128], Option<i128>),
}

/// One amount, in fixed point at the column's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Value(i64),
    NotFinite,
    OutOfRange,
}

#[inline]
fn round_float(x: f64, factor: f64) -> Amount {
    match round_scaled(x, factor) {
        (v, true) => Amount::Value(v),
        _ if !x.is_finite() => Amount::NotFinite,
        _ => Amount::OutOfRange,
    }
}

/// 2^63, exactly: a float below it in magnitude truncates into an i64.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// `x × factor` rounded half away from zero, and whether it was a finite value in range (else the
/// value is 0). Branch-free, so a column of floats decodes in a tight loop.
#[inline(always)]
fn round_scaled(x: f64, factor: f64) -> (i64, bool) {
    // Rounded once per row: sums are then exact integers. Done by hand because `f64::round` is a
    // libm call on baseline x86-64, and truncation is one instruction.
    let y = x * factor;
    let a = y.abs();
    let below = a < TWO_POW_63; // false for NaN and ±inf too
    let min = y == -TWO_POW_63; // i64::MIN, the one value of magnitude 2^63 that fits
    let a = if below { a } else { 0.0 };
    // SAFETY: 0 ≤ a < 2^63, so the truncated value is representable (and from 2^52 on `a` is a
    // whole number, so rounding adds nothing).
    let whole: i64 = unsafe { a.to_int_unchecked() };
    let frac = a - whole as f64; // exact: `whole` has at most as many significant bits as `a`
    let rounded = whole + i64::from(frac >= 0.5);
    let value = if y < 0.0 { -rounded } else { rounded };
    (if min { i64::MIN } else { value }, below || min)
}

impl AmountReader<'_> {
    fn raw(&self) -> RawColumn {
        match self {
            Self::F64(v, _) => raw(v),
            Self::F32(v, _) => raw(v),
            Self::I8(v) => raw(v),
            Self::I16(v) => raw(v),
            Self::I32(v) => raw(v),
            Self::I64(v) => raw(v),
            Self::U8(v) => raw(v),
            Self::U16(v) => raw(v),
            Self::U32(v) => raw(v),
            Self::U64(v) => raw(v),
            Self::Dec(v, _) => raw(v),
        }
    }

    /// Appends rows `lo..hi` as fixed point; marks non-finite values NOT_FINITE and values out of
    /// range OUT_OF_RANGE in `status`. Returns whether any value was not a finite in-range number.
    fn decode(&self, lo: usize, hi: usize, out: &mut Vec<i64>, status: &mut [u8]) -> bool {
        fn floats<F: Copy + Into<f64>>(vals: &[F], factor: f64, out: &mut Vec<i64>, status: &mut [u8]) -> bool {
            let mut bad = false;
            out.extend(vals.iter().map(|&x| {
                let (v, ok) = round_scaled(x.into(), factor);
                bad |= !ok;
                v
            }));
            if bad {
                for (k, &x) in vals.iter().enumerate() {
                    match round_float(x.into(), factor) {
                        Amount::Value(_) => {}
                        Amount::NotFinite => status[k] = status::NOT_FINITE,
                        Amount::OutOfRange => status[k] = OUT_OF_RANGE,
                    }
                }
            }
            bad
        }
        fn fallible(vals: impl Iterator<Item = Option<i64>>, out: &mut Vec<i64>, status: &mut [u8]) -> bool {
            let mut bad = false;
            for (k, v) in vals.enumerate() {
                match v {
                    Some(v) => out.push(v),
                    None => {
                        bad = true;
                        status[k] = OUT_OF_RANGE;
                        out.push(0);
                    }
                }
            }
            bad
        }
        match self {
            Self::F64(v, f) => floats(&v[lo..hi], *f, out, status),
            Self::F32(v, f) => floats(&v[lo..hi], *f, out, status),
            Self::I8(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::I16(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::I32(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::I64(v) => { out.extend_from_slice(&v[lo..hi]); false }
            Self::U8(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::U16(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::U32(v) => { out.extend(v[lo..hi].iter().map(|&x| x as i64)); false }
            Self::U64(v) => fallible(v[lo..hi].iter().map(|&x| i64::try_from(x).ok()), out, status),
            Self::Dec(v, f) => fallible(
                v[lo..hi].iter().map(|&x| match f {
                    Some(f) => x.checked_mul(*f).and_then(|y| i64::try_from(y).ok()),
                    None => (x == 0).then_some(0),
                }),
                out,
                status,
            ),
        }
    }
}

/// Row status after decoding, in the order reasons are checked.
pub mod status {
    pub const VALID: u8 = 0;
    pub const NULL_USER: u8 = 1;
    pub const NULL_TS: u8 = 2;
    /// The timestamp's local date is outside 0001-01-01 ..= 9999-12-31.
    pub const TS_OUT_OF_RANGE: u8 = 3;
    pub const NULL_AMOUNT: u8 = 4;
    pub const NOT_FINITE: u8 = 5;
    /// A text timestamp that does not parse (ISO-8601, or the `ts_format` layout).
    pub const BAD_TS: u8 = 6;
}

/// Which columns a pass needs decoded.
#[derive(Clone, Copy)]
pub struct Want {
    pub ts: bool,
    pub period: bool,
}

/// A block of rows decoded column by column (reused from block to block).
#[derive(Default)]
pub struct Decoded {
    pub key: Vec<u64>,
    pub ts: Vec<i64>,
    pub period: Vec<i32>,
    /// Fixed-point amount; for null or non-finite amounts 0.
    pub amount: Vec<i64>,
    pub segment: Vec<u32>,
    /// Amount − cost, at the amount's scale (empty without a cost column; 0 for rows not used).
    pub profit: Vec<i64>,
    /// The cost column decoded, and its own status (scratch for `profit`).
    cost: Vec<i64>,
    cost_status: Vec<u8>,
    pub status: Vec<u8>,
    /// No row in the block has a non-VALID status.
    pub all_valid: bool,
    /// Global index of the block's first row (set by the caller).
    pub base: u64,
}

/// How raw timestamp values map to periods (kept so cohorts can be placed after a pass).
#[derive(Clone, Copy, Debug)]
pub enum TsKind {
    Instant(TimeUnit),
    Local(TimeUnit),
    Date32,
    Date64,
}

impl Decoded {
    pub fn len(&self) -> usize {
        self.key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

impl TsKind {
    /// Raw values per local day.
    fn per_day(self) -> i64 {
        match self {
            Self::Instant(unit) | Self::Local(unit) => SECONDS_PER_DAY * units_per_second(unit),
            Self::Date32 => 1,
            Self::Date64 => SECONDS_PER_DAY * 1_000,
        }
    }

    /// Raw values whose local date is in the supported range whatever the zone: exactly the range
    /// for wall-clock values; for instants two days narrower at each end, since a zone's offset can
    /// move the local date a day either way. Values outside are checked exactly (`local_day`), row
    /// by row, which only the first and last days of the range and real junk ever need.
    pub fn band(self) -> Band {
        let per_day = i128::from(self.per_day());
        let margin = i128::from(matches!(self, Self::Instant(_))) * 2;
        let lo = (i128::from(MIN_DAY) + margin) * per_day;
        let hi = (i128::from(MAX_DAY) + 1 - margin) * per_day - 1;
        let clamp = |v: i128| i64::try_from(v.clamp(i64::MIN.into(), i64::MAX.into())).unwrap_or(0);
        Band { lo: clamp(lo), hi: clamp(hi) }
    }

    /// The local day of a raw value, or `None` when it is outside the supported range.
    pub fn local_day(self, raw: i64, cal: &Calendar) -> Option<i64> {
        let day = match self {
            Self::Instant(unit) => {
                let second = to_seconds(raw, unit);
                // Far outside the range: skip the zone (adding an offset there could overflow).
                if second.unsigned_abs() > (MAX_DAY.unsigned_abs() + 3) * SECONDS_PER_DAY.unsigned_abs() {
                    return None;
                }
                cal.local_day_of_instant(second)
            }
            Self::Local(unit) => to_seconds(raw, unit).div_euclid(SECONDS_PER_DAY),
            Self::Date32 => raw,
            Self::Date64 => raw.div_euclid(86_400_000),
        };
        day_in_range(day).then_some(day)
    }

    /// The period of a raw value known to be in range (rows outside it never reach a period), with
    /// the kind's `band` computed once by the caller.
    #[inline]
    pub fn period(self, band: Band, raw: i64, cal: &Calendar) -> i32 {
        if band.outside(raw) == 0 {
            return match self {
                Self::Instant(unit) => cal.period_of_instant(to_seconds(raw, unit)),
                _ => cal.period_of_day(raw.div_euclid(self.per_day())),
            };
        }
        cal.period_of_day(self.local_day(raw, cal).unwrap_or(0))
    }
}

/// The raw values `lo ..= hi` of a timestamp kind whose local date is surely in range.
#[derive(Clone, Copy, Debug)]
pub struct Band {
    lo: i64,
    hi: i64,
}

impl Band {
    /// 1 when `t` is outside the band, else 0: one subtraction and one unsigned compare, so a
    /// column is checked without a branch per row.
    #[inline(always)]
    #[allow(clippy::cast_sign_loss)] // the wrapping difference, read as unsigned, is the point
    fn outside(self, t: i64) -> u64 {
        u64::from(t.wrapping_sub(self.lo) as u64 > self.hi.wrapping_sub(self.lo) as u64)
    }
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// A record batch seen through one table's column set.
/// Where a batch sits in its table, and what reading it needs beyond its columns.
#[derive(Clone, Copy)]
pub struct BatchAt<'c> {
    /// The run's calendar: its zone places text timestamps without an offset.
    pub cal: &'c Calendar,
    /// Index in the table of the batch's first row (for error messages).
    pub first_row: u64,
    /// A text timestamp that does not parse is an error rather than a `bad_ts` row.
    pub strict: bool,
    /// Threads that intern string user ids together (`None`: the calling thread alone).
    pub pool: Option<&'c rayon::ThreadPool>,
}

pub struct BatchView<'a> {
    user: UserReader<'a>,
    user_nulls: Option<NullBuffer>,
    ts: TsReader,
    ts_nulls: Option<NullBuffer>,
    /// Text timestamps that did not parse (`None` when every one did, or the column is not text).
    ts_unparsed: Option<Vec<bool>>,
    amount: Option<(AmountReader<'a>, Option<NullBuffer>)>,
    cost: Option<(AmountReader<'a>, Option<NullBuffer>)>,
    segment: Option<(&'a [u32], Option<NullBuffer>)>,
    /// Index in the table of the batch's first row.
    first_row: u64,
    pub len: usize,
    set: &'a ColumnSet,
}

impl<'a> BatchView<'a> {
    /// Reads a batch through a column set. String user ids are interned here, on the calling
    /// thread; `poll` is called every few hundred thousand strings (progress and Ctrl-C).
    pub fn new(
        batch: &'a RecordBatch,
        set: &'a ColumnSet,
        interner: &mut Interner,
        at: BatchAt<'_>,
        poll: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Self> {
        let user_col: &'a ArrayRef = batch.column(set.user.0);
        if let Some(keys) = interner.recalled_keys(user_col) {
            return Self::with_user(batch, set, UserReader::Interned(keys), at);
        }
        check_layout(user_col.as_ref()).map_err(|problem| invalid_user_column(set, &problem))?;
        let user = match user_col.data_type() {
            DataType::Dictionary(_, _) => {
                let dict = user_col.as_any_dictionary();
                let values = dict.values();
                if values.is_empty() {
                    // Every key is null (checked above; arrow cannot normalise keys into an empty dictionary).
                    return Self::with_user(batch, set, UserReader::Keys(vec![u64::MAX; user_col.len()]), at);
                }
                let value_keys = interner.dictionary_keys(values, set, at.pool, poll)?;
                let codes = IntUsers::of(dict.keys()).ok_or_else(|| internal_dtype(&set.user.1, user_col.data_type()))?;
                UserReader::Codes(codes, value_keys)
            }
            DataType::Float32 | DataType::Float64 => {
                let (keys, nulls) = float_keys(user_col.as_ref(), set)?;
                let mut view = Self::with_user(batch, set, UserReader::Keys(keys), at)?;
                view.user_nulls = nulls;
                return Ok(view);
            }
            _ => match IntUsers::of(user_col.as_ref()) {
                Some(ints) => UserReader::Ints(ints),
                None => UserReader::Interned(interner.column_keys(user_col, at.pool, poll)?),
            },
        };
        Self::with_user(batch, set, user, at)
    }

    fn with_user(batch: &'a RecordBatch, set: &'a ColumnSet, user: UserReader<'a>, at: BatchAt<'_>) -> Result<Self> {
        let user_col: &'a ArrayRef = batch.column(set.user.0);
        // Logical nulls: for a dictionary, null keys and null values alike.
        let user_nulls = counted_nulls(user_col.as_ref());

        let ts_col: &'a ArrayRef = batch.column(set.ts.0);
        let mut ts_unparsed = None;
        let ts = match ts_col.data_type() {
            DataType::Timestamp(unit, tz) => {
                let values = match unit {
                    TimeUnit::Second => ts_col.as_primitive::<TimestampSecondType>().values().clone(),
                    TimeUnit::Millisecond => ts_col.as_primitive::<TimestampMillisecondType>().values().clone(),
                    TimeUnit::Microsecond => ts_col.as_primitive::<TimestampMicrosecondType>().values().clone(),
                    TimeUnit::Nanosecond => ts_col.as_primitive::<TimestampNanosecondType>().values().clone(),
                };
                if tz.is_some() {
                    TsReader::Instant(values, *unit)
                } else {
                    TsReader::Local(values, *unit)
                }
            }
            DataType::Date32 => TsReader::Date32(ts_col.as_primitive::<Date32Type>().values().clone()),
            DataType::Date64 => TsReader::Date64(ts_col.as_primitive::<Date64Type>().values().clone()),
            DataType::Utf8 => Self::parse_ts(ts_col.as_string::<i32>().iter(), set, at, &mut ts_unparsed)?,
            DataType::LargeUtf8 => Self::parse_ts(ts_col.as_string::<i64>().iter(), set, at, &mut ts_unparsed)?,
            DataType::Utf8View => Self::parse_ts(ts_col.as_string_view().iter(), set, at, &mut ts_unparsed)?,
            other => return Err(internal_dtype(&set.ts.1, other)),
        };

        let amount_reader = |i: usize, name: &str| -> Result<(AmountReader<'a>, Option<NullBuffer>)> {
            {
                let col: &'a ArrayRef = batch.column(i);
                let factor = 10f64.powi(set.scale as i32);
                let reader = match col.data_type() {
                    DataType::Float64 => AmountReader::F64(col.as_primitive::<Float64Type>().values(), factor),
                    DataType::Float32 => AmountReader::F32(col.as_primitive::<Float32Type>().values(), factor),
                    DataType::Int8 => AmountReader::I8(col.as_primitive::<Int8Type>().values()),
                    DataType::Int16 => AmountReader::I16(col.as_primitive::<Int16Type>().values()),
                    DataType::Int32 => AmountReader::I32(col.as_primitive::<Int32Type>().values()),
                    DataType::Int64 => AmountReader::I64(col.as_primitive::<Int64Type>().values()),
                    DataType::UInt8 => AmountReader::U8(col.as_primitive::<UInt8Type>().values()),
                    DataType::UInt16 => AmountReader::U16(col.as_primitive::<UInt16Type>().values()),
                    DataType::UInt32 => AmountReader::U32(col.as_primitive::<UInt32Type>().values()),
                    DataType::UInt64 => AmountReader::U64(col.as_primitive::<UInt64Type>().values()),
                    DataType::Decimal128(_, s) => {
                        let f = if *s < 0 { 10i128.checked_pow(s.unsigned_abs().into()) } else { Some(1) };
                        AmountReader::Dec(col.as_primitive::<Decimal128Type>().values(), f)
                    }
                    other => return Err(internal_dtype(name, other)),
                };
                Ok((reader, counted_nulls(col.as_ref())))
            }
        };
        let amount = match &set.amount {
            Some((i, name)) => Some(amount_reader(*i, name)?),
            None => None,
        };
        let cost = match &set.cost {
            Some((i, name)) => Some(amount_reader(*i, name)?),
            None => None,
        };
        let segment = set.segment.as_ref().map(|(i, _)| {
            let col: &'a ArrayRef = batch.column(*i);
            (col.as_primitive::<UInt32Type>().values().as_ref(), counted_nulls(col.as_ref()))
        });
        Ok(BatchView {
            user,
            user_nulls,
            ts,
            ts_nulls: counted_nulls(ts_col.as_ref()),
            ts_unparsed,
            amount,
            cost,
            segment,
            first_row: at.first_row,
            len: batch.num_rows(),
            set,
        })
    }

    /// Parses a text timestamp column into instants (µs). A text that does not parse is marked in
    /// `unparsed` (its value is 0), or is an error naming it under `strict`.
    fn parse_ts<'s>(
        texts: impl Iterator<Item = Option<&'s str>>,
        set: &ColumnSet,
        at: BatchAt<'_>,
        unparsed: &mut Option<Vec<bool>>,
    ) -> Result<TsReader> {
        let tz = at.cal.time_zone();
        let format = set.ts_format.as_deref();
        let mut values = Vec::new();
        let mut bad: Vec<bool> = Vec::new();
        for (i, text) in texts.enumerate() {
            let parsed = text.map(|t| (t, parse_text_ts(t, format, tz)));
            match parsed {
                Some((text, None)) => {
                    if at.strict {
                        let layout = format.map_or_else(|| "ISO-8601".to_string(), |f| format!("the ts_format {f:?}"));
                        return Err(CoreError::BadRow {
                            table: set.table.clone(),
                            column: set.ts.1.clone(),
                            what: format!("the text {text:?}, which does not parse as a timestamp in {layout},"),
                            row: at.first_row + i as u64,
                        });
                    }
                    if bad.is_empty() {
                        bad.resize(i, false);
                    }
                    bad.push(true);
                    values.push(0);
                }
                other => {
                    if !bad.is_empty() {
                        bad.push(false);
                    }
                    values.push(other.and_then(|(_, v)| v).unwrap_or(0));
                }
            }
        }
        if !bad.is_empty() {
            bad.resize(values.len(), false);
            *unparsed = Some(bad);
        }
        Ok(TsReader::Instant(ScalarBuffer::from(values), TimeUnit::Microsecond))
    }

    /// Decodes rows `lo..hi` into `out`. Fails only on an amount outside 64-bit fixed point, or on
    /// a used order whose cost is missing or out of range.
    pub fn decode(&self, lo: usize, hi: usize, cal: &Calendar, want: Want, out: &mut Decoded) -> Result<()> {
        self.decode_rows(lo, hi, cal, want, out)?;
        out.profit.clear();
        if let Some((reader, nulls)) = &self.cost {
            self.decode_profit(reader, nulls.as_ref(), lo, hi, out)?;
        }
        Ok(())
    }

    /// Each row's profit (amount − cost) at the amount's scale; 0 for rows not used anyway. A row
    /// that is otherwise good must have a cost: a missing one would make the cell's profit wrong
    /// without a word, so it is an error rather than a reason (the row's revenue is not in doubt).
    fn decode_profit(&self, reader: &AmountReader<'_>, nulls: Option<&NullBuffer>, lo: usize, hi: usize, out: &mut Decoded) -> Result<()> {
        let n = hi - lo;
        out.cost.clear();
        out.cost_status.clear();
        out.cost_status.resize(n, status::VALID);
        let bad = reader.decode(lo, hi, &mut out.cost, &mut out.cost_status);
        let nulls = nulls.filter(|b| b.null_count() > 0);
        let name = self.set.cost.as_ref().map(|c| c.1.as_str()).unwrap_or_default();
        for k in 0..n {
            if !(out.all_valid || out.status[k] == status::VALID) {
                out.profit.push(0);
                continue;
            }
            let row = self.first_row + (lo + k) as u64;
            let missing = nulls.is_some_and(|b| b.is_null(lo + k));
            if missing || (bad && out.cost_status[k] == status::NOT_FINITE) {
                return Err(CoreError::InvalidArgument(format!(
                    "column {name:?} in {}: the order at row {row} has {} cost; every used order needs one for an exact profit \
                     (fill it with 0 when the order cost nothing, or drop the row)",
                    self.set.table,
                    if missing { "a null" } else { "a NaN or infinite" }
                )));
            }
            let profit = if bad && out.cost_status[k] != status::VALID {
                None // out of range
            } else {
                out.cost[k].checked_mul(self.set.cost_factor).and_then(|c| out.amount[k].checked_sub(c))
            };
            match profit {
                Some(p) => out.profit.push(p),
                None => {
                    return Err(CoreError::InvalidArgument(format!(
                        "column {name:?} in {}: the cost at row {row} (or the amount less it) does not fit 64-bit fixed point at scale {}",
                        self.set.table, self.set.scale
                    )))
                }
            }
        }
        Ok(())
    }

    fn decode_rows(&self, lo: usize, hi: usize, cal: &Calendar, want: Want, out: &mut Decoded) -> Result<()> {
        let n = hi - lo;
        out.key.clear();
        match &self.user {
            UserReader::Ints(ints) => macro_ints(ints, lo, hi, &mut out.key),
            UserReader::Keys(keys) => out.key.extend_from_slice(&keys[lo..hi]),
            UserReader::Interned(keys) => out.key.extend(keys[lo..hi].iter().copied().map(widen)),
            UserReader::Codes(codes, value_keys) => dictionary_codes(codes, value_keys, lo, hi, &mut out.key),
        }
        out.ts.clear();
        out.period.clear();
        // Whether some row's timestamp lies outside the band where it is surely in range; such a
        // block is checked row by row below.
        let mut ts_outside = false;
        if want.ts {
            let band = self.ts_kind().band();
            let mut outside = 0u64;
            match &self.ts {
                TsReader::Instant(v, _) | TsReader::Local(v, _) | TsReader::Date64(v) => out.ts.extend(v[lo..hi].iter().map(|&t| {
                    outside |= band.outside(t);
                    t
                })),
                TsReader::Date32(v) => out.ts.extend(v[lo..hi].iter().map(|&d| {
                    outside |= band.outside(i64::from(d));
                    i64::from(d)
                })),
            }
            ts_outside = outside != 0;
        }
        if want.period {
            ts_outside = self.decode_periods(lo, hi, cal, &mut out.period);
        }
        out.segment.clear();
        if let Some((codes, _)) = &self.segment {
            out.segment.extend_from_slice(&codes[lo..hi]);
        }
        out.amount.clear();
        out.status.clear();
        out.status.resize(n, status::VALID);
        let mut not_finite = false;
        if let Some((reader, _)) = &self.amount {
            not_finite = reader.decode(lo, hi, &mut out.amount, &mut out.status);
        } else {
            out.amount.resize(n, 0);
        }
        let amount_nulls = self.amount.as_ref().and_then(|(_, nulls)| nulls.as_ref()).filter(|b| b.null_count() > 0);
        let user_nulls = self.user_nulls.as_ref().filter(|b| b.null_count() > 0);
        let ts_nulls = self.ts_nulls.as_ref().filter(|b| b.null_count() > 0);
        let seg_nulls = self.segment.as_ref().and_then(|(_, nulls)| nulls.as_ref()).filter(|b| b.null_count() > 0);
        if let Some(nulls) = seg_nulls {
            for (k, seg) in out.segment.iter_mut().enumerate() {
                if nulls.is_null(lo + k) {
                    *seg = 0;
                }
            }
        }
        // Out-of-range amounts are errors unless the amount is null.
        if not_finite {
            for (k, &st) in out.status.iter().enumerate() {
                if st == OUT_OF_RANGE && amount_nulls.is_none_or(|b| b.is_valid(lo + k)) {
                    return Err(self.out_of_range(lo + k));
                }
            }
        }
        let ts_unparsed = self.ts_unparsed.as_deref();
        out.all_valid =
            !not_finite && !ts_outside && amount_nulls.is_none() && user_nulls.is_none() && ts_nulls.is_none() && ts_unparsed.is_none();
        if out.all_valid {
            return Ok(());
        }
        let kind = self.ts_kind();
        let band = kind.band();
        for k in 0..n {
            let i = lo + k;
            let ts_null = ts_nulls.is_some_and(|b| b.is_null(i));
            // Near the range's ends (or junk): the exact local day, and the period from it.
            let mut ts_in_range = true;
            if ts_outside && !ts_null && !ts_unparsed.is_some_and(|b| b[i]) {
                let raw = self.raw_ts(i);
                if band.outside(raw) != 0 {
                    match kind.local_day(raw, cal) {
                        Some(day) if want.period => out.period[k] = cal.period_of_day(day),
                        Some(_) => {}
                        None => ts_in_range = false,
                    }
                }
            }
            let st = if user_nulls.is_some_and(|b| b.is_null(i)) {
                status::NULL_USER
            } else if ts_null {
                status::NULL_TS
            } else if ts_unparsed.is_some_and(|b| b[i]) {
                status::BAD_TS
            } else if !ts_in_range {
                status::TS_OUT_OF_RANGE
            } else if amount_nulls.is_some_and(|b| b.is_null(i)) {
                status::NULL_AMOUNT
            } else if out.status[k] != status::VALID {
                status::NOT_FINITE
            } else {
                status::VALID
            };
            if amount_nulls.is_some_and(|b| b.is_null(i)) || out.status[k] != status::VALID {
                out.amount[k] = 0;
            }
            out.status[k] = st;
        }
        Ok(())
    }

    /// Appends the periods of rows `lo..hi`; returns whether some row was outside the band of
    /// surely-in-range values. A block with such rows has its values clamped into the band first, so
    /// the arithmetic never overflows, and `decode` then fixes or rejects those rows one by one; a
    /// block without (nearly always) takes the values as they are.
    fn decode_periods(&self, lo: usize, hi: usize, cal: &Calendar, out: &mut Vec<i32>) -> bool {
        let band = self.ts_kind().band();
        let outside = self.any_outside(band, lo, hi);
        if outside {
            self.periods_of(lo, hi, cal, out, |t| t.clamp(band.lo, band.hi));
        } else {
            self.periods_of(lo, hi, cal, out, |t| t);
        }
        outside
    }

    /// Appends the periods of rows `lo..hi`, each raw value passed through `fix` first.
    #[inline(always)]
    fn periods_of(&self, lo: usize, hi: usize, cal: &Calendar, out: &mut Vec<i32>, fix: impl Fn(i64) -> i64) {
        // Straight from the column, one loop per kind: the per-row work has no branch on the dtype.
        match &self.ts {
            // In UTC the local day is one division away; by a constant, so it compiles to a multiply.
            TsReader::Instant(v, unit) if cal.is_utc() => {
                let v = &v[lo..hi];
                macro_rules! days {
                    ($per_day:expr) => {
                        out.extend(v.iter().map(|&t| cal.period_of_day(fix(t).div_euclid($per_day))))
                    };
                }
                match unit {
                    TimeUnit::Second => days!(SECONDS_PER_DAY),
                    TimeUnit::Millisecond => days!(SECONDS_PER_DAY * 1_000),
                    TimeUnit::Microsecond => days!(SECONDS_PER_DAY * 1_000_000),
                    TimeUnit::Nanosecond => days!(SECONDS_PER_DAY * 1_000_000_000),
                }
            }
            TsReader::Instant(v, unit) => out.extend(v[lo..hi].iter().map(|&t| cal.period_of_instant(to_seconds(fix(t), *unit)))),
            TsReader::Local(v, _) | TsReader::Date64(v) => {
                let per_day = self.ts_kind().per_day();
                out.extend(v[lo..hi].iter().map(|&t| cal.period_of_day(fix(t).div_euclid(per_day))))
            }
            TsReader::Date32(v) => out.extend(v[lo..hi].iter().map(|&d| cal.period_of_day(fix(i64::from(d))))),
        }
    }

    /// Whether some timestamp of rows `lo..hi` is outside `band`.
    fn any_outside(&self, band: Band, lo: usize, hi: usize) -> bool {
        let outside = match &self.ts {
            TsReader::Instant(v, _) | TsReader::Local(v, _) | TsReader::Date64(v) => v[lo..hi].iter().fold(0, |a, &t| a | band.outside(t)),
            TsReader::Date32(v) => v[lo..hi].iter().fold(0, |a, &d| a | band.outside(i64::from(d))),
        };
        outside != 0
    }

    fn raw_ts(&self, i: usize) -> i64 {
        match &self.ts {
            TsReader::Instant(v, _) | TsReader::Local(v, _) | TsReader::Date64(v) => v[i],
            TsReader::Date32(v) => i64::from(v[i]),
        }
    }

    /// Starts loading rows `lo..hi` of the columns a pass reads into cache, ahead of `decode`: rows
    /// come from memory several times faster when asked for early than when the decoding loops meet
    /// them one cache line at a time. Asked for one block ahead, not a whole step: a step's rows
    /// asked for early would be pushed out of the core's cache by the table work in between.
    pub fn prefetch(&self, lo: usize, hi: usize) {
        let user = match &self.user {
            UserReader::Ints(ints) => ints.raw(),
            UserReader::Keys(keys) => raw(keys),
            UserReader::Interned(keys) => raw(keys),
            UserReader::Codes(codes, _) => codes.raw(),
        };
        let ts = match &self.ts {
            TsReader::Instant(v, _) | TsReader::Local(v, _) | TsReader::Date64(v) => raw(v),
            TsReader::Date32(v) => raw(v),
        };
        let amount = self.amount.as_ref().map(|(a, _)| a.raw());
        for (ptr, width, len) in [Some(user), Some(ts), amount].into_iter().flatten() {
            let (lo, hi) = (lo.min(len) * width, hi.min(len) * width);
            for offset in (lo..hi).step_by(64) {
                prefetch_read(ptr.wrapping_add(offset));
            }
        }
    }

    pub fn ts_kind(&self) -> TsKind {
        match &self.ts {
            TsReader::Instant(_, unit) => TsKind::Instant(*unit),
            TsReader::Local(_, unit) => TsKind::Local(*unit),
            TsReader::Date32(_) => TsKind::Date32,
            TsReader::Date64(_) => TsKind::Date64,
        }
    }

    fn out_of_range(&self, i: usize) -> CoreError {
        let name = self.set.amount.as_ref().map(|a| a.1.clone()).unwrap_or_default();
        CoreError::InvalidArgument(format!(
            "column {name:?} in {}: the amount at batch row {i} does not fit 64-bit fixed point at scale {}",
            self.set.table, self.set.scale
        ))
    }
}

/// Marks an amount outside the fixed-point range (internal to decoding).
const OUT_OF_RANGE: u8 = 255;

fn macro_ints(ints: &IntUsers<'_>, lo: usize, hi: usize, out: &mut Vec<u64>) {
    match ints {
        IntUsers::I8(v) => out.extend(v[lo..hi].iter().map(|&x| x as i64 as u64)),
        IntUsers::I16(v) => out.extend(v[lo..hi].iter().map(|&x| x as i64 as u64)),
        IntUsers::I32(v) => out.extend(v[lo..hi].iter().map(|&x| x as i64 as u64)),
        IntUsers::I64(v) => out.extend(v[lo..hi].iter().map(|&x| x as u64)),
        IntUsers::U8(v) => out.extend(v[lo..hi].iter().map(|&x| x as u64)),
        IntUsers::U16(v) => out.extend(v[lo..hi].iter().map(|&x| x as u64)),
        IntUsers::U32(v) => out.extend(v[lo..hi].iter().map(|&x| x as u64)),
        IntUsers::U64(v) => out.extend_from_slice(&v[lo..hi]),
    }
}

/// The keys of dictionary codes `lo..hi`. A null row's code may be anything (validation skips
/// them): one outside the dictionary gets a dummy key, as nulls do elsewhere.
fn dictionary_codes(codes: &IntUsers<'_>, value_keys: &[u64], lo: usize, hi: usize, out: &mut Vec<u64>) {
    macro_rules! look_up {
        ($v:expr) => {
            out.extend($v[lo..hi].iter().map(|&c| value_keys.get(usize::try_from(c).unwrap_or(usize::MAX)).copied().unwrap_or(u64::MAX)))
        };
    }
    match codes {
        IntUsers::I8(v) => look_up!(v),
        IntUsers::I16(v) => look_up!(v),
        IntUsers::I32(v) => look_up!(v),
        IntUsers::I64(v) => look_up!(v),
        IntUsers::U8(v) => look_up!(v),
        IntUsers::U16(v) => look_up!(v),
        IntUsers::U32(v) => look_up!(v),
        IntUsers::U64(v) => look_up!(v),
    }
}

/// The smallest and largest integer user key of a table's batches, nulls skipped:
/// what decides whether a run's ids are dense (`kernel::dense_ids`). Keys are compared as the
/// family has them: signed keys as i64, uint64 keys as u64.
#[derive(Default)]
pub struct KeyBounds {
    /// Keys with the sign bit flipped for signed families, so that u64 order is the keys' order.
    lo: u64,
    hi: u64,
    seen: bool,
}

impl KeyBounds {
    /// Takes in a batch's keys; false when its user column does not hold plain integers.
    pub fn add(&mut self, batch: &RecordBatch, set: &ColumnSet) -> bool {
        let col = batch.column(set.user.0);
        let Some(ints) = IntUsers::of(col.as_ref()) else { return false };
        let flip = self.flip(set);
        let nulls = counted_nulls(col.as_ref()).filter(|n| n.null_count() > 0);
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        macro_rules! bounds {
            ($v:expr, $to_key:expr) => {{
                let to_key = $to_key;
                let mut take = |x| {
                    let k = to_key(x) ^ flip;
                    lo = lo.min(k);
                    hi = hi.max(k);
                };
                match &nulls {
                    None => $v.iter().for_each(|&x| take(x)),
                    Some(n) => $v.iter().enumerate().filter(|(i, _)| n.is_valid(*i)).for_each(|(_, &x)| take(x)),
                }
            }};
        }
        match ints {
            IntUsers::I8(v) => bounds!(v, |x: i8| x as i64 as u64),
            IntUsers::I16(v) => bounds!(v, |x: i16| x as i64 as u64),
            IntUsers::I32(v) => bounds!(v, |x: i32| x as i64 as u64),
            IntUsers::I64(v) => bounds!(v, |x: i64| x as u64),
            IntUsers::U8(v) => bounds!(v, |x: u8| x as u64),
            IntUsers::U16(v) => bounds!(v, |x: u16| x as u64),
            IntUsers::U32(v) => bounds!(v, |x: u32| x as u64),
            IntUsers::U64(v) => bounds!(v, |x: u64| x),
        }
        if lo <= hi {
            (self.lo, self.hi) = if self.seen { (self.lo.min(lo), self.hi.max(hi)) } else { (lo, hi) };
            self.seen = true;
        }
        true
    }

    fn flip(&self, set: &ColumnSet) -> u64 {
        if set.family == UserFamily::Signed { 1 << 63 } else { 0 }
    }

    /// The smallest and largest key, if any row had one.
    pub fn range(&self, set: &ColumnSet) -> Option<(u64, u64)> {
        let flip = self.flip(set);
        self.seen.then_some((self.lo ^ flip, self.hi ^ flip))
    }
}

/// A column's logical nulls with the count taken from the bits, not from the producer: a wrong
/// count imported through the C data interface would make nulls read as values.
pub(crate) fn counted_nulls(array: &dyn Array) -> Option<NullBuffer> {
    array.logical_nulls().map(|n| NullBuffer::new(n.into_inner()))
}

/// Checks what reading a user or segment column relies on: string offsets and views inside their buffers,
/// dictionary indices inside the dictionary. Arrays imported through the C data interface are
/// not validated by arrow, and a bad offset or index would read outside a buffer.
pub(crate) fn check_layout(array: &dyn Array) -> std::result::Result<(), String> {
    fn offsets<O: Copy + Into<i64>>(offsets: &[O], data_len: usize) -> std::result::Result<(), String> {
        let mut previous = offsets.first().map_or(0, |&o| o.into());
        if previous < 0 {
            return Err(format!("a string offset is negative ({previous})"));
        }
        for &o in offsets {
            let o: i64 = o.into();
            if o < previous {
                return Err(format!("string offsets decrease ({previous} then {o})"));
            }
            previous = o;
        }
        if usize::try_from(previous).map_or(true, |last| last > data_len) {
            return Err(format!("a string ends at byte {previous}, past the {data_len} bytes of data"));
        }
        Ok(())
    }
    match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            offsets(a.value_offsets(), a.value_data().len())
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            offsets(a.value_offsets(), a.value_data().len())
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            offsets(a.value_offsets(), a.value_data().len())
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            offsets(a.value_offsets(), a.value_data().len())
        }
        DataType::Utf8View | DataType::BinaryView => {
            let (views, buffers) = match array.data_type() {
                DataType::Utf8View => (array.as_string_view().views(), array.as_string_view().data_buffers()),
                _ => (array.as_binary_view().views(), array.as_binary_view().data_buffers()),
            };
            #[allow(clippy::cast_possible_truncation)] // the view's fields, by the format's layout
            let fields = |view: u128| (view as u32, (view >> 64) as u32, (view >> 96) as u32);
            // Each buffer's length, and 0 past the last: a view naming no buffer then does not fit.
            let lengths: Vec<u64> = buffers.iter().map(|b| b.len() as u64).chain([0]).collect();
            let fits = |view: u128| {
                let (len, buffer, offset) = fields(view);
                len <= 12 || u64::from(offset) + u64::from(len) <= lengths[(buffer as usize).min(lengths.len() - 1)]
            };
            // Without a branch per view; a second pass names the first bad one.
            if views.iter().fold(true, |all, &view| all & fits(view)) {
                return Ok(());
            }
            let (len, buffer, offset) = fields(views.iter().copied().find(|&view| !fits(view)).unwrap_or_default());
            Err(format!("a string view points outside its data (buffer {buffer}, offset {offset}, length {len})"))
        }
        // The values are checked once per dictionary, when their keys are found (`dictionary_keys`).
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let codes = IntUsers::of(dict.keys()).ok_or_else(|| format!("dictionary indices of type {}", dict.keys().data_type()))?;
            codes_in_range(&codes, dict.keys().nulls(), dict.values().len())
        }
        _ => Ok(()),
    }
}

/// Every non-null dictionary index below `len` (a null row's index may be anything): one pass
/// for the largest index, and a second, row by row, only to name a bad one.
fn codes_in_range(codes: &IntUsers<'_>, nulls: Option<&NullBuffer>, len: usize) -> std::result::Result<(), String> {
    let fits = |c: u64| usize::try_from(c).is_ok_and(|c| c < len);
    if codes.max().is_none_or(fits) {
        return Ok(());
    }
    match (0..codes.len()).find(|&i| nulls.is_none_or(|n| n.is_valid(i)) && !fits(codes.get(i))) {
        #[allow(clippy::cast_possible_wrap)] // a signed index shown as it was written
        Some(i) => Err(format!("dictionary index {} at batch row {i} is outside the dictionary's {len} values", codes.get(i) as i64)),
        None => Ok(()),
    }
}

fn invalid_user_column(set: &ColumnSet, problem: &str) -> CoreError {
    CoreError::Stream { table: set.table.clone(), message: format!("column {:?} is not valid Arrow data: {problem}", set.user.1) }
}

fn internal_dtype(column: &str, dt: &DataType) -> CoreError {
    CoreError::Internal(format!("column {column:?} changed dtype to {dt} mid-stream"))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn malformed_user_columns_are_refused_before_they_are_read() {
        use arrow_array::{make_array, StringArray};
        use arrow_buffer::Buffer;
        use arrow_data::ArrayData;
        let good = StringArray::from(vec!["a", "bb", "ccc"]);
        assert_eq!(check_layout(&good), Ok(()));
        let with_offsets = |offsets: Vec<i32>| {
            // SAFETY (test): deliberately invalid data, as an unchecked C-interface import can give.
            let data = unsafe {
                ArrayData::builder(DataType::Utf8)
                    .len(3)
                    .add_buffer(Buffer::from_vec(offsets))
                    .add_buffer(Buffer::from_slice_ref(b"abbccc"))
                    .build_unchecked()
            };
            check_layout(make_array(data).as_ref())
        };
        assert!(with_offsets(vec![0, 1, 3, 600]).unwrap_err().contains("past the 6 bytes"));
        assert!(with_offsets(vec![0, 3, 1, 6]).unwrap_err().contains("decrease"));
        assert!(with_offsets(vec![-2, 1, 3, 6]).unwrap_err().contains("negative"));
        assert_eq!(with_offsets(vec![0, 1, 3, 6]), Ok(()));

        // String views: a long one must point inside a data buffer; a short one's buffer and
        // offset fields are its text and are not read as such.
        let data = b"a-long-user-id-of-28-bytes!!";
        let long = |buffer: u128, offset: u128, len: u128| len | (u128::from(u32::from_le_bytes(*b"a-lo")) << 32) | (buffer << 64) | (offset << 96);
        let short = u128::from_le_bytes(*b"\x05\0\0\0short\xff\xff\xff\xff\xff\xff\xff");
        let with_views = |views: Vec<u128>| {
            // SAFETY (test): deliberately invalid data, as an unchecked C-interface import can give.
            let data = unsafe {
                ArrayData::builder(DataType::Utf8View)
                    .len(views.len())
                    .add_buffer(Buffer::from_vec(views))
                    .add_buffer(Buffer::from_slice_ref(data))
                    .build_unchecked()
            };
            check_layout(make_array(data).as_ref())
        };
        assert_eq!(with_views(vec![short, long(0, 0, 28), long(0, 10, 18), short]), Ok(()));
        assert!(with_views(vec![short, long(0, 11, 18)]).unwrap_err().contains("(buffer 0, offset 11, length 18)"));
        assert!(with_views(vec![long(1, 0, 13), short]).unwrap_err().contains("(buffer 1, offset 0, length 13)"));
    }

    #[test]
    fn dictionary_codes_are_checked_against_the_dictionary_except_on_null_rows() {
        use arrow_array::{DictionaryArray, Int32Array, StringArray};
        let values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let dict = |codes: Vec<Option<i32>>, raw: Vec<i32>| {
            // The codes as written, with the validity of `codes` (a null row's code is `raw`'s).
            let valid: Vec<bool> = codes.iter().map(Option::is_some).collect();
            let keys = Int32Array::new(raw.into(), Some(NullBuffer::from(valid)));
            // SAFETY (test): deliberately invalid codes, as an unchecked C-interface import can give.
            check_layout(&unsafe { DictionaryArray::new_unchecked(keys, values.clone()) })
        };
        assert_eq!(dict(vec![Some(0), Some(1), None], vec![0, 1, 99]), Ok(()));
        assert!(dict(vec![Some(0), Some(2)], vec![0, 2]).unwrap_err().contains("index 2 at batch row 1"));
        assert!(dict(vec![Some(-1), Some(0)], vec![-1, 0]).unwrap_err().contains("index -1 at batch row 0"));
    }

    /// The keys of some string columns read in turn, with `threads` interning together, and the
    /// interner's strings: each key's, and how many.
    fn intern(columns: &[ArrayRef], threads: usize) -> (Vec<Vec<u64>>, std::collections::HashMap<u64, Vec<u8>>, usize) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut interner = Interner::default();
        let keys: Vec<Vec<u64>> = columns.iter().map(|c| interner.keys_of(c.as_ref(), (threads > 1).then_some(&pool), &mut || Ok(())).unwrap().into_iter().map(widen).collect()).collect();
        let texts = interner.texts();
        let text_of = keys.iter().flatten().filter(|&&k| k != u64::MAX).map(|&k| (k, texts.get(k).unwrap().to_vec())).collect();
        (keys, text_of, texts.list().len())
    }

    #[test]
    fn interned_keys_are_the_same_for_any_threads_and_batches_and_name_their_strings() {
        use arrow_array::{LargeStringArray, StringViewArray};
        // More rows than one block of `Interner::POLL_EVERY`, ids long and short, and nulls.
        let rows = 2 * Interner::POLL_EVERY + 777;
        let text = |i: usize| (i % 13 != 5).then(|| format!("{}{}", if i % 7 == 0 { "a-much-longer-user-id-" } else { "u" }, (i * 7_919) % 50_021));
        let ids: Vec<Option<String>> = (0..rows).map(text).collect();
        let whole: ArrayRef = Arc::new(LargeStringArray::from(ids.iter().map(|s| s.as_deref()).collect::<Vec<_>>()));
        let (want, text_of, held) = intern(std::slice::from_ref(&whole), 1);
        let want = &want[0];
        // Every row's key names its string; as many keys as strings, so no two strings share one.
        for (i, id) in ids.iter().enumerate() {
            match id {
                None => assert_eq!(want[i], u64::MAX),
                Some(s) => assert_eq!(text_of[&want[i]], s.as_bytes(), "row {i}"),
            }
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().flatten().collect();
        assert_eq!((text_of.len(), held), (distinct.len(), distinct.len()));
        for threads in [2, 3, 5] {
            assert!(&intern(std::slice::from_ref(&whole), threads).0[0] == want, "threads {threads}: other keys");
        }
        // Cut into batches (and as string views): the same keys.
        let cuts = [0, 1, 1000, Interner::POLL_EVERY + 3, rows];
        let pieces: Vec<ArrayRef> = cuts
            .windows(2)
            .enumerate()
            .map(|(b, w)| {
                let slice = &ids[w[0]..w[1]];
                if b % 2 == 0 {
                    Arc::new(StringViewArray::from(slice.iter().map(|s| s.as_deref()).collect::<Vec<_>>())) as ArrayRef
                } else {
                    Arc::new(LargeStringArray::from(slice.iter().map(|s| s.as_deref()).collect::<Vec<_>>())) as ArrayRef
                }
            })
            .collect();
        for threads in [1, 2, 3] {
            assert!(&intern(&pieces, threads).0.concat() == want, "batches, threads {threads}: other keys");
        }
    }

    #[test]
    fn text_timestamps_are_instants_with_an_offset_else_wall_clock_in_the_zone() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let at = |text: &str, format: Option<&str>| parse_text_ts(text, format, &berlin);
        let utc = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_microsecond();
        assert_eq!(at("2024-01-31T23:30:00Z", None), Some(utc("2024-01-31T23:30:00Z")));
        assert_eq!(at("2024-01-31T19:30:00-05:00", None), Some(utc("2024-02-01T00:30:00Z")));
        // No offset: Berlin wall clock (UTC+1 in winter); a date alone is its local midnight.
        assert_eq!(at("2024-01-31T23:30:00", None), Some(utc("2024-01-31T22:30:00Z")));
        assert_eq!(at(" 2024-01-31 23:30 ", None), Some(utc("2024-01-31T22:30:00Z")));
        assert_eq!(at("2024-02-01", None), Some(utc("2024-01-31T23:00:00Z")));
        // Skipped by the spring change: the clocks as they read before it (+1), so 03:30 CEST.
        assert_eq!(at("2024-03-31T02:30:00", None), Some(utc("2024-03-31T01:30:00Z")));
        for bad in ["", "yesterday", "2024-02-30", "31.01.2024 23:30", "2024-13-01"] {
            assert_eq!(at(bad, None), None, "{bad:?}");
        }
        assert_eq!(at("31.01.2024 23:30", Some("%d.%m.%Y %H:%M")), Some(utc("2024-01-31T22:30:00Z")));
        assert_eq!(at("31.01.2024 23:30 +0000", Some("%d.%m.%Y %H:%M %z")), Some(utc("2024-01-31T23:30:00Z")));
        assert_eq!(at("31.01.2024", Some("%d.%m.%Y")), Some(utc("2024-01-30T23:00:00Z")));
        assert_eq!(at("2024-01-31T23:30:00Z", Some("%d.%m.%Y %H:%M")), None);
        assert!(check_ts_format("%d.%m.%Y %H:%M").is_ok());
        assert!(check_ts_format("%J").is_err() && check_ts_format(" ").is_err());
    }

    #[test]
    fn a_slot_holds_exactly_its_short_string() {
        // Every length an id can have in its slot, and a difference at every position.
        for n in 0..=INLINE {
            let s: Vec<u8> = (0..n).map(|i| b'a' + i as u8).collect();
            let mut held = [0u8; INLINE];
            held[..n].copy_from_slice(&s);
            assert!(short_eq(&held, &s), "length {n}");
            for at in 0..n {
                let mut other = s.clone();
                other[at] ^= 0x20;
                assert!(!short_eq(&held, &other), "length {n}, differing at {at}");
            }
        }
    }

    #[test]
    fn float_user_ids_are_the_integers_they_hold() {
        use arrow_array::{Float32Array, Float64Array};
        let set = ColumnSet {
            table: "orders".into(),
            user: (0, "user_id".into()),
            ts: (1, "ts".into()),
            amount: None,
            segment: None,
            family: UserFamily::Signed,
            scale: 0,
            ts_format: None,
            cost: None,
            cost_factor: 1,
        };
        let big = 9_007_199_254_740_992.0; // 2^53
        let ids = Float64Array::from(vec![Some(3.0), None, Some(f64::NAN), Some(-0.0), Some(-big), Some(big)]);
        let (keys, nulls) = float_keys(&ids, &set).unwrap();
        assert_eq!(keys[0], 3);
        assert_eq!(keys[3], 0);
        assert_eq!(keys[4], (-(1i64 << 53)) as u64);
        assert_eq!(keys[5], 1u64 << 53);
        let nulls = nulls.unwrap();
        assert_eq!((0..6).map(|i| nulls.is_null(i)).collect::<Vec<_>>(), vec![false, true, true, false, false, false]);
        for bad in [1.5, big + 2.0, f64::INFINITY] {
            let err = float_keys(&Float64Array::from(vec![1.0, bad]), &set).unwrap_err().to_string();
            assert!(err.contains("\"user_id\"") && err.contains("dtype_backend=\"pyarrow\""), "{err}");
        }
        assert!(float_keys(&Float32Array::from(vec![16_777_216.0f32]), &set).is_ok());
        assert!(float_keys(&Float32Array::from(vec![16_777_218.0f32]), &set).unwrap_err().to_string().contains("2^24"));
    }

    #[test]
    fn floats_round_half_away_from_zero() {
        assert_eq!(round_float(0.145, 1e4), Amount::Value(1450));
        assert_eq!(round_float(-0.00005, 1e4), Amount::Value(-1));
        assert_eq!(round_float(0.00005, 1e4), Amount::Value(1));
        assert_eq!(round_float(f64::NAN, 1e4), Amount::NotFinite);
        assert_eq!(round_float(f64::INFINITY, 1e4), Amount::NotFinite);
        assert_eq!(round_float(1e300, 1e4), Amount::OutOfRange);
        assert_eq!(round_float(0.49999999999999994, 1.0), Amount::Value(0));
        assert_eq!(round_float(-2.5, 1.0), Amount::Value(-3));
        assert_eq!(round_float(4503599627370497.0, 1.0), Amount::Value(4503599627370497));
        // Every float that fits an i64 is taken, up to the largest below 2^63.
        let largest = TWO_POW_63 - 1024.0; // the float just below 2^63
        assert_eq!(round_float(largest, 1.0), Amount::Value(9_223_372_036_854_774_784));
        assert_eq!(round_float(-largest, 1.0), Amount::Value(-9_223_372_036_854_774_784));
        assert_eq!(round_float(TWO_POW_63, 1.0), Amount::OutOfRange);
        assert_eq!(round_float(-TWO_POW_63, 1.0), Amount::Value(i64::MIN));
        assert_eq!(round_float(-TWO_POW_63 - 2048.0, 1.0), Amount::OutOfRange);
        // Agrees with f64::round on a sweep of awkward values.
        let mut x = -1000.0f64;
        while x < 1000.0 {
            assert_eq!(round_float(x, 1e4), Amount::Value((x * 1e4).round() as i64), "{x}");
            x += 0.000_123_7;
        }
    }
}

#[cfg(test)]
mod interner_speed {
    use super::*;
    use arrow_array::LargeStringArray;

    /// Timing only (`cargo test --release -p ltrcore-core interner_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn interner_speed() {
        let users: u64 = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_574_803);
        let rows = 20_000_000usize;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let ids: Vec<String> = (0..rows)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("u{:013}", (x % users) * 7919)
            })
            .collect();
        let batches: Vec<ArrayRef> = ids.chunks(1 << 20).map(|c| Arc::new(LargeStringArray::from_iter_values(c.iter())) as ArrayRef).collect();
        drop(ids);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for _ in 0..2 {
                let mut interner = Interner::default();
                let started = std::time::Instant::now();
                let mut sum = 0u64;
                for b in &batches {
                    sum = sum.wrapping_add(interner.keys_of(b.as_ref(), Some(&pool), &mut || Ok(())).unwrap().iter().map(|&k| u64::from(k)).sum::<u64>());
                }
                let took = started.elapsed();
                eprintln!("threads {threads}: {took:?} ({:.1} ns/row), key sum {sum}", took.as_nanos() as f64 / rows as f64);
                let started = std::time::Instant::now();
                for b in &batches {
                    sum = sum.wrapping_add(interner.keys_of(b.as_ref(), Some(&pool), &mut || Ok(())).unwrap().iter().map(|&k| u64::from(k)).sum::<u64>());
                }
                let took = started.elapsed();
                eprintln!("  again (every id known): {took:?} ({:.1} ns/row)", took.as_nanos() as f64 / rows as f64);
            }
        }
    }
}
