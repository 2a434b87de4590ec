"""The user id's type never changes a number.

The same orders (nulls, refunds, NaN amounts, several batches, threads 1 and 2, signups and activity
sometimes) are given with the user column as sparse int64, dense int64 (0..n-1 in a random order),
large_string, string_view, dictionaries (int32 and uint32 codes, string and integer values; one
dictionary shared by every batch, a fresh one per batch, one that grows from batch to batch, and
ones with unused values) and a Polars Categorical or Enum (exported as their physical codes over one
dictionary of their categories). Threads 1 to 3: string ids are interned on the run's threads. Every result, cell by cell with its
reconciliations, must be the one of the sparse int64 column, which must match the reference.
"""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_matches_reference, assert_same_result, cohorts, ltrcore, split_batches
from reference import reference_cohorts

SPARSE_BASE = 10**12
SPARSE_STEP = 7_919
T0 = 1_700_000_000  # 2023-11-14, seconds
DAY = 86_400


def sparse(i: int) -> int:
    return SPARSE_BASE + i * SPARSE_STEP


def text(i: int) -> str:
    return f"user-{i:03d}-ü"


@st.composite
def problems(draw: Any) -> dict[str, Any]:
    """Orders (and maybe signups or activity) of users numbered 0..k-1, and the cohorts' settings."""
    k = draw(st.integers(1, 12))
    n = draw(st.integers(0, 60))

    def rows(m: int, with_amount: bool) -> dict[str, list[Any]]:
        users = draw(st.lists(st.one_of(st.integers(0, k - 1), st.none()), min_size=m, max_size=m))
        days = draw(st.lists(st.one_of(st.integers(0, 200), st.none()), min_size=m, max_size=m))
        out: dict[str, list[Any]] = {"user": users, "ts": [None if d is None else T0 + d * DAY for d in days]}
        if with_amount:
            amount = st.one_of(st.integers(-5_000, 20_000).map(lambda c: c / 100), st.sampled_from([0.0, float("nan")]), st.none())
            out["amount"] = draw(st.lists(amount, min_size=m, max_size=m))
        return out

    kind = draw(st.sampled_from(["first_purchase", "signup", "activity"]))
    problem: dict[str, Any] = {
        "k": k,
        "orders": rows(n, True),
        "kw": dict(horizon=draw(st.integers(1, 5)), period="month", tz=draw(st.sampled_from(["UTC", "Europe/Berlin"]))),
    }
    if kind == "signup":
        problem["signups"] = rows(draw(st.integers(0, 2 * k)), False)
    if kind == "activity":
        problem["activity"] = rows(draw(st.integers(0, 40)), False)
    problem["cuts"] = draw(st.lists(st.integers(0, n), max_size=5))
    # 3 threads: the interner's parts shared out unevenly (string ids are interned on the pool).
    problem["threads"] = draw(st.sampled_from([1, 2, 3]))
    problem["chunk_rows"] = draw(st.sampled_from([None, 1, 5]))
    problem["seed"] = draw(st.integers(0, 2**32 - 1))
    return problem


def dictionary(ids: list[int | None], order: list[int], value_type: pa.DataType, code_type: pa.DataType) -> pa.Array:
    """``ids`` coded against a dictionary of the users ``order`` (every id among them), as text,
    or as sparse integers for an integer ``value_type``."""
    position = {v: j for j, v in enumerate(order)}
    codes = pa.array([None if i is None else position[i] for i in ids], code_type)
    values = [sparse(i) if pa.types.is_integer(value_type) else text(i) for i in order]
    return pa.DictionaryArray.from_arrays(codes, pa.array(values, value_type))


class Encoding:
    """One way of writing the user column: per batch, given the batch's user numbers."""

    def __init__(self, name: str, k: int, rnd: random.Random):
        self.name, self.k = name, k
        self.dense = list(range(k))
        rnd.shuffle(self.dense)
        # With unused values, in a random order: every user's value and as many that nobody has.
        self.unused = [*range(k), *range(k, 2 * k + 3)]
        rnd.shuffle(self.unused)
        self.rnd = rnd

    def column(self, ids: list[int | None], batch: int) -> pa.Array:
        name = self.name
        if name == "int64_sparse":
            return pa.array([None if i is None else sparse(i) for i in ids], pa.int64())
        if name == "int64_dense":
            return pa.array([None if i is None else self.dense[i] for i in ids], pa.int64())
        if name in ("large_string", "string_view"):
            return pa.array([None if i is None else text(i) for i in ids], getattr(pa, name)())
        if name == "dict_shared":  # one dictionary of every user, shared by every batch
            return dictionary(ids, list(range(self.k)), pa.string(), pa.int32())
        if name == "dict_unused":  # unused values, in a random order, uint32 codes
            return dictionary(ids, self.unused, pa.large_string(), pa.uint32())
        if name == "dict_fresh":  # each batch its own dictionary: only its users, in a random order
            present = sorted({i for i in ids if i is not None}, key=lambda _: self.rnd.random())
            return dictionary(ids, present, pa.string_view(), pa.uint32())
        if name == "dict_growing":  # the last batch's values, then this batch's new ones
            grown = getattr(self, "grown", [])
            grown += [i for i in dict.fromkeys(i for i in ids if i is not None) if i not in grown]
            self.grown = grown
            return dictionary(ids, grown, pa.large_string(), pa.int32())
        if name == "dict_int":  # integer values
            return dictionary(ids, self.unused, pa.int64(), pa.int16())
        raise AssertionError(name)

    @property
    def shared(self) -> bool:
        return self.name in ("dict_shared", "dict_unused", "dict_int")


