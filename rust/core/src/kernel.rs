//! The sharded kernel.
//!
//! Users are split into shards by a hash of their key, one shard per worker thread. Every worker
//! decodes its share of a chunk of rows; then every shard walks the whole decoded chunk and takes
//! the rows of its own users. A user lives in exactly one shard, so per-user state (cohort, first
//! paying order, bitsets of ages with a payment or an activity) needs no locks, and no row is copied
//! into partition buffers (the scatter that dominated an earlier radix-partitioned design). Lookups
//! use open addressing with software prefetch a few rows ahead, which hides most of the memory
//! latency of a table larger than cache. Distinct counts are exact popcounts and every sum is an
//! integer, so the result is the same whatever the thread count or batch sizes.

use crate::reconcile::{Reason, Tally};

/// murmur3's 64-bit finalizer: cheap, and mixes every input bit into both the high bits (shards) and
/// the low bits (buckets).
#[inline]
pub fn hash_key(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Which of `shards` shards holds a hash (from its high bits; buckets use the low bits).
#[inline]
pub fn shard_of(hash: u64, shards: usize) -> usize {
    (((hash >> 32) * shards as u64) >> 32) as usize
}

#[inline(always)]
fn prefetch_read<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(ptr as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// A row that may fix a user's cohort: a signup, or a paying order (first-purchase cohorts).
#[derive(Clone, Copy, Debug)]
pub struct FirstRec {
    pub key: u64,
    pub ts: i64,
    pub row: u64,
    pub segment: u32,
}

/// A row attributed to a cell: an order, or an activity (then `amount` is 0 and `paying` false).
#[derive(Clone, Copy, Debug)]
pub struct CellRec {
    pub key: u64,
    pub amount: i64,
    pub period: i32,
    pub paying: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    /// `EMPTY` for a vacant bucket.
    slot: u32,
    group: u32,
}

const EMPTY: u32 = u32::MAX;
const VACANT: Entry = Entry { key: 0, slot: EMPTY, group: NO_GROUP };

/// The earliest candidate row seen for a user.
#[derive(Clone, Copy)]
pub struct First {
    pub ts: i64,
    pub row: u64,
    pub segment: u32,
}

pub const NO_GROUP: u32 = u32::MAX;

/// One shard's users: an open-addressing index (linear probing, at most half full) over per-user
/// state stored by slot. Aligned so shards owned by different threads never share a cache line.
#[repr(align(128))]
pub struct Users {
    entries: Vec<Entry>,
    mask: usize,
    len: usize,
    pub first: Vec<First>,
    /// Per user `stride` words holding three bitsets of `horizon` ages each, back to back: ages
    /// with a paying order, with two or more, and with activity (one word when horizon ≤ 21).
    bits: Vec<u64>,
    stride: usize,
    horizon: usize,
}

pub const PAID: usize = 0;
pub const MULTI: usize = 1;
pub const ACTIVE: usize = 2;

/// One user's age bitsets.
pub struct UserBits<'a> {
    words: &'a [u64],
    horizon: usize,
}

impl UserBits<'_> {
    /// Calls `f(age)` for every age set in bitset `kind`.
    #[inline]
    pub fn for_each_age(&self, kind: usize, mut f: impl FnMut(usize)) {
        if let [word] = self.words {
            // One word holds all three bitsets (horizon ≤ 21): shift this one down and walk it.
            let mut x = (word >> (kind * self.horizon)) & ((1u64 << self.horizon) - 1);
            while x != 0 {
                f(x.trailing_zeros() as usize);
                x &= x - 1;
            }
            return;
        }
        let (start, end) = (kind * self.horizon, (kind + 1) * self.horizon);
        for (wi, &word) in self.words.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let b = wi * 64 + x.trailing_zeros() as usize;
                if b >= start && b < end {
                    f(b - start);
                }
                x &= x - 1;
            }
        }
    }
}

