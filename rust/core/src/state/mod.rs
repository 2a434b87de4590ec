//! The monthly state: what later months need to know about every user, so that a month is added
//! without reading history again, with the same numbers a full run over all the data gives.
//!
//! * Users with a cohort: id, cohort period, segment code, and three age bitsets (paid, paid twice
//!   in one age, active), sorted by id.
//! * Rows still waiting for their user: orders and activity of users with no cohort yet
//!   (`never_paid`, `unknown_user`). When such a user signs up or first pays, the rows are
//!   attributed as a full run would have attributed them.
//! * The aggregate `Partial`, kept in step, and the watermark: the last period ingested.
//!
//! Users and waiting rows are split into `PARTS` partitions by the top bits of their id (ids are
//! hashes, so the partitions are even). An update decodes the new rows in parallel blocks, each
//! ordered by partition (`read`); then every partition, in parallel, gathers its rows, sorts them by
//! id in cache and walks them beside its users (`walk`): users without new rows are copied,
//! partitions without new rows are shared, not copied. Each walk gives the numbers to add to the
//! partial and to take out of it (a member's counts that a new row moves, waiting rows that leave
//! their reason). Nothing is changed in place: an update returns a new state or an error, so a
//! refused update leaves the old one as it was.

// Text ids' keys index the interner's strings, and row indices the decoded rows: both are below
// `usize::MAX` by construction.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::calendar::{Calendar, PeriodKind};
use crate::columns::{ColumnNames, Interner, Texts, UserFamily};
use crate::engine::{trace, watched, BatchSource, Hooks, Paying, Spec, Stream};
use crate::error::{CoreError, Result};
use crate::kernel::hash_key;
use crate::partial::{CohortKind, Partial, TableTotals};
use crate::reconcile::Reason;

mod layout;
mod read;
mod walk;

pub use layout::{family_name, family_of_name, AGE_COLUMNS};
use read::{gather_sorted, order_by_part, Reader};
use walk::{walk, Context, CONFLICTS_NAMED};

/// Version of the state file's layout (written and checked by the Python layer); a state of
/// another version is refused.
pub const STATE_FORMAT_VERSION: u32 = 3;

/// Bitsets per user: paid, paid twice, active (`kernel::PAID`, `MULTI`, `ACTIVE`).
const KINDS: usize = 3;

/// Partitions of the users by the top bits of their id.
pub const PARTS: usize = 64;
const PART_SHIFT: u32 = 58;

fn part_of(id: u64) -> usize {
    (id >> PART_SHIFT) as usize
}

/// Tables, as the tags of rows and of waiting rows.
pub const SIGNUPS: u8 = 0;
pub const ORDERS: u8 = 1;
pub const ACTIVITY: u8 = 2;

pub fn table_name(table: u8) -> &'static str {
    match table {
        SIGNUPS => "signups",
        ORDERS => "orders",
        _ => "activity",
    }
}

/// What an update does with rows at or before the watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Late {
    /// Refuse the whole update.
    Refuse,
    /// Apply them where they change no user's cohort; refuse the update otherwise.
    Apply,
}

/// User ids as they came: integers (as 64-bit patterns; `UserFamily` says how to read them) or text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    Ints(Vec<u64>),
    Text { ends: Vec<usize>, bytes: Vec<u8> },
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Ints(Vec::new())
    }
}

impl Keys {
    fn for_family(family: UserFamily) -> Self {
        match family {
            UserFamily::Str => Keys::Text { ends: Vec::new(), bytes: Vec::new() },
            _ => Keys::Ints(Vec::new()),
        }
    }

