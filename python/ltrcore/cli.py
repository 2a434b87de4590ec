"""The ``ltrcore`` command line.

``ltrcore report ORDERS ...`` computes the cohorts of order files (parquet, CSV or Arrow IPC: a file,
directory or glob) and prints the cohort grid, the metrics with verdicts, the reconciliation and a
summary, and the table per channel; it can also write the long table (``--out``), the table per
channel (``--metrics-out``, CSV or parquet) and an HTML report (``--html``). ``ltrcore
demo`` does the same on the built-in synthetic retailer. Errors print one line and exit 2; Ctrl-C
exits with 130. A progress bar goes to stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence

from typing import Any

import polars as pl

from .exceptions import LtrcoreError


def _rows(text: str) -> int:
    """Parses ``1000000``, ``1M``, ``200k`` or ``1.5e6``."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t and t[-1] in "km":
        mult = 1_000 if t[-1] == "k" else 1_000_000
        t = t[:-1]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (try 1000000, 1M or 200k)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the row count must be positive; got {text!r}")
    return value


#: The input table each phase of a run reads (the others walk the users, not the rows).
_PHASE_TABLE = {"signups": "signups", "orders: first purchases": "orders", "orders": "orders", "activity": "activity"}


def _row_count(path: str | None, table: str) -> int | None:
    """The rows of an input file, directory or glob when its metadata says so (parquet footers,
    no data read), else None. Reading it also checks that it exists and has rows."""
    if path is None:
        return None
    from .adapters import _dataset

    fragments = list(_dataset(path, table).get_fragments())
    if not all(type(f).__name__ == "ParquetFileFragment" for f in fragments):
        return None
    return sum(f.count_rows() for f in fragments)


def _progress_line(phase: str, rows: int, total: int | None, elapsed: float) -> str:
    """One line of the progress bar: rows, the phase's rate, and with a known total the percent and ETA."""
    if phase not in _PHASE_TABLE and rows == 0:  # walks over the users, not the rows
        return f"{phase} ({elapsed:.1f} s)"
    rate = rows / max(elapsed, 1e-9)
    line = f"{phase}: {rows:,}"
    if total:
        left = max(total - rows, 0) / rate if rate > 0 else None
        eta = "?" if left is None else time.strftime("%M:%S", time.gmtime(left)) if left < 3600 else f"{left / 3600:.1f} h"
        line += f" / {total:,} rows ({min(rows / total, 1.0):.0%}), ETA {eta}"
    else:
        line += " rows"
    return line + f", {rate / 1e6:.1f} M rows/s"


def _progress_bar(totals: dict[str, int | None] | None = None) -> Any:
    """A progress callback drawing one line on stderr, or None when stderr is not a terminal.
    ``totals``: rows per input table where known, for the percent and the ETA."""
    if not sys.stderr.isatty():
        return None
    known = totals or {}
    current: dict[str, Any] = {"phase": "", "start": time.perf_counter()}

    def show(phase: str, rows: int) -> None:
        if phase != current["phase"]:  # each phase has its own rate
            current.update(phase=phase, start=time.perf_counter())
        elapsed = time.perf_counter() - current["start"]
        total = known.get(_PHASE_TABLE.get(phase, ""))
        sys.stderr.write("\r\x1b[2K" + _progress_line(phase, rows, total, elapsed))
        sys.stderr.flush()

    return show


def _end_progress(bar: Any) -> None:
    if bar is not None:
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


def _read_table(path: str, what: str) -> pl.DataFrame:
    """A small input read whole (spend): parquet, CSV or Arrow IPC file, directory or glob."""
    from .adapters import _dataset

    # pyarrow's CSV reader recognises ISO dates and times; "YYYY-MM" periods stay strings, which the
    # metrics layer reads too.
    return pl.DataFrame(_dataset(path, what).to_table())


