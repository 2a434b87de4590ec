"""A slow, plain reference implementation of ``ltrcore.cohorts``.

It follows the "Semantics" section of the README line by line and is written for reading, not speed:
every input column is first turned into plain Python values (exact ints for money, a local calendar
date for every timestamp), each order row is then classified into exactly one reconciliation reason by
an ``if``/``elif`` chain in the README's order, and the used rows are aggregated with Polars.

Conventions pinned here (the README leaves them to us, the brief fixes them):

* period index of a local date: month ``year*12 + month-1``; quarter ``year*4 + (month-1)//3``;
  week (ISO, Monday) ``floor((date - 1970-01-05) / 7 days)``; day ``date - 1970-01-01`` in days.
  The cohort date is the first day of the period.
* tz-aware timestamps are converted to ``tz`` (Python's ``zoneinfo``); naive timestamps, ``date32`` and
  ``date64`` are the wall-clock date as is.
* money: integers at scale 0, ``decimal128`` at its own scale, floats (float32 widened to float64) as
  ``round_half_away_from_zero(x * 10**scale)`` computed on the float64 product. NaN/inf -> ``nan_amount``.
* paying row: ``amount > min_amount`` compared exactly, with a float ``min_amount`` taken as the decimal
  it is written as (``Decimal(str(0.57)) == Decimal("0.57")``), i.e.
  ``amount_scaled > floor(Decimal(str(min_amount)) * 10**scale_effective)``. (Computing the threshold
  as the float product ``0.57 * 100 == 56.99999999999999`` would make an amount of exactly 0.57 a
  paying order, which ``amount > min_amount`` says it is not.)
* default ``as_of``: the start of the period holding the latest order among rows with non-null user,
  non-null ts and finite amount, so ``last complete = max period of those rows - 1``.
* ``since``: first usable period = first period starting at or after ``since``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa

EPOCH = dt.date(1970, 1, 1)
FIRST_MONDAY = dt.date(1970, 1, 5)  # week 0 starts on this Monday
UTC = dt.timezone.utc
UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

ORDER_REASONS = [
    "null_user",
    "null_ts",
    "bad_ts",
    "ts_out_of_range",
    "null_amount",
    "nan_amount",
    "unknown_user",
    "never_paid",
    "before_cohort",
    "beyond_horizon",
    "before_since",
    "not_yet_complete",
    "used",
]
BAD_DATA_REASONS = {"null_user", "null_ts", "bad_ts", "ts_out_of_range", "null_amount", "nan_amount"}

#: The local date of a timestamp outside 0001-01-01 ..= 9999-12-31 (Python's own date range).
OUT_OF_RANGE = "out of range"

# Output dtypes of the integer columns of the long table.
AGE_DTYPE = pl.Int32
COUNT_DTYPE = pl.Int64


# ----------------------------------------------------------------------------------------------------
# periods
# ----------------------------------------------------------------------------------------------------
def period_of_date(d: dt.date, period: str) -> int:
    if period == "month":
        return d.year * 12 + d.month - 1
    if period == "quarter":
        return d.year * 4 + (d.month - 1) // 3
    if period == "week":
        return (d - FIRST_MONDAY).days // 7  # Python // floors, also before 1970
    if period == "day":
        return (d - EPOCH).days
    raise ValueError(f"unknown period {period!r}")


def period_start_date(idx: int, period: str) -> dt.date:
    if period == "month":
        return dt.date(idx // 12, idx % 12 + 1, 1)
    if period == "quarter":
        return dt.date(idx // 4, (idx % 4) * 3 + 1, 1)
    if period == "week":
        return FIRST_MONDAY + dt.timedelta(days=7 * idx)
    if period == "day":
        return EPOCH + dt.timedelta(days=idx)
    raise ValueError(f"unknown period {period!r}")


def local_date_of_instant(seconds: int, tz: str) -> dt.date:
    """Local calendar date in ``tz`` of the instant ``seconds`` after the Unix epoch (UTC).

    Raises ``OverflowError`` when that date is outside years 1-9999. An instant whose UTC date is just
    outside while its local date is inside (10000-01-01T00:00Z is 9999-12-31 in Sao Paulo) is taken a
    day nearer and its local date moved back by a day (no zone changes its offset at those dates)."""
    try:
        instant = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds)
        return instant.astimezone(ZoneInfo(tz)).date()
    except OverflowError:
        step = -86_400 if seconds > 0 else 86_400
        nearer = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=seconds + step)
        return nearer.astimezone(ZoneInfo(tz)).date() - dt.timedelta(seconds=step)


# ----------------------------------------------------------------------------------------------------
# column normalisation: arrow column -> python values
# ----------------------------------------------------------------------------------------------------
def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    return table.column(name)


def scaled_decimal(n: int, scale: int) -> Decimal:
    """The exact Decimal ``n / 10**scale`` (string construction never rounds)."""
    return Decimal(f"{n}e-{scale}") if scale else Decimal(n)


def user_values(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    """User keys as python ints / strs (None for null). Dictionary columns are decoded."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_string_view(col.type):
        col = col.cast(pa.large_string())
    return col.to_pylist()