impl Users {
    pub fn new() -> Self {
        Users { entries: vec![VACANT; 16], mask: 15, len: 0, first: Vec::new(), bits: Vec::new(), stride: 0, horizon: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts loading the bucket of `hash`, to be probed a few rows later.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        prefetch_read(self.entries.as_ptr().wrapping_add(hash as usize & self.mask));
    }

    /// Second prefetch stage: once the bucket is in cache, start loading the user's state.
    #[inline(always)]
    pub fn prefetch_state(&self, key: u64, hash: u64) {
        let e = &self.entries[self.probe(key, hash)];
        if e.slot != EMPTY {
            if self.first.is_empty() {
                prefetch_read(self.bits.as_ptr().wrapping_add(e.slot as usize * self.stride));
            } else {
                prefetch_read(self.first.as_ptr().wrapping_add(e.slot as usize));
            }
        }
    }

    /// Bucket holding `key`, or the vacant bucket where it would go.
    #[inline(always)]
    fn probe(&self, key: u64, hash: u64) -> usize {
        let mut i = hash as usize & self.mask;
        loop {
            let e = &self.entries[i];
            if e.slot == EMPTY || e.key == key {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.entries, vec![VACANT; (self.mask + 1) * 2]);
        self.mask = self.mask * 2 + 1;
        for e in old.into_iter().filter(|e| e.slot != EMPTY) {
            let i = self.probe(e.key, hash_key(e.key));
            self.entries[i] = e;
        }
    }

    /// Keeps the earliest (ts, row) per user. Returns true when the user is new.
    #[inline]
    pub fn assign(&mut self, rec: &FirstRec, hash: u64) -> bool {
        let i = self.probe(rec.key, hash);
        let e = self.entries[i];
        if e.slot != EMPTY {
            let f = &mut self.first[e.slot as usize];
            if (rec.ts, rec.row) < (f.ts, f.row) {
                *f = First { ts: rec.ts, row: rec.row, segment: rec.segment };
            }
            return false;
        }
        let slot = self.first.len() as u32;
        self.first.push(First { ts: rec.ts, row: rec.row, segment: rec.segment });
        self.entries[i] = Entry { key: rec.key, slot, group: NO_GROUP };
        self.len += 1;
        if self.len * 2 > self.mask + 1 {
            self.grow();
        }
        true
    }

    /// Sets each user's group (its (segment, cohort) index) and makes room for the age bitsets.
    pub fn seal(&mut self, group_of: impl Fn(&First) -> u32, horizon: usize) {
        for e in self.entries.iter_mut().filter(|e| e.slot != EMPTY) {
            e.group = group_of(&self.first[e.slot as usize]);
        }
        self.horizon = horizon;
        self.stride = (3 * horizon).div_ceil(64);
        // The earliest rows are no longer needed once groups are known: free them before the bitsets
        // are allocated, so the two never take memory at the same time.
        let users = self.first.len();
        self.first = Vec::new();
        self.bits = vec![0; users * self.stride];
    }

    /// Calls `f(group, bits)` for every user.
    pub fn for_each_user(&self, mut f: impl FnMut(u32, UserBits<'_>)) {
        let w = self.stride;
        for e in self.entries.iter().filter(|e| e.slot != EMPTY) {
            let words = &self.bits[e.slot as usize * w..(e.slot as usize + 1) * w];
            f(e.group, UserBits { words, horizon: self.horizon });
        }
    }

    /// Word index and mask of bit `kind` at `age` for the user in `slot`.
    #[inline]
    fn bit(&self, slot: u32, kind: usize, age: u32) -> (usize, u64) {
        let b = kind * self.horizon + age as usize;
        (slot as usize * self.stride + (b >> 6), 1u64 << (b & 63))
    }
}

impl Default for Users {
    fn default() -> Self {
        Self::new()
    }
}

/// Dense cell accumulators, `groups × horizon`, indexed `group * horizon + age`.
#[derive(Clone, Default)]
pub struct Cells {
    pub rows: Vec<u64>,
    pub gross: Vec<i128>,
    pub refunds: Vec<i128>,
    pub orders: Vec<u64>,
    pub activity_rows: Vec<u64>,
}

impl Cells {
    pub fn new(n: usize) -> Self {
        Cells {
            rows: vec![0; n],
            gross: vec![0; n],
            refunds: vec![0; n],
            orders: vec![0; n],
            activity_rows: vec![0; n],
        }
    }

    /// Net amount of a cell: gross plus refunds (derived, so the hot path adds one number less).
    pub fn net(&self, cell: usize) -> i128 {
        self.gross[cell] + self.refunds[cell]
    }

    pub fn merge(&mut self, other: &Cells) {
        fn add<T: Copy + std::ops::AddAssign>(a: &mut [T], b: &[T]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += *y;
            }
        }
        add(&mut self.rows, &other.rows);
        add(&mut self.gross, &other.gross);
        add(&mut self.refunds, &other.refunds);
        add(&mut self.orders, &other.orders);
        add(&mut self.activity_rows, &other.activity_rows);
    }
}

/// What the attribution passes need to know about cohorts.
pub struct Attribution<'a> {
    pub horizon: u32,
    /// Cohort period of each group.
    pub group_cohort: &'a [i32],
    /// Reason for rows of users not found: `UnknownUser` (signups given) or `NeverPaid`.
    pub missing: Reason,
}

impl Users {
    #[inline(always)]
    fn find(&self, key: u64, hash: u64) -> Option<Entry> {
        let e = self.entries[self.probe(key, hash)];
        (e.slot != EMPTY).then_some(e)
    }

