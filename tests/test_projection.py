"""``CohortTable.project``: chain-ladder projection of cumulative revenue to the horizon.

Contract pinned here:
    f_k = Σ_c cum(c, k+1) / Σ_c cum(c, k) over the cohorts c of the same segment whose cell k+1 is complete
    projected cum(c, k+1) = cum(c, k) × f_k for every not-yet-observed age up to horizon − 1; ltr = cum / size
    observed cells keep their ltr with projected = False; small_cohort = cohort_size < min_size
    a needed factor with fewer than min_cohorts mature cohorts is not estimated: the cells that need it stay
    null, flagged unprojectable, and the rest is projected
    metrics(projected=True): ltr (and ltv = ltr × margin, clv) from the projected ltr at age horizon − 1

The data come from a known retention curve: every user pays ``AMOUNT`` in the cohort month (age 0: these
are first-purchase cohorts) and again at age k ≥ 1 with probability p_k, so the true expected LTR at the
horizon is AMOUNT × (1 + Σ_{k=1}^{h-1} p_k). Random data (seeded) must land within 5 % of it; data built
with exact proportions (round(p_k × n) payers at age k) make every cohort's development identical, so the
projection must hit the truth to float precision.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

import numpy as np
import polars as pl
import pytest

ltrcore = pytest.importorskip("ltrcore")

D = dt.date
H = 12
AMOUNT = 10.0
P = [1.0] + [0.4 * 0.85 ** (k - 1) for k in range(1, H)]  # p_0 = 1: first-purchase cohorts
TRUE_LTR = AMOUNT * sum(P)  # ≈ 32.2
START = np.datetime64("2020-01", "M")


def build(orders: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
        return ltrcore.cohorts(orders, **kw)


def synthetic(
    n_cohorts: int,
    sizes: list[int],
    p: list[float],
    seed: int,
    exact: bool = False,
    channel: str | None = None,
    first_user: int = 0,
) -> pl.DataFrame:
    """Orders of ``n_cohorts`` monthly cohorts from 2020-01; ages 0..H-1 (also beyond as_of)."""
    rng = np.random.default_rng(seed)
    users, stamps = [], []
    uid = first_user
    for c in range(n_cohorts):
        n = sizes[c]
        ids = np.arange(uid, uid + n, dtype=np.int64)
        uid += n
        for k in range(H):
            if exact:
                payers = ids[: round(p[k] * n)]
            else:
                payers = ids[rng.random(n) < p[k]] if k else ids
            month = (START + c + k).astype("datetime64[D]")
            days = rng.integers(0, 28, payers.size).astype("timedelta64[D]")
            users.append(payers)
            stamps.append(month + days + np.timedelta64(12, "h"))
    frame = pl.DataFrame(
        {
            "user_id": np.concatenate(users),
            "ts": np.concatenate(stamps).astype("datetime64[us]"),
            "amount": np.full(sum(u.size for u in users), AMOUNT),
        }
    )
    if channel is not None:
        frame = frame.with_columns(pl.lit(channel).alias("channel"))
    return frame


def reference_projection(table: Any, min_cohorts: int = 3) -> dict[tuple, list[float]]:
    """{(segment…, cohort): ltr by age 0..h-1} by the chain-ladder formulas above."""
    by, h = table.by, table.horizon
    cells: dict[tuple, dict[str, Any]] = {}
    for r in table.to_polars().iter_rows(named=True):
        key = (tuple(r[b] for b in by), r["cohort"])
        g = cells.setdefault(key, {"size": r["cohort_size"], "rev": [None] * h})
        g["rev"][r["age"]] = r["revenue"] if r["complete"] else None
    cums: dict[tuple, list[float]] = {}
    for key, g in cells.items():
        cum, s = [], 0.0
        for v in g["rev"]:
            if v is None:
                break
            s += v
            cum.append(s)
        cums[key] = cum
    out = {}
    for key, cum in cums.items():
        seg = key[0]
        peers = [c for k, c in cums.items() if k[0] == seg]
        cum = list(cum)
        while len(cum) < h:
            k = len(cum) - 1
            mature = [c for c in peers if len(c) >= k + 2]
            if len(mature) < min_cohorts:
                raise AssertionError(f"reference: too few cohorts for factor {k}")
            f = sum(c[k + 1] for c in mature) / sum(c[k] for c in mature)
            cum.append(cum[-1] * f)
        out[key] = [x / cells[key]["size"] for x in cum]
    return out


SIZES = [int(x) for x in np.random.default_rng(1).integers(1800, 2201, 40)]
AS_OF = "2023-05-01"  # 40 cohorts 2020-01 .. 2023-04; the last 11 lack age 11


@pytest.fixture(scope="module")
def random_table():
    return build(synthetic(40, SIZES, P, seed=2024), horizon=H, as_of=AS_OF)


@pytest.fixture(scope="module")
def random_projection(random_table):
    return random_table.project()


def test_projection_shape_and_columns(random_table, random_projection):
    pr = random_projection
    assert pr.columns == ["cohort", "age", "ltr", "projected", "small_cohort", "unprojectable"]
    assert pr.schema["projected"] == pl.Boolean and pr.schema["small_cohort"] == pl.Boolean
    assert pr.schema["ltr"] == pl.Float64
    long = random_table.to_polars()
    assert pr.height == long.height == 40 * H
    assert pr.select("cohort", "age").equals(long.select("cohort", "age"))
    assert pr.get_column("ltr").null_count() == 0  # every cell up to the horizon is filled
    assert not pr.get_column("ltr").is_nan().any()
    # projected exactly where the engine has not observed the cell
    assert pr.get_column("projected").to_list() == (~long.get_column("complete")).to_list()
    # 11 young cohorts: 11 + 10 + … + 1 projected cells
    assert pr.get_column("projected").sum() == sum(range(1, 12))


def test_observed_cells_keep_their_ltr(random_table, random_projection):
    ltr = random_table.ltr()
    joined = random_projection.join(ltr, on=["cohort", "age"], suffix="_obs")
    observed = joined.filter(~pl.col("projected"))
    assert observed.height == 40 * H - 66
    assert (observed.get_column("ltr") == observed.get_column("ltr_obs")).all()


def test_projection_matches_chain_ladder_reference(random_table, random_projection):
    ref = reference_projection(random_table)
    for r in random_projection.iter_rows(named=True):
        exp = ref[((), r["cohort"])][r["age"]]
        assert r["ltr"] == pytest.approx(exp, rel=1e-9), r


def test_projection_recovers_true_ltr_within_5_percent(random_table, random_projection):
    # Sanity of the data: mature cohorts' observed horizon LTR is near the truth too.
    mature = random_table.ltr().filter(pl.col("age") == H - 1, pl.col("complete"))
    assert mature.height == 29
    assert mature.get_column("ltr").mean() == pytest.approx(TRUE_LTR, rel=0.01)

    young = random_projection.filter(pl.col("age") == H - 1, pl.col("projected"))
    assert young.height == 11
    for r in young.iter_rows(named=True):
        assert r["ltr"] == pytest.approx(TRUE_LTR, rel=0.05), (r, TRUE_LTR)
    # the youngest cohort (only age 0 observed: ltr 10) is projected to ≈ 3.2× its observed value
    youngest = young.filter(pl.col("cohort") == D(2023, 4, 1)).row(0, named=True)
    assert youngest["ltr"] > 3 * AMOUNT


def test_projected_ltr_non_decreasing_without_refunds(random_projection):
    for _, g in random_projection.group_by("cohort"):
        v = g.sort("age").get_column("ltr").to_list()
        assert all(b >= a - 1e-9 for a, b in zip(v, v[1:])), v


def test_exact_proportions_project_exactly_per_segment():
    # Two segments with very different curves and cohort sizes: a pooled factor would miss both.
    p_a = [1.0, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3, 0.25, 0.2, 0.2, 0.15]
    p_b = [1.0, 0.2, 0.1, 0.05, 0.05, 0.03, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01]
    n = 20
    orders = pl.concat(
        [
            synthetic(n, [100 * (1 + c % 5) for c in range(n)], p_a, seed=1, exact=True, channel="A"),
            synthetic(n, [300 + 100 * (c % 3) for c in range(n)], p_b, seed=2, exact=True, channel="B",
                      first_user=10**7),
        ]
    )
    table = build(orders, by="channel", horizon=H, as_of="2021-09-01")  # cohorts 2020-01 .. 2021-08
    pr = table.project()
    assert pr.columns == ["channel", "cohort", "age", "ltr", "projected", "small_cohort", "unprojectable"]
    truth = {"A": [AMOUNT * sum(p_a[: k + 1]) for k in range(H)], "B": [AMOUNT * sum(p_b[: k + 1]) for k in range(H)]}
    assert pr.filter(pl.col("projected")).height > 0
    for r in pr.iter_rows(named=True):
        assert r["ltr"] == pytest.approx(truth[r["channel"]][r["age"]], rel=1e-9), r
    ref = reference_projection(table)
    for r in pr.iter_rows(named=True):
        assert r["ltr"] == pytest.approx(ref[((r["channel"],), r["cohort"])][r["age"]], rel=1e-9)

    # metrics(projected=True): ltr is the projected horizon ltr, ltv = ltr × margin, clv = ltv at r = 0
    m = table.metrics(projected=True, margin=0.5)
    assert m.height == 2 * n
    for r in m.iter_rows(named=True):
        assert r["ltr"] == pytest.approx(truth[r["channel"]][H - 1], rel=1e-9), r
        assert r["ltv"] == pytest.approx(0.5 * truth[r["channel"]][H - 1], rel=1e-9), r
        assert r["clv"] == pytest.approx(r["ltv"], rel=1e-9), r
    # observed metrics differ for the young cohorts
    m_obs = table.metrics(margin=0.5)
    young = m_obs.filter(pl.col("cohort") == D(2021, 8, 1), pl.col("channel") == "A").row(0, named=True)
    assert young["ltr"] == pytest.approx(AMOUNT)


def test_metrics_projected_uses_projection(random_table, random_projection):
    horizon_ltr = {r["cohort"]: r["ltr"] for r in random_projection.filter(pl.col("age") == H - 1).iter_rows(named=True)}
    m = random_table.metrics(projected=True, margin=0.6, discount_rate=0.1, cac=5)
    m0 = random_table.metrics(projected=True, margin=0.6)
    assert m.height == 40
    for r, r0 in zip(m.iter_rows(named=True), m0.iter_rows(named=True)):
        assert r["ltr"] == pytest.approx(horizon_ltr[r["cohort"]], rel=1e-9)
        assert r["ltv"] == pytest.approx(0.6 * horizon_ltr[r["cohort"]], rel=1e-9)
        assert r0["clv"] == pytest.approx(r0["ltv"], rel=1e-9)  # r = 0
        assert r["clv"] < r["ltv"]  # r > 0 discounts the later (also projected) months
        # the projected clv is more than the observed-only clv for young cohorts
    young = D(2023, 4, 1)
    obs = random_table.metrics(margin=0.6, discount_rate=0.1).filter(pl.col("cohort") == young).row(0, named=True)
    proj = m.filter(pl.col("cohort") == young).row(0, named=True)
    assert obs["clv"] == pytest.approx(0.6 * AMOUNT)
    assert proj["clv"] > 2 * obs["clv"]
    # the discounted projected clv of the youngest cohort, from the projected per-age increments
    ys = random_projection.filter(pl.col("cohort") == young).sort("age").get_column("ltr").to_list()
    incr = [ys[0]] + [b - a for a, b in zip(ys, ys[1:])]
    exp = sum(0.6 * v / 1.1 ** (k / 12) for k, v in enumerate(incr))
    assert proj["clv"] == pytest.approx(exp, rel=1e-9)


def _four_small_cohorts(size: int = 3) -> Any:
    # cohorts 2021-01 .. 2021-04, each user pays 10 at ages 0, 1, 2; horizon 3, as_of 2021-05-01:
    # factor f_0 has 3 mature cohorts (Jan, Feb, Mar), f_1 has 2 (Jan, Feb).
    rows_u, rows_ts = [], []
    for c in range(4):
        for i in range(size):
            for k in range(3):
                rows_u.append(f"c{c}u{i}")
                rows_ts.append(dt.datetime(2021, 1 + c + k, 10) if 1 + c + k <= 12 else dt.datetime(2022, c + k - 11, 10))
    orders = pl.DataFrame({"user_id": rows_u, "ts": rows_ts, "amount": [10.0] * len(rows_u)})
    return build(orders, horizon=3, as_of="2021-05-01")


def test_too_few_mature_cohorts_leave_cells_null_and_flagged():
    """Four cohorts (2021-01 .. 04), horizon 3, as of 2021-05-01. f_0 rests on 3 mature cohorts (Jan,
    Feb, Mar reach age 1), so April's age 1 is projected. f_1 would rest on 2 (Jan, Feb reach age 2),
    fewer than min_cohorts = 3: March's and April's age 2 stay null, flagged unprojectable, and the
    call does not fail. Their projected LTV (and CLV) is null, never a guess."""
    table = _four_small_cohorts()
    pr = table.project()
    flagged = pr.filter(pl.col("unprojectable"))
    assert sorted((str(r["cohort"]), r["age"]) for r in flagged.iter_rows(named=True)) == [("2021-03-01", 2), ("2021-04-01", 2)]
    assert flagged["ltr"].null_count() == 2 and not flagged["projected"].any()
    april = pr.filter((pl.col("cohort") == dt.date(2021, 4, 1)) & (pl.col("age") == 1)).row(0, named=True)
    assert april["projected"] and april["ltr"] is not None and not april["unprojectable"]
    # min_cohorts = 9: no factor can be estimated; every unobserved cell is null and flagged.
    nine = table.project(min_cohorts=9)
    assert (nine["unprojectable"] == nine["ltr"].is_null()).all() and not nine["projected"].any()
    m = table.metrics(margin=1.0, projected=True)
    young = m.filter(pl.col("cohort") >= dt.date(2021, 3, 1))
    assert young["ltr"].null_count() == 2 and young["clv"].null_count() == 2
    assert m.filter(pl.col("cohort") < dt.date(2021, 3, 1))["ltr"].null_count() == 0


def test_fully_observed_needs_no_factors():
    orders = pl.DataFrame(
        {"user_id": ["a", "a", "b"], "ts": [dt.datetime(2021, 1, 5), dt.datetime(2021, 2, 5), dt.datetime(2021, 1, 9)],
         "amount": [10.0, 5.0, 20.0]}
    )
    table = build(orders, horizon=2, as_of="2021-03-01")  # one cohort, both ages observed
    pr = table.project()  # no factor is needed, so min_cohorts = 3 is not an obstacle
    assert not pr.get_column("projected").any()
    assert pr.get_column("ltr").to_list() == pytest.approx([15.0, 17.5])


def test_small_cohort_flag():
    table = _four_small_cohorts(size=3)
    assert table.project(min_cohorts=2).get_column("small_cohort").all()  # 3 < 30 (default)
    assert not table.project(min_cohorts=2, min_size=3).get_column("small_cohort").any()  # 3 is not < 3
    assert table.project(min_cohorts=2, min_size=4).get_column("small_cohort").all()


def test_small_cohort_flag_per_cohort(random_table):
    pr = random_table.project(min_size=2000)
    sizes = dict(zip(random_table.cohorts, SIZES))
    for r in pr.iter_rows(named=True):
        assert r["small_cohort"] is (sizes[r["cohort"]] < 2000), r


def test_unknown_method():
    with pytest.raises(ltrcore.InvalidArgumentError):
        _four_small_cohorts().project(method="bornhuetter")
