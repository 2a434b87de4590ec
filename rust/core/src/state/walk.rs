//! One partition's walk: its users and waiting rows, sorted by id, beside its new rows, sorted by
//! id. Users without new rows are copied; the others get their cohort, rows and counts.

use std::sync::Arc;

use super::read::Rec;
use super::{describe, missing, Key, Keys, UserFacts, Waiting, ACTIVITY, ORDERS, SIGNUPS};
use crate::engine::Paying;
use crate::error::Result;
use crate::kernel::{UserBits, ACTIVE, MULTI, PAID};
use crate::partial::{CohortKind, Partial, TableTotals};
use crate::reconcile::Reason;

/// What the walks share.
pub(crate) struct Context<'a> {
    pub(crate) kind: CohortKind,
    pub(crate) horizon: u32,
    pub(crate) scale: u8,
    pub(crate) stride: usize,
    pub(crate) tracks_segments: bool,
    /// Each segment code's rank in the order of the values (ties between earliest rows).
    pub(crate) ranks: &'a [u32],
    pub(crate) paying: Paying,
    /// The text of each text id in the update (empty for integer ids).
    pub(crate) text_of: &'a hashbrown::HashMap<u64, &'a [u8], foldhash::fast::FixedState>,
    pub(crate) text_ids: bool,
}

/// A partial's numbers while a walk changes them: groups found by key, new ones appended
/// (`Partial::merge` sorts them at the end).
pub(crate) struct Grid {
    pub(crate) partial: Partial,
    index: hashbrown::HashMap<(u32, i32), usize, foldhash::fast::FixedState>,
}

impl Grid {
    pub(crate) fn new(partial: Partial) -> Self {
        let index = partial.groups.iter().enumerate().map(|(i, &g)| (g, i)).collect();
        Grid { partial, index }
    }

    fn empty(ctx: &Context<'_>) -> Self {
        let mut p = Partial::empty(ctx.horizon, ctx.kind);
        p.scale = ctx.scale;
        p.signups = None;
        Grid::new(p)
    }

    pub(crate) fn group(&mut self, key: (u32, i32)) -> usize {
        if let Some(&g) = self.index.get(&key) {
            return g;
        }
        let p = &mut self.partial;
        let g = p.groups.len();
        p.groups.push(key);
        p.members.push(0);
        let n = (g + 1) * p.horizon as usize;
        p.cells.resize(n);
        self.index.insert(key, g);
        g
    }

    pub(crate) fn table(&mut self, table: u8) -> &mut TableTotals {
        let p = &mut self.partial;
        match table {
            SIGNUPS => p.signups.get_or_insert_with(TableTotals::default),
            ORDERS => &mut p.orders,
            _ => p.activity.get_or_insert_with(TableTotals::default),
        }
    }

    /// Adds one member's per-cell counts (payers, retained payers, actives, first paying and first
    /// repeat ages), as `engine::output::count_users` counts them.
    pub(crate) fn add_counts(&mut self, g: usize, bits: &[u64]) {
        let h = self.partial.horizon as usize;
        let base = g * h;
        let c = &mut self.partial.cells;
        let user = UserBits::new(bits, h);
        user.for_each_age(PAID, |a| c.payers[base + a] += 1);
        user.for_each_retained_age(|a| c.retained[base + a] += 1);
        user.for_each_age(ACTIVE, |a| c.active[base + a] += 1);
        let (first, repeat) = first_and_repeat(&user);
        if let Some(a) = first {
            c.first_paid[base + a] += 1;
        }
        if let Some(a) = repeat {
            c.first_repeat[base + a] += 1;
        }
    }
}

/// The lowest paying age, and the age a member becomes a repeater (a second paying age, or two
/// paying orders in one age).
pub(crate) fn first_and_repeat(user: &UserBits<'_>) -> (Option<usize>, Option<usize>) {
    let (first, second) = user.lowest_two(PAID);
    let repeat = match (second, user.lowest_two(MULTI).0) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (first, repeat)
}

/// What one partition's walk gives.
pub(crate) struct PartOut {
    pub(crate) users: Arc<UserFacts>,
    pub(crate) waiting: Arc<Waiting>,
    /// Numbers to add to the old partial, and to take out of it (counts of old members that a new
    /// row moves, and waiting rows that leave their reason).
    pub(crate) plus: Partial,
    pub(crate) minus: Partial,
    pub(crate) conflicts: Vec<String>,
    pub(crate) conflict_count: u64,
}

/// Users named in the error about cohorts that late rows would move.
pub(crate) const CONFLICTS_NAMED: usize = 5;

