"""The unit-economics layer on ``CohortTable``: ltr, arppu, aov, retention, repeat_rate, metrics, summary.

Every number here is either a worked example of docs DOMAIN.md (CAC 3,000 / 5 = 600, 7,000 / 7 = 1,000,
LTV 50 / CAC 20 = 2.5 "marginal", the LTV/CAC thresholds 3 and 1, the payback bands 12 / 24 months) or
computed by hand in the comments next to it. The property tests at the end compare ``metrics()`` with a
plain reference built from ``to_polars()`` and ``cohort_stats()`` on random small order tables.

Formulas pinned (the contract):
    cum_revenue(k) = Σ_{j ≤ k} revenue(j); ltr = cum_revenue / cohort_size; null where not complete
    arppu = payments / payers; aov = payments / orders (payments: the paying orders' amounts);
    arppu_net = revenue / payers; aov_net = revenue / orders; paying_retention = payers / cohort_size;
    activity_retention = active / cohort_size; a zero denominator gives null, never inf/NaN
    metrics: ltr = revenue_to_date / cohort_size; ltv = ltr × margin;
             clv = Σ_k revenue_k × margin / (1 + r)^(k·m/12) / cohort_size  (m = months per period)
             cac = spend / customers; cac_per_signup = spend / cohort_size;
             ltv_per_customer = ltv × cohort_size / customers; ltv_cac = ltv_per_customer / cac;
             net_value = ltv_per_customer − cac;
             payback_age = first k with margin × cum_revenue(k) / customers ≥ cac;
             payback months = (payback_age + 1)·m: ≤ 12 self-funding, ≤ 24 needs funding, > 24 likely unviable
             verdict: ltv_cac ≥ 3 healthy, 1 < ltv_cac < 3 marginal, ≤ 1 losing money
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ltrcore = pytest.importorskip("ltrcore")

D = dt.date
DT = dt.datetime
MONTHS_PER_PERIOD = {"month": 1.0, "quarter": 3.0, "week": 12 / 52.1775, "day": 12 / 365.25}
STATUSES = {"self-funding", "needs funding", "likely unviable", "not yet paid back"}
VERDICTS = {"healthy", "marginal", "losing money"}
METRIC_COLUMNS = [
    "cohort_size", "customers", "observed_ages", "revenue_to_date", "ltr", "ltv", "clv", "spend", "cac",
    "cac_per_signup", "ltv_per_customer", "ltv_cac", "net_value", "payback_age", "payback_status", "verdict",
    "advice",
]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def make_orders(rows: list[tuple], channel: bool = False) -> pl.DataFrame:
    """rows: (user, "YYYY-MM-DD[ HH:MM]", amount[, channel])."""
    cols: dict[str, Any] = {
        "user_id": [r[0] for r in rows],
        "ts": [_ts(r[1]) for r in rows],
        "amount": [float(r[2]) for r in rows],
    }
    schema: dict[str, Any] = {"user_id": pl.String, "ts": pl.Datetime("us"), "amount": pl.Float64}
    if channel:
        cols["channel"] = [r[3] for r in rows]
        schema["channel"] = pl.String
    return pl.DataFrame(cols, schema=schema)


def build(orders: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
        return ltrcore.cohorts(orders, **kw)


def one(df: pl.DataFrame, **keys: Any) -> dict[str, Any]:
    """The single row of ``df`` matching ``keys`` (cohort given as a date)."""
    out = df
    for k, v in keys.items():
        out = out.filter(pl.col(k) == v)
    assert out.height == 1, (keys, out)
    return out.row(0, named=True)


def cell(df: pl.DataFrame, cohort: dt.date, age: int, **keys: Any) -> dict[str, Any]:
    return one(df, cohort=cohort, age=age, **keys)


def approx(x: float | None, rel: float = 1e-12, abs_: float = 1e-9) -> Any:
    return None if x is None else pytest.approx(x, rel=rel, abs=abs_)


def assert_cell_columns(out: pl.DataFrame, expected: list[str]) -> None:
    """The spec lists ``by…, cohort, age, <ratio columns>``; a trailing ``complete`` flag is tolerated."""
    assert out.columns in (expected, [*expected, "complete"]), out.columns


def assert_no_nan_or_inf(df: pl.DataFrame, cols: list[str]) -> None:
    for c in cols:
        s = df.get_column(c)
        if s.dtype.is_float():
            assert not s.is_nan().any(), f"{c} has NaN: {s.to_list()}"
            assert not s.is_infinite().any(), f"{c} has inf: {s.to_list()}"


def spend_frame(rows: list[tuple], columns: list[str], period_dtype: Any = pl.String) -> pl.DataFrame:
    schema: dict[str, Any] = {}
    for c in columns:
        if c in ("period", "month"):
            schema[c] = period_dtype
        elif c == "channel":
            schema[c] = pl.String
        else:
            schema[c] = pl.Float64
    data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    return pl.DataFrame(data, schema=schema)


# ----------------------------------------------------------------------------------------------------
# 1. DOMAIN.md worked examples
# ----------------------------------------------------------------------------------------------------
def _facebook_search_orders() -> pl.DataFrame:
    # January 2024: 5 Facebook customers paying 2,000 each, 7 paid-search customers paying 500 each.
    rows = [(f"fb{i}", "2024-01-10", 2000, "facebook") for i in range(5)]
    rows += [(f"ps{i}", "2024-01-12", 500, "paid_search") for i in range(7)]
    return make_orders(rows, channel=True)


SPEND_FB_PS = spend_frame(
    [("2024-01", "facebook", 3000.0), ("2024-01", "paid_search", 7000.0)], ["period", "channel", "spend"]
)


def test_domain_cac_facebook_600_paid_search_1000():
    table = build(_facebook_search_orders(), by="channel", as_of="2024-02-01")
    m = table.metrics(margin=1.0, spend=SPEND_FB_PS)
    assert m.height == 2
    assert m.columns[:2] == ["channel", "cohort"], m.columns
    assert set(METRIC_COLUMNS) <= set(m.columns), set(METRIC_COLUMNS) - set(m.columns)

    fb = one(m, channel="facebook")
    assert fb["cohort"] == D(2024, 1, 1)
    assert (fb["cohort_size"], fb["customers"], fb["observed_ages"]) == (5, 5, 1)
    assert fb["spend"] == pytest.approx(3000)
    assert fb["cac"] == pytest.approx(600)  # DOMAIN: 3,000 / 5
    assert fb["cac_per_signup"] == pytest.approx(600)
    assert fb["revenue_to_date"] == pytest.approx(10_000)
    assert fb["ltr"] == pytest.approx(2000) and fb["ltv"] == pytest.approx(2000)
    assert fb["ltv_per_customer"] == pytest.approx(2000)
    assert fb["ltv_cac"] == pytest.approx(2000 / 600)
    assert fb["net_value"] == pytest.approx(1400)
    assert fb["verdict"] == "healthy"
    assert fb["payback_age"] == 0 and fb["payback_status"] == "self-funding"

    ps = one(m, channel="paid_search")
    assert (ps["cohort_size"], ps["customers"]) == (7, 7)
    assert ps["spend"] == pytest.approx(7000)
    assert ps["cac"] == pytest.approx(1000)  # DOMAIN: 7,000 / 7
    assert ps["ltv_cac"] == pytest.approx(0.5)
    assert ps["net_value"] == pytest.approx(-500)
    # one observed month and no projection: losing money so far, which is too early to tell (issue 13)
    assert (ps["verdict"], ps["verdict_basis"]) == ("too early to tell: losing money so far", "too young")
    assert ps["payback_age"] is None
    assert ps["payback_status"] == "not yet paid back"  # only age 0 observed, never invent a month


def test_domain_cac_counts_paying_customers_not_signups():
    # 8 Facebook signups of which 5 pay: CAC = 3,000 / 5 = 600; per signup 3,000 / 8 = 375.
    signups = pl.DataFrame(
        {
            "user_id": [f"fb{i}" for i in range(8)] + [f"ps{i}" for i in range(7)],
            "signup_ts": [DT(2024, 1, 3)] * 15,
            "channel": ["facebook"] * 8 + ["paid_search"] * 7,
        }
    )
    orders = make_orders([(f"fb{i}", "2024-01-10", 100) for i in range(5)] + [(f"ps{i}", "2024-01-11", 100) for i in range(7)])
    table = build(orders, signups=signups, by="channel", as_of="2024-02-01")
    m = table.metrics(margin=1.0, spend=SPEND_FB_PS)
    fb = one(m, channel="facebook")
    assert (fb["cohort_size"], fb["customers"]) == (8, 5)
    assert fb["cac"] == pytest.approx(600)
    assert fb["cac_per_signup"] == pytest.approx(375)
    # ltr per signup = 500 / 8; per customer = 100
    assert fb["ltr"] == pytest.approx(62.5)
    assert fb["ltv_per_customer"] == pytest.approx(100)
    assert fb["ltv_cac"] == pytest.approx(100 / 600)
    assert one(m, channel="paid_search")["cac"] == pytest.approx(1000)


def _single_customer(revenue: float, as_of: str = "2024-02-01") -> Any:
    return build(make_orders([("u", "2024-01-15", revenue)]), as_of=as_of)


def test_domain_ltv_50_cac_20_is_marginal():
    m = _single_customer(50).metrics(margin=1.0, cac=20)
    r = m.row(0, named=True)
    assert r["ltv"] == pytest.approx(50)
    assert r["cac"] == pytest.approx(20)
    assert r["spend"] == pytest.approx(20)  # cac × customers
    assert r["ltv_cac"] == pytest.approx(2.5)
    assert r["verdict"] == "marginal"
    advice = r["advice"]
    assert isinstance(advice, str) and advice.strip()
    assert "cac" in advice.lower() and "ltr" in advice.lower(), advice


@pytest.mark.parametrize(
    ("revenue", "margin", "cac", "ratio", "verdict"),
    [
        (60, 1.0, 20, 3.0, "healthy"),  # exactly 3 -> healthy
        (120, 0.5, 20, 3.0, "healthy"),  # exactly 3 through the margin
        (59, 1.0, 20, 2.95, "marginal"),
        (21, 1.0, 20, 1.05, "marginal"),
        (20, 1.0, 20, 1.0, "losing money"),  # exactly 1 -> losing money (CAC ≥ LTV)
        (40, 0.5, 20, 1.0, "losing money"),
        (10, 1.0, 20, 0.5, "losing money"),
        (400, 1.0, 20, 20.0, "healthy"),
    ],
)
def test_verdict_thresholds(revenue, margin, cac, ratio, verdict):
    # three observed months: old enough to be judged on observed values (MIN_OBSERVED_MONTHS)
    r = _single_customer(revenue, as_of="2024-04-01").metrics(margin=margin, cac=cac).row(0, named=True)
    assert r["ltv_cac"] == pytest.approx(ratio)
    assert r["verdict"] == verdict
    assert isinstance(r["advice"], str) and r["advice"].strip()
    if verdict != "healthy":
        assert "cac" in r["advice"].lower() and "ltr" in r["advice"].lower(), r["advice"]
    assert r["net_value"] == pytest.approx(revenue * margin - cac)


def test_without_spend_or_cac_the_cost_columns_are_null():
    table = build(make_orders([("a", "2024-01-05", 30), ("b", "2024-01-06", 10), ("a", "2024-02-01", 5)]), as_of="2024-03-01")
    m = table.metrics(margin=1.0)
    r = one(m, cohort=D(2024, 1, 1))
    for c in ("spend", "cac", "cac_per_signup", "ltv_cac", "net_value", "payback_age", "payback_status", "verdict"):
        assert r[c] is None, (c, r[c])
    assert (r["cohort_size"], r["customers"], r["observed_ages"]) == (2, 2, 2)
    assert r["revenue_to_date"] == pytest.approx(45)
    assert r["ltr"] == pytest.approx(22.5)
    assert r["ltv"] == pytest.approx(22.5)  # margin defaults to 1
    assert r["clv"] == pytest.approx(22.5)  # discount rate defaults to 0
    assert r["ltv_per_customer"] == pytest.approx(22.5)


# ----------------------------------------------------------------------------------------------------
# 2. per-cell metrics on a small hand-computed table
# ----------------------------------------------------------------------------------------------------
# Signup cohorts (UTC, month, horizon 3, as_of 2024-04-01 -> last complete month March):
#   Jan: u1 u2 u3 u4 (4)   Feb: u5 u6 (2)   Mar: u7 (1)
# Orders:
#   u1 Jan 10, Jan 20, Feb 30, Mar -10 (refund)   u2 Jan 40   u3 Mar 25   u4 never pays
#   u5 Feb 50, Feb 10   u6 Mar 30   u7 Mar -5 (refund only), Apr 100 (not complete)
# Jan: age0 rev 70 orders 3 payers 2 | age1 rev 30 o1 p1 | age2 rev 15 (-10 + 25) o1 p1
#      cum 70 100 115, ltr 17.5 25 28.75, ltr_horizon 28.75
# Feb: age0 rev 60 o2 p1 | age1 rev 30 o1 p1 | age2 not complete; cum 60 90 -, ltr 30 45 -, horizon null
# Mar: age0 rev -5 o0 p0 | ages 1, 2 not complete; ltr -5
# Activity: Jan: u1 u2 u4 | Feb: u1 u3 u5 | Mar: u6 u5 | Apr: u7
#   Jan cohort active 3, 2, 0; Feb cohort 1, 2; Mar cohort 0.
SMALL_SIGNUPS = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u3", "u4", "u5", "u6", "u7"],
        "signup_ts": [DT(2024, 1, 2), DT(2024, 1, 3), DT(2024, 1, 4), DT(2024, 1, 5), DT(2024, 2, 1), DT(2024, 2, 9),
                      DT(2024, 3, 3)],
        "channel": ["ads", "ads", "seo", "seo", "ads", "ads", "seo"],
    }
)
SMALL_ORDERS = make_orders(
    [
        ("u1", "2024-01-10", 10), ("u1", "2024-01-20", 20), ("u1", "2024-02-15", 30), ("u1", "2024-03-05", -10),
        ("u2", "2024-01-11", 40), ("u3", "2024-03-25", 25),
        ("u5", "2024-02-02", 50), ("u5", "2024-02-20", 10), ("u6", "2024-03-07", 30),
        ("u7", "2024-03-09", -5), ("u7", "2024-04-02", 100),
    ]
)
SMALL_ACTIVITY = pl.DataFrame(
    {
        "user_id": ["u1", "u2", "u4", "u1", "u3", "u5", "u6", "u5", "u7"],
        "ts": [DT(2024, 1, 5), DT(2024, 1, 6), DT(2024, 1, 7), DT(2024, 2, 2), DT(2024, 2, 3), DT(2024, 2, 4),
               DT(2024, 3, 3), DT(2024, 3, 4), DT(2024, 4, 2)],
    }
)
JAN, FEB, MAR = D(2024, 1, 1), D(2024, 2, 1), D(2024, 3, 1)


@pytest.fixture(scope="module")
def small():
    return build(SMALL_ORDERS, signups=SMALL_SIGNUPS, activity=SMALL_ACTIVITY, horizon=3, as_of="2024-04-01")


def test_cum_revenue_is_the_exact_sum_converted_once():
    """Orders of 0.1 at age 0 and 0.2 at age 1: a float running sum gives 0.30000000000000004 at
    age 1, the exact sum 0.3. With two channels whose values sort in another order than they first
    appear (b before a), each row's exact revenue must stay with its own cohort."""
    import ltrcore

    def at(month: int) -> dt.datetime:
        return dt.datetime(2024, month, 10, tzinfo=dt.timezone.utc)

    orders = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "ts": [at(1), at(2), at(1), at(2)],
            "amount": [0.1, 0.2, 7.0, 0.7],
            "channel": ["b", "b", "a", "a"],
        }
    )
    alone = ltrcore.cohorts(orders.filter(pl.col("user_id") == 1), horizon=2, as_of="2024-03-01").ltr()
    assert 0.1 + 0.2 != 0.3
    assert alone["cum_revenue"].to_list() == [0.1, 0.3]
    by = ltrcore.cohorts(orders, horizon=2, as_of="2024-03-01", by="channel").ltr()
    got = {(r["channel"], r["age"]): r["cum_revenue"] for r in by.iter_rows(named=True)}
    assert got == {("a", 0): 7.0, ("a", 1): 7.7, ("b", 0): 0.1, ("b", 1): 0.3}


