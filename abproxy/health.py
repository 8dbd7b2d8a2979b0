"""Health checks: fragility (data quality, decision robustness), bias (segments), drift (effect over time).

Each check returns `Check(status ok|warn|fail, numbers, plain explanation)`. A `fail` makes the
verdict INVALID; a `warn` is shown (and `segment_harm` blocks SHIP when the policy says so).
Data-quality checks live in `quality.py`; this module holds the checks on the statistics.
"""
from __future__ import annotations

import datetime as dt
import logging
import math

import duckdb
import numpy as np

from . import format as fmt
from . import ledger
from .config import Config, Experiment
from .engines import ENGINE_ERRORS, Engine, as_engine
from .metrics import experiment_sql
from .quality import quality_checks
from .records import AnalysisRun, Check
from .stats import adjust_pvalues, cochran_q, effect_trend

log = logging.getLogger(__name__)
MIN_TREND_DAYS = 5           # daily cohorts needed for the novelty trend
HETEROGENEITY_P = 0.01      # Holm-adjusted; at 0.05 about one clean experiment in 20 warned on every run
KS_P = 0.001                 # distribution drift threshold (like SRM: rerun every hour, false alarms cost)
KS_SAMPLE = 20_000           # units per variant and window drawn (by hash of unit_id) for the KS test
KS_MIN_UNITS = 100


def _pct(x: float | None) -> str:
    return fmt.pct(x)


BROKEN_SUMS = {"invalid_sums", "overflow"}


# ------------------------------------------------------------------ assignment

def srm_check(run: "AnalysisRun") -> Check:
    srm = run.srm
    observed = ", ".join(f"{v} {n:,}" for v, n in srm.observed.items())
    expected = ", ".join(f"{v} {e:,.0f}" for v, e in srm.expected.items())
    if srm.ok:
        return Check("srm", "ok", f"Split matches the configured allocation (p {_p(srm.p_value)}): {observed}",
                     value=srm.p_value, threshold=srm.threshold)
    return Check("srm", "fail",
                 f"Sample-ratio mismatch: observed {observed}, expected {expected} (p {_p(srm.p_value)} < "
                 f"{srm.threshold}); check the assignment code and exposure logging before trusting any effect",
                 value=srm.p_value, threshold=srm.threshold)


def multi_exposure_check(run: "AnalysisRun", warn_share: float = 0.01, fail_share: float = 0.05) -> Check:
    total = sum(run.units.values()) + run.excluded_multi
    share = run.excluded_multi / total if total else 0.0
    status = "fail" if share > fail_share else "warn" if share > warn_share else "ok"
    detail = (f"{run.excluded_multi:,} units ({share:.1%}) were exposed to more than one variant and are excluded"
              + (f"; the assignment is leaking between arms (warn above {warn_share:.0%}, fail above "
                 f"{fail_share:.0%}) — make the assignment sticky per unit" if status != "ok" else ""))
    return Check("multiple_exposures", status, detail, value=share, threshold=warn_share)


def _p(p: float) -> str:
    """'= 0.042' or '< 0.001', to follow a 'p'."""
    text = fmt.pvalue(p)
    return text if text.startswith("<") else f"= {text}"


def early_exposure_check(run: "AnalysisRun", exp: Experiment) -> Check:
    """Exposures far before the configured start or before the bulk of exposures (a robust rule: the
    0.1% quantile of first exposures minus the longest metric window): a clock or logging bug that
    would otherwise stretch days running and change the verdict."""
    info = run.enrollment
    if info is None or info.cutoff is None:
        return Check("early_exposures", "ok", "No exposures yet")
    anchor = f"the configured start {exp.start}" if exp.start else "the bulk of exposures"
    if info.early == 0:
        return Check("early_exposures", "ok", f"No exposure before {fmt.when(info.cutoff)} (well before {anchor})",
                     value=0.0, threshold=0.0)
    span = (fmt.when(info.early_first) if info.early_first == info.early_last
            else f"{fmt.when(info.early_first)} to {fmt.when(info.early_last)}")
    return Check("early_exposures", "fail",
                 f"{info.early:,} unit(s) first exposed far before {anchor} ({span}, before "
                 f"{fmt.when(info.cutoff)}); a wrong clock or a default timestamp in the exposure logging — fix or "
                 "remove these exposure rows (days running is measured from the bulk of exposures meanwhile)",
                 value=float(info.early), threshold=0.0)


