#!/usr/bin/env python
"""ltrcore against hand-written Polars and DuckDB on the same order table, in one run.

    python benches/vs_peers.py --rows 20M [--engines ltrcore,polars,duckdb] [--threads 2,1] [--rounds N]
    python benches/vs_peers.py --rows 90M --users 7M                 # the retailer scale of issue 15
    python benches/vs_peers.py --rows 20M --key-types int64,dense,large_string,string_view,dictionary,categorical
    python benches/vs_peers.py --rows 20M --jobs month12,signup_activity,by1,by3,week104,day400
    python benches/vs_peers.py --rows 20M --scaling                   # rows/s against threads and users
    python benches/vs_peers.py --rows 1B --parquet DIR                # bigger than RAM (parquet_scale.py)
    python benches/vs_peers.py --rows 20M --variants --rounds 2       # every variant of both peers

``polars`` and ``duckdb`` are each peer's fastest variant (``peers.POLARS_FASTEST`` and
``peers.DUCKDB_FASTEST``, chosen by measuring every variant; ``peers.py`` says which won, by how much,
at what size and on which machine state). ``polars:<variant>`` and ``duckdb:<variant>`` pick one
variant of ``peers.POLARS_VARIANTS`` / ``peers.DUCKDB_VARIANTS``, and ``--variants`` runs ltrcore and
all of them in the same run.

Every run prints one table (``print_table``): rows, users, key type, job, tool, threads, the best
wall time, rows/s, the peak RSS above the loaded input and a ratio, whose meaning the footnote under
the table gives for each row (against the fastest peer, against ltrcore's own int64 figure, or
against the first point of a scaling series). A line above the table describes the machine.

The data comes from ``ltrcore.demo.orders_only``: shuffled rows, sparse int64 user ids, about 12.7
orders per user (``--users`` sets the count) over 24 months, and 3 % refunds. It is generated once and
cached as an uncompressed Arrow IPC file under ``bench-data/`` at the repo root (the signups and
logins of ``signup_activity`` too). Each (configuration, engine) then runs in a fresh subprocess. The
subprocess reads the file fully into memory as a pyarrow Table and prepares it, untimed: it adds the
segment columns a job needs and converts the user ids to the key type (``KEY_TYPES``), and the Polars
peer gets a Polars DataFrame of it. It then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs`` ← ``5``) and runs the job ``--repeat`` times. It reports the best wall
time and the peak RSS above the prepared baseline (``VmHWM`` − ``VmRSS`` at the reset). With
``--rounds N`` the engines take turns N times, each time in a fresh process, and each engine's times
are pooled, so that the machine's speed drifting during the run does not favour the engine that ran
in the fast minutes.

The jobs (``JOBS``; the default ``month12`` is ``ltrcore.cohorts(orders, horizon=12, period="month",
tz="UTC")`` with first-purchase cohorts, restricted to complete cells):

* ``month12``: first-purchase monthly cohorts, horizon 12 (``--horizon`` changes it).
* ``signup_activity``: signup cohorts with a login table: one signup per user, an exponential few
  days before their first order, and three logins per order in the ten days before it (never before
  the signup). No peer: ltrcore only.
* ``by1`` / ``by3``: monthly first-purchase cohorts by ``channel`` (6 values) / by ``channel``,
  ``country`` (20) and ``device`` (3). The segments are Arrow ``string`` columns, as read from
  parquet or CSV, and are constant per user (an account's acquisition channel, country and main
  device), so the peers add them to their group keys; ltrcore takes each user's segment from their
  first paying order, which is the more general job.
* ``week104`` / ``day400``: ISO-week cohorts, horizon 104 / daily cohorts, horizon 400.

The results are cross-checked on revenue, orders, payers and cohort_size for every (segment, cohort,
age) cell: every engine against ltrcore, and every key type against int64, per job and user count.
The script exits with status 1 when they disagree. ltrcore is skipped, with a message, until
``import ltrcore`` works in this interpreter.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = REPO / "bench-data"
DEMO_PATH = REPO / "python" / "ltrcore" / "demo.py"
ENGINES = ("ltrcore", "polars", "duckdb")
SKIP = 3  # worker exit status: engine not available
DEFAULT_JOB = "month12"
DEFAULT_KEY = "int64"


@dataclass(frozen=True)
class Job:
    horizon: int = 12
    period: str = "month"
    by: tuple[str, ...] = ()
    signups: bool = False  # signup cohorts with a login table; no peer


JOBS = {
    "month12": Job(),
    "signup_activity": Job(signups=True),
    "by1": Job(by=("channel",)),
    "by3": Job(by=("channel", "country", "device")),
    "week104": Job(horizon=104, period="week"),
    "day400": Job(horizon=400, period="day"),
}
# Segment values: constant per user, picked from the user id by a hash (so every key type and every
# tool sees the same segments).
SEGMENTS = {
    "channel": ("organic", "search", "social", "email", "affiliate", "referral"),
    "country": ("DE", "US", "GB", "FR", "IT", "ES", "NL", "PL", "SE", "AT", "CH", "BE", "DK", "NO", "FI", "IE", "PT", "CZ", "CA", "AU"),
    "device": ("web", "ios", "android"),
}
KEY_TYPES = {
    "int64": "the generated sparse 40-bit ids",
    "dense": "ids remapped to 0..users-1 in a random order (int64; range = distinct count)",
    "large_string": "'u' + the id in 13 zero-padded digits, as large_string",
    "string_view": "the same text as string_view",
    "dictionary": "the same text as a Polars Categorical exported to Arrow (dictionary<large_string, uint32>)",
    "categorical": "the dictionary's table as a Polars DataFrame (user_id a Categorical), which ltrcore is given as is, "
    "so its export to Arrow is timed",
}
# What each peer does with a key type it does not hold natively (the conversion happens untimed,
# before the run, or inside the tool's scan, which is timed).
KEY_NOTES = {
    "polars": "Polars gets a DataFrame made untimed from the Arrow table: large_string becomes its String (views), "
    "dictionary and categorical a Categorical",
    "duckdb": "DuckDB scans the Arrow table: large_string and string_view as VARCHAR, and it decodes the dictionary "
    "into VARCHAR in its scan (timed)",
}


def _peers() -> ModuleType:
    sys.path.insert(0, str(HERE))
    import peers

    return peers


def all_engines() -> list[str]:
    """ltrcore and every variant of every peer, as ``tool:variant``."""
    peers = _peers()
    return ["ltrcore", *(f"polars:{v}" for v in peers.POLARS_VARIANTS), *(f"duckdb:{v}" for v in peers.DUCKDB_VARIANTS)]


def canonical(engine: str) -> str:
    """``polars`` and ``duckdb`` → their fastest variant (``peers.POLARS_FASTEST``/``DUCKDB_FASTEST``)."""
    peers = _peers()
    return {"polars": f"polars:{peers.POLARS_FASTEST}", "duckdb": f"duckdb:{peers.DUCKDB_FASTEST}"}.get(engine, engine)


def load_demo() -> ModuleType:
    """The repo's ``ltrcore/demo.py``, loaded by path so that generating data needs no built ltrcore."""
    spec = importlib.util.spec_from_file_location("ltrcore_bench_demo", DEMO_PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def parse_rows(text: str) -> int:
    """'200k', '2M', '1.5m', '2e6', '20_000_000', '1B' → int."""
    m = re.fullmatch(r"\s*([0-9_.eE+]+)\s*([kKmMgGbB]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    mult = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1).replace("_", "")) * mult))


def human_rows(n: int) -> str:
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


def _names(text: str, known: Any, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return names


def _threads_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a thread count list: {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1: {text!r}")
    return out


# --------------------------------------------------------------------------------------------------
# the machine and the table


def machine_line() -> str:
    """One line: CPU model, cores, caches (lscpu) and RAM (/proc/meminfo), and the date."""
    info: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = f"{int(line.split()[1]) / 2**20:.1f} GiB RAM"
    except OSError:
        pass
    cpu = info.get("Model name", "unknown CPU")
    cores = info.get("CPU(s)", str(os.cpu_count()))
    per_core = info.get("Thread(s) per core", "?")
    caches = ", ".join(f"{c} {info[c].split(' (')[0]}" for c in ("L1d cache", "L2 cache", "L3 cache") if c in info)
    hyper = f" ({info['Hypervisor vendor']} guest)" if info.get("Hypervisor vendor") else ""
    return f"machine: {cpu}{hyper}, {cores} CPUs ({per_core} thread/core), {caches}, {ram}; {time.strftime('%Y-%m-%d %H:%M')}"


_MARKS = ("*", "†", "‡", "§", "¶", "#")


def _default_ratio_of(row: dict[str, Any]) -> str:
    if str(row.get("tool", "")).startswith("ltrcore"):
        return "the fastest peer's wall ÷ ltrcore's, same run and input (ltrcore is N× faster)"
    return "this tool's wall ÷ ltrcore's, same run and input (ltrcore is N× faster)"


def print_table(rows: list[dict[str, Any]], *, markdown: bool = False) -> None:
    """Prints the machine line and one table of ``rows``.

    Each row has ``rows, users, key_type, job, tool, wall_s, rows_per_s, peak_rss_mib, ratio`` (ratio
    may be None) and optionally ``threads`` (a column when any row has it) and ``ratio_of``: what the
    ratio is (a footnote per distinct meaning; without it, the fastest peer's wall ÷ ltrcore's for
    ltrcore rows and this tool's wall ÷ ltrcore's for the others)."""
    print(machine_line())
    show_threads = any(r.get("threads") is not None for r in rows)
    cols = ["rows", "users", "key type", "job", "tool", *(["threads"] if show_threads else []), "wall s (best)", "rows/s", "peak RSS MiB", "ratio"]
    meanings: dict[str, str] = {}
    table = []
    for r in rows:
        ratio = "-"
        if r.get("ratio") is not None:
            meaning = r.get("ratio_of") or _default_ratio_of(r)
            mark = meanings.setdefault(meaning, _MARKS[len(meanings) % len(_MARKS)] * (1 + len(meanings) // len(_MARKS)))
            ratio = f"{r['ratio']:.2f}{mark}"
        users = r.get("users")
        table.append(
            [
                f"{r['rows']:,}",
                f"{users:,}" if isinstance(users, int) else str(users if users is not None else "-"),
                str(r.get("key_type", "-")),
                str(r.get("job", "-")),
                str(r["tool"]),
                *([str(r.get("threads") if r.get("threads") is not None else "all")] if show_threads else []),
                f"{r['wall_s']:.3f}",
                f"{r['rows_per_s'] / 1e6:.1f} M",
                f"{r['peak_rss_mib']:,.0f}" if r.get("peak_rss_mib") is not None else "-",
                ratio,
            ]
        )
    if markdown:
        print("\n| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        print()
    else:
        widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
        text_cols = {2, 3, 4}
        fmt = lambda row: "  ".join(v.ljust(w) if i in text_cols else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
        print(fmt(cols))
        for row in table:
            print(fmt(row))
    for meaning, mark in meanings.items():
        print(f"{mark} ratio: {meaning}")


# --------------------------------------------------------------------------------------------------
# data


def _tag(rows: int, seed: int, users: int | None) -> str:
    return f"orders-{human_rows(rows)}-s{seed}" + (f"-u{users}" if users else "")


def _write_ipc(table: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    tmp = path.with_suffix(".arrow.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1 << 20):
            writer.write_batch(batch)
    os.replace(tmp, path)


def read_ipc(path: Path | str) -> Any:
    """The whole file into memory (no mmap): a plain in-memory Table."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.OSFile(str(path), "rb") as f:
        return ipc.open_file(f).read_all()


def ensure_data(rows: int, seed: int, users: int | None) -> tuple[Path, dict[str, Any]]:
    """Path of the cached IPC file for these parameters, generating it if needed, and its metadata."""
    tag = _tag(rows, seed, users)
    path = DATA_DIR / f"{tag}.arrow"
    meta_path = DATA_DIR / f"{tag}.json"
    demo_mtime = DEMO_PATH.stat().st_mtime
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("demo_mtime") == demo_mtime:
            return path, meta
        print(f"demo.py changed since {path.name} was generated: regenerating", file=sys.stderr)

    import pyarrow.compute as pc

    DATA_DIR.mkdir(exist_ok=True)
    print(f"generating {rows:,} orders (seed {seed}) -> {path.relative_to(REPO)} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    table = load_demo().orders_only(rows, seed=seed, n_users=users)
    gen_s = time.perf_counter() - t0
    meta = {
        "rows": table.num_rows,
        "users": pc.count_distinct(table["user_id"]).as_py(),
        "seed": seed,
        "nbytes": table.nbytes,
        "generate_s": round(gen_s, 2),
        "demo_mtime": demo_mtime,
    }
    _write_ipc(table, path)
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"  generated in {gen_s:.1f} s, {meta['users']:,} users", file=sys.stderr)
    return path, meta


US_PER_DAY = 86_400_000_000


def ensure_signups_activity(orders_path: Path, seed: int) -> tuple[Path, Path]:
    """The signups and logins of ``signup_activity`` for a cached order file, generated (and cached
    beside it) from the orders: one signup per user an exponential 3 days (mean) before their first
    order, and three logins per order, each uniform in the 10 days before it but not before the
    signup, shuffled. Deterministic for the order file and seed."""
    signups_path = orders_path.with_name(orders_path.stem + "-signups.arrow")
    activity_path = orders_path.with_name(orders_path.stem + "-activity.arrow")
    if signups_path.exists() and activity_path.exists() and min(signups_path.stat().st_mtime, activity_path.stat().st_mtime) >= orders_path.stat().st_mtime:
        return signups_path, activity_path
    import numpy as np
    import polars as pl
    import pyarrow as pa

    print(f"generating signups and logins for {orders_path.name} ...", file=sys.stderr, flush=True)
    rng = np.random.default_rng([seed, 15])
    orders = pl.from_arrow(read_ipc(orders_path).select(["user_id", "ts"]))
    assert isinstance(orders, pl.DataFrame)
    first = orders.group_by("user_id").agg(first=pl.col("ts").min()).sort("user_id")
    delay = (rng.exponential(3 * US_PER_DAY, first.height)).astype(np.int64)
    signup_us = first["first"].dt.epoch("us").to_numpy() - delay
    signups = pa.table(
        {"user_id": first["user_id"].to_arrow(), "signup_ts": pa.array(signup_us, pa.timestamp("us", tz="UTC"))}
    )
    _write_ipc(signups, signups_path)
    sign = pl.from_arrow(signups)
    assert isinstance(sign, pl.DataFrame)
    per_order = orders.join(sign, on="user_id", how="left", maintain_order="left")
    ts_us = per_order["ts"].dt.epoch("us").to_numpy()
    floor_us = per_order["signup_ts"].dt.epoch("us").to_numpy()
    user = per_order["user_id"].to_numpy()
    del orders, per_order
    logins_per_order = 3
    n = len(user)
    out_user = np.empty(n * logins_per_order, np.int64)
    out_ts = np.empty(n * logins_per_order, np.int64)
    for k in range(logins_per_order):
        out_user[k * n : (k + 1) * n] = user
        out_ts[k * n : (k + 1) * n] = np.maximum(ts_us - (rng.random(n) * 10 * US_PER_DAY).astype(np.int64), floor_us)
    perm = rng.permutation(len(out_user))
    activity = pa.table(
        {"user_id": pa.array(out_user[perm]), "ts": pa.array(out_ts[perm], pa.timestamp("us", tz="UTC"))}
    )
    _write_ipc(activity, activity_path)
    return signups_path, activity_path


def add_segments(table: Any, by: tuple[str, ...]) -> Any:
    """The ``by`` columns as Arrow strings, constant per user (a hash of the int64 id)."""
    import numpy as np
    import pyarrow as pa

    ids = table["user_id"].to_numpy().astype(np.uint64)
    h = ids * np.uint64(0x9E3779B97F4A7C15)
    for i, name in enumerate(by):
        values = SEGMENTS[name]
        codes = ((h >> np.uint64(17 + 9 * i)) % np.uint64(len(values))).astype(np.int32)
        column = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(values)).cast(pa.string())
        table = table.append_column(name, column)
    return table


def convert_keys(tables: list[Any], key_type: str, seed: int) -> list[Any]:
    """Each table with its ``user_id`` converted from int64 to ``key_type`` (see ``KEY_TYPES``), the
    same user the same key in every table. The first table holds every user."""
    if key_type == "int64":
        return tables
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct = np.unique(tables[0]["user_id"].to_numpy())
    dense = np.random.default_rng([seed, 16]).permutation(len(distinct)).astype(np.int64)
    text = pc.binary_join_element_wise("u", pc.utf8_lpad(pc.cast(pa.array(distinct), pa.string()), 13, "0"), "")
    out = []
    for table in tables:
        where = np.searchsorted(distinct, table["user_id"].to_numpy())
        if key_type == "dense":
            column: Any = pa.array(dense[where])
        else:
            column = text.take(pa.array(where))
            if key_type == "large_string":
                column = column.cast(pa.large_string())
            elif key_type == "string_view":
                column = column.cast(pa.string_view())
            elif key_type in ("dictionary", "categorical"):
                column = pl.Series(column).cast(pl.Categorical).to_arrow()
            else:
                raise ValueError(f"unknown key type {key_type!r}")
        out.append(table.set_column(table.schema.get_field_index("user_id"), "user_id", column))
    return out


# --------------------------------------------------------------------------------------------------
# worker (runs in a fresh subprocess per configuration and engine)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB → MiB
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _skip(why: str) -> None:
    print(why, file=sys.stderr)
    sys.exit(SKIP)


def _job(engine: str, threads: int | None, job: Job) -> tuple[Callable[[list[Any]], Any], Callable[[Any], Any], Callable[[Any], Any], str]:
    """(prepare, compute, to_result, version) for one engine. ``prepare`` turns the Arrow inputs into
    the engine's own (untimed); ``compute`` is what is timed."""
    import peers

    if engine == "ltrcore":
        try:
            import ltrcore

            ltrcore.cohorts  # noqa: B018  (the package may exist before the binding does)
        except (ImportError, AttributeError) as exc:
            _skip(f"ltrcore is not importable ({type(exc).__name__}: {exc}); build it first (maturin develop -r)")
        kw: dict[str, Any] = dict(user="user_id", ts="ts", amount="amount", horizon=job.horizon, period=job.period, tz="UTC")
        if job.by:
            kw["by"] = list(job.by)
        if threads is not None:
            kw["threads"] = threads

        def run(inputs: list[Any]) -> Any:
            if job.signups:
                orders, signups, activity = inputs
                return ltrcore.cohorts(orders, signups=signups, signup_ts="signup_ts", activity=activity, activity_ts="ts", **kw).to_polars()
            return ltrcore.cohorts(inputs[0], **kw).to_polars()

        return (lambda t: t), run, lambda r: peers.from_ltrcore(r, job.horizon, job.by), getattr(ltrcore, "__version__", "?")
    engine = canonical(engine)
    tool, _, variant = engine.partition(":")
    if job.signups:
        _skip("no peer for signup cohorts with activity: ltrcore only")
    shape: dict[str, Any] = {}
    if job.by or job.period != "month":
        if engine not in peers.SHAPED:
            _skip(f"{engine} takes neither by nor another period; the shaped peers are {', '.join(sorted(peers.SHAPED))}")
        shape = {"by": list(job.by), "period": job.period}
    if tool == "polars":
        import polars as pl

        fn = peers.POLARS_VARIANTS[variant]
        prepare = lambda t: [pl.from_arrow(t[0], rechunk=False)]  # noqa: E731
        return prepare, (lambda t: fn(t[0], horizon=job.horizon, **shape)), (lambda r: r), pl.__version__
    if tool == "duckdb":
        try:
            import duckdb
        except ImportError as exc:
            _skip(f"duckdb is not installed ({exc})")
        fn = peers.DUCKDB_VARIANTS[variant]
        con = duckdb.connect()
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        return (lambda t: t), (lambda t: fn(t[0], horizon=job.horizon, con=con, **shape)), (lambda r: r), duckdb.__version__
    raise SystemExit(f"unknown engine {engine!r}")


def worker(args: argparse.Namespace) -> None:
    job = JOBS[args.job]
    prepare, compute, to_result, version = _job(args.worker, args.threads, job)  # imports happen here
    if args.worker == "ltrcore" and args.key_type == "categorical":
        import polars as pl

        prepare = lambda t: [pl.from_arrow(t[0], rechunk=False), *t[1:]]  # noqa: E731
    tables = [read_ipc(args.data)]
    if job.signups:
        tables += [read_ipc(args.signups), read_ipc(args.activity)]
    if job.by:
        tables[0] = add_segments(tables[0], job.by)
    tables = convert_keys(tables, args.key_type, args.seed)
    input_bytes = sum(t.nbytes for t in tables)
    inputs = prepare(tables)
    gc.collect()
    exact_peak = _reset_peak()
    baseline = _status_mb("VmRSS")
    times = []
    result = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = compute(inputs)
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    out = to_result(result)
    out.write_parquet(args.out)
    print(
        json.dumps(
            {
                "engine": args.worker,
                "version": version,
                "times": times,
                "rows": tables[0].num_rows,
                "input_bytes": input_bytes,
                "baseline_mb": baseline,
                "peak_extra_mb": peak - baseline,
                "exact_peak": exact_peak,
                "cells": out.height,
            }
        )
    )


# --------------------------------------------------------------------------------------------------
# driver


@dataclass(frozen=True)
class Config:
    users: int | None  # None: rows / 12.7
    key_type: str = DEFAULT_KEY
    job: str = DEFAULT_JOB
    threads: int | None = None  # None: all cores
    series: str = ""  # scaling: the series this point belongs to ("threads" or "users")


def run_engine(engine: str, cfg: Config, data: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--data", str(data["orders"])]
    cmd += ["--out", str(out), "--repeat", str(args.repeat), "--horizon", str(args.horizon), "--seed", str(args.seed)]
    cmd += ["--job", cfg.job, "--key-type", cfg.key_type]
    if "signups" in data:
        cmd += ["--signups", str(data["signups"]), "--activity", str(data["activity"])]
    env = dict(os.environ)
    if cfg.threads is not None:
        cmd += ["--threads", str(cfg.threads)]
        env["POLARS_MAX_THREADS"] = str(cfg.threads)
        env["RAYON_NUM_THREADS"] = str(cfg.threads)
    print(f"running {engine} ({cfg.job}, {cfg.key_type}, threads {cfg.threads or 'all'}, users {cfg.users or 'default'}) ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, cwd=str(HERE), capture_output=True, text=True)
    if proc.returncode == SKIP:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "not available"
        print(f"  skipped {engine}: {why}", file=sys.stderr)
        return {"skipped": why}
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{engine} failed with exit status {proc.returncode}")
    if proc.stderr.strip():
        sys.stderr.write("".join("  " + line + "\n" for line in proc.stderr.strip().splitlines()))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table_rows(
    results: dict[tuple[Config, str], dict[str, Any]], metas: dict[int | None, dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The measurements as ``print_table`` rows, with each row's ratio (see the footnotes)."""
    peers = _peers()
    best = {key: min(r["times"]) for key, r in results.items()}
    # The first point of each scaling series, the reference of its ltrcore rows.
    series_first: dict[str, Config] = {}
    for cfg, engine in results:
        if cfg.series and engine == "ltrcore":
            series_first.setdefault(cfg.series, cfg)
    rows = []
    for (cfg, engine), r in results.items():
        meta = metas[cfg.users]
        base = best.get((cfg, "ltrcore"))
        ratio: float | None = None
        ratio_of: str | None = None
        if engine == "ltrcore":
            int64 = best.get((replace(cfg, key_type=DEFAULT_KEY), "ltrcore"))
            first = series_first.get(cfg.series)
            if cfg.series and first is not None:
                ref = first.threads if cfg.series == "threads" else first.users
                ratio = best[(first, "ltrcore")] / best[(cfg, engine)]
                what = f"{ref or 'all'} thread(s)" if cfg.series == "threads" else f"{metas[first.users]['users']:,} users"
                ratio_of = f"scaling, {cfg.series} series: ltrcore's wall at {what} ÷ this wall (above 1: faster)"
            elif cfg.key_type != DEFAULT_KEY and int64 is not None:
                ratio = best[(cfg, engine)] / int64
                ratio_of = "ltrcore's wall ÷ its own int64 wall in the same run (the issue's target: at most 2)"
            else:
                peer_best = [
                    best[(c, e)] for (c, e) in results if c == cfg and e != "ltrcore" and canonical(e) not in peers.NOT_GENERAL
                ]
                if peer_best:
                    ratio = min(peer_best) / best[(cfg, engine)]
                    ratio_of = "the fastest peer's wall ÷ ltrcore's, same run, input and job (ltrcore is N× faster)"
        elif base is not None:
            ratio = best[(cfg, engine)] / base
            ratio_of = "this peer's wall ÷ ltrcore's, same run, input and job (ltrcore is N× faster)"
        rows.append(
            {
                "rows": meta["rows"],
                "users": meta["users"],
                "key_type": cfg.key_type,
                "job": cfg.job,
                "tool": engine if engine == "ltrcore" or ":" in engine else canonical(engine),
                "threads": cfg.threads,
                "wall_s": best[(cfg, engine)],
                "rows_per_s": meta["rows"] / best[(cfg, engine)],
                "peak_rss_mib": r["peak_extra_mb"],
                "ratio": ratio,
                "ratio_of": ratio_of,
            }
        )
    return rows


def configs_for(args: argparse.Namespace) -> list[Config]:
    if args.scaling:
        out = [Config(args.users, threads=t, series="threads") for t in (1, 2)]
        out += [Config(u, threads=args.threads[0] if args.threads else None, series="users") for u in args.scaling_users]
        return out
    threads: list[int | None] = list(args.threads) if args.threads else [None]
    return [Config(args.users, key_type=k, job=j, threads=t) for t in threads for j in args.jobs for k in args.key_types]


def engines_for(cfg: Config, engines: list[str]) -> list[str]:
    """Scaling: the users series runs ltrcore alone (peers only at 1 and 2 threads)."""
    if cfg.series == "users":
        return [e for e in engines if e == "ltrcore"]
    return engines


def run_parquet(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    try:
        parquet_scale = importlib.import_module("parquet_scale")
    except ModuleNotFoundError as exc:
        if exc.name != "parquet_scale":
            raise
        print(f"--parquet needs benches/parquet_scale.py, which is missing here ({HERE})", file=sys.stderr)
        return 2
    threads = args.threads[0] if args.threads else None
    rows = parquet_scale.run(args.rows, Path(args.parquet), users=args.users, threads=threads, repeat=args.repeat)
    print()
    print_table(rows, markdown=args.markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=parse_rows, default=parse_rows("2M"), help="order rows, e.g. 200k, 2M, 20M, 90M (default 2M)")
    p.add_argument("--users", type=parse_rows, default=None, help="distinct users, e.g. 100K, 1M, 7M (default rows / 12.7)")
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="comma-separated list of ltrcore, polars, duckdb (each peer's fastest variant) or tool:variant, "
        "e.g. polars:plain,duckdb:window (the variants are peers.POLARS_VARIANTS and peers.DUCKDB_VARIANTS)",
    )
    p.add_argument("--variants", action="store_true", help="run ltrcore and every variant of both peers (overrides --engines)")
    p.add_argument(
        "--key-types",
        type=lambda s: _names(s, KEY_TYPES, "key types"),
        default=[DEFAULT_KEY],
        help=f"comma-separated user id types: {', '.join(KEY_TYPES)} (default int64)",
    )
    p.add_argument("--jobs", type=lambda s: _names(s, JOBS, "jobs"), default=[DEFAULT_JOB], help=f"comma-separated: {', '.join(JOBS)} (default {DEFAULT_JOB})")
    p.add_argument("--threads", type=_threads_list, default=None, help="threads for every engine, or a list such as 2,1 (default: all cores)")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="rows/s against threads (1, 2) at the default users and against users (--scaling-users) at fixed rows; "
        "the users series runs ltrcore only",
    )
    p.add_argument("--scaling-users", type=lambda s: [parse_rows(x) for x in s.split(",")], default=[10**5, 10**6, 10**7])
    p.add_argument("--parquet", type=Path, default=None, help="run benches/parquet_scale.py on a parquet dataset in DIR (written if missing)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per engine process; reports the best (default 3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="engines take turns this many times, each in a fresh process; times are pooled per engine, so a "
        "drift in the machine's speed during the run weighs on every engine alike (default 1)",
    )
    p.add_argument("--horizon", type=int, default=12, help="horizon of the month12 job (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    # worker mode (internal)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--signups", help=argparse.SUPPRESS)
    p.add_argument("--activity", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--job", default=DEFAULT_JOB, help=argparse.SUPPRESS)
    p.add_argument("--key-type", default=DEFAULT_KEY, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.horizon != 12:
        JOBS["month12"] = replace(JOBS["month12"], horizon=args.horizon)

    if args.worker:
        args.threads = args.threads[0] if args.threads else None
        worker(args)
        return 0
    if args.repeat < 1 or args.rounds < 1:
        p.error("--repeat and --rounds must be >= 1")
    if args.parquet is not None:
        return run_parquet(args)

    engines = all_engines() if args.variants else [e.strip() for e in args.engines.split(",") if e.strip()]
    known = set(ENGINES) | set(all_engines())
    unknown = sorted(set(engines) - known)
    if unknown:
        p.error(f"unknown engines {unknown}; choose from {', '.join(sorted(known))}")

    configs = configs_for(args)
    metas: dict[int | None, dict[str, Any]] = {}
    data: dict[int | None, dict[str, Any]] = {}
    for cfg in configs:
        if cfg.users not in data:
            path, metas[cfg.users] = ensure_data(args.rows, args.seed, cfg.users)
            data[cfg.users] = {"orders": path}
        if JOBS[cfg.job].signups and "signups" not in data[cfg.users]:
            data[cfg.users]["signups"], data[cfg.users]["activity"] = ensure_signups_activity(data[cfg.users]["orders"], args.seed)

    results: dict[tuple[Config, str], dict[str, Any]] = {}
    outputs: dict[tuple[Config, str], Path] = {}
    skipped: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="ltrcore-bench-") as tmp:
        for _ in range(args.rounds):
            for i, cfg in enumerate(configs):
                for engine in engines_for(cfg, engines):
                    if (cfg.job, engine) in skipped:
                        continue
                    out = Path(tmp) / f"{i}-{engine}.parquet"
                    r = run_engine(engine, cfg, data[cfg.users], args, out)
                    key = (cfg, engine)
                    if "skipped" in r:
                        skipped[(cfg.job, engine)] = r["skipped"]
                    elif key in results:
                        pooled = results[key]
                        pooled["times"] += r["times"]
                        pooled["peak_extra_mb"] = max(pooled["peak_extra_mb"], r["peak_extra_mb"])
                        pooled["exact_peak"] = pooled.get("exact_peak", True) and r.get("exact_peak", True)
                    else:
                        results[key] = r
                        outputs[key] = out
        if not results:
            print("no engine ran", file=sys.stderr)
            return 2

        import polars as pl

        import peers

        frames = {key: pl.read_parquet(o) for key, o in outputs.items()}

    head = (
        f"{args.rows:,} orders, threads {', '.join(str(t) for t in args.threads) if args.threads else 'all'} of {os.cpu_count()}, "
        f"{args.repeat} runs" + (f" × {args.rounds} rounds (engines in turn)" if args.rounds > 1 else "") + ", best of them; "
        f"peak RSS above the loaded input; jobs {', '.join(dict.fromkeys(c.job for c in configs))}"
    )
    print()
    print(head)
    print_table(table_rows(results, metas, args), markdown=args.markdown)
    versions = {e: r["version"] for (_, e), r in results.items()}
    print("versions: " + ", ".join(f"{e} {v}" for e, v in versions.items()))
    if any(c.key_type != DEFAULT_KEY for c in configs):
        for tool, note in KEY_NOTES.items():
            if any(e.startswith(tool) for e in engines):
                print(f"key types: {note}")
    for (job, engine), why in skipped.items():
        print(f"skipped {engine} on {job}: {why}")

    # Cross-check: per (users, job), every result against the first (ltrcore on int64 when it ran).
    status = 0
    groups: dict[tuple[int | None, str], list[tuple[Config, str]]] = {}
    for key in frames:
        groups.setdefault((key[0].users, key[0].job), []).append(key)
    for (users, job), keys in groups.items():
        name = lambda k: f"{k[1]}[{k[0].key_type}, threads {k[0].threads or 'all'}]"  # noqa: E731
        if len(keys) < 2:
            print(f"\ncross-check {job} ({metas[users]['users']:,} users): only one result, nothing to compare")
            continue
        ref = keys[0]
        bad = False
        for other in keys[1:]:
            problems = peers.compare(frames[ref], frames[other], names=(name(ref), name(other)), by=JOBS[job].by)
            if problems:
                status, bad = 1, True
                print(f"\nMISMATCH {job}: {name(ref)} vs {name(other)}:")
                for pr in problems:
                    print("  " + pr.replace("\n", "\n  "))
        if not bad:
            cells = frames[ref].height
            print(f"\ncross-check {job} ({metas[users]['users']:,} users): {' = '.join(map(name, keys))} on revenue, orders, payers, cohort_size ({cells} cells)")
    if not all(r.get("exact_peak", True) for r in results.values()):
        print("note: /proc/self/clear_refs unavailable, so the peaks include loading the data")
    if args.json:
        dump = [{"config": asdict(c), "engine": e, **r} for (c, e), r in results.items()]
        args.json.write_text(json.dumps({"metas": {str(k): v for k, v in metas.items()}, "args": vars(args) | {"json": str(args.json)}, "results": dump}, indent=1, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