#[inline(never)]
pub(crate) fn walk(ctx: &Context<'_>, users: &Arc<UserFacts>, waiting: &Arc<Waiting>, rows: &[Rec]) -> Result<PartOut> {
    if rows.is_empty() {
        return Ok(PartOut {
            users: users.clone(),
            waiting: waiting.clone(),
            plus: Grid::empty(ctx).partial,
            minus: Grid::empty(ctx).partial,
            conflicts: Vec::new(),
            conflict_count: 0,
        });
    }
    let mut w = Walk {
        ctx,
        plus: Grid::empty(ctx),
        minus: Grid::empty(ctx),
        users: UserFacts { keys: Keys::empty_like(&users.keys), ..UserFacts::default() },
        waiting: Waiting { keys: Keys::empty_like(&waiting.keys), ..Waiting::default() },
        bits: vec![0; ctx.stride],
        old_bits: vec![0; ctx.stride],
        conflicts: Vec::new(),
        conflict_count: 0,
    };
    let stride = ctx.stride;
    w.users.reserve(users.ids.len() + rows.len().min(users.ids.len() / 4 + 16), stride);
    let (mut ui, mut wi, mut i) = (0usize, 0usize, 0usize);
    while i < rows.len() {
        let id = rows[i].id;
        let mut j = i + 1;
        while j < rows.len() && rows[j].id == id {
            j += 1;
        }
        let group = &rows[i..j];
        let key = if ctx.text_ids { Key::Text(ctx.text_of[&id]) } else { Key::Int(super::unhash_key(id)) };
        let start = ui;
        ui = gallop(&users.ids, ui, id);
        w.users.extend_range(users, start..ui, stride);
        let old = (ui < users.ids.len() && users.ids[ui] == id).then(|| {
            ui += 1;
            ui - 1
        });
        let start = wi;
        wi = gallop(&waiting.ids, wi, id);
        w.waiting.extend_range(waiting, start..wi);
        let wstart = wi;
        while wi < waiting.ids.len() && waiting.ids[wi] == id {
            wi += 1;
        }
        // Integer keys are their ids (`hash_key` is a bijection); two texts may share one.
        if let Key::Text(new) = key {
            for stored in old.map(|k| users.keys.text(k)).into_iter().chain((wstart..wi).map(|k| waiting.keys.text(k))) {
                if stored != new {
                    return Err(super::collision(stored, new));
                }
            }
        }
        w.user(id, key, old.map(|k| (&**users, k)), (&**waiting, wstart..wi), group)?;
        i = j;
    }
    w.users.extend_range(users, ui..users.ids.len(), stride);
    w.waiting.extend_range(waiting, wi..waiting.ids.len());
    Ok(PartOut {
        users: Arc::new(w.users),
        waiting: Arc::new(w.waiting),
        plus: w.plus.partial,
        minus: w.minus.partial,
        conflicts: w.conflicts,
        conflict_count: w.conflict_count,
    })
}

/// The first index at or after `from` whose id is not below `id`: steps of doubling length, then a
/// binary search, so that a walk over many users reads them in order and one over few skips ahead.
fn gallop(ids: &[u64], from: usize, id: u64) -> usize {
    let mut lo = from;
    let mut step = 1;
    while lo + step <= ids.len() && ids[lo + step - 1] < id {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(ids.len());
    lo + ids[lo..hi].partition_point(|&u| u < id)
}

struct Walk<'a> {
    ctx: &'a Context<'a>,
    plus: Grid,
    minus: Grid,
    users: UserFacts,
    waiting: Waiting,
    bits: Vec<u64>,
    old_bits: Vec<u64>,
    conflicts: Vec<String>,
    conflict_count: u64,
}

