"""Benchmarks of ltrcore against hand-written Polars and DuckDB (``peers.py``) on the same orders.

These are smoke tests, not timed tests. ``pytest benches`` runs with ``--benchmark-disable`` (the
project's ``addopts``), so each benchmark runs once and nothing asserts on speed. What they do assert
is that the engines agree on every number, so this suite cannot silently rot. The peers are also
checked against a plain-Python reference on a small table full of edge cases.

    pytest benches                                   # smoke run, 200k rows
    LTRCORE_BENCH_ROWS=2M pytest benches --benchmark-enable --benchmark-columns=min,median,rounds

For memory, fresh processes and a printed comparison table, use ``benches/vs_peers.py``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import warnings
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pa = pytest.importorskip("pyarrow")
pl = pytest.importorskip("polars")

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# Loaded by path under private names: no clash with tests/, and no built ltrcore needed for the peers.
peers = _load("ltrcore_bench_peers", HERE / "peers.py")
demo = _load("ltrcore_bench_demo", HERE.parent / "python" / "ltrcore" / "demo.py")


def _rows_from_env() -> int:
    text = os.environ.get("LTRCORE_BENCH_ROWS", "200k").strip().lower()
    mult = {"k": 10**3, "m": 10**6}.get(text[-1:], 1)
    return int(float(text.rstrip("km").replace("_", "")) * mult)


ROWS = _rows_from_env()
HORIZON = 12


def _ltrcore() -> Any:
    ltrcore = pytest.importorskip("ltrcore", reason="ltrcore is not built/installed (pip install . or maturin develop)")
    if not hasattr(ltrcore, "cohorts"):
        pytest.skip("ltrcore has no cohorts() yet")
    return ltrcore


def _ltrcore_cohorts(orders: Any, *, tz: str = "UTC") -> Any:
    ltrcore = _ltrcore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExcludedRowsWarning on the edge-case table is expected
        return ltrcore.cohorts(orders, user="user_id", ts="ts", amount="amount", horizon=HORIZON, period="month", tz=tz)


@pytest.fixture(scope="module")
def orders() -> Any:
    return demo.orders_only(ROWS, seed=0)


# --------------------------------------------------------------------------------------------------
# benchmarks (group: one table per data size)


@pytest.mark.benchmark(group=f"cohorts-{ROWS}")
def test_bench_ltrcore(benchmark: Any, orders: Any) -> None:
    ltrcore = _ltrcore()
    kw = dict(user="user_id", ts="ts", amount="amount", horizon=HORIZON, period="month", tz="UTC")
    table = benchmark(lambda: ltrcore.cohorts(orders, **kw).to_polars())
    assert peers.from_ltrcore(table, HORIZON).height > 0


@pytest.mark.benchmark(group=f"cohorts-{ROWS}")
def test_bench_polars(benchmark: Any, orders: Any) -> None:
    out = benchmark(peers.polars_cohorts, orders, horizon=HORIZON)
    assert out.height > 0 and out.columns == list(peers.COLUMNS)


@pytest.mark.benchmark(group=f"cohorts-{ROWS}")
def test_bench_duckdb(benchmark: Any, orders: Any) -> None:
    pytest.importorskip("duckdb")
    out = benchmark(peers.duckdb_cohorts, orders, horizon=HORIZON)
    assert out.height > 0 and out.columns == list(peers.COLUMNS)


# --------------------------------------------------------------------------------------------------
# the engines agree


def _assert_same(a: Any, b: Any, names: tuple[str, str]) -> None:
    problems = peers.compare(a, b, names=names)
    assert not problems, "\n".join(problems)


def test_polars_and_duckdb_agree(orders: Any) -> None:
    pytest.importorskip("duckdb")
    _assert_same(peers.polars_cohorts(orders), peers.duckdb_cohorts(orders), ("polars", "duckdb"))


def test_ltrcore_agrees_with_peers(orders: Any) -> None:
    got = peers.from_ltrcore(_ltrcore_cohorts(orders), HORIZON)
    _assert_same(got, peers.polars_cohorts(orders), ("ltrcore", "polars"))
    if importlib.util.find_spec("duckdb") is not None:
        _assert_same(got, peers.duckdb_cohorts(orders), ("ltrcore", "duckdb"))
    # ltrcore reports every cell of a reported cohort up to the last complete month; the peers only
    # non-empty ones, which on this data is all of them
    assert got.height == peers.polars_cohorts(orders).height


@pytest.mark.parametrize(
    "name", [f"polars:{v}" for v in peers.POLARS_VARIANTS] + [f"duckdb:{v}" for v in peers.DUCKDB_VARIANTS]
)
def test_every_peer_variant_agrees_with_ltrcore(orders: Any, name: str) -> None:
    """Every timed variant of ``peers.py`` gives ltrcore's numbers, cell by cell, on the benchmark's data."""
    tool, _, variant = name.partition(":")
    if tool == "duckdb":
        pytest.importorskip("duckdb")
    fn = (peers.POLARS_VARIANTS if tool == "polars" else peers.DUCKDB_VARIANTS)[variant]
    got = peers.from_ltrcore(_ltrcore_cohorts(orders), HORIZON)
    _assert_same(got, fn(orders, horizon=HORIZON), ("ltrcore", name))


def test_fastest_variants_are_general() -> None:
    """The peers the benchmark reports are variants that compute the job in general on such data."""
    assert peers.POLARS_FASTEST in peers.POLARS_VARIANTS and peers.DUCKDB_FASTEST in peers.DUCKDB_VARIANTS
    assert f"polars:{peers.POLARS_FASTEST}" not in peers.NOT_GENERAL
    assert f"duckdb:{peers.DUCKDB_FASTEST}" not in peers.NOT_GENERAL


def test_vs_peers_variant_selector_runs_and_agrees() -> None:
    """``vs_peers.py`` with ``tool:variant`` engines at a small size: it runs them in fresh processes
    and its cross-check passes."""
    import subprocess

    _ltrcore()
    done = subprocess.run(
        [sys.executable, str(HERE / "vs_peers.py"), "--rows", "20k", "--repeat", "1",
         "--engines", "ltrcore,polars,polars:join,duckdb:window"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = " = ".join(f"{e}[int64, threads all]" for e in ("ltrcore", "polars", "polars:join", "duckdb:window"))
    assert f"cross-check month12 (1,575 users): {names}" in done.stdout, done.stdout


vs_peers = _load("ltrcore_bench_vs_peers", HERE / "vs_peers.py")


def _vs_peers(*options: str) -> str:
    """Runs ``vs_peers.py`` at a tiny size; asserts it succeeded (its cross-checks passed)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(HERE / "vs_peers.py"), "--rows", "20k", "--repeat", "1", *options],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MISMATCH" not in done.stdout and "machine: " in done.stdout, done.stdout
    return done.stdout


