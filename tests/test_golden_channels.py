"""Issue 13, items 2-4 worked by hand: verdicts that respect a cohort's age, a channel whose spend
brought no customer, and the table per channel.

The shop: signup cohorts by channel, monthly, UTC, horizon 3 (ages 0, 1, 2), as of 2024-06-01, so
January to May are complete.

    ads  two signups on the 2nd of each month January..May (cohorts Jan, Feb, Mar, Apr, May). Each
         pays 30 in the signup month, 15 the month after and 15 the month after that; orders after
         May are not in the data. Per cohort (2 customers) cumulative revenue 60, 90, 120.
         Observed: Jan, Feb, Mar through age 2; Apr through age 1 (90); May at age 0 (60).
    tv   two signups on 2024-01-03; neither ever pays (cohort Jan, 0 customers).

Spend (a table by channel, margin 1): ads 100 in each month January..May, tv 50 in January.

Chain ladder on ads (min_cohorts 3): f0 = Σ cum(1) / Σ cum(0) over Jan..Apr = 360 / 240 = 1.5;
f1 = Σ cum(2) / Σ cum(1) over Jan..Mar = 360 / 270 = 4/3. Apr projects to 90 × 4/3 = 120, May to
60 × 1.5 × 4/3 = 120: every ads cohort is worth 120 at the horizon, 60 per customer.

Per cohort, observed (projected=False); MIN_OBSERVED_MONTHS = 3:
    Jan..Mar  LTV/CAC = 120 / 100 = 1.2 marginal, basis observed; payback: 60 < 100, 90 < 100,
              120 >= 100 at age 2 (3 months: self-funding); DRR 100 / 120 = 5/6; ROMI (120 - 100) / 100 = 0.2
    Apr       90 / 100 = 0.9, two observed months: "too early to tell: losing money so far", too young;
              payback "not within 2 observed months"; ROMI -0.1
    May       60 / 100 = 0.6, one observed month: too early to tell, too young; "not within 1 observed month"
    tv Jan    spend 50, no customer: CAC null, LTV/CAC null, "no customers: all spend lost" (3 observed
              months: observed); ROMI (0 - 50) / 50 = -1; DRR null (no revenue); payback "never: no customers"
Per cohort, projected where a projection exists (projected="auto", the default of summary, channels,
the CLI and the HTML): Apr and May become 120 / 100 = 1.2 marginal, basis projected, payback at
age 2 from the projection ("age 2 (projected)"), DRR 5/6, ROMI 0.2.

The table per channel (auto):
    ads    5 cohorts, 10 signups, 10 customers, spend 500, CAC 50; observed to the horizon: Jan..Mar,
           LTR = LTV per customer = 360 / 6 = 60; observed or projected to it: all 5, 600 / 10 = 60;
           LTV/CAC = 600 / 500 = 1.2 marginal (projected: Apr and May are); payback pooled: 300 < 500,
           450 < 500, 600 >= 500 at age 2, projected (Apr and May were not observed at age 2);
           DRR 500 / 600 = 5/6, ROMI 0.2; customer equity 5 × 120 = 600, CLV per customer 60.
    tv     1 cohort, 2 signups, 0 customers, spend 50, CAC null, "no customers: all spend lost"
           (observed), ROMI -1, customer equity 0.
    total  6 cohorts, 12 signups, 10 customers, spend 550 (tv's 50 included), CAC 55;
           LTV/CAC 600 / 550 = 12/11 = 1.0909 marginal (projected); DRR 550 / 600 = 11/12;
           ROMI 50 / 550 = 1/11; payback at age 2 (600 >= 550), projected; equity 600, CLV per
           signup 600 / 12 = 50, per customer 60.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import warnings
from pathlib import Path

import polars as pl
import pytest

import ltrcore

UTC = dt.timezone.utc
D = dt.date
TOO_EARLY = "too early to tell: losing money so far"
NO_CUSTOMERS = "no customers: all spend lost"


def _world() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    users, signed, channel = [], [], []
    buyers, paid_at, amounts = [], [], []
    for i, month in enumerate(range(1, 6)):
        for j in (1, 2):
            user = f"{'abcde'[i]}{j}"
            users.append(user)
            signed.append(dt.datetime(2024, month, 2, tzinfo=UTC))
            channel.append("ads")
            for age, amount in ((0, 30.0), (1, 15.0), (2, 15.0)):
                if month + age <= 5:  # nothing after May
                    buyers.append(user)
                    paid_at.append(dt.datetime(2024, month + age, 10, tzinfo=UTC))
                    amounts.append(amount)
    for user in ("t1", "t2"):
        users.append(user)
        signed.append(dt.datetime(2024, 1, 3, tzinfo=UTC))
        channel.append("tv")
    signups = pl.DataFrame({"user_id": users, "signup_ts": signed, "channel": channel})
    orders = pl.DataFrame({"user_id": buyers, "ts": paid_at, "amount": amounts})
    spend = pl.DataFrame(
        {
            "period": [f"2024-0{m}" for m in range(1, 6)] + ["2024-01"],
            "channel": ["ads"] * 5 + ["tv"],
            "spend": [100.0] * 5 + [50.0],
        }
    )
    return orders, signups, spend


ORDERS, SIGNUPS, SPEND = _world()


@pytest.fixture(scope="module")
def table() -> ltrcore.CohortTable:
    return ltrcore.cohorts(ORDERS, signups=SIGNUPS, by="channel", horizon=3, as_of="2024-06-01")


def _row(frame: pl.DataFrame, channel: str | None, cohort: dt.date | None = None) -> dict:
    if cohort is None:
        found = frame.filter(pl.col("total")) if channel is None else frame.filter(pl.col("channel") == channel, ~pl.col("total"))
    else:
        found = frame.filter(pl.col("channel") == channel, pl.col("cohort") == cohort)
    assert found.height == 1, found
    return found.row(0, named=True)


# --------------------------------------------------------------------------------------------------
# item 3: a verdict says its basis, and a young cohort is never a bare "losing money"


def test_verdict_basis_observed_and_too_young(table: ltrcore.CohortTable) -> None:
    """Observed values (projected=False): Jan..Mar 120 / 100 = 1.2 marginal on 3 observed months;
    Apr 0.9 and May 0.6 are losing money so far, on fewer than 3 months: too early to tell."""
    m = table.metrics(margin=1.0, spend=SPEND)
    assert ltrcore.metrics.MIN_OBSERVED_MONTHS == 3
    for month in (1, 2, 3):
        r = _row(m, "ads", D(2024, month, 1))
        assert (r["ltv_cac"], r["verdict"], r["verdict_basis"]) == (pytest.approx(1.2), "marginal", "observed")
        assert (r["payback_age"], r["payback_basis"], r["payback"], r["payback_status"]) == (2, "observed", "age 2", "self-funding")
        assert (r["drr"], r["romi"]) == (pytest.approx(5 / 6), pytest.approx(0.2))
    april, may = _row(m, "ads", D(2024, 4, 1)), _row(m, "ads", D(2024, 5, 1))
    assert (april["ltv_cac"], april["verdict"], april["verdict_basis"]) == (pytest.approx(0.9), TOO_EARLY, "too young")
    assert (may["ltv_cac"], may["verdict"], may["verdict_basis"]) == (pytest.approx(0.6), TOO_EARLY, "too young")
    assert (april["romi"], may["romi"]) == (pytest.approx(-0.1), pytest.approx(-0.4))
    # never a bare "losing money" on fewer than 3 observed months
    assert m.filter(pl.col("observed_ages") < 3, pl.col("verdict") == "losing money").height == 0


def test_projected_where_a_projection_exists(table: ltrcore.CohortTable) -> None:
    """projected="auto": Apr (90 × 4/3) and May (60 × 1.5 × 4/3) reach 120 at the horizon, so 1.2
    marginal on a projected basis, and payback at age 2 comes from the projection, flagged."""
    m = table.metrics(margin=1.0, spend=SPEND, projected="auto")
    for month in (4, 5):
        r = _row(m, "ads", D(2024, month, 1))
        assert r["ltr"] == pytest.approx(60)  # 120 per cohort of 2
        assert (r["ltv_cac"], r["verdict"], r["verdict_basis"]) == (pytest.approx(1.2), "marginal", "projected")
        assert (r["payback_age"], r["payback_basis"], r["payback"]) == (2, "projected", "age 2 (projected)")
        assert (r["drr"], r["romi"]) == (pytest.approx(5 / 6), pytest.approx(0.2))
    # the mature cohorts keep their exact, observed judgement
    jan = _row(m, "ads", D(2024, 1, 1))
    assert (jan["ltv_cac"], jan["verdict_basis"], jan["payback_basis"]) == (1.2, "observed", "observed")


def test_payback_is_never_an_invented_month(table: ltrcore.CohortTable) -> None:
    """Spend 130 a month (all of it on ads: tv has no customer to share it by). Jan: 120 < 130 after
    3 observed months: not paid back, LTV/CAC 12/13, losing money (observed). May: projected 120 <
    130 too: no age, "not within 1 observed month nor the projection to age 2". Observed only, May
    says "not within 1 observed month"."""
    auto = table.metrics(margin=1.0, spend=130, projected="auto")
    jan = _row(auto, "ads", D(2024, 1, 1))
    assert (jan["payback_age"], jan["payback"], jan["payback_status"]) == (None, "not within 3 observed months", "not yet paid back")
    assert (jan["ltv_cac"], jan["verdict"], jan["verdict_basis"]) == (pytest.approx(12 / 13), "losing money", "observed")
    may = _row(auto, "ads", D(2024, 5, 1))
    assert (may["payback_age"], may["payback_basis"]) == (None, None)
    assert may["payback"] == "not within 1 observed month nor the projection to age 2"
    assert (may["verdict"], may["verdict_basis"]) == ("losing money", "projected")
    observed = _row(table.metrics(margin=1.0, spend=130), "ads", D(2024, 5, 1))
    assert (observed["payback_age"], observed["payback"]) == (None, "not within 1 observed month")


def test_a_cohort_without_customers_keeps_its_spend(table: ltrcore.CohortTable) -> None:
    """tv: spend 50, no customer. CAC is undefined (null), the verdict says all spend is lost, ROMI
    is -1 and there is no one to pay it back."""
    for mode in (False, "auto"):
        tv = _row(table.metrics(margin=1.0, spend=SPEND, projected=mode), "tv", D(2024, 1, 1))
        assert (tv["customers"], tv["spend"], tv["cac"], tv["ltv_cac"]) == (0, 50.0, None, None)
        assert (tv["verdict"], tv["verdict_basis"], tv["romi"], tv["drr"]) == (NO_CUSTOMERS, "observed", -1.0, None)
        assert (tv["payback_age"], tv["payback"]) == (None, "never: no customers")


def test_summary_judges_on_projected_values_and_keeps_every_channel(table: ltrcore.CohortTable) -> None:
    """The summary says what it judged on (2 projected, 4 observed), names tv worst (all spend lost)
    rather than the youngest ads cohort, lists tv among the channels and counts its 50 in the total
    spend of 550 (LTV/CAC 600 / 550 = 1.09)."""
    s = table.summary(margin=1.0, spend=SPEND, min_size=1)
    assert "Judged on 2 projected, 4 observed cohort(s)" in s, s
    worst = next(line for line in s.splitlines() if line.startswith("Worst cohort"))
    assert "channel=tv" in worst and NO_CUSTOMERS in worst, s
    assert "channel=tv: LTV/CAC undefined, no customers: all spend lost (observed); spend 50.00, 0 customers, CAC undefined" in s, s
    assert "channel=ads: LTV/CAC 1.20, marginal (projected); spend 500.00, 10 customers, CAC 50.00; payback age 2 (projected)" in s, s
    assert "All cohorts: LTV/CAC 1.09, marginal (projected); spend 550.00, 10 customers, CAC 55.00" in s, s
    assert "Customer equity 600.00" in s, s
    assert s.splitlines()[-1] == "Next: " + ltrcore.metrics.ADVICE[NO_CUSTOMERS]
    assert TOO_EARLY not in s  # every young cohort here has a projection


def test_summary_on_young_cohorts_says_too_early() -> None:
    """Only January and February observed (as of 2024-03-01) and too few cohorts to project: every
    cohort is too young. Jan: 90 / 100 = 0.9, Feb: 60 / 100 = 0.6, both "too early to tell"; the
    summary names them only as judged so far, and its next step is to wait."""
    young = ltrcore.cohorts(ORDERS, signups=SIGNUPS.filter(pl.col("channel") == "ads"), by="channel", horizon=3,
                            as_of="2024-03-01")  # fmt: skip
    spend = SPEND.filter(pl.col("channel") == "ads", pl.col("period") <= "2024-02")
    m = young.metrics(margin=1.0, spend=spend, projected="auto")
    assert m.get_column("verdict").to_list() == [TOO_EARLY, TOO_EARLY]
    assert m.get_column("verdict_basis").to_list() == ["too young", "too young"]
    s = young.summary(margin=1.0, spend=spend, min_size=1)
    assert "judged only so far" in s and "losing money;" not in s, s
    assert s.splitlines()[-1] == "Next: " + ltrcore.metrics.ADVICE[TOO_EARLY]


def test_the_demo_affiliate_cohorts_are_not_losing_money_when_young() -> None:
    """The issue's example: in the demo, affiliate's youngest cohorts read "losing money" on one or
    two observed months while every mature one is marginal. Now the observed reading says too
    early to tell, and the default (projected where possible) calls none of them losing money."""
    from ltrcore import demo

    data = demo.generate(200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ltrcore.ExcludedRowsWarning)
        t = ltrcore.cohorts(data.orders, signups=data.signups, by="channel", tz="Europe/Berlin")
    observed = t.metrics(spend=data.spend, margin=demo.MARGIN).filter(pl.col("channel") == "affiliate")
    young = observed.filter(pl.col("observed_ages") < 3)
    assert young.height == 2 and set(young.get_column("verdict")) <= {TOO_EARLY, "marginal", "healthy"}
    auto = t.metrics(spend=data.spend, margin=demo.MARGIN, projected="auto").filter(pl.col("channel") == "affiliate")
    assert set(auto.get_column("verdict")) == {"marginal"}, auto


# --------------------------------------------------------------------------------------------------
# item 4 (and 2): one table per channel


def test_channels_table_hand_computed(table: ltrcore.CohortTable) -> None:
    """The table per channel as worked out in the module docstring, the total row included."""
    ch = table.channels(margin=1.0, spend=SPEND)
    assert ch.get_column("channel").to_list() == ["ads", "tv", None]
    assert ch.get_column("total").to_list() == [False, False, True]
    ads = _row(ch, "ads")
    assert {k: ads[k] for k in ("cohorts", "signups", "customers", "spend", "cac")} == {
        "cohorts": 5, "signups": 10, "customers": 10, "spend": 500.0, "cac": 50.0}  # fmt: skip
    assert (ads["cohorts_observed_to_horizon"], ads["ltr_per_customer_observed"], ads["ltv_per_customer_observed"]) == (3, 60.0, 60.0)
    assert (ads["cohorts_projected_to_horizon"], ads["ltr_per_customer_projected"]) == (5, pytest.approx(60))
    assert (ads["ltv_cac"], ads["verdict"], ads["verdict_basis"]) == (pytest.approx(1.2), "marginal", "projected")
    assert (ads["payback_age"], ads["payback_basis"], ads["payback_status"], ads["payback"]) == (
        2, "projected", "self-funding", "age 2 (projected)")  # fmt: skip
    assert (ads["drr"], ads["romi"]) == (pytest.approx(5 / 6), pytest.approx(0.2))
    assert (ads["customer_equity"], ads["clv_per_customer"], ads["clv_per_signup"]) == (
        pytest.approx(600), pytest.approx(60), pytest.approx(60))  # fmt: skip

    tv = _row(ch, "tv")
    assert (tv["signups"], tv["customers"], tv["spend"], tv["cac"], tv["ltv_cac"]) == (2, 0, 50.0, None, None)
    assert (tv["verdict"], tv["verdict_basis"], tv["romi"], tv["customer_equity"]) == (NO_CUSTOMERS, "observed", -1.0, 0.0)
    assert tv["advice"] == ltrcore.metrics.ADVICE[NO_CUSTOMERS]

    total = _row(ch, None)
    assert (total["cohorts"], total["signups"], total["customers"], total["spend"], total["cac"]) == (6, 12, 10, 550.0, 55.0)
    assert (total["ltv_cac"], total["verdict"], total["verdict_basis"]) == (pytest.approx(12 / 11), "marginal", "projected")
    assert (total["drr"], total["romi"]) == (pytest.approx(11 / 12), pytest.approx(1 / 11))
    assert (total["payback_age"], total["payback_basis"]) == (2, "projected")
    assert (total["customer_equity"], total["clv_per_signup"], total["clv_per_customer"]) == (
        pytest.approx(600), pytest.approx(50), pytest.approx(60))  # fmt: skip


def test_channels_observed_only(table: ltrcore.CohortTable) -> None:
    """projected=False: ads' value is revenue to date, 3 × 120 + 90 + 60 = 510 against 500: LTV/CAC
    1.02 marginal, observed (exactly 51/50); the horizon columns are the same as in auto mode.
    Payback pooled over the cohorts that reach the horizon (Jan..Mar observed, Apr and May
    projected): still age 2, projected."""
    ch = table.channels(margin=1.0, spend=SPEND, projected=False)
    ads = _row(ch, "ads")
    assert (ads["ltv_cac"], ads["verdict"], ads["verdict_basis"]) == (51 / 50, "marginal", "observed")
    assert (ads["drr"], ads["romi"]) == (pytest.approx(500 / 510), pytest.approx(0.02))
    assert (ads["ltv_per_customer_observed"], ads["ltv_per_customer_projected"]) == (60.0, pytest.approx(60))


def test_clv_per_customer_and_customer_equity_discounted(table: ltrcore.CohortTable) -> None:
    """At 10 % a year, margin 0.5, each ads cohort's CLV is 0.5 × (60 + 30 / 1.1^(1/12) + 30 /
    1.1^(2/12)) = 0.5 × (60 + 29.7627 + 29.5273) = 59.6449… (the projected 30s of Apr and May
    discounted like observed ones): per signup and per customer that ÷ 2 = 29.8225…; customer
    equity per channel 5 × 59.6449… = 298.2247…, tv 0, total the same."""
    per_cohort = 0.5 * (60 + 30 / 1.1 ** (1 / 12) + 30 / 1.1 ** (2 / 12))
    assert per_cohort == pytest.approx(59.6449, abs=1e-4)
    m = table.metrics(spend=SPEND, margin=0.5, discount_rate=0.1, projected="auto")
    jan = _row(m, "ads", D(2024, 1, 1))
    assert (jan["clv"], jan["clv_per_customer"], jan["customer_equity"]) == (
        pytest.approx(per_cohort / 2), pytest.approx(per_cohort / 2), pytest.approx(per_cohort))  # fmt: skip
    ch = table.channels(spend=SPEND, margin=0.5, discount_rate=0.1)
    assert _row(ch, "ads")["customer_equity"] == pytest.approx(5 * per_cohort)
    assert _row(ch, None)["customer_equity"] == pytest.approx(5 * per_cohort)
    assert _row(ch, None)["clv_per_customer"] == pytest.approx(5 * per_cohort / 10)


def test_channels_without_by_is_the_total_row() -> None:
    """Without ``by``, the one row is the total: the 12 signups, 10 customers and 550 of spend."""
    t = ltrcore.cohorts(ORDERS, signups=SIGNUPS.drop("channel"), horizon=3, as_of="2024-06-01")
    spend = SPEND.group_by("period").agg(pl.col("spend").sum())
    ch = t.channels(margin=1.0, spend=spend)
    assert ch.height == 1 and ch.row(0, named=True)["total"]
    assert (ch["signups"][0], ch["customers"][0], ch["spend"][0]) == (12, 10, 550.0)


def test_projected_must_be_true_false_or_auto(table: ltrcore.CohortTable) -> None:
    for call in (table.metrics, table.channels, table.summary):
        with pytest.raises(ltrcore.InvalidArgumentError, match="projected must be True, False or 'auto'; got 'yes'"):
            call(spend=SPEND, projected="yes")


# --------------------------------------------------------------------------------------------------
# the CLI and the HTML report


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("channels")
    ORDERS.write_parquet(root / "orders.parquet")
    SIGNUPS.write_parquet(root / "signups.parquet")
    SPEND.write_csv(root / "spend.csv")
    return {"orders": str(root / "orders.parquet"), "signups": str(root / "signups.parquet"),
            "spend": str(root / "spend.csv"), "root": str(root)}  # fmt: skip


def _report(files: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["report", files["orders"], "--signups", files["signups"], "--by", "channel", "--spend", files["spend"],
            "--horizon", "3", "--as-of", "2024-06-01", "--margin", "1", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ltrcore.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_cli_prints_and_writes_the_channel_table(files: dict[str, str], suffix: str) -> None:
    """The report prints the table per channel (tv's row included) and --metrics-out writes
    channels() as is: ads 1.2 marginal projected, tv no customers, the total's spend 550."""
    out = f"{files['root']}/channels.{suffix}"
    done = _report(files, "--metrics-out", out)
    assert done.returncode == 0, done.stderr
    assert "per channel, pooled over cohorts" in done.stdout
    assert NO_CUSTOMERS in done.stdout and "verdict_basis" in done.stdout
    got = pl.read_csv(out) if suffix == "csv" else pl.read_parquet(out)
    assert got.get_column("channel").to_list() == ["ads", "tv", None]
    assert got.get_column("verdict").to_list() == ["marginal", NO_CUSTOMERS, "marginal"]
    assert got.get_column("verdict_basis").to_list() == ["projected", "observed", "projected"]
    assert got.get_column("spend").to_list() == [500.0, 50.0, 550.0]
    assert f"wrote {out}" in done.stdout


@pytest.mark.parametrize("name", ["channels.xlsx", "channels", "channels.json"])
def test_cli_refuses_another_metrics_out_format(files: dict[str, str], name: str) -> None:
    done = _report(files, "--metrics-out", f"{files['root']}/{name}")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"ltrcore: error: --metrics-out must end in .csv or .parquet; got '{files['root']}/{name}'"]
    assert not Path(files["root"], name).exists()


