//! The Arrow layout of the users and of the waiting rows (the partial has its own,
//! `Partial::to_batch`), and the checks a state read back must pass.

use std::sync::Arc;

use rayon::prelude::*;

use super::walk::Grid;
use super::{hash_key, missing, stride, table_name, text_id, Key, Keys, State, UserFacts, Waiting, ACTIVITY, KINDS, ORDERS, PARTS, PART_SHIFT};
use crate::columns::UserFamily;
use crate::error::{CoreError, Result};
use crate::kernel::{UserBits, MULTI, PAID};
use crate::partial::Partial;

fn arrow_err(e: arrow_schema::ArrowError) -> CoreError {
    CoreError::Internal(e.to_string())
}

fn invalid(what: String) -> CoreError {
    CoreError::InvalidArgument(format!("not a valid ltrcore state: {what}"))
}

pub fn family_name(family: Option<UserFamily>) -> &'static str {
    match family {
        None => "none",
        Some(UserFamily::Signed) => "signed",
        Some(UserFamily::Unsigned64) => "unsigned64",
        Some(UserFamily::Str) => "text",
    }
}

pub fn family_of_name(name: &str) -> Result<Option<UserFamily>> {
    Ok(match name {
        "none" => None,
        "signed" => Some(UserFamily::Signed),
        "unsigned64" => Some(UserFamily::Unsigned64),
        "text" => Some(UserFamily::Str),
        other => return Err(invalid(format!("unknown user id family {other:?}"))),
    })
}

fn key_array(keys: &Keys, family: Option<UserFamily>) -> arrow_array::ArrayRef {
    use arrow_array::{Int64Array, LargeStringArray, UInt64Array};
    use std::sync::Arc;
    match (keys, family) {
        (Keys::Ints(v), Some(UserFamily::Unsigned64)) => Arc::new(UInt64Array::from(v.clone())),
        #[allow(clippy::cast_possible_wrap)] // signed ids kept as their bit patterns
        (Keys::Ints(v), _) => Arc::new(Int64Array::from(v.iter().map(|&k| k as i64).collect::<Vec<_>>())),
        (Keys::Text { .. }, _) => Arc::new(LargeStringArray::from_iter_values((0..keys.len()).map(|i| String::from_utf8_lossy(keys.text(i))))),
    }
}

fn key_field(family: Option<UserFamily>) -> arrow_schema::DataType {
    use arrow_schema::DataType;
    match family {
        Some(UserFamily::Unsigned64) => DataType::UInt64,
        Some(UserFamily::Str) => DataType::LargeUtf8,
        _ => DataType::Int64,
    }
}

/// Names of the users' bitmap columns, in bitset order.
pub const AGE_COLUMNS: [&str; KINDS] = ["paid_ages", "paid_twice_ages", "active_ages"];

