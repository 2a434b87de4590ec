"""Hypothesis strategies for random order / signup / activity tables around DST edges."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from hypothesis import strategies as st

from reference import period_of_date, period_start_date

UTC = dt.timezone.utc
NS = 1_000_000_000

# (instant, a zone with an interesting transition near it)
ANCHORS = [
    (dt.datetime(2015, 10, 18, 3, 0, tzinfo=UTC), "America/Sao_Paulo"),  # DST start: no local midnight
    (dt.datetime(2021, 10, 28, 22, 0, tzinfo=UTC), "Asia/Amman"),  # DST end at 01:00 -> 00:00
    (dt.datetime(2011, 12, 30, 10, 0, tzinfo=UTC), "Pacific/Apia"),  # the skipped 2011-12-30
    (dt.datetime(2024, 3, 31, 1, 0, tzinfo=UTC), "Europe/Berlin"),
    (dt.datetime(2023, 12, 31, 23, 0, tzinfo=UTC), "UTC"),
    (dt.datetime(1970, 1, 1, 0, 0, tzinfo=UTC), "UTC"),  # negative raw values just before the epoch
]
ZONES = ["UTC", "Europe/Berlin", "America/Sao_Paulo", "Asia/Amman", "Pacific/Apia", "Asia/Kolkata",
         "America/New_York"]  # fmt: skip
PERIOD_SECONDS = {"day": 86_400, "week": 7 * 86_400, "month": 2_629_746, "quarter": 7_889_238}
PERIODS = list(PERIOD_SECONDS)

INT_RANGES = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
    pa.uint8(): (0, 2**8 - 1),
    pa.uint16(): (0, 2**16 - 1),
    pa.uint32(): (0, 2**32 - 1),
    pa.uint64(): (0, 2**64 - 1),
}
INT_TYPES = list(INT_RANGES)
STRING_USER_TYPES = ["string", "large_string", "string_view", "dictionary"]
# Float ids holding whole numbers (pandas' integers with nulls) are integer ids: every integer up to 2^53.
FLOAT_USER_RANGES = {pa.float64(): (-(2**53), 2**53)}
USER_RANGES = {**INT_RANGES, **FLOAT_USER_RANGES}
USER_TYPES = [*INT_TYPES, *FLOAT_USER_RANGES, *STRING_USER_TYPES]
TS_TYPES = [
    *[pa.timestamp(u) for u in ("s", "ms", "us", "ns")],
    *[("aware", u) for u in ("s", "ms", "us", "ns")],
    pa.date32(),
    pa.date64(),
]
AMOUNT_TYPES = [pa.float64(), pa.float32(), *INT_TYPES, "decimal"]

SPECIAL_FLOATS = [0.0, 1.0, -1.0, 0.5, -0.5, 2.5, 0.125, -0.125, 1.005, 2.675, 12.34565, 5e-05, -5e-05, 1e-9,
                  99.99, 0.29, 0.57, float("nan"), float("inf"), float("-inf")]  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# users
# ----------------------------------------------------------------------------------------------------
def user_pool_values(user_type: Any) -> list[Any]:
    """Distinct user keys for a dtype, including the type's extremes."""
    if user_type in USER_RANGES:
        lo, hi = USER_RANGES[user_type]
        vals = [0, 1, hi, lo, 42, hi - 1, 7, 100]
        return list(dict.fromkeys(v for v in vals if lo <= v <= hi))
    return ["", "a", "ü-1", "b" * 20, "A", "a ", "1", "user_7"]


def user_array(values: list[Any], user_type: Any) -> pa.Array:
    if user_type in FLOAT_USER_RANGES:
        return pa.array([None if v is None else float(v) for v in values], user_type)
    if user_type in INT_RANGES:
        return pa.array(values, user_type)
    if user_type == "dictionary":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, {"string": pa.string(), "large_string": pa.large_string(),
                             "string_view": pa.string_view()}[user_type])  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# timestamps: generated as integer nanoseconds, stored in the drawn dtype
