//! Coding segments: each combination of `by` values gets a dense `u32` code, numbered in order of
//! first appearance across every batch the coder sees, so both passes over the orders (and any
//! split into batches) give the same code to the same values.
//!
//! Values are matched as Polars groups them (the front's reference coder, kept as the fallback):
//! nulls match nulls, every NaN matches every NaN, -0.0 matches 0.0, strings match by their bytes
//! whatever their layout, and a dictionary (a categorical) matches by its values' text.
//!
//! Each row's values become a key of `u64` words: one per fixed-width value (its bits, integers
//! sign-extended), two per text (up to 15 bytes packed with their length, longer ones interned),
//! and null flags. A batch is coded in two steps: a read-only lookup of every row against the known
//! keys, on all cores, then, in row order on one thread, the rows whose key was new (a few per
//! batch once the segments are known). So the codes are the same as one sequential walk would give.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{DataType, Schema, TimeUnit};
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use rayon::prelude::*;

use crate::columns::{check_layout, counted_nulls, IntUsers, Interner, PerValue};
use crate::error::{out_of_memory, CoreError, Result};

/// What the core coder accepts; other dtypes stay with the front's Polars coder.
pub const SEGMENT_ACCEPTED: &str = "int8/16/32/64, uint8/16/32/64, bool, float32/64, date32/64, time32/64, timestamp, \
     duration, string, large_string, string_view, binary, large_binary, binary_view, dictionary of strings";

/// How one column's values become key words.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Integers and everything stored as one (bools, dates, times, timestamps, durations): one word.
    Fixed,
    Float32,
    Float64,
    /// Strings and binaries of every layout, and dictionaries of strings: two words.
    Text,
}

impl Kind {
    fn of(dt: &DataType) -> Option<Kind> {
        use DataType::*;
        Some(match dt {
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Boolean => Kind::Fixed,
            Date32 | Date64 | Time32(_) | Time64(_) | Timestamp(_, _) | Duration(_) => Kind::Fixed,
            Float32 => Kind::Float32,
            Float64 => Kind::Float64,
            Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView => Kind::Text,
            Dictionary(key, value) if key.is_integer() && matches!(**value, Utf8 | LargeUtf8 | Utf8View) => Kind::Text,
            _ => return None,
        })
    }

    fn words(self) -> usize {
        if self == Kind::Text { 2 } else { 1 }
    }
}

/// Texts up to this many bytes are packed into their two words; longer ones are interned.
const PACKED_BYTES: usize = 15;
/// The top byte of a text's second word: its length when packed, this for an interned id.
const INTERNED: u64 = 0xFF;

/// A text's two words, `None` when it is longer than `PACKED_BYTES` and `long` does not know it.
#[inline]
fn text_words(s: &[u8], long: impl FnOnce(&[u8]) -> Result<Option<u64>>) -> Result<Option<[u64; 2]>> {
    if s.len() <= PACKED_BYTES {
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s);
        bytes[15] = s.len() as u8; // at most 15
        let packed = u128::from_le_bytes(bytes);
        #[allow(clippy::cast_possible_truncation)] // the two halves of the packed text
        return Ok(Some([packed as u64, (packed >> 64) as u64]));
    }
    Ok(long(s)?.map(|id| [id, INTERNED << 56]))
}

