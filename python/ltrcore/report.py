"""A self-contained HTML report of a ``CohortTable``.

``render_html(table, spend=..., margin=...)`` returns one HTML document with no external resource (no
CDN, font, script or image): the charts are drawn with matplotlib (``Figure`` objects on the Agg
canvas, never pyplot, so the caller's backend and figures are untouched) and inlined as SVG. Sections,
in order: the table per channel (pooled over cohorts, with the total), parameters and as-of date, the
plain-language summary (with spend or cac), heatmaps of paying retention, activity retention (with
activity) and LTR (cohort × age, segments pooled), the same heatmaps per segment (small multiples on
one colour scale per measure, the ``MAX_PANELS`` largest segments), the curves (cumulative margin, or
revenue at margin 1, per customer against CAC when spend or cac is given, else LTR per signup), ARPPU
by age, the metrics table with coloured verdicts and their basis, and the reconciliation tables.
Every colour bar is in its cells' unit (percent or money). Every text is escaped with ``html.escape``.

matplotlib is an optional dependency (``pip install 'ltrcore[report]'``); it is imported only here.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from . import metrics as _metrics
from .exceptions import LtrcoreError

if TYPE_CHECKING:
    from .table import CohortTable

__all__ = ["render_html"]

MISSING_MATPLOTLIB = "the HTML report needs matplotlib: pip install 'ltrcore[report]'"

#: Background / text colours of the verdict bands.
VERDICT_STYLE = {
    _metrics.HEALTHY: ("#d7f0dc", "#1d6b32"),
    _metrics.MARGINAL: ("#fdecc8", "#8a5a00"),
    _metrics.LOSING: ("#f9d6d5", "#a12622"),
}

#: The verdicts beside the three bands: too early to tell (grey), spend without customers (dark red).
CAUTION_STYLE = {
    _metrics.TOO_EARLY: ("#e4e7eb", "#3e4c59"),
    _metrics.TOO_EARLY_NO_CUSTOMERS: ("#e4e7eb", "#3e4c59"),
    _metrics.NO_CUSTOMERS: ("#a12622", "#ffffff"),
}


def _verdict_style(verdict: str | None) -> tuple[str, str] | None:
    return VERDICT_STYLE.get(verdict or "") or CAUTION_STYLE.get(verdict or "")


RECON_HELP = {
    "used": "attributed to a complete cell",
    "null_user": "no user id",
    "null_ts": "no timestamp",
    "bad_ts": "timestamp text that does not parse (ISO-8601, or ts_format)",
    "ts_out_of_range": "timestamp's local date outside years 1-9999",
    "null_amount": "no amount",
    "nan_amount": "amount is NaN or infinite",
    "unknown_user": "user not in the signups table",
    "never_paid": "user never placed a paying order",
    "before_cohort": "dated before the user's cohort period",
    "beyond_horizon": "age at or beyond the horizon",
    "before_since": "cohort starts before tracking began (since)",
    "not_yet_complete": "period not over at the as-of date",
    "duplicate_user": "user listed again (earliest signup kept)",
}

MAX_PANELS = 12  # LTR-curve and per-segment heatmap panels drawn; the largest segments by signups

#: The cohort heatmaps: (``table.pivot`` measure, title, colour map, unit of the cells and the colour
#: bar, colour-bar label, first age the colour scale is fitted to). Activity retention only with activity.
HEATMAPS = (
    ("paying_retention", "Paying retention", "YlGnBu", "percent", "payers ÷ cohort size", 1),
    ("activity_retention", "Activity retention", "PuRd", "percent", "active users ÷ cohort size", 1),
    ("ltr", "LTR", "Greens", "money", "LTR: cumulative revenue per signup", 0),
)
_CELL_FORMAT = {
    "percent": lambda v: f"{v:.0%}" if v >= 0.095 else f"{v:.1%}",
    "money": lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}",
}
SEG = "__segment"

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --head: #f0f4f8; --accent: #1f5f99; }
* { box-sizing: border-box; }
body { margin: 0; background: #ffffff; color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
p.sub { color: var(--muted); margin: 0 0 14px; font-size: 15px; }
p.note, figcaption { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
nav { font-size: 13px; margin: 6px 0 10px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
dl.params { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 4px 18px;
            background: var(--head); padding: 12px 16px; border-radius: 6px; margin: 8px 0; }
dl.params dt { color: var(--muted); }
dl.params dd { margin: 0; font-weight: 600; }
.summary { background: #f7fafc; border-left: 4px solid var(--accent); padding: 10px 16px; border-radius: 4px; }
.summary p { margin: 3px 0; }
.summary p.indent { margin-left: 22px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; flex: 1 1 600px; min-width: 0; }
figure svg { max-width: 100%; height: auto; display: block; }
table.data { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 14px; }
table.data th, table.data td { border: 1px solid var(--line); padding: 3px 8px; white-space: nowrap; }
table.data td.wrap { white-space: normal; }
table.data tr.group td { border-top: 2px solid #9aa5b1; }
table.data th { background: var(--head); text-align: left; white-space: normal; vertical-align: bottom; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.total td { font-weight: 700; background: var(--head); }
table.data tr.zero td { color: #9aa5b1; }
td.neg { color: #a12622; }
td.verdict { font-weight: 600; }
.legend { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; font-size: 13px; }
.legend span.badge { padding: 1px 8px; border-radius: 3px; font-weight: 600; }
.recons { display: flex; flex-wrap: wrap; gap: 0 36px; align-items: flex-start; }
.scroll { overflow-x: auto; max-width: 100%; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------------
# formatting


def _money(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:,.2f}"


def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:,.{digits}f}"


def _int(v: Any) -> str:
    return "" if v is None else f"{int(v):,}"


def _period_label(day: dt.date, period: str) -> str:
    if period == "month":
        return day.strftime("%Y-%m")
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return day.isoformat()


def _segment_label(table: CohortTable, row: dict[str, Any]) -> str:
    return ", ".join(f"{b}={'∅' if row[b] is None else row[b]}" for b in table.by)


def _mpl_text(text: str) -> str:
    """A label safe from matplotlib's mathtext (a ``$`` pair would be parsed as TeX)."""
    return text.replace("$", r"\$")


