"""``ltrcore.spark`` on a real local Spark: the same tables as ``ltrcore.cohorts``, whatever the
partitioning, checked with ``ltrcore.testing.check_adapter`` (negative control included)."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pytest

import ltrcore.testing
from helpers import ltrcore
from spark_session import SPARK_MARKS

# The data has bad rows on purpose (null users and amounts): the warning is expected.
pytestmark = [*SPARK_MARKS, pytest.mark.filterwarnings("ignore::ltrcore.ExcludedRowsWarning")]

DAY_US = 86_400_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01


def retail(n_users: int = 120, seed: int = 3, *, segments: bool = False) -> dict[str, pa.Table]:
    """Orders over 14 months (refunds and zero amounts included), signups for most users and some
    strangers, activity for some, and a channel per user."""
    rnd = random.Random(seed)
    orders: dict[str, list[Any]] = {"user_id": [], "ts": [], "amount": [], "channel": []}
    signups: dict[str, list[Any]] = {"user_id": [], "signup_ts": [], "channel": []}
    activity: dict[str, list[Any]] = {"user_id": [], "ts": []}
    for u in range(n_users):
        uid = 1_000_003 * u + 17
        channel = rnd.choice(["ads", "seo", None, "email"])
        joined = START_US + rnd.randrange(300) * DAY_US + rnd.randrange(DAY_US)
        if rnd.random() < 0.9:
            signups["user_id"].append(uid)
            signups["signup_ts"].append(joined)
            signups["channel"].append(channel)
        for _ in range(rnd.randrange(0, 8)):
            orders["user_id"].append(uid if rnd.random() > 0.02 else None)
            orders["ts"].append(joined + rnd.randrange(0, 200) * DAY_US)
            orders["amount"].append(rnd.choice(["19.99", "5.00", "0", "-5.00", "120.50", None]))
            orders["channel"].append(channel)
        for _ in range(rnd.randrange(0, 4)):
            activity["user_id"].append(uid)
            activity["ts"].append(joined + rnd.randrange(0, 300) * DAY_US)
    ts = pa.timestamp("us", "UTC")
    return {
        "orders": pa.table({
            "user_id": pa.array(orders["user_id"], pa.int64()),
            "ts": pa.array(orders["ts"], ts),
            "amount": pa.array([None if a is None else decimal.Decimal(a) for a in orders["amount"]], pa.decimal128(10, 2)),
            "channel": pa.array(orders["channel"], pa.string()),
        }),
        "signups": pa.table({
            "user_id": pa.array(signups["user_id"], pa.int64()),
            "signup_ts": pa.array(signups["signup_ts"], ts),
            "channel": pa.array(signups["channel"], pa.string()),
        }),
        "activity": pa.table({"user_id": pa.array(activity["user_id"], pa.int64()), "ts": pa.array(activity["ts"], ts)}),
    }  # fmt: skip


def spark_runner(spark: Any) -> Any:
    """``check_adapter``'s ``run`` for ``ltrcore.spark.cohorts``: Arrow tables into Spark first."""
    import ltrcore.spark

    def run(orders: pa.Table, *, signups: Any, activity: Any, partitions: int, by_user: bool, **options: Any) -> Any:
        df = lambda t: None if t is None else spark.createDataFrame(t)  # noqa: E731
        return ltrcore.spark.cohorts(
            df(orders), df(signups), df(activity), partitions=partitions, _by_user=by_user, **options
        )

    return run


def test_first_purchase_cohorts_match_local_for_1_3_7_partitions(spark: Any) -> None:
    data = retail()
    ltrcore.testing.check_adapter(spark_runner(spark), data["orders"], horizon=6)


def test_signup_cohorts_with_segments_and_activity(spark: Any) -> None:
    data = retail(seed=5)
    ltrcore.testing.check_adapter(
        spark_runner(spark), data["orders"], signups=data["signups"], activity=data["activity"],
        by="channel", horizon=6, as_of="2024-11-15", partitions=(1, 4),
    )  # fmt: skip


def test_first_purchase_with_segments_activity_and_since(spark: Any) -> None:
    data = retail(seed=7)
    ltrcore.testing.check_adapter(
        spark_runner(spark), data["orders"], activity=data["activity"], by=["channel"], horizon=4,
        since=dt.date(2024, 3, 1), min_amount=5, partitions=(2, 5),
    )  # fmt: skip


def test_inputs_as_people_have_them(spark: Any) -> None:
    """Issue 14: float user ids, text timestamps, differently named user columns and a cost column
    go through Spark to the same table as ``cohorts()``."""
    import pyarrow.compute as pc

    data = retail(seed=11)
    orders = data["orders"]
    amount = orders.column("amount")
    orders = orders.append_column("cogs", pc.multiply(amount.cast(pa.float64()), 0.6))
    orders = orders.filter(pc.is_valid(amount))  # a used order needs a cost; null amounts have none here
    orders = orders.set_column(0, "user_id", orders.column("user_id").cast(pa.float64()))
    text = lambda col: pc.strftime(col, format="%d.%m.%Y %H:%M", locale="C")  # noqa: E731
    signups = data["signups"].rename_columns(["member", "signup_ts", "channel"])
    signups = signups.set_column(1, "signup_ts", text(signups.column("signup_ts")))
    activity = data["activity"].rename_columns(["visitor", "ts"])
    ltrcore.testing.check_adapter(
        spark_runner(spark), orders, signups=signups, activity=activity, by="channel", horizon=6, as_of="2024-11-15",
        signup_user="member", activity_user="visitor", ts_format="%d.%m.%Y %H:%M", cost="cogs", partitions=(1, 4),
    )  # fmt: skip