def sums_checks(run: "AnalysisRun", config: Config, key: str) -> list[Check]:
    """A metric whose sufficient statistics are impossible (a variance below zero beyond rounding) or
    not finite has no inference: a failure for a decision metric, a warning for a secondary one."""
    out = []
    for r in run.results:
        if r.segment or r.effect.warning not in BROKEN_SUMS:
            continue
        what = ("impossible or not finite (the sum of squares is below the squared sum over n, or a sum is "
                "infinite or missing)" if r.effect.warning == "invalid_sums" else "too large to compute with")
        out.append(Check("invalid_sums", "warn" if r.role == "secondary" else "fail",
                         f"{r.metric} ({r.variant} vs {r.control}): the per-variant sums are {what}; no effect or "
                         "p-value can be computed — check the metric's values and its SQL (ingest rejects values "
                         "beyond ±1e154)", metric=r.metric, variant=r.variant))
    return out


# ------------------------------------------------------------------ bias: segments

def segment_checks(run: "AnalysisRun", config: Config, key: str) -> list[Check]:
    """Bias: a segment significantly harmed (BH within its dimension, from analysis) while the overall
    effect is not harmful; and Cochran's Q heterogeneity across the values of each dimension
    (METHODS §11), Holm-adjusted over dimensions × metrics × variants, warning at HETEROGENEITY_P."""
    exp = config.experiments[key]
    overall = {(r.metric, r.variant): r for r in run.results if r.segment == ""}
    segs = [r for r in run.results if r.segment != ""]
    checks = []
    for r in segs:
        hib = config.metrics[r.metric].higher_is_better
        o = overall.get((r.metric, r.variant))
        harmful = r.significant and (r.effect.abs_effect < 0) == hib
        overall_harmful = o is not None and o.significant and (o.effect.abs_effect < 0) == hib
        if harmful and not overall_harmful:
            checks.append(Check("segment_harm", "warn",
                                f"{r.segment}={r.segment_value}: {r.metric} {_pct(r.effect.rel_effect)} "
                                f"(95% CI {_pct(r.effect.rel_ci[0])} to {_pct(r.effect.rel_ci[1])}, adjusted p "
                                f"{_p(r.p_value_adjusted)}) for {r.variant} while the overall effect is "
                                f"{_pct(o.effect.rel_effect) if o else 'n/a'}; review the model for this segment "
                                "before rolling out to it",
                                metric=r.metric, segment=f"{r.segment}={r.segment_value}", variant=r.variant,
                                value=r.effect.rel_effect, threshold=0.0))
    if segs and not checks:
        checks.append(Check("segment_harm", "ok", f"No segment significantly harmed ({len(segs)} segment × metric "
                                                  "× variant comparisons, BH within each dimension)"))
    tests = []
    for dim in exp.segments:
        for (metric, variant) in overall:
            rows = [r for r in segs if r.segment == dim and r.metric == metric and r.variant == variant
                    and math.isfinite(r.effect.abs_se) and r.effect.abs_se > 0]
            if len(rows) >= 2:
                het = cochran_q([r.effect.abs_effect for r in rows], [r.effect.abs_se ** 2 for r in rows])
                if math.isfinite(het.p_value):
                    tests.append((dim, metric, variant, len(rows), het))
    adjusted = adjust_pvalues([t[4].p_value for t in tests], "holm", HETEROGENEITY_P)
    for (dim, metric, variant, k, het), p in zip(tests, adjusted):
        status = "warn" if p < HETEROGENEITY_P else "ok"
        checks.append(Check("segment_heterogeneity", status,
                            f"{metric} effect across {dim} ({k} groups) for {variant}: Cochran's Q = {het.q:.2f}, "
                            f"p {_p(het.p_value)} (Holm-adjusted {fmt.pvalue(p)}), I² = {het.i2:.0%}"
                            + ("; the effect differs between segments — look at the segment table before "
                               "generalising the overall effect" if status == "warn" else ""),
                            metric=metric, segment=dim, variant=variant, value=p, threshold=HETEROGENEITY_P))
    return checks


# ------------------------------------------------------------------ drift: effect over time

def _daily(run: "AnalysisRun", metric: str, variant: str, z: float) -> tuple[np.ndarray, ...]:
    """(day index, day, relative effect, its SE) of the daily exposure cohorts with finite numbers."""
    pts = sorted((p for p in run.series if p.kind == "daily" and p.metric == metric and p.variant == variant),
                 key=lambda p: p.day)
    se = np.array([(p.rel_ci[1] - p.rel_ci[0]) / (2 * z) for p in pts], dtype=float)
    rel = np.array([p.rel_effect for p in pts], dtype=float)
    keep = np.isfinite(se) & np.isfinite(rel) & (se > 0)
    days = np.array([p.day for p in pts], dtype=object)[keep]
    index = np.array([(d - days[0]).days for d in days], dtype=float) if len(days) else np.array([])
    return index, days, rel[keep], se[keep]


