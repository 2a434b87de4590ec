"""Type stubs for the Rust extension ``ltrcore._core`` (checked with ``mypy.stubtest``)."""

from collections.abc import Callable
from typing import Any, final

__all__ = ["accumulate", "check_tz", "_debug_panic", "CoreResult", "CorePartial", "ArrowStream", "__version__"]

__version__: str

@final
class ArrowStream:
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

@final
class CoreResult:
    def cells(self) -> ArrowStream: ...
    def cohorts(self) -> ArrowStream: ...
    def reconciliation(self, table: str) -> ArrowStream | None: ...
    @property
    def horizon(self) -> int: ...
    @property
    def scale(self) -> int: ...
    @property
    def has_activity(self) -> bool: ...
    @property
    def has_profit(self) -> bool: ...
    @property
    def input_rows(self) -> int: ...
    @property
    def input_amount(self) -> int: ...
    @property
    def bad_rows(self) -> int: ...
    @property
    def last_complete_day(self) -> int | None: ...
    @property
    def first_usable_day(self) -> int | None: ...

@final
class CorePartial:
    @staticmethod
    def empty(horizon: int, signup: bool) -> CorePartial: ...
    @staticmethod
    def from_arrow(data: Any, horizon: int, signup: bool, period: str) -> CorePartial: ...
    @staticmethod
    def merge(parts: list[CorePartial]) -> CorePartial: ...
    def recode(self, codes: list[int]) -> CorePartial: ...
    def to_arrow(self) -> ArrowStream: ...
    def finalize(
        self, *, period: str, tz: str, as_of: tuple[str, int] | None, since: tuple[str, int] | None, profit: bool = False
    ) -> CoreResult: ...
    def segment_codes(self) -> list[int]: ...
    @property
    def horizon(self) -> int: ...
    @property
    def scale(self) -> int: ...
    @property
    def signup(self) -> bool: ...
    @property
    def has_activity(self) -> bool: ...
    @property
    def cohort_groups(self) -> int: ...
    @property
    def input_rows(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class CoreState:
    @staticmethod
    def empty(horizon: int, signup: bool) -> CoreState: ...
    @staticmethod
    def from_parts(partial: CorePartial, watermark: int | None, family: str, users: Any, waiting: Any) -> CoreState: ...
    def update(
        self,
        *,
        orders: Callable[[], Any] | None,
        signups: Callable[[], Any] | None,
        activity: Callable[[], Any] | None,
        user: str,
        ts: str,
        amount: str,
        segment: str | None,
        signup_ts: str,
        activity_ts: str,
        signup_user: str,
        activity_user: str,
        ts_format: str | None,
        cost: str | None,
        period: str,
        tz: str,
        min_amount: tuple[int, int],
        scale: int,
        strict: bool,
        late: str,
        through: tuple[str, int] | None,
        threads: int,
        progress: Callable[[str, int], Any] | None,
        segment_ranks: Callable[[], list[int]] | None = None,
    ) -> CoreState: ...
    def users_arrow(self) -> ArrowStream: ...
    def waiting_arrow(self) -> ArrowStream: ...
    @property
    def partial(self) -> CorePartial: ...
    @property
    def watermark(self) -> int | None: ...
    @property
    def family(self) -> str: ...
    @property
    def users(self) -> int: ...
    @property
    def waiting_rows(self) -> int: ...
    def segment_codes(self) -> list[int]: ...
    def recode(self, codes: list[int]) -> CoreState: ...
    @staticmethod
    def period_label(period: str, value: int) -> str: ...
    def __eq__(self, value: object, /) -> bool: ...

def accumulate(
    *,
    orders: Callable[[], Any],
    orders_reopenable: bool,
    orders_in_memory: bool,
    user: str,
    ts: str,
    amount: str,
    segment: str | None,
    signups: Callable[[], Any] | None,
    signup_ts: str,
    activity: Callable[[], Any] | None,
    activity_ts: str,
    signup_user: str,
    activity_user: str,
    ts_format: str | None,
    cost: str | None,
    horizon: int,
    period: str,
    tz: str,
    min_amount: tuple[int, int],
    scale: int,
    strict: bool,
    threads: int,
    chunk_rows: int,
    progress: Callable[[str, int], Any] | None,
    segment_ranks: Callable[[], list[int]] | None = None,
    cells_budget: int | None = None,
) -> CorePartial: ...
def check_tz(tz: str) -> None: ...
def check_ts_format(format: str) -> None: ...

STATE_FORMAT_VERSION: int
def _debug_panic() -> None: ...
