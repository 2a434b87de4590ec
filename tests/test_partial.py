"""The partial state: ``CohortSpec``, ``Accumulator``, ``Partial`` and ``merge``.

The property at the heart of it: split the users at random over k accumulators (every row of a user
in the same one), feed each its rows in random pieces, merge the partials in a random order and tree
shape, and the result equals ``ltrcore.cohorts`` over all the rows and the plain reference in
``reference.py``, reconciliations and ``cohort_stats()`` included.
"""

from __future__ import annotations

import dataclasses
import decimal
import pickle
import random
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from helpers import assert_matches_reference, assert_same_result, cohorts, ltrcore, split_batches
from reference import reference_cohorts
from strategies import cases

SPEC_FIELDS = {f.name for f in dataclasses.fields(ltrcore.CohortSpec)}


def spec_of(kw: dict[str, Any]) -> Any:
    settings_ = {k: v for k, v in kw.items() if k in SPEC_FIELDS}
    return ltrcore.CohortSpec(cohort="signup" if "signups" in kw else "first_purchase", **settings_)


def user_key(value: Any) -> Any:
    if isinstance(value, float):  # a float id is the integer it holds, as the engine reads it
        value = int(value)
    return None if value is None else str(value)


def split_by_user(table: pa.Table, user: str, bucket_of: dict[Any, int], k: int, rnd: random.Random) -> list[pa.Table]:
    """``table``'s rows in ``k`` slices: a user's rows all in the user's bucket, null users anywhere."""
    buckets = [bucket_of.setdefault(user_key(v), rnd.randrange(k)) if v is not None else rnd.randrange(k)
               for v in table.column(user).to_pylist()]  # fmt: skip
    # By slices, not a filter: pyarrow cannot filter every dtype the strategies make (string_view).
    rows: list[list[pa.Table]] = [[table.slice(0, 0)] for _ in range(k)]
    for row, b in enumerate(buckets):
        rows[b].append(table.slice(row, 1))
    return [pa.concat_tables(parts).combine_chunks() for parts in rows]


def feed(acc: Any, method: str, table: pa.Table, rnd: random.Random, force: bool = False) -> bool:
    """Gives ``table`` to the accumulator in random pieces (possibly none, if it is empty and not
    ``force``)."""
    if table.num_rows == 0 and not force and rnd.random() < 0.5:
        return False
    cuts = sorted(rnd.randrange(table.num_rows + 1) for _ in range(rnd.randrange(4)))
    for batch in split_batches(table, cuts):
        if method == "update_signups":
            getattr(acc, method)(batch)  # signups are read whole: any piece works
        else:
            getattr(acc, method)(batch if rnd.random() < 0.7 else pa.Table.from_batches([batch]))
    return True


def merge_randomly(parts: list[Any], rnd: random.Random) -> Any:
    """Merges in a random order and tree shape."""
    parts = list(parts)
    rnd.shuffle(parts)
    while len(parts) > 1:
        i = rnd.randrange(len(parts) - 1)
        width = rnd.randint(2, min(3, len(parts) - i))
        parts[i : i + width] = [ltrcore.merge(parts[i : i + width])]
    return parts[0]


def partials_of(case: dict, k: int, seed: int) -> list[Any]:
    return partials_and_fed(case, k, seed)[0]


def partials_and_fed(case: dict, k: int, seed: int) -> tuple[list[Any], set[str]]:
    """The slices' partials, and which tables some accumulator was given a piece of."""
    orders, kw = case["orders"], case["kw"]
    rnd = random.Random(seed)
    spec = spec_of(kw)
    bucket_of: dict[Any, int] = {}
    slices = {"update": split_by_user(orders, kw["user"], bucket_of, k, rnd)}
    for side, method in (("signups", "update_signups"), ("activity", "update_activity")):
        if side in kw:
            slices[method] = split_by_user(kw[side], kw["user"], bucket_of, k, rnd)
    parts, fed = [], set()
    for i in range(k):
        acc = ltrcore.Accumulator(spec, threads=rnd.choice([1, 2]))
        methods = list(slices)
        rnd.shuffle(methods)  # updates of different tables in any order
        for method in methods:
            # Signups and activity are given to at least one accumulator, as `cohorts()` was given
            # them (the Spark adapter gives every task both, if only their schemas).
            force = method != "update" and i == k - 1 and method not in fed
            if feed(acc, method, slices[method][i], rnd, force):
                fed.add(method)
        parts.append(acc.finish())
    return parts, fed


