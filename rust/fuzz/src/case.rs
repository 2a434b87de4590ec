//! A fuzz case: a `Spec` and the tables, decoded from raw bytes, kept twice: as the logical rows the
//! reference reads, and as the Arrow batches the core reads.
//!
//! Every column is built over a few extra rows on each side and then sliced, so arrays have
//! non-zero offsets (each column its own). Dictionary columns are built with
//! `ArrayData::builder(..).build_unchecked()`, which is how keys out of range get in.

use std::sync::Arc;

use arbitrary::Unstructured;
use arrow_array::types::*;
use arrow_array::{
    make_array, Array, ArrayRef, BooleanArray, Date32Array, Date64Array, Decimal128Array, DictionaryArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, PrimitiveArray, RecordBatch,
    RecordBatchOptions, StringArray, StringViewArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_buffer::{Buffer, NullBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ltrcore_core::{CutOff, Spec, TimePoint};

/// Integer dtypes (user ids, amounts, dictionary keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntT {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
}

pub const INTS: [IntT; 8] = [IntT::I8, IntT::I16, IntT::I32, IntT::I64, IntT::U8, IntT::U16, IntT::U32, IntT::U64];

impl IntT {
    pub fn min(self) -> i128 {
        match self {
            IntT::I8 => i8::MIN as i128,
            IntT::I16 => i16::MIN as i128,
            IntT::I32 => i32::MIN as i128,
            IntT::I64 => i64::MIN as i128,
            _ => 0,
        }
    }
    pub fn max(self) -> i128 {
        match self {
            IntT::I8 => i8::MAX as i128,
            IntT::I16 => i16::MAX as i128,
            IntT::I32 => i32::MAX as i128,
            IntT::I64 => i64::MAX as i128,
            IntT::U8 => u8::MAX as i128,
            IntT::U16 => u16::MAX as i128,
            IntT::U32 => u32::MAX as i128,
            IntT::U64 => u64::MAX as i128,
        }
    }
    pub fn data_type(self) -> DataType {
        match self {
            IntT::I8 => DataType::Int8,
            IntT::I16 => DataType::Int16,
            IntT::I32 => DataType::Int32,
            IntT::I64 => DataType::Int64,
            IntT::U8 => DataType::UInt8,
            IntT::U16 => DataType::UInt16,
            IntT::U32 => DataType::UInt32,
            IntT::U64 => DataType::UInt64,
        }
    }
    /// An array of this type from values known to fit.
    pub fn array(self, v: &[Option<i128>]) -> ArrayRef {
        macro_rules! arr {
            ($a:ty, $n:ty) => {
                Arc::new(<$a>::from(v.iter().map(|x| x.map(|x| x as $n)).collect::<Vec<_>>())) as ArrayRef
            };
        }
        match self {
            IntT::I8 => arr!(Int8Array, i8),
            IntT::I16 => arr!(Int16Array, i16),
            IntT::I32 => arr!(Int32Array, i32),
            IntT::I64 => arr!(Int64Array, i64),
            IntT::U8 => arr!(UInt8Array, u8),
            IntT::U16 => arr!(UInt16Array, u16),
            IntT::U32 => arr!(UInt32Array, u32),
            IntT::U64 => arr!(UInt64Array, u64),
        }
    }
    /// The raw little-endian buffer of these values (wrapping), for arrays built unchecked.
    fn buffer(self, v: &[i128]) -> Buffer {
        match self {
            IntT::I8 => Buffer::from_vec(v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
            IntT::I16 => Buffer::from_vec(v.iter().map(|&x| x as i16).collect::<Vec<_>>()),
            IntT::I32 => Buffer::from_vec(v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
            IntT::I64 => Buffer::from_vec(v.iter().map(|&x| x as i64).collect::<Vec<_>>()),
            IntT::U8 => Buffer::from_vec(v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
            IntT::U16 => Buffer::from_vec(v.iter().map(|&x| x as u16).collect::<Vec<_>>()),
            IntT::U32 => Buffer::from_vec(v.iter().map(|&x| x as u32).collect::<Vec<_>>()),
            IntT::U64 => Buffer::from_vec(v.iter().map(|&x| x as u64).collect::<Vec<_>>()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrT {
    Utf8,
    Large,
    View,
}

/// Plain user id dtypes (a dictionary's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plain {
    Int(IntT),
    Str(StrT),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserT {
    Plain(Plain),
    Dict(IntT, Plain),
    /// A dictionary of dictionaries: never accepted.
    NestedDict,
    Float,
    Bool,
}

/// How user ids of a table are compared (the core's `UserFamily`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Signed,
    Unsigned64,
    Str,
}

impl Plain {
    pub fn family(self) -> Family {
        match self {
            Plain::Int(IntT::U64) => Family::Unsigned64,
            Plain::Int(_) => Family::Signed,
            Plain::Str(_) => Family::Str,
        }
    }
}

impl UserT {
    pub fn family(self) -> Option<Family> {
        match self {
            UserT::Plain(p) | UserT::Dict(_, p) => Some(p.family()),
            // Float ids are integer ids when whole (the cases' floats are 1.5: an error once read).
            UserT::Float => Some(Family::Signed),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsT {
    Ts(TimeUnit, Option<&'static str>),
    Date32,
    Date64,
    /// Not a timestamp: a dtype error.
    Int64,
}

impl TsT {
    pub fn units_per_second(self) -> i64 {
        match self {
            TsT::Ts(TimeUnit::Second, _) => 1,
            TsT::Ts(TimeUnit::Millisecond, _) | TsT::Date64 => 1_000,
            TsT::Ts(TimeUnit::Microsecond, _) => 1_000_000,
            TsT::Ts(TimeUnit::Nanosecond, _) => 1_000_000_000,
            TsT::Date32 | TsT::Int64 => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountT {
    F32,
    F64,
    Int(IntT),
    Dec(i8),
    /// Not a number: a dtype error.
    Bool,
}

/// A user id as the reference sees it: integers by value (every integer dtype), strings by bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i128),
    Str(Vec<u8>),
}

/// An amount as stored: an integer (or a decimal's unscaled value) or a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amt {
    Null,
    Int(i128),
    Float(f64),
}

/// One logical row of a table (what the reference reads).
#[derive(Clone, Debug)]
pub struct Row {
    pub user: Option<Key>,
    /// The raw stored value (date32 widened).
    pub ts: Option<i64>,
    pub amount: Amt,
    pub segment: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct BatchFlags {
    /// The batch's schema differs from the stream's (a renamed column).
    pub schema_mismatch: bool,
    /// A dictionary key out of range at a non-null slot.
    pub bad_dictionary: bool,
    /// String offsets or views of the user column outside their data (visible rows).
    pub bad_offsets: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Orders,
    Signups,
    Activity,
}

/// Column layout problems of a table (each a clean error).
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    pub missing_ts: bool,
    pub duplicate_user: bool,
    pub segment_not_u32: bool,
    pub has_segment: bool,
}

pub struct Table {
    pub role: Role,
    pub user_t: UserT,
    pub ts_t: TsT,
    pub amount_t: Option<AmountT>,
    pub layout: Layout,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: Vec<Vec<Row>>,
    pub flags: Vec<BatchFlags>,
}

pub struct Case {
    pub spec: Spec,
    pub cut: CutOff,
    pub orders: Table,
    pub signups: Option<Table>,
    pub activity: Option<Table>,
    pub orders_reopenable: bool,
    pub orders_in_memory: bool,
}

pub const ZONES: [&str; 6] = ["UTC", "Europe/Berlin", "America/Sao_Paulo", "Pacific/Apia", "Asia/Kolkata", "Etc/UTC"];
const COLUMN_ZONES: [&str; 4] = ["UTC", "Europe/Berlin", "America/Sao_Paulo", "+05:30"];
const STRINGS: [&str; 12] = [
    "", "a", "b", "c", "ab", "é", "日本", "a\0b", "0", "12", "a user id longer than twelve bytes", "a user id longer than twelve bytez",
];

/// Days since 1970-01-01 of 0001-01-01 and 9999-12-31.
pub const MIN_DAY: i64 = -719_162;
pub const MAX_DAY: i64 = 2_932_896;

/// Small helpers over `Unstructured` that never fail: out of data, they return the first choice.
pub struct G<'a, 'b> {
    pub u: &'b mut Unstructured<'a>,
}

impl G<'_, '_> {
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }
    /// True with probability `num / den` (false when out of data).
    pub fn chance(&mut self, num: u8, den: u8) -> bool {
        if self.u.is_empty() {
            return false;
        }
        let x: u8 = self.u.int_in_range(0..=den - 1).unwrap_or(den - 1);
        x < num
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.size(0, xs.len() - 1)]
    }
    pub fn i64(&mut self) -> i64 {
        self.u.arbitrary().unwrap_or(0)
    }
    pub fn i128(&mut self) -> i128 {
        self.u.arbitrary().unwrap_or(0)
    }
    pub fn f64(&mut self) -> f64 {
        self.u.arbitrary().unwrap_or(0.0)
    }
}

fn days_from_civil(y: i16, m: i8, d: i8) -> i64 {
    jiff::civil::date(y, m, d).since(jiff::civil::date(1970, 1, 1)).map(|s| s.get_days() as i64).unwrap_or(0)
}

/// A timestamp value (raw, in the column's unit) of an "interesting" kind.
fn gen_ts(g: &mut G, t: TsT, run_tz: &str) -> i64 {
    let ups = t.units_per_second() as i128;
    let per_day: i128 = match t {
        TsT::Date32 => 1,
        _ => ups * 86_400,
    };
    let sat = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let sat_t = |v: i128| if t == TsT::Date32 { v.clamp(i32::MIN as i128, i32::MAX as i128) as i64 } else { sat(v) };
    let choice = g.size(0, 15);
    match choice {
        // Ordinary: 2023..=2025, at any unit.
        0..=8 => {
            let day = days_from_civil(2023, 1, 1) + g.int(0, 3 * 365);
            if t == TsT::Date32 {
                return day;
            }
            let within = g.int(0, 86_399) as i128;
            let sub = if ups > 1 { g.int(0, (ups - 1).min(i64::MAX as i128) as i64) as i128 } else { 0 };
            sat((day as i128 * 86_400 + within) * ups + sub)
        }
        // A local midnight around a month's start (in the run's zone for instants), ± a little.
        9..=11 => {
            let y = g.int(2022, 2026) as i16;
            let m = g.int(1, 12) as i8;
            let d = g.pick(&[1i8, 1, 1, 2, 28, 29, 30, 31]);
            let date = jiff::civil::date(y, m, 1).checked_add(jiff::Span::new().days(d as i64 - 1)).unwrap_or(jiff::civil::date(y, m, 1));
            let day = date.since(jiff::civil::date(1970, 1, 1)).map(|s| s.get_days() as i64).unwrap_or(0);
            if t == TsT::Date32 {
                return day + g.int(-1, 1);
            }
            let start_s: i128 = match t {
                TsT::Ts(_, Some(_)) => jiff::tz::TimeZone::get(run_tz)
                    .ok()
                    .and_then(|tz| date.to_zoned(tz).ok())
                    .map(|z| z.timestamp().as_second() as i128)
                    .unwrap_or(day as i128 * 86_400),
                _ => day as i128 * 86_400,
            };
            let delta = g.pick(&[0i128, 0, -1, 1, -ups, ups, -3600 * ups, 3600 * ups, -7200 * ups]);
            sat(start_s * ups + delta)
        }
        // The ends of the supported range, ± a little.
        12 | 13 => {
            let edge = if g.chance(1, 2) { MIN_DAY as i128 * per_day } else { (MAX_DAY as i128 + 1) * per_day };
            let delta = g.pick(&[0i128, -1, 1, -per_day, per_day, -2 * per_day, 2 * per_day, -3600 * ups, 3600 * ups, -14 * 3600 * ups]);
            sat_t(edge + delta)
        }
        // Extremes.
        14 => {
            if t == TsT::Date32 {
                g.pick(&[i32::MIN as i64, i32::MAX as i64, i32::MIN as i64 + 1, i32::MAX as i64 - 1, 0, -1])
            } else {
                g.pick(&[i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1, 0, -1])
            }
        }
        // Anything.
        _ => {
            let v = g.i64();
            if t == TsT::Date32 {
                v as i32 as i64
            } else {
                v
            }
        }
    }
}

fn gen_float(g: &mut G) -> f64 {
    const SPECIAL: [f64; 21] = [
        0.0,
        -0.0,
        1.0,
        0.5,
        2.5,
        -2.5,
        0.145,
        0.00005,
        -0.00005,
        0.49999999999999994,
        19.99,
        -19.99,
        1.23456789,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        9.2e14,
        9.223372036854775e14,
        f64::MIN_POSITIVE,
        5e-324,
        4503599627370497.0,
    ];
    match g.size(0, 99) {
        0..=79 => g.int(-500, 10_000) as f64 / 100.0,
        80..=96 => g.pick(&SPECIAL),
        97 => g.pick(&[1e300, f64::MAX, -9.2e18, 1e19, -1e30]),
        // Just below / at / above i64's range at some scale.
        98 => {
            let s = g.int(0, 6) as i32;
            let base = g.pick(&[9.2e18, 9.21e18, 9.223372036854775e18, 9.223372036854776e18, -9.223372036854776e18, 9.3e18]);
            base / 10f64.powi(s)
        }
        _ => g.f64(),
    }
}

fn gen_amount(g: &mut G, t: AmountT) -> Amt {
    if g.chance(1, 14) {
        return Amt::Null;
    }
    match t {
        AmountT::F64 => Amt::Float(gen_float(g)),
        AmountT::F32 => Amt::Float(gen_float(g) as f32 as f64),
        AmountT::Int(it) => {
            let v = match g.size(0, 40) {
                0..=37 => g.int(-5, 200) as i128,
                38 | 39 => g.pick(&[it.min(), it.max(), it.min() + 1, it.max() - 1, i64::MAX as i128, i64::MAX as i128 + 1]),
                _ => g.i128(),
            };
            Amt::Int(v.clamp(it.min(), it.max()))
        }
        // Scales of -19 and below only leave room for zero.
        AmountT::Dec(s) if s <= -19 && !g.chance(1, 20) => Amt::Int(0),
        AmountT::Dec(_) => Amt::Int(match g.size(0, 40) {
            0..=36 => g.int(-500, 100_000) as i128,
            37 => g.pick(&[
                0,
                1,
                -1,
                i64::MAX as i128,
                i64::MIN as i128,
                i64::MAX as i128 + 1,
                i64::MIN as i128 - 1,
                i128::MAX,
                i128::MIN,
                10i128.pow(18),
                -(10i128.pow(20)),
                99_999_999_999_999_999_999_999_999_999_999_999_999,
            ]),
            38 | 39 => g.int(-3, 3) as i128 * 10i128.pow(g.int(0, 37) as u32),
            _ => g.i128(),
        }),
        AmountT::Bool => Amt::Int(g.int(0, 1) as i128),
    }
}

/// A user id value of a plain dtype, from small shared values (so tables and dtypes match) or extremes.
fn gen_plain_user(g: &mut G, p: Plain) -> Key {
    match p {
        Plain::Int(it) => Key::Int(match g.size(0, 9) {
            0..=7 => g.int(0, 12) as i128,
            8 => g.pick(&[it.min(), it.max(), it.min() + 1, it.max() - 1, (-1i128).max(it.min()), 0x9e37_79b9_7f4a_7c15i128.min(it.max())]),
            _ => (g.i128()).clamp(it.min(), it.max()),
        }),
        Plain::Str(_) => Key::Str(STRINGS[g.size(0, STRINGS.len() - 1)].as_bytes().to_vec()),
    }
}

fn plain_array(p: Plain, v: &[Option<Key>]) -> ArrayRef {
    match p {
        Plain::Int(it) => it.array(&v.iter().map(|k| k.as_ref().map(|k| if let Key::Int(i) = k { *i } else { 0 })).collect::<Vec<_>>()),
        Plain::Str(st) => {
            let s: Vec<Option<String>> =
                v.iter().map(|k| k.as_ref().map(|k| if let Key::Str(b) = k { String::from_utf8(b.clone()).unwrap() } else { String::new() })).collect();
            match st {
                StrT::Utf8 => Arc::new(StringArray::from(s)),
                StrT::Large => Arc::new(LargeStringArray::from(s)),
                StrT::View => Arc::new(StringViewArray::from(s.iter().map(|x| x.as_deref()).collect::<Vec<_>>())),
            }
        }
    }
}

fn plain_type(p: Plain) -> DataType {
    match p {
        Plain::Int(it) => it.data_type(),
        Plain::Str(StrT::Utf8) => DataType::Utf8,
        Plain::Str(StrT::Large) => DataType::LargeUtf8,
        Plain::Str(StrT::View) => DataType::Utf8View,
    }
}

pub fn user_type(t: UserT) -> DataType {
    match t {
        UserT::Plain(p) => plain_type(p),
        UserT::Dict(k, p) => DataType::Dictionary(Box::new(k.data_type()), Box::new(plain_type(p))),
        UserT::NestedDict => DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Int64))),
        ),
        UserT::Float => DataType::Float64,
        UserT::Bool => DataType::Boolean,
    }
}

fn ts_type(t: TsT) -> DataType {
    match t {
        TsT::Ts(unit, tz) => DataType::Timestamp(unit, tz.map(Arc::from)),
        TsT::Date32 => DataType::Date32,
        TsT::Date64 => DataType::Date64,
        TsT::Int64 => DataType::Int64,
    }
}

fn amount_type(t: AmountT) -> DataType {
    match t {
        AmountT::F32 => DataType::Float32,
        AmountT::F64 => DataType::Float64,
        AmountT::Int(it) => it.data_type(),
        AmountT::Dec(s) => DataType::Decimal128(38, s),
        AmountT::Bool => DataType::Boolean,
    }
}

/// The user column of a batch over `all` rows (padding included); `keys` for dictionaries.
struct UserCol {
    values: Vec<Option<Key>>,
    /// Dictionary: the values and each row's key (`None` = null key), possibly out of range.
    dict: Option<(Vec<Option<Key>>, Vec<Option<i128>>)>,
}

fn gen_user_col(g: &mut G, t: UserT, n: usize, visible: std::ops::Range<usize>, flags: &mut BatchFlags, bulk: Option<&[u64]>) -> UserCol {
    let null = |g: &mut G| g.chance(1, 16);
    match t {
        UserT::Plain(p) => {
            let values = (0..n)
                .map(|i| match bulk {
                    Some(ids) => Some(match p {
                        Plain::Int(it) => Key::Int((ids[i] as i128).clamp(it.min(), it.max())),
                        Plain::Str(_) => Key::Str(format!("user {}", ids[i]).into_bytes()),
                    }),
                    None => (!null(g)).then(|| gen_plain_user(g, p)),
                })
                .collect();
            UserCol { values, dict: None }
        }
        UserT::Dict(kt, p) => {
            let nv = g.size(0, 6);
            let dvals: Vec<Option<Key>> = (0..nv).map(|_| (!g.chance(1, 6)).then(|| gen_plain_user(g, p))).collect();
            let oor = g.chance(1, 12);
            let mut keys = Vec::with_capacity(n);
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                let in_view = visible.contains(&i);
                if nv == 0 && oor && in_view && g.chance(1, 3) {
                    // A non-null key into an empty dictionary.
                    flags.bad_dictionary = true;
                    keys.push(Some(0));
                    values.push(None);
                    continue;
                }
                if nv == 0 || null(g) {
                    // A null key; its stored index may be anything.
                    keys.push(None);
                    values.push(None);
                    continue;
                }
                if oor && in_view && g.chance(1, 3) {
                    let k = g.pick(&[nv as i128, nv as i128 + 1, 127, 255, -1, -128, kt.max()]);
                    let stored = k.clamp(kt.min(), kt.max());
                    if stored < 0 || stored >= nv as i128 {
                        flags.bad_dictionary = true;
                        keys.push(Some(stored));
                        values.push(None);
                        continue;
                    }
                }
                let k = g.size(0, nv - 1);
                keys.push(Some(k as i128));
                values.push(dvals[k].clone());
            }
            UserCol { values, dict: Some((dvals, keys)) }
        }
        UserT::NestedDict => UserCol { values: (0..n).map(|_| Some(Key::Int(g.int(0, 3) as i128))).collect(), dict: None },
        UserT::Float | UserT::Bool => UserCol { values: (0..n).map(|_| (!null(g)).then(|| Key::Int(g.int(0, 1) as i128))).collect(), dict: None },
    }
}

fn user_array(t: UserT, col: &UserCol, g: &mut G) -> ArrayRef {
    match t {
        UserT::Plain(p) => plain_array(p, &col.values),
        UserT::Dict(kt, p) => {
            let (dvals, keys) = col.dict.as_ref().unwrap();
            let values = plain_array(p, dvals);
            let nulls = NullBuffer::from(keys.iter().map(|k| k.is_some()).collect::<Vec<_>>());
            // Null slots hold junk indices now and then (they must be ignored).
            let raw: Vec<i128> = keys.iter().map(|k| k.unwrap_or_else(|| if g.chance(1, 4) { 99 } else { 0 })).collect();
            let data = ArrayData::builder(user_type(t))
                .len(keys.len())
                .add_buffer(kt.buffer(&raw))
                .nulls(Some(nulls))
                .add_child_data(values.to_data());
            // SAFETY (of sorts): keys out of range are the point; the core must check them.
            make_array(unsafe { data.build_unchecked() })
        }
        UserT::NestedDict => {
            let inner = DictionaryArray::<Int8Type>::try_new(Int8Array::from(vec![0i8, 1, 0, 1]), Arc::new(Int64Array::from(vec![5i64, 6]))).unwrap();
            let keys = Int32Array::from(col.values.iter().map(|k| if let Some(Key::Int(i)) = k { *i as i32 } else { 0 }).collect::<Vec<_>>());
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(inner)).unwrap())
        }
        UserT::Float => Arc::new(Float64Array::from(col.values.iter().map(|k| k.as_ref().map(|_| 1.5)).collect::<Vec<_>>())),
        UserT::Bool => Arc::new(BooleanArray::from(col.values.iter().map(|k| k.as_ref().map(|_| true)).collect::<Vec<_>>())),
    }
}

/// The same string column with an offset (utf8, large_utf8) or a view (utf8view) of a visible row
/// pointing outside the data, built unchecked; None for other dtypes.
fn corrupt_strings(arr: &ArrayRef, g: &mut G, visible: std::ops::Range<usize>, values: &[Option<Key>]) -> Option<ArrayRef> {
    let data = arr.to_data();
    let k = g.size(visible.start, visible.end - 1);
    let builder = |buffers: Vec<Buffer>| {
        let b = ArrayData::builder(data.data_type().clone()).len(data.len()).buffers(buffers).nulls(data.nulls().cloned());
        // SAFETY (of sorts): invalid on purpose, as an unchecked C-interface import can be.
        make_array(unsafe { b.build_unchecked() })
    };
    match data.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            let large = data.data_type() == &DataType::LargeUtf8;
            let width = if large { 8 } else { 4 };
            let mut offsets: Vec<i64> = data.buffers()[0]
                .as_slice()
                .chunks_exact(width)
                .map(|c| if large { i64::from_le_bytes(c.try_into().unwrap()) } else { i32::from_le_bytes(c.try_into().unwrap()) as i64 })
                .collect();
            let data_len = data.buffers()[1].len() as i64;
            match g.size(0, 2) {
                // Past the end of the data.
                0 => offsets[k + 1] = data_len + g.int(1, 100),
                // Decreasing (or negative at the start of the slice).
                1 => offsets[k + 1] = offsets[k] - g.int(1, 3),
                _ => offsets[k] = -g.int(1, 5),
            }
            let buf = if large { Buffer::from_vec(offsets) } else { Buffer::from_vec(offsets.iter().map(|&o| o as i32).collect::<Vec<_>>()) };
            Some(builder(vec![buf, data.buffers()[1].clone()]))
        }
        DataType::Utf8View => {
            // Only a non-null row's view: a null slot's view means nothing.
            values[k].as_ref()?;
            let mut views: Vec<u128> = data.buffers()[0].typed_data::<u128>().to_vec();
            let len = g.int(13, 40) as u128;
            let (buffer, offset) = match g.size(0, 1) {
                0 => (data.buffers().len() as u128 + g.int(0, 3) as u128, 0u128),
                _ => (0, 1u128 << 30),
            };
            views[k] = len | ((views[k] >> 32) & 0xffff_ffff) << 32 | buffer << 64 | offset << 96;
            let mut buffers = vec![Buffer::from_vec(views)];
            buffers.extend(data.buffers()[1..].iter().cloned());
            Some(builder(buffers))
        }
        _ => None,
    }
}

fn ts_array(t: TsT, v: &[Option<i64>]) -> ArrayRef {
    match t {
        TsT::Ts(unit, tz) => {
            let tz = tz.map(Arc::from);
            match unit {
                TimeUnit::Second => Arc::new(PrimitiveArray::<TimestampSecondType>::from(v.to_vec()).with_timezone_opt(tz)),
                TimeUnit::Millisecond => Arc::new(PrimitiveArray::<TimestampMillisecondType>::from(v.to_vec()).with_timezone_opt(tz)),
                TimeUnit::Microsecond => Arc::new(PrimitiveArray::<TimestampMicrosecondType>::from(v.to_vec()).with_timezone_opt(tz)),
                TimeUnit::Nanosecond => Arc::new(PrimitiveArray::<TimestampNanosecondType>::from(v.to_vec()).with_timezone_opt(tz)),
            }
        }
        TsT::Date32 => Arc::new(Date32Array::from(v.iter().map(|x| x.map(|x| x as i32)).collect::<Vec<_>>())),
        TsT::Date64 => Arc::new(Date64Array::from(v.to_vec())),
        TsT::Int64 => Arc::new(Int64Array::from(v.to_vec())),
    }
}

fn amount_array(t: AmountT, v: &[Amt]) -> ArrayRef {
    let ints = || v.iter().map(|a| if let Amt::Int(i) = a { Some(*i) } else { None }).collect::<Vec<_>>();
    let floats = || v.iter().map(|a| if let Amt::Float(f) = a { Some(*f) } else { None }).collect::<Vec<_>>();
    match t {
        AmountT::F64 => Arc::new(Float64Array::from(floats())),
        AmountT::F32 => Arc::new(Float32Array::from(floats().into_iter().map(|x| x.map(|x| x as f32)).collect::<Vec<_>>())),
        AmountT::Int(it) => it.array(&ints()),
        AmountT::Dec(s) => Arc::new(Decimal128Array::from(ints()).with_precision_and_scale(38, s).unwrap()),
        AmountT::Bool => Arc::new(BooleanArray::from(ints().into_iter().map(|x| x.map(|x| x != 0)).collect::<Vec<_>>())),
    }
}

/// Cheap deterministic numbers (SplitMix64): the bulk batches, and the examples' random inputs.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct TableParams {
    pub role: Role,
    pub user_t: UserT,
    pub ts_t: TsT,
    pub amount_t: Option<AmountT>,
    pub layout: Layout,
}

