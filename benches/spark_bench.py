#!/usr/bin/env python
"""First-purchase cohorts inside Spark: ltrcore.spark against hand-written Spark SQL, in one session.

    python benches/spark_bench.py --rows 10M [--files 4] [--engines ltrcore,sql_join,sql_window,floor] [--repeat 2]

The orders come from ``ltrcore.demo.orders_only(rows, seed)`` (loaded by path, as in ``vs_peers.py``):
int64 ``user_id``, ``ts`` timestamp[us, UTC] and float64 ``amount`` with 3 % refunds. They are written
once as ``--files`` parquet files under ``bench-data/spark-<rows>/`` and reused while the rows, files,
seed and ``demo.py`` are unchanged.

One SparkSession (``local[2]``, benchmark settings: no start-up JVM flags) runs every variant on
``spark.read.parquet`` of that directory:

* ``sql_join``: Spark SQL; each user's first paying month with a GROUP BY, joined back to the orders,
  then GROUP BY (cohort, age) with an exact decimal sum, ``count_if`` and ``count(DISTINCT …)``.
* ``sql_window``: the same, with ``min(CASE WHEN a > 0 THEN m END) OVER (PARTITION BY u)`` instead of
  the join.
* ``floor``: ``repartition(n, "user_id").mapInArrow(f)`` where ``f`` only counts its rows: what any
  engine that runs in the Python workers pays before doing any work.
* ``ltrcore``: ``ltrcore.spark.cohorts(df, horizon=12)`` (skipped while ``ltrcore.spark`` is missing).

The semantics are those of ``peers.py``: months in UTC; rows of the last month with data are dropped
(ltrcore's default ``as_of``: only complete cells); amounts rounded to 4 decimals; the cohort is the
month of the first order with amount > 0; revenue is the net sum, orders and payers count paying rows.

Every variant is timed wall-clock, ``--repeat`` times after one untimed warm-up of the session, and the
result is collected to the driver. A background thread samples the resident memory of the whole
process tree (this Python, the JVM, the Python workers) every 100 ms and keeps the peak per variant,
for the tree and for the Python workers alone. Each result is cross-checked against
``ltrcore.cohorts`` on the same parquet read with pyarrow; the script exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA_DIR = REPO / "bench-data"
DEMO_PATH = REPO / "python" / "ltrcore" / "demo.py"
VARIANTS = ("ltrcore", "sql_join", "sql_window", "floor")
SQL_VARIANTS = ("sql_join", "sql_window")

sys.path.insert(0, str(HERE))
from vs_peers import human_rows, load_demo, parse_rows  # noqa: E402

LOG4J2_QUIET = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
"""

PANDAS3_WARNING = "PySpark does not yet fully support pandas"


# --------------------------------------------------------------------------------------------------
# data


def data_dir(rows: int) -> Path:
    return DATA_DIR / f"spark-{human_rows(rows)}"