    /// Attributes one order to its cell; returns the reason it was not used, if any.
    #[inline]
    pub fn attribute_order(&mut self, rec: &CellRec, hash: u64, at: &Attribution<'_>, cells: &mut Cells, tally: &mut Tally) {
        let Some(e) = self.find(rec.key, hash) else {
            tally.add(at.missing, rec.amount);
            return;
        };
        let Some(age) = self.age(e.group, rec.period, at, tally, rec.amount) else { return };
        let cell = e.group as usize * at.horizon as usize + age as usize;
        cells.rows[cell] += 1;
        if rec.amount > 0 {
            cells.gross[cell] += rec.amount as i128;
        } else {
            cells.refunds[cell] += rec.amount as i128;
        }
        if rec.paying {
            cells.orders[cell] += 1;
            let (paid, paid_mask) = self.bit(e.slot, PAID, age);
            if self.bits[paid] & paid_mask != 0 {
                let (multi, multi_mask) = self.bit(e.slot, MULTI, age);
                self.bits[multi] |= multi_mask;
            }
            self.bits[paid] |= paid_mask;
        }
    }

    /// Marks a user active at an age.
    #[inline]
    pub fn attribute_activity(&mut self, rec: &CellRec, hash: u64, at: &Attribution<'_>, cells: &mut Cells, tally: &mut Tally) {
        let Some(e) = self.find(rec.key, hash) else {
            tally.add(at.missing, 0);
            return;
        };
        let Some(age) = self.age(e.group, rec.period, at, tally, 0) else { return };
        let cell = e.group as usize * at.horizon as usize + age as usize;
        cells.activity_rows[cell] += 1;
        let (word, mask) = self.bit(e.slot, ACTIVE, age);
        self.bits[word] |= mask;
    }