def check_split(case: dict, k: int, seed: int) -> None:
    orders, kw = case["orders"], case["kw"]
    cut = {"as_of": kw.get("as_of"), "since": kw.get("since")}
    whole, _ = cohorts(orders, **kw)
    parts, fed = partials_and_fed(case, k, seed)
    merged = merge_randomly(parts, random.Random(seed))
    with _any_warnings():
        table = merged.finalize(**cut)
    # Slices that were given no piece of a table do not know its dtypes: the amounts' scale (0 then)
    # and the `by` columns' dtypes (Null then). When no slice was, only the values are compared.
    segments_from = "update_signups" if "signups" in kw else "update"
    dtypes_known = "update" in fed and segments_from in fed
    assert_same_result(table, whole, check_dtypes=dtypes_known)
    assert_frame_equal(table.cohort_stats(), whole.cohort_stats(), check_exact=True, check_dtypes=dtypes_known)
    if dtypes_known:
        by = kw.get("by")
        by = [] if by is None else [by] if isinstance(by, str) else list(by)
        assert_matches_reference(table, reference_cohorts(orders, **kw), orders, kw["amount"], kw["scale"], by)

    # The Arrow layout round-trips exactly, and so does pickling.
    again = ltrcore.Partial.from_arrow(merged.to_arrow())
    assert again == merged
    assert pickle.loads(pickle.dumps(merged)) == merged
    with _any_warnings():
        assert_same_result(again.finalize(**cut), whole, check_dtypes=dtypes_known)
    # The concatenation of the slices' tables reads as their merge.
    stacked = pa.concat_tables([p.to_arrow() for p in parts], promote_options="permissive")
    assert ltrcore.Partial.from_arrow(stacked) == merged