# --------------------------------------------------------------------------------------------------
# data for the charts


def _with_segment(table: CohortTable, frame: pl.DataFrame) -> pl.DataFrame:
    if not table.by:
        return frame.with_columns(pl.lit("all").alias(SEG))
    parts = [pl.col(b).cast(pl.String).fill_null("∅") for b in table.by]
    return frame.with_columns(pl.concat_str(parts, separator=" · ").alias(SEG))


def _pooled_grid(table: CohortTable) -> tuple[list[dt.date], np.ndarray, dict[str, np.ndarray]]:
    """Cohorts, the (cohort × age) cohort sizes and the revenue, payers and active arrays pooled over
    segments. A measure is NaN where the cell is not yet observed (``active`` everywhere without
    activity)."""
    cohorts = table.cohorts
    h = table.horizon
    size = np.zeros((len(cohorts), h))
    sums = {name: np.full((len(cohorts), h), np.nan) for name in ("revenue", "payers", "active")}
    if not cohorts:
        return cohorts, size, sums
    pooled = (
        table.to_polars()
        .group_by(["cohort", "age"])
        .agg(
            pl.col("cohort_size").sum().cast(pl.Float64),
            *(pl.col(name).sum().cast(pl.Float64) for name in ("revenue", "payers")),
            # null without activity: a sum of nulls would be 0
            pl.when(pl.col("active").is_not_null().any()).then(pl.col("active").sum()).cast(pl.Float64).alias("active"),
            pl.col("complete").all(),
        )
    )
    index = {c: i for i, c in enumerate(cohorts)}
    ci = np.array([index[c] for c in pooled.get_column("cohort").to_list()], dtype=np.int64)
    ages = pooled.get_column("age").to_numpy().astype(np.int64)
    done = pooled.get_column("complete").to_numpy().astype(bool)
    size[ci, ages] = pooled.get_column("cohort_size").to_numpy()
    for name, grid in sums.items():
        grid[ci[done], ages[done]] = pooled.get_column(name).fill_null(np.nan).to_numpy()[done]
    return cohorts, size, sums


def _has_activity(table: CohortTable) -> bool:
    return table.activity_reconciliation is not None


def _largest_segments(table: CohortTable) -> list[str]:
    """Segment labels, largest first by signups (ties in table order)."""
    stats = _with_segment(table, table.cohort_stats())
    sizes = stats.group_by(SEG, maintain_order=True).agg(pl.col("cohort_size").sum())
    return sizes.sort("cohort_size", descending=True, maintain_order=True).get_column(SEG).to_list()


def _segment_grids(table: CohortTable, measure: str, segs: list[str]) -> np.ndarray:
    """``table.pivot(measure)`` as a (segment × cohort × age) array over every cohort of the table,
    NaN where a cell is not observed or a segment lacks the cohort."""
    cohorts = table.cohorts
    ages = [str(a) for a in range(table.horizon)]
    out = np.full((len(segs), len(cohorts), table.horizon), np.nan)
    wide = _with_segment(table, table.pivot(measure))
    index = {c: i for i, c in enumerate(cohorts)}
    where = {s: i for i, s in enumerate(segs)}
    for r in wide.iter_rows(named=True):
        k = where.get(r[SEG])
        if k is not None:
            out[k, index[r["cohort"]]] = [np.nan if r[a] is None else float(r[a]) for a in ages]
    return out


def _margin_word(margin: float | str | None, has_profit: bool = False) -> str:
    """What the curves plot: "profit" when the orders carry their cost, "revenue" when no margin was
    given, else "margin" (a margin of 1 is the caller's statement, not an assumption)."""
    return "profit" if has_profit else "revenue" if margin is None else "margin"


def _curves_title(money: bool, margin: float | str | None, has_profit: bool = False) -> str:
    """The curves plot cumulative margin (profit, or revenue without a margin) per acquired customer
    against CAC when there is an acquisition cost, else LTR: cumulative revenue per signup."""
    if money:
        return f"Cumulative {_margin_word(margin, has_profit)} per customer against CAC, by cohort"
    return "LTR curves: cumulative revenue per signup, by cohort"


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & (den != 0)
    out[ok] = num[ok] / den[ok]
    return out


# --------------------------------------------------------------------------------------------------
# charts


