"""``ltrcore.cohorts``: validate arguments, resolve inputs, run the engine, wrap the result."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import _core
from .adapters import SEGMENT_CODE, SegmentCoder, Source, read_whole, resolve
from .exceptions import ColumnNotFoundError, ExcludedRowsWarning, InvalidArgumentError
from .table import CohortTable

PERIODS = ("month", "week", "quarter", "day")
TimeLike = dt.datetime | dt.date | str | None

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)

# Rows decoded per parallel step (a few MB of scratch per worker).
DEFAULT_CHUNK_ROWS = 1 << 17


def _time_point(value: Any, name: str) -> tuple[str, int] | None:
    """``("instant", µs since the epoch)`` or ``("local", µs since 1970-01-01 wall clock)``."""
    if value is None:
        return None
    try:
        not_a_time = bool(value != value)  # NaT (pandas, numpy) and NaN are not equal to themselves
    except Exception:
        not_a_time = False
    if not_a_time:
        raise InvalidArgumentError(f"{name} is {value!r}, not a time; pass None for the default")
    try:
        return _to_time_point(value, name)
    except (OverflowError, ValueError) as err:
        if isinstance(err, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"{name} {value!r} is outside the supported years 1-9999") from None


def _to_time_point(value: Any, name: str) -> tuple[str, int]:
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 7 and text[4] == "-":  # YYYY-MM
            text += "-01"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArgumentError(f"{name}: cannot parse {value!r} as an ISO date or datetime") from None
    elif hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    elif type(value).__name__ == "datetime64":  # numpy: through its text, which cannot overflow
        import numpy as np

        value = dt.datetime.fromisoformat(str(np.datetime_as_string(value, unit="us")))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return ("instant", (value - _EPOCH_UTC) // _MICRO)
        return ("local", (value - _EPOCH) // _MICRO)
    if isinstance(value, dt.date):
        return ("local", (dt.datetime(value.year, value.month, value.day) - _EPOCH) // _MICRO)
    raise InvalidArgumentError(f"{name} must be a datetime, date or ISO string; got {type(value).__name__}")


def _min_amount(value: Any) -> tuple[int, int]:
    try:
        d = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
    except (decimal.InvalidOperation, ValueError, TypeError):
        raise InvalidArgumentError(f"min_amount must be a number; got {value!r}") from None
    if not d.is_finite():
        raise InvalidArgumentError(f"min_amount must be finite; got {value!r}")
    # Amounts are 64-bit fixed point (below 9.3e18) at a scale of at most 38: a threshold needs no more.
    if d and not -60 <= d.adjusted() <= 60:
        raise InvalidArgumentError(f"min_amount is out of range: {value!r} (amounts are below about 9.2e18)")
    sign, digits, exponent = d.normalize(decimal.Context(prec=200)).as_tuple() if d else (0, (0,), 0)
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if abs(mantissa) >= 2**127 or not isinstance(exponent, int):
        raise InvalidArgumentError(f"min_amount has too many digits: {value!r}")
    return mantissa, exponent


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _threads(threads: int | None) -> int:
    """Worker threads: at most the cores this process may run on (workers meet at a spinning
    barrier many times a second, so a worker without a core of its own stalls all the others)."""
    if threads is None:
        return _available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        raise InvalidArgumentError(f"threads must be an integer between 1 and 1024; got {threads!r}")
    return min(threads, _available_cores())


def _column_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a column name (a non-empty string); got {value!r}")
    return value


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be an integer between {lo} and {hi}; got {value!r}")
    return value


def _names(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    if isinstance(by, str):
        return [_column_name("by", by)]
    try:
        names = list(by)
    except TypeError:
        raise InvalidArgumentError(f"by must be a column name or a list of them; got {by!r}") from None
    return [_column_name("by", name) for name in names]


def cohorts(
    orders: Any,
    *,
    user: str = "user_id",
    ts: str = "ts",
    amount: str = "amount",
    signups: Any = None,
    signup_ts: str = "signup_ts",
    activity: Any = None,
    activity_ts: str | None = None,
    by: str | Sequence[str] | None = None,
    horizon: int = 12,
    period: str = "month",
    tz: str = "UTC",
    as_of: TimeLike = None,
    since: TimeLike = None,
    min_amount: float | int | decimal.Decimal = 0,
    scale: int = 4,
    strict: bool = False,
    threads: int | None = None,
    progress: Callable[[str, int], Any] | None = None,
    _chunk_rows: int | None = None,
    _cells_budget: int | None = None,
) -> CohortTable:
    """Builds the cohort × age table of revenue, orders, payers and (optionally) active users.

    See the README's "Semantics" section for exactly what each number means. In short: the cohort is
    the signup period when ``signups`` is given, else the period of the user's first paying order
    (``amount > min_amount``); age counts whole calendar periods in ``tz``; money is summed exactly in
    fixed point; a cell is reported complete only when its period ended by ``as_of``; and every input
    row is accounted for in ``table.reconciliation``.

    ``threads`` sets the worker count, capped at the cores available to the process (results are
    identical for any value). ``progress`` is called
    as ``progress(phase, rows_done)`` from the calling thread about twice a second. ``_chunk_rows`` is
    for tests: it shrinks the engine's internal steps so chunk boundaries are exercised, and
    ``_cells_budget`` (bytes) the memory under which each worker keeps its own copy of the cohort
    grid, so that the shared grid of large grids is exercised on small data.
    """
    user, ts, amount, signup_ts = (_column_name(n, v) for n, v in
                                   (("user", user), ("ts", ts), ("amount", amount), ("signup_ts", signup_ts)))  # fmt: skip
    activity_ts = _column_name("activity_ts", activity_ts or ts)
    by_cols = _names(by)
    horizon = _check_int("horizon", horizon, 1, 1000)
    scale = _check_int("scale", scale, 0, 18)
    if period not in PERIODS:
        raise InvalidArgumentError(f"period must be one of {', '.join(map(repr, PERIODS))}; got {period!r}")
    if not isinstance(tz, str) or not tz:
        raise InvalidArgumentError(f"tz must be an IANA time zone name; got {tz!r}")
    if progress is not None and not callable(progress):
        raise InvalidArgumentError("progress must be callable as progress(phase, rows_done)")
    chunk_rows = DEFAULT_CHUNK_ROWS
    if _chunk_rows is not None:
        chunk_rows = _check_int("_chunk_rows", _chunk_rows, 1, 1 << 24)

    coder = SegmentCoder(by_cols) if by_cols else None
    signup_source: Source | None = None
    orders_source = resolve(orders, [user, ts, amount], table="orders")
    if signups is not None:
        # Read whole (one row per user), in its own Arrow types: only the ``by`` columns go through
        # Polars, to be coded.
        signup_table = read_whole(signups, [user, signup_ts, *by_cols], table="signups")
        if coder is not None:
            missing = [c for c in by_cols if c not in signup_table.column_names]
            if missing:
                raise ColumnNotFoundError(
                    f"column {missing[0]!r} not found in signups; available columns: "
                    + ", ".join(map(repr, signup_table.column_names))
                )
            signup_table = coder.encode(signup_table)
        signup_source = Source(lambda: signup_table, reopenable=False, in_memory=True)
    elif coder is not None:
        orders_source = resolve(orders, [user, ts, amount, *by_cols], table="orders")
        orders_source = coder.wrap(orders_source, [user, ts, amount], table="orders")
    activity_source = resolve(activity, [user, activity_ts], table="activity") if activity is not None else None

    core = _core.compute(
        orders=orders_source.open,
        orders_reopenable=orders_source.reopenable,
        orders_in_memory=orders_source.in_memory,
        user=user,
        ts=ts,
        amount=amount,
        segment=SEGMENT_CODE if by_cols else None,
        signups=signup_source.open if signup_source else None,
        signup_ts=signup_ts,
        activity=activity_source.open if activity_source else None,
        activity_ts=activity_ts,
        horizon=horizon,
        period=period,
        tz=tz,
        as_of=_time_point(as_of, "as_of"),
        since=_time_point(since, "since"),
        min_amount=_min_amount(min_amount),
        scale=scale,
        strict=bool(strict),
        threads=_threads(threads),
        chunk_rows=chunk_rows,
        progress=progress,
        segment_ranks=coder.ranks if coder is not None else None,
        cells_budget=None if _cells_budget is None else _check_int("_cells_budget", _cells_budget, 0, 1 << 62),
    )
    segment_dictionary = coder.dictionary() if coder is not None else None

    result = CohortTable(
        core,
        by=by_cols,
        segments=segment_dictionary,
        period=period,
        tz=tz,
        as_of=as_of,
        since=since,
        min_amount=min_amount,
    )
    if core.bad_rows:
        warnings.warn(
            ExcludedRowsWarning(
                f"{core.bad_rows} input row(s) were excluded for bad data (nulls, NaN/inf amounts); "
                "see table.reconciliation, or pass strict=True to raise instead"
            ),
            stacklevel=2,
        )
    return result


__all__ = ["cohorts"]