class _any_warnings:
    """Bad rows warn at finalize as ``cohorts()`` does; these tests compare numbers, not warnings."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


@settings(max_examples=120)
@given(case=cases(signups=False), k=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_first_purchase_slices_merge_to_cohorts(case: dict, k: int, seed: int) -> None:
    check_split(case, k, seed)


@settings(max_examples=100)
@given(case=cases(signups=True), k=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_signup_slices_merge_to_cohorts(case: dict, k: int, seed: int) -> None:
    check_split(case, k, seed)


@settings(max_examples=60)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, activity=True)), k=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_slices_with_activity_merge_to_cohorts(case: dict, k: int, seed: int) -> None:
    check_split(case, k, seed)


@settings(max_examples=15)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, min_rows=200, max_rows=800, max_users=200)),
       k=st.integers(2, 7), seed=st.integers(0, 2**32))  # fmt: skip
def test_many_users_over_many_slices(case: dict, k: int, seed: int) -> None:
    check_split(case, k, seed)


@settings(max_examples=60)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s)), seed=st.integers(0, 2**32))
def test_merge_is_commutative_and_associative_with_empty_as_identity(case: dict, seed: int) -> None:
    a, b, c = partials_of(case, 3, seed)
    empty = ltrcore.Partial.empty(a.spec)
    assert ltrcore.merge([a, b]) == ltrcore.merge([b, a])
    assert ltrcore.merge([ltrcore.merge([a, b]), c]) == ltrcore.merge([a, ltrcore.merge([b, c])])
    assert ltrcore.merge([a, empty]) == a == ltrcore.merge([empty, a])
    assert ltrcore.merge([a]) == a


# --- examples -------------------------------------------------------------------------------------
def _orders(n_users: int = 50, seed: int = 1, amount_type: pa.DataType = pa.int64()) -> pa.Table:
    rnd = random.Random(seed)
    users, ts, amounts = [], [], []
    for u in range(n_users):
        for _ in range(rnd.randint(1, 6)):
            users.append(u * 7919)
            ts.append(1_704_067_200_000_000 + rnd.randrange(400) * 86_400_000_000)
            amounts.append(rnd.choice([-500, 0, 700, 1200, 2999]))
    return pa.table({"user_id": users, "ts": pa.array(ts, pa.timestamp("us", "UTC")), "amount": pa.array(amounts).cast(amount_type)})


def test_spark_sized_batches_give_the_same_table() -> None:
    orders = _orders(400)
    acc = ltrcore.Accumulator(ltrcore.CohortSpec())
    for batch in orders.to_batches(max_chunksize=37):
        acc.update(batch)
    assert_same_result(acc.finish().finalize(), ltrcore.cohorts(orders))


def test_accumulator_reads_files_and_streams_like_cohorts(tmp_path: Any) -> None:
    import pyarrow.parquet as pq

    orders = _orders(200)
    pq.write_table(orders.slice(0, 300), tmp_path / "a.parquet")
    acc = ltrcore.Accumulator(ltrcore.CohortSpec())
    acc.update(str(tmp_path / "a.parquet"))
    acc.update(pa.RecordBatchReader.from_batches(orders.schema, orders.slice(300).to_batches()))
    acc.update(pl.DataFrame(orders.slice(0, 0)))
    assert_same_result(acc.finish().finalize(), ltrcore.cohorts(orders))


def test_partials_at_different_scales_merge_exactly() -> None:
    orders = _orders(100)
    cents = orders.set_column(
        2, "amount", pa.array([decimal.Decimal(a).scaleb(-2) for a in orders.column("amount").to_pylist()], pa.decimal128(12, 2))
    )
    first = cents.filter(pc.less(cents.column("user_id"), 7919 * 50))
    second = cents.filter(pc.greater_equal(cents.column("user_id"), 7919 * 50))
    second = second.set_column(2, "amount", second.column("amount").cast(pa.decimal128(14, 4)))
    spec = ltrcore.CohortSpec()
    parts = [ltrcore.Accumulator(spec).update(t).finish() for t in (first, second)]
    assert [p.scale for p in parts] == [2, 4]
    merged = ltrcore.merge(parts)
    assert merged.scale == 4
    whole = ltrcore.cohorts(cents.set_column(2, "amount", cents.column("amount").cast(pa.decimal128(14, 4))))
    assert_same_result(merged.finalize(), whole)


def test_finalize_applies_any_cut_off_to_one_partial() -> None:
    orders = _orders(300)
    partial = ltrcore.Accumulator(ltrcore.CohortSpec(horizon=6)).update(orders).finish()
    for as_of, since in [(None, None), ("2024-06-15", None), ("2024-09", "2024-03-01"), ("2025-06", "2024-02")]:
        assert_same_result(partial.finalize(as_of=as_of, since=since), ltrcore.cohorts(orders, horizon=6, as_of=as_of, since=since))


def test_an_accumulator_given_nothing_gives_the_empty_partial() -> None:
    spec = ltrcore.CohortSpec(by="seg")
    got = ltrcore.Accumulator(spec).finish()
    assert got == ltrcore.Partial.empty(spec)
    assert got.to_arrow().num_rows == 1  # the orders' read row, with zero rows
    table = got.finalize()
    assert table.to_polars().height == 0 and table.input_rows == 0


def test_signups_slice_without_orders_and_orders_slice_without_signups() -> None:
    orders = _orders(40)
    signups = pa.table({"user_id": [u * 7919 for u in range(0, 60)],
                        "signup_ts": pa.array([1_704_067_200_000_000 + u * 3_600_000_000 for u in range(60)], pa.timestamp("us", "UTC"))})  # fmt: skip
    spec = ltrcore.CohortSpec(cohort="signup")
    only_signups = ltrcore.Accumulator(spec).update_signups(signups).finish()
    only_orders = ltrcore.Accumulator(spec).update(orders).finish()
    # Not user-disjoint, so not a valid split: each alone must still be a consistent partial.
    assert only_signups.finalize().signups_reconciliation is not None
    rec = dict(zip(*only_orders.finalize().reconciliation.select("reason", "rows").to_dict(as_series=False).values()))
    assert rec["unknown_user"] == orders.num_rows


# --- the spec -------------------------------------------------------------------------------------
def test_spec_is_frozen_picklable_and_fingerprinted() -> None:
    spec = ltrcore.CohortSpec(by=["seg", "tier"], min_amount=0.5, horizon=6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.horizon = 3  # type: ignore[misc]
    assert spec.by == ("seg", "tier") and spec.activity_ts == "ts"
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert ltrcore.CohortSpec(by=["seg", "tier"], min_amount=decimal.Decimal("0.50"), horizon=6).fingerprint == spec.fingerprint
    assert ltrcore.CohortSpec(by=["seg", "tier"], min_amount=0.5, horizon=7).fingerprint != spec.fingerprint
    # Stable across processes and versions of Python: a change here is a change of the format.
    assert ltrcore.CohortSpec().fingerprint.startswith(f"ltrcore-partial-v{ltrcore.spec.PARTIAL_FORMAT_VERSION}:")


def test_default_fingerprint_is_pinned() -> None:
    # Layout 2 added the cells' payments and retained payers; layout 3 the cells' profit. The settings
    # added with it (signup_user, activity_user, ts_format, cost) are digested only when set, so the
    # default spec digests the same settings as before.
    assert ltrcore.CohortSpec().fingerprint == "ltrcore-partial-v3:9c7c656f68ebbbdcd29174c97a09d8e2"
    assert sorted(ltrcore.CohortSpec().settings()) == sorted(
        ["user", "ts", "amount", "cohort", "signup_ts", "activity_ts", "by", "horizon", "period", "tz", "min_amount", "scale"]
    )
    assert ltrcore.CohortSpec(cost="cogs").fingerprint != ltrcore.CohortSpec().fingerprint


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"horizon": 0}, "horizon must be an integer between 1 and 1000"),
        ({"period": "year"}, "period must be one of"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"cohort": "first_login"}, "cohort must be one of"),
        ({"by": ["seg", "seg"]}, "by names column 'seg' twice"),
        ({"min_amount": float("nan")}, "min_amount must be a finite number"),
        ({"scale": 19}, "scale must be an integer between 0 and 18"),
        ({"user": ""}, "user must be a column name"),
    ],
)
def test_spec_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ltrcore.InvalidArgumentError, match=message):
        ltrcore.CohortSpec(**kwargs)


# --- errors ---------------------------------------------------------------------------------------
def test_merge_refuses_other_specs_naming_the_setting() -> None:
    a = ltrcore.Accumulator(ltrcore.CohortSpec(horizon=12)).update(_orders()).finish()
    b = ltrcore.Accumulator(ltrcore.CohortSpec(horizon=6)).update(_orders()).finish()
    with pytest.raises(ltrcore.InvalidArgumentError, match=r"differ in horizon: 12 vs 6"):
        ltrcore.merge([a, b])
    c = ltrcore.Accumulator(ltrcore.CohortSpec(tz="Europe/Berlin")).update(_orders()).finish()
    with pytest.raises(ltrcore.InvalidArgumentError, match=r"differ in tz: 'UTC' vs 'Europe/Berlin'"):
        ltrcore.merge([a, c])
    with pytest.raises(ltrcore.InvalidArgumentError, match="at least one"):
        ltrcore.merge([])
    with pytest.raises(ltrcore.InvalidArgumentError, match="not an ltrcore.Partial"):
        ltrcore.merge([a, a.to_arrow()])


def _partial_table() -> pa.Table:
    orders = _orders()
    orders = orders.append_column("seg", pa.array([["x", "y"][u % 2] for u in orders.column("user_id").to_pylist()]))
    return ltrcore.Accumulator(ltrcore.CohortSpec(by="seg")).update(orders).finish().to_arrow()


def test_from_arrow_refuses_a_table_that_is_not_a_partial() -> None:
    with pytest.raises(ltrcore.InvalidArgumentError, match="not an ltrcore partial"):
        ltrcore.Partial.from_arrow(_orders())
    table = _partial_table()
    with pytest.raises(ltrcore.InvalidArgumentError, match="not an ltrcore partial"):
        ltrcore.Partial.from_arrow(table.replace_schema_metadata(None))


def test_from_arrow_refuses_a_foreign_format_version() -> None:
    table = _partial_table()
    meta = dict(table.schema.metadata)
    meta[b"ltrcore.partial"] = b"99"
    with pytest.raises(ltrcore.InvalidArgumentError, match="layout version 99"):
        ltrcore.Partial.from_arrow(table.replace_schema_metadata(meta))


def test_from_arrow_refuses_a_spec_that_does_not_match_its_fingerprint() -> None:
    table = _partial_table()
    meta = dict(table.schema.metadata)
    meta[b"ltrcore.spec"] = meta[b"ltrcore.spec"].replace(b'"horizon": 12', b'"horizon": 24')
    with pytest.raises(ltrcore.InvalidArgumentError, match="does not match its spec"):
        ltrcore.Partial.from_arrow(table.replace_schema_metadata(meta))


def _with_column(table: pa.Table, name: str, fn: Any) -> pa.Table:
    i = table.schema.get_field_index(name)
    field = table.schema.field(i)
    return table.set_column(i, field, fn(table.column(name)).cast(field.type))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda t: t.drop_columns(["payers"]), 'no column "payers"'),
        (lambda t: _with_column(t, "rows", lambda c: pc.add(c, 1)), "do not add up"),
        (lambda t: _with_column(t, "payers", lambda c: pc.subtract(c, 10**6)), "negative"),
        (lambda t: _with_column(t, "age", lambda c: pc.add(c, 100)), "outside the horizon"),
        (lambda t: _with_column(t, "record", lambda c: pc.if_else(pc.equal(c, "read"), "total", c)), 'record "total"'),
        (lambda t: _with_column(t, "members", lambda c: pc.multiply(c, 0)), "no members"),
        (lambda t: _with_column(t, "cohort", lambda c: pc.add(c, 10**8)), "supported years"),
    ],
)
def test_from_arrow_refuses_numbers_no_accumulator_makes(tamper: Any, message: str) -> None:
    with pytest.raises(ltrcore.InvalidArgumentError, match=message):
        ltrcore.Partial.from_arrow(tamper(_partial_table()))


def test_accumulator_errors() -> None:
    spec = ltrcore.CohortSpec()
    acc = ltrcore.Accumulator(spec)
    with pytest.raises(ltrcore.InvalidArgumentError, match="cohort='first_purchase'"):
        acc.update_signups(pa.table({"user_id": [1], "signup_ts": [1]}))
    acc.update(_orders())
    acc.update(_orders().set_column(2, "amount", pa.array([1.5] * _orders().num_rows)))
    with pytest.raises(ltrcore.InvalidArgumentError, match="piece 2 has columns"):
        acc.finish()
    with pytest.raises(ltrcore.InvalidArgumentError, match="has finished"):
        acc.update(_orders())
    # Pieces read as a chain (a stream among them) are held to the same rule.
    streamed = ltrcore.Accumulator(spec).update(_orders())
    other = _orders().set_column(2, "amount", pa.array([1.5] * _orders().num_rows))
    streamed.update(pa.RecordBatchReader.from_batches(other.schema, other.to_batches()))
    with pytest.raises(ltrcore.InvalidArgumentError, match=r"orders: piece 2 has columns \(user_id: int64, ts: timestamp\[us, tz=UTC\], amount: double\)"):
        streamed.finish()
    with pytest.raises(ltrcore.InvalidArgumentError, match="needs a CohortSpec"):
        ltrcore.Accumulator({"horizon": 12})  # type: ignore[arg-type]
    with pytest.raises(ltrcore.ColumnNotFoundError, match='column "when" not found in orders; available columns: "user_id", "ts", "amount"'):
        ltrcore.Accumulator(ltrcore.CohortSpec(ts="when")).update(_orders()).finish()