def test_small_table_is_what_the_comments_say(small):
    # Sanity of the fixture against the engine itself (not the metrics layer).
    long = small.to_polars()
    assert cell(long, JAN, 2)["revenue"] == pytest.approx(15)
    assert cell(long, MAR, 0)["payers"] == 0 and cell(long, MAR, 0)["revenue"] == pytest.approx(-5)
    stats = small.cohort_stats()
    assert one(stats, cohort=JAN)["customers"] == 3 and one(stats, cohort=JAN)["repeaters"] == 1


def test_ltr_hand_computed(small):
    out = small.ltr()
    assert out.columns == ["cohort", "age", "cohort_size", "revenue", "cum_revenue", "ltr", "ltr_horizon", "complete"]
    assert out.height == 9
    assert out.schema["cohort"] == pl.Date
    for c in ("cum_revenue", "ltr", "ltr_horizon"):
        assert out.schema[c] == pl.Float64, (c, out.schema[c])
    assert out.schema["complete"] == pl.Boolean
    expect = {
        (JAN, 0): (4, 70, 70, 17.5, 28.75, True),
        (JAN, 1): (4, 30, 100, 25.0, 28.75, True),
        (JAN, 2): (4, 15, 115, 28.75, 28.75, True),
        (FEB, 0): (2, 60, 60, 30.0, None, True),
        (FEB, 1): (2, 30, 90, 45.0, None, True),
        (FEB, 2): (2, None, None, None, None, False),
        (MAR, 0): (1, -5, -5, -5.0, None, True),
        (MAR, 1): (1, None, None, None, None, False),
        (MAR, 2): (1, None, None, None, None, False),
    }
    for (cohort, age), (size, rev, cum, ltr, hor, complete) in expect.items():
        r = cell(out, cohort, age)
        assert r["cohort_size"] == size
        assert r["revenue"] == approx(rev), (cohort, age, r)
        assert r["cum_revenue"] == approx(cum), (cohort, age, r)
        assert r["ltr"] == approx(ltr), (cohort, age, r)
        assert r["ltr_horizon"] == approx(hor), (cohort, age, r)
        assert r["complete"] is complete
    assert_no_nan_or_inf(out, ["cum_revenue", "ltr", "ltr_horizon"])


