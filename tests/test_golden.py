"""A worked example computed by hand: a small shop in Berlin over January-April 2024.

Signups (Berlin time decides the month):
    alice  2024-01-03          ads
    bob    2024-01-20          seo
    carol  2024-01-31 23:30    ads   (22:30 UTC, still January in Berlin)
    dave   2024-02-10          ads   never pays
    erin   2024-03-01 00:30    seo   (2024-02-29 23:30 UTC: already March in Berlin)
    bob    2024-02-01          ads   a second signup row for bob -> duplicate_user

Orders (UTC instants):
    alice  01-05 30.00 | 01-25 20.00 | 02-14 25.00 | 02-20 -5.00 (refund) | null ts 7.00
    bob    01-21 40.00 | 03-02 10.00 | 02-11 NaN
    carol  01-31 22:45Z 15.00 (Jan in Berlin) | 02-29 23:15Z 12.50 (March 1st in Berlin)
    erin   03-05 60.00 | 04-01 10:00Z 8.00 (April: the latest order, so April is still running)
    frank  02-02 9.99 (not a signup) ; a row without user: 02-02 5.00

tz = Europe/Berlin, period = month, horizon = 3, default as_of -> last complete month = March.

Signup cohorts: Jan = {alice, bob, carol}, Feb = {dave}, Mar = {erin}.
    Jan age 0: 30 + 20 + 40 + 15 = 105.00, 4 orders, 3 payers
    Jan age 1: 25 - 5 = 20.00 (gross 25, refunds -5), 1 order, 1 payer
    Jan age 2: 10 + 12.50 = 22.50, 2 orders, 2 payers
    Feb age 0, 1: 0 (dave never pays, still counts in the cohort size); age 2 (April) not observed
    Mar age 0: 60.00, 1 order, 1 payer; ages 1, 2 not observed
    LTR of January (cumulative revenue / cohort size): 35.00, 41.67, 49.17
Reconciliation: used 9 rows 207.50; not_yet_complete 1 (erin's April 8.00); unknown_user 1 (9.99);
    null_user 1 (5.00); null_ts 1 (7.00); nan_amount 1 (0). 14 rows, 237.49 in total.
"""

from __future__ import annotations

import datetime as dt
import warnings
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest

from reference import reference_cohorts

UTC = dt.timezone.utc
BERLIN = "Europe/Berlin"
D = dt.date


def T(*a):  # noqa: N802
    return dt.datetime(*a, tzinfo=UTC)


SIGNUPS = pa.table(
    {
        "user_id": ["alice", "bob", "carol", "dave", "erin", "bob"],
        "signup_ts": pa.array(
            [T(2024, 1, 2, 23), T(2024, 1, 20, 9), T(2024, 1, 31, 22, 30), T(2024, 2, 10, 8), T(2024, 2, 29, 23, 30),
             T(2024, 2, 1, 9)],
            pa.timestamp("us", "UTC"),
        ),
        "channel": ["ads", "seo", "ads", "ads", "seo", "ads"],
    }
)  # fmt: skip

ORDERS = pa.table(
    {
        "user_id": ["alice", "alice", "alice", "alice", "alice", "bob", "bob", "bob", "carol", "carol", "erin", "erin",
                    "frank", None],
        "ts": pa.array(
            [T(2024, 1, 5, 10), T(2024, 1, 25, 10), T(2024, 2, 14, 10), T(2024, 2, 20, 10), None,
             T(2024, 1, 21, 10), T(2024, 3, 2, 10), T(2024, 2, 11, 10),
             T(2024, 1, 31, 22, 45), T(2024, 2, 29, 23, 15),
             T(2024, 3, 5, 10), T(2024, 4, 1, 10),
             T(2024, 2, 2, 10), T(2024, 2, 2, 10)],
            pa.timestamp("us", "UTC"),
        ),
        "amount": [30.0, 20.0, 25.0, -5.0, 7.0, 40.0, 10.0, float("nan"), 15.0, 12.5, 60.0, 8.0, 9.99, 5.0],
    }
)  # fmt: skip

ACTIVITY = pa.table(
    {
        "user_id": ["alice", "alice", "bob", "dave", "dave", "zed", "erin"],
        "seen_at": pa.array(
            [T(2024, 1, 4), T(2024, 1, 6), T(2024, 2, 2), T(2024, 2, 11), T(2024, 3, 3), T(2024, 2, 1),
             T(2024, 4, 2)],
            pa.timestamp("ms", "UTC"),
        ),
    }
)  # fmt: skip

