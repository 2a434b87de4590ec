"""Exceptions raised by ltrcore.

The Rust binding maps every core error onto one of these (see ``rust/python/src/errors.rs``), so callers
can catch ``ltrcore.LtrcoreError`` for anything the library raises on purpose, or the matching builtin
(``KeyError``, ``TypeError``, ``ValueError``) when they don't want to import ltrcore's names.
"""

from __future__ import annotations


class LtrcoreError(Exception):
    """Base class of every error ltrcore raises on purpose."""


class ColumnNotFoundError(LtrcoreError, KeyError):
    """A named column is missing from an input; the message lists the available columns."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DtypeError(LtrcoreError, TypeError):
    """A column has a data type ltrcore cannot read; the message names the column, dtype and accepted ones."""


class InvalidArgumentError(LtrcoreError, ValueError):
    """An argument is out of range or unknown (time zone, period, horizon, ...)."""


class BadRowsError(LtrcoreError, ValueError):
    """``strict=True`` and some rows would have been excluded for bad data."""


class LateRowsError(InvalidArgumentError):
    """A state update was refused for late rows (at or before the state's watermark), or for late
    rows that would move a user's cohort. Nothing was changed."""


class StreamError(LtrcoreError, RuntimeError):
    """An input could not be read: the stream failed part-way, a batch did not match the stream's
    schema, or a file is corrupt or not in its format (the message names the file). No partial
    result is returned."""


class InputNotFoundError(LtrcoreError, FileNotFoundError):
    """An input path, directory or glob does not exist or matches no file."""


class OutOfMemoryError(LtrcoreError, MemoryError):
    """A large allocation failed (the users' tables, the cell arrays, a buffer); nothing was returned.

    The message says what could not be allocated. Fewer threads, a coarser ``period`` or a shorter
    ``horizon`` shrink the cell arrays; see the README's "Memory" section.
    """


class InternalError(LtrcoreError, RuntimeError):
    """A bug inside ltrcore (a Rust panic was caught). Please report it with the message."""


class ExcludedRowsWarning(UserWarning):
    """Some input rows were excluded for bad data; see ``table.reconciliation``."""


class SpendIgnoredWarning(UserWarning):
    """Spend for periods before ``since`` was left out: their cohorts are not reported (tracking
    began mid-period), so there is nothing to charge it to."""