pub const USER: &str = "user";
pub const TS: &str = "ts";
pub const SIGNUP_TS: &str = "signup_ts";
pub const ACTIVITY_TS: &str = "seen_at";
pub const AMOUNT: &str = "amount";
pub const SEGMENT: &str = "seg";

fn gen_table(g: &mut G, p: TableParams, run_tz: &str) -> Table {
    let ts_name = match p.role {
        Role::Orders => TS,
        Role::Signups => SIGNUP_TS,
        Role::Activity => ACTIVITY_TS,
    };
    let mut fields = vec![Field::new(USER, user_type(p.user_t), true)];
    fields.push(Field::new(if p.layout.missing_ts { "not_the_ts" } else { ts_name }, ts_type(p.ts_t), true));
    if let Some(a) = p.amount_t {
        fields.push(Field::new(AMOUNT, amount_type(a), true));
    }
    if p.layout.has_segment {
        fields.push(Field::new(SEGMENT, if p.layout.segment_not_u32 { DataType::Int32 } else { DataType::UInt32 }, true));
    }
    // An extra column nobody reads, now and then; a second user column makes the name ambiguous.
    let extra = g.chance(1, 8);
    if extra {
        fields.push(Field::new("extra", DataType::Int64, true));
    }
    if p.layout.duplicate_user {
        fields.push(Field::new(USER, DataType::Int64, true));
    }
    // Column order varies: rotate.
    let rot = g.size(0, fields.len() - 1);
    let order: Vec<usize> = (0..fields.len()).map(|i| (i + rot) % fields.len()).collect();
    let schema: SchemaRef = Arc::new(Schema::new(order.iter().map(|&i| fields[i].clone()).collect::<Vec<_>>()));

    let n_batches = match g.size(0, 9) {
        0 => 0,
        1..=5 => 1,
        6 | 7 => 2,
        _ => g.size(3, 5),
    };
    let mut t = Table {
        role: p.role,
        user_t: p.user_t,
        ts_t: p.ts_t,
        amount_t: p.amount_t,
        layout: p.layout,
        schema: schema.clone(),
        batches: vec![],
        rows: vec![],
        flags: vec![],
    };
    for _ in 0..n_batches {
        let mut flags = BatchFlags::default();
        // Bulk: thousands of rows from a seed (table growth, blocks of 4,096 rows, the trail).
        let bulk = g.chance(1, 40);
        let len = if bulk {
            g.size(2_000, 9_000)
        } else {
            match g.size(0, 9) {
                0 => 0,
                1..=6 => g.size(1, 12),
                _ => g.size(13, 60),
            }
        };
        let mut seed = g.i64() as u64;
        let n_users = g.size(1, 6_000) as u64;
        let bulk_ids: Vec<u64> = (0..len + 8).map(|_| splitmix(&mut seed) % n_users).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        let mut rows: Vec<Row> = (0..len).map(|_| Row { user: None, ts: None, amount: Amt::Null, segment: None }).collect();
        for (i, field) in fields.iter().enumerate() {
            let (front, back) = (g.size(0, 3), g.size(0, 2));
            let n = front + len + back;
            let visible = front..front + len;
            let col: ArrayRef = match i {
                0 => {
                    let uc = gen_user_col(g, p.user_t, n, visible.clone(), &mut flags, bulk.then_some(&bulk_ids[..n.min(bulk_ids.len())]).filter(|b| b.len() == n));
                    for (r, k) in rows.iter_mut().zip(&uc.values[visible.clone()]) {
                        r.user = k.clone();
                    }
                    let arr = user_array(p.user_t, &uc, g);
                    if len > 0 && g.chance(1, 60) {
                        match corrupt_strings(&arr, g, visible.clone(), &uc.values) {
                            Some(bad) => {
                                flags.bad_offsets = true;
                                bad
                            }
                            None => arr,
                        }
                    } else {
                        arr
                    }
                }
                1 => {
                    let v: Vec<Option<i64>> = (0..n)
                        .map(|_| {
                            if bulk {
                                let day = days_from_civil(2023, 1, 1) + (splitmix(&mut seed) % 1000) as i64;
                                let v = match p.ts_t {
                                    TsT::Date32 => day,
                                    t => day * 86_400 * t.units_per_second() + (splitmix(&mut seed) % 86_400) as i64 * t.units_per_second(),
                                };
                                (splitmix(&mut seed) % 50 != 0).then_some(v)
                            } else {
                                (!g.chance(1, 16)).then(|| gen_ts(g, p.ts_t, run_tz))
                            }
                        })
                        .collect();
                    for (r, x) in rows.iter_mut().zip(&v[visible.clone()]) {
                        r.ts = *x;
                    }
                    ts_array(p.ts_t, &v)
                }
                _ if field.name() == AMOUNT => {
                    let at = p.amount_t.unwrap();
                    let v: Vec<Amt> = (0..n)
                        .map(|_| {
                            if bulk {
                                let x = (splitmix(&mut seed) % 20_000) as i64 - 2_000;
                                match at {
                                    AmountT::F64 => Amt::Float(x as f64 / 100.0),
                                    AmountT::F32 => Amt::Float((x as f64 / 100.0) as f32 as f64),
                                    AmountT::Int(it) => Amt::Int((x as i128).clamp(it.min(), it.max())),
                                    _ => Amt::Int(x as i128),
                                }
                            } else {
                                gen_amount(g, at)
                            }
                        })
                        .collect();
                    for (r, x) in rows.iter_mut().zip(&v[visible.clone()]) {
                        r.amount = *x;
                    }
                    amount_array(at, &v)
                }
                _ if field.name() == SEGMENT => {
                    let v: Vec<Option<u32>> =
                        (0..n).map(|_| (!g.chance(1, 10)).then(|| g.pick(&[0u32, 1, 1, 2, 3, u32::MAX]))).collect();
                    for (r, x) in rows.iter_mut().zip(&v[visible.clone()]) {
                        r.segment = *x;
                    }
                    if p.layout.segment_not_u32 {
                        Arc::new(Int32Array::from(v.iter().map(|x| x.map(|x| x as i32)).collect::<Vec<_>>()))
                    } else {
                        Arc::new(UInt32Array::from(v))
                    }
                }
                _ => Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            };
            columns.push(col.slice(front, len));
        }
        let ordered: Vec<ArrayRef> = order.iter().map(|&i| columns[i].clone()).collect();
        let mut batch_schema = schema.clone();
        if g.chance(1, 100) {
            // A batch that does not match the stream's schema.
            flags.schema_mismatch = true;
            let mut fs: Vec<Field> = batch_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fs[0] = fs[0].clone().with_name(format!("{}_renamed", fs[0].name()));
            batch_schema = Arc::new(Schema::new(fs));
        }
        let batch = RecordBatch::try_new_with_options(batch_schema, ordered, &RecordBatchOptions::new().with_row_count(Some(len)))
            .expect("a well-formed batch");
        t.batches.push(batch);
        t.rows.push(rows);
        t.flags.push(flags);
    }
    t
}

