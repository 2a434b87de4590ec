"""Issue 14, item 4: the HTML report and the notebook grid.

``table.pivot(measure)`` (the wide cohort × age grid), the notebook grid (``_repr_html_``: right-aligned
numbers, a truncation note, bands per segment), and the report: an activity-retention heatmap when
activity is given, heatmaps per channel, colour bars in the cells' unit, a truthful title on the
curves, and a demo report with activity. The browser checks of the new sections sit beside the
existing ones in ``test_report_html.py``.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import ltrcore
from ltrcore import demo
from ltrcore.exceptions import InvalidArgumentError

UTC = dt.timezone.utc


def _cohorts(*args: Any, **kwargs: Any) -> ltrcore.CohortTable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)  # the demo has a few bad rows on purpose
        return ltrcore.cohorts(*args, **kwargs)


def _ts(y: int, m: int, d: int = 10) -> dt.datetime:
    return dt.datetime(y, m, d, 12, tzinfo=UTC)


# A hand-worked ledger: signups in January (a: u1, u2; b: u3) and February (a: u4), as of 2024-04-01,
# so January has ages 0-2 complete, February ages 0-1; horizon 4.
SIGNUPS = pl.DataFrame(
    {
        "user_id": [1, 2, 3, 4],
        "signup_ts": [_ts(2024, 1, 2), _ts(2024, 1, 3), _ts(2024, 1, 4), _ts(2024, 2, 2)],
        "channel": ["a", "a", "b", "a"],
    }
)
ORDERS = pl.DataFrame(
    {
        "user_id": [1, 1, 1, 2, 3, 4, 1],
        "ts": [_ts(2024, 1), _ts(2024, 1, 20), _ts(2024, 2), _ts(2024, 3), _ts(2024, 1), _ts(2024, 3), _ts(2024, 4)],
        "amount": [10.0, 30.0, 20.0, 8.0, 5.0, 12.0, 99.0],  # the April order is not yet complete
    }
)
ACTIVITY = pl.DataFrame({"user_id": [1, 2, 2, 3, 4], "ts": [_ts(2024, 1), _ts(2024, 1), _ts(2024, 2), _ts(2024, 3), _ts(2024, 2)]})


@pytest.fixture(scope="module")
def small() -> ltrcore.CohortTable:
    return _cohorts(ORDERS, signups=SIGNUPS, activity=ACTIVITY, by="channel", tz="UTC", horizon=4,
                    as_of=dt.datetime(2024, 4, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def data() -> demo.DemoData:
    return demo.generate(50_000)


@pytest.fixture(scope="module")
def table(data: demo.DemoData) -> ltrcore.CohortTable:
    return _cohorts(data.orders, signups=data.signups, activity=data.activity, by="channel", tz="Europe/Berlin")


# --------------------------------------------------------------------------------------------------
# table.pivot


def test_pivot_is_the_wide_cohort_grid(small: ltrcore.CohortTable) -> None:
    wide = small.pivot("ltr")
    assert wide.columns == ["channel", "cohort", "cohort_size", "0", "1", "2", "3"]
    assert wide.select("channel", "cohort", "cohort_size").rows() == [
        ("a", dt.date(2024, 1, 1), 2), ("a", dt.date(2024, 2, 1), 1), ("b", dt.date(2024, 1, 1), 1),
    ]
    # a/January: 40 at age 0, 20 at age 1, 8 at age 2 over 2 signups; age 3 (April) not yet complete
    assert wide.row(0)[3:] == (20.0, 30.0, 34.0, None)
    assert wide.row(1)[3:] == (0.0, 12.0, None, None)  # a/February: nothing at age 0, 12 at age 1
    assert wide.row(2)[3:] == (5.0, 5.0, 5.0, None)
    payers = small.pivot("payers")
    assert payers.schema["0"] == pl.Int64
    assert payers.row(0)[3:] == (1, 1, 1, None)
    assert small.pivot("activity_retention").row(0)[3:] == (1.0, 0.5, 0.0, None)
    assert small.pivot("paying_retention").row(0)[3:] == (0.5, 0.5, 0.5, None)
    assert small.pivot("arppu").row(0)[3:] == (40.0, 20.0, 8.0, None)


def test_pivot_offers_every_measure_with_the_methods_numbers(table: ltrcore.CohortTable) -> None:
    from ltrcore.table import MEASURES, PIVOT_MEASURES

    assert set(MEASURES) <= set(PIVOT_MEASURES)
    assert {"ltr", "paying_retention", "activity_retention", "arppu", "aov", "retention_rate"} <= set(PIVOT_MEASURES)
    sources = {
        "ltr": table.ltr(), "cum_revenue": table.ltr(), "paying_retention": table.retention(),
        "activity_retention": table.retention(), "arppu": table.arppu(), "arppu_net": table.arppu(),
        "aov": table.aov(), "aov_net": table.aov(), "retention_rate": table.retention_rate(),
    }
    keys = ["channel", "cohort"]
    for measure in PIVOT_MEASURES:
        wide = table.pivot(measure)
        assert wide.columns == [*keys, "cohort_size", *(str(a) for a in range(table.horizon))], measure
        long = sources.get(measure, table.to_polars())
        long = long.join(table.to_polars().select([*keys, "age", pl.col("complete").alias("__c")]),
                         on=[*keys, "age"], nulls_equal=True)
        expected = long.with_columns(pl.when(pl.col("__c")).then(pl.col(measure)).alias(measure))
        back = wide.unpivot(index=keys, on=[str(a) for a in range(table.horizon)], variable_name="age", value_name="__wide")
        back = back.with_columns(pl.col("age").cast(pl.Int32))
        got = expected.select([*keys, "age", measure]).join(back, on=[*keys, "age"], nulls_equal=True)
        assert got.height == table.to_polars().height, measure
        a, b = got.get_column(measure), got.get_column("__wide")
        assert (a.is_null() == b.is_null()).all(), measure
        assert ((a - b).abs().fill_null(0) <= 1e-9).all(), measure


def test_pivot_without_segments_and_an_unknown_measure(data: demo.DemoData) -> None:
    t = _cohorts(data.orders, tz="UTC", horizon=6)
    wide = t.pivot()  # ltr by default
    assert wide.columns == ["cohort", "cohort_size", "0", "1", "2", "3", "4", "5"]
    assert wide.get_column("cohort").to_list() == t.cohorts
    assert wide.get_column("5").null_count() >= 5  # the youngest cohorts are not yet observed at age 5
    assert wide.get_column("0").null_count() == 0
    assert t.pivot("activity_retention").select("0").to_series().null_count() == wide.height  # no activity
    with pytest.raises(InvalidArgumentError, match=r"ltr, paying_retention, activity_retention.*got 'nope'"):
        t.pivot("nope")


# --------------------------------------------------------------------------------------------------
# the notebook grid


def _rows(html: str) -> list[str]:
    return re.findall(r"<tr[^>]*>.*?</tr>", html, flags=re.S)


def test_repr_html_right_aligns_numbers_and_bands_segments(small: ltrcore.CohortTable) -> None:
    out = small._repr_html_()
    rows = _rows(out)[1:]  # the header row first
    assert len(rows) == 3
    for row in rows:
        cells = re.findall(r"<td([^>]*)>([^<]*)</td>", row)
        for attrs, text in cells[2:]:  # size and the ages
            assert "text-align:right" in attrs, (attrs, text)
        for attrs, _ in cells[:2]:
            assert "text-align:right" not in attrs
    # rows a, a, b: the band changes with the segment, not with every row
    bands = [re.search(r"class='segment-band-(\d)'", r).group(1) for r in rows]  # type: ignore[union-attr]
    assert bands == ["0", "0", "1"]
    assert "background:#eef2f7" in rows[2] and "background:#eef2f7" not in rows[0].split("<td")[0]
    assert "showing" not in out  # all rows shown


def test_repr_html_truncates_long_tables_with_a_note(table: ltrcore.CohortTable) -> None:
    from ltrcore.table import HTML_MAX_ROWS

    total = table.pivot("ltr").height
    assert total > HTML_MAX_ROWS
    out = table._repr_html_()
    assert len(_rows(out)) == 1 + HTML_MAX_ROWS
    assert f"showing {HTML_MAX_ROWS} of {total} rows" in out
    bands = [re.search(r"class='segment-band-(\d)'", r).group(1) for r in _rows(out)[1:]]  # type: ignore[union-attr]
    assert bands[0] == "0" and "1" in bands  # the second channel starts within the first rows


# --------------------------------------------------------------------------------------------------
# the report


@pytest.fixture(scope="module")
def figures(table: ltrcore.CohortTable, data: demo.DemoData) -> dict[str, Any]:
    """The report's figures by their aria label (captured as they are turned into SVG), and the HTML."""
    pytest.importorskip("matplotlib")
    from ltrcore import report

    seen: dict[str, Any] = {}
    original = report._Charts.svg

    def spy(self: Any, fig: Any, label: str) -> str:
        out = original(self, fig, label)  # draws the figure, so the tick labels are final
        seen[label] = fig
        return out

    report._Charts.svg = spy  # type: ignore[method-assign]
    try:
        seen["__html__"] = table.to_html(spend=data.spend, margin=demo.MARGIN)
    finally:
        report._Charts.svg = original  # type: ignore[method-assign]
    return seen


