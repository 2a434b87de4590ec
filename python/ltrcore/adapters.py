"""Input adapters: turn whatever the caller has into Arrow streams the engine can read.

Every input becomes a :class:`Source`: a zero-argument ``open()`` plus whether ``open()`` may be
called again. ``open()`` returns either an object with ``__arrow_c_stream__`` (tables and
DataFrames: read by the engine without touching Python), or a :class:`Batches`, a Python iterator
of record batches that the engine pulls one at a time (streams, files, LazyFrames). A
:class:`Batches` checks every batch against its schema, names the file a read failed in, and turns
a failure of the producer into :class:`~ltrcore.StreamError` (``KeyboardInterrupt`` and
``MemoryError`` pass through unchanged).

First-purchase cohorts read the orders twice. A source that can't be re-opened (a
``pyarrow.RecordBatchReader``, an unknown stream object) is then buffered by the engine, which keeps
only the batches it was handed. Such a one-shot source is remembered once ltrcore has started
reading it, so that reading it again (a retry after a failure, or the same reader passed twice) is
an error rather than an empty or truncated table.

Only the needed columns are projected where the input allows it. When a named column is missing or
ambiguous the input is passed on whole, so the engine's error lists every available column.
"""

from __future__ import annotations

import glob
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from .exceptions import ColumnNotFoundError, InputNotFoundError, InvalidArgumentError, LtrcoreError, StreamError

#: Name of the uint32 segment-code column the front adds for the engine.
SEGMENT_CODE = "__ltrcore_segment"


@dataclass
class Source:
    open: Callable[[], Any]
    reopenable: bool
    #: The rows are already in memory (a table, not a stream or a file): the engine may then keep
    #: half a byte per row to speed up its second pass over the orders.
    in_memory: bool


class Batches:
    """A stream of record batches produced by Python code, checked batch by batch.

    The engine pulls batches with ``next()``; ``schema`` is the stream's schema. Every batch must
    match it column for column (names and dtypes), as ``pyarrow``'s own ``read_all()`` requires: a
    batch that does not is a :class:`StreamError` naming the batch and the column, never a batch
    read as something else. (The engine checks every batch too; this check is for what Python reads
    itself: signups read whole, and orders coded by segment, whose columns are picked by name, so a
    permuted batch would otherwise pass unnoticed.) An exception raised by the producer becomes a
    :class:`StreamError`
    (its cause kept), except ltrcore's own errors, ``MemoryError`` and non-``Exception`` ones such
    as ``KeyboardInterrupt``, which pass through unchanged.
    """

    def __init__(self, schema: pa.Schema, batches: Iterator[pa.RecordBatch], *, table: str) -> None:
        self.schema = schema
        self.table = table
        self._batches = batches
        self._index = 0

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            batch = next(self._batches)
        except StopIteration:
            raise
        except (LtrcoreError, MemoryError):
            raise
        except Exception as err:
            raise StreamError(f"reading {self.table} failed at batch {self._index}: {type(err).__name__}: {err}") from err
        if not isinstance(batch, pa.RecordBatch):
            raise StreamError(f"reading {self.table} failed: batch {self._index} is a {type(batch).__name__}, not a record batch")
        check_schema(batch.schema, self.schema, f"{self.table}: batch {self._index}")
        self._index += 1
        return batch


def check_schema(got: pa.Schema, expected: pa.Schema, where: str) -> None:
    """Raises :class:`StreamError` unless ``got`` has ``expected``'s columns, names and dtypes."""
    if len(got) != len(expected):
        raise StreamError(f"{where} has {len(got)} columns where the stream's schema has {len(expected)}")
    for j, (g, e) in enumerate(zip(got, expected)):
        if g.name != e.name or g.type != e.type:
            raise StreamError(
                f"{where} does not match the stream's schema: column {j} is {g.name!r} ({g.type}) "
                f"where the schema has {e.name!r} ({e.type})"
            )


def as_batches(stream: Any, *, table: str) -> Batches:
    """A :class:`Batches` over anything ``open()`` returns."""
    if isinstance(stream, Batches):
        return stream
    if isinstance(stream, pa.Table):
        return Batches(stream.schema, iter(stream.to_batches()), table=table)
    reader = pa.RecordBatchReader.from_stream(stream)
    return Batches(reader.schema, iter(reader), table=table)


