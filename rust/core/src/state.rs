//! The monthly state: what later months need to know about every user, so that a month is added
//! without reading history again, with the same numbers a full run over all the data gives.
//!
//! * Users with a cohort: id, cohort period, segment code, and three age bitsets (paid, paid twice
//!   in one age, active), kept sorted by id.
//! * Rows still waiting for their user: orders and activity of users with no cohort yet
//!   (`never_paid`, `unknown_user`). When such a user signs up or first pays, the rows are
//!   attributed as a full run would have attributed them.
//! * The aggregate `Partial`, kept in step, and the watermark: the last period ingested.
//!
//! An update decodes the new rows, sorts them by user, and walks them beside the sorted users and
//! waiting rows: users without new rows are copied as they are, the others are updated, and their
//! per-user counts (payers, actives, first paying and first repeat ages) are taken out of the
//! partial and put back from the new bitsets. Nothing is changed in place: an update returns a new
//! state or an error, so a refused update leaves the old one as it was.

// Text ids' keys index the interner's strings, and row indices the decoded rows: both are below
// `usize::MAX` by construction.
#![allow(clippy::cast_possible_truncation)]

use rayon::prelude::*;

use crate::calendar::{Calendar, PeriodKind};
use crate::columns::{status, BatchView, ColumnNames, ColumnSet, Decoded, Interner, UserFamily, Want};
use crate::engine::{bad_row_error, status_reason, BatchSource, Hooks, Paying, Spec, Stream};
use crate::error::{CoreError, Result};
use crate::kernel::{hash_key, UserBits, ACTIVE, MULTI, PAID};
use crate::partial::{CohortKind, Partial, PartialCells, TableTotals};
use crate::reconcile::Reason;

/// Version of the state's layout; a state of another version is refused.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Bitsets per user: paid, paid twice, active (`kernel::PAID`, `MULTI`, `ACTIVE`).
const KINDS: usize = 3;

/// Tables, as the tags of sorted rows and of waiting rows.
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
    fn empty_like(family: UserFamily) -> Self {
        match family {
            UserFamily::Str => Keys::Text { ends: Vec::new(), bytes: Vec::new() },
            _ => Keys::Ints(Vec::new()),
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
/// otherwise are caught (see `State::update`).
pub fn text_id(bytes: &[u8]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = hash_key(h.rotate_left(29) ^ u64::from_le_bytes(word));
    }
    h
}

/// The users with a cohort, sorted by id.
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
    fn extend_range(&mut self, src: &UserFacts, range: std::ops::Range<usize>, stride: usize) {
        self.ids.extend_from_slice(&src.ids[range.clone()]);
        self.keys.extend_range(&src.keys, range.clone());
        self.cohort.extend_from_slice(&src.cohort[range.clone()]);
        self.segment.extend_from_slice(&src.segment[range.clone()]);
        self.bits.extend_from_slice(&src.bits[range.start * stride..range.end * stride]);
    }
}

/// Rows of users with no cohort yet (orders and activity), sorted by user id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    pub ids: Vec<u64>,
    pub keys: Keys,
    /// `ORDERS` or `ACTIVITY`.
    pub table: Vec<u8>,
    pub period: Vec<i32>,
    /// Fixed point at the state's scale (0 for activity).
    pub amount: Vec<i64>,
}

impl Waiting {
    fn extend_range(&mut self, src: &Waiting, range: std::ops::Range<usize>) {
        self.ids.extend_from_slice(&src.ids[range.clone()]);
        self.keys.extend_range(&src.keys, range.clone());
        self.table.extend_from_slice(&src.table[range.clone()]);
        self.period.extend_from_slice(&src.period[range.clone()]);
        self.amount.extend_from_slice(&src.amount[range]);
    }

