#!/usr/bin/env python
"""Issue 15's partitioning experiment against the engine, in one run (see docs/engine.md).

    cargo build --release --example partition_lab -p ltrcore-core
    python benches/partition_lab.py --rows 20M [--users 10M] [--threads 2] [--rounds 3] [--modes part,part_huge,chunk=4000000]

Takes ``vs_peers.py``'s cached order table, writes its three columns as raw little-endian files
for ``rust/core/examples/partition_lab.rs`` (a stand-alone prototype of radix-partitioned passes),
then runs that prototype and ``ltrcore.cohorts`` in turns, each in a fresh process, and prints each
one's best wall time and their ratio. The prototype's cells (revenue, orders, payers, cohort size
for every complete cell) are checked against the engine's; the script exits with 1 if they differ.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LAB = REPO / "target" / "release" / "examples" / "partition_lab"


def _raw_columns(arrow_file: Path) -> Path:
    out = arrow_file.with_suffix(".raw")
    if (out / "amount.bin").exists():
        return out
    out.mkdir(exist_ok=True)
    table = ipc.open_file(arrow_file).read_all()
    table.column("user_id").to_numpy().astype("<i8").tofile(out / "user.bin")
    table.column("ts").cast(pa.int64()).to_numpy().astype("<i8").tofile(out / "ts.bin")
    table.column("amount").to_numpy().astype("<f8").tofile(out / "amount.bin")
    return out


ENGINE = """
import sys, time, pyarrow.ipc as ipc, ltrcore
t = ipc.open_file(sys.argv[1]).read_all()
best = float("inf")
for _ in range(int(sys.argv[3])):
    s = time.perf_counter()
    r = ltrcore.cohorts(t, user="user_id", ts="ts", amount="amount", horizon=12, period="month", tz="UTC", threads=int(sys.argv[2]))
    best = min(best, time.perf_counter() - s)
print(f"best {best:.4f}")
df = r._long_with_exact_revenue()
first = df["cohort"].min()
for row in df.filter(df["complete"]).iter_rows(named=True):
    index = (row["cohort"].year - first.year) * 12 + row["cohort"].month - first.month
    print("cell", index, row["age"], int(row["revenue_exact"].scaleb(4)), row["orders"], row["payers"], row["cohort_size"])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="20M")
    ap.add_argument("--users", default=None, help="distinct users (default rows / 12.7)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="part", help="the prototype's modes, run in turns: part, part_probe, chunk=N")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import vs_peers

    rows = vs_peers.parse_rows(args.rows)
    users = vs_peers.parse_rows(args.users) if args.users else None
    arrow_file, _ = vs_peers.ensure_data(rows, 0, users)
    raw = _raw_columns(arrow_file)
    if not LAB.exists():
        sys.exit(f"build the prototype first: cargo build --release --example partition_lab -p ltrcore-core ({LAB} missing)")
    best = {"engine": float("inf"), "lab": float("inf")}
    cells: dict[str, list[str]] = {}
    modes: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in best:
            if name == "engine":
                cmd = [sys.executable, "-c", ENGINE, str(arrow_file), str(args.threads), str(args.repeat)]
            else:
                cmd = [str(LAB), str(raw), str(args.threads), str(args.repeat), args.modes]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            best[name] = min(best[name], float(re.search(r"^best ([\d.]+)", out, re.M).group(1)))
            for mode, t in re.findall(r"^mode (\S+) best ([\d.]+)", out, re.M):
                modes[mode] = min(modes.get(mode, float("inf")), float(t))
            cells[name] = [line for line in out.splitlines() if line.startswith("cell ")]
            time.sleep(0.5)
    complete = {tuple(c.split()[1:3]) for c in cells["engine"]}
    lab_cells = sorted(c for c in cells["lab"] if tuple(c.split()[1:3]) in complete)
    engine_cells = sorted(cells["engine"])
    print(f"{rows:,} rows, {args.threads} threads, best of {args.rounds}×{args.repeat}")
    print(f"  engine     {best['engine']:.3f} s  {rows / best['engine'] / 1e6:5.1f} M rows/s")
    print(f"  prototype  {best['lab']:.3f} s  {rows / best['lab'] / 1e6:5.1f} M rows/s  ({best['engine'] / best['lab']:.2f}× the engine)")
    for mode, t in modes.items():
        print(f"    {mode:<16} {t:.3f} s  {rows / t / 1e6:5.1f} M rows/s  ({best['engine'] / t:.2f}× the engine)")
    same = lab_cells == engine_cells
    print(f"  cells: {len(engine_cells)} complete cells {'identical' if same else 'DIFFER'}")
    if not same:
        for a, b in zip(engine_cells, lab_cells):
            if a != b:
                print("   engine", a, "\n   lab   ", b)
                break
        sys.exit(1)


if __name__ == "__main__":
    main()