impl Walk<'_> {
    fn rank(&self, segment: u32) -> u32 {
        self.ctx.ranks.get(segment as usize).copied().unwrap_or(segment)
    }

    /// One user with new rows (`group`): their cohort, their rows, their counts.
    fn user(&mut self, id: u64, key: Key<'_>, old: Option<(&UserFacts, usize)>, waiting: (&Waiting, std::ops::Range<usize>), group: &[Rec]) -> Result<()> {
        let ctx = self.ctx;
        let defining = if ctx.kind == CohortKind::Signup { SIGNUPS } else { ORDERS };
        let old_facts = old.map(|(u, k)| (u.segment[k], u.cohort[k]));
        // The cohort: the earliest defining row (ties: the smallest segment by value).
        let mut best: Option<(i64, u32, u32, i32)> = None;
        let mut defining_rows = 0u64;
        let mut conflict: Option<i32> = None;
        for r in group {
            if r.table() != defining || (r.table() == ORDERS && !ctx.paying.pays(r.amount)) {
                continue;
            }
            defining_rows += 1;
            let segment = if ctx.tracks_segments { r.segment() } else { 0 };
            match old_facts {
                Some((s, c)) => {
                    if r.period < c || (r.period == c && segment != s) {
                        conflict = Some(conflict.map_or(r.period, |p| p.min(r.period)));
                    }
                }
                None => {
                    let cand = (r.ts, self.rank(segment), segment, r.period);
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
        let Some((segment, cohort)) = old_facts.or_else(|| best.map(|b| (b.2, b.3))) else {
            // Still no cohort: every row waits, under the reason a full run gives it now.
            self.waiting.extend_range(waiting.0, waiting.1.clone());
            for r in group {
                self.plus.table(r.table()).tally.add(missing(ctx.kind, r.table()), r.amount);
                self.waiting.push(id, key, r.table(), r.period, r.amount, r.profit);
            }
            return Ok(());
        };
        if ctx.kind == CohortKind::Signup {
            // Every signup row but the one that fixed the cohort is a duplicate.
            let dups = defining_rows - u64::from(old_facts.is_none() && best.is_some());
            self.plus.table(SIGNUPS).tally.add_many(Reason::DuplicateUser, dups, 0);
        }
        let stride = ctx.stride;
        let mut bits = std::mem::take(&mut self.bits);
        let g = self.plus.group((segment, cohort));
        match old {
            Some((u, k)) => {
                bits.copy_from_slice(&u.bits[k * stride..(k + 1) * stride]);
                self.old_bits.copy_from_slice(&bits);
            }
            None => {
                bits.fill(0);
                self.plus.partial.members[g] += 1;
                // The rows that waited for this user leave their reason and are attributed.
                let (w, range) = waiting;
                for k in range {
                    let t = w.table[k];
                    self.minus.table(t).tally.add(missing(ctx.kind, t), w.amount[k]);
                    self.attribute(g, cohort, t, w.period[k], (w.amount[k], w.profit[k]), &mut bits);
                }
            }
        }
        for r in group {
            if r.table() != SIGNUPS {
                self.attribute(g, cohort, r.table(), r.period, (r.amount, r.profit), &mut bits);
            }
        }
        if old.is_some() {
            if bits != self.old_bits {
                self.move_counts(g, (segment, cohort), &bits);
            }
        } else {
            self.plus.add_counts(g, &bits);
        }
        self.users.push(id, key, cohort, segment, &bits);
        self.bits = bits;
        Ok(())
    }

    /// A member's counts from `old_bits` to `bits`. Bits are only ever set, so the new paying,
    /// retained and active ages are added; the first paying and first repeat ages move only when
    /// they change.
    fn move_counts(&mut self, g: usize, key: (u32, i32), bits: &[u64]) {
        let h = self.ctx.horizon as usize;
        let base = g * h;
        let (old, new) = (UserBits::new(&self.old_bits, h), UserBits::new(bits, h));
        let c = &mut self.plus.partial.cells;
        let mut was_retained = Vec::new();
        old.for_each_retained_age(|a| was_retained.push(a));
        new.for_each_retained_age(|a| {
            if !was_retained.contains(&a) {
                c.retained[base + a] += 1;
            }
        });
        for (w, (&o, &n)) in self.old_bits.iter().zip(bits).enumerate() {
            let mut added = n & !o;
            while added != 0 {
                let b = w * 64 + added.trailing_zeros() as usize;
                added &= added - 1;
                match (b / h, b % h) {
                    (k, a) if k == PAID => c.payers[base + a] += 1,
                    (k, a) if k == ACTIVE => c.active[base + a] += 1,
                    _ => {}
                }
            }
        }
        let (was, now) = (first_and_repeat(&old), first_and_repeat(&new));
        if was != now {
            let m = self.minus.group(key);
            let p = &mut self.minus.partial.cells;
            let mb = m * h;
            let c = &mut self.plus.partial.cells;
            if was.0 != now.0 {
                was.0.into_iter().for_each(|a| p.first_paid[mb + a] += 1);
                now.0.into_iter().for_each(|a| c.first_paid[base + a] += 1);
            }
            if was.1 != now.1 {
                was.1.into_iter().for_each(|a| p.first_repeat[mb + a] += 1);
                now.1.into_iter().for_each(|a| c.first_repeat[base + a] += 1);
            }
        }
    }

    /// One order or activity row of a user with a cohort, as `kernel::Users::attribute_*` does it.
    fn attribute(&mut self, g: usize, cohort: i32, table: u8, period: i32, (amount, profit): (i64, i64), bits: &mut [u64]) {
        let age = i64::from(period) - i64::from(cohort);
        let h = self.ctx.horizon as usize;
        if age < 0 || age >= h as i64 {
            let reason = if age < 0 { Reason::BeforeCohort } else { Reason::BeyondHorizon };
            self.plus.table(table).tally.add(reason, amount);
            return;
        }
        #[allow(clippy::cast_sign_loss)] // 0 ≤ age < horizon
        let age = age as usize;
        let cell = g * h + age;
        let c = &mut self.plus.partial.cells;
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
        c.profit[cell] += i128::from(profit);
        if amount > 0 {
            c.gross[cell] += i128::from(amount);
        } else {
            c.refunds[cell] += i128::from(amount);
        }
        if self.ctx.paying.pays(amount) {
            c.orders[cell] += 1;
            c.payments[cell] += i128::from(amount);
            if set(bits, PAID) {
                set(bits, MULTI);
            }
        }
    }
}