ENCODINGS = ["int64_sparse", "int64_dense", "large_string", "string_view", "dict_shared", "dict_unused",
             "dict_fresh", "dict_growing", "dict_int"]  # fmt: skip


def table_of(rows: dict[str, list[Any]], enc: Encoding, cuts: list[int], user: str, ts: str) -> pa.Table | pa.RecordBatchReader:
    """The rows as record batches cut at ``cuts``, the user column written by ``enc``."""
    n = len(rows["user"])
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    batches = []
    schema = None
    for b, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        cols = {
            user: enc.column(rows["user"][lo:hi], b),
            ts: pa.array(rows["ts"][lo:hi], pa.int64()).cast(pa.timestamp("s", "UTC")),
        }
        if "amount" in rows:
            cols["amount"] = pa.array(rows["amount"][lo:hi], pa.float64())
        batch = pa.record_batch(cols)
        if schema is None:
            schema = batch.schema
        batches.append(batch)
    if enc.shared:
        # Slices of one column share its dictionary's buffers, as the chunks of a categorical do.
        whole = enc.column(rows["user"], 0)
        batches = [batch.set_column(0, user, whole.slice(lo, hi - lo)) for batch, (lo, hi) in zip(batches, zip(bounds, bounds[1:]))]
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def run(problem: dict[str, Any], enc: Encoding, reader: bool) -> tuple[Any, pa.Table]:
    kw = dict(problem["kw"], threads=problem["threads"], _chunk_rows=problem["chunk_rows"])
    orders = table_of(problem["orders"], enc, problem["cuts"], "user_id", "ts")
    if "signups" in problem:
        kw["signups"] = table_of(problem["signups"], enc, [1, 3], "user_id", "signed_up")
        kw["signup_ts"] = "signed_up"
    if "activity" in problem:
        kw["activity"] = table_of(problem["activity"], enc, [2], "user_id", "seen")
        kw["activity_ts"] = "seen"
    feed: Any = pa.RecordBatchReader.from_batches(orders.schema, orders.to_batches()) if reader else orders
    table, _ = cohorts(feed, user="user_id", ts="ts", amount="amount", **kw)
    return table, orders


@settings(max_examples=80, deadline=None)
@given(problem=problems(), reader=st.booleans())
def test_every_user_type_gives_the_same_result(problem: dict[str, Any], reader: bool) -> None:
    rnd = random.Random(problem["seed"])
    base, orders = run(problem, Encoding("int64_sparse", problem["k"], rnd), reader)
    # The plain path against the reference, for the orders alone (signups and activity: the
    # property tests in test_properties.py).
    if "signups" not in problem and "activity" not in problem:
        kw = dict(problem["kw"], user="user_id", ts="ts", amount="amount", scale=4)
        assert_matches_reference(base, reference_cohorts(orders, **kw), orders, "amount", 4, [])
    for name in ENCODINGS[1:]:
        other, _ = run(problem, Encoding(name, problem["k"], rnd), reader)
        assert_same_result(base, other)


