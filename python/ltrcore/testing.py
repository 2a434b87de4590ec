"""``ltrcore.testing``: checks for code that runs the engine somewhere else (an adapter).

An adapter splits the users over tasks, runs an :class:`~ltrcore.Accumulator` per task and merges
the partials. :func:`check_adapter` runs one over several partition counts and compares every
number with :func:`ltrcore.cohorts` on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from polars.testing import assert_frame_equal

from .front import cohorts
from .table import CohortTable


def assert_same_table(got: CohortTable, expected: CohortTable, *, label: str = "adapter") -> None:
    """Raises ``AssertionError`` naming the first difference: the long table (dtypes included),
    ``cohort_stats()`` and every reconciliation."""
    pairs = [
        ("the cohort table", got.to_polars(), expected.to_polars()),
        ("cohort_stats()", got.cohort_stats(), expected.cohort_stats()),
        ("the orders' reconciliation", got.reconciliation, expected.reconciliation),
    ]
    for attr in ("signups_reconciliation", "activity_reconciliation"):
        a, b = getattr(got, attr), getattr(expected, attr)
        if (a is None) != (b is None):
            raise AssertionError(f"{label}: {attr} is {'missing' if a is None else 'present'}, unlike in ltrcore.cohorts()")
        if a is not None:
            pairs.append((attr, a, b))
    for what, a, b in pairs:
        try:
            assert_frame_equal(a, b, check_exact=True)
        except AssertionError as err:
            raise AssertionError(f"{label}: {what} differs from ltrcore.cohorts(): {err}") from None


def check_adapter(
    run: Callable[..., CohortTable],
    orders: Any,
    *,
    signups: Any = None,
    activity: Any = None,
    partitions: Sequence[int] = (1, 3, 7),
    negative_control: bool = True,
    **options: Any,
) -> None:
    """Checks an adapter against :func:`ltrcore.cohorts` on the same rows.

    ``run(orders, signups=, activity=, partitions=n, by_user=True, **options)`` must return the
    adapter's :class:`~ltrcore.CohortTable`; ``orders``, ``signups`` and ``activity`` are passed as
    given here (Arrow tables, say), and the adapter moves them where it runs. For each ``n`` in
    ``partitions`` the table, ``cohort_stats()`` and every reconciliation must equal those of
    ``ltrcore.cohorts(orders, signups=…, activity=…, **options)``.

    The negative control (``by_user=False``) runs the adapter with its rows spread over the
    partitions without regard to their user, on the largest partition count. A user's rows then
    reach several accumulators, so their distinct counts are taken more than once: the result must
    differ, or the data is too small to tell a correct adapter from a broken one, and the check
    fails saying so.
    """
    expected = cohorts(orders, signups=signups, activity=activity, **options)
    for n in partitions:
        got = run(orders, signups=signups, activity=activity, partitions=n, by_user=True, **options)
        assert_same_table(got, expected, label=f"adapter with {n} partition(s)")
    if not negative_control:
        return
    n = max(partitions)
    wrong = run(orders, signups=signups, activity=activity, partitions=n, by_user=False, **options)
    try:
        assert_same_table(wrong, expected)
    except AssertionError:
        return  # the check notices rows of one user in several accumulators
    raise AssertionError(
        f"negative control: with rows spread over {n} partitions regardless of user, the adapter still "
        "matched ltrcore.cohorts(); this data cannot show that rows are partitioned by user (use more "
        "users with orders in several periods, or more partitions)"
    )


__all__ = ["assert_same_table", "check_adapter"]