class _Charts:
    """Builds matplotlib figures and turns them into inline SVG."""

    def __init__(self) -> None:
        try:
            import matplotlib
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.colors import ListedColormap, Normalize, PowerNorm
            from matplotlib.figure import Figure
        except ImportError:
            raise LtrcoreError(MISSING_MATPLOTLIB) from None
        self.mpl = matplotlib
        self.Figure = Figure
        self.Canvas = FigureCanvasAgg
        self.ListedColormap = ListedColormap
        self.Normalize = Normalize
        self.PowerNorm = PowerNorm
        self.count = 0
        self.rc = {
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": False,
            "legend.fontsize": 8,
            "legend.frameon": False,
            "svg.fonttype": "path",  # glyphs as paths: no font needed to view the file
            "svg.image_inline": True,
        }

    def figure(self, width: float, height: float) -> Any:
        fig = self.Figure(figsize=(width, height), layout="constrained")
        self.Canvas(fig)  # the Agg canvas, set on this figure only
        return fig

    def svg(self, fig: Any, label: str) -> str:
        self.count += 1
        buf = io.StringIO()
        # A fixed salt per chart: ids are unique across the inlined charts and the output is reproducible.
        with self.mpl.rc_context({"svg.hashsalt": f"ltrcore-report-{self.count}"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        text = buf.getvalue()
        text = re.sub(r"<\?xml[^>]*\?>", "", text)
        text = re.sub(r"<!DOCTYPE[^>]*>", "", text)
        text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
        text = re.sub(r"<!--.*?-->", "", text, flags=re.S)  # matplotlib echoes every label in comments
        text = text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)
        return text.strip()

    def empty(self, title: str, message: str) -> Any:
        fig = self.figure(6.6, 2.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(_mpl_text(title), loc="left")
        ax.text(0.5, 0.5, _mpl_text(message), ha="center", va="center", color="#616e7c", transform=ax.transAxes)
        return fig

    # ----------------------------------------------------------------------------------------------
    def _norm(self, values: np.ndarray, gamma: float, scale_from_age: int) -> tuple[Any, bool]:
        """The colour scale over the finite values (from 0), and whether its top is clipped: fitted
        to ages ``scale_from_age`` and later, so age 0 (100 % in first-purchase cohorts) does not
        flatten the rest."""
        finite = values[np.isfinite(values)]
        lo, hi = float(min(0.0, finite.min())), float(finite.max())
        later = values[..., scale_from_age:]
        if scale_from_age and np.isfinite(later).any():
            hi = float(np.nanmax(later))
        if hi <= lo:
            hi = lo + 1.0
        norm = self.PowerNorm(gamma, vmin=lo, vmax=hi) if gamma != 1.0 and lo >= 0 else self.Normalize(lo, hi)
        return norm, float(finite.max()) > hi

    def _colorbar(self, fig: Any, image: Any, ax: Any, unit: str, label: str, clipped: bool, **kwargs: Any) -> Any:
        """A colour bar in the cells' unit: percent for shares (cells 0.25 read "25%"), money with
        thousands separators for amounts."""
        from matplotlib.ticker import FuncFormatter, PercentFormatter

        if unit == "percent":
            fmt: Any = PercentFormatter(xmax=1.0, decimals=0 if image.norm.vmax >= 0.1 else 1)
        else:
            digits = 0 if image.norm.vmax >= 20 else 1 if image.norm.vmax >= 2 else 2
            fmt = FuncFormatter(lambda x, _: f"{x:,.{digits}f}")
        bar = fig.colorbar(image, ax=ax, format=fmt, extend="max" if clipped else "neither", **kwargs)
        bar.set_label(_mpl_text(label))
        return bar

    def _axes_grid(self, ax: Any, table: CohortTable, cohorts: list[dt.date], h: int) -> None:
        n = len(cohorts)
        step = max(1, math.ceil(h / 24))
        ax.set_xticks(range(0, h, step))
        rstep = max(1, math.ceil(n / 40))
        ax.set_yticks(range(0, n, rstep))
        ax.set_yticklabels([_period_label(c, table.period) for c in cohorts[::rstep]])
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)

    def heatmap(
        self,
        table: CohortTable,
        cohorts: list[dt.date],
        values: np.ndarray,
        title: str,
        cmap_name: str,
        fmt: Any,
        unit: str,
        label: str,
        gamma: float = 1.0,
        scale_from_age: int = 0,
    ) -> Any:
        """One cohort × age heatmap; ``unit`` ("percent" or "money") is the cells' and the colour bar's."""
        if not cohorts or not np.isfinite(values).any():
            return self.empty(title, "no complete cells yet")
        n, h = values.shape
        width = min(14.0, max(6.6, 2.2 + 0.42 * h))
        height = min(22.0, max(3.0, 1.3 + 0.24 * n))
        fig = self.figure(width, height)
        ax = fig.add_subplot()
        cmap = self.mpl.colormaps[cmap_name].with_extremes(bad="#ffffff")
        norm, clipped = self._norm(values, gamma, scale_from_age)
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(_mpl_text(title), loc="left", fontweight="bold")
        ax.set_xlabel(f"age ({table.period}s since the cohort's {table.period})")
        ax.set_ylabel("cohort")
        self._axes_grid(ax, table, cohorts, h)
        if n * h <= 900 and h <= 24:
            size = 7 if h <= 12 else 6
            for i in range(n):
                for j in range(h):
                    v = values[i, j]
                    if np.isfinite(v):
                        dark = norm(v) > 0.6
                        ax.text(j, i, fmt(v), ha="center", va="center", fontsize=size, in_layout=False,
                                color="white" if dark else "#1f2933")
        self._colorbar(fig, image, ax, unit, label, clipped, shrink=0.6, pad=0.01)
        return fig

    def heatmaps_by_segment(
        self,
        table: CohortTable,
        segs: list[str],
        values: np.ndarray,
        title: str,
        cmap_name: str,
        unit: str,
        label: str,
        gamma: float = 1.0,
        scale_from_age: int = 0,
    ) -> Any:
        """Small multiples: one cohort × age panel per segment (``values`` is segment × cohort × age)
        on one shared colour scale, so the panels compare at a glance. No cell labels: the colour bar
        reads the cells (labels on every panel would make the file several MB)."""
        cohorts = table.cohorts
        if not cohorts or not np.isfinite(values).any():
            return self.empty(title, "no complete cells yet")
        k, n, h = values.shape
        ncols = min(3, k)
        nrows = math.ceil(k / ncols)
        panel_h = min(6.0, max(1.8, 0.5 + 0.13 * n))
        fig = self.figure(13.0 if ncols > 1 else 7.0, 0.5 + panel_h * nrows)
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        cmap = self.mpl.colormaps[cmap_name].with_extremes(bad="#ffffff")
        norm, clipped = self._norm(values, gamma, scale_from_age)
        image = None
        for idx, ax in enumerate(axes.flat):
            if idx >= k:
                ax.set_axis_off()
                continue
            image = ax.imshow(np.ma.masked_invalid(values[idx]), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_title(_mpl_text(segs[idx]), loc="left", fontsize=9.5, fontweight="bold")
            self._axes_grid(ax, table, cohorts, h)  # shared y: the inner panels hide the labels
            if idx % ncols == 0:
                ax.set_ylabel("cohort")
            if idx // ncols == nrows - 1 or idx + ncols >= k:
                ax.set_xlabel(f"age ({table.period}s)")
                ax.xaxis.set_tick_params(labelbottom=True)
        fig.suptitle(_mpl_text(title), x=0.01, ha="left", fontsize=10, fontweight="bold")
        self._colorbar(fig, image, axes, unit, label, clipped, shrink=0.7, pad=0.01, aspect=30)
        return fig

    # ----------------------------------------------------------------------------------------------
    def curves(self, table: CohortTable, money: bool, spend: Any, margin: Any, discount_rate: float, cac: Any, m: pl.DataFrame) -> Any:
        """LTR curves by cohort, one panel per segment. With money: cumulative margin per customer
        against the segment's CAC per customer (dashed line)."""
        curve = _with_segment(table, table.ltr()).filter(pl.col("complete"))
        keys = [*table.by, "cohort"]
        if table.has_profit:  # each cohort's exact cumulative profit, age by age
            profit = table.to_polars().select([*keys, "age", pl.col("profit").cum_sum().over(keys, order_by="age").alias("__cum_value")])
            curve = curve.join(profit, on=[*keys, "age"], how="left", nulls_equal=True)
        title = _curves_title(money, margin, table.has_profit)
        if curve.height == 0:
            return self.empty(title, "no complete cells yet")
        cohorts = table.cohorts
        index = {c: i for i, c in enumerate(cohorts)}
        mm = _with_segment(table, m)
        if money:
            per = mm.select(
                [*keys, SEG, "customers", "spend",
                 # the cohort's margin, also when it comes from a spend-table column
                 (pl.when(pl.col("ltr") != 0).then(pl.col("ltv") / pl.col("ltr")).otherwise(
                     pl.lit(1.0 if margin is None else float(margin)) if not isinstance(margin, str) else None)).alias("__margin")]
            )
            curve = curve.join(per.drop(SEG), on=keys, how="left", nulls_equal=True)
            value = pl.col("__cum_value") if table.has_profit else pl.col("__margin") * pl.col("cum_revenue")
            curve = curve.with_columns(
                pl.when(pl.col("customers") > 0)
                .then(value / pl.col("customers"))
                .otherwise(None)
                .alias("__y"),
                value.alias("__num"),
                pl.col("customers").cast(pl.Float64).alias("__den"),
            )
            cac_by_seg = {
                r[SEG]: (r["spend"] / r["customers"] if r["customers"] else None)
                for r in mm.filter(pl.col("spend").is_not_null())
                .group_by(SEG)
                .agg(pl.col("spend").sum(), pl.col("customers").filter(pl.col("spend").is_not_null()).sum())
                .iter_rows(named=True)
            }
        else:
            curve = curve.with_columns(
                pl.col("ltr").alias("__y"),
                pl.col("cum_revenue").alias("__num"),
                pl.col("cohort_size").cast(pl.Float64).alias("__den"),
            )
            cac_by_seg = {}
        sizes = mm.group_by(SEG, maintain_order=True).agg(pl.col("cohort_size").sum()).sort("cohort_size", descending=True, maintain_order=True)
        segs = sizes.get_column(SEG).to_list()[:MAX_PANELS]
        if table.by:
            segs.sort(key=lambda s: -sizes.filter(pl.col(SEG) == s).get_column("cohort_size")[0])
        k = len(segs)
        ncols = min(3, k)
        nrows = math.ceil(k / ncols)
        fig = self.figure(13.0 if ncols > 1 else 9.0, 0.6 + 3.0 * nrows)
        axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
        base = self.mpl.colormaps["Blues"]
        cmap = self.ListedColormap(base(np.linspace(1.0, 0.35, 256)))  # oldest cohort dark, newest light
        norm = self.Normalize(0, max(1, len(cohorts) - 1))
        for idx, ax in enumerate(axes.flat):
            if idx >= k:
                ax.set_axis_off()
                continue
            seg = segs[idx]
            part = curve.filter(pl.col(SEG) == seg)
            for (cohort,), g in part.group_by(["cohort"], maintain_order=True):
                g = g.sort("age")
                ax.plot(g.get_column("age").to_numpy(), g.get_column("__y").cast(pl.Float64).to_numpy(),
                        color=cmap(norm(index[cohort])), lw=0.9, alpha=0.85)
            pooled = (
                part.group_by("age").agg(pl.col("__num").sum(), pl.col("__den").filter(pl.col("__num").is_not_null()).sum()).sort("age")
                .with_columns(pl.when(pl.col("__den") > 0).then(pl.col("__num") / pl.col("__den")).alias("__p"))
            )
            px = pooled.get_column("age").to_numpy()
            py = pooled.get_column("__p").cast(pl.Float64).to_numpy()
            ax.plot(px, py, color="#111111", lw=2.2, label="all cohorts (pooled)")
            head = seg if table.by else "all cohorts"
            sub = ""
            c = cac_by_seg.get(seg)
            if money and c is not None:
                ax.axhline(c, color="#c0392b", ls="--", lw=1.4, label="CAC per customer")
                ax.annotate(f"CAC {c:,.2f}", xy=(1.0, c), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                            textcoords="offset points", ha="right", va="bottom", color="#c0392b", fontsize=8, fontweight="bold",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}, zorder=6)
                reached = np.nonzero(np.isfinite(py) & (py >= c))[0]
                if reached.size:
                    a = int(px[reached[0]])
                    ax.plot([a], [py[reached[0]]], "o", color="#c0392b", ms=6, zorder=5)
                    sub = f" — pays back at age {a}"
                else:
                    sub = " — not paid back in the observed ages"
            lo, hi = ax.get_ylim()
            top = max(hi, c * 1.15) if money and c is not None else hi
            ax.set_ylim(min(0.0, lo), top)
            ax.set_title(_mpl_text(head + sub), loc="left", fontsize=9.5, fontweight="bold")
            ax.grid(True, color="#e4e7eb", lw=0.6)
            if idx % ncols == 0:
                ax.set_ylabel(f"cumulative {_margin_word(margin, table.has_profit)} / customer" if money else "LTR per signup")
            if idx // ncols == nrows - 1 or idx + ncols >= k:
                ax.set_xlabel(f"age ({table.period}s)")
                ax.xaxis.set_tick_params(labelbottom=True)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles))
        sm = self.mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(sm, ax=axes, shrink=0.7, pad=0.01, aspect=30)
        ticks = sorted({0, len(cohorts) // 2, len(cohorts) - 1})
        bar.set_ticks(ticks)
        bar.set_ticklabels([_period_label(cohorts[t], table.period) for t in ticks])
        bar.set_label("cohort (darker = older)")
        return fig

    # ----------------------------------------------------------------------------------------------
    def arppu(self, table: CohortTable) -> Any:
        title = "ARPPU by age (payments ÷ payers, complete cells pooled over cohorts)"
        long = _with_segment(table, table.to_polars()).filter(pl.col("complete"))
        if long.height == 0:
            return self.empty(title, "no complete cells yet")
        agg = [pl.col("payments").sum(), pl.col("payers").sum()]
        ratio = pl.when(pl.col("payers") > 0).then(pl.col("payments") / pl.col("payers")).alias("arppu")
        per = long.group_by([SEG, "age"]).agg(agg).with_columns(ratio).sort([SEG, "age"])
        overall = long.group_by("age").agg(agg).with_columns(ratio).sort("age")
        fig = self.figure(9.5, 4.2)
        ax = fig.add_subplot()
        if table.by:
            order = long.group_by(SEG).agg(pl.col("revenue").sum()).sort("revenue", descending=True)
            palette = self.mpl.colormaps["tab10"]
            for i, seg in enumerate(order.get_column(SEG).to_list()[:10]):
                g = per.filter(pl.col(SEG) == seg)
                ax.plot(g.get_column("age").to_numpy(), g.get_column("arppu").cast(pl.Float64).to_numpy(),
                        marker="o", ms=3, lw=1.5, color=palette(i % 10), label=_mpl_text(seg))
        ax.plot(overall.get_column("age").to_numpy(), overall.get_column("arppu").cast(pl.Float64).to_numpy(),
                color="#111111", lw=2.2, ls="--" if table.by else "-", marker="o", ms=3, label="all")
        ax.set_title(_mpl_text(title), loc="left", fontweight="bold")
        ax.set_xlabel(f"age ({table.period}s)")
        ax.set_ylabel("revenue per paying user")
        ax.grid(True, color="#e4e7eb", lw=0.6)
        ax.set_ylim(bottom=0)
        if table.by:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        return fig


# --------------------------------------------------------------------------------------------------
# HTML pieces


def _params(table: CohortTable, margin: Any, discount_rate: float, money: str) -> str:
    lc = table.last_complete
    if table.as_of is not None:
        as_of = str(table.as_of)
    elif lc is not None:
        as_of = f"{_metrics._next_period(lc, table.period)} (default: start of the last order's {table.period})"
    else:
        as_of = "default (start of the last order's period)"
    items = [
        ("period", table.period),
        ("time zone", table.tz),
        ("horizon", f"{table.horizon} {table.period}s (ages 0–{table.horizon - 1})"),
        ("segments (by)", ", ".join(table.by) if table.by else "none"),
        ("as of", as_of),
        (f"last complete {table.period}", _period_label(lc, table.period) if lc else "none"),
        ("margin", "from each order's cost (exact profit)" if table.has_profit
         else "not given: revenue-based figures, no LTV or verdict" if margin is None
         else f"column {margin!r} of the spend table" if isinstance(margin, str) else f"{float(margin):.4g}"),
        ("discount rate (annual)", f"{float(discount_rate):.1%}"),
        ("min_amount (paying order >)", table.min_amount),
        ("tracking since", table.since if table.since is not None else "all data"),
        ("acquisition cost", money),
        ("input order rows", f"{table.input_rows:,}"),
    ]
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f"<dl class='params'>{cells}</dl>"


def _summary(text: str) -> str:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cls = " class='indent'" if line.startswith(" ") else ""
        out.append(f"<p{cls}>{_e(line.strip())}</p>")
    return "<div class='summary'>" + "".join(out) + "</div>"


def _cells(table: CohortTable, r: dict[str, Any], cols: list[tuple[str, str, str]]) -> list[str]:
    """The ``<td>``s of one row: numbers right-aligned, the ratio and the verdict in the verdict's colours."""
    style = _verdict_style(r.get("verdict"))
    tds = []
    for name, _, kind in cols:
        v = r[name]
        if kind == "text":
            tds.append(f"<td>{_e('∅' if v is None and name in table.by else '' if v is None else v)}</td>")
        elif kind == "label":
            tds.append(f"<td>{_e(v)}</td>")
        elif kind == "cohort":
            tds.append(f"<td>{_e(_period_label(v, table.period) if v is not None else '')}</td>")
        elif kind == "int":
            tds.append(f"<td class='num'>{_e(_int(v))}</td>")
        elif kind in ("money", "ratio", "share"):
            cls = "num neg" if v is not None and v < 0 else "num"
            text = _money(v) if kind == "money" else _num(v) if kind == "ratio" else ("" if v is None else f"{v:.0%}")
            attr = f" style='background:{style[0]};color:{style[1]}'" if kind == "ratio" and style else ""
            tds.append(f"<td class='{cls}'{attr}>{_e(text)}</td>")
        else:  # verdict
            attr = f" style='background:{style[0]};color:{style[1]}'" if style else ""
            tds.append(f"<td class='verdict'{attr}>{_e(v or '')}</td>")
    return tds


def _channels_table(table: CohortTable, channels: pl.DataFrame, money: bool, profit: bool) -> str:
    """One row per channel pooled over its cohorts, and the total row. Without a margin
    (``profit`` false) revenue-based columns stand where LTV, verdicts and payback would."""
    cols: list[tuple[str, str, str]] = [
        ("__label", " / ".join(table.by) if table.by else "channel", "label"),
        ("cohorts", "cohorts", "int"),
        ("signups", "signups", "int"),
        ("customers", "customers", "int"),
    ]
    if money:
        cols += [("spend", "spend", "money"), ("cac", "CAC", "money")]
    value = "ltv" if profit else "ltr"
    cols += [
        (f"{value}_per_customer_observed", f"{value.upper()} / customer at the horizon, observed", "money"),
        (f"{value}_per_customer_projected", f"{value.upper()} / customer at the horizon, projected", "money"),
    ]
    if money and not profit:
        cols += [("ltr_cac", "LTR/CAC (revenue-based)", "ratio"), ("drr", "DRR (spend ÷ revenue)", "share")]
    if money and profit:
        cols += [
            ("ltv_cac", "LTV/CAC", "ratio"),
            ("verdict", "verdict", "verdict"),
            ("verdict_basis", "basis", "text"),
            ("payback", "payback", "text"),
            ("payback_status", "payback band", "text"),
            ("drr", "DRR (spend ÷ revenue)", "share"),
            ("romi", "ROMI", "share"),
        ]
    if profit:
        cols += [("clv_per_customer", "CLV / customer", "money"), ("customer_equity", "customer equity", "money")]
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols)
    rows = []
    for r in channels.iter_rows(named=True):
        segment = ", ".join("∅" if r[b] is None else str(r[b]) for b in table.by)
        r["__label"] = "all channels" if r["total"] else segment
        cls = " class='total'" if r["total"] else ""
        rows.append(f"<tr{cls}>" + "".join(_cells(table, r, cols)) + "</tr>")
    return (
        f"<div class='scroll'><table class='data channels'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _metrics_table(table: CohortTable, m: pl.DataFrame, money: bool, profit: bool) -> str:
    cols: list[tuple[str, str, str]] = [(b, b, "text") for b in table.by]
    cols += [
        ("cohort", "cohort", "cohort"),
        ("cohort_size", "cohort size", "int"),
        ("customers", "customers", "int"),
        ("observed_ages", "ages observed", "int"),
        ("revenue_to_date", "revenue to date", "money"),
        ("ltr", "LTR / signup", "money"),
    ]
    if profit:
        cols += [("ltv", "LTV / signup", "money"), ("clv", "CLV / signup", "money"), ("clv_per_customer", "CLV / customer", "money")]
    if money and not profit:
        cols += [("spend", "spend", "money"), ("cac", "CAC", "money"), ("ltr_cac", "LTR/CAC (revenue-based)", "ratio"),
                 ("drr", "DRR", "share")]  # fmt: skip
    if money and profit:
        cols += [
            ("spend", "spend", "money"),
            ("cac", "CAC", "money"),
            ("ltv_per_customer", "LTV / customer", "money"),
            ("ltv_cac", "LTV/CAC", "ratio"),
            ("net_value", "net value / customer", "money"),
            ("drr", "DRR", "share"),
            ("romi", "ROMI", "share"),
            ("payback", "payback", "text"),
            ("payback_status", "payback band", "text"),
            ("verdict", "verdict", "verdict"),
            ("verdict_basis", "basis", "text"),
        ]
    head = "".join(f"<th>{_e(h)}</th>" for _, h, _ in cols)
    rows: list[str] = []
    previous: Any = object()
    for r in m.iter_rows(named=True):
        segment = tuple(r[b] for b in table.by)
        group = " class='group'" if table.by and rows and segment != previous else ""
        previous = segment
        rows.append(f"<tr{group}>" + "".join(_cells(table, r, cols)) + "</tr>")
    return (
        f"<div class='scroll'><table class='data metrics'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _verdict_legend() -> str:
    items = []
    for verdict, (bg, fg) in {**VERDICT_STYLE, **CAUTION_STYLE}.items():
        items.append(
            f"<span class='badge' style='background:{bg};color:{fg}'>{_e(verdict)}</span>"
            f"<span>{_e(_metrics.ADVICE[verdict])}</span>"
        )
    return "<div class='legend'>" + "".join(items) + "</div>"


def _recon_table(name: str, frame: pl.DataFrame) -> str:
    has_amount = "amount" in frame.columns
    total_rows = int(frame.get_column("rows").sum())
    head = "<th>reason</th><th>meaning</th><th>rows</th><th>share</th>" + ("<th>amount</th>" if has_amount else "")
    rows = []
    total_amount = Decimal(0)
    for r in frame.iter_rows(named=True):
        n = int(r["rows"])
        share = f"{n / total_rows:.2%}" if total_rows else ""
        cls = " class='zero'" if n == 0 else ""
        tds = [
            f"<td>{_e(r['reason'])}</td>",
            f"<td class='wrap'>{_e(RECON_HELP.get(r['reason'], ''))}</td>",
            f"<td class='num'>{_e(f'{n:,}')}</td>",
            f"<td class='num'>{_e(share)}</td>",
        ]
        if has_amount:
            amount = r["amount"]
            if amount is not None:
                total_amount += Decimal(amount)
            tds.append(f"<td class='num'>{_e('' if amount is None else f'{amount:,}')}</td>")
        rows.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    total = f"<td>total</td><td>every input row, exactly once</td><td class='num'>{total_rows:,}</td><td class='num'>100.00%</td>"
    if has_amount:
        total += f"<td class='num'>{_e(f'{total_amount:,}')}</td>"
    rows.append(f"<tr class='total'>{total}</tr>")
    return (
        f"<div><h3>{_e(name)}</h3><table class='data recon'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# --------------------------------------------------------------------------------------------------


def render_html(
    table: CohortTable,
    *,
    spend: Any = None,
    margin: float | str | None = None,
    discount_rate: float = 0.0,
    cac: Any = None,
    title: str = "ltrcore cohort report",
) -> str:
    """One self-contained HTML document (no network needed to open it) reporting ``table``.

    ``spend``, ``margin``, ``discount_rate`` and ``cac`` are passed to ``table.metrics`` and
    ``table.summary``; with ``spend`` or ``cac`` the report adds CAC and, given a ``margin``, LTV/CAC,
    payback and verdicts (without a margin, revenue-based LTR/CAC and no verdict).
    Needs matplotlib (``pip install 'ltrcore[report]'``); raises ``LtrcoreError`` without it.
    """
    charts = _Charts()  # imports matplotlib (or raises) before any work
    money = spend is not None or cac is not None
    profit = _metrics._judges_profit(table, margin)
    m = table.metrics(spend=spend, margin=margin, discount_rate=discount_rate, cac=cac, projected="auto")
    per_channel = table.channels(spend=spend, margin=margin, discount_rate=discount_rate, cac=cac)
    summary = table.summary(spend=spend, margin=margin, discount_rate=discount_rate, cac=cac) if money else None
    cohorts, size, sums = _pooled_grid(table)
    revenue = sums["revenue"]
    pooled_values = {
        "paying_retention": _divide(sums["payers"], size),
        "activity_retention": _divide(sums["active"], size),
        "ltr": _divide(np.cumsum(np.nan_to_num(revenue), axis=1) + np.where(np.isnan(revenue), np.nan, 0.0), size),
    }
    specs = [spec for spec in HEATMAPS if spec[0] != "activity_retention" or _has_activity(table)]
    segs = _largest_segments(table) if table.by else []
    shown = segs[:MAX_PANELS]

    with charts.mpl.rc_context(charts.rc):
        pooled = " (segments pooled)" if table.by else ""
        heatmaps = [
            charts.svg(
                charts.heatmap(table, cohorts, pooled_values[measure], f"{title}{pooled}", cmap, _CELL_FORMAT[unit], unit,
                               label, scale_from_age=from_age),
                f"{title} heatmap",
            )
            for measure, title, cmap, unit, label, from_age in specs
        ]
        per_segment = [
            charts.svg(
                charts.heatmaps_by_segment(table, shown, _segment_grids(table, measure, shown),
                                           f"{title} per {' · '.join(table.by)}", cmap, unit, label,
                                           scale_from_age=from_age),
                f"{title} heatmaps per {' · '.join(table.by)}",
            )
            for measure, title, cmap, unit, label, from_age in specs
        ] if shown else []
        curves_svg = charts.svg(charts.curves(table, money, spend, margin, discount_rate, cac, m), "curves by cohort")
        arppu_svg = charts.svg(charts.arppu(table), "ARPPU by age")

    if spend is not None:
        cost = f"spend per period: {spend}" if isinstance(spend, (int, float)) else "spend table"
    elif cac is not None:
        cost = f"known CAC {cac}"
    else:
        cost = "none (no LTV/CAC, payback or verdict)"
    lc = table.last_complete
    as_of_line = (
        f"{m.height} cohort(s) · last complete {table.period}: {_period_label(lc, table.period)}"
        if lc else "no complete period yet"
    )
    out = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<header><h1>{_e(title)}</h1><p class='sub'>{_e(as_of_line)}</p>",
        "<nav><a href='#channels'>channels</a><a href='#parameters'>parameters</a>"
        + ("<a href='#summary'>summary</a>" if summary else "")
        + "<a href='#heatmaps'>heatmaps</a>"
        + (f"<a href='#segment-heatmaps'>heatmaps per {_e(' · '.join(table.by))}</a>" if shown else "")
        + f"<a href='#curves'>{'curves vs CAC' if money else 'LTR curves'}</a><a href='#arppu'>ARPPU</a>"
        "<a href='#metrics'>metrics</a><a href='#reconciliation'>reconciliation</a></nav></header>",
        "<section id='channels'><h2>Channels</h2>",
        "<p class='note'>"
        + _e(
            "One row per channel, pooled over its cohorts, and all channels together. LTV per customer at the "
            f"horizon ({table.horizon} {table.period}s): observed over the cohorts that reached it, projected "
            "(chain-ladder) over those that reached it or can be projected to it. "
            + (
                "LTV/CAC, verdict, payback, DRR and ROMI use each cohort's projected value where a projection "
                "exists, else its value to date; the basis column says which (too young: fewer than "
                f"{_metrics.MIN_OBSERVED_MONTHS} observed months and no projection). All spend counts, also "
                "spend that brought no customer. "
                if money else ""
            )
            + "Customer equity is the CLV summed over the customers."
        )
        + "</p>",
        _channels_table(table, per_channel, money, profit),
        "</section>",
        "<section id='parameters'><h2>Parameters</h2>",
        _params(table, margin, discount_rate, cost),
        "<p class='note'>A cell (cohort, age) is shown only once its whole period ended before the as-of "
        "instant; blank cells are not yet observed, which is not the same as zero.</p></section>",
    ]
    if summary:
        out += ["<section id='summary'><h2>Summary</h2>", _summary(summary), "</section>"]
    out += [
        "<section id='heatmaps'><h2>Cohort heatmaps</h2>",
        "<p class='note'>Rows are cohorts, columns ages. " + (
            _e(f"Segments ({', '.join(table.by)}) are pooled: payers, "
               + ("active users, " if _has_activity(table) else "")
               + "revenue and cohort sizes are summed per cohort and age before dividing. ") if table.by else "")
        + ("Activity retention (active users ÷ cohort size) shows how a cohort keeps logging in beside "
           "how it keeps paying. " if _has_activity(table) else "")
        + "Each colour bar is in its cells' unit (percent for retention, money for LTR). The retention "
        "colour scales are fitted to ages 1 and later, so age 0 does not wash out the rest.</p>",
        "<div class='charts'>" + "".join(f"<figure>{svg}</figure>" for svg in heatmaps) + "</div></section>",
    ]
    if shown:
        what = " · ".join(table.by)
        omitted = len(segs) - len(shown)
        out += [
            f"<section id='segment-heatmaps'><h2>{_e(f'Heatmaps per {what}')}</h2>",
            "<p class='note'>"
            + _e(
                f"One panel per {what} value, largest first by signups, all on one colour scale per measure so "
                "the panels compare directly; read the cells from the colour bar. "
                + (f"Only the {MAX_PANELS} largest of {len(segs)} are drawn ({omitted} left out: see the "
                   "metrics table); table.pivot(measure) has every segment. " if omitted else "")
            )
            + "</p>",
            "".join(f"<figure>{svg}</figure>" for svg in per_segment),
            "</section>",
        ]
    out += [
        f"<section id='curves'><h2>{_e(_curves_title(money, margin, table.has_profit))}</h2>",
        "<p class='note'>"
        + _e(
            "Each thin line is one cohort (darker = older); the thick line pools the cohorts observed at "
            "each age. " + (
                (
                    "The y axis is cumulative profit (amount − cost of each order) per acquired customer"
                    if table.has_profit else
                    "The y axis is cumulative margin (revenue × margin) per acquired customer"
                    if _margin_word(margin) == "margin" else
                    "The y axis is cumulative revenue per acquired customer (no margin was given, so this is "
                    "revenue, not profit: pass margin= for margin)"
                )
                + "; the dashed red line is the CAC per customer (spend ÷ customers, all cohorts), so a curve "
                "crossing it has paid back its acquisition cost." if money else
                "The y axis is cumulative revenue per signup (LTR). Pass spend= or cac= to compare with CAC.")
        )
        + "</p>",
        f"<figure>{curves_svg}</figure></section>",
        "<section id='arppu'><h2>ARPPU by age</h2>",
        f"<figure>{arppu_svg}</figure></section>",
        "<section id='metrics'><h2>Metrics per cohort</h2>",
    ]
    if money and not profit:
        out.append("<p class='note'>No margin given, so no LTV, payback or verdict: a profit judgement needs the "
                   "gross margin (margin=, --margin). LTR/CAC is revenue-based (LTV/CAC = LTR/CAC × margin).</p>")
    elif money:
        out.append(_verdict_legend())
        out.append(
            "<p class='note'>LTV/CAC = LTV per customer ÷ CAC. Payback: the first age whose cumulative "
            "margin per customer reaches CAC (self-funding within 12 months, needs funding within 24), from "
            "the projection (and flagged so) when it lies beyond the observed ages. Values are projected to the "
            "horizon where a projection exists, else observed to date; the basis column says which. A cohort "
            f"with fewer than {_metrics.MIN_OBSERVED_MONTHS} observed months and no projection is too young: its "
            "value to date is only a floor, so it is never called losing money without &quot;too early to "
            "tell&quot;.</p>"
        )
    else:
        out.append("<p class='note'>No acquisition cost given: only LTR"
                   + (", LTV (LTR × margin) and CLV (discounted LTV) are" if profit else " is")
                   + " shown. Pass spend= or cac= for CAC, LTV/CAC, payback and verdicts.</p>")
    out += [_metrics_table(table, m, money, profit), "</section>", "<section id='reconciliation'><h2>Reconciliation</h2>",
            "<p class='note'>Every input row lands in exactly one reason; the rows add up to the input.</p>",
            "<div class='recons'>"]
    out.append(_recon_table("Orders", table.reconciliation))
    for name, frame in (("Signups", table.signups_reconciliation), ("Activity", table.activity_reconciliation)):
        if frame is not None:
            out.append(_recon_table(name, frame))
    out += ["</div></section>", f"<footer><p class='note'>{_e(f'ltrcore {_version()}')}</p></footer>",
            "</main></body></html>"]
    return "\n".join(out) + "\n"


def _version() -> str:
    try:
        from . import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - version is informational only
        return ""
