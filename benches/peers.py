"""Hand-written Polars and DuckDB peers of ltrcore's first-purchase cohort job.

Both functions compute what this call computes:

    ltrcore.cohorts(orders, user="user_id", ts="ts", amount="amount",
                    horizon=12, period="month", tz="UTC").to_polars().filter(pl.col("complete"))

* Rows with a null user, a null timestamp or a null/NaN/±inf amount are dropped. They are ltrcore's
  ``null_*`` and ``nan_amount`` reasons.
* Every timestamp maps to its calendar month in ``tz``. Tz-aware timestamps are converted; naive ones
  are taken as wall-clock time in ``tz``.
* Rows from the last month that has data are dropped. That month is running, and ltrcore's default
  ``as_of`` excludes it. Every cell before it is complete.
* Amounts are rounded per row to ``scale`` decimals, half away from zero.
* A user's cohort is the month of their first paying order (``amount > 0``). Users who never pay
  are dropped. So are rows with age < 0 or age >= horizon.
* Each (cohort, age) cell gets ``revenue`` (the net sum, refunds included), ``orders`` (rows with
  amount > 0), ``payers`` (distinct users with such a row) and ``cohort_size`` (users in the cohort).

The output is one row per (cohort, age) cell that has at least one order row. ``cohort`` is a Date,
the first of the month, and ``age`` is Int32. ltrcore also reports empty cells, as zeros. Use
``normalize()`` and ``compare()`` to check results against each other.

Both peers are written the way an experienced user would write them for speed. Polars uses a single
lazy query with integer month arithmetic. DuckDB uses SQL over the Arrow table, with no copy. Both
count distinct payers through a per-user pre-aggregation rather than a distinct count per cell:
Polars per (cohort, age, user) after the join, DuckDB per (user, month) before it. Other variants were
tried on this 2-core box at 2M rows: a plain distinct count, a window instead of the join, and the
other pre-aggregation. None was faster or used less memory.
"""

from __future__ import annotations

from typing import Any

import polars as pl

COLUMNS = ("cohort", "age", "cohort_size", "revenue", "orders", "payers")
SCHEMA = {
    "cohort": pl.Date,
    "age": pl.Int32,
    "cohort_size": pl.Int64,
    "revenue": pl.Float64,
    "orders": pl.Int64,
    "payers": pl.Int64,
}