def polars_orders(problem: dict[str, Any], categorical: bool) -> pl.DataFrame:
    rows = problem["orders"]
    users = [None if i is None else text(i) for i in rows["user"]]
    df = pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=pl.String),
            "ts": pl.from_epoch(pl.Series(rows["ts"], dtype=pl.Int64), time_unit="s").dt.replace_time_zone("UTC"),
            "amount": pl.Series(rows["amount"], dtype=pl.Float64),
        }
    )
    return df.with_columns(pl.col("user_id").cast(pl.Categorical)) if categorical else df


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_a_polars_categorical_is_its_strings(problem: dict[str, Any]) -> None:
    """A Polars Categorical or Enum (exported as its physical codes over one dictionary of its
    categories), whole and in pieces (a LazyFrame's batches, each exported by Polars on its own),
    gives what its strings give."""
    problem.pop("signups", None)
    problem.pop("activity", None)
    kw = dict(problem["kw"], user="user_id", ts="ts", amount="amount", threads=problem["threads"], _chunk_rows=problem["chunk_rows"])
    base, _ = cohorts(polars_orders(problem, categorical=False), **kw)
    cat = polars_orders(problem, categorical=True)
    assert cat.to_arrow().schema.field("user_id").type.value_type in (pa.string_view(), pa.large_string(), pa.string())
    table, _ = cohorts(cat, **kw)
    assert_same_result(base, table)
    # An Enum: its fixed categories, in another order than they appear, and some no row has.
    users = polars_orders(problem, categorical=False)["user_id"].drop_nulls().unique().to_list()
    enum = pl.Enum(sorted(users, reverse=True) + ["nobody-1", "nobody-2"])
    table, _ = cohorts(polars_orders(problem, categorical=False).with_columns(pl.col("user_id").cast(enum)), **kw)
    assert_same_result(base, table)
    pieces = [cat.slice(lo, 7) for lo in range(0, max(cat.height, 1), 7)]
    table, _ = cohorts(pl.concat(pieces, rechunk=False).lazy(), **kw)
    assert_same_result(base, table)


def test_a_changed_dictionary_at_the_same_length_is_read_again() -> None:
    """Two batches whose dictionaries have the same length but other values (the cache must not take
    one for the other), and a third that shares the first's buffers."""
    first = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), pa.array(["a", "b"]))
    second = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], pa.int32()), pa.array(["c", "a"]))
    third = pa.DictionaryArray.from_arrays(pa.array([1, 1], pa.int32()), first.dictionary)
    ts = lambda n, d: pa.array([T0 + d * DAY] * n, pa.int64()).cast(pa.timestamp("s", "UTC"))  # noqa: E731
    batches = [
        pa.record_batch({"user_id": col, "ts": ts(len(col), d), "amount": pa.array([10.0] * len(col))})
        for col, d in [(first, 0), (second, 40), (third, 70)]
    ]
    got, _ = cohorts(pa.Table.from_batches(batches), user="user_id", ts="ts", amount="amount", horizon=4)
    plain = pa.Table.from_batches([b.set_column(0, "user_id", b.column(0).cast(pa.string())) for b in batches])
    want, _ = cohorts(plain, user="user_id", ts="ts", amount="amount", horizon=4)
    assert_same_result(want, got)
    # a: month 0 then 2 (via "a" in batch 2), b: month 0 then 2, c: month 1
    sizes = got.to_polars().filter(pl.col("age") == 0)["cohort_size"].to_list()
    assert sizes == [2, 1], sizes


@pytest.mark.parametrize("threads", [1, 2])
def test_partials_on_dense_ids_merge_as_one_run(threads: int) -> None:
    """Dense ids are the run's own: partials built on dense keys (the same numbers standing for other
    users in each partial, and given in several batches) merge, through their Arrow layout as Spark
    moves them, into the result of one run over all the users with ids of their own."""
    import numpy as np

    rng = np.random.default_rng(5)
    n, users = 4_000, 300
    owner = rng.integers(0, users, n)  # the true user of each row
    ts = pa.array(T0 + rng.integers(0, 300, n) * DAY, pa.int64()).cast(pa.timestamp("s", "UTC"))
    amount = pa.array(np.round(rng.normal(30, 40, n), 2))

    def orders(ids: Any) -> pa.Table:
        return pa.table({"user_id": pa.array(ids, pa.int64()), "ts": ts, "amount": amount})

    # one run: every user its own sparse id
    want, _ = cohorts(orders(owner * SPARSE_STEP + SPARSE_BASE), user="user_id", ts="ts", amount="amount", horizon=6, threads=threads)
    # three slices of users: dense 0..99 for each of the first two (the same numbers, other users),
    # and the rest dense from 5,000
    slices = [(0, 100, 0), (100, 200, -100), (200, users, 5_000 - 200)]
    spec = ltrcore.CohortSpec(horizon=6)
    parts = []
    for lo, hi, shift in slices:
        rows = np.flatnonzero((owner >= lo) & (owner < hi))
        table = orders(owner + shift).take(pa.array(rows))
        acc = ltrcore.Accumulator(spec, threads=threads)
        for piece in split_batches(table, [len(rows) // 3, len(rows) // 2]):
            acc.update(piece)
        parts.append(ltrcore.Partial.from_arrow(acc.finish().to_arrow()))
    assert_same_result(want, ltrcore.merge(parts).finalize())
