"""ltrcore: exact, fast cohort lifetime revenue.

``ltrcore.cohorts(orders, ...)`` builds the cohort × age table; see its docstring and the README.
The same engine, piece by piece: ``CohortSpec`` → ``Accumulator`` → ``Partial`` → ``merge`` →
``Partial.finalize`` (users split over accumulators, as ``ltrcore.spark`` does inside Spark).
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
    LtrcoreError,
    OutOfMemoryError,
    StreamError,
)
from .front import cohorts
from .partial import Accumulator, Partial, merge
from .spec import CohortSpec
from .table import CohortTable

__all__ = [
    "Accumulator",
    "CohortSpec",
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
    "LtrcoreError",
    "OutOfMemoryError",
    "StreamError",
    "__version__",
    "cohorts",
]
