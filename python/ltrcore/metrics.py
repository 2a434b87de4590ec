"""Unit economics over a ``CohortTable``: LTR, ARPPU, AOV, retention, CAC, LTV, CLV, LTV/CAC, payback,
chain-ladder projection, and a plain-language summary.

Definitions follow DOMAIN.md. Per-signup values (``ltr``, ``ltv``, ``clv``) divide by the cohort size;
CAC divides acquisition spend by the customers acquired (members with a paying order), so the ratio
``ltv_cac`` compares like with like: ``ltv_per_customer / cac``, which equals the cohort's lifetime
margin divided by its acquisition spend. Incomplete cells stay null, and a ratio whose denominator is
zero is null, never inf or NaN.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from .table import CohortTable

#: Months in one period, for discounting and payback bands.
MONTHS_PER_PERIOD = {"month": 1.0, "quarter": 3.0, "week": 12 / 52.1775, "day": 12 / 365.25}

HEALTHY, MARGINAL, LOSING = "healthy", "marginal", "losing money"
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
    """Revenue per paying user in each cell."""
    return table.to_polars().select(
        [*_keys(table), "age", _ratio(pl.col("revenue"), pl.col("payers")).alias("arppu"), "complete"]
    )


def aov(table: CohortTable) -> pl.DataFrame:
    """Average order value in each cell."""
    return table.to_polars().select(
        [*_keys(table), "age", _ratio(pl.col("revenue"), pl.col("orders")).alias("aov"), "complete"]
    )


def retention(table: CohortTable) -> pl.DataFrame:
    """Paying retention (payers ÷ cohort size) and activity retention (active ÷ cohort size)."""
    return table.to_polars().select(
        [
            *_keys(table),
            "age",
            _ratio(pl.col("payers"), pl.col("cohort_size")).alias("paying_retention"),
            _ratio(pl.col("active"), pl.col("cohort_size")).cast(pl.Float64).alias("activity_retention"),
            "complete",
        ]
    )


def repeat_rate(table: CohortTable) -> pl.DataFrame:
    """Share of each cohort with two or more paying orders within the complete ages."""
    stats = table.cohort_stats()
    return stats.with_columns(_ratio(pl.col("repeaters"), pl.col("cohort_size")).alias("repeat_rate"))


# --------------------------------------------------------------------------------------------------
# projection


def project(table: CohortTable, method: str = "chain_ladder", min_cohorts: int = 3, min_size: int = 30) -> pl.DataFrame:
    """The LTR curve with not-yet-observed cells filled by volume-weighted chain-ladder factors.

    Factors are estimated per segment from cumulative revenue: f_k = Σ cum(c, k+1) / Σ cum(c, k) over
    the cohorts c whose age k+1 is complete. A factor estimated from fewer than ``min_cohorts`` cohorts
    is refused. Cohorts smaller than ``min_size`` are flagged ``small_cohort``: their projection rests
    on few people.
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
            if mature.sum() < min_cohorts:
                first = part.row(0, named=True)
                label = " for " + ", ".join(f"{b}={first[b]!r}" for b in table.by) if table.by else ""
                raise InvalidArgumentError(
                    f"cannot project age {k} → {k + 1}{label}: only {int(mature.sum())} cohort(s) have reached "
                    f"age {k + 1}; the chain-ladder needs at least min_cohorts={min_cohorts}"
                )
            den = cum[mature, k].sum()
            factor = cum[mature, k + 1].sum() / den if den != 0 else 1.0
            fill = ~observed[:, k + 1]
            filled[fill, k + 1] = filled[fill, k] * factor
        ltr_values = filled / size[:, None]
        parts.append(
            part.select([*keys, "age"]).with_columns(
                pl.Series("ltr", ltr_values.reshape(-1)),
                pl.Series("projected", (~observed).reshape(-1)),
                pl.Series("small_cohort", np.repeat(size < min_size, h)),
            )
        )
    if not parts:
        return curve.select([*keys, "age", "ltr"]).with_columns(
            pl.lit(False).alias("projected"), pl.lit(False).alias("small_cohort")
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


def _unmatched(table: CohortTable, periods: set[dt.date], cohorts: set[dt.date]) -> list[dt.date]:
    """Periods with no cohort. Only the running period (the one after the last complete period) is
    let through: a monthly job's spend table usually has it, and its cohort is simply not reported
    yet. Any other period (a typo such as 2030 for 2023) is an error."""
    running = _next_period(table.last_complete, table.period) if table.last_complete else None
    return sorted(p for p in periods - cohorts if p != running)


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


def _spend_per_cohort(table: CohortTable, spend: Any, cac: Any, margin: Any) -> pl.DataFrame:
    """Per (segment…, cohort): ``spend`` and ``margin`` (Float64; spend null when neither given)."""
    cohorts = _cohort_frame(table)
    keys = _keys(table)
    if spend is not None and cac is not None:
        raise InvalidArgumentError("pass either spend or cac, not both")
    margin_column = margin if isinstance(margin, str) else None
    if margin_column is None:
        _check_margin(margin)
    elif not _is_table(spend):
        raise InvalidArgumentError(f"margin={margin!r} names a column, which needs a spend table")

    def by_period(values: Mapping[Any, Any] | float | int, what: str) -> pl.DataFrame:
        """Per-period amounts (or one amount for every period), split over segments by customers."""
        periods = cohorts.get_column("cohort").unique().to_list()
        if isinstance(values, Mapping):
            amounts: dict[dt.date, float] = {}
            for k, v in values.items():
                key = _period_key(k, what, table.period)
                amounts[key] = amounts.get(key, 0.0) + float(v)
            unknown = _unmatched(table, set(amounts), set(periods))
            if unknown:
                raise InvalidArgumentError(
                    f"{what} has period(s) with no cohort: {', '.join(map(str, unknown))}; cohorts run "
                    f"from {min(periods) if periods else '-'} to {max(periods) if periods else '-'}"
                )
        else:
            amounts = {p: float(values) for p in periods}
        if any(not np.isfinite(v) or v < 0 for v in amounts.values()):
            raise InvalidArgumentError(f"{what} must be finite and non-negative")
        frame = pl.DataFrame({"cohort": list(amounts), "__total": list(amounts.values())}, schema={"cohort": pl.Date, "__total": pl.Float64})
        out = cohorts.join(frame, on="cohort", how="left")
        share = _ratio(pl.col("customers").cast(pl.Float64), pl.col("customers").sum().over("cohort").cast(pl.Float64))
        if table.by:
            # Spend without a channel: split over the period's segments by the customers they brought.
            out = out.with_columns((pl.col("__total") * share).alias("spend"))
        else:
            out = out.with_columns(pl.col("__total").alias("spend"))
        return out.select([*keys, "spend"])

    if cac is not None:
        if isinstance(cac, Mapping):
            per = {_period_key(k, "cac", table.period): float(v) for k, v in cac.items()}
            if any(not np.isfinite(v) or v < 0 for v in per.values()):
                raise InvalidArgumentError("cac must be finite and non-negative")
            unknown = _unmatched(table, set(per), set(cohorts.get_column("cohort").to_list()))
            if unknown:
                raise InvalidArgumentError(f"cac has period(s) with no cohort: {', '.join(map(str, unknown))}")
            cac_frame = pl.DataFrame({"cohort": list(per), "__cac": list(per.values())}, schema={"cohort": pl.Date, "__cac": pl.Float64})
            out = cohorts.join(cac_frame, on="cohort", how="left")
        else:
            value = float(cac)
            if not np.isfinite(value) or value < 0:
                raise InvalidArgumentError(f"cac must be finite and non-negative; got {cac!r}")
            out = cohorts.with_columns(pl.lit(value).alias("__cac"))
        out = out.with_columns((pl.col("__cac") * pl.col("customers")).alias("spend"))
        return out.select([*keys, "spend"]).with_columns(pl.lit(float(margin)).alias("margin"))

    if spend is None:
        return cohorts.select(keys).with_columns(pl.lit(None, pl.Float64).alias("spend"), pl.lit(float(margin)).alias("margin"))
    if isinstance(spend, (int, float, Mapping)) and not isinstance(spend, bool):
        return by_period(spend, "spend").with_columns(pl.lit(float(margin)).alias("margin"))
    return _spend_table(table, cohorts, _spend_frame(spend), margin, margin_column, by_period)


def _check_margin(margin: Any) -> None:
    try:
        value = float(margin)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"margin must be a number in (0, 1] or a spend-table column; got {margin!r}") from None
    if not 0 < value <= 1:
        raise InvalidArgumentError(f"margin must be in (0, 1]; got {margin!r}")


