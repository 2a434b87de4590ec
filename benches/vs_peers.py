#!/usr/bin/env python
"""ltrcore against hand-written Polars and DuckDB on the same order table, in one run.

    python benches/vs_peers.py --rows 20M [--engines ltrcore,polars,duckdb] [--threads N] [--rounds N]
    python benches/vs_peers.py --rows 20M --variants --rounds 2      # every variant of both peers

``polars`` and ``duckdb`` are each peer's fastest variant (``peers.POLARS_FASTEST`` and
``peers.DUCKDB_FASTEST``, chosen by measuring every variant; ``peers.py`` says which won, by how much,
at what size and on which machine state). ``polars:<variant>`` and ``duckdb:<variant>`` pick one
variant of ``peers.POLARS_VARIANTS`` / ``peers.DUCKDB_VARIANTS``, and ``--variants`` runs ltrcore and
all of them in the same run. The table's ``ltrcore speedup`` is against each row; the lines under it
give ltrcore's ratio against each tool's fastest general variant in the run.

The data comes from ``ltrcore.demo.orders_only``: shuffled rows, sparse int64 user ids, about 12.7
orders per user over 24 months, and 3 % refunds. It is generated once and cached as an uncompressed
Arrow IPC file under ``bench-data/`` at the repo root. Each engine then runs in a fresh subprocess.
The subprocess reads the file fully into memory as a pyarrow Table. It then resets the kernel's peak-RSS
mark (``/proc/self/clear_refs`` ← ``5``) and runs the job ``--repeat`` times. It reports the first
and the best wall time, and the peak RSS above the loaded baseline (``VmHWM`` − ``VmRSS`` at the
reset). With ``--rounds N`` the engines take turns N times, each time in a fresh process, and each
engine's times are pooled, so that the machine's speed drifting during the run does not favour the
engine that ran in the fast minutes. The job is ``ltrcore.cohorts(orders, horizon=12, period="month", tz="UTC")`` with
first-purchase cohorts, restricted to complete cells. ``peers.py`` holds the Polars and DuckDB
versions of the same job.

The results of all engines are cross-checked on revenue, orders, payers and cohort_size for every
(cohort, age) cell. The script exits with status 1 when they disagree. ltrcore is skipped, with a
message, until ``import ltrcore`` works in this interpreter.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = REPO / "bench-data"
DEMO_PATH = REPO / "python" / "ltrcore" / "demo.py"
ENGINES = ("ltrcore", "polars", "duckdb")
SKIP = 3  # worker exit status: engine not available


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
    """'200k', '2M', '1.5m', '2e6', '20_000_000' → int."""
    m = re.fullmatch(r"\s*([0-9_.eE+]+)\s*([kKmMgGbB]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r}")
    mult = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1).replace("_", "")) * mult))


def human_rows(n: int) -> str:
    for div, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


# --------------------------------------------------------------------------------------------------
# data


def ensure_data(rows: int, seed: int, users: int | None) -> tuple[Path, dict[str, Any]]:
    """Path of the cached IPC file for these parameters, generating it if needed, and its metadata."""
    tag = f"orders-{human_rows(rows)}-s{seed}" + (f"-u{users}" if users else "")
    path = DATA_DIR / f"{tag}.arrow"
    meta_path = DATA_DIR / f"{tag}.json"
    demo_mtime = DEMO_PATH.stat().st_mtime
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("demo_mtime") == demo_mtime:
            return path, meta
        print(f"demo.py changed since {path.name} was generated: regenerating", file=sys.stderr)

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

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
    tmp = path.with_suffix(".arrow.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=1 << 20):
            writer.write_batch(batch)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"  generated in {gen_s:.1f} s, {meta['users']:,} users", file=sys.stderr)
    return path, meta


# --------------------------------------------------------------------------------------------------
# worker (runs in a fresh subprocess per engine)


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


def _job(engine: str, threads: int | None, horizon: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any], str]:
    """(compute, to_result, version) for one engine. `compute` is what is timed."""
    if engine == "ltrcore":
        try:
            import ltrcore

            ltrcore.cohorts  # noqa: B018  (the package may exist before the binding does)
        except (ImportError, AttributeError) as exc:
            print(f"ltrcore is not importable ({type(exc).__name__}: {exc}); build it first (maturin develop -r)", file=sys.stderr)
            sys.exit(SKIP)
        import peers

        kw: dict[str, Any] = dict(user="user_id", ts="ts", amount="amount", horizon=horizon, period="month", tz="UTC")
        if threads is not None:
            kw["threads"] = threads

        def run(t: Any) -> Any:
            return ltrcore.cohorts(t, **kw).to_polars()

        return run, lambda r: peers.from_ltrcore(r, horizon), getattr(ltrcore, "__version__", "?")
    engine = canonical(engine)
    tool, _, variant = engine.partition(":")
    if tool == "polars":
        import polars as pl

        import peers

        fn = peers.POLARS_VARIANTS[variant]
        return (lambda t: fn(t, horizon=horizon)), (lambda r: r), pl.__version__
    if tool == "duckdb":
        try:
            import duckdb
        except ImportError as exc:
            print(f"duckdb is not installed ({exc})", file=sys.stderr)
            sys.exit(SKIP)
        import peers

        fn = peers.DUCKDB_VARIANTS[variant]
        con = duckdb.connect()
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        return (lambda t: fn(t, horizon=horizon, con=con)), (lambda r: r), duckdb.__version__
    raise SystemExit(f"unknown engine {engine!r}")


def worker(args: argparse.Namespace) -> None:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    compute, to_result, version = _job(args.worker, args.threads, args.horizon)  # imports happen here
    with pa.OSFile(args.data, "rb") as f:  # read into memory (no mmap): a plain in-memory Table
        table = ipc.open_file(f).read_all()
    gc.collect()
    exact_peak = _reset_peak()
    baseline = _status_mb("VmRSS")
    times = []
    result = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = compute(table)
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
                "rows": table.num_rows,
                "input_bytes": table.nbytes,
                "baseline_mb": baseline,
                "peak_extra_mb": peak - baseline,
                "exact_peak": exact_peak,
                "cells": out.height,
            }
        )
    )


# --------------------------------------------------------------------------------------------------
# driver


def run_engine(engine: str, data: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--data", str(data)]
    cmd += ["--out", str(out), "--repeat", str(args.repeat), "--horizon", str(args.horizon)]
    env = dict(os.environ)
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
        env["POLARS_MAX_THREADS"] = str(args.threads)
        env["RAYON_NUM_THREADS"] = str(args.threads)
    print(f"running {engine} ...", file=sys.stderr, flush=True)
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


def report(results: dict[str, dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace) -> str:
    rows = meta["rows"]
    input_mb = meta["nbytes"] / 2**20
    base = results.get("ltrcore")
    head = (
        f"{rows:,} orders, {meta['users']:,} users, input {input_mb:,.0f} MiB (Arrow), "
        f"threads {args.threads or 'all'} of {os.cpu_count()}, {args.repeat} runs"
        + (f" × {args.rounds} rounds (engines in turn)" if args.rounds > 1 else "")
        + f", horizon {args.horizon}"
    )
    cols = ["engine", "version", "first s", "best s", "M rows/s", "peak MiB", "peak/input", "ltrcore speedup", "ltrcore mem"]
    table = []
    for name, r in results.items():
        best, first = min(r["times"]), r["times"][0]
        speed = mem = "-"
        if base is not None and name != "ltrcore":
            speed = f"{best / min(base['times']):.1f}x"
            mem = f"{base['peak_extra_mb'] / r['peak_extra_mb']:.0%}" if r["peak_extra_mb"] > 0 else "-"
        table.append(
            [
                name,
                str(r["version"]),
                f"{first:.3f}",
                f"{best:.3f}",
                f"{rows / best / 1e6:.1f}",
                f"{r['peak_extra_mb']:,.0f}",
                f"{r['peak_extra_mb'] / input_mb:.0%}",
                speed,
                mem,
            ]
        )
    tail = []
    peers_mod = _peers()
    for tool in ("polars", "duckdb"):
        timed = {
            n: min(r["times"]) for n, r in results.items() if canonical(n).startswith(tool + ":") and canonical(n) not in peers_mod.NOT_GENERAL
        }
        if timed:
            fastest = min(timed, key=timed.__getitem__)
            line = f"fastest {tool}: {fastest} ({canonical(fastest)}), best {timed[fastest]:.3f} s"
            if base is not None:
                line += f"; ltrcore is {timed[fastest] / min(base['times']):.1f}x faster"
            tail.append(line)
    if args.markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return head + "\n\n" + "\n".join(lines + [""] + tail)
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([head, fmt(cols), *(fmt(row) for row in table), *tail])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=parse_rows, default=parse_rows("2M"), help="order rows, e.g. 200k, 2M, 20M (default 2M)")
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="comma-separated list of ltrcore, polars, duckdb (each peer's fastest variant) or tool:variant, "
        "e.g. polars:plain,duckdb:window (the variants are peers.POLARS_VARIANTS and peers.DUCKDB_VARIANTS)",
    )
    p.add_argument("--variants", action="store_true", help="run ltrcore and every variant of both peers (overrides --engines)")
    p.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per engine process; reports the first and the best (default 3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="engines take turns this many times, each in a fresh process; times are pooled per engine, so a "
        "drift in the machine's speed during the run weighs on every engine alike (default 1)",
    )
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int, default=None, help="distinct users (default rows / 12.7)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    # worker mode (internal)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        worker(args)
        return 0

    engines = all_engines() if args.variants else [e.strip() for e in args.engines.split(",") if e.strip()]
    known = set(ENGINES) | set(all_engines())
    unknown = sorted(set(engines) - known)
    if unknown:
        p.error(f"unknown engines {unknown}; choose from {', '.join(sorted(known))}")
    if args.repeat < 1 or args.rounds < 1:
        p.error("--repeat and --rounds must be >= 1")

    data, meta = ensure_data(args.rows, args.seed, args.users)
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ltrcore-bench-") as tmp:
        for _ in range(args.rounds):
            for engine in (e for e in engines if e not in skipped):
                out = Path(tmp) / f"{engine}.parquet"
                r = run_engine(engine, data, args, out)
                if "skipped" in r:
                    skipped[engine] = r["skipped"]
                elif engine in results:
                    pooled = results[engine]
                    pooled["times"] += r["times"]
                    pooled["peak_extra_mb"] = max(pooled["peak_extra_mb"], r["peak_extra_mb"])
                    pooled["exact_peak"] = pooled.get("exact_peak", True) and r.get("exact_peak", True)
                else:
                    results[engine] = r
                    outputs[engine] = out
        if not results:
            print("no engine ran", file=sys.stderr)
            return 2

        import polars as pl

        import peers

        frames = {e: pl.read_parquet(o) for e, o in outputs.items()}
    print()
    print(report(results, meta, args))
    for engine, why in skipped.items():
        print(f"skipped {engine}: {why}")

    status = 0
    names = list(frames)
    if len(names) < 2:
        print("\ncross-check: only one engine ran, nothing to compare")
    else:
        ref = names[0]
        for other in names[1:]:
            problems = peers.compare(frames[ref], frames[other], names=(ref, other))
            if problems:
                status = 1
                print(f"\nMISMATCH {ref} vs {other}:")
                for pr in problems:
                    print("  " + pr.replace("\n", "\n  "))
        if status == 0:
            cells = frames[ref].height
            cohorts = frames[ref]["cohort"].n_unique()
            print(
                f"\ncross-check: {' = '.join(names)} on revenue, orders, payers, cohort_size "
                f"({cells} cells, {cohorts} cohorts)"
            )
    if not any(r.get("exact_peak", True) for r in results.values()):
        print("note: /proc/self/clear_refs unavailable, so the peaks include loading the data")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
