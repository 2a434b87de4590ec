"""Every error path of ``ltrcore.cohorts``: the exception class, its builtin base and its message."""

from __future__ import annotations

import datetime as dt
import warnings

import pyarrow as pa
import pytest

from helpers import ltrcore

UTC = dt.timezone.utc


def good_orders(n: int = 6) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([i % 3 for i in range(n)], pa.int64()),
            "ts": pa.array([dt.datetime(2024, 1 + i % 4, 10, tzinfo=UTC) for i in range(n)], pa.timestamp("us", "UTC")),
            "amount": pa.array([10.0 + i for i in range(n)], pa.float64()),
            "seg": pa.array(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
        }
    )


def run(orders: pa.Table, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
        return ltrcore.cohorts(orders, **{"user": "user_id", "ts": "ts", "amount": "amount", **kw})


# ---------------------------------------------------------------------------------------------------
# the hierarchy
# ---------------------------------------------------------------------------------------------------
def test_exception_hierarchy():
    assert issubclass(ltrcore.ColumnNotFoundError, KeyError)
    assert issubclass(ltrcore.DtypeError, TypeError)
    assert issubclass(ltrcore.InvalidArgumentError, ValueError)
    assert issubclass(ltrcore.BadRowsError, ValueError)
    assert issubclass(ltrcore.StreamError, RuntimeError)
    assert issubclass(ltrcore.InternalError, RuntimeError)
    assert issubclass(ltrcore.ExcludedRowsWarning, UserWarning)
    for e in (ltrcore.ColumnNotFoundError, ltrcore.DtypeError, ltrcore.InvalidArgumentError, ltrcore.BadRowsError,
              ltrcore.StreamError, ltrcore.InternalError):  # fmt: skip
        assert issubclass(e, ltrcore.LtrcoreError)


# ---------------------------------------------------------------------------------------------------
# missing columns
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, missing",
    [
        ({"user": "customer"}, "customer"),
        ({"ts": "created_at"}, "created_at"),
        ({"amount": "total"}, "total"),
        ({"by": "channel"}, "channel"),
        ({"by": ["seg", "region"]}, "region"),
    ],
)
def test_missing_order_column(kw, missing):
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(good_orders(), **kw)
    assert isinstance(info.value, KeyError)
    msg = str(info.value)
    assert missing in msg
    for available in ("user_id", "ts", "amount"):  # the message lists what is there
        assert available in msg, msg


def test_missing_signup_and_activity_columns():
    orders = good_orders()
    signups = pa.table({"user_id": pa.array([0, 1], pa.int64()),
                        "joined": pa.array([dt.date(2024, 1, 1)] * 2, pa.date32())})  # fmt: skip
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(orders, signups=signups)  # signup_ts defaults to "signup_ts"
    assert "signup_ts" in str(info.value) and "joined" in str(info.value)

    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(orders, signups=signups.rename_columns(["uid", "joined"]), signup_ts="joined")
    assert "user_id" in str(info.value) and "uid" in str(info.value)

    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(orders, signups=signups, signup_ts="joined", by="seg")  # segments come from signups
    assert "seg" in str(info.value)

    activity = pa.table({"user_id": pa.array([0], pa.int64()), "seen": pa.array([dt.date(2024, 1, 2)])})
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(orders, activity=activity)  # activity_ts defaults to ts ("ts")
    assert "ts" in str(info.value) and "seen" in str(info.value)
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        run(orders, activity=activity, activity_ts="visited")
    assert "visited" in str(info.value)
    run(orders, activity=activity, activity_ts="seen")  # and the right name works


# ---------------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------------
def with_column(t: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, arr)


@pytest.mark.parametrize(
    "column, arr, dtype_words",
    [
        ("amount", pa.array([[1, 2]] * 6, pa.list_(pa.int64())), ["list"]),
        ("amount", pa.array([True, False] * 3, pa.bool_()), ["bool"]),
        ("amount", pa.array(["1.5"] * 6, pa.string()), ["str", "utf8"]),
        ("user_id", pa.array([1.0, 2.0] * 3, pa.float16()), ["halffloat", "float16", "f16"]),
        ("user_id", pa.array([True, False] * 3, pa.bool_()), ["bool"]),
        ("ts", pa.array([b"2024-01-01"] * 6, pa.binary()), ["binary"]),
        ("ts", pa.array([1.0] * 6, pa.float64()), ["double", "float", "f64"]),
    ],
)
def test_unsupported_dtype(column, arr, dtype_words):
    with pytest.raises(ltrcore.DtypeError) as info:
        run(with_column(good_orders(), column, arr))
    assert isinstance(info.value, TypeError)
    msg = str(info.value).lower()
    assert column in msg, msg
    assert any(w in msg for w in dtype_words), msg  # names the offending dtype
    accepted = {"amount": ["decimal", "float"], "user_id": ["int", "string"], "ts": ["timestamp", "date"]}[column]
    assert all(w in msg for w in accepted), msg  # and says what is accepted


