"""``CohortTable``: the engine's result in long format, with array views and a readable display."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from . import _core
from . import metrics as _metrics
from .adapters import SEGMENT_CODE
from .exceptions import InvalidArgumentError

MEASURES = ("cohort_size", "revenue", "gross_revenue", "refunds", "payments", "profit", "orders", "payers", "retained", "active")
#: The measures ``pivot`` derives per cell, and the ``ltrcore.metrics`` function whose frame holds
#: each (one definition: the same numbers as ``table.ltr()``, ``table.retention()``, …).
DERIVED_MEASURES: dict[str, Any] = {
    "cum_revenue": _metrics.ltr,
    "ltr": _metrics.ltr,
    "paying_retention": _metrics.retention,
    "activity_retention": _metrics.retention,
    "retention_rate": _metrics.retention_rate,
    "arppu": _metrics.arppu,
    "arppu_net": _metrics.arppu,
    "aov": _metrics.aov,
    "aov_net": _metrics.aov,
}
PIVOT_MEASURES = (*MEASURES, *DERIVED_MEASURES)
#: Rows the notebook grid (``_repr_html_``) shows; a note says how many more there are.
HTML_MAX_ROWS = 40
_EPOCH_DAY = dt.date(1970, 1, 1)


def _day(days: int | None) -> dt.date | None:
    return None if days is None else _EPOCH_DAY + dt.timedelta(days=days)


class CohortTable:
    """Cohort × age arrays of one run. Long format (``to_polars``) is canonical.

    Attributes: ``horizon``, ``period``, ``tz``, ``by``, ``scale`` (decimals of the exact sums),
    ``has_profit`` (the orders had a cost column, so each cell's ``profit`` is measured),
    ``last_complete`` (first day of the last complete period), ``first_usable`` (from ``since``),
    ``reconciliation`` (orders), ``signups_reconciliation`` and ``activity_reconciliation``.
    """

    def __init__(
        self,
        core: _core.CoreResult,
        *,
        by: list[str],
        segments: pl.DataFrame | None,
        period: str,
        tz: str,
        as_of: Any,
        since: Any,
        min_amount: Any,
    ):
        self._core = core
        self.by = list(by)
        self.horizon = core.horizon
        self.period = period
        self.tz = tz
        self.scale = core.scale
        self.as_of = as_of
        self.since = since
        self.min_amount = min_amount
        self.last_complete = _day(core.last_complete_day)
        self.first_usable = _day(core.first_usable_day)
        self.input_rows = core.input_rows
        self.has_profit = core.has_profit
        self._long = self._build_long(segments)
        self._cohort_stats = self._with_segments(pl.DataFrame(core.cohorts()), segments)

    # ----------------------------------------------------------------------------------------------
    def _with_segments(self, frame: pl.DataFrame, segments: pl.DataFrame | None) -> pl.DataFrame:
        # The engine's code column is renamed first: a `by` column may well be called "segment".
        frame = frame.rename({"segment": SEGMENT_CODE})
        if self.by and segments is not None:
            frame = frame.join(segments, on=SEGMENT_CODE, how="left", maintain_order="left")
            frame = frame.select([*self.by, pl.exclude([*self.by, SEGMENT_CODE])])
            frame = frame.sort([*self.by, "cohort"], nulls_last=True, maintain_order=True)
        return frame.drop(SEGMENT_CODE, strict=False)

    def _build_long(self, segments: pl.DataFrame | None) -> pl.DataFrame:
        cells = pl.DataFrame(self._core.cells()).with_columns(
            pl.col("age").cast(pl.Int32),
            pl.col("cohort_size", "orders", "payers", "retained", "active").cast(pl.Int64),
        )
        cells = self._with_segments(cells, segments)
        if self.by:
            cells = cells.sort([*self.by, "cohort", "age"], nulls_last=True, maintain_order=True)
        # The exact revenue (Decimal at `scale`), row for row with the long table once it is sorted.
        self._revenue_exact = cells.get_column("revenue_exact")
        # Likewise the exact profit (null without a cost column).
        self._profit_exact = cells.get_column("profit_exact")
        return cells.drop("revenue_exact", "profit_exact")

    def _long_with_exact_revenue(self) -> pl.DataFrame:
        """The long table with ``revenue_exact`` (Decimal): for sums taken exactly, then converted once."""
        return self._long.with_columns(self._revenue_exact)

    def _long_with_exact_profit(self) -> pl.DataFrame:
        """The long table with ``profit_exact`` (Decimal; null without a cost column): the exact gross
        profit of each cell, amount − cost over its orders, refunds included."""
        return self._long.with_columns(self._profit_exact)

    # ----------------------------------------------------------------------------------------------
    def to_polars(self) -> pl.DataFrame:
        """One row per (segment…, cohort, age): the canonical long table."""
        return self._long.clone()

    def to_arrow(self) -> pa.Table:
        return self._long.to_arrow()

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._long.__arrow_c_stream__(requested_schema)

    def cohort_stats(self) -> pl.DataFrame:
        """One row per (segment…, cohort): ``cohort_size``, ``customers`` (members with a paying order
        within the complete ages) and ``repeaters`` (two or more paying orders within them)."""
        return self._cohort_stats.with_columns(pl.col("cohort_size", "customers", "repeaters").cast(pl.Int64))

    @property
    def reconciliation(self) -> pl.DataFrame:
        """``reason, rows, amount`` over the orders; rows sum to the input rows, amount exactly to
        the input's finite amounts (Decimal at ``scale``)."""
        recon = self._recon("orders")
        assert recon is not None  # the orders always have one
        return recon

    @property
    def signups_reconciliation(self) -> pl.DataFrame | None:
        return self._recon("signups")

    @property
    def activity_reconciliation(self) -> pl.DataFrame | None:
        return self._recon("activity")

    def _recon(self, table: str) -> pl.DataFrame | None:
        stream = self._core.reconciliation(table)
        if stream is None:
            return None
        return pl.DataFrame(stream).with_columns(pl.col("rows").cast(pl.Int64))

    @property
    def cohorts(self) -> list[dt.date]:
        """Reported cohorts (first day of each period), sorted."""
        return sorted(set(self._long.get_column("cohort").to_list()))

    @property
    def segments(self) -> pl.DataFrame | None:
        """Distinct segment values in table order (None without ``by``)."""
        if not self.by:
            return None
        return self._long.select(self.by).unique(maintain_order=True)

    def to_numpy(self, measure: str = "revenue") -> np.ndarray:
        """A dense float array of one measure: ``(cohort, age)``, or ``(segment, cohort, age)`` with
        ``by``. Cells not yet observed (and cohorts a segment lacks) are NaN."""
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
        cohorts = self.cohorts
        c_index = {c: i for i, c in enumerate(cohorts)}
        frame = self._long
        h = self.horizon
        if not self.by:
            out = np.full((len(cohorts), h), np.nan)
            seg_idx = None
        else:
            segs = self.segments
            assert segs is not None
            keyed = segs.with_row_index("__seg")
            frame = frame.join(keyed, on=self.by, how="left", nulls_equal=True, maintain_order="left")
            out = np.full((segs.height, len(cohorts), h), np.nan)
            seg_idx = frame.get_column("__seg").to_numpy()
        ci = np.array([c_index[c] for c in frame.get_column("cohort").to_list()], dtype=np.int64)
        ages = frame.get_column("age").to_numpy()
        values = frame.get_column(measure).cast(pl.Float64).fill_null(np.nan).to_numpy()
        if seg_idx is None:
            out[ci, ages] = values
        else:
            out[seg_idx, ci, ages] = values
        return out

    def pivot(self, measure: str = "ltr") -> pl.DataFrame:
        """The classic wide cohort grid of one measure: one row per (segment…, cohort), in table
        order, with the ``by`` columns first, then ``cohort``, ``cohort_size`` and one column per age
        named ``"0"``, ``"1"``, … ``str(horizon - 1)``. A cell not yet complete is null (never 0).

        ``measure``: a long-table measure (``revenue``, ``payers``, …) or ``cum_revenue``, ``ltr``,
        ``paying_retention``, ``activity_retention`` (null without activity), ``retention_rate``,
        ``arppu``, ``arppu_net``, ``aov`` or ``aov_net``, as the matching methods define them. Ratios
        are fractions (0.25, not 25). Raises ``InvalidArgumentError`` for another name."""
        long = self._cell_measure(measure)
        keys = [*self.by, "cohort"]
        ages = [str(a) for a in range(self.horizon)]
        index = long.select([*keys, "cohort_size"]).unique(keys, keep="first", maintain_order=True)
        if long.height == 0:
            return index.with_columns([pl.lit(None, long.schema["__value"]).alias(a) for a in ages])
        # The row index keeps the table's order and makes null `by` values plain join keys.
        index = index.with_row_index("__row")
        cells = long.join(index.select([*keys, "__row"]), on=keys, how="left", nulls_equal=True)
        wide = cells.pivot(on="age", index="__row", values="__value", sort_columns=False)
        wide = wide.rename({c: str(c) for c in wide.columns})
        missing = [pl.lit(None, long.schema["__value"]).alias(a) for a in ages if a not in wide.columns]
        wide = wide.with_columns(missing)
        return index.join(wide, on="__row", how="left").sort("__row").select([*keys, "cohort_size", *ages])

    def _cell_measure(self, measure: str) -> pl.DataFrame:
        """``by…, cohort, age, cohort_size, __value`` in table order: the measure, null where the
        cell is not complete."""
        if measure not in PIVOT_MEASURES:
            raise InvalidArgumentError(f"measure must be one of {', '.join(PIVOT_MEASURES)}; got {measure!r}")
        keys = [*self.by, "cohort"]
        base = self._long.select([*keys, "age", "cohort_size", "complete"])
        if measure in MEASURES:
            values = self._long.select(pl.col(measure).alias("__value"))
        else:
            frame = DERIVED_MEASURES[measure](self)
            # each metrics function keeps the long table's row order; the join checks it anyway
            values = base.select([*keys, "age"]).join(
                frame.select([*keys, "age", pl.col(measure).alias("__value")]),
                on=[*keys, "age"], how="left", nulls_equal=True, maintain_order="left",
            ).select("__value")
        out = pl.concat([base, values], how="horizontal")
        return out.select(
            [*keys, "age", "cohort_size", pl.when(pl.col("complete")).then(pl.col("__value")).alias("__value")]
        )

    # ----------------------------------------------------------------------------------------------
    # Unit economics (see ``ltrcore.metrics`` for the definitions)

    def ltr(self) -> pl.DataFrame:
        """The LTR curve: cumulative revenue per cohort member at each age (``ltr``, ``ltr_horizon``)."""
        return _metrics.ltr(self)

    def arppu(self) -> pl.DataFrame:
        """Revenue per paying user in each cell."""
        return _metrics.arppu(self)

    def aov(self) -> pl.DataFrame:
        """Average order value in each cell."""
        return _metrics.aov(self)

    def retention(self) -> pl.DataFrame:
        """Paying retention and (with activity) activity retention in each cell."""
        return _metrics.retention(self)

    def retention_rate(self, store_wide: bool = False) -> pl.DataFrame:
        """Buyers of the previous period who bought again ÷ buyers of the previous period, per cohort
        and age, or per calendar period over all cohorts (``store_wide``)."""
        return _metrics.retention_rate(self, store_wide=store_wide)

    def repeat_rate(self) -> pl.DataFrame:
        """Repeaters (two or more paying orders within the complete ages) ÷ cohort size
        (``repeat_rate``) and ÷ customers (``repeat_rate_of_customers``)."""
        return _metrics.repeat_rate(self)

    def project(self, method: str = "chain_ladder", min_cohorts: int = 3, min_size: int = 30) -> pl.DataFrame:
        """The LTR curve with not-yet-observed cells projected (``projected``, ``small_cohort`` flags)."""
        return _metrics.project(self, method=method, min_cohorts=min_cohorts, min_size=min_size)

    def metrics(
        self,
        spend: Any = None,
        margin: float | str | None = None,
        discount_rate: float = 0.0,
        cac: Any = None,
        projected: bool | Literal["auto"] = False,
    ) -> pl.DataFrame:
        """Per cohort: LTR, LTV, CLV (per signup and per customer), customer equity, CAC, LTV/CAC, net
        value, DRR, ROMI, payback, verdict with its basis, and advice. ``projected``: False (observed
        to date), True (chain-ladder to the horizon) or "auto" (projected where a projection exists)."""
        return _metrics.metrics(self, spend=spend, margin=margin, discount_rate=discount_rate, cac=cac, projected=projected)

    def channels(
        self,
        spend: Any = None,
        margin: float | str | None = None,
        discount_rate: float = 0.0,
        cac: Any = None,
        projected: bool | Literal["auto"] = "auto",
    ) -> pl.DataFrame:
        """One row per channel (``by`` value) pooled over its cohorts, then a ``total`` row: signups,
        customers, spend, CAC, LTR and LTV per customer at the horizon (observed and projected),
        LTV/CAC with verdict and basis, payback, DRR, ROMI and customer equity."""
        return _metrics.channels(self, spend=spend, margin=margin, discount_rate=discount_rate, cac=cac, projected=projected)

    def summary(
        self,
        spend: Any = None,
        margin: float | str | None = None,
        discount_rate: float = 0.0,
        cac: Any = None,
        min_size: int = 30,
        projected: bool | Literal["auto"] = "auto",
    ) -> str:
        """A short plain-language report: best and worst cohorts and channels, verdicts, payback, next
        step, on projected values where a projection exists (``projected="auto"``). Cohorts with fewer
        than ``min_size`` members are never named best or worst."""
        return _metrics.summary(
            self, spend=spend, margin=margin, discount_rate=discount_rate, cac=cac, min_size=min_size, projected=projected
        )

    def to_html(self, path: Any = None, **kwargs: Any) -> str:
        """A self-contained HTML report (charts inlined as SVG; needs matplotlib). ``kwargs`` go to
        ``ltrcore.report.render_html`` (``spend``, ``margin``, ``discount_rate``, ``cac``, ``title``).
        With ``path`` the report is also written there (UTF-8)."""
        from .report import render_html

        out = render_html(self, **kwargs)
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(out)
        return out

    # ----------------------------------------------------------------------------------------------
    def _grid(self) -> tuple[list[str], list[list[str]], list[tuple[Any, ...]]]:
        """Header, rows and each row's segment key of a compact grid: cohort, size, then LTR
        (cumulative revenue per member) at each age; blank where not yet observed."""
        wide = self.pivot("ltr")
        ages = [str(a) for a in range(self.horizon)]
        header = [*self.by, "cohort", "size", *ages]
        rows: list[list[str]] = []
        keys: list[tuple[Any, ...]] = []
        for r in wide.iter_rows(named=True):
            segment = tuple(r[b] for b in self.by)
            labels = ["∅" if v is None else str(v) for v in (*segment, r["cohort"])]
            cells = ["" if r[a] is None else f"{r[a]:,.2f}" for a in ages]
            rows.append([*labels, str(r["cohort_size"]), *cells])
            keys.append(segment)
        return header, rows, keys

    def __repr__(self) -> str:
        header, rows, _ = self._grid()
        shown = rows[:24]
        widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
        lines = [
            f"CohortTable: {len(rows)} cohort(s) × {self.horizon} {self.period}(s), tz={self.tz}, "
            f"by={self.by or None}, last complete {self.period}: {self.last_complete}",
            "LTR (cumulative revenue per member) by age:",
            "  ".join(h.rjust(w) for h, w in zip(header, widths)),
        ]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in shown]
        if len(rows) > len(shown):
            lines.append(f"… {len(rows) - len(shown)} more cohort(s)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The notebook grid: numbers right-aligned, cells shaded by value (one scale for the whole
        grid), rows banded per segment (alternating by ``by`` value), at most ``HTML_MAX_ROWS`` rows
        with a note saying how many are shown. Styles are inline: notebook front ends drop ``<style>``."""
        header, rows, keys = self._grid()
        fixed = len(self.by) + 2
        shown = rows[:HTML_MAX_ROWS]
        numbers = [float(c.replace(",", "")) for r in shown for c in r[fixed:] if c]
        top = max(numbers, default=0.0) or 1.0
        th = "padding:2px 6px;border-bottom:1px solid #9aa5b1;"
        heads = [f"<th style='{th}text-align:left'>{html.escape(h)}</th>" for h in header[: fixed - 1]]
        heads += [f"<th style='{th}text-align:right'>{html.escape(h)}</th>" for h in header[fixed - 1 :]]
        note = (
            f"showing {len(shown)} of {len(rows)} rows (table.pivot('ltr') has them all)"
            if len(rows) > len(shown) else f"{len(rows)} rows"
        )
        out = [
            "<div class='ltrcore-cohorts'>",
            f"<p><b>CohortTable</b>: {len(rows)} cohort(s) × {self.horizon} {html.escape(self.period)}(s), "
            f"tz {html.escape(self.tz)}; LTR (cumulative revenue per member) by age, blank = not yet observed</p>",
            "<table><thead><tr>" + "".join(heads) + "</tr></thead><tbody>",
        ]
        band, previous = 0, None
        num = "text-align:right;font-variant-numeric:tabular-nums;padding:2px 6px;"
        for r, key in zip(shown, keys):
            if self.by and previous is not None and key != previous:
                band ^= 1
            previous = key
            row_style = f" class='segment-band-{band}'" + (" style='background:#eef2f7'" if band else "")
            tds = [f"<td style='text-align:left;padding:2px 6px'>{html.escape(c)}</td>" for c in r[: fixed - 1]]
            tds.append(f"<td style='{num}'>{html.escape(r[fixed - 1])}</td>")
            for c in r[fixed:]:
                if c:
                    share = max(0.0, float(c.replace(",", ""))) / top
                    tds.append(f"<td style='{num}background:rgba(31,119,180,{0.1 + 0.7 * share:.2f})'>{c}</td>")
                else:
                    tds.append(f"<td style='{num}'></td>")
            out.append(f"<tr{row_style}>" + "".join(tds) + "</tr>")
        out.append(f"</tbody></table><p class='ltrcore-note'><i>{html.escape(note)}</i></p></div>")
        return "\n".join(out)