def novelty_checks(run: "AnalysisRun", config: Config, key: str) -> list[Check]:
    """Novelty/primacy: WLS trend of the daily cohorts' relative effect of each primary metric; warn when
    it falls significantly and the fitted effect on the last day is below (1 − decay_fraction) × the
    fitted effect on the first day."""
    from scipy.special import ndtri   # what scipy.stats.norm.ppf calls, without loading scipy.stats

    exp = config.experiments[key]
    alpha, decay = exp.decision.alpha, exp.drift.decay_fraction
    z = float(ndtri(1 - alpha / 2))
    out = []
    for metric, variant, sign, x, days, y, se in _primary_daily(run, config, exp, z):
        if len(x) < MIN_TREND_DAYS:
            continue
        tr = effect_trend(x, y, se ** 2)
        if tr.warning:
            continue
        w = 1 / se ** 2
        intercept = float(np.sum(w * y) / np.sum(w) - tr.slope * np.sum(w * x) / np.sum(w))
        early, late = intercept + tr.slope * x[0], intercept + tr.slope * x[-1]
        fading = (sign * tr.slope < 0 and tr.p_value < alpha and sign * early > 0
                  and sign * late < (1 - decay) * sign * early)
        trend = (f"trend {tr.slope * 100:+.2f} pt per day over {len(x)} daily cohorts "
                 f"{days[0]}..{days[-1]}, p {_p(tr.p_value)}")
        detail = (f"{metric} ({variant}): the lift is fading: {_pct(early)} in the first days, {_pct(late)} "
                  f"lately ({trend}); the long-run effect is likely smaller than the average — keep running "
                  "or keep a holdback before relying on it" if fading else
                  f"{metric} ({variant}): no fading effect ({_pct(early)} first, {_pct(late)} lately; {trend})")
        out.append(Check("novelty", "warn" if fading else "ok", detail, metric=metric, variant=variant,
                         value=tr.slope, threshold=decay))
    return out


def _primary_daily(run: "AnalysisRun", config: Config, exp: Experiment, z: float):
    """(metric, variant, direction sign, day index, days, daily relative effect, its SE) for every
    primary metric × treatment (see `_daily`)."""
    for metric in exp.primary:
        sign = 1 if config.metrics[metric].higher_is_better else -1
        for variant in exp.treatments:
            yield (metric, variant, sign, *_daily(run, metric, variant, z))


def _launch(con: duckdb.DuckDBPyConnection, exp: Experiment, key: str, as_of: dt.datetime):
    """The ledger run that estimated the launch effect: the last run at or before `launched_at`
    (end of that day), else the first SHIP run. Returns (run_id, as_of, {(metric, variant): rel})."""
    frame = ledger.launch_rows(con, key, as_of, exp.primary)
    if frame.empty:
        return None
    if exp.launched_at is not None:
        before = frame[frame["as_of"] < dt.datetime.combine(exp.launched_at, dt.time()) + dt.timedelta(days=1)]
        run_id = before["run_id"].iloc[-1] if len(before) else None
    else:
        run_id = None
    if run_id is None:
        ships = frame[frame["decision"] == "SHIP"]
        if ships.empty:
            return None
        run_id = ships["run_id"].iloc[0]
    rows = frame[frame["run_id"] == run_id]
    effects = {(m, v): float(e) for m, v, e in zip(rows["metric"], rows["variant"], rows["rel_effect"])}
    return run_id, rows["as_of"].iloc[0].to_pydatetime(), effects


def holdback_checks(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                    run: "AnalysisRun", engine: Engine | None = None) -> list[Check]:
    """A shipped experiment that keeps a holdback: the effect of the recent exposure cohorts against the
    launch estimate in the ledger, and the per-unit distribution of the primary metric (KS test)."""
    from scipy.special import ndtri   # what scipy.stats.norm.ppf calls, without loading scipy.stats

    exp = config.experiments[key]
    if exp.status != "shipped" or not exp.holdback:
        return []
    launch = _launch(con, exp, key, as_of)
    if launch is None:
        return [Check("launch_decay", "ok", "No launch estimate in the ledger yet (no run before launched_at and "
                                            "no SHIP run); the effect will be compared once one exists")]
    run_id, launch_as_of, effects = launch
    alpha, decay, recent = exp.decision.alpha, exp.drift.decay_fraction, exp.drift.recent_days
    z = float(ndtri(1 - alpha / 2))
    out = []
    for metric, variant, sign, x, days, y, se in _primary_daily(run, config, exp, z):
        then = effects.get((metric, variant))
        if not len(x) or then is None or not math.isfinite(then):
            continue
        keep = x > x[-1] - recent
        w = 1 / se[keep] ** 2
        now, now_se = float(np.sum(w * y[keep]) / np.sum(w)), float(1 / math.sqrt(np.sum(w)))
        decayed = (sign * then > 0 and sign * now < (1 - decay) * sign * then
                   and sign * now + z * now_se < sign * then)
        text = (f"{metric} ({variant}): units exposed {days[keep][0]}..{days[-1]} show {_pct(now)} (95% CI "
                f"{_pct(now - z * now_se)} to {_pct(now + z * now_se)}) against {_pct(then)} at launch "
                f"(run {run_id} as of {launch_as_of:%Y-%m-%d})")
        out.append(Check("launch_decay", "warn" if decayed else "ok",
                         text + (f"; the effect decayed by more than {decay:.0%} since launch — re-evaluate the "
                                 "model (drift?) before removing the holdback" if decayed else ""),
                         metric=metric, variant=variant, value=now, threshold=(1 - decay) * then))
    launched = dt.datetime.combine(exp.launched_at, dt.time()) if exp.launched_at else launch_as_of
    return out + distribution_drift(engine or con, config, key, as_of, launched)


