"""The monthly state: ``CohortState`` build, update, table, save and load.

The property at the heart of it: cut random data at period boundaries, build a state from the first
periods and update it with the others (in one update, or chained period by period, with a save and
load in between), and the table equals ``ltrcore.cohorts`` over all the rows, reconciliations
included. Then the refusals: late rows, cohorts that late rows would move, and files that are not
states.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from helpers import assert_same_result, cohorts, ltrcore
from reference import OUT_OF_RANGE, period_of_date, ts_values
from strategies import cases
from test_partial import _any_warnings, spec_of


def periods_of(table: pa.Table, ts: str, tz: str, period: str) -> list[int | None]:
    """Each row's period as the engine sees it (None: a null or out-of-range timestamp)."""
    _, dates = ts_values(table.column(ts), tz)
    return [None if d is None or d is OUT_OF_RANGE else period_of_date(d, period) for d in dates]


def take(table: pa.Table, rows: list[int]) -> pa.Table:
    # By slices, not a filter: pyarrow cannot filter every dtype the strategies make (string_view).
    return pa.concat_tables([table.slice(0, 0), *(table.slice(r, 1) for r in rows)]).combine_chunks()


def chunks_by_period(case: dict, cuts: list[int], rnd: random.Random) -> list[dict[str, pa.Table]]:
    """The case's tables in ``len(cuts) + 1`` chunks: chunk ``k`` holds the rows whose period is at
    most ``cuts[k]`` and above the cut before; rows without a period go to a random chunk."""
    kw = case["kw"]
    tables = {"orders": (case["orders"], kw["ts"])}
    if "signups" in kw:
        tables["signups"] = (kw["signups"], kw.get("signup_ts", "signup_ts"))
    if "activity" in kw:
        tables["activity"] = (kw["activity"], kw.get("activity_ts") or kw["ts"])
    n = len(cuts) + 1
    out: list[dict[str, list[int]]] = [{name: [] for name in tables} for _ in range(n)]
    for name, (table, ts) in tables.items():
        for row, p in enumerate(periods_of(table, ts, kw["tz"], kw["period"])):
            k = rnd.randrange(n) if p is None else sum(1 for c in cuts if p > c)
            out[k][name].append(row)
    return [{name: take(tables[name][0], rows) for name, rows in chunk.items()} for chunk in out]


def distinct_periods(case: dict) -> list[int]:
    kw = case["kw"]
    found = set(periods_of(case["orders"], kw["ts"], kw["tz"], kw["period"]))
    for side, ts in (("signups", kw.get("signup_ts", "signup_ts")), ("activity", kw.get("activity_ts") or kw["ts"])):
        if side in kw:
            found |= set(periods_of(kw[side], ts, kw["tz"], kw["period"]))
    return sorted(p for p in found if p is not None)


def ingest(state: Any, chunk: dict[str, pa.Table], first: bool, rnd: random.Random) -> Any:
    """Builds (``first``) or updates with one chunk; empty side tables are given or not at random."""
    orders = chunk["orders"]
    side = {name: t for name, t in chunk.items() if name != "orders" and (t.num_rows or first or rnd.random() < 0.5)}
    if first:
        return ltrcore.CohortState.build(state, orders, side.get("signups"), side.get("activity"))
    return state.update(orders if orders.num_rows or rnd.random() < 0.5 else None, side.get("signups"), side.get("activity"))


