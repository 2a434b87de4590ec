"""The command line as a user runs it: `ltrcore demo` and its errors."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ltrcore.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_prints_the_cohorts_the_reconciliation_and_the_verdicts():
    done = run("demo", "--rows", "60k", "--threads", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "demo retailer: 60,000 orders" in out
    assert "CohortTable:" in out and "LTR (cumulative revenue per member) by age:" in out
    assert "reconciliation (orders)" in out and "null_user" in out
    assert "rows: 60,000 of 60,000 input orders accounted for" in out
    assert "By channel" in out and "LTV/CAC" in out


def test_demo_is_deterministic():
    a, b = run("demo", "--rows", "30k"), run("demo", "--rows", "30k")
    strip = lambda s: [line for line in s.splitlines() if " s " not in line and "M input rows/s" not in line and "generated in" not in line]
    assert strip(a.stdout) == strip(b.stdout)


def test_bad_arguments_are_one_line_and_a_non_zero_exit():
    done = run("demo", "--rows", "lots")
    assert done.returncode == 2
    assert "not a row count" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_shows_usage_and_examples():
    done = run("demo", "--help")
    assert done.returncode == 0
    assert "--rows" in done.stdout and "examples:" in done.stdout


# --- ltrcore report -------------------------------------------------------------------------------

import polars as pl
import pytest

import ltrcore
from ltrcore.demo import generate


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = generate(40_000, seed=3)
    root = tmp_path_factory.mktemp("report")
    out = {}
    for fmt, write in (("parquet", "write_parquet"), ("csv", "write_csv"), ("arrow", "write_ipc")):
        path = root / f"orders.{fmt}"
        getattr(d.orders, write)(path)
        out[fmt] = str(path)
    (root / "parts").mkdir()
    d.orders.head(20_000).write_parquet(root / "parts" / "a.parquet")
    d.orders.tail(20_000).write_parquet(root / "parts" / "b.parquet")
    out["dir"] = str(root / "parts")
    out["glob"] = str(root / "parts" / "*.parquet")
    d.signups.write_parquet(root / "signups.parquet")
    d.spend.write_csv(root / "spend.csv")
    out["signups"] = str(root / "signups.parquet")
    out["spend"] = str(root / "spend.csv")
    out["root"] = str(root)
    return out


def expected(files: dict[str, str], **kw) -> pl.DataFrame:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ltrcore.cohorts(files["parquet"], tz="Europe/Berlin", **kw).to_polars()


@pytest.mark.parametrize("source", ["parquet", "csv", "arrow", "dir", "glob"])
def test_report_reads_every_format_and_round_trips_out(files, source):
    out = f"{files['root']}/cohorts-{source}.parquet"
    done = run("report", files[source], "--tz", "Europe/Berlin", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "reconciliation (orders)" in done.stdout and "metrics per cohort" in done.stdout
    assert "excluded for bad data" in done.stderr  # the demo's bad rows: a one-line warning
    got = pl.read_parquet(out)
    want = expected(files)
    assert got.equals(want), (got, want)


@pytest.mark.parametrize("suffix", ["csv", "json", "arrow"])
def test_out_formats_round_trip(files, suffix):
    out = f"{files['root']}/cohorts.{suffix}"
    done = run("report", files["parquet"], "--tz", "Europe/Berlin", "--out", out)
    assert done.returncode == 0, done.stderr
    want = expected(files)
    if suffix == "csv":
        got = pl.read_csv(out, schema=want.schema)
    elif suffix == "json":
        got = pl.read_json(out, schema=want.schema)
    else:
        got = pl.read_ipc(out)
    assert got.equals(want)


def test_report_with_signups_spend_and_channels_prints_verdicts(files):
    done = run(
        "report", files["parquet"], "--signups", files["signups"], "--spend", files["spend"],
        "--by", "channel", "--tz", "Europe/Berlin", "--margin", "0.3",
    )
    assert done.returncode == 0, done.stderr
    assert "verdict" in done.stdout and "By channel" in done.stdout and "Next:" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/orders.parquet"], "no such file"),
        (["{parquet}", "--user", "uid"], 'column "uid" not found in orders; available columns'),
        (["{parquet}", "--tz", "Mars/Base"], "unknown time zone"),
        (["{parquet}", "--as-of", "2024-13-45"], "cannot parse"),
        (["{parquet}", "--margin", "abc"], "invalid float value"),
        (["{parquet}", "--spend", "/nonexistent/spend.csv"], "spend: no such file"),
        (["{parquet}", "--out", "{root}/x.xlsx"], "--out must end in"),
    ],
)
def test_errors_are_one_line_and_exit_2(files, args, message):
    done = run("report", *[a.format(**files) for a in args])
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip() and "warning" not in line]
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


def test_report_help_shows_defaults_and_examples():
    done = run("report", "--help")
    assert done.returncode == 0
    assert "examples:" in done.stdout and "(default: 12)" in done.stdout


def test_ctrl_c_exits_130(files):
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ltrcore.cli", "demo", "--rows", "20M"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_signups_and_spend_may_be_directories(files, tmp_path):
    import shutil

    (tmp_path / "signups").mkdir()
    shutil.copy(files["signups"], tmp_path / "signups" / "part-0.parquet")
    done = run("report", files["glob"], "--signups", str(tmp_path / "signups"), "--spend", files["spend"],
               "--by", "channel", "--tz", "Europe/Berlin")
    assert done.returncode == 0, done.stderr
    assert "By channel" in done.stdout


def test_progress_bar_on_a_terminal_and_silence_otherwise(files):
    from helpers import stderr_on_a_terminal

    # stderr a pseudo-terminal: the bar is drawn (rows and rows/s).
    code, shown = stderr_on_a_terminal("report", files["parquet"])
    assert code == 0
    assert "rows" in shown and "M rows/s" in shown
    # stderr a pipe: no bar, only the one-line warning about the demo's bad rows.
    done = run("report", files["parquet"])
    assert "rows/s" not in done.stderr


# --- ltrcore state --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def months(files: dict[str, str]) -> dict[str, str]:
    """The demo's orders and signups cut at 2025-06-01 (Berlin): history, and the months after."""
    root = files["root"]
    cut = pl.datetime(2025, 6, 1, time_zone="Europe/Berlin")
    out = {}
    for name in ("orders", "signups"):
        frame = pl.read_parquet(files["parquet"] if name == "orders" else files["signups"])
        ts = "ts" if name == "orders" else "signup_ts"
        frame.filter(pl.col(ts) < cut).write_parquet(f"{root}/{name}-old.parquet")
        frame.filter(pl.col(ts) >= cut).write_parquet(f"{root}/{name}-new.parquet")
        out[f"{name}_old"], out[f"{name}_new"] = f"{root}/{name}-old.parquet", f"{root}/{name}-new.parquet"
    return out


