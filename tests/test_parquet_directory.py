"""A directory of parquet files as the orders (issue 15, bigger than RAM): read as one table, and the
progress reports the directory's total rows, for the percent and the ETA, in every pass over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ltrcore = pytest.importorskip("ltrcore")

FILES = 3
ROWS_PER_FILE = 40_000
USERS = 3_000


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parquet-dir")
    rng = np.random.default_rng(15)
    (root / "orders").mkdir()
    for f in range(FILES):
        table = pa.table(
            {
                "user_id": rng.integers(1, USERS + 1, ROWS_PER_FILE),
                "ts": pa.array(rng.integers(1_704_067_200, 1_735_689_600, ROWS_PER_FILE) * 1_000_000, pa.timestamp("us", "UTC")),
                "amount": np.round(rng.gamma(2.0, 20.0, ROWS_PER_FILE) - 2.0, 2),  # some refunds
            }
        )
        pq.write_table(table, root / "orders" / f"part-{f}.parquet", row_group_size=10_000)
    signups = pa.table(
        {"user_id": np.arange(1, USERS + 1), "signup_ts": pa.array(np.full(USERS, 1_704_067_200_000_000), pa.timestamp("us", "UTC"))}
    )
    pq.write_table(signups, root / "signups.parquet")
    return root


def test_a_directory_reads_as_the_table_of_its_files(directory: Path) -> None:
    whole = pq.read_table(directory / "orders")
    got = ltrcore.cohorts(str(directory / "orders"), horizon=6).to_polars()
    assert got.equals(ltrcore.cohorts(whole, horizon=6).to_polars())


@pytest.mark.parametrize("cohort", ["first_purchase", "signup"])
def test_progress_counts_every_pass_over_a_directory_up_to_its_total(directory: Path, cohort: str) -> None:
    seen: list[tuple[str, int]] = []
    kw = {"signups": str(directory / "signups.parquet")} if cohort == "signup" else {}
    ltrcore.cohorts(str(directory / "orders"), progress=lambda phase, rows: seen.append((phase, rows)), _chunk_rows=4_096, **kw)
    passes = ["orders: first purchases", "orders"] if cohort == "first_purchase" else ["orders"]
    for phase in passes:
        rows = [n for p, n in seen if p == phase]
        assert rows == sorted(rows) and rows[-1] == FILES * ROWS_PER_FILE, (phase, rows)
    if cohort == "signup":
        assert "orders: first purchases" not in [p for p, _ in seen]


@pytest.mark.parametrize("cohort", ["first_purchase", "signup"])
def test_the_progress_bar_shows_percent_and_eta_of_a_directory_in_every_pass(directory: Path, cohort: str) -> None:
    from helpers import stderr_on_a_terminal

    extra = ["--signups", str(directory / "signups.parquet")] if cohort == "signup" else []
    code, shown = stderr_on_a_terminal("report", str(directory / "orders"), *extra)
    assert code == 0, shown
    total = f" / {FILES * ROWS_PER_FILE:,} rows ("
    lines = [line for line in shown.split("\r\x1b[2K") if line]
    passes = ["orders: first purchases: ", "orders: "] if cohort == "first_purchase" else ["signups: ", "orders: "]
    for phase in passes:
        drawn = [line for line in lines if line.startswith(phase) and not line.startswith(phase + "first")]
        assert drawn, (phase, shown)
        expected = f" / {USERS:,} rows (" if phase == "signups: " else total
        assert all(expected in line and ", ETA " in line for line in drawn), (phase, drawn)
        assert any("(100%)" in line for line in drawn), (phase, drawn)


def test_signups_from_files_give_the_table_s_numbers(directory: Path, tmp_path: Path) -> None:
    """Signups from one file or from a directory of them give the numbers of the same signups in memory."""
    signups = pq.read_table(directory / "signups.parquet")
    (tmp_path / "signups").mkdir()
    pq.write_table(signups.slice(0, 1_000), tmp_path / "signups" / "a.parquet")
    pq.write_table(signups.slice(1_000), tmp_path / "signups" / "b.parquet")
    expected = ltrcore.cohorts(str(directory / "orders"), signups=signups, horizon=6)
    for path in (directory / "signups.parquet", tmp_path / "signups"):
        got = ltrcore.cohorts(str(directory / "orders"), signups=str(path), horizon=6)
        assert got.to_polars().equals(expected.to_polars())
        assert got.signups_reconciliation.equals(expected.signups_reconciliation)


def test_signups_file_of_string_ids_without_orders(tmp_path: Path) -> None:
    """A slice of users who signed up and never ordered, from a file: their ids keep their type."""
    path = tmp_path / "signups.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b"], "signup_ts": pa.array([1_704_067_200_000_000] * 2, pa.timestamp("us", "UTC"))}), path)
    acc = ltrcore.Accumulator(ltrcore.CohortSpec(cohort="signup", horizon=3))
    acc.update_signups(str(path))
    table = acc.finish().finalize(as_of="2024-06-01")
    assert table.signups_reconciliation.filter(pl.col("reason") == "used")["rows"].to_list() == [2]
