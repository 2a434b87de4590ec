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
//! keys (on rayon's pool when the coder is `parallel`), then, in row order on the calling thread,
//! the rows whose key was new (a few per batch once the segments are known). So the codes are the
//! same as one sequential walk would give.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{DataType, Schema, TimeUnit};
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

/// The two words of a text of at most `PACKED_BYTES` bytes, given as the low `len` bytes of `bytes`
/// (the bytes above are ignored).
#[inline(always)]
fn packed(bytes: u128, len: usize) -> [u64; 2] {
    /// Per length, the masks of the bytes a text of that length holds in each word.
    const MASKS: [[u64; 2]; 16] = {
        let mut masks = [[0u64; 2]; 16];
        let mut len = 0;
        while len < 16 {
            masks[len][0] = if len >= 8 { u64::MAX } else { (1u64 << (8 * len)) - 1 };
            masks[len][1] = if len <= 8 { 0 } else { (1u64 << (8 * (len - 8))) - 1 };
            len += 1;
        }
        masks
    };
    let [low, high] = MASKS[len];
    #[allow(clippy::cast_possible_truncation)] // the two halves of the bytes
    let words = [bytes as u64 & low, (bytes >> 64) as u64 & high | (len as u64) << 56];
    words
}

/// A text's two words, `None` when it is longer than `PACKED_BYTES` and `long` does not know it.
#[inline]
fn text_words(s: &[u8], long: impl FnOnce(&[u8]) -> Result<Option<u64>>) -> Result<Option<[u64; 2]>> {
    if s.len() <= PACKED_BYTES {
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s);
        return Ok(Some(packed(u128::from_le_bytes(bytes), s.len())));
    }
    Ok(long(s)?.map(|id| [id, INTERNED << 56]))
}

/// The words of the text at `values[start..end]`: a short one read in one 16-byte load where the
/// buffer has 16 bytes from `start`.
#[inline]
fn slice_words(values: &[u8], start: usize, end: usize, long: impl FnOnce(&[u8]) -> Result<Option<u64>>) -> Result<Option<[u64; 2]>> {
    let len = end - start;
    if len <= PACKED_BYTES {
        if let Some(chunk) = values.get(start..start + 16) {
            let bytes: [u8; 16] = chunk.try_into().expect("16 bytes");
            return Ok(Some(packed(u128::from_le_bytes(bytes), len)));
        }
    }
    text_words(&values[start..end], long)
}

/// The texts of a column: offsets into one buffer, or views.
enum Texts<'a> {
    Offsets32(&'a [i32], &'a [u8]),
    Offsets64(&'a [i64], &'a [u8]),
    Views(&'a [u128], &'a [arrow_buffer::Buffer]),
}

