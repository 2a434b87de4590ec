"""Type stubs for the Rust extension ``ltrcore._core`` (checked with ``mypy.stubtest``)."""

from collections.abc import Callable
from typing import Any, final

__all__ = ["compute", "_debug_panic", "CoreResult", "ArrowStream", "__version__"]

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
    def input_rows(self) -> int: ...
    @property
    def input_amount(self) -> int: ...
    @property
    def bad_rows(self) -> int: ...
    @property
    def last_complete_day(self) -> int | None: ...
    @property
    def first_usable_day(self) -> int | None: ...

def compute(
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
    horizon: int,
    period: str,
    tz: str,
    as_of: tuple[str, int] | None,
    since: tuple[str, int] | None,
    min_amount: tuple[int, int],
    scale: int,
    strict: bool,
    threads: int,
    chunk_rows: int,
    progress: Callable[[str, int], Any] | None,
    segment_ranks: Callable[[], list[int]] | None = None,
    cells_budget: int | None = None,
) -> CoreResult: ...
def _debug_panic() -> None: ...