def _out_writer(path: str) -> Any:
    """The writer of ``--out``'s format, from its suffix (checked before any work)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    writers = {"parquet": pl.DataFrame.write_parquet, "csv": pl.DataFrame.write_csv, "json": pl.DataFrame.write_json,
               "arrow": pl.DataFrame.write_ipc, "ipc": pl.DataFrame.write_ipc, "feather": pl.DataFrame.write_ipc}  # fmt: skip
    if suffix not in writers:
        raise ValueError(f"--out must end in .parquet, .csv, .json or .arrow; got {path!r}")
    return writers[suffix]


def _write_out(frame: pl.DataFrame, path: str) -> None:
    _out_writer(path)(frame, path)


#: Formats ``--metrics-out`` writes the channel table to.
METRICS_OUT_SUFFIXES = ("csv", "parquet")


def _check_metrics_out(args: argparse.Namespace) -> None:
    """Refuses a ``--metrics-out`` or ``--cohort-metrics-out`` of another format before any work is done."""
    for flag in ("metrics_out", "cohort_metrics_out"):
        path = getattr(args, flag, None)
        if path is None:
            continue
        suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if suffix not in METRICS_OUT_SUFFIXES:
            raise ValueError(f"--{flag.replace('_', '-')} must end in .csv or .parquet; got {path!r}")


def _write_metrics(frame: pl.DataFrame, path: str) -> None:
    if path.lower().endswith(".parquet"):
        frame.write_parquet(path)
    else:
        frame.write_csv(path)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Examples on their own lines, and each option's default shown once: when it has one and its
    help does not already give it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if action.option_strings and not no_default and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit 2), like every other error of the command."""

    def error(self, message: str) -> Any:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ltrcore",
        description="Exact, fast cohort lifetime revenue.",
        formatter_class=_Help,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ltrcore {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", parser_class=_Parser)
    report = sub.add_parser(
        "report",
        help="cohorts, unit economics and reconciliation of order files",
        description="Compute the cohort table of ORDERS (parquet, CSV or Arrow IPC: a file, directory or "
        "glob) and print the cohort grid, the metrics with verdicts, the reconciliation and a summary.",
        epilog="examples:\n"
        "  ltrcore report orders.parquet\n"
        "  ltrcore report 'orders/*.parquet' --signups signups.parquet --by channel --spend spend.csv --margin 0.3\n"
        "  ltrcore report orders.csv --tz Europe/Berlin --as-of 2025-01-01 --out cohorts.parquet --html report.html\n"
        "  ltrcore report orders.parquet --signups signups.parquet --by channel --spend spend.csv --metrics-out channels.csv\n"
        "  ltrcore report --state state.parquet --spend spend.csv --margin 0.3\n",
        formatter_class=_Help,
    )
    report.add_argument("orders", nargs="?", help="order file, directory or glob (parquet, CSV or Arrow IPC)")
    report.add_argument("--state", help="report from a saved monthly state instead of ORDERS (see `ltrcore state`)")
    report.add_argument("--signups", help="signups file (user + signup time + segment columns): signup cohorts")
    report.add_argument("--activity", help="activity file (user + timestamp): activity retention")
    report.add_argument("--spend", help="acquisition spend file (period/month [, channel], spend or components)")
    _spec_options(report)
    report.add_argument("--as-of", default=None, help="cut-off date/time (default: start of the last order's period)")
    report.add_argument("--since", default=None, help="tracking start date (earlier periods are not used)")
    report.add_argument("--margin", type=float, default=None,
                        help="gross margin turning LTR into LTV, in (0, 1]; without it, no LTV, payback or verdict "
                        "(LTR/CAC is shown revenue-based)")
    report.add_argument("--discount-rate", type=float, default=0.0, help="annual discount rate for CLV")
    report.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    report.add_argument("--out", help="write the long cohort table to .parquet, .csv, .json or .arrow")
    report.add_argument("--html", help="write a self-contained HTML report (needs ltrcore[report])")
    report.add_argument("--metrics-out", help="write the table per channel (pooled over cohorts) to .csv or .parquet")
    report.add_argument("--cohort-metrics-out", help="write the metrics of every cohort to .csv or .parquet")
    _state_parsers(sub)
    demo = sub.add_parser(
        "demo",
        help="run the cohort engine on the built-in synthetic retailer",
        description="Generate the deterministic synthetic retailer (signups with a channel, orders with "
        "refunds and a few bad rows, logins) and print its signup cohorts and reconciliation.",
        epilog="examples:\n  ltrcore demo\n  ltrcore demo --rows 5M --period quarter\n",
        formatter_class=_Help,
    )
    demo.add_argument("--rows", type=_rows, default=1_000_000, help="order rows to generate (default: 1M)")
    demo.add_argument("--seed", type=int, default=7, help="generator seed (default: 7)")
    demo.add_argument("--period", default="month", choices=["month", "week", "quarter", "day"], help="calendar period of a cohort and an age")
    demo.add_argument("--horizon", type=int, default=12, help="ages per cohort (default: 12)")
    demo.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    demo.add_argument("--margin", type=float, default=0.3, help="gross margin turning LTR into LTV (default: 0.3)")
    demo.add_argument("--discount-rate", type=float, default=0.0, help="annual discount rate for CLV (default: 0)")
    demo.add_argument("--out", help="write the long cohort table (by channel) to .parquet, .csv, .json or .arrow")
    demo.add_argument("--html", help="write a self-contained HTML report (needs ltrcore[report])")
    demo.add_argument("--metrics-out", help="write the table per channel (pooled over cohorts) to .csv or .parquet")
    demo.add_argument("--cohort-metrics-out", help="write the metrics of every cohort to .csv or .parquet")
    return parser


#: Options of ``report`` that make the spec: fixed by a saved state, so refused beside ``--state``.
_SPEC_OPTIONS = (
    "signups", "activity", "user", "ts", "amount", "signup_ts", "activity_ts", "signup_user", "activity_user", "ts_format", "cost",
    "by", "tz", "period", "horizon", "min_amount",
)  # fmt: skip


def _spec_options(parser: argparse.ArgumentParser) -> None:
    """The options that make a :class:`CohortSpec` (shared by ``state build``)."""
    parser.add_argument("--user", default="user_id", help="user id column")
    parser.add_argument("--ts", default="ts", help="order timestamp column")
    parser.add_argument("--amount", default="amount", help="order amount column")
    parser.add_argument("--cost", default=None, help="per-order cost column of the orders: each cell's exact profit (amount - cost)")
    parser.add_argument("--signup-ts", default="signup_ts", help="signup timestamp column")
    parser.add_argument("--activity-ts", default=None, help="activity timestamp column (default: --ts)")
    parser.add_argument("--signup-user", default=None, help="user id column of the signups (default: --user)")
    parser.add_argument("--activity-user", default=None, help="user id column of the activity (default: --user)")
    parser.add_argument(
        "--ts-format",
        default=None,
        help="strftime layout of timestamps stored as text, in every table, e.g. '%%d.%%m.%%Y %%H:%%M' (default: ISO-8601)",
    )
    parser.add_argument("--by", action="append", default=None, help="segment column (repeatable)")
    parser.add_argument("--tz", default="UTC", help="IANA time zone for period boundaries")
    parser.add_argument("--period", default="month", choices=["month", "week", "quarter", "day"], help="calendar period of a cohort and an age")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row (null user or time, NaN amount) instead of counting it")
    parser.add_argument("--horizon", type=int, default=12, help="ages per cohort")
    parser.add_argument("--min-amount", type=float, default=0.0, help="a paying order has amount > this")


def _state_parsers(sub: Any) -> None:
    state = sub.add_parser(
        "state",
        help="the monthly state: build it once, update it with each new month",
        description="Build a saved state from the orders so far, then add each new month without "
        "reading history again; `ltrcore report --state FILE` reports from it.",
        epilog="examples:\n"
        "  ltrcore state build 'orders/2024-*.parquet' --signups signups.parquet --by channel --state state.parquet\n"
        "  ltrcore state update orders/2025-01.parquet --signups signups-2025-01.parquet --state state.parquet\n"
        "  ltrcore state update late-refunds.parquet --late apply --state state.parquet\n"
        "  ltrcore report --state state.parquet --spend spend.csv --margin 0.3\n",
        formatter_class=_Help,
    )
    actions = state.add_subparsers(dest="action", required=True, parser_class=_Parser)
    build = actions.add_parser(
        "build",
        help="build a state from order files",
        description="Build a state from ORDERS (and --signups, --activity) and save it to --state.",
        formatter_class=_Help,
    )
    build.add_argument("orders", help="order file, directory or glob (parquet, CSV or Arrow IPC)")
    build.add_argument("--state", required=True, help="the state file to write (parquet)")
    build.add_argument("--signups", help="signups file (user + signup time + segment columns): signup cohorts")
    build.add_argument("--activity", help="activity file (user + timestamp): activity retention")
    _spec_options(build)
    build.add_argument("--through", default=None, help="the last date the data covers; without it, the last row's period")
    build.add_argument("--threads", type=int, default=None, help="worker threads; without it, all cores")
    update = actions.add_parser(
        "update",
        help="add new order files to a saved state",
        description="Add NEW_ORDERS (and --signups, --activity) to the state in --state and save it. Rows at "
        "or before the state's watermark are refused unless --late apply. Column names and settings come "
        "from the state.",
        formatter_class=_Help,
    )
    update.add_argument("orders", nargs="?", help="new order file, directory or glob")
    update.add_argument("--state", required=True, help="the state file to update (parquet; replaced atomically)")
    update.add_argument("--signups", help="new signups file")
    update.add_argument("--activity", help="new activity file")
    update.add_argument("--strict", action="store_true", help="stop at the first bad row (null user or time, NaN amount) instead of counting it")
    update.add_argument("--late", default="refuse", choices=["refuse", "apply"], help="what to do with rows at or before the watermark")
    update.add_argument("--through", default=None, help="the last date the new data covers; without it, the last row's period")
    update.add_argument("--threads", type=int, default=None, help="worker threads; without it, all cores")


def _state(args: argparse.Namespace) -> int:
    from .spec import CohortSpec
    from .state import CohortState

    totals = {"orders": _row_count(args.orders, "orders"), "signups": _row_count(args.signups, "signups"),
              "activity": _row_count(args.activity, "activity")}  # fmt: skip
    bar = _progress_bar(totals)
    started = time.perf_counter()
    try:
        if args.action == "build":
            spec = CohortSpec(
                user=args.user,
                ts=args.ts,
                amount=args.amount,
                cohort="signup" if args.signups else "first_purchase",
                signup_ts=args.signup_ts,
                activity_ts=args.activity_ts,
                signup_user=args.signup_user,
                activity_user=args.activity_user,
                ts_format=args.ts_format,
                cost=args.cost,
                by=args.by,
                horizon=args.horizon,
                period=args.period,
                tz=args.tz,
                min_amount=args.min_amount,
            )
            state = CohortState.build(
                spec, args.orders, args.signups, args.activity, through=args.through, strict=args.strict, threads=args.threads,
                progress=bar,
            )
        else:
            if not (args.orders or args.signups or args.activity):
                raise ValueError("state update needs NEW_ORDERS, --signups or --activity")
            state = CohortState.load(args.state)
            state.update(
                args.orders, args.signups, args.activity, late=args.late, through=args.through, strict=args.strict,
                threads=args.threads, progress=bar,
            )
        state.save(args.state)
    finally:
        _end_progress(bar)
    size = os.path.getsize(args.state)
    print(
        f"{args.state}: {state.users:,} users, {state.waiting_rows:,} waiting rows, watermark {state.watermark}; "
        f"{size / 2**20:.1f} MiB written in {time.perf_counter() - started:.2f} s"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import cohorts
    from .demo import generate

    _check_outputs(args)
    tz = "Europe/Berlin"
    t0 = time.perf_counter()
    data = generate(args.rows, seed=args.seed, tz=tz)
    t1 = time.perf_counter()
    print(
        f"demo retailer: {data.orders.height:,} orders, {data.signups.height:,} signups, "
        f"{data.activity.height:,} logins (generated in {t1 - t0:.1f} s)"
    )
    common = dict(signups=data.signups, tz=tz, period=args.period, horizon=args.horizon, threads=args.threads)
    bar = _progress_bar({"orders": data.orders.height, "signups": data.signups.height, "activity": data.activity.height})
    try:
        overall = cohorts(data.orders, activity=data.activity, progress=bar, **common)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        # with the logins too, so the report (--html) shows activity retention beside paying retention
        by_channel = cohorts(data.orders, by="channel", activity=data.activity, progress=bar, **common)  # type: ignore[arg-type]
    finally:
        _end_progress(bar)
    total = data.orders.height + data.signups.height + data.activity.height
    print(f"cohorts computed in {t2 - t1:.2f} s ({total / (t2 - t1) / 1e6:.1f} M input rows/s)\n")
    print(overall)
    print("\nreconciliation (orders): every input row lands in exactly one reason")
    with pl.Config(tbl_rows=20):
        print(overall.reconciliation)
        print("signups:")
        print(overall.signups_reconciliation)
        print("activity:")
        print(overall.activity_reconciliation)
    recon = overall.reconciliation
    print(
        f"\nrows: {int(recon['rows'].sum()):,} of {data.orders.height:,} input orders accounted for; "
        f"amount {recon['amount'].sum()} exactly"
    )
    print(f"\nunit economics by acquisition channel (spend table, margin {args.margin}):")
    _print_metrics(by_channel, data.spend, args.margin, args.discount_rate)
    _write_outputs(by_channel, args, data.spend)
    return 0


def _print_report(table: Any, spend: Any, margin: float | None, discount_rate: float) -> None:
    print(table)
    with pl.Config(tbl_rows=20):
        print("\nreconciliation (orders): every input row lands in exactly one reason")
        print(table.reconciliation)
        for name in ("signups", "activity"):
            recon = getattr(table, f"{name}_reconciliation")
            if recon is not None:
                print(f"{name}:")
                print(recon)
    _print_metrics(table, spend, margin, discount_rate)


#: Per-cohort metrics printed in full up to this many cohorts; beyond, --cohort-metrics-out writes them.
PRINTED_COHORTS = 40


def _print_metrics(table: Any, spend: Any, margin: float | None, discount_rate: float) -> None:
    from . import metrics as metrics_of

    metrics = table.metrics(spend=spend, margin=margin, discount_rate=discount_rate, projected="auto")
    profit = metrics_of._judges_profit(table, margin)  # LTV from a margin, or from the orders' cost
    # One basis per table: per customer beside CAC, per signup without it.
    if spend is None:
        columns = [*table.by, "cohort", "cohort_size", "observed_ages", "ltr", *(["ltv", "clv"] if profit else [])]
        basis = "per signup: LTR" + (", LTV and CLV" if profit else "")
    elif not profit:
        columns = [*table.by, "cohort", "customers", "observed_ages", "cac", "ltr_cac", "drr"]
        basis = "per customer, revenue-based (no --margin, so no LTV or verdict): CAC and LTR/CAC"
    else:
        columns = [*table.by, "cohort", "customers", "observed_ages", "cac", "ltv_per_customer", "ltv_cac", "payback",
                   "payback_status", "verdict", "verdict_basis"]  # fmt: skip
        basis = "per customer: CAC, LTV and LTV/CAC"
    if metrics.height <= PRINTED_COHORTS:
        with pl.Config(tbl_rows=PRINTED_COHORTS, tbl_cols=len(columns), fmt_str_lengths=40, float_precision=2, tbl_width_chars=250):
            print(f"\nmetrics per cohort ({basis}; to date, or to the horizon where projected):")
            print(metrics.select(columns))
    else:
        print(f"\nmetrics per cohort: {metrics.height} cohorts, more than {PRINTED_COHORTS} to print; "
              "write them all with --cohort-metrics-out F.csv|F.parquet")
    _print_channels(table, spend, margin, discount_rate)
    print()
    print(table.summary(spend=spend, margin=margin, discount_rate=discount_rate))


def _channel_view(channels: pl.DataFrame, by: list[str], money: bool, profit: bool) -> pl.DataFrame:
    """The channel table for reading: one ``channel`` label (``all`` on the total row) and the
    columns that matter, rounded."""
    if by:
        names = pl.concat_str([pl.col(b).cast(pl.String).fill_null("∅") for b in by], separator=" · ")
        label = pl.when(pl.col("total")).then(pl.lit("all")).otherwise(names)
    else:
        label = pl.lit("all")
    columns = ["signups", "customers", "ltv_per_customer_observed", "ltv_per_customer_projected", "customer_equity"]
    if money:
        columns = ["signups", "customers", "spend", "cac", "ltv_per_customer_observed", "ltv_per_customer_projected",
                   "ltv_cac", "verdict", "verdict_basis", "payback", "drr", "romi", "customer_equity"]  # fmt: skip
    if not profit:
        columns = ["signups", "customers", "ltr_per_customer_observed", "ltr_per_customer_projected"]
        columns += ["spend", "cac", "ltr_cac", "drr"] if money else []
    return channels.select(label.alias(" / ".join(by) if by else "channel"), *columns)


def _print_channels(table: Any, spend: Any, margin: float | None, discount_rate: float) -> None:
    from . import metrics as metrics_of

    channels = table.channels(spend=spend, margin=margin, discount_rate=discount_rate)
    profit = metrics_of._judges_profit(table, margin)
    view = _channel_view(channels, table.by, spend is not None, profit)
    with pl.Config(tbl_rows=40, tbl_cols=view.width, fmt_str_lengths=60, float_precision=2, tbl_width_chars=250,
                   tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):  # fmt: skip
        value = "LTV" if profit else "LTR (revenue-based: no --margin)"
        print(f"\nper channel, pooled over cohorts ({value} per customer at the horizon: observed over the cohorts that "
              "reached it, projected over those that can be projected to it; verdicts on projected values where they exist):")
        print(view)


def _report(args: argparse.Namespace) -> int:
    from . import cohorts

    if args.state is not None:
        return _report_state(args)
    if args.orders is None:
        raise ValueError("report needs ORDERS or --state FILE")
    _check_outputs(args)
    signups = args.signups  # a path: read by ltrcore itself, in its own Arrow types
    # Counting the rows first also says "orders: no rows" before anything about the spend.
    totals = {"orders": _row_count(args.orders, "orders"), "signups": _row_count(args.signups, "signups"),
              "activity": _row_count(args.activity, "activity")}  # fmt: skip
    spend = _read_spend(args, args.by)
    bar = _progress_bar(totals)
    try:
        table = cohorts(
            args.orders,
            user=args.user,
            ts=args.ts,
            amount=args.amount,
            signups=signups,
            signup_ts=args.signup_ts,
            activity=args.activity,
            activity_ts=args.activity_ts,
            signup_user=args.signup_user,
            activity_user=args.activity_user,
            ts_format=args.ts_format,
            cost=args.cost,
            by=args.by,
            horizon=args.horizon,
            period=args.period,
            tz=args.tz,
            as_of=args.as_of,
            since=args.since,
            min_amount=args.min_amount,
            strict=args.strict,
            threads=args.threads,
            progress=bar,
        )
    finally:
        _end_progress(bar)
    _print_report(table, spend, args.margin, args.discount_rate)
    _write_outputs(table, args, spend)
    return 0


def _report_state(args: argparse.Namespace) -> int:
    from .state import CohortState

    if args.orders is not None:
        raise ValueError("report takes ORDERS or --state, not both")
    _check_outputs(args)
    defaults = _parser().parse_args(["report", "x"])
    given = [name for name in _SPEC_OPTIONS if getattr(args, name) != getattr(defaults, name)]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} is fixed by the state's spec; it cannot be given with --state")
    state = CohortState.load(args.state)
    spend = _read_spend(args, state.spec.by_columns)
    table = state.table(as_of=args.as_of, since=args.since)
    _print_report(table, spend, args.margin, args.discount_rate)
    _write_outputs(table, args, spend)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Every argument that needs no input is checked before any work: a bad one fails at once, not
    after pages of report."""
    from . import metrics

    _check_metrics_out(args)
    if getattr(args, "out", None):
        _out_writer(args.out)
    if getattr(args, "margin", None) is not None:
        metrics._check_margin(args.margin)
        if getattr(args, "cost", None):
            raise ValueError("--cost gives each order's exact profit, so LTV needs no --margin: pass one or the other")
    metrics._discount_rate(args.discount_rate)
    if getattr(args, "html", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--html needs matplotlib: pip install 'ltrcore[report]'") from None


def _read_spend(args: argparse.Namespace, by: Any) -> pl.DataFrame | None:
    """The spend file, its columns checked against the segments before any cohort is computed."""
    if not args.spend:
        return None
    from . import metrics

    spend = _read_table(args.spend, "spend")
    metrics.check_spend_columns(spend, by, args.margin)
    return spend


def _write_outputs(table: Any, args: argparse.Namespace, spend: Any) -> None:
    if getattr(args, "out", None):
        _write_out(table.to_polars(), args.out)
        print(f"\nwrote {args.out}")
    if getattr(args, "html", None):
        table.to_html(args.html, spend=spend, margin=args.margin, discount_rate=args.discount_rate)
        print(f"wrote {args.html}")
    if getattr(args, "metrics_out", None):
        _write_metrics(table.channels(spend=spend, margin=args.margin, discount_rate=args.discount_rate), args.metrics_out)
        print(f"wrote {args.metrics_out}")
    if getattr(args, "cohort_metrics_out", None):
        metrics = table.metrics(spend=spend, margin=args.margin, discount_rate=args.discount_rate, projected="auto")
        _write_metrics(metrics, args.cohort_metrics_out)
        print(f"wrote {args.cohort_metrics_out}")


def _cli_words(message: str) -> str:
    """A library message as the command line says it."""
    return message.replace("pass strict=True", "pass --strict").replace("strict=True:", "--strict:")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = {"demo": _demo, "state": _state}.get(args.command, _report)(args)
        # One line each on stderr rather than Python's warning format with a source line. The demo
        # has bad rows on purpose, and its reconciliation already shows them.
        if args.command != "demo":
            for w in caught:
                print(f"ltrcore: warning: {_cli_words(str(w.message))}", file=sys.stderr)
        return code
    except BrokenPipeError:
        # The reader has gone (`ltrcore report … | head`): stop quietly, as Unix tools do, with the
        # status of a process ended by SIGPIPE. Later writes (and the exit flush) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("ltrcore: interrupted", file=sys.stderr)
        return 130
    except (LtrcoreError, OSError, ValueError, TypeError, pl.exceptions.PolarsError) as err:
        print(f"ltrcore: error: {_cli_words(str(err))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