    fn push(&mut self, id: u64, key: Key<'_>, table: u8, period: i32, amount: i64) {
        self.ids.push(id);
        self.keys.push_key(key);
        self.table.push(table);
        self.period.push(period);
        self.amount.push(amount);
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
    pub users: UserFacts,
    pub waiting: Waiting,
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

/// One table's valid rows, decoded.
#[derive(Default)]
struct TableRows {
    /// User key (integer, or the interner's key of a text id).
    key: Vec<u64>,
    period: Vec<i32>,
    /// Raw timestamps: the cohort-defining table only.
    ts: Vec<i64>,
    /// Fixed point at the state's scale: orders only.
    amount: Vec<i64>,
    /// Segment codes: the cohort-defining table with segments only.
    segment: Vec<u32>,
}

/// The first late row seen, for the error message.
struct LateRow {
    table: u8,
    row: u64,
    key: u64,
    period: i32,
}

/// A state's bits per user.
pub fn stride(horizon: u32) -> usize {
    (KINDS * horizon as usize).div_ceil(64)
}

fn inconsistent(what: &str) -> CoreError {
    CoreError::Internal(format!("the state is inconsistent: {what}"))
}

fn sub(count: &mut u64, by: u64, what: &str) -> Result<()> {
    *count = count.checked_sub(by).ok_or_else(|| inconsistent(what))?;
    Ok(())
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
        State { partial: Partial::empty(horizon, kind), watermark: None, family: None, users: UserFacts::default(), waiting: Waiting::default() }
    }

    pub fn stride(&self) -> usize {
        stride(self.partial.horizon)
    }

    /// The state with the new rows added: everything a full run over the old and new rows gives.
    /// `through` sets the new watermark (default: the last period of any new row); rows after it
    /// are refused. The state itself is never changed.
    pub fn update(&self, spec: &Spec, inputs: StateInputs<'_>, late: Late, through: Option<i32>, hooks: &dyn Hooks) -> Result<State> {
        let period_kind = PeriodKind::parse(&spec.period)?;
        let cal = Calendar::new(period_kind, &spec.tz)?;
        let kind = self.partial.kind;
        let StateInputs { orders, signups, activity, segment_ranks } = inputs;
        if kind == CohortKind::FirstPurchase && signups.is_some() {
            return Err(CoreError::InvalidArgument("signups were given to a state of first-purchase cohorts".into()));
        }
        let defining = if kind == CohortKind::Signup { SIGNUPS } else { ORDERS };
        let mut reader = Reader {
            spec,
            cal: &cal,
            hooks,
            interner: Interner::default(),
            family: self.family,
            family_table: None,
            watermark: self.watermark,
            late_rows: 0,
            first_late: None,
            max_period: None,
            max_orders: None,
        };
        let mut partial = self.partial.clone();
        let mut rows: [TableRows; 3] = Default::default();
        // The first rows ever set the amounts' scale; later orders at a larger scale raise it.
        let fresh = self.family.is_none() && partial.orders.rows == 0;
        let mut waiting_factor = 1i64;
        for (table, source) in [(SIGNUPS, signups), (ORDERS, orders), (ACTIVITY, activity)] {
            let Some(source) = source else { continue };
            let stream = Stream::open(table_name(table), source)?;
            let ts_name = match table {
                SIGNUPS => &spec.signup_ts,
                ORDERS => &spec.ts,
                _ => &spec.activity_ts,
            };
            let names = ColumnNames {
                table: table_name(table),
                user: &spec.user,
                ts: ts_name,
                amount: (table == ORDERS).then_some(spec.amount.as_str()),
                segment: if table == defining { spec.segment.as_deref() } else { None },
            };
            let set = reader.columns(&stream, &names)?;
            if table == ORDERS && (fresh || set.scale > partial.scale) {
                let mut at = Partial::empty(partial.horizon, kind);
                at.scale = set.scale;
                waiting_factor = 10i64.checked_pow(u32::from(set.scale.saturating_sub(partial.scale))).ok_or_else(|| too_large("rescaling"))?;
                partial = if fresh { at_scale(partial, set.scale) } else { Partial::merge(vec![partial, at])? };
            }
            let totals = match table {
                SIGNUPS => partial.signups.get_or_insert_with(TableTotals::default),
                ORDERS => &mut partial.orders,
                _ => partial.activity.get_or_insert_with(TableTotals::default),
            };
            let factor = 10i64.checked_pow(u32::from(partial.scale.saturating_sub(set.scale))).ok_or_else(|| too_large("rescaling"))?;
            reader.read(stream, &set, table, table == defining, factor, totals, &mut rows[table as usize])?;
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
        let texts = reader.interner.texts();
        if reader.late_rows > 0 && late == Late::Refuse {
            let first = reader.first_late.as_ref().expect("a late row was noted");
            return Err(CoreError::LateRows(format!(
                "{} row(s) fall at or before the state's watermark (the period starting {}); the first is {} row {}, user {}, in the period starting {}. \
                 Nothing was changed; late=\"apply\" (CLI: --late apply) applies late rows that change no user's cohort",
                reader.late_rows,
                period_label(period_kind, self.watermark.unwrap_or(0)),
                table_name(first.table),
                first.row,
                show_key(reader.family, first.key, &texts),
                period_label(period_kind, first.period),
            )));
        }
        let ranks = match (spec.segment.is_some(), segment_ranks) {
            (true, Some(f)) => f()?,
            _ => Vec::new(),
        };
        let family = reader.family.unwrap_or(UserFamily::Signed);
        let text_ids: Vec<u64> = if family == UserFamily::Str { texts.par_iter().map(|t| text_id(t)).collect() } else { Vec::new() };
        let id_of = |key: u64| if family == UserFamily::Str { text_ids[key as usize] } else { hash_key(key) };

        // Every valid row, tagged with its table and index, sorted by user id.
        let total: usize = rows.iter().map(|r| r.key.len()).sum();
        let mut sorted: Vec<(u64, u64)> = Vec::new();
        sorted.try_reserve_exact(total).map_err(|_| crate::error::out_of_memory(total * 16, "the update's rows sorted by user"))?;
        for (t, r) in rows.iter().enumerate() {
            sorted.extend(r.key.iter().enumerate().map(|(i, &k)| (id_of(k), ((t as u64) << TABLE_SHIFT) | i as u64)));
        }
        hooks.tick("state: users", 0, false)?;
        sorted.par_sort_unstable_by_key(|e| e.0);

        let fresh_keys = self.family.is_none();
        let (empty_users, empty_waiting) = (
            UserFacts { keys: Keys::empty_like(family), ..UserFacts::default() },
            Waiting { keys: Keys::empty_like(family), ..Waiting::default() },
        );
        let old_users = if fresh_keys { &empty_users } else { &self.users };
        let rescaled;
        let old_waiting = if fresh_keys {
            &empty_waiting
        } else if waiting_factor != 1 {
            let mut w = self.waiting.clone();
            for a in &mut w.amount {
                *a = a.checked_mul(waiting_factor).ok_or_else(|| too_large("a waiting amount"))?;
            }
            rescaled = w;
            &rescaled
        } else {
            &self.waiting
        };
        let mut walk = Walk {
            kind,
            h: partial.horizon as usize,
            stride: self.stride(),
            tracks_segments: spec.segment.is_some(),
            ranks: &ranks,
            paying: Paying::new(spec.min_amount, partial.scale),
            grid: Grid::new(partial),
            users: UserFacts { keys: Keys::empty_like(family), ..UserFacts::default() },
            waiting: Waiting { keys: Keys::empty_like(family), ..Waiting::default() },
            conflicts: Vec::new(),
            conflict_count: 0,
        };
        let stride = walk.stride;
        walk.users.ids.reserve(old_users.ids.len());
        let (mut ui, mut wi, mut i) = (0usize, 0usize, 0usize);
        let key_of = |e: &(u64, u64)| rows[(e.1 >> TABLE_SHIFT) as usize].key[(e.1 & INDEX_MASK) as usize];
        while i < sorted.len() {
            let id = sorted[i].0;
            let j = i + sorted[i..].partition_point(|e| e.0 == id);
            let group = &sorted[i..j];
            let key = key_of(&group[0]);
            let key_ref = if family == UserFamily::Str { Key::Text(texts[key as usize]) } else { Key::Int(key) };
            if family == UserFamily::Str {
                if let Some(other) = group.iter().map(key_of).find(|&k| k != key) {
                    return Err(collision(texts[key as usize], texts[other as usize]));
                }
            }
            let start = ui;
            ui += old_users.ids[ui..].partition_point(|&u| u < id);
            walk.users.extend_range(old_users, start..ui, stride);
            let old = (ui < old_users.ids.len() && old_users.ids[ui] == id).then(|| {
                ui += 1;
                ui - 1
            });
            let start = wi;
            wi += old_waiting.ids[wi..].partition_point(|&u| u < id);
            walk.waiting.extend_range(old_waiting, start..wi);
            let wstart = wi;
            wi += old_waiting.ids[wi..].partition_point(|&u| u == id);
            for stored in old.map(|k| old_users.keys.key(k)).into_iter().chain((wstart..wi).map(|k| old_waiting.keys.key(k))) {
                if stored != key_ref {
                    let Key::Text(t) = stored else { return Err(inconsistent("an integer id matched another")) };
                    return Err(collision(t, texts[key as usize]));
                }
            }
            walk.user(id, key_ref, old.map(|k| (old_users, k)), (old_waiting, wstart..wi), group, &rows)?;
            i = j;
        }
        walk.users.extend_range(old_users, ui..old_users.ids.len(), stride);
        walk.waiting.extend_range(old_waiting, wi..old_waiting.ids.len());
        if walk.conflict_count > 0 {
            return Err(CoreError::LateRows(format!(
                "{} user(s) have late rows that would change their cohort: {}. Nothing was changed; \
                 only a new build of the state can move a user's cohort",
                walk.conflict_count,
                walk.conflicts.join("; ")
            )));
        }
        let mut partial = Partial::merge(vec![walk.grid.partial])?;
        partial.max_period = partial.max_period.max(reader.max_orders);
        let watermark = match through {
            Some(w) => Some(self.watermark.map_or(w, |old| old.max(w))),
            None => self.watermark.max(reader.max_period),
        };
        hooks.tick("state: users", total as u64, true)?;
        Ok(State { partial, watermark, family: reader.family, users: walk.users, waiting: walk.waiting })
    }
}

/// A row's tag in the sorted list: its table in the top byte, its index below.
const TABLE_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << TABLE_SHIFT) - 1;

/// An empty partial at `scale`.
fn at_scale(mut p: Partial, scale: u8) -> Partial {
    p.scale = scale;
    p
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

fn show_key(family: Option<UserFamily>, key: u64, texts: &[&[u8]]) -> String {
    match family {
        Some(UserFamily::Str) => format!("{:?}", String::from_utf8_lossy(texts.get(key as usize).copied().unwrap_or(&[]))),
        Some(UserFamily::Unsigned64) => key.to_string(),
        #[allow(clippy::cast_possible_wrap)] // a signed id kept as its bit pattern
        _ => (key as i64).to_string(),
    }
}

/// Rows decoded at a time.
const BLOCK_ROWS: usize = 1 << 16;

/// Decodes an update's tables into valid rows, counting the others.
struct Reader<'a> {
    spec: &'a Spec,
    cal: &'a Calendar,
    hooks: &'a dyn Hooks,
    interner: Interner,
    family: Option<UserFamily>,
    family_table: Option<&'static str>,
    watermark: Option<i32>,
    late_rows: u64,
    first_late: Option<LateRow>,
    /// Last period of any valid row, and of the valid orders.
    max_period: Option<i32>,
    max_orders: Option<i32>,
}

impl Reader<'_> {
    fn columns(&mut self, stream: &Stream, names: &ColumnNames<'_>) -> Result<ColumnSet> {
        let set = ColumnSet::resolve(&stream.schema, names, self.spec.float_scale)?;
        match self.family {
            None => {
                self.family = Some(set.family);
                self.family_table = Some(stream.table);
            }
            Some(family) if family != set.family => {
                let seen = self.family_table.map_or_else(|| "the state".to_string(), str::to_string);
                return Err(CoreError::Dtype {
                    table: stream.table.to_string(),
                    column: names.user.to_string(),
                    dtype: stream.schema.field(set.user.0).data_type().to_string(),
                    accepted: format!(
                        "the same kind of user id as {seen} ({}); integers and strings (or uint64 and signed integers) cannot be matched",
                        match family {
                            UserFamily::Signed => "signed or small unsigned integers",
                            UserFamily::Unsigned64 => "uint64",
                            UserFamily::Str => "strings",
                        }
                    ),
                });
            }
            _ => {}
        }
        Ok(set)
    }