def test_empty_inputs_give_the_local_table(spark: Any) -> None:
    """No rows at all: tasks that see none still report every table they were given."""
    data = retail()
    empty = {name: t.slice(0, 0) for name, t in data.items()}
    run = spark_runner(spark)
    for kw in ({"activity": empty["activity"]}, {"signups": empty["signups"], "activity": empty["activity"], "by": "channel"}):
        got = run(empty["orders"], signups=kw.get("signups"), activity=kw.get("activity"), partitions=3, by_user=True, horizon=3,
                  **({"by": kw["by"]} if "by" in kw else {}))  # fmt: skip
        expected = ltrcore.cohorts(empty["orders"], signups=kw.get("signups"), activity=kw.get("activity"), horizon=3,
                                   **({"by": kw["by"]} if "by" in kw else {}))  # fmt: skip
        ltrcore.testing.assert_same_table(got, expected)


def test_check_adapter_notices_rows_not_partitioned_by_user(spark: Any) -> None:
    """The negative control on its own: without repartitioning by user, the numbers differ."""
    data = retail()
    run = spark_runner(spark)
    expected = ltrcore.cohorts(data["orders"], horizon=6)
    wrong = run(data["orders"], signups=None, activity=None, partitions=5, by_user=False, horizon=6)
    with pytest.raises(AssertionError, match="differs from ltrcore.cohorts"):
        ltrcore.testing.assert_same_table(wrong, expected)


def test_check_adapter_refuses_data_too_small_to_tell(spark: Any) -> None:
    one_user = pa.table({"user_id": [1], "ts": pa.array([START_US], pa.timestamp("us", "UTC")), "amount": [10]})
    with pytest.raises(AssertionError, match="negative control"):
        ltrcore.testing.check_adapter(spark_runner(spark), one_user, partitions=(1, 2))


def test_partials_dataframe_is_the_merged_partial(spark: Any) -> None:
    import ltrcore.spark

    data = retail(seed=11)
    df = ltrcore.spark.partials(spark.createDataFrame(data["orders"]), by="channel", horizon=6, partitions=3)
    spec = ltrcore.CohortSpec(by="channel", horizon=6)
    assert df.schema["record"].metadata == {"ltrcore.fingerprint": spec.fingerprint}
    rows = df.toArrow()
    # One row per key: merged by Spark, not one per task.
    keys = rows.select([c for c in rows.column_names if c in ("record", "table", "reason", "by_channel", "cohort", "age")])
    assert keys.group_by(keys.column_names).aggregate([]).num_rows == rows.num_rows
    partial = ltrcore.Partial.from_arrow(rows, spec=spec)
    local = ltrcore.Accumulator(spec).update(data["orders"]).finish()
    assert partial == local
    ltrcore.testing.assert_same_table(partial.finalize(), ltrcore.cohorts(data["orders"], by="channel", horizon=6))
    with pytest.raises(ltrcore.InvalidArgumentError, match="differ in horizon: 12 vs 6"):
        ltrcore.Partial.from_arrow(rows.replace_schema_metadata(partial.to_arrow().schema.metadata), spec=ltrcore.CohortSpec(by="channel"))


def test_missing_column_is_reported_before_any_job(spark: Any) -> None:
    import ltrcore.spark

    df = spark.createDataFrame(retail()["orders"]).withColumnRenamed("amount", "total")
    with pytest.raises(ltrcore.ColumnNotFoundError, match=r"column 'amount' not found in orders; available columns: 'user_id', 'ts', 'total', 'channel'"):
        ltrcore.spark.cohorts(df)
    signups = spark.createDataFrame(retail()["signups"])
    with pytest.raises(ltrcore.ColumnNotFoundError, match="column 'tier' not found in signups"):
        ltrcore.spark.cohorts(spark.createDataFrame(retail()["orders"]), signups, by="tier")
    strings = spark.createDataFrame(retail()["signups"].set_column(0, "user_id", pa.array(["x"] * retail()["signups"].num_rows)))
    with pytest.raises(ltrcore.DtypeError, match="integers and strings cannot be matched"):
        ltrcore.spark.cohorts(spark.createDataFrame(retail()["orders"]), strings)
    with pytest.raises(ltrcore.InvalidArgumentError, match="horizon must be"):
        ltrcore.spark.cohorts(spark.createDataFrame(retail()["orders"]), horizon=0)
    with pytest.raises(ltrcore.InvalidArgumentError, match="orders must be a Spark DataFrame; got Table"):
        ltrcore.spark.cohorts(retail()["orders"])
    with pytest.raises(ltrcore.InvalidArgumentError, match="does not take threads"):
        ltrcore.spark.cohorts(spark.createDataFrame(retail()["orders"]), threads=2)


def test_import_without_pyspark_says_how_to_install(tmp_path: Any) -> None:
    """In a fresh interpreter where ``pyspark`` cannot be imported."""
    blocker = tmp_path / "pyspark.py"
    blocker.write_text("raise ImportError('no pyspark here')\n")
    code = "import ltrcore.spark"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert done.returncode != 0
    assert "pip install 'ltrcore[spark]'" in done.stderr, done.stderr