N = None
# cohort, age, cohort_size, revenue, gross_revenue, refunds, orders, payers, complete
EXPECTED = [
    (D(2024, 1, 1), 0, 3, 105.0, 105.0, 0.0, 4, 3, True),
    (D(2024, 1, 1), 1, 3, 20.0, 25.0, -5.0, 1, 1, True),
    (D(2024, 1, 1), 2, 3, 22.5, 22.5, 0.0, 2, 2, True),
    (D(2024, 2, 1), 0, 1, 0.0, 0.0, 0.0, 0, 0, True),
    (D(2024, 2, 1), 1, 1, 0.0, 0.0, 0.0, 0, 0, True),
    (D(2024, 2, 1), 2, 1, N, N, N, N, N, False),
    (D(2024, 3, 1), 0, 1, 60.0, 60.0, 0.0, 1, 1, True),
    (D(2024, 3, 1), 1, 1, N, N, N, N, N, False),
    (D(2024, 3, 1), 2, 1, N, N, N, N, N, False),
]
COLS = ["cohort", "age", "cohort_size", "revenue", "gross_revenue", "refunds", "orders", "payers", "complete"]
EXPECTED_RECON = {
    "used": (9, Decimal("207.50")),
    "not_yet_complete": (1, Decimal("8.00")),
    "unknown_user": (1, Decimal("9.99")),
    "null_user": (1, Decimal("5.00")),
    "null_ts": (1, Decimal("7.00")),
    "nan_amount": (1, Decimal("0")),
}
KW = dict(user="user_id", ts="ts", amount="amount", signups=SIGNUPS, tz=BERLIN, horizon=3)


def ltr(df: pl.DataFrame) -> pl.DataFrame:
    """LTR(age k) = cumulative revenue through age k / cohort size (DOMAIN.md)."""
    return df.filter("complete").with_columns(
        (pl.col("revenue").cum_sum().over("cohort", order_by="age") / pl.col("cohort_size")).alias("ltr")
    )


def select_rows(df: pl.DataFrame, cols=COLS):
    # cohort_size is a property of the cohort, so it stays filled in cells that are not observed yet
    return df.select(cols).rows()


def expected_rows():
    return EXPECTED


def check(table_df: pl.DataFrame, recon: dict):
    assert select_rows(table_df) == expected_rows()
    l = ltr(table_df).filter(pl.col("cohort") == D(2024, 1, 1))["ltr"].to_list()  # noqa: E741
    assert l == pytest.approx([35.0, 125.0 / 3, 147.5 / 3], abs=1e-12)
    assert round(l[1], 2) == 41.67 and round(l[2], 2) == 49.17
    assert recon == EXPECTED_RECON
    assert sum(r for r, _ in recon.values()) == ORDERS.num_rows == 14
    assert sum(a for _, a in recon.values()) == Decimal("237.49")


# ---------------------------------------------------------------------------------------------------
# the reference reproduces the hand computation
# ---------------------------------------------------------------------------------------------------
def test_reference_golden():
    ref = reference_cohorts(ORDERS, **KW)
    check(ref.table, ref.reconciliation)
    assert ref.signups_reconciliation == {"used": 5, "duplicate_user": 1}


def test_reference_golden_by_channel_and_activity():
    ref = reference_cohorts(ORDERS, **KW, by="channel", activity=ACTIVITY, activity_ts="seen_at")
    assert golden_by_channel_rows(ref.table) == EXPECTED_BY_CHANNEL
    assert ref.activity_reconciliation == {"used": 5, "unknown_user": 1, "not_yet_complete": 1}


# channel, cohort, age, revenue, orders, payers, active
EXPECTED_BY_CHANNEL = [
    ("ads", D(2024, 1, 1), 0, 65.0, 3, 2, 1),  # alice + carol; alice seen twice in January
    ("ads", D(2024, 1, 1), 1, 20.0, 1, 1, 0),
    ("ads", D(2024, 1, 1), 2, 12.5, 1, 1, 0),
    ("ads", D(2024, 2, 1), 0, 0.0, 0, 0, 1),  # dave: active but never pays
    ("ads", D(2024, 2, 1), 1, 0.0, 0, 0, 1),
    ("ads", D(2024, 2, 1), 2, N, N, N, N),
    ("seo", D(2024, 1, 1), 0, 40.0, 1, 1, 0),
    ("seo", D(2024, 1, 1), 1, 0.0, 0, 0, 1),  # bob seen in February
    ("seo", D(2024, 1, 1), 2, 10.0, 1, 1, 0),
    ("seo", D(2024, 3, 1), 0, 60.0, 1, 1, 0),  # erin's April visit is not observed yet
    ("seo", D(2024, 3, 1), 1, N, N, N, N),
    ("seo", D(2024, 3, 1), 2, N, N, N, N),
]


def golden_by_channel_rows(df: pl.DataFrame):
    return df.select("channel", "cohort", "age", "revenue", "orders", "payers", "active").rows()


def test_reference_golden_first_purchase():
    ref = reference_cohorts(ORDERS, user="user_id", ts="ts", amount="amount", tz=BERLIN, horizon=3)
    rows = ref.table.select("cohort", "age", "cohort_size", "revenue", "orders", "payers").rows()
    assert rows == FIRST_PURCHASE_ROWS
    assert ref.reconciliation == FIRST_PURCHASE_RECON


