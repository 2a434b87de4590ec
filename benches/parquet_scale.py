#!/usr/bin/env python
"""Bigger than RAM: ltrcore over a parquet dataset of up to a billion orders, beside a plain scan.

    python benches/parquet_scale.py --rows 1B --parquet /work/bench-1B [--users N] [--threads N] [--repeat N]
    python benches/parquet_scale.py --rows 1B --parquet /work/bench-1B --generate-only --max-minutes 9

The dataset is written by a streaming generator (``generate``) under ``DIR``:

* ``DIR/orders/part-NNNNN.parquet``: ``user_id`` int64 (sparse 40-bit ids), ``ts`` timestamp[us, UTC],
  ``amount`` float64 with 3 % refunds (negative), over the 24 UTC months 2024-01 .. 2025-12. Orders
  come in time order (one slice of time per row group, rows sorted by ``ts`` inside it), as an
  order log does; users are interleaved.
* ``DIR/signups/part-NNNNN.parquet``: one row per user, ``user_id`` and ``signup_ts``, at or before
  the user's first order.
* ``DIR/manifest.json``: rows, users, seed and layout; a request for other rows, users or seed
  regenerates the dataset.

The model is ``ltrcore.demo.orders_only``'s (first orders growing 3 % a month, a quarter of the
customers one-and-done, exponential lifetimes of 14 months, gamma order rates, log-normal values,
3 % refunds 1 h + 6 days after a purchase) but drawn slice of time by slice of time, so that only
the per-user parameters (28 bytes a user) and one slice of rows are in memory. Repeat orders are a
Poisson process per user: given a slice's count, its orders are independent draws of a user in
proportion to its rate, at a uniform time in the slice, kept when the user is alive then (thinning).
Each slice draws from its own seeded generator, so the data is the same however generation is split.

Default users: rows / 25 (40M for 1B orders). 25 orders per customer over 24 months, about one a
month, is a large grocery or marketplace retailer; the core keeps one hash-table bucket per user
(see docs/engine.md, "Memory"), so memory grows with users, not rows, and the run reports bytes per
user for extrapolation.

``run`` measures, each in a fresh process, the floor (a plain ``pyarrow.dataset`` scan of the three
columns without pre-buffering, pyarrow's fastest here: every batch read, nothing computed), the same
scan as ltrcore's file adapter does it (one file at a time, decoded in the calling thread, page
checksums verified: what the engine waits for), then ``ltrcore.cohorts`` with first-purchase cohorts
(two passes over the files) and with signup cohorts (one pass), horizon 12, month, UTC. Each run
checks that every row was read, and records how often the progress callback was called. Peak RSS is the whole process's ``VmHWM``
(interpreter and imports included): the input is not in memory, so there is no baseline to take off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump when the generated data changes: a manifest with another format regenerates
ORDERS_PER_USER = 25
MONTHS = 24
GROWTH = 1.03
REFUND_SHARE = 0.03
US_PER_HOUR = 3_600 * 1_000_000
US_PER_DAY = 24 * US_PER_HOUR
US_PER_MONTH = 30.436875 * US_PER_DAY
ROW_GROUP_ROWS = 1 << 20
FILE_GROUPS = 48  # row groups (time slices) per file: about 50M rows
SIGNUP_GROUP_ROWS = 1 << 22
COMPRESSION = "zstd"
BYTES_PER_ROW_ESTIMATE = 11.5  # measured at 20M rows: 11.0 (orders and signups, zstd)
DISK_MARGIN = 2 << 30  # what generating leaves free on the disk for everyone else
JOBS = ("floor", "ltrcore_scan", "first_purchase", "signup")
JOB_NAMES = {"floor": "scan", "ltrcore_scan": "scan", "first_purchase": "first purchase", "signup": "signup"}
TOOLS = {"floor": "pyarrow scan (floor)", "ltrcore_scan": "pyarrow scan as ltrcore reads", "first_purchase": "ltrcore", "signup": "ltrcore"}
COLUMNS = ["user_id", "ts", "amount"]


# --------------------------------------------------------------------------------------------------
# the generator


@dataclass
class Users:
    """Per-user parameters, users numbered in the order of their first order."""

    first: np.ndarray  # int64 us, sorted
    end: np.ndarray  # int64 us: the end of the user's life (= first for one-and-done), at most the data's end
    weight_cum: np.ndarray  # float64: cumulative order rates, for drawing a user in proportion to its rate
    value: np.ndarray  # float32: personal order-value factor
    id_offset: int


def month_starts(months: int = MONTHS) -> np.ndarray:
    """Epoch microseconds of the first of each month from 2024-01, ``months + 1`` of them (UTC)."""
    return np.arange("2024-01", np.datetime64("2024-01", "M") + months + 1, dtype="datetime64[M]").astype("datetime64[us]").astype(np.int64)


def sparse_ids(index: np.ndarray, offset: int) -> np.ndarray:
    """Unique, random-looking 40-bit ids of user numbers: ``demo._sparse_ids``' mixer, on any numbers."""
    mask = np.uint64((1 << 40) - 1)
    x = (index.astype(np.uint64) + np.uint64(offset)) & mask
    for shift, mult in ((23, 0x9E3779B97F4A7C15), (19, 0xBF58476D1CE4E5B9), (21, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(mult)
        x &= mask
    x ^= x >> np.uint64(17)
    return (x + np.uint64(1)).astype(np.int64)


def draw_users(users: int, seed: int) -> Users:
    rng = np.random.default_rng([seed, 15])
    starts = month_starts()
    end = int(starts[-1])
    vol = GROWTH ** np.arange(MONTHS)
    per_month = rng.multinomial(users, vol / vol.sum())
    first = np.empty(users, np.int64)
    at = 0
    for m, n in enumerate(per_month):  # sorted month by month: no sort of the whole array
        first[at : at + n] = np.sort(starts[m] + (rng.random(n) * (starts[m + 1] - starts[m])).astype(np.int64))
        at += n
    one_and_done = rng.random(users) < 0.25
    life = rng.exponential(14.0 * US_PER_MONTH, users).astype(np.int64)
    life[one_and_done] = 0
    last = np.minimum(first + life, end)
    del life
    rate = rng.gamma(1.2, 1.0, users)
    rate[last <= first] = 0.0  # never alive after the first order: never drawn
    weight_cum = np.cumsum(rate)
    del rate
    value = rng.lognormal(0.0, 0.35, users).astype(np.float32)
    return Users(first, last, weight_cum, value, int(rng.integers(0, 1 << 40)))


@dataclass
class Plan:
    """The time slices (one row group each) and how many orders of each kind each one gets."""

    bounds: np.ndarray  # int64 us, slices + 1
    first_hi: np.ndarray  # users whose first order is before each bound
    repeats_cum: np.ndarray  # repeat orders before each bound
    refunds_cum: np.ndarray  # refunds drawn from the purchases before each bound
    rows: int
    users: int


def plan(users: Users, rows: int) -> Plan:
    """Slices of about ``ROW_GROUP_ROWS`` expected rows each, on an hourly grid."""
    n_users = len(users.first)
    refunds = int(round(REFUND_SHARE * rows))
    purchases = rows - refunds
    repeats = purchases - n_users
    if repeats < 0:
        raise ValueError(f"{rows:,} rows cannot hold {n_users:,} users' first orders and 3 % refunds")
    starts = month_starts()
    start, end = int(starts[0]), int(starts[-1])
    grid = np.arange(start, end + 1, US_PER_HOUR, dtype=np.int64)
    if grid[-1] != end:
        grid = np.append(grid, end)
    # Expected repeat orders before each grid point: sum over users of rate x time alive before it.
    rate = np.diff(users.weight_cum, prepend=0.0)
    hours = lambda t: (t - start) / US_PER_HOUR  # noqa: E731
    alive = np.zeros(len(grid))
    for edge, sign in ((users.first, 1.0), (users.end, -1.0)):
        cell = np.searchsorted(grid, edge, side="right")  # edge < grid[j] for j >= cell
        w = np.bincount(cell, weights=rate, minlength=len(grid) + 1)[: len(grid)].cumsum()
        wt = np.bincount(cell, weights=rate * hours(edge), minlength=len(grid) + 1)[: len(grid)].cumsum()
        alive += sign * (hours(grid) * w - wt)
    alive = np.maximum.accumulate(np.maximum(alive - alive[0], 0.0))
    repeats_at = np.rint(repeats * alive / alive[-1]).astype(np.int64) if alive[-1] > 0 else np.zeros(len(grid), np.int64)
    repeats_at[-1] = repeats
    first_at = np.searchsorted(users.first, grid, side="left")
    first_at[-1] = n_users
    expected = (first_at + repeats_at) / (1.0 - REFUND_SHARE)
    slices = max(1, int(round(rows / ROW_GROUP_ROWS)))
    cut = np.searchsorted(expected, np.arange(1, slices) * (expected[-1] / slices))
    picks = np.unique(np.concatenate([[0], cut, [len(grid) - 1]]))
    purchases_cum = first_at[picks] + repeats_at[picks]
    refunds_cum = np.rint(refunds * purchases_cum / max(purchases, 1)).astype(np.int64)
    return Plan(grid[picks], first_at[picks], repeats_at[picks], refunds_cum, rows, n_users)


@dataclass
class Pending:
    """Refunds drawn but due in a later slice."""

    user: np.ndarray
    ts: np.ndarray
    amount: np.ndarray

    @staticmethod
    def empty() -> Pending:
        return Pending(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def draw_repeats(rng: np.random.Generator, users: Users, hi: int, t0: int, t1: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` repeat orders in [t0, t1): users in proportion to their rate among the first ``hi``,
    kept when alive at the drawn time. Returns (user, ts)."""
    if count == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cum = users.weight_cum[:hi]
    total = float(cum[-1])
    got_user: list[np.ndarray] = []
    got_ts: list[np.ndarray] = []
    have, accept = 0, 0.5
    while have < count:
        want = int((count - have) / max(accept, 0.05) * 1.05) + 64
        # Sorted draws keep the binary searches in cache; the order is shuffled away below.
        spacing = rng.exponential(size=want + 1).cumsum()
        user = np.searchsorted(cum, spacing[:-1] * (total / spacing[-1]), side="right")
        np.minimum(user, hi - 1, out=user)
        ts = t0 + (rng.random(want) * (t1 - t0)).astype(np.int64)
        keep = (ts >= users.first[user]) & (ts < users.end[user])
        accept = max(float(keep.mean()), 1e-3)
        got_user.append(user[keep])
        got_ts.append(ts[keep])
        have += int(keep.sum())
    user = np.concatenate(got_user)
    ts = np.concatenate(got_ts)
    pick = rng.permutation(len(user))[:count]  # the draws are iid: any count of them, chosen blindly
    return user[pick], ts[pick]


def draw_slice(users: Users, p: Plan, k: int, pending: Pending, seed: int) -> tuple[dict[str, np.ndarray], Pending]:
    """Slice ``k``'s rows (sorted by time) and the refunds left pending after it."""
    rng = np.random.default_rng([seed, 15, 1, k])
    t0, t1 = int(p.bounds[k]), int(p.bounds[k + 1])
    end = int(p.bounds[-1])
    lo, hi = int(p.first_hi[k]), int(p.first_hi[k + 1])
    r_user, r_ts = draw_repeats(rng, users, hi, t0, t1, int(p.repeats_cum[k + 1] - p.repeats_cum[k]))
    user = np.concatenate([np.arange(lo, hi, dtype=np.int64), r_user])
    ts = np.concatenate([users.first[lo:hi], r_ts])
    value = 45.0 * users.value[user].astype(np.float64) * rng.lognormal(0.0, 0.55, len(user))
    amount = np.round(np.maximum(value, 2.0), 2)

    n_ref = int(p.refunds_cum[k + 1] - p.refunds_cum[k])
    if n_ref:
        pick = rng.choice(len(user), size=min(n_ref, len(user)), replace=False)
        base_ts = ts[pick]
        rts = base_ts + US_PER_HOUR + rng.exponential(6 * US_PER_DAY, len(pick)).astype(np.int64)
        late = rts >= end
        if late.any():  # before the data's end: somewhere between the purchase and the end
            rts[late] = base_ts[late] + ((end - base_ts[late]) * rng.uniform(0.05, 0.95, int(late.sum()))).astype(np.int64)
        partial = rng.random(len(pick)) < 0.25
        part = np.maximum(np.round(amount[pick] * rng.uniform(0.2, 0.8, len(pick)), 2), 0.01)
        pending = Pending(
            np.concatenate([pending.user, user[pick]]),
            np.concatenate([pending.ts, rts]),
            np.concatenate([pending.amount, -np.where(partial, part, amount[pick])]),
        )
    due = pending.ts < t1 if k + 1 < len(p.bounds) - 1 else np.ones(len(pending.ts), bool)
    user = np.concatenate([user, pending.user[due]])
    ts = np.concatenate([ts, pending.ts[due]])
    amount = np.concatenate([amount, pending.amount[due]])
    later = Pending(pending.user[~due], pending.ts[~due], pending.amount[~due])
    order = np.argsort(ts)
    return {"user_id": sparse_ids(user[order], users.id_offset), "ts": ts[order], "amount": amount[order]}, later


def _orders_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us", "UTC")), ("amount", pa.float64())])


def _writer(path: Path, schema: Any) -> Any:
    import pyarrow.parquet as pq

    # Plain user ids (a row group holds too many distinct ones for a dictionary), delta-coded
    # timestamps (sorted within a row group), a dictionary for the amounts (whole cents repeat):
    # 11 bytes a row, written and read faster than the defaults' 12.
    return pq.ParquetWriter(
        path,
        schema,
        compression=COMPRESSION,
        use_dictionary=[n for n in schema.names if n == "amount"],
        column_encoding={n: "DELTA_BINARY_PACKED" for n in schema.names if n.endswith("ts")},
        write_page_checksum=True,
    )


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def manifest_of(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _wanted(rows: int, users: int, seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "rows": rows, "users": users, "seed": seed, "row_group_rows": ROW_GROUP_ROWS,
            "file_groups": FILE_GROUPS, "compression": COMPRESSION}  # fmt: skip


def check_disk(directory: Path, rows: int, users: int) -> None:
    """Refuses, before writing anything, a dataset that would leave less than DISK_MARGIN free."""
    need = int(BYTES_PER_ROW_ESTIMATE * (rows + users))
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free + (dir_bytes(directory) if directory.exists() else 0)
    if need + DISK_MARGIN > free:
        raise SystemExit(
            f"refusing to write {rows:,} orders to {directory}: they need about {need / 2**30:.1f} GiB "
            f"({BYTES_PER_ROW_ESTIMATE} bytes a row) and {free / 2**30:.1f} GiB are free, of which "
            f"{DISK_MARGIN / 2**30:.0f} GiB stay free for others. Free space or pass fewer --rows."
        )


def generate(rows: int, directory: Path, *, users: int | None = None, seed: int = 0, max_seconds: float | None = None) -> dict[str, Any] | None:
    """Writes the dataset under ``directory`` (see the module docstring), resuming where a run cut
    short by ``max_seconds`` stopped. Returns the manifest when the dataset is complete, else None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_users = users if users is not None else max(1, rows // ORDERS_PER_USER)
    wanted = _wanted(rows, n_users, seed)
    have = manifest_of(directory)
    if have is not None and {k: have.get(k) for k in wanted} == wanted and have.get("complete"):
        return have
    if have is None or {k: have.get(k) for k in wanted} != wanted:
        for sub in ("orders", "signups", "_resume"):
            shutil.rmtree(directory / sub, ignore_errors=True)
        (directory / "manifest.json").unlink(missing_ok=True)
        check_disk(directory, rows, n_users)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "manifest.json").write_text(json.dumps({**wanted, "complete": False, "generate_s": 0.0}, indent=1))
    manifest = manifest_of(directory)
    assert manifest is not None
    started = time.perf_counter()
    spent = float(manifest.get("generate_s", 0.0))
    for sub in ("orders", "signups", "_resume"):
        (directory / sub).mkdir(exist_ok=True)

    users_ = draw_users(n_users, seed)
    p = plan(users_, rows)
    slices = len(p.bounds) - 1
    files = (slices + FILE_GROUPS - 1) // FILE_GROUPS
    schema = _orders_schema()
    pending = Pending.empty()
    out_of_time = False
    wrote = 0
    for f in range(files):
        path = directory / "orders" / f"part-{f:05d}.parquet"
        resume = directory / "_resume" / f"after-{f:05d}.npz"
        if path.exists() and resume.exists():
            continue
        if f > 0:
            saved = np.load(directory / "_resume" / f"after-{f - 1:05d}.npz")
            pending = Pending(saved["user"], saved["ts"], saved["amount"])
        if max_seconds is not None and wrote and time.perf_counter() - started > max_seconds:
            out_of_time = True
            break
        tmp = path.with_suffix(".tmp")
        with _writer(tmp, schema) as writer:
            for k in range(f * FILE_GROUPS, min((f + 1) * FILE_GROUPS, slices)):
                cols, pending = draw_slice(users_, p, k, pending, seed)
                writer.write_table(
                    pa.table({"user_id": cols["user_id"], "ts": pa.array(cols["ts"], schema.field("ts").type), "amount": cols["amount"]},
                             schema=schema), row_group_size=len(cols["ts"]) + 1)  # fmt: skip
        np.savez(resume.with_suffix(".tmp.npz"), user=pending.user, ts=pending.ts, amount=pending.amount)
        os.replace(resume.with_suffix(".tmp.npz"), resume)
        os.replace(tmp, path)
        wrote += 1
        print(f"  {path.name}: slices to {min((f + 1) * FILE_GROUPS, slices)} of {slices}, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    if not out_of_time:
        signups = directory / "signups" / "part-00000.parquet"
        if not signups.exists():
            write_signups(users_, signups, seed)
    manifest["generate_s"] = round(spent + time.perf_counter() - started, 1)
    if not out_of_time:
        shutil.rmtree(directory / "_resume", ignore_errors=True)
        meta = pq.ParquetDataset(directory / "orders").files
        manifest.update(
            complete=True,
            orders_files=len(meta),
            orders_bytes=dir_bytes(directory / "orders"),
            signups_bytes=dir_bytes(directory / "signups"),
        )
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest if manifest.get("complete") else None


def write_signups(users: Users, path: Path, seed: int) -> None:
    """One row per user: signed up a few days before the first order (a tenth of them about 75 days),
    never before the data's start."""
    import pyarrow as pa

    rng = np.random.default_rng([seed, 15, 2])
    start = int(month_starts()[0])
    schema = pa.schema([("user_id", pa.int64()), ("signup_ts", pa.timestamp("us", "UTC"))])
    tmp = path.with_suffix(".tmp")
    n = len(users.first)
    with _writer(tmp, schema) as writer:
        for lo in range(0, n, SIGNUP_GROUP_ROWS):
            first = users.first[lo : lo + SIGNUP_GROUP_ROWS]
            late = rng.random(len(first)) < 0.1
            delay = rng.exponential(np.where(late, 75.0, 4.0) * US_PER_DAY).astype(np.int64)
            signup = np.maximum(first - delay, np.minimum(first, start))
            writer.write_table(
                pa.table({"user_id": sparse_ids(np.arange(lo, lo + len(first)), users.id_offset),
                          "signup_ts": pa.array(signup, schema.field("signup_ts").type)}, schema=schema),
                row_group_size=len(first) + 1)  # fmt: skip
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# measuring (each job in a fresh process)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def worker(job: str, directory: Path, threads: int | None) -> dict[str, Any]:
    """Runs one job once in this process; wall time, the process's peak RSS, and for ltrcore how
    the progress callback was called (the longest gap between calls, and the phases seen)."""
    orders = directory / "orders"
    progress: dict[str, Any] = {}
    if job == "floor":
        import pyarrow.dataset as ds

        # Without pre-buffering: in one run at 20M rows 0.33 s against 0.6-1.9 s with pyarrow's
        # defaults, and a third less memory. The floor is the fastest plain scan we found.
        options = ds.ParquetFragmentScanOptions(pre_buffer=False)
        t0 = time.perf_counter()
        rows = 0
        for batch in ds.dataset(orders, format="parquet").to_batches(columns=COLUMNS, fragment_scan_options=options):
            rows += batch.num_rows
        wall = time.perf_counter() - t0
    elif job == "ltrcore_scan":
        from ltrcore.adapters import as_batches, resolve

        # What ltrcore's file adapter hands the engine (one file at a time, decoded in the calling
        # thread, page checksums verified), with nothing done to the batches.
        t0 = time.perf_counter()
        rows = sum(b.num_rows for b in as_batches(resolve(str(orders), COLUMNS, table="orders").open(), table="orders"))
        wall = time.perf_counter() - t0
    else:
        import ltrcore

        calls: list[tuple[float, str, int]] = []
        rss_by_phase: dict[str, float] = {}  # the highest RSS seen at a progress call of each phase

        def note(phase: str, n: int) -> None:
            calls.append((time.perf_counter(), phase, n))
            rss_by_phase[phase] = max(rss_by_phase.get(phase, 0.0), _status_mib("VmRSS"))

        kw: dict[str, Any] = {"horizon": 12, "period": "month", "tz": "UTC", "progress": note}
        if threads is not None:
            kw["threads"] = threads
        if job == "signup":
            kw["signups"] = str(directory / "signups")
        t0 = time.perf_counter()
        table = ltrcore.cohorts(str(orders), **kw)
        wall = time.perf_counter() - t0
        rows = int(table.reconciliation["rows"].sum())
        times = [t0, *(t for t, _, _ in calls)]
        phases: dict[str, int] = {}
        starts: dict[str, float] = {}  # seconds from the call's start to each phase's first report
        for t, phase, n in calls:
            phases[phase] = max(phases.get(phase, 0), n)
            starts.setdefault(phase, round(t - t0, 1))
        gaps = [(b - a, phase) for a, (b, phase, _) in zip(times, calls)]
        progress = {
            "progress_max_gap_s": max(b - a for a, b in zip(times, times[1:])) if calls else wall,
            "progress_rows": phases,
            "rss_by_phase_mib": {p: round(v) for p, v in rss_by_phase.items()},
            "phase_starts_s": starts,
            "longest_gap_before": max(gaps)[1] if gaps else None,
        }
    import pyarrow as pa

    return {"job": job, "wall_s": wall, "peak_rss_mib": _status_mib("VmHWM"), "rows_read": rows,
            "arrow_pool_max_mib": round(pa.default_memory_pool().max_memory() / 2**20), **progress}  # fmt: skip


def _run_worker(job: str, directory: Path, threads: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", job, "--parquet", str(directory)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{job} failed (status {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    rows: int,
    directory: Path,
    *,
    users: int | None = None,
    threads: int | None = None,
    repeat: int = 1,
    seed: int = 0,
    jobs: tuple[str, ...] = JOBS,
) -> list[dict]:
    """Generates the dataset if it is not there yet, then times the floor and both cohort kinds, each
    run in a fresh process, ``repeat`` times (best wall time and highest peak kept). Ratios are to
    the floor, so ``jobs`` without ``floor`` gives none (1.0)."""
    manifest = generate(rows, Path(directory), users=users, seed=seed)
    assert manifest is not None
    results: list[dict] = []
    floor_s = None
    for job in jobs:
        runs = [_run_worker(job, Path(directory), threads) for _ in range(repeat)]
        for r in runs:
            if r["rows_read"] != manifest["rows"]:
                raise RuntimeError(f"{job} read {r['rows_read']:,} rows of {manifest['rows']:,}")
        wall = min(r["wall_s"] for r in runs)
        if job == "floor":
            floor_s = wall
        row = {
            "rows": manifest["rows"],
            "users": manifest["users"],
            "key_type": "int64 sparse",
            "job": JOB_NAMES[job],
            "tool": TOOLS[job],
            "wall_s": wall,
            "rows_per_s": manifest["rows"] / wall,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "ratio": wall / floor_s if floor_s else 1.0,
            "ratio_of": "this wall ÷ the plain pyarrow scan's (the floor), same run and files",
        }
        if "progress_max_gap_s" in runs[0]:
            row["progress_max_gap_s"] = max(r["progress_max_gap_s"] for r in runs)
            row["progress_rows"] = runs[0]["progress_rows"]
        print(f"  {job}: " + json.dumps(runs), file=sys.stderr, flush=True)
        results.append(row)
    return results


def human(n: int) -> str:
    for div, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return f"{n:,}"


def table_text(results: list[dict], manifest: dict[str, Any] | None = None) -> str:
    lines = ["| rows | users | key type | job | tool | wall s | M rows/s | peak RSS MiB | × floor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {human(r['rows'])} | {r['users']:,} | {r['key_type']} | {r['job']} | {r['tool']} | {r['wall_s']:.2f} | "
            f"{r['rows_per_s'] / 1e6:.1f} | {r['peak_rss_mib']:,.0f} | {r['ratio']:.2f} |"
        )
    scan = next((r for r in results if r["tool"] == TOOLS["ltrcore_scan"]), None)
    for r in results:
        if "progress_max_gap_s" in r:
            above = f", {(r['peak_rss_mib'] - scan['peak_rss_mib']) * 2**20 / r['users']:.0f} bytes a user above ltrcore's scan" if scan else ""
            lines.append(f"\n{r['job']}: progress called at least every {r['progress_max_gap_s']:.2f} s, rows per phase "
                         f"{r['progress_rows']}{above}")  # fmt: skip
    if manifest:
        size = manifest.get("orders_bytes", 0) + manifest.get("signups_bytes", 0)
        lines.append(
            f"\ndataset: {size / 2**30:.2f} GiB on disk ({size / (manifest['rows'] + manifest['users']):.1f} bytes a row, "
            f"{manifest.get('orders_files')} order files, {COMPRESSION}), generated in {manifest.get('generate_s')} s"
        )
    return "\n".join(lines)


def parse_rows(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(text[-1:], 1)
    return int(round(float(text.rstrip("kmgb")) * mult))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=parse_rows, default=10**9, help="orders (1B, 200M, 2e6 ...); default 1B")
    ap.add_argument("--parquet", type=Path, required=True, help="directory of the dataset (written if missing or different)")
    ap.add_argument("--users", type=parse_rows, default=None, help=f"users (default rows / {ORDERS_PER_USER})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    ap.add_argument("--generate-only", action="store_true", help="write the dataset and stop")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop generating after this long; run again to go on")
    ap.add_argument("--worker", choices=JOBS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.parquet, args.threads)))
        return 0
    t0 = time.perf_counter()
    max_s = None if args.max_minutes is None else args.max_minutes * 60
    manifest = generate(args.rows, args.parquet, users=args.users, seed=args.seed, max_seconds=max_s)
    if manifest is None:
        print(f"generation stopped after {time.perf_counter() - t0:.0f} s; run the same command again to go on", file=sys.stderr)
        return 3
    if args.generate_only:
        print(table_text([], manifest).strip())
        return 0
    jobs = tuple(j for j in args.jobs.split(",") if j)
    if unknown := [j for j in jobs if j not in JOBS]:
        ap.error(f"unknown jobs {unknown}; choose from {', '.join(JOBS)}")
    results = run(args.rows, args.parquet, users=args.users, threads=args.threads, repeat=args.repeat, seed=args.seed, jobs=jobs)
    print(table_text(results, manifest_of(args.parquet)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
