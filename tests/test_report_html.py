"""The HTML report (``ltrcore.report.render_html`` / ``CohortTable.to_html``): a self-contained file with
the expected sections and inline SVG charts, checked as text and rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ltrcore
from ltrcore import demo

pytest.importorskip("matplotlib")

SECTIONS = ["parameters", "summary", "heatmaps", "curves", "arppu", "metrics", "reconciliation"]
EVIL = "<b>&"  # a segment value that must come out escaped


def _cohorts(*args, **kwargs) -> ltrcore.CohortTable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)  # the demo has a few bad rows on purpose
        return ltrcore.cohorts(*args, **kwargs)


@pytest.fixture(scope="module")
def data() -> demo.DemoData:
    return demo.generate(50_000)


@pytest.fixture(scope="module")
def table(data: demo.DemoData) -> ltrcore.CohortTable:
    return _cohorts(data.orders, signups=data.signups, activity=data.activity, by="channel", tz="Europe/Berlin")


@pytest.fixture(scope="module")
def report(table: ltrcore.CohortTable, data: demo.DemoData) -> str:
    return table.to_html(spend=data.spend, margin=demo.MARGIN, discount_rate=0.1)


def _resource_refs(text: str) -> list[str]:
    """Every src/href/url() value and every non-namespace http(s) mention."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, flags=re.I)
    refs += re.findall(r"url\(\s*['\"]?([^)'\"]+)", text, flags=re.I)
    return refs


def _external(text: str) -> list[str]:
    # in-document anchors and inline data (matplotlib embeds heatmap rasters as data: PNGs) are fine
    bad = [r for r in _resource_refs(text) if not r.startswith(("#", "data:image/png;base64,"))]
    # http(s) may only appear as XML namespace names of the inline SVG (never fetched)
    for m in re.finditer(r"https?://[^\s\"'<>]*", text):
        before = text[max(0, m.start() - 16) : m.start()]
        if not re.search(r"xmlns(:\w+)?=[\"']$", before):
            bad.append(m.group(0))
    return bad


# --------------------------------------------------------------------------------------------------
# the document as text


def test_self_contained_with_sections_and_charts(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    assert report.count("<html") == 1 and report.count("</html>") == 1
    assert _external(report) == []
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "<?xml", "<!DOCTYPE svg"):
        assert tag.lower() not in report.lower(), tag
    positions = [report.find(f"<section id='{s}'>") for s in SECTIONS]
    assert all(p >= 0 for p in positions), dict(zip(SECTIONS, positions))
    assert positions == sorted(positions), "sections out of order"
    assert report.count("<svg") >= 4
    assert report.count("<svg") == report.count("</svg>")
    # the parameters and the as-of date
    for text in ("Europe/Berlin", "month", "channel", "2026-01-01", "last complete month", "10.0%", "0.3"):
        assert text in report, text
    # the summary, the metrics and the reconciliations
    assert "Best cohort" in report and "By channel" in report
    assert "LTV/CAC" in report and "payback" in report
    for name in ("Orders", "Signups", "Activity"):
        assert f"<h3>{name}</h3>" in report
    assert "not_yet_complete" in report and "beyond_horizon" in report


def test_verdict_colours(report: str) -> None:
    from ltrcore.report import VERDICT_STYLE

    for verdict, (bg, fg) in VERDICT_STYLE.items():
        cell = f"<td class='verdict' style='background:{bg};color:{fg}'>{verdict}</td>"
        assert cell in report, verdict  # the demo has healthy, marginal and losing-money cohorts


def test_reconciliation_rows_add_up(report: str, table: ltrcore.CohortTable) -> None:
    total = int(table.reconciliation.get_column("rows").sum())
    assert total == table.input_rows
    assert f"<td class='num'>{total:,}</td>" in report


def test_segment_values_are_escaped(data: demo.DemoData) -> None:
    signups = data.signups.with_columns(
        pl.when(pl.col("channel") == "email").then(pl.lit(EVIL))
        .when(pl.col("channel") == "social").then(pl.lit("$x$ 'q\""))  # mathtext and quotes
        .otherwise(pl.col("channel")).alias("channel")
    )
    spend = data.spend.with_columns(
        pl.when(pl.col("channel") == "email").then(pl.lit(EVIL))
        .when(pl.col("channel") == "social").then(pl.lit("$x$ 'q\""))
        .otherwise(pl.col("channel")).alias("channel")
    )
    t = _cohorts(data.orders, signups=signups, by="channel", tz="Europe/Berlin")
    out = t.to_html(spend=spend, margin=0.3, title="Report <i>&")
    assert EVIL not in out and "<i>&" not in out
    assert "&lt;b&gt;&amp;" in out
    assert "<title>Report &lt;i&gt;&amp;</title>" in out
    assert "$x$ &#x27;q&quot;" in out
    assert _external(out) == []


