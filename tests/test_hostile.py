"""Hostile inputs: nothing may give a silent wrong number.

Each test pins one failure found by probing the engine (issue 10): one-shot streams read twice,
batches that do not match their stream's schema, timestamps outside the supported years, ambiguous
column names, negative decimal scales, values changed on the way in, corrupted files, and errors
that escaped as untyped builtins.
"""

from __future__ import annotations

import datetime as dt
import decimal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assert_same_result, ltrcore, recon_dict

UTC = dt.timezone.utc
SCHEMA = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us", "UTC")), ("amount", pa.float64())])
AS_OF = "2030-01-01"


def batch(n: int, first_user: int = 0) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(first_user, first_user + n), pa.int64()),
            pa.array([dt.datetime(2024, 1 + i % 6, 3, tzinfo=UTC) for i in range(n)], pa.timestamp("us", "UTC")),
            pa.array([10.0] * n),
        ],
        schema=SCHEMA,
    )


def quiet(*args: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
        return ltrcore.cohorts(*args, **kw)


def clean_table(batches: int = 10, rows: int = 10_000) -> pa.Table:
    return pa.Table.from_batches([batch(rows, k * rows) for k in range(batches)])


# ---------------------------------------------------------------------------------------------------
# 1. one-shot streams are never read twice
# ---------------------------------------------------------------------------------------------------
def failing_once(batches: int, fail_at: int) -> Iterator[pa.RecordBatch]:
    for k in range(batches):
        if k == fail_at:
            raise ConnectionError("network dropped")
        yield batch(10_000, k * 10_000)


def test_a_failed_reader_cannot_be_retried_into_a_truncated_table():
    reader = pa.RecordBatchReader.from_batches(SCHEMA, failing_once(10, fail_at=4))
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(reader)
    assert "batch 4" in str(info.value) and "ConnectionError" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(ltrcore.InvalidArgumentError, match="already read"):
        ltrcore.cohorts(reader)


def test_the_same_reader_twice_is_an_error_not_an_empty_table():
    reader = pa.RecordBatchReader.from_batches(SCHEMA, clean_table().to_batches())
    assert quiet(reader, as_of=AS_OF).input_rows == 100_000
    with pytest.raises(ltrcore.InvalidArgumentError, match="already read"):
        ltrcore.cohorts(reader)


def test_one_reader_as_orders_and_activity_is_an_error():
    reader = pa.RecordBatchReader.from_batches(SCHEMA, clean_table(2).to_batches())
    with pytest.raises(ltrcore.InvalidArgumentError, match="already read"):
        ltrcore.cohorts(reader, activity=reader)


def test_a_reader_that_failed_before_any_batch_was_read_is_still_whole():
    reader = pa.RecordBatchReader.from_batches(SCHEMA, clean_table(3).to_batches())
    with pytest.raises(ltrcore.ColumnNotFoundError):
        ltrcore.cohorts(reader, user="customer")
    assert quiet(reader, as_of=AS_OF).input_rows == 30_000


class ResumableStream:
    """A custom ``__arrow_c_stream__`` producer over one shared generator: exporting it again after a
    failure would go on where the failed read stopped."""

    def __init__(self) -> None:
        self.batches = failing_once(10, fail_at=4)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return pa.RecordBatchReader.from_batches(SCHEMA, self.batches).__arrow_c_stream__(requested_schema)


def test_a_resumable_custom_stream_is_read_once():
    stream = ResumableStream()
    with pytest.raises(ltrcore.StreamError):
        ltrcore.cohorts(stream)
    with pytest.raises(ltrcore.InvalidArgumentError, match="already read"):
        ltrcore.cohorts(stream)  # would have been 60,000 of 100,000 rows


def test_a_fresh_source_after_a_failure_gives_the_clean_result():
    with pytest.raises(ltrcore.StreamError):
        ltrcore.cohorts(pa.RecordBatchReader.from_batches(SCHEMA, failing_once(10, fail_at=7)))
    clean = quiet(clean_table(), as_of=AS_OF)
    again = quiet(pa.RecordBatchReader.from_batches(SCHEMA, clean_table().to_batches()), as_of=AS_OF)
    assert_same_result(clean, again)


# ---------------------------------------------------------------------------------------------------
# 2. every batch must match its stream's schema
# ---------------------------------------------------------------------------------------------------
def test_a_batch_with_permuted_columns_is_a_stream_error():
    good = batch(5)
    permuted = pa.record_batch([good.column(2), good.column(1), good.column(0)], names=["amount", "ts", "user_id"])
    reader = pa.RecordBatchReader.from_batches(SCHEMA, [good, permuted])
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(reader)
    msg = str(info.value)
    assert "batch 1" in msg and "'amount'" in msg and "'user_id'" in msg, msg


def test_a_batch_with_a_narrower_dtype_is_a_stream_error():
    good = batch(5)
    narrow = pa.record_batch([good.column(0).cast(pa.int32()), good.column(1), good.column(2)], names=SCHEMA.names)
    reader = pa.RecordBatchReader.from_batches(SCHEMA, [good, narrow])
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(reader)
    assert "batch 1" in str(info.value) and "int32" in str(info.value) and "user_id" in str(info.value)


def test_a_generator_that_yields_something_else_is_a_stream_error():
    def gen() -> Iterator[Any]:
        yield batch(3)
        yield pa.table({"x": [1]})

    reader = pa.RecordBatchReader.from_batches(SCHEMA, gen())
    with pytest.raises((ltrcore.StreamError, TypeError)):
        ltrcore.cohorts(reader)


# ---------------------------------------------------------------------------------------------------
# 3. timestamps outside the supported years are a reason, never a period
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Asia/Tokyo"])
@pytest.mark.parametrize("period", ["month", "day"])
def test_i64_extremes_in_every_unit(unit: str, tz: str | None, period: str):
    raw = [1_704_067_200 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit], 2**63 - 1, -(2**63), 2**62, -(2**62)]
    orders = pa.table({"user_id": pa.array([1, 2, 3, 4, 5]), "ts": pa.array(raw, pa.int64()).cast(pa.timestamp(unit, tz)),
                       "amount": pa.array([1.0, 2.0, 3.0, 4.0, 5.0])})  # fmt: skip
    table = quiet(orders, as_of=AS_OF, period=period)
    rec = recon_dict(table.reconciliation)
    out = 0 if unit == "ns" else 4  # nanoseconds since 1970 cover 1677-2262 only: all in range
    assert rec.get("ts_out_of_range", (0, 0))[0] == out, rec
    assert sum(r for r, _ in rec.values()) == 5
    assert sum(a for _, a in rec.values()) == decimal.Decimal(15)
    assert all(d.year < 2263 for d in table.to_polars()["cohort"])  # no invented cohort
    table.cohorts  # noqa: B018 - converting the cohorts must not fail
    quiet(orders, period=period)  # nor the default as_of


