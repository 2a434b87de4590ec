"""ltrcore: exact, fast cohort lifetime revenue.

``ltrcore.cohorts(orders, ...)`` builds the cohort × age table; see its docstring and the README.
The same engine, piece by piece: ``CohortSpec`` → ``Accumulator`` → ``Partial`` → ``merge`` →
``Partial.finalize`` (users split over accumulators, as ``ltrcore.spark`` does inside Spark). The
monthly job: ``CohortState.build`` once, then ``update`` with each new month (``ltrcore.state``).
"""

from __future__ import annotations

from ._core import __version__
from .exceptions import (
    BadRowsError,
    ColumnNotFoundError,
    DtypeError,
    ExcludedRowsWarning,
    InputNotFoundError,
    InternalError,
    InvalidArgumentError,
    LateRowsError,
    LtrcoreError,
    OutOfMemoryError,
    SpendIgnoredWarning,
    StreamError,
)
from .front import cohorts
from .partial import Accumulator, Partial, merge
from .spec import CohortSpec
from .state import CohortState
from .table import CohortTable

__all__ = [
    "Accumulator",
    "CohortSpec",
    "CohortState",
    "Partial",
    "merge",
    "BadRowsError",
    "CohortTable",
    "ColumnNotFoundError",
    "DtypeError",
    "ExcludedRowsWarning",
    "InputNotFoundError",
    "InternalError",
    "InvalidArgumentError",
    "LateRowsError",
    "LtrcoreError",
    "OutOfMemoryError",
    "SpendIgnoredWarning",
    "StreamError",
    "__version__",
    "cohorts",
]