fn gen_user_t(g: &mut G, like: Option<UserT>) -> UserT {
    let plain = |g: &mut G, fam: Option<Family>| -> Plain {
        match fam {
            Some(Family::Signed) => Plain::Int(g.pick(&INTS[..7])),
            Some(Family::Unsigned64) => Plain::Int(IntT::U64),
            Some(Family::Str) => Plain::Str(g.pick(&[StrT::Utf8, StrT::Large, StrT::View])),
            None => {
                if g.chance(1, 2) {
                    Plain::Int(g.pick(&INTS))
                } else {
                    Plain::Str(g.pick(&[StrT::Utf8, StrT::Large, StrT::View]))
                }
            }
        }
    };
    // Other tables mostly keep the orders' family, so that the run gets past the dtype check.
    let fam = like.and_then(|t| t.family()).filter(|_| !g.chance(1, 30));
    match g.size(0, 79) {
        0..=49 => UserT::Plain(plain(g, fam)),
        50..=76 => UserT::Dict(g.pick(&INTS), plain(g, fam)),
        77 => UserT::NestedDict,
        78 => UserT::Float,
        _ if like.is_some() => UserT::Plain(plain(g, fam)),
        _ => UserT::Bool,
    }
}

fn gen_ts_t(g: &mut G) -> TsT {
    match g.size(0, 63) {
        0..=47 => {
            let unit = g.pick(&[TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond]);
            let tz = if g.chance(1, 2) { Some(g.pick(&COLUMN_ZONES)) } else { None };
            TsT::Ts(unit, tz)
        }
        48..=55 => TsT::Date32,
        56..=62 => TsT::Date64,
        _ => TsT::Int64,
    }
}