def test_far_future_dates_do_not_land_as_used_revenue_in_invented_cohorts():
    for typ, far in [(pa.date64(), 2**62), (pa.date32(), 2**31 - 1), (pa.timestamp("ms"), 2**62)]:
        storage = pa.int32() if typ == pa.date32() else pa.int64()
        now = {pa.date64(): 1_704_067_200_000, pa.date32(): 19_723, pa.timestamp("ms"): 1_704_067_200_000}[typ]
        orders = pa.table({"user_id": [1, 2], "ts": pa.array([now, far], storage).cast(typ), "amount": [5.0, 7.0]})
        table = quiet(orders, period="day", as_of=AS_OF)
        rec = recon_dict(table.reconciliation)
        assert rec["used"] == (1, decimal.Decimal(5)) and rec["ts_out_of_range"] == (1, decimal.Decimal(7)), (typ, rec)
        assert len(table.cohorts) == 1


def test_the_edges_of_the_supported_range():
    # 9999-12-31 is in range as a wall-clock date, and as an instant in UTC; in Tokyo the same instant
    # late on 9999-12-31 UTC is already year 10000 locally.
    last = dt.datetime(9999, 12, 31, 20, 0)
    orders = pa.table({
        "user_id": [1, 1, 2],
        "ts": pa.array([dt.datetime(2024, 1, 1), last, last], pa.timestamp("s")),
        "amount": [1.0, 2.0, 3.0],
    })  # fmt: skip
    rec = recon_dict(quiet(orders, as_of=AS_OF, horizon=1).reconciliation)
    assert rec.get("ts_out_of_range", (0, 0))[0] == 0
    aware = orders.set_column(1, "ts", orders["ts"].cast(pa.timestamp("s", "UTC")))
    assert recon_dict(quiet(aware, tz="UTC", as_of=AS_OF).reconciliation).get("ts_out_of_range", (0, 0))[0] == 0
    tokyo = recon_dict(quiet(aware, tz="Asia/Tokyo", as_of=AS_OF).reconciliation)
    assert tokyo["ts_out_of_range"] == (2, decimal.Decimal(5)), tokyo