def test_unsupported_dtype_in_signups():
    # (float ids holding whole numbers and text timestamps are read: see test_inputs_as_people_have_them.py)
    signups = pa.table({"user_id": pa.array([True, False]), "signup_ts": pa.array([dt.date(2024, 1, 1)] * 2)})
    with pytest.raises(ltrcore.DtypeError) as info:
        run(good_orders(), signups=signups)
    assert "user_id" in str(info.value)
    signups = pa.table({"user_id": pa.array([0, 1]), "signup_ts": pa.array([0.5, 1.5])})
    with pytest.raises(ltrcore.DtypeError) as info:
        run(good_orders(), signups=signups)
    assert "signup_ts" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, words",
    [
        ({"tz": "Mars/Olympus_Mons"}, ["Mars/Olympus_Mons"]),
        ({"tz": ""}, ["tz", "zone"]),
        ({"period": "fortnight"}, ["fortnight"]),
        ({"horizon": 0}, ["horizon"]),
        ({"horizon": 1001}, ["horizon"]),
        ({"horizon": -3}, ["horizon"]),
        ({"as_of": "not a date"}, ["as_of", "not a date"]),
        ({"since": "2024-13-45"}, ["since", "2024-13-45"]),
        ({"threads": 0}, ["threads"]),
        ({"scale": -1}, ["scale"]),
        ({"progress": "not callable"}, ["progress"]),
    ],
)
def test_invalid_argument(kw, words):
    with pytest.raises(ltrcore.InvalidArgumentError) as info:
        run(good_orders(), **kw)
    assert isinstance(info.value, ValueError)
    assert any(w.lower() in str(info.value).lower() for w in words), str(info.value)


@pytest.mark.parametrize("horizon", [1, 1000])
def test_horizon_bounds_accepted(horizon):
    table = run(good_orders(), horizon=horizon)
    df = table.to_polars()
    assert table.horizon == horizon
    assert df["age"].max() == horizon - 1
    assert df.group_by("cohort").len()["len"].to_list() == [horizon] * df["cohort"].n_unique()


# ---------------------------------------------------------------------------------------------------
# bad rows: a warning once, or BadRowsError with strict=True
# ---------------------------------------------------------------------------------------------------
def bad_orders() -> pa.Table:
    t = good_orders(8)
    return pa.table(
        {
            "user_id": pa.array([0, None, 1, 2, None, 0, 1, 2], pa.int64()),
            "ts": t["ts"],
            "amount": pa.array([1.0, 2.0, None, float("nan"), 3.0, 4.0, float("inf"), 5.0]),
        }
    )


def test_excluded_rows_warning_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = ltrcore.cohorts(bad_orders(), user="user_id", ts="ts", amount="amount")
    ours = [w for w in caught if issubclass(w.category, ltrcore.ExcludedRowsWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert issubclass(ours[0].category, UserWarning)
    assert ours[0].filename == __file__  # attributed to the caller's line, not to ltrcore internals
    rec = dict(zip(table.reconciliation["reason"], table.reconciliation["rows"]))
    assert rec["null_user"] == 2 and rec["null_amount"] == 1 and rec["nan_amount"] == 2


def test_no_warning_without_bad_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ltrcore.cohorts(good_orders(), user="user_id", ts="ts", amount="amount")
        ltrcore.cohorts(good_orders(), user="user_id", ts="ts", amount="amount", strict=True)


def test_strict_raises_bad_rows_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict raises instead of warning
        with pytest.raises(ltrcore.BadRowsError) as info:
            ltrcore.cohorts(bad_orders(), user="user_id", ts="ts", amount="amount", strict=True)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_strict_with_null_ts():
    t = good_orders()
    t = with_column(t, "ts", pa.array([None] + t["ts"].to_pylist()[1:], pa.timestamp("us", "UTC")))
    with pytest.raises(ltrcore.BadRowsError):
        ltrcore.cohorts(t, user="user_id", ts="ts", amount="amount", strict=True)


# ---------------------------------------------------------------------------------------------------
# a stream that fails half-way, and a Rust panic
# ---------------------------------------------------------------------------------------------------
class Boom(Exception):
    pass


def test_stream_error_half_way():
    t = good_orders(6)
    batches = t.to_batches(max_chunksize=2)

    def gen():
        yield batches[0]
        yield batches[1]
        raise Boom("disk on fire")

    reader = pa.RecordBatchReader.from_batches(t.schema, gen())
    result = "unset"
    with pytest.raises(ltrcore.StreamError) as info:
        result = ltrcore.cohorts(reader, user="user_id", ts="ts", amount="amount")
    assert result == "unset"
    assert isinstance(info.value, RuntimeError)
    assert "disk on fire" in str(info.value)
    # the engine is still usable afterwards
    assert ltrcore.cohorts(t, user="user_id", ts="ts", amount="amount").to_polars().height > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_stream_error_with_threads_and_chunks(threads):
    t = good_orders(6)
    batches = t.to_batches(max_chunksize=1)

    def gen():
        yield from batches[:4]
        raise Boom("late failure")

    reader = pa.RecordBatchReader.from_batches(t.schema, gen())
    with pytest.raises(ltrcore.StreamError):
        ltrcore.cohorts(reader, user="user_id", ts="ts", amount="amount", threads=threads, _chunk_rows=1)


def test_panic_becomes_internal_error():
    with pytest.raises(ltrcore.InternalError) as info:
        ltrcore._core._debug_panic()
    assert isinstance(info.value, RuntimeError)
    assert str(info.value)
    # the interpreter survived and the engine still works
    assert ltrcore.cohorts(good_orders(), user="user_id", ts="ts", amount="amount").to_polars().height > 0


@pytest.mark.parametrize("side", ["signups", "activity"])
def test_user_kind_mismatch_between_inputs(side):
    """Integer user ids in orders cannot be matched with string ids elsewhere: a DtypeError, not silence."""
    other = pa.table({"user_id": pa.array(["0", "1"]), "signup_ts" if side == "signups" else "ts":
                      pa.array([dt.date(2024, 1, 1)] * 2, pa.date32())})  # fmt: skip
    with pytest.raises(ltrcore.DtypeError) as info:
        run(good_orders(), **{side: other})
    assert "user_id" in str(info.value)
