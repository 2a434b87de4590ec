"""Run as a script by ``test_hostile.py``: one run under an address-space limit (``RLIMIT_AS``) of the
process's current size plus some headroom, which must end in ``MemoryError`` or a result, never in an
abort; then, with the limit lifted, the next call must work. Prints one JSON line.

``python limited_memory.py USERS HEADROOM_MIB THREADS KWARGS_JSON``
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import ltrcore


def vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


def main(users: int, headroom_mib: int, threads: int, kw: dict) -> None:
    rng = np.random.default_rng(3)
    ids = pa.array(rng.permutation(users).astype(np.int64) * 7919)
    orders = pa.table({
        "user_id": pc.cast(ids, pa.string()) if kw.pop("strings", False) else ids,
        "ts": pa.array(rng.integers(1_577_836_800, 1_735_689_600, users) * 1_000_000, pa.timestamp("us", "UTC")),
        "amount": rng.gamma(2.0, 20.0, users),
    })  # fmt: skip
    if kw.pop("reader", False):
        source: object = pa.RecordBatchReader.from_batches(orders.schema, orders.to_batches(max_chunksize=100_000))
    else:
        source = orders
    ltrcore.cohorts(orders.slice(0, 1000), threads=threads, **kw)  # everything loaded before the limit
    limit = vm_size() + (headroom_mib << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    try:
        outcome = f"returned {ltrcore.cohorts(source, threads=threads, **kw).input_rows}"
    except MemoryError as err:
        outcome = f"{type(err).__name__}: {err}"
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    next_rows = ltrcore.cohorts(orders.slice(0, 1000), threads=threads, **kw).input_rows
    print(json.dumps({"outcome": outcome, "next_ok": next_rows == 1000}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))