def test_html_shows_the_channel_table_first(table: ltrcore.CohortTable) -> None:
    """The channels section comes before every other section; tv's row says all spend is lost,
    ads' row says its verdict is projected, and the metrics per cohort show each basis."""
    pytest.importorskip("matplotlib")
    from ltrcore.report import CAUTION_STYLE

    out = table.to_html(spend=SPEND, margin=1.0)
    sections = [out.find(f"<section id='{s}'>") for s in ("channels", "parameters", "summary", "metrics")]
    assert all(p >= 0 for p in sections) and sections == sorted(sections), sections
    channels = out[sections[0] : sections[1]]
    bg, fg = CAUTION_STYLE[NO_CUSTOMERS]
    assert f"<td class='verdict' style='background:{bg};color:{fg}'>{NO_CUSTOMERS}</td>" in channels
    assert "<th>basis</th>" in channels and "<td>projected</td>" in channels
    assert "<tr class='total'><td>all channels</td>" in channels
    metrics = out[sections[3] :]
    assert "<td>age 2 (projected)</td>" in metrics and "<td>observed</td>" in metrics


def test_summary_warns_once_about_spend_before_since() -> None:
    """Tracking since 2024-02-01: January's spend (100) has no cohort to charge. summary() reads the
    spend for its cohorts and for its channel lines, and says so once."""
    orders = pl.DataFrame(
        {"user_id": [1, 2], "ts": [dt.datetime(2024, 1, 10, tzinfo=UTC), dt.datetime(2024, 2, 10, tzinfo=UTC)],
         "amount": [20.0, 30.0]}
    )  # fmt: skip
    t = ltrcore.cohorts(orders, horizon=2, since="2024-02-01", as_of="2024-03-01")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.summary(margin=1.0, spend={"2024-01": 100, "2024-02": 50}, min_size=1)
    assert [type(w.message) for w in caught] == [ltrcore.SpendIgnoredWarning]
