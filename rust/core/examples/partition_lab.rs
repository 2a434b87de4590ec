//! Issue 15's partitioning experiment, apart from the engine: first-purchase cohorts, UTC months,
//! horizon 12, on three raw little-endian columns (`user.bin` i64, `ts.bin` i64 µs, `amount.bin`
//! f64) written by `benches/partition_lab.py`, which also runs the engine on the same rows and
//! compares the cells. Not part of ltrcore: it measures whether radix-partitioning the rows by user,
//! so that each partition's users and rows stay in the core's cache for both passes, beats the
//! engine's one-cache-miss-per-row design on this machine. docs/engine.md logs the figures.
//!
//! cargo run --release --example partition_lab -- DIR THREADS REPEAT [MODES]
//!
//! MODES, run in turns: `part` (the default), `part_probe` (pass two probes instead of reading the
//! slots pass one noted), `part_huge` (huge pages for the records), `chunk=N`.
//!
//! Phases: (1) every thread counts its rows per partition (top bits of the user id); (2) it decodes
//! them again and scatters 16-byte records (id, amount << 16 | period) through one cache line of
//! staging per partition, written out with streaming stores when full; (3) the threads take
//! partitions in turn and run both passes on each, against a table of that partition's users that
//! fits in L2 with the partition's rows. With `chunk=N`, (1)–(2) run chunk by chunk so that the
//! records take at most `N × 16` bytes: pass one runs over every chunk, then pass two
//! scatters every chunk again (the tables persist between chunks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ltrcore_core::calendar::PeriodKind;
use ltrcore_core::kernel::hash_key;

const HORIZON: usize = 12;
const DAY_US: i64 = 86_400_000_000;
const PAD: u64 = 0xffff; // a record's period field marking padding
const VACANT: u64 = 0;

#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct Rec {
    id: u64,
    packed: u64, // amount (fixed point, scale 4) << 16 | period
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([Rec; 4]);

struct Input {
    user: Vec<i64>,
    ts: Vec<i64>,
    amount: Vec<f64>,
    day0: i64,
    month_of_day: Vec<u16>,
}

fn read_column<T: Copy>(path: &std::path::Path, parse: fn([u8; 8]) -> T) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(8).map(|c| parse(c.try_into().unwrap())).collect()
}

impl Input {
    fn load(dir: &std::path::Path) -> Input {
        let user = read_column(&dir.join("user.bin"), i64::from_le_bytes);
        let ts = read_column(&dir.join("ts.bin"), i64::from_le_bytes);
        let amount = read_column(&dir.join("amount.bin"), f64::from_le_bytes);
        let (lo, hi) = ts.iter().fold((i64::MAX, i64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
        let (day0, day1) = (lo.div_euclid(DAY_US), hi.div_euclid(DAY_US));
        let month = |d: i64| PeriodKind::Month.period_of_day(d);
        let month_of_day = (day0..=day1).map(|d| (month(d) - month(day0)) as u16).collect();
        Input { user, ts, amount, day0, month_of_day }
    }

    #[inline(always)]
    fn record(&self, i: usize) -> Rec {
        let period = self.month_of_day[(self.ts[i].div_euclid(DAY_US) - self.day0) as usize];
        let fixed = (self.amount[i] * 1e4).round() as i64;
        Rec { id: hash_key(self.user[i] as u64), packed: ((fixed << 16) as u64) | u64::from(period) }
    }
}

#[derive(Clone, PartialEq)]
struct Cells {
    rows: Vec<u64>,
    profit: Vec<i128>,
    gross: Vec<i128>,
    refunds: Vec<i128>,
    payments: Vec<i128>,
    orders: Vec<u64>,
    payers: Vec<u64>,
    cohort_size: Vec<u64>,
    before_cohort: u64,
    beyond_horizon: u64,
    no_cohort: u64,
}

impl Cells {
    fn new(periods: usize) -> Cells {
        let n = periods * HORIZON;
        Cells {
            rows: vec![0; n],
            profit: vec![0; n],
            gross: vec![0; n],
            refunds: vec![0; n],
            payments: vec![0; n],
            orders: vec![0; n],
            payers: vec![0; n],
            cohort_size: vec![0; periods],
            before_cohort: 0,
            beyond_horizon: 0,
            no_cohort: 0,
        }
    }

    fn merge(&mut self, o: &Cells) {
        for i in 0..self.rows.len() {
            self.rows[i] += o.rows[i];
            self.profit[i] += o.profit[i];
            self.gross[i] += o.gross[i];
            self.refunds[i] += o.refunds[i];
            self.payments[i] += o.payments[i];
            self.orders[i] += o.orders[i];
            self.payers[i] += o.payers[i];
        }
        for i in 0..self.cohort_size.len() {
            self.cohort_size[i] += o.cohort_size[i];
        }
        self.before_cohort += o.before_cohort;
        self.beyond_horizon += o.beyond_horizon;
        self.no_cohort += o.no_cohort;
    }
}

/// One partition's users: linear probing on the id's low bits, at most half full, the state beside
/// the id (one cache line per probe). `val` is the earliest paying period during pass one, then
/// `cohort | paid-age bits << 16`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    id: u64,
    val: u64,
}

struct Table {
    entries: Vec<Entry>,
    mask: usize,
    len: usize,
}

impl Table {
    fn with_capacity(cap: usize) -> Table {
        Table { entries: vec![Entry { id: VACANT, val: u64::MAX }; cap], mask: cap - 1, len: 0 }
    }