def test_strict_names_the_out_of_range_timestamp():
    orders = pa.table({"user_id": [1, 2], "ts": pa.array([0, 2**63 - 1], pa.timestamp("s")), "amount": [1.0, 2.0]})
    with pytest.raises(ltrcore.BadRowsError) as info:
        ltrcore.cohorts(orders, strict=True)
    assert "'ts'" in str(info.value) or '"ts"' in str(info.value)
    assert "row 1" in str(info.value) and "1-9999" in str(info.value)


def test_out_of_range_rows_warn_like_other_bad_rows():
    orders = pa.table({"user_id": [1, 2], "ts": pa.array([0, 2**63 - 1], pa.timestamp("s")), "amount": [1.0, 2.0]})
    with pytest.warns(ltrcore.ExcludedRowsWarning):
        ltrcore.cohorts(orders)


def test_signups_and_activity_out_of_range():
    orders = pa.table({"user_id": [1, 2], "ts": pa.array([dt.datetime(2024, 1, 5)] * 2, pa.timestamp("s")),
                       "amount": [1.0, 2.0]})  # fmt: skip
    signups = pa.table({"user_id": [1, 2], "signup_ts": pa.array([1_700_000_000, 2**62], pa.timestamp("s"))})
    activity = pa.table({"user_id": [1, 2], "ts": pa.array([1_704_500_000, -(2**62)], pa.timestamp("s"))})
    table = quiet(orders, signups=signups, activity=activity, as_of=AS_OF)
    assert recon_dict(table.signups_reconciliation, with_amount=False)["ts_out_of_range"] == 1
    assert recon_dict(table.activity_reconciliation, with_amount=False)["ts_out_of_range"] == 1
    # the far-out signup is not silently 1970: user 2 is unknown, not a member of a 1970 cohort
    assert [c.year for c in table.cohorts] == [2023]
    assert recon_dict(table.reconciliation)["unknown_user"][0] == 1


@pytest.mark.parametrize("with_by", [False, True])
def test_values_are_not_changed_on_the_way_in(with_by: bool):
    """Far-out timestamp[s] values used to become 1970 on their way through Polars."""
    orders = pa.table({"user_id": [1, 2], "ts": pa.array([1_704_067_200, 2**62], pa.timestamp("s")),
                       "amount": [1.0, 2.0], "channel": ["a", "b"]})  # fmt: skip
    signups = pa.table({"user_id": [1, 2], "signup_ts": pa.array([1_700_000_000, 2**62], pa.timestamp("s")),
                        "channel": ["a", "b"]})  # fmt: skip
    by = "channel" if with_by else None
    for kw in ({}, {"signups": signups}):
        table = quiet(orders, by=by, as_of=AS_OF, **kw)
        assert recon_dict(table.reconciliation)["ts_out_of_range"] == (1, decimal.Decimal(2))
        assert all(c.year == 2023 or c.year == 2024 for c in table.cohorts)


def test_a_segment_value_polars_cannot_hold_is_refused():
    orders = pa.table({"user_id": [1, 2], "ts": pa.array([1_704_067_200] * 2, pa.timestamp("s")), "amount": [1.0, 2.0],
                       "launch": pa.array([1_700_000_000, 2**62], pa.timestamp("s"))})  # fmt: skip
    with pytest.raises(ltrcore.InvalidArgumentError, match="launch"):
        ltrcore.cohorts(orders, by="launch")
    table = quiet(orders.slice(0, 1), by="launch", as_of=AS_OF)
    assert table.to_polars()["launch"].to_list()[0] == dt.datetime(2023, 11, 14, 22, 13, 20)