def distribution_drift(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str,
                       as_of: dt.datetime, launched: dt.datetime) -> list[Check]:
    """Two-sample KS test of the primary metric's per-unit values: the last `recent_days` of exposure
    cohorts with a complete window vs the `recent_days` before launch, per variant (bounded sample)."""
    from scipy.stats import ks_2samp

    exp = config.experiments[key]
    metric, recent = exp.primary[0], exp.drift.recent_days
    window = math.ceil(config.metrics[metric].window_days)
    hi = (as_of - dt.timedelta(days=window)).date()          # cohorts before hi have a complete window
    lo, base_lo, base_hi = hi - dt.timedelta(days=recent), launched.date() - dt.timedelta(days=recent), launched.date()
    if lo < base_hi:
        return [Check("distribution_drift", "ok", f"{metric}: not yet {recent} days of post-launch cohorts with a "
                                                  f"complete {window}-day window; compared later", metric=metric)]
    engine = as_engine(engine)
    query = experiment_sql(config, key, as_of, keys=[metric], dialect=engine.dialect)
    y = query.columns[0].y
    # the sample: the first KS_SAMPLE units by md5(unit_id), the same units on every engine
    frame = engine.frame(f"""WITH
        win AS (SELECT variant, unit_id, exposure_day, {y} AS y,
                       CASE WHEN exposure_day >= DATE '{base_lo}' AND exposure_day < DATE '{base_hi}' THEN 'launch'
                            WHEN exposure_day >= DATE '{lo}' AND exposure_day < DATE '{hi}' THEN 'recent' END AS w
                FROM ({query.unit_sql}) capped),
        ranked AS (SELECT variant, w, y, exposure_day,
                          row_number() OVER (PARTITION BY variant, w ORDER BY md5(unit_id), unit_id) AS k
                   FROM win WHERE w IS NOT NULL)
        SELECT variant, w, y, exposure_day FROM ranked WHERE k <= {KS_SAMPLE}""")
    out = []
    for variant in exp.variants:
        a, b = (frame[(frame["variant"] == variant) & (frame["w"] == w)] for w in ("launch", "recent"))
        if min(len(a), len(b)) < KS_MIN_UNITS:
            continue
        ks = ks_2samp(a["y"].to_numpy(), b["y"].to_numpy())
        drift = ks.pvalue < KS_P
        detail = (f"{metric} per unit for {variant}: cohorts {_span(b)} (mean {b['y'].mean():.4g}, n = {len(b):,}) "
                  f"vs the launch baseline {_span(a)} (mean {a['y'].mean():.4g}, n = {len(a):,}): "
                  f"KS D = {ks.statistic:.3f}, p {_p(ks.pvalue)}")
        out.append(Check("distribution_drift", "warn" if drift else "ok",
                         detail + ("; the metric's distribution drifted since launch (population or model behaviour)"
                                   " — investigate before trusting the launch estimate" if drift else ""),
                         metric=metric, variant=variant, value=float(ks.pvalue), threshold=KS_P))
    return out


def _span(frame) -> str:
    days = frame["exposure_day"]
    return f"exposed {days.min():%Y-%m-%d}..{days.max():%Y-%m-%d}"


# ------------------------------------------------------------------ entry points

def experiment_checks(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                      run: "AnalysisRun", engine: Engine | None = None) -> list[Check]:
    """Every health check of one experiment run, in display order. Checks that read data go to
    `engine` (default: the warehouse `con`); those that read the ledger go to `con`."""
    engine = engine or as_engine(con)
    exp = config.experiments[key]
    checks = [srm_check(run), multi_exposure_check(run), early_exposure_check(run, exp)] + sums_checks(run, config, key)
    checks += quality_checks(engine, config, key, as_of)
    checks += segment_checks(run, config, key) + novelty_checks(run, config, key)
    try:
        checks += holdback_checks(con, config, key, as_of, run, engine)
    except ENGINE_ERRORS as exc:
        log.warning("holdback checks of %s could not run", key, exc_info=exc)
        checks.append(Check("launch_decay", "warn", f"The holdback checks could not run ({exc}); the launch "
                                                    "comparison is missing from this run"))
    return checks


