"""Issue 14, item 2: inputs as people have them.

pandas' float64 user ids (integers with nulls), timestamps stored as text (ISO-8601 or a ``ts_format``
layout, with ``bad_ts`` for the rows that do not parse), and tables that name their users differently
(``signup_user``, ``activity_user``). Each is read by the core itself, so ``cohorts()``, the
``Accumulator``/``merge`` path and the monthly ``CohortState`` agree exactly.
"""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import zoneinfo

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from helpers import assert_same_result, cohorts, ltrcore

TZ = "Europe/Berlin"
AS_OF = "2024-07-01"


def typed_orders(n_users: int = 40, seed: int = 7) -> pa.Table:
    """Orders with int64 ids (some null), naive local timestamps and float amounts, unsorted."""
    rng = np.random.default_rng(seed)
    users, ts, amount = [], [], []
    for u in range(n_users):
        first = dt.datetime(2024, 1 + u % 5, 1 + u % 27, 9 + u % 12, 30)
        for k in range(1 + int(rng.integers(0, 5))):
            users.append(u * 1_000_003 + 17)  # sparse ids, some large
            ts.append(first + dt.timedelta(days=int(rng.integers(0, 60)), minutes=k))
            amount.append(round(float(rng.normal(40, 30)), 2))
    for k in range(3):  # rows without a user
        users.append(None)
        ts.append(dt.datetime(2024, 2, 3 + k, 12))
        amount.append(5.0 + k)
    order = rng.permutation(len(users))
    return pa.table(
        {
            "user_id": pa.array([users[i] for i in order], pa.int64()),
            "ts": pa.array([ts[i] for i in order], pa.timestamp("us")),
            "amount": pa.array([amount[i] for i in order], pa.float64()),
        }
    )


def signups_of(orders: pa.Table, user_column: str = "user_id") -> pa.Table:
    ids = sorted({u for u in orders.column("user_id").to_pylist() if u is not None})
    return pa.table(
        {
            user_column: pa.array(ids, pa.int64()),
            "signup_ts": pa.array([dt.datetime(2024, 1 + i % 4, 1) for i in range(len(ids))], pa.timestamp("us")),
            "channel": pa.array(["web", "app", "shop"][i % 3] for i in range(len(ids))),
        }
    )


def activity_of(orders: pa.Table, user_column: str = "user_id") -> pa.Table:
    ids = sorted({u for u in orders.column("user_id").to_pylist() if u is not None})
    return pa.table(
        {
            user_column: pa.array([*ids, *ids[::2], None], pa.int64()),
            "ts": pa.array(
                [dt.datetime(2024, 2 + i % 4, 10) for i in range(len(ids) + len(ids[::2]))] + [dt.datetime(2024, 3, 1)],
                pa.timestamp("us"),
            ),
        }
    )


# ---------------------------------------------------------------------------------------------------
# float user ids (pandas' integers with nulls)
# ---------------------------------------------------------------------------------------------------
def test_pandas_float64_ids_with_nulls_give_exactly_the_int64_table():
    orders = typed_orders()
    as_pandas = orders.to_pandas()
    assert as_pandas["user_id"].dtype == np.float64  # what pandas does to integers with nulls
    expected, warned = cohorts(orders, tz=TZ, as_of=AS_OF)
    assert warned  # the null users are counted and warned about, as for the int64 table
    got, _ = cohorts(as_pandas, tz=TZ, as_of=AS_OF)
    assert_same_result(got, expected)
    assert got.reconciliation.filter(pl.col("reason") == "null_user")["rows"].item() == 3


def test_float_ids_from_parquet_and_polars_to_pandas_match_int64(tmp_path):
    orders = typed_orders(seed=11)
    path = tmp_path / "orders.parquet"
    pq.write_table(orders, path)
    from_parquet = pd.read_parquet(path)  # numpy dtypes: int64 with nulls becomes float64
    from_polars = pl.from_arrow(orders).to_pandas()
    assert from_parquet["user_id"].dtype == np.float64 and from_polars["user_id"].dtype == np.float64
    expected, _ = cohorts(orders, tz=TZ, as_of=AS_OF)
    for frame in (from_parquet, from_polars):
        got, _ = cohorts(frame, tz=TZ, as_of=AS_OF)
        assert_same_result(got, expected)


