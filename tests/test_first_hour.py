"""Issue 14, items 1 and 3: nothing silently rosy, and a command line that behaves like a Unix tool.

The small shop used here (UTC, months, horizon 3, as of 2024-05-01), signup cohorts by channel:
    ads, January: a, b sign up; a pays 100 in January, 100 in February; b pays 50 in March.
    ads, February: c signs up and pays 30 in February.
    seo, January: d signs up and pays 40 in January.
Spend: ads January 100, ads February 20, seo January 10.
Without a margin, ads January: revenue to date 250, customers 2, CAC 50, LTR/CAC = 250 / 100 = 2.5
(revenue-based); with margin 0.3 its LTV/CAC is 0.75, "losing money". An assumed 100 % margin would
have called it "marginal".
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ltrcore = pytest.importorskip("ltrcore")

UTC = dt.timezone.utc


def _ts(month: int, day: int = 10) -> dt.datetime:
    return dt.datetime(2024, month, day, 12, tzinfo=UTC)


SIGNUPS = pl.DataFrame(
    {"user_id": ["a", "b", "c", "d"], "signup_ts": [_ts(1, 2), _ts(1, 3), _ts(2, 2), _ts(1, 4)],
     "channel": ["ads", "ads", "ads", "seo"]}  # fmt: skip
)
ORDERS = pl.DataFrame(
    {"user_id": ["a", "a", "b", "c", "d"], "ts": [_ts(1), _ts(2), _ts(3), _ts(2), _ts(1)],
     "amount": [100.0, 100.0, 50.0, 30.0, 40.0]}  # fmt: skip
)
SPEND = pl.DataFrame(
    {"period": ["2024-01", "2024-02", "2024-01"], "channel": ["ads", "ads", "seo"], "spend": [100.0, 20.0, 10.0]}
)
VERDICT_WORDS = ("healthy", "marginal", "losing money", "too early to tell", "self-funding", "needs funding")


@pytest.fixture(scope="module")
def table() -> ltrcore.CohortTable:
    return ltrcore.cohorts(ORDERS, signups=SIGNUPS, by="channel", horizon=3, as_of="2024-05-01")


def _ads_january(frame: pl.DataFrame) -> dict:
    return frame.filter((pl.col("channel") == "ads") & (pl.col("cohort") == dt.date(2024, 1, 1))).row(0, named=True)


# --- 1. nothing silently rosy ---------------------------------------------------------------------
def test_without_a_margin_no_profit_figure_or_verdict(table: ltrcore.CohortTable) -> None:
    m = table.metrics(spend=SPEND)
    row = _ads_january(m)
    assert (row["customers"], row["cac"], row["ltr_cac"], row["drr"]) == (2, 50.0, 2.5, 0.4)
    for column in ltrcore.metrics.PROFIT_COLUMNS:
        assert m.get_column(column).null_count() == m.height, column
    judged = _ads_january(table.metrics(spend=SPEND, margin=0.3))
    assert (judged["ltv_cac"], judged["verdict"], judged["ltr_cac"]) == (pytest.approx(0.75), "losing money", 2.5)
    # An explicit margin of 1 still judges: it is the caller's statement, not an assumption.
    assert _ads_january(table.metrics(spend=SPEND, margin=1))["verdict"] == "marginal"


def test_without_a_margin_channels_and_summary_are_revenue_based(table: ltrcore.CohortTable) -> None:
    ch = table.channels(spend=SPEND)
    for column in ltrcore.metrics.CHANNEL_PROFIT_COLUMNS:
        assert ch.get_column(column).null_count() == ch.height, column
    total = ch.filter(pl.col("total")).row(0, named=True)
    assert total["ltr_cac"] == pytest.approx((250 + 30 + 40) / 130)
    text = table.summary(spend=SPEND, min_size=1)
    assert "No margin given" in text and "revenue-based" in text and "LTR/CAC" in text
    assert not any(word in text for word in VERDICT_WORDS), text


def test_the_demo_without_a_margin_calls_nothing_losing_money() -> None:
    """On the demo, an assumed margin of 1 turned most "losing money" cohorts into better verdicts;
    without a margin there is no verdict at all, with the demo's 0.3 there are some."""
    from ltrcore.demo import generate

    data = generate(60_000, seed=3)
    t = ltrcore.cohorts(data.orders, signups=data.signups, by="channel", tz="Europe/Berlin")
    assert t.metrics(spend=data.spend).get_column("verdict").null_count() == t.metrics(spend=data.spend).height
    assert (t.metrics(spend=data.spend, margin=0.3).get_column("verdict") == "losing money").sum() > 0