    /// Reads one table: its totals and bad rows into `totals`, its valid rows into `out`.
    #[allow(clippy::too_many_arguments)]
    fn read(&mut self, stream: Stream, set: &ColumnSet, table: u8, defining: bool, factor: i64, totals: &mut TableTotals, out: &mut TableRows) -> Result<()> {
        let phase = match table {
            SIGNUPS => "state: signups",
            ORDERS => "state: orders",
            _ => "state: activity",
        };
        let want = Want { ts: defining, period: true };
        let mut d = Decoded::default();
        let mut row0: u64 = 0;
        self.hooks.tick(phase, 0, false)?;
        let hooks = self.hooks;
        for batch in stream.reader {
            let batch = batch?;
            let view = BatchView::new(&batch, set, &mut self.interner, &mut || Ok(()))?;
            for lo in (0..view.len).step_by(BLOCK_ROWS) {
                let hi = view.len.min(lo + BLOCK_ROWS);
                view.decode(lo, hi, self.cal, want, &mut d)?;
                for k in 0..d.len() {
                    let row = row0 + (lo + k) as u64;
                    let amount = d.amount[k].checked_mul(factor).ok_or_else(|| too_large("an amount"))?;
                    totals.rows += 1;
                    totals.amount += i128::from(amount);
                    if !d.all_valid && d.status[k] != status::VALID {
                        let reason = status_reason(d.status[k]);
                        if self.spec.strict {
                            return Err(bad_row_error(set, reason, row));
                        }
                        totals.tally.add(reason, amount);
                        continue;
                    }
                    let period = d.period[k];
                    self.max_period = self.max_period.max(Some(period));
                    if table == ORDERS {
                        self.max_orders = self.max_orders.max(Some(period));
                    }
                    if self.watermark.is_some_and(|w| period <= w) {
                        self.late_rows += 1;
                        if self.first_late.is_none() {
                            self.first_late = Some(LateRow { table, row, key: d.key[k], period });
                        }
                    }
                    out.key.push(d.key[k]);
                    out.period.push(period);
                    if defining {
                        out.ts.push(d.ts[k]);
                        if set.segment.is_some() {
                            out.segment.push(d.segment[k]);
                        }
                    }
                    if table == ORDERS {
                        out.amount.push(amount);
                    }
                }
            }
            row0 += view.len as u64;
            hooks.tick(phase, row0, false)?;
        }
        hooks.tick(phase, row0, true)?;
        Ok(())
    }
}

