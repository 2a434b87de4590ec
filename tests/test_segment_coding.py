"""The core's segment coder against the Polars coder it replaces (the reference, kept as the
fallback): the same codes batch after batch, the same known combinations (bit for bit) and the
same ranks, for every dtype the core takes, nulls, NaN and -0.0, dictionaries, and 1–3 columns;
and the same cohort tables end to end."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import struct
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ltrcore
from helpers import assert_same_result
from ltrcore.adapters import SEGMENT_CODER_ENV, SegmentCoder

INTS = {
    pa.int8(): 2**7, pa.int16(): 2**15, pa.int32(): 2**31, pa.int64(): 2**63,
    pa.uint8(): 2**8, pa.uint16(): 2**16, pa.uint32(): 2**32, pa.uint64(): 2**64,
}  # fmt: skip
TEMPORAL = [
    pa.date32(), pa.date64(), pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns"),
    pa.timestamp("s"), pa.timestamp("ms", "UTC"), pa.timestamp("us"), pa.timestamp("ns", "Asia/Kolkata"),
    pa.duration("s"), pa.duration("ms"), pa.duration("us"), pa.duration("ns"),
]  # fmt: skip
TEXTS = [pa.string(), pa.large_string(), pa.string_view(), pa.binary(), pa.large_binary(), pa.binary_view()]
DICTIONARIES = [pa.dictionary(k, v) for k in (pa.int8(), pa.int32(), pa.uint32()) for v in (pa.string(), pa.large_string(), pa.string_view())]
# Texts around the 15 bytes packed into a key: padding that is not a NUL byte, and long ones interned.
WORDS = ["", "a", "a\x00", "\x00", "organic", "search", "abcdefghijklmno", "abcdefghijklmnop", "abcdefghijklmnopq" * 3, "é", "ü" * 9]
NANS = [float("nan"), struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0001))[0], -float("nan")]
FLOATS = [0.0, -0.0, 1.5, -1.5, float("inf"), -float("inf"), 1e300, 5e-324, *NANS]
# Dtypes the core does not take: the Polars coder codes them.
FALLBACK = [pa.decimal128(10, 2)]


@contextlib.contextmanager
def polars_coder(on: bool) -> Iterator[None]:
    before = os.environ.get(SEGMENT_CODER_ENV)
    if on:
        os.environ[SEGMENT_CODER_ENV] = "polars"
    else:
        os.environ.pop(SEGMENT_CODER_ENV, None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SEGMENT_CODER_ENV, None)
        else:
            os.environ[SEGMENT_CODER_ENV] = before


def pool(typ: pa.DataType) -> list[Any]:
    """A few values of `typ`, extremes and oddities included, so that rows repeat."""
    if typ in INTS:
        lo = -INTS[typ] // 2 if typ.id in (pa.int8().id, pa.int16().id, pa.int32().id, pa.int64().id) else 0
        hi = lo + INTS[typ] - 1
        return [lo, hi, 0, 1, -1 if lo else 2, lo + 1]
    if pa.types.is_boolean(typ):
        return [True, False]
    if pa.types.is_floating(typ):
        return FLOATS
    if pa.types.is_date32(typ):
        return [0, -1, 19_000, -719_162, 2_932_896]
    if pa.types.is_date64(typ):
        return [0, -86_400_000, 1_700_000_000_000]
    if pa.types.is_time32(typ):
        return [0, 1, 86_399 if typ.unit == "s" else 86_399_999]
    if pa.types.is_time64(typ):
        return [0, 1, 86_399_999_999 if typ.unit == "us" else 86_399_999_999_999]
    if (pa.types.is_timestamp(typ) or pa.types.is_duration(typ)) and typ.unit == "s":
        return [0, -1, 1_700_000_000, 2**62 // 1000]  # within what ms can hold (see SegmentCoder.keys)
    if pa.types.is_timestamp(typ) or pa.types.is_duration(typ):
        return [0, -1, 1, 2**62, -(2**62)]
    if pa.types.is_decimal(typ):
        from decimal import Decimal

        return [Decimal("0.00"), Decimal("-1.50"), Decimal("12345678.99")]
    return WORDS


def column(values: list[Any], typ: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(typ):
        return pa.array(values, typ.value_type).dictionary_encode().cast(typ)
    if typ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        values = [v.encode() if v is not None else None for v in values]
    if pa.types.is_floating(typ) and typ == pa.float32():
        return pa.array(values, pa.float64()).cast(pa.float32())
    if pa.types.is_temporal(typ) or pa.types.is_duration(typ):
        return pa.array(values, _storage(typ)).view(typ)
    return pa.array(values, typ)


def _storage(typ: pa.DataType) -> pa.DataType:
    return pa.int32() if typ in (pa.date32(), pa.time32("s"), pa.time32("ms")) else pa.int64()


@st.composite
def batches(draw: Any, dtypes: list[pa.DataType] | None = None) -> tuple[list[str], list[pa.Table]]:
    """1–3 by columns of drawn dtypes, and 1–4 batches of rows drawn from small pools."""
    if dtypes is None:
        choices = [*INTS, pa.bool_(), pa.float32(), pa.float64(), *TEMPORAL, *TEXTS, *DICTIONARIES]
        dtypes = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3))
    by = [f"c{j}" for j in range(len(dtypes))]
    pools = [pool(t) for t in dtypes]
    tables = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 40))
        cols = []
        for typ, values in zip(dtypes, pools):
            picked = draw(st.lists(st.one_of(st.none(), st.sampled_from(values)), min_size=n, max_size=n))
            cols.append(column(picked, typ))
        tables.append(pa.table(dict(zip(by, cols))))
    return by, tables


def exact(frame: pl.DataFrame) -> list[list[Any]]:
    """The frame's columns as raw values: floats as their bits (NaN payloads and -0.0 kept apart),
    times as their integers, categoricals as their text."""
    out = []
    for col in frame.to_arrow().columns:
        arr = col.combine_chunks()
        typ = arr.type
        if pa.types.is_dictionary(typ):
            arr = arr.cast(typ.value_type)
        elif pa.types.is_floating(typ):
            arr = arr.view(pa.int64() if typ == pa.float64() else pa.int32())
        elif pa.types.is_temporal(typ) or pa.types.is_duration(typ):
            arr = arr.view(_storage(typ))
        out.append(arr.to_pylist())
    return out


def code_all(by: list[str], tables: list[pa.Table], *, polars: bool) -> tuple[SegmentCoder, list[list[int]]]:
    coder = SegmentCoder(by)
    with polars_coder(polars):
        codes = [coder.codes(coder.keys(t)).to_pylist() for t in tables]
    return coder, codes


def assert_same_coding(by: list[str], tables: list[pa.Table], *, core_used: bool = True) -> None:
    core, core_codes = code_all(by, tables, polars=False)
    reference, reference_codes = code_all(by, tables, polars=True)
    assert (core._core is not None) == core_used
    assert core_codes == reference_codes
    assert core.dictionary().schema == reference.dictionary().schema
    assert exact(core.dictionary()) == exact(reference.dictionary())
    assert core.ranks() == reference.ranks()


@given(batches())
def test_core_coder_equals_polars_coder(case: tuple[list[str], list[pa.Table]]) -> None:
    assert_same_coding(*case)


@given(st.data())
def test_text_columns_of_every_layout_and_dictionaries(data: Any) -> None:
    dtypes = data.draw(st.lists(st.sampled_from([*TEXTS, *DICTIONARIES]), min_size=1, max_size=3))
    assert_same_coding(*data.draw(batches(dtypes)))


@given(st.data())
def test_floats_nan_and_negative_zero(data: Any) -> None:
    dtypes = data.draw(st.lists(st.sampled_from([pa.float32(), pa.float64()]), min_size=1, max_size=2))
    assert_same_coding(*data.draw(batches(dtypes)))


@given(st.data())
def test_dtypes_the_core_does_not_take_go_through_polars(data: Any) -> None:
    dtypes = [data.draw(st.sampled_from(FALLBACK)), data.draw(st.sampled_from([pa.int64(), pa.string()]))]
    assert_same_coding(*data.draw(batches(dtypes)), core_used=False)


def test_dictionaries_that_change_grow_and_hold_nulls() -> None:
    """Batches whose dictionaries differ (the same values in another order, a grown one, a shared
    one, a null value, an empty one) are matched by the values' text."""
    typ = pa.dictionary(pa.int32(), pa.string())
    first = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 2], pa.int32()), pa.array(["b", "a", None]))
    reordered = pa.DictionaryArray.from_arrays(pa.array([1, 0, 2, 2], pa.int32()), pa.array(["a", "b", None]))
    grown = pa.DictionaryArray.from_arrays(pa.array([3, 0, 1, 4], pa.int32()), pa.array(["b", "a", None, "c", "long text of many bytes"]))
    empty = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array([], pa.string()))
    tables = [pa.table({"d": a}) for a in (first, reordered, grown, first, empty)]
    assert all(t.schema.field("d").type == typ for t in tables)
    assert_same_coding(["d"], tables)