def polars_cohorts(
    orders: Any,
    *,
    user: str = "user_id",
    ts: str = "ts",
    amount: str = "amount",
    horizon: int = 12,
    tz: str = "UTC",
    scale: int = 4,
) -> pl.DataFrame:
    """First-purchase monthly cohorts with a Polars lazy query (see the module docstring).

    ``orders`` is a Polars DataFrame or LazyFrame, or anything ``pl.from_arrow`` accepts (a pyarrow
    Table is used without a copy).
    """
    if isinstance(orders, pl.LazyFrame):
        lf = orders
    elif isinstance(orders, pl.DataFrame):
        lf = orders.lazy()
    else:
        lf = pl.from_arrow(orders, rechunk=False).lazy()  # type: ignore[union-attr]

    t = pl.col(ts)
    dtype = lf.collect_schema()[ts]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None and dtype.time_zone != tz:
        t = t.dt.convert_time_zone(tz)
    month = (t.dt.year() * 12 + t.dt.month() - 1).cast(pl.Int32)

    rows = (
        lf.select(
            u=pl.col(user),
            m=month,
            a=pl.col(amount).cast(pl.Float64).round(scale, mode="half_away_from_zero"),
        )
        .filter(pl.col("u").is_not_null() & pl.col("m").is_not_null() & pl.col("a").is_finite())
        .filter(pl.col("m") < pl.col("m").max())  # drop the running (last) month
    )
    first = rows.filter(pl.col("a") > 0).group_by("u").agg(cohort=pl.col("m").min())
    # One row per (cohort, age, user) first: the per-cell payer count becomes a plain count.
    cells = (
        rows.join(first, on="u")
        .with_columns(age=pl.col("m") - pl.col("cohort"))
        .filter(pl.col("age").is_between(0, horizon - 1))
        .group_by("cohort", "age", "u")
        .agg(rev=pl.col("a").sum(), n=(pl.col("a") > 0).sum().cast(pl.Int64))
        .group_by("cohort", "age")
        .agg(
            revenue=pl.col("rev").sum(),
            orders=pl.col("n").sum(),
            payers=(pl.col("n") > 0).sum().cast(pl.Int64),
        )
    )
    sizes = first.group_by("cohort").agg(cohort_size=pl.len().cast(pl.Int64))
    return (
        cells.join(sizes, on="cohort")
        .select(
            cohort=pl.date(pl.col("cohort") // 12, pl.col("cohort") % 12 + 1, 1),
            age=pl.col("age").cast(pl.Int32),
            cohort_size="cohort_size",
            revenue="revenue",
            orders="orders",
            payers="payers",
        )
        .sort("cohort", "age")
        .collect()
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duckdb_sql(*, user: str = "user_id", ts: str = "ts", amount: str = "amount", horizon: int = 12, scale: int = 4) -> str:
    """The SQL of ``duckdb_cohorts`` over a relation named ``orders``. The session's ``TimeZone``
    sets the month boundaries for TIMESTAMPTZ columns."""
    u, t, a = _ident(user), _ident(ts), _ident(amount)
    return f"""
    WITH rows AS (
        SELECT {u} AS u, year({t}) * 12 + month({t}) - 1 AS m, round({a}::DOUBLE, {int(scale)}) AS a
        FROM orders
        WHERE {u} IS NOT NULL AND {t} IS NOT NULL AND isfinite({a}::DOUBLE)
    ),
    used AS (SELECT * FROM rows WHERE m < (SELECT max(m) FROM rows)),
    user_months AS (
        SELECT u, m, sum(a) AS rev, count(*) FILTER (WHERE a > 0) AS n FROM used GROUP BY u, m
    ),
    first AS (SELECT u, min(m) AS cohort FROM user_months WHERE n > 0 GROUP BY u),
    cells AS (
        SELECT f.cohort, um.m - f.cohort AS age, sum(um.rev) AS revenue, sum(um.n) AS orders,
               count(*) FILTER (WHERE um.n > 0) AS payers
        FROM user_months um JOIN first f USING (u)
        WHERE um.m - f.cohort BETWEEN 0 AND {int(horizon) - 1}
        GROUP BY f.cohort, age
    ),
    sizes AS (SELECT cohort, count(*) AS cohort_size FROM first GROUP BY cohort)
    SELECT make_date((cohort // 12)::BIGINT, (cohort % 12 + 1)::BIGINT, 1) AS cohort,
           age::INTEGER AS age, cohort_size::BIGINT AS cohort_size, revenue::DOUBLE AS revenue,
           orders::BIGINT AS orders, payers::BIGINT AS payers
    FROM cells JOIN sizes USING (cohort)
    ORDER BY cohort, age
    """


def duckdb_cohorts(
    orders: Any,
    *,
    user: str = "user_id",
    ts: str = "ts",
    amount: str = "amount",
    horizon: int = 12,
    tz: str = "UTC",
    scale: int = 4,
    threads: int | None = None,
    con: Any = None,
) -> pl.DataFrame:
    """First-purchase monthly cohorts with DuckDB SQL over an Arrow table (see the module docstring).

    ``orders`` is anything DuckDB can register: a pyarrow Table, a Polars DataFrame or a pandas
    DataFrame. Pass ``con`` to reuse a connection. Its ``TimeZone`` setting is changed to ``tz``.
    """
    import duckdb

    own = con is None
    if own:
        con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = $tz", {"tz": tz})
        con.register("orders", orders)
        try:
            out = con.sql(duckdb_sql(user=user, ts=ts, amount=amount, horizon=horizon, scale=scale)).pl()
        finally:
            con.unregister("orders")
        return out.cast(SCHEMA)  # type: ignore[arg-type]
    finally:
        if own:
            con.close()


def from_ltrcore(table: Any, horizon: int | None = None) -> pl.DataFrame:
    """ltrcore's ``CohortTable`` (or its ``to_polars()`` frame), restricted to complete cells, in
    the peers' columns and dtypes."""
    df = table if isinstance(table, pl.DataFrame) else table.to_polars()
    if "complete" in df.columns:
        df = df.filter(pl.col("complete"))
    if horizon is not None:
        df = df.filter(pl.col("age") < horizon)
    return normalize(df)


def normalize(df: pl.DataFrame) -> pl.DataFrame:
    """The peers' columns in fixed dtypes, sorted by (cohort, age)."""
    return df.select([pl.col(c).cast(SCHEMA[c]) for c in COLUMNS]).sort("cohort", "age")


def compare(a: pl.DataFrame, b: pl.DataFrame, *, names: tuple[str, str] = ("a", "b"), rel: float = 1e-9) -> list[str]:
    """Differences between two results, as readable lines; empty when they agree.

    A cell missing on one side counts as zero orders, payers and revenue. ltrcore lists empty cells
    and the peers don't. ``cohort_size`` is compared per cohort. ``revenue`` may differ by a relative
    ``rel`` (at least 1e-6 absolute), because floats summed in another order round differently.
    """
    a, b = normalize(a), normalize(b)
    na, nb = names
    problems: list[str] = []

    sa = a.select("cohort", "cohort_size").unique()
    sb = b.select("cohort", "cohort_size").unique()
    for s, n in ((sa, na), (sb, nb)):
        dup = s.group_by("cohort").len().filter(pl.col("len") > 1)
        if dup.height:
            problems.append(f"{n}: several cohort_size values for cohorts {dup['cohort'].to_list()}")
    sizes = sa.join(sb, on="cohort", how="full", coalesce=True, suffix="_b")
    bad = sizes.filter(pl.col("cohort_size").ne_missing(pl.col("cohort_size_b")))
    if bad.height:
        problems.append(f"cohort_size differs ({na} vs {nb}) for {bad.height} cohorts:\n{bad.head(10)}")

    measures = ["revenue", "orders", "payers"]
    cells = (
        a.select("cohort", "age", *measures)
        .join(b.select("cohort", "age", *measures), on=["cohort", "age"], how="full", coalesce=True, suffix="_b")
        .with_columns(pl.col(*measures, *(m + "_b" for m in measures)).fill_null(0))
    )
    for m in ("orders", "payers"):
        bad = cells.filter(pl.col(m) != pl.col(m + "_b"))
        if bad.height:
            problems.append(f"{m} differs ({na} vs {nb}) in {bad.height} cells:\n{bad.select('cohort', 'age', m, m + '_b').head(10)}")
    tol = pl.max_horizontal(pl.col("revenue").abs() * rel, pl.lit(1e-6))
    bad = cells.filter((pl.col("revenue") - pl.col("revenue_b")).abs() > tol)
    if bad.height:
        problems.append(
            f"revenue differs ({na} vs {nb}) in {bad.height} cells:\n{bad.select('cohort', 'age', 'revenue', 'revenue_b').head(10)}"
        )
    return problems