def check_state(case: dict, seed: int, mode: str, tmp: Path | None = None) -> None:
    kw = case["kw"]
    rnd = random.Random(seed)
    periods = distinct_periods(case)
    if mode == "last":  # build from all periods but the last, update with the last
        cuts = periods[-2:-1] if len(periods) > 1 else [periods[0] - 1] if periods else [0]
    else:  # chained: every period its own update, or a few together
        cuts = [p for p in periods[:-1] if rnd.random() < 0.8]
    chunks = chunks_by_period(case, cuts, rnd)
    spec = spec_of(kw)
    with _any_warnings():
        state = ingest(spec, chunks[0], True, rnd)
        for chunk in chunks[1:]:
            if tmp is not None:
                state.save(tmp)
                state = ltrcore.CohortState.load(tmp)
            if any(t.num_rows for t in chunk.values()):
                state = ingest(state, chunk, False, rnd)
        table = state.table(as_of=kw.get("as_of"), since=kw.get("since"))
    whole, _ = cohorts(case["orders"], **kw)
    assert_same_result(table, whole, check_dtypes=False)
    assert_frame_equal(table.cohort_stats(), whole.cohort_stats(), check_exact=True, check_dtypes=False)
    if tmp is not None:
        state.save(tmp)
        again = ltrcore.CohortState.load(tmp)
        assert again == state
        with _any_warnings():
            assert_same_result(again.table(as_of=kw.get("as_of"), since=kw.get("since")), table)


@settings(max_examples=80)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s)), seed=st.integers(0, 2**32))
def test_build_then_update_with_the_last_period_equals_cohorts(case: dict, seed: int) -> None:
    check_state(case, seed, "last")


@settings(max_examples=80)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, activity=True)), seed=st.integers(0, 2**32))
def test_updates_chained_period_by_period_equal_cohorts(case: dict, seed: int) -> None:
    check_state(case, seed, "chained")


@settings(max_examples=25)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s)), seed=st.integers(0, 2**32))
def test_chained_updates_with_save_and_load_between_equal_cohorts(case: dict, seed: int, tmp_path_factory: Any) -> None:
    check_state(case, seed, "chained", tmp_path_factory.mktemp("state") / "state.parquet")


@settings(max_examples=10)
@given(case=st.booleans().flatmap(lambda s: cases(signups=s, min_rows=200, max_rows=600, max_users=150)),
       seed=st.integers(0, 2**32))  # fmt: skip
def test_many_users_chained(case: dict, seed: int) -> None:
    check_state(case, seed, "chained")


# --- examples -------------------------------------------------------------------------------------
UTC = dt.timezone.utc


def month(m: int, day: int = 5) -> dt.datetime:
    """A time in month ``m`` (1 = January 2024)."""
    return dt.datetime(2024 + (m - 1) // 12, (m - 1) % 12 + 1, day, 12, tzinfo=UTC)


def orders_of(rows: list[tuple[Any, int, float]], day: int = 5) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "ts": [month(r[1], day) for r in rows], "amount": [r[2] for r in rows]},
        schema={"user_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "amount": pl.Float64},
    )


HISTORY = [(1, 1, 50.0), (1, 2, 20.0), (2, 1, 30.0), (3, 2, 40.0), (3, 3, -10.0), (4, 3, 0.0), (5, 3, -5.0)]


def test_a_month_is_added_and_the_watermark_moves() -> None:
    spec = ltrcore.CohortSpec(horizon=6)
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    assert state.watermark == "2024-03-01"
    assert (state.users, state.waiting_rows) == (3, 2)  # users 4 and 5 have not paid: their rows wait
    new = [(1, 4, 10.0), (5, 4, 25.0), (6, 4, 12.0)]
    state.update(orders_of(new))
    assert state.watermark == "2024-04-01"
    assert (state.users, state.waiting_rows) == (5, 1)  # user 5 paid: the refund moved to before_cohort
    whole, _ = cohorts(orders_of(HISTORY + new), horizon=6)
    assert_same_result(state.table(), whole)
    recon = dict(zip(whole.reconciliation["reason"], whole.reconciliation["rows"]))
    assert recon["before_cohort"] == 1 and recon["never_paid"] == 1


def test_through_sets_the_watermark_and_refuses_rows_after_it() -> None:
    spec = ltrcore.CohortSpec()
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY), through="2024-04-30")
    assert state.watermark == "2024-04-01"
    with pytest.raises(ltrcore.InvalidArgumentError, match="after through"):
        ltrcore.CohortState.build(spec, orders_of(HISTORY), through="2024-02-10")