/// The partial while an update changes it: groups found by key, new ones appended (sorted by the
/// final `Partial::merge`).
struct Grid {
    partial: Partial,
    index: hashbrown::HashMap<(u32, i32), usize, foldhash::fast::FixedState>,
}

impl Grid {
    fn new(partial: Partial) -> Self {
        let index = partial.groups.iter().enumerate().map(|(i, &g)| (g, i)).collect();
        Grid { partial, index }
    }

    fn group(&mut self, key: (u32, i32)) -> usize {
        if let Some(&g) = self.index.get(&key) {
            return g;
        }
        let p = &mut self.partial;
        let g = p.groups.len();
        p.groups.push(key);
        p.members.push(0);
        let n = (g + 1) * p.horizon as usize;
        let c: &mut PartialCells = &mut p.cells;
        for v in [&mut c.rows, &mut c.orders, &mut c.payers, &mut c.activity_rows, &mut c.active, &mut c.first_paid, &mut c.first_repeat] {
            v.resize(n, 0);
        }
        c.gross.resize(n, 0);
        c.refunds.resize(n, 0);
        self.index.insert(key, g);
        g
    }
}

/// The walk over users with new rows.
struct Walk<'a> {
    kind: CohortKind,
    h: usize,
    stride: usize,
    tracks_segments: bool,
    ranks: &'a [u32],
    paying: Paying,
    grid: Grid,
    users: UserFacts,
    waiting: Waiting,
    /// Users whose late rows would move their cohort (the first few, described).
    conflicts: Vec<String>,
    conflict_count: u64,
}