def test_float_ids_match_integer_ids_of_the_other_tables():
    """Float order ids meet int64 signup and activity ids: one family, the same users."""
    orders = typed_orders(seed=5)
    signups, activity = signups_of(orders), activity_of(orders)
    expected, _ = cohorts(orders, signups=signups, activity=activity, by="channel", tz=TZ, as_of=AS_OF)
    floats = orders.set_column(0, "user_id", orders.column("user_id").cast(pa.float64()))
    got, _ = cohorts(floats, signups=signups, activity=activity, by="channel", tz=TZ, as_of=AS_OF)
    assert_same_result(got, expected)
    nan_ids = pa.array([np.nan if u is None else float(u) for u in orders.column("user_id").to_pylist()], pa.float64())
    assert nan_ids.null_count == 0  # NaN, not null: still a null user
    got, _ = cohorts(orders.set_column(0, "user_id", nan_ids), signups=signups, activity=activity, by="channel", tz=TZ, as_of=AS_OF)
    assert_same_result(got, expected)


def test_float_ids_in_the_monthly_state_are_the_integer_ids():
    orders = typed_orders(seed=3)
    spec = ltrcore.CohortSpec(tz=TZ)
    from_ints = ltrcore.CohortState.build(spec, orders)
    from_floats = ltrcore.CohortState.build(spec, orders.to_pandas())
    assert from_floats == from_ints
    with pytest.warns(ltrcore.ExcludedRowsWarning):  # the null users, in both
        assert_same_result(from_floats.table(as_of=AS_OF), from_ints.table(as_of=AS_OF))


@pytest.mark.parametrize(
    "value, words",
    [
        (1.5, ["1.5", "not a whole number"]),
        (2.0**53 + 2, ["9007199254740994", "2^53"]),
        (float("inf"), ["inf", "2^53"]),
    ],
)
def test_a_float_id_that_is_not_one_integer_is_an_error_saying_how_to_fix_it(value, words):
    orders = typed_orders().to_pandas()
    orders.loc[4, "user_id"] = value
    with pytest.raises(ltrcore.InvalidArgumentError) as info:
        ltrcore.cohorts(orders, tz=TZ)
    message = str(info.value)
    assert '"user_id"' in message and "orders" in message, message
    assert 'dtype_backend="pyarrow"' in message and "Int64" in message, message
    for word in words:
        assert word in message, message


def test_the_largest_exact_float_id_is_accepted():
    big = pa.table({"user_id": pa.array([2**53, -(2**53)], pa.int64()), "ts": pa.array([dt.date(2024, 1, 2)] * 2), "amount": [1, 2]})
    as_float = big.set_column(0, "user_id", big.column("user_id").cast(pa.float64()))
    assert_same_result(cohorts(as_float, as_of=AS_OF)[0], cohorts(big, as_of=AS_OF)[0])


# ---------------------------------------------------------------------------------------------------
# timestamps stored as text
# ---------------------------------------------------------------------------------------------------
BERLIN = zoneinfo.ZoneInfo(TZ)