def test_late_rows_are_refused_and_the_state_is_unchanged() -> None:
    spec = ltrcore.CohortSpec(horizon=6)
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    before = state.table().to_polars()
    saved = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    late = [(7, 4, 10.0), (2, 2, -30.0), (3, 1, 5.0)]  # one new row, two late ones
    with pytest.raises(ltrcore.LateRowsError) as err:
        state.update(orders_of(late))
    message = str(err.value)
    assert "2 row(s) fall at or before the state's watermark (the period starting 2024-03-01)" in message
    assert "the first is orders row 1, user 2, in the period starting 2024-02-01" in message
    assert "Nothing was changed" in message
    assert state == saved and state.watermark == "2024-03-01"
    assert state.table().to_polars().equals(before)


def test_late_refunds_and_repeat_orders_apply_exactly() -> None:
    spec = ltrcore.CohortSpec(horizon=6)
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    # A late refund, a late repeat order, a late first order of a user never placed in a cohort,
    # and a month of new orders.
    update = [(2, 2, -30.0), (1, 1, 15.0), (4, 2, 8.0), (8, 4, 60.0), (1, 4, 20.0)]
    state.update(orders_of(update), late="apply")
    whole, _ = cohorts(orders_of(HISTORY + update), horizon=6)
    assert_same_result(state.table(), whole)
    assert state.watermark == "2024-04-01"


def test_a_late_row_that_would_move_a_cohort_is_refused_naming_its_user() -> None:
    spec = ltrcore.CohortSpec(horizon=6)
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    saved = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    # User 3's first purchase was in month 2; a late paying order in month 1 would move the cohort.
    with pytest.raises(ltrcore.LateRowsError, match=r"1 user\(s\) have late rows that would change their cohort: user 3"):
        state.update(orders_of([(3, 1, 9.0), (9, 4, 1.0)]), late="apply")
    assert state == saved


def test_late_signups_with_another_segment_are_refused() -> None:
    spec = ltrcore.CohortSpec(cohort="signup", by="channel")
    signups = pl.DataFrame(
        {"user_id": [1, 2], "signup_ts": [month(1, 10), month(2)], "channel": ["ads", "seo"]},
        schema={"user_id": pl.Int64, "signup_ts": pl.Datetime("us", "UTC"), "channel": pl.String},
    )
    state = ltrcore.CohortState.build(spec, orders_of([(1, 1, 5.0), (2, 2, 7.0)]), signups)
    # The same period, another segment: it could be the earlier row, so the cohort could move.
    moved = signups.head(1).with_columns(pl.lit(month(1, 2)).dt.cast_time_unit("us").alias("signup_ts"), pl.lit("tv").alias("channel"))
    with pytest.raises(ltrcore.LateRowsError, match="user 1"):
        state.update(signups=moved, late="apply")
    # The same segment: a duplicate, whichever came first.
    same = moved.with_columns(pl.lit("ads").alias("channel"))
    state.update(signups=same, late="apply")
    whole, _ = cohorts(orders_of([(1, 1, 5.0), (2, 2, 7.0)]), signups=pl.concat([signups, same]), by="channel")
    assert_same_result(state.table(), whole)


def test_string_ids_and_signup_cohorts_with_activity() -> None:
    rnd = random.Random(5)
    users = [f"u{i:03}" for i in range(60)]
    orders = pl.DataFrame(
        {
            "user_id": [rnd.choice(users) for _ in range(600)],
            "ts": [month(rnd.randint(1, 9), rnd.randint(1, 28)) for _ in range(600)],
            "amount": [rnd.choice([-5.0, 0.0, 10.0, 25.5]) for _ in range(600)],
        }
    )
    signups = pl.DataFrame({"user_id": users[:50], "signup_ts": [month(rnd.randint(1, 9)) for _ in range(50)], "channel": [rnd.choice("ab") for _ in range(50)]})
    activity = pl.DataFrame({"user_id": [rnd.choice(users) for _ in range(300)], "ts": [month(rnd.randint(1, 9), rnd.randint(1, 28)) for _ in range(300)]})
    spec = ltrcore.CohortSpec(cohort="signup", by="channel", activity_ts="ts")
    before = lambda df, col="ts": df.filter(pl.col(col) < month(7, 1))  # noqa: E731
    after = lambda df, col="ts": df.filter(pl.col(col) >= month(7, 1))  # noqa: E731
    state = ltrcore.CohortState.build(spec, before(orders), before(signups, "signup_ts"), before(activity))
    state.update(after(orders), after(signups, "signup_ts"), after(activity))
    whole, _ = cohorts(orders, signups=signups, activity=activity, activity_ts="ts", by="channel")
    assert_same_result(state.table(), whole)
    assert_same_result(state.table(as_of="2024-06-01", since="2024-02-01"), cohorts(orders, signups=signups, activity=activity, activity_ts="ts", by="channel", as_of="2024-06-01", since="2024-02-01")[0])


