"""Unit economics over a ``CohortTable``: LTR, ARPPU, AOV, retention, CAC, LTV, CLV, LTV/CAC, payback,
DRR, ROMI, customer equity, chain-ladder projection, the table per channel (``channels``) and a
plain-language summary.

Definitions follow DOMAIN.md. Per-signup values (``ltr``, ``ltv``, ``clv``) divide by the cohort size;
CAC divides acquisition spend by the customers acquired (members with a paying order), so the ratio
``ltv_cac`` compares like with like: ``ltv_per_customer / cac``, which equals the cohort's lifetime
margin divided by its acquisition spend. Incomplete cells stay null, and a ratio whose denominator is
zero is null, never inf or NaN. Decisions (verdicts, payback) are taken on exact fractions of the
exact sums, the margin and the spend (see ``_exact`` and ``_decide``); projected values are floats.
Every verdict says its basis (``verdict_basis``): observed, projected, or too young (fewer than
``MIN_OBSERVED_MONTHS`` observed months and no projection).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from .exceptions import InvalidArgumentError, SpendIgnoredWarning

if TYPE_CHECKING:
    from .table import CohortTable

#: Months in one period, for discounting and payback bands.
MONTHS_PER_PERIOD = {"month": 1.0, "quarter": 3.0, "week": 12 / 52.1775, "day": 12 / 365.25}

HEALTHY, MARGINAL, LOSING = "healthy", "marginal", "losing money"
#: Verdicts beside the three LTV/CAC bands: a young cohort's "losing money" says it is too early to
#: tell, and spend that brought no paying customer is lost (CAC is undefined, not infinite).
TOO_EARLY = "too early to tell: losing money so far"
NO_CUSTOMERS = "no customers: all spend lost"
TOO_EARLY_NO_CUSTOMERS = "too early to tell: no customers yet"
#: Payback in words when spend brought no customer: there is no one to pay it back.
NEVER_PAID_BACK = "never: no customers"
#: What a verdict rests on (the ``verdict_basis`` column).
OBSERVED, PROJECTED, TOO_YOUNG = "observed", "projected", "too young"
#: Observed months below which a cohort without a projection is ``too young``. Revenue to date only
#: grows (refunds aside) while the spend is fixed, so a young cohort's LTV/CAC is a floor: "healthy"
#: and "marginal" stand as floors, "losing money" does not.
MIN_OBSERVED_MONTHS = 3
SELF_FUNDING, NEEDS_FUNDING, UNVIABLE, NOT_YET = "self-funding", "needs funding", "likely unviable", "not yet paid back"
SPEND_COMPONENTS = ("campaign", "wages", "software", "services", "other")

ADVICE = {
    HEALTHY: "Profitable (LTV/CAC at least 3): keep acquiring through this channel, and watch CAC as spend grows.",
    MARGINAL: (
        "Near the edge of profitability (LTV/CAC below 3): lower CAC (sharper targeting, A/B tests, "
        "content and SEO) or raise LTR (on-site cross-sell, upsell and coupons; CRM pushes against churn)."
    ),
    LOSING: (
        "Losing money on every customer (LTV/CAC at most 1): cut or rework this acquisition. Lower CAC "
        "(targeting, A/B tests, content) and raise LTR (cross-sell, upsell, CRM pushes against churn); "
        "check churn and the average order."
    ),
    TOO_EARLY: (
        f"Too early to tell: fewer than {MIN_OBSERVED_MONTHS} observed months and no projection, so revenue is only to date and "
        "CAC counts only the customers who have paid so far. Judge it again when more months are observed."
    ),
    NO_CUSTOMERS: (
        "No paying customer for this spend: all of it was lost. Stop or rework this acquisition "
        "(targeting, offer, the path from signup to first order)."
    ),
    TOO_EARLY_NO_CUSTOMERS: (
        f"Too early to tell: nobody has paid yet after fewer than {MIN_OBSERVED_MONTHS} observed months. Watch the first orders."
    ),
}


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den, null when den is zero or null."""
    return pl.when(den != 0).then(num / den).otherwise(None)


def _keys(table: CohortTable) -> list[str]:
    return [*table.by, "cohort"]


# --------------------------------------------------------------------------------------------------
# per cell


def ltr(table: CohortTable) -> pl.DataFrame:
    """Cumulative revenue per cohort member at each age (the LTR curve). ``cum_revenue`` is the exact
    cumulative sum of the exact revenue, converted to float once (a float running sum drifts: 0.1 +
    0.2 is not 0.3)."""
    keys = _keys(table)
    h = table.horizon
    df = table._long_with_exact_revenue().with_columns(
        pl.when(pl.col("complete"))
        .then(pl.col("revenue_exact").cum_sum().over(keys, order_by="age"))
        .cast(pl.Float64)
        .alias("cum_revenue")
    )
    df = df.with_columns((pl.col("cum_revenue") / pl.col("cohort_size")).alias("ltr"))
    df = df.with_columns(pl.col("ltr").filter(pl.col("age") == h - 1).first().over(keys).alias("ltr_horizon"))
    return df.select([*keys, "age", "cohort_size", "revenue", "cum_revenue", "ltr", "ltr_horizon", "complete"])


def arppu(table: CohortTable) -> pl.DataFrame:
    """Average payment per paying user in each cell: ``arppu`` = payments ÷ payers, where payments
    are the paying orders' amounts (above ``min_amount``), so a refund from someone who did not pay
    that period cannot drive it negative. ``arppu_net`` = net revenue ÷ payers (refunds and token
    purchases at or below ``min_amount`` included)."""
    return table.to_polars().select(
        [
            *_keys(table),
            "age",
            _ratio(pl.col("payments"), pl.col("payers")).alias("arppu"),
            _ratio(pl.col("revenue"), pl.col("payers")).alias("arppu_net"),
            "complete",
        ]
    )


def aov(table: CohortTable) -> pl.DataFrame:
    """Average order value in each cell: ``aov`` = payments ÷ paying orders (same rule as ARPPU);
    ``aov_net`` = net revenue ÷ paying orders."""
    return table.to_polars().select(
        [
            *_keys(table),
            "age",
            _ratio(pl.col("payments"), pl.col("orders")).alias("aov"),
            _ratio(pl.col("revenue"), pl.col("orders")).alias("aov_net"),
            "complete",
        ]
    )


def retention(table: CohortTable) -> pl.DataFrame:
    """The share of each cohort still paying or active at each age: ``paying_retention`` (payers ÷
    cohort size) and ``activity_retention`` (active ÷ cohort size). For the retention *rate* (buyers
    kept from one period to the next), see :func:`retention_rate`."""
    return table.to_polars().select(
        [
            *_keys(table),
            "age",
            _ratio(pl.col("payers"), pl.col("cohort_size")).alias("paying_retention"),
            _ratio(pl.col("active"), pl.col("cohort_size")).cast(pl.Float64).alias("activity_retention"),
            "complete",
        ]
    )


#: Polars offsets of one period, for calendar periods of cells.
_PERIOD_OFFSET = {"month": "mo", "week": "w", "quarter": "q", "day": "d"}


def retention_rate(table: CohortTable, store_wide: bool = False) -> pl.DataFrame:
    """The retention rate as the material defines it: customers who bought in both this period and
    the previous one ÷ customers who bought in the previous period. Counted exactly from each
    member's paying ages in the core.

    Per cohort and age (default): ``retained`` (payers at this age who paid at the age before),
    ``previous_payers`` (payers at the age before) and ``retention_rate``; null at age 0, in cells
    not yet complete, and when nobody paid at the age before.

    ``store_wide=True``: one row per calendar ``period`` over all cohorts and segments. A member
    counts while both periods lie within their cohort's horizon (the engine follows a member for
    ``horizon`` periods), so a buyer at their cohort's last age is left out of the denominator: the
    next period could not count them back. The first period of the data has no previous one."""
    cells = table.to_polars().sort([*_keys(table), "age"])
    keys = _keys(table)
    cells = cells.with_columns(
        pl.col("payers").shift(1).over(keys, order_by="age").alias("previous_payers"),
    ).with_columns(
        pl.when((pl.col("age") > 0) & pl.col("complete")).then(pl.col("previous_payers")).alias("previous_payers"),
        pl.when((pl.col("age") > 0) & pl.col("complete")).then(pl.col("retained")).alias("retained"),
    )
    if not store_wide:
        return cells.select(
            [*keys, "age", "retained", "previous_payers",
             _ratio(pl.col("retained"), pl.col("previous_payers")).cast(pl.Float64).alias("retention_rate"), "complete"]
        )
    unit = _PERIOD_OFFSET[table.period]
    periods = (
        cells.filter(pl.col("previous_payers").is_not_null())
        .with_columns(pl.col("cohort").dt.offset_by(pl.format("{}" + unit, pl.col("age"))).alias("period"))
        .group_by("period")
        .agg(pl.col("retained").sum(), pl.col("previous_payers").sum())
        .sort("period")
    )
    return periods.with_columns(
        pl.col("retained", "previous_payers").cast(pl.Int64),
        _ratio(pl.col("retained"), pl.col("previous_payers")).cast(pl.Float64).alias("retention_rate"),
    )