impl State {
    /// One row per user with a cohort: `user`, `segment` (code), `cohort` (absolute period) and one
    /// bitmap per bitset (`paid_ages`, `paid_twice_ages`, `active_ages`): bit `a % 8` of byte
    /// `a / 8` is age `a`, as in Arrow's own validity bitmaps.
    pub fn users_batch(&self) -> Result<arrow_array::RecordBatch> {
        use arrow_array::{ArrayRef, FixedSizeBinaryArray, Int32Array, UInt32Array};
        use arrow_schema::{DataType, Field, Schema};
        use std::sync::Arc;
        let h = self.partial.horizon as usize;
        let nb = h.div_ceil(8);
        let stride = self.stride();
        let n = self.user_count();
        let mut keys = self.users.first().map(|u| Keys::empty_like(&u.keys)).unwrap_or_default();
        keys.reserve(n);
        let (mut segment, mut cohort) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut maps: [Vec<u8>; KINDS] = std::array::from_fn(|_| vec![0u8; n * nb]);
        let mut k = 0;
        for part in &self.users {
            keys.extend_range(&part.keys, 0..part.ids.len());
            segment.extend_from_slice(&part.segment);
            cohort.extend_from_slice(&part.cohort);
            for i in 0..part.ids.len() {
                let words = &part.bits[i * stride..(i + 1) * stride];
                for (kind, map) in maps.iter_mut().enumerate() {
                    let out = &mut map[k * nb..(k + 1) * nb];
                    if stride == 1 {
                        let x = (words[0] >> (kind * h)) & (u64::MAX >> (64 - h));
                        out.copy_from_slice(&x.to_le_bytes()[..nb]);
                    } else {
                        UserBits::new(words, h).for_each_age(kind, |a| out[a / 8] |= 1 << (a % 8));
                    }
                }
                k += 1;
            }
        }
        let mut columns: Vec<ArrayRef> = vec![key_array(&keys, self.family), Arc::new(UInt32Array::from(segment)), Arc::new(Int32Array::from(cohort))];
        let mut fields = vec![
            Field::new("user", key_field(self.family), false),
            Field::new("segment", DataType::UInt32, false),
            Field::new("cohort", DataType::Int32, false),
        ];
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)] // nb ≤ 125
        let width = nb as i32;
        for (map, name) in maps.into_iter().zip(AGE_COLUMNS) {
            columns.push(Arc::new(FixedSizeBinaryArray::try_new(width, map.into(), None).map_err(arrow_err)?));
            fields.push(Field::new(name, DataType::FixedSizeBinary(width), false));
        }
        arrow_array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err)
    }

    /// One row per waiting row: `user`, `table` (`orders` or `activity`), `period`, `amount` and
    /// `profit`.
    pub fn waiting_batch(&self) -> Result<arrow_array::RecordBatch> {
        use arrow_array::{ArrayRef, Decimal128Array, Int32Array, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        use std::sync::Arc;
        let w = &self.joined_waiting();
        let scale = i8::try_from(self.partial.scale).unwrap_or(i8::MAX);
        let amount = Decimal128Array::from(w.amount.iter().map(|&a| i128::from(a)).collect::<Vec<_>>())
            .with_precision_and_scale(38, scale)
            .map_err(arrow_err)?;
        let profit = Decimal128Array::from(w.profit.iter().map(|&a| i128::from(a)).collect::<Vec<_>>())
            .with_precision_and_scale(38, scale)
            .map_err(arrow_err)?;
        let columns: Vec<ArrayRef> = vec![
            key_array(&w.keys, self.family),
            Arc::new(StringArray::from_iter_values(w.table.iter().map(|&t| table_name(t)))),
            Arc::new(Int32Array::from(w.period.clone())),
            Arc::new(amount),
            Arc::new(profit),
        ];
        let schema = Schema::new(vec![
            Field::new("user", key_field(self.family), false),
            Field::new("table", DataType::Utf8, false),
            Field::new("period", DataType::Int32, false),
            Field::new("amount", DataType::Decimal128(38, scale), false),
            Field::new("profit", DataType::Decimal128(38, scale), false),
        ]);
        arrow_array::RecordBatch::try_new(Arc::new(schema), columns).map_err(arrow_err)
    }

    /// A state from its parts, checked: every column as `users_batch` and `waiting_batch` write it,
    /// no user twice, bits only within the horizon, and the partial's per-user counts and waiting
    /// reasons exactly those of the users and waiting rows given. Rows need not be sorted.
    pub fn from_parts(partial: Partial, watermark: Option<i32>, family: Option<UserFamily>, users: &[arrow_array::RecordBatch], waiting: &[arrow_array::RecordBatch]) -> Result<State> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Decimal128Type, Int32Type, UInt32Type};
        use arrow_schema::DataType;
        let h = partial.horizon as usize;
        let nb = h.div_ceil(8);
        let stride = stride(partial.horizon);
        let fam = family.unwrap_or(UserFamily::Signed);
        let column = |b: &arrow_array::RecordBatch, name: &str, want: &DataType| -> Result<arrow_array::ArrayRef> {
            let col = b.column_by_name(name).ok_or_else(|| invalid(format!("no column {name:?}")))?;
            if col.data_type() != want {
                return Err(invalid(format!("column {name:?} is {} where {want} was expected", col.data_type())));
            }
            if col.null_count() > 0 {
                return Err(invalid(format!("column {name:?} has nulls")));
            }
            Ok(col.clone())
        };
        let read_keys = |b: &arrow_array::RecordBatch, into: &mut Keys, ids: &mut Vec<u64>| -> Result<()> {
            let col = column(b, "user", &key_field(family))?;
            match fam {
                UserFamily::Str => {
                    let a = col.as_string::<i64>();
                    for v in a.iter().flatten() {
                        ids.push(text_id(v.as_bytes()));
                        into.push_key(Key::Text(v.as_bytes()));
                    }
                }
                UserFamily::Unsigned64 | UserFamily::Signed => {
                    let Keys::Ints(keys) = into else { return Err(invalid("integer ids in a text state".into())) };
                    let first = keys.len();
                    if fam == UserFamily::Unsigned64 {
                        keys.extend_from_slice(col.as_primitive::<arrow_array::types::UInt64Type>().values());
                    } else {
                        #[allow(clippy::cast_sign_loss)] // the bit patterns of the signed ids
                        keys.extend(col.as_primitive::<arrow_array::types::Int64Type>().values().iter().map(|&v| v as u64));
                    }
                    ids.extend(keys[first..].iter().map(|&v| hash_key(v)));
                }
            }
            Ok(())
        };
        if family.is_none() && (users.iter().any(|b| b.num_rows() > 0) || waiting.iter().any(|b| b.num_rows() > 0)) {
            return Err(invalid("it has users but no user id family".into()));
        }
        let reading = std::time::Instant::now();
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        let width = DataType::FixedSizeBinary(nb as i32);
        // Appends rows `lo..hi` of a batch (whose ids are `ids`) to `u`.
        let append = |b: &arrow_array::RecordBatch, lo: usize, hi: usize, ids: &[u64], u: &mut UserFacts| -> Result<()> {
            let keys = column(b, "user", &key_field(family))?;
            match &mut u.keys {
                Keys::Ints(v) if fam == UserFamily::Unsigned64 => v.extend_from_slice(&keys.as_primitive::<arrow_array::types::UInt64Type>().values()[lo..hi]),
                #[allow(clippy::cast_sign_loss)] // the bit patterns of the signed ids
                Keys::Ints(v) => v.extend(keys.as_primitive::<arrow_array::types::Int64Type>().values()[lo..hi].iter().map(|&k| k as u64)),
                text => {
                    let a = keys.as_string::<i64>();
                    (lo..hi).for_each(|k| text.push_key(Key::Text(a.value(k).as_bytes())));
                }
            }
            u.ids.extend_from_slice(ids);
            u.segment.extend_from_slice(&column(b, "segment", &DataType::UInt32)?.as_primitive::<UInt32Type>().values()[lo..hi]);
            u.cohort.extend_from_slice(&column(b, "cohort", &DataType::Int32)?.as_primitive::<Int32Type>().values()[lo..hi]);
            let first = u.bits.len();
            u.bits.resize(first + (hi - lo) * stride, 0);
            for (kind, name) in AGE_COLUMNS.iter().enumerate() {
                let m = column(b, name, &width)?;
                let m = m.as_fixed_size_binary();
                for k in lo..hi {
                    let words = &mut u.bits[first + (k - lo) * stride..first + (k - lo + 1) * stride];
                    if stride == 1 {
                        // All three bitsets in one word: a bitmap of at most 8 bytes, read as one number.
                        let x = m.value(k).iter().enumerate().fold(0u64, |x, (i, &byte)| x | u64::from(byte) << (8 * i));
                        if h < 64 && x >> h != 0 {
                            return Err(invalid(format!("column {name:?} has an age beyond the horizon")));
                        }
                        words[0] |= x << (kind * h);
                        continue;
                    }
                    for (byte_index, &byte) in m.value(k).iter().enumerate() {
                        for bit in (0..8).filter(|bit| byte >> bit & 1 == 1) {
                            let a = byte_index * 8 + bit;
                            if a >= h {
                                return Err(invalid(format!("column {name:?} has an age beyond the horizon")));
                            }
                            let b = kind * h + a;
                            words[b >> 6] |= 1 << (b & 63);
                        }
                    }
                }
            }
            Ok(())
        };
        let ids_of = |b: &arrow_array::RecordBatch| -> Result<Vec<u64>> {
            let mut keys = Keys::for_family(fam);
            let mut ids = Vec::with_capacity(b.num_rows());
            read_keys(b, &mut keys, &mut ids)?;
            Ok(ids)
        };
        // The rows come sorted by id, as `save` writes them: each goes straight to its partition.
        // Rows in another order (a file rewritten by another tool) go through one sort.
        let mut counts = [0usize; PARTS];
        let mut sorted = true;
        let mut previous = None;
        for b in users {
            for id in ids_of(b)? {
                sorted &= previous.is_none_or(|p| p < id);
                previous = Some(id);
                counts[(id >> PART_SHIFT) as usize] += 1;
            }
        }
        let users_parts: Vec<Arc<UserFacts>> = if sorted {
            let mut parts: Vec<UserFacts> = counts
                .iter()
                .map(|&n| {
                    let mut u = UserFacts { keys: Keys::for_family(fam), ..UserFacts::default() };
                    u.reserve(n, stride);
                    u
                })
                .collect();
            for b in users {
                let ids = ids_of(b)?;
                let mut lo = 0;
                while lo < ids.len() {
                    let p = (ids[lo] >> PART_SHIFT) as usize;
                    let hi = lo + ids[lo..].partition_point(|&id| (id >> PART_SHIFT) as usize == p);
                    append(b, lo, hi, &ids[lo..hi], &mut parts[p])?;
                    lo = hi;
                }
            }
            parts.into_iter().map(Arc::new).collect()
        } else {
            let mut u = UserFacts { keys: Keys::for_family(fam), ..UserFacts::default() };
            for b in users {
                let ids = ids_of(b)?;
                append(b, 0, b.num_rows(), &ids, &mut u)?;
            }
            split_users(sort_users(u, stride), stride)
        };
        crate::engine::trace("state: users read", reading);
        let mut w = Waiting { keys: Keys::for_family(fam), ..Waiting::default() };
        let scale = i8::try_from(partial.scale).unwrap_or(i8::MAX);
        for b in waiting {
            read_keys(b, &mut w.keys, &mut w.ids)?;
            for t in column(b, "table", &DataType::Utf8)?.as_string::<i32>().iter().flatten() {
                w.table.push(match t {
                    "orders" => ORDERS,
                    "activity" => ACTIVITY,
                    other => return Err(invalid(format!("a waiting row of table {other:?}"))),
                });
            }
            w.period.extend_from_slice(column(b, "period", &DataType::Int32)?.as_primitive::<Int32Type>().values());
            for &a in column(b, "amount", &DataType::Decimal128(38, scale))?.as_primitive::<Decimal128Type>().values() {
                w.amount.push(i64::try_from(a).map_err(|_| invalid("a waiting amount beyond 64-bit fixed point".into()))?);
            }
            for &a in column(b, "profit", &DataType::Decimal128(38, scale))?.as_primitive::<Decimal128Type>().values() {
                w.profit.push(i64::try_from(a).map_err(|_| invalid("a waiting profit beyond 64-bit fixed point".into()))?);
            }
        }
        let state = State { partial, watermark, family, users: users_parts, waiting: split_waiting(sort_waiting(w)) };
        let checking = std::time::Instant::now();
        state.check()?;
        crate::engine::trace("state: checks", checking);
        Ok(state)
    }

    fn joined_waiting(&self) -> Waiting {
        let mut all = Waiting { keys: self.waiting.first().map(|w| Keys::empty_like(&w.keys)).unwrap_or_default(), ..Waiting::default() };
        for part in &self.waiting {
            all.extend_range(part, 0..part.len());
        }
        all
    }

    /// The partial's per-user numbers must be exactly those of the users and waiting rows.
    fn check(&self) -> Result<()> {
        let h = self.partial.horizon as usize;
        let stride = self.stride();
        // What the users and waiting rows make, from nothing, must be what the partial holds.
        let template = Partial { scale: self.partial.scale, ..Partial::empty(self.partial.horizon, self.partial.kind) };
        let recounts = self
            .users
            .par_iter()
            .enumerate()
            .map(|(p, part)| {
                let mut recount = Grid::new(template.clone());
                if part.ids.windows(2).any(|w| w[0] >= w[1]) || part.ids.iter().any(|&id| (id >> PART_SHIFT) as usize != p) {
                    return Err(invalid("a user appears twice, or out of order".into()));
                }
                for k in 0..part.ids.len() {
                    let bits = &part.bits[k * stride..(k + 1) * stride];
                    let user = UserBits::new(bits, h);
                    let mut twice_without_paid = false;
                    user.for_each_age(MULTI, |a| twice_without_paid |= user.count_below(PAID, a + 1) == user.count_below(PAID, a));
                    if twice_without_paid {
                        return Err(invalid("a user paid twice at an age without paying at it".into()));
                    }
                    let g = recount.group((part.segment[k], part.cohort[k]));
                    recount.partial.members[g] += 1;
                    recount.add_counts(g, bits);
                }
                Ok(recount.partial)
            })
            .collect::<Result<Vec<_>>>()?;
        let made = Partial::merge(recounts)?;
        let held = &self.partial;
        // The per-user numbers of the groups with members (a group without members must hold none).
        let keep = |p: &Partial| -> Vec<((u32, i32), u64, Vec<u64>)> {
            let h = p.horizon as usize;
            p.groups
                .iter()
                .enumerate()
                .filter(|(g, _)| p.members[*g] > 0)
                .map(|(g, &key)| {
                    let c = &p.cells;
                    let cells = (g * h..(g + 1) * h).flat_map(|i| [c.payers[i], c.retained[i], c.active[i], c.first_paid[i], c.first_repeat[i]]).collect();
                    (key, p.members[g], cells)
                })
                .collect()
        };
        let (made_groups, held_groups) = (keep(&made), keep(held));
        if made_groups.iter().map(|g| (g.0, g.1)).ne(held_groups.iter().map(|g| (g.0, g.1))) {
            return Err(invalid("its users do not add up to its cohort sizes".into()));
        }
        if made_groups != held_groups {
            return Err(invalid("its users do not add up to its per-cell counts".into()));
        }
        if held.groups.iter().enumerate().any(|(g, _)| held.members[g] == 0 && {
            let c = &held.cells;
            (g * h..(g + 1) * h).any(|i| c.payers[i] + c.retained[i] + c.active[i] + c.first_paid[i] + c.first_repeat[i] > 0)
        }) {
            return Err(invalid("it counts payers in a cohort without members".into()));
        }
        let mut previous = None;
        for (part, users) in self.waiting.iter().zip(&self.users) {
            let mut i = 0;
            for k in 0..part.len() {
                let id = part.ids[k];
                if previous.is_some_and(|p| p > id) {
                    return Err(invalid("its waiting rows are out of order".into()));
                }
                previous = Some(id);
                i += users.ids[i..].partition_point(|&x| x < id);
                if i < users.ids.len() && users.ids[i] == id {
                    return Err(invalid("a user with a cohort also has waiting rows".into()));
                }
            }
        }
        for table in [ORDERS, ACTIVITY] {
            let (mut rows, mut amount) = (0u64, 0i128);
            for part in &self.waiting {
                for k in 0..part.len() {
                    if part.table[k] == table {
                        rows += 1;
                        amount += i128::from(part.amount[k]);
                    }
                }
            }
            let totals = if table == ORDERS { Some(&self.partial.orders) } else { self.partial.activity.as_ref() };
            let reason = missing(self.partial.kind, table);
            let (n, a) = totals.map_or((0, 0), |t| (t.tally.rows(reason), t.tally.amount(reason)));
            if (n, a) != (rows, amount) {
                return Err(invalid(format!("its {} waiting rows do not match its {} count of {}", table_name(table), reason.name(), table_name(table))));
            }
        }
        Ok(())
    }
}