    #[inline(always)]
    fn slot(&self, id: u64) -> usize {
        let mut i = id as usize & self.mask;
        loop {
            let k = self.entries[i].id;
            if k == id || k == VACANT {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let mut bigger = Table::with_capacity((self.mask + 1) * 2);
        for e in &self.entries {
            if e.id != VACANT {
                let s = bigger.slot(e.id);
                bigger.entries[s] = *e;
            }
        }
        bigger.len = self.len;
        *self = bigger;
    }

    /// Pass one: the earliest paying period; returns the user's slot. (Id 0 is taken for vacant: a
    /// lab shortcut.)
    #[inline(always)]
    fn earliest(&mut self, id: u64, period: u64) -> usize {
        let mut s = self.slot(id);
        if self.entries[s].id == VACANT {
            if 2 * (self.len + 1) > self.mask + 1 {
                self.grow();
                s = self.slot(id);
            }
            self.entries[s].id = id;
            self.len += 1;
        }
        let e = &mut self.entries[s];
        e.val = e.val.min(period);
        s
    }

    fn seal(&mut self) {
        for e in &mut self.entries {
            if e.val != u64::MAX {
                e.val &= 0xffff;
            }
        }
    }
}

/// Pass one over a partition's records. With `slots`, it notes each record's slot (`NO_SLOT` for
/// records of no paying order) so that pass two need not probe; the table must not grow after.
#[inline(always)]
fn pass_one(table: &mut Table, recs: &[Rec], mut slots: Option<&mut Vec<u32>>) {
    if let Some(sl) = slots.as_deref_mut() {
        sl.clear();
    }
    let grown_at = table.mask;
    for r in recs {
        let period = r.packed & 0xffff;
        let slot = if period != PAD && (r.packed as i64 >> 16) > 0 { table.earliest(r.id, period) as u32 } else { NO_SLOT };
        if let Some(sl) = slots.as_deref_mut() {
            sl.push(slot);
        }
    }
    if table.mask != grown_at {
        // Slots noted before the table grew are stale: drop them all (pass two probes).
        if let Some(sl) = slots {
            sl.clear();
        }
    }
}

const NO_SLOT: u32 = u32::MAX;

#[inline(always)]
fn pass_two(table: &mut Table, recs: &[Rec], slots: &[u32], cells: &mut Cells) {
    let noted = slots.len() == recs.len();
    for (k, r) in recs.iter().enumerate() {
        let period = r.packed & 0xffff;
        if period == PAD {
            continue;
        }
        let amount = r.packed as i64 >> 16;
        let s = if noted && slots[k] != NO_SLOT { slots[k] as usize } else { table.slot(r.id) };
        if table.entries[s].id != r.id {
            cells.no_cohort += 1;
            continue;
        }
        let cohort = table.entries[s].val & 0xffff;
        let age = period.wrapping_sub(cohort);
        if age >= HORIZON as u64 {
            if period < cohort {
                cells.before_cohort += 1;
            } else {
                cells.beyond_horizon += 1;
            }
            continue;
        }
        let cell = cohort as usize * HORIZON + age as usize;
        // The engine's cell work: rows, profit, gross or refunds, paying orders and payments.
        cells.rows[cell] += 1;
        cells.profit[cell] += i128::from(amount);
        if amount > 0 {
            cells.gross[cell] += i128::from(amount);
            cells.orders[cell] += 1;
            cells.payments[cell] += i128::from(amount);
            table.entries[s].val |= 1 << (16 + age);
        } else {
            cells.refunds[cell] += i128::from(amount);
        }
    }
}

fn count_users(table: &Table, cells: &mut Cells) {
    for e in &table.entries {
        if e.id == VACANT {
            continue;
        }
        let cohort = (e.val & 0xffff) as usize;
        cells.cohort_size[cohort] += 1;
        let mut bits = e.val >> 16;
        while bits != 0 {
            cells.payers[cohort * HORIZON + bits.trailing_zeros() as usize] += 1;
            bits &= bits - 1;
        }
    }
}

/// Writes a full staging line to `dst` with streaming stores (no read for ownership, no cache pollution).
#[inline(always)]
fn stream_line(dst: *mut Line, src: &Line) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `dst` is a 64-byte aligned line inside the records buffer, owned by this thread's range.
    unsafe {
        use core::arch::x86_64::{__m128i, _mm_load_si128, _mm_stream_si128};
        let s = src as *const Line as *const __m128i;
        let d = dst as *mut __m128i;
        for k in 0..4 {
            _mm_stream_si128(d.add(k), _mm_load_si128(s.add(k)));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unsafe {
        *dst = *src
    }
}

static HUGE_PAGES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" {
    fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
}

/// Asks for transparent huge pages over the 2 MiB-aligned part of a fresh buffer (one fault per
/// 2 MiB instead of per 4 KiB: the VM's page faults were a third of the prototype's time).
fn advise_huge_pages(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: i32 = 14;
    let (begin, end) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
    if end > begin {
        // SAFETY: advice only, over memory this process owns (the buffer just reserved).
        unsafe { madvise(begin as *mut std::ffi::c_void, end - begin, MADV_HUGEPAGE) };
    }
}

struct SendPtr(*mut Line);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Scatters rows `rows` (split between `threads`) into `lines`, partition-major; returns each
/// partition's line range.
fn scatter(input: &Input, rows: std::ops::Range<usize>, threads: usize, bits: u32, lines: &mut Vec<Line>, counted: &mut f64) -> Vec<std::ops::Range<usize>> {
    let t0 = Instant::now();
    let parts = 1usize << bits;
    let shift = 64 - bits;
    let n = rows.len();
    let share = |t: usize| rows.start + n * t / threads..rows.start + n * (t + 1) / threads;
    // (1) counts per thread and partition
    let counts: Vec<Vec<usize>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let r = share(t);
                s.spawn(move || {
                    let mut c = vec![0usize; parts];
                    for i in r {
                        c[(hash_key(input.user[i] as u64) >> shift) as usize] += 1;
                    }
                    c
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // line offsets, partition-major, each (partition, thread) range starting on a fresh line
    let mut starts = vec![vec![0usize; parts]; threads];
    let mut ranges = Vec::with_capacity(parts);
    let mut at = 0;
    for p in 0..parts {
        let begin = at;
        for t in 0..threads {
            starts[t][p] = at;
            at += counts[t][p].div_ceil(4);
        }
        ranges.push(begin..at);
    }
    *counted += t0.elapsed().as_secs_f64();
    if lines.capacity() < at {
        // Fresh pages cost a fault each on first touch: fault them in here, apart, to see the price.
        *lines = Vec::with_capacity(at);
        if HUGE_PAGES.load(Ordering::Relaxed) {
            advise_huge_pages(lines.as_mut_ptr() as usize, at * size_of::<Line>());
        }
        // SAFETY: zeroes the `at` lines reserved just above (all-zero is a valid Line).
        unsafe {
            std::ptr::write_bytes(lines.as_mut_ptr(), 0, at);
            lines.set_len(at);
        }
        eprint!("[count and fault-in {:.3}] ", t0.elapsed().as_secs_f64());
    }
    // Every line in 0..at is written below (full lines streamed, the last one per range padded).
    lines.resize(at, Line::default());
    let base = SendPtr(lines.as_mut_ptr());
    let base = &base;
    std::thread::scope(|s| {
        for (t, mut pos) in starts.into_iter().enumerate() {
            let r = share(t);
            s.spawn(move || {
                let mut stage = vec![Line::default(); parts];
                let mut fill = vec![0u8; parts];
                for i in r {
                    let rec = input.record(i);
                    let p = (rec.id >> shift) as usize;
                    let f = fill[p] as usize;
                    stage[p].0[f] = rec;
                    if f == 3 {
                        stream_line(base.0.wrapping_add(pos[p]), &stage[p]);
                        pos[p] += 1;
                        fill[p] = 0;
                    } else {
                        fill[p] += 1;
                    }
                }
                for p in 0..parts {
                    let f = fill[p] as usize;
                    if f > 0 {
                        for k in f..4 {
                            stage[p].0[k] = Rec { id: 0, packed: PAD };
                        }
                        stream_line(base.0.wrapping_add(pos[p]), &stage[p]);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a fence, ordering this thread's streaming stores before the join.
                unsafe {
                    core::arch::x86_64::_mm_sfence()
                };
            });
        }
    });
    ranges
}

fn as_recs(lines: &[Line]) -> &[Rec] {
    // SAFETY: a Line is exactly four Recs.
    unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const Rec, lines.len() * 4) }
}

fn run(input: &Input, threads: usize, chunk_rows: Option<usize>, note_slots: bool) -> (Cells, Vec<(&'static str, f64)>) {
    let rows = input.user.len();
    let periods = *input.month_of_day.last().unwrap() as usize + 1;
    let mut phases = Vec::new();
    let t0 = Instant::now();
    let chunk = chunk_rows.unwrap_or(rows).max(1);
    // partitions: a partition's records (of one chunk) about 1 MiB
    let bits = ((chunk * 16 / (1 << 20)).max(1).next_power_of_two().trailing_zeros()).clamp(4, 12);
    let parts = 1usize << bits;
    let mut lines = Vec::new();
    let mut total = Cells::new(periods);
    if chunk >= rows {
        let mut counted = 0.0;
        let ranges = scatter(input, 0..rows, threads, bits, &mut lines, &mut counted);
        phases.push(("count", counted));
        phases.push(("scatter", t0.elapsed().as_secs_f64()));
        let next = AtomicUsize::new(0);
        let per_thread: Vec<Cells> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let (next, ranges, lines) = (&next, &ranges, &lines);
                    s.spawn(move || {
                        let mut cells = Cells::new(periods);
                        let mut cap = 1 << 10;
                        let mut slots = Vec::new();
                        loop {
                            let p = next.fetch_add(1, Ordering::Relaxed);
                            if p >= parts {
                                break;
                            }
                            let recs = as_recs(&lines[ranges[p].clone()]);
                            let mut table = Table::with_capacity(cap);
                            pass_one(&mut table, recs, if note_slots { Some(&mut slots) } else { None });
                            table.seal();
                            pass_two(&mut table, recs, &slots, &mut cells);
                            count_users(&table, &mut cells);
                            cap = cap.max(table.mask + 1);
                        }
                        cells
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for c in &per_thread {
            total.merge(c);
        }
        phases.push(("passes", t0.elapsed().as_secs_f64()));
        return (total, phases);
    }
    // Chunked: tables persist per partition; pass one over every chunk, then pass two.
    let mut tables: Vec<Table> = (0..parts).map(|_| Table::with_capacity(1 << 10)).collect();
    let mut per_thread = vec![Cells::new(periods); threads];
    for pass in 0..2 {
        let mut start = 0;
        while start < rows {
            let end = (start + chunk).min(rows);
            let ranges = scatter(input, start..end, threads, bits, &mut lines, &mut 0.0);
            let next = AtomicUsize::new(0);
            let table_ptrs = SendTables(tables.as_mut_ptr());
            std::thread::scope(|s| {
                for cells in per_thread.iter_mut() {
                    let (next, ranges, lines, tp) = (&next, &ranges, &lines, &table_ptrs);
                    s.spawn(move || loop {
                        let p = next.fetch_add(1, Ordering::Relaxed);
                        if p >= parts {
                            break;
                        }
                        // SAFETY: each partition index is taken by exactly one thread.
                        let table = unsafe { &mut *tp.0.add(p) };
                        let recs = as_recs(&lines[ranges[p].clone()]);
                        if pass == 0 {
                            pass_one(table, recs, None);
                        } else {
                            pass_two(table, recs, &[], cells);
                        }
                    });
                }
            });
            start = end;
        }
        if pass == 0 {
            tables.iter_mut().for_each(Table::seal);
            phases.push(("pass one", t0.elapsed().as_secs_f64()));
        }
    }
    for (p, table) in tables.iter().enumerate() {
        count_users(table, &mut per_thread[p % threads]);
    }
    for c in &per_thread {
        total.merge(c);
    }
    phases.push(("pass two", t0.elapsed().as_secs_f64()));
    (total, phases)
}

struct SendTables(*mut Table);
unsafe impl Send for SendTables {}
unsafe impl Sync for SendTables {}

/// `part` (records of every row, slots noted), `part_probe` (pass two probes), `chunk=N`.
fn parse_mode(mode: &str) -> (Option<usize>, bool) {
    match mode {
        "part" => (None, true),
        "part_probe" => (None, false),
        "part_huge" => {
            HUGE_PAGES.store(true, Ordering::Relaxed);
            (None, true)
        }
        m => (Some(m.strip_prefix("chunk=").and_then(|n| n.parse().ok()).expect("mode: part, part_probe or chunk=N")), false),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let threads: usize = args[2].parse().unwrap();
    let repeat: usize = args[3].parse().unwrap();
    let modes: Vec<&str> = args.get(4).map_or("part", String::as_str).split(',').collect();
    let input = Input::load(dir);
    let mut best = vec![f64::MAX; modes.len()];
    let mut outputs: Vec<Option<Cells>> = vec![None; modes.len()];
    for _ in 0..repeat {
        for (m, mode) in modes.iter().enumerate() {
            HUGE_PAGES.store(false, Ordering::Relaxed);
            let (chunk_rows, note_slots) = parse_mode(mode);
            let t = Instant::now();
            let (cells, phases) = run(&input, threads, chunk_rows, note_slots);
            let wall = t.elapsed().as_secs_f64();
            best[m] = best[m].min(wall);
            let shown: Vec<String> = phases.iter().map(|(n, s)| format!("{n} {s:.3}")).collect();
            eprintln!("{mode}: wall {wall:.3} s  ({})", shown.join(", "));
            outputs[m] = Some(cells);
        }
    }
    for (m, mode) in modes.iter().enumerate() {
        println!("mode {mode} best {:.4} rows_per_s {:.1}M", best[m], input.user.len() as f64 / best[m] / 1e6);
    }
    println!("best {:.4}", best.iter().cloned().fold(f64::MAX, f64::min));
    let c = outputs[0].take().unwrap();
    for o in outputs.iter().flatten() {
        assert!(o.gross == c.gross && o.payers == c.payers && o.cohort_size == c.cohort_size && o.rows == c.rows, "modes disagree");
    }
    println!("reasons before_cohort {} beyond_horizon {} no_cohort {}", c.before_cohort, c.beyond_horizon, c.no_cohort);
    for cohort in 0..c.cohort_size.len() {
        for age in 0..HORIZON {
            let i = cohort * HORIZON + age;
            if c.rows[i] > 0 || c.payers[i] > 0 {
                let revenue = c.gross[i] + c.refunds[i];
                println!("cell {cohort} {age} {revenue} {} {} {}", c.orders[i], c.payers[i], c.cohort_size[cohort]);
            }
        }
    }
}
