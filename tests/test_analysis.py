"""The analysis engine against scipy/statsmodels on the raw per-unit data.

Seeded raw rows (exposures, events) are inserted straight into a DuckDB warehouse. The expected
numbers are computed independently of abproxy's SQL: pandas rebuilds each unit's values from the
same raw rows (first exposure, windows, as_of, capping with numpy quantiles), then scipy/statsmodels
(or a delta method written here from the raw arrays) give estimates, CIs and p-values that must
match `analyze_experiment` (fixed-horizon, decision.sequential = false) to 1e-6 relative.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW


from abproxy.analysis import analyze_experiment, run_query
from abproxy.config import parse_config
from abproxy.stats import at_level
from abproxy.warehouse import connect

RTOL = 1e-6
ALPHA = 0.05
AS_OF = dt.datetime(2024, 1, 15)
START = dt.datetime(2024, 1, 1)
WINDOW = 7
PRE = 14
KEY = "exp"
CONTROL, TREATMENTS = "a", ["b", "c"]
LIFT = {"a": 1.0, "b": 1.06, "c": 1.0}

METRICS = {
    "revenue": {"type": "mean", "event": "purchase", "window_days": WINDOW},
    "converted": {"type": "proportion", "event": "purchase", "window_days": WINDOW},
    "rev_per_session": {"type": "ratio", "window_days": WINDOW, "numerator": {"event": "purchase"},
                        "denominator": {"event": "session", "aggregate": "count"}},
    "revenue_capped": {"type": "mean", "event": "purchase", "window_days": WINDOW, "capping": {"quantile": 0.99}},
    "revenue_capped_value": {"type": "mean", "event": "purchase", "window_days": WINDOW, "capping": {"value": 60}},
    "orders": {"type": "mean", "event": "purchase", "aggregate": "count", "window_days": WINDOW},
    "rev_per_session_capped": {"type": "ratio", "window_days": WINDOW, "capping": {"quantile": 0.95},
                               "numerator": {"event": "purchase"},
                               "denominator": {"event": "session", "aggregate": "count"}},
    "revenue_cuped": {"type": "mean", "event": "purchase", "window_days": WINDOW, "cuped": {"pre_window_days": PRE}},
    "revenue_cuped_capped": {"type": "mean", "event": "purchase", "window_days": WINDOW,
                             "cuped": {"pre_window_days": PRE}, "capping": {"quantile": 0.99}},
    "converted_cuped": {"type": "proportion", "event": "purchase", "window_days": WINDOW,
                        "cuped": {"pre_window_days": PRE}},
}
PRIMARY = ["revenue", "converted"]
GUARDRAILS = ["rev_per_session"]
SECONDARY = [k for k in METRICS if k not in PRIMARY + GUARDRAILS]
MEANS = ["revenue", "revenue_capped", "revenue_capped_value", "orders"]
PROPORTIONS = ["converted"]
RATIOS = ["rev_per_session", "rev_per_session_capped"]
CUPEDS = ["revenue_cuped", "revenue_cuped_capped", "converted_cuped"]


def make_config(sequential: bool, tuning: float = 5000):
    return parse_config({"metrics": METRICS, "experiments": {KEY: {
        "control": CONTROL, "variants": {v: {} for v in [CONTROL] + TREATMENTS},
        "primary": PRIMARY, "guardrails": GUARDRAILS, "secondary": SECONDARY, "segments": ["country"],
        "decision": {"sequential": sequential, "sequential_tuning": tuning, "alpha": ALPHA,
                     "min_segment_units": 200}}}})


# ----------------------------------------------------------------------------- raw data

def _seconds(rng, lo, hi, size):
    return np.floor(rng.uniform(lo, hi, size)).astype("int64")


def raw_data(seed: int = 20240115, n: int = 9000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exposures and events as they would be loaded: repeats, cross-variant units, late exposures,
    events before, inside and after each window and after as_of."""
    rng = np.random.default_rng(seed)
    uid = np.array([f"u{i:06d}" for i in range(n)])
    variant = rng.choice([CONTROL] + TREATMENTS, n)
    country = rng.choice(["US", "DE", "FR"], n, p=[0.5, 0.3, 0.2])
    # first exposures spread over 15 days: some after as_of (01-15 .. 01-16)
    t0 = pd.Timestamp(START) + pd.to_timedelta(_seconds(rng, 0, 15.5 * 86400, n), unit="s")
    exp = [pd.DataFrame({"unit_id": uid, "variant": variant, "exposed_at": t0, "country": country})]
    rep = rng.random(n) < 0.15        # re-exposed later to the same variant, with another country value
    exp.append(pd.DataFrame({"unit_id": uid[rep], "variant": variant[rep],
                             "exposed_at": t0[rep] + pd.to_timedelta(_seconds(rng, 60, 5 * 86400, rep.sum()), unit="s"),
                             "country": "XX"}))
    cross = rng.random(n) < 0.02      # also exposed to another variant -> excluded
    other = np.where(variant[cross] == "a", "b", "a")
    exp.append(pd.DataFrame({"unit_id": uid[cross], "variant": other,
                             "exposed_at": t0[cross] + pd.to_timedelta(_seconds(rng, 60, 3 * 86400, cross.sum()), unit="s"),
                             "country": country[cross]}))
    exposures = pd.concat(exp, ignore_index=True)
    exposures["experiment"] = KEY
    # a second experiment sharing units must not leak in
    noise = exposures.sample(500, random_state=1).assign(experiment="other", variant="b")
    exposures = pd.concat([exposures, noise], ignore_index=True)

    lam = rng.gamma(1.5, 1.0, n)                 # unit propensity and basket size, shared by pre and post
    scale = rng.lognormal(2.3, 0.6, n)
    mult = np.vectorize(LIFT.get)(variant)
    rows = []

    def events(name, rate, lo_days, hi_days, value_fn):
        k = rng.poisson(rate)
        idx = np.repeat(np.arange(n), k)
        when = t0[idx] + pd.to_timedelta(_seconds(rng, lo_days * 86400, hi_days * 86400, len(idx)), unit="s")
        rows.append(pd.DataFrame({"unit_id": uid[idx], "event": name, "occurred_at": when,
                                  "value": value_fn(idx)}))

    value = lambda i: np.round(scale[i] * rng.lognormal(0, 0.6, len(i)), 2)  # noqa: E731 right tail for capping
    events("purchase", lam * 1.6, -PRE - 4, 0, value)                  # pre-period (some before the pre-window)
    events("purchase", lam * mult * 1.0, 0, WINDOW + 3, value)         # post: some after the window or as_of
    events("session", 2 + 3 * lam, 0, WINDOW + 3, lambda i: np.full(len(i), np.nan))
    events("pageview", lam * 2, -2, WINDOW, lambda i: rng.random(len(i)))  # an event no metric uses
    ev = pd.concat(rows, ignore_index=True)
    return exposures, ev