def test_html_without_a_margin_says_revenue_and_shows_no_verdict(table: ltrcore.CohortTable) -> None:
    pytest.importorskip("matplotlib")
    out = table.to_html(spend=SPEND)
    assert "The y axis is cumulative revenue per acquired customer (no margin was given" in out
    assert "<th>LTR/CAC (revenue-based)</th>" in out and "No margin given" in out
    assert "<th>LTV/CAC</th>" not in out and "<td class='verdict'" not in out
    assert "not given: revenue-based figures, no LTV or verdict" in out


# --- the command line -----------------------------------------------------------------------------
def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ltrcore.cli", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("first-hour")
    ORDERS.write_parquet(root / "orders.parquet")
    SIGNUPS.write_parquet(root / "signups.parquet")
    SPEND.write_csv(root / "spend.csv")
    SPEND.drop("channel").group_by("period").agg(pl.col("spend").sum()).write_csv(root / "spend-total.csv")
    ORDERS.head(0).write_parquet(root / "empty.parquet")
    (root / "header.csv").write_text("user_id,ts,amount\n")
    (root / "zero.csv").write_text("")
    return {name: str(root / f) for name, f in (
        ("orders", "orders.parquet"), ("signups", "signups.parquet"), ("spend", "spend.csv"), ("spend_total", "spend-total.csv"),
        ("empty", "empty.parquet"), ("header", "header.csv"), ("zero", "zero.csv"))} | {"root": str(root)}  # fmt: skip


def _report(files: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return run("report", files["orders"], "--signups", files["signups"], "--by", "channel", "--spend", files["spend"],
               "--horizon", "3", "--as-of", "2024-05-01", *extra)  # fmt: skip


def test_cli_without_margin_is_revenue_based(files: dict[str, str]) -> None:
    done = _report(files)
    assert done.returncode == 0, done.stderr
    assert "revenue-based" in done.stdout and "ltr_cac" in done.stdout
    assert not any(word in done.stdout for word in VERDICT_WORDS), done.stdout


def test_cli_prints_one_basis_per_table(files: dict[str, str]) -> None:
    """Beside CAC and LTV/CAC (per customer) the table prints LTV per customer, never the per-signup
    LTV, so the printed columns divide to the printed ratio."""
    done = _report(files, "--margin", "0.3")
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "ltv_cac" in line and "cohort" in line)
    names = [c.strip() for c in header.strip("│ ").split("┆")]
    assert names == ["channel", "cohort", "customers", "observed_ages", "cac", "ltv_per_customer", "ltv_cac", "payback",
                     "payback_status", "verdict", "verdict_basis"]  # fmt: skip
    assert "per customer: CAC, LTV and LTV/CAC" in done.stdout


def test_cli_many_cohorts_point_to_cohort_metrics_out(tmp_path: Path) -> None:
    out = tmp_path / "cohorts.csv"
    done = run("demo", "--rows", "20k", "--cohort-metrics-out", str(out))
    assert done.returncode == 0, done.stderr
    assert "more than 40 to print; write them all with --cohort-metrics-out" in done.stdout
    written = pl.read_csv(out)
    assert written.height > 40 and {"verdict", "verdict_basis", "ltv_per_customer"} <= set(written.columns)


