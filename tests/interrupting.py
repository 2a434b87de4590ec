"""Run as a script by ``test_runtime.py``: starts one long run, sends itself SIGINT in a given phase,
and prints one JSON line with what happened.

``python interrupting.py SCENARIO`` where SCENARIO names the input and the phase:
``strings`` (interning 6M string ids of one chunk), ``first_pass``, ``cohorts``, ``orders``,
``finalizing`` (each a phase of a day-period, long-horizon run), ``lazyframe``, ``generator`` (a slow
Python generator) and ``parquet``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import ltrcore

PHASES = {"first_pass": "orders: first purchases", "cohorts": "cohorts", "orders": "orders", "finalizing": "finalizing"}


def orders(n_users: int, rows_per_user: int = 2, strings: bool = False) -> pa.Table:
    rng = np.random.default_rng(7)
    n = n_users * rows_per_user
    users = rng.permutation(np.repeat(np.arange(n_users, dtype=np.int64) * 7919, rows_per_user))
    return pa.table(
        {
            "user_id": pc.cast(pa.array(users), pa.string()) if strings else users,
            "ts": pa.array(rng.integers(1_577_836_800, 1_735_689_600, n) * 1_000_000, pa.timestamp("us", "UTC")),
            "amount": np.round(rng.gamma(2.0, 20.0, n), 2),
        }
    )


def main(scenario: str) -> None:
    sent: list[float] = []

    def interrupt(after: float) -> None:
        def fire() -> None:
            time.sleep(after)
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=fire, daemon=True).start()

    kw: dict = {}
    if scenario == "strings":
        source: object = orders(6_000_000, 1, strings=True)
        interrupt(0.4)
    elif scenario in PHASES:
        source = orders(2_000_000)
        kw = {"period": "day", "horizon": 365}
        started: set[str] = set()

        def progress(phase: str, rows: int) -> None:
            if phase == PHASES[scenario] and phase not in started:
                started.add(phase)
                interrupt(0.05)

        kw["progress"] = progress
    elif scenario == "lazyframe":
        source = pl.LazyFrame(pl.from_arrow(orders(5_000_000, 4))).with_columns(pl.col("amount") * 1.0)
        interrupt(0.5)
    elif scenario == "generator":
        table = orders(200_000)

        def slow() -> Iterator[pa.RecordBatch]:
            for b in table.to_batches(max_chunksize=10_000):
                time.sleep(0.05)
                yield b

        source = pa.RecordBatchReader.from_batches(table.schema, slow())
        interrupt(0.5)
    elif scenario == "parquet":
        path = os.path.join(tempfile.mkdtemp(), "orders.parquet")
        pq.write_table(orders(4_000_000, 4), path, row_group_size=200_000)
        source = path
        interrupt(0.5)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")

    outcome = "returned"
    try:
        ltrcore.cohorts(source, **kw)
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    except BaseException as err:  # noqa: BLE001 - reported, not hidden
        outcome = f"{type(err).__name__}: {err}"
    caught = time.perf_counter()
    waited = caught - sent[0] if sent else None

    # No worker left burning CPU once the call has returned.
    cpu = time.process_time()
    time.sleep(0.5)
    idle_cpu = time.process_time() - cpu

    # And the next call works, with the same numbers as ever.
    small = orders(2_000)
    first = ltrcore.cohorts(small).to_polars()
    again = ltrcore.cohorts(small).to_polars()
    print(json.dumps({"outcome": outcome, "waited": waited, "idle_cpu": idle_cpu, "next_ok": first.equals(again)}))


if __name__ == "__main__":
    main(sys.argv[1])
