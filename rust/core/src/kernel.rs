//! The sharded kernel.
//!
//! Users are split into shards by their id (a hash of their key), one shard per worker thread.
//! Every worker decodes its share of a chunk of rows and routes each valid row, packed into one
//! small record, to its user's shard; then every shard walks the records of its own users. A user
//! lives in exactly one shard, so per-user state (cohort, first paying order, bitsets of ages with
//! a payment or an activity) needs no locks. Lookups use open addressing with software prefetch a
//! few rows ahead, which hides most of the memory latency of a table larger than cache, and each
//! bucket holds its user's state next to the id (earliest timestamp, then group and age bitsets),
//! so a row usually costs one cache miss, not two. The second pass over the orders does not even
//! probe: the first one notes where it found each row's user (`Trail`). Distinct counts are exact
//! popcounts and every sum is an integer, so the result is the same whatever the thread count or
//! batch sizes.

use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{out_of_memory, unwind_out_of_memory, Result};
use crate::reconcile::{Reason, Tally};

/// `n` copies of `value`, or an unwind with `AllocFailure` (no message printed): for allocations in
/// the workers' loops, which cannot return an error. The engine turns it into `OutOfMemory`.
pub fn vec_or_unwind<T: Clone>(n: usize, value: T, what: &str) -> Vec<T> {
    let mut v = reserved_or_unwind(n, what);
    v.resize(n, value);
    v
}

/// An empty vector with room for `n`, or an unwind with `AllocFailure` (see `vec_or_unwind`).
fn reserved_or_unwind<T>(n: usize, what: &str) -> Vec<T> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        unwind_out_of_memory(n.saturating_mul(size_of::<T>()), what);
    }
    v
}

/// `n` copies of `value` for a users' table, as `vec_or_unwind`. A table past `HUGE_PAGES_FROM`
/// bytes asks the kernel for transparent huge pages first: every row reaches a random bucket, and in
/// a table of gigabytes (tens of millions of users) each of those also missed the TLB.
pub fn table_or_unwind<T: Clone>(n: usize, value: T, what: &str) -> Vec<T> {
    let mut v = reserved_or_unwind(n, what);
    advise_huge_pages_for(&v);
    v.resize(n, value);
    v
}

/// Asks for huge pages for the memory `table` has reserved, before it is filled, when it holds at
/// least `HUGE_PAGES_FROM` bytes: a table whose rows each reach a random place.
pub(crate) fn advise_huge_pages_for<T>(table: &Vec<T>) {
    let bytes = table.capacity() * size_of::<T>();
    if bytes >= HUGE_PAGES_FROM {
        advise_huge_pages(table.as_ptr() as usize, bytes);
    }
}

/// One huge page. At 1.57M users (shards of 32 MiB) huge pages made the run 8–13 % faster, and at
/// 100K users they changed nothing (docs/engine.md); a smaller table holds no whole huge page.
const HUGE_PAGES_FROM: usize = 2 << 20;

/// Advice only: the 2 MiB-aligned part of `[start, start + len)` may be backed by huge pages.
fn advise_huge_pages(start: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (begin, end) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
        if end > begin {
            // SAFETY: advice over memory this process just reserved; it changes no contents.
            unsafe { libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

/// A user's id: its key through murmur3's 64-bit finalizer. Cheap, and it mixes every input bit into
/// both the high bits (shards) and the low bits (buckets). Every step of it can be undone (xor-shifts
/// by half the width or more, multiplications by odd numbers), so two keys share an id only if they
/// are equal: the tables keep ids, not keys, and a row carries one word for its user, not two.
#[inline]
pub fn hash_key(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// How a run turns user keys into the ids its shards keep, and picks each id's shard.
///
/// `Hashed`: the id is `hash_key(key)` and the shard comes from its high bits. `Dense`: for integer
/// keys known to lie in a narrow range from `min` (see `dense_ids`): the key's offset from `min`
/// (wrapping, so every key has one), whose low `shard_bits` bits pick the shard and whose remaining
/// bits are the id. Within a shard, the ids of the range are then consecutive numbers, each in a
/// bucket of its own once the table has as many buckets as the range has ids per shard: probing
/// ends at the home bucket. Both are one-to-one on keys within a shard, so a key outside the range
/// only costs a longer probe, never a wrong answer. The ids never leave the run: partials hold no
/// ids, and the monthly state hashes keys itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMap {
    Hashed,
    Dense { min: u64, shard_bits: u32 },
}

impl IdMap {
    /// The id of `key` and its shard, among `shards`.
    #[inline(always)]
    pub fn place(self, key: u64, shards: usize) -> (u64, usize) {
        match self {
            IdMap::Hashed => {
                let id = hash_key(key);
                (id, shard_of(id, shards))
            }
            IdMap::Dense { min, shard_bits } => {
                let offset = key.wrapping_sub(min);
                #[allow(clippy::cast_possible_truncation)] // below `shards`
                let shard = (offset & ((1u64 << shard_bits) - 1)) as usize;
                (offset >> shard_bits, shard)
            }
        }
    }
}

/// The dense id map for integer keys `min ..= max` of `rows` rows over `shards` shards (a power of
/// two), and the table size each shard is given up front, or `None` when the keys are not dense.
///
/// Dense means: a table per shard with a bucket for every id of the range, at most half full, takes
/// no more than 8 bytes per row (the range is at most an eighth of the rows), or no more than the
/// smallest table. Such a table never grows, and every user of the range is in its home bucket.
/// The rule needs only the range and the row count, which one read of the key column gives; the
/// number of distinct keys would need a second.
pub fn dense_ids(min: u64, max: u64, rows: u64, shards: usize) -> Option<(IdMap, usize)> {
    if !shards.is_power_of_two() || max < min {
        return None;
    }
    let range = (max - min).checked_add(1)?;
    let per_shard = range.div_ceil(shards as u64);
    let capacity = usize::try_from(per_shard.checked_mul(2)?.checked_next_power_of_two()?).ok()?.max(MIN_CAPACITY);
    if capacity > MIN_CAPACITY && range > rows / 8 {
        return None;
    }
    Some((IdMap::Dense { min, shard_bits: shards.trailing_zeros() }, capacity))
}

/// Buckets of a new table.
const MIN_CAPACITY: usize = 1 << 12;

/// The bucket of a user id in a table of `mask + 1` buckets: its low bits. (On a 32-bit target
/// the cast drops high bits the mask drops anyway.)
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
fn home_bucket(id: u64, mask: usize) -> usize {
    id as usize & mask
}

/// A sealed bucket's group: the low `group_bits` (at most 32) bits of its value.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)]
fn group_of(val: u64, group_mask: u64) -> u32 {
    (val & group_mask) as u32
}

/// Which of `shards` shards holds a user id (from its high bits; buckets use the low bits).
#[inline]
pub fn shard_of(id: u64, shards: usize) -> usize {
    (((id >> 32) * shards as u64) >> 32) as usize
}

/// Asks for the cache line holding `ptr` (a hint: it never faults, whatever the address).
#[inline(always)]
pub fn prefetch_read<T>(ptr: *const T) {
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
    /// The user's id (`hash_key`).
    pub user: u64,
    pub ts: i64,
    pub segment: u32,
}

/// A row attributed to a cell: an order, or an activity (then `amount` is 0 and `paying` false).
#[derive(Clone, Copy, Debug)]
pub struct CellRec {
    /// The user's id (`hash_key`).
    pub user: u64,
    pub amount: i64,
    /// Amount − cost (0 without a cost column).
    pub profit: i64,
    pub period: i32,
    pub paying: bool,
}

/// A bucket: a user id and its state, inline so that a row costs one cache miss.
///
/// While cohorts are found, `val` is the earliest timestamp seen. Once sealed, it holds the user's
/// group in its low `group_bits` bits and, above them, the age bitsets when they fit ("inline"),
/// else the user's row in `bits`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    key: u64,
    val: u64,
}

/// Id marking a vacant bucket. A user with this id lives in the extra bucket at index `capacity`.
const VACANT_KEY: u64 = 0x9e37_79b9_7f4a_7c15;
const VACANT: Entry = Entry { key: VACANT_KEY, val: 0 };

/// Buckets sorted out at a time by `occupied_in`.
const WALK_CHUNK: usize = 512;

/// Writes the offsets of the occupied buckets of `chunk` (at most `WALK_CHUNK` long) to `found`, in
/// order, and returns how many there are. Branch-free: about a third of the buckets are occupied, in
/// no pattern a branch predictor could learn, so the walks over whole tables (growing, sealing, the
/// final counts) were mostly mispredictions.
#[inline(always)]
fn occupied_in(chunk: &[Entry], found: &mut [u32; WALK_CHUNK]) -> usize {
    let mut n = 0;
    for (j, e) in chunk.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation)] // j < WALK_CHUNK
        let j = j as u32;
        found[n] = j;
        n += usize::from(e.key != VACANT_KEY);
    }
    n
}

