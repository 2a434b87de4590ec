"""The mergeable partial state: ``Accumulator`` → ``Partial`` → ``merge`` → ``Partial.finalize``.

A :class:`Partial` is what the engine accumulates over a slice of the data whose users appear in no
other slice: cohort × age cells, cohort sizes, the histograms of the ages at which members first pay
and first repeat, the reconciliation tallies and the last order's period. Partials of disjoint users
merge by addition; ``finalize`` then applies ``as_of`` and ``since``. ``ltrcore.cohorts()`` is one
accumulator over all the data, finalized at once.

The Arrow layout (``Partial.to_arrow``) is long and fixed: one row per key, where a key is
``record`` (``cell``, ``reason`` or ``read``), ``table``, ``reason``, one ``by_<name>`` column per
segment column (the values, never codes), ``cohort`` (the absolute period number: months since
1970-01 for months, and so on) and ``age``. Measures are exact: money is ``decimal128(38, scale)``,
counts ``int64``, so that any engine can merge partials by summing every measure per key
(``last_period`` by maximum). The schema's metadata holds the layout version, the spec and its
fingerprint.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .adapters import SEGMENT_CODE, SegmentCoder, Source, chain, check_pieces, read_whole, resolve
from .exceptions import ColumnNotFoundError, ExcludedRowsWarning, InvalidArgumentError
from .spec import PARTIAL_FORMAT_VERSION, CohortSpec, check_int, min_amount_parts
from .table import CohortTable

# Rows decoded per parallel step (a few MB of scratch per worker).
DEFAULT_CHUNK_ROWS = 1 << 17

META_FORMAT = b"ltrcore.partial"
META_SPEC = b"ltrcore.spec"
META_FINGERPRINT = b"ltrcore.fingerprint"
BY_PREFIX = "by_"


class Partial:
    """The partial state of a slice of users under one :class:`CohortSpec`.

    ``finalize(as_of, since)`` gives the same :class:`CohortTable` as :func:`ltrcore.cohorts` over
    the same rows. ``to_arrow()`` / ``Partial.from_arrow()`` round-trip it exactly. Pickling goes
    through the Arrow layout.
    """

    def __init__(self, spec: CohortSpec, core: _core.CorePartial, segments: pl.DataFrame | None):
        self.spec = spec
        self._core = core
        #: With ``by``: the segment values of each code (``by`` columns plus the code column).
        if segments is None and spec.by_columns:
            segments = pl.DataFrame({**{b: [] for b in spec.by_columns}, SEGMENT_CODE: pl.Series([], dtype=pl.UInt32)})
        self._segments = segments

    @classmethod
    def empty(cls, spec: CohortSpec) -> Partial:
        """The partial of no rows: ``merge([p, Partial.empty(spec)])`` equals ``p``."""
        return cls(spec, _core.CorePartial.empty(spec.horizon, spec.cohort == "signup"), None)

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    @property
    def scale(self) -> int:
        """Decimal places of the exact amounts."""
        return int(self._core.scale)

    @property
    def input_rows(self) -> int:
        """Order rows read."""
        return int(self._core.input_rows)

    def __repr__(self) -> str:
        return (
            f"<ltrcore.Partial {self.spec.cohort} cohorts, {self._core.cohort_groups} cohort group(s), "
            f"{self.input_rows} order rows, fingerprint {self.fingerprint}>"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partial):
            return NotImplemented
        return self.fingerprint == other.fingerprint and _canonical(self.to_arrow()).equals(_canonical(other.to_arrow()))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Partial.from_arrow, (self.to_arrow(),))

    # ---------------------------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        """The long layout (see the module docstring), with the spec in the schema's metadata."""
        table = pa.table(self._core.to_arrow())
        codes = table.column("segment")
        table = table.drop_columns(["segment"])
        position = table.schema.get_field_index("cohort")
        for name, values in reversed(list(self._segment_values(codes).items())):
            table = table.add_column(position, BY_PREFIX + name, values)
        return table.replace_schema_metadata(_metadata(self.spec))

    def _segment_values(self, codes: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
        by = self.spec.by_columns
        if not by:
            return {}
        assert self._segments is not None
        dictionary = self._segments.sort(SEGMENT_CODE).to_arrow()
        return {name: dictionary.column(name).take(codes) for name in by}

    @classmethod
    def from_arrow(cls, data: Any, *, spec: CohortSpec | None = None) -> Partial:
        """Reads a partial back from its Arrow layout (any object with ``__arrow_c_stream__``; a
        Spark or DuckDB result converted to Arrow keeps the metadata only if it was carried over:
        see ``ltrcore.spark``). Rows that share a key are added together, so the concatenation of
        several partials' tables reads as their merge. Refuses, with :class:`InvalidArgumentError`,
        a table that is not a partial, one of another layout version, and numbers no accumulator
        can produce. ``spec`` is for tables whose engine dropped the schema metadata (Spark): the
        table is then read as a partial of that spec."""
        table = data if isinstance(data, pa.Table) else pa.table(data)
        metadata = table.schema.metadata or {}
        if spec is not None and META_FORMAT not in metadata:
            # From an engine that keeps no schema metadata (Spark): the caller vouches for the spec.
            table = table.replace_schema_metadata(_metadata(spec))
        found = _spec_of(table.schema.metadata)
        if spec is not None and found.fingerprint != spec.fingerprint:
            raise InvalidArgumentError(
                f"this partial was made under another spec than the one given: they differ in {spec.difference(found)}"
            )
        spec = found
        by = spec.by_columns
        names = table.column_names
        missing = [BY_PREFIX + b for b in by if BY_PREFIX + b not in names]
        if missing:
            raise InvalidArgumentError(f"not a valid ltrcore partial: no column {missing[0]!r} for its by setting")
        is_cell = pc.fill_null(pc.equal(table.column("record"), "cell"), False) if "record" in names else None
        segments: pl.DataFrame | None = None
        if is_cell is not None:
            # Every row is coded (no filter: pyarrow filters not every dtype), and only cell rows keep
            # their code; the other rows' all-null values at most add an unused dictionary entry.
            if by:
                coder = SegmentCoder(by)
                keys = table.select([BY_PREFIX + b for b in by]).rename_columns(by)
                codes = coder.codes(coder.keys(keys)).cast(pa.uint32())
                segments = coder.dictionary()
            else:
                codes = pa.array([0] * table.num_rows, pa.uint32())
            table = table.append_column("segment", pc.if_else(is_cell, codes, pa.nulls(table.num_rows, pa.uint32())))
        table = _layout_types(table.drop_columns([BY_PREFIX + b for b in by]))
        core = _core.CorePartial.from_arrow(table, spec.horizon, spec.cohort == "signup", spec.period)
        return cls(spec, core, segments)

    # ---------------------------------------------------------------------------------------------
    def finalize(self, as_of: Any = None, since: Any = None) -> CohortTable:
        """The cohort table at ``as_of`` and ``since`` (see :func:`ltrcore.cohorts`)."""
        from .front import time_point

        spec = self.spec
        core = self._core.finalize(
            period=spec.period,
            tz=spec.tz,
            as_of=time_point(as_of, "as_of"),
            since=time_point(since, "since"),
            profit=spec.cost is not None,
        )
        table = CohortTable(
            core,
            by=spec.by_columns,
            segments=self._segments if spec.by_columns else None,
            period=spec.period,
            tz=spec.tz,
            as_of=as_of,
            since=since,
            min_amount=spec.min_amount,
        )
        if core.bad_rows:
            warnings.warn(
                ExcludedRowsWarning(
                    f"{core.bad_rows} input row(s) were excluded for bad data (nulls, NaN/inf amounts, timestamps that do not parse); "
                    "see table.reconciliation, or pass strict=True to raise instead"
                ),
                stacklevel=3,
            )
        return table


#: The layout's measures: exact money, and counts.
MONEY_COLUMNS = ("amount", "gross", "refunds", "payments", "profit")
COUNT_COLUMNS = ("members", "rows", "orders", "payers", "activity_rows", "active", "first_paid", "first_repeat", "retained")
_INT32 = ("cohort", "age", "last_period")
_TEXT = ("record", "table", "reason")


def _layout_types(table: pa.Table) -> pa.Table:
    """The layout's own dtypes, from what another engine may have made of them: other string
    flavours, other integer widths, decimals of another precision (a concatenation of two scales is
    decimal256). Casts are safe: a value that does not fit is an error, never changed."""
    fields = []
    for field in table.schema:
        t, name = field.type, field.name
        if name in MONEY_COLUMNS and (pa.types.is_decimal(t) or pa.types.is_integer(t)):
            t = pa.decimal128(38, t.scale if pa.types.is_decimal(t) else 0)
        elif name in _INT32 and pa.types.is_integer(t):
            t = pa.int32()
        elif name in _TEXT and (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
            t = pa.string()
        elif pa.types.is_integer(t) and name not in ("segment",):
            t = pa.int64()
        fields.append(pa.field(name, t, field.nullable))
    try:
        return table.cast(pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise InvalidArgumentError(f"not a valid ltrcore partial: {err}") from None


def _canonical(table: pa.Table) -> pa.Table:
    """Rows in key order, for comparing two layouts."""
    keys = [name for name in table.column_names if name in ("record", "table", "reason", "cohort", "age") or name.startswith(BY_PREFIX)]
    sortable = table.replace_schema_metadata(None)
    for i, field in enumerate(sortable.schema):  # pyarrow sorts neither dictionaries nor string views
        if pa.types.is_dictionary(field.type) or pa.types.is_string_view(field.type):
            value_type = field.type.value_type if pa.types.is_dictionary(field.type) else pa.string()
            sortable = sortable.set_column(i, field.name, sortable.column(i).cast(value_type))
    return sortable.sort_by([(k, "ascending") for k in keys]).combine_chunks()


def _metadata(spec: CohortSpec) -> dict[bytes, bytes]:
    return {
        META_FORMAT: str(PARTIAL_FORMAT_VERSION).encode(),
        META_SPEC: json.dumps(spec.settings(), sort_keys=True).encode(),
        META_FINGERPRINT: spec.fingerprint.encode(),
    }


def _spec_of(metadata: dict[bytes, bytes] | None) -> CohortSpec:
    metadata = metadata or {}
    if META_FORMAT not in metadata:
        raise InvalidArgumentError(
            "not an ltrcore partial: the table's schema has no ltrcore.partial metadata "
            "(make one with Partial.to_arrow(), and keep its schema metadata)"
        )
    version = metadata[META_FORMAT].decode(errors="replace")
    if version != str(PARTIAL_FORMAT_VERSION):
        raise InvalidArgumentError(
            f"this partial has layout version {version}; this ltrcore reads version {PARTIAL_FORMAT_VERSION}"
        )
    try:
        spec = CohortSpec.from_settings(json.loads(metadata[META_SPEC]))
    except (KeyError, ValueError, TypeError) as err:
        raise InvalidArgumentError(f"not a valid ltrcore partial: its spec metadata is unreadable ({err})") from None
    fingerprint = metadata.get(META_FINGERPRINT, b"").decode(errors="replace")
    if fingerprint != spec.fingerprint:
        raise InvalidArgumentError(
            f"not a valid ltrcore partial: its fingerprint {fingerprint!r} does not match its spec ({spec.fingerprint!r})"
        )
    return spec


def merge(partials: Iterable[Partial]) -> Partial:
    """Adds partials of disjoint users. Associative and commutative; ``Partial.empty(spec)`` is the
    identity. Partials of different specs are refused, naming the first setting that differs.
    Amounts at different scales (a decimal(12,2) column in one slice, decimal(12,3) in another)
    are added exactly at the larger scale."""
    parts = list(partials)
    if not parts:
        raise InvalidArgumentError("merge needs at least one partial")
    for k, p in enumerate(parts):
        if not isinstance(p, Partial):
            raise InvalidArgumentError(
                f"merge: item {k} is a {type(p).__name__}, not an ltrcore.Partial (read tables with Partial.from_arrow)"
            )
    spec = parts[0].spec
    for k, p in enumerate(parts[1:], start=1):
        if p.fingerprint != spec.fingerprint:
            diff = spec.difference(p.spec) or "the format version"
            raise InvalidArgumentError(f"cannot merge partials of different specs: partial 0 and partial {k} differ in {diff}")
    by = spec.by_columns
    if not by:
        return Partial(spec, _core.CorePartial.merge([p._core for p in parts]), None)
    # Re-code every partial's segments to one dictionary, then add.
    coder = SegmentCoder(by)
    cores = []
    for p in parts:
        if p._core.cohort_groups == 0:  # no codes to move
            cores.append(p._core)
            continue
        assert p._segments is not None and p._segments.height > 0, "a partial with cohorts has their segment values"
        dictionary = p._segments.sort(SEGMENT_CODE)
        try:
            new_codes = coder.codes(dictionary.select(by)).to_pylist()
        except pl.exceptions.PolarsError as err:
            raise InvalidArgumentError(f"cannot merge: the segment columns' dtypes differ between partials ({err})") from None
        mapping = [0] * (max(dictionary.get_column(SEGMENT_CODE).to_list()) + 1)
        for code, new in zip(dictionary.get_column(SEGMENT_CODE).to_list(), new_codes):
            mapping[code] = new
        cores.append(p._core.recode(mapping))
    if coder.known is None:  # no cohorts anywhere: keep the segment dtypes some slice knew
        typed = [p._segments for p in parts if p._segments is not None and not all(t == pl.Null for t in p._segments.select(by).dtypes)]
        return Partial(spec, _core.CorePartial.merge(cores), typed[0] if typed else None)
    return Partial(spec, _core.CorePartial.merge(cores), coder.dictionary())


class Accumulator:
    """Takes the rows of a slice of users piece by piece and gives their :class:`Partial`.

    ``update(orders)``, ``update_signups(signups)`` and ``update_activity(activity)`` take anything
    :func:`ltrcore.cohorts` takes, in pieces of any size, in any order; ``finish()`` runs the engine.
    Every row of a user must reach the same accumulator (see :func:`merge`).

    What it holds until ``finish()``: record batches and in-memory tables are kept by reference
    (no copy; with many pieces they are read as one table), file paths and re-readable sources as
    they are (read at ``finish()``), and one-shot streams (readers, iterators) until ``finish()``
    reads them. First-purchase cohorts need each user's earliest paying order before any order can
    be attributed, so the engine reads the orders twice (a one-shot stream is buffered by the engine
    between the two readings). Signups are read whole at ``update_signups`` (one row per user).
    """

    def __init__(
        self,
        spec: CohortSpec,
        *,
        threads: int = 1,
        strict: bool = False,
        progress: Callable[[str, int], Any] | None = None,
        _chunk_rows: int | None = None,
        _cells_budget: int | None = None,
    ):
        from .front import threads_for

        if not isinstance(spec, CohortSpec):
            raise InvalidArgumentError(f"Accumulator needs a CohortSpec; got {type(spec).__name__}")
        if progress is not None and not callable(progress):
            raise InvalidArgumentError("progress must be callable as progress(phase, rows_done)")
        self.spec = spec
        self._threads = threads_for(threads)
        self._strict = bool(strict)
        self._progress = progress
        self._chunk_rows = DEFAULT_CHUNK_ROWS if _chunk_rows is None else check_int("_chunk_rows", _chunk_rows, 1, 1 << 24)
        self._cells_budget = None if _cells_budget is None else check_int("_cells_budget", _cells_budget, 0, 1 << 62)
        self._orders: list[Any] = []
        self._signups: list[pa.Table] = []
        self._activity: list[Any] = []
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise InvalidArgumentError("this Accumulator has finished; start a new one")

    def update(self, orders: Any) -> Accumulator:
        """Adds a piece of the orders."""
        self._check_open()
        spec = self.spec
        columns = [spec.user, spec.ts, spec.amount, *_cost(spec)]
        if spec.by_columns and spec.cohort == "first_purchase":
            columns += spec.by_columns
        self._orders.append(_piece(orders, columns, "orders"))
        return self

    def update_signups(self, signups: Any) -> Accumulator:
        """Adds a piece of the signups (signup cohorts only)."""
        self._check_open()
        spec = self.spec
        if spec.cohort != "signup":
            raise InvalidArgumentError("signups were given, but the spec has cohort='first_purchase'; use cohort='signup'")
        self._signups.append(read_whole(signups, [str(spec.signup_user), spec.signup_ts, *spec.by_columns], table="signups"))
        return self

    def update_activity(self, activity: Any) -> Accumulator:
        """Adds a piece of the activity (logins, sessions)."""
        self._check_open()
        spec = self.spec
        self._activity.append(_piece(activity, [str(spec.activity_user), str(spec.activity_ts)], "activity"))
        return self

    def finish(self) -> Partial:
        """Runs the engine over every piece and returns the partial. An accumulator that was given
        nothing gives ``Partial.empty(spec)``."""
        self._check_open()
        self._finished = True
        spec = self.spec
        if not (self._orders or self._signups or self._activity):
            return Partial.empty(spec)
        if spec.cohort == "signup" and not self._signups:
            # A slice whose users never signed up (their orders are unknown users): no signup rows.
            if self._orders:
                user_type = _user_type(self._orders, spec.user)
            else:
                user_type = _user_type(self._activity, str(spec.activity_user))
            self._signups.append(
                pa.table(
                    {
                        str(spec.signup_user): pa.array([], user_type),
                        spec.signup_ts: pa.array([], pa.timestamp("us", "UTC")),
                        **{b: pa.array([], pa.null()) for b in spec.by_columns},
                    }
                )
            )
        by = spec.by_columns
        coder = SegmentCoder(by, threads=self._threads) if by else None
        signup_source: Source | None = None
        if self._signups:
            signups = _concat(self._signups, "signups")
            if coder is not None:
                missing = [c for c in by if c not in signups.column_names]
                if missing:
                    raise ColumnNotFoundError(
                        f"column {missing[0]!r} not found in signups; available columns: "
                        + ", ".join(map(repr, signups.column_names))
                    )
                signups = coder.encode(signups)
            signup_source = Source(lambda: signups, reopenable=False, in_memory=True)
        orders_source = self._orders_source(signup_source)
        if coder is not None and signup_source is None:
            orders_source = coder.wrap(orders_source, [spec.user, spec.ts, spec.amount, *_cost(spec)], table="orders")
        activity_source = _source_of(self._activity, "activity") if self._activity else None
        self._orders, self._signups, self._activity = [], [], []

        core = _core.accumulate(
            orders=orders_source.open,
            orders_reopenable=orders_source.reopenable,
            orders_in_memory=orders_source.in_memory,
            user=spec.user,
            ts=spec.ts,
            amount=spec.amount,
            segment=SEGMENT_CODE if by else None,
            signups=signup_source.open if signup_source else None,
            signup_ts=spec.signup_ts,
            activity=activity_source.open if activity_source else None,
            activity_ts=str(spec.activity_ts),
            signup_user=str(spec.signup_user),
            activity_user=str(spec.activity_user),
            ts_format=spec.ts_format,
            cost=spec.cost,
            horizon=spec.horizon,
            period=spec.period,
            tz=spec.tz,
            min_amount=min_amount_parts(spec.min_amount),
            scale=spec.scale,
            strict=self._strict,
            threads=self._threads,
            chunk_rows=self._chunk_rows,
            progress=self._progress,
            segment_ranks=coder.ranks if coder is not None else None,
            cells_budget=self._cells_budget,
        )
        return Partial(spec, core, coder.dictionary() if coder is not None else None)

    def _orders_source(self, signups: Source | None) -> Source:
        if self._orders:
            return _source_of(self._orders, "orders")
        # Signups or activity without orders (a slice of users who never ordered): no order rows, in
        # the user id's dtype so the engine can match the others.
        spec = self.spec
        if signups is not None:
            user_type = _user_type([signups.open()], str(spec.signup_user))
        else:
            user_type = _user_type(self._activity, str(spec.activity_user))
        columns = {spec.user: pa.array([], user_type), spec.ts: pa.array([], pa.timestamp("us", "UTC"))}
        columns.update({name: pa.array([], pa.int64()) for name in [spec.amount, *_cost(spec)]})
        if signups is None:  # the segments come from the orders
            columns.update({b: pa.array([], pa.null()) for b in spec.by_columns})
        empty = pa.table(columns)
        return Source(lambda: empty, reopenable=True, in_memory=True)


def _cost(spec: CohortSpec) -> list[str]:
    """The orders' cost column, if the spec has one."""
    return [spec.cost] if spec.cost is not None else []


def _user_type(pieces: list[Any], user: str) -> pa.DataType:
    """The user id's dtype in the first piece that shows it without being read (int64 otherwise)."""
    for piece in pieces:
        if isinstance(piece, (pa.RecordBatch, pa.Table)) and user in piece.schema.names:
            return piece.schema.field(user).type
    return pa.int64()


def _piece(data: Any, columns: Sequence[str], table: str) -> Any:
    """What an accumulator keeps of one piece: record batches and tables as they are (read as one
    table at the end), anything else as a source."""
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        return data
    return resolve(data, columns, table=table)


def _source_of(pieces: list[Any], table: str) -> Source:
    if all(isinstance(p, (pa.RecordBatch, pa.Table)) for p in pieces):
        whole = _concat(pieces, table)
        return Source(lambda: whole, reopenable=True, in_memory=True)
    return chain([p if isinstance(p, Source) else _held(p) for p in pieces], table=table)


def _held(data: pa.RecordBatch | pa.Table) -> Source:
    whole = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    return Source(lambda: whole, reopenable=True, in_memory=True)


def _concat(pieces: Sequence[pa.RecordBatch | pa.Table], table: str) -> pa.Table:
    tables = [pa.Table.from_batches([p]) if isinstance(p, pa.RecordBatch) else p for p in pieces]
    check_pieces([t.schema for t in tables], table=table)
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) if len(tables) > 1 else tables[0]


__all__ = ["Accumulator", "Partial", "merge"]
