"""Every accepted input kind gives the same table; the result's export paths agree with each other."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from helpers import assert_matches_reference, assert_same_result, cohorts, ltrcore
from reference import reference_cohorts

KW = dict(user="user_id", ts="ts", amount="amount", by="seg", horizon=4, period="month", tz="Europe/Berlin")


END = dt.datetime(2024, 7, 15, tzinfo=dt.timezone.utc)  # latest orders in July -> last complete month June


def make_orders(n_users: int = 90, seed: int = 3) -> pa.Table:
    """Every user: a first paying order early in a month Jan..May 2024, then 0-12 later orders up to mid-July
    (refunds too).

    Users cycle through (segment, cohort month), so every segment has members in every cohort.
    """
    rng = np.random.default_rng(seed)
    users, ts, amount = [], [], []
    for u in range(n_users):
        first = dt.datetime(2024, 1 + (u // 3) % 5, 2, 12, tzinfo=dt.timezone.utc)
        users.append(u)
        ts.append(first)
        amount.append(10.0 + u)
        for _ in range(rng.integers(0, 13)):
            users.append(u)
            ts.append(first + dt.timedelta(seconds=int(rng.integers(0, (END - first).total_seconds()))))
            amount.append(round(float(rng.normal(30, 25)), 2))
    order = rng.permutation(len(users))  # unsorted input
    users = [users[i] for i in order]
    n = len(users)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "ts": pa.array([ts[i] for i in order], pa.timestamp("us", "UTC")),
            "amount": pa.array([amount[i] for i in order], pa.float64()),
            "seg": pa.array([["web", "app", "shop"][u % 3] for u in users]),
            # an extra column of a type ltrcore cannot read: it must simply be ignored
            "tags": pa.array([["x"] * (i % 3) for i in range(n)], pa.list_(pa.string())),
        }
    )


@pytest.fixture(scope="module")
def orders() -> pa.Table:
    return make_orders()


@pytest.fixture(scope="module")
def expected(orders):
    table, warned = cohorts(orders, **KW)
    assert not warned
    return table


def test_expected_matches_reference(orders, expected):
    ref = reference_cohorts(orders, **KW)
    assert ref.table.height > 0
    assert_matches_reference(expected, ref, orders, "amount", 4, ["seg"])


class StreamOnly:
    """Any object with ``__arrow_c_stream__`` (and nothing else) is accepted."""

    def __init__(self, table: pa.Table) -> None:
        self._t = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._t.__arrow_c_stream__(requested_schema)


def _inputs(orders: pa.Table, tmp_path):
    import duckdb

    yield "pyarrow table", orders
    yield "pyarrow multi-chunk table", pa.Table.from_batches(orders.to_batches(max_chunksize=77))
    yield "record batch reader", pa.RecordBatchReader.from_batches(orders.schema, orders.to_batches(max_chunksize=50))
    yield "polars dataframe", pl.from_arrow(orders)
    yield "polars lazyframe", pl.from_arrow(orders).lazy().filter(pl.lit(True))
    yield "pandas dataframe", orders.to_pandas()
    con = duckdb.connect()
    yield "duckdb relation", con.from_arrow(orders)
    yield "arrow c stream object", StreamOnly(orders)

    f = tmp_path / "orders.parquet"
    pq.write_table(orders, f, row_group_size=100)
    yield "parquet file (str)", str(f)
    yield "parquet file (Path)", f
    d = tmp_path / "parts"
    d.mkdir()
    for i, lo in enumerate(range(0, orders.num_rows, 250)):
        pq.write_table(orders.slice(lo, 250), d / f"part-{i}.parquet", row_group_size=64)
    yield "parquet directory", str(d)
    yield "parquet directory (Path)", d
    yield "parquet glob", str(d / "*.parquet")


def test_every_input_kind_gives_the_same_table(orders, expected, tmp_path):
    seen = []
    for name, obj in _inputs(orders, tmp_path):
        table, warned = cohorts(obj, **KW)
        assert not warned, name
        try:
            assert_same_result(expected, table)
        except AssertionError as e:
            raise AssertionError(f"input kind {name!r} differs: {e}") from e
        seen.append(name)
    assert len(seen) == 13


def test_signups_and_activity_accept_other_kinds(orders):
    users = np.arange(80)
    signups = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "signup_ts": pa.array([dt.date(2024, 1 + int(u) % 6, 1 + int(u) % 27) for u in users], pa.date32()),
            "seg": pa.array(np.array(["web", "app", "shop"])[users % 3]),
        }
    )
    activity = orders.select(["user_id", "ts"])
    kw = dict(KW, signups=signups, activity=activity)
    base, _ = cohorts(orders, **kw)
    ref = reference_cohorts(orders, **kw)
    assert_matches_reference(base, ref, orders, "amount", 4, ["seg"])
    for s, a in [
        (pl.from_arrow(signups), pl.from_arrow(activity)),
        (pl.from_arrow(signups).lazy(), pl.from_arrow(activity).lazy()),
        (signups.to_pandas(), activity.to_pandas()),
        (pa.RecordBatchReader.from_batches(signups.schema, signups.to_batches(max_chunksize=9)),
         pa.RecordBatchReader.from_batches(activity.schema, activity.to_batches(max_chunksize=100))),
    ]:  # fmt: skip
        other, _ = cohorts(orders, **dict(kw, signups=s, activity=a))
        assert_same_result(base, other)


# ---------------------------------------------------------------------------------------------------
# exports of the result
# ---------------------------------------------------------------------------------------------------
def test_arrow_pycapsule_and_to_arrow(expected):
    df = expected.to_polars()
    assert hasattr(expected, "__arrow_c_stream__")
    assert_frame_equal(pl.DataFrame(expected), df, check_exact=True)
    at = pa.table(expected)
    arrow = expected.to_arrow()
    assert at.column_names == arrow.column_names
    # the capsule may carry strings as string_view and to_arrow() as large_string: same values
    assert at.cast(arrow.schema).equals(arrow)
    assert_frame_equal(pl.from_arrow(at), df, check_exact=True)
    # the exports are repeatable
    assert_frame_equal(pl.DataFrame(expected), df, check_exact=True)


def _grid(df: pl.DataFrame, measure: str, by: list[str]) -> tuple[list, list, dict]:
    cohorts_ = sorted(df["cohort"].unique().to_list())
    segs = sorted(df.select(by).unique().rows(), key=lambda r: tuple((v is None, v) for v in r)) if by else [()]
    cells = {}
    for row in df.iter_rows(named=True):
        cells[(tuple(row[c] for c in by), row["cohort"], row["age"])] = row[measure]
    return segs, cohorts_, cells


@pytest.mark.parametrize("measure", ["revenue", "payers", "orders", "cohort_size"])
def test_to_numpy_without_segments(orders, measure):
    kw = {k: v for k, v in KW.items() if k != "by"}
    table, _ = cohorts(orders, **kw)
    df = table.to_polars()
    arr = table.to_numpy(measure)
    _, cohorts_, cells = _grid(df, measure, [])
    assert isinstance(arr, np.ndarray)
    assert arr.shape == (len(cohorts_), KW["horizon"])
    for i, c in enumerate(cohorts_):
        for age in range(KW["horizon"]):
            v = cells[((), c, age)]
            if v is None:
                assert math.isnan(arr[i, age]), (c, age, arr[i, age])
            else:
                assert arr[i, age] == v, (c, age)
    complete = df["complete"].to_numpy().reshape(arr.shape)
    if measure != "cohort_size":
        assert np.isnan(arr[~complete]).all()  # not yet observed is NaN, never 0
    assert not np.isnan(arr[complete]).any()


def test_to_numpy_with_segments(orders, expected):
    df = expected.to_polars()
    arr = expected.to_numpy("revenue")
    segs, cohorts_, cells = _grid(df, "revenue", ["seg"])
    assert len(segs) == 3 and len(cohorts_) >= 3
    # every segment has members in every cohort here, so the grid is dense
    assert df.select("seg", "cohort").unique().height == len(segs) * len(cohorts_)
    assert arr.shape == (len(segs), len(cohorts_), KW["horizon"])
    for s, seg in enumerate(segs):
        for i, c in enumerate(cohorts_):
            for age in range(KW["horizon"]):
                v = cells[(seg, c, age)]
                assert (math.isnan(arr[s, i, age]) if v is None else arr[s, i, age] == v), (seg, c, age)


def test_repr_and_html(expected):
    r = repr(expected)
    h = expected._repr_html_()
    for text in (r, h):
        assert isinstance(text, str) and text.strip()
        assert "cohort" in text.lower()
    assert "<" in h and ">" in h


def test_result_attributes(expected):
    assert expected.horizon == 4
    assert expected.period == "month"
    assert expected.tz == "Europe/Berlin"
    assert list(expected.by) == ["seg"]
    assert expected.scale == 4
    rec = expected.reconciliation
    assert rec.columns == ["reason", "rows", "amount"]
    assert rec.schema["reason"] == pl.String
    assert rec.schema["rows"].is_integer()
    assert isinstance(rec.schema["amount"], pl.Decimal)
    assert expected.signups_reconciliation is None and expected.activity_reconciliation is None


@pytest.mark.parametrize(
    "orders_type, side_type",
    [
        (pa.int64(), pa.int32()),
        (pa.int16(), pa.int64()),
        (pa.uint32(), pa.int64()),
        (pa.string(), pa.large_string()),
        (pa.large_string(), pa.string_view()),
        (pa.string_view(), "dictionary"),
    ],
)
def test_user_ids_match_across_integer_widths_and_string_flavours(orders_type, side_type):
    users = [1, 2, 3, 4]
    as_type = (lambda t: (lambda vals: pa.array([str(v) for v in vals], pa.string()).dictionary_encode())
               if t == "dictionary" else (lambda vals: pa.array(
                   [str(v) for v in vals] if pa.types.is_string(t) or pa.types.is_large_string(t)
                   or pa.types.is_string_view(t) else vals, t)))  # fmt: skip
    orders = pa.table(
        {
            "user_id": as_type(orders_type)([1, 1, 2, 3, 4, 9]),
            "ts": pa.array([dt.datetime(2024, m, 3) for m in (1, 2, 1, 2, 3, 2)], pa.timestamp("ms")),
            "amount": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        }
    )
    signups = pa.table({"user_id": as_type(side_type)(users),
                        "signup_ts": pa.array([dt.date(2024, 1, 1)] * 4, pa.date32())})  # fmt: skip
    activity = pa.table({"user_id": as_type(side_type)(users), "ts": pa.array([dt.date(2024, 2, 1)] * 4)})
    kw = dict(user="user_id", ts="ts", amount="amount", horizon=3, signups=signups, activity=activity)
    table, _ = cohorts(orders, **kw)
    assert_matches_reference(table, reference_cohorts(orders, **kw), orders, "amount", 4, [])
    rec = dict(zip(table.reconciliation["reason"], table.reconciliation["rows"]))
    assert rec.get("unknown_user") == 1  # only user 9
    assert table.to_polars()["active"].to_list()[:2] == [0, 4]