fn split_users(u: UserFacts, stride: usize) -> Vec<Arc<UserFacts>> {
    let mut parts = Vec::with_capacity(PARTS);
    let mut start = 0;
    for p in 0..PARTS {
        let end = start + u.ids[start..].partition_point(|&id| ((id >> PART_SHIFT) as usize) <= p);
        let mut part = UserFacts { keys: Keys::empty_like(&u.keys), ..UserFacts::default() };
        part.extend_range(&u, start..end, stride);
        parts.push(Arc::new(part));
        start = end;
    }
    parts
}

fn split_waiting(w: Waiting) -> Vec<Arc<Waiting>> {
    let mut parts = Vec::with_capacity(PARTS);
    let mut start = 0;
    for p in 0..PARTS {
        let end = start + w.ids[start..].partition_point(|&id| ((id >> PART_SHIFT) as usize) <= p);
        let mut part = Waiting { keys: Keys::empty_like(&w.keys), ..Waiting::default() };
        part.extend_range(&w, start..end);
        parts.push(Arc::new(part));
        start = end;
    }
    parts
}

fn sort_users(u: UserFacts, stride: usize) -> UserFacts {
    if u.ids.windows(2).all(|p| p[0] <= p[1]) {
        return u;
    }
    let mut order: Vec<usize> = (0..u.ids.len()).collect();
    order.sort_by_key(|&k| u.ids[k]);
    let mut out = UserFacts { keys: match &u.keys { Keys::Ints(_) => Keys::Ints(Vec::new()), Keys::Text { .. } => Keys::Text { ends: Vec::new(), bytes: Vec::new() } }, ..UserFacts::default() };
    for k in order {
        out.extend_range(&u, k..k + 1, stride);
    }
    out
}

fn sort_waiting(w: Waiting) -> Waiting {
    if w.ids.windows(2).all(|p| p[0] <= p[1]) {
        return w;
    }
    let mut order: Vec<usize> = (0..w.ids.len()).collect();
    order.sort_by_key(|&k| w.ids[k]);
    let mut out = Waiting { keys: match &w.keys { Keys::Ints(_) => Keys::Ints(Vec::new()), Keys::Text { .. } => Keys::Text { ends: Vec::new(), bytes: Vec::new() } }, ..Waiting::default() };
    for k in order {
        out.extend_range(&w, k..k + 1);
    }
    out
}