def test_ltr_with_by_carries_segment_columns_first():
    table = build(SMALL_ORDERS, signups=SMALL_SIGNUPS, by="channel", horizon=3, as_of="2024-04-01")
    out = table.ltr()
    assert out.columns == ["channel", "cohort", "age", "cohort_size", "revenue", "cum_revenue", "ltr", "ltr_horizon",
                           "complete"]
    # Jan ads = {u1, u2}: rev 70, 30, -10 -> cum 70, 100, 90; ltr 35, 50, 45
    # Jan seo = {u3, u4}: rev 0, 0, 25 -> cum 0, 0, 25; ltr 0, 0, 12.5
    for age, (cum, ltr) in enumerate([(70, 35), (100, 50), (90, 45)]):
        r = cell(out, JAN, age, channel="ads")
        assert (r["cum_revenue"], r["ltr"], r["ltr_horizon"]) == (approx(cum), approx(ltr), approx(45))
    for age, (cum, ltr) in enumerate([(0, 0), (0, 0), (25, 12.5)]):
        r = cell(out, JAN, age, channel="seo")
        assert (r["cum_revenue"], r["ltr"], r["ltr_horizon"]) == (approx(cum), approx(ltr), approx(12.5))
    # Feb ads = {u5, u6}: ltr 30, 45, not complete
    assert cell(out, FEB, 1, channel="ads")["ltr"] == approx(45)
    assert cell(out, FEB, 2, channel="ads")["ltr"] is None
    assert cell(out, MAR, 0, channel="seo")["ltr"] == approx(-5)


def test_ltr_is_one_value_per_cohort_for_ltr_horizon(small):
    out = small.ltr()
    per = out.group_by("cohort").agg(pl.col("ltr_horizon").n_unique().alias("n"), pl.col("ltr_horizon").null_count().alias("nulls"))
    for r in per.iter_rows(named=True):
        assert r["n"] == 1, r  # the same value (or null) on every row of the cohort
        assert r["nulls"] in (0, 3)


def test_arppu_hand_computed(small):
    out = small.arppu()
    assert_cell_columns(out, ["cohort", "age", "arppu", "arppu_net"])
    assert out.schema["arppu"] == pl.Float64
    # Jan age 2: u3 pays 25, u1 refunds 10 without paying that month: payments 25 / 1 payer; net 15 / 1.
    expect = {(JAN, 0): (35.0, 35.0), (JAN, 1): (30.0, 30.0), (JAN, 2): (25.0, 15.0), (FEB, 0): (60.0, 60.0),
              (FEB, 1): (30.0, 30.0), (FEB, 2): (None, None),
              (MAR, 0): (None, None),  # revenue -5, payers 0: zero denominator -> null, not -inf
              (MAR, 1): (None, None), (MAR, 2): (None, None)}
    for (c, a), (v, net) in expect.items():
        assert (cell(out, c, a)["arppu"], cell(out, c, a)["arppu_net"]) == (approx(v), approx(net)), (c, a)
    assert_no_nan_or_inf(out, ["arppu", "arppu_net"])


def test_aov_hand_computed(small):
    out = small.aov()
    assert_cell_columns(out, ["cohort", "age", "aov", "aov_net"])
    assert out.schema["aov"] == pl.Float64
    expect = {(JAN, 0): (70 / 3, 70 / 3), (JAN, 1): (30.0, 30.0), (JAN, 2): (25.0, 15.0), (FEB, 0): (30.0, 30.0),
              (FEB, 1): (30.0, 30.0), (FEB, 2): (None, None), (MAR, 0): (None, None), (MAR, 1): (None, None),
              (MAR, 2): (None, None)}
    for (c, a), (v, net) in expect.items():
        assert (cell(out, c, a)["aov"], cell(out, c, a)["aov_net"]) == (approx(v), approx(net)), (c, a)
    assert_no_nan_or_inf(out, ["aov", "aov_net"])


def test_retention_hand_computed(small):
    out = small.retention()
    assert_cell_columns(out, ["cohort", "age", "paying_retention", "activity_retention"])
    expect = {
        (JAN, 0): (0.5, 0.75), (JAN, 1): (0.25, 0.5), (JAN, 2): (0.25, 0.0),
        (FEB, 0): (0.5, 0.5), (FEB, 1): (0.5, 1.0), (FEB, 2): (None, None),
        (MAR, 0): (0.0, 0.0), (MAR, 1): (None, None), (MAR, 2): (None, None),
    }
    for (c, a), (pay, act) in expect.items():
        r = cell(out, c, a)
        assert r["paying_retention"] == approx(pay), (c, a, r)
        assert r["activity_retention"] == approx(act), (c, a, r)
    assert_no_nan_or_inf(out, ["paying_retention", "activity_retention"])


def test_retention_without_activity_is_null():
    table = build(SMALL_ORDERS, signups=SMALL_SIGNUPS, horizon=3, as_of="2024-04-01")
    out = table.retention()
    assert out.get_column("activity_retention").null_count() == out.height
    assert cell(out, JAN, 0)["paying_retention"] == approx(0.5)


def test_repeat_rate_hand_computed(small):
    out = small.repeat_rate()
    assert out.columns == ["cohort", "cohort_size", "customers", "repeaters", "repeat_rate", "repeat_rate_of_customers"]
    assert out.height == 3
    # Jan: u1 has 3 paying orders (the refund is not one), u2 and u3 one each, u4 none.
    assert one(out, cohort=JAN) == {"cohort": JAN, "cohort_size": 4, "customers": 3, "repeaters": 1,
                                    "repeat_rate": approx(0.25), "repeat_rate_of_customers": approx(1 / 3)}
    assert one(out, cohort=FEB) == {"cohort": FEB, "cohort_size": 2, "customers": 2, "repeaters": 1,
                                    "repeat_rate": approx(0.5), "repeat_rate_of_customers": approx(0.5)}
    # Mar: u7 only refunded within the complete ages; the April order is not complete yet.
    assert one(out, cohort=MAR) == {"cohort": MAR, "cohort_size": 1, "customers": 0, "repeaters": 0,
                                    "repeat_rate": approx(0.0), "repeat_rate_of_customers": None}


def test_repeat_rate_with_by():
    table = build(SMALL_ORDERS, signups=SMALL_SIGNUPS, by="channel", horizon=3, as_of="2024-04-01")
    out = table.repeat_rate()
    assert out.columns == ["channel", "cohort", "cohort_size", "customers", "repeaters", "repeat_rate",
                           "repeat_rate_of_customers"]
    r = one(out, channel="ads", cohort=JAN)
    assert (r["cohort_size"], r["customers"], r["repeaters"], r["repeat_rate"]) == (2, 2, 1, approx(0.5))
    r = one(out, channel="seo", cohort=JAN)
    assert (r["cohort_size"], r["customers"], r["repeaters"], r["repeat_rate"]) == (2, 1, 0, approx(0.0))


def test_metrics_on_small_table(small):
    m = small.metrics(margin=0.5, cac=10)
    jan = one(m, cohort=JAN)
    # Jan: 4 signups, 3 customers, revenue to date 115 over 3 complete ages.
    assert (jan["cohort_size"], jan["customers"], jan["observed_ages"]) == (4, 3, 3)
    assert jan["revenue_to_date"] == approx(115)
    assert jan["ltr"] == approx(28.75)
    assert jan["ltv"] == approx(14.375)
    assert jan["ltv_per_customer"] == approx(14.375 * 4 / 3)
    assert jan["spend"] == approx(30)  # cac × customers
    assert jan["cac_per_signup"] == approx(7.5)
    assert jan["ltv_cac"] == approx(14.375 * 4 / 3 / 10)
    assert jan["net_value"] == approx(14.375 * 4 / 3 - 10)
    # payback: 0.5 × cum / 3 = 11.67 at age 0 ≥ 10
    assert jan["payback_age"] == 0 and jan["payback_status"] == "self-funding"
    assert jan["verdict"] == "marginal"

    feb = one(m, cohort=FEB)
    assert (feb["observed_ages"], feb["revenue_to_date"], feb["ltr"]) == (2, approx(90), approx(45))
    # 0.5 × 60 / 2 = 15 ≥ 10 at age 0
    assert feb["payback_age"] == 0

    mar = one(m, cohort=MAR)
    assert (mar["customers"], mar["observed_ages"]) == (0, 1)
    assert mar["ltr"] == approx(-5)
    assert mar["ltv_per_customer"] is None  # zero customers
    assert mar["ltv_cac"] is None
    assert_no_nan_or_inf(m, ["ltr", "ltv", "clv", "cac", "cac_per_signup", "ltv_per_customer", "ltv_cac", "net_value"])