/// Calls `f(i)` for every occupied bucket `i` of `entries`, in order.
fn for_each_occupied_in(entries: &[Entry], mut f: impl FnMut(usize)) {
    let mut found = [0u32; WALK_CHUNK];
    for (c, chunk) in entries.chunks(WALK_CHUNK).enumerate() {
        let n = occupied_in(chunk, &mut found);
        found[..n].iter().for_each(|&j| f(c * WALK_CHUNK + j as usize));
    }
}

/// Where each row a shard took in the first pass over orders was found: its bucket's distance from
/// the user's home bucket, 4 bits per row, in the order the shard took the rows. The second pass
/// takes the same rows in the same order (routing depends only on the user, and each shard sees its
/// rows in input order), so it goes straight to the bucket instead of probing: the probe's
/// compare-and-step branch, mispredicted whenever a user is not in its home bucket, is what stalled
/// that loop's prefetched loads. Rows recorded before the table last grew (their distances changed)
/// and the rare far-displaced rows are marked to be probed.
#[derive(Default)]
struct Trail {
    /// Two rows per byte, the earlier one in the low half.
    nibbles: Vec<u8>,
    len: usize,
    /// Rows before this one were recorded before the table last grew.
    valid_from: usize,
    /// Next row to replay.
    pos: usize,
}

/// A row to probe for: not paying in the first pass, recorded before a growth, or too far from home.
const PROBE: u8 = 15;

impl Trail {
    #[inline(always)]
    fn push(&mut self, distance: u8) {
        if self.len & 1 == 0 {
            if self.nibbles.len() == self.nibbles.capacity() {
                self.grow();
            }
            self.nibbles.push(distance);
        } else if let Some(last) = self.nibbles.last_mut() {
            *last |= distance << 4;
        }
        self.len += 1;
    }

    #[cold]
    fn grow(&mut self) {
        let more = self.nibbles.capacity().max(1 << 16);
        if self.nibbles.try_reserve(more).is_err() {
            unwind_out_of_memory(more * 2, "the trail of the first pass");
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> u8 {
        if i < self.valid_from {
            return PROBE;
        }
        self.nibbles.get(i >> 1).map_or(PROBE, |b| (b >> ((i & 1) * 4)) & 15)
    }
}

/// What a shard does with its trail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TrailMode {
    Off,
    Record,
    Replay,
}

pub const PAID: usize = 0;
pub const MULTI: usize = 1;
pub const ACTIVE: usize = 2;

/// One user's age bitsets.
pub struct UserBits<'a> {
    words: &'a [u64],
    horizon: usize,
}

impl<'a> UserBits<'a> {
    /// The bitsets of one user kept outside a shard (the monthly state): bitset `kind` at bits
    /// `kind × horizon ..` of `words`.
    pub fn new(words: &'a [u64], horizon: usize) -> Self {
        UserBits { words, horizon }
    }

    /// Calls `f(age)` for every age set in bitset `kind`.
    #[inline]
    pub fn for_each_age(&self, kind: usize, mut f: impl FnMut(usize)) {
        if let [word] = self.words {
            // One word holds every bitset: shift this one down and walk it.
            let (start, end) = (kind * self.horizon, ((kind + 1) * self.horizon).min(64));
            if start >= end {
                return;
            }
            let mut x = (word >> start) & (u64::MAX >> (64 - (end - start)));
            while x != 0 {
                f(x.trailing_zeros() as usize);
                x &= x - 1;
            }
            return;
        }
        let (start, end) = (kind * self.horizon, (kind + 1) * self.horizon);
        self.for_each_bit(start, end, |b| f(b - start));
    }