def _spend_table(
    table: CohortTable, cohorts: pl.DataFrame, frame: pl.DataFrame, margin: Any, margin_column: str | None, by_period: Any
) -> pl.DataFrame:
    keys = _keys(table)
    period_col = next((c for c in ("period", "month") if c in frame.columns), None)
    if period_col is None:
        raise InvalidArgumentError(f"the spend table needs a 'period' or 'month' column; it has {frame.columns}")
    channel_cols = [c for c in frame.columns if c in table.by]
    detailed = [c for c in SPEND_COMPONENTS if c in frame.columns]
    has_total = "spend" in frame.columns
    if has_total and detailed:
        raise InvalidArgumentError("the spend table has both 'spend' and detailed components; use one or the other")
    if not has_total and not detailed:
        raise InvalidArgumentError(
            f"the spend table needs a 'spend' column or the components {', '.join(SPEND_COMPONENTS)}; it has {frame.columns}"
        )
    known = {period_col, "spend", *SPEND_COMPONENTS, *channel_cols, *([margin_column] if margin_column else [])}
    unknown = [c for c in frame.columns if c not in known]
    if unknown:
        raise InvalidArgumentError(
            f"spend column(s) {unknown} are not understood: a channel column must be one of by={table.by}, "
            f"amounts are 'spend' or {', '.join(SPEND_COMPONENTS)}"
        )
    if margin_column is not None and margin_column not in frame.columns:
        raise InvalidArgumentError(f"margin column {margin_column!r} is not in the spend table ({frame.columns})")
    if len(channel_cols) > 1:
        raise InvalidArgumentError(f"the spend table may have one channel column; it has {channel_cols}")
    channel = channel_cols[0] if channel_cols else None
    parts = [pl.col(c).cast(pl.Float64).fill_null(0.0) for c in (["spend"] if has_total else detailed)]
    frame = frame.with_columns(
        pl.col(period_col).map_elements(lambda v: _period_key(v, "spend", table.period), return_dtype=pl.Date).alias("cohort"),
        pl.sum_horizontal(parts).alias("__total"),
        (pl.col("spend") if has_total else pl.col("campaign") if "campaign" in detailed else pl.lit(0.0))
        .cast(pl.Float64)
        .fill_null(0.0)
        .alias("__weight"),
    )
    bad = frame.filter(pl.any_horizontal([(p < 0) | p.is_nan() | p.is_infinite() for p in parts]))
    if bad.height:
        raise InvalidArgumentError(f"spend must be finite and not negative; first bad row: {bad.row(0, named=True)}")
    periods = set(cohorts.get_column("cohort").to_list())
    unknown_periods = _unmatched(table, set(frame.get_column("cohort").to_list()), periods)
    if unknown_periods:
        raise InvalidArgumentError(
            f"spend has period(s) with no cohort: {', '.join(map(str, unknown_periods))}"
        )
    frame = frame.filter(pl.col("cohort").is_in(list(periods)))
    margins = None
    if margin_column is not None:
        m = frame.get_column(margin_column).drop_nulls()
        if m.len() and ((m <= 0).any() or (m > 1).any()):
            raise InvalidArgumentError(f"margin column {margin_column!r} must be in (0, 1]")
        margins = frame.filter(pl.col(margin_column).is_not_null()).group_by(
            ["cohort", *([channel] if channel else [])]
        ).agg(pl.col(margin_column).cast(pl.Float64).mean().alias("margin"))

    if channel is None:
        totals = frame.group_by("cohort").agg(pl.col("__total").sum())
        out = by_period(dict(zip(totals.get_column("cohort"), totals.get_column("__total"))), "spend")
    else:
        values = set(cohorts.get_column(channel).to_list())
        listed = frame.filter(pl.col(channel).is_not_null())
        unknown_values = sorted(set(listed.get_column(channel).to_list()) - values, key=str)
        if unknown_values:
            raise InvalidArgumentError(
                f"spend has {channel} value(s) unknown to the cohorts: {unknown_values}; known: {sorted(values, key=str)}"
            )
        direct = listed.group_by(["cohort", channel]).agg(pl.col("__total").sum(), pl.col("__weight").sum())
        missing = direct.join(cohorts.select(["cohort", channel]).unique(), on=["cohort", channel], how="anti", nulls_equal=True)
        if missing.height:
            raise InvalidArgumentError(
                f"spend for {missing.row(0, named=True)['cohort']} / {channel}="
                f"{missing.row(0, named=True)[channel]!r} has no cohort to charge it to"
            )
        overhead = frame.filter(pl.col(channel).is_null()).group_by("cohort").agg(pl.col("__total").sum().alias("__overhead"))
        # Every (period, channel) that has a cohort, with its direct spend and weight.
        slots = cohorts.select(["cohort", channel]).unique().join(
            direct, on=["cohort", channel], how="left", nulls_equal=True
        ).with_columns(
            pl.col("__total").fill_null(0.0), pl.col("__weight").fill_null(0.0)
        )
        slots = slots.join(overhead, on="cohort", how="left").with_columns(pl.col("__overhead").fill_null(0.0))
        weight_sum = pl.col("__weight").sum().over("cohort")
        equal = 1.0 / pl.len().over("cohort")
        share = pl.when(weight_sum > 0).then(pl.col("__weight") / weight_sum).otherwise(equal)
        slots = slots.with_columns((pl.col("__total") + pl.col("__overhead") * share).alias("__channel_spend"))
        out = cohorts.join(
            slots.select(["cohort", channel, "__channel_spend"]), on=["cohort", channel], how="left", nulls_equal=True
        )
        # Several `by` columns: split a channel's spend over its other segments by customers.
        if len(table.by) > 1:
            share_c = _ratio(pl.col("customers").cast(pl.Float64), pl.col("customers").sum().over(["cohort", channel]).cast(pl.Float64))
            out = out.with_columns((pl.col("__channel_spend") * share_c).alias("spend"))
        else:
            out = out.with_columns(pl.col("__channel_spend").alias("spend"))
        out = out.select([*keys, "spend"])
    if margins is not None:
        on = ["cohort", *([channel] if channel else [])]
        out = out.join(margins, on=on, how="left", nulls_equal=True)
        if out.get_column("margin").null_count():
            raise InvalidArgumentError(f"margin column {margin_column!r} has no value for some cohorts")
    else:
        out = out.with_columns(pl.lit(float(margin)).alias("margin"))
    return out.select([*keys, "spend", "margin"])