/// A float's bits with every NaN one NaN and -0.0 as 0.0 (Polars' grouping).
#[inline]
fn float64_word(x: f64) -> u64 {
    if x.is_nan() {
        f64::NAN.to_bits()
    } else if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

#[inline]
fn float32_word(x: f32) -> u64 {
    if x.is_nan() {
        u64::from(f32::NAN.to_bits())
    } else if x == 0.0 {
        0
    } else {
        u64::from(x.to_bits())
    }
}

/// One column of a batch, ready to give each row's words.
enum Reader<'a> {
    Ints(IntUsers<'a>),
    Bools(BooleanBuffer),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Text(&'a dyn Array),
    /// Dictionary codes, and the words of each dictionary value.
    Codes(IntUsers<'a>, Arc<[[u64; 2]]>),
}

/// The integer values of a fixed-width column, whatever it stands for.
fn fixed_values(array: &dyn Array) -> Option<IntUsers<'_>> {
    use DataType::*;
    macro_rules! p {
        ($variant:ident, $t:ty) => {
            IntUsers::$variant(array.as_primitive::<$t>().values())
        };
    }
    Some(match array.data_type() {
        Date32 => p!(I32, Date32Type),
        Date64 => p!(I64, Date64Type),
        Time32(TimeUnit::Second) => p!(I32, Time32SecondType),
        Time32(_) => p!(I32, Time32MillisecondType),
        Time64(TimeUnit::Microsecond) => p!(I64, Time64MicrosecondType),
        Time64(_) => p!(I64, Time64NanosecondType),
        Timestamp(TimeUnit::Second, _) => p!(I64, TimestampSecondType),
        Timestamp(TimeUnit::Millisecond, _) => p!(I64, TimestampMillisecondType),
        Timestamp(TimeUnit::Microsecond, _) => p!(I64, TimestampMicrosecondType),
        Timestamp(TimeUnit::Nanosecond, _) => p!(I64, TimestampNanosecondType),
        Duration(TimeUnit::Second) => p!(I64, DurationSecondType),
        Duration(TimeUnit::Millisecond) => p!(I64, DurationMillisecondType),
        Duration(TimeUnit::Microsecond) => p!(I64, DurationMicrosecondType),
        Duration(TimeUnit::Nanosecond) => p!(I64, DurationNanosecondType),
        _ => return IntUsers::of(array),
    })
}

/// The bytes of row `i` of a text column.
#[inline]
fn text_at(array: &dyn Array, i: usize) -> &[u8] {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(i).as_bytes(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).as_bytes(),
        DataType::Utf8View => array.as_string_view().value(i).as_bytes(),
        DataType::Binary => array.as_binary::<i32>().value(i),
        DataType::LargeBinary => array.as_binary::<i64>().value(i),
        _ => array.as_binary_view().value(i),
    }
}

/// Where a column's words sit in a key, and how they are made.
#[derive(Clone, Copy)]
struct Slot {
    kind: Kind,
    at: usize,
}

/// A row's key into `key`: `false` when a long text is not known to `long` (a read-only lookup).
#[inline]
fn key_of(
    slots: &[Slot],
    flags_at: usize,
    readers: &[Reader<'_>],
    nulls: &[Option<NullBuffer>],
    row: usize,
    key: &mut [u64],
    long: &mut dyn FnMut(usize, &[u8]) -> Result<Option<u64>>,
) -> Result<bool> {
    key[flags_at..].fill(0);
    for (c, (slot, reader)) in slots.iter().zip(readers).enumerate() {
        let words = &mut key[slot.at..slot.at + slot.kind.words()];
        if nulls[c].as_ref().is_some_and(|n| n.is_null(row)) {
            words.fill(0);
            key[flags_at + c / 64] |= 1 << (c % 64);
            continue;
        }
        match reader {
            Reader::Ints(v) => words[0] = v.get(row),
            Reader::Bools(v) => words[0] = u64::from(v.value(row)),
            Reader::F32(v) => words[0] = float32_word(v[row]),
            Reader::F64(v) => words[0] = float64_word(v[row]),
            Reader::Codes(codes, values) => {
                // In range: the dictionary was validated (`check_layout`).
                #[allow(clippy::cast_possible_truncation)] // a dictionary index of an array in memory
                words.copy_from_slice(&values[codes.get(row) as usize]);
            }
            Reader::Text(array) => match text_words(text_at(*array, row), |s| long(c, s))? {
                Some(w) => words.copy_from_slice(&w),
                None => return Ok(false),
            },
        }
    }
    Ok(true)
}

/// The result of coding a batch.
pub struct Coded {
    /// The code of every row.
    pub codes: Vec<u32>,
    /// The row of the first appearance of each code this batch numbered, in code order.
    pub first_rows: Vec<usize>,
}

/// Codes combinations of segment values, batch after batch (see the module's documentation).
pub struct SegmentCoder {
    names: Vec<String>,
    slots: Vec<Slot>,
    /// Words per key: the columns' words, then one word of null flags per 64 columns.
    width: usize,
    /// Per column: its interned long texts, and the words of the last dictionary's values.
    long: Vec<Interner>,
    dictionaries: Vec<Option<PerValue<[u64; 2]>>>,
    /// Every known key, back to back, in code order.
    keys: Vec<u64>,
    /// Each known key's hash and code.
    table: HashTable<(u64, u32)>,
    hasher: FixedState,
    /// Look the rows up on all the pool's threads (else on the calling thread only).
    parallel: bool,
}

/// A row whose key the read-only lookup did not find.
const NEW: u32 = u32::MAX;
/// Rows per unit of the parallel lookup.
const BLOCK_ROWS: usize = 1 << 14;

impl SegmentCoder {
    /// Whether the coder takes a column of this dtype.
    pub fn accepts(dt: &DataType) -> bool {
        Kind::of(dt).is_some()
    }

    /// A coder for the columns of `schema` (the `by` columns, in order).
    pub fn new(schema: &Schema, parallel: bool) -> Result<Self> {
        let mut slots = Vec::new();
        let mut at = 0;
        for field in schema.fields() {
            let kind = Kind::of(field.data_type()).ok_or_else(|| CoreError::Dtype {
                table: "the by columns".into(),
                column: field.name().clone(),
                dtype: field.data_type().to_string(),
                accepted: SEGMENT_ACCEPTED.into(),
            })?;
            slots.push(Slot { kind, at });
            at += kind.words();
        }
        let n = slots.len();
        Ok(SegmentCoder {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            slots,
            width: at + n.div_ceil(64),
            long: (0..n).map(|_| Interner::default()).collect(),
            dictionaries: (0..n).map(|_| None).collect(),
            keys: Vec::new(),
            table: HashTable::new(),
            hasher: FixedState::default(),
            parallel,
        })
    }

    /// How many combinations are known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn flags_at(&self) -> usize {
        self.width - self.slots.len().div_ceil(64)
    }

    fn find(&self, key: &[u64], hash: u64) -> Option<u32> {
        let width = self.width;
        #[allow(clippy::cast_possible_truncation)] // codes index keys held in memory
        self.table.find(hash, |&(h, code)| h == hash && &self.keys[code as usize * width..][..width] == key).map(|&(_, code)| code)
    }

    /// The code of every row of the batch's `by` columns, new combinations numbered on.
    pub fn code(&mut self, columns: &[ArrayRef]) -> Result<Coded> {
        if columns.len() != self.slots.len() {
            return Err(CoreError::Internal(format!("{} segment columns given to a coder of {}", columns.len(), self.slots.len())));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        let mut readers = Vec::with_capacity(columns.len());
        let mut nulls = Vec::with_capacity(columns.len());
        for (c, array) in columns.iter().enumerate() {
            let name = &self.names[c];
            if Kind::of(array.data_type()) != Some(self.slots[c].kind) || array.len() != rows {
                return Err(CoreError::Internal(format!("segment column {name:?} changed to {} mid-stream", array.data_type())));
            }
            check_layout(array.as_ref()).map_err(|problem| CoreError::Stream {
                table: "the by columns".into(),
                message: format!("column {name:?} is not valid Arrow data: {problem}"),
            })?;
            nulls.push(counted_nulls(array.as_ref()).filter(|n| n.null_count() > 0));
            readers.push(self.reader(c, array.as_ref())?);
        }
        let mut codes = Vec::new();
        codes.try_reserve_exact(rows).map_err(|_| out_of_memory(rows * 4, "the segment codes of a batch"))?;
        codes.resize(rows, NEW);
        // Known keys, read-only: a row whose long text or key is new stays NEW.
        let (this, flags_at) = (&*self, self.flags_at());
        let lookup = |(block, out): (usize, &mut [u32])| {
            let mut key = vec![0u64; this.width];
            let mut known = |c: usize, s: &[u8]| Ok(this.long[c].find(s));
            for (k, code) in out.iter_mut().enumerate() {
                if let Ok(true) = key_of(&this.slots, flags_at, &readers, &nulls, block * BLOCK_ROWS + k, &mut key, &mut known) {
                    if let Some(found) = this.find(&key, this.hasher.hash_one(&key)) {
                        *code = found;
                    }
                }
            }
        };
        if self.parallel && rows > BLOCK_ROWS {
            codes.par_chunks_mut(BLOCK_ROWS).enumerate().for_each(lookup);
        } else {
            codes.chunks_mut(BLOCK_ROWS).enumerate().for_each(lookup);
        }
        // The rest, in row order, as one sequential walk would: each new key is numbered at its first row.
        let mut first_rows = Vec::new();
        let mut key = vec![0u64; self.width];
        for row in 0..rows {
            if codes[row] != NEW {
                continue;
            }
            let long = &mut self.long;
            key_of(&self.slots, flags_at, &readers, &nulls, row, &mut key, &mut |c, s| long[c].key(s).map(Some))?;
            let hash = self.hasher.hash_one(&key);
            codes[row] = match self.find(&key, hash) {
                Some(code) => code,
                None => {
                    first_rows.push(row);
                    self.insert(&key, hash)?
                }
            };
        }
        Ok(Coded { codes, first_rows })
    }

    fn insert(&mut self, key: &[u64], hash: u64) -> Result<u32> {
        let code = u32::try_from(self.table.len()).ok().filter(|&c| c != NEW).ok_or_else(|| {
            CoreError::InvalidArgument(format!("the by columns {:?} have more than {} combinations of values", self.names, NEW - 1))
        })?;
        if self.keys.try_reserve(key.len()).is_err() || self.table.try_reserve(1, |e| e.0).is_err() {
            return Err(out_of_memory(self.keys.capacity() * 16, "the known segments"));
        }
        self.keys.extend_from_slice(key);
        self.table.insert_unique(hash, (hash, code), |e| e.0);
        Ok(code)
    }

    /// A reader of column `c`; a dictionary's values get their words here (once per dictionary).
    fn reader<'a>(&mut self, c: usize, array: &'a dyn Array) -> Result<Reader<'a>> {
        let changed = || CoreError::Internal(format!("segment column {:?} changed to {} mid-stream", self.names[c], array.data_type()));
        Ok(match array.data_type() {
            DataType::Boolean => Reader::Bools(array.as_boolean().values().clone()),
            DataType::Float32 => Reader::F32(array.as_primitive::<Float32Type>().values()),
            DataType::Float64 => Reader::F64(array.as_primitive::<Float64Type>().values()),
            DataType::Dictionary(_, _) => {
                let dict = array.as_any_dictionary();
                let codes = IntUsers::of(dict.keys()).ok_or_else(changed)?;
                let long = &mut self.long[c];
                let words = PerValue::of(
                    &mut self.dictionaries[c],
                    dict.values(),
                    |more| {
                        // A null value's words are never read: its rows are null (`counted_nulls`).
                        (0..more.len())
                            .map(|i| if more.is_null(i) { Ok([0; 2]) } else { Ok(text_words(text_at(more.as_ref(), i), |s| long.key(s).map(Some))?.unwrap_or([0; 2])) })
                            .collect()
                    },
                    "the words of a dictionary's values",
                )?;
                Reader::Codes(codes, words)
            }
            dt if Kind::of(dt) == Some(Kind::Text) => Reader::Text(array),
            _ => Reader::Ints(fixed_values(array).ok_or_else(changed)?),
        })
    }
}