def test_as_of_and_since_outside_the_supported_years():
    orders = pa.table({"user_id": [1], "ts": pa.array([dt.datetime(2024, 1, 5)], pa.timestamp("s")), "amount": [1.0]})
    for kw in ({"as_of": dt.datetime.min}, {"as_of": dt.date(1, 1, 15)}, {"since": dt.datetime.max}):
        with pytest.raises(ltrcore.InvalidArgumentError, match="1-9999"):
            ltrcore.cohorts(orders, **kw)
    with pytest.raises(ltrcore.InvalidArgumentError, match="1-9999"):
        ltrcore.cohorts(orders, as_of=np.datetime64("300000-01-01"))
    assert quiet(orders, as_of=dt.datetime.max).last_complete == dt.date(9999, 11, 1)


# ---------------------------------------------------------------------------------------------------
# 4. a column name that appears twice is ambiguous
# ---------------------------------------------------------------------------------------------------
def test_a_duplicated_column_name_is_ambiguous():
    b = pa.RecordBatch.from_arrays(
        [pa.array([1, 2]), pa.array([5, 6]), pa.array([dt.datetime(2024, 1, 1)] * 2, pa.timestamp("us")),
         pa.array([1.0, 2.0])],
        names=["user_id", "user_id", "ts", "amount"],
    )  # fmt: skip
    for source in (pa.Table.from_batches([b]), pa.RecordBatchReader.from_batches(b.schema, [b]), b):
        with pytest.raises(ltrcore.InvalidArgumentError) as info:
            ltrcore.cohorts(source)
        assert "user_id" in str(info.value) and "ambiguous" in str(info.value)
    with pytest.raises(ltrcore.InvalidArgumentError, match="ambiguous"):
        ltrcore.cohorts(pa.Table.from_batches([b]).rename_columns(["user_id", "channel", "ts", "amount"]).append_column(
            "channel", pa.array(["x", "y"])), by="channel")  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# 5. negative decimal scales are exact
# ---------------------------------------------------------------------------------------------------
def decimal_with_scale(values: list[int], scale: int) -> pa.Array:
    unscaled = pa.array([decimal.Decimal(v) for v in values], pa.decimal128(38, 0))
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(values), unscaled.buffers())


def test_a_negative_decimal_scale_is_summed_exactly():
    ts = pa.array([dt.datetime(2024, 1, 5), dt.datetime(2024, 2, 5), dt.datetime(2024, 2, 9)], pa.timestamp("s"))
    orders = pa.table({"user_id": [1, 2, 1], "ts": ts, "amount": decimal_with_scale([5, 7, -1], -3)})
    table = quiet(orders, as_of=AS_OF)
    rec = recon_dict(table.reconciliation)
    assert rec["used"] == (3, decimal.Decimal(11_000)), rec
    assert sorted(table.to_polars()["revenue"].drop_nulls().to_list())[-1] == 7_000


def test_a_huge_negative_scale_is_refused_unless_zero():
    ts = pa.array([dt.datetime(2024, 1, 5)] * 2, pa.timestamp("s"))
    orders = pa.table({"user_id": [1, 2], "ts": ts, "amount": decimal_with_scale([5, 7], -128)})
    with pytest.raises(ltrcore.InvalidArgumentError, match="amount"):
        ltrcore.cohorts(orders)
    zeros = pa.table({"user_id": [1, 2], "ts": ts, "amount": decimal_with_scale([0, 0], -128)})
    assert recon_dict(quiet(zeros, as_of=AS_OF).reconciliation)["never_paid"] == (2, decimal.Decimal(0))