def test_strict_bad_rows_and_interrupts_leave_the_state_as_it_was() -> None:
    spec = ltrcore.CohortSpec(horizon=6)
    state = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    saved = ltrcore.CohortState.build(spec, orders_of(HISTORY))
    bad = orders_of([(7, 4, 10.0)]).vstack(pl.DataFrame({"user_id": [None], "ts": [month(4)], "amount": [1.0]}, schema=orders_of([]).schema))
    with pytest.raises(ltrcore.BadRowsError, match="user_id"):
        state.update(bad, strict=True)
    assert state == saved

    def interrupt(phase: str, rows: int) -> None:
        if phase == "state: users":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        state.update(orders_of([(7, 4, 10.0)]), progress=interrupt)
    assert state == saved
    state.update(orders_of([(7, 4, 10.0)]))  # and the next call works
    assert state.users == saved.users + 1


def test_threads_and_batches_do_not_change_the_state() -> None:
    rnd = random.Random(3)
    rows = [(rnd.randrange(2_000), rnd.randint(1, 6), rnd.choice([-5.0, 0.0, 12.5, 40.0])) for _ in range(20_000)]
    orders = orders_of(rows).to_arrow()
    spec = ltrcore.CohortSpec(horizon=6)
    one = ltrcore.CohortState.build(spec, orders, threads=1)
    two = ltrcore.CohortState.build(spec, pa.Table.from_batches(orders.to_batches(max_chunksize=777)), threads=2)
    assert one == two
    assert_same_result(one.table(), cohorts(orders, horizon=6)[0])


def test_update_refuses_mismatched_inputs() -> None:
    state = ltrcore.CohortState.build(ltrcore.CohortSpec(), orders_of(HISTORY))
    with pytest.raises(ltrcore.DtypeError, match="the same kind of user id as in the state"):
        state.update(orders_of([]).with_columns(pl.col("user_id").cast(pl.String)))
    with pytest.raises(ltrcore.InvalidArgumentError, match="first_purchase"):
        state.update(signups=pl.DataFrame({"user_id": [1], "signup_ts": [month(5)]}))
    with pytest.raises(ltrcore.InvalidArgumentError, match="late must be"):
        state.update(orders_of([]), late="skip")
    with pytest.raises(ltrcore.InvalidArgumentError, match="needs orders"):
        state.update()


# --- files ----------------------------------------------------------------------------------------
def saved_state(tmp_path: Path, by: str | None = "channel") -> tuple[Any, Path]:
    rows = [(u, m, float(a)) for u, m, a in [(1, 1, 5), (2, 1, 8), (2, 2, -3), (3, 2, 4), (4, 3, 0)]]
    orders = orders_of(rows).with_columns(pl.Series("channel", ["a", "b", "b", "a", "c"]))
    state = ltrcore.CohortState.build(ltrcore.CohortSpec(by=by), orders)
    path = tmp_path / "state.parquet"
    state.save(path)
    return state, path


