"""Shared pytest setup: hypothesis profile and the ltrcore import guard."""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

from spark_session import spark  # noqa: E402,F401  (the session-scoped `spark` fixture, for every module)

# No example database on disk (it would land outside tests/), no wall-clock deadline on a busy 2-core box.
settings.register_profile(
    "ltrcore",
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("ltrcore-long", parent=settings.get_profile("ltrcore"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ltrcore"))