def instant_of(text: str) -> dt.datetime:
    """The reading the README documents: an offset (or Z) is an instant, no offset a Berlin wall-clock
    time, a date alone its Berlin midnight."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=BERLIN)
    return value.astimezone(dt.timezone.utc)


TEXTS = [
    "2024-01-31T23:30:00Z",  # 00:30 on 1 Feb in Berlin: February
    "2024-01-31T23:30:00",  # Berlin wall clock: January
    "2024-01-31 23:30:00",  # the same, with a space
    "2024-02-01",  # a date: February
    "2024-01-31T19:30:00-05:00",  # 01:30 on 1 Feb in Berlin: February
    "2024-03-31T02:30:00",  # a wall-clock time the DST change skips: still 31 March
    "2024-02-29T12:00:00.123456+01:00",
]


def text_orders(texts: list[str], dtype: pa.DataType = pa.string()) -> pa.Table:
    n = len(texts)
    return pa.table(
        {"user_id": pa.array(range(n), pa.int64()), "ts": pa.array(texts, dtype), "amount": pa.array([10.0 + i for i in range(n)])}
    )


@pytest.mark.parametrize("dtype", [pa.string(), pa.large_string(), pa.string_view()])
def test_iso_text_timestamps_read_as_the_typed_timestamps(dtype):
    text = text_orders(TEXTS, dtype)
    typed = text.set_column(1, "ts", pa.array([instant_of(t) for t in TEXTS], pa.timestamp("us", "UTC")))
    got, warned = cohorts(text, tz=TZ, as_of=AS_OF)
    assert not warned
    expected, _ = cohorts(typed, tz=TZ, as_of=AS_OF)
    assert_same_result(got, expected)
    sizes = dict(zip(*got.to_polars().filter(pl.col("age") == 0).select("cohort", "cohort_size").to_dict(as_series=False).values()))
    assert sizes == {dt.date(2024, 1, 1): 2, dt.date(2024, 2, 1): 4, dt.date(2024, 3, 1): 1}, sizes


def test_ts_format_reads_other_layouts():
    layout = "%d.%m.%Y %H:%M"
    stamps = [dt.datetime(2024, 1, 31, 23, 30), dt.datetime(2024, 2, 1, 0, 5), dt.datetime(2024, 4, 9, 7, 0)]
    text = text_orders([s.strftime(layout) for s in stamps])
    typed = text.set_column(1, "ts", pa.array(stamps, pa.timestamp("us")))  # naive: Berlin wall clock
    got, warned = cohorts(text, tz=TZ, as_of=AS_OF, ts_format=layout)
    assert not warned
    assert_same_result(got, cohorts(typed, tz=TZ, as_of=AS_OF)[0])
    # Without the layout these texts are not ISO-8601: every row is bad_ts, none silently dropped.
    plain, warned = cohorts(text, tz=TZ, as_of=AS_OF)
    assert warned
    assert plain.reconciliation.filter(pl.col("reason") == "bad_ts")["rows"].item() == 3


def test_ts_format_with_an_offset_and_a_date_only_layout():
    with_offset = text_orders(["31/01/2024 23:30 +0000", "31/01/2024 23:30 +0100"])
    got, _ = cohorts(with_offset, tz=TZ, as_of=AS_OF, ts_format="%d/%m/%Y %H:%M %z")
    months = got.to_polars().filter(pl.col("age") == 0).select("cohort", "cohort_size").rows()
    assert months == [(dt.date(2024, 1, 1), 1), (dt.date(2024, 2, 1), 1)], months
    dates = text_orders(["31.01.2024", "01.02.2024"])
    got, _ = cohorts(dates, tz=TZ, as_of=AS_OF, ts_format="%d.%m.%Y")
    months = got.to_polars().filter(pl.col("age") == 0).select("cohort", "cohort_size").rows()
    assert months == [(dt.date(2024, 1, 1), 1), (dt.date(2024, 2, 1), 1)], months


def test_a_bad_ts_format_is_refused_up_front():
    with pytest.raises(ltrcore.InvalidArgumentError, match="ts_format"):
        ltrcore.CohortSpec(ts_format="%J")
    with pytest.raises(ltrcore.InvalidArgumentError, match="ts_format"):
        ltrcore.cohorts(text_orders(["2024-01-01"]), ts_format="  ")


def bad_text_tables():
    orders = text_orders(["2024-01-05", "yesterday", None, "2024-02-30", "2024-01-06T10:00:00Z", ""])
    signups = pa.table({"user_id": pa.array(range(6), pa.int64()), "signup_ts": ["2024-01-01", "2024-01-02", "soon", None, "2024-01-03", "2024-01-04"]})
    activity = pa.table({"user_id": pa.array([0, 1, 4], pa.int64()), "ts": ["2024-02-01", "2024-02-xx", "2024-03-01T00:00:00+01:00"]})
    return orders, signups, activity


def test_bad_ts_rows_are_counted_in_every_table_and_sum_to_the_input():
    orders, signups, activity = bad_text_tables()
    table, warned = cohorts(orders, signups=signups, activity=activity, as_of=AS_OF)
    assert len(warned) == 1
    recon = {r: (n, a) for r, n, a in table.reconciliation.rows()}
    assert recon["bad_ts"] == (3, decimal.Decimal("39.0000")), recon  # "yesterday", 30 February, ""
    assert recon["null_ts"] == (1, decimal.Decimal("12.0000")), recon
    assert sum(n for n, _ in recon.values()) == orders.num_rows
    assert sum(a for _, a in recon.values()) == decimal.Decimal(sum(orders.column("amount").to_pylist())).quantize(decimal.Decimal("0.0001"))
    side = dict(table.signups_reconciliation.select("reason", "rows").rows())
    assert side["bad_ts"] == 1 and side["null_ts"] == 1 and sum(side.values()) == signups.num_rows, side
    side = dict(table.activity_reconciliation.select("reason", "rows").rows())
    assert side["bad_ts"] == 1 and sum(side.values()) == activity.num_rows, side


@pytest.mark.parametrize("table", ["orders", "signups", "activity"])
def test_strict_names_the_table_column_row_and_text(table):
    orders, signups, activity = bad_text_tables()
    # Only the table under test keeps its bad rows.
    if table != "orders":
        orders = orders.filter(pa.array([True, False, False, False, True, False]))
    if table != "signups":
        signups = signups.filter(pa.array([True, True, False, False, True, True]))
    if table != "activity":
        activity = activity.filter(pa.array([True, False, True]))
    with pytest.raises(ltrcore.BadRowsError) as info:
        ltrcore.cohorts(orders, signups=signups, activity=activity, as_of=AS_OF, strict=True)
    message = str(info.value)
    column, row, text = {"orders": ("ts", 1, "yesterday"), "signups": ("signup_ts", 2, "soon"), "activity": ("ts", 1, "2024-02-xx")}[table]
    assert f'column "{column}" in {table}' in message and f"row {row}" in message and f'"{text}"' in message, message


def test_text_timestamps_through_accumulator_merge_and_state():
    orders, signups, activity = bad_text_tables()
    expected, _ = cohorts(orders, signups=signups, activity=activity, as_of=AS_OF)
    spec = ltrcore.CohortSpec(cohort="signup")
    halves = []
    for keep in ([0, 1, 2], [3, 4, 5]):
        acc = ltrcore.Accumulator(spec)
        mask = lambda t: pc_isin(t, keep)
        acc.update(orders.filter(mask(orders))).update_signups(signups.filter(mask(signups))).update_activity(activity.filter(mask(activity)))
        halves.append(acc.finish())
    with pytest.warns(ltrcore.ExcludedRowsWarning):
        merged = ltrcore.merge(halves).finalize(as_of=AS_OF)
    assert_same_result(merged, expected)
    state = ltrcore.CohortState.build(spec, orders, signups, activity)
    with pytest.warns(ltrcore.ExcludedRowsWarning):
        assert_same_result(state.table(as_of=AS_OF), expected)


def pc_isin(table: pa.Table, users: list[int]) -> pa.Array:
    import pyarrow.compute as pc

    return pc.fill_null(pc.is_in(table.column("user_id"), pa.array(users, pa.int64())), False)


def test_csv_timestamps_iso_are_typed_by_the_reader_and_other_layouts_take_ts_format(tmp_path):
    """The CLI reads CSV with pyarrow: ISO timestamps arrive typed, other layouts as text."""
    iso, dotted = tmp_path / "iso.csv", tmp_path / "dotted.csv"
    iso.write_text("user_id,ts,amount\n1,2024-01-31 23:30:00,10\n2,2024-02-01 00:10:00,20\n")
    dotted.write_text("user_id,ts,amount\n1,31.01.2024 23:30,10\n2,01.02.2024 00:10,20\n")
    assert pa.types.is_timestamp(pacsv.read_csv(iso).schema.field("ts").type)
    assert pa.types.is_string(pacsv.read_csv(dotted).schema.field("ts").type)
    expected, _ = cohorts(str(iso), tz=TZ, as_of=AS_OF)
    got, _ = cohorts(str(dotted), tz=TZ, as_of=AS_OF, ts_format="%d.%m.%Y %H:%M")
    assert_same_result(got, expected)
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [sys.executable, "-m", "ltrcore.cli", "report", str(dotted), "--tz", TZ, "--as-of", AS_OF, "--ts-format", "%d.%m.%Y %H:%M", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    written = pl.read_csv(out)
    assert written.filter(pl.col("age") == 0).select("cohort", "cohort_size").rows() == [("2024-01-01", 1), ("2024-02-01", 1)]


# ---------------------------------------------------------------------------------------------------
# tables that name their users differently
# ---------------------------------------------------------------------------------------------------
def test_signup_user_and_activity_user_name_the_other_tables_columns():
    orders = typed_orders(seed=9)
    signups, activity = signups_of(orders), activity_of(orders)
    expected, _ = cohorts(orders, signups=signups, activity=activity, by="channel", tz=TZ, as_of=AS_OF)
    renamed_signups, renamed_activity = signups_of(orders, "member_id"), activity_of(orders, "visitor")
    kw = dict(signup_user="member_id", activity_user="visitor", by="channel", tz=TZ)
    got, _ = cohorts(orders, signups=renamed_signups, activity=renamed_activity, as_of=AS_OF, **kw)
    assert_same_result(got, expected)
    spec = ltrcore.CohortSpec(cohort="signup", **kw)
    acc = ltrcore.Accumulator(spec).update(orders).update_signups(renamed_signups).update_activity(renamed_activity)
    state = ltrcore.CohortState.build(spec, orders, renamed_signups, renamed_activity)
    with pytest.warns(ltrcore.ExcludedRowsWarning):  # the null users
        assert_same_result(acc.finish().finalize(as_of=AS_OF), expected)
    with pytest.warns(ltrcore.ExcludedRowsWarning):
        assert_same_result(state.table(as_of=AS_OF), expected)
    # The defaults are `user`: a spec that does not use the new settings keeps its fingerprint.
    assert ltrcore.CohortSpec(signup_user="user_id").fingerprint == ltrcore.CohortSpec().fingerprint
    assert spec.fingerprint != ltrcore.CohortSpec(cohort="signup", by="channel", tz=TZ).fingerprint


def test_a_missing_user_column_is_named_as_the_user_wrote_it():
    orders = typed_orders(seed=9)
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        ltrcore.cohorts(orders, signups=signups_of(orders), signup_user="member_id", by="channel")
    message = str(info.value)
    assert '"member_id"' in message and "signups" in message and "__ltrcore" not in message, message
    with pytest.raises(ltrcore.ColumnNotFoundError) as info:
        ltrcore.cohorts(orders, activity=activity_of(orders), activity_user="visitor")
    assert '"visitor"' in str(info.value) and "activity" in str(info.value)


def internal_column_cases():
    orders = typed_orders(seed=2)
    orders = orders.append_column("channel", pa.array(["web"] * orders.num_rows))
    signups = signups_of(orders)
    no_ts = signups.drop_columns(["signup_ts"])
    yield "signups without signup_ts", lambda: ltrcore.cohorts(orders, signups=no_ts, by="channel")
    yield "orders without ts (first purchase, by)", lambda: ltrcore.cohorts(orders.drop_columns(["ts"]), by="channel")
    yield "orders without the by column", lambda: ltrcore.cohorts(orders.drop_columns(["channel"]), by="channel")
    yield "signups without the by column", lambda: ltrcore.cohorts(orders, signups=signups.drop_columns(["channel"]), by="channel")
    yield "bad signup dtype", lambda: ltrcore.cohorts(orders, signups=signups.set_column(1, "signup_ts", pa.array([1.5] * signups.num_rows)), by="channel")
    spec = ltrcore.CohortSpec(cohort="signup", by="channel")
    yield "state: signups without signup_ts", lambda: ltrcore.CohortState.build(spec, orders, no_ts)
    yield "accumulator: signups without signup_ts", lambda: ltrcore.Accumulator(spec).update(orders).update_signups(no_ts).finish()


@pytest.mark.parametrize("case", [name for name, _ in internal_column_cases()])
def test_the_internal_segment_column_is_never_in_an_error_message(case):
    run = dict(internal_column_cases())[case]
    with pytest.raises(ltrcore.LtrcoreError) as info:
        run()
    assert "__ltrcore" not in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------------
# per-order cost: an exact profit per cell
# ---------------------------------------------------------------------------------------------------
def D(text: str) -> decimal.Decimal:
    return decimal.Decimal(text)


def costed_orders() -> pa.Table:
    """The hand-worked ledger (month cohorts, UTC):

    user 1: 5 Jan 100.00 cost 60.5 -> 39.50;  6 Feb 50.00 cost 30 -> 20.00
    user 2: 9 Jan 80.00 cost 50 -> 30.00;    20 Jan refund -20.00, goods back (cost -12) -> -8.00
    user 3: 3 Feb 30.00 cost 18 -> 12.00
    Jan cohort: age 0 profit 39.50 + 30.00 - 8.00 = 61.50, age 1 20.00, age 2 0. Feb cohort: age 0 12.00.
    """
    return pa.table(
        {
            "user_id": pa.array([1, 1, 2, 2, 3], pa.int64()),
            "ts": pa.array([dt.datetime(2024, 1, 5), dt.datetime(2024, 2, 6), dt.datetime(2024, 1, 9), dt.datetime(2024, 1, 20), dt.datetime(2024, 2, 3)], pa.timestamp("us")),
            "amount": pa.array([D("100.00"), D("50.00"), D("80.00"), D("-20.00"), D("30.00")], pa.decimal128(12, 2)),
            "cogs": pa.array([D("60.5"), D("30"), D("50"), D("-12"), D("18")], pa.decimal128(12, 1)),
        }
    )


def profit_by_cell(table) -> dict:
    frame = table._long_with_exact_profit().filter(pl.col("complete"))
    return {(c, a): p for c, a, p in frame.select("cohort", "age", "profit_exact").rows()}


def test_cost_gives_each_cell_its_exact_profit():
    table, _ = cohorts(costed_orders(), cost="cogs", as_of="2024-04-01")
    jan, feb = dt.date(2024, 1, 1), dt.date(2024, 2, 1)
    assert profit_by_cell(table) == {(jan, 0): D("61.50"), (jan, 1): D("20.00"), (jan, 2): D("0.00"), (feb, 0): D("12.00"), (feb, 1): D("0.00")}
    floats = table.to_polars().filter(pl.col("complete")).get_column("profit").to_list()
    assert floats == [61.5, 20.0, 0.0, 12.0, 0.0]
    # Revenue is untouched by the cost column.
    plain, _ = cohorts(costed_orders(), as_of="2024-04-01")
    assert plain.to_polars().drop("profit").equals(table.to_polars().drop("profit"))


def test_without_cost_profit_is_null_not_zero():
    table, _ = cohorts(costed_orders(), as_of="2024-04-01")
    assert table.to_polars().get_column("profit").null_count() == table.to_polars().height
    assert table._long_with_exact_profit().get_column("profit_exact").null_count() == table.to_polars().height


def test_a_used_order_without_a_cost_is_an_error_naming_the_column_and_row():
    orders = costed_orders()
    orders = orders.set_column(3, "cogs", pa.array([D("60.5"), None, D("50"), D("-12"), D("18")], pa.decimal128(12, 1)))
    with pytest.raises(ltrcore.InvalidArgumentError) as info:
        ltrcore.cohorts(orders, cost="cogs")
    message = str(info.value)
    assert '"cogs"' in message and "orders" in message and "row 1" in message and "null" in message, message
    # A row excluded anyway (no user) needs no cost: it is counted under its own reason.
    orders = orders.set_column(0, "user_id", pa.array([1, None, 2, 2, 3], pa.int64()))
    table, warned = cohorts(orders, cost="cogs", as_of="2024-04-01")
    assert warned and dict(table.reconciliation.select("reason", "rows").rows())["null_user"] == 1


def test_a_cost_finer_than_the_amount_is_refused():
    orders = costed_orders()
    orders = orders.set_column(3, "cogs", orders.column("cogs").cast(pa.decimal128(12, 3)))
    with pytest.raises(ltrcore.InvalidArgumentError, match="cogs.*3 decimal places.*2"):
        ltrcore.cohorts(orders, cost="cogs")


def random_costed(seed: int) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    orders = typed_orders(n_users=60, seed=seed)
    orders = orders.filter(pc_not_null(orders))
    amount = orders.column("amount").to_numpy()
    cost = np.round(amount * rng.uniform(0.2, 0.9, len(amount)), 3)  # floats: rounded at the amount's scale
    orders = orders.append_column("cost", pa.array(cost, pa.float64()))
    return orders, signups_of(orders)


def pc_not_null(table: pa.Table) -> pa.Array:
    import pyarrow.compute as pc

    return pc.is_valid(table.column("user_id"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_profit_matches_the_reference(seed):
    from helpers import assert_matches_reference
    from reference import reference_cohorts

    orders, signups = random_costed(seed)
    for kw in (dict(), dict(signups=signups, by="channel")):
        kw = dict(kw, cost="cost", tz=TZ, as_of=AS_OF, horizon=4)
        table, _ = cohorts(orders, **kw)
        ref = reference_cohorts(orders, **kw)
        assert ref.table.get_column("profit").drop_nulls().len() > 0
        assert_matches_reference(table, ref, orders, "amount", 4, ["channel"] if "by" in kw else [])


def test_profit_through_accumulator_merge_shared_grid_and_state():
    orders, signups = random_costed(4)
    kw = dict(cost="cost", by="channel", tz=TZ)
    expected, _ = cohorts(orders, signups=signups, as_of=AS_OF, **kw)
    assert expected.to_polars().get_column("profit").drop_nulls().len() > 0
    # The grid kept once and shared by the workers adds profit the same way.
    shared, _ = cohorts(orders, signups=signups, as_of=AS_OF, threads=2, _chunk_rows=7, _cells_budget=0, **kw)
    assert_same_result(shared, expected)
    spec = ltrcore.CohortSpec(cohort="signup", **kw)
    parts = []
    for odd in (False, True):
        pick = lambda t: t.filter(pa.array([(u % 2 == 1) == odd for u in t.column("user_id").to_pylist()]))
        parts.append(ltrcore.Accumulator(spec).update(pick(orders)).update_signups(pick(signups)).finish())
    merged = ltrcore.merge(parts)
    assert_same_result(merged.finalize(as_of=AS_OF), expected)
    assert_same_result(ltrcore.Partial.from_arrow(merged.to_arrow()).finalize(as_of=AS_OF), expected)
    # Month by month into the state, with orders waiting for their signup in between.
    early = pa.array([t < dt.datetime(2024, 3, 1) for t in orders.column("ts").to_pylist()])
    import pyarrow.compute as pc

    state = ltrcore.CohortState.build(spec, orders.filter(early), signups.filter(pc.less(signups.column("signup_ts"), pa.scalar(dt.datetime(2024, 2, 1)))), through="2024-02-29")
    assert state.waiting_rows > 0
    state = state.update(orders.filter(pc.invert(early)), signups.filter(pc.greater_equal(signups.column("signup_ts"), pa.scalar(dt.datetime(2024, 2, 1)))), late="apply")
    assert_same_result(state.table(as_of=AS_OF), expected)


def test_the_cli_takes_cost(tmp_path):
    path = tmp_path / "orders.parquet"
    pq.write_table(costed_orders(), path)
    out = tmp_path / "out.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "ltrcore.cli", "report", str(path), "--cost", "cogs", "--as-of", "2024-04-01", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(out).filter(pl.col("complete")).get_column("profit").to_list() == [61.5, 20.0, 0.0, 12.0, 0.0]


def test_float32_ids_are_exact_only_up_to_2_to_the_24():
    ok = pa.table({"user_id": pa.array([2**24, 7], pa.float32()), "ts": pa.array([dt.date(2024, 1, 2)] * 2), "amount": [1, 2]})
    ints = ok.set_column(0, "user_id", pa.array([2**24, 7], pa.int64()))
    assert_same_result(cohorts(ok, as_of=AS_OF)[0], cohorts(ints, as_of=AS_OF)[0])
    beyond = ok.set_column(0, "user_id", pa.array([float(2**24 + 2), 7.0], pa.float32()))
    with pytest.raises(ltrcore.InvalidArgumentError, match=r"2\^24"):
        ltrcore.cohorts(beyond)