def test_zero_customers_with_spend_gives_null_cac():
    signups = pl.DataFrame({"user_id": ["a", "b"], "signup_ts": [DT(2024, 1, 1), DT(2024, 1, 2)]})
    orders = make_orders([("a", "2024-02-05", 10)])  # pays in February only
    table = build(orders, signups=signups, horizon=3, as_of="2024-02-01")  # only January is complete
    r = table.metrics(margin=1.0, spend=100).row(0, named=True)
    assert r["customers"] == 0 and r["cohort_size"] == 2
    assert r["spend"] == approx(100)
    assert r["cac"] is None
    assert r["cac_per_signup"] == approx(50)


# ----------------------------------------------------------------------------------------------------
# 3. spend forms, detailed CAC, overhead allocation, margin column
# ----------------------------------------------------------------------------------------------------
# First-purchase cohorts by channel, every customer pays 100 once, as_of 2024-03-01:
#   Jan: fb f1..f4, search s1 s2       Feb: fb f5 f6, search s3, seo o1
def _channels_table() -> Any:
    rows = [(f"f{i}", "2024-01-10", 100, "fb") for i in range(1, 5)]
    rows += [(f"s{i}", "2024-01-11", 100, "search") for i in (1, 2)]
    rows += [(f"f{i}", "2024-02-10", 100, "fb") for i in (5, 6)]
    rows += [("s3", "2024-02-11", 100, "search"), ("o1", "2024-02-12", 100, "seo")]
    return build(make_orders(rows, channel=True), by="channel", as_of="2024-03-01")


@pytest.fixture(scope="module")
def channels():
    return _channels_table()


def _cac_map(m: pl.DataFrame) -> dict[tuple[str, dt.date], tuple[float | None, float | None]]:
    return {(r["channel"], r["cohort"]): (r["spend"], r["cac"]) for r in m.iter_rows(named=True)}


def test_detailed_cac_with_overhead_pro_rata_and_equal(channels):
    # Jan: fb 3000 + 200 + 100 = 3300, search 1000 + 50 = 1050, overhead 800 + 400 = 1200 split by campaign
    #      3000 : 1000 -> fb +900, search +300.  fb 4200 / 4 = 1050; search 1350 / 2 = 675.
    # Feb: campaign spend 0 -> overhead 600 split equally over fb, search, seo (each has a Feb cohort): +200.
    #      fb 300 + 200 = 500 / 2 = 250; search 200 / 1; seo 200 / 1.
    spend = spend_frame(
        [
            ("2024-01", "fb", 3000.0, 200.0, 0.0, 100.0, 0.0),
            ("2024-01", "search", 1000.0, 0.0, 0.0, 0.0, 50.0),
            ("2024-01", None, 0.0, 800.0, 400.0, 0.0, 0.0),
            ("2024-02", "fb", 0.0, 0.0, 300.0, 0.0, 0.0),
            ("2024-02", None, 0.0, 600.0, 0.0, 0.0, 0.0),
        ],
        ["period", "channel", "campaign", "wages", "software", "services", "other"],
    )
    got = _cac_map(channels.metrics(margin=1.0, spend=spend))
    expect = {
        ("fb", JAN): (4200, 1050), ("search", JAN): (1350, 675),
        ("fb", FEB): (500, 250), ("search", FEB): (200, 200), ("seo", FEB): (200, 200),
    }
    assert set(got) == set(expect)
    for k, (s, c) in expect.items():
        assert got[k][0] == approx(s), (k, got[k])
        assert got[k][1] == approx(c), (k, got[k])


def test_detailed_cac_absent_components_count_zero(channels):
    spend = spend_frame(
        [("2024-01", "fb", 3000.0, 600.0), ("2024-01", "search", 1000.0, 0.0)],
        ["period", "channel", "campaign", "wages"],
    )
    got = _cac_map(channels.metrics(margin=1.0, spend=spend))
    assert got[("fb", JAN)][1] == approx(900)  # (3000 + 600) / 4
    assert got[("search", JAN)][1] == approx(500)  # 1000 / 2


def test_simple_spend_column_with_overhead(channels):
    # Jan: overhead 400 split 3000 : 1000 -> fb 3300 / 4 = 825, search 1100 / 2 = 550.
    # Feb: no campaign spend (fb 0) -> overhead 300 equally over fb, search, seo: 100 each.
    spend = spend_frame(
        [("2024-01", "fb", 3000.0), ("2024-01", "search", 1000.0), ("2024-01", None, 400.0),
         ("2024-02", "fb", 0.0), ("2024-02", None, 300.0)],
        ["period", "channel", "spend"],
    )
    got = _cac_map(channels.metrics(margin=1.0, spend=spend))
    expect = {("fb", JAN): (3300, 825), ("search", JAN): (1100, 550), ("fb", FEB): (100, 50),
              ("search", FEB): (100, 100), ("seo", FEB): (100, 100)}
    for k, (s, c) in expect.items():
        assert got[k][0] == approx(s), (k, got[k])
        assert got[k][1] == approx(c), (k, got[k])


def test_overhead_pro_rata_uses_campaign_not_total(channels):
    # fb campaign 1000 + wages 2000, search campaign 3000: overhead 400 splits 1000 : 3000 -> fb +100, search +300.
    spend = spend_frame(
        [("2024-01", "fb", 1000.0, 2000.0), ("2024-01", "search", 3000.0, 0.0), ("2024-01", None, 0.0, 400.0)],
        ["period", "channel", "campaign", "wages"],
    )
    got = _cac_map(channels.metrics(margin=1.0, spend=spend))
    assert got[("fb", JAN)][0] == approx(3100)
    assert got[("search", JAN)][0] == approx(3300)


def _two_cohorts() -> Any:
    # Jan: a b c d (4 customers), Feb: e f (2)
    rows = [(u, "2024-01-15", 100) for u in "abcd"] + [(u, "2024-02-15", 100) for u in "ef"]
    return build(make_orders(rows), as_of="2024-03-01")


def test_number_spend_is_every_cohorts_spend():
    m = _two_cohorts().metrics(margin=1.0, spend=1000)
    assert one(m, cohort=JAN)["spend"] == approx(1000) and one(m, cohort=JAN)["cac"] == approx(250)
    assert one(m, cohort=FEB)["spend"] == approx(1000) and one(m, cohort=FEB)["cac"] == approx(500)


def test_dict_spend_with_string_and_date_keys():
    m = _two_cohorts().metrics(margin=1.0, spend={"2024-01": 1000, D(2024, 2, 1): 300})
    assert one(m, cohort=JAN)["cac"] == approx(250)
    assert one(m, cohort=FEB)["cac"] == approx(150)


@pytest.mark.parametrize(
    "spend",
    [
        pl.DataFrame({"period": ["2024-01", "2024-02"], "spend": [1000.0, 300.0]}),
        pl.DataFrame({"month": ["2024-01", "2024-02"], "spend": [1000.0, 300.0]}),
        pl.DataFrame({"period": [D(2024, 1, 1), D(2024, 2, 1)], "spend": [1000.0, 300.0]}),
        pl.DataFrame({"month": [DT(2024, 1, 1), DT(2024, 2, 1)], "spend": [1000.0, 300.0]}),
        pa.table({"period": pa.array([D(2024, 1, 1), D(2024, 2, 1)], pa.date32()), "spend": [1000.0, 300.0]}),
        "pandas",
    ],
    ids=["polars-str", "month-str", "polars-date", "polars-datetime", "arrow-date", "pandas"],
)
def test_spend_table_forms(spend):
    if isinstance(spend, str):
        pd = pytest.importorskip("pandas")
        spend = pd.DataFrame({"month": ["2024-01", "2024-02"], "spend": [1000.0, 300.0]})
    m = _two_cohorts().metrics(margin=1.0, spend=spend)
    assert one(m, cohort=JAN)["cac"] == approx(250)
    assert one(m, cohort=FEB)["cac"] == approx(150)


def test_cac_given_directly_number_and_dict():
    m = _two_cohorts().metrics(margin=1.0, cac=20)
    assert one(m, cohort=JAN)["cac"] == approx(20) and one(m, cohort=JAN)["spend"] == approx(80)
    assert one(m, cohort=FEB)["cac"] == approx(20) and one(m, cohort=FEB)["spend"] == approx(40)
    m = _two_cohorts().metrics(margin=1.0, cac={"2024-01": 20, D(2024, 2, 1): 30})
    assert one(m, cohort=JAN)["cac"] == approx(20) and one(m, cohort=JAN)["spend"] == approx(80)
    assert one(m, cohort=FEB)["cac"] == approx(30) and one(m, cohort=FEB)["spend"] == approx(60)