# ----------------------------------------------------------------------------------------------------
def ts_type_to_arrow(ts_type: Any, col_tz: str) -> pa.DataType:
    if isinstance(ts_type, tuple):
        return pa.timestamp(ts_type[1], col_tz)
    return ts_type


def ts_array(ns_values: list[int | None], typ: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(typ):
        div = {"s": NS, "ms": 1_000_000, "us": 1_000, "ns": 1}[typ.unit]
        ints = [None if v is None else v // div for v in ns_values]
        return pa.array(ints, pa.int64()).cast(typ)
    days = [None if v is None else v // (86_400 * NS) for v in ns_values]
    if pa.types.is_date32(typ):
        return pa.array(days, pa.int32()).cast(typ)
    return pa.array([None if d is None else d * 86_400_000 for d in days], pa.int64()).cast(typ)


# Local days at the ends of the supported range (0001-01-01 ..= 9999-12-31): just outside at the low end
# (a valid row in year 1's first period would leave no complete period before it), and on both sides
# of the high end.
EDGE_DAYS = [-719_163, -719_200, 2_932_895, 2_932_896, 2_932_897, 2_932_899]


def extreme_raw_values(typ: pa.DataType) -> list[int]:
    """Raw stored values far outside or at the ends of the supported range, in ``typ``'s unit."""
    if pa.types.is_date32(typ):
        return [-(2**31), 2**31 - 1, *EDGE_DAYS]
    per_day = 86_400_000 if pa.types.is_date64(typ) else 86_400 * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[typ.unit]
    values = [-(2**63), 2**63 - 1, 2**62, -(2**62), 2**53 + 1]
    values += [d * per_day + off for d in EDGE_DAYS for off in (0, per_day - 1, per_day // 2)]
    return [v for v in values if -(2**63) <= v < 2**63]


@st.composite
def with_extremes(draw: Any, arr: pa.Array) -> pa.Array:
    """``arr`` (a timestamp or date column) with, now and then, a few values replaced by extremes."""
    if len(arr) == 0 or draw(st.integers(0, 4)) != 0:
        return arr
    storage = pa.int32() if pa.types.is_date32(arr.type) else pa.int64()
    raw = arr.cast(storage).to_pylist()
    for _ in range(draw(st.integers(1, 2))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.sampled_from(extreme_raw_values(arr.type)))
    return pa.array(raw, storage).cast(arr.type)


@st.composite
def instant_pool(draw: Any, anchor: dt.datetime, period: str, horizon: int) -> list[int]:
    """1..8 instants (ns since epoch) spread over a few periods around the anchor."""
    plen = PERIOD_SECONDS[period]
    base = int(anchor.timestamp())
    jitter = st.one_of(
        st.sampled_from([0, 1, -1, 3599, 3600, -3600, -3601, 7200, 86_399, -86_400, 43_200]),
        st.integers(-plen // 2, plen // 2),
    )
    subsec = st.sampled_from([0, 0, 1, 999_999_999, 500_000_000, 123_456_789])
    one = st.builds(
        lambda k, j, f: (base + k * plen + j) * NS + f,
        st.integers(-2, horizon + 1),
        jitter,
        subsec,
    )
    return draw(st.lists(one, min_size=1, max_size=8))


# ----------------------------------------------------------------------------------------------------
# amounts
# ----------------------------------------------------------------------------------------------------
def amount_values_strategy(amount_type: Any, dec_scale: int) -> st.SearchStrategy:
    if amount_type == pa.float64():
        return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(-1e4, 1e4), st.integers(-50, 200).map(float))
    if amount_type == pa.float32():
        return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(-1e4, 1e4, width=32),
                         st.integers(-50, 200).map(float))  # fmt: skip
    if amount_type == "decimal":
        return st.integers(-(10**8), 10**8).map(lambda n: Decimal(n).scaleb(-dec_scale))
    lo, hi = INT_RANGES[amount_type]
    return st.one_of(st.integers(max(lo, -1000), min(hi, 1000)), st.sampled_from([0, 1, 5, max(lo, -1)]))


def amount_array(values: list[Any], amount_type: Any, dec_scale: int) -> pa.Array:
    if amount_type == "decimal":
        return pa.array(values, pa.decimal128(18, dec_scale))
    return pa.array(values, amount_type)


def maybe(strategy: st.SearchStrategy, null_weight: int = 6) -> st.SearchStrategy:
    """``strategy`` with roughly one null in ``null_weight`` draws."""
    return st.integers(0, null_weight - 1).flatmap(lambda k: st.none() if k == 0 else strategy)


# ----------------------------------------------------------------------------------------------------
# as_of / since in every accepted form, derived from an instant
# ----------------------------------------------------------------------------------------------------
@st.composite
def when(draw: Any, ns: int, tz: str, period: str) -> Any:
    instant = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ns // 1000)
    local = instant.astimezone(ZoneInfo(tz))
    form = draw(st.sampled_from(["aware_utc", "aware_local", "naive_local", "date", "period_start", "iso",
                                 "iso_date"]))  # fmt: skip
    if form == "aware_utc":
        return instant
    if form == "aware_local":
        return local
    if form == "naive_local":  # an existing wall-clock time
        return local.replace(tzinfo=None)
    if form == "date":
        return local.date()
    if form == "period_start":
        return period_start_date(period_of_date(local.date(), period), period)
    if form == "iso":
        return instant.isoformat()
    return local.date().isoformat()


# ----------------------------------------------------------------------------------------------------
# a whole case
# ----------------------------------------------------------------------------------------------------
@st.composite
def cases(
    draw: Any, signups: bool, activity: bool | None = None, max_rows: int = 30, max_users: int = 6, min_rows: int = 0
) -> dict:
    """A random problem: ``orders`` (pa.Table) and the keyword arguments of ``cohorts``."""
    period = draw(st.sampled_from(PERIODS))
    anchor, anchor_tz = draw(st.sampled_from(ANCHORS))
    tz = draw(st.one_of(st.just(anchor_tz), st.sampled_from(ZONES)))
    horizon = draw(st.integers(1, 5))
    pool = draw(instant_pool(anchor, period, horizon))

    user_type = draw(st.sampled_from(USER_TYPES))
    if max_users <= 8:
        users = draw(st.lists(st.sampled_from(user_pool_values(user_type)), min_size=1, max_size=max_users,
                              unique=True))  # fmt: skip
    else:  # many distinct keys: random ids over the dtype's whole range, or random strings
        key = (st.integers(*USER_RANGES[user_type]) if user_type in USER_RANGES
               else st.text(min_size=0, max_size=12))  # fmt: skip
        room = USER_RANGES[user_type][1] - USER_RANGES[user_type][0] + 1 if user_type in USER_RANGES else max_users
        users = draw(st.lists(key, min_size=min(max_users // 4, room), max_size=min(max_users, room), unique=True))
    ts_type = ts_type_to_arrow(draw(st.sampled_from(TS_TYPES)), draw(st.sampled_from(["UTC", tz, "Asia/Tokyo"])))
    amount_type = draw(st.sampled_from(AMOUNT_TYPES))
    dec_scale = draw(st.sampled_from([0, 2, 4]))
    scale = draw(st.sampled_from([0, 2, 4, 6, 8]))
    min_amount = draw(st.sampled_from([0, 0, 0, 1, 2.5, 0.5, -1, 0.57, 0.29]))
    names = draw(st.sampled_from([("user_id", "ts", "amount"), ("customer", "when", "amt")]))
    user, ts, amount = names

    n = draw(st.integers(min_rows, max_rows))
    o_users = draw(st.lists(maybe(st.sampled_from(users), 10), min_size=n, max_size=n))
    o_ts = draw(st.lists(maybe(st.sampled_from(pool), 12), min_size=n, max_size=n))
    o_amt = draw(st.lists(maybe(amount_values_strategy(amount_type, dec_scale), 10), min_size=n, max_size=n))
    cols: dict[str, pa.Array] = {
        user: user_array(o_users, user_type),
        ts: draw(with_extremes(ts_array(o_ts, ts_type))),
        amount: amount_array(o_amt, amount_type, dec_scale),
    }

    by_choice = draw(st.sampled_from([None, None, ["seg"], ["seg", "tier"], ["tier"]]))
    seg_values = st.sampled_from(["a", "b", "é", None])
    tier_values = st.sampled_from([1, 2, None, -5])

    seg_type = draw(st.sampled_from(["string", "large_string", "string_view", "dictionary"]))
    tier_type = draw(st.sampled_from([pa.int64(), pa.int8(), pa.int32()]))

    def add_by(target: dict, rows: int) -> None:
        target["seg"] = user_array(draw(st.lists(seg_values, min_size=rows, max_size=rows)), seg_type)
        target["tier"] = pa.array(draw(st.lists(tier_values, min_size=rows, max_size=rows)), tier_type)

    kw: dict[str, Any] = dict(user=user, ts=ts, amount=amount, horizon=horizon, period=period, tz=tz,
                              min_amount=min_amount, scale=scale)  # fmt: skip
    if by_choice:
        kw["by"] = by_choice if len(by_choice) > 1 or draw(st.booleans()) else by_choice[0]

    def side_user_type() -> Any:
        """A user dtype for signups / activity that can be matched with the orders' one."""
        if user_type in STRING_USER_TYPES:
            return draw(st.sampled_from(STRING_USER_TYPES))
        ok = [t for t in USER_RANGES if all(USER_RANGES[t][0] <= v <= USER_RANGES[t][1] for v in users)]
        # uint64 keys only match uint64 keys: the engine keys every other integer as i64 and says so
        # in its DtypeError ("uint64 and signed integers cannot be matched")
        ok = [t for t in ok if (t == pa.uint64()) == (user_type == pa.uint64())]
        return draw(st.sampled_from(ok or [user_type]))

    if signups:
        m = draw(st.integers(0, max_users + 3))
        s_ts_type = ts_type_to_arrow(draw(st.sampled_from(TS_TYPES)), draw(st.sampled_from(["UTC", tz])))
        s_name = draw(st.sampled_from(["signup_ts", "joined"]))
        s_cols = {
            user: user_array(draw(st.lists(maybe(st.sampled_from(users), 10), min_size=m, max_size=m)), side_user_type()),
            s_name: draw(with_extremes(ts_array(draw(st.lists(maybe(st.sampled_from(pool), 12), min_size=m, max_size=m)),
                                                s_ts_type))),
        }
        add_by(s_cols, m)
        kw["signups"] = pa.table(s_cols)
        if s_name != "signup_ts":
            kw["signup_ts"] = s_name
    else:
        add_by(cols, n)

    if activity is None:
        activity = draw(st.booleans())
    if activity:
        k = draw(st.integers(0, 15))
        a_ts_type = ts_type_to_arrow(draw(st.sampled_from(TS_TYPES)), draw(st.sampled_from(["UTC", tz])))
        a_name = draw(st.sampled_from([ts, "seen"]))
        kw["activity"] = pa.table(
            {
                user: user_array(
                    draw(st.lists(maybe(st.sampled_from(users), 10), min_size=k, max_size=k)), side_user_type()
                ),
                a_name: draw(with_extremes(ts_array(draw(st.lists(maybe(st.sampled_from(pool), 12), min_size=k,
                                                                  max_size=k)), a_ts_type))),
            }
        )
        if a_name != ts:
            kw["activity_ts"] = a_name

    if draw(st.integers(0, 3)) == 0:
        kw["as_of"] = draw(when(draw(st.sampled_from(pool)), tz, period))
    if draw(st.integers(0, 3)) == 0:
        kw["since"] = draw(when(draw(st.sampled_from(pool)), tz, period))

    return {"orders": pa.table(cols), "kw": kw}