    /// Empty keys of the same kind as `other`.
    fn empty_like(other: &Keys) -> Self {
        match other {
            Keys::Ints(_) => Keys::Ints(Vec::new()),
            Keys::Text { .. } => Keys::Text { ends: Vec::new(), bytes: Vec::new() },
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Keys::Ints(v) => v.len(),
            Keys::Text { ends, .. } => ends.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn text(&self, i: usize) -> &[u8] {
        match self {
            Keys::Ints(_) => &[],
            Keys::Text { ends, bytes } => &bytes[if i == 0 { 0 } else { ends[i - 1] }..ends[i]],
        }
    }

    fn reserve(&mut self, n: usize) {
        match self {
            Keys::Ints(v) => v.reserve(n),
            Keys::Text { ends, .. } => ends.reserve(n),
        }
    }

    fn push_key(&mut self, key: Key<'_>) {
        match (self, key) {
            (Keys::Ints(v), Key::Int(k)) => v.push(k),
            (Keys::Text { ends, bytes }, Key::Text(t)) => {
                bytes.extend_from_slice(t);
                ends.push(bytes.len());
            }
            _ => unreachable!("keys of one family"),
        }
    }

    fn key(&self, i: usize) -> Key<'_> {
        match self {
            Keys::Ints(v) => Key::Int(v[i]),
            Keys::Text { .. } => Key::Text(self.text(i)),
        }
    }

    fn extend_range(&mut self, src: &Keys, range: std::ops::Range<usize>) {
        match (self, src) {
            (Keys::Ints(v), Keys::Ints(s)) => v.extend_from_slice(&s[range]),
            (Keys::Text { ends, bytes }, Keys::Text { .. }) => {
                for i in range {
                    bytes.extend_from_slice(src.text(i));
                    ends.push(bytes.len());
                }
            }
            _ => unreachable!("keys of one family"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key<'a> {
    Int(u64),
    Text(&'a [u8]),
}

/// A text id's 64-bit id: a fold of its 8-byte words through `hash_key`. Defined here, not taken
/// from a hasher crate, so a saved state reads the same with any build. Every step is a bijection
/// of the running value, so two ids that differ in one word always differ; ids that collide
/// otherwise are refused (see `collision`).
pub fn text_id(bytes: &[u8]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = hash_key(h.rotate_left(29) ^ u64::from_le_bytes(word));
    }
    h
}

/// The integer key whose `hash_key` is `id` (murmur3's finalizer undone step by step).
pub fn unhash_key(id: u64) -> u64 {
    let mut h = id;
    h ^= h >> 33;
    h = h.wrapping_mul(0x9cb4_b2f8_1293_37db);
    h ^= h >> 33;
    h = h.wrapping_mul(0x4f74_430c_22a5_4005);
    h ^ (h >> 33)
}

/// The users with a cohort of one partition, sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFacts {
    pub ids: Vec<u64>,
    pub keys: Keys,
    pub cohort: Vec<i32>,
    pub segment: Vec<u32>,
    /// `stride` words per user: bitset `kind` at bits `kind × horizon ..`.
    pub bits: Vec<u64>,
}

impl UserFacts {
    fn reserve(&mut self, n: usize, stride: usize) {
        self.ids.reserve(n);
        self.keys.reserve(n);
        self.cohort.reserve(n);
        self.segment.reserve(n);
        self.bits.reserve(n * stride);
    }

    fn extend_range(&mut self, src: &UserFacts, range: std::ops::Range<usize>, stride: usize) {
        if range.len() <= 4 && stride == 1 {
            // Short runs between users with new rows (the usual case): element by element beats
            // five calls to copy a few bytes each.
            for k in range {
                self.push(src.ids[k], src.keys.key(k), src.cohort[k], src.segment[k], &src.bits[k..k + 1]);
            }
            return;
        }
        self.ids.extend_from_slice(&src.ids[range.clone()]);
        self.keys.extend_range(&src.keys, range.clone());
        self.cohort.extend_from_slice(&src.cohort[range.clone()]);
        self.segment.extend_from_slice(&src.segment[range.clone()]);
        self.bits.extend_from_slice(&src.bits[range.start * stride..range.end * stride]);
    }

    fn push(&mut self, id: u64, key: Key<'_>, cohort: i32, segment: u32, bits: &[u64]) {
        self.ids.push(id);
        self.keys.push_key(key);
        self.cohort.push(cohort);
        self.segment.push(segment);
        self.bits.extend_from_slice(bits);
    }
}

/// The rows of one partition's users with no cohort yet (orders and activity), sorted by user id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    pub ids: Vec<u64>,
    pub keys: Keys,
    /// `ORDERS` or `ACTIVITY`.
    pub table: Vec<u8>,
    pub period: Vec<i32>,
    /// Fixed point at the state's scale (0 for activity).
    pub amount: Vec<i64>,
    /// Amount − cost, at the state's scale (0 for activity, and without a cost column).
    pub profit: Vec<i64>,
}

impl Waiting {
    fn extend_range(&mut self, src: &Waiting, range: std::ops::Range<usize>) {
        self.ids.extend_from_slice(&src.ids[range.clone()]);
        self.keys.extend_range(&src.keys, range.clone());
        self.table.extend_from_slice(&src.table[range.clone()]);
        self.period.extend_from_slice(&src.period[range.clone()]);
        self.amount.extend_from_slice(&src.amount[range.clone()]);
        self.profit.extend_from_slice(&src.profit[range]);
    }

    fn push(&mut self, id: u64, key: Key<'_>, table: u8, period: i32, amount: i64, profit: i64) {
        self.ids.push(id);
        self.keys.push_key(key);
        self.table.push(table);
        self.period.push(period);
        self.amount.push(amount);
        self.profit.push(profit);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub partial: Partial,
    /// The last period ingested; rows at or before it are late.
    pub watermark: Option<i32>,
    /// How user ids are read; `None` until some rows were ingested.
    pub family: Option<UserFamily>,
    /// `PARTS` partitions each (shared with earlier states where an update left them alone).
    pub users: Vec<Arc<UserFacts>>,
    pub waiting: Vec<Arc<Waiting>>,
}

/// The tables of one update; any may be missing.
pub struct StateInputs<'a> {
    pub orders: Option<&'a mut dyn BatchSource>,
    pub signups: Option<&'a mut dyn BatchSource>,
    pub activity: Option<&'a mut dyn BatchSource>,
    /// With segments: each code's rank in the order of the segment values (for ties; see
    /// `engine::Inputs::segment_ranks`).
    pub segment_ranks: Option<&'a mut dyn FnMut() -> Result<Vec<u32>>>,
}

/// The first late row seen, for the error message.
pub(crate) struct LateRow {
    pub(crate) table: u8,
    pub(crate) row: u64,
    pub(crate) key: u64,
    pub(crate) period: i32,
}

/// A state's words of bits per user.
pub fn stride(horizon: u32) -> usize {
    (KINDS * horizon as usize).div_ceil(64)
}

fn inconsistent(what: &str) -> CoreError {
    CoreError::Internal(format!("the state is inconsistent: {what}"))
}

/// The first day of a period as `YYYY-MM-DD`, for messages.
pub fn period_label(kind: PeriodKind, period: i32) -> String {
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = kind.first_day(period) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

impl State {
    pub fn empty(horizon: u32, kind: CohortKind) -> Self {
        State {
            partial: Partial::empty(horizon, kind),
            watermark: None,
            family: None,
            users: (0..PARTS).map(|_| Arc::default()).collect(),
            waiting: (0..PARTS).map(|_| Arc::default()).collect(),
        }
    }

    pub fn stride(&self) -> usize {
        stride(self.partial.horizon)
    }

    pub fn user_count(&self) -> usize {
        self.users.iter().map(|u| u.ids.len()).sum()
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.iter().map(|w| w.len()).sum()
    }

    /// The state with the new rows added: everything a full run over the old and new rows gives.
    /// `through` sets the new watermark (default: the last period of any new row); rows after it
    /// are refused. The state itself is never changed.
    pub fn update(&self, spec: &Spec, inputs: StateInputs<'_>, late: Late, through: Option<i32>, hooks: &dyn Hooks) -> Result<State> {
        let period_kind = PeriodKind::parse(&spec.period)?;
        let cal = Calendar::new(period_kind, &spec.tz)?;
        let kind = self.partial.kind;
        let started = Instant::now();
        let StateInputs { orders, signups, activity, segment_ranks } = inputs;
        if kind == CohortKind::FirstPurchase && signups.is_some() {
            return Err(CoreError::InvalidArgument("signups were given to a state of first-purchase cohorts".into()));
        }
        let defining = if kind == CohortKind::Signup { SIGNUPS } else { ORDERS };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(spec.threads)
            .thread_name(|i| format!("ltrcore-state-{i}"))
            .build()
            .map_err(|e| CoreError::Internal(format!("thread pool: {e}")))?;
        let mut reader = Reader {
            pool: &pool,
            spec,
            cal: &cal,
            hooks,
            interner: Interner::default(),
            family: self.family.map(|f| (f, "the state".to_string())),
            watermark: self.watermark,
            late_rows: 0,
            first_late: None,
            max_period: None,
            max_orders: None,
            chunks: Vec::new(),
            rows: 0,
        };
        let mut base = self.partial.clone();
        // The first orders set the amounts' scale; later orders at a larger scale raise it.
        let fresh = self.family.is_none() && base.orders.rows == 0;
        let mut waiting_factor = 1i64;
        for (table, source) in [(SIGNUPS, signups), (ORDERS, orders), (ACTIVITY, activity)] {
            let Some(source) = source else { continue };
            let stream = Stream::open(table_name(table), source)?;
            let ts = match table {
                SIGNUPS => &spec.signup_ts,
                ORDERS => &spec.ts,
                _ => &spec.activity_ts,
            };
            let user = match table {
                SIGNUPS => &spec.signup_user,
                ORDERS => &spec.user,
                _ => &spec.activity_user,
            };
            let names = ColumnNames {
                table: table_name(table),
                user,
                ts,
                amount: (table == ORDERS).then_some(spec.amount.as_str()),
                segment: if table == defining { spec.segment.as_deref() } else { None },
                ts_format: spec.ts_format.as_deref(),
                cost: if table == ORDERS { spec.cost.as_deref() } else { None },
            };
            let set = reader.columns(&stream, &names)?;
            if table == ORDERS && (fresh || set.scale > base.scale) {
                waiting_factor = pow10(set.scale.saturating_sub(base.scale))?;
                base = if fresh {
                    Partial { scale: set.scale, ..base }
                } else {
                    let mut at = Partial::empty(base.horizon, kind);
                    at.scale = set.scale;
                    Partial::merge(vec![base, at])?
                };
            }
            let factor = pow10(base.scale.saturating_sub(set.scale))?;
            let totals = match table {
                SIGNUPS => base.signups.get_or_insert_with(TableTotals::default),
                ORDERS => &mut base.orders,
                _ => base.activity.get_or_insert_with(TableTotals::default),
            };
            reader.read(stream, &set, table, table == defining, factor, totals)?;
        }
        if let Some(w) = through {
            if let Some(max) = reader.max_period.filter(|&m| m > w) {
                return Err(CoreError::InvalidArgument(format!(
                    "a row falls in the period starting {}, after through (the period starting {})",
                    period_label(period_kind, max),
                    period_label(period_kind, w)
                )));
            }
        }
        if reader.late_rows > 0 && late == Late::Refuse {
            return Err(CoreError::LateRows(reader.late_message(period_kind)));
        }
        let ranks = match (spec.segment.is_some(), segment_ranks) {
            (true, Some(f)) => f()?,
            _ => Vec::new(),
        };
        let family = reader.family().unwrap_or(UserFamily::Signed);
        let text_ids = family == UserFamily::Str;
        let texts = reader.interner.texts();
        let mut chunks = std::mem::take(&mut reader.chunks);
        // Text ids: each text's id, and the text of each id (two texts with one id are refused).
        let mut text_of: hashbrown::HashMap<u64, &[u8], foldhash::fast::FixedState> = hashbrown::HashMap::default();
        if text_ids {
            let ids: Vec<u64> = pool.install(|| texts.list().par_iter().map(|t| text_id(t)).collect());
            text_of.reserve(ids.len());
            for (&id, &text) in ids.iter().zip(texts.list()) {
                if let Some(other) = text_of.insert(id, text) {
                    return Err(collision(other, text));
                }
            }
            pool.install(|| {
                chunks.par_iter_mut().for_each_init(Vec::new, |ordered, (c, parts)| {
                    c.iter_mut().for_each(|r| r.id = ids[texts.index(r.id)]);
                    *parts = order_by_part(c, ordered);
                    std::mem::swap(c, ordered);
                });
            });
        }
        let total = reader.rows as u64;
        trace("state: read", started);
        hooks.tick("state: users", 0, false)?;
        let walking = Instant::now();

        // The old partitions, with keys of the family's kind and amounts at the new scale.
        let (users, waiting) = if self.family.is_none() {
            let fresh_users: Vec<Arc<UserFacts>> = (0..PARTS).map(|_| Arc::new(UserFacts { keys: Keys::for_family(family), ..UserFacts::default() })).collect();
            let fresh_waiting: Vec<Arc<Waiting>> = (0..PARTS).map(|_| Arc::new(Waiting { keys: Keys::for_family(family), ..Waiting::default() })).collect();
            (fresh_users, fresh_waiting)
        } else if waiting_factor != 1 {
            let rescaled = self
                .waiting
                .iter()
                .map(|w| {
                    let mut w = (**w).clone();
                    for a in w.amount.iter_mut().chain(w.profit.iter_mut()) {
                        *a = a.checked_mul(waiting_factor).ok_or_else(|| too_large("a waiting amount"))?;
                    }
                    Ok(Arc::new(w))
                })
                .collect::<Result<Vec<_>>>()?;
            (self.users.clone(), rescaled)
        } else {
            (self.users.clone(), self.waiting.clone())
        };
        let ctx = Context {
            kind,
            horizon: base.horizon,
            scale: base.scale,
            stride: self.stride(),
            tracks_segments: spec.segment.is_some(),
            ranks: &ranks,
            paying: Paying::new(spec.min_amount, base.scale),
            text_of: &text_of,
            text_ids,
        };
        // Each partition gathers its rows from every chunk, sorts them by id in cache, and walks;
        // the calling thread meanwhile reports progress and polls for Ctrl-C.
        let outs = watched(&pool, hooks, "state: users", |stop| {
            (0..PARTS)
                .into_par_iter()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(rows, scratch): &mut (Vec<read::Rec>, Vec<read::Rec>), p| {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return Err(CoreError::Internal("stopped".into())); // the tick's error is returned instead
                        }
                        gather_sorted(&chunks, p, rows, scratch);
                        walk(&ctx, &users[p], &waiting[p], rows)
                    },
                )
                .collect::<Result<Vec<_>>>()
        })??;
        drop(chunks);
        trace("state: walk", walking);
        let conflict_count: u64 = outs.iter().map(|o| o.conflict_count).sum();
        if conflict_count > 0 {
            let named: Vec<String> = outs.iter().flat_map(|o| o.conflicts.iter().cloned()).take(CONFLICTS_NAMED).collect();
            return Err(CoreError::LateRows(format!(
                "{conflict_count} user(s) have late rows that would change their cohort: {}{}. Nothing was changed; \
                 only a new build of the state can move a user's cohort",
                named.join("; "),
                if conflict_count > named.len() as u64 { "; …" } else { "" }
            )));
        }
        let mut parts = Vec::with_capacity(PARTS + 1);
        parts.push(base);
        let mut minus = Vec::with_capacity(PARTS);
        let (mut new_users, mut new_waiting) = (Vec::with_capacity(PARTS), Vec::with_capacity(PARTS));
        for out in outs {
            parts.push(out.plus);
            minus.push(out.minus);
            new_users.push(out.users);
            new_waiting.push(out.waiting);
        }
        let mut partial = Partial::merge(parts)?;
        for m in &minus {
            partial.subtract(m).map_err(|_| inconsistent("a count below zero"))?;
        }
        partial.max_period = partial.max_period.max(reader.max_orders);
        let watermark = match through {
            Some(w) => Some(self.watermark.map_or(w, |old| old.max(w))),
            None => self.watermark.max(reader.max_period),
        };
        hooks.tick("state: users", total, true)?;
        trace("state: update", started);
        Ok(State { partial, watermark, family: reader.family(), users: new_users, waiting: new_waiting })
    }

    /// The same state with every segment code `c` replaced by `map[c]` (a common dictionary).
    pub fn recode(self, map: &[u32]) -> Result<State> {
        let mut out = self;
        for part in &mut out.users {
            let part = Arc::make_mut(part);
            for s in &mut part.segment {
                *s = *map.get(*s as usize).ok_or_else(|| CoreError::InvalidArgument(format!("segment code {s} has no value")))?;
            }
        }
        out.partial = out.partial.recode(map)?;
        Ok(out)
    }
}

fn pow10(exp: u8) -> Result<i64> {
    10i64.checked_pow(u32::from(exp)).ok_or_else(|| too_large("rescaling"))
}

fn too_large(what: &str) -> CoreError {
    CoreError::InvalidArgument(format!("{what} does not fit 64-bit fixed point at the new amounts' scale"))
}

fn collision(a: &[u8], b: &[u8]) -> CoreError {
    CoreError::InvalidArgument(format!(
        "user ids {:?} and {:?} share a 64-bit id in the state; such ids cannot be kept apart by this version",
        String::from_utf8_lossy(a),
        String::from_utf8_lossy(b)
    ))
}

fn show_key(family: Option<UserFamily>, key: u64, texts: &Texts<'_>) -> String {
    match family {
        Some(UserFamily::Str) => format!("{:?}", String::from_utf8_lossy(texts.get(key).unwrap_or(&[]))),
        Some(UserFamily::Unsigned64) => key.to_string(),
        #[allow(clippy::cast_possible_wrap)] // a signed id kept as its bit pattern
        _ => (key as i64).to_string(),
    }
}

/// The reason a row of a user without a cohort is set aside under.
fn missing(kind: CohortKind, table: u8) -> Reason {
    if kind == CohortKind::FirstPurchase && table == ORDERS {
        Reason::NeverPaid
    } else {
        Reason::UnknownUser
    }
}

fn describe(key: Key<'_>) -> String {
    match key {
        Key::Int(k) => format!("{k}"),
        Key::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN_EMPTY: u64 = 0x243f_6a88_85a3_08d3;
    const PIN_USER_1: u64 = 0xed23_a4af_7307_f7de;

    #[test]
    fn unhash_undoes_hash_key() {
        for key in [0u64, 1, 42, u64::MAX, 1 << 63, 0x9e37_79b9_7f4a_7c15] {
            assert_eq!(unhash_key(hash_key(key)), key);
        }
    }

    #[test]
    fn text_ids_are_stable() {
        // Pinned: a saved state's ids must not change from build to build.
        assert_eq!(text_id(b""), PIN_EMPTY);
        assert_eq!(text_id(b"user-1"), PIN_USER_1);
        assert_ne!(text_id(b"a"), text_id(b"a\0"));
        assert_ne!(text_id(b"user-1"), text_id(b"user-2"));
    }

    #[test]
    fn period_labels_are_first_days() {
        assert_eq!(period_label(PeriodKind::Month, 0), "1970-01-01");
        assert_eq!(period_label(PeriodKind::Month, 24 * 12 + 13), "1995-02-01");
        assert_eq!(period_label(PeriodKind::Day, -1), "1969-12-31");
    }
}