def test_margin_column_of_spend_table(channels):
    # every customer paid 100 once -> ltr 100; ltv = 100 × that row's margin
    spend = spend_frame(
        [("2024-01", "fb", 400.0, 0.5), ("2024-01", "search", 100.0, 0.25),
         ("2024-02", "fb", 100.0, 0.5), ("2024-02", "search", 100.0, 0.25), ("2024-02", "seo", 50.0, 1.0)],
        ["period", "channel", "spend", "gm"],
    )
    m = channels.metrics(spend=spend, margin="gm")
    exp = {("fb", JAN): (50, 100), ("search", JAN): (25, 50), ("fb", FEB): (50, 50), ("search", FEB): (25, 100),
           ("seo", FEB): (100, 50)}
    for (ch, co), (ltv, cac) in exp.items():
        r = one(m, channel=ch, cohort=co)
        assert r["ltr"] == approx(100)
        assert r["ltv"] == approx(ltv), (ch, co, r)
        assert r["cac"] == approx(cac), (ch, co, r)
        assert r["ltv_cac"] == approx(ltv / cac), (ch, co, r)


def test_number_margin_scales_ltv_and_payback():
    # one customer, 10 every month for 12 months; margin 0.5, cac 30: 0.5 × 10(k+1) ≥ 30 -> k = 5
    rows = [("u", f"2024-{mo:02d}-03", 10) for mo in range(1, 13)]
    table = build(make_orders(rows), as_of="2025-01-01")
    r = table.metrics(margin=0.5, cac=30).row(0, named=True)
    assert r["ltr"] == approx(120) and r["ltv"] == approx(60)
    assert r["payback_age"] == 5 and r["payback_status"] == "self-funding"
    assert r["ltv_cac"] == approx(2.0) and r["verdict"] == "marginal"


# ----------------------------------------------------------------------------------------------------
# 4. payback age and status bands
# ----------------------------------------------------------------------------------------------------
def _monthly_payer(months: int = 36, amount: float = 10, as_of: str = "2023-01-01") -> Any:
    # one customer who pays `amount` every month from Jan 2020 for `months` months: cum(k) = amount·(k+1)
    rows = []
    for i in range(months):
        y, mo = divmod(i, 12)
        rows.append(("u", f"{2020 + y}-{mo + 1:02d}-05", amount))
    return build(make_orders(rows), horizon=36, period="month", as_of=as_of)


@pytest.fixture(scope="module")
def payer36():
    return _monthly_payer()


@pytest.mark.parametrize(
    ("cac", "age", "status"),
    [
        (5, 0, "self-funding"),
        (10, 0, "self-funding"),  # reaches exactly CAC at age 0 (≥)
        (100, 9, "self-funding"),
        (120, 11, "self-funding"),  # 12 months: still within 12
        (121, 12, "needs funding"),  # 13 months
        (130, 12, "needs funding"),
        (240, 23, "needs funding"),  # 24 months: still within 12–24
        (241, 24, "likely unviable"),  # 25 months
        (250, 24, "likely unviable"),
        (360, 35, "likely unviable"),  # the last observed age
        # Never paid back in 36 observed months (more than 24): likely unviable, not "not yet".
        (361, None, "likely unviable"),
        (400, None, "likely unviable"),
    ],
)
def test_payback_bands_monthly(payer36, cac, age, status):
    r = payer36.metrics(margin=1.0, cac=cac).row(0, named=True)
    assert r["observed_ages"] == 36
    assert r["payback_age"] == age
    assert r["payback_status"] == status


def test_payback_only_within_observed_ages():
    # as_of 2020-06-01: ages 0..4 observed, cum 50 max. cac 60 would be reached at age 5 later: not yet.
    table = _monthly_payer(as_of="2020-06-01")
    r = table.metrics(margin=1.0, cac=60).row(0, named=True)
    assert r["observed_ages"] == 5
    assert r["revenue_to_date"] == approx(50)
    assert r["payback_age"] is None and r["payback_status"] == "not yet paid back"
    r = table.metrics(margin=1.0, cac=50).row(0, named=True)
    assert r["payback_age"] == 4 and r["payback_status"] == "self-funding"


def test_payback_is_per_customer_not_per_signup():
    # signup cohort of 2, only one pays 10 a month: per customer cum(k)/1 = 10(k+1) ≥ 100 at k = 9
    # (per signup it would be k = 19).
    signups = pl.DataFrame({"user_id": ["u", "v"], "signup_ts": [DT(2020, 1, 1), DT(2020, 1, 2)]})
    rows = [("u", f"{2020 + i // 12}-{i % 12 + 1:02d}-05", 10) for i in range(36)]
    table = build(make_orders(rows), signups=signups, horizon=36, as_of="2023-01-01")
    r = table.metrics(margin=1.0, cac=100).row(0, named=True)
    assert (r["cohort_size"], r["customers"]) == (2, 1)
    assert r["payback_age"] == 9 and r["payback_status"] == "self-funding"
    assert r["ltr"] == approx(180) and r["ltv_per_customer"] == approx(360)


@pytest.mark.parametrize(
    ("cac", "age", "status"),
    [(120, 3, "self-funding"), (150, 4, "needs funding"), (240, 7, "needs funding"), (270, 8, "likely unviable")],
)
def test_payback_bands_quarterly(cac, age, status):
    # pays 30 every quarter from 2020Q1, 12 quarters observed; months = (age + 1) × 3
    rows = [("u", f"{2020 + q // 4}-{(q % 4) * 3 + 1:02d}-10", 30) for q in range(12)]
    table = build(make_orders(rows), horizon=12, period="quarter", as_of="2023-01-01")
    r = table.metrics(margin=1.0, cac=cac).row(0, named=True)
    assert r["observed_ages"] == 12
    assert (r["payback_age"], r["payback_status"]) == (age, status)


@pytest.mark.parametrize(("cac", "age", "status"), [(520, 51, "self-funding"), (530, 52, "needs funding")])
def test_payback_bands_weekly(cac, age, status):
    # 52 weeks × 12/52.1775 = 11.96 months (≤ 12); 53 weeks = 12.19 months
    start = D(2024, 1, 3)  # a Wednesday in ISO week starting Monday 2024-01-01
    rows = [("u", (start + dt.timedelta(weeks=w)).isoformat(), 10) for w in range(60)]
    table = build(make_orders(rows), horizon=60, period="week", as_of=(D(2024, 1, 1) + dt.timedelta(weeks=60)).isoformat())
    r = table.metrics(margin=1.0, cac=cac).row(0, named=True)
    assert r["observed_ages"] == 60
    assert (r["payback_age"], r["payback_status"]) == (age, status)


@pytest.mark.parametrize(("cac", "age", "status"), [(365, 364, "self-funding"), (366, 365, "needs funding")])
def test_payback_bands_daily(cac, age, status):
    # 365 days × 12/365.25 = 11.99 months (≤ 12); 366 days = 12.02 months
    start = D(2024, 1, 1)
    rows = [("u", (start + dt.timedelta(days=d)).isoformat() + " 12:00", 1) for d in range(400)]
    table = build(make_orders(rows), horizon=400, period="day", as_of=(start + dt.timedelta(days=400)).isoformat())
    r = table.metrics(margin=1.0, cac=cac).row(0, named=True)
    assert r["observed_ages"] == 400
    assert (r["payback_age"], r["payback_status"]) == (age, status)


# ----------------------------------------------------------------------------------------------------
# 5. CLV and properties
# ----------------------------------------------------------------------------------------------------
def test_clv_hand_computed_monthly_and_quarterly():
    # Signup cohort of 2: revenue 100 at age 0, 50 at age 1, 20 at age 2; margin 0.8, r = 10 %.
    # clv = 0.8 × (100 + 50 / 1.1^(1/12) + 20 / 1.1^(2/12)) / 2 = 67.715703…
    signups = pl.DataFrame({"user_id": ["a", "b"], "signup_ts": [DT(2024, 1, 1), DT(2024, 1, 2)]})
    orders = make_orders([("a", "2024-01-05", 100), ("b", "2024-02-05", 50), ("a", "2024-03-05", 20)])
    table = build(orders, signups=signups, horizon=3, as_of="2024-04-01")
    r = table.metrics(margin=0.8, discount_rate=0.1).row(0, named=True)
    expect = 0.8 * (100 + 50 / 1.1 ** (1 / 12) + 20 / 1.1 ** (2 / 12)) / 2
    assert expect == pytest.approx(67.715703, abs=1e-5)
    assert r["clv"] == pytest.approx(expect, rel=1e-9)
    assert r["ltv"] == pytest.approx(68.0)
    assert r["ltr"] == pytest.approx(85.0)

    # quarterly: the same amounts one quarter apart -> exponent k·3/12
    orders_q = make_orders([("a", "2024-01-05", 100), ("b", "2024-04-05", 50), ("a", "2024-07-05", 20)])
    table_q = build(orders_q, signups=signups, horizon=3, period="quarter", as_of="2024-10-01")
    rq = table_q.metrics(margin=0.8, discount_rate=0.1).row(0, named=True)
    expect_q = 0.8 * (100 + 50 / 1.1 ** 0.25 + 20 / 1.1 ** 0.5) / 2
    assert expect_q == pytest.approx(67.156783, abs=1e-5)
    assert rq["clv"] == pytest.approx(expect_q, rel=1e-9)


