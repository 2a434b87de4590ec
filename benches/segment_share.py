#!/usr/bin/env python
"""The share of a ``by`` run spent coding segments, per coder, in one process (issue 15: "if that
costs more than 20 %, code them in the core").

    python benches/segment_share.py --rows 20M [--jobs by1,by3] [--rounds 3] [--threads N]

Reads ``vs_peers.py``'s cached orders (``bench-data/``, written by ``vs_peers.py --rows N`` if
missing), adds its segment columns (Arrow strings, constant per user), and runs
``ltrcore.cohorts(orders, horizon=12, tz="UTC", by=...)`` in turns with each coder: ``polars``
(``LTRCORE_SEGMENT_CODER=polars``), ``core`` (the default: rows looked up on all cores) and
``core-1`` (the core's coder on the calling thread only). A timer around ``SegmentCoder.keys``
and ``.codes`` gives each run's coding time. Prints, per job and coder, the best wall time and the
coding time and share of that run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vs_peers  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=vs_peers.parse_rows, default=vs_peers.parse_rows("20M"))
    p.add_argument("--jobs", default="by1,by3")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    import ltrcore
    from ltrcore import _core, adapters

    path = vs_peers.DATA_DIR / f"orders-{vs_peers.human_rows(args.rows)}-s0.arrow"
    if not path.exists():
        sys.exit(f"{path} is missing: run benches/vs_peers.py --rows {vs_peers.human_rows(args.rows)} once")
    base = vs_peers.read_ipc(path)
    spent = [0.0]
    for name in ("keys", "codes"):
        method = getattr(adapters.SegmentCoder, name)

        def timed(self: Any, *a: Any, _method: Any = method) -> Any:
            t = time.perf_counter()
            try:
                return _method(self, *a)
            finally:
                spent[0] += time.perf_counter() - t

        setattr(adapters.SegmentCoder, name, timed)
    parallel_coder = _core.SegmentCoder

    class OneThread:  # the core's coder with the parallel lookup off
        accepts = staticmethod(parallel_coder.accepts)

        def __new__(cls, schema: Any, parallel: bool = True) -> Any:
            return parallel_coder(schema, parallel=False)

    coders = {"polars": ("polars", parallel_coder), "core": ("core", parallel_coder), "core-1": ("core", OneThread)}
    print(f"{args.rows:,} rows, {len(base.to_batches())} batches, threads={args.threads or 'all'}, {time.strftime('%H:%M:%S')}")
    for job in args.jobs.split(","):
        by = vs_peers.JOBS[job].by
        table = vs_peers.add_segments(base, by)
        best: dict[str, tuple[float, float]] = {}
        results = {}
        for _ in range(args.rounds):
            for coder, (env, cls) in coders.items():
                os.environ[adapters.SEGMENT_CODER_ENV] = env
                _core.SegmentCoder = cls
                spent[0] = 0.0
                t = time.perf_counter()
                result = ltrcore.cohorts(table, horizon=12, tz="UTC", by=list(by), threads=args.threads)
                wall = time.perf_counter() - t
                results[coder] = result.to_polars()
                if coder not in best or wall < best[coder][0]:
                    best[coder] = (wall, spent[0])
        _core.SegmentCoder = parallel_coder
        same = all(r.equals(results["polars"]) for r in results.values())
        for coder, (wall, coding) in best.items():
            print(f"{job:4} {coder:7} wall {wall:6.3f} s  coding {coding:6.3f} s  {100 * coding / wall:5.1f} %  same table: {same}")


if __name__ == "__main__":
    main()