def load(con, exposures: pd.DataFrame, events: pd.DataFrame) -> None:
    con.execute('ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "country" VARCHAR')
    ex = exposures.assign(file_id=1, loaded_at=pd.Timestamp("2024-02-01"))
    ev = events.assign(event_id=[f"e{i}" for i in range(len(events))], file_id=2, loaded_at=pd.Timestamp("2024-02-01"))
    con.register("_ex", ex)
    con.register("_ev", ev)
    con.execute("INSERT INTO exposures BY NAME SELECT * FROM _ex")
    con.execute("INSERT INTO events BY NAME SELECT * FROM _ev")
    con.unregister("_ex")
    con.unregister("_ev")


# ----------------------------------------------------------------------------- independent per-unit values

def _cap(v: np.ndarray, q: float) -> np.ndarray:
    return np.minimum(v, np.quantile(v, q))


def unit_values(exposures: pd.DataFrame, events: pd.DataFrame, as_of: dt.datetime = AS_OF) -> pd.DataFrame:
    """Per-unit y (and x) for every metric, from the raw rows with pandas only."""
    ex = exposures[(exposures["experiment"] == KEY) & (exposures["exposed_at"] <= as_of)]
    ex = ex.sort_values(["unit_id", "exposed_at"])
    n_variants = ex.groupby("unit_id")["variant"].nunique()
    first = ex.drop_duplicates("unit_id", keep="first").set_index("unit_id")
    u = first.loc[n_variants[n_variants == 1].index, ["variant", "exposed_at", "country"]].copy()

    ev = events[events["occurred_at"] <= as_of].merge(u[["exposed_at"]], left_on="unit_id", right_index=True)
    post = (ev["occurred_at"] >= ev["exposed_at"]) & (ev["occurred_at"] < ev["exposed_at"] + pd.Timedelta(days=WINDOW))
    pre = (ev["occurred_at"] < ev["exposed_at"]) & (ev["occurred_at"] >= ev["exposed_at"] - pd.Timedelta(days=PRE))
    purchase, session = ev["event"] == "purchase", ev["event"] == "session"

    def per_unit(mask, how):
        g = ev[mask].groupby("unit_id")["value"]
        return (g.sum() if how == "sum" else g.size()).reindex(u.index, fill_value=0).astype(float)

    rev, rev_pre = per_unit(purchase & post, "sum"), per_unit(purchase & pre, "sum")
    orders, orders_pre = per_unit(purchase & post, "count"), per_unit(purchase & pre, "count")
    sessions = per_unit(session & post, "count")
    u["revenue"] = rev
    u["converted"] = (orders > 0).astype(float)
    u["rev_per_session"], u["rev_per_session__x"] = rev, sessions
    u["revenue_capped"] = _cap(rev.to_numpy(), 0.99)
    u["revenue_capped_value"] = np.minimum(rev, 60.0)
    u["orders"] = orders
    u["rev_per_session_capped"], u["rev_per_session_capped__x"] = _cap(rev.to_numpy(), 0.95), sessions
    u["revenue_cuped"], u["revenue_cuped__x"] = rev, rev_pre
    u["revenue_cuped_capped"] = _cap(rev.to_numpy(), 0.99)
    u["revenue_cuped_capped__x"] = _cap(rev_pre.to_numpy(), 0.99)
    u["converted_cuped"], u["converted_cuped__x"] = (orders > 0).astype(float), (orders_pre > 0).astype(float)
    return u