# --- one-shot streams -----------------------------------------------------------------------------
# Streams ltrcore has started to read. Weakly held where the object allows it; otherwise held (so its
# id cannot be reused by another object) for the life of the process.
_started: weakref.WeakSet[Any] = weakref.WeakSet()
_started_strong: dict[int, Any] = {}


def _claim(stream: Any, table: str) -> None:
    """Marks a one-shot stream as read, or raises if ltrcore has read it before."""
    try:
        seen = stream in _started
    except TypeError:  # not weakly referenceable
        seen = id(stream) in _started_strong
    if seen:
        raise InvalidArgumentError(
            f"{table}: this stream was already read by ltrcore (by an earlier call, or earlier in this one), "
            "and a stream can be read only once: reading it again would give the rows it has left, not the "
            "table. Pass a fresh stream, or a re-readable source (a pyarrow Table, a DataFrame, a file path)."
        )
    try:
        _started.add(stream)
    except TypeError:
        _started_strong[id(stream)] = stream


def _one_shot_reader(reader: pa.RecordBatchReader, table: str) -> Batches:
    def batches() -> Iterator[pa.RecordBatch]:
        _claim(reader, table)  # at the first pull: a call that fails before reading leaves it usable
        yield from reader

    return Batches(reader.schema, batches(), table=table)


# --- files ----------------------------------------------------------------------------------------
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".csv": "csv",
}


def _dataset(path: str | os.PathLike[str], table: str = "input") -> Any:
    """A ``pyarrow.dataset`` over a file, directory or glob; ltrcore errors that name the path."""
    import pyarrow.dataset as ds

    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        files = sorted(glob.glob(text, recursive=True))
        if not files:
            raise InputNotFoundError(f"{table}: no file matches {text!r}")
        fmt = _FORMATS.get(Path(files[0]).suffix.lower(), "parquet")
        source: Any = files
    else:
        p = Path(text)
        if not p.exists():
            raise InputNotFoundError(f"{table}: no such file or directory: {text!r}")
        fmt = _FORMATS.get(p.suffix.lower(), "parquet")
        if p.is_dir():
            fmt = "parquet"
            for child in sorted(p.rglob("*")):
                if child.is_file() and child.suffix.lower() in _FORMATS:
                    fmt = _FORMATS[child.suffix.lower()]
                    break
        elif p.stat().st_size == 0:
            raise StreamError(f"{table}: {text!r} is an empty file (0 bytes), not a {fmt} file")
        source = p
    try:
        dataset = ds.dataset(source, format=fmt)
        empty = not _has_rows(dataset)
    except (pa.ArrowException, OSError) as err:
        raise StreamError(f"{table}: cannot read {text!r} as {fmt}: {_first_line(err)}") from err
    if empty:
        # A monthly job must not ship a report of nothing; a header-only CSV would otherwise surface
        # as columns of type null.
        raise InvalidArgumentError(f"{table}: no rows in {text!r}")
    return dataset


def _has_rows(dataset: Any) -> bool:
    """Whether any file of ``dataset`` holds a row: parquet from its footer, other formats from
    their first non-empty batch, stopping at the first file that has one."""
    for fragment in dataset.get_fragments():
        if type(fragment).__name__ == "ParquetFileFragment":
            if fragment.count_rows() > 0:
                return True
        elif any(batch.num_rows for batch in fragment.to_batches()):
            return True
    return False


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _scan(dataset: Any, columns: list[str] | None, table: str) -> Batches:
    """The dataset's batches, one file at a time, holding a couple of batches at a time.

    pyarrow's defaults pre-buffer whole parquet files and decode row groups on every core as fast as
    they can, which piles up batches whenever the consumer is slower: measured, the pool peaked at
    75% of the data's size. Decoding in the calling stream, without pre-buffering, stays at a few
    batches (about 50 MB for a 384 MB file). Parquet page checksums are verified where the file has
    them, so a flipped byte in a data page is an error instead of a different total.
    """
    import pyarrow.dataset as ds

    options = {}
    if isinstance(dataset.format, ds.ParquetFileFormat):
        options["fragment_scan_options"] = ds.ParquetFragmentScanOptions(pre_buffer=False, page_checksum_verification=True)
    schema = dataset.schema if columns is None else pa.schema([dataset.schema.field(c) for c in columns])

    def batches() -> Iterator[pa.RecordBatch]:
        for fragment in dataset.get_fragments():
            where = getattr(fragment, "path", str(fragment))
            try:
                yield from fragment.to_batches(
                    schema=dataset.schema, columns=columns, batch_readahead=2, use_threads=False, **options
                )
            except (pa.ArrowException, OSError) as err:
                raise StreamError(f"{table}: cannot read {where!r}: {_first_line(err)}") from err

    return Batches(schema, batches(), table=table)


