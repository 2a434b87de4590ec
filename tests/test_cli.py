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
    assert "CohortTable:" in out and "revenue by age:" in out
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