def metrics(
    table: CohortTable,
    spend: Any = None,
    margin: float | str = 1.0,
    discount_rate: float = 0.0,
    cac: Any = None,
    projected: bool = False,
) -> pl.DataFrame:
    """One row per (segment…, cohort) with LTR, LTV, CLV, CAC, LTV/CAC, payback and a verdict."""
    try:
        rate = float(discount_rate)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"discount_rate must be a number; got {discount_rate!r}") from None
    if not np.isfinite(rate) or rate < 0:
        raise InvalidArgumentError(f"discount_rate must be a non-negative annual rate; got {discount_rate!r}")
    keys = _keys(table)
    months = MONTHS_PER_PERIOD[table.period]
    costs = _spend_per_cohort(table, spend, cac, margin)
    cells = ltr(table)
    if projected:
        proj = project(table).with_columns(
            (pl.col("ltr").diff().over(keys, order_by="age").fill_null(pl.col("ltr"))).alias("__ltr_step")
        )
        cells = cells.join(proj.select([*keys, "age", pl.col("ltr").alias("__ltr_p"), "__ltr_step"]), on=[*keys, "age"], how="left", nulls_equal=True)
        per_age = pl.col("__ltr_step") * pl.col("cohort_size")
        revenue_for_value = per_age
        ltr_value = pl.col("__ltr_p").filter(pl.col("age") == table.horizon - 1).first()
    else:
        revenue_for_value = pl.col("revenue")
        ltr_value = None
    discount = (1.0 + rate) ** (pl.col("age").cast(pl.Float64) * months / 12.0)
    agg = [
        pl.col("cohort_size").first(),
        pl.col("complete").sum().cast(pl.Int64).alias("observed_ages"),
        pl.col("revenue").filter(pl.col("complete")).sum().alias("revenue_to_date"),
        (revenue_for_value / discount).sum().alias("__discounted"),
    ]
    if ltr_value is not None:
        agg.append(ltr_value.alias("__ltr_projected"))
    per = cells.group_by(keys, maintain_order=True).agg(agg)
    per = per.join(_cohort_frame(table).select([*keys, "customers"]), on=keys, how="left", nulls_equal=True)
    per = per.join(costs, on=keys, how="left", nulls_equal=True)
    ltr_expr = pl.col("__ltr_projected") if projected else pl.col("revenue_to_date") / pl.col("cohort_size")
    per = per.with_columns(ltr_expr.alias("ltr"))
    per = per.with_columns(
        (pl.col("ltr") * pl.col("margin")).alias("ltv"),
        (pl.col("__discounted") * pl.col("margin") / pl.col("cohort_size")).alias("clv"),
        _ratio(pl.col("spend"), pl.col("customers").cast(pl.Float64)).alias("cac"),
        _ratio(pl.col("spend"), pl.col("cohort_size").cast(pl.Float64)).alias("cac_per_signup"),
    )
    per = per.with_columns(
        _ratio(pl.col("ltv") * pl.col("cohort_size"), pl.col("customers").cast(pl.Float64)).alias("ltv_per_customer")
    )
    per = per.with_columns(
        _ratio(pl.col("ltv_per_customer"), pl.col("cac")).alias("ltv_cac"),
        (pl.col("ltv_per_customer") - pl.col("cac")).alias("net_value"),
    )
    # Payback: the first observed age whose cumulative margin per customer reaches CAC.
    pay = cells.join(per.select([*keys, "cac", "margin", "customers"]), on=keys, how="left", nulls_equal=True).filter(
        pl.col("complete") & pl.col("cac").is_not_null()
    )
    pay = pay.filter(
        _ratio(pl.col("margin") * pl.col("cum_revenue"), pl.col("customers").cast(pl.Float64)) >= pl.col("cac")
    ).group_by(keys).agg(pl.col("age").min().alias("payback_age"))
    per = per.join(pay, on=keys, how="left", nulls_equal=True)
    payback_months = (pl.col("payback_age") + 1).cast(pl.Float64) * months
    per = per.with_columns(
        pl.when(pl.col("cac").is_null())
        .then(None)
        .when(pl.col("payback_age").is_null())
        .then(pl.lit(NOT_YET))
        .when(payback_months <= 12)
        .then(pl.lit(SELF_FUNDING))
        .when(payback_months <= 24)
        .then(pl.lit(NEEDS_FUNDING))
        .otherwise(pl.lit(UNVIABLE))
        .alias("payback_status"),
        pl.when(pl.col("ltv_cac").is_null() | pl.col("ltv_cac").is_nan())
        .then(None)
        .when(pl.col("ltv_cac") >= 3)
        .then(pl.lit(HEALTHY))
        .when(pl.col("ltv_cac") > 1)
        .then(pl.lit(MARGINAL))
        .otherwise(pl.lit(LOSING))
        .alias("verdict"),
    )
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
            "spend",
            "cac",
            "cac_per_signup",
            "ltv_per_customer",
            "ltv_cac",
            "net_value",
            pl.col("payback_age").cast(pl.Int32),
            "payback_status",
            "verdict",
            "advice",
        ]
    )


