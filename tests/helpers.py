"""Helpers shared by the engine tests: run ltrcore, normalise its output, compare with the reference."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from reference import Reference, total_amount

ltrcore = pytest.importorskip("ltrcore")

MEASURES = ["cohort_size", "revenue", "gross_revenue", "refunds", "payments", "profit", "orders", "payers", "retained", "active"]
LONG_COLUMNS = ["cohort", "age", *MEASURES, "complete"]


def cohorts(orders: Any, **kw: Any) -> tuple[Any, list[warnings.WarningMessage]]:
    """Run ``ltrcore.cohorts`` and return (table, the ExcludedRowsWarnings it issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = ltrcore.cohorts(orders, **kw)
    excluded = [w for w in caught if issubclass(w.category, ltrcore.ExcludedRowsWarning)]
    others = [w for w in caught if not issubclass(w.category, ltrcore.ExcludedRowsWarning)]
    assert not others, [str(w.message) for w in others]
    return table, excluded


def normalise(df: pl.DataFrame) -> pl.DataFrame:
    """Integer columns -> Int64, categoricals -> String, an all-null measure column -> Int64.

    The README fixes the column names and the kinds (Date, Float64 measures, integer counts, Boolean),
    not the integer widths, so the comparison is on values.
    """
    out = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if dtype.is_integer() or (dtype == pl.Null and name in MEASURES):
            col = col.cast(pl.Int64)
        elif dtype in (pl.Categorical, pl.Enum) or isinstance(dtype, (pl.Categorical, pl.Enum)):
            col = col.cast(pl.String)
        out.append(col)
    return df.select(out)


def check_long_dtypes(df: pl.DataFrame, by: list[str]) -> None:
    assert df.columns == [*by, *LONG_COLUMNS], df.columns
    s = df.schema
    assert s["cohort"] == pl.Date
    for c in ("revenue", "gross_revenue", "refunds", "payments", "profit"):
        assert s[c] == pl.Float64, (c, s[c])
    for c in ("age", "cohort_size", "orders", "payers", "retained"):
        assert s[c].is_integer(), (c, s[c])
    assert s["active"].is_integer() or s["active"] == pl.Null, s["active"]
    assert s["complete"] == pl.Boolean


def recon_dict(df: pl.DataFrame, with_amount: bool = True) -> dict[str, Any]:
    """Reconciliation frame -> {reason: (rows, Decimal amount)} without zero-row reasons."""
    assert df.columns[:2] == ["reason", "rows"], df.columns
    out: dict[str, Any] = {}
    for row in df.iter_rows(named=True):
        assert row["reason"] not in out, f"reason {row['reason']} listed twice"
        if row["rows"] == 0:
            continue
        if with_amount:
            amt = row["amount"]
            assert isinstance(amt, Decimal), type(amt)
            out[row["reason"]] = (int(row["rows"]), amt)
        else:
            out[row["reason"]] = int(row["rows"])
    return out


def assert_matches_reference(table: Any, ref: Reference, orders: Any, amount: str, scale: int, by: list[str]) -> None:
    got = table.to_polars()
    check_long_dtypes(got, by)
    assert isinstance(table.reconciliation["amount"].dtype, pl.Decimal), table.reconciliation.schema
    assert_frame_equal(normalise(got), normalise(ref.table), check_exact=True)

    rec = recon_dict(table.reconciliation)
    assert rec == ref.reconciliation
    n, total = total_amount(orders, amount, scale)
    assert sum(r for r, _ in rec.values()) == n
    assert sum((a for _, a in rec.values()), Decimal(0)) == total


def assert_same_result(a: Any, b: Any, check_dtypes: bool = True) -> None:
    """Two engine results are identical: long table (dtypes included) and every reconciliation."""
    assert_frame_equal(a.to_polars(), b.to_polars(), check_exact=True, check_dtypes=check_dtypes)
    assert_frame_equal(a.reconciliation, b.reconciliation, check_exact=True, check_dtypes=check_dtypes)
    for attr in ("signups_reconciliation", "activity_reconciliation"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None), attr
        if x is not None:
            assert_frame_equal(x, y, check_exact=True, check_dtypes=check_dtypes)


def split_batches(table: pa.Table, cuts: list[int], reencode_dictionaries: bool = False) -> list[pa.RecordBatch]:
    """Cut ``table`` into record batches at the given (sorted, possibly repeated) row offsets."""
    bounds = [0, *sorted(min(max(c, 0), table.num_rows) for c in cuts), table.num_rows]
    batches = []
    for lo, hi in zip(bounds, bounds[1:]):
        rb = table.slice(lo, hi - lo).combine_chunks().to_batches()
        rb = rb[0] if rb else pa.RecordBatch.from_pylist([], schema=table.schema)
        if reencode_dictionaries:
            cols = []
            for f, c in zip(rb.schema, rb.columns):
                if pa.types.is_dictionary(f.type):
                    c = c.cast(f.type.value_type).dictionary_encode().cast(f.type)  # a fresh per-batch dictionary
                cols.append(c)
            rb = pa.RecordBatch.from_arrays(cols, schema=rb.schema)
        batches.append(rb)
    return batches


def stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Runs ``python -m ltrcore.cli *args`` with stderr on a pseudo-terminal (where the progress bar
    is drawn); returns the exit status and what it wrote there."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ltrcore.cli", *args], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data.decode(errors="replace"))
    code = proc.wait(timeout=120)
    os.close(leader)
    return code, "".join(chunks)