def ensure_data(rows: int, files: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The parquet directory for these parameters, generated (in a subprocess, so that this process's
    memory stays small) when missing or stale, and its metadata."""
    path = data_dir(rows)
    meta_path = path / "_meta.json"  # '_' prefix: Spark and pyarrow.dataset skip it
    want = {"rows": rows, "files": files, "seed": seed, "demo_mtime": DEMO_PATH.stat().st_mtime}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            return path, meta
        print(f"{path.relative_to(REPO)} was made with other parameters or an older demo.py: regenerating", file=sys.stderr)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate", str(path), "--rows", str(rows)]
    cmd += ["--files", str(files), "--seed", str(seed)]
    subprocess.run(cmd, check=True)
    return path, json.loads(meta_path.read_text())


def generate(path: Path, rows: int, files: int, seed: int) -> None:
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    print(f"generating {rows:,} orders (seed {seed}) -> {path.relative_to(REPO)}/ in {files} parquet files ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    demo_mtime = DEMO_PATH.stat().st_mtime
    table = load_demo().orders_only(rows, seed=seed)
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    per = -(-table.num_rows // files) if table.num_rows else 0
    for i in range(files):
        pq.write_table(table.slice(i * per, per), tmp / f"part-{i:03d}.parquet")
    meta = {
        "rows": table.num_rows,
        "files": files,
        "seed": seed,
        "demo_mtime": demo_mtime,
        "users": pc.count_distinct(table["user_id"]).as_py(),
        "schema": str(table.schema).splitlines(),
        "nbytes": table.nbytes,
        "parquet_bytes": sum(f.stat().st_size for f in tmp.glob("*.parquet")),
        "generate_s": round(time.perf_counter() - t0, 2),
    }
    (tmp / "_meta.json").write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)
    print(f"  {meta['users']:,} users, {meta['parquet_bytes'] / 2**20:,.0f} MiB of parquet, {meta['generate_s']} s", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# memory of the process tree


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(f) as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie


def _is_python_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd


def tree_rss() -> tuple[int, int]:
    """(RSS of this process and all its descendants, RSS of the Python workers among them), in kB.

    Sums VmRSS, so pages shared between processes (the forked workers and their daemon) count once
    per process: an upper bound."""
    total = workers = 0
    stack = [os.getpid()]
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        rss = _rss_kb(pid)
        total += rss
        if _is_python_worker(pid):
            workers += rss
        stack += _children(pid)
    return total, workers


class Sampler(threading.Thread):
    """Samples ``tree_rss()`` every ``interval`` seconds and keeps the peaks since the last ``reset``."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self._lock = threading.Lock()
        self._stop_evt = threading.Event()
        self.peak_tree = self.peak_workers = 0

    def _sample(self) -> tuple[int, int]:
        t, w = tree_rss()
        with self._lock:
            self.peak_tree = max(self.peak_tree, t)
            self.peak_workers = max(self.peak_workers, w)
        return t, w

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            self._sample()

    def reset(self) -> tuple[int, int]:
        """Starts a new peak; returns the current (tree, workers) RSS in kB."""
        with self._lock:
            self.peak_tree = self.peak_workers = 0
        return self._sample()

    def peaks(self) -> tuple[int, int]:
        self._sample()
        with self._lock:
            return self.peak_tree, self.peak_workers

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()


# --------------------------------------------------------------------------------------------------
# Spark


def start_spark(args: argparse.Namespace, work: Path) -> Any:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    log4j2 = work / "log4j2-quiet.properties"
    log4j2.write_text(LOG4J2_QUIET, encoding="utf-8")
    (work / "local").mkdir(exist_ok=True)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("ltrcore-spark-bench")
        .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(work / "warehouse"))
        .config("spark.local.dir", str(work / "local"))
        # Benchmark: no -XX:TieredStopAtLevel=1 (it slows warm queries by about 25 %, SPARK.md).
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j2.as_uri()}")
    )
    for kv in args.conf:
        k, _, v = kv.partition("=")
        builder = builder.config(k, v)
    return builder.getOrCreate()


def _sql(kind: str, horizon: int) -> str:
    """The hand-written Spark SQL over the view ``orders`` (``kind``: sql_join or sql_window).

    ``cm`` is the month index year * 12 + month - 1 (session time zone UTC). ``cohort_size`` is the
    payers of age 0: every member of a cohort pays in its cohort month, so no second pass is needed."""
    rows = """
    rows AS (
        SELECT user_id AS u, year(ts) * 12 + month(ts) - 1 AS m, CAST(amount AS DECIMAL(18, 4)) AS a
        FROM orders
        WHERE user_id IS NOT NULL AND ts IS NOT NULL AND amount IS NOT NULL
          AND NOT isnan(amount) AND abs(amount) < double('Infinity')
    ),
    used AS (SELECT * FROM rows WHERE m < (SELECT max(m) FROM rows))"""  # drop the running month
    aggs = f"""
            sum(a) AS revenue,
            count_if(a > 0) AS orders,
            count(DISTINCT CASE WHEN a > 0 THEN u END) AS payers
        FROM aged
        WHERE age BETWEEN 0 AND {int(horizon) - 1}
        GROUP BY cm, age"""
    if kind == "sql_join":
        aged = """
    first AS (SELECT u, min(m) AS cohort FROM used WHERE a > 0 GROUP BY u),
    aged AS (SELECT o.u, o.a, f.cohort AS cm, o.m - f.cohort AS age FROM used o JOIN first f ON o.u = f.u)"""
    elif kind == "sql_window":
        aged = """
    firsts AS (SELECT u, a, m, min(CASE WHEN a > 0 THEN m END) OVER (PARTITION BY u) AS cohort FROM used),
    aged AS (SELECT u, a, cohort AS cm, m - cohort AS age FROM firsts WHERE cohort IS NOT NULL)"""
    else:
        raise ValueError(kind)
    return f"""
    WITH {rows},{aged},
    cells AS (
        SELECT cm, age,{aggs}
    )
    SELECT make_date(cm DIV 12, cm % 12 + 1, 1) AS cohort,
           CAST(age AS INT) AS age,
           max(CASE WHEN age = 0 THEN payers END) OVER (PARTITION BY cm) AS cohort_size,
           revenue, orders, payers
    FROM cells
    """


