"""Hand-computed examples that pin the reference implementation itself.

Every expected number below was worked out by hand from the README semantics, so a wrong reference
cannot hide a wrong engine. These tests do not import ltrcore.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pytest

from reference import (
    first_usable_period,
    paying_threshold,
    local_date_of_instant,
    period_of_date,
    period_start_date,
    reference_cohorts,
    round_float,
    total_amount,
)

D = dt.date
T = dt.datetime
UTC = dt.timezone.utc


def orders(rows, *, amount_type=pa.float64(), ts_type=pa.timestamp("us"), user_type=pa.string(), extra=None):
    users, tss, amounts = zip(*rows) if rows else ((), (), ())
    cols = {
        "user_id": pa.array(users, user_type),
        "ts": pa.array(tss, ts_type),
        "amount": pa.array(amounts, amount_type),
    }
    for name, (values, typ) in (extra or {}).items():
        cols[name] = pa.array(values, typ)
    return pa.table(cols)


def cells(ref, *cols):
    return ref.table.select(*cols).rows()


def recon(ref):
    return {r: (rows, amt) for r, (rows, amt) in ref.reconciliation.items()}


# ---------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "d, period, idx, start",
    [
        (D(2024, 1, 31), "month", 2024 * 12, D(2024, 1, 1)),
        (D(2024, 12, 1), "month", 2024 * 12 + 11, D(2024, 12, 1)),
        (D(1969, 12, 31), "month", 1969 * 12 + 11, D(1969, 12, 1)),
        (D(2024, 5, 15), "quarter", 2024 * 4 + 1, D(2024, 4, 1)),
        (D(2024, 12, 31), "quarter", 2024 * 4 + 3, D(2024, 10, 1)),
        (D(1970, 1, 5), "week", 0, D(1970, 1, 5)),
        (D(1970, 1, 11), "week", 0, D(1970, 1, 5)),
        (D(1970, 1, 4), "week", -1, D(1969, 12, 29)),
        (D(2024, 1, 1), "week", (D(2024, 1, 1) - D(1970, 1, 5)).days // 7, D(2024, 1, 1)),  # a Monday
        (D(2024, 1, 7), "week", (D(2024, 1, 1) - D(1970, 1, 5)).days // 7, D(2024, 1, 1)),  # Sunday
        (D(1970, 1, 1), "day", 0, D(1970, 1, 1)),
        (D(1969, 12, 31), "day", -1, D(1969, 12, 31)),
    ],
)
def test_period_index(d, period, idx, start):
    assert period_of_date(d, period) == idx
    assert period_start_date(idx, period) == start


@pytest.mark.parametrize(
    "x, scale, expected",
    [
        (0.125, 2, 13),  # exact half -> away from zero
        (-0.125, 2, -13),
        (0.5, 0, 1),
        (-0.5, 0, -1),
        (2.5, 0, 3),
        (1.005, 2, 100),  # 1.005*100 == 100.49999999999999 in float64
        (0.285, 2, 28),  # 28.499999999999996
        (2.675, 2, 268),  # the float64 product is exactly 267.5
        (5e-05, 4, 1),  # 0.5 -> 1
        (12.34565, 4, 123456),  # 123456.49999999999
        (10.0, 4, 100000),
        (-3.25, 1, -33),
    ],
)
def test_round_float(x, scale, expected):
    assert round_float(x, scale) == expected


@pytest.mark.parametrize(
    "instant, tz, local",
    [
        # Sao Paulo: DST started 2015-10-18 00:00 -03 -> 01:00 -02 (no local midnight that day)
        (T(2015, 10, 18, 2, 59, 59, tzinfo=UTC), "America/Sao_Paulo", D(2015, 10, 17)),
        (T(2015, 10, 18, 3, 0, 0, tzinfo=UTC), "America/Sao_Paulo", D(2015, 10, 18)),
        # Amman: DST ended 2021-10-29 01:00 +03 -> 00:00 +02 (the hour after midnight happens twice)
        (T(2021, 10, 28, 20, 59, 59, tzinfo=UTC), "Asia/Amman", D(2021, 10, 28)),
        (T(2021, 10, 28, 21, 0, 0, tzinfo=UTC), "Asia/Amman", D(2021, 10, 29)),
        (T(2021, 10, 28, 22, 30, 0, tzinfo=UTC), "Asia/Amman", D(2021, 10, 29)),
        (T(2021, 10, 29, 21, 59, 59, tzinfo=UTC), "Asia/Amman", D(2021, 10, 29)),
        (T(2021, 10, 29, 22, 0, 0, tzinfo=UTC), "Asia/Amman", D(2021, 10, 30)),
        # Apia skipped 2011-12-30: 23:59:59 -10 on the 29th is followed by 00:00 +14 on the 31st
        (T(2011, 12, 30, 9, 59, 59, tzinfo=UTC), "Pacific/Apia", D(2011, 12, 29)),
        (T(2011, 12, 30, 10, 0, 0, tzinfo=UTC), "Pacific/Apia", D(2011, 12, 31)),
        (T(2024, 3, 31, 22, 0, 0, tzinfo=UTC), "Europe/Berlin", D(2024, 4, 1)),
        (T(2024, 3, 31, 21, 59, 59, tzinfo=UTC), "Europe/Berlin", D(2024, 3, 31)),
    ],
)
def test_local_date_dst_edges(instant, tz, local):
    secs = int(instant.timestamp())
    assert local_date_of_instant(secs, tz) == local
    # cross-check Python's zoneinfo against Polars' (chrono-tz) conversion
    got = (
        pl.Series([instant]).dt.convert_time_zone(tz).dt.date().item()
    )
    assert got == local


@pytest.mark.parametrize(
    "min_amount, scale, threshold",
    [
        (0, 4, 0),
        (1, 0, 1),
        (2.5, 0, 2),  # integer amounts: 3 pays, 2 does not
        (2.5, 2, 250),
        (0.57, 2, 57),  # not floor(0.57 * 100) == floor(56.99999999999999) == 56
        (0.29, 4, 2900),
        (-1, 2, -100),
        (-0.015, 2, -2),  # floor(-1.5)
        (Decimal("0.125"), 2, 12),
    ],
)
def test_paying_threshold(min_amount, scale, threshold):
    assert paying_threshold(min_amount, scale) == threshold


def test_min_amount_equal_to_the_amount_is_not_paying():
    t = orders([("u1", T(2024, 1, 5), 0.57), ("u2", T(2024, 1, 6), 0.58), ("u3", T(2024, 2, 1), 9.0)])
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=1, min_amount=0.57, scale=2)
    assert cells(ref, "cohort", "cohort_size", "revenue", "orders") == [(D(2024, 1, 1), 1, 0.58, 1)]
    assert recon(ref)["never_paid"] == (1, Decimal("0.57"))


def test_since_first_usable_period():
    m = lambda y, mo: y * 12 + mo - 1  # noqa: E731
    assert first_usable_period(D(2023, 8, 15), "UTC", "month") == m(2023, 9)
    assert first_usable_period(D(2023, 9, 1), "UTC", "month") == m(2023, 9)
    assert first_usable_period("2023-09-01", "UTC", "month") == m(2023, 9)
    assert first_usable_period(T(2023, 9, 1), "UTC", "month") == m(2023, 9)
    assert first_usable_period(T(2023, 9, 1, 0, 0, 1), "UTC", "month") == m(2023, 10)
    # aware: 2023-08-31 22:00 UTC is Sept 1 00:00 in Berlin (CEST, +02)
    assert first_usable_period(T(2023, 8, 31, 22, tzinfo=UTC), "Europe/Berlin", "month") == m(2023, 9)
    assert first_usable_period(T(2023, 8, 31, 22, tzinfo=UTC), "UTC", "month") == m(2023, 9)
    assert first_usable_period(T(2023, 8, 31, 21, 59, tzinfo=UTC), "UTC", "month") == m(2023, 9)
    assert first_usable_period(T(2023, 8, 31, 22, 0, 1, tzinfo=UTC), "Europe/Berlin", "month") == m(2023, 10)
    # Sao Paulo day 2015-10-18 starts at 01:00 local = 03:00 UTC
    d18 = period_of_date(D(2015, 10, 18), "day")
    sp = "America/Sao_Paulo"
    assert first_usable_period(T(2015, 10, 18, 3, tzinfo=UTC), sp, "day") == d18
    assert first_usable_period(T(2015, 10, 18, 2, 59, 59, tzinfo=UTC), sp, "day") == d18
    assert first_usable_period(T(2015, 10, 18, 3, 0, 1, tzinfo=UTC), sp, "day") == d18 + 1
    assert first_usable_period("2015-10-18T03:00:00+00:00", sp, "day") == d18
    # the same instant written in local time (01:00 -02, the first instant of the 18th): one microsecond
    # earlier is 23:59:59.999999 -03 on the 17th, not the non-existent wall time 00:59:59.999999
    assert first_usable_period(T(2015, 10, 18, 1, tzinfo=ZoneInfo(sp)), sp, "day") == d18
    assert first_usable_period(T(2015, 10, 18, 1, 0, 1, tzinfo=ZoneInfo(sp)), sp, "day") == d18 + 1
    assert first_usable_period("2015-10-18T01:00:00-02:00", sp, "day") == d18
    # Amman: the 29th starts at 00:00 +03; 00:00 +02 (an hour later) is inside the 29th
    d29 = period_of_date(D(2021, 10, 29), "day")
    assert first_usable_period(T(2021, 10, 29, 0, tzinfo=ZoneInfo("Asia/Amman")), "Asia/Amman", "day") == d29
    assert first_usable_period("2021-10-29T00:00:00+02:00", "Asia/Amman", "day") == d29 + 1


# ---------------------------------------------------------------------------------------------------
# first-purchase cohorts
# ---------------------------------------------------------------------------------------------------
def test_first_purchase_example():
    t = orders(
        [
            ("u1", T(2024, 1, 5), 10.0),
            ("u1", T(2024, 1, 20), -2.0),  # refund in the cohort month
            ("u1", T(2024, 2, 3), 5.0),
            ("u1", T(2024, 3, 1), 7.0),  # March is the running month -> not_yet_complete
            ("u2", T(2023, 12, 31), 0.0),  # not paying, before u2's first paying order
            ("u2", T(2024, 2, 10), 20.0),
            ("u2", T(2024, 2, 11), 3.0),
            ("u3", T(2024, 1, 15), -4.0),  # u3 never pays
            (None, T(2024, 1, 15), 99.0),
        ]
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=3)
    assert ref.amount_scale == 4
    assert ref.table.columns == [
        "cohort", "age", "cohort_size", "revenue", "gross_revenue", "refunds", "payments", "profit", "orders", "payers",
        "retained", "active", "complete",
    ]  # fmt: skip
    # u1 pays in January and again in February: retained at age 1.
    assert cells(ref, "cohort", "age", "cohort_size", "revenue", "gross_revenue", "refunds", "payments", "orders",
                 "payers", "retained", "complete") == [
        (D(2024, 1, 1), 0, 1, 8.0, 10.0, -2.0, 10.0, 1, 1, 0, True),
        (D(2024, 1, 1), 1, 1, 5.0, 5.0, 0.0, 5.0, 1, 1, 1, True),
        (D(2024, 1, 1), 2, 1, None, None, None, None, None, None, None, False),
        (D(2024, 2, 1), 0, 1, 23.0, 23.0, 0.0, 23.0, 2, 1, 0, True),
        (D(2024, 2, 1), 1, 1, None, None, None, None, None, None, None, False),
        (D(2024, 2, 1), 2, 1, None, None, None, None, None, None, None, False),
    ]  # fmt: skip
    assert ref.table["active"].null_count() == ref.table.height  # no activity -> null
    assert recon(ref) == {
        "null_user": (1, Decimal("99")),  # the amount is finite, so it is carried
        "never_paid": (1, Decimal("-4")),
        "before_cohort": (1, Decimal("0")),
        "not_yet_complete": (1, Decimal("7")),
        "used": (5, Decimal("36")),
    }
    assert ref.excluded_bad_rows == 1
    n, total = total_amount(t, "amount")
    assert sum(r for r, _ in ref.reconciliation.values()) == n == 9
    assert sum(a for _, a in ref.reconciliation.values()) == total == Decimal("138")


def test_first_purchase_ties_and_segments():
    # two paying orders at the same instant: the first in input order gives the segment
    t = orders(
        [
            ("u1", T(2024, 1, 5, 12), 3.0, ),
            ("u1", T(2024, 1, 5, 12), 4.0),
            ("u2", T(2024, 1, 9), 1.0),
            ("u2", T(2024, 1, 8), 2.0),  # earlier timestamp wins even though it comes later
            ("u3", T(2024, 2, 9), 1.0),
        ],
        extra={"ch": (["x", "y", "y", "x", None], pa.string())},
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", by="ch", horizon=1)
    assert cells(ref, "ch", "cohort", "age", "cohort_size", "revenue", "orders", "payers") == [
        ("x", D(2024, 1, 1), 0, 2, 10.0, 4, 2),  # u1 (row 0 says x) and u2 (row 3 says x)
    ]
    assert recon(ref) == {"used": (4, Decimal("10")), "not_yet_complete": (1, Decimal("1"))}


def test_min_amount_integer_amounts():
    t = orders(
        [
            ("u1", T(2024, 1, 10), 3),  # below min_amount: not paying, before the cohort
            ("u1", T(2024, 2, 1), 6),  # first paying order -> Feb cohort
            ("u1", T(2024, 2, 2), 5),  # 5 > 5 is false: revenue, but not an order
            ("u1", T(2024, 2, 3), -1),
            ("u2", T(2024, 3, 1), 100),  # latest -> March running, cohort March not reported
            ("u3", T(2024, 1, 1), 5),  # never pays more than 5
        ],
        amount_type=pa.int64(),
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=1, min_amount=5)
    assert ref.amount_scale == 0
    assert cells(ref, "cohort", "age", "cohort_size", "revenue", "gross_revenue", "refunds", "orders",
                 "payers") == [
        (D(2024, 2, 1), 0, 1, 10.0, 11.0, -1.0, 1, 1),
    ]  # fmt: skip
    assert recon(ref) == {
        "before_cohort": (1, Decimal(3)),
        "used": (3, Decimal(10)),
        "not_yet_complete": (1, Decimal(100)),
        "never_paid": (1, Decimal(5)),
    }
    # a fractional min_amount on integer amounts: 5 > 4.5 pays
    ref2 = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=1, min_amount=4.5)
    assert cells(ref2, "cohort", "cohort_size", "revenue", "orders") == [
        (D(2024, 1, 1), 1, 5.0, 1),  # u3
        (D(2024, 2, 1), 1, 10.0, 2),  # u1: now 6 and 5 are both orders
    ]
    assert recon(ref2) == {
        "before_cohort": (1, Decimal(3)),
        "used": (4, Decimal(15)),
        "not_yet_complete": (1, Decimal(100)),
    }


def test_decimal_amounts_and_float_rounding():
    dec = orders(
        [("u1", T(2024, 1, 1), Decimal("1.25")), ("u1", T(2024, 1, 2), Decimal("-0.10")),
         ("u1", T(2024, 2, 2), Decimal("0.01"))],
        amount_type=pa.decimal128(9, 2),
    )  # fmt: skip
    ref = reference_cohorts(dec, user="user_id", ts="ts", amount="amount", horizon=1)
    assert ref.amount_scale == 2
    assert cells(ref, "revenue", "gross_revenue", "refunds") == [(1.15, 1.25, -0.1)]
    assert recon(ref) == {"used": (2, Decimal("1.15")), "beyond_horizon": (1, Decimal("0.01"))}  # age 1

    fl = orders(
        [("u1", T(2024, 1, 1), 0.125), ("u1", T(2024, 1, 2), 0.125), ("u1", T(2024, 1, 3), float("nan")),
         ("u1", T(2024, 1, 4), float("inf")), ("u1", T(2024, 1, 5), None), ("u1", None, 1.0),
         ("u1", T(2024, 2, 1), 1.0)],
        amount_type=pa.float32(),
    )  # fmt: skip
    ref = reference_cohorts(fl, user="user_id", ts="ts", amount="amount", horizon=1, scale=2)
    assert ref.amount_scale == 2
    # each 0.125 rounds to 0.13 per row before summing: 0.26, not round(0.25) = 0.25
    assert cells(ref, "revenue") == [(0.26,)]
    assert recon(ref) == {
        "used": (2, Decimal("0.26")),
        "nan_amount": (2, Decimal(0)),
        "null_amount": (1, Decimal(0)),
        "null_ts": (1, Decimal("1.00")),
        "beyond_horizon": (1, Decimal("1.00")),  # February is age 1 of the January cohort
    }
    assert ref.excluded_bad_rows == 4


# ---------------------------------------------------------------------------------------------------
# signup cohorts
# ---------------------------------------------------------------------------------------------------
def signups_example():
    s = pa.table(
        {
            "user_id": ["u1", "u2", "u3", "u1", "u2", None, "u6"],
            "signup_ts": pa.array(
                [T(2024, 1, 10), T(2024, 1, 20), T(2024, 2, 1), T(2024, 1, 15), T(2024, 1, 20), T(2024, 1, 1), None],
                pa.timestamp("ms"),
            ),
            "seg": ["a", "b", "a", "b", "a", "a", "a"],
        }
    )
    o = orders(
        [
            ("u1", T(2024, 1, 12), 10.0),
            ("u2", T(2024, 2, 5), 4.0),
            ("u5", T(2024, 2, 10), 9.0),  # not in signups
            ("u1", T(2024, 3, 2), 1.0),  # latest order: March runs; age 2 >= horizon 2
            ("u6", T(2024, 1, 3), 2.0),  # u6's only signup has a null ts -> not a member
        ]
    )
    a = pa.table(
        {
            "user_id": ["u1", "u1", "u3", "u5", "u2", None, "u2"],
            "ts": pa.array(
                [T(2024, 1, 10), T(2024, 1, 11), T(2024, 2, 20), T(2024, 1, 5), T(2023, 12, 1), T(2024, 1, 1),
                 T(2024, 2, 1)],
                pa.timestamp("s"),
            ),
        }
    )  # fmt: skip
    return o, s, a


def test_signups_example():
    o, s, a = signups_example()
    ref = reference_cohorts(o, user="user_id", ts="ts", amount="amount", signups=s, by="seg", horizon=2)
    assert cells(ref, "seg", "cohort", "age", "cohort_size", "revenue", "orders", "payers", "complete") == [
        # u1 (earliest signup row says a) and u2 (a tie on the signup ts between b and a: the
        # smallest segment, a, whatever the rows' order)
        ("a", D(2024, 1, 1), 0, 2, 10.0, 1, 1, True),
        ("a", D(2024, 1, 1), 1, 2, 4.0, 1, 1, True),
        ("a", D(2024, 2, 1), 0, 1, 0.0, 0, 0, True),  # u3 never pays but is a signup
        ("a", D(2024, 2, 1), 1, 1, None, None, None, False),
    ]
    assert recon(ref) == {
        "used": (2, Decimal(14)),
        "unknown_user": (2, Decimal(11)),
        "beyond_horizon": (1, Decimal(1)),  # checked before not_yet_complete
    }
    assert ref.signups_reconciliation == {"used": 3, "duplicate_user": 2, "null_user": 1, "null_ts": 1}
    assert ref.activity_reconciliation is None


def test_signups_with_activity():
    o, s, a = signups_example()
    ref = reference_cohorts(o, user="user_id", ts="ts", amount="amount", signups=s, activity=a, by="seg", horizon=2)
    assert cells(ref, "seg", "cohort", "age", "active") == [
        ("a", D(2024, 1, 1), 0, 1),  # u1 twice in January counts once
        ("a", D(2024, 1, 1), 1, 1),  # u2 (segment a, the tie's smallest) in February
        ("a", D(2024, 2, 1), 0, 1),  # u3, who never pays
        ("a", D(2024, 2, 1), 1, None),
    ]
    assert ref.activity_reconciliation == {
        "used": 4,
        "unknown_user": 1,
        "before_cohort": 1,
        "null_user": 1,
    }


def test_signups_without_segments_and_as_of():
    o, s, _ = signups_example()
    # as_of = March 15 -> last complete month is February, same as the default here
    for as_of in ("2024-03-15", D(2024, 3, 1), T(2024, 3, 1), T(2024, 3, 31, 23, 59)):
        ref = reference_cohorts(o, user="user_id", ts="ts", amount="amount", signups=s, horizon=2, as_of=as_of)
        assert cells(ref, "cohort", "age", "cohort_size", "revenue", "payers", "complete") == [
            (D(2024, 1, 1), 0, 2, 10.0, 1, True),
            (D(2024, 1, 1), 1, 2, 4.0, 1, True),
            (D(2024, 2, 1), 0, 1, 0.0, 0, True),
            (D(2024, 2, 1), 1, 1, None, None, False),
        ]


# ---------------------------------------------------------------------------------------------------
# as_of and since
# ---------------------------------------------------------------------------------------------------
def months_example():
    return orders(
        [
            ("u1", T(2023, 8, 20), 1.0),  # tracking started mid-August
            ("u1", T(2023, 9, 3), 2.0),
            ("u2", T(2023, 9, 30, 23, 30), 4.0),
            ("u2", T(2023, 10, 1, 0, 30), 8.0),
            ("u3", T(2023, 10, 15), 16.0),
            ("u3", T(2023, 11, 2), 32.0),
            ("u4", T(2023, 12, 24), 64.0),
        ]
    )


def test_default_as_of_and_explicit_as_of():
    t = months_example()
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2)
    # latest order in December -> last complete month November; cohorts Aug..Nov
    assert cells(ref, "cohort", "age", "revenue", "complete") == [
        (D(2023, 8, 1), 0, 1.0, True),
        (D(2023, 8, 1), 1, 2.0, True),
        (D(2023, 9, 1), 0, 4.0, True),
        (D(2023, 9, 1), 1, 8.0, True),
        (D(2023, 10, 1), 0, 16.0, True),
        (D(2023, 10, 1), 1, 32.0, True),
    ]
    assert recon(ref) == {"used": (6, Decimal(63)), "not_yet_complete": (1, Decimal(64))}

    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, as_of="2023-10-31")
    assert cells(ref, "cohort", "age", "revenue", "complete") == [
        (D(2023, 8, 1), 0, 1.0, True),
        (D(2023, 8, 1), 1, 2.0, True),
        (D(2023, 9, 1), 0, 4.0, True),
        (D(2023, 9, 1), 1, None, False),
    ]
    assert recon(ref) == {"used": (3, Decimal(7)), "not_yet_complete": (4, Decimal(120))}

    # an aware as_of: 2023-09-30 22:30 UTC is already October in Berlin, still September in UTC
    as_of = T(2023, 9, 30, 22, 30, tzinfo=UTC)
    ref_berlin = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, as_of=as_of,
                                   tz="Europe/Berlin")  # fmt: skip
    assert ref_berlin.last_complete == 2023 * 12 + 8  # September
    ref_utc = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, as_of=as_of)
    assert ref_utc.last_complete == 2023 * 12 + 7  # August


def test_since():
    t = months_example()
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, since=D(2023, 8, 15))
    assert cells(ref, "cohort", "age", "revenue") == [
        (D(2023, 9, 1), 0, 4.0),
        (D(2023, 9, 1), 1, 8.0),
        (D(2023, 10, 1), 0, 16.0),
        (D(2023, 10, 1), 1, 32.0),
    ]
    assert recon(ref) == {
        "before_since": (2, Decimal(3)),
        "used": (4, Decimal(60)),
        "not_yet_complete": (1, Decimal(64)),
    }
    same = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, since="2023-09-01")
    assert same.table.equals(ref.table)
    later = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, since=T(2023, 9, 1, 0, 0, 1))
    assert cells(later, "cohort", "age") == [(D(2023, 10, 1), 0), (D(2023, 10, 1), 1)]
    # tz matters: u2's 2023-09-30 23:30 UTC is October 1st in Berlin (aware input)
    aware = t.set_column(1, "ts", t["ts"].cast(pa.timestamp("us", "UTC")))
    ref_b = reference_cohorts(aware, user="user_id", ts="ts", amount="amount", horizon=2, since="2023-10-01",
                              tz="Europe/Berlin")  # fmt: skip
    assert cells(ref_b, "cohort", "age", "cohort_size", "revenue") == [
        (D(2023, 10, 1), 0, 2, 28.0),
        (D(2023, 10, 1), 1, 2, 32.0),
    ]
    assert recon(ref_b)["before_since"] == (2, Decimal(3))


# ---------------------------------------------------------------------------------------------------
# DST days
# ---------------------------------------------------------------------------------------------------
def test_dst_days_sao_paulo():
    # naive ts are wall clock; aware ts are converted
    t = orders(
        [
            ("u1", T(2015, 10, 18, 2, 59, 59), 1.0),  # 17th 23:59:59 -03
            ("u1", T(2015, 10, 18, 3, 0, 0), 2.0),  # 18th 01:00:00 -02 (the day starts at 01:00)
            ("u2", T(2015, 10, 18, 3, 0, 0), 4.0),
            ("u1", T(2015, 10, 20, 12), 8.0),
        ],
        ts_type=pa.timestamp("ns", "UTC"),
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, period="day",
                            tz="America/Sao_Paulo")  # fmt: skip
    assert cells(ref, "cohort", "age", "cohort_size", "revenue", "complete") == [
        (D(2015, 10, 17), 0, 1, 1.0, True),
        (D(2015, 10, 17), 1, 1, 2.0, True),
        (D(2015, 10, 18), 0, 1, 4.0, True),
        (D(2015, 10, 18), 1, 1, 0.0, True),
    ]
    naive = t.set_column(1, "ts", t["ts"].cast(pa.timestamp("ns")))
    ref = reference_cohorts(naive, user="user_id", ts="ts", amount="amount", horizon=2, period="day",
                            tz="America/Sao_Paulo")  # fmt: skip
    assert cells(ref, "cohort", "age", "cohort_size", "revenue") == [
        (D(2015, 10, 18), 0, 2, 7.0),
        (D(2015, 10, 18), 1, 2, 0.0),
    ]


def test_dst_days_amman():
    t = orders(
        [
            ("u1", T(2021, 10, 28, 20, 59, 59), 1.0),  # 28th 23:59:59 +03
            ("u2", T(2021, 10, 28, 21, 30), 2.0),  # 29th 00:30 +03 (first pass)
            ("u2", T(2021, 10, 28, 22, 30), 4.0),  # 29th 00:30 +02 (second pass)
            ("u2", T(2021, 10, 29, 21, 59, 59), 8.0),  # 29th 23:59:59 +02
            ("u1", T(2021, 10, 29, 22, 0), 16.0),  # 30th
            ("u3", T(2021, 10, 31, 1), 1.0),
        ],
        ts_type=pa.timestamp("s", "Asia/Amman"),
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=3, period="day", tz="Asia/Amman")
    assert cells(ref, "cohort", "age", "revenue", "orders", "payers", "complete") == [
        (D(2021, 10, 28), 0, 1.0, 1, 1, True),
        (D(2021, 10, 28), 1, 0.0, 0, 0, True),
        (D(2021, 10, 28), 2, 16.0, 1, 1, True),
        (D(2021, 10, 29), 0, 14.0, 3, 1, True),
        (D(2021, 10, 29), 1, 0.0, 0, 0, True),
        (D(2021, 10, 29), 2, None, None, None, False),
    ]


def test_dst_skipped_day_apia():
    t = orders(
        [
            ("u1", T(2011, 12, 30, 9, 59, 59), 1.0),  # 29th 23:59:59 -10
            ("u1", T(2011, 12, 30, 10, 0, 0), 2.0),  # 31st 00:00 +14; the 30th never happens
            ("u2", T(2012, 1, 1, 12), 4.0),
        ],
        ts_type=pa.timestamp("ms", "UTC"),
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=3, period="day", tz="Pacific/Apia")
    # day indices are calendar days, so the skipped 30th is an (empty) age 1
    assert cells(ref, "cohort", "age", "revenue", "complete") == [
        (D(2011, 12, 29), 0, 1.0, True),
        (D(2011, 12, 29), 1, 0.0, True),
        (D(2011, 12, 29), 2, 2.0, True),
    ]
    assert recon(ref)["not_yet_complete"] == (1, Decimal(4))  # the latest day (Jan 2nd local) runs
    # in weeks: Mon 2011-12-26 .. Sun 2012-01-01 (six days long locally) holds u1's two orders;
    # u2's order is on Monday 2012-01-02 local, the next week
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=1, period="week", tz="Pacific/Apia",
                            as_of="2012-01-02")  # fmt: skip
    assert cells(ref, "cohort", "cohort_size", "revenue") == [(D(2011, 12, 26), 1, 3.0)]


def test_quarter_and_week_periods():
    t = orders(
        [
            ("u1", T(2024, 3, 31, 23), 1.0),
            ("u1", T(2024, 4, 1), 2.0),
            ("u2", T(2024, 6, 30), 4.0),
            ("u3", T(2024, 7, 1), 8.0),
        ]
    )
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=2, period="quarter")
    assert cells(ref, "cohort", "age", "cohort_size", "revenue") == [
        (D(2024, 1, 1), 0, 1, 1.0),
        (D(2024, 1, 1), 1, 1, 2.0),
        (D(2024, 4, 1), 0, 1, 4.0),
        (D(2024, 4, 1), 1, 1, None),
    ]
    ref = reference_cohorts(t, user="user_id", ts="ts", amount="amount", horizon=1, period="week")
    # 2024-03-31 is a Sunday (week of Mon 03-25); 04-01 is a Monday; 06-30 a Sunday (week of 06-24)
    assert cells(ref, "cohort", "age", "cohort_size", "revenue") == [
        (D(2024, 3, 25), 0, 1, 1.0),
        (D(2024, 6, 24), 0, 1, 4.0),
    ]