# ----------------------------------------------------------------------------- independent reference statistics

def arms(u: pd.DataFrame, metric: str, variant: str):
    c, t = u[u["variant"] == CONTROL], u[u["variant"] == variant]
    xc = c[f"{metric}__x"].to_numpy() if f"{metric}__x" in u else None
    xt = t[f"{metric}__x"].to_numpy() if f"{metric}__x" in u else None
    return c[metric].to_numpy(), t[metric].to_numpy(), xc, xt


def ref_fieller(a, b, va, vb, cov, q):
    """Fieller's interval for (A − B)/|B| by root finding on |A − ρB|/√(va − 2ρ·cov + ρ²vb) = q
    (independent of the closed form in abproxy.stats.effects; METHODS §19)."""
    def excess(rho):
        return abs(a - rho * b) / math.sqrt(va - 2 * rho * cov + rho * rho * vb) - q

    hat = a / b
    span = 1.0
    while excess(hat - span) < 0 or excess(hat + span) < 0:
        span *= 2
    lo = optimize.brentq(excess, hat - span, hat, xtol=1e-15, rtol=1e-14)
    hi = optimize.brentq(excess, hat, hat + span, xtol=1e-15, rtol=1e-14)
    lo, hi = lo - 1, hi - 1
    return (lo, hi) if b > 0 else (-hi, -lo)


def ref_mean(yc, yt):
    test = sps.ttest_ind(yt, yc, equal_var=False)
    lo, hi = CompareMeans(DescrStatsW(yt), DescrStatsW(yc)).tconfint_diff(alpha=ALPHA, usevar="unequal")
    mc, mt = yc.mean(), yt.mean()
    vc, vt = yc.var(ddof=1) / len(yc), yt.var(ddof=1) / len(yt)
    rel, rel_se = (mt - mc) / abs(mc), math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)       # METHODS §2, §19
    q = sps.t.ppf(1 - ALPHA / 2, test.df)
    return {"abs": mt - mc, "se": math.sqrt(vc + vt), "abs_ci": (lo, hi), "p": test.pvalue,
            "rel": rel, "rel_se": rel_se, "rel_ci": ref_fieller(mt, mc, vt, vc, 0.0, q), "n": len(yc) + len(yt),
            "parts": (mt, mc, vt, vc, 0.0)}