def test_vs_peers_key_types_run_and_agree() -> None:
    """Every key type on ltrcore and both fastest peers: one cross-check over all of them (each key
    type's table equals int64's), and ltrcore's rows of other key types carry the ratio to its int64."""
    _ltrcore()
    pytest.importorskip("duckdb")
    out = _vs_peers("--key-types", ",".join(vs_peers.KEY_TYPES))
    names = [f"{e}[{k}, threads all]" for k in vs_peers.KEY_TYPES for e in ("ltrcore", "polars", "duckdb")]
    assert "cross-check month12 (1,575 users): " + " = ".join(names) in out, out
    assert "ltrcore's wall ÷ its own int64 wall" in out


def test_vs_peers_jobs_run_and_agree() -> None:
    """Every job shape: the peers run where they have the shape and agree with ltrcore cell by cell;
    signup cohorts with activity run ltrcore only, and the table says so."""
    _ltrcore()
    pytest.importorskip("duckdb")
    out = _vs_peers("--jobs", ",".join(vs_peers.JOBS), "--key-types", "int64,dense")
    for job, shape in vs_peers.JOBS.items():
        engines = ("ltrcore",) if shape.signups else ("ltrcore", "polars", "duckdb")
        names = [f"{e}[{k}, threads all]" for k in ("int64", "dense") for e in engines]
        assert f"cross-check {job} (1,575 users): " + " = ".join(names) in out, out
    assert "skipped polars on signup_activity: no peer" in out


def test_vs_peers_scaling_runs() -> None:
    """``--scaling``: the thread series with a peer, the users series with ltrcore alone."""
    _ltrcore()
    out = _vs_peers("--scaling", "--scaling-users", "1k,4k", "--engines", "ltrcore,polars")
    assert "cross-check month12 (1,575 users): ltrcore[int64, threads 1] = polars[int64, threads 1] = ltrcore[int64, threads 2]" in out, out
    assert "scaling, threads series" in out and "scaling, users series" in out
    assert "4,000 " in out and "1,000 " in out