    /// Adds 1 to `counts[age]` for every age set in bitset `kind` (`counts` has one slot per age).
    /// In the one-word case it goes through every age without a branch: the number of ages set
    /// differs from user to user, and a loop over them mispredicts its exit about once a user.
    #[inline]
    pub fn count_ages(&self, kind: usize, counts: &mut [u64]) {
        if let [word] = self.words {
            let start = kind * self.horizon;
            let bits = if start < 64 { word >> start } else { 0 };
            for (a, count) in counts.iter_mut().enumerate().take(self.horizon.min(64usize.saturating_sub(start))) {
                *count += (bits >> a) & 1;
            }
            return;
        }
        self.for_each_age(kind, |a| counts[a] += 1);
    }

    /// Calls `f(age)` for every age ≥ 1 at which the user paid, having paid at the age before too
    /// (the numerator of the retention rate).
    #[inline]
    pub fn for_each_retained_age(&self, mut f: impl FnMut(usize)) {
        let mut previous = usize::MAX;
        self.for_each_age(PAID, |a| {
            if a > 0 && previous == a - 1 {
                f(a);
            }
            previous = a;
        });
    }

    /// The two lowest ages set in bitset `kind`.
    #[inline]
    pub fn lowest_two(&self, kind: usize) -> (Option<usize>, Option<usize>) {
        if let [word] = self.words {
            let (start, end) = (kind * self.horizon, ((kind + 1) * self.horizon).min(64));
            if start >= end {
                return (None, None);
            }
            let x = (word >> start) & (u64::MAX >> (64 - (end - start)));
            let lowest = |x: u64| (x != 0).then(|| x.trailing_zeros() as usize);
            return (lowest(x), lowest(x & x.wrapping_sub(1)));
        }
        let mut found = (None, None);
        self.for_each_age(kind, |a| match found {
            (None, _) => found.0 = Some(a),
            (Some(_), None) => found.1 = Some(a),
            _ => {}
        });
        found
    }

    /// How many ages below `upto` are set in bitset `kind`.
    #[inline]
    pub fn count_below(&self, kind: usize, upto: usize) -> u32 {
        let (start, end) = (kind * self.horizon, kind * self.horizon + upto.min(self.horizon));
        if let [word] = self.words {
            if start >= end || start >= 64 {
                return 0;
            }
            let width = end.min(64) - start;
            return ((word >> start) & (u64::MAX >> (64 - width))).count_ones();
        }
        let mut n = 0;
        self.for_each_bit(start, end, |_| n += 1);
        n
    }

    /// Calls `f(bit)` for every set bit in `start..end` of the words.
    fn for_each_bit(&self, start: usize, end: usize, mut f: impl FnMut(usize)) {
        for (wi, &word) in self.words.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let b = wi * 64 + x.trailing_zeros() as usize;
                if b >= start && b < end {
                    f(b);
                }
                x &= x - 1;
            }
        }
    }
}

/// One shard's users: an open-addressing table (linear probing, at most half full) whose buckets
/// hold the per-user state inline. Aligned so shards owned by different threads never share a
/// cache line.
#[repr(align(128))]
pub struct Users {
    /// `capacity + 1` buckets: the last one is for the user whose id is `VACANT_KEY`.
    entries: Vec<Entry>,
    mask: usize,
    len: usize,
    vacant_key_used: bool,
    /// With segments: the segment of each bucket's earliest row, parallel to `entries`. Empty
    /// otherwise.
    first_segment: Vec<u32>,
    /// With segments: rows that tied with a user's earliest row so far but carry another segment
    /// (user id, timestamp, segment). Rare; `resolve_ties` gives each user the smallest segment
    /// among its earliest rows, so that the result does not depend on the order of the rows.
    ties: Vec<(u64, i64, u32)>,
    tracks_segments: bool,
    /// After sealing: the low bits of `val` holding the group, and how the age bitsets are kept.
    group_bits: u32,
    inline_bits: bool,
    /// Age bitsets when they do not fit inline: `stride` words per user, bitset `kind` at bits
    /// `kind × horizon ..`.
    bits: Vec<u64>,
    stride: usize,
    horizon: usize,
    trail: Trail,
    trail_mode: TrailMode,
}

impl Users {
    /// An empty shard; `tracks_segments` keeps each user's segment (and the row that breaks ties).
    pub fn new(tracks_segments: bool) -> Self {
        Self::with_capacity(tracks_segments, MIN_CAPACITY)
    }

    /// An empty shard of `capacity` buckets (a power of two, at least `MIN_CAPACITY`).
    pub fn with_capacity(tracks_segments: bool, capacity: usize) -> Self {
        let mut users = Users {
            entries: Vec::new(),
            mask: 0,
            len: 0,
            vacant_key_used: false,
            first_segment: Vec::new(),
            ties: Vec::new(),
            tracks_segments,
            group_bits: 0,
            inline_bits: true,
            bits: Vec::new(),
            stride: 0,
            horizon: 0,
            trail: Trail::default(),
            trail_mode: TrailMode::Off,
        };
        users.allocate(capacity.max(MIN_CAPACITY).next_power_of_two());
        users
    }

