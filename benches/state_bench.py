#!/usr/bin/env python
"""The monthly state against a full recompute, in one run.

    python benches/state_bench.py --rows 42M [--repeat 3] [--markdown]

The data is ``ltrcore.demo.orders_only(rows, months=25, growth=...)``: sparse int64 user ids, about
12.7 orders per user, over 25 UTC months (2024-01 … 2026-01), first orders growing by ``--growth`` a
month. The first 24 months are the history, the 25th is
the new month. Both are cached as uncompressed Arrow IPC files under ``bench-data/``.

Each step runs in a fresh subprocess that reads its inputs into memory first, then resets the
kernel's peak-RSS mark, so each peak is the step's own (above the loaded input):

* ``build``: ``CohortState.build`` over the history, then ``save``;
* ``load``: ``CohortState.load`` of that file;
* ``update``: load, then ``update`` with the new month and ``table()`` (best of ``--repeat``, each
  from the loaded state), then ``save``;
* ``full``: ``ltrcore.cohorts`` over history and new month together (best of ``--repeat``);
* the monthly job from files: ``load`` + ``update`` from the new month's parquet file + ``table()``
  + ``save`` (``job``), against ``ltrcore.cohorts`` over the 25 months' parquet files
  (``full_files``), each once in a fresh process.

The update reads the new month only (it is the only table it is given). The script checks that the
state's table equals the full recompute's, cell by cell and in its reconciliation, and exits with
status 1 when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from vs_peers import DATA_DIR, _reset_peak, _status_mb, human_rows, load_demo, parse_rows  # noqa: E402

NEW_MONTH_START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def ensure_parquet(history: Path, new: Path) -> tuple[Path, Path]:
    """The same rows as parquet files, one per month, as a monthly job finds them: the directory of
    all 25, and the new month's file in it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    months = history.with_suffix("").with_name(history.name.replace("-history.arrow", "-months"))
    month = months / "2026-01.parquet"
    if not month.exists():
        months.mkdir(parents=True, exist_ok=True)
        table = _read(str(history))
        month_of = pc.strftime(table.column("ts"), format="%Y-%m")
        for m in sorted(set(month_of.to_pylist())):
            pq.write_table(table.filter(pc.equal(month_of, m)), months / f"{m}.parquet")
        pq.write_table(_read(str(new)), str(month) + ".tmp")
        os.replace(str(month) + ".tmp", month)
    return months, month