def ref_proportion(yc, yt):
    sc, st, nc, nt = yc.sum(), yt.sum(), len(yc), len(yt)
    p = sm_proportion.test_proportions_2indep(st, nt, sc, nc, method="wald", compare="diff").pvalue   # §19
    lo, hi = confint_proportions_2indep(st, nt, sc, nc, method="wald", compare="diff", alpha=ALPHA)
    pc, pt = sc / nc, st / nt
    vc, vt = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    rel, rel_se = (pt - pc) / pc, math.sqrt(vt / pc**2 + pt**2 * vc / pc**4)
    z = sps.norm.ppf(1 - ALPHA / 2)
    return {"abs": pt - pc, "se": math.sqrt(vc + vt), "abs_ci": (lo, hi), "p": p,
            "rel": rel, "rel_se": rel_se, "rel_ci": ref_fieller(pt, pc, vt, vc, 0.0, z), "n": nc + nt,
            "parts": (pt, pc, vt, vc, 0.0)}


def ref_ratio(yc, yt, xc, xt):
    """Delta method from the raw arrays via the linearised per-unit values (y − R·x)/x̄ (Deng et al. 2018)."""
    def arm(y, x):
        r = y.sum() / x.sum()
        lin = (y - r * x) / x.mean()
        return r, lin.var(ddof=1) / len(y)
    (rc, vc), (rt, vt) = arm(yc, xc), arm(yt, xt)
    se = math.sqrt(vc + vt)
    z = sps.norm.ppf(1 - ALPHA / 2)
    rel, rel_se = (rt - rc) / abs(rc), math.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    return {"abs": rt - rc, "se": se, "abs_ci": (rt - rc - z * se, rt - rc + z * se),
            "p": 2 * sps.norm.sf(abs(rt - rc) / se), "rel": rel, "rel_se": rel_se,
            "rel_ci": ref_fieller(rt, rc, vt, vc, 0.0, z), "n": len(yc) + len(yt), "rc": rc, "rt": rt,
            "parts": (rt, rc, vt, vc, 0.0)}


def ref_cuped(yc, yt, xc, xt):
    """CUPED as an OLS adjustment with statsmodels: θ from the pooled units of both arms, then
    (y − θ(x − x̄)) ~ 1 + treatment with HC2 errors (== Welch for a binary regressor)."""
    y, x = np.concatenate([yc, yt]), np.concatenate([xc, xt])
    treat = np.r_[np.zeros(len(yc)), np.ones(len(yt))]
    theta = np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)
    adj = y - theta * (x - x.mean())
    fit = sm.OLS(adj, sm.add_constant(treat)).fit(cov_type="HC2")
    welch = sps.ttest_ind(adj[treat == 1], adj[treat == 0], equal_var=False)
    q = sps.t.ppf(1 - ALPHA / 2, welch.df)
    est, se = fit.params[1], fit.bse[1]
    # relative lift over the unadjusted control mean: delta method, gradient over (ȳT, x̄T, ȳC, x̄C) (METHODS §5)
    ybc, ybt, xbc, xbt = yc.mean(), yt.mean(), xc.mean(), xt.mean()
    rel = ((ybt - theta * xbt) - (ybc - theta * xbc)) / ybc
    gt = np.array([1 / ybc, -theta / ybc])
    gc = np.array([-(ybt - theta * xbt + theta * xbc) / ybc**2, theta / ybc])
    var_rel = gt @ np.cov(yt, xt, ddof=1) @ gt / len(yt) + gc @ np.cov(yc, xc, ddof=1) @ gc / len(yc)
    rel_se = math.sqrt(var_rel)
    # Fieller on A = ȳT − θ(x̄T − x̄C), B = ȳC (METHODS §19), θ held fixed as in §5
    cov_c = np.cov(yc, xc, ddof=1)
    var_a = np.var(yt - theta * xt, ddof=1) / len(yt) + theta ** 2 * cov_c[1, 1] / len(yc)
    parts = (ybt - theta * (xbt - xbc), ybc, var_a, cov_c[0, 0] / len(yc), theta * cov_c[0, 1] / len(yc))
    # the textbook regression y ~ treatment + (x − x̄) with a free slope (θ estimated within arms)
    free = sm.OLS(y, sm.add_constant(np.column_stack([treat, x - x.mean()]))).fit(cov_type="HC2")
    return {"abs": est, "se": se, "abs_ci": (est - q * se, est + q * se), "p": welch.pvalue,
            "rel": rel, "rel_se": rel_se, "rel_ci": ref_fieller(*parts, q), "n": len(y), "parts": parts,
            "free_est": free.params[1], "free_se": free.bse[1], "theta": theta,
            "unadj_se": math.sqrt(yc.var(ddof=1) / len(yc) + yt.var(ddof=1) / len(yt))}