def repeat_rate(table: CohortTable) -> pl.DataFrame:
    """Repeat buyers (two or more paying orders within the complete ages) per cohort, over both
    denominators: ``repeat_rate`` = repeaters ÷ cohort size (the share of the cohort, as the material
    defines it) and ``repeat_rate_of_customers`` = repeaters ÷ customers (the share of those who paid
    at all)."""
    stats = table.cohort_stats()
    return stats.with_columns(
        _ratio(pl.col("repeaters"), pl.col("cohort_size")).alias("repeat_rate"),
        _ratio(pl.col("repeaters"), pl.col("customers")).alias("repeat_rate_of_customers"),
    )


# --------------------------------------------------------------------------------------------------
# projection


def project(table: CohortTable, method: str = "chain_ladder", min_cohorts: int = 3, min_size: int = 30) -> pl.DataFrame:
    """The LTR curve with not-yet-observed cells filled by volume-weighted chain-ladder factors.

    Factors are estimated per segment from cumulative revenue: f_k = Σ cum(c, k+1) / Σ cum(c, k) over
    the cohorts c whose age k+1 is complete. A factor that would rest on fewer than ``min_cohorts``
    cohorts is not estimated: the cells that need it (and the later ages of the same cohorts) stay
    null and are flagged ``unprojectable``, and the rest of the table is still projected. Cohorts
    smaller than ``min_size`` are flagged ``small_cohort``: their projection rests on few people.
    """
    if method != "chain_ladder":
        raise InvalidArgumentError(f"unknown projection method {method!r}; available: 'chain_ladder'")
    if min_cohorts < 1:
        raise InvalidArgumentError(f"min_cohorts must be at least 1; got {min_cohorts}")
    curve = ltr(table)
    h = table.horizon
    keys = _keys(table)
    parts = []
    groups = curve.partition_by(table.by, maintain_order=True, include_key=True) if table.by else [curve]
    for part in groups:
        part = part.sort(["cohort", "age"])
        cohorts = part.select(keys).unique(maintain_order=True)
        n = cohorts.height
        cum = part.get_column("cum_revenue").to_numpy().astype(float).reshape(n, h)  # NaN = not observed
        size = part.get_column("cohort_size").to_numpy().reshape(n, h)[:, 0].astype(float)
        observed = ~np.isnan(cum)
        filled = cum.copy()
        for k in range(h - 1):
            if observed[:, k + 1].all():
                continue  # nothing to fill at this age
            mature = observed[:, k + 1]
            fill = ~observed[:, k + 1]
            if mature.sum() < min_cohorts:
                continue  # no factor: these cells (and what would follow from them) stay NaN
            den = cum[mature, k].sum()
            factor = cum[mature, k + 1].sum() / den if den != 0 else 1.0
            filled[fill, k + 1] = filled[fill, k] * factor  # NaN where age k could not be projected
        ltr_values = filled / size[:, None]
        parts.append(
            part.select([*keys, "age"]).with_columns(
                pl.Series("ltr", ltr_values.reshape(-1)).fill_nan(None),
                pl.Series("projected", (~observed & ~np.isnan(filled)).reshape(-1)),
                pl.Series("small_cohort", np.repeat(size < min_size, h)),
                pl.Series("unprojectable", np.isnan(filled).reshape(-1)),
            )
        )
    if not parts:
        return curve.select([*keys, "age", "ltr"]).with_columns(
            pl.lit(False).alias("projected"), pl.lit(False).alias("small_cohort"), pl.lit(False).alias("unprojectable")
        )
    return pl.concat(parts)


# --------------------------------------------------------------------------------------------------
# acquisition cost and value


def _period_key(value: Any, what: str, period: str) -> dt.date:
    """The first day of the period a spend key names (a date anywhere in it, or 'YYYY-MM')."""
    day: dt.date | None = None
    if isinstance(value, dt.datetime):
        day = value.date()
    elif isinstance(value, dt.date):
        day = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            day = dt.date.fromisoformat(text + "-01" if len(text) == 7 else text[:10])
        except ValueError:
            pass
    if day is None:
        raise InvalidArgumentError(f"{what}: cannot read {value!r} as a period (a date or 'YYYY-MM')")
    return _period_start(day, period)


def _is_table(value: Any) -> bool:
    return (
        isinstance(value, (pl.DataFrame, pl.LazyFrame))
        or hasattr(value, "__arrow_c_stream__")
        or type(value).__module__.split(".")[0] == "pandas"
    )


def _period_start(day: dt.date, period: str) -> dt.date:
    """First day of the period holding ``day``."""
    if period == "month":
        return day.replace(day=1)
    if period == "quarter":
        return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    return day