def ensure_data(rows: int, seed: int, growth: float) -> tuple[Path, Path]:
    """The history and the new month, as cached IPC files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    tag = f"state-{human_rows(rows)}-s{seed}" + (f"-g{growth:g}" if growth != 1.03 else "")
    old, new = DATA_DIR / f"{tag}-history.arrow", DATA_DIR / f"{tag}-new-month.arrow"
    if old.exists() and new.exists():
        return old, new
    DATA_DIR.mkdir(exist_ok=True)
    print(f"generating {rows:,} orders over 25 months ...", file=sys.stderr, flush=True)
    table = load_demo().orders_only(rows, seed=seed, months=25, growth=growth)
    is_new = pc.greater_equal(table.column("ts").cast(pa.int64()), NEW_MONTH_START_US)
    for path, part in ((old, table.filter(pc.invert(is_new))), (new, table.filter(is_new))):
        with ipc.new_file(str(path) + ".tmp", part.schema) as w:
            w.write_table(part)
        os.replace(str(path) + ".tmp", path)
    return old, new


def _read(path: str) -> Any:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.OSFile(path, "rb") as f:
        return ipc.open_file(f).read_all()


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa

    import ltrcore
    from ltrcore.state import CohortState

    spec = ltrcore.CohortSpec(horizon=12)
    out: dict[str, Any] = {"step": args.worker}
    if args.worker == "build":
        history = _read(args.history)
        _reset_peak()
        base = _status_mb("VmRSS")
        t0 = time.perf_counter()
        state = CohortState.build(spec, history)
        out["build_s"] = time.perf_counter() - t0
        out["build_peak_mb"] = _status_mb("VmHWM") - base
        t0 = time.perf_counter()
        state.save(args.state)
        out["save_s"] = time.perf_counter() - t0
        out.update(rows=history.num_rows, input_mb=history.nbytes / 2**20, users=state.users, waiting=state.waiting_rows,
                   file_bytes=os.path.getsize(args.state))  # fmt: skip
    elif args.worker == "load":
        _reset_peak()
        base = _status_mb("VmRSS")
        t0 = time.perf_counter()
        state = CohortState.load(args.state)
        out["load_s"] = time.perf_counter() - t0
        out["load_peak_mb"] = _status_mb("VmHWM") - base
    elif args.worker == "update":
        month = _read(args.new)
        loaded = CohortState.load(args.state)
        _reset_peak()
        base = _status_mb("VmRSS")
        times = []
        for _ in range(args.repeat):
            state = CohortState(loaded.spec, loaded._core, loaded._segments)  # the loaded state, each time
            t0 = time.perf_counter()
            state.update(month)
            table = state.table()
            times.append(time.perf_counter() - t0)
        out["update_peak_mb"] = _status_mb("VmHWM") - base
        t0 = time.perf_counter()
        state.save(args.state + ".updated")
        out["save_s"] = time.perf_counter() - t0
        out.update(update_times=times, rows=month.num_rows)
        table.to_polars().write_parquet(args.out)
        out["reconciliation"] = table.reconciliation.with_columns(table.reconciliation["amount"].cast(str)).to_dicts()
    elif args.worker == "job":
        _reset_peak()
        base = _status_mb("VmRSS")
        t0 = time.perf_counter()
        state = CohortState.load(args.state)
        state.update(args.new)
        state.table()
        state.save(args.state + ".job")
        out["job_s"] = time.perf_counter() - t0
        out["job_peak_mb"] = _status_mb("VmHWM") - base
    elif args.worker == "full_files":
        _reset_peak()
        base = _status_mb("VmRSS")
        t0 = time.perf_counter()
        ltrcore.cohorts(args.history, horizon=12)  # the directory of the 25 months
        out["full_files_s"] = time.perf_counter() - t0
        out["full_files_peak_mb"] = _status_mb("VmHWM") - base
    else:  # full
        both = pa.concat_tables([_read(args.history), _read(args.new)])
        _reset_peak()
        base = _status_mb("VmRSS")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            table = ltrcore.cohorts(both, horizon=12)
            times.append(time.perf_counter() - t0)
        out["full_peak_mb"] = _status_mb("VmHWM") - base
        out.update(full_times=times, rows=both.num_rows)
        table.to_polars().write_parquet(args.out)
        out["reconciliation"] = table.reconciliation.with_columns(table.reconciliation["amount"].cast(str)).to_dicts()
    return out


def run_step(step: str, paths: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--repeat", str(args.repeat)]
    for k, v in paths.items():
        cmd += [f"--{k}", v]
    print(f"running {step} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{step} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=parse_rows, default=parse_rows("42M"), help="orders over the 25 months (default 42M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--growth", type=float, default=1.03, help="monthly growth of first orders (1.03: the new month is 7%% of the orders; 0.97: 5%%)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions of update and full (best reported)")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("history", "new", "state", "out"):
        ap.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import polars as pl

    history, new = ensure_data(args.rows, args.seed, args.growth)
    with tempfile.TemporaryDirectory(prefix="ltrcore-state-bench-") as tmp:
        paths = {"history": str(history), "new": str(new), "state": f"{tmp}/state.parquet"}
        build = run_step("build", paths, args)
        load = run_step("load", paths, args)
        update = run_step("update", {**paths, "out": f"{tmp}/update.parquet"}, args)
        full = run_step("full", {**paths, "out": f"{tmp}/full.parquet"}, args)
        months, month = ensure_parquet(history, new)
        job = run_step("job", {**paths, "new": str(month)}, args)
        full_files = run_step("full_files", {**paths, "history": str(months)}, args)
        same = pl.read_parquet(f"{tmp}/update.parquet").equals(pl.read_parquet(f"{tmp}/full.parquet"))
        same_recon = update["reconciliation"] == full["reconciliation"]
    best_update, best_full = min(update["update_times"]), min(full["full_times"])
    users = build["users"]
    lines = [
        f"data: {build['rows']:,} history orders over 24 months, {update['rows']:,} orders in the new month; "
        f"{users:,} users; first-purchase monthly cohorts, horizon 12",
        "",
        "| step | time | peak above its input |",
        "|---|---|---|",
        f"| build from 24 months | {build['build_s']:.2f} s | {build['build_peak_mb']:,.0f} MiB |",
        f"| save | {build['save_s']:.2f} s | – |",
        f"| load | {load['load_s']:.2f} s | {load['load_peak_mb']:,.0f} MiB |",
        f"| **update with 1 month + table()** | **{best_update:.3f} s** (runs: {', '.join(f'{t:.3f}' for t in update['update_times'])}) | {update['update_peak_mb']:,.0f} MiB |",
        f"| full `cohorts()` over 25 months | {best_full:.2f} s (runs: {', '.join(f'{t:.2f}' for t in full['full_times'])}) | {full['full_peak_mb']:,.0f} MiB |",
        f"| monthly job from files: load + update from the month's parquet + table() + save | {job['job_s']:.2f} s | {job['job_peak_mb']:,.0f} MiB |",
        f"| full `cohorts()` over the 25 months' parquet files | {full_files['full_files_s']:.2f} s | {full_files['full_files_peak_mb']:,.0f} MiB |",
        "",
        f"update + table is **{best_full / best_update:.1f}×** faster than the full recompute in memory; "
        f"the monthly job from files is {full_files['full_files_s'] / job['job_s']:.1f}× faster than a full recompute from files.",
        f"state file: {build['file_bytes'] / 2**20:,.1f} MiB, {build['file_bytes'] / max(users, 1):.1f} bytes per user "
        f"({build['waiting']:,} waiting rows).",
        f"cross-check: the state's table {'equals' if same and same_recon else 'DIFFERS FROM'} the full recompute's "
        "(cells and reconciliation).",
    ]
    print("\n".join(lines))
    return 0 if same and same_recon else 1


if __name__ == "__main__":
    sys.exit(main())