@pytest.mark.parametrize(
    "name, extra, message",
    [
        ("empty", [], "orders: no rows in '{path}'"),
        ("header", [], "orders: no rows in '{path}'"),
        ("zero", [], "orders: '{path}' is an empty file (0 bytes), not a csv file"),
        ("empty", ["--spend", "{spend}"], "orders: no rows in '{path}'"),  # not the spend's channel column
        ("empty", ["--spend", "{spend_total}"], "orders: no rows in '{path}'"),  # not "spend has periods with no cohort"
    ],
)
def test_empty_input_is_an_error_with_one_line(files: dict[str, str], name: str, extra: list[str], message: str) -> None:
    path = files[name]
    done = run("report", path, *[e.format(**files) for e in extra])
    assert done.returncode == 2
    assert done.stderr.strip() == f"ltrcore: error: {message.format(path=path)}"
    assert done.stdout == ""


def test_an_empty_file_is_an_error_in_the_api_too(files: dict[str, str]) -> None:
    """A file, directory or glob without rows is an error; an in-memory table without rows gives an
    empty, well-typed table (a filter in a pipeline may leave nothing, and the caller can see it)."""
    with pytest.raises(ltrcore.InvalidArgumentError, match="^orders: no rows in '.*empty.parquet'$"):
        ltrcore.cohorts(files["empty"])
    assert ltrcore.cohorts(ORDERS.head(0)).to_polars().height == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--margin", "30"], "margin must be in (0, 1]; got 30.0"),
        (["--discount-rate", "-1"], "discount_rate must be a non-negative annual rate"),
        (["--out", "x.xlsx"], "--out must end in .parquet, .csv, .json or .arrow"),
        (["--cohort-metrics-out", "x.json"], "--cohort-metrics-out must end in .csv or .parquet"),
    ],
)
def test_arguments_are_checked_before_any_work(files: dict[str, str], extra: list[str], message: str) -> None:
    done = _report(files, *extra)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""  # nothing computed or printed first


def test_a_spend_channel_without_by_fails_before_any_work(files: dict[str, str]) -> None:
    done = run("report", files["orders"], "--spend", files["spend"])
    assert done.returncode == 2 and done.stdout == ""
    assert "a channel column needs by='channel' (--by channel)" in done.stderr


def test_html_without_matplotlib_fails_before_any_work(files: dict[str, str]) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; from ltrcore.cli import main; "
            f"sys.exit(main(['report', {files['orders']!r}, '--html', 'r.html']))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "--html needs matplotlib: pip install 'ltrcore[report]'" in done.stderr


def test_version_and_no_arguments() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"ltrcore {ltrcore.__version__}")
    done = run()
    assert done.returncode == 0
    assert "commands:" in done.stdout and all(c in done.stdout for c in ("report", "state", "demo"))


@pytest.mark.parametrize("command", ["report", "demo", "state build"])
def test_help_keeps_examples_on_their_own_lines_and_each_default_once(command: str) -> None:
    done = run(*command.split(), "--help")
    assert done.returncode == 0
    text = done.stdout
    examples = [line for line in text.splitlines() if line.startswith("  ltrcore ")]
    assert examples or command == "state build"
    assert all(line.count("ltrcore ") == 1 for line in examples)
    flat = " ".join(text.split())
    assert flat.count("(default:") == flat.count("default:")  # never "default: x (default: x)"
    assert "calendar period of a cohort and an age (default: month)" in flat


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ltrcore.cli", "demo", "--rows", "20k"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # what `| head -1` reads
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == "", err


def test_strict_flag_and_warnings_in_cli_words(files: dict[str, str], tmp_path: Path) -> None:
    bad = pl.concat([ORDERS, pl.DataFrame({"user_id": [None], "ts": [_ts(1)], "amount": [5.0]}, schema=ORDERS.schema)])
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    done = run("report", str(path))
    assert done.returncode == 0
    assert "pass --strict to raise instead" in done.stderr and "strict=True" not in done.stderr
    done = run("report", str(path), "--strict")
    assert done.returncode == 2
    assert done.stderr == 'ltrcore: error: --strict: column "user_id" in orders has a null at row 5\n'


def test_progress_line_has_total_percent_eta_and_rate() -> None:
    from ltrcore.cli import _progress_line

    line = _progress_line("orders", 25_000_000, 100_000_000, 2.0)
    assert line == "orders: 25,000,000 / 100,000,000 rows (25%), ETA 00:06, 12.5 M rows/s"
    assert _progress_line("orders", 10, None, 1.0) == "orders: 10 rows, 0.0 M rows/s"
    assert _progress_line("finalizing", 0, None, 1.5) == "finalizing (1.5 s)"


