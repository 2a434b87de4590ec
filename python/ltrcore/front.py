"""``ltrcore.cohorts``: one accumulator over all the data, finalized at once."""

from __future__ import annotations

import datetime as dt
import decimal
import os
from collections.abc import Callable, Sequence
from typing import Any

from .exceptions import InvalidArgumentError
from .partial import Accumulator
from .spec import CohortSpec
from .table import CohortTable

TimeLike = dt.datetime | dt.date | str | None

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)


def time_point(value: Any, name: str) -> tuple[str, int] | None:
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


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(threads: int | None) -> int:
    """Worker threads: at most the cores this process may run on (workers meet at a spinning
    barrier many times a second, so a worker without a core of its own stalls all the others)."""
    if threads is None:
        return _available_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        raise InvalidArgumentError(f"threads must be an integer between 1 and 1024; got {threads!r}")
    return min(threads, _available_cores())


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
    signup_user: str | None = None,
    activity_user: str | None = None,
    ts_format: str | None = None,
    cost: str | None = None,
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

    Inputs as people have them: ``signup_user`` and ``activity_user`` name the user id column of the
    signups and the activity when it is not ``user``. User ids may be float32/float64 holding whole
    numbers (what pandas makes of integer ids with nulls): NaN is a null user, and any other value
    must be a whole number of magnitude at most 2**53 (2**24 for float32), else :class:`InvalidArgumentError` says how to
    keep the ids integers. Timestamps may be text: ISO-8601 by default (with an offset or ``Z``: an
    instant; without: wall-clock time in ``tz``; a date alone: its local midnight), or the
    ``strftime`` layout ``ts_format`` (for example ``"%d.%m.%Y %H:%M"``), one layout for the text
    timestamps of every table. A text that does not parse is counted under ``bad_ts`` (an error
    under ``strict=True``).

    ``cost`` names a per-order cost column of the orders (cost of goods; same dtypes as amounts): each
    cell's ``profit`` is then the exact sum of amount − cost over its orders, refunds included (a
    refund's cost is as given: the negative cost of goods that came back, or 0). A used order with a
    null or NaN cost is an :class:`InvalidArgumentError` (its profit would be unknown). A decimal
    cost may not have more decimal places than the amount; a float cost is rounded at the amount's
    scale. Without ``cost`` the ``profit`` column is null.

    ``threads`` sets the worker count, capped at the cores available to the process (results are
    identical for any value). ``progress`` is called
    as ``progress(phase, rows_done)`` from the calling thread about twice a second. ``_chunk_rows`` is
    for tests: it shrinks the engine's internal steps so chunk boundaries are exercised, and
    ``_cells_budget`` (bytes) the memory under which each worker keeps its own copy of the cohort
    grid, so that the shared grid of large grids is exercised on small data.
    """
    spec = CohortSpec(
        user=user,
        ts=ts,
        amount=amount,
        cohort="signup" if signups is not None else "first_purchase",
        signup_ts=signup_ts,
        activity_ts=activity_ts,
        signup_user=signup_user,
        activity_user=activity_user,
        ts_format=ts_format,
        cost=cost,
        by=by,
        horizon=horizon,
        period=period,
        tz=tz,
        min_amount=min_amount,
        scale=scale,
    )
    # Checked before any input is read, as every argument is.
    time_point(as_of, "as_of")
    time_point(since, "since")
    acc = Accumulator(
        spec, threads=threads_for(threads), strict=strict, progress=progress, _chunk_rows=_chunk_rows, _cells_budget=_cells_budget
    )
    acc.update(orders)
    if signups is not None:
        acc.update_signups(signups)
    if activity is not None:
        acc.update_activity(activity)
    return acc.finish().finalize(as_of=as_of, since=since)


__all__ = ["cohorts"]
