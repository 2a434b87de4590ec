"""Input adapters: turn whatever the caller has into re-openable Arrow streams.

Every input becomes a :class:`Source`: a zero-argument ``open()`` that returns an object with
``__arrow_c_stream__``, plus whether ``open()`` may be called again. First-purchase cohorts read the
orders twice (once for each user's first paying order, once to attribute every row); a source that
can't be re-opened (a ``pyarrow.RecordBatchReader``, an unknown stream object) is then buffered by
the engine, which keeps only the batches it was handed.

Only the needed columns are projected where the input allows it. When a named column is missing the
input is passed on whole, so the engine's error lists every available column.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from .exceptions import ColumnNotFoundError, InvalidArgumentError

#: Name of the uint32 segment-code column the front adds for the engine.
SEGMENT_CODE = "__ltrcore_segment"


@dataclass
class Source:
    open: Callable[[], Any]
    reopenable: bool
    #: The rows are already in memory (a table, not a stream or a file): the engine may then keep
    #: half a byte per row to speed up its second pass over the orders.
    in_memory: bool


_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
    ".csv": "csv",
}


def _dataset(path: str | os.PathLike[str]) -> Any:
    import pyarrow.dataset as ds

    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        files = sorted(glob.glob(text, recursive=True))
        if not files:
            raise FileNotFoundError(f"no file matches {text!r}")
        fmt = _FORMATS.get(Path(files[0]).suffix.lower(), "parquet")
        return ds.dataset(files, format=fmt)
    p = Path(text)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {text!r}")
    if p.is_dir():
        fmt = "parquet"
        for child in sorted(p.rglob("*")):
            if child.is_file() and child.suffix.lower() in _FORMATS:
                fmt = _FORMATS[child.suffix.lower()]
                break
        return ds.dataset(p, format=fmt)
    return ds.dataset(p, format=_FORMATS.get(p.suffix.lower(), "parquet"))


def _scan(dataset: Any, columns: list[str] | None) -> pa.RecordBatchReader:
    """A batch reader that holds a couple of batches at a time, not whole files.

    pyarrow's defaults pre-buffer whole parquet files and decode row groups on every core as fast as
    they can, which piles up batches whenever the consumer is slower: measured, the pool peaked at
    75% of the data's size. Decoding in the calling stream, without pre-buffering, stays at a few
    batches (about 50 MB for a 384 MB file).
    """
    import pyarrow.dataset as ds

    options = {}
    if isinstance(dataset.format, ds.ParquetFileFormat):
        options["fragment_scan_options"] = ds.ParquetFragmentScanOptions(pre_buffer=False)
    return dataset.scanner(columns=columns, batch_readahead=2, fragment_readahead=1, use_threads=False, **options).to_reader()


def _present(names: Sequence[str], columns: Sequence[str]) -> bool:
    return all(c in names for c in columns)


def _lazy_batches(lf: pl.LazyFrame) -> pa.RecordBatchReader:
    """Streams a LazyFrame with ``collect_batches`` without collecting it whole."""
    frames = iter(lf.collect_batches())
    first = next(frames, None)
    if first is None:
        schema = lf.limit(0).collect().to_arrow().schema
        return pa.RecordBatchReader.from_batches(schema, iter(()))
    head = first.to_arrow()

    def rest() -> Iterator[pa.RecordBatch]:
        yield from head.to_batches()
        for frame in frames:
            yield from frame.to_arrow().cast(head.schema).to_batches()

    return pa.RecordBatchReader.from_batches(head.schema, rest())


def resolve(data: Any, columns: Sequence[str], *, table: str) -> Source:
    """A :class:`Source` over ``data`` projected to ``columns`` where possible."""
    cols = list(dict.fromkeys(columns))
    if isinstance(data, (str, os.PathLike)):
        dataset = _dataset(data)
        projection = cols if _present(dataset.schema.names, cols) else None
        return Source(lambda: _scan(dataset, projection), reopenable=True, in_memory=False)
    if isinstance(data, pa.Table):
        t = data.select(cols) if _present(data.column_names, cols) else data
        return Source(lambda: t, reopenable=True, in_memory=True)
    if isinstance(data, pa.RecordBatch):
        t = pa.Table.from_batches([data])
        return resolve(t, cols, table=table)
    if isinstance(data, pl.DataFrame):
        df = data.select(cols) if _present(data.columns, cols) else data
        return Source(lambda: df, reopenable=True, in_memory=True)
    if isinstance(data, pl.LazyFrame):
        names = data.collect_schema().names()
        lf = data.select(cols) if _present(names, cols) else data
        return Source(lambda: _lazy_batches(lf), reopenable=True, in_memory=False)
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        t = pa.Table.from_pandas(data, preserve_index=False)
        return resolve(t, cols, table=table)
    if module in ("duckdb", "_duckdb") and hasattr(data, "to_arrow_reader"):
        names = list(data.columns)
        rel = data.select(*[f'"{c}"' for c in cols]) if _present(names, cols) else data
        return Source(lambda: rel.to_arrow_reader(1 << 20), reopenable=True, in_memory=False)
    if isinstance(data, pa.RecordBatchReader) or hasattr(data, "__arrow_c_stream__"):
        used = [False]

        def once() -> Any:
            if used[0]:
                raise InvalidArgumentError(f"{table}: this stream was already consumed")
            used[0] = True
            return data

        return Source(once, reopenable=False, in_memory=False)
    raise TypeError(
        f"{table}: cannot read an object of type {type(data).__name__}; pass a pyarrow Table or "
        "RecordBatchReader, a polars DataFrame or LazyFrame, a pandas DataFrame, a DuckDB relation, "
        "an object with __arrow_c_stream__, or a parquet/IPC/CSV path, directory or glob"
    )


def to_polars(data: Any, columns: Sequence[str], *, table: str) -> pl.DataFrame:
    """Reads a (small, per-user) input whole, e.g. signups."""
    src = resolve(data, columns, table=table)
    return pl.DataFrame(pa.table(src.open()))


class SegmentCoder:
    """Maps combinations of segment values to stable uint32 codes, batch by batch.

    Codes follow first appearance in the stream, so both passes over the orders (and any batch
    split) see the same code for the same values. The final table is sorted by the values.
    """

    def __init__(self, by: Sequence[str]):
        self.by = list(by)
        self.codes: dict[tuple[Any, ...], int] = {}
        self._schema: pl.Schema | None = None

    def encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        keys = frame.select(self.by).unique(maintain_order=True)
        if self._schema is None:
            self._schema = keys.schema
        new = [k for k in keys.iter_rows() if k not in self.codes]
        for k in new:
            self.codes[k] = len(self.codes)
        lookup = keys.with_columns(
            pl.Series(SEGMENT_CODE, [self.codes[k] for k in keys.iter_rows()], dtype=pl.UInt32)
        )
        return frame.join(lookup, on=self.by, how="left", nulls_equal=True, maintain_order="left")

    def dictionary(self) -> pl.DataFrame:
        """``by`` columns plus the code, one row per code."""
        rows = sorted(self.codes.items(), key=lambda kv: kv[1])
        data = {name: [k[i] for k, _ in rows] for i, name in enumerate(self.by)}
        frame = pl.DataFrame(data, schema=self._schema) if self._schema is not None else pl.DataFrame(data)
        return frame.with_columns(pl.Series(SEGMENT_CODE, [c for _, c in rows], dtype=pl.UInt32))

    def wrap(self, source: Source, keep: Sequence[str]) -> Source:
        """A source whose batches carry the segment-code column instead of the ``by`` columns."""
        keep = list(dict.fromkeys(keep))

        def open_coded() -> pa.RecordBatchReader:
            reader = pa.RecordBatchReader.from_stream(source.open())
            missing = [c for c in self.by if c not in reader.schema.names]
            if missing:
                raise ColumnNotFoundError(
                    f"column {missing[0]!r} not found in orders; available columns: "
                    + ", ".join(map(repr, reader.schema.names))
                )
            if self._schema is None:  # keeps the dtypes even if no row ever arrives
                self._schema = pl.DataFrame(reader.schema.empty_table()).select(self.by).schema

            def batches() -> Iterator[pa.RecordBatch]:
                for batch in reader:
                    frame = pl.DataFrame(pa.Table.from_batches([batch]))
                    coded = self.encode(frame).select([*keep, SEGMENT_CODE])
                    yield from coded.to_arrow().to_batches()

            first = next(batches_iter := batches(), None)
            if first is None:
                return pa.RecordBatchReader.from_batches(_empty_schema(reader.schema, keep), iter(()))

            def chained() -> Iterator[pa.RecordBatch]:
                yield first
                for b in batches_iter:
                    yield b.cast(first.schema) if b.schema != first.schema else b

            return pa.RecordBatchReader.from_batches(first.schema, chained())

        return Source(open_coded, reopenable=source.reopenable, in_memory=source.in_memory)


def _empty_schema(schema: pa.Schema, keep: Sequence[str]) -> pa.Schema:
    fields = [schema.field(name) for name in keep if name in schema.names]
    return pa.schema([*fields, pa.field(SEGMENT_CODE, pa.uint32())])
