"""``CohortSpec``: every setting that changes what is accumulated, validated here and nowhere else."""

from __future__ import annotations

import dataclasses
import decimal
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from . import _core
from .exceptions import InvalidArgumentError

PERIODS = ("month", "week", "quarter", "day")
COHORT_KINDS = ("first_purchase", "signup")

#: Version of the partial's layout (rows, columns and metadata), part of every fingerprint.
PARTIAL_FORMAT_VERSION = 3


def column_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a column name (a non-empty string); got {value!r}")
    return value


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be an integer between {lo} and {hi}; got {value!r}")
    return value


def _by_names(by: str | Sequence[str] | None) -> tuple[str, ...]:
    if by is None:
        return ()
    if isinstance(by, str):
        return (column_name("by", by),)
    try:
        names = list(by)
    except TypeError:
        raise InvalidArgumentError(f"by must be a column name or a list of them; got {by!r}") from None
    names = [column_name("by", name) for name in names]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgumentError(f"by names column {name!r} twice")
    return tuple(names)


def min_amount_parts(value: Any) -> tuple[int, int]:
    """``min_amount`` as ``(mantissa, exponent)``, exactly (the engine decides in fixed point)."""
    try:
        d = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
    except (decimal.InvalidOperation, ValueError, TypeError):
        raise InvalidArgumentError(f"min_amount must be a number; got {value!r}") from None
    if isinstance(value, bool) or not d.is_finite():
        raise InvalidArgumentError(f"min_amount must be a finite number; got {value!r}")
    # Amounts are 64-bit fixed point (below 9.3e18) at a scale of at most 38: a threshold needs no more.
    if d and not -60 <= d.adjusted() <= 60:
        raise InvalidArgumentError(f"min_amount is out of range: {value!r} (amounts are below about 9.2e18)")
    sign, digits, exponent = d.normalize(decimal.Context(prec=200)).as_tuple() if d else (0, (0,), 0)
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if abs(mantissa) >= 2**127 or not isinstance(exponent, int):
        raise InvalidArgumentError(f"min_amount has too many digits: {value!r}")
    return mantissa, exponent


@dataclasses.dataclass(frozen=True)
class CohortSpec:
    """What a run accumulates: the same argument names and defaults as :func:`ltrcore.cohorts`.

    ``cohort`` is ``"first_purchase"`` (the period of each user's first paying order) or
    ``"signup"`` (the period of their earliest signup; signups must then be given). ``as_of`` and
    ``since`` are not part of it: they apply when a partial is finalized. ``activity_ts=None`` means
    ``ts``; ``signup_user=None`` and ``activity_user=None`` mean ``user``; ``by`` becomes a tuple.
    ``ts_format`` is the ``strftime`` layout of text timestamps in every table (``None``: ISO-8601).
    ``cost`` names a per-order cost column of the orders: each cell then sums its orders' profit
    (amount − cost, exactly); without it the table's ``profit`` is null.
    Two specs with the same ``fingerprint`` accumulate the same numbers from the same rows, so their
    partials can be merged. The newer settings (``signup_user``, ``activity_user``, ``ts_format``, ``cost``) enter
    the fingerprint only when they differ from their defaults, so a spec that does not use them keeps
    the fingerprint it had.
    """

    user: str = "user_id"
    ts: str = "ts"
    amount: str = "amount"
    cohort: Literal["first_purchase", "signup"] = "first_purchase"
    signup_ts: str = "signup_ts"
    activity_ts: str | None = None
    by: str | Sequence[str] | None = None
    horizon: int = 12
    period: str = "month"
    tz: str = "UTC"
    min_amount: float | int | decimal.Decimal = 0
    scale: int = 4
    signup_user: str | None = None
    activity_user: str | None = None
    ts_format: str | None = None
    cost: str | None = None

    def __post_init__(self) -> None:
        for name in ("user", "ts", "amount", "signup_ts"):
            column_name(name, getattr(self, name))
        set_ = object.__setattr__
        set_(self, "activity_ts", column_name("activity_ts", self.activity_ts or self.ts))
        set_(self, "signup_user", column_name("signup_user", self.signup_user or self.user))
        set_(self, "activity_user", column_name("activity_user", self.activity_user or self.user))
        if self.ts_format is not None and (not isinstance(self.ts_format, str) or not self.ts_format.strip()):
            raise InvalidArgumentError(f"ts_format must be a strftime layout such as '%d.%m.%Y %H:%M'; got {self.ts_format!r}")
        if self.ts_format is not None:
            _core.check_ts_format(self.ts_format)
        if self.cost is not None:
            column_name("cost", self.cost)
        set_(self, "by", _by_names(self.by))
        if self.cohort not in COHORT_KINDS:
            raise InvalidArgumentError(f"cohort must be one of {', '.join(map(repr, COHORT_KINDS))}; got {self.cohort!r}")
        check_int("horizon", self.horizon, 1, 1000)
        check_int("scale", self.scale, 0, 18)
        if self.period not in PERIODS:
            raise InvalidArgumentError(f"period must be one of {', '.join(map(repr, PERIODS))}; got {self.period!r}")
        if not isinstance(self.tz, str) or not self.tz:
            raise InvalidArgumentError(f"tz must be an IANA time zone name; got {self.tz!r}")
        _core.check_tz(self.tz)
        min_amount_parts(self.min_amount)

    @property
    def by_columns(self) -> list[str]:
        assert isinstance(self.by, tuple)
        return list(self.by)

    def settings(self) -> dict[str, Any]:
        """The settings as plain JSON values, ``min_amount`` as its exact decimal text."""
        mantissa, exponent = min_amount_parts(self.min_amount)
        values = dataclasses.asdict(self)
        values["by"] = list(self.by_columns)
        values["min_amount"] = str(decimal.Decimal(mantissa).scaleb(exponent))
        # Settings added later are left out at their defaults: existing fingerprints stay as they were.
        for name, default in (("signup_user", self.user), ("activity_user", self.user), ("ts_format", None), ("cost", None)):
            if values[name] == default:
                del values[name]
        return values

    @property
    def fingerprint(self) -> str:
        """A stable digest of the format version and every setting."""
        text = json.dumps({"format": PARTIAL_FORMAT_VERSION, **self.settings()}, sort_keys=True, separators=(",", ":"))
        return f"ltrcore-partial-v{PARTIAL_FORMAT_VERSION}:" + hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CohortSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(settings) - fields
        if unknown:
            raise InvalidArgumentError(f"unknown spec settings: {', '.join(sorted(unknown))}")
        values = dict(settings)
        if "min_amount" in values:
            values["min_amount"] = decimal.Decimal(values["min_amount"])
        return cls(**values)

    def difference(self, other: CohortSpec) -> str | None:
        """The first setting that differs, as ``"name: a vs b"``."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        mine["min_amount"], theirs["min_amount"] = (str(s.settings()["min_amount"]) for s in (self, other))
        for name in mine:
            if mine[name] != theirs[name]:
                return f"{name}: {mine[name]!r} vs {theirs[name]!r}"
        return None


__all__ = ["CohortSpec"]