impl<'a> Texts<'a> {
    fn of(array: &'a dyn Array) -> Texts<'a> {
        match array.data_type() {
            DataType::Utf8 => Texts::Offsets32(array.as_string::<i32>().value_offsets(), array.as_string::<i32>().value_data()),
            DataType::LargeUtf8 => Texts::Offsets64(array.as_string::<i64>().value_offsets(), array.as_string::<i64>().value_data()),
            DataType::Binary => Texts::Offsets32(array.as_binary::<i32>().value_offsets(), array.as_binary::<i32>().value_data()),
            DataType::LargeBinary => Texts::Offsets64(array.as_binary::<i64>().value_offsets(), array.as_binary::<i64>().value_data()),
            DataType::Utf8View => Texts::Views(array.as_string_view().views(), array.as_string_view().data_buffers()),
            _ => Texts::Views(array.as_binary_view().views(), array.as_binary_view().data_buffers()),
        }
    }

    /// Row `i`'s words. Offsets and views were checked to lie inside their buffers (`check_layout`).
    #[inline]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked offsets of buffers in memory
    fn words(&self, i: usize, long: impl FnOnce(&[u8]) -> Result<Option<u64>>) -> Result<Option<[u64; 2]>> {
        match self {
            Texts::Offsets32(offsets, values) => slice_words(values, offsets[i] as usize, offsets[i + 1] as usize, long),
            Texts::Offsets64(offsets, values) => slice_words(values, offsets[i] as usize, offsets[i + 1] as usize, long),
            Texts::Views(views, buffers) => {
                let view = views[i];
                let len = view as u32 as usize;
                if len <= 12 {
                    return Ok(Some(packed(view >> 32, len))); // inline, after the length
                }
                let (buffer, offset) = ((view >> 64) as u32 as usize, (view >> 96) as u32 as usize);
                slice_words(&buffers[buffer], offset, offset + len, long)
            }
        }
    }
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
    Text(Texts<'a>),
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

/// A key's hash: two words at a time folded with a multiply (foldhash's mixing), each pair with its
/// own constants, the pairs independent of each other (no chain of multiplies), then mixed once more.
#[inline(always)]
fn hash_key(key: &[u64]) -> u64 {
    const SEEDS: [u64; 8] = [
        0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344, 0xA409_3822_299F_31D0, 0x082E_FA98_EC4E_6C89,
        0x4528_21E6_38D0_1377, 0xBE54_66CF_34E9_0C6C, 0xC0AC_29B7_C97C_50DD, 0x3F84_D5B5_B547_0917,
    ];
    #[inline(always)]
    fn folded(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        #[allow(clippy::cast_possible_truncation)] // the two halves of the product
        let folded = (p as u64) ^ ((p >> 64) as u64);
        folded
    }
    let mut h = 0u64;
    for (i, pair) in key.chunks(2).enumerate() {
        let second = pair.get(1).copied().unwrap_or(0);
        h = h.wrapping_add(folded(pair[0] ^ SEEDS[(2 * i) % 8], second ^ SEEDS[(2 * i + 1) % 8]));
    }
    folded(h ^ 0x9E37_79B9_7F4A_7C15, 0xD6E8_FEB8_6659_FD93)
}

/// Where a column's words sit in a key, and how they are made.
#[derive(Clone, Copy)]
struct Slot {
    kind: Kind,
    at: usize,
}

/// How a long text of column `c` gets its id: looked up (`None` if unknown) or interned.
type LongTexts<'a> = dyn FnMut(usize, &[u8]) -> Result<Option<u64>> + 'a;

/// The keys of rows `lo..lo + n`, row after row in `keys` (`width` words each), column by column.
/// `complete[r]` turns false where a long text is not known to `long` (a read-only lookup).
#[allow(clippy::too_many_arguments)]
fn fill_keys(
    slots: &[Slot],
    width: usize,
    readers: &[Reader<'_>],
    nulls: &[Option<NullBuffer>],
    lo: usize,
    keys: &mut [u64],
    complete: &mut [bool],
    long: &mut LongTexts<'_>,
) -> Result<()> {
    let flags_at = width - slots.len().div_ceil(64);
    complete.fill(true);
    for key in keys.chunks_exact_mut(width) {
        key[flags_at..].fill(0);
    }
    for (c, (slot, reader)) in slots.iter().zip(readers).enumerate() {
        let rows = keys.chunks_exact_mut(width).enumerate().map(|(r, key)| (lo + r, &mut key[slot.at..]));
        match reader {
            Reader::Ints(v) => rows.for_each(|(i, w)| w[0] = v.get(i)),
            Reader::Bools(v) => rows.for_each(|(i, w)| w[0] = u64::from(v.value(i))),
            Reader::F32(v) => rows.for_each(|(i, w)| w[0] = float32_word(v[i])),
            Reader::F64(v) => rows.for_each(|(i, w)| w[0] = float64_word(v[i])),
            // In range: the dictionary was validated (`check_layout`); a null row's index is not read.
            #[allow(clippy::cast_possible_truncation)] // a dictionary index of an array in memory
            Reader::Codes(codes, values) => match &nulls[c] {
                None => rows.for_each(|(i, w)| w[..2].copy_from_slice(&values[codes.get(i) as usize])),
                Some(n) => rows.for_each(|(i, w)| w[..2].copy_from_slice(if n.is_null(i) { &[0; 2] } else { &values[codes.get(i) as usize] })),
            },
            // One loop per layout, so that the layout is not matched row by row.
            #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)] // offsets checked by `check_layout`, of buffers in memory
            Reader::Text(texts) => match texts {
                Texts::Offsets32(o, v) => fill_texts(rows, nulls[c].as_ref(), complete, |i| slice_words(v, o[i] as usize, o[i + 1] as usize, |s| long(c, s)))?,
                Texts::Offsets64(o, v) => fill_texts(rows, nulls[c].as_ref(), complete, |i| slice_words(v, o[i] as usize, o[i + 1] as usize, |s| long(c, s)))?,
                Texts::Views(..) => fill_texts(rows, nulls[c].as_ref(), complete, |i| texts.words(i, |s| long(c, s)))?,
            },
        }
        if let Some(n) = &nulls[c] {
            for (r, key) in keys.chunks_exact_mut(width).enumerate() {
                if n.is_null(lo + r) {
                    key[slot.at..slot.at + slot.kind.words()].fill(0);
                    key[flags_at + c / 64] |= 1 << (c % 64);
                }
            }
        }
    }
    Ok(())
}

/// A text column's words into the keys; a null row is skipped (its words are cleared after).
#[inline(always)]
fn fill_texts<'k>(
    rows: impl Iterator<Item = (usize, &'k mut [u64])>,
    nulls: Option<&NullBuffer>,
    complete: &mut [bool],
    mut words: impl FnMut(usize) -> Result<Option<[u64; 2]>>,
) -> Result<()> {
    for (r, (i, w)) in rows.enumerate() {
        if nulls.is_some_and(|n| n.is_null(i)) {
            continue;
        }
        match words(i)? {
            Some(words) => w[..2].copy_from_slice(&words),
            None => complete[r] = false,
        }
    }
    Ok(())
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
    /// Look the rows up on all the pool's threads (else on the calling thread only).
    parallel: bool,
}

/// A row whose key the read-only lookup did not find.
const NEW: u32 = u32::MAX;
/// Rows per unit of the parallel lookup.
const BLOCK_ROWS: usize = 1 << 14;
/// Rows whose keys are filled at a time.
const FILL_ROWS: usize = 256;

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

    #[inline(always)]
    fn find(&self, key: &[u64], hash: u64) -> Option<u32> {
        let width = self.width;
        // Word by word: keys are a few words, shorter than a call to `memcmp`.
        #[allow(clippy::cast_possible_truncation)] // codes index keys held in memory
        let same = |code: u32| self.keys[code as usize * width..][..width].iter().zip(key).all(|(a, b)| a == b);
        self.table.find(hash, |&(h, code)| h == hash && same(code)).map(|&(_, code)| code)
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
            check_layout(array.as_ref()).map_err(|problem| invalid_by_column(name, &problem))?;
            nulls.push(counted_nulls(array.as_ref()).filter(|n| n.null_count() > 0));
            readers.push(self.reader(c, array.as_ref())?);
        }
        let mut codes = Vec::new();
        codes.try_reserve_exact(rows).map_err(|_| out_of_memory(rows * 4, "the segment codes of a batch"))?;
        codes.resize(rows, NEW);
        // Known keys, read-only: a row whose long text or key is new stays NEW.
        let this = &*self;
        let width = self.width;
        let lookup = |(block, out): (usize, &mut [u32])| {
            // A few hundred keys at a time: they stay in the L1 cache between filling and probing.
            let mut keys = vec![0u64; FILL_ROWS * width];
            let mut complete = vec![true; FILL_ROWS];
            let mut known = |c: usize, s: &[u8]| Ok(this.long[c].find(s));
            for (part, out) in out.chunks_mut(FILL_ROWS).enumerate() {
                let (keys, complete) = (&mut keys[..out.len() * width], &mut complete[..out.len()]);
                let lo = block * BLOCK_ROWS + part * FILL_ROWS;
                if fill_keys(&this.slots, width, &readers, &nulls, lo, keys, complete, &mut known).is_err() {
                    return; // cannot happen read-only; the rows stay NEW and are coded below
                }
                for ((code, key), &complete) in out.iter_mut().zip(keys.chunks_exact(width)).zip(complete.iter()) {
                    if complete {
                        if let Some(found) = this.find(key, hash_key(key)) {
                            *code = found;
                        }
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
        let mut key = vec![0u64; width];
        for (row, code) in codes.iter_mut().enumerate() {
            if *code != NEW {
                continue;
            }
            let long = &mut self.long;
            fill_keys(&self.slots, width, &readers, &nulls, row, &mut key, &mut [true], &mut |c, s| long[c].key(s).map(Some))?;
            let hash = hash_key(&key);
            *code = match self.find(&key, hash) {
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
                    |problem| invalid_by_column(&self.names[c], &problem),
                    |more| {
                        // A null value's words are never read: its rows are null (`counted_nulls`).
                        let texts = Texts::of(more.as_ref());
                        (0..more.len())
                            .map(|i| if more.is_null(i) { Ok([0; 2]) } else { Ok(texts.words(i, |s| long.key(s).map(Some))?.unwrap_or([0; 2])) })
                            .collect()
                    },
                    "the words of a dictionary's values",
                )?;
                Reader::Codes(codes, words)
            }
            dt if Kind::of(dt) == Some(Kind::Text) => Reader::Text(Texts::of(array)),
            _ => Reader::Ints(fixed_values(array).ok_or_else(changed)?),
        })
    }
}

/// A `by` column (or its dictionary's values) that breaks Arrow's layout rules.
fn invalid_by_column(name: &str, problem: &str) -> CoreError {
    CoreError::Stream { table: "the by columns".into(), message: format!("column {name:?} is not valid Arrow data: {problem}") }
}