@pytest.mark.parametrize("job", ["by1", "by3", "week104", "day400"])
def test_shaped_peers_agree_with_ltrcore(orders: Any, job: str) -> None:
    """The fastest peers extended to segments (constant per user) and week/day periods give ltrcore's
    numbers cell by cell."""
    shape = vs_peers.JOBS[job]
    table = vs_peers.add_segments(orders, shape.by)
    ltrcore = _ltrcore()
    got = peers.from_ltrcore(
        ltrcore.cohorts(table, horizon=shape.horizon, period=shape.period, by=list(shape.by) or None), shape.horizon, shape.by
    )
    kw = dict(horizon=shape.horizon, period=shape.period, by=list(shape.by))
    _assert_same_by(got, peers.POLARS_VARIANTS[peers.POLARS_FASTEST](table, **kw), (job, "polars"), shape.by)
    if importlib.util.find_spec("duckdb") is not None:
        _assert_same_by(got, peers.DUCKDB_VARIANTS[peers.DUCKDB_FASTEST](table, **kw), (job, "duckdb"), shape.by)


def _assert_same_by(a: Any, b: Any, names: tuple[str, str], by: Any) -> None:
    problems = peers.compare(a, b, names=names, by=by)
    assert not problems, "\n".join(problems)
    assert a.height > 0 and b.height > 0


def test_convert_keys_keeps_users_apart() -> None:
    """Each key type maps the same user to the same key in every table, distinct users to distinct
    keys; dense keys are exactly 0..users-1."""
    t = demo.orders_only(5_000, seed=1)
    other = t.slice(0, 700)
    users = len(set(t["user_id"].to_pylist()))
    for key_type in vs_peers.KEY_TYPES:
        a, b = vs_peers.convert_keys([t, other], key_type, seed=0)
        pairs = set(zip(t["user_id"].to_pylist(), a["user_id"].to_pylist()))
        assert len(pairs) == users == len({k for _, k in pairs}), key_type
        assert set(zip(other["user_id"].to_pylist(), b["user_id"].to_pylist())) <= pairs, key_type
        if key_type == "dense":
            assert sorted(k for _, k in pairs) == list(range(users))
        if key_type == "dictionary":
            assert a.schema.field("user_id").type == pl.Series(["x"], dtype=pl.Categorical).to_arrow().type
        if key_type in ("large_string", "string_view"):
            assert a.schema.field("user_id").type == getattr(pa, key_type)()


def test_print_table_footnotes(capsys: Any) -> None:
    row = dict(rows=1000, users=10, key_type="int64", job="month12", tool="ltrcore", wall_s=0.5, rows_per_s=2000.0, peak_rss_mib=3.0)
    vs_peers.print_table([{**row, "ratio": 4.0}, {**row, "tool": "polars", "ratio": None}, {**row, "ratio": 1.5, "ratio_of": "custom"}])
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    assert "4.00*" in out and "1.50†" in out and "† ratio: custom" in out and "* ratio: the fastest peer" in out