def _collect(df: Any) -> Any:
    """The Spark result as a pyarrow Table on the driver."""
    if hasattr(df, "toArrow"):
        return df.toArrow()
    import pyarrow as pa

    return pa.Table.from_pandas(df.toPandas())


def make_variant(name: str, spark: Any, orders: Any, args: argparse.Namespace) -> Callable[[], Any] | str:
    """A zero-argument callable running one variant to the end (its result on the driver), or the
    reason the variant is skipped."""
    if name in SQL_VARIANTS:
        text = _sql(name, args.horizon)
        return lambda: _collect(spark.sql(text))
    if name == "floor":
        import pyarrow as pa

        schema = pa.schema([("n", pa.int64())])

        def consume(batches: Any) -> Any:
            n = 0
            for b in batches:
                n += b.num_rows
            yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], schema=schema)

        parts = args.shuffle_partitions
        return lambda: _collect(orders.repartition(parts, "user_id").mapInArrow(consume, "n long"))
    if name == "ltrcore":
        try:
            import ltrcore.spark as lspark

            fn = lspark.cohorts
        except (ImportError, AttributeError) as exc:
            return f"ltrcore.spark not available yet ({type(exc).__name__}: {exc})"
        return lambda: fn(orders, user="user_id", ts="ts", amount="amount", horizon=args.horizon)
    raise ValueError(name)


def to_frame(name: str, result: Any, horizon: int) -> Any:
    """A variant's result in the peers' columns (None for the floor)."""
    import polars as pl

    import peers

    if name == "floor":
        return None
    if name == "ltrcore":
        return peers.from_ltrcore(result, horizon)
    return peers.normalize(pl.from_arrow(result))  # type: ignore[arg-type]


def reference(path: Path, horizon: int) -> tuple[str, Any]:
    """ltrcore.cohorts on the parquet read by pyarrow (the Polars peer if ltrcore is not importable)."""
    import pyarrow.dataset as ds

    import peers

    table = ds.dataset(str(path), format="parquet").to_table()
    try:
        import ltrcore

        res = ltrcore.cohorts(table, user="user_id", ts="ts", amount="amount", horizon=horizon)
        return "ltrcore.cohorts", peers.from_ltrcore(res, horizon)
    except (ImportError, AttributeError) as exc:
        print(f"ltrcore.cohorts not importable ({exc}); cross-checking against the Polars peer instead", file=sys.stderr)
        return "polars peer", peers.polars_cohorts(table, horizon=horizon)


# --------------------------------------------------------------------------------------------------
# report


