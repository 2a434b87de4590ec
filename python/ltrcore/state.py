"""The monthly state: ``CohortState.build`` once, then ``update`` with each new month.

A :class:`CohortState` keeps what later months need to know about every user: the cohort, the
segment, and three bitsets of ages (paid, paid twice in one age, active); the rows still waiting for
their user (orders of users who have not paid yet, orders and activity of users who have not signed
up yet), which move when that user first pays or signs up; the aggregate :class:`~ltrcore.Partial`;
and the **watermark**, the last period ingested. ``update`` reads only the new rows, and
``table()`` is exactly :func:`ltrcore.cohorts` over everything ingested so far.

An update is all or nothing: the new state is built beside the old one and replaces it only when
the whole update succeeded. Rows at or before the watermark are *late*: refused by default (the
error counts them and shows the first), or with ``late="apply"`` applied where they cannot move a
user's cohort (a refund, a repeat order or a login in an old month, and the first rows of a user
the state has never placed in a cohort). A late row that would move a cohort (an earlier first
purchase or signup, or the same period with another segment) refuses the update, naming the users.

The file (``save``/``load``) is one parquet file, one row per user (see ``STATE_LAYOUT`` in the
README): rows with ``record`` = ``user``, ``waiting``, ``segment`` (the segment dictionary) and the
partial's own long layout (``cell``, ``reason``, ``read``). Saving is atomic: a temporary file in the
same directory, fsync, rename over the old file, fsync of the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import _core
from .adapters import SEGMENT_CODE, SegmentCoder, read_whole
from .exceptions import ColumnNotFoundError, InvalidArgumentError
from .partial import COUNT_COLUMNS, MONEY_COLUMNS, Partial, _cost, _piece, _source_of
from .spec import CohortSpec, min_amount_parts
from .table import CohortTable

#: Version of the state file's layout (the core's); a file of another version is refused.
STATE_FORMAT_VERSION: int = _core.STATE_FORMAT_VERSION

META_STATE = b"ltrcore.state"
META_SPEC = b"ltrcore.spec"
META_FINGERPRINT = b"ltrcore.fingerprint"
META_INFO = b"ltrcore.state.info"
META_DIGEST = b"ltrcore.state.digest"

#: Rows per row group when saving (each kind of record has row groups of its own).
ROW_GROUP_ROWS = 1 << 17

_LATE = ("refuse", "apply")


class CohortState:
    """Per-user facts, waiting rows, the aggregate partial and the watermark (see the module
    docstring). Make one with :meth:`build` (or :meth:`empty`), read one with :meth:`load`."""

    def __init__(self, spec: CohortSpec, core: _core.CoreState, segments: pl.DataFrame | None):
        self.spec = spec
        self._core = core
        #: With ``by``: the segment values of each code (``by`` columns plus the code column).
        self._segments = segments

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls, spec: CohortSpec) -> CohortState:
        """The state of no rows."""
        if not isinstance(spec, CohortSpec):
            raise InvalidArgumentError(f"CohortState needs a CohortSpec; got {type(spec).__name__}")
        return cls(spec, _core.CoreState.empty(spec.horizon, spec.cohort == "signup"), None)

    @classmethod
    def build(
        cls,
        spec: CohortSpec,
        orders: Any,
        signups: Any = None,
        activity: Any = None,
        *,
        through: Any = None,
        strict: bool = False,
        threads: int | None = None,
        progress: Callable[[str, int], Any] | None = None,
    ) -> CohortState:
        """The state of ``orders`` (and ``signups``, ``activity``), with the watermark at the last
        period of their rows, or at ``through`` (a date in the last period the data covers).

        Building reads the rows once and keeps about 32 bytes per row while it sorts them by user;
        a history too large for that can be built month by month (``build`` the first, ``update``
        with the others): the result is the same."""
        return cls.empty(spec).update(orders, signups, activity, through=through, strict=strict, threads=threads, progress=progress)

    # ---------------------------------------------------------------------------------------------
    @property
    def watermark(self) -> str | None:
        """The first day (``YYYY-MM-DD``) of the last period ingested, or None for an empty state."""
        w = self._core.watermark
        return None if w is None else _core.CoreState.period_label(self.spec.period, w)

    @property
    def users(self) -> int:
        """Users with a cohort."""
        return int(self._core.users)

    @property
    def waiting_rows(self) -> int:
        """Rows waiting for their user to sign up or first pay."""
        return int(self._core.waiting_rows)

    @property
    def partial(self) -> Partial:
        """The aggregate partial (mergeable with the partials of other users)."""
        return Partial(self.spec, self._core.partial, self._segments if self.spec.by_columns else None)

    def __repr__(self) -> str:
        return (
            f"<ltrcore.CohortState {self.spec.cohort} cohorts, {self.users:,} users, {self.waiting_rows:,} waiting rows, "
            f"watermark {self.watermark}>"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CohortState):
            return NotImplemented
        if self.spec.fingerprint != other.spec.fingerprint or self._core.watermark != other._core.watermark:
            return False
        return _canonical_state(self) == _canonical_state(other)

    __hash__ = None  # type: ignore[assignment]

    # ---------------------------------------------------------------------------------------------
    def update(
        self,
        orders: Any = None,
        signups: Any = None,
        activity: Any = None,
        *,
        late: str = "refuse",
        through: Any = None,
        strict: bool = False,
        threads: int | None = None,
        progress: Callable[[str, int], Any] | None = None,
    ) -> CohortState:
        """Adds the rows after the watermark (one month or several) and returns this state.

        ``late``: ``"refuse"`` (default) refuses the whole update when any row falls at or before
        the watermark; ``"apply"`` applies such rows exactly where they change no user's cohort.
        ``through`` moves the watermark to the period holding that date (rows after it are refused);
        by default it moves to the last period of the new rows. ``threads``, ``strict`` and
        ``progress`` are as for :func:`ltrcore.cohorts`. On any error (Ctrl-C included) the state
        is left as it was."""
        from .front import threads_for, time_point

        spec = self.spec
        if late not in _LATE:
            raise InvalidArgumentError(f"late must be 'refuse' or 'apply'; got {late!r}")
        if progress is not None and not callable(progress):
            raise InvalidArgumentError("progress must be callable as progress(phase, rows_done)")
        if signups is not None and spec.cohort != "signup":
            raise InvalidArgumentError("signups were given, but the state has cohort='first_purchase'")
        if orders is None and signups is None and activity is None:
            raise InvalidArgumentError("update needs orders, signups or activity")
        through_point = time_point(through, "through")
        workers = threads_for(threads)
        by = spec.by_columns
        coder = _coder(by, self._segments, workers)
        orders_source = signup_source = activity_source = None
        if signups is not None:
            table = read_whole(signups, [str(spec.signup_user), spec.signup_ts, *by], table="signups")
            if coder is not None:
                missing = [c for c in by if c not in table.column_names]
                if missing:
                    raise ColumnNotFoundError(
                        f"column {missing[0]!r} not found in signups; available columns: " + ", ".join(map(repr, table.column_names))
                    )
                table = coder.encode(table)
            signup_source = table
        if orders is not None:
            columns = [spec.user, spec.ts, spec.amount, *_cost(spec)]
            if by and spec.cohort == "first_purchase":
                columns += list(by)
            source = _source_of([_piece(orders, columns, "orders")], "orders")
            if coder is not None and spec.cohort == "first_purchase":
                source = coder.wrap(source, [spec.user, spec.ts, spec.amount, *_cost(spec)], table="orders")
            orders_source = source.open
        if activity is not None:
            activity_source = _source_of([_piece(activity, [str(spec.activity_user), str(spec.activity_ts)], "activity")], "activity").open
        core = self._core.update(
            orders=orders_source,
            signups=(lambda: signup_source) if signup_source is not None else None,
            activity=activity_source,
            user=spec.user,
            ts=spec.ts,
            amount=spec.amount,
            segment=SEGMENT_CODE if by else None,
            signup_ts=spec.signup_ts,
            activity_ts=str(spec.activity_ts),
            signup_user=str(spec.signup_user),
            activity_user=str(spec.activity_user),
            ts_format=spec.ts_format,
            cost=spec.cost,
            period=spec.period,
            tz=spec.tz,
            min_amount=min_amount_parts(spec.min_amount),
            scale=spec.scale,
            strict=bool(strict),
            late=late,
            through=through_point,
            threads=workers,
            progress=progress,
            segment_ranks=coder.ranks if coder is not None else None,
        )
        self._core = core
        if coder is not None:
            self._segments = coder.dictionary()
        return self

    def table(self, as_of: Any = None, since: Any = None) -> CohortTable:
        """The cohort table of everything ingested so far: equal to :func:`ltrcore.cohorts` over
        the same rows, every column and the reconciliations included."""
        return self.partial.finalize(as_of=as_of, since=since)

    # ---------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the state to one parquet file, atomically: the previous file at ``path`` stays
        readable until the new one is complete and synced."""
        target = Path(path)
        directory = target.parent if str(target.parent) else Path(".")
        parts = self._parts()
        schema = _file_schema(parts)
        groups: dict[str, list[int]] = {}
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                info = {
                    "watermark": self._core.watermark,
                    "family": self._core.family,
                    "rows": {name: part.num_rows for name, part in parts.items()},
                }
                written = 0
                # The row groups each kind of record takes, known before writing: in the metadata.
                for name, part in parts.items():
                    n = max(1, -(-part.num_rows // ROW_GROUP_ROWS)) if part.num_rows else 0
                    groups[name] = [written, written + n]
                    written += n
                info["row_groups"] = groups
                metadata = _metadata(self.spec, info)
                # Dictionaries only where values repeat: user ids never do, and trying costs a third
                # of the write time (and makes the file larger).
                with pq.ParquetWriter(
                    f,
                    schema.with_metadata(metadata),
                    compression="zstd",
                    write_page_checksum=True,
                    write_statistics=["record"],
                    use_dictionary=["record", "table", "reason"],
                ) as writer:
                    for name, part in parts.items():
                        for start in range(0, part.num_rows, ROW_GROUP_ROWS):
                            piece = part.slice(start, ROW_GROUP_ROWS)
                            writer.write_table(_widen(piece, name, schema), row_group_size=ROW_GROUP_ROWS)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CohortState:
        """Reads a state saved by :meth:`save`. Refuses, with :class:`InvalidArgumentError` naming the
        file, a file that is not a readable parquet file (truncated, corrupted), one that is not an
        ltrcore state, one of another format version, and one whose numbers do not add up."""
        name = os.fspath(path)
        try:
            return _load(name)
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{name}: {err}") from None
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
            if isinstance(err, FileNotFoundError):
                raise InvalidArgumentError(f"{name}: no such file") from None
            raise InvalidArgumentError(f"{name}: not a readable ltrcore state (corrupted or truncated): {err}") from None

    # ---------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, pa.Table]:
        """The state's tables: the partial's long layout (with codes), the segment dictionary, the
        users and the waiting rows, each with its ``record`` column."""
        partial = pa.table(self._core.partial.to_arrow())
        users = pa.table(self._core.users_arrow())
        waiting = pa.table(self._core.waiting_arrow())
        parts = {"partial": partial}
        if self.spec.by_columns:
            coder = _coder(self.spec.by_columns, None)
            assert coder is not None
            seg = self._segments if self._segments is not None else coder.dictionary()
            dictionary = seg.sort(SEGMENT_CODE).to_arrow()
            dictionary = pa.table(
                {
                    "record": pa.array(["segment"] * dictionary.num_rows, pa.string()),
                    "segment": dictionary.column(SEGMENT_CODE).cast(pa.uint32()),
                    **{BY_PREFIX + b: dictionary.column(b) for b in self.spec.by_columns},
                }
            )
            parts["segment"] = dictionary
        parts["user"] = users.add_column(0, "record", pa.array(["user"] * users.num_rows, pa.string()))
        parts["waiting"] = waiting.add_column(0, "record", pa.array(["waiting"] * waiting.num_rows, pa.string()))
        return parts


BY_PREFIX = "by_"
_PARTS = ("partial", "segment", "user", "waiting")


def _coder(by: Sequence[str], segments: pl.DataFrame | None, threads: int = 1) -> SegmentCoder | None:
    """A segment coder that keeps the state's codes and numbers new values on."""
    if not by:
        return None
    coder = SegmentCoder(by, threads=threads)
    if segments is not None and segments.height:
        coder.known = segments.sort(SEGMENT_CODE)
    return coder


def _file_schema(parts: dict[str, pa.Table]) -> pa.Schema:
    fields: dict[str, pa.Field] = {}
    for part in parts.values():
        for field in part.schema:
            if field.name not in fields:
                fields[field.name] = field.with_nullable(True)
            elif fields[field.name].type != field.type:
                if pa.types.is_null(fields[field.name].type):
                    fields[field.name] = field.with_nullable(True)
                elif not pa.types.is_null(field.type):
                    raise InvalidArgumentError(f"state layout: column {field.name!r} is {fields[field.name].type} and {field.type}")
    return pa.schema(list(fields.values()))


def _widen(piece: pa.Table, name: str, schema: pa.Schema) -> pa.Table:
    """``piece`` with every column of the file's schema, nulls where its record has none."""
    columns = []
    for field in schema:
        if field.name in piece.column_names:
            columns.append(piece.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(piece.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _metadata(spec: CohortSpec, info: dict[str, Any]) -> dict[bytes, bytes]:
    meta = {
        META_STATE: str(STATE_FORMAT_VERSION).encode(),
        META_SPEC: json.dumps(spec.settings(), sort_keys=True).encode(),
        META_FINGERPRINT: spec.fingerprint.encode(),
        META_INFO: json.dumps(info, sort_keys=True).encode(),
    }
    meta[META_DIGEST] = _digest(meta).encode()
    return meta


def _digest(meta: dict[bytes, bytes]) -> str:
    h = hashlib.sha256()
    for key in (META_STATE, META_SPEC, META_FINGERPRINT, META_INFO):
        value = meta.get(key, b"")
        h.update(len(value).to_bytes(8, "little") + value)
    return h.hexdigest()


def _load(path: str) -> CohortState:
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise InvalidArgumentError("not a file")
        raise FileNotFoundError(path)
    file = pq.ParquetFile(path, page_checksum_verification=True)
    meta = file.schema_arrow.metadata or {}
    if META_STATE not in meta:
        raise InvalidArgumentError("not an ltrcore state: the parquet file has no ltrcore.state metadata")
    version = meta[META_STATE].decode(errors="replace")
    if version != str(STATE_FORMAT_VERSION):
        raise InvalidArgumentError(f"this state has format version {version}; this ltrcore reads version {STATE_FORMAT_VERSION}")
    if meta.get(META_DIGEST, b"").decode(errors="replace") != _digest(meta):
        raise InvalidArgumentError("corrupted: its metadata does not match its digest")
    spec = CohortSpec.from_settings(json.loads(meta[META_SPEC]))
    if meta[META_FINGERPRINT].decode() != spec.fingerprint:
        raise InvalidArgumentError("corrupted: its spec does not match its fingerprint")
    info = json.loads(meta[META_INFO])
    groups: dict[str, list[int]] = info["row_groups"]
    names = file.schema_arrow.names

    def read(part: str, columns: list[str]) -> pa.Table:
        lo, hi = groups.get(part, [0, 0])
        present = [c for c in dict.fromkeys(["record", *columns]) if c in names]
        if hi <= lo:
            return pa.table({c: pa.array([], file.schema_arrow.field(c).type) for c in present})
        table = file.read_row_groups(list(range(lo, hi)), columns=present)
        if table.num_rows != info["rows"].get(part, 0):
            raise InvalidArgumentError(f"corrupted: its {part} rows number {table.num_rows}, not {info['rows'].get(part, 0)}")
        records = set(table.column("record").unique().to_pylist()) if table.num_rows else set()
        expected = {"cell", "reason", "read"} if part == "partial" else {part}
        if not records <= expected:
            raise InvalidArgumentError(f"corrupted: its {part} row groups hold {sorted(map(str, records))} records")
        return table if part == "partial" else table.drop_columns(["record"])

    partial_columns = ["record", "table", "reason", "segment", "cohort", "age", *MONEY_COLUMNS, *COUNT_COLUMNS, "last_period"]
    partial = _core.CorePartial.from_arrow(read("partial", partial_columns), spec.horizon, spec.cohort == "signup", spec.period)
    segments = None
    if spec.by_columns:
        table = read("segment", ["record", "segment", *(BY_PREFIX + b for b in spec.by_columns)])
        picked = table.select([BY_PREFIX + b for b in spec.by_columns] + ["segment"])
        frame = pl.from_arrow(picked.rename_columns([*spec.by_columns, SEGMENT_CODE]))
        assert isinstance(frame, pl.DataFrame)
        segments = frame.with_columns(pl.col(SEGMENT_CODE).cast(pl.UInt32))
        codes = segments.get_column(SEGMENT_CODE).to_list()
        if sorted(codes) != list(range(len(codes))):
            raise InvalidArgumentError("corrupted: its segment dictionary's codes are not 0..n-1")
    users = read("user", ["user", "segment", "cohort", "paid_ages", "paid_twice_ages", "active_ages"])
    waiting = read("waiting", ["user", "table", "period", "amount", "profit"])
    core = _core.CoreState.from_parts(partial, info["watermark"], info["family"], users, waiting)
    return CohortState(spec, core, segments)


def _canonical_state(state: CohortState) -> tuple[Any, ...]:
    """What two states must share to be equal, whatever their segment codes."""
    from .partial import _canonical

    def frame(stream: Any) -> pl.DataFrame:
        table = pa.table(stream)
        binary = [f.name for f in table.schema if pa.types.is_fixed_size_binary(f.type)]
        for name in binary:
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.binary()))
        out = pl.from_arrow(table)
        assert isinstance(out, pl.DataFrame)
        return out

    users, waiting = frame(state._core.users_arrow()), frame(state._core.waiting_arrow())
    if state.spec.by_columns and state._segments is not None:
        users = users.join(state._segments, left_on="segment", right_on=SEGMENT_CODE, how="left").drop("segment")
    return (
        _canonical(state.partial.to_arrow()),
        users.sort("user").to_arrow(),
        waiting.sort(waiting.columns, nulls_last=True).to_arrow(),
    )


__all__ = ["CohortState", "STATE_FORMAT_VERSION"]
