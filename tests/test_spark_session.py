"""The ``spark`` fixture works end to end: a real ``mapInArrow`` runs in Python workers that use this
environment's interpreter (and so its pyarrow), not whatever ``python3`` is first on PATH."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pyarrow as pa

from spark_session import SPARK_MARKS

pytestmark = SPARK_MARKS


def _count_rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    rows = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_pydict({"rows": [rows], "python": [sys.executable]})


def test_map_in_arrow_counts_rows_per_partition(spark) -> None:
    out = spark.range(10).repartition(3).mapInArrow(_count_rows, "rows long, python string").collect()
    assert len(out) == 3  # one batch per partition: round-robin leaves none of the three empty
    assert sum(r.rows for r in out) == 10
    assert {r.python for r in out} == {sys.executable}