fn gen_amount_t(g: &mut G) -> AmountT {
    match g.size(0, 63) {
        0..=19 => AmountT::F64,
        20..=29 => AmountT::F32,
        30..=45 => AmountT::Int(g.pick(&INTS)),
        46..=62 => AmountT::Dec(g.pick(&[-128i8, -40, -39, -38, -19, -18, -3, -1, 0, 0, 1, 2, 2, 4, 18, 19, 38])),
        _ => AmountT::Bool,
    }
}

fn gen_layout(g: &mut G, has_segment: bool) -> Layout {
    Layout {
        missing_ts: g.chance(1, 150),
        duplicate_user: g.chance(1, 150),
        segment_not_u32: has_segment && g.chance(1, 100),
        has_segment,
    }
}

fn gen_point(g: &mut G, tz: &str) -> TimePoint {
    let micros = match g.size(0, 7) {
        0..=2 => {
            let day = days_from_civil(2023, 1, 1) + g.int(0, 3 * 365);
            day * 86_400_000_000 + g.int(0, 86_399) * 1_000_000
        }
        // Exactly a local midnight (a period's start, often), ± 1 µs.
        3..=5 => {
            let y = g.int(2022, 2026) as i16;
            let m = g.int(1, 12) as i8;
            let d = g.pick(&[1i8, 1, 1, 2, 15]);
            let date = jiff::civil::date(y, m, d);
            let delta = g.pick(&[0i64, 0, 0, -1, 1]);
            if g.chance(1, 2) {
                let local = date.since(jiff::civil::date(1970, 1, 1)).map(|s| s.get_days() as i64).unwrap_or(0) * 86_400_000_000;
                return TimePoint::LocalMicros(local + delta);
            }
            let instant = jiff::tz::TimeZone::get(tz)
                .ok()
                .and_then(|z| date.to_zoned(z).ok())
                .map(|z| z.timestamp().as_microsecond())
                .unwrap_or(0);
            return TimePoint::InstantMicros(instant + delta);
        }
        6 => {
            let edge = if g.chance(1, 2) { MIN_DAY as i128 * 86_400_000_000 } else { (MAX_DAY as i128 + 1) * 86_400_000_000 };
            let delta = g.pick(&[0i128, -1, 1, -86_400_000_000, 86_400_000_000, -40 * 86_400_000_000, 40 * 86_400_000_000, 3_600_000_000]);
            // Half-hour steps around the edge: the local midnights of the first and last days in
            // zones east and west of UTC.
            let hours = if g.chance(1, 2) { g.int(-28, 28) as i128 * 1_800_000_000 } else { 0 };
            (edge + delta + hours) as i64
        }
        _ => {
            let any = g.i64();
            g.pick(&[i64::MIN, i64::MAX, 0, any])
        }
    };
    if g.chance(1, 2) {
        TimePoint::InstantMicros(micros)
    } else {
        TimePoint::LocalMicros(micros)
    }
}