def reference(u: pd.DataFrame, metric: str, variant: str) -> dict:
    yc, yt, xc, xt = arms(u, metric, variant)
    if metric in MEANS:
        return ref_mean(yc, yt)
    if metric in PROPORTIONS:
        return ref_proportion(yc, yt)
    if metric in RATIOS:
        return ref_ratio(yc, yt, xc, xt)
    return ref_cuped(yc, yt, xc, xt)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    exposures, events = raw_data()
    con = connect(tmp_path_factory.mktemp("analysis") / "warehouse.duckdb")
    load(con, exposures, events)
    u = unit_values(exposures, events)
    fixed = analyze_experiment(con, make_config(False), KEY, AS_OF, robustness=False)
    seq = analyze_experiment(con, make_config(True), KEY, AS_OF, robustness=False)
    assert fixed.status == "ok", fixed.error
    assert seq.status == "ok", seq.error
    yield {"con": con, "units": u, "fixed": fixed, "seq": seq, "exposures": exposures, "events": events}
    con.close()


def overall(run, metric, variant):
    (r,) = [r for r in run.results if r.segment == "" and r.metric == metric and r.variant == variant]
    return r


def close(got, want, rtol=RTOL, atol=0.0):
    assert np.allclose(np.asarray(got, float), np.asarray(want, float), rtol=rtol, atol=atol), (got, want)


# ----------------------------------------------------------------------------- tests

def test_data_set_has_the_edge_cases(world):
    u, run = world["units"], world["fixed"]
    assert run.units == u["variant"].value_counts().to_dict()
    ex = world["exposures"]
    multi = ex[(ex.experiment == KEY) & (ex.exposed_at <= AS_OF)].groupby("unit_id")["variant"].nunique()
    assert run.excluded_multi == int((multi > 1).sum()) > 50
    assert (u["country"] != "XX").all()                  # segment attribute from the first exposure
    assert (u["revenue_capped"] < u["revenue"]).sum() > 10


def test_unit_table_matches_independent_pandas(world):
    """The per-unit table of the SQL (unit_sql) equals the pandas reconstruction, metric by metric."""
    con, u = world["con"], world["units"]
    table = run_query(con, make_config(False), KEY, AS_OF)
    sql_units = con.execute(table.query.unit_sql).df().set_index("unit_id").sort_index()
    assert list(sql_units.index) == sorted(u.index)
    ref = u.sort_index()
    for col in table.query.columns:
        close(sql_units[col.y], ref[col.key], rtol=1e-9, atol=1e-9)
        if col.x:
            close(sql_units[col.x], ref[f"{col.key}__x"], rtol=1e-9, atol=1e-9)


CASES = [(m, v) for m in MEANS + PROPORTIONS + RATIOS + CUPEDS for v in TREATMENTS]


