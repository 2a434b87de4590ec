"""Issue 13, item 2: the per-cell definitions follow the material (DOMAIN.md), on numbers worked by hand.

Signups (UTC, month periods, horizon 4), all in January 2024: ann, ben, cat, dan, eve.

Orders:
    ann  Jan 100 | Feb 100 | Mar 50 | Apr 10
    ben  Jan 300 | Feb -320 (refund of a January order; ben pays nothing in February)
    cat  Feb 1000 | Feb 500 | Mar 40
    dan  Feb 200 (exactly min_amount: a token purchase, not a paying order)
    eve  never orders
    as_of 2024-05-01: January to April are complete.

min_amount is 0 except in the test that sets it to 200.

With min_amount = 0, cohort January, per age (payers, payments, revenue):
    age 0 (Jan): ann, ben pay: payers 2, payments 400, revenue 400, orders 2
    age 1 (Feb): ann 100, cat 1000 + 500, dan 200: payers 3, payments 1800, orders 4;
                 revenue 1800 - 320 = 1480
    age 2 (Mar): ann 50, cat 40: payers 2, payments 90, revenue 90
    age 3 (Apr): ann 10: payers 1, payments 10
ARPPU = payments / payers: 200, 600, 45, 10. ARPPU (net) = revenue / payers: 200, 493.33, 45, 10.

Retention rate (bought in this period and the previous one / bought in the previous one):
    age 1: Jan buyers {ann, ben}; of them ann buys in Feb: 1 / 2
    age 2: Feb buyers {ann, cat, dan}; ann and cat buy in Mar: 2 / 3
    age 3: Mar buyers {ann, cat}; ann buys in Apr: 1 / 2
Repeat rate: repeaters (two or more paying orders) are ann (4) and cat (3); ben has one paying
    order (his refund is not one), dan one. customers 4 (ann, ben, cat, dan), cohort size 5:
    2 / 5 = 0.4 of the cohort, 2 / 4 = 0.5 of the customers.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

ltrcore = pytest.importorskip("ltrcore")

UTC = dt.timezone.utc
D = dt.date


def _ts(month: int, day: int = 10) -> dt.datetime:
    return dt.datetime(2024, month, day, 12, tzinfo=UTC)


SIGNUPS = pl.DataFrame(
    {"user_id": ["ann", "ben", "cat", "dan", "eve"], "signup_ts": [_ts(1, d) for d in (2, 3, 4, 5, 6)]}
)
ORDERS = pl.DataFrame(
    {
        "user_id": ["ann", "ann", "ann", "ann", "ben", "ben", "cat", "cat", "cat", "dan"],
        "ts": [_ts(1), _ts(2), _ts(3), _ts(4), _ts(1), _ts(2, 12), _ts(2), _ts(2, 20), _ts(3), _ts(2)],
        "amount": [100.0, 100.0, 50.0, 10.0, 300.0, -320.0, 1000.0, 500.0, 40.0, 200.0],
    }
)


def _table(**kw):
    return ltrcore.cohorts(ORDERS, signups=SIGNUPS, horizon=4, as_of="2024-05-01", **kw)


def _by_age(frame: pl.DataFrame, column: str) -> list:
    return frame.sort("age").get_column(column).to_list()


def test_arppu_is_payments_per_payer_and_a_refund_cannot_make_it_negative():
    """Jan cohort: ben refunds 320 in February without paying then. Cell Feb alone, without the
    other users, would be revenue -220 (ann 100, ben -320) over 1 payer: ARPPU -220 before this fix."""
    feb_only = ORDERS.filter(pl.col("user_id").is_in(["ann", "ben"]))
    table = ltrcore.cohorts(feb_only, signups=SIGNUPS, horizon=4, as_of="2024-05-01")
    out = table.arppu().filter(pl.col("age") == 1).row(0, named=True)
    assert (out["arppu"], out["arppu_net"]) == (100.0, -220.0)

    out = _table().arppu()
    assert _by_age(out, "arppu") == [200.0, 600.0, 45.0, 10.0]
    assert _by_age(out, "arppu_net") == pytest.approx([200.0, 1480 / 3, 45.0, 10.0])
    cells = _table().to_polars().sort("age")
    assert cells.get_column("payments").to_list() == [400.0, 1800.0, 90.0, 10.0]
    assert cells.get_column("revenue").to_list() == [400.0, 1480.0, 90.0, 10.0]


def test_min_amount_leaves_token_purchases_out_of_both_sides_of_arppu_and_aov():
    """min_amount = 200: an order pays when its amount is above 200. February (age 1) then holds
    ann 100 and dan 200 (token purchases, not paying), ben -320 and cat 1000 + 500 (paying): payers
    {cat}, 2 paying orders, payments 1500, revenue 1480. ARPPU = 1500 / 1, AOV = 1500 / 2 = 750.
    The trial money leaves both sides: before, the numerators kept it (1480 / 2 = 740 as AOV).
    The issue's own cell (cat 1000 + 500, dan 200 at min_amount): AOV 750, and 1700 / 2 = 850 only
    as the net variant."""
    out = _table(min_amount=200)
    feb = out.to_polars().filter(pl.col("age") == 1).row(0, named=True)
    assert (feb["payers"], feb["orders"], feb["payments"], feb["revenue"]) == (1, 2, 1500.0, 1480.0)
    assert out.aov().filter(pl.col("age") == 1).row(0, named=True)["aov"] == 750.0
    assert out.arppu().filter(pl.col("age") == 1).row(0, named=True)["arppu"] == 1500.0

    # The issue's own cell: 1000 + 500 paying, 200 at min_amount. Trial money leaves both sides.
    cell = pl.DataFrame(
        {"user_id": ["cat", "cat", "dan"], "ts": [_ts(1), _ts(1, 20), _ts(1)], "amount": [1000.0, 500.0, 200.0]}
    )
    t = ltrcore.cohorts(cell, signups=SIGNUPS, horizon=1, as_of="2024-02-01", min_amount=200)
    row = t.aov().row(0, named=True)
    assert (row["aov"], row["aov_net"]) == (750.0, 850.0)


def test_retention_rate_per_cohort_and_age():
    out = _table().retention_rate().sort("age")
    assert out.columns == ["cohort", "age", "retained", "previous_payers", "retention_rate", "complete"]
    assert out.get_column("retained").to_list() == [None, 1, 2, 1]
    assert out.get_column("previous_payers").to_list() == [None, 2, 3, 2]
    assert out.get_column("retention_rate").to_list() == [None, 0.5, pytest.approx(2 / 3), 0.5]
    # The cohort share still paying stays under its own name.
    assert _by_age(_table().retention(), "paying_retention") == [0.4, 0.6, 0.4, 0.2]


def test_retention_rate_store_wide_pools_cohorts_by_calendar_period():
    """A second cohort, February: fay signs up in February and buys in February and March.
    March: January's {ann, cat} (of Feb buyers {ann, cat, dan}) plus fay (of Feb buyers {fay}):
    (2 + 1) / (3 + 1) = 3 / 4. February: January only, 1 / 2. April: Jan 1 / 2; fay's cohort
    (age 2 in April) bought nothing: 1 / (2 + 1)."""
    signups = pl.concat([SIGNUPS, pl.DataFrame({"user_id": ["fay"], "signup_ts": [_ts(2, 1)]})])
    orders = pl.concat([ORDERS, pl.DataFrame({"user_id": ["fay", "fay"], "ts": [_ts(2), _ts(3)], "amount": [5.0, 5.0]})])
    t = ltrcore.cohorts(orders, signups=signups, horizon=4, as_of="2024-05-01")
    out = t.retention_rate(store_wide=True)
    assert out.columns == ["period", "retained", "previous_payers", "retention_rate"]
    assert out.rows() == [
        (D(2024, 2, 1), 1, 2, 0.5),
        (D(2024, 3, 1), 3, 4, 0.75),
        (D(2024, 4, 1), 1, 3, pytest.approx(1 / 3)),
    ]


def test_retention_rate_store_wide_leaves_out_a_buyer_at_the_cohorts_last_age():
    """Horizon 2: January's members are followed for January and February only. March buyers of
    the January cohort are beyond the horizon, so February's January buyers {ann, cat, dan} cannot
    be counted back in March and stay out of March's denominator: no March row at all."""
    t = ltrcore.cohorts(ORDERS, signups=SIGNUPS, horizon=2, as_of="2024-05-01")
    assert t.retention_rate(store_wide=True).rows() == [(D(2024, 2, 1), 1, 2, 0.5)]


def test_repeat_rate_over_both_denominators():
    row = _table().repeat_rate().row(0, named=True)
    assert (row["cohort_size"], row["customers"], row["repeaters"]) == (5, 4, 2)
    assert (row["repeat_rate"], row["repeat_rate_of_customers"]) == (0.4, 0.5)