def _next_period(start: dt.date, period: str) -> dt.date:
    if period in ("month", "quarter"):
        months = start.month - 1 + (1 if period == "month" else 3)
        return dt.date(start.year + months // 12, months % 12 + 1, 1)
    return start + dt.timedelta(days=7 if period == "week" else 1)


def _unmatched(table: CohortTable, periods: set[dt.date], cohorts: set[dt.date], what: str) -> list[dt.date]:
    """Periods with no cohort, which are errors (a typo such as 2030 for 2023), but for two: the
    running period (the one after the last complete period), which a monthly job's spend table
    usually has and whose cohort is simply not reported yet; and periods before ``since`` (the
    partial install month), whose cohorts are not reported: their amounts are left out, with a
    ``SpendIgnoredWarning``."""
    running = _next_period(table.last_complete, table.period) if table.last_complete else None
    early = sorted(p for p in periods - cohorts if table.first_usable is not None and p < table.first_usable)
    if early:
        warnings.warn(
            SpendIgnoredWarning(
                f"{what} for {', '.join(map(str, early))} is before since ({table.first_usable}) and was left out: "
                "those cohorts are not reported"
            ),
            stacklevel=4,
        )
    return sorted(p for p in periods - cohorts if p != running and p not in early)


def _spend_frame(spend: Any) -> pl.DataFrame:
    if isinstance(spend, pl.DataFrame):
        return spend
    if isinstance(spend, pl.LazyFrame):
        return spend.collect()
    module = type(spend).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(spend)
    return pl.DataFrame(spend)  # pyarrow tables and anything with __arrow_c_stream__


def _cohort_frame(table: CohortTable) -> pl.DataFrame:
    return table.cohort_stats().select([*_keys(table), "cohort_size", "customers"])


def _exact(value: Any, what: str) -> Fraction:
    """A number as an exact fraction, for decisions. Floats are taken as the shortest decimal that
    reads back as them, that is, as they were written: 0.35 is 7/20, not 0.34999999999999997779…"""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a number; got {value!r}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidArgumentError(f"{what} must be finite; got {value!r}")
        return Fraction(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a number; got {value!r}") from None
    if not np.isfinite(number):
        raise InvalidArgumentError(f"{what} must be finite; got {value!r}")
    return Fraction(Decimal(repr(number)))


#: Per (segment…, cohort) key: the exact spend (None when not given or not attributable) and margin.
Costs = dict[tuple[Any, ...], tuple[Fraction | None, Fraction]]


def _key_of(row: Mapping[str, Any], keys: list[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


def _costs_frame(cohorts: pl.DataFrame, keys: list[str], costs: Costs) -> pl.DataFrame:
    """The float view of exact costs (each converted once), in the cohorts' order."""
    rows = [costs[_key_of(r, keys)] for r in cohorts.select(keys).iter_rows(named=True)]
    return cohorts.select(keys).with_columns(
        pl.Series("spend", [None if sp is None else float(sp) for sp, _ in rows], dtype=pl.Float64),
        pl.Series("margin", [float(m) for _, m in rows], dtype=pl.Float64),
    )


def _split_by_customers(total: Fraction | None, customers: int, of: int) -> Fraction | None:
    """A share of ``total`` in proportion to customers (None when there are none to share by)."""
    if total is None or of == 0:
        return None
    return total * customers / of


def _spend_per_cohort(table: CohortTable, spend: Any, cac: Any, margin: Any) -> tuple[pl.DataFrame, Costs]:
    """Per (segment…, cohort): ``spend`` and ``margin`` as floats (spend null when neither is given),
    and the same exactly (``Costs``), which every decision is taken on."""
    cohorts = _cohort_frame(table)
    keys = _keys(table)
    if spend is not None and cac is not None:
        raise InvalidArgumentError("pass either spend or cac, not both")
    margin_column = margin if isinstance(margin, str) else None
    if margin_column is None:
        _check_margin(margin)
    elif not _is_table(spend):
        raise InvalidArgumentError(f"margin={margin!r} names a column, which needs a spend table")
    rows = list(cohorts.iter_rows(named=True))
    periods = {r["cohort"] for r in rows}
    # Customers per period, for spend without a channel split over the period's segments.
    period_customers: dict[dt.date, int] = {}
    for r in rows:
        period_customers[r["cohort"]] = period_customers.get(r["cohort"], 0) + r["customers"]

    def by_period(values: Mapping[Any, Any] | Any, what: str, margin_of: Any) -> Costs:
        """Per-period amounts (or one amount for every period), split over segments by customers."""
        if isinstance(values, Mapping):
            amounts: dict[dt.date, Fraction] = {}
            for k, v in values.items():
                key = _period_key(k, what, table.period)
                amounts[key] = amounts.get(key, Fraction(0)) + _exact(v, what)
            unknown = _unmatched(table, set(amounts), periods, what)
            if unknown:
                raise InvalidArgumentError(
                    f"{what} has period(s) with no cohort: {', '.join(map(str, unknown))}; cohorts run "
                    f"from {min(periods) if periods else '-'} to {max(periods) if periods else '-'}"
                )
        else:
            one = _exact(values, what)
            amounts = {p: one for p in periods}
        if any(v < 0 for v in amounts.values()):
            raise InvalidArgumentError(f"{what} must be finite and non-negative")
        costs: Costs = {}
        for r in rows:
            total = amounts.get(r["cohort"])
            if table.by:
                # Spend without a channel: split over the period's segments by the customers they brought.
                total = _split_by_customers(total, r["customers"], period_customers[r["cohort"]])
            costs[_key_of(r, keys)] = (total, margin_of(r))
        return costs

    if margin_column is None:
        fixed = _exact(margin, "margin")

        def margin_of(_: Mapping[str, Any]) -> Fraction:
            return fixed

    if cac is not None:
        if isinstance(cac, Mapping):
            per = {_period_key(k, "cac", table.period): _exact(v, "cac") for k, v in cac.items()}
            unknown = _unmatched(table, set(per), periods, "cac")
            if unknown:
                raise InvalidArgumentError(f"cac has period(s) with no cohort: {', '.join(map(str, unknown))}")
        else:
            value = _exact(cac, "cac")
            per = {p: value for p in periods}
        if any(v < 0 for v in per.values()):
            raise InvalidArgumentError("cac must be finite and non-negative")
        costs = {}
        for r in rows:
            c = per.get(r["cohort"])
            costs[_key_of(r, keys)] = (None if c is None else c * r["customers"], margin_of(r))
    elif spend is None:
        costs = {_key_of(r, keys): (None, margin_of(r)) for r in rows}
    elif isinstance(spend, (int, float, Decimal, Mapping)) and not isinstance(spend, bool):
        costs = by_period(spend, "spend", margin_of)
    else:
        costs = _spend_table(table, rows, _spend_frame(spend), margin, margin_column, by_period)
    return _costs_frame(cohorts, keys, costs), costs


def _check_margin(margin: Any) -> None:
    try:
        value = float(margin)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"margin must be a number in (0, 1] or a spend-table column; got {margin!r}") from None
    if not 0 < value <= 1:
        raise InvalidArgumentError(f"margin must be in (0, 1]; got {margin!r}")


@dataclass(frozen=True)
class _SpendRow:
    """One row of a spend table, exactly."""

    cohort: dt.date
    channel: Any
    total: Fraction
    weight: Fraction
    margin: Fraction | None


@dataclass(frozen=True)
class _SpendColumns:
    """What each column of a spend table is."""

    period: str
    channel: str | None
    amounts: list[str]
    weight: str | None  # direct spend: how overhead is shared out


def _spend_columns(columns: list[str], by: list[str], margin_column: str | None) -> _SpendColumns:
    """Reads a spend table's columns against the segments ``by``, or raises naming what is wrong.
    Needs no cohorts, so the command line checks a spend file before any work."""
    period_col = next((c for c in ("period", "month") if c in columns), None)
    if period_col is None:
        raise InvalidArgumentError(f"the spend table needs a 'period' or 'month' column; it has {columns}")
    channel_cols = [c for c in columns if c in by]
    detailed = [c for c in SPEND_COMPONENTS if c in columns]
    has_total = "spend" in columns
    if has_total and detailed:
        raise InvalidArgumentError("the spend table has both 'spend' and detailed components; use one or the other")
    if not has_total and not detailed:
        raise InvalidArgumentError(
            f"the spend table needs a 'spend' column or the components {', '.join(SPEND_COMPONENTS)}; it has {columns}"
        )
    known = {period_col, "spend", *SPEND_COMPONENTS, *channel_cols, *([margin_column] if margin_column else [])}
    unknown = [c for c in columns if c not in known]
    if unknown:
        channels = f"a channel column must be one of by={by}" if by else f"a channel column needs by={unknown[0]!r} (--by {unknown[0]})"
        raise InvalidArgumentError(
            f"spend column(s) {unknown} are not understood: {channels}; amounts are 'spend' or {', '.join(SPEND_COMPONENTS)}"
        )
    if margin_column is not None and margin_column not in columns:
        raise InvalidArgumentError(f"margin column {margin_column!r} is not in the spend table ({columns})")
    if len(channel_cols) > 1:
        raise InvalidArgumentError(f"the spend table may have one channel column; it has {channel_cols}")
    return _SpendColumns(
        period=period_col,
        channel=channel_cols[0] if channel_cols else None,
        amounts=["spend"] if has_total else detailed,
        weight="spend" if has_total else "campaign" if "campaign" in detailed else None,
    )


def check_spend_columns(spend: Any, by: Sequence[str] | str | None, margin: Any = None) -> None:
    """Checks a spend table's columns against the segments ``by`` (a ``CohortSpec``'s, or the
    command line's) before any cohort is computed; raises ``InvalidArgumentError`` naming the problem."""
    if spend is None or not _is_table(spend):
        return
    segments = [by] if isinstance(by, str) else list(by or [])
    _spend_columns(_spend_frame(spend).columns, segments, margin if isinstance(margin, str) else None)


def _spend_table(
    table: CohortTable, rows: list[dict[str, Any]], frame: pl.DataFrame, margin: Any, margin_column: str | None, by_period: Any
) -> Costs:
    keys = _keys(table)
    shape = _spend_columns(frame.columns, table.by, margin_column)
    period_col, channel, amount_cols, weight_col = shape.period, shape.channel, shape.amounts, shape.weight
    periods = {c["cohort"] for c in rows}

    # Each spend row exactly: its period, channel, total, weight (direct spend: how overhead is
    # shared out) and margin.
    spend_rows: list[_SpendRow] = []
    for raw in frame.iter_rows(named=True):
        parts = [Fraction(0) if raw[c] is None else _exact(raw[c], "spend") for c in amount_cols]
        if any(p < 0 for p in parts):
            raise InvalidArgumentError(f"spend must be finite and not negative; first bad row: {raw}")
        spend_rows.append(
            _SpendRow(
                cohort=_period_key(raw[period_col], "spend", table.period),
                channel=raw[channel] if channel else None,
                total=sum(parts, Fraction(0)),
                weight=Fraction(0) if weight_col is None or raw[weight_col] is None else _exact(raw[weight_col], "spend"),
                margin=None if margin_column is None or raw[margin_column] is None else _exact(raw[margin_column], "margin"),
            )
        )
    unknown_periods = _unmatched(table, {r.cohort for r in spend_rows}, periods, "spend")
    if unknown_periods:
        raise InvalidArgumentError(f"spend has period(s) with no cohort: {', '.join(map(str, unknown_periods))}")
    spend_rows = [r for r in spend_rows if r.cohort in periods]

    margins: dict[tuple[Any, ...], Fraction] | None = None
    if margin_column is not None:
        found = [r.margin for r in spend_rows if r.margin is not None]
        if any(m <= 0 or m > 1 for m in found):
            raise InvalidArgumentError(f"margin column {margin_column!r} must be in (0, 1]")
        sums: dict[tuple[Any, ...], list[Fraction]] = {}
        for r in spend_rows:
            if r.margin is not None:
                sums.setdefault((r.cohort, r.channel), []).append(r.margin)
        margins = {k: sum(v, Fraction(0)) / len(v) for k, v in sums.items()}

    def margin_of(row: Mapping[str, Any]) -> Fraction:
        if margins is None:
            return _exact(margin, "margin")
        found = margins.get((row["cohort"], row[channel] if channel else None))
        if found is None:
            raise InvalidArgumentError(f"margin column {margin_column!r} has no value for some cohorts")
        return found

    if channel is None:
        totals: dict[dt.date, Fraction] = {}
        for r in spend_rows:
            totals[r.cohort] = totals.get(r.cohort, Fraction(0)) + r.total
        return by_period(totals, "spend", margin_of)

    values = {c[channel] for c in rows}
    listed = [r for r in spend_rows if r.channel is not None]
    unknown_values = sorted({r.channel for r in listed} - values, key=str)
    if unknown_values:
        raise InvalidArgumentError(
            f"spend has {channel} value(s) unknown to the cohorts: {unknown_values}; known: {sorted(values, key=str)}"
        )
    slots = {(c["cohort"], c[channel]) for c in rows}
    direct: dict[tuple[Any, Any], list[Fraction]] = {}
    for r in listed:
        d = direct.setdefault((r.cohort, r.channel), [Fraction(0), Fraction(0)])
        d[0] += r.total
        d[1] += r.weight
    for cohort, value in sorted(set(direct) - slots, key=str):
        raise InvalidArgumentError(f"spend for {cohort} / {channel}={value!r} has no cohort to charge it to")
    overhead: dict[dt.date, Fraction] = {}
    for r in spend_rows:
        if r.channel is None:
            overhead[r.cohort] = overhead.get(r.cohort, Fraction(0)) + r.total
    # Each (period, channel) that has a cohort: its direct spend, plus the period's overhead in
    # proportion to direct spend (equally when there is none).
    in_period: dict[dt.date, list[Any]] = {}
    for cohort, value in slots:
        in_period.setdefault(cohort, []).append(value)
    channel_spend: dict[tuple[Any, Any], Fraction] = {}
    for cohort, channels in in_period.items():
        weights = {v: direct.get((cohort, v), [Fraction(0), Fraction(0)])[1] for v in channels}
        weight_sum = sum(weights.values(), Fraction(0))
        for v in channels:
            share = weights[v] / weight_sum if weight_sum > 0 else Fraction(1, len(channels))
            channel_spend[(cohort, v)] = direct.get((cohort, v), [Fraction(0)])[0] + overhead.get(cohort, Fraction(0)) * share
    # Several `by` columns: a channel's spend is split over its other segments by customers.
    customers_in: dict[tuple[Any, Any], int] = {}
    for c in rows:
        customers_in[(c["cohort"], c[channel])] = customers_in.get((c["cohort"], c[channel]), 0) + c["customers"]
    costs: Costs = {}
    for c in rows:
        total: Fraction | None = channel_spend[(c["cohort"], c[channel])]
        if len(table.by) > 1:
            total = _split_by_customers(total, c["customers"], customers_in[(c["cohort"], c[channel])])
        costs[_key_of(c, keys)] = (total, margin_of(c))
    return costs


#: Months in one period as exact fractions, for the payback bands and the age of a verdict.
EXACT_MONTHS_PER_PERIOD = {
    "month": Fraction(1),
    "quarter": Fraction(3),
    "week": Fraction(12) / Fraction(Decimal("52.1775")),
    "day": Fraction(12) / Fraction(Decimal("365.25")),
}


def _discount_rate(discount_rate: Any) -> float:
    try:
        rate = float(discount_rate)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"discount_rate must be a number; got {discount_rate!r}") from None
    if not np.isfinite(rate) or rate < 0:
        raise InvalidArgumentError(f"discount_rate must be a non-negative annual rate; got {discount_rate!r}")
    return rate


#: Columns of ``metrics()`` that need the gross margin: null when none is given, so no profit
#: figure or verdict ever rests on an assumed 100 % margin.
PROFIT_COLUMNS = (
    "ltv", "clv", "clv_per_customer", "customer_equity", "ltv_per_customer", "ltv_cac", "net_value", "romi",
    "payback_age", "payback_basis", "payback_status", "payback", "verdict", "verdict_basis", "advice",
)  # fmt: skip
#: The same for ``channels()``.
CHANNEL_PROFIT_COLUMNS = (
    "ltv_per_customer_observed", "ltv_per_customer_projected", "ltv_cac", "verdict", "verdict_basis", "advice",
    "payback_age", "payback_basis", "payback_status", "payback", "romi", "clv_per_signup", "clv_per_customer",
    "customer_equity",
)  # fmt: skip


def _costs(table: CohortTable, spend: Any, cac: Any, margin: Any) -> tuple[pl.DataFrame, Costs]:
    """The spend and margin per cohort, floats and exact. Orders with their cost give each cohort
    its realized margin (and the values their exact profit), so a margin is refused beside them."""
    if table.has_profit:
        if margin is not None:
            raise InvalidArgumentError(
                "the orders carry their cost (cost=), so LTV comes from their exact profit; leave margin out "
                f"(got margin={margin!r})"
            )
        return _with_realized_margins(table, *_spend_per_cohort(table, spend, cac, 1))
    # Without a margin: revenue-based values (margin 1), whose profit columns ``_without`` nulls.
    return _spend_per_cohort(table, spend, cac, 1 if margin is None else margin)


def _judges_profit(table: CohortTable, margin: Any) -> bool:
    """Whether profit figures can be given: a margin was given, or the orders carry their cost."""
    return margin is not None or table.has_profit


def _without(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """``frame`` with ``columns`` null (same dtypes)."""
    return frame.with_columns(pl.lit(None, dtype=frame.schema[c]).alias(c) for c in columns)


def _projection_mode(projected: Any) -> bool | Literal["auto"]:
    if isinstance(projected, bool):
        return projected
    if isinstance(projected, str) and projected == "auto":
        return "auto"
    raise InvalidArgumentError(f"projected must be True, False or 'auto'; got {projected!r}")


def metrics(
    table: CohortTable,
    spend: Any = None,
    margin: float | str | None = None,
    discount_rate: float = 0.0,
    cac: Any = None,
    projected: bool | Literal["auto"] = False,
) -> pl.DataFrame:
    """One row per (segment…, cohort) with LTR, LTV, CLV, CAC, LTV/CAC, DRR, ROMI, payback and a
    verdict with its basis.

    ``projected``: ``False`` judges the values observed to date; ``True`` the chain-ladder values at
    the horizon (null where the projection is not possible); ``"auto"`` the projected values for
    the cohorts that have one (not yet observed to the horizon, at least one customer), the observed
    values for the rest. ``verdict_basis`` says which: ``observed``, ``projected``, or ``too young``
    (fewer than ``MIN_OBSERVED_MONTHS`` observed months without a projection; such a cohort's
    "losing money" reads "too early to tell: losing money so far"). A cohort with spend and no
    paying customer has a null CAC and the verdict "no customers: all spend lost" (or "too early to
    tell: no customers yet" while too young). Payback beyond the observed ages comes from the
    projection where there is one (``payback_basis`` ``projected``); ``payback`` says it in words,
    "not within N observed months" when it is not reached, never an invented month.

    ``margin``: the gross margin (a number in (0, 1], or a column of the spend table). Without it
    (the default) nothing is assumed: the revenue-based ``ltr_cac`` (revenue per customer ÷ CAC),
    DRR and CAC are given, and every column that needs a margin (``PROFIT_COLUMNS``: LTV, CLV,
    LTV/CAC, ROMI, payback, verdicts) is null. ``ltr_cac`` is there with a margin too.
    """
    mode = _projection_mode(projected)
    rate = _discount_rate(discount_rate)
    costs, exact_costs = _costs(table, spend, cac, margin)
    out = _metrics_of(table, costs, exact_costs, rate, mode).drop("__projection")
    return out if _judges_profit(table, margin) else _without(out, PROFIT_COLUMNS)


def _metrics_of(
    table: CohortTable, costs: pl.DataFrame, exact_costs: Costs, rate: float, mode: bool | Literal["auto"]
) -> pl.DataFrame:
    """``metrics()`` with the ``__projection`` flag (True where the row's values are projected)."""
    if mode != "auto":
        return _per_cohort(table, costs, exact_costs, rate, projected=bool(mode))
    observed = _per_cohort(table, costs, exact_costs, rate, projected=False)
    projected = _per_cohort(table, costs, exact_costs, rate, projected=True)
    keys = _keys(table)
    values = [c for c in observed.columns if c not in keys and c != "__projection"]
    joined = observed.drop("__projection").join(
        projected.select([*keys, "__projection", *[pl.col(c).alias(f"__p_{c}") for c in values]]),
        on=keys,
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    chosen = [pl.when(pl.col("__projection")).then(pl.col(f"__p_{c}")).otherwise(pl.col(c)).alias(c) for c in values]
    return joined.with_columns(chosen).select(observed.columns)


def _per_cohort(table: CohortTable, costs: pl.DataFrame, exact_costs: Costs, rate: float, projected: bool) -> pl.DataFrame:
    keys = _keys(table)
    months = MONTHS_PER_PERIOD[table.period]
    cells = ltr(table).join(table.to_polars().select([*keys, "age", "profit"]), on=[*keys, "age"], how="left", nulls_equal=True)
    curves: dict[tuple[Any, ...], list[float]] | None = None
    if projected:
        proj = project(table).with_columns(
            (pl.col("ltr").diff().over(keys, order_by="age").fill_null(pl.col("ltr"))).alias("__ltr_step")
        )
        cells = cells.join(proj.select([*keys, "age", pl.col("ltr").alias("__ltr_p"), "__ltr_step"]), on=[*keys, "age"], how="left", nulls_equal=True)
        per_age = pl.col("__ltr_step") * pl.col("cohort_size")
        revenue_for_value = per_age
        ltr_value = pl.col("__ltr_p").filter(pl.col("age") == table.horizon - 1).first()
        # Each cohort's projected LTR at every age (observed where observed), for payback beyond
        # the observed ages; a cohort with an unprojectable age has no curve.
        curves = {}
        ordered = proj.sort([*keys, "age"], nulls_last=True).group_by(keys, maintain_order=True).agg(pl.col("ltr"))
        for row in ordered.iter_rows(named=True):
            if all(v is not None for v in row["ltr"]):
                curves[_key_of(row, keys)] = row["ltr"]
    else:
        revenue_for_value = pl.col("revenue")
        ltr_value = None
    # Observed values with per-order costs rest on the profit itself; otherwise on revenue × margin.
    from_profit = table.has_profit and not projected
    discount = (1.0 + rate) ** (pl.col("age").cast(pl.Float64) * months / 12.0)
    discounted = ((pl.col("profit") if from_profit else revenue_for_value) / discount).sum()
    if projected:  # a cohort with unprojectable ages has no projected value
        discounted = pl.when(revenue_for_value.is_null().any()).then(None).otherwise(discounted)
    agg = [
        pl.col("cohort_size").first(),
        pl.col("complete").sum().cast(pl.Int64).alias("observed_ages"),
        pl.col("revenue").filter(pl.col("complete")).sum().alias("revenue_to_date"),
        pl.col("profit").filter(pl.col("complete")).sum().alias("__profit_to_date"),
        discounted.alias("__discounted"),
    ]
    if ltr_value is not None:
        agg.append(ltr_value.alias("__ltr_projected"))
    per = cells.group_by(keys, maintain_order=True).agg(agg)
    per = per.join(_cohort_frame(table).select([*keys, "customers"]), on=keys, how="left", nulls_equal=True)
    per = per.join(costs, on=keys, how="left", nulls_equal=True)
    ltr_expr = pl.col("__ltr_projected") if projected else pl.col("revenue_to_date") / pl.col("cohort_size")
    per = per.with_columns(ltr_expr.alias("ltr"))
    # Projected values stand for a cohort not yet observed to the horizon that has a projection and
    # a customer (a projection of nothing is nothing: no chain-ladder factor makes a first customer).
    if projected:
        projection = pl.col("ltr").is_not_null() & (pl.col("observed_ages") < table.horizon) & (pl.col("customers") > 0)
    else:
        projection = pl.lit(False)
    value_factor = pl.lit(1.0) if from_profit else pl.col("margin")
    per = per.with_columns(
        (pl.col("__profit_to_date") / pl.col("cohort_size") if from_profit else pl.col("ltr") * pl.col("margin")).alias("ltv"),
        (pl.col("__discounted") * value_factor / pl.col("cohort_size")).alias("clv"),
        _ratio(pl.col("spend"), pl.col("customers").cast(pl.Float64)).alias("cac"),
        _ratio(pl.col("spend"), pl.col("cohort_size").cast(pl.Float64)).alias("cac_per_signup"),
        projection.alias("__projection"),
    )
    per = per.with_columns(
        _ratio(pl.col("ltv") * pl.col("cohort_size"), pl.col("customers").cast(pl.Float64)).alias("ltv_per_customer"),
        # Customer equity: the CLV summed over the cohort (CLV per customer × customers).
        (pl.col("clv") * pl.col("cohort_size")).alias("customer_equity"),
    )
    per = per.with_columns(
        _ratio(pl.col("ltv_per_customer"), pl.col("cac")).alias("ltv_cac"),
        (pl.col("ltv_per_customer") - pl.col("cac")).alias("net_value"),
        _ratio(pl.col("customer_equity"), pl.col("customers").cast(pl.Float64)).alias("clv_per_customer"),
    )
    # The decisions, on exact numbers where the inputs are exact.
    decided = _decide(table, per, exact_costs, curves)
    per = per.drop("ltv_cac").join(decided, on=keys, how="left", nulls_equal=True)
    per = per.with_columns(pl.col("verdict").replace_strict(ADVICE, default=None, return_dtype=pl.String).alias("advice"))
    return per.select(
        [
            *keys,
            "cohort_size",
            pl.col("customers").cast(pl.Int64),
            "observed_ages",
            "revenue_to_date",
            "ltr",
            "ltv",
            "clv",
            "clv_per_customer",
            "customer_equity",
            "spend",
            "cac",
            "cac_per_signup",
            "ltv_per_customer",
            "ltv_cac",
            "ltr_cac",
            "net_value",
            "drr",
            "romi",
            pl.col("payback_age").cast(pl.Int32),
            "payback_basis",
            "payback_status",
            "payback",
            "verdict",
            "verdict_basis",
            "advice",
            "__projection",
        ]
    )


def _verdict_of(ratio: Fraction | float | None) -> str | None:
    """The LTV/CAC band: at least 3 healthy, above 1 marginal, at most 1 losing money."""
    if ratio is None or ratio != ratio:  # noqa: PLR0124 (NaN)
        return None
    return HEALTHY if ratio >= 3 else MARGINAL if ratio > 1 else LOSING


def _observed_basis(observed_ages: int, period: str) -> str:
    """``observed`` from ``MIN_OBSERVED_MONTHS`` observed months on, ``too young`` before."""
    return OBSERVED if observed_ages * EXACT_MONTHS_PER_PERIOD[period] >= MIN_OBSERVED_MONTHS else TOO_YOUNG


def _judged(ratio: Fraction | float | None, basis: str) -> str | None:
    """The verdict of a ratio on its basis: a too-young "losing money" is too early to tell."""
    verdict = _verdict_of(ratio)
    return TOO_EARLY if verdict == LOSING and basis == TOO_YOUNG else verdict


def _payback_status_of(age: int | None, period: str, observed_ages: int) -> str:
    """The payback band; a cohort observed for more than 24 months without paying back is likely
    unviable, not "not yet paid back"."""
    if age is None:
        return UNVIABLE if observed_ages * EXACT_MONTHS_PER_PERIOD[period] > 24 else NOT_YET
    months = (age + 1) * EXACT_MONTHS_PER_PERIOD[period]
    return SELF_FUNDING if months <= 12 else NEEDS_FUNDING if months <= 24 else UNVIABLE


def _periods(n: int, period: str, what: str = "") -> str:
    """``3 observed months``, ``1 month``."""
    return f"{n} {what + ' ' if what else ''}{period}" + ("" if n == 1 else "s")


def _payback_words(age: int | None, basis: str | None, observed_ages: int, projected_to: int | None, period: str) -> str:
    """Payback in words: the age (flagged when projected), or how far it was looked for."""
    if age is not None:
        return f"age {age}" + (" (projected)" if basis == PROJECTED else "")
    words = f"not within {_periods(observed_ages, period, 'observed')}"
    if projected_to is not None:
        words += f" nor the projection to age {projected_to - 1}"
    return words


def _exact_revenue(table: CohortTable) -> dict[tuple[Any, ...], list[Fraction]]:
    """Per (segment…, cohort): the exact cumulative revenue at each complete age, from age 0."""
    return _exact_cumulative(table, table._long_with_exact_revenue(), "revenue_exact")


def _exact_cumulative(table: CohortTable, long: pl.DataFrame, column: str) -> dict[tuple[Any, ...], list[Fraction]]:
    keys = _keys(table)
    cells = long.filter(pl.col("complete")).sort([*keys, "age"], nulls_last=True)
    out: dict[tuple[Any, ...], list[Fraction]] = {}
    for r in cells.select([*keys, column]).iter_rows(named=True):
        cum = out.setdefault(_key_of(r, keys), [])
        cum.append((cum[-1] if cum else Fraction(0)) + Fraction(r[column]))
    return out


def _exact_values(
    table: CohortTable, costs: Costs, revenue: dict[tuple[Any, ...], list[Fraction]]
) -> dict[tuple[Any, ...], list[Fraction]]:
    """Per (segment…, cohort): the exact cumulative value (the LTV's numerator) at each complete
    age: the orders' profit when they carry their cost, else margin × ``revenue`` (``_exact_revenue``)."""
    if table.has_profit:
        return _exact_cumulative(table, table._long_with_exact_profit(), "profit_exact")
    return {key: [costs[key][1] * c for c in cum] for key, cum in revenue.items()}


def _with_realized_margins(table: CohortTable, frame: pl.DataFrame, costs: Costs) -> tuple[pl.DataFrame, Costs]:
    """With per-order costs, each cohort's margin is its realized one, profit ÷ revenue to date:
    what a projection of its revenue is turned into value with (observed values use the exact
    profit itself). A cohort without revenue to date has margin 0."""
    revenue = _exact_revenue(table)
    profit = _exact_values(table, costs, revenue)
    realized: Costs = {}
    for key, (spend, _) in costs.items():
        r, p = (revenue.get(key) or [Fraction(0)])[-1], (profit.get(key) or [Fraction(0)])[-1]
        realized[key] = (spend, p / r if r else Fraction(0))
    keys = _keys(table)
    margins = pl.DataFrame(
        [{**dict(zip(keys, key)), "margin": float(m)} for key, (_, m) in realized.items()],
        schema={**{k: frame.schema[k] for k in keys}, "margin": pl.Float64},
    )
    frame = frame.drop("margin").join(margins, on=keys, how="left", nulls_equal=True).select(frame.columns)
    return frame, realized


def _decide(
    table: CohortTable, per: pl.DataFrame, costs: Costs, curves: dict[tuple[Any, ...], list[float]] | None
) -> pl.DataFrame:
    """Per cohort: ``ltv_cac``, ``drr``, ``romi``, payback (age, basis, status, words), ``verdict``
    and ``verdict_basis``. Observed values are decided exactly: LTV/CAC is margin × revenue to date
    ÷ spend (the customers cancel), payback the first complete age whose margin × cumulative
    revenue reaches the spend, in exact fractions of the exact sums, the margin and the spend as
    written. Projected values (``curves`` given, the row flagged ``__projection``) come from float
    chain-ladder factors, so they are decided on the float. DRR and ROMI use the same revenue as
    the LTV: to date, or to the horizon on the projection."""
    keys = _keys(table)
    cum = _exact_revenue(table)
    cum_value = _exact_values(table, costs, cum)
    h = table.horizon
    out = []
    for r in per.select([*keys, "cohort_size", "customers", "ltr", "__projection"]).iter_rows(named=True):
        key = _key_of(r, keys)
        spend, margin = costs[key]
        revenue, values = cum.get(key, []), cum_value.get(key, [])
        observed = len(revenue)
        projection = bool(r["__projection"])
        curve = curves.get(key) if curves is not None and projection else None
        basis = PROJECTED if projection else _observed_basis(observed, table.period)
        # The revenue the value rests on: to the horizon on the projection, else to date, exactly.
        value_revenue: Fraction | float | None
        if projection:
            value_revenue = r["ltr"] * r["cohort_size"]
        elif curves is not None and r["ltr"] is None:
            value_revenue = None  # asked for projected values, and this cohort has none
        else:
            value_revenue = revenue[-1] if revenue else Fraction(0)
        # The value (LTV's numerator) on the same basis: profit or margin × revenue to date, exactly;
        # on the projection, the projected revenue × the (realized) margin.
        value: Fraction | float | None = None
        if projection and value_revenue is not None:
            value = margin * value_revenue
        elif value_revenue is not None:
            value = values[-1] if values else Fraction(0)
        customers = r["customers"] or 0
        ratio: Fraction | float | None = None
        revenue_ratio: Fraction | float | None = None
        if spend is not None and spend > 0 and customers and value is not None and value_revenue is not None:
            ratio = value / spend
            revenue_ratio = value_revenue / spend
        if spend is not None and spend > 0 and not customers:
            verdict: str | None = NO_CUSTOMERS if basis == OBSERVED else TOO_EARLY_NO_CUSTOMERS
        else:
            verdict = _judged(ratio, basis)
        drr = romi = None
        if spend is not None and value_revenue is not None and value is not None:
            drr = float(spend / value_revenue) if value_revenue > 0 else None
            romi = float((value - spend) / spend) if spend > 0 else None
        payback = payback_basis = status = words = None
        if spend is not None and customers:
            payback = next((a for a, v in enumerate(values) if v >= spend), None)
            payback_basis = OBSERVED if payback is not None else None
            if payback is None and curve is not None:
                size = r["cohort_size"]
                payback = next((a for a in range(observed, h) if margin * (curve[a] * size) >= spend), None)
                payback_basis = PROJECTED if payback is not None else None
            status = _payback_status_of(payback, table.period, observed)
            words = _payback_words(payback, payback_basis, observed, h if curve is not None else None, table.period)
        elif spend is not None and spend > 0:
            words = NEVER_PAID_BACK
        out.append(
            {
                **dict(zip(keys, key)),
                "ltv_cac": None if ratio is None else float(ratio),
                "ltr_cac": None if revenue_ratio is None else float(revenue_ratio),
                "drr": drr,
                "romi": romi,
                "payback_age": payback,
                "payback_basis": payback_basis,
                "payback_status": status,
                "payback": words,
                "verdict": verdict,
                "verdict_basis": None if verdict is None else basis,
            }
        )
    decided: dict[str, pl.DataType] = {
        "ltv_cac": pl.Float64(),
        "ltr_cac": pl.Float64(),
        "drr": pl.Float64(),
        "romi": pl.Float64(),
        "payback_age": pl.Int64(),
        "payback_basis": pl.String(),
        "payback_status": pl.String(),
        "payback": pl.String(),
        "verdict": pl.String(),
        "verdict_basis": pl.String(),
    }
    return pl.DataFrame(out, schema={**{k: per.schema[k] for k in keys}, **decided})


# --------------------------------------------------------------------------------------------------
# one row per channel


@dataclass(frozen=True)
class _Cohort:
    """One cohort's inputs to the pooled channel row."""

    size: int
    customers: int
    spend: Fraction | None
    margin: Fraction
    revenue: list[Fraction]  # exact cumulative revenue at each observed age
    values: list[Fraction]  # exact cumulative value (profit, or margin × revenue) at each observed age
    curve: list[float] | None  # cumulative revenue at every age to the horizon (observed, else projected)
    basis: str  # of its value: observed, projected or too young
    value_revenue: Fraction | float  # the revenue its value rests on: to date, or to the horizon projected
    value: Fraction | float  # the value on the same basis
    equity: float | None  # its customer equity (CLV summed over the cohort)


def channels(
    table: CohortTable,
    spend: Any = None,
    margin: float | str | None = None,
    discount_rate: float = 0.0,
    cac: Any = None,
    projected: bool | Literal["auto"] = "auto",
) -> pl.DataFrame:
    """One row per channel (each value of the ``by`` columns), pooled over its cohorts, then a
    ``total`` row over every cohort (``by`` columns null, ``total`` true; without ``by`` the total
    row is the only row).

    Columns: ``cohorts``, ``signups``, ``customers``, ``spend`` (all of it, from cohorts with or
    without customers) and ``cac = spend ÷ customers`` (null without customers). LTR and LTV per
    customer at the horizon: ``…_observed`` over the cohorts observed to the horizon
    (``cohorts_observed_to_horizon``), ``…_projected`` over the cohorts observed or projected to it
    (``cohorts_projected_to_horizon``), each Σ revenue (× margin) at the horizon ÷ Σ their
    customers so far. ``ltv_cac = Σ margin × revenue ÷ Σ spend`` over the cohorts with spend, each
    cohort's revenue on its basis as in ``metrics(projected=…)`` (default ``"auto"``: to the
    horizon where projected, else to date; with ``projected=True`` a cohort the projection cannot
    reach counts with its revenue to date rather than being left out); ``drr = Σ spend ÷ Σ revenue`` and ``romi = (Σ margin ×
    revenue − Σ spend) ÷ Σ spend`` on the same revenue. ``verdict`` and ``verdict_basis``:
    ``projected`` when any of those cohorts is, else ``observed`` when any is, else ``too young``;
    exact when no value is projected. A channel with spend and no customer: CAC null, verdict "no
    customers: all spend lost". Payback: the first age at which the pooled cumulative margin of the
    cohorts with spend that reach the horizon (observed or projected) covers their pooled spend,
    ``projected`` unless every one of them was observed at that age; without such cohorts, over
    the ages every cohort with spend has observed. ``customer_equity``: Σ CLV over the customers
    (on each cohort's basis), with ``clv_per_signup`` and ``clv_per_customer``. ``ltr_cac = Σ revenue
    ÷ Σ spend`` is revenue-based; without ``margin`` it is the only ratio (``CHANNEL_PROFIT_COLUMNS``
    are null, as in ``metrics``).
    """
    mode = _projection_mode(projected)
    rate = _discount_rate(discount_rate)
    costs, exact_costs = _costs(table, spend, cac, margin)
    keys = _keys(table)
    per = _metrics_of(table, costs, exact_costs, rate, mode)
    cum = _exact_revenue(table)
    cum_value = _exact_values(table, exact_costs, cum)
    h = table.horizon
    curves: dict[tuple[Any, ...], list[float]] = {}
    for row in project(table).sort([*keys, "age"], nulls_last=True).group_by(keys, maintain_order=True).agg(pl.col("ltr")).iter_rows(named=True):
        if all(v is not None for v in row["ltr"]):
            curves[_key_of(row, keys)] = row["ltr"]
    groups: dict[tuple[Any, ...], list[_Cohort]] = {}
    for r in per.iter_rows(named=True):
        key = _key_of(r, keys)
        sp, mg = exact_costs[key]
        revenue = cum.get(key, [])
        ltr_curve = curves.get(key)
        curve = None if ltr_curve is None else [v * r["cohort_size"] for v in ltr_curve]
        projection = bool(r["__projection"])
        values = cum_value.get(key, [])
        value_revenue: Fraction | float = r["ltr"] * r["cohort_size"] if projection else (revenue[-1] if revenue else Fraction(0))
        cohort = _Cohort(
            size=r["cohort_size"],
            customers=r["customers"],
            spend=sp,
            margin=mg,
            revenue=revenue,
            values=values,
            curve=curve,
            basis=PROJECTED if projection else _observed_basis(len(revenue), table.period),
            value_revenue=value_revenue,
            value=mg * value_revenue if projection else (values[-1] if values else Fraction(0)),
            equity=r["customer_equity"],
        )
        groups.setdefault(key[:-1], []).append(cohort)
    rows = [{**dict(zip(table.by, segment)), "total": False, **_pooled(cohorts, h, table.period)} for segment, cohorts in groups.items()]
    if table.by or not rows:
        everything = [c for cohorts in groups.values() for c in cohorts]
        rows.append({**{b: None for b in table.by}, "total": True, **_pooled(everything, h, table.period)})
    else:
        rows[0]["total"] = True  # without segments the one group is the total
    schema: dict[str, Any] = {b: per.schema[b] for b in table.by}
    schema.update(CHANNEL_SCHEMA)
    out = pl.DataFrame(rows, schema=schema)
    out = out.with_columns(pl.col("verdict").replace_strict(ADVICE, default=None, return_dtype=pl.String).alias("advice"))
    return out if _judges_profit(table, margin) else _without(out, CHANNEL_PROFIT_COLUMNS)


CHANNEL_SCHEMA: dict[str, Any] = {
    "total": pl.Boolean,
    "cohorts": pl.Int64,
    "signups": pl.Int64,
    "customers": pl.Int64,
    "spend": pl.Float64,
    "cac": pl.Float64,
    "cohorts_observed_to_horizon": pl.Int64,
    "ltr_per_customer_observed": pl.Float64,
    "ltv_per_customer_observed": pl.Float64,
    "cohorts_projected_to_horizon": pl.Int64,
    "ltr_per_customer_projected": pl.Float64,
    "ltv_per_customer_projected": pl.Float64,
    "ltv_cac": pl.Float64,
    "ltr_cac": pl.Float64,
    "verdict": pl.String,
    "verdict_basis": pl.String,
    "payback_age": pl.Int32,
    "payback_basis": pl.String,
    "payback_status": pl.String,
    "payback": pl.String,
    "drr": pl.Float64,
    "romi": pl.Float64,
    "clv_per_signup": pl.Float64,
    "clv_per_customer": pl.Float64,
    "customer_equity": pl.Float64,
}


def _per(num: Fraction | float, den: Fraction | float | int) -> float | None:
    return None if not den else float(num / den)


def _pooled(cohorts: list[_Cohort], h: int, period: str) -> dict[str, Any]:
    """The pooled values of one channel's (or all) cohorts; see ``channels``."""
    signups = sum(c.size for c in cohorts)
    customers = sum(c.customers for c in cohorts)
    paid = [c for c in cohorts if c.spend is not None]
    spend = sum((c.spend for c in paid if c.spend is not None), Fraction(0)) if paid else None
    mature = [c for c in cohorts if len(c.revenue) == h]
    reach = [c for c in cohorts if c.curve is not None]
    out: dict[str, Any] = {
        "cohorts": len(cohorts),
        "signups": signups,
        "customers": customers,
        "spend": None if spend is None else float(spend),
        "cac": None if spend is None or not customers else float(spend / customers),
        "cohorts_observed_to_horizon": len(mature),
        "ltr_per_customer_observed": _per(sum((c.revenue[-1] for c in mature), Fraction(0)), sum(c.customers for c in mature)),
        "ltv_per_customer_observed": _per(sum((c.values[-1] for c in mature), Fraction(0)), sum(c.customers for c in mature)),
        "cohorts_projected_to_horizon": len(reach),
        "ltr_per_customer_projected": _per(sum(c.curve[-1] for c in reach if c.curve), sum(c.customers for c in reach)),
        "ltv_per_customer_projected": _per(sum(float(c.margin) * c.curve[-1] for c in reach if c.curve), sum(c.customers for c in reach)),
    }
    equities = [c.equity for c in cohorts]
    equity = None if any(e is None for e in equities) else sum(e for e in equities if e is not None)
    out.update(
        customer_equity=equity,
        clv_per_signup=None if equity is None else _per(equity, signups),
        clv_per_customer=None if equity is None else _per(equity, customers),
    )
    verdict = basis = ratio = revenue_ratio = drr = romi = None
    payback: tuple[int | None, str | None, str | None, str | None] = (None, None, None, None)
    if spend is not None:
        bases = {c.basis for c in paid}
        basis = PROJECTED if PROJECTED in bases else OBSERVED if OBSERVED in bases else TOO_YOUNG
        revenue: Fraction | float = sum((c.value_revenue for c in paid), Fraction(0))
        value: Fraction | float = sum((c.value for c in paid), Fraction(0))
        paid_customers = sum(c.customers for c in paid)
        drr = float(spend / revenue) if revenue > 0 else None
        if spend > 0:
            romi = float((value - spend) / spend)
            if paid_customers:
                ratio = value / spend
                revenue_ratio = revenue / spend
                verdict = _judged(ratio, basis)
            else:
                verdict = NO_CUSTOMERS if basis == OBSERVED else TOO_EARLY_NO_CUSTOMERS
        if paid_customers:
            payback = _pooled_payback(paid, h, period)
        elif spend > 0:
            payback = (None, None, None, NEVER_PAID_BACK)
    out.update(
        ltv_cac=None if ratio is None else float(ratio),
        ltr_cac=None if revenue_ratio is None else float(revenue_ratio),
        verdict=verdict,
        verdict_basis=None if verdict is None else basis,
        payback_age=payback[0],
        payback_basis=payback[1],
        payback_status=payback[2],
        payback=payback[3],
        drr=drr,
        romi=romi,
    )
    return out


def _pooled_payback(paid: list[_Cohort], h: int, period: str) -> tuple[int | None, str | None, str | None, str | None]:
    """(age, basis, status, words) of the pooled payback of cohorts with spend; see ``channels``."""
    full = [c for c in paid if c.curve is not None]
    if full:
        spend = sum((c.spend for c in full if c.spend is not None), Fraction(0))
        for age in range(h):
            # exact where observed, the projection beyond
            margin_so_far = sum(
                (c.values[age] if age < len(c.values) else c.margin * c.curve[age] for c in full if c.curve),
                Fraction(0),
            )
            if margin_so_far >= spend:
                basis = OBSERVED if all(age < len(c.revenue) for c in full) else PROJECTED
                return age, basis, _payback_status_of(age, period, h), _payback_words(age, basis, h, None, period)
        projected = any(len(c.revenue) < h for c in full)
        words = f"not within the horizon ({_periods(h, period)}{', projected' if projected else ''})"
        return None, None, _payback_status_of(None, period, h), words
    spend = sum((c.spend for c in paid if c.spend is not None), Fraction(0))
    observed = min(len(c.revenue) for c in paid)
    for age in range(observed):
        if sum((c.values[age] for c in paid), Fraction(0)) >= spend:
            return age, OBSERVED, _payback_status_of(age, period, observed), _payback_words(age, OBSERVED, observed, None, period)
    return None, None, _payback_status_of(None, period, observed), _payback_words(None, None, observed, None, period)


# --------------------------------------------------------------------------------------------------
# the text report


#: Months of complete data below which the summary says seasonality cannot be judged.
SEASONALITY_MONTHS = 12


def _money(value: float | None) -> str:
    return "undefined" if value is None else f"{value:,.2f}"


def summary(
    table: CohortTable,
    spend: Any = None,
    margin: float | str | None = None,
    discount_rate: float = 0.0,
    cac: Any = None,
    min_size: int = 30,
    projected: bool | Literal["auto"] = "auto",
) -> str:
    """A short plain-language report: best and worst cohorts, the channels, verdicts, payback, next
    step. Values are projected where a projection exists (``projected="auto"``), and the report says
    so. Cohorts with fewer than ``min_size`` members are rated but never named best or worst, nor
    are too-young cohorts while an older one can be named."""
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise InvalidArgumentError(f"min_size must be a non-negative integer; got {min_size!r}")
    mode = _projection_mode(projected)
    rate = _discount_rate(discount_rate)
    costs, exact_costs = _costs(table, spend, cac, margin)
    m = _metrics_of(table, costs, exact_costs, rate, mode).drop("__projection")
    lines = [
        f"{m.height} cohort(s), {table.period}ly, horizon {table.horizon}, tz {table.tz}; "
        f"last complete {table.period}: {table.last_complete}."
    ]
    if table.last_complete is None or m.height == 0 or int(m.get_column("observed_ages").sum()) == 0:
        lines.append(
            f"No complete {table.period} yet: every cell is still running (as_of {table.as_of or 'the last order'}), "
            "so there is nothing to judge."
        )
        return "\n".join(lines)
    first = min(table.cohorts)
    span = (_next_period(table.last_complete, table.period) - first).days
    if span < 365:
        lines.append(
            f"Fewer than {SEASONALITY_MONTHS} complete months of data ({span / 30.4375:.0f}): seasonality cannot be judged yet."
        )
    rated = m.filter(pl.col("verdict").is_not_null())
    if not _judges_profit(table, margin) and rated.height:
        return "\n".join(lines + _revenue_based_lines(table, spend, discount_rate, cac, mode))
    if rated.height == 0:
        mean_ltr = m.select(pl.col("ltr").mean()).item() or 0.0
        lines.append(
            "No acquisition cost given: pass spend= or cac= to get LTV/CAC, payback and verdicts. "
            f"Mean LTR to date per signup: {mean_ltr:,.2f}."
        )
        return "\n".join(lines)
    bases = {r["verdict_basis"]: r["len"] for r in rated.group_by("verdict_basis").len().iter_rows(named=True)}
    lines.append(
        "Judged on "
        + ", ".join(
            f"{bases[b]} {b}" for b in (PROJECTED, OBSERVED, TOO_YOUNG) if b in bases
        )
        + f" cohort(s): projected means chain-ladder to the horizon ({_periods(table.horizon, table.period)}), used "
        f"wherever a projection exists; too young means fewer than {MIN_OBSERVED_MONTHS} observed months and no projection."
    )

    def label(row: dict[str, Any]) -> str:
        seg = ", ".join(f"{b}={row[b]}" for b in table.by)
        return f"{row['cohort']}" + (f" ({seg})" if seg else "")

    named = rated.filter(pl.col("cohort_size") >= min_size)
    judged = named.filter(pl.col("verdict_basis") != TOO_YOUNG)
    worst = None
    if named.height == 0:
        lines.append(f"No rated cohort has {min_size} members or more: best and worst are not named (min_size).")
    else:
        if judged.height == 0:
            lines.append("Every cohort large enough to name is too young: the two named below are judged only so far.")
            judged = named
        # no customers ranks last: its LTV/CAC is undefined, and all its spend is lost
        order = pl.col("ltv_cac").fill_null(float("-inf"))
        best = judged.sort(order, descending=True, maintain_order=True).row(0, named=True)
        worst = judged.sort(order, maintain_order=True).row(0, named=True)
        for name, row in (("Best", best), ("Worst", worst)):
            ratio = "undefined" if row["ltv_cac"] is None else f"{row['ltv_cac']:.2f}"
            lines.append(
                f"{name} cohort: {label(row)}, LTV/CAC {ratio} ({row['verdict']}; {row['verdict_basis']}) after "
                f"{_periods(row['observed_ages'], table.period, 'observed')}"
                + (f"; payback {row['payback']}" if row["payback"] else "")
                + (f": {row['payback_status']}." if row["payback_status"] else ".")
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpendIgnoredWarning)  # said once already, above
        per_channel = channels(table, spend=spend, margin=margin, discount_rate=discount_rate, cac=cac, projected=mode)
    if table.by:
        lines.append("By channel (all cohorts pooled; spend from every cohort, with or without customers):")
        segments = per_channel.filter(~pl.col("total")).sort(
            pl.col("ltv_cac").fill_null(float("-inf")), descending=True, maintain_order=True
        )
        for row in segments.iter_rows(named=True):
            seg = ", ".join(f"{b}={row[b]}" for b in table.by)
            lines.append("  " + _channel_line(seg, row))
    total = per_channel.filter(pl.col("total")).row(0, named=True)
    lines.append(_channel_line("All cohorts", total) + f" Customer equity {_money(total['customer_equity'])}.")
    counts = rated.group_by("verdict").len().sort("verdict")
    lines.append(
        "Verdicts: " + ", ".join(f"{r['len']} {r['verdict']}" for r in counts.iter_rows(named=True)) + "."
    )
    statuses = rated.filter(pl.col("payback_status").is_not_null()).group_by("payback_status").len().sort("len", descending=True)
    if statuses.height:
        lines.append(
            "Payback: " + ", ".join(f"{r['len']} {r['payback_status']}" for r in statuses.iter_rows(named=True)) + "."
        )
    if worst is not None:
        lines.append("Next: " + ADVICE[worst["verdict"]])
    return "\n".join(lines)


def _revenue_based_lines(table: CohortTable, spend: Any, discount_rate: float, cac: Any, mode: Any) -> list[str]:
    """The summary without a margin: LTR/CAC per channel, revenue-based, and no verdict."""
    lines = [
        "No margin given, so no LTV, payback or verdict: a profit judgement needs the gross margin (margin=, "
        "--margin on the command line). LTR/CAC below is revenue-based; LTV/CAC = LTR/CAC × margin."
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpendIgnoredWarning)  # said once already
        per_channel = channels(table, spend=spend, discount_rate=discount_rate, cac=cac, projected=mode)

    def line(name: str, row: dict[str, Any]) -> str:
        ratio = "undefined (no customers)" if row["ltr_cac"] is None else f"{row['ltr_cac']:.2f}"
        return (
            f"{name}: LTR/CAC {ratio}, revenue-based; spend {_money(row['spend'])}, {row['customers']:,} customers, "
            f"CAC {_money(row['cac'])}."
        )

    if table.by:
        lines.append("By channel (all cohorts pooled):")
        segments = per_channel.filter(~pl.col("total")).sort(
            pl.col("ltr_cac").fill_null(float("-inf")), descending=True, maintain_order=True
        )
        lines += ["  " + line(", ".join(f"{b}={row[b]}" for b in table.by), row) for row in segments.iter_rows(named=True)]
    lines.append(line("All cohorts", per_channel.filter(pl.col("total")).row(0, named=True)))
    return lines


def _channel_line(name: str, row: dict[str, Any]) -> str:
    """One channel (or the total) in words."""
    if row["verdict"] is None:
        return f"{name}: spend {_money(row['spend'])}, no verdict (no spend to judge)."
    ratio = "undefined" if row["ltv_cac"] is None else f"{row['ltv_cac']:.2f}"
    payback = f"; payback {row['payback']}" if row["payback"] else ""
    payback += f": {row['payback_status']}" if row["payback_status"] else ""
    return (
        f"{name}: LTV/CAC {ratio}, {row['verdict']} ({row['verdict_basis']}); spend {_money(row['spend'])}, "
        f"{row['customers']:,} customers, CAC {_money(row['cac'])}{payback}."
    )