@pytest.mark.parametrize("metric,variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_fixed_horizon_equals_reference(world, metric, variant):
    r = overall(world["fixed"], metric, variant)
    ref = reference(world["units"], metric, variant)
    e = at_level(r.effect, ALPHA)           # the statistics at α; the run shows them at the adjusted level
    assert r.control_units + r.variant_units == ref["n"]
    close(e.abs_effect, ref["abs"])
    close(e.abs_se, ref["se"])
    close(e.abs_ci, ref["abs_ci"])
    close(e.p_value, ref["p"])
    close(e.rel_effect, ref["rel"])
    close(e.rel_ci, ref["rel_ci"])
    assert e.method in ("welch", "z-proportion", "delta-ratio", "cuped")


def test_cuped_against_free_slope_ols(world):
    """The textbook regression y ~ treatment + (x − x̄) estimates θ within arms, abproxy pools the arms
    (METHODS §5) and uses Welch (= HC2) errors: the two differ by O(1/n). Measured on this data set
    (n ≈ 5,300 per pair): |Δ − Δ_OLS| ≤ 1e-4·SE (≤ 7e-5 relative), SE within 0.16% of the HC2 SE.
    Tolerances: 1e-3·SE on the estimate, 0.5% on the SE. (Against the OLS with θ fixed at the pooled
    value — `ref_cuped` — the match is exact to 1e-6, see test_fixed_horizon_equals_reference.)"""
    u = world["units"]
    for metric in CUPEDS:
        for variant in TREATMENTS:
            ref = reference(u, metric, variant)
            e = overall(world["fixed"], metric, variant).effect
            assert abs(e.abs_effect - ref["free_est"]) < 1e-3 * ref["free_se"], (metric, variant)
            assert e.abs_se == pytest.approx(ref["free_se"], rel=5e-3), (metric, variant)
            close(e.variance_reduction, 1 - ref["se"] ** 2 / ref["unadj_se"] ** 2)
            assert e.variance_reduction > 0.03


def test_sequential_intervals_are_wider_and_follow_methods_7(world):
    fixed, seq = world["fixed"], world["seq"]
    tuning = 5000.0
    for metric, variant in CASES:
        f, s = overall(fixed, metric, variant), overall(seq, metric, variant)
        ef, es = f.effect, s.effect
        close([es.abs_effect, es.abs_se, es.rel_effect, es.rel_se], [ef.abs_effect, ef.abs_se, ef.rel_effect, ef.rel_se],
              rtol=1e-12)
        n = s.control_units + s.variant_units
        # METHODS §7, first form
        rho2 = (-2 * math.log(ALPHA) + math.log(1 - 2 * math.log(ALPHA))) / tuning
        rho = math.sqrt(rho2)
        h = ef.abs_se * math.sqrt(n) * math.sqrt(2 * (n * rho2 + 1) * math.log(math.sqrt(n * rho2 + 1) / ALPHA)
                                                  / (n * rho) ** 2)
        # Eppo form, same boundary
        rho_h = tuning / (math.log(1 - 2 * math.log(ALPHA)) - 2 * math.log(ALPHA))
        h_eppo = ef.abs_se * math.sqrt((n + rho_h) * math.log((n + rho_h) / (rho_h * ALPHA**2)) / n)
        assert h == pytest.approx(h_eppo, rel=1e-9)
        ef, es = at_level(ef, ALPHA), at_level(es, ALPHA)
        close(es.abs_ci, (ef.abs_effect - h, ef.abs_effect + h))
        ref = reference(world["units"], metric, variant)
        close(es.rel_ci, ref_fieller(*ref["parts"], h / ef.abs_se))        # Fieller at the CS multiplier
        assert es.abs_ci[1] - es.abs_ci[0] > ef.abs_ci[1] - ef.abs_ci[0]
        assert es.rel_ci[1] - es.rel_ci[0] > ef.rel_ci[1] - ef.rel_ci[0]
        # always-valid p (GrowthBook) and its duality with the confidence sequence
        z = ef.abs_effect / ef.abs_se
        big_e = math.exp(n * rho2 * z * z / (2 * (n * rho2 + 1))) / math.sqrt(n * rho2 + 1)
        close(es.p_value, min(1.0, 1 / big_e))
        assert es.p_value >= ef.p_value
        assert (es.p_value <= ALPHA) == (not es.abs_ci[0] <= 0 <= es.abs_ci[1])
        assert es.method.endswith("+sequential")


def test_sequential_width_ratio_at_tuning_n(world):
    """h ≈ 1.55 × the fixed-horizon half-width when N = N* (METHODS §7)."""
    n = sum(world["seq"].units.values())
    seq = analyze_experiment(world["con"], make_config(True, tuning=n), KEY, AS_OF, robustness=False)
    e_seq, e_fix = overall(seq, "converted", "b").effect, overall(world["fixed"], "converted", "b").effect
    ratio = (e_seq.abs_ci[1] - e_seq.abs_ci[0]) / (e_fix.abs_ci[1] - e_fix.abs_ci[0])
    assert ratio == pytest.approx(1.55, abs=0.02)


@pytest.mark.parametrize("mode", ["fixed", "seq"])
def test_multiple_testing_families(world, mode):
    """Holm within primary and within guardrails, BH within secondary, each over metrics × arms;
    checked against multipletests on the raw p-values (independent ones in fixed-horizon mode)."""
    run, u = world[mode], world["units"]
    results = [r for r in run.results if r.segment == ""]
    for role, metrics, method in (("primary", PRIMARY, "holm"), ("guardrail", GUARDRAILS, "holm"),
                                  ("secondary", SECONDARY, "fdr_bh")):
        family = [r for r in results if r.role == role]
        assert sorted((r.metric, r.variant) for r in family) == sorted((m, v) for m in metrics for v in TREATMENTS)
        if mode == "fixed":
            raw = [reference(u, r.metric, r.variant)["p"] for r in family]
            close([r.effect.p_value for r in family], raw)
        else:
            raw = [r.effect.p_value for r in family]
        adjusted = multipletests(raw, alpha=ALPHA, method=method)[1]
        close([r.p_value_adjusted for r in family], adjusted, rtol=1e-9)
        for r in family:
            assert r.significant == (r.p_value_adjusted < ALPHA)
    if mode == "fixed":   # the families are not pooled: adjusting all p-values as one family differs
        every = [r.effect.p_value for r in results]
        assert not np.allclose(multipletests(every, method="holm")[1], [r.p_value_adjusted for r in results])


def test_the_planted_effect_is_found(world):
    """b has a +6% purchase rate, c none: sanity of the data, not of the statistics."""
    b, c = overall(world["fixed"], "revenue_cuped", "b"), overall(world["fixed"], "revenue_cuped", "c")
    assert b.effect.rel_ci[0] < 0.06 < b.effect.rel_ci[1]
    # every interval shown agrees with the decision: it excludes 0 exactly when the result is significant
    for r in world["fixed"].results + world["seq"].results:
        lo, hi = r.effect.abs_ci
        if np.isfinite(lo) and abs(r.p_value_adjusted - ALPHA) > 1e-9:
            assert r.significant == (lo > 0 or hi < 0), (r.metric, r.variant, r.segment)
    assert c.effect.rel_ci[0] < 0 < c.effect.rel_ci[1]


def test_segment_effects_equal_reference_on_the_subset(world):
    """Per-segment effects (first-exposure attribute) equal scipy on that segment's units."""
    u, run = world["units"], world["fixed"]
    for country in ("US", "DE", "FR"):
        sub = u[u["country"] == country]
        for metric in ("revenue", "converted", "rev_per_session"):
            (r,) = [r for r in run.results if r.segment == "country" and r.segment_value == country
                    and r.metric == metric and r.variant == "b"]
            ref = reference(sub, metric, "b")
            close(r.effect.abs_effect, ref["abs"])
            close(at_level(r.effect, ALPHA).abs_ci, ref["abs_ci"])
            close(r.effect.p_value, ref["p"])


def test_cumulative_series_ends_at_the_overall_effect(world):
    run = world["fixed"]
    for metric in ("revenue", "rev_per_session", "revenue_cuped"):
        points = sorted((p for p in run.series if p.metric == metric and p.variant == "b" and p.kind == "cumulative"),
                        key=lambda p: p.day)
        e = overall(run, metric, "b").effect
        close(points[-1].abs_effect, e.abs_effect, rtol=1e-9)
        close(points[-1].abs_se, e.abs_se, rtol=1e-9)


def _fingerprint(run) -> dict:
    return {"results": [r.record() for r in run.results], "series": [p for p in run.series],
            "units": run.units, "excluded_multi": run.excluded_multi, "srm": run.srm,
            # as a sorted multiset: quality.missing_checks returns its checks in the order of an
            # unordered GROUP BY (no ORDER BY), so only the order of the health list varies between runs
            "health": sorted(repr(h.record()) for h in run.health),
            "verdict": (run.verdict.decision, run.verdict.reasons) if run.verdict else None,
            "hash": run.definition_hash, "watermark": run.watermark}


def test_determinism_same_data_same_as_of(world):
    """Same data and as_of → identical results (bit for bit), with the full analysis incl. robustness."""
    con, config = world["con"], make_config(False)
    one = analyze_experiment(con, config, KEY, AS_OF)
    two = analyze_experiment(con, config, KEY, AS_OF)
    assert one.status == two.status == "ok"
    a, b = _fingerprint(one), _fingerprint(two)
    assert repr(a) == repr(b)
    assert one.run_id != two.run_id


def test_as_of_is_a_point_in_time(world):
    """Re-analysing at an earlier as_of equals the reference built from the rows up to that time."""
    as_of = dt.datetime(2024, 1, 10, 12)
    run = analyze_experiment(world["con"], make_config(False), KEY, as_of, robustness=False)
    u = unit_values(world["exposures"], world["events"], as_of)
    assert run.units == u["variant"].value_counts().to_dict()
    for metric in ("revenue", "converted", "rev_per_session", "revenue_cuped_capped"):
        e, ref = overall(run, metric, "b").effect, reference(u, metric, "b")
        close(e.abs_effect, ref["abs"])
        close(e.p_value, ref["p"])