    fn allocate(&mut self, capacity: usize) {
        self.entries = table_or_unwind(capacity + 1, VACANT, "a table of users");
        self.mask = capacity - 1;
        if self.tracks_segments {
            self.first_segment = vec_or_unwind(capacity + 1, 0, "the users' segments");
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts loading the home bucket of a user id, to be probed a few rows later.
    #[inline(always)]
    pub fn prefetch(&self, user: u64) {
        prefetch_read(self.entries.as_ptr().wrapping_add(home_bucket(user, self.mask)));
    }

    /// Whether some per-user state lives outside the table (then `prefetch_state` is worth calling).
    pub fn state_outside(&self) -> bool {
        !self.inline_bits
    }

    /// Second prefetch stage, for bitsets kept outside the table: once the bucket is in cache,
    /// start loading the user's bitsets.
    #[inline(always)]
    pub fn prefetch_state(&self, user: u64) {
        if self.inline_bits {
            return;
        }
        let e = &self.entries[self.probe(user)];
        if e.key == user {
            prefetch_read(self.bits.as_ptr().wrapping_add((e.val >> 32) as usize * self.stride));
        }
    }

    /// Bucket holding a user id, or the vacant bucket where it would go.
    #[inline(always)]
    fn probe(&self, user: u64) -> usize {
        if user == VACANT_KEY {
            return self.mask + 1;
        }
        let mut i = home_bucket(user, self.mask);
        loop {
            let k = self.entries[i].key;
            if k == user || k == VACANT_KEY {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline(always)]
    fn occupied(&self, i: usize) -> bool {
        if i > self.mask {
            self.vacant_key_used
        } else {
            self.entries[i].key != VACANT_KEY
        }
    }

    /// Calls `f(i)` for every occupied bucket `i`, in order.
    fn for_each_occupied(&self, mut f: impl FnMut(usize)) {
        let capacity = self.mask + 1;
        for_each_occupied_in(&self.entries[..capacity], &mut f);
        if self.vacant_key_used {
            f(capacity);
        }
    }

    /// `for_each_occupied` for a walk that changes the buckets: `f(self, i)` (the buckets are
    /// borrowed one chunk at a time, so `f` may write to them).
    fn for_each_occupied_mut(&mut self, mut f: impl FnMut(&mut Self, usize)) {
        let capacity = self.mask + 1;
        let mut found = [0u32; WALK_CHUNK];
        for start in (0..capacity).step_by(WALK_CHUNK) {
            let n = occupied_in(&self.entries[start..capacity.min(start + WALK_CHUNK)], &mut found);
            found[..n].iter().for_each(|&j| f(self, start + j as usize));
        }
        if self.vacant_key_used {
            f(self, capacity);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.entries);
        let old_segment = std::mem::take(&mut self.first_segment);
        let old_cap = self.mask + 1;
        self.allocate(old_cap * 2);
        // The extra bucket keeps its place at the end.
        let last = self.mask + 1;
        self.entries[last] = old[old_cap];
        if self.tracks_segments {
            self.first_segment[last] = old_segment[old_cap];
        }
        for_each_occupied_in(&old[..old_cap], |j| {
            let i = self.probe(old[j].key);
            self.entries[i] = old[j];
            if self.tracks_segments {
                self.first_segment[i] = old_segment[j];
            }
        });
        // Every bucket moved: the distances recorded so far no longer hold.
        self.trail.valid_from = self.trail.len;
    }

    /// Keeps the earliest (ts, row) per user. Returns true when the user is new.
    #[inline(always)]
    pub fn assign(&mut self, rec: &FirstRec) -> bool {
        let i = self.probe(rec.user);
        if self.trail_mode == TrailMode::Record {
            // Before any growth below, which invalidates the trail so far.
            let distance = i.wrapping_sub(home_bucket(rec.user, usize::MAX)) & self.mask;
            #[allow(clippy::cast_possible_truncation)] // distance < PROBE
            self.trail.push(if i <= self.mask && distance < PROBE as usize { distance as u8 } else { PROBE });
        }
        if !self.tracks_segments {
            // Without segments, branch-free: whether the user is new and whether this row is its
            // earliest so far are both coin flips to the branch predictor, and a mispredicted
            // branch here throws away the loads in flight for the rows behind it.
            let occupied = self.occupied(i);
            let earliest = if occupied { (self.entries[i].val as i64).min(rec.ts) } else { rec.ts };
            self.entries[i] = Entry { key: rec.user, val: earliest as u64 };
            self.len += usize::from(!occupied);
            if i > self.mask {
                self.vacant_key_used = true;
            }
            if self.len * 2 > self.mask + 1 {
                self.grow();
            }
            return !occupied;
        }
        // With segments, a row that ties with the earliest on the timestamp but carries another
        // segment is noted, for `resolve_ties`.
        if self.occupied(i) {
            let earliest = self.entries[i].val as i64;
            if rec.ts < earliest {
                self.entries[i].val = rec.ts as u64;
                self.first_segment[i] = rec.segment;
            } else if rec.ts == earliest && rec.segment != self.first_segment[i] {
                self.ties.push((rec.user, rec.ts, rec.segment));
            }
            return false;
        }
        self.entries[i] = Entry { key: rec.user, val: rec.ts as u64 };
        self.first_segment[i] = rec.segment;
        if i > self.mask {
            self.vacant_key_used = true;
        }
        self.len += 1;
        if self.len * 2 > self.mask + 1 {
            self.grow();
        }
        true
    }

    /// Starts recording each assigned row's bucket (see `Trail`), for a second pass over the same
    /// rows in the same order. Costs half a byte per row.
    pub fn record_trail(&mut self) {
        self.trail = Trail::default();
        self.trail_mode = TrailMode::Record;
    }

    /// A row the first pass takes but does not assign (while recording): the second pass will
    /// probe for it.
    #[inline(always)]
    pub fn pass_over(&mut self) {
        if self.trail_mode == TrailMode::Record {
            self.trail.push(PROBE);
        }
    }

    /// Switches a recorded trail to replay: `attribute_order` then takes each row's bucket from it.
    pub fn replay_trail(&mut self) {
        if self.trail_mode == TrailMode::Record {
            self.trail_mode = TrailMode::Replay;
            self.trail.pos = 0;
        }
    }

    /// Drops the trail (after the second pass).
    pub fn end_trail(&mut self) {
        self.trail_mode = TrailMode::Off;
        self.trail = Trail::default();
    }

    /// Whether rows are being replayed from the trail.
    pub fn replaying(&self) -> bool {
        self.trail_mode == TrailMode::Replay
    }

    /// While replaying: starts loading the bucket of the row `ahead` rows after the next one, whose
    /// user id is `user`.
    #[inline(always)]
    pub fn prefetch_replayed(&self, ahead: usize, user: u64) {
        let distance = self.trail.get(self.trail.pos + ahead) as usize;
        let distance = if distance == PROBE as usize { 0 } else { distance };
        prefetch_read(self.entries.as_ptr().wrapping_add(home_bucket(user.wrapping_add(distance as u64), self.mask)));
    }

    /// Whether some user's earliest rows tie on the timestamp with different segments.
    pub fn has_ties(&self) -> bool {
        !self.ties.is_empty()
    }

    /// Gives every user whose earliest rows tie on the timestamp the smallest of their segments,
    /// by `rank` (segment code → its place in the order of the segment values): a rule on the
    /// rows' values, not their order. Before `map_firsts`.
    pub fn resolve_ties(&mut self, rank: impl Fn(u32) -> u32) {
        for (user, ts, segment) in std::mem::take(&mut self.ties) {
            let i = self.probe(user);
            if self.occupied(i) && self.entries[i].val as i64 == ts && rank(segment) < rank(self.first_segment[i]) {
                self.first_segment[i] = segment;
            }
        }
    }

    /// Replaces every user's earliest timestamp `ts` by `f(ts, segment)` (before sealing): the
    /// engine turns each into the cohort period once, for both the list of groups and the seal.
    pub fn map_firsts(&mut self, mut f: impl FnMut(i64, u32) -> i64) {
        self.for_each_occupied_mut(|users, i| {
            let segment = if users.tracks_segments { users.first_segment[i] } else { 0 };
            users.entries[i].val = f(users.entries[i].val as i64, segment) as u64;
        });
    }

    /// Replaces each user's earliest value (timestamp or period) by its group (its (segment,
    /// cohort) index, below `groups`) and makes room for the age bitsets: `kinds` bitsets (2
    /// without activity, 3 with) of `horizon` ages each.
    pub fn seal(&mut self, mut group_of: impl FnMut(i64, u32) -> u32, groups: usize, horizon: usize, kinds: usize) {
        self.group_bits = usize::BITS - groups.saturating_sub(1).leading_zeros();
        self.horizon = horizon;
        self.inline_bits = self.group_bits as usize + kinds * horizon <= 64;
        let mut slot = 0u64;
        self.for_each_occupied_mut(|users, i| {
            let segment = if users.tracks_segments { users.first_segment[i] } else { 0 };
            let group = group_of(users.entries[i].val as i64, segment) as u64;
            users.entries[i].val = if users.inline_bits { group } else { group | (slot << 32) };
            slot += 1;
        });
        // The segments are no longer needed once groups are known: free them before the bitsets
        // are allocated, so the two never take memory at the same time.
        self.first_segment = Vec::new();
        if !self.inline_bits {
            self.group_bits = 32;
            self.stride = (kinds * horizon).div_ceil(64);
            self.bits = table_or_unwind(self.len * self.stride, 0, "the users' age bitsets");
        }
    }

    /// Calls `f(group, bits)` for every user (after sealing).
    pub fn for_each_user(&self, mut f: impl FnMut(u32, UserBits<'_>)) {
        let group_mask = self.group_mask();
        self.for_each_occupied(|i| {
            let val = self.entries[i].val;
            let group = group_of(val, group_mask);
            if self.inline_bits {
                let word = [val >> self.group_bits];
                f(group, UserBits { words: &word, horizon: self.horizon });
            } else {
                let slot = (val >> 32) as usize;
                let words = &self.bits[slot * self.stride..(slot + 1) * self.stride];
                f(group, UserBits { words, horizon: self.horizon });
            }
        });
    }

    #[inline(always)]
    fn group_mask(&self) -> u64 {
        // At most 32 bits: groups are numbered by u32.
        (1u64 << self.group_bits) - 1
    }

    /// Sets bit `kind` at `age` for the user in bucket `i`; with `also_if_set`, also sets that
    /// bitset at the same age when the first bit was already set.
    #[inline(always)]
    fn set_bit(&mut self, i: usize, kind: usize, age: u32, also_if_set: Option<usize>) {
        let b = kind * self.horizon + age as usize;
        if self.inline_bits {
            let g = self.group_bits as usize;
            let val = self.entries[i].val;
            let mask = 1u64 << (g + b);
            let mut new = val | mask;
            if let Some(also) = also_if_set {
                let extra = 1u64 << (g + also * self.horizon + age as usize);
                new |= if val & mask != 0 { extra } else { 0 };
            }
            // Written back even when unchanged: whether a row sets a new bit is a coin flip to the
            // branch predictor, and a mispredicted branch here costs more than a dirty cache line.
            self.entries[i].val = new;
        } else {
            let slot = (self.entries[i].val >> 32) as usize * self.stride;
            let (w, mask) = (slot + (b >> 6), 1u64 << (b & 63));
            let was_set = self.bits[w] & mask != 0;
            self.bits[w] |= mask;
            if let (Some(also), true) = (also_if_set, was_set) {
                let b2 = also * self.horizon + age as usize;
                self.bits[slot + (b2 >> 6)] |= 1u64 << (b2 & 63);
            }
        }
    }
}

/// Dense cell sums, `groups × horizon`, indexed `group * horizon + age`.
#[derive(Clone, Default)]
pub struct Cells {
    pub rows: Vec<u64>,
    /// Sum of the positive amounts.
    pub gross: Vec<i128>,
    /// Sum of the non-positive amounts (≤ 0).
    pub refunds: Vec<i128>,
    /// Sum of the paying orders' amounts (`amount > min_amount`): ARPPU's and AOV's numerator.
    pub payments: Vec<i128>,
    /// Sum of every order's profit (amount − cost), refunds included (0 without a cost column).
    pub profit: Vec<i128>,
    pub orders: Vec<u64>,
    pub activity_rows: Vec<u64>,
}

/// Bytes one cell takes in `Cells`.
pub const CELL_BYTES: usize = 3 * size_of::<u64>() + 4 * size_of::<i128>();

impl Cells {
    pub fn new(n: usize) -> Result<Self> {
        use crate::error::try_vec;
        Ok(Cells {
            rows: try_vec(n, 0, "the cohort grid")?,
            gross: try_vec(n, 0, "the cohort grid")?,
            refunds: try_vec(n, 0, "the cohort grid")?,
            payments: try_vec(n, 0, "the cohort grid")?,
            profit: try_vec(n, 0, "the cohort grid")?,
            orders: try_vec(n, 0, "the cohort grid")?,
            activity_rows: try_vec(n, 0, "the cohort grid")?,
        })
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
        add(&mut self.payments, &other.payments);
        add(&mut self.profit, &other.profit);
        add(&mut self.orders, &other.orders);
        add(&mut self.activity_rows, &other.activity_rows);
    }
}

/// Where the attribution passes add a row to its cell.
pub trait CellAdd {
    fn add_order(&mut self, cell: usize, amount: i64, profit: i64, paying: bool);
    fn add_activity(&mut self, cell: usize);
}

impl CellAdd for Cells {
    #[inline(always)]
    fn add_order(&mut self, cell: usize, amount: i64, profit: i64, paying: bool) {
        self.rows[cell] += 1;
        self.profit[cell] += i128::from(profit);
        if amount > 0 {
            self.gross[cell] += i128::from(amount);
        } else {
            self.refunds[cell] += i128::from(amount);
        }
        self.orders[cell] += u64::from(paying);
        if paying {
            self.payments[cell] += i128::from(amount);
        }
    }

    #[inline(always)]
    fn add_activity(&mut self, cell: usize) {
        self.activity_rows[cell] += 1;
    }
}

/// Where a worker adds its rows' cells.
///
/// While every worker's own copy of the grid fits the memory budget (a month grid of 100 cohorts ×
/// 12 ages is 67 KB), each worker adds into its own (`Private`) and the copies are summed at the end.
/// A grid too large to copy per worker (day periods with long horizons) is kept once (`Shared`):
/// each worker notes its rows' cells in a small buffer and adds them in under a lock,
/// `PENDING_ROWS` at a time. The sums are the same either way. The passes pick the kind once per
/// share of rows, not once per row (see `engine::Pass::process_rows`).
pub enum CellSink {
    Private(Cells),
    Shared(SharedCells),
}

/// A worker's way into a grid shared by all the workers.
pub struct SharedCells {
    grid: Arc<Mutex<Cells>>,
    pending: Vec<Pending>,
}

/// A row's contribution to a shared grid, waiting to be added in.
#[derive(Clone, Copy)]
struct Pending {
    cell: u32,
    /// What the row adds: `PENDING_ORDER`, `PENDING_PAYING` or `PENDING_ACTIVITY`.
    what: u32,
    amount: i64,
    profit: i64,
}

const PENDING_ORDER: u32 = 0;
const PENDING_PAYING: u32 = 1;
const PENDING_ACTIVITY: u32 = 2;

/// Rows a worker buffers before adding them to a shared grid (256 KiB per worker).
pub const PENDING_ROWS: usize = 1 << 14;

impl Default for CellSink {
    fn default() -> Self {
        CellSink::Private(Cells::default())
    }
}

impl CellSink {
    /// One sink per worker over a grid of `n` cells: private copies while `workers` of them take
    /// at most `budget` bytes, else one shared grid. A grid whose cell numbers would not fit 32
    /// bits is reported as too large to allocate.
    pub fn for_workers(n: usize, workers: usize, budget: usize) -> Result<Vec<CellSink>> {
        if n.saturating_mul(CELL_BYTES).saturating_mul(workers) <= budget {
            return (0..workers).map(|_| Cells::new(n).map(CellSink::Private)).collect();
        }
        if u32::try_from(n).is_err() {
            return Err(out_of_memory(n.saturating_mul(CELL_BYTES), "the cohort grid (more than 2^32 cells)"));
        }
        let grid = Arc::new(Mutex::new(Cells::new(n)?));
        Ok((0..workers).map(|_| CellSink::Shared(SharedCells { grid: grid.clone(), pending: Vec::with_capacity(PENDING_ROWS) })).collect())
    }

    /// The sums of all the workers' sinks.
    pub fn total(sinks: Vec<CellSink>) -> Cells {
        let mut total: Option<Cells> = None;
        for sink in sinks {
            match sink {
                CellSink::Private(cells) => match total.as_mut() {
                    Some(t) => t.merge(&cells),
                    None => total = Some(cells),
                },
                CellSink::Shared(mut shared) => {
                    shared.flush();
                    // Every sink holds the same grid: the last one to let go of it takes it.
                    if let Ok(grid) = Arc::try_unwrap(shared.grid) {
                        total = Some(grid.into_inner().unwrap_or_else(PoisonError::into_inner));
                    }
                }
            }
        }
        total.unwrap_or_default()
    }
}

impl SharedCells {
    #[inline(always)]
    fn note(&mut self, row: Pending) {
        self.pending.push(row);
        if self.pending.len() == PENDING_ROWS {
            self.flush();
        }
    }

    /// Adds the buffered rows in.
    fn flush(&mut self) {
        let mut cells = self.grid.lock().unwrap_or_else(PoisonError::into_inner);
        for p in self.pending.drain(..) {
            let cell = p.cell as usize;
            match p.what {
                PENDING_ACTIVITY => cells.add_activity(cell),
                what => cells.add_order(cell, p.amount, p.profit, what == PENDING_PAYING),
            }
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // cell numbers of a shared grid fit 32 bits (`for_workers`)
impl CellAdd for SharedCells {
    #[inline(always)]
    fn add_order(&mut self, cell: usize, amount: i64, profit: i64, paying: bool) {
        self.note(Pending { cell: cell as u32, what: if paying { PENDING_PAYING } else { PENDING_ORDER }, amount, profit });
    }

    #[inline(always)]
    fn add_activity(&mut self, cell: usize) {
        self.note(Pending { cell: cell as u32, what: PENDING_ACTIVITY, amount: 0, profit: 0 });
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
    /// Bucket of a known user.
    #[inline(always)]
    fn find(&self, user: u64) -> Option<usize> {
        let i = self.probe(user);
        self.occupied(i).then_some(i)
    }

    /// The next row's bucket from the trail. It is checked against the user id (the same cache
    /// line), so a trail out of step with the rows costs a probe, never a wrong answer.
    #[inline(always)]
    fn replay(&mut self, user: u64) -> Option<usize> {
        let distance = self.trail.get(self.trail.pos);
        self.trail.pos += 1;
        if distance != PROBE {
            let i = home_bucket(user.wrapping_add(u64::from(distance)), self.mask);
            if self.entries[i].key == user && user != VACANT_KEY {
                return Some(i);
            }
        }
        self.find(user)
    }

    /// Attributes one order to its cell; returns the reason it was not used, if any.
    #[inline]
    pub fn attribute_order(&mut self, rec: &CellRec, at: &Attribution<'_>, cells: &mut impl CellAdd, tally: &mut Tally) {
        let found = if self.trail_mode == TrailMode::Replay { self.replay(rec.user) } else { self.find(rec.user) };
        let Some(i) = found else {
            tally.add(at.missing, rec.amount);
            return;
        };
        let group = group_of(self.entries[i].val, self.group_mask());
        let Some(age) = self.age(group, rec.period, at, tally, rec.amount) else { return };
        let cell = group as usize * at.horizon as usize + age as usize;
        cells.add_order(cell, rec.amount, rec.profit, rec.paying);
        if rec.paying {
            self.set_bit(i, PAID, age, Some(MULTI));
        }
    }

    /// Marks a user active at an age.
    #[inline]
    pub fn attribute_activity(&mut self, rec: &CellRec, at: &Attribution<'_>, cells: &mut impl CellAdd, tally: &mut Tally) {
        let Some(i) = self.find(rec.user) else {
            tally.add(at.missing, 0);
            return;
        };
        let group = group_of(self.entries[i].val, self.group_mask());
        let Some(age) = self.age(group, rec.period, at, tally, 0) else { return };
        let cell = group as usize * at.horizon as usize + age as usize;
        cells.add_activity(cell);
        self.set_bit(i, ACTIVE, age, None);
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
            #[allow(clippy::cast_possible_truncation)] // 0 ≤ age < horizon ≤ 1000
            Some(age as u32)
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_as_distinct_as_keys() {
        // Undo each step of `hash_key`: xor-shifts by 33 undo themselves, odd multipliers have
        // inverses modulo 2^64 (Newton's iteration).
        let inverse = |a: u64| (0..6).fold(a, |x: u64, _| x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x))));
        let unhash = |mut h: u64| {
            h ^= h >> 33;
            h = h.wrapping_mul(inverse(0xc4ce_b9fe_1a85_ec53));
            h ^= h >> 33;
            h = h.wrapping_mul(inverse(0xff51_afd7_ed55_8ccd));
            h ^ (h >> 33)
        };
        for k in (0..100_000u64).chain([u64::MAX, 1 << 63, VACANT_KEY]).chain((0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))) {
            assert_eq!(unhash(hash_key(k)), k);
        }
    }

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

    fn ages_of(u: &Users) -> Vec<(u32, [Vec<usize>; 3])> {
        let mut out = vec![];
        u.for_each_user(|g, bits| {
            let mut ages = [vec![], vec![], vec![]];
            for kind in [PAID, MULTI, ACTIVE] {
                bits.for_each_age(kind, |a| ages[kind].push(a));
            }
            out.push((g, ages));
        });
        out.sort();
        out
    }

    #[test]
    fn bitsets_inline_and_outside_the_table() {
        // (groups, horizon, kinds): inline while group bits + kinds × horizon ≤ 64.
        for (groups, horizon, kinds) in [(1, 1, 3), (2, 21, 3), (1, 32, 2), (16, 15, 3), (1 << 20, 22, 2), (3, 22, 3), (5, 64, 3), (2, 1000, 3)] {
            let mut u = Users::new(false);
            u.assign(&FirstRec { user: 9, ts: 0, segment: 0 });
            u.assign(&FirstRec { user: VACANT_KEY, ts: 0, segment: 0 });
            u.seal(|_, _| groups as u32 - 1, groups, horizon, kinds);
            assert_eq!(u.inline_bits, (usize::BITS - (groups - 1).leading_zeros()) as usize + kinds * horizon <= 64);
            let ages: Vec<u32> = vec![0, horizon as u32 / 2, horizon as u32 - 1];
            let i = u.find(9).unwrap();
            for &a in &ages {
                u.set_bit(i, PAID, a, Some(MULTI));
                if kinds == 3 {
                    u.set_bit(i, ACTIVE, a, None);
                }
            }
            u.set_bit(i, PAID, ages[1], Some(MULTI));
            let mut want_ages = ages.iter().map(|&a| a as usize).collect::<Vec<_>>();
            want_ages.dedup();
            let active = if kinds == 3 { want_ages.clone() } else { vec![] };
            let g = groups as u32 - 1;
            u.for_each_user(|_, bits| {
                for kind in [PAID, MULTI, ACTIVE] {
                    let (mut counted, mut walked) = (vec![0u64; horizon], vec![0u64; horizon]);
                    bits.count_ages(kind, &mut counted);
                    bits.for_each_age(kind, |a| walked[a] += 1);
                    assert_eq!(counted, walked, "horizon {horizon} kind {kind}");
                    for upto in [0, 1, horizon / 2, horizon / 2 + 1, horizon, horizon + 5] {
                        let mut below = 0;
                        bits.for_each_age(kind, |a| below += (a < upto) as u32);
                        assert_eq!(bits.count_below(kind, upto), below, "horizon {horizon} kind {kind} upto {upto}");
                    }
                }
            });
            assert_eq!(
                ages_of(&u),
                vec![(g, [vec![], vec![], vec![]]), (g, [want_ages.clone(), vec![ages[1] as usize], active])],
                "groups {groups} horizon {horizon} kinds {kinds}"
            );
        }
    }

    #[test]
    fn retained_ages_are_paid_ages_after_a_paid_age() {
        // Paid at ages 0, 1, 3, 4, 5 (and 39 with the long horizon); MULTI and ACTIVE bits around
        // them must not count.
        for horizon in [12usize, 40] {
            let mut words = vec![0u64; (3 * horizon).div_ceil(64)];
            let mut set = |kind: usize, age: usize| words[(kind * horizon + age) >> 6] |= 1 << ((kind * horizon + age) & 63);
            for a in [0, 1, 3, 4, 5] {
                set(PAID, a);
            }
            set(MULTI, 2);
            set(ACTIVE, 6);
            set(ACTIVE, 7);
            if horizon == 40 {
                set(PAID, 39);
            }
            let mut found = Vec::new();
            UserBits::new(&words, horizon).for_each_retained_age(|a| found.push(a));
            assert_eq!(found, vec![1, 4, 5], "horizon {horizon}");
        }
    }

    #[test]
    fn a_table_advised_huge_pages_holds_its_values() {
        // Past the threshold the memory is advised before it is filled: the advice must change no value.
        let n = HUGE_PAGES_FROM / size_of::<Entry>() + 3;
        let table = table_or_unwind(n, Entry { key: 7, val: 9 }, "a test table");
        assert_eq!(table.len(), n);
        assert!(table.iter().all(|e| e.key == 7 && e.val == 9));
    }

    #[test]
    fn index_grows_and_finds_every_user() {
        let mut u = Users::new(true);
        let key = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // key(1) is the vacant-bucket key: that user must be found like any other.
        assert_eq!(key(1), VACANT_KEY);
        for k in 0..100_000u64 {
            assert!(u.assign(&FirstRec { user: key(k), ts: k as i64, segment: 0 }));
        }
        assert_eq!(u.len(), 100_000);
        for k in 0..100_000u64 {
            assert!(!u.assign(&FirstRec { user: key(k), ts: -1, segment: 1 }));
            assert!(u.find(key(k)).is_some());
        }
        assert!(u.find(key(100_001)).is_none());
        let mut firsts = vec![];
        u.map_firsts(|ts, segment| {
            firsts.push((ts, segment));
            ts
        });
        assert_eq!(firsts, vec![(-1, 1); 100_000]);
    }

    #[test]
    fn trail_replays_every_row_to_its_bucket() {
        // Rows of 50k users (one with the vacant-bucket key), some not paying; the table grows
        // several times while recording.
        let key = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let rows: Vec<(u64, bool)> = (0..200_000u64).map(|r| (key(hash_key(r) % 50_000), r % 7 != 0)).collect();
        let mut u = Users::new(false);
        u.record_trail();
        for (r, &(k, paying)) in rows.iter().enumerate() {
            if paying {
                u.assign(&FirstRec { user: k, ts: r as i64, segment: 0 });
            } else {
                u.pass_over();
            }
        }
        u.seal(|_, _| 0, 1, 3, 2);
        u.replay_trail();
        assert!(u.replaying());
        // The trail is what answers: past the last growth, paying rows are not probed.
        let from_trail = (0..rows.len()).filter(|&i| u.trail.get(i) != PROBE).count();
        assert!(from_trail > rows.len() / 2, "{from_trail} rows from the trail");
        for &(k, _) in &rows {
            assert_eq!(u.replay(k), u.find(k));
        }
        // Out of step (rows in another order, or more rows than recorded): still right, by probing.
        u.replay_trail();
        u.trail.pos = 0;
        for &(k, _) in rows.iter().rev().chain(&rows) {
            assert_eq!(u.replay(k), u.find(k));
        }
        assert_eq!(u.replay(key(60_000)), None);
        u.end_trail();
        assert!(!u.replaying());
    }

    #[test]
    fn assign_keeps_the_earliest_row_whatever_the_order() {
        // Two rows tie on the earliest timestamp with segments 3 and 2: segment 2 is the smaller
        // (here by code), whatever the order the rows come in.
        let recs = [
            FirstRec { user: 7, ts: 50, segment: 1 },
            FirstRec { user: 7, ts: 40, segment: 3 },
            FirstRec { user: 7, ts: 40, segment: 2 },
            FirstRec { user: 7, ts: 40, segment: 3 },
        ];
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 2, 3], [2, 3, 0, 1], [0, 3, 1, 2]] {
            let mut u = Users::new(true);
            let new: Vec<bool> = perm.iter().map(|&i| u.assign(&recs[i])).collect();
            assert_eq!(new.iter().filter(|&&n| n).count(), 1);
            assert_eq!(u.len(), 1);
            u.resolve_ties(|code| code);
            let mut firsts = vec![];
            u.map_firsts(|ts, segment| {
                firsts.push((ts, segment));
                ts
            });
            assert_eq!(firsts, vec![(40, 2)], "{perm:?}");
        }
        // The order of the segments is the caller's: here code 3 comes first.
        let mut u = Users::new(true);
        recs.iter().for_each(|r| {
            u.assign(r);
        });
        u.resolve_ties(|code| if code == 3 { 0 } else { 1 + code });
        let mut firsts = vec![];
        u.map_firsts(|ts, segment| {
            firsts.push((ts, segment));
            ts
        });
        assert_eq!(firsts, vec![(40, 3)]);
    }

    #[test]
    fn attribution_counts_cells_bits_and_reasons() {
        let mut u = Users::new(false);
        u.assign(&FirstRec { user: 1, ts: 0, segment: 0 });
        u.seal(|_, _| 0, 1, 3, 2);
        let at = Attribution { horizon: 3, group_cohort: &[10], missing: Reason::NeverPaid };
        let mut cells = Cells::new(3).unwrap();
        let mut tally = Tally::default();
        let order = |key, period, amount| CellRec { user: key, amount, profit: amount / 2, period, paying: amount > 0 };
        for rec in [order(1, 10, 500), order(1, 10, 200), order(1, 11, -100), order(1, 9, 5), order(1, 13, 7), order(2, 10, 9)] {
            u.attribute_order(&rec, &at, &mut cells, &mut tally);
        }
        assert_eq!(cells.rows, vec![2, 1, 0]);
        assert_eq!((0..3).map(|i| cells.net(i)).collect::<Vec<_>>(), vec![700, -100, 0]);
        assert_eq!(cells.gross, vec![700, 0, 0]);
        assert_eq!(cells.refunds, vec![0, -100, 0]);
        assert_eq!(cells.payments, vec![700, 0, 0]);
        assert_eq!(cells.orders, vec![2, 0, 0]);
        assert_eq!(tally.rows(Reason::BeforeCohort), 1);
        assert_eq!(tally.rows(Reason::BeyondHorizon), 1);
        assert_eq!((tally.amount(Reason::BeforeCohort), tally.amount(Reason::BeyondHorizon)), (5, 7));
        assert_eq!(tally.rows(Reason::NeverPaid), 1);
        assert_eq!(tally.amount(Reason::NeverPaid), 9);
        assert_eq!(ages_of(&u), vec![(0, [vec![0], vec![0], vec![]])]);
    }

    #[test]
    fn a_shared_grid_sums_what_private_copies_sum() {
        // Several workers add the same pseudo-random rows, more than one buffer's worth each, into
        // private copies and into one shared grid.
        let n = 97;
        let rows: Vec<(usize, i64, bool)> = (0..3 * PENDING_ROWS as u64 + 123)
            .map(|r| ((hash_key(r) % n as u64) as usize, (hash_key(r + 7) % 2001) as i64 - 1000, r % 3 == 0))
            .collect();
        let run = |budget: usize| {
            let mut sinks = CellSink::for_workers(n, 3, budget).unwrap();
            assert_eq!(matches!(sinks[0], CellSink::Shared(_)), budget == 0);
            std::thread::scope(|s| {
                for (w, sink) in sinks.iter_mut().enumerate() {
                    let rows = &rows;
                    s.spawn(move || {
                        fn add_all(sink: &mut impl CellAdd, w: usize, rows: &[(usize, i64, bool)]) {
                            for (k, &(cell, amount, paying)) in rows.iter().enumerate() {
                                if k % 3 == w {
                                    sink.add_order(cell, amount, amount - 3, paying);
                                } else if k % 5 == w {
                                    sink.add_activity(cell);
                                }
                            }
                        }
                        match sink {
                            CellSink::Private(cells) => add_all(cells, w, rows),
                            CellSink::Shared(cells) => add_all(cells, w, rows),
                        }
                    });
                }
            });
            let t = CellSink::total(sinks);
            (t.rows, t.gross, t.refunds, t.payments, t.profit, t.orders, t.activity_rows)
        };
        let private = run(usize::MAX);
        assert_eq!(private.0.iter().sum::<u64>(), rows.len() as u64);
        assert_eq!(run(0), private);
    }
}
