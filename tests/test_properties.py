"""Property tests: ``ltrcore.cohorts`` equals the reference on random small inputs.

Random data covers nulls, NaN/inf, refunds, duplicate timestamps, every accepted dtype for user / ts /
amount, signup and first-purchase cohorts, ``by`` segments, activity, DST edges (Sao Paulo 2015-10-18,
Amman 2021-10-29, Apia 2011-12-30), all four periods, as_of / since in every accepted form, 1 and many
batches (including empty ones and per-batch dictionaries), threads 1 and 2, and ``_chunk_rows``.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (
    assert_matches_reference,
    assert_same_result,
    cohorts,
    ltrcore,  # also skips the module when the engine is not importable
    recon_dict,
    split_batches,
)
from reference import BAD_DATA_REASONS, reference_cohorts
from strategies import cases


def by_list(kw: dict[str, Any]) -> list[str]:
    by = kw.get("by")
    return [] if by is None else [by] if isinstance(by, str) else list(by)


@st.composite
def feeds(draw: Any, orders: pa.Table) -> tuple[Any, dict[str, Any]]:
    """The orders as one of: the table, a multi-batch table, a RecordBatchReader; plus engine knobs."""
    n = orders.num_rows
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    reencode = draw(st.booleans())
    kind = draw(st.sampled_from(["table", "batches_table", "reader"]))
    knobs = {
        "threads": draw(st.sampled_from([1, 2, None])),
        "_chunk_rows": draw(st.sampled_from([None, 1, 3, 7, 64])),
        # 0: the cohort grid is shared by the workers, as large grids are
        "_cells_budget": draw(st.sampled_from([None, 0])),
    }
    if kind == "table":
        return orders, knobs
    batches = split_batches(orders, cuts, reencode_dictionaries=reencode)
    if kind == "batches_table":
        return pa.Table.from_batches(batches, schema=orders.schema), knobs
    return pa.RecordBatchReader.from_batches(orders.schema, batches), knobs


def check_case(case: dict, data: Any) -> Any:
    orders, kw = case["orders"], case["kw"]
    ref = reference_cohorts(orders, **kw)
    feed, knobs = data.draw(feeds(orders), label="feed")
    table, warned = cohorts(feed, **kw, **knobs)

    assert_matches_reference(table, ref, orders, kw["amount"], kw["scale"], by_list(kw))

    # side reconciliations: the README's "same rules" (null_user, null_ts, duplicate_user / unknown_user,
    # before_cohort, beyond_horizon, before_since, not_yet_complete, used), rows only
    for side in ("signups", "activity"):
        got = getattr(table, f"{side}_reconciliation")
        if side in kw:
            rec = recon_dict(got, with_amount=False)
            assert sum(rec.values()) == kw[side].num_rows
            assert rec == getattr(ref, f"{side}_reconciliation")
        else:
            assert got is None

    # the ExcludedRowsWarning: once when any order row was bad, never when no input had a bad row
    bad_orders = sum(ref.reconciliation.get(r, (0, 0))[0] for r in BAD_DATA_REASONS)
    side_bad = ("null_user", "null_ts", "ts_out_of_range")
    bad_side = sum((ref.signups_reconciliation or {}).get(r, 0) for r in side_bad) + sum(
        (ref.activity_reconciliation or {}).get(r, 0) for r in side_bad
    )
    assert len(warned) <= 1, [str(w.message) for w in warned]
    if bad_orders:
        assert len(warned) == 1
    if not bad_orders and not bad_side:
        assert not warned, str(warned[0].message)

    # strict=True raises exactly when the orders had bad rows, and changes nothing otherwise
    if data.draw(st.integers(0, 3), label="try strict") == 0:
        if bad_orders:
            with pytest.raises(ltrcore.BadRowsError):
                ltrcore.cohorts(orders, **kw, strict=True)
        elif not bad_side:
            strict_table, strict_warned = cohorts(orders, **kw, strict=True)
            assert not strict_warned
            assert_same_result(table, strict_table)

    assert table.horizon == kw["horizon"]
    assert table.period == kw["period"]
    assert table.tz == kw["tz"]
    return table


@settings(max_examples=300)
@given(case=cases(signups=False), data=st.data())
def test_first_purchase_matches_reference(case: dict, data: Any) -> None:
    check_case(case, data)


@settings(max_examples=250)
@given(case=cases(signups=True), data=st.data())
def test_signups_matches_reference(case: dict, data: Any) -> None:
    check_case(case, data)


@settings(max_examples=120)
@given(case=cases(signups=False, activity=True), data=st.data())
def test_activity_matches_reference(case: dict, data: Any) -> None:
    check_case(case, data)


@settings(max_examples=30)
@given(
    case=st.tuples(st.booleans(), st.sampled_from([8, 400])).flatmap(
        lambda a: cases(signups=a[0], min_rows=300, max_rows=1500, max_users=a[1])
    ),
    data=st.data(),
)
def test_larger_inputs_match_reference(case: dict, data: Any) -> None:
    """Hundreds of rows (and up to 400 users with keys over the dtype's whole range) per example, so the
    engine's user sharding, chunk decoding and flushing really run."""
    check_case(case, data)


@settings(max_examples=100)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, max_rows=60)), data=st.data())
def test_threads_batches_and_chunks_do_not_change_the_result(case: dict, data: Any) -> None:
    orders, kw = case["orders"], case["kw"]
    base, _ = cohorts(orders, **kw, threads=1)
    for _ in range(3):
        feed, knobs = data.draw(feeds(orders))
        knobs["threads"] = data.draw(st.sampled_from([1, 2]))
        other, _ = cohorts(feed, **kw, **knobs)
        assert_same_result(base, other)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_many_users_many_batches(threads: int, chunk_rows: int | None) -> None:
    """Deterministic, wider input: 20k rows over 3k users in uneven batches equals the reference."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 20_000
    users = rng.integers(0, 3_000, n) * 7_919 + 10**12  # sparse int64 ids
    base = np.datetime64("2023-01-01T00:00:00", "s").astype(np.int64)
    secs = base + rng.integers(0, 400 * 86_400, n)
    amounts = np.round(rng.normal(20, 30, n), 2)
    amounts[rng.random(n) < 0.01] = np.nan
    orders = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "ts": pa.array(secs, pa.int64()).cast(pa.timestamp("s", "UTC")),
            "amount": pa.array(amounts, pa.float64(), mask=rng.random(n) < 0.01),
            "seg": pa.array(rng.choice(["web", "app", "store"], n)),
        }
    )
    kw = dict(user="user_id", ts="ts", amount="amount", by="seg", horizon=12, period="month",
              tz="Europe/Berlin", scale=2)  # fmt: skip
    ref = reference_cohorts(orders, **kw)
    sizes = [1, 999, 5_000, 0, 13_000, 1_000]
    batches = split_batches(orders, list(np.cumsum(sizes)))
    table, warned = cohorts(pa.RecordBatchReader.from_batches(orders.schema, batches), **kw, threads=threads,
                            _chunk_rows=chunk_rows)  # fmt: skip
    assert len(warned) == 1
    assert_matches_reference(table, ref, orders, "amount", 2, ["seg"])


# ---------------------------------------------------------------------------------------------------
# edge cases the properties found, pinned as plain tests
# ---------------------------------------------------------------------------------------------------
def test_dictionary_user_with_empty_dictionary():
    """A dictionary user column whose dictionary is empty (every user null) is just null_user rows."""
    orders = pa.table(
        {
            "user_id": pa.array([None, None], pa.string()).dictionary_encode(),
            "ts": pa.array([0, 86_400], pa.timestamp("s")),
            "amount": [1.0, 2.0],
        }
    )
    assert len(orders["user_id"].chunk(0).dictionary) == 0
    kw = dict(user="user_id", ts="ts", amount="amount")
    ref = reference_cohorts(orders, **kw)
    table, warned = cohorts(orders, **kw)
    assert len(warned) == 1
    assert_matches_reference(table, ref, orders, "amount", 4, [])
    # the same as one batch among others, and as an empty batch of a reader
    good = pa.table({"user_id": pa.array(["a", "a"]).dictionary_encode(), "ts": orders["ts"], "amount": [3.0, 4.0]})
    both = pa.Table.from_batches([*good.to_batches(), *orders.to_batches()])
    table, _ = cohorts(both, **kw)
    assert_matches_reference(table, reference_cohorts(both, **kw), both, "amount", 4, [])
    empty = pa.RecordBatch.from_pylist([], schema=good.schema)
    reader = pa.RecordBatchReader.from_batches(good.schema, [empty, *good.to_batches()])
    table, _ = cohorts(reader, **kw)
    assert_matches_reference(table, reference_cohorts(good, **kw), good, "amount", 4, [])


@pytest.mark.parametrize("signups", [False, True])
def test_empty_input_keeps_the_segment_dtype(signups):
    orders = pa.table(
        {
            "user_id": pa.array([], pa.int64()),
            "ts": pa.array([], pa.timestamp("s")),
            "amount": pa.array([], pa.float64()),
            "seg": pa.array([], pa.string()),
        }
    )
    kw: dict[str, Any] = dict(user="user_id", ts="ts", amount="amount", by="seg")
    if signups:
        kw["signups"] = pa.table({"user_id": pa.array([], pa.int64()), "signup_ts": pa.array([], pa.date32()),
                                  "seg": pa.array([], pa.string())})  # fmt: skip
    table, _ = cohorts(orders, **kw)
    df = table.to_polars()
    assert df.height == 0
    assert df.schema["seg"] == pl.String, df.schema
    assert_matches_reference(table, reference_cohorts(orders, **kw), orders, "amount", 4, ["seg"])


def test_revenue_float_is_the_nearest_double_to_the_exact_sum():
    """``revenue`` is the exact fixed-point sum / 10**scale rounded once to Float64.

    Converting the i128 sum to f64 first and then dividing rounds twice, which is off by one ulp once the
    fixed-point sum exceeds 2**53 (here 9007199254740993 hundredths).
    """
    import datetime as dt
    from decimal import Decimal

    orders = pa.table(
        {
            "user_id": [1, 2],
            "ts": pa.array([dt.datetime(2024, 1, 5), dt.datetime(2024, 2, 5)]),
            "amount": pa.array([Decimal("90071992547409.93"), Decimal("1.00")], pa.decimal128(38, 2)),
        }
    )
    kw = dict(user="user_id", ts="ts", amount="amount", horizon=1)
    table, _ = cohorts(orders, **kw)
    got = table.to_polars()["revenue"][0]
    assert got == float(Decimal("90071992547409.93")) == 90071992547409.9375
    assert_matches_reference(table, reference_cohorts(orders, **kw), orders, "amount", 4, [])


@pytest.mark.parametrize(
    "since",
    [
        "2015-10-18T01:00:00-02:00",  # the first instant of the 18th in Sao Paulo (no local midnight)
        "2015-10-18T03:00:00Z",
        "2015-10-18T01:00:01-02:00",
        "2015-10-18T02:59:59.999999+00:00",
        "2015-10-18",
        "2015-10-18T00:00:00",  # a naive wall-clock time that does not exist
    ],
)
@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_since_at_a_dst_gap_boundary(since, period):
    import datetime as dt
    from zoneinfo import ZoneInfo

    sp = ZoneInfo("America/Sao_Paulo")
    local = [dt.datetime(2015, 10, d, h, tzinfo=sp) for d, h in [(17, 12), (18, 1), (18, 23), (19, 5), (26, 9),
                                                                  (27, 1), (30, 12)]]  # fmt: skip
    orders = pa.table(
        {
            "user_id": [1, 2, 1, 3, 2, 4, 5],
            "ts": pa.array([t.astimezone(dt.timezone.utc) for t in local], pa.timestamp("us", "UTC")),
            "amount": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        }
    )
    kw = dict(user="user_id", ts="ts", amount="amount", tz="America/Sao_Paulo", period=period, horizon=3,
              since=since, as_of="2016-03-01")  # fmt: skip
    table, _ = cohorts(orders, **kw)
    assert_matches_reference(table, reference_cohorts(orders, **kw), orders, "amount", 4, [])


def _user_with_vacant_id() -> int:
    """The int64 user id that the engine's key mix sends to its tables' vacant-bucket marker.

    The mix (murmur3's 64-bit finalizer) is undone step by step: each xor-shift by 33 undoes itself,
    and each odd multiplier has an inverse modulo 2**64.
    """
    m = 1 << 64
    h = 0x9E37_79B9_7F4A_7C15
    h ^= h >> 33
    h = h * pow(0xC4CE_B9FE_1A85_EC53, -1, m) % m
    h ^= h >> 33
    h = h * pow(0xFF51_AFD7_ED55_8CCD, -1, m) % m
    h ^= h >> 33
    return h - m if h >= 1 << 63 else h


@pytest.mark.parametrize("kind", ["table", "reader", "parquet"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_user_whose_id_is_the_vacant_marker_counts_like_any_other(kind: str, threads: int, tmp_path: Any) -> None:
    """That user lives in the table's extra bucket: found in both passes, with or without the trail
    (in-memory table and one-shot stream: trail; parquet: none), with activity too."""
    import numpy as np
    import pyarrow.parquet as pq

    special = _user_with_vacant_id()
    rng = np.random.default_rng(11)
    n = 3_000
    users = rng.integers(0, 300, n) * 1_000_003
    users[rng.random(n) < 0.1] = special
    secs = np.datetime64("2024-01-01T00:00:00", "s").astype(np.int64) + rng.integers(0, 300 * 86_400, n)
    orders = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "ts": pa.array(secs, pa.int64()).cast(pa.timestamp("s", "UTC")),
            "amount": pa.array(np.round(rng.normal(20, 30, n), 2), pa.float64()),
        }
    )
    activity = pa.table({"user_id": pa.array([special, special, 0], pa.int64()), "ts": orders["ts"].take([0, 1, 2])})
    kw = dict(horizon=6, activity=activity)
    ref = reference_cohorts(orders, **kw)
    feed: Any = orders
    if kind == "reader":
        feed = pa.RecordBatchReader.from_batches(orders.schema, orders.to_batches(max_chunksize=700))
    elif kind == "parquet":
        pq.write_table(orders, tmp_path / "orders.parquet", row_group_size=500)
        feed = str(tmp_path / "orders.parquet")
    table, _ = cohorts(feed, **kw, threads=threads, _chunk_rows=256)
    assert_matches_reference(table, ref, orders, "amount", 4, [])


@settings(max_examples=60)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, min_rows=1, max_rows=40)), data=st.data())
def test_a_source_failing_mid_stream_never_yields_a_table(case: dict, data: Any) -> None:
    """A stream that fails part-way raises StreamError (no partial table), whatever batch it fails
    at; the same stream cannot be read again, and a fresh one gives the clean result."""
    orders, kw = case["orders"], case["kw"]
    base, _ = cohorts(orders, **kw)
    cuts = data.draw(st.lists(st.integers(0, orders.num_rows), max_size=4), label="cuts")
    batches = split_batches(orders, cuts)
    fail_at = data.draw(st.integers(0, len(batches)), label="fail_at")

    def failing() -> Any:
        for k, b in enumerate(batches):
            if k == fail_at:
                raise OSError("the connection dropped")
            yield b
        raise OSError("the connection dropped at the end")

    reader = pa.RecordBatchReader.from_batches(orders.schema, failing())
    with pytest.raises(ltrcore.StreamError):
        ltrcore.cohorts(reader, **kw)
    with pytest.raises(ltrcore.InvalidArgumentError, match="already read"):
        ltrcore.cohorts(reader, **kw)
    fresh, _ = cohorts(pa.RecordBatchReader.from_batches(orders.schema, batches), **kw)
    assert_same_result(base, fresh)


@settings(max_examples=150)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, min_rows=2, max_rows=40)), data=st.data())
def test_shuffling_the_rows_never_changes_the_table(case: dict, data: Any) -> None:
    """Ties are broken by the rows' values, never their order: a user whose earliest paying orders
    (or signups) share a timestamp but not a segment takes the smallest segment. So any order of the
    rows, in any batches, gives the same table (as it must across Spark partitions)."""
    orders, kw = case["orders"], case["kw"]
    base, _ = cohorts(orders, **kw)

    def shuffled(table: pa.Table, label: str) -> pa.Table:
        order = data.draw(st.permutations(range(table.num_rows)), label=label)
        if not order:
            return table
        # One-row slices, concatenated: works for every dtype (``take`` has no string_view kernel),
        # and gives one batch per row.
        return pa.concat_tables([table.slice(i, 1) for i in order])

    kw2 = dict(kw)
    for side in ("signups", "activity"):
        if side in kw2:
            kw2[side] = shuffled(kw2[side], side)
    other, _ = cohorts(shuffled(orders, "orders"), **kw2)
    assert_same_result(base, other)