def test_progress_bar_shows_the_total_of_a_parquet_input(files: dict[str, str]) -> None:
    from helpers import stderr_on_a_terminal

    code, shown = stderr_on_a_terminal("report", files["orders"])
    assert code == 0
    assert " / 5 rows (100%), ETA " in shown, shown


# --- 2. per-order cost: LTV from real profit, no assumed margin ------------------------------------
COSTED = ORDERS.with_columns(pl.Series("cogs", [70.0, 40.0, 45.0, 10.0, 10.0]))


def test_ltv_comes_from_the_orders_profit_without_a_margin() -> None:
    """Costs: a's orders cost 70 and 40, b's 45, c's 10, d's 10. Profit per cell:
        ads, January: age 0 a 100 - 70 = 30; age 1 a 100 - 40 = 60; age 2 b 50 - 45 = 5.
    Cumulative profit 30, 90, 95 (revenue 100, 200, 250; the realized margin 95 / 250 = 0.38).
    Spend 100, 2 customers: LTV per customer 47.5, CAC 50, LTV/CAC = 95 / 100 = 0.95: losing money;
    cumulative profit never reaches 100: not paid back within 3 observed months. ROMI -0.05.
        ads, February: c 30 - 10 = 20 at age 0; spend 20: LTV/CAC exactly 1 (losing money, at most 1),
    paid back at age 0 (20 ≥ 20), on exact numbers. seo, January: d 40 - 10 = 30 against 10: 3, healthy."""
    table = ltrcore.cohorts(COSTED, signups=SIGNUPS, by="channel", horizon=3, as_of="2024-05-01", cost="cogs")
    assert table.has_profit
    m = table.metrics(spend=SPEND)
    jan = _ads_january(m)
    assert (jan["ltv"], jan["ltv_per_customer"], jan["cac"]) == (47.5, 47.5, 50.0)
    assert (jan["ltv_cac"], jan["verdict"], jan["romi"], jan["payback"]) == (0.95, "losing money", pytest.approx(-0.05), "not within 3 observed months")
    feb = m.filter((pl.col("channel") == "ads") & (pl.col("cohort") == dt.date(2024, 2, 1))).row(0, named=True)
    assert (feb["ltv_cac"], feb["payback_age"]) == (1.0, 0)
    seo = m.filter(pl.col("channel") == "seo").row(0, named=True)
    assert (seo["ltv_cac"], seo["verdict"]) == (3.0, "healthy")
    ch = table.channels(spend=SPEND).filter(pl.col("total")).row(0, named=True)
    assert ch["ltv_cac"] == pytest.approx((95 + 20 + 30) / 130)


def test_a_margin_beside_per_order_cost_is_refused(files: dict[str, str]) -> None:
    table = ltrcore.cohorts(COSTED, signups=SIGNUPS, by="channel", horizon=3, as_of="2024-05-01", cost="cogs")
    with pytest.raises(ltrcore.InvalidArgumentError, match="the orders carry their cost"):
        table.metrics(spend=SPEND, margin=0.3)
    done = run("report", files["orders"], "--cost", "cogs", "--margin", "0.3")
    assert done.returncode == 2 and done.stdout == ""
    assert "--cost gives each order's exact profit, so LTV needs no --margin" in done.stderr


def test_every_reconciliation_reason_has_its_words_in_the_report() -> None:
    from ltrcore.report import RECON_HELP

    activity = pl.DataFrame({"user_id": ["a"], "ts": [_ts(1)]})
    t = ltrcore.cohorts(ORDERS, signups=SIGNUPS, activity=activity, horizon=3, as_of="2024-05-01")
    tables = (t.reconciliation, t.signups_reconciliation, t.activity_reconciliation)
    reasons = {r for frame in tables if frame is not None for r in frame.get_column("reason").to_list()}
    assert "bad_ts" in reasons and reasons <= set(RECON_HELP), reasons - set(RECON_HELP)