# --- everything else ------------------------------------------------------------------------------
def _present(names: Sequence[str], columns: Sequence[str]) -> bool:
    """Every column is there exactly once (so projecting to it is safe)."""
    return all(list(names).count(c) == 1 for c in columns)


def _lazy_batches(lf: pl.LazyFrame, table: str) -> Batches:
    """Streams a LazyFrame with ``collect_batches`` without collecting it whole."""
    frames = iter(lf.collect_batches())
    first = next(frames, None)
    if first is None:
        schema = lf.limit(0).collect().to_arrow().schema
        return Batches(schema, iter(()), table=table)
    head = first.to_arrow()

    def rest() -> Iterator[pa.RecordBatch]:
        yield from head.to_batches()
        for frame in frames:
            # Polars may pick another string or dictionary flavour per batch; the values are the same.
            yield from frame.to_arrow().cast(head.schema).to_batches()

    return Batches(head.schema, rest(), table=table)


def resolve(data: Any, columns: Sequence[str], *, table: str) -> Source:
    """A :class:`Source` over ``data`` projected to ``columns`` where possible."""
    cols = list(dict.fromkeys(columns))
    if isinstance(data, (str, os.PathLike)):
        dataset = _dataset(data, table)
        projection = cols if _present(dataset.schema.names, cols) else None
        return Source(lambda: _scan(dataset, projection, table), reopenable=True, in_memory=False)
    if isinstance(data, pa.Table):
        t = data.select(cols) if _present(data.column_names, cols) else data
        return Source(lambda: t, reopenable=True, in_memory=True)
    if isinstance(data, pa.RecordBatch):
        return resolve(pa.Table.from_batches([data]), cols, table=table)
    if isinstance(data, pl.DataFrame):
        df = data.select(cols) if _present(data.columns, cols) else data
        if any(isinstance(dtype, (pl.Categorical, pl.Enum)) for dtype in df.schema.values()):
            # Polars builds a categorical's Arrow dictionary anew at every export, and for every
            # chunk (seconds for millions of categories), and the orders are read twice: export once
            # and keep the table.
            exported: list[pa.Table] = []

            def export_once() -> pa.Table:
                if not exported:
                    exported.append(_categoricals_to_arrow(df))
                return exported[0]

            return Source(export_once, reopenable=True, in_memory=True)
        return Source(lambda: df, reopenable=True, in_memory=True)
    if isinstance(data, pl.LazyFrame):
        names = data.collect_schema().names()
        lf = data.select(cols) if _present(names, cols) else data
        return Source(lambda: _lazy_batches(lf, table), reopenable=True, in_memory=False)
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return resolve(pa.Table.from_pandas(data, preserve_index=False), cols, table=table)
    if module in ("duckdb", "_duckdb") and hasattr(data, "to_arrow_reader"):
        names = list(data.columns)
        rel = data.select(*[f'"{c}"' for c in cols]) if _present(names, cols) else data
        return Source(lambda: rel.to_arrow_reader(1 << 20), reopenable=True, in_memory=False)
    if isinstance(data, pa.RecordBatchReader):
        return Source(lambda: _one_shot_reader(data, table), reopenable=False, in_memory=False)
    if hasattr(data, "__arrow_c_stream__"):

        def export_once() -> Any:
            _claim(data, table)  # exporting may move the stream's data out: counts as read
            return data

        return Source(export_once, reopenable=False, in_memory=False)
    raise InvalidArgumentError(
        f"{table}: cannot read an object of type {type(data).__name__}; pass a pyarrow Table or "
        "RecordBatchReader, a polars DataFrame or LazyFrame, a pandas DataFrame, a DuckDB relation, "
        "an object with __arrow_c_stream__, or a parquet/IPC/CSV path, directory or glob"
    )


