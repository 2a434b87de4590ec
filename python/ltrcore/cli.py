"""The ``ltrcore`` command line.

``ltrcore demo`` generates the built-in synthetic retailer and prints its cohort table and
reconciliation. Errors print one line and exit non-zero; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltrcore",
        description="Exact, fast cohort lifetime revenue.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the cohort engine on the built-in synthetic retailer",
        description="Generate the deterministic synthetic retailer (signups with a channel, orders with "
        "refunds and a few bad rows, logins) and print its signup cohorts and reconciliation.",
        epilog="examples:\n  ltrcore demo\n  ltrcore demo --rows 5M --period quarter\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--rows", type=_rows, default=1_000_000, help="order rows to generate (default: 1M)")
    demo.add_argument("--seed", type=int, default=7, help="generator seed (default: 7)")
    demo.add_argument("--period", default="month", choices=["month", "week", "quarter", "day"], help="default: month")
    demo.add_argument("--horizon", type=int, default=12, help="ages per cohort (default: 12)")
    demo.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    demo.add_argument("--margin", type=float, default=0.3, help="gross margin turning LTR into LTV (default: 0.3)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from . import cohorts
    from .demo import generate

    tz = "Europe/Berlin"
    t0 = time.perf_counter()
    data = generate(args.rows, seed=args.seed, tz=tz)
    t1 = time.perf_counter()
    print(
        f"demo retailer: {data.orders.height:,} orders, {data.signups.height:,} signups, "
        f"{data.activity.height:,} logins (generated in {t1 - t0:.1f} s)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo has bad rows on purpose; the reconciliation shows them
        table = cohorts(
            data.orders,
            signups=data.signups,
            activity=data.activity,
            tz=tz,
            period=args.period,
            horizon=args.horizon,
            threads=args.threads,
        )
    t2 = time.perf_counter()
    total = data.orders.height + data.signups.height + data.activity.height
    print(f"cohorts computed in {t2 - t1:.2f} s ({total / (t2 - t1) / 1e6:.1f} M input rows/s)\n")
    print(table)
    long = table.to_polars().filter(pl.col("complete"))
    retention = (
        long.with_columns((pl.col("payers") / pl.col("cohort_size")).alias("paying_retention"))
        .group_by("age")
        .agg(pl.col("paying_retention").mean().round(3), pl.col("revenue").sum().round(2))
        .sort("age")
    )
    print("\nmean paying retention and revenue by age (complete cells):")
    print(retention)
    with pl.Config(tbl_rows=20, fmt_str_lengths=40):
        print("\nreconciliation (orders): every row lands in exactly one reason")
        print(table.reconciliation)
        print("signups:")
        print(table.signups_reconciliation)
        print("activity:")
        print(table.activity_reconciliation)
    recon = table.reconciliation
    print(
        f"\nrows: {int(recon['rows'].sum()):,} of {data.orders.height:,} input orders accounted for; "
        f"amount {recon['amount'].sum()} exactly"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_channel = cohorts(
            data.orders,
            signups=data.signups,
            by="channel",
            tz=tz,
            period=args.period,
            horizon=args.horizon,
            threads=args.threads,
        )
    print(f"\nunit economics by acquisition channel (spend table, margin {args.margin}):")
    print(by_channel.summary(spend=data.spend, margin=args.margin))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        raise AssertionError(args.command)
    except KeyboardInterrupt:
        print("ltrcore: interrupted", file=sys.stderr)
        return 130
    except (LtrcoreError, OSError, ValueError, TypeError) as err:
        print(f"ltrcore: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