impl Case {
    pub fn generate(data: &[u8]) -> Case {
        let mut u = Unstructured::new(data);
        let g = &mut G { u: &mut u };
        let tz = if g.chance(1, 60) { "Mars/Olympus" } else { g.pick(&ZONES) };
        let period = if g.chance(1, 60) { "fortnight" } else { g.pick(&["month", "month", "week", "quarter", "day"]) };
        let horizon = match g.size(0, 30) {
            0 => g.pick(&[0u32, 1001, 1000, 64, 65, 21, 22]),
            _ => g.size(1, 40) as u32,
        };
        let with_signups = g.chance(1, 3);
        let with_activity = g.chance(1, 3);
        let segment = g.chance(1, 3);
        let min_amount = if g.chance(3, 4) {
            (0, 0)
        } else {
            g.pick(&[(1i128, 0i32), (57, -2), (-5, 0), (5, -1), (10i128.pow(20), 0), (i128::MAX, 5), (i128::MIN, -3), (3, -45), (-3, -45), (1, -38), (-1, -39), (25, 0)])
        };
        // Drawn here, in the order the corpus was made with.
        let cut = CutOff { as_of: g.chance(1, 4).then(|| gen_point(g, tz)), since: g.chance(1, 4).then(|| gen_point(g, tz)) };
        let spec = Spec {
            user: USER.into(),
            ts: TS.into(),
            amount: AMOUNT.into(),
            segment: segment.then(|| SEGMENT.to_string()),
            signup_ts: SIGNUP_TS.into(),
            activity_ts: ACTIVITY_TS.into(),
            signup_user: USER.into(),
            activity_user: USER.into(),
            ts_format: None,
            cost: None,
            horizon,
            period: period.into(),
            tz: tz.into(),
            min_amount,
            float_scale: if g.chance(1, 40) { g.pick(&[18u8, 19, 10]) } else { g.size(0, 6) as u8 },
            strict: g.chance(1, 8),
            // Mostly one worker: more threads than free cores make the spinning barrier slow.
            threads: match g.size(0, 99) {
                0 => 0,
                1..=64 => 1,
                65..=91 => 2,
                _ => 3,
            },
            chunk_rows: match g.size(0, 100) {
                0 => 0,
                1..=4 => 100_000,
                _ => g.size(1, 300),
            },
            // Small budgets make the workers share one cohort grid instead of private copies.
            cells_budget: if g.chance(1, 4) { g.size(0, 20_000) } else { ltrcore_core::engine::DEFAULT_CELLS_BUDGET },
        };
        let orders_user = gen_user_t(g, None);
        let orders = TableParams {
            role: Role::Orders,
            user_t: orders_user,
            ts_t: gen_ts_t(g),
            amount_t: Some(gen_amount_t(g)),
            layout: gen_layout(g, segment && !with_signups),
        };
        let signups = with_signups.then(|| TableParams {
            role: Role::Signups,
            user_t: gen_user_t(g, Some(orders_user)),
            ts_t: gen_ts_t(g),
            amount_t: None,
            layout: gen_layout(g, segment),
        });
        let activity = with_activity.then(|| TableParams {
            role: Role::Activity,
            user_t: gen_user_t(g, Some(orders_user)),
            ts_t: gen_ts_t(g),
            amount_t: None,
            layout: gen_layout(g, false),
        });
        let orders_reopenable = !g.chance(1, 3);
        let orders_in_memory = g.chance(1, 2);
        let signups = signups.map(|p| gen_table(g, p, tz));
        let orders = gen_table(g, orders, tz);
        let activity = activity.map(|p| gen_table(g, p, tz));
        Case { spec, cut, orders, signups, activity, orders_reopenable, orders_in_memory }
    }
}