def _categories(dtype: Any) -> pa.Array | None:
    """A Categorical's or Enum's categories indexed by their physical codes, or ``None`` when this
    Polars cannot list them that way (before its categoricals had one list per namespace)."""
    categories = getattr(dtype, "categories", None)
    if isinstance(categories, pl.Series):  # an Enum's fixed categories
        return categories.to_arrow()
    to_series = getattr(categories, "to_series", None)
    return to_series().to_arrow() if callable(to_series) else None


def _categoricals_to_arrow(df: pl.DataFrame) -> pa.Table:
    """``df`` as Arrow, each Categorical or Enum column as its physical codes (zero-copy, chunk by
    chunk) over one dictionary of its categories shared by every chunk, instead of Polars' export,
    which builds a dictionary for every chunk. The engine then maps the categories to keys once and
    each row is one lookup by code. The dictionary may hold categories no row uses (the namespace
    is shared with other columns), which change nothing."""
    cats = {name: _categories(dtype) for name, dtype in df.schema.items() if isinstance(dtype, (pl.Categorical, pl.Enum))}
    if any(values is None for values in cats.values()):
        return df.to_arrow()
    table = df.with_columns(pl.col(name).to_physical() for name in cats).to_arrow()
    for name, values in cats.items():
        assert values is not None
        i = table.schema.get_field_index(name)
        codes = table.column(i)
        dtype = pa.dictionary(codes.type, values.type)
        # safe=False: the engine checks every code against the dictionary before reading it.
        chunks = [pa.DictionaryArray.from_arrays(chunk, values, safe=False) for chunk in codes.chunks]
        table = table.set_column(i, name, pa.chunked_array(chunks, type=dtype))
    return table


def chain(pieces: Sequence[Source], *, table: str) -> Source:
    """One source over several pieces of a table, read in turn. Every piece must have the first
    one's columns, names and dtypes: the engine reads one stream with one schema."""
    if len(pieces) == 1:
        return pieces[0]

    def open_all() -> Batches:
        opened = [as_batches(piece.open(), table=table) for piece in pieces]
        check_pieces([piece.schema for piece in opened], table=table)
        schema = opened[0].schema

        def batches() -> Iterator[pa.RecordBatch]:
            for piece in opened:
                yield from piece

        return Batches(schema, batches(), table=table)

    return Source(
        open_all,
        reopenable=all(p.reopenable for p in pieces),
        in_memory=all(p.in_memory for p in pieces),
    )