def test_clv_without_discount_equals_ltv(small):
    m = small.metrics(margin=0.7)
    for r in m.iter_rows(named=True):
        assert r["clv"] == pytest.approx(r["ltv"], rel=1e-12, abs=1e-9), r


# random small order tables: users 0..7, months Jan..Jun 2024, positive integer amounts
order_rows = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 5), st.integers(1, 28), st.integers(1, 200)),
    min_size=1,
    max_size=30,
)


def _orders_from(rows: list[tuple[int, int, int, int]], channels: bool = False) -> pl.DataFrame:
    out = []
    for u, mo, day, amt in rows:
        r = (f"u{u}", f"2024-{mo + 1:02d}-{day:02d}", amt)
        if channels:
            r = (*r, "a" if u % 2 else "b")
        out.append(r)
    return make_orders(out, channel=channels)


def reference_metrics(table: Any, margin: float, r: float, cac: float | None) -> dict[tuple, dict[str, Any]]:
    """metrics() recomputed from the engine's long table and cohort_stats, following the formulas above."""
    m = MONTHS_PER_PERIOD[table.period]
    long = table.to_polars()
    stats = {tuple(row[c] for c in [*table.by, "cohort"]): row for row in table.cohort_stats().iter_rows(named=True)}
    out: dict[tuple, dict[str, Any]] = {}
    for key, g in long.group_by([*table.by, "cohort"], maintain_order=True):
        g = g.sort("age").filter(pl.col("complete"))
        size = stats[key]["cohort_size"]
        customers = stats[key]["customers"]
        revs = g.get_column("revenue").to_list()
        ages = g.get_column("age").to_list()
        rtd = sum(revs)
        ltr = rtd / size
        ltv = ltr * margin
        clv = sum(v * margin / (1 + r) ** (k * m / 12) for k, v in zip(ages, revs)) / size
        ltv_pc = ltv * size / customers if customers else None
        row: dict[str, Any] = dict(cohort_size=size, customers=customers, observed_ages=len(revs), revenue_to_date=rtd,
                                   ltr=ltr, ltv=ltv, clv=clv, ltv_per_customer=ltv_pc)
        if cac is not None:
            row["cac"] = cac
            row["spend"] = cac * customers
            row["cac_per_signup"] = cac * customers / size
            row["ltv_cac"] = ltv_pc / cac if ltv_pc is not None else None
            row["net_value"] = ltv_pc - cac if ltv_pc is not None else None
            payback = None
            if customers:
                cum = 0.0
                for k, v in zip(ages, revs):
                    cum += v
                    if margin * cum / customers >= cac:
                        payback = k
                        break
            row["payback_age"] = payback
            if payback is None:
                row["payback_status"] = "not yet paid back"
            else:
                months = (payback + 1) * m
                row["payback_status"] = (
                    "self-funding" if months <= 12 else "needs funding" if months <= 24 else "likely unviable"
                )
        out[key] = row
    return out


@settings(max_examples=60)
@given(
    rows=order_rows,
    margin=st.sampled_from([1.0, 0.5, 0.25, 0.75]),
    r=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0]),
    cac=st.integers(1, 400).map(lambda x: x + 0.37),  # .37: no ties with the integer cumulative sums
    use_by=st.booleans(),
    period=st.sampled_from(["month", "week"]),
)
def test_metrics_match_reference(rows, margin, r, cac, use_by, period):
    table = build(_orders_from(rows, channels=use_by), by="channel" if use_by else None, horizon=6, period=period,
                  as_of="2024-06-01")
    if table.to_polars().height == 0:
        return
    got = table.metrics(margin=margin, discount_rate=r, cac=cac)
    ref = reference_metrics(table, margin, r, cac)
    assert got.height == len(ref)
    for row in got.iter_rows(named=True):
        key = tuple(row[c] for c in [*table.by, "cohort"])
        exp = ref[key]
        for c, v in exp.items():
            if isinstance(v, float):
                assert row[c] == pytest.approx(v, rel=1e-9, abs=1e-9), (c, row, exp)
            else:
                assert row[c] == v, (c, row, exp)
        lc = row["ltv_cac"]
        if lc is not None and abs(lc - 3) > 1e-9 and abs(lc - 1) > 1e-9:
            losing = "too early to tell: losing money so far" if row["verdict_basis"] == "too young" else "losing money"
            assert row["verdict"] == ("healthy" if lc >= 3 else "marginal" if lc > 1 else losing)
        assert row["verdict"] in VERDICTS | {"too early to tell: losing money so far", None}
        young = row["observed_ages"] * MONTHS_PER_PERIOD[period] < 3  # MIN_OBSERVED_MONTHS
        assert row["verdict_basis"] == (None if row["verdict"] is None else "too young" if young else "observed")
        assert row["payback_status"] in STATUSES


@settings(max_examples=60)
@given(
    rows=order_rows,
    margin=st.floats(0.01, 1.0),
    r=st.floats(0.0, 2.0),
    signup_share=st.booleans(),
)
def test_value_ordering_properties(rows, margin, r, signup_share):
    """Without refunds: LTR is non-decreasing over the complete ages; CLV ≤ LTV ≤ LTR; retention in [0, 1];
    repeaters ≤ customers ≤ cohort_size."""
    orders = _orders_from(rows)
    kw: dict[str, Any] = {}
    if signup_share:  # every user 0..9 signs up in January, some never pay
        kw["signups"] = pl.DataFrame({"user_id": [f"u{i}" for i in range(10)], "signup_ts": [DT(2024, 1, 1)] * 10})
    table = build(orders, horizon=6, as_of="2024-06-01", **kw)
    ltr = table.ltr()
    for _, g in ltr.group_by("cohort"):
        vals = g.sort("age").filter(pl.col("complete")).get_column("ltr").to_list()
        assert all(b >= a - 1e-9 for a, b in zip(vals, vals[1:])), vals
    # metrics.ltr is the ltr at the last complete age
    m = table.metrics(margin=margin, discount_rate=r)
    for row in m.iter_rows(named=True):
        last = ltr.filter((pl.col("cohort") == row["cohort"]) & pl.col("complete")).sort("age").get_column("ltr")[-1]
        assert row["ltr"] == pytest.approx(last, rel=1e-9)
        assert row["ltv"] <= row["ltr"] + 1e-9
        assert row["clv"] <= row["ltv"] + 1e-9
        assert row["clv"] >= 0
    ret = table.retention()
    pr = ret.get_column("paying_retention").drop_nulls()
    assert ((pr >= 0) & (pr <= 1)).all()
    rr = table.repeat_rate()
    for row in rr.iter_rows(named=True):
        assert 0 <= row["repeaters"] <= row["customers"] <= row["cohort_size"]
        assert row["repeat_rate"] == pytest.approx(row["repeaters"] / row["cohort_size"])