def report(results: dict[str, dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace, spark_version: str) -> str:
    head = (
        f"{meta['rows']:,} orders, {meta['users']:,} users, {meta['files']} parquet files "
        f"({meta['parquet_bytes'] / 2**20:,.0f} MiB), Spark {spark_version} local[2], "
        f"shuffle partitions {args.shuffle_partitions}, driver memory {args.driver_memory}, "
        f"horizon {args.horizon}, best and first of {args.repeat} warm runs, {os.cpu_count()} cores"
    )
    floor = results.get("floor")
    sql_best = min((min(r["times"]) for n, r in results.items() if n in SQL_VARIANTS), default=None)
    cols = ["variant", "best s", "first s", "x floor", "x faster SQL", "RSS at start MiB", "peak RSS tree MiB", "peak RSS py workers MiB"]
    table = []
    for name, r in results.items():
        best, first = min(r["times"]), r["times"][0]
        table.append(
            [
                name,
                f"{best:.2f}",
                f"{first:.2f}",
                f"{best / min(floor['times']):.2f}" if floor else "-",
                f"{best / sql_best:.2f}" if sql_best else "-",
                f"{r['start_tree_kb'] / 1024:,.0f}",
                f"{r['peak_tree_kb'] / 1024:,.0f}",
                f"{r['peak_workers_kb'] / 1024:,.0f}",
            ]
        )
    if args.markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return head + "\n\n" + "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([head, fmt(cols), *(fmt(row) for row in table)])


# --------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=parse_rows, default=parse_rows("10M"), help="order rows, e.g. 1M, 10M (default 10M)")
    p.add_argument("--files", type=int, default=4, help="parquet files to write (default 4)")
    p.add_argument("--engines", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS) + ", run in this order")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per variant; reports the first and the best (default 2)")
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-partitions", type=int, default=4, help="spark.sql.shuffle.partitions, and the floor's repartition (default 4)")
    p.add_argument("--driver-memory", default="6g", help="spark.driver.memory (default 6g)")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting (repeatable)")
    p.add_argument("--no-check", action="store_true", help="skip the cross-check against ltrcore.cohorts")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    p.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # internal: data generation subprocess
    args = p.parse_args(argv)

    if args.generate:
        generate(args.generate, args.rows, args.files, args.seed)
        return 0
    variants = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown engines {unknown}; choose from {', '.join(VARIANTS)}")
    if args.repeat < 1 or args.files < 1 or args.shuffle_partitions < 1:
        p.error("--repeat, --files and --shuffle-partitions must be >= 1")

    warnings.filterwarnings("ignore", PANDAS3_WARNING, FutureWarning)
    path, meta = ensure_data(args.rows, args.files, args.seed)

    sampler = Sampler(0.1)
    sampler.start()
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ltrcore-spark-bench-") as tmp:
        print("starting Spark ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        spark = start_spark(args, Path(tmp))
        spark_version = spark.version
        orders = spark.read.parquet(str(path))
        orders.createOrReplaceTempView("orders")
        t1 = time.perf_counter()
        # Warm-up, untimed: a scan of every column, and a tiny mapInArrow to start the Python workers.
        orders.selectExpr("count(user_id)", "max(ts)", "sum(amount)").collect()
        spark.range(1000).mapInArrow(lambda it: (b for b in it), "id long").count()
        t2 = time.perf_counter()
        print(f"  session {t1 - t0:.1f} s, warm-up {t2 - t1:.1f} s", file=sys.stderr)

        for name in variants:
            run = make_variant(name, spark, orders, args)
            if isinstance(run, str):
                skipped[name] = run
                print(f"skipped {name}: {run}", file=sys.stderr)
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            gc.collect()
            start_tree, start_workers = sampler.reset()
            times: list[float] = []
            result = None
            try:
                for _ in range(args.repeat):
                    result = None
                    ts0 = time.perf_counter()
                    result = run()
                    times.append(time.perf_counter() - ts0)
                    print(f"  {times[-1]:.2f} s", file=sys.stderr, flush=True)
            except Exception as exc:  # noqa: BLE001  (report, go on with the other variants, exit 1)
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            peak_tree, peak_workers = sampler.peaks()
            results[name] = {
                "times": times,
                "start_tree_kb": start_tree,
                "start_workers_kb": start_workers,
                "peak_tree_kb": peak_tree,
                "peak_workers_kb": peak_workers,
            }
            if name == "floor":
                assert result is not None
                n = sum(result.column("n").to_pylist())
                if n != meta["rows"]:
                    failed[name] = f"the floor saw {n:,} rows, not {meta['rows']:,}"
            else:
                outputs[name] = to_frame(name, result, args.horizon)
            del result
        spark.stop()
    sampler.stop()

    print()
    if results:
        print(report(results, meta, args, spark_version))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    status = 0
    for name, why in failed.items():
        print(f"FAILED {name}: {why}")
        status = 1

    if outputs and not args.no_check:
        import peers

        ref_name, ref = reference(path, args.horizon)
        agree = True
        for name, frame in outputs.items():
            problems = peers.compare(ref, frame, names=(ref_name, name))
            if problems:
                agree = False
                print(f"\nMISMATCH {ref_name} vs {name}:")
                for pr in problems:
                    print("  " + pr.replace("\n", "\n  "))
        if not agree:
            status = 1
        else:
            print(
                f"\ncross-check: {' = '.join([ref_name, *outputs])} on revenue, orders, payers, cohort_size "
                f"({ref.height} cells, {ref['cohort'].n_unique()} cohorts)"
            )
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "args": vars(args) | {"json": str(args.json)}, "results": results,
                                         "skipped": skipped, "failed": failed}, indent=1, default=str))  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