    #[inline]
    fn age(&self, group: u32, period: i32, at: &Attribution<'_>, tally: &mut Tally, amount: i64) -> Option<u32> {
        let age = period as i64 - at.group_cohort[group as usize] as i64;
        if age < 0 {
            tally.add(Reason::BeforeCohort, amount);
            None
        } else if age >= at.horizon as i64 {
            tally.add(Reason::BeyondHorizon, amount);
            None
        } else {
            Some(age as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_balanced_for_sequential_keys() {
        let shards = 7;
        let mut counts = vec![0usize; shards];
        for k in 0..1_000_000u64 {
            counts[shard_of(hash_key(k), shards)] += 1;
        }
        let expected = 1_000_000 / shards;
        assert!(counts.iter().all(|&c| c > expected * 9 / 10 && c < expected * 11 / 10));
    }

    #[test]
    fn bitsets_spanning_several_words() {
        for horizon in [1u32, 21, 22, 64, 100, 1000] {
            let mut u = Users::new();
            u.assign(&FirstRec { key: 9, ts: 0, row: 0, segment: 0 }, hash_key(9));
            u.seal(|_| 0, horizon as usize);
            let ages: Vec<u32> = [0, horizon / 2, horizon - 1].into_iter().collect();
            for &a in &ages {
                let (w, m) = u.bit(0, PAID, a);
                u.bits[w] |= m;
                let (w, m) = u.bit(0, ACTIVE, a);
                u.bits[w] |= m;
            }
            u.for_each_user(|_, bits| {
                for kind in [PAID, MULTI, ACTIVE] {
                    let mut seen = vec![];
                    bits.for_each_age(kind, |a| seen.push(a as u32));
                    let mut want = if kind == MULTI { vec![] } else { ages.clone() };
                    want.dedup();
                    assert_eq!(seen, want, "horizon {horizon} kind {kind}");
                }
            });
        }
    }

    #[test]
    fn index_grows_and_finds_every_user() {
        let mut u = Users::new();
        let key = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for k in 0..100_000u64 {
            assert!(u.assign(&FirstRec { key: key(k), ts: k as i64, row: k, segment: 0 }, hash_key(key(k))));
        }
        assert_eq!(u.len(), 100_000);
        for k in 0..100_000u64 {
            assert!(!u.assign(&FirstRec { key: key(k), ts: -1, row: 0, segment: 1 }, hash_key(key(k))));
            assert!(u.find(key(k), hash_key(key(k))).is_some());
        }
        assert!(u.find(key(100_001), hash_key(key(100_001))).is_none());
        assert!(u.first.iter().all(|f| f.ts == -1 && f.segment == 1));
    }

    #[test]
    fn assign_keeps_the_earliest_row_whatever_the_order() {
        let recs = [
            FirstRec { key: 7, ts: 50, row: 3, segment: 1 },
            FirstRec { key: 7, ts: 40, row: 9, segment: 2 },
            FirstRec { key: 7, ts: 40, row: 2, segment: 3 },
        ];
        for perm in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let mut u = Users::new();
            let new: Vec<bool> = perm.iter().map(|&i| u.assign(&recs[i], hash_key(recs[i].key))).collect();
            assert_eq!(new.iter().filter(|&&n| n).count(), 1);
            assert_eq!(u.len(), 1);
            assert_eq!(u.first[0].segment, 3);
            assert_eq!(u.first[0].row, 2);
        }
    }

    #[test]
    fn attribution_counts_cells_bits_and_reasons() {
        let mut u = Users::new();
        u.assign(&FirstRec { key: 1, ts: 0, row: 0, segment: 0 }, hash_key(1));
        u.seal(|_| 0, 3);
        let at = Attribution { horizon: 3, group_cohort: &[10], missing: Reason::NeverPaid };
        let mut cells = Cells::new(3);
        let mut tally = Tally::default();
        let order = |key, period, amount| CellRec { key, amount, period, paying: amount > 0 };
        for rec in [order(1, 10, 500), order(1, 10, 200), order(1, 11, -100), order(1, 9, 5), order(1, 13, 7), order(2, 10, 9)] {
            u.attribute_order(&rec, hash_key(rec.key), &at, &mut cells, &mut tally);
        }
        assert_eq!(cells.rows, vec![2, 1, 0]);
        assert_eq!((0..3).map(|i| cells.net(i)).collect::<Vec<_>>(), vec![700, -100, 0]);
        assert_eq!(cells.gross, vec![700, 0, 0]);
        assert_eq!(cells.refunds, vec![0, -100, 0]);
        assert_eq!(cells.orders, vec![2, 0, 0]);
        assert_eq!(tally.rows(Reason::BeforeCohort), 1);
        assert_eq!(tally.rows(Reason::BeyondHorizon), 1);
        assert_eq!(tally.rows(Reason::NeverPaid), 1);
        assert_eq!(tally.amount(Reason::NeverPaid), 9);
        let mut seen = 0;
        u.for_each_user(|g, bits| {
            let mut ages = [vec![], vec![], vec![]];
            for kind in [PAID, MULTI, ACTIVE] {
                bits.for_each_age(kind, |a| ages[kind].push(a));
            }
            assert_eq!((g, &ages), (0, &[vec![0], vec![0], vec![]]));
            seen += 1;
        });
        assert_eq!(seen, 1);
    }
}
