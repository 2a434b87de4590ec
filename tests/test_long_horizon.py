"""Per-user age bitsets live inside the user table while group bits + bitsets fit 64 bits, and in
words of their own beyond that (several words past 21 ages): check both against the reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from helpers import assert_matches_reference, cohorts
from reference import reference_cohorts


@pytest.mark.parametrize("horizon", [21, 22, 64, 65, 200])
@pytest.mark.parametrize("with_signups", [False, True])
def test_long_horizons_match_the_reference(horizon: int, with_signups: bool):
    rng = np.random.default_rng(horizon)
    n, users = 3_000, 120
    start = 1_704_067_200  # 2024-01-01
    orders = pa.table(
        {
            "user_id": rng.integers(0, users, n),
            "ts": pa.array((start + rng.integers(0, 250 * 86_400, n)) * 1_000_000, pa.timestamp("us", "UTC")),
            "amount": np.round(rng.normal(20, 15, n), 2),
        }
    )
    activity = pa.table(
        {
            "user_id": rng.integers(0, users + 10, n),
            "ts": pa.array((start + rng.integers(0, 250 * 86_400, n)) * 1_000_000, pa.timestamp("us", "UTC")),
        }
    )
    kw: dict = dict(horizon=horizon, period="day", tz="Europe/Berlin", activity=activity)
    if with_signups:
        kw["signups"] = pl.DataFrame(
            {
                "user_id": np.arange(users),
                "signup_ts": pl.Series(
                    (start + rng.integers(0, 200 * 86_400, users)) * 1_000_000, dtype=pl.Int64
                ).cast(pl.Datetime("us", "UTC")),
            }
        )
    table, _ = cohorts(orders, **kw)
    ref = reference_cohorts(pl.from_arrow(orders), **{**kw, "activity": pl.from_arrow(activity)})
    assert_matches_reference(table, ref, orders, "amount", 4, [])


@pytest.mark.parametrize(
    ("horizon", "segments", "with_activity"),
    [
        (20, 1, True),  # 60 bitset bits + 4 group bits: inline, at the limit
        (20, 3, True),  # 5 group bits: outside the table
        (30, 8, False),  # 60 + 5: outside
        (30, 1, False),  # 60 + 4: inline
    ],
)
def test_bitsets_at_the_inline_limit(horizon: int, segments: int, with_activity: bool):
    rng = np.random.default_rng(horizon * 10 + segments)
    n, users = 4_000, 300
    start = 1_704_067_200  # 2024-01-01
    day = 86_400 * 1_000_000
    # Signups spread over nine months (January to September 2024): 9 × segments groups.
    signups = pa.table(
        {
            "user_id": np.arange(users),
            "signup_ts": pa.array(start * 1_000_000 + (np.arange(users) % 9) * 31 * day, pa.timestamp("us", "UTC")),
            "seg": pa.array((np.arange(users) // 9 % segments).astype(np.int64)),
        }
    )
    orders = pa.table(
        {
            "user_id": rng.integers(0, users, n),
            "ts": pa.array(start * 1_000_000 + rng.integers(0, 1300, n) * day, pa.timestamp("us", "UTC")),
            "amount": np.round(rng.normal(20, 15, n), 2),
        }
    )
    kw: dict = dict(horizon=horizon, period="month", signups=signups, by="seg", as_of="2028-01-01")
    if with_activity:
        kw["activity"] = pa.table(
            {
                "user_id": rng.integers(0, users, n),
                "ts": pa.array(start * 1_000_000 + rng.integers(0, 1300, n) * day, pa.timestamp("us", "UTC")),
            }
        )
    table, _ = cohorts(orders, **kw)
    ref = reference_cohorts(
        pl.from_arrow(orders),
        **{
            **kw,
            "signups": pl.from_arrow(signups),
            "activity": pl.from_arrow(kw["activity"]) if with_activity else None,
        },
    )
    assert table.cohort_stats().height == 9 * segments
    assert_matches_reference(table, ref, orders, "amount", 4, ["seg"])