def test_the_file_is_open_parquet_one_row_per_user(tmp_path: Path) -> None:
    state, path = saved_state(tmp_path)
    table = pl.read_parquet(path)
    users = table.filter(pl.col("record") == "user")
    assert users.height == state.users == 3
    assert set(table["record"].unique()) >= {"user", "waiting", "segment", "cell", "read"}
    assert sorted(os.listdir(tmp_path)) == ["state.parquet"]  # no temporary file left behind
    assert ltrcore.CohortState.load(path) == state


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "not a readable ltrcore state"),
        ("empty", "not a readable ltrcore state"),
        ("not a state", "not an ltrcore state"),
        ("version", "format version 99"),
        ("metadata", "does not match its digest"),
        ("counts", "do not add up"),
        ("missing", "no such file"),
    ],
)
def test_load_refuses_files_that_are_not_good_states(tmp_path: Path, damage: str, message: str) -> None:
    state, path = saved_state(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a state":
        pq.write_table(pa.table({"user_id": [1, 2]}), path)
    elif damage in ("version", "metadata", "counts"):
        table = pq.read_table(path)
        meta = dict(table.schema.metadata)
        if damage == "version":
            meta[b"ltrcore.state"] = b"99"
        elif damage == "metadata":
            meta[b"ltrcore.state.info"] = meta[b"ltrcore.state.info"].replace(b'"watermark": ', b'"watermark": 1')
        else:  # a user's paid ages changed: the partial's counts no longer match the users
            users = table.column("paid_ages").to_pylist()
            i = next(k for k, v in enumerate(users) if v is not None)
            users[i] = bytes([users[i][0] ^ 0b10]) + users[i][1:]
            table = table.set_column(table.schema.get_field_index("paid_ages"), "paid_ages", pa.array(users, table.schema.field("paid_ages").type))
        _rewrite_with_groups(table.replace_schema_metadata(meta), path, json.loads(meta[b"ltrcore.state.info"]))
    elif damage == "missing":
        path.unlink()
    with pytest.raises(ltrcore.InvalidArgumentError, match=message) as err:
        ltrcore.CohortState.load(path)
    assert str(path) in str(err.value)


def _rewrite_with_groups(table: pa.Table, path: Path, info: dict) -> None:
    """Writes the file again with the row groups its metadata names (one per part here)."""
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for part in ("partial", "segment", "user", "waiting"):
            n = info["rows"].get(part, 0)
            if n:
                writer.write_table(table.slice(start, n))
            start += n


def test_every_flipped_byte_is_refused_or_harmless(tmp_path: Path) -> None:
    """A flipped byte anywhere in the file: load refuses it with InvalidArgumentError, or gives the
    same state (a byte parquet does not read, or statistics). Never another state."""
    state, path = saved_state(tmp_path)
    data = path.read_bytes()
    refused = 0
    for i in range(0, len(data), max(1, len(data) // 400)):
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            loaded = ltrcore.CohortState.load(path)
        except ltrcore.InvalidArgumentError:
            refused += 1
            continue
        assert loaded == state, f"byte {i} changed the state silently"
    assert refused > 0


def test_a_crash_during_save_leaves_the_previous_state_readable(tmp_path: Path) -> None:
    old, path = saved_state(tmp_path, by=None)
    expected = old.table().to_polars()
    child = textwrap.dedent(
        f"""
        import sys, time
        import polars as pl, ltrcore
        n = 3_000_000
        orders = pl.DataFrame({{"user_id": pl.int_range(n, eager=True), "ts": pl.datetime_range(
            pl.datetime(2024, 1, 1), pl.datetime(2024, 12, 31), interval="10s", eager=True, time_zone="UTC").head(n),
            "amount": pl.Series([10.0]).extend_constant(10.0, n - 1)}})
        state = ltrcore.CohortState.build(ltrcore.CohortSpec(), orders)
        print("saving", flush=True)
        while True:
            state.save({str(path)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        # Wait until a temporary file is being written, then kill the process in the middle of it.
        while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.stat().st_size > 0]:
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    survivor = ltrcore.CohortState.load(path)
    # Either the old state, or (if the kill landed after the rename) the complete new one.
    if survivor.users == old.users:
        assert survivor == old
        assert survivor.table().to_polars().equals(expected)
    else:
        assert survivor.users == 3_000_000