def _date_or_out(v: int | None, to_date: Any) -> Any:
    """``to_date(v)``, ``None`` for null, ``OUT_OF_RANGE`` when the date is outside Python's years 1-9999."""
    if v is None:
        return None
    try:
        return to_date(v)
    except OverflowError:
        return OUT_OF_RANGE


def ts_values(col: pa.ChunkedArray | pa.Array, tz: str) -> tuple[list[int | None], list[Any]]:
    """(sort key, local date or ``OUT_OF_RANGE``) of every timestamp. The sort key is the raw stored integer."""
    t = col.type
    if pa.types.is_timestamp(t):
        raw = col.cast(pa.int64()).to_pylist()
        ups = UNITS_PER_SECOND[t.unit]
        if t.tz is None:  # naive: the wall-clock date as is
            dates = [_date_or_out(v, lambda v: EPOCH + dt.timedelta(days=v // (ups * 86_400))) for v in raw]
        else:  # an instant: convert to tz
            dates = [_date_or_out(v, lambda v: local_date_of_instant(v // ups, tz)) for v in raw]
        return raw, dates
    if pa.types.is_date32(t):
        raw = col.cast(pa.int32()).to_pylist()
        return raw, [_date_or_out(v, lambda v: EPOCH + dt.timedelta(days=v)) for v in raw]
    if pa.types.is_date64(t):
        raw = col.cast(pa.int64()).to_pylist()
        return raw, [_date_or_out(v, lambda v: EPOCH + dt.timedelta(days=v // 86_400_000)) for v in raw]
    raise TypeError(f"reference: unsupported ts type {t}")


def segment_order(values: tuple) -> tuple:
    """Sort key of a user's segment values: column by column, ascending, nulls last, NaN above every
    number. A user whose earliest rows tie on the timestamp takes the smallest segment by it."""
    return tuple((1, 0, 0) if v is None else (0, 1, 0) if isinstance(v, float) and math.isnan(v) else (0, 0, v)
                 for v in values)  # fmt: skip


def decimal_to_scaled_int(d: Decimal, scale: int) -> int:
    """Exact ``d * 10**scale`` as an int (no context rounding)."""
    sign, digits, exp = d.as_tuple()
    n = int("".join(map(str, digits))) if digits else 0
    shift = exp + scale
    n = n * 10**shift if shift >= 0 else _exact_div(n, 10**-shift)
    return -n if sign else n


def _exact_div(n: int, d: int) -> int:
    q, r = divmod(n, d)
    assert r == 0, "decimal value has more digits than its type's scale"
    return q


def round_float(x: float, scale: int) -> int:
    """round-half-away-from-zero of the float64 product ``x * 10**scale``, exactly."""
    v = float(x) * float(10**scale)
    return int(Decimal(v).to_integral_value(rounding=ROUND_HALF_UP))


def amount_values(col: pa.ChunkedArray | pa.Array, scale: int) -> tuple[list[int | None], list[bool], int]:
    """(scaled int or None, is_nan_or_inf, effective scale) per row."""
    t = col.type
    vals = col.to_pylist()
    if pa.types.is_integer(t):
        return vals, [False] * len(vals), 0
    if pa.types.is_decimal(t):
        s = t.scale
        return [None if v is None else decimal_to_scaled_int(v, s) for v in vals], [False] * len(vals), s
    if pa.types.is_floating(t):
        out: list[int | None] = []
        nan: list[bool] = []
        for v in vals:
            if v is None:
                out.append(None)
                nan.append(False)
            elif not math.isfinite(v):
                out.append(None)
                nan.append(True)
            else:
                out.append(round_float(v, scale))
                nan.append(False)
        return out, nan, scale
    raise TypeError(f"reference: unsupported amount type {t}")


def paying_threshold(min_amount: Any, scale: int) -> int:
    """The largest scaled amount that is *not* a paying order: ``floor(min_amount * 10**scale)``, exactly."""
    m = min_amount if isinstance(min_amount, Decimal) else Decimal(str(min_amount))
    sign, digits, exp = m.as_tuple()
    n = int("".join(map(str, digits))) * (-1 if sign else 1)
    shift = exp + scale
    return n * 10**shift if shift >= 0 else n // 10**-shift  # // floors, also for negatives


def _to_arrow(x: Any) -> pa.Table:
    if x is None:
        return None
    if isinstance(x, pa.Table):
        return x
    if isinstance(x, pl.DataFrame):
        return x.to_arrow()
    if isinstance(x, pa.RecordBatchReader):
        return x.read_all()
    return pa.table(x)


# ----------------------------------------------------------------------------------------------------
# as_of / since
# ----------------------------------------------------------------------------------------------------
def _parse(x: Any) -> dt.date | dt.datetime:
    if isinstance(x, str):
        if len(x) == 10:
            return dt.date.fromisoformat(x)
        return dt.datetime.fromisoformat(x.replace("Z", "+00:00"))
    return x


def as_of_period(as_of: Any, tz: str, period: str) -> int:
    """The period holding ``as_of`` (naive datetime = wall clock in tz, date = its midnight)."""
    x = _parse(as_of)
    if isinstance(x, dt.datetime):
        d = x.date() if x.tzinfo is None else x.astimezone(ZoneInfo(tz)).date()
    else:
        d = x
    return period_of_date(d, period)


def first_usable_period(since: Any, tz: str, period: str) -> int:
    """First period starting at or after ``since``."""
    x = _parse(since)
    if isinstance(x, dt.datetime) and x.tzinfo is not None:
        z = ZoneInfo(tz)
        x = x.astimezone(UTC)  # arithmetic on aware datetimes is wall-clock arithmetic: do it in UTC
        p = period_of_date(x.astimezone(z).date(), period)
        # since is the first instant of p iff the instant just before lies in an earlier period
        before = period_of_date((x - dt.timedelta(microseconds=1)).astimezone(z).date(), period)
        return p if before < p else p + 1
    if isinstance(x, dt.datetime):  # naive wall clock
        d, at_midnight = x.date(), x.time() == dt.time(0)
    else:
        d, at_midnight = x, True
    p = period_of_date(d, period)
    return p if at_midnight and period_start_date(p, period) == d else p + 1


# ----------------------------------------------------------------------------------------------------
# the reference
# ----------------------------------------------------------------------------------------------------
@dataclass
class Reference:
    table: pl.DataFrame
    reconciliation: dict[str, tuple[int, Decimal]]  # reason -> (rows, exact amount); zero-row reasons omitted
    amount_scale: int
    signups_reconciliation: dict[str, int] | None = None
    activity_reconciliation: dict[str, int] | None = None
    last_complete: int | None = None
    first_usable: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def excluded_bad_rows(self) -> int:
        return sum(self.reconciliation.get(r, (0, 0))[0] for r in BAD_DATA_REASONS)


def reference_cohorts(
    orders: Any,
    *,
    user: str = "user_id",
    ts: str = "ts",
    amount: str = "amount",
    signups: Any = None,
    signup_ts: str = "signup_ts",
    activity: Any = None,
    activity_ts: str | None = None,
    by: str | list[str] | None = None,
    horizon: int = 12,
    period: str = "month",
    tz: str = "UTC",
    as_of: Any = None,
    since: Any = None,
    min_amount: float | int = 0,
    scale: int = 4,
    cost: str | None = None,
    signup_user: str | None = None,
    activity_user: str | None = None,
) -> Reference:
    by_cols: list[str] = [] if by is None else [by] if isinstance(by, str) else list(by)
    orders_t = _to_arrow(orders)
    signups_t = _to_arrow(signups)
    activity_t = _to_arrow(activity)
    activity_ts = activity_ts or ts

    # ---- orders as python rows -------------------------------------------------------------------
    n = orders_t.num_rows
    o_user = user_values(_column(orders_t, user))
    o_key, o_date = ts_values(_column(orders_t, ts), tz)
    o_amt, o_nan, s_eff = amount_values(_column(orders_t, amount), scale)
    # Profit = amount - cost per order, at the amount's scale (a float cost rounded at it).
    o_profit: list[int | None] = [None] * n
    if cost is not None:
        c_vals, c_nan, c_scale = amount_values(_column(orders_t, cost), s_eff)
        assert c_scale <= s_eff, "the engine refuses a cost with more decimals than the amount"
        for i in range(n):
            if o_amt[i] is not None and c_vals[i] is not None and not c_nan[i]:
                o_profit[i] = o_amt[i] - c_vals[i] * 10 ** (s_eff - c_scale)
    o_period = [None if d is None or d is OUT_OF_RANGE else period_of_date(d, period) for d in o_date]
    threshold = paying_threshold(min_amount, s_eff)

    def good(i: int) -> bool:  # non-null user, ts in range, finite amount
        return o_user[i] is not None and o_period[i] is not None and o_amt[i] is not None

    def paying(i: int) -> bool:
        return o_amt[i] > threshold

    # ---- completeness ----------------------------------------------------------------------------
    if as_of is not None:
        last_complete: int | None = as_of_period(as_of, tz, period) - 1
    else:
        periods = [o_period[i] for i in range(n) if good(i)]
        last_complete = max(periods) - 1 if periods else None
    first_usable = first_usable_period(since, tz, period) if since is not None else None

    def cell_reason(c: int, age: int) -> str:
        """Where a row of a member of cohort ``c`` at ``age`` lands (signups: age 0)."""
        if age < 0:
            return "before_cohort"
        if age >= horizon:
            return "beyond_horizon"
        if first_usable is not None and c < first_usable:
            return "before_since"
        if last_complete is None or c + age > last_complete:
            return "not_yet_complete"
        return "used"

    # ---- members: user -> (cohort period, segment tuple) -------------------------------------------
    members: dict[Any, tuple[int, tuple]] = {}
    signups_rec: dict[str, int] | None = None
    if signups_t is not None:
        s_user = user_values(_column(signups_t, signup_user or user))
        s_key, s_date = ts_values(_column(signups_t, signup_ts), tz)
        s_seg = list(zip(*[user_values(_column(signups_t, c)) for c in by_cols])) if by_cols else None
        m = signups_t.num_rows
        best: dict[Any, int] = {}  # user -> row index of the earliest signup (the smallest segment on ties)
        for j in range(m):
            if s_user[j] is None or s_key[j] is None or s_date[j] is OUT_OF_RANGE:
                continue
            u = s_user[j]
            if u not in best or (s_key[j], segment_order(s_seg[j] if s_seg else ())) < (
                s_key[best[u]], segment_order(s_seg[best[u]] if s_seg else ())
            ):
                best[u] = j
        for u, j in best.items():
            members[u] = (period_of_date(s_date[j], period), s_seg[j] if s_seg else ())
        signups_rec = {}
        kept = set(best.values())
        for j in range(m):
            if s_user[j] is None:
                r = "null_user"
            elif s_key[j] is None:
                r = "null_ts"
            elif s_date[j] is OUT_OF_RANGE:
                r = "ts_out_of_range"
            elif j not in kept:
                r = "duplicate_user"
            else:
                r = cell_reason(members[s_user[j]][0], 0)
            signups_rec[r] = signups_rec.get(r, 0) + 1
    else:
        o_seg = list(zip(*[user_values(_column(orders_t, c)) for c in by_cols])) if by_cols else None
        first: dict[Any, int] = {}  # user -> row index of the first paying order
        for i in range(n):
            if not good(i) or not paying(i):
                continue
            u = o_user[i]
            if u not in first or (o_key[i], segment_order(o_seg[i] if o_seg else ())) < (
                o_key[first[u]], segment_order(o_seg[first[u]] if o_seg else ())
            ):
                first[u] = i
        for u, i in first.items():
            members[u] = (o_period[i], o_seg[i] if o_seg else ())

    # ---- classify every order row ------------------------------------------------------------------
    reason: list[str] = []
    for i in range(n):
        u = o_user[i]
        if u is None:
            r = "null_user"
        elif o_key[i] is None:
            r = "null_ts"
        elif o_date[i] is OUT_OF_RANGE:
            r = "ts_out_of_range"
        elif o_amt[i] is None and not o_nan[i]:
            r = "null_amount"
        elif o_nan[i]:
            r = "nan_amount"
        elif u not in members:
            r = "unknown_user" if signups_t is not None else "never_paid"
        else:
            c = members[u][0]
            r = cell_reason(c, o_period[i] - c)
        reason.append(r)

    recon: dict[str, tuple[int, Decimal]] = {}
    for i, r in enumerate(reason):
        rows, amt = recon.get(r, (0, 0))
        recon[r] = (rows + 1, amt + (o_amt[i] or 0))
    recon = {r: (rows, scaled_decimal(a, s_eff)) for r, (rows, a) in recon.items()}

    # ---- activity ----------------------------------------------------------------------------------
    active_cells: dict[tuple, set] = {}
    activity_rec: dict[str, int] | None = None
    if activity_t is not None:
        a_user = user_values(_column(activity_t, activity_user or user))
        a_key, a_date = ts_values(_column(activity_t, activity_ts), tz)
        activity_rec = {}
        for k in range(activity_t.num_rows):
            u = a_user[k]
            if u is None:
                r = "null_user"
            elif a_key[k] is None:
                r = "null_ts"
            elif a_date[k] is OUT_OF_RANGE:
                r = "ts_out_of_range"
            elif u not in members:
                r = "unknown_user"
            else:
                c, seg = members[u]
                age = period_of_date(a_date[k], period) - c
                r = cell_reason(c, age)
                if r == "used":
                    active_cells.setdefault((seg, c, age), set()).add(u)
            activity_rec[r] = activity_rec.get(r, 0) + 1

    # ---- aggregate the used rows -------------------------------------------------------------------
    cells: dict[tuple, dict[str, Any]] = {}
    for i in range(n):
        if reason[i] != "used":
            continue
        c, seg = members[o_user[i]]
        cell = cells.setdefault((seg, c, o_period[i] - c), {"net": 0, "gross": 0, "ref": 0, "pay": 0, "profit": 0, "orders": 0, "payers": set()})
        a = o_amt[i]
        cell["net"] += a
        if cost is not None:
            assert o_profit[i] is not None, "the engine refuses a used order without a cost"
            cell["profit"] += o_profit[i]
        if a > 0:
            cell["gross"] += a
        if a < 0:
            cell["ref"] += a
        if paying(i):
            cell["orders"] += 1
            cell["pay"] += a
            cell["payers"].add(o_user[i])

    sizes: dict[tuple, int] = {}
    for u, (c, seg) in members.items():
        sizes[(seg, c)] = sizes.get((seg, c), 0) + 1

    div = 10**s_eff
    rows_out: list[dict[str, Any]] = []
    for (seg, c), size in sizes.items():
        if last_complete is None or c > last_complete:
            continue
        if first_usable is not None and c < first_usable:
            continue
        for age in range(horizon):
            complete = c + age <= last_complete
            row: dict[str, Any] = {col: seg[k] for k, col in enumerate(by_cols)}
            row["cohort"] = period_start_date(c, period)
            row["age"] = age
            row["cohort_size"] = size
            if complete:
                empty: dict[str, Any] = {"net": 0, "gross": 0, "ref": 0, "pay": 0, "profit": 0, "orders": 0, "payers": set()}
                cell = cells.get((seg, c, age), empty)
                before = cells.get((seg, c, age - 1), empty) if age > 0 else None
                row["revenue"] = cell["net"] / div  # int / int: correctly rounded, like i128 -> f64 / 10^s
                row["gross_revenue"] = cell["gross"] / div
                row["refunds"] = cell["ref"] / div
                row["payments"] = cell["pay"] / div
                row["profit"] = cell["profit"] / div if cost is not None else None
                row["orders"] = cell["orders"]
                row["payers"] = len(cell["payers"])
                # Payers of this age who paid at the age before too.
                row["retained"] = len(cell["payers"] & before["payers"]) if before is not None else 0
                row["active"] = len(active_cells.get((seg, c, age), ())) if activity_t is not None else None
            else:
                for k in ("revenue", "gross_revenue", "refunds", "payments", "profit", "orders", "payers", "retained", "active"):
                    row[k] = None
            row["complete"] = complete
            rows_out.append(row)

    by_schema = {}
    src = signups_t if signups_t is not None else orders_t
    for col in by_cols:
        by_schema[col] = by_dtype(src.schema.field(col).type)
    schema = {
        **by_schema,
        "cohort": pl.Date,
        "age": AGE_DTYPE,
        "cohort_size": COUNT_DTYPE,
        "revenue": pl.Float64,
        "gross_revenue": pl.Float64,
        "refunds": pl.Float64,
        "payments": pl.Float64,
        "profit": pl.Float64,
        "orders": COUNT_DTYPE,
        "payers": COUNT_DTYPE,
        "retained": COUNT_DTYPE,
        "active": COUNT_DTYPE,
        "complete": pl.Boolean,
    }
    table = pl.DataFrame(rows_out, schema=schema, orient="row") if rows_out else pl.DataFrame(schema=schema)
    table = table.sort([*by_cols, "cohort", "age"], nulls_last=True, maintain_order=True)
    return Reference(
        table=table,
        reconciliation=recon,
        amount_scale=s_eff,
        signups_reconciliation=signups_rec,
        activity_reconciliation=activity_rec,
        last_complete=last_complete,
        first_usable=first_usable,
    )


def by_dtype(t: pa.DataType) -> pl.DataType:
    """Polars dtype of a segment column in the output: strings (any flavour, dictionary) -> String."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pl.String
    return pl.from_arrow(pa.array([], t)).dtype


def total_amount(orders: Any, amount: str, scale: int = 4) -> tuple[int, Decimal]:
    """(row count, exact sum of all finite amounts) of an input, for reconciliation checks."""
    t = _to_arrow(orders)
    vals, _, s = amount_values(_column(t, amount), scale)
    return t.num_rows, scaled_decimal(sum(v for v in vals if v is not None), s)