/// Users named in the error about cohorts that late rows would move.
const CONFLICTS_NAMED: usize = 5;

impl Walk<'_> {
    fn rank(&self, segment: u32) -> u32 {
        self.ranks.get(segment as usize).copied().unwrap_or(segment)
    }

    /// One user with new rows (`group`, sorted tags): their cohort, their rows, their counts.
    fn user(
        &mut self,
        id: u64,
        key: Key<'_>,
        old: Option<(&UserFacts, usize)>,
        waiting: (&Waiting, std::ops::Range<usize>),
        group: &[(u64, u64)],
        rows: &[TableRows; 3],
    ) -> Result<()> {
        let defining = if self.kind == CohortKind::Signup { SIGNUPS } else { ORDERS };
        let row = |e: &(u64, u64)| ((e.1 >> TABLE_SHIFT) as u8, (e.1 & INDEX_MASK) as usize);
        let old_facts = old.map(|(u, k)| (u.segment[k], u.cohort[k]));
        // The cohort: the earliest defining row (ties: the smallest segment by value).
        let mut best: Option<(i64, u32, u32, i32)> = None;
        let mut defining_rows = 0u64;
        let mut conflict: Option<i32> = None;
        for e in group {
            let (t, i) = row(e);
            if t != defining {
                continue;
            }
            let r = &rows[t as usize];
            if t == ORDERS && !self.paying.pays(r.amount[i]) {
                continue;
            }
            defining_rows += 1;
            let segment = if self.tracks_segments { r.segment[i] } else { 0 };
            let period = r.period[i];
            match old_facts {
                Some((s, c)) => {
                    if period < c || (period == c && segment != s) {
                        conflict = Some(conflict.map_or(period, |p| p.min(period)));
                    }
                }
                None => {
                    let cand = (r.ts[i], self.rank(segment), segment, period);
                    if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                        best = Some(cand);
                    }
                }
            }
        }
        if let Some(p) = conflict {
            self.conflict_count += 1;
            if self.conflicts.len() < CONFLICTS_NAMED {
                let (_, c) = old_facts.expect("a conflict needs a cohort");
                self.conflicts.push(format!("user {} (cohort period {c}, a late row in period {p})", describe(key)));
            }
            return Ok(());
        }
        let facts = old_facts.or_else(|| best.map(|b| (b.2, b.3)));
        let Some((segment, cohort)) = facts else {
            // Still no cohort: every row waits, under the reason a full run gives it now.
            self.waiting.extend_range(waiting.0, waiting.1.clone());
            for e in group {
                let (t, i) = row(e);
                let r = &rows[t as usize];
                let amount = if t == ORDERS { r.amount[i] } else { 0 };
                let reason = missing(self.kind, t);
                self.table_totals(t).tally.add(reason, amount);
                self.waiting.push(id, key, t, r.period[i], amount);
            }
            return Ok(());
        };
        if self.kind == CohortKind::Signup {
            // Every signup row but the one that fixed the cohort is a duplicate.
            let dups = defining_rows - u64::from(old_facts.is_none() && best.is_some());
            self.table_totals(SIGNUPS).tally.add_many(Reason::DuplicateUser, dups, 0);
        }
        let g = self.grid.group((segment, cohort));
        let stride = self.stride;
        let mut bits = vec![0u64; stride];
        match old {
            Some((u, k)) => {
                bits.copy_from_slice(&u.bits[k * stride..(k + 1) * stride]);
                self.counts(g, &bits, false)?;
            }
            None => {
                self.grid.partial.members[g] += 1;
                // The rows that waited for this user leave their reason and are attributed.
                let (w, range) = waiting;
                for k in range {
                    let t = w.table[k];
                    let reason = missing(self.kind, t);
                    let tally = &mut self.table_totals(t).tally;
                    let (n, a) = (tally.rows(reason), tally.amount(reason));
                    let n = n.checked_sub(1).ok_or_else(|| inconsistent("a waiting row without its reason"))?;
                    tally.set(reason, n, a - i128::from(w.amount[k]));
                    self.attribute(g, cohort, t, w.period[k], w.amount[k], &mut bits);
                }
            }
        }
        for e in group {
            let (t, i) = row(e);
            if t == SIGNUPS {
                continue;
            }
            let r = &rows[t as usize];
            let amount = if t == ORDERS { r.amount[i] } else { 0 };
            self.attribute(g, cohort, t, r.period[i], amount, &mut bits);
        }
        self.counts(g, &bits, true)?;
        self.users.ids.push(id);
        self.users.keys.push_key(key);
        self.users.cohort.push(cohort);
        self.users.segment.push(segment);
        self.users.bits.extend_from_slice(&bits);
        Ok(())
    }

    fn table_totals(&mut self, table: u8) -> &mut TableTotals {
        let p = &mut self.grid.partial;
        match table {
            SIGNUPS => p.signups.get_or_insert_with(TableTotals::default),
            ORDERS => &mut p.orders,
            _ => p.activity.get_or_insert_with(TableTotals::default),
        }
    }

    /// One order or activity row of a user with a cohort, as `kernel::Users::attribute_*` does it.
    fn attribute(&mut self, g: usize, cohort: i32, table: u8, period: i32, amount: i64, bits: &mut [u64]) {
        let age = i64::from(period) - i64::from(cohort);
        let h = self.h;
        if age < 0 || age >= h as i64 {
            let reason = if age < 0 { Reason::BeforeCohort } else { Reason::BeyondHorizon };
            self.table_totals(table).tally.add(reason, amount);
            return;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0 ≤ age < horizon
        let age = age as usize;
        let cell = g * h + age;
        let c = &mut self.grid.partial.cells;
        let set = |bits: &mut [u64], kind: usize| -> bool {
            let b = kind * h + age;
            let was = bits[b >> 6] >> (b & 63) & 1 == 1;
            bits[b >> 6] |= 1 << (b & 63);
            was
        };
        if table == ACTIVITY {
            c.activity_rows[cell] += 1;
            set(bits, ACTIVE);
            return;
        }
        c.rows[cell] += 1;
        if amount > 0 {
            c.gross[cell] += i128::from(amount);
        } else {
            c.refunds[cell] += i128::from(amount);
        }
        if self.paying.pays(amount) {
            c.orders[cell] += 1;
            if set(bits, PAID) {
                set(bits, MULTI);
            }
        }
    }

    /// Adds (or takes out) one member's per-cell counts: payers, actives, first paying and first
    /// repeat ages (as `engine::output::count_users` counts them).
    fn counts(&mut self, g: usize, bits: &[u64], add: bool) -> Result<()> {
        let h = self.h;
        let user = UserBits::new(bits, h);
        let base = g * h;
        let c = &mut self.grid.partial.cells;
        let (first, second) = user.lowest_two(PAID);
        let repeat = match (second, user.lowest_two(MULTI).0) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut result = Ok(());
        let mut apply = |v: &mut Vec<u64>, a: usize| {
            if add {
                v[base + a] += 1;
            } else if let Err(e) = sub(&mut v[base + a], 1, "a count below zero") {
                result = Err(e);
            }
        };
        user.for_each_age(PAID, |a| apply(&mut c.payers, a));
        user.for_each_age(ACTIVE, |a| apply(&mut c.active, a));
        if let Some(a) = first {
            apply(&mut c.first_paid, a);
        }
        if let Some(a) = repeat {
            apply(&mut c.first_repeat, a);
        }
        result
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

// ---------------------------------------------------------------------------------------------
// The Arrow layout of the users and the waiting rows (the partial has its own, `Partial::to_batch`).

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
        let u = &self.users;
        let mut columns: Vec<ArrayRef> = vec![
            key_array(&u.keys, self.family),
            Arc::new(UInt32Array::from(u.segment.clone())),
            Arc::new(Int32Array::from(u.cohort.clone())),
        ];
        let mut fields = vec![
            Field::new("user", key_field(self.family), false),
            Field::new("segment", DataType::UInt32, false),
            Field::new("cohort", DataType::Int32, false),
        ];
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)] // nb ≤ 125
        let width = nb as i32;
        for (kind, name) in AGE_COLUMNS.iter().enumerate() {
            let mut bytes = vec![0u8; u.ids.len() * nb];
            for (k, out) in bytes.chunks_exact_mut(nb.max(1)).enumerate().take(if nb == 0 { 0 } else { u.ids.len() }) {
                UserBits::new(&u.bits[k * stride..(k + 1) * stride], h).for_each_age(kind, |a| out[a / 8] |= 1 << (a % 8));
            }
            let array = FixedSizeBinaryArray::try_new(width, bytes.into(), None).map_err(arrow_err)?;
            columns.push(Arc::new(array));
            fields.push(Field::new(*name, DataType::FixedSizeBinary(width), false));
        }
        arrow_array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err)
    }

    /// One row per waiting row: `user`, `table` (`orders` or `activity`), `period` and `amount`.
    pub fn waiting_batch(&self) -> Result<arrow_array::RecordBatch> {
        use arrow_array::{ArrayRef, Decimal128Array, Int32Array, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        use std::sync::Arc;
        let w = &self.waiting;
        let scale = i8::try_from(self.partial.scale).unwrap_or(i8::MAX);
        let amount = Decimal128Array::from(w.amount.iter().map(|&a| i128::from(a)).collect::<Vec<_>>())
            .with_precision_and_scale(38, scale)
            .map_err(arrow_err)?;
        let columns: Vec<ArrayRef> = vec![
            key_array(&w.keys, self.family),
            Arc::new(StringArray::from_iter_values(w.table.iter().map(|&t| table_name(t)))),
            Arc::new(Int32Array::from(w.period.clone())),
            Arc::new(amount),
        ];
        let schema = Schema::new(vec![
            Field::new("user", key_field(self.family), false),
            Field::new("table", DataType::Utf8, false),
            Field::new("period", DataType::Int32, false),
            Field::new("amount", DataType::Decimal128(38, scale), false),
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
                UserFamily::Unsigned64 => {
                    for &v in col.as_primitive::<arrow_array::types::UInt64Type>().values() {
                        ids.push(hash_key(v));
                        into.push_key(Key::Int(v));
                    }
                }
                UserFamily::Signed => {
                    #[allow(clippy::cast_sign_loss)] // the bit pattern
                    for &v in col.as_primitive::<arrow_array::types::Int64Type>().values() {
                        ids.push(hash_key(v as u64));
                        into.push_key(Key::Int(v as u64));
                    }
                }
            }
            Ok(())
        };
        if family.is_none() && (users.iter().any(|b| b.num_rows() > 0) || waiting.iter().any(|b| b.num_rows() > 0)) {
            return Err(invalid("it has users but no user id family".into()));
        }
        let mut u = UserFacts { keys: Keys::empty_like(fam), ..UserFacts::default() };
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        let width = DataType::FixedSizeBinary(nb as i32);
        for b in users {
            read_keys(b, &mut u.keys, &mut u.ids)?;
            u.segment.extend_from_slice(column(b, "segment", &DataType::UInt32)?.as_primitive::<UInt32Type>().values());
            u.cohort.extend_from_slice(column(b, "cohort", &DataType::Int32)?.as_primitive::<Int32Type>().values());
            let maps: Vec<arrow_array::ArrayRef> = AGE_COLUMNS.iter().map(|n| column(b, n, &width)).collect::<Result<_>>()?;
            let first = u.bits.len();
            u.bits.resize(first + b.num_rows() * stride, 0);
            for (kind, m) in maps.iter().enumerate() {
                let m = m.as_fixed_size_binary();
                for k in 0..b.num_rows() {
                    let words = &mut u.bits[first + k * stride..first + (k + 1) * stride];
                    for (byte_index, &byte) in m.value(k).iter().enumerate() {
                        for bit in 0..8 {
                            if byte >> bit & 1 == 1 {
                                let a = byte_index * 8 + bit;
                                if a >= h {
                                    return Err(invalid(format!("column {:?} has an age beyond the horizon", AGE_COLUMNS[kind])));
                                }
                                let b = kind * h + a;
                                words[b >> 6] |= 1 << (b & 63);
                            }
                        }
                    }
                }
            }
        }
        let mut w = Waiting { keys: Keys::empty_like(fam), ..Waiting::default() };
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
        }
        let state = State { partial, watermark, family, users: sort_users(u, stride), waiting: sort_waiting(w) };
        state.check()?;
        Ok(state)
    }

    /// The partial's per-user numbers must be exactly those of the users and waiting rows.
    fn check(&self) -> Result<()> {
        let h = self.partial.horizon as usize;
        let stride = self.stride();
        let u = &self.users;
        if u.ids.windows(2).any(|p| p[0] == p[1]) {
            return Err(invalid("a user appears twice".into()));
        }
        let mut recount = Walk {
            kind: self.partial.kind,
            h,
            stride,
            tracks_segments: false,
            ranks: &[],
            paying: Paying::new((0, 0), 0),
            grid: Grid::new(self.partial.clone()),
            users: UserFacts::default(),
            waiting: Waiting::default(),
            conflicts: Vec::new(),
            conflict_count: 0,
        };
        let known_groups = recount.grid.partial.groups.len();
        for k in 0..u.ids.len() {
            let bits = &u.bits[k * stride..(k + 1) * stride];
            let user = UserBits::new(bits, h);
            let mut twice_without_paid = false;
            user.for_each_age(MULTI, |a| twice_without_paid |= user.count_below(PAID, a + 1) == user.count_below(PAID, a));
            if twice_without_paid {
                return Err(invalid("a user paid twice at an age without paying at it".into()));
            }
            let g = recount.grid.group((u.segment[k], u.cohort[k]));
            if g >= known_groups {
                return Err(invalid(format!("a user's cohort (segment {}, period {}) is not in its partial", u.segment[k], u.cohort[k])));
            }
            let members = &mut recount.grid.partial.members[g];
            *members = members.checked_sub(1).ok_or_else(|| invalid("its users do not add up to its cohort sizes".into()))?;
            recount.counts(g, bits, false).map_err(|_| invalid("its users do not add up to its per-cell counts".into()))?;
        }
        let p = &recount.grid.partial;
        if p.members.iter().any(|&m| m != 0) {
            return Err(invalid("its users do not add up to its cohort sizes".into()));
        }
        let c = &p.cells;
        if [&c.payers, &c.active, &c.first_paid, &c.first_repeat].iter().any(|v| v.iter().any(|&x| x != 0)) {
            return Err(invalid("its users do not add up to its per-cell counts".into()));
        }
        let w = &self.waiting;
        for table in [ORDERS, ACTIVITY] {
            let (rows, amount) = (0..w.len()).filter(|&k| w.table[k] == table).fold((0u64, 0i128), |(n, a), k| (n + 1, a + i128::from(w.amount[k])));
            let totals = if table == ORDERS { Some(&self.partial.orders) } else { self.partial.activity.as_ref() };
            let reason = missing(self.partial.kind, table);
            let (n, a) = totals.map_or((0, 0), |t| (t.tally.rows(reason), t.tally.amount(reason)));
            if (n, a) != (rows, amount) {
                return Err(invalid(format!("its {} waiting rows do not match its {} count of {}", table_name(table), reason.name(), table_name(table))));
            }
        }
        let mut i = 0;
        for k in 0..w.len() {
            i += u.ids[i..].partition_point(|&x| x < w.ids[k]);
            if i < u.ids.len() && u.ids[i] == w.ids[k] {
                return Err(invalid("a user with a cohort also has waiting rows".into()));
            }
        }
        Ok(())
    }
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

impl State {
    /// The same state with every segment code `c` replaced by `map[c]` (a common dictionary).
    pub fn recode(self, map: &[u32]) -> Result<State> {
        let mut out = self;
        for s in &mut out.users.segment {
            *s = *map.get(*s as usize).ok_or_else(|| CoreError::InvalidArgument(format!("segment code {s} has no value")))?;
        }
        out.partial = out.partial.recode(map)?;
        Ok(out)
    }
}
