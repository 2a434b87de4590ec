"""``ltrcore.spark``: the same engine inside Spark (``pip install 'ltrcore[spark]'``).

How a job runs:

1. The orders (and the signups and activity, when given) are reduced to the columns the spec needs.
   With signups or activity, the tables are put in one DataFrame (``unionByName``), each row tagged
   with its table, so that a user's orders, signup and activity meet in the same task.
2. The rows are repartitioned by user (``repartition(n, user)``): every row of a user goes to one
   task. This is the contract that makes the partials add up.
3. ``mapInArrow`` runs one :class:`~ltrcore.Accumulator` per task (``threads=1``: Spark runs a task
   per core). The task holds its partition's rows (as the Arrow batches Spark hands it) until its
   last batch, because first-purchase cohorts need each user's earliest paying order before any
   order can be attributed; its peak memory grows with the partition's rows (about 25 bytes per
   order row, plus the engine's table of the partition's users).
4. Each task returns its partial in the long layout (a few rows per cohort and age). ``cohorts()``
   collects them on the driver and merges them exactly there (:func:`ltrcore.merge`): they are
   small next to the data, and this avoids another shuffle. ``partials()`` sums them with a Spark
   ``groupBy`` instead, for pipelines that keep going in Spark.

Only the DataFrame API is used, so Spark Connect works as well as a classic session. Column and
dtype problems are reported before any job runs.

Why not ``groupBy(user).cogroup(...).applyInArrow``: it calls the Python function once per user,
which costs far more than the engine's whole work per user; a tagged union in one ``mapInArrow`` is
one call per task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

try:
    from pyspark.sql import DataFrame, functions as F, types as T
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("ltrcore.spark needs pyspark: pip install 'ltrcore[spark]'") from None

import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import ColumnNotFoundError, DtypeError, InvalidArgumentError
from .partial import BY_PREFIX, COUNT_COLUMNS, MONEY_COLUMNS, Accumulator, Partial
from .spec import CohortSpec
from .table import CohortTable

_TAG = "__ltrcore_table"
_ORDERS, _SIGNUPS, _ACTIVITY = 0, 1, 2


def cohorts(
    orders: DataFrame,
    signups: DataFrame | None = None,
    activity: DataFrame | None = None,
    *,
    as_of: Any = None,
    since: Any = None,
    strict: bool = False,
    partitions: int | None = None,
    _by_user: bool = True,
    **options: Any,
) -> CohortTable:
    """:func:`ltrcore.cohorts` over Spark DataFrames: the same options, the same table.

    ``partitions`` sets how many tasks share the users (default: the session's
    ``spark.sql.shuffle.partitions``). ``_by_user=False`` skips the repartitioning by user: a user's
    rows then land in several tasks and the numbers are wrong. It exists for
    :func:`ltrcore.testing.check_adapter`'s negative control, and nothing else.
    """
    spec = _spec(signups, options)
    per_task, task = _per_task_partials(orders, signups, activity, spec, strict, partitions, _by_user)
    table = _collect(per_task)
    if not table.num_rows:
        # No task ran: over an empty input, Spark 3.5's adaptive execution replaces the whole plan
        # (the mapInArrow included) by an empty relation. Do here what a task given no rows does.
        table = pa.Table.from_batches(list(task(iter(()))), schema=task.schema)
    # Reading the tasks' partials as one table adds rows that share a key: the merge.
    return Partial.from_arrow(table, spec=spec).finalize(as_of=as_of, since=since)


def partials(
    orders: DataFrame,
    signups: DataFrame | None = None,
    activity: DataFrame | None = None,
    *,
    strict: bool = False,
    partitions: int | None = None,
    **options: Any,
) -> DataFrame:
    """The merged partial as a Spark DataFrame, one row per key (the long layout of
    :meth:`ltrcore.Partial.to_arrow`). Spark keeps no Arrow schema metadata, so the spec's
    fingerprint travels in the ``record`` column's field metadata; read the DataFrame back with
    ``ltrcore.Partial.from_arrow(df.toArrow(), spec=spec)`` (Spark 4; on Spark 3.5,
    ``pa.Table.from_batches(df._collect_as_arrow())``). Over an empty input, Spark 3.5 may run no
    task at all and return no rows; ``cohorts()`` handles that case itself."""
    spec = _spec(signups, options)
    per_task, _ = _per_task_partials(orders, signups, activity, spec, strict, partitions, True)
    keys = [c for c in per_task.columns if c in ("record", "table", "reason", "cohort", "age") or c.startswith(BY_PREFIX)]
    sums = [F.sum(c).alias(c) for c in (*MONEY_COLUMNS, *COUNT_COLUMNS)]
    merged = per_task.groupBy(*keys).agg(*sums, F.max("last_period").alias("last_period"))
    merged = merged.select(*[F.col(c) for c in per_task.columns])
    fingerprint = spec.fingerprint
    return merged.withColumn("record", F.col("record").alias("record", metadata={"ltrcore.fingerprint": fingerprint}))


# ---------------------------------------------------------------------------------------------------
def _spec(signups: DataFrame | None, options: dict[str, Any]) -> CohortSpec:
    cohort: Any = options.pop("cohort", None) or ("signup" if signups is not None else "first_purchase")
    for name in ("threads", "progress", "_chunk_rows", "_cells_budget"):
        if name in options:
            raise InvalidArgumentError(f"ltrcore.spark does not take {name}: each Spark task runs one worker")
    try:
        spec = CohortSpec(cohort=cohort, **options)
    except TypeError as err:
        raise InvalidArgumentError(f"ltrcore.spark: {err}") from None
    if spec.cohort == "signup" and signups is None:
        raise InvalidArgumentError("cohort='signup' needs signups")
    return spec


def _require(df: DataFrame, table: str, columns: Sequence[str]) -> None:
    names = df.columns
    for name in columns:
        if name not in names:
            raise ColumnNotFoundError(
                f"column {name!r} not found in {table}; available columns: " + ", ".join(map(repr, names))
            )


def _user_kind(df: DataFrame, user: str) -> str:
    t = df.schema[user].dataType
    # Floats hold whole-number ids (pandas' integers with nulls); the core checks every value.
    if isinstance(t, (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)):
        return "integer"
    if isinstance(t, T.StringType):
        return "string"
    raise DtypeError(f'column "{user}" has Spark type {t.simpleString()}; user ids must be integers or strings')


def _amount_scale(df: DataFrame, spec: CohortSpec) -> int:
    t = df.schema[spec.amount].dataType
    if isinstance(t, T.DecimalType):
        return int(t.scale)
    if isinstance(t, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return 0
    if isinstance(t, (T.FloatType, T.DoubleType)):
        return spec.scale
    raise DtypeError(f'column "{spec.amount}" in orders has Spark type {t.simpleString()}; amounts must be numeric')


def _per_task_partials(
    orders: DataFrame,
    signups: DataFrame | None,
    activity: DataFrame | None,
    spec: CohortSpec,
    strict: bool,
    partitions: int | None,
    by_user: bool,
) -> tuple[DataFrame, _Task]:
    """One partial per task, in the long layout, as a DataFrame (not yet merged), and the task."""
    # Duck-typed: a Spark Connect DataFrame is not a classic `DataFrame` on Spark 3.5.
    for name, df in (("orders", orders), ("signups", signups), ("activity", activity)):
        if (df is not None or name == "orders") and not (hasattr(df, "mapInArrow") and hasattr(df, "schema")):
            raise InvalidArgumentError(f"{name} must be a Spark DataFrame; got {type(df).__name__}")
    if partitions is not None and (isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1):
        raise InvalidArgumentError(f"partitions must be a positive integer; got {partitions!r}")
    by = spec.by_columns
    segments_from = signups if signups is not None else orders
    cost = [spec.cost] if spec.cost is not None else []
    _require(orders, "orders", [spec.user, spec.ts, spec.amount, *cost, *(by if signups is None else [])])
    if signups is not None:
        _require(signups, "signups", [str(spec.signup_user), spec.signup_ts, *by])
    if activity is not None:
        _require(activity, "activity", [str(spec.activity_user), str(spec.activity_ts)])
    user_columns = {"orders": spec.user, "signups": str(spec.signup_user), "activity": str(spec.activity_user)}
    tables = (("orders", orders), ("signups", signups), ("activity", activity))
    kinds = {name: _user_kind(df, user_columns[name]) for name, df in tables if df is not None}
    if len(set(kinds.values())) > 1:
        raise DtypeError(
            "the user id columns hold "
            + " and ".join(f"{k} ids in {t} (column {user_columns[t]!r})" for t, k in kinds.items())
            + "; integers and strings cannot be matched"
        )
    scale = _amount_scale(orders, spec)

    # The rows each task reads: orders alone, or the tables tagged and stacked.
    user = F.col(spec.user)
    if signups is None and activity is None:
        rows = orders.select(user, F.col(spec.ts), F.col(spec.amount), *[F.col(c) for c in cost], *[F.col(b) for b in by])
        tagged = False
    else:
        parts = [orders.select(user, F.col(spec.ts).alias("__o_ts"), F.col(spec.amount).alias("__o_amount"),
                               *[F.col(c).alias("__o_cost") for c in cost],
                               *([F.col(b) for b in by] if signups is None else []), F.lit(_ORDERS).cast("byte").alias(_TAG))]  # fmt: skip
        if signups is not None:
            parts.append(signups.select(F.col(str(spec.signup_user)).alias(spec.user), F.col(spec.signup_ts).alias("__s_ts"),
                                        *[F.col(b) for b in by],
                                        F.lit(_SIGNUPS).cast("byte").alias(_TAG)))  # fmt: skip
        if activity is not None:
            parts.append(activity.select(F.col(str(spec.activity_user)).alias(spec.user), F.col(str(spec.activity_ts)).alias("__a_ts"),
                                         F.lit(_ACTIVITY).cast("byte").alias(_TAG)))  # fmt: skip
        rows = parts[0]
        for part in parts[1:]:
            rows = rows.unionByName(part, allowMissingColumns=True)
        tagged = True
    n = partitions
    if by_user:
        rows = rows.repartition(n, user) if n is not None else rows.repartition(user)
    elif n is not None:
        rows = rows.repartition(n)

    schema = _layout_spark_schema(segments_from, spec, scale)
    arrow_schema = _layout_arrow_schema(segments_from, spec, scale)
    task = _Task(spec, strict, tagged, signups is not None, activity is not None, arrow_schema, _arrow_schema(rows.schema))
    return rows.mapInArrow(task, schema), task


def _layout_spark_schema(segments_from: DataFrame, spec: CohortSpec, scale: int) -> T.StructType:
    money = T.DecimalType(38, scale)
    fields = [T.StructField("record", T.StringType(), False), T.StructField("table", T.StringType(), True),
              T.StructField("reason", T.StringType(), True)]  # fmt: skip
    fields += [T.StructField(BY_PREFIX + b, segments_from.schema[b].dataType, True) for b in spec.by_columns]
    fields += [T.StructField("cohort", T.IntegerType(), True), T.StructField("age", T.IntegerType(), True)]
    fields += [T.StructField(c, money, False) for c in MONEY_COLUMNS]
    fields += [T.StructField(c, T.LongType(), False) for c in COUNT_COLUMNS]
    fields += [T.StructField("last_period", T.IntegerType(), True)]
    return T.StructType(fields)


def _layout_arrow_schema(segments_from: DataFrame, spec: CohortSpec, scale: int) -> pa.Schema:
    return _arrow_schema(_layout_spark_schema(segments_from, spec, scale))


def _arrow_schema(schema: T.StructType) -> pa.Schema:
    """The Arrow schema Spark uses for ``schema`` (timestamps in UTC) on Spark 3.5 and 4.x."""
    import inspect

    from pyspark.sql.pandas.types import to_arrow_type

    # Spark 4.x takes the zone of TimestampType as `timezone=` (none by default); Spark 3.5 has no
    # such parameter and always maps TimestampType to timestamp[us, UTC].
    utc: dict[str, Any] = {"timezone": "UTC"} if "timezone" in inspect.signature(to_arrow_type).parameters else {}
    return pa.schema([pa.field(f.name, to_arrow_type(f.dataType, **utc), f.nullable) for f in schema.fields])


class _Task:
    """What each task runs: its batches into one accumulator, then its partial."""

    def __init__(self, spec: CohortSpec, strict: bool, tagged: bool, has_signups: bool, has_activity: bool, schema: pa.Schema,
                 input_schema: pa.Schema):  # fmt: skip
        self.spec, self.strict, self.tagged = spec, strict, tagged
        self.has_signups, self.has_activity, self.schema = has_signups, has_activity, schema
        self.input_schema = input_schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        spec = self.spec
        acc = Accumulator(spec, threads=1, strict=self.strict)
        last: pa.RecordBatch | None = None
        for batch in batches:
            last = batch
            if not self.tagged:
                if batch.num_rows:
                    acc.update(batch)
                continue
            tag = batch.column(_TAG)
            for table, (method, columns) in self._tables().items():
                if not batch.num_rows:
                    continue
                part = batch.filter(pc.equal(tag, pa.scalar(table, pa.int8())))
                if part.num_rows:
                    getattr(acc, method)(_renamed(part, columns))
        if last is None and self.tagged:
            # No rows reached this task: it still reports the tables it was given (zero rows).
            last = pa.RecordBatch.from_pylist([], schema=self.input_schema)
        if last is not None and self.tagged:
            # Every task knows every table it was given, if only by its columns: a task whose
            # users had no activity still reports activity (zero rows), as cohorts() does.
            empty = last.slice(0, 0)
            for table, (method, columns) in self._tables().items():
                if table != _ORDERS:
                    getattr(acc, method)(_renamed(empty, columns))
        partial = acc.finish() if last is not None else Partial.empty(spec)
        table = partial.to_arrow().replace_schema_metadata(None)
        yield from table.select(self.schema.names).cast(self.schema).to_batches()

    def _tables(self) -> dict[int, tuple[str, dict[str, str]]]:
        spec = self.spec
        by = {b: b for b in spec.by_columns}
        cost = {"__o_cost": spec.cost} if spec.cost is not None else {}
        tables = {_ORDERS: ("update", {spec.user: spec.user, "__o_ts": spec.ts, "__o_amount": spec.amount, **cost,
                                       **({} if self.has_signups else by)})}  # fmt: skip
        if self.has_signups:
            tables[_SIGNUPS] = ("update_signups", {spec.user: str(spec.signup_user), "__s_ts": spec.signup_ts, **by})
        if self.has_activity:
            tables[_ACTIVITY] = ("update_activity", {spec.user: str(spec.activity_user), "__a_ts": str(spec.activity_ts)})
        return tables


def _renamed(batch: pa.RecordBatch, columns: dict[str, str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(c) for c in columns], names=list(columns.values()))


def _collect(df: DataFrame) -> pa.Table:
    """The DataFrame on the driver as Arrow (``toArrow`` on Spark 4, the Arrow collect on 3.5)."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    batches = getattr(df, "_collect_as_arrow")()  # pyspark 3.5
    # No task ran (empty input): keep the columns and types (the amount's scale) as toArrow() does.
    return pa.Table.from_batches(batches) if batches else _arrow_schema(df.schema).empty_table()


__all__ = ["cohorts", "partials"]
