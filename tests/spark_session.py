"""The ``spark`` fixture: one local PySpark session per test session, tuned for a 2-core CI box.

Settings and their reasons are in SPARK.md (measured): ``local[2]`` with few shuffle partitions, Arrow on,
UI and progress bars off, the session time zone pinned to UTC, and JVM flags that trade warm-query speed
for start-up time (fine for tests, wrong for benchmarks). Python workers run ``sys.executable``, so they
import this environment's pyarrow rather than whatever ``python3`` is first on PATH.

A Spark test module starts with ``pytestmark = SPARK_MARKS``: the ``spark`` marker (deselect with
``-m "not spark"``) and filters for PySpark's pandas>=3 warnings, which a mark applies even under ``-W error``
(pyproject's ``filterwarnings`` does not: command-line filters take precedence over it).
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# With pandas >= 3, PySpark 4.x warns on every pandas conversion (FutureWarning), and its own code calls
# pandas APIs deprecated in 3.0 (`astype(copy=False)`: a Pandas4Warning, a DeprecationWarning attributed to
# pyspark). Under `-W error` the latter breaks toPandas' Arrow path, and PySpark's fallback then raises a
# UserWarning of its own. pyproject's filterwarnings holds the same two lines.
SPARK_WARNING_FILTERS = [
    "ignore:PySpark does not yet fully support pandas:FutureWarning",
    "ignore::DeprecationWarning:pyspark",
]
SPARK_MARKS = [pytest.mark.spark, *(pytest.mark.filterwarnings(f) for f in SPARK_WARNING_FILTERS)]

# rootLogger alone leaves Spark's "Setting default log level" line: that comes from PythonGatewayServer.
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


def _missing() -> str | None:
    """What Spark lacks on this machine, with how to get it; None when it can run."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install '.[test]' or pip install '.[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        if not os.path.isfile(os.path.join(java_home, "bin", "java")):
            return f"JAVA_HOME={java_home} has no bin/java (fix JAVA_HOME, or apt-get install openjdk-17-jre-headless)"
    elif shutil.which("java") is None:
        return "no Java runtime: java is not on PATH and JAVA_HOME is unset (apt-get install openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    missing = _missing()
    if missing is not None:
        pytest.skip(f"Spark tests need Java and pyspark: {missing}")

    from pyspark.sql import SparkSession

    work = tmp_path_factory.mktemp("spark")
    log4j2 = work / "log4j2-quiet.properties"
    log4j2.write_text(LOG4J2_QUIET, encoding="utf-8")
    (work / "local").mkdir()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        mp.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (
            SparkSession.builder.master("local[2]")
            .appName("ltrcore-tests")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.default.parallelism", "2")
            .config("spark.driver.memory", "2g")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(work / "warehouse"))
            .config("spark.local.dir", str(work / "local"))
            # cloudpickle sends module-level functions by reference (module name + qualified name): workers must
            # import test modules and helpers as the driver does, from tests/ (conftest puts it on sys.path).
            .config("spark.executorEnv.PYTHONPATH", TESTS_DIR)
            .config(
                "spark.driver.extraJavaOptions",
                f"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile={log4j2.as_uri()}",
            )
        )
        with warnings.catch_warnings():  # only around start-up: test bodies get SPARK_MARKS' filter
            warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
            session = builder.getOrCreate()
        try:
            yield session
        finally:
            session.stop()