def test_large_batches_looked_up_on_all_cores() -> None:
    """Batches past one block of the parallel lookup, with new combinations deep inside them."""
    rng = random.Random(7)
    tables = []
    for k in range(3):
        n = 70_000
        a = [rng.choice(["organic", "search", None, "a-longer-channel-name", f"new{k}"]) for _ in range(n)]
        b = [rng.choice([1.0, -0.0, 0.0, float("nan"), None, float(rng.randrange(50 * (k + 1)))]) for _ in range(n)]
        c = [rng.randrange(3) if rng.random() > 0.01 else None for _ in range(n)]
        tables.append(pa.table({"a": pa.array(a, pa.string()), "b": pa.array(b, pa.float64()), "c": pa.array(c, pa.int8())}))
    assert_same_coding(["a", "b", "c"], tables)


@pytest.mark.parametrize("typ", [pa.float32(), pa.float64()])
def test_a_lone_nan_is_one_segment_through_either_coder(typ: pa.DataType) -> None:
    """Polars 2.1 joins no NaN against one row; the Polars coder works around it (see _polars_codes)."""
    tables = [pa.table({"c": pa.array(rows, typ)}) for rows in ([float("nan")], [float("nan")], [-float("nan"), 1.0, None])]
    for polars in (False, True):
        assert code_all(["c"], tables, polars=polars)[1] == [[0], [0], [0, 1, 2]]