# ---------------------------------------------------------------------------------------------------
# 7. corrupted, truncated, garbage and missing files
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parquet_with_checksums(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    path = tmp_path_factory.mktemp("corrupt") / "orders.parquet"
    pq.write_table(clean_table(4, 5_000), path, write_page_checksum=True, row_group_size=5_000, compression="none")
    return path, quiet(path, as_of=AS_OF)


def data_page_offsets(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    spots = []
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            start = min(o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None)
            size = col.total_compressed_size
            spots += [start + size // 3, start + size // 2, start + size - 9]
    return spots


def test_a_flipped_byte_in_a_data_page_is_an_error_naming_the_file(parquet_with_checksums, tmp_path):
    path, clean = parquet_with_checksums
    data = path.read_bytes()
    errors = 0
    for spot in data_page_offsets(path):
        flipped = bytearray(data)
        flipped[spot] ^= 0x5A
        bad = tmp_path / f"flip_{spot}.parquet"
        bad.write_bytes(bytes(flipped))
        try:
            table = quiet(bad, as_of=AS_OF)
        except ltrcore.StreamError as err:
            assert bad.name in str(err), err
            errors += 1
            continue
        # whatever is not detected must not change a number
        assert_same_result(clean, table)
    assert errors > 0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_files_raise_an_ltrcore_error_naming_the_file(damage, parquet_with_checksums, tmp_path):
    path, _ = parquet_with_checksums
    data = path.read_bytes()
    bad = tmp_path / f"{damage}.parquet"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a parquet file at all" * 40, "empty": b""}[damage])
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(bad)
    assert bad.name in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_truncated_file_among_good_ones_is_named(parquet_with_checksums, tmp_path):
    path, _ = parquet_with_checksums
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "a.parquet").write_bytes(path.read_bytes())
    (folder / "b.parquet").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ltrcore.StreamError, match="b.parquet"):
        ltrcore.cohorts(folder)


def test_missing_inputs_raise_an_ltrcore_error(tmp_path):
    for missing in (tmp_path / "nope.parquet", str(tmp_path / "*.parquet")):
        with pytest.raises(ltrcore.InputNotFoundError) as info:
            ltrcore.cohorts(missing)
        assert isinstance(info.value, FileNotFoundError) and "orders" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# 10. every error is an ltrcore error that says what to do
# ---------------------------------------------------------------------------------------------------
def small_orders(**extra: pa.Array) -> pa.Table:
    return pa.table({"user_id": [1, 2, 1], "ts": pa.array([dt.datetime(2024, m, 5) for m in (1, 2, 3)], pa.timestamp("s")),
                     "amount": [1.0, 2.0, 3.0], **extra})  # fmt: skip


class WrongCapsule:
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return SCHEMA.__arrow_c_schema__()


class NotACapsule:
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return 42


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: ltrcore.cohorts(small_orders(), as_of=pd.NaT), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), as_of=np.datetime64("NaT")), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), since=float("nan")), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), as_of=dt.datetime.min), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), min_amount=decimal.Decimal("1E3000000000")), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), min_amount=decimal.Decimal("NaN")), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), user=None), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), ts=3), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(small_orders(), by=[None]), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(WrongCapsule()), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(NotACapsule()), ltrcore.InvalidArgumentError),
        (lambda: ltrcore.cohorts(object()), ltrcore.InvalidArgumentError),
    ],
)
def test_bad_arguments_are_ltrcore_errors(call, error):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, ltrcore.LtrcoreError)


def test_a_nested_dictionary_user_column_is_a_dtype_error():
    inner = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array(["a", "b"]))
    nested = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), inner)
    with pytest.raises(ltrcore.DtypeError) as info:
        ltrcore.cohorts(small_orders().set_column(0, "user_id", nested))
    assert "user_id" in str(info.value) and "dictionary" in str(info.value).lower()


def test_dictionary_indices_out_of_range_are_a_stream_error():
    keys = pa.array([0, 1, 7], pa.int32())
    broken = pa.DictionaryArray.from_buffers(pa.dictionary(pa.int32(), pa.string()), 3, keys.buffers(),
                                             dictionary=pa.array(["a", "b"]))  # fmt: skip
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(small_orders().set_column(0, "user_id", broken))
    assert "user_id" in str(info.value)


def _dictionary_with_decreasing_offsets() -> pa.DictionaryArray:
    # pyarrow's own check (of the last offset only) lets it through; a full validation would not.
    offsets = pa.array([0, 2, 1], pa.int32()).buffers()[1]
    values = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ab")])
    return pa.DictionaryArray.from_buffers(pa.dictionary(pa.int32(), pa.string()), 3, pa.array([0, 1, 0], pa.int32()).buffers(),
                                           dictionary=values)  # fmt: skip


@pytest.mark.parametrize("column", ["user_id", "channel"])
def test_a_dictionary_whose_values_are_malformed_is_a_stream_error(column):
    """The values are checked before they are read or compared with the last batch's dictionary,
    for user ids and for segments alike."""
    broken = _dictionary_with_decreasing_offsets()
    orders = small_orders(channel=pa.array(["a", "b", "a"]))
    orders = orders.set_column(orders.schema.get_field_index(column), column, broken)
    with pytest.raises(ltrcore.StreamError) as info:
        ltrcore.cohorts(orders, by="channel" if column == "channel" else None)
    assert column in str(info.value) and "offsets decrease" in str(info.value)