@settings(max_examples=40)
@given(rows=order_rows)
def test_per_cell_ratios_match_long_table(rows):
    table = build(_orders_from(rows, channels=True), by="channel", horizon=6, as_of="2024-06-01")
    long = table.to_polars()
    ltr, arppu, aov, ret = table.ltr(), table.arppu(), table.aov(), table.retention()
    for frame in (ltr, arppu, aov, ret):
        assert frame.height == long.height
        assert frame.columns[:3] == ["channel", "cohort", "age"]
        assert frame.select("channel", "cohort", "age").equals(long.select("channel", "cohort", "age"))
    cum: dict[tuple, float] = {}
    for i, row in enumerate(long.iter_rows(named=True)):
        key = (row["channel"], row["cohort"])
        if row["complete"]:
            cum[key] = cum.get(key, 0.0) + row["revenue"]
        exp_ltr = cum[key] / row["cohort_size"] if row["complete"] else None
        assert ltr.row(i, named=True)["ltr"] == approx(exp_ltr, rel=1e-9)
        exp_arppu = row["revenue"] / row["payers"] if row["complete"] and row["payers"] else None
        assert arppu.row(i, named=True)["arppu"] == approx(exp_arppu, rel=1e-9)
        exp_aov = row["revenue"] / row["orders"] if row["complete"] and row["orders"] else None
        assert aov.row(i, named=True)["aov"] == approx(exp_aov, rel=1e-9)
        exp_pr = row["payers"] / row["cohort_size"] if row["complete"] else None
        assert ret.row(i, named=True)["paying_retention"] == approx(exp_pr, rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------------
def test_summary_names_best_and_worst_channels():
    table = build(_facebook_search_orders(), by="channel", as_of="2024-02-01")
    s = table.summary(spend=SPEND_FB_PS, margin=1.0, min_size=1)  # small test cohorts
    assert isinstance(s, str) and s.strip()
    low = s.lower()
    assert "facebook" in s and "paid_search" in s
    assert "best" in low and "worst" in low, s
    assert "healthy" in low and "losing money" in low, s
    assert "payback" in low or "paid back" in low, s
    assert "recommend" in low or "next" in low, s
    # the best is facebook, the worst paid search: facebook is named on the "best" line
    best_line = next(line for line in s.splitlines() if "best" in line.lower())
    worst_line = next(line for line in s.splitlines() if "worst" in line.lower())
    assert "facebook" in best_line, s
    assert "paid_search" in worst_line, s


def test_summary_names_best_and_worst_cohorts():
    # Jan cohort: 4 customers × 100, Feb cohort: 2 customers × 100 but spend differs: Jan cac 10, Feb cac 200
    m_spend = {"2024-01": 40, "2024-02": 400}
    s = _two_cohorts().summary(margin=1.0, spend=m_spend, min_size=1)  # cohorts of 4 and 2: named only from min_size 1
    assert isinstance(s, str)
    default = _two_cohorts().summary(margin=1.0, spend=m_spend)
    assert "best and worst are not named (min_size)" in default and "Worst cohort" not in default
    best_line = next(line for line in s.splitlines() if "best" in line.lower())
    worst_line = next(line for line in s.splitlines() if "worst" in line.lower())
    assert "2024-01" in best_line, s
    assert "2024-02" in worst_line, s


# ----------------------------------------------------------------------------------------------------
# 7. errors
# ----------------------------------------------------------------------------------------------------
def test_invalid_argument_error_is_a_value_error():
    assert issubclass(ltrcore.InvalidArgumentError, ValueError)
    assert issubclass(ltrcore.InvalidArgumentError, ltrcore.LtrcoreError)


@pytest.mark.parametrize(
    "spend",
    [
        {"2023-06": 10, "2024-01": 5},
        {D(2023, 6, 1): 10},
        pl.DataFrame({"period": ["2024-01", "2023-06"], "spend": [5.0, 10.0]}),
    ],
    ids=["dict-str", "dict-date", "table"],
)
def test_spend_period_without_cohort_is_named(spend):
    with pytest.raises(ltrcore.InvalidArgumentError, match="2023-06"):
        _two_cohorts().metrics(margin=1.0, spend=spend)


def test_cac_period_without_cohort_is_an_error():
    with pytest.raises(ltrcore.InvalidArgumentError, match="2023-06"):
        _two_cohorts().metrics(margin=1.0, cac={"2023-06": 10, "2024-01": 5})


def test_unknown_channel_value(channels):
    spend = spend_frame([("2024-01", "fb", 100.0), ("2024-01", "tiktok", 100.0)], ["period", "channel", "spend"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(margin=1.0, spend=spend)


def test_channel_column_without_by():
    spend = spend_frame([("2024-01", "fb", 100.0)], ["period", "channel", "spend"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().metrics(margin=1.0, spend=spend)


def test_channel_column_not_in_by(channels):
    # by = channel; a spend table keyed by another column ("country") cannot be attributed
    spend = pl.DataFrame({"period": ["2024-01"], "country": ["de"], "spend": [100.0]})
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(margin=1.0, spend=spend)


@pytest.mark.parametrize(
    "spend",
    [-1, -0.01, {"2024-01": -5}, pl.DataFrame({"period": ["2024-01"], "spend": [-5.0]})],
    ids=["int", "float", "dict", "table"],
)
def test_negative_spend(spend):
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().metrics(margin=1.0, spend=spend)


def test_negative_detailed_spend(channels):
    spend = spend_frame([("2024-01", "fb", 100.0, -500.0)], ["period", "channel", "campaign", "wages"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(margin=1.0, spend=spend)


@pytest.mark.parametrize("margin", [0, 0.0, -0.5, 1.0001, 1.5, 100, float("nan")])
def test_margin_outside_unit_interval(margin):
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().metrics(margin=margin)


def test_margin_boundaries_accepted():
    _two_cohorts().metrics(margin=1.0)
    _two_cohorts().metrics(margin=1)
    _two_cohorts().metrics(margin=1e-6)


def test_margin_column_value_outside_unit_interval(channels):
    spend = spend_frame([("2024-01", "fb", 100.0, 1.5), ("2024-01", "search", 100.0, 0.5)],
                        ["period", "channel", "spend", "gm"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(spend=spend, margin="gm")


@pytest.mark.parametrize("rate", [-0.01, -1.0])
def test_negative_discount_rate(rate):
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().metrics(margin=1.0, discount_rate=rate)


def test_unknown_projection_method():
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().project(method="bogus")


def test_errors_also_from_summary():
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().summary(margin=1.0, spend=-1)
    with pytest.raises(ltrcore.InvalidArgumentError):
        _two_cohorts().summary(spend=100, margin=2)


@pytest.mark.parametrize(
    "rows",
    [
        [("2024-01", "fb", float("nan")), ("2024-01", "search", 100.0)],
        [("2024-01", "fb", float("inf")), ("2024-01", "search", 100.0)],
        [("2024-01", "fb", 100.0), ("2024-01", None, float("nan"))],  # NaN overhead
    ],
    ids=["nan-channel", "inf-channel", "nan-overhead"],
)
def test_non_finite_spend_in_channel_table(channels, rows):
    # The number/dict forms already refuse non-finite spend; a table must not slip NaN into spend, cac and
    # ltv_cac (and a NaN ltv_cac must never be judged "healthy").
    spend = spend_frame(rows, ["period", "channel", "spend"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(margin=1.0, spend=spend)


def test_non_finite_detailed_component(channels):
    spend = spend_frame([("2024-01", "fb", float("nan"), 0.0)], ["period", "channel", "campaign", "wages"])
    with pytest.raises(ltrcore.InvalidArgumentError):
        channels.metrics(margin=1.0, spend=spend)


@pytest.mark.parametrize(
    "spend",
    [{"2024-01": 100, "2030-01": 5}, pl.DataFrame({"period": ["2024-01", "2030-01"], "spend": [100.0, 5.0]})],
    ids=["dict", "table"],
)
def test_spend_period_after_last_cohort_is_named(spend):
    # The spec: spend periods that match no cohort are an error naming them. A typo'd future period
    # (2030 for 2023) must not be dropped silently.
    with pytest.raises(ltrcore.InvalidArgumentError, match="2030-01"):
        _two_cohorts().metrics(margin=1.0, spend=spend)


def test_overhead_is_conserved_when_a_cohort_has_no_channel():
    # A February customer whose first order has no channel (null segment). The 600 of overhead must be
    # allocated in full: either over fb and search only (300 each) or over the three slots (200 each, the
    # null-channel cohort charged too); never partly dropped.
    rows = [(f"f{i}", "2024-02-10", 100, "fb") for i in (5, 6)]
    rows += [("s3", "2024-02-11", 100, "search"), ("x1", "2024-02-12", 100, None)]
    table = build(make_orders(rows, channel=True), by="channel", as_of="2024-03-01")
    spend = spend_frame([("2024-02", "fb", 0.0), ("2024-02", None, 600.0)], ["period", "channel", "spend"])
    m = table.metrics(margin=1.0, spend=spend)
    assert m.get_column("spend").sum() == pytest.approx(600), m.select("channel", "spend")


# random spend tables over random channel cohorts: allocation matches the spec's rule and conserves money
spend_rows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 1000), st.integers(0, 500)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60)
@given(rows=order_rows, srows=spend_rows, detailed=st.booleans())
def test_spend_allocation_matches_reference(rows, srows, detailed):
    # users' channel: a, b, c by user id; first orders in Jan..Apr 2024 (order_rows months 0..5; as_of May)
    orders = _orders_from(rows)
    orders = orders.with_columns(
        pl.col("user_id").str.slice(1).cast(pl.Int64).map_elements(lambda u: "abc"[u % 3], return_dtype=pl.String)
        .alias("channel")
    )
    table = build(orders, by="channel", as_of="2024-05-01")
    stats = table.cohort_stats()
    slots = {(r["cohort"], r["channel"]): r["customers"] for r in stats.iter_rows(named=True)}
    periods = {c for c, _ in slots}
    valid = []
    for p, ch, campaign, wages in srows:
        period = D(2024, p + 1, 1)
        channel = None if ch == 3 else "abc"[ch]
        if period in periods and (channel is None or (period, channel) in slots):
            valid.append((period, channel, float(campaign), float(wages)))
    if not valid:
        return
    if detailed:
        spend = pl.DataFrame(valid, schema={"period": pl.Date, "channel": pl.String, "campaign": pl.Float64,
                                            "wages": pl.Float64}, orient="row")
    else:
        spend = pl.DataFrame([(p, c, a + w) for p, c, a, w in valid],
                             schema={"period": pl.Date, "channel": pl.String, "spend": pl.Float64}, orient="row")
    # reference allocation
    expect: dict[tuple, float] = {}
    for period in {p for p, *_ in valid}:
        channels = sorted(ch for (c, ch) in slots if c == period)
        direct = {ch: 0.0 for ch in channels}
        weight = {ch: 0.0 for ch in channels}
        overhead = 0.0
        for p, ch, a, w in valid:
            if p != period:
                continue
            if ch is None:
                overhead += a + w
            else:
                direct[ch] += a + w
                weight[ch] += a if detailed else a + w
        total_w = sum(weight.values())
        for ch in channels:
            share = weight[ch] / total_w if total_w > 0 else 1 / len(channels)
            expect[(period, ch)] = direct[ch] + overhead * share
    got = table.metrics(margin=1.0, spend=spend)
    for r in got.iter_rows(named=True):
        key = (r["cohort"], r["channel"])
        if key not in expect:
            continue
        assert r["spend"] == pytest.approx(expect[key], rel=1e-9, abs=1e-6), (key, r, expect)
        customers = slots[key]
        exp_cac = expect[key] / customers if customers else None
        assert r["cac"] == approx(exp_cac, rel=1e-9, abs_=1e-6), (key, r)
    total_in = sum(a + w for *_, a, w in valid)
    total_out = sum(v for k, v in ((k, r["spend"]) for r in got.iter_rows(named=True)
                                   for k in [(r["cohort"], r["channel"])]) if k in expect and v is not None)
    assert total_out == pytest.approx(total_in, rel=1e-9, abs=1e-6)


# --- choices documented in the README -------------------------------------------------------------


def test_spend_for_the_running_period_is_ignored_but_later_periods_are_errors():
    table = _two_cohorts()  # cohorts Jan and Feb 2024, as_of 2024-03-01: March is running
    m = table.metrics(margin=1.0, spend={"2024-01": 400, "2024-02": 200, "2024-03": 999})
    assert one(m, cohort=dt.date(2024, 1, 1))["cac"] == pytest.approx(100)
    with pytest.raises(ltrcore.InvalidArgumentError, match="2024-04"):
        table.metrics(margin=1.0, spend={"2024-01": 400, "2024-04": 1})


def test_a_date_inside_a_period_names_that_period():
    table = _two_cohorts()
    m = table.metrics(margin=1.0, spend={dt.date(2024, 1, 17): 400, "2024-02-29": 200})
    assert one(m, cohort=dt.date(2024, 1, 1))["spend"] == pytest.approx(400)
    assert one(m, cohort=dt.date(2024, 2, 1))["cac"] == pytest.approx(100)


def test_a_by_column_called_segment_does_not_clash_with_internal_names():
    rows = [("a", "2024-01-15", 100, "x"), ("b", "2024-01-16", 50, "y"), ("c", "2024-02-02", 10, "x")]
    orders = make_orders(rows, channel=True).rename({"channel": "segment"})
    table = build(orders, by="segment", as_of="2024-03-01")
    assert table.to_polars().columns[0] == "segment"
    assert sorted(table.metrics(margin=1.0, cac=10).get_column("segment").to_list()) == ["x", "x", "y"]


# --- exact decisions (issue 13, item 1) ---------------------------------------------------------
def _one_cohort(amount: float, later: float | None = None):
    """One customer paying ``amount`` in January 2024 (and ``later`` in February); January to March
    complete, so the cohort is old enough (3 observed months) to be judged on observed values."""
    import ltrcore

    ts = [dt.datetime(2024, 1, 10, tzinfo=dt.timezone.utc)]
    amounts = [amount]
    if later is not None:
        ts.append(dt.datetime(2024, 2, 10, tzinfo=dt.timezone.utc))
        amounts.append(later)
    orders = pl.DataFrame({"user_id": [1] * len(ts), "ts": ts, "amount": amounts})
    return ltrcore.cohorts(orders, horizon=3, as_of="2024-04-01")


def test_an_exact_ratio_of_3_is_healthy():
    """LTV = 180 × 0.35 = 63 against a spend of 21: LTV/CAC is exactly 3, so healthy. In floats,
    180 × 0.35 = 62.99999999999999 and the ratio 2.9999999999999996, which read as marginal."""
    m = _one_cohort(180.0).metrics(spend=21, margin=0.35).row(0, named=True)
    assert 180 * 0.35 / 21 < 3
    assert m["ltv_cac"] == 3.0 and m["verdict"] == "healthy"


def test_margin_equal_to_cac_is_paid_back():
    """Revenue 9 at age 0, margin 0.3, spend 2.7: cumulative margin 0.3 × 9 = 2.7 reaches the CAC of
    2.7 exactly at age 0 (floats say 2.6999999999999997). LTV/CAC is exactly 1: losing money."""
    m = _one_cohort(9.0).metrics(spend=2.7, margin=0.3).row(0, named=True)
    assert 0.3 * 9 < 2.7
    assert (m["payback_age"], m["payback_status"]) == (0, "self-funding")
    assert (m["ltv_cac"], m["verdict"]) == (1.0, "losing money")


@settings(max_examples=60, deadline=None)
@given(
    margin_cents=st.integers(1, 100),
    revenue_thirds=st.integers(1, 3000),
    bump=st.sampled_from([-1, 0, 1]),
)
def test_thresholds_are_decided_exactly(margin_cents: int, revenue_thirds: int, bump: int):
    """Values exact in decimal and mostly inexact in binary: margin m = k/100, revenue R = 3j (so
    m × R / 3 has at most two decimals), spend S = m × R / 3 (ratio exactly 3) or S = m × R (ratio
    exactly 1), nudged by one cent. The verdict must follow the exact ratio, and payback the exact
    comparison of m × R with S."""
    from decimal import Decimal

    m = Decimal(margin_cents) / 100
    revenue = Decimal(3 * revenue_thirds)
    table = _one_cohort(float(revenue))
    cent = Decimal("0.01") * bump
    for spend, edge in ((m * revenue / 3 + cent, 3), (m * revenue + cent, 1)):
        if spend <= 0:
            continue
        row = table.metrics(spend=float(spend), margin=float(m)).row(0, named=True)
        ratio = m * revenue / spend
        expected = "healthy" if ratio >= 3 else "marginal" if ratio > 1 else "losing money"
        assert row["verdict"] == expected, (m, revenue, spend, edge, row)
        assert (row["payback_age"] == 0) == (m * revenue >= spend), (m, revenue, spend, row)


def test_spend_before_since_is_left_out_with_a_warning():
    """Tracking began on 2024-02-01 (``since``): January's cohort is not reported, so January's spend
    of 100 has nothing to charge it to. It is left out with a SpendIgnoredWarning; February's 50 is
    charged to February's one customer (revenue 30 at margin 1: LTV/CAC 30 ÷ 50 = 0.6). A typo'd
    period (2031) is still an error."""
    import ltrcore

    orders = pl.DataFrame(
        {
            "user_id": [1, 2],
            "ts": [dt.datetime(2024, 1, 10, tzinfo=dt.timezone.utc), dt.datetime(2024, 2, 10, tzinfo=dt.timezone.utc)],
            "amount": [20.0, 30.0],
        }
    )
    table = ltrcore.cohorts(orders, horizon=2, since="2024-02-01", as_of="2024-03-01")
    for spend in ({"2024-01": 100, "2024-02": 50}, pl.DataFrame({"month": ["2024-01", "2024-02"], "spend": [100.0, 50.0]})):
        with pytest.warns(ltrcore.SpendIgnoredWarning, match="2024-01-01 is before since"):
            m = table.metrics(margin=1.0, spend=spend)
        row = m.row(0, named=True)
        assert (str(row["cohort"]), row["spend"], row["ltv_cac"]) == ("2024-02-01", 50.0, 0.6)
    with pytest.raises(ltrcore.InvalidArgumentError, match="no cohort: 2031-01-01"):
        table.metrics(margin=1.0, spend={"2031-01": 5})


def test_summary_says_when_nothing_is_complete_and_when_seasonality_cannot_be_judged():
    """Orders in January 2024 only, as_of the start of January: no complete month, so the summary
    says exactly that (not "no acquisition cost given"). As of March: two complete months, fewer
    than 12, so seasonality cannot be judged yet."""
    orders = make_orders([("a", "2024-01-05", 10), ("b", "2024-01-20", 20)])
    nothing = build(orders, horizon=3, as_of="2024-01-15").summary(margin=1.0, spend={"2024-01": 5})
    assert "No complete month yet" in nothing and "No acquisition cost" not in nothing, nothing
    early = build(orders, horizon=3, as_of="2024-03-01").summary(margin=1.0, spend={"2024-01": 5}, min_size=1)
    assert "Fewer than 12 complete months of data (2): seasonality cannot be judged yet." in early, early