@pytest.mark.parametrize("typ", [pa.timestamp("s"), pa.duration("s")])
def test_seconds_that_ms_cannot_hold_are_refused(typ: pa.DataType) -> None:
    """Polars would wrap 2**62 s into 0 ms, one segment with 0 s: refused, by either coder."""
    for polars in (False, True):
        coder = SegmentCoder(["c"])
        with polars_coder(polars), pytest.raises(ltrcore.InvalidArgumentError, match="too far out"):
            coder.codes(coder.keys(pa.table({"c": pa.array([0, 2**62], pa.int64()).view(typ)})))


def test_saved_segments_are_known_to_the_core_coder_when_they_read_back_unchanged() -> None:
    """A state's saved segments (a Polars frame) seed the core coder when the input's dtypes hold
    them unchanged; otherwise the Polars coder codes, as before (here: refusing other dtypes)."""
    saved = {
        pa.int64(): pl.Series([1, 2], dtype=pl.Int64),
        pa.large_string(): pl.Series(["b", None], dtype=pl.String),
        pa.dictionary(pa.int32(), pa.string()): pl.Series(["b", None], dtype=pl.Categorical),
    }
    for typ, values in saved.items():
        for coder_used in ("core", "polars"):
            coder = SegmentCoder(["c"])
            coder.known = pl.DataFrame({"c": values, "__ltrcore_segment": pl.Series([0, 1], dtype=pl.UInt32)})
            new = pa.array([values[1], "z" if values.dtype != pl.Int64 else 3, values[0]])
            with polars_coder(coder_used == "polars"):
                codes = coder.codes(coder.keys(pa.table({"c": new.cast(typ)}))).to_pylist()
            assert (coder._core is not None) == (coder_used == "core")
            assert codes == [1, 2, 0]
    coder = SegmentCoder(["c"])
    coder.known = pl.DataFrame({"c": saved[pa.int64()], "__ltrcore_segment": pl.Series([0, 1], dtype=pl.UInt32)})
    with polars_coder(False), pytest.raises(pl.exceptions.SchemaError):
        coder.codes(coder.keys(pa.table({"c": pa.array([2, 3], pa.int32())})))
    assert coder._core is None


def orders(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1)
    users = [rng.randrange(rows // 4 + 1) for _ in range(rows)]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "ts": pa.array([start + dt.timedelta(hours=rng.randrange(24 * 400)) for _ in range(rows)], pa.timestamp("us")),
            "amount": pa.array([round(rng.uniform(-5, 100), 2) for _ in range(rows)], pa.float64()),
            # constant per user except for some, so that ties on the earliest order pick by rank
            "channel": pa.array([rng.choice(["organic", "search", None, "a-channel-name-past-15-bytes"]) for _ in range(rows)]),
            "country": pa.array([rng.choice(["DE", "FR", "US"]) for _ in range(rows)]).dictionary_encode(),
            "score": pa.array([rng.choice([0.5, float("nan"), -0.0, 0.0, None]) for _ in range(rows)], pa.float64()),
        }
    )


@pytest.mark.parametrize("by", [["channel"], ["channel", "country", "score"]])
def test_cohorts_by_segments_equal_through_either_coder(by: list[str]) -> None:
    table = pa.Table.from_batches(orders(30_000, seed=len(by)).to_batches(max_chunksize=6_000))  # 5 batches, kept codes each
    stream = lambda: pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7_000))  # noqa: E731
    with polars_coder(False):
        core = ltrcore.cohorts(table, by=by, horizon=6, tz="UTC")
        core_stream = ltrcore.cohorts(stream(), by=by, horizon=6, tz="UTC")
    with polars_coder(True):
        reference = ltrcore.cohorts(table, by=by, horizon=6, tz="UTC")
    assert_same_result(core, reference)
    assert_same_result(core_stream, reference)


def test_in_memory_orders_are_coded_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reads in-memory orders up to three times; each batch is coded at the first, and a
    one-shot stream (read once, its coded batches kept by the engine) gives the same table."""
    table = orders(20_000, seed=5)
    calls = []
    codes = SegmentCoder.codes

    def counted(self: SegmentCoder, keys: Any) -> pa.Array:
        calls.append(keys.num_rows)
        return codes(self, keys)

    monkeypatch.setattr(SegmentCoder, "codes", counted)
    batches = table.to_batches(max_chunksize=3_000)
    kept = ltrcore.cohorts(pa.Table.from_batches(batches), by=["channel", "score"], horizon=6, tz="UTC")
    assert calls == [b.num_rows for b in batches]
    calls.clear()
    streamed = ltrcore.cohorts(pa.RecordBatchReader.from_batches(table.schema, batches), by=["channel", "score"], horizon=6, tz="UTC")
    assert calls == [b.num_rows for b in batches]
    assert_same_result(kept, streamed)
