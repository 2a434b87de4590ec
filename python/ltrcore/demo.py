"""Deterministic synthetic retailer: signups, orders, logins and marketing spend.

``generate()`` builds the data behind ``ltrcore demo``, and ``orders_only()`` builds the plain order
tables that the benchmarks use. Both are vectorised numpy (no Python loop over rows) and depend on
numpy, polars and pyarrow only. The same arguments always give the same data, bit for bit, on any
machine.

The model behind ``generate()``
-------------------------------
Time. The data covers ``months`` complete calendar months in ``tz`` that start with the month of
``start`` (first day: ``start``), plus a *running* month that holds data up to the end of its 16th
day: the snapshot is taken mid-month. ``ltrcore.cohorts`` drops that running month by default, so all
``months`` complete months are reported. Every timestamp is an exact instant (tz-aware, microseconds) and is
drawn uniformly within its window, so some fall on DST changes.

Signups. Monthly volume grows about 3 % a month, with a November/December peak (+20 %/+30 %). Each
signup comes from one of five channels (``CHANNELS``). Social's share drifts up over time. User ids
are unique, sparse, random-looking 40-bit integers.

Paying. A signup converts with a channel probability (20 % social … 55 % email). The first order
follows the signup after an exponential delay of a few days. A share of converters buy late (mean 75
days), so the first-purchase cohort is often a later month than the signup cohort. Converters whose
first order would fall after the snapshot have not paid yet. After the first order:

* a channel share of customers is *one-and-done* and never orders again (22 % email … 70 % social);
* the rest stay alive for an exponential lifetime (mean 3 months for social … 22 months for email).
  While alive, a customer orders as a Poisson process with a gamma-distributed personal rate (shape 2)
  around the channel's mean rate (0.45 … 1.0 orders a month).

Paying retention at age k is therefore P(alive at k) × (1 − e^(−rate)). It decays quickly for social
and affiliate and slowly for email and organic. Repeat orders are placed uniformly within each
customer's observed lifetime. The repeat-order count is then scaled (through one multinomial draw over
customers) so that the table has exactly ``n_orders`` rows.

Order values. Values are log-normal with a channel median (34 social … 72 email), σ = 0.55, times a
log-normal personal factor (σ = 0.35), rounded to cents, at least 2.00.

Refunds. 3 % of the rows (rounded) are refunds: a negative amount that references one real earlier
purchase of the same user. Three out of four are full refunds, the rest are partial (20–80 % of the
purchase). A refund comes 1 hour plus an exponential 6 days after its purchase, and always before the
snapshot. Refund propensity differs by channel (social ×1.8, email ×0.6), so the net revenue of social
customers suffers most.

Bad rows. ``3 + n_orders // 500_000`` rows have a null ``user_id`` (at most 50), and
``2 + n_orders // 1_000_000`` rows have a NaN ``amount`` (at most 20). Both are copies of real
purchases, and tables under 100 rows have none. They show up in ltrcore's reconciliation as
``null_user`` and ``nan_amount``. Rows are shuffled.

Activity. Every signup logs in once at signup and then again as a Poisson process, over an
exponential activity lifetime. For non-payers the mean lifetime is 2 months. For payers it is 1.3 ×
the channel's order lifetime, and it lasts at least until their last possible order. There are about
twice as many login rows as order rows, so activity is more frequent than orders and decays with age
like retention does.

Spend. Spend per channel and month is the month's signups from that channel times the channel's cost
per signup, with ±8 % log-normal noise, rounded to cents. The running month is included, with its
partial volume. The cost per signup is calibrated on the generated data. At ``MARGIN`` = 0.3,
LTV/CAC = margin × 12-month net revenue ÷ spend, over the signup cohorts with a full year observed,
and it comes out at each channel's ``ltv_cac`` target: organic 8 and email 4.5 (healthy, ≥ 3), search
2.0 and affiliate 1.4 (marginal), social 0.6 (losing money). The ratio needs the same denominator for
LTV and CAC (signups or payers). A ratio from the payers of first-purchase cohorts comes out close,
not equal, because late first purchases move customers between months.

``orders_only()``
-----------------
A leaner, channel-free version for benchmarks. It has about ``n_orders / 12.7`` customers (the
design's anchor is 17.8M orders from 1.4M users), each with at least one order, over 24 UTC months
from 2024-01. It uses the same lifetime, rate, order-value and 3 % refund model. It has no bad rows,
and its rows are shuffled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["CHANNELS", "MARGIN", "Channel", "DemoData", "generate", "orders_only"]

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
US_PER_MONTH = 30.436875 * US_PER_DAY  # mean Gregorian month, for rates "per month"

MARGIN = 0.3
"""Gross margin the spend table is calibrated for (LTV = LTR × margin)."""

REFUND_SHARE = 0.03
LOGINS_PER_ORDER = 2.0
SNAPSHOT_DAY = 16  # the running month holds data up to the end of its 16th day


@dataclass(frozen=True)
class Channel:
    """Parameters of one acquisition channel (see the module docstring for the model)."""

    name: str
    share: float  # share of signups at month 0
    trend: float  # log change of the share per month
    conversion: float  # P(signup ever pays)
    first_delay_days: float  # mean signup → first order delay (exponential)
    late_share: float  # share of converters whose first order comes late (mean 75 days)
    one_and_done: float  # share of customers that never reorder
    life_months: float  # mean customer lifetime after the first order (exponential)
    orders_per_month: float  # mean repeat-order rate while alive
    order_value: float  # median order value
    refund_weight: float  # relative refund propensity
    logins_per_month: float  # mean login rate while active
    ltv_cac: float  # LTV/CAC at MARGIN the spend table is calibrated to


CHANNELS: tuple[Channel, ...] = (
    Channel("organic", 0.24, 0.000, 0.42, 4.0, 0.15, 0.35, 16.0, 0.80, 52.0, 0.8, 5.0, 8.0),
    Channel("search", 0.26, 0.000, 0.36, 3.0, 0.10, 0.45, 10.0, 0.60, 58.0, 1.0, 4.0, 2.0),
    Channel("social", 0.22, 0.020, 0.20, 6.0, 0.25, 0.70, 3.0, 0.45, 34.0, 1.8, 3.0, 0.6),
    Channel("email", 0.12, 0.000, 0.55, 2.0, 0.05, 0.22, 22.0, 1.00, 72.0, 0.6, 7.0, 4.5),
    Channel("affiliate", 0.16, -0.005, 0.30, 3.0, 0.10, 0.55, 6.0, 0.50, 44.0, 1.3, 3.0, 1.4),
)


@dataclass(frozen=True)
class DemoData:
    """The synthetic retailer: four Polars DataFrames.

    * ``signups``: ``user_id`` (Int64, unique), ``signup_ts`` (Datetime[us, tz]), ``channel`` (String);
      in signup order
    * ``orders``: ``user_id`` (Int64, a few nulls), ``ts`` (Datetime[us, tz]), ``amount`` (Float64,
      refunds negative, a few NaN); shuffled
    * ``activity``: ``user_id`` (Int64), ``ts`` (Datetime[us, tz]): logins; shuffled
    * ``spend``: ``month`` (Date, first of month), ``channel`` (String), ``spend`` (Float64)
    """

    signups: pl.DataFrame
    orders: pl.DataFrame
    activity: pl.DataFrame
    spend: pl.DataFrame


# --------------------------------------------------------------------------------------------------
# building blocks


def _month_starts(year: int, month: int, count: int, tz: str) -> np.ndarray:
    """Epoch microseconds of local midnight on the 1st of `count` consecutive months in `tz`."""
    naive = pl.datetime_range(
        datetime(year, month, 1),
        _add_months(datetime(year, month, 1), count - 1),
        "1mo",
        time_unit="us",
        eager=True,
    )
    local = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    if local.null_count():  # midnight skipped by a DST change: the day starts at 01:00
        later = naive.dt.offset_by("1h").dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        local = local.fill_null(later)
    return local.dt.epoch("us").to_numpy().astype(np.int64)


def _add_months(d: datetime, n: int) -> datetime:
    y, m = divmod(d.month - 1 + n, 12)
    return d.replace(year=d.year + y, month=m + 1)


def _local_instant(d: date, tz: str) -> int:
    """Epoch microseconds of local midnight starting day `d` in `tz`."""
    s = pl.Series([datetime(d.year, d.month, d.day)]).dt.cast_time_unit("us")
    local = s.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    if local.null_count():
        local = s.dt.offset_by("1h").dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    return int(local.dt.epoch("us")[0])


def _sparse_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unique, random-looking 40-bit ids: a seeded offset pushed through a bijective 40-bit mixer."""
    mask = np.uint64((1 << 40) - 1)
    x = (np.arange(n, dtype=np.uint64) + np.uint64(rng.integers(0, 1 << 40))) & mask
    for shift, mult in ((23, 0x9E3779B97F4A7C15), (19, 0xBF58476D1CE4E5B9), (21, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)  # xorshift is invertible on 40 bits
        x *= np.uint64(mult)  # odd multiplier: invertible mod 2^40 (numpy wraps mod 2^64)
        x &= mask
    x ^= x >> np.uint64(17)
    return (x + np.uint64(1)).astype(np.int64)  # 1 .. 2^40


def _repeat_orders(
    rng: np.random.Generator,
    first_ts: np.ndarray,
    window: np.ndarray,
    weight: np.ndarray,
    n_repeats: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Distribute exactly `n_repeats` orders over customers ∝ `weight`; each lands uniformly in
    [first_ts, first_ts + window). Returns (customer index, ts) of the repeat orders."""
    n = len(first_ts)
    if n_repeats <= 0 or n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    w = weight.astype(np.float64)
    if not (w.sum() > 0):
        w = np.ones(n)
    counts = rng.multinomial(n_repeats, w / w.sum())
    idx = np.repeat(np.arange(n, dtype=np.int64), counts)
    ts = first_ts[idx] + (rng.random(len(idx)) * window[idx]).astype(np.int64)
    return idx, ts


def _order_values(rng: np.random.Generator, median: np.ndarray, personal: np.ndarray) -> np.ndarray:
    v = median * personal * rng.lognormal(0.0, 0.55, len(median))
    return np.round(np.maximum(v, 2.0), 2)


def _refunds(
    rng: np.random.Generator,
    ts: np.ndarray,
    amount: np.ndarray,
    weight: np.ndarray,
    k: int,
    end: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick `k` purchases (weighted, without replacement) and make refunds for them.

    Returns (purchase index, refund ts, refund amount)."""
    n = len(ts)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    keys = rng.exponential(size=n) / weight  # Efraimidis-Spirakis: k smallest keys
    pick = np.argpartition(keys, k - 1)[:k] if k < n else np.arange(n)
    pick = np.sort(pick)
    base_ts = ts[pick]
    delay = US_PER_HOUR + rng.exponential(6 * US_PER_DAY, k).astype(np.int64)
    rts = base_ts + delay
    late = rts >= end
    if late.any():  # keep refunds before the snapshot: somewhere between purchase and snapshot
        frac = rng.uniform(0.05, 0.95, int(late.sum()))
        rts[late] = base_ts[late] + ((end - base_ts[late]) * frac).astype(np.int64)
    base_amt = amount[pick]
    partial = rng.random(k) < 0.25
    part = np.maximum(np.round(base_amt * rng.uniform(0.2, 0.8, k), 2), 0.01)
    ramt = -np.where(partial, part, base_amt)
    return pick, rts, ramt


def _frame(table: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


def _ts_array(us: np.ndarray, tz: str) -> pa.Array:
    return pa.array(us.astype(np.int64, copy=False), type=pa.timestamp("us", tz=tz))


# --------------------------------------------------------------------------------------------------
# the retailer


@dataclass
class _Population:
    month: np.ndarray  # signup month index (local)
    chan: np.ndarray  # channel index
    signup_ts: np.ndarray
    payer: np.ndarray  # bool: first order before the snapshot
    first_ts: np.ndarray
    window: np.ndarray  # us of observed customer lifetime after the first order
    rate: np.ndarray  # repeat orders per month while alive
    value: np.ndarray  # personal order-value factor
    life: np.ndarray  # us of customer lifetime (0 for one-and-done)
    cells: np.ndarray  # signups per (month, channel)


def _population(
    rng: np.random.Generator, n_signups: int, lo: np.ndarray, hi: np.ndarray, season: np.ndarray
) -> _Population:
    """Signups over the month windows [lo[m], hi[m]) and their paying behaviour."""
    n_months = len(lo)
    end = int(hi[-1])
    p = np.array([c.share for c in CHANNELS])
    trend = np.array([c.trend for c in CHANNELS])
    m_idx = np.arange(n_months)
    shares = p[None, :] * np.exp(trend[None, :] * m_idx[:, None])
    shares /= shares.sum(axis=1, keepdims=True)
    volume = 1.03**m_idx * season * (hi - lo) / US_PER_MONTH
    per_month = rng.multinomial(n_signups, volume / volume.sum())
    month = np.repeat(np.arange(n_months, dtype=np.int32), per_month)
    n = len(month)
    # Sorted uniform times per month without a sort: normalised running sums of exponential gaps.
    gaps = rng.exponential(1.0, n + n_months)
    seg = np.repeat(np.arange(n_months), per_month + 1)  # one extra gap closes each month
    run = np.cumsum(gaps)
    seg_start = np.concatenate([[0], np.cumsum(per_month + 1)[:-1]])
    base = np.where(seg_start > 0, run[np.maximum(seg_start - 1, 0)], 0.0)
    frac = (run - base[seg]) / (run[seg_start + per_month] - base)[seg]
    keep = np.ones(n + n_months, dtype=bool)
    keep[seg_start + per_month] = False
    signup_ts = lo[month] + (frac[keep] * (hi - lo)[month]).astype(np.int64)  # a users table in signup order
    # Channel per signup from the month's channel shares.
    cum = np.cumsum(shares, axis=1)[month]
    u = rng.random(n)
    chan = (u[:, None] >= cum[:, :-1]).sum(axis=1).astype(np.int8)
    cells = np.bincount(month.astype(np.int64) * len(CHANNELS) + chan, minlength=n_months * len(CHANNELS))
    cells = cells.reshape(n_months, len(CHANNELS))

    fields = ("conversion", "late_share", "first_delay_days", "one_and_done", "life_months", "orders_per_month")
    par = {f: np.array([getattr(c, f) for c in CHANNELS])[chan] for f in fields}
    converts = rng.random(n) < par["conversion"]
    late = rng.random(n) < par["late_share"]
    delay_days = np.where(late, rng.exponential(75.0, n), rng.exponential(1.0, n) * par["first_delay_days"])
    first_ts = signup_ts + 60 * US_PER_SECOND + (delay_days * US_PER_DAY).astype(np.int64)
    payer = converts & (first_ts < end)
    one = rng.random(n) < par["one_and_done"]
    life = np.where(one, 0.0, rng.exponential(1.0, n) * par["life_months"] * US_PER_MONTH).astype(np.int64)
    window = np.clip(np.minimum(first_ts + life, end) - first_ts, 0, None)
    rate = rng.gamma(2.0, 0.5, n) * par["orders_per_month"]
    value = rng.lognormal(0.0, 0.35, n)
    return _Population(month, chan, signup_ts, payer, first_ts, window, rate, value, life, cells)


def generate(
    n_orders: int = 1_000_000,
    *,
    seed: int = 7,
    months: int = 24,
    start: date = date(2024, 1, 1),
    tz: str = "Europe/Berlin",
) -> DemoData:
    """Generate the synthetic retailer with exactly `n_orders` order rows.

    The model is described in the module docstring. The same arguments give identical data.
    """
    if n_orders < 0:
        raise ValueError(f"n_orders must be >= 0, got {n_orders}")
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    starts = _month_starts(start.year, start.month, months + 2, tz)
    begin = _local_instant(start, tz)
    snap = _add_months(datetime(start.year, start.month, 1), months).replace(day=SNAPSHOT_DAY + 1)
    end = _local_instant(snap.date(), tz)  # snapshot: local midnight after the 16th of the running month
    lo = np.maximum(starts[: months + 1], begin)
    hi = np.minimum(starts[1 : months + 2], end)
    calendar_month = (start.month - 1 + np.arange(months + 1)) % 12
    season = np.select([calendar_month == 10, calendar_month == 11], [1.2, 1.3], 1.0)  # Nov, Dec

    n_bad_user = 0 if n_orders < 100 else min(3 + n_orders // 500_000, 50)
    n_bad_nan = 0 if n_orders < 100 else min(2 + n_orders // 1_000_000, 20)
    n_refunds = int(round(REFUND_SHARE * n_orders))
    n_purchases = n_orders - n_refunds - n_bad_user - n_bad_nan
    if n_purchases < 1 and n_orders > 0:
        n_purchases, n_refunds, n_bad_user, n_bad_nan = n_orders, 0, 0, 0

    # Pilot: purchases per signup under the model, so the signup volume fits `n_orders`.
    pilot = _population(np.random.default_rng([seed, 1]), 40_000, lo, hi, season)
    pp = pilot.payer
    per_signup = (pp.sum() + (pilot.rate[pp] * pilot.window[pp] / US_PER_MONTH).sum()) / 40_000
    n_signups = max(int(round(n_purchases / per_signup)), 1) if n_purchases > 0 else 0

    rng = np.random.default_rng([seed, 0])
    pop = _population(rng, n_signups, lo, hi, season)
    attempt = 0
    while n_purchases > 0 and not pop.payer.any():  # tiny tables: make sure somebody pays
        attempt += 1
        n_signups = 2 * n_signups + 2
        rng = np.random.default_rng([seed, 0, attempt])
        pop = _population(rng, n_signups, lo, hi, season)
    n = len(pop.month)
    user_id = _sparse_ids(n, rng)

    payers = np.flatnonzero(pop.payer)
    if len(payers) > n_purchases:  # tiny tables: not every converter can have an order
        payers = np.sort(rng.choice(payers, n_purchases, replace=False))
    r_idx, r_ts = _repeat_orders(
        rng, pop.first_ts[payers], pop.window[payers], pop.rate[payers] * pop.window[payers], n_purchases - len(payers)
    )
    buyer = np.concatenate([payers, payers[r_idx]])  # signup index per purchase
    p_ts = np.concatenate([pop.first_ts[payers], r_ts])
    med = np.array([c.order_value for c in CHANNELS])[pop.chan[buyer]]
    p_amt = _order_values(rng, med, pop.value[buyer])

    rw = np.array([c.refund_weight for c in CHANNELS])[pop.chan[buyer]]
    pick, f_ts, f_amt = _refunds(rng, p_ts, p_amt, rw, n_refunds, end)
    bad = rng.choice(len(buyer), n_bad_user + n_bad_nan, replace=len(buyer) < n_bad_user + n_bad_nan) if len(buyer) else np.empty(0, np.int64)
    o_user = np.concatenate([buyer, buyer[pick], buyer[bad]])
    o_ts = np.concatenate([p_ts, f_ts, p_ts[bad]])
    o_amt = np.concatenate([p_amt, f_amt, p_amt[bad]])
    o_null = np.zeros(len(o_user), dtype=bool)
    n_good = len(p_ts) + len(f_ts)
    o_null[n_good : n_good + n_bad_user] = True
    o_amt[n_good + n_bad_user :] = np.nan

    # Spend: cost per signup calibrated so that margin × 12-month net revenue / spend hits the target.
    cps = _cost_per_signup(pop, o_user[:n_good], o_ts[:n_good], o_amt[:n_good], starts, months)
    noise = rng.lognormal(0.0, 0.08, pop.cells.shape)
    spend = np.round(pop.cells * cps[None, :] * noise, 2)

    # Activity: one login at signup, then Poisson logins over an activity lifetime.
    a_life = np.where(
        pop.payer,
        rng.exponential(1.0, n) * np.array([c.life_months for c in CHANNELS])[pop.chan] * 1.3 * US_PER_MONTH,
        rng.exponential(2.0 * US_PER_MONTH, n),
    ).astype(np.int64)
    a_life = np.where(pop.payer, np.maximum(a_life, pop.first_ts - pop.signup_ts + pop.life), a_life)
    a_win = np.clip(np.minimum(pop.signup_ts + a_life, end) - pop.signup_ts, 0, None)
    a_rate = rng.gamma(2.0, 0.5, n) * np.array([c.logins_per_month for c in CHANNELS])[pop.chan]
    a_rate = np.where(pop.payer, a_rate * 1.5, a_rate)
    w = a_rate * a_win
    target = max(LOGINS_PER_ORDER * n_orders - n, 0.0)
    counts = rng.poisson(w * (target / w.sum())) if w.sum() > 0 else np.zeros(n, np.int64)
    a_idx = np.repeat(np.arange(n, dtype=np.int64), counts)
    a_ts = pop.signup_ts[a_idx] + (rng.random(len(a_idx)) * a_win[a_idx]).astype(np.int64)
    a_user = np.concatenate([np.arange(n, dtype=np.int64), a_idx])
    a_ts = np.concatenate([pop.signup_ts + 30 * US_PER_SECOND, a_ts])
    a_ts = np.minimum(a_ts, end - 1)

    o_perm = rng.permutation(len(o_user))
    a_perm = rng.permutation(len(a_user))
    a_ids = user_id[a_user][a_perm]  # a_user is sorted: the first gather is sequential
    a_ts = a_ts[a_perm]

    names = np.array([c.name for c in CHANNELS], dtype=object)
    signups = _frame(
        pa.table(
            {
                "user_id": pa.array(user_id, pa.int64()),
                "signup_ts": _ts_array(pop.signup_ts, tz),
                "channel": pa.DictionaryArray.from_arrays(pop.chan, names.astype(str).tolist()).cast(pa.large_string()),
            }
        )
    )
    orders = _frame(
        pa.table(
            {
                "user_id": pa.array(user_id[o_user[o_perm]], pa.int64(), mask=o_null[o_perm]),
                "ts": _ts_array(o_ts[o_perm], tz),
                "amount": pa.array(o_amt[o_perm], pa.float64()),
            }
        )
    )
    activity = _frame(pa.table({"user_id": pa.array(a_ids, pa.int64()), "ts": _ts_array(a_ts, tz)}))
    month_dates = [_add_months(datetime(start.year, start.month, 1), m).date() for m in range(months + 1)]
    spend_df = pl.DataFrame(
        {
            "month": np.repeat(np.array(month_dates, dtype="datetime64[D]"), len(CHANNELS)),
            "channel": np.tile(names.astype(str), months + 1),
            "spend": spend.ravel(),
        },
        schema={"month": pl.Date, "channel": pl.String, "spend": pl.Float64},
    )
    assert orders.height == n_orders
    return DemoData(signups=signups, orders=orders, activity=activity, spend=spend_df)


def _cost_per_signup(
    pop: _Population, user: np.ndarray, ts: np.ndarray, amount: np.ndarray, starts: np.ndarray, months: int
) -> np.ndarray:
    """Cost per signup per channel giving LTV/CAC = target at MARGIN on the full-year signup cohorts."""
    horizon = min(12, months)
    last_cohort = months - horizon  # cohorts 0..last_cohort have `horizon` complete months
    order_month = np.searchsorted(starts, ts, side="right") - 1
    age = order_month - pop.month[user]
    keep = (age >= 0) & (age < horizon) & (pop.month[user] <= last_cohort)
    k = len(CHANNELS)
    revenue = np.bincount(pop.chan[user[keep]], weights=amount[keep], minlength=k)
    signups = pop.cells[: last_cohort + 1].sum(axis=0)
    target = np.array([c.ltv_cac for c in CHANNELS])
    fallback = np.array([c.conversion * c.order_value * 2.5 * MARGIN / c.ltv_cac for c in CHANNELS])
    with np.errstate(divide="ignore", invalid="ignore"):
        cps = MARGIN * revenue / signups / target
    return np.where((signups > 0) & (revenue > 0), cps, fallback)


# --------------------------------------------------------------------------------------------------
# benchmark data


def orders_only(n_orders: int, *, seed: int = 0, n_users: int | None = None, months: int = 24, growth: float = 1.03) -> pa.Table:
    """A plain shuffled order table for benchmarks: ``user_id`` int64 (sparse 40-bit ids),
    ``ts`` timestamp[us, UTC], ``amount`` float64 (3 % refunds, negative). There are exactly
    ``n_orders`` rows and ``n_users`` customers (default ``n_orders / 12.7``), each with at least one
    order, over ``months`` UTC months from 2024-01 (24: to 2025-12); first orders grow by ``growth``
    a month. There are no bad rows.
    """
    if n_orders < 0:
        raise ValueError(f"n_orders must be >= 0, got {n_orders}")
    rng = np.random.default_rng([seed, 2])
    starts = _month_starts(2024, 1, months + 1, "UTC")
    end = int(starts[-1])
    n_refunds = int(round(REFUND_SHARE * n_orders))
    n_purchases = n_orders - n_refunds
    if n_users is None:
        n_users = int(round(n_orders / 12.7))
    n_users = max(min(n_users, n_purchases), 1 if n_purchases else 0)

    # First orders: monthly volume grows 3 %/month, uniform within the month.
    vol = growth ** np.arange(months)
    per_month = rng.multinomial(n_users, vol / vol.sum())
    m = np.repeat(np.arange(months), per_month)
    first_ts = starts[m] + (rng.random(n_users) * (starts[m + 1] - starts[m])).astype(np.int64)
    one = rng.random(n_users) < 0.25
    life = np.where(one, 0, rng.exponential(14.0 * US_PER_MONTH, n_users)).astype(np.int64)
    window = np.clip(np.minimum(first_ts + life, end) - first_ts, 0, None)
    rate = rng.gamma(1.2, 1.0, n_users)
    r_idx, r_ts = _repeat_orders(rng, first_ts, window, rate * window, n_purchases - n_users)

    # Intermediates are dropped as soon as they are used, and the columns are permuted one at a time,
    # which lowers the peak by 40 % (9M orders: 0.6 GB instead of 1.0 GB) and lets 90M orders fit in 6 GB.
    buyer = np.concatenate([np.arange(n_users, dtype=np.int64), r_idx])
    del r_idx
    p_ts = np.concatenate([first_ts, r_ts])
    del r_ts
    value = rng.lognormal(0.0, 0.35, n_users)
    p_amt = _order_values(rng, np.full(len(buyer), 45.0), value[buyer])
    pick, f_ts, f_amt = _refunds(rng, p_ts, p_amt, np.ones(len(p_ts)), n_refunds, end)

    user = np.concatenate([buyer, buyer[pick]])
    del buyer
    ts = np.concatenate([p_ts, f_ts])
    del p_ts, f_ts
    amount = np.concatenate([p_amt, f_amt])
    del p_amt, f_amt
    perm = rng.permutation(len(user))
    ids = _sparse_ids(n_users, rng)
    user_col = pa.array(ids[user[perm]], pa.int64())
    del user
    ts_col = _ts_array(ts[perm], "UTC")
    del ts
    amount_col = pa.array(amount[perm], pa.float64())
    del amount, perm
    return pa.table({"user_id": user_col, "ts": ts_col, "amount": amount_col})