def test_report_has_an_activity_retention_heatmap(figures: dict[str, Any], data: demo.DemoData) -> None:
    html = figures["__html__"]
    heatmaps = html[html.index("<section id='heatmaps'>") : html.index("</section>", html.index("<section id='heatmaps'>"))]
    assert "aria-label=\"Activity retention heatmap\"" in heatmaps
    assert "aria-label=\"Paying retention heatmap\"" in heatmaps and "aria-label=\"LTR heatmap\"" in heatmaps
    # without activity there is none
    t = _cohorts(data.orders, signups=data.signups, by="channel", tz="Europe/Berlin", horizon=4)
    assert "Activity retention" not in t.to_html()


def test_report_has_heatmaps_per_channel(figures: dict[str, Any], table: ltrcore.CohortTable) -> None:
    html = figures["__html__"]
    start = html.index("<section id='segment-heatmaps'>")
    assert html.index("<section id='heatmaps'>") < start < html.index("<section id='curves'>")
    section = html[start : html.index("</section>", start)]
    for title in ("Paying retention", "Activity retention", "LTR"):
        assert f'aria-label="{title} heatmaps per channel"' in section
        fig = figures[f"{title} heatmaps per channel"]
        panels = [ax for ax in fig.axes if ax.images]
        assert sorted(ax.get_title(loc="left") for ax in panels) == sorted(demo_channel.name for demo_channel in demo.CHANNELS)
        # one colour scale for all panels of a measure
        assert len({(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in panels}) == 1
    assert "href='#segment-heatmaps'" in html


def test_heatmaps_per_channel_are_capped(data: demo.DemoData) -> None:
    from ltrcore.report import MAX_PANELS

    many = data.signups.with_columns((pl.col("user_id") % 15).cast(pl.String).alias("shop"))
    t = _cohorts(data.orders, signups=many, by="shop", tz="Europe/Berlin", horizon=3)
    out = t.to_html()
    section = out[out.index("<section id='segment-heatmaps'>") :]
    section = section[: section.index("</section>")]
    assert f"Only the {MAX_PANELS} largest of 15 are drawn (3 left out" in section
    assert len(out) < 2_500_000  # the report stays reasonable


def _colorbar_labels(fig: Any) -> list[list[str]]:
    """The tick labels of each colour bar of a figure (colour-bar axes carry ``_colorbar``)."""
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    out = []
    for ax in bars:
        axis = ax.yaxis if ax._colorbar.orientation == "vertical" else ax.xaxis
        out.append([t.get_text() for t in axis.get_ticklabels() if t.get_text()])
    return out


def test_every_heatmap_colour_bar_is_in_its_cells_unit(figures: dict[str, Any]) -> None:
    heatmaps = {label: fig for label, fig in figures.items() if "heatmap" in label}
    assert len(heatmaps) == 6  # three pooled, three per channel
    for label, fig in heatmaps.items():
        bars = _colorbar_labels(fig)
        assert len(bars) == 1 and len(bars[0]) >= 3, (label, bars)
        ticks = bars[0]
        cells = [t.get_text() for ax in fig.axes if ax.images for t in ax.texts]
        if "retention" in label:
            assert all(t.endswith("%") for t in ticks), (label, ticks)
            assert all(t.endswith("%") for t in cells), label
        else:  # money: plain amounts, as the cells
            assert not any(t.endswith("%") for t in ticks), (label, ticks)
            assert all(re.fullmatch(r"−?[\d,]+(\.\d+)?", t) for t in ticks), (label, ticks)
        cbar = next(ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None)
        unit_label = cbar.get_ylabel()
        assert ("cohort size" in unit_label) if "retention" in label else ("per signup" in unit_label), (label, unit_label)


def _curves_h2(html: str) -> str:
    m = re.search(r"<section id='curves'><h2>([^<]*)</h2>", html)
    assert m, "no curves section"
    return m.group(1)


def test_curves_title_says_what_is_plotted(figures: dict[str, Any], data: demo.DemoData) -> None:
    # spend and margin 0.3: cumulative margin per customer against CAC
    h2 = _curves_h2(figures["__html__"])
    assert "margin per customer" in h2 and "CAC" in h2 and "LTR" not in h2
    fig = figures["curves by cohort"]
    assert {ax.get_ylabel() for ax in fig.axes if ax.get_ylabel() and not getattr(ax, "_colorbar", None)} == {
        "cumulative margin / customer"
    }
    small = _cohorts(data.orders, signups=data.signups, tz="Europe/Berlin", horizon=4)
    # spend without a margin: that is revenue, not margin
    out = small.to_html(spend=data.spend.group_by("month").agg(pl.col("spend").sum()))
    h2 = _curves_h2(out)
    assert "revenue per customer" in h2 and "CAC" in h2 and "margin" not in h2
    assert "cumulative revenue per acquired customer" in out
    # a margin column of the spend table is a margin
    spend = data.spend.group_by("month").agg(pl.col("spend").sum()).with_columns(pl.lit(0.4).alias("gm"))
    assert "margin per customer" in _curves_h2(small.to_html(spend=spend, margin="gm"))
    # no acquisition cost: the curves are LTR per signup
    h2 = _curves_h2(small.to_html())
    assert "LTR" in h2 and "per signup" in h2 and "CAC" not in h2


def test_demo_report_shows_activity_retention(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "demo.html"
    done = subprocess.run(
        [sys.executable, "-m", "ltrcore.cli", "demo", "--rows", "20k", "--horizon", "4", "--html", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    html = path.read_text(encoding="utf-8")
    assert 'aria-label="Activity retention heatmap"' in html
    assert 'aria-label="Activity retention heatmaps per channel"' in html
    assert "<h3>Activity</h3>" in html  # the logins' reconciliation