def test_vs_peers_parquet_prints_the_modules_rows(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    """``--parquet DIR`` hands rows, directory, users, threads and repeat to ``parquet_scale.run`` and
    prints what it returns as the report table."""
    import types

    seen = {}

    def run(rows: int, directory: Path, *, users: Any = None, threads: Any = None, repeat: int = 1) -> list[dict[str, Any]]:
        seen.update(rows=rows, directory=directory, users=users, threads=threads, repeat=repeat)
        return [dict(rows=rows, users=7, key_type="int64", job="month12", tool="ltrcore (parquet)", wall_s=2.0, rows_per_s=rows / 2.0, peak_rss_mib=100.0, ratio=None)]

    monkeypatch.setitem(sys.modules, "parquet_scale", types.SimpleNamespace(run=run))
    assert vs_peers.main(["--rows", "1k", "--users", "7", "--threads", "1", "--repeat", "2", "--parquet", str(tmp_path)]) == 0
    assert seen == dict(rows=1000, directory=tmp_path, users=7, threads=1, repeat=2)
    assert "ltrcore (parquet)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# the peers against a plain-Python reference on edge cases


def _edge_table() -> Any:
    """~3k rows over 15 months with refunds, zero amounts, refunds before the first purchase, users
    who never pay, rows beyond the horizon, null/NaN/inf rows, and times next to month boundaries in
    both UTC and Europe/Berlin. The last row (a valid purchase) fixes the running month."""
    rng = np.random.default_rng(11)
    n = 3_000
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    span = (datetime(2025, 3, 20, tzinfo=timezone.utc) - start).total_seconds()
    pool = np.array([-7, 0, 3, 2**40 + 5, *rng.integers(1, 2**62, 400)], dtype=np.int64)
    who = rng.integers(0, len(pool), n)
    users = pool[who]
    joined = rng.random(len(pool)) * span  # each user is around from their own start on
    secs = joined[who] + rng.random(n) * (span - joined[who])
    ts = [start + timedelta(seconds=float(s)) for s in secs]
    # month boundaries: Berlin midnight is 23:00 / 22:00 UTC the previous day
    for i in range(50, 250, 2):
        k = (i // 2) % 15  # 2024-01 .. 2025-03
        month = datetime(2024 + k // 12, k % 12 + 1, 1, tzinfo=timezone.utc)
        ts[i] = month - timedelta(minutes=30)
        ts[i + 1] = month + timedelta(minutes=30)
    amounts = np.round(rng.lognormal(3.5, 0.8, n), 2)
    kind = rng.random(n)
    amounts = np.where(kind < 0.08, -np.round(amounts * 0.5, 2), amounts)  # refunds
    amounts = np.where((kind >= 0.08) & (kind < 0.10), 0.0, amounts)  # zero-amount rows
    amounts = np.where((kind >= 0.10) & (kind < 0.12), amounts + 0.123456, amounts)  # rounded to 4
    amt: list[float | None] = amounts.tolist()
    user: list[int | None] = users.tolist()
    tss: list[datetime | None] = list(ts)
    # users 101/102 never pay: only refunds and zero rows
    for i, (u, a) in enumerate(((101, -5.0), (101, 0.0), (102, -1.25), (102, -3.5))):
        user[10 + i], amt[10 + i] = u, a
    # user 103: a refund before the first purchase (age < 0) and a purchase 13 months later (age 13)
    user[20:23], amt[20:23] = [103, 103, 103], [-9.99, 25.0, 40.0]
    tss[20:23] = [datetime(2024, 2, 3, tzinfo=timezone.utc), datetime(2024, 3, 3, tzinfo=timezone.utc), datetime(2025, 2, 3, tzinfo=timezone.utc)]
    for i in range(30, 36):
        user[i] = None
    for i in range(36, 40):
        tss[i] = None
    for i, v in zip(range(40, 46), (None, float("nan"), float("inf"), float("-inf"), None, float("nan"))):
        amt[i] = v
    user.append(int(users[0]))
    tss.append(datetime(2025, 3, 25, tzinfo=timezone.utc))
    amt.append(10.0)
    return pa.table(
        {
            "user_id": pa.array(user, pa.int64()),
            "ts": pa.array(tss, pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amt, pa.float64()),
        }
    )


def _reference(table: Any, tz: str, horizon: int = HORIZON) -> Any:
    """The job written as plainly as possible, one row at a time."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    rows = []
    for u, t, a in zip(*(table[c].to_pylist() for c in ("user_id", "ts", "amount"))):
        if u is None or t is None or a is None or not math.isfinite(a):
            continue
        local = t.astimezone(zone)
        a = float(Decimal(repr(a)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))
        rows.append((u, local.year * 12 + local.month - 1, a))
    last = max(m for _, m, _ in rows)
    rows = [r for r in rows if r[1] < last]
    first: dict[int, int] = {}
    for u, m, a in rows:
        if a > 0:
            first[u] = min(first.get(u, m), m)
    revenue: dict[tuple[int, int], float] = defaultdict(float)
    orders: dict[tuple[int, int], int] = defaultdict(int)
    payers: dict[tuple[int, int], set[int]] = defaultdict(set)
    for u, m, a in rows:
        if u not in first or not 0 <= m - first[u] < horizon:
            continue
        key = (first[u], m - first[u])
        revenue[key] += a
        if a > 0:
            orders[key] += 1
            payers[key].add(u)
    size: dict[int, int] = defaultdict(int)
    for c in first.values():
        size[c] += 1
    keys = sorted(revenue)
    return pl.DataFrame(
        {
            "cohort": [datetime(c // 12, c % 12 + 1, 1).date() for c, _ in keys],
            "age": [k for _, k in keys],
            "cohort_size": [size[c] for c, _ in keys],
            "revenue": [revenue[k] for k in keys],
            "orders": [orders[k] for k in keys],
            "payers": [len(payers[k]) for k in keys],
        }
    )


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_peers_match_plain_reference(tz: str) -> None:
    table = _edge_table()
    ref = _reference(table, tz)
    assert ref.height > 100
    _assert_same(peers.polars_cohorts(table, tz=tz), ref, ("polars", "reference"))
    _assert_same(peers.polars_cohorts(pl.from_arrow(table).lazy(), tz=tz), ref, ("polars lazy", "reference"))
    if importlib.util.find_spec("duckdb") is not None:
        _assert_same(peers.duckdb_cohorts(table, tz=tz), ref, ("duckdb", "reference"))


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_ltrcore_matches_plain_reference(tz: str) -> None:
    table = _edge_table()
    got = peers.from_ltrcore(_ltrcore_cohorts(table, tz=tz), HORIZON)
    _assert_same(got, _reference(table, tz), ("ltrcore", "reference"))


def test_demo_orders_only_shape() -> None:
    t = demo.orders_only(10_000, seed=3)
    assert t.num_rows == 10_000
    assert t.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert t.schema.field("user_id").type == pa.int64() and t.schema.field("amount").type == pa.float64()
    users = len(set(t["user_id"].to_pylist()))
    assert abs(users - 10_000 / 12.7) <= 1
    assert demo.orders_only(10_000, seed=3).equals(t)


@pytest.mark.spark
def test_spark_bench_runs_and_agrees(tmp_path: Path) -> None:
    """``spark_bench.py`` end to end at a small size (its own Spark session): every variant runs and
    the script's cross-check of ltrcore.spark and both SQL variants against ltrcore.cohorts passes."""
    import shutil
    import subprocess

    pytest.importorskip("pyspark", reason="pyspark missing: pip install '.[test]'")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, str(HERE / "spark_bench.py"), "--rows", "20k", "--files", "2", "--repeat", "1",
         "--driver-memory", "1g", "--json", str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cross-check" in done.stdout and "skipped" not in done.stdout, done.stdout


def test_state_bench_runs_and_agrees(tmp_path: Path) -> None:
    """``state_bench.py`` end to end at a small size: every step runs, and the state's table equals
    the full recompute's (the script exits with status 1 otherwise)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(HERE / "state_bench.py"), "--rows", "30k", "--repeat", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cross-check: the state's table equals the full recompute's" in done.stdout


# --------------------------------------------------------------------------------------------------
# parquet_scale.py: the bigger-than-RAM dataset and its runner


def _parquet_scale(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``parquet_scale.py`` with small row groups and files, so that a tiny dataset has several of each."""
    mod = _load("ltrcore_bench_parquet_scale", HERE / "parquet_scale.py")
    monkeypatch.setattr(mod, "ROW_GROUP_ROWS", 20_000)
    monkeypatch.setattr(mod, "FILE_GROUPS", 4)
    monkeypatch.setattr(mod, "SIGNUP_GROUP_ROWS", 5_000)
    return mod


def test_parquet_scale_writes_a_consistent_time_ordered_order_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exactly the rows and users asked for, 3 % refunds, several files of several row groups, the
    log in time order, and every user's orders consistent: the first one a purchase, at or after the
    signup; a refund after a purchase of the same user."""
    ps = _parquet_scale(monkeypatch)
    manifest = ps.generate(300_000, tmp_path / "d", users=10_000, seed=1)
    assert manifest is not None and manifest["complete"] and (manifest["rows"], manifest["users"]) == (300_000, 10_000)
    files = sorted((tmp_path / "d" / "orders").glob("*.parquet"))
    assert len(files) == manifest["orders_files"] >= 3
    import pyarrow.parquet as pq

    assert all(pq.ParquetFile(f).metadata.num_row_groups >= 2 for f in files[:-1])
    orders = pl.read_parquet(files)
    signups = pl.read_parquet(tmp_path / "d" / "signups")
    assert orders.height == 300_000 and orders.schema == pl.Schema(
        {"user_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "amount": pl.Float64}
    )
    assert orders["ts"].is_sorted()
    assert orders.filter(pl.col("amount") < 0).height == round(0.03 * 300_000)
    assert signups.height == 10_000 and signups["user_id"].n_unique() == 10_000
    per_user = orders.group_by("user_id").agg(
        first=pl.col("ts").min(),
        first_paid=pl.col("ts").filter(pl.col("amount") > 0).min(),
        first_refund=pl.col("ts").filter(pl.col("amount") < 0).min(),
    )
    joined = per_user.join(signups, on="user_id", how="full", coalesce=True)
    assert joined.height == 10_000 and joined["first"].null_count() == 0 and joined["signup_ts"].null_count() == 0
    assert (joined["signup_ts"] <= joined["first"]).all()
    assert (joined["first"] == joined["first_paid"]).all()
    assert joined.filter(pl.col("first_refund") <= pl.col("first_paid")).height == 0


def test_parquet_scale_is_seeded_resumable_and_regenerates_on_another_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = _parquet_scale(monkeypatch)
    whole = ps.generate(200_000, tmp_path / "whole")
    pieces = 0
    while ps.generate(200_000, tmp_path / "pieces", max_seconds=0) is None:  # one file a call
        pieces += 1
    assert whole is not None and pieces >= 2
    names = [p.relative_to(tmp_path / "whole") for p in sorted((tmp_path / "whole").rglob("*.parquet"))]
    assert names == [p.relative_to(tmp_path / "pieces") for p in sorted((tmp_path / "pieces").rglob("*.parquet"))]
    for name in names:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "pieces" / name).read_bytes(), name
    before = (tmp_path / "whole" / names[0]).read_bytes()
    again = ps.generate(200_000, tmp_path / "whole", seed=7)
    assert again is not None and again["seed"] == 7 and (tmp_path / "whole" / names[0]).read_bytes() != before


def test_parquet_scale_refuses_a_dataset_the_disk_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ps = _parquet_scale(monkeypatch)
    monkeypatch.setattr(ps, "BYTES_PER_ROW_ESTIMATE", 1e12)
    with pytest.raises(SystemExit, match="refusing to write 100,000 orders"):
        ps.generate(100_000, tmp_path / "d")
    assert not (tmp_path / "d" / "orders").exists()


def test_parquet_scale_runs_every_job_and_ltrcore_agrees_with_the_peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` at a small size: the floor, ltrcore's scan and both cohort kinds, each in a fresh
    process that reads every row; ltrcore on the directory gives the peers' numbers on its rows."""
    _ltrcore()
    ps = _parquet_scale(monkeypatch)
    results = ps.run(200_000, tmp_path / "d", repeat=1)
    assert [(r["job"], r["tool"]) for r in results] == [
        ("scan", "pyarrow scan (floor)"),
        ("scan", "pyarrow scan as ltrcore reads"),
        ("first purchase", "ltrcore"),
        ("signup", "ltrcore"),
    ]
    for r in results:
        assert {"rows", "users", "key_type", "job", "tool", "wall_s", "rows_per_s", "peak_rss_mib", "ratio"} <= r.keys()
        assert (r["rows"], r["users"], r["key_type"]) == (200_000, 8_000, "int64 sparse") and r["peak_rss_mib"] > 0
    assert results[0]["ratio"] == 1.0
    assert results[2]["progress_rows"]["orders: first purchases"] == results[2]["progress_rows"]["orders"] == 200_000
    assert results[3]["progress_rows"]["signups"] == 8_000 and results[3]["progress_rows"]["orders"] == 200_000
    assert "| signup | ltrcore |" in ps.table_text(results, ps.manifest_of(tmp_path / "d"))
    got = peers.from_ltrcore(_ltrcore_cohorts(str(tmp_path / "d" / "orders")), HORIZON)
    _assert_same(got, peers.polars_cohorts(pl.read_parquet(tmp_path / "d" / "orders").to_arrow()), ("ltrcore", "polars"))


def test_parquet_scale_draws_repeat_orders_in_proportion_to_the_rates_of_the_users_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users 0..999 with rates 1 or 3 (every fourth), users 1000..1999 dead in the slice: 200k draws
    land on the living only, on each in proportion to its rate, at times inside the slice."""
    ps = _parquet_scale(monkeypatch)
    n = 2_000
    rate = np.where(np.arange(n) % 4 == 0, 3.0, 1.0)
    end = np.where(np.arange(n) < 1_000, 10_000, 50)
    users = ps.Users(np.zeros(n, np.int64), end.astype(np.int64), np.cumsum(rate), np.ones(n, np.float32), 0)
    user, ts = ps.draw_repeats(np.random.default_rng(0), users, n, 100, 1_100, 200_000)
    assert len(user) == 200_000 and user.max() < 1_000 and ts.min() >= 100 and ts.max() < 1_100
    counts = np.bincount(user, minlength=1_000)
    heavy, light = counts[::4].mean(), np.delete(counts, np.s_[::4]).mean()
    assert heavy / light == pytest.approx(3.0, rel=0.03)
    # no bias towards early or late users among the light ones
    assert np.delete(counts, np.s_[::4])[:375].mean() / np.delete(counts, np.s_[::4])[375:].mean() == pytest.approx(1.0, rel=0.03)
