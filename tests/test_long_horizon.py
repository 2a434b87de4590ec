"""Horizons past 21 ages keep each user's bitsets in several words: check them against the reference."""

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