def test_without_by_spend_or_activity(data: demo.DemoData) -> None:
    t = _cohorts(data.orders, tz="UTC")  # first-purchase cohorts, no segments, no signups or activity
    out = t.to_html(margin=0.5)
    assert out.count("<svg") >= 4
    assert "<section id='summary'>" not in out
    assert "<th>verdict</th>" not in out and "class='legend'" not in out  # no verdict column or legend
    assert "<td class='verdict'" not in out
    for header in ("LTR / signup", "LTV / signup", "CLV / signup"):
        assert f"<th>{header}</th>" in out
    for header in ("CAC", "LTV/CAC", "payback"):
        assert f"<th>{header}</th>" not in out
    assert "<h3>Orders</h3>" in out and "<h3>Activity</h3>" not in out and "<h3>Signups</h3>" not in out
    assert _external(out) == []


def test_known_cac_without_activity(data: demo.DemoData) -> None:
    t = _cohorts(data.orders, signups=data.signups, by="channel", tz="Europe/Berlin")
    out = t.to_html(cac=20.0, margin=0.3)
    assert "<section id='summary'>" in out and "<th>LTV/CAC</th>" in out
    assert "CAC per customer" in out and out.count("<svg") >= 4
    assert "<h3>Activity</h3>" not in out


def test_writes_file_and_is_reproducible(table: ltrcore.CohortTable, data: demo.DemoData, report: str, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    out = table.to_html(path, spend=data.spend, margin=demo.MARGIN, discount_rate=0.1)
    assert path.read_text(encoding="utf-8") == out
    assert out == report  # same input, byte-identical report (fixed SVG ids, no timestamps)


def test_leaves_matplotlib_state_alone(table: ltrcore.CohortTable) -> None:
    import matplotlib

    had_pyplot = "matplotlib.pyplot" in sys.modules
    backend = matplotlib.get_backend() if had_pyplot else None
    # dict.items reads the raw values: rcParams["backend"] would itself resolve the backend via pyplot
    before = dict(dict.items(matplotlib.rcParams))
    table.to_html()
    assert dict(dict.items(matplotlib.rcParams)) == before
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
    if had_pyplot:
        assert matplotlib.get_backend() == backend


def test_missing_matplotlib_is_a_clear_error(table: ltrcore.CohortTable, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ltrcore.LtrcoreError, match=r"pip install 'ltrcore\[report\]'"):
        table.to_html()


# --------------------------------------------------------------------------------------------------
# rendered in a real browser


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not found (install Debian's 'chromium' package; CI installs it)")
    return exe


WIDTH, HEIGHT = 1400, 5000


@pytest.fixture(scope="module")
def browser(report: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    exe = _chromium()
    work = tmp_path_factory.mktemp("browser")
    page = work / "report.html"
    page.write_text(report, encoding="utf-8")
    base = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}", "--no-first-run", "--disable-extensions"]
    url = page.as_uri()
    runs = {
        "shot": [*base, f"--user-data-dir={work / 'p1'}", f"--screenshot={work / 'shot.png'}", url],
        "offline": [*base, f"--user-data-dir={work / 'p2'}", "--proxy-server=127.0.0.1:9",
                    f"--screenshot={work / 'offline.png'}", url],
        "dom": [*base, f"--user-data-dir={work / 'p3'}", "--enable-logging=stderr", "--v=0", "--dump-dom", url],
    }
    procs = {k: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work)
             for k, cmd in runs.items()}  # the three runs in parallel: they use separate profiles
    out: dict[str, object] = {}
    for k, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail(f"chromium {k} run timed out")
        assert p.returncode == 0, f"chromium {k} failed ({p.returncode}):\n{stderr[-2000:]}"
        out[k] = (stdout, stderr)
    out["shot.png"] = work / "shot.png"
    out["offline.png"] = work / "offline.png"
    return out


def _image(path: object) -> np.ndarray:
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    return (img[..., :3] * 255).round().astype(np.uint8) if img.dtype != np.uint8 else img[..., :3]


def test_browser_dom_has_sized_svgs_and_no_console_errors(browser: dict[str, object]) -> None:
    dom, stderr = browser["dom"]  # type: ignore[misc]
    svgs = re.findall(r"<svg\b[^>]*>", dom)
    assert len(svgs) >= 4, dom[:500]
    for tag in svgs:
        w = re.search(r'\swidth="([\d.]+)', tag)
        h = re.search(r'\sheight="([\d.]+)', tag)
        assert w and h and float(w.group(1)) > 0 and float(h.group(1)) > 0, tag
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    # The report has no script, so any console message is unexpected. (Chromium's stderr log does not
    # show the level: console.error("x") is logged as `INFO:CONSOLE:1] "x"`, hence all lines.)
    console = [line for line in stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "error" in line.lower() or "Uncaught" in line]
    assert errors == [] and console == [], console
    # nothing was fetched from the network
    assert not re.search(r"net::ERR_|Failed to load resource", stderr), stderr[-2000:]


def test_browser_screenshot_is_a_readable_report(browser: dict[str, object]) -> None:
    img = _image(browser["shot.png"])
    assert img.shape == (HEIGHT, WIDTH, 3)
    packed = (img[..., 0].astype(np.uint32) << 16) | (img[..., 1].astype(np.uint32) << 8) | img[..., 2]
    colours = np.unique(packed)
    assert len(colours) > 500, f"only {len(colours)} distinct colours"
    non_white = (img < 245).any(axis=2)
    assert non_white.mean() > 0.05
    # The charts: strongly coloured pixels (heatmap cells, curves), unlike the text and table chrome.
    rgb = img[::2, ::2].astype(np.float32) / 255  # every other pixel is plenty
    sat = (rgb.max(axis=2) - rgb.min(axis=2)) / np.maximum(rgb.max(axis=2), 1e-9)
    vivid = (sat > 0.45) & (rgb.max(axis=2) > 0.15)
    rows = vivid.mean(axis=1)
    bands = rows[: (HEIGHT // 2 // 125) * 125].reshape(-1, 125).mean(axis=1)  # 250-pixel bands
    assert vivid.sum() > 12_500, vivid.sum()
    assert (bands > 0.02).sum() >= 3, bands.round(3)  # several chart bands down the page
    # the heatmaps sit side by side: both halves of the page carry colour in the busiest band
    top = int(np.argmax(bands)) * 125
    band = vivid[top : top + 125]
    half = band.shape[1] // 2
    assert band[:, :half].mean() > 0.01 and band[:, half:].mean() > 0.01


def test_browser_renders_the_same_offline(browser: dict[str, object]) -> None:
    online, offline = _image(browser["shot.png"]), _image(browser["offline.png"])
    assert online.shape == offline.shape
    differing = (online != offline).any(axis=2).mean()
    assert differing < 0.001, f"{differing:.4%} of pixels differ with the network off"


def test_browser_renders_activity_and_channel_heatmaps(browser: dict[str, object]) -> None:
    """Issue 14: the activity-retention heatmap (the table has activity) and the heatmaps per channel
    (small multiples, no script) are rendered with a size."""
    dom, _ = browser["dom"]  # type: ignore[misc]
    heatmaps = re.search(r'<section id="heatmaps">(.*?)</section>', dom, flags=re.S)
    per_channel = re.search(r'<section id="segment-heatmaps">(.*?)</section>', dom, flags=re.S)
    assert heatmaps and per_channel
    assert 'aria-label="Activity retention heatmap"' in heatmaps.group(1)
    tags = re.findall(r"<svg\b[^>]*>", per_channel.group(1))
    labels = [re.search(r'aria-label="([^"]*)"', t).group(1) for t in tags]  # type: ignore[union-attr]
    assert labels == [f"{m} heatmaps per channel" for m in ("Paying retention", "Activity retention", "LTR")]
    for tag in tags:
        w = re.search(r'\swidth="([\d.]+)', tag)
        h = re.search(r'\sheight="([\d.]+)', tag)
        assert w and h and float(w.group(1)) > 300 and float(h.group(1)) > 150, tag