def test_state_build_update_and_report_equal_a_full_report(files, months, tmp_path):
    state = str(tmp_path / "state.parquet")
    done = run("state", "build", months["orders_old"], "--signups", months["signups_old"], "--by", "channel",
               "--tz", "Europe/Berlin", "--state", state)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "watermark 2025-05-01" in done.stdout
    done = run("state", "update", months["orders_new"], "--signups", months["signups_new"], "--state", state)
    assert done.returncode == 0, done.stderr
    out = str(tmp_path / "from-state.parquet")
    done = run("report", "--state", state, "--spend", files["spend"], "--margin", "0.3", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "verdict" in done.stdout and "By channel" in done.stdout
    assert pl.read_parquet(out).equals(expected(files, signups=files["signups"], by="channel"))
    # The same month again is late: refused, one line, exit 2, and the file is unchanged.
    before = open(state, "rb").read()
    done = run("state", "update", months["orders_new"], "--state", state)
    assert done.returncode == 2
    assert "fall at or before the state's watermark" in done.stderr and "--late apply" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert open(state, "rb").read() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["state", "update", "{orders_new}", "--state", "{root}/none.parquet"], "none.parquet: no such file"),
        (["state", "update", "--state", "{root}/x.parquet"], "needs NEW_ORDERS, --signups or --activity"),
        (["state", "update", "{orders_new}", "--state", "{orders_old}"], "not an ltrcore state"),
        (["state", "build", "{orders_old}", "--state", "{root}/s.parquet", "--horizon", "0"], "horizon"),
        (["state", "build", "{orders_old}"], "the following arguments are required: --state"),
        (["report", "--state", "{root}/none.parquet"], "none.parquet: no such file"),
        (["report", "{orders_old}", "--state", "{root}/none.parquet"], "ORDERS or --state, not both"),
        (["report"], "report needs ORDERS or --state"),
    ],
)
def test_state_errors_are_one_line_and_exit_2(files, months, args, message):
    done = run(*[a.format(**files, **months) for a in args])
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip() and "warning" not in line]
    assert len(lines) == 1, done.stderr
    assert message in lines[0]


def test_report_from_a_state_refuses_spec_options(files, months, tmp_path):
    state = str(tmp_path / "state.parquet")
    assert run("state", "build", months["orders_old"], "--state", state).returncode == 0
    done = run("report", "--state", state, "--by", "channel")
    assert done.returncode == 2 and "--by is fixed by the state's spec" in done.stderr