@pytest.mark.parametrize("values", [[float("nan"), 1.0, float("nan")], [float("nan")] * 3, [0.0, -0.0, None]])
def test_float_segments_with_nan_are_segments(values):
    orders = small_orders(channel=pa.array(values, pa.float64()))
    table = quiet(orders, by="channel", as_of=AS_OF)
    assert len(table.cohorts) >= 1
    # and NaN first appearing in a later batch
    later = pa.Table.from_batches(orders.to_batches(max_chunksize=1))
    assert_same_result(table, quiet(pa.RecordBatchReader.from_batches(later.schema, later.to_batches()), by="channel",
                                    as_of=AS_OF))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# 11. threads far above the core count
# ---------------------------------------------------------------------------------------------------
def test_threads_are_capped_at_the_available_cores():
    import os

    orders = clean_table(3)
    baseline = len(os.listdir("/proc/self/task"))
    seen: list[int] = []
    table = ltrcore.cohorts(orders, threads=1000, as_of=AS_OF, progress=lambda *_: seen.append(len(os.listdir("/proc/self/task"))))
    cores = len(os.sched_getaffinity(0))
    assert max(seen) - baseline <= cores + 1, (baseline, seen, cores)
    assert_same_result(table, ltrcore.cohorts(orders, threads=1, as_of=AS_OF))


# ---------------------------------------------------------------------------------------------------
# memory: the shared cohort grid gives the same numbers as private copies
# ---------------------------------------------------------------------------------------------------
def test_a_shared_grid_gives_the_same_result():
    rng = np.random.default_rng(5)
    n = 30_000
    orders = pa.table({
        "user_id": rng.integers(0, 3_000, n),
        "ts": pa.array(rng.integers(1_704_067_200, 1_735_689_600, n) * 1_000_000, pa.timestamp("us", "UTC")),
        "amount": np.round(rng.normal(20, 15, n), 2),
        "channel": rng.choice(["a", "b", "c"], n),
    })  # fmt: skip
    activity = orders.select(["user_id", "ts"])
    for kw in ({"period": "day", "horizon": 200}, {"period": "week", "horizon": 30, "by": "channel"}):
        private = quiet(orders, activity=activity, **kw)
        for threads in (1, 2):
            shared = quiet(orders, activity=activity, threads=threads, _cells_budget=0, **kw)
            assert_same_result(private, shared)


# ---------------------------------------------------------------------------------------------------
# 8. running out of memory is a MemoryError, never an abort
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headroom_mib", [48, 160, 300])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"period": "day", "horizon": 365},
        {"period": "day", "horizon": 1000, "_cells_budget": 0},
        {"strings": True},
        {"reader": True},
    ],
)
def test_out_of_memory_is_a_memory_error(kw: dict, headroom_mib: int):
    import json
    import subprocess
    import sys

    script = Path(__file__).with_name("limited_memory.py")
    args = [sys.executable, str(script), "3000000", str(headroom_mib), "2", json.dumps(kw)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -6 would be an abort
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith(("OutOfMemoryError", "returned")), result
    if result["outcome"].startswith("OutOfMemoryError"):
        assert "could not allocate" in result["outcome"] and "MiB" in result["outcome"], result
    assert result["next_ok"], result


def test_a_file_rewritten_between_the_two_readings_is_a_stream_error(tmp_path):
    """First-purchase cohorts read a path twice; a file rewritten in between (here with its columns in
    another order) is an error, never read by the first reading's column positions. (The core refuses a
    re-opened source whose columns changed, found by the fuzz target: F4.)"""
    path = tmp_path / "orders.parquet"
    orders = clean_table(2, 1_000)
    pq.write_table(orders, path)

    def rewrite(phase: str, rows: int) -> None:
        if phase == "cohorts":  # between the two readings
            pq.write_table(orders.select(["amount", "ts", "user_id"]), path)

    with pytest.raises(ltrcore.StreamError, match="orders"):
        ltrcore.cohorts(path, progress=rewrite)