def check_pieces(schemas: Sequence[pa.Schema], *, table: str) -> None:
    """Every piece of a table must have the first one's columns, names and dtypes (metadata aside)."""
    first = schemas[0].remove_metadata()
    for k, schema in enumerate(schemas[1:], start=2):
        if schema.remove_metadata() != first:
            raise InvalidArgumentError(
                f"{table}: piece {k} has columns ({_schema_text(schema)}) where piece 1 has ({_schema_text(first)}); "
                "every update of one table must have the same columns and dtypes"
            )


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _polars(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _rows(table: pa.Table, rows: list[int]) -> pl.DataFrame:
    """Some rows of ``table``, as Polars reads them. pyarrow's ``take`` has no kernel for the view
    layouts, which Polars reads as they are (no copy): those columns are taken in Polars."""
    indices = pa.array(rows, pa.int64())
    columns = []
    for name, column in zip(table.column_names, table.columns):
        try:
            columns.append(_polars(pa.Table.from_arrays([column.take(indices)], schema=pa.schema([table.schema.field(name)]))))
        except pa.ArrowNotImplementedError:
            columns.append(_polars(table.select([name])).gather(rows))
    return pl.concat(columns, how="horizontal")


def read_whole(data: Any, columns: Sequence[str], *, table: str) -> pa.Table:
    """Reads a (small, per-user) input whole, e.g. signups, keeping its Arrow types as they are."""
    src = resolve(data, columns, table=table)
    opened = src.open()
    if isinstance(opened, pa.Table):
        return opened
    batches = as_batches(opened, table=table)
    return pa.Table.from_batches(list(batches), schema=batches.schema)


#: Set to ``polars`` to code segments with the Polars coder instead of the core's (the tests compare
#: the two; see :class:`SegmentCoder`).
SEGMENT_CODER_ENV = "LTRCORE_SEGMENT_CODER"


class SegmentCoder:
    """Maps combinations of segment values to stable uint32 codes, batch by batch.

    Codes follow first appearance in the stream, so both passes over the orders (and any batch
    split) see the same code for the same values. The columns the engine reads stay the caller's
    Arrow arrays. Values are matched as Polars groups them: nulls match nulls, NaN matches NaN, and
    -0.0 matches 0.0. The final table is sorted by the values.

    Two coders give the same codes. The core's (``_core.SegmentCoder``) is the default. The Polars
    one (``unique`` + anti-join + join) is the reference, and codes what the core does not take: by
    columns of other dtypes (decimals, nested types...), Polars frames (merging partials), and a
    state's saved segments that do not read back unchanged as the new input's dtypes. Which one
    codes is decided once, at the first batch. The environment variable ``LTRCORE_SEGMENT_CODER=polars``
    forces the Polars coder. Either way ``known`` holds each combination's first row as Polars read
    it, so ``ranks`` and the segment table do not depend on the coder.
    """

    def __init__(self, by: Sequence[str], *, threads: int = 1):
        self.by = list(by)
        self.threads = threads  # more than one: the core's coder looks the rows up on all cores
        self.known: pl.DataFrame | None = None  # the ``by`` columns plus the code, in code order
        self.source_schema: pa.Schema | None = None  # of the coded input, for an empty dictionary
        self._core: Any = None  # a ``_core.SegmentCoder`` once chosen
        self._chosen = False

    def codes(self, keys: pa.Table | pl.DataFrame) -> pa.Array:
        """The code of each row of ``keys`` (the ``by`` columns), new combinations numbered on."""
        if not self._chosen:
            self._chosen = True
            self._core = self._core_coder(keys)
        if self._core is None:
            return self._polars_codes(keys if isinstance(keys, pl.DataFrame) else _polars(keys))
        table = keys.to_arrow() if isinstance(keys, pl.DataFrame) else keys
        codes, first_rows = self._core.code(table)
        if self.known is None:
            self.known = _polars(table.slice(0, 0)).with_columns(pl.Series(SEGMENT_CODE, [], dtype=pl.UInt32))
        if first_rows:
            self._number(_rows(table, first_rows))
        return pa.array(codes)

    def _number(self, new: pl.DataFrame) -> None:
        """Appends combinations not known yet to ``known``, numbered on."""
        assert self.known is not None
        start = self.known.height
        numbered = new.with_columns(pl.int_range(start, start + new.height, dtype=pl.UInt32).alias(SEGMENT_CODE))
        self.known = pl.concat([self.known, numbered])

    def _polars_codes(self, keys: pl.DataFrame) -> pa.Array:
        if self.known is None:
            self.known = keys.clear().with_columns(pl.Series(SEGMENT_CODE, [], dtype=pl.UInt32))
        # Polars 2.1 matches no NaN in a join whose right side is one row: that side is doubled for
        # the anti-join (which ignores duplicates), and a left join against one row is not needed
        # (every row has its values).
        known = pl.concat([self.known, self.known]) if self.known.height == 1 else self.known
        distinct = keys.unique(maintain_order=True)
        new = distinct.join(known, on=self.by, how="anti", nulls_equal=True, maintain_order="left")
        if new.height:
            self._number(new)
        if self.known.height == 1:
            return pl.repeat(0, keys.height, dtype=pl.UInt32, eager=True).to_arrow()
        coded = keys.join(self.known, on=self.by, how="left", nulls_equal=True, maintain_order="left")
        return coded.get_column(SEGMENT_CODE).to_arrow()

    def _core_coder(self, keys: pa.Table | pl.DataFrame) -> Any:
        """The core's coder for ``keys``' dtypes, holding the known combinations; ``None`` where the
        Polars coder must code (see the class's docstring)."""
        from . import _core

        if os.environ.get(SEGMENT_CODER_ENV, "core") == "polars" or not isinstance(keys, pa.Table):
            return None
        if not _core.SegmentCoder.accepts(keys.schema):
            return None
        coder = _core.SegmentCoder(keys.schema, parallel=self.threads > 1)
        if self.known is not None and self.known.height:
            # A state's saved segments: they must be the values the input's dtypes hold, in code order.
            saved = self.known.select(self.by)
            if saved.schema != _polars(keys.slice(0, 0)).schema:
                return None
            if self.known.get_column(SEGMENT_CODE).to_list() != list(range(self.known.height)):
                return None
            try:
                codes, _ = coder.code(saved.to_arrow().cast(keys.schema))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
            if pa.array(codes).to_pylist() != list(range(self.known.height)):
                return None
        return coder

    def encode(self, table: pa.Table) -> pa.Table:
        """``table`` with the code column appended."""
        self.source_schema = table.schema
        return table.append_column(SEGMENT_CODE, self.codes(self.keys(table)))

    def keys(self, data: pa.Table | pa.RecordBatch) -> pa.Table:
        """The ``by`` columns. Polars holds timestamps and durations in ms at the coarsest, and
        wraps a ``timestamp[s]`` or ``duration[s]`` it cannot hold into another value without a
        word: such a value is refused, and the others are read in ms by both coders."""
        columns = {}
        for name in self.by:
            col = data.column(name)
            if (pa.types.is_timestamp(col.type) or pa.types.is_duration(col.type)) and col.type.unit == "s":
                kind, ms = ("timestamp", pa.timestamp("ms", col.type.tz)) if pa.types.is_timestamp(col.type) else ("duration", pa.duration("ms"))
                try:
                    col = col.cast(ms, safe=True)
                except pa.ArrowInvalid:
                    raise InvalidArgumentError(
                        f"by column {name!r}: a {kind}[s] value is too far out to be kept as a segment value"
                    ) from None
            columns[name] = col
        return pa.table(columns)

    def ranks(self) -> list[int]:
        """Each code's place in the order of the segment values: ascending, column by column, nulls
        last, NaN above every number (Polars' order). A user whose earliest rows tie on the timestamp
        takes the smallest segment by it, so that the order of the rows never matters."""
        if self.known is None:
            return []
        # Categoricals compare by their text, not by the order their categories appeared in.
        keys = self.known.with_columns(pl.col(pl.Categorical).cast(pl.String))
        order = keys.sort(self.by, nulls_last=True, maintain_order=True)
        ranks = [0] * self.known.height
        for rank, code in enumerate(order.get_column(SEGMENT_CODE).to_list()):
            ranks[code] = rank
        return ranks

    def dictionary(self) -> pl.DataFrame:
        """``by`` columns plus the code, one row per code (empty, with the input's dtypes, if none)."""
        if self.known is not None:
            return self.known
        if self.source_schema is None:
            return pl.DataFrame({**{name: [] for name in self.by}, SEGMENT_CODE: pl.Series([], dtype=pl.UInt32)})
        empty = pl.from_arrow(self.source_schema.empty_table().select(self.by))
        assert isinstance(empty, pl.DataFrame)
        return empty.with_columns(pl.Series(SEGMENT_CODE, [], dtype=pl.UInt32))

    def wrap(self, source: Source, keep: Sequence[str], *, table: str) -> Source:
        """A source whose batches carry the ``keep`` columns and the segment-code column.

        A source held in memory gives the same batches at every opening, and the engine opens it
        up to three times (its ids' range, then both passes): each batch's codes are kept from the
        first reading (4 bytes a row), so every batch is coded once. A batch's codes never change
        once given, so this changes no code; a batch of another length than the kept codes is
        coded again."""
        keep = list(dict.fromkeys(keep))
        kept: list[pa.Array] | None = [] if source.in_memory and source.reopenable else None

        def open_coded() -> Batches:
            stream = as_batches(source.open(), table=table)
            names = stream.schema.names
            for name in [*keep, *self.by]:
                if names.count(name) != 1:
                    raise (ColumnNotFoundError if name not in names else InvalidArgumentError)(
                        f"column {name!r} {'not found' if name not in names else 'is ambiguous'} in {table}; "
                        "available columns: " + ", ".join(map(repr, names))
                    )
            schema = pa.schema([*(stream.schema.field(n) for n in keep), pa.field(SEGMENT_CODE, pa.uint32())])
            self.source_schema = stream.schema

            def coded() -> Iterator[pa.RecordBatch]:
                for k, batch in enumerate(stream):
                    if kept is not None and k < len(kept) and len(kept[k]) == batch.num_rows:
                        codes = kept[k]
                    else:
                        codes = self.codes(self.keys(batch))
                        if kept is not None and k == len(kept):
                            kept.append(codes)
                    yield pa.RecordBatch.from_arrays([*batch.select(keep).columns, codes], schema=schema)

            return Batches(schema, coded(), table=table)

        return Source(open_coded, reopenable=source.reopenable, in_memory=source.in_memory)