# --------------------------------------------------------------------------------------------------
# the text report


def summary(
    table: CohortTable, spend: Any = None, margin: float | str = 1.0, discount_rate: float = 0.0, cac: Any = None
) -> str:
    """A short plain-language report: best and worst cohorts (and channels), verdicts, payback, next step."""
    m = metrics(table, spend=spend, margin=margin, discount_rate=discount_rate, cac=cac)
    lines = [
        f"{m.height} cohort(s), {table.period}ly, horizon {table.horizon}, tz {table.tz}; "
        f"last complete {table.period}: {table.last_complete}."
    ]
    rated = m.filter(pl.col("ltv_cac").is_not_null())
    if rated.height == 0:
        mean_ltr = m.select(pl.col("ltr").mean()).item() or 0.0
        lines.append(
            "No acquisition cost given: pass spend= or cac= to get LTV/CAC, payback and verdicts. "
            f"Mean LTR to date per signup: {mean_ltr:,.2f}."
        )
        return "\n".join(lines)

    def label(row: dict[str, Any]) -> str:
        seg = ", ".join(f"{b}={row[b]}" for b in table.by)
        return f"{row['cohort']}" + (f" ({seg})" if seg else "")

    best = rated.sort("ltv_cac", descending=True).row(0, named=True)
    worst = rated.sort("ltv_cac").row(0, named=True)
    for name, row in (("Best", best), ("Worst", worst)):
        lines.append(
            f"{name} cohort: {label(row)}, LTV/CAC {row['ltv_cac']:.2f} ({row['verdict']}) after "
            f"{row['observed_ages']} observed {table.period}(s); payback: {row['payback_status']}."
        )
    if table.by:
        by_channel = (
            rated.group_by(table.by)
            .agg(
                (pl.col("ltv_per_customer") * pl.col("customers")).sum().alias("value"),
                (pl.col("cac") * pl.col("customers")).sum().alias("cost"),
                pl.col("payback_status").mode().first().alias("payback"),
            )
            .with_columns(_ratio(pl.col("value"), pl.col("cost")).alias("ratio"))
            .sort("ratio", descending=True, nulls_last=True)
        )
        lines.append("By channel (all cohorts pooled):")
        for row in by_channel.iter_rows(named=True):
            if row["ratio"] is None:
                continue
            verdict = HEALTHY if row["ratio"] >= 3 else MARGINAL if row["ratio"] > 1 else LOSING
            seg = ", ".join(f"{b}={row[b]}" for b in table.by)
            lines.append(f"  {seg}: LTV/CAC {row['ratio']:.2f}, {verdict}; payback mostly {row['payback']}.")
    counts = rated.group_by("verdict").len().sort("verdict")
    lines.append(
        "Verdicts: " + ", ".join(f"{r['len']} {r['verdict']}" for r in counts.iter_rows(named=True)) + "."
    )
    statuses = rated.group_by("payback_status").len().sort("len", descending=True)
    lines.append(
        "Payback: " + ", ".join(f"{r['len']} {r['payback_status']}" for r in statuses.iter_rows(named=True)) + "."
    )
    lines.append("Next: " + ADVICE[worst["verdict"]])
    return "\n".join(lines)