# first-purchase cohorts: Jan = {alice, bob, carol}, Feb = {frank}, Mar = {erin}; dave has no orders
FIRST_PURCHASE_ROWS = [
    (D(2024, 1, 1), 0, 3, 105.0, 4, 3),
    (D(2024, 1, 1), 1, 3, 20.0, 1, 1),
    (D(2024, 1, 1), 2, 3, 22.5, 2, 2),
    (D(2024, 2, 1), 0, 1, 9.99, 1, 1),
    (D(2024, 2, 1), 1, 1, 0.0, 0, 0),
    (D(2024, 2, 1), 2, 1, N, N, N),
    (D(2024, 3, 1), 0, 1, 60.0, 1, 1),
    (D(2024, 3, 1), 1, 1, N, N, N),
    (D(2024, 3, 1), 2, 1, N, N, N),
]
FIRST_PURCHASE_RECON = {
    "used": (10, Decimal("217.49")),
    "not_yet_complete": (1, Decimal("8")),
    "null_user": (1, Decimal("5")),
    "null_ts": (1, Decimal("7")),
    "nan_amount": (1, Decimal("0")),
}


def test_reference_tracking_started_mid_month():
    """DOMAIN.md: tracking from 15 August gives no LTR at the start of September, September's at October."""
    orders = pa.table(
        {
            "user_id": [1, 1, 2, 2, 3],
            "ts": pa.array([T(2023, 8, 15, 9), T(2023, 9, 20), T(2023, 9, 2), T(2023, 9, 28), T(2023, 10, 3)]),
            "amount": [10.0, 5.0, 20.0, 4.0, 7.0],
        }
    )
    kw = dict(user="user_id", ts="ts", amount="amount", horizon=12, since=D(2023, 8, 15))
    ref = reference_cohorts(orders, **kw, as_of=D(2023, 9, 1))
    assert ref.table.height == 0
    ref = reference_cohorts(orders, **kw, as_of=D(2023, 10, 1))
    assert ref.table.select("cohort", "age", "cohort_size", "revenue", "complete").rows()[:2] == [
        (D(2023, 9, 1), 0, 1, 24.0, True),
        (D(2023, 9, 1), 1, 1, None, False),
    ]
    assert ref.table.height == 12
    assert ref.reconciliation == {"before_since": (2, Decimal(15)), "used": (2, Decimal(24)),
                                  "not_yet_complete": (1, Decimal(7))}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# the engine reproduces the same numbers
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def engine():
    from helpers import ltrcore, recon_dict

    def run(orders, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
            t = ltrcore.cohorts(orders, **kw)
        return t, recon_dict(t.reconciliation)

    return run


def test_engine_golden(engine):
    t, recon = engine(ORDERS, **KW)
    check(t.to_polars(), recon)
    from helpers import recon_dict

    assert recon_dict(t.signups_reconciliation, with_amount=False).get("duplicate_user") == 1
    assert t.activity_reconciliation is None


def test_engine_golden_by_channel_and_activity(engine):
    t, _ = engine(ORDERS, **KW, by="channel", activity=ACTIVITY, activity_ts="seen_at")
    assert golden_by_channel_rows(t.to_polars()) == EXPECTED_BY_CHANNEL


def test_engine_golden_first_purchase(engine):
    t, recon = engine(ORDERS, user="user_id", ts="ts", amount="amount", tz=BERLIN, horizon=3)
    rows = t.to_polars().select("cohort", "age", "cohort_size", "revenue", "orders", "payers").rows()
    assert rows == FIRST_PURCHASE_ROWS
    assert recon == FIRST_PURCHASE_RECON


def test_engine_golden_warns_once():
    from helpers import ltrcore

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ltrcore.cohorts(ORDERS, **KW)
    assert sum(issubclass(w.category, ltrcore.ExcludedRowsWarning) for w in caught) == 1


def test_engine_tracking_started_mid_month(engine):
    orders = pa.table(
        {
            "user_id": [1, 1, 2, 2, 3],
            "ts": pa.array([T(2023, 8, 15, 9), T(2023, 9, 20), T(2023, 9, 2), T(2023, 9, 28), T(2023, 10, 3)]),
            "amount": [10.0, 5.0, 20.0, 4.0, 7.0],
        }
    )
    kw = dict(user="user_id", ts="ts", amount="amount", horizon=12, since=D(2023, 8, 15))
    t, _ = engine(orders, **kw, as_of=D(2023, 9, 1))
    assert t.to_polars().height == 0
    t, recon = engine(orders, **kw, as_of="2023-10-01")
    df = t.to_polars()
    assert df.height == 12
    assert df.select("cohort", "age", "cohort_size", "revenue", "complete").rows()[:2] == [
        (D(2023, 9, 1), 0, 1, 24.0, True),
        (D(2023, 9, 1), 1, 1, None, False),
    ]
    assert recon == {"before_since": (2, Decimal(15)), "used": (2, Decimal(24)), "not_yet_complete": (1, Decimal(7))}
