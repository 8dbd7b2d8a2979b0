"""A pass loads the libraries it calls, no more (issue 15: process start-up of `abproxy run`).

The normal, χ² and Poisson tails come from `scipy.special` (what the `scipy.stats` methods call):
the same numbers, bit for bit, without the ≈1.5 s import of `scipy.stats`. `scipy.stats` and
statsmodels load where a check needs them (KS tests, Benjamini–Hochberg, Cochran's Q, the trend WLS).
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from scipy.special import ndtri

from abproxy.profile_checks import poisson_tails
from abproxy.stats import cochran_q

HEAVY = ("scipy.stats", "statsmodels", "formulaic", "patsy")


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_poisson_tails_equal_scipy_stats_bit_for_bit():
    """`poisson_tails(k, mu)` = (poisson.cdf(k, mu), poisson.sf(k - 1, mu)) on a grid of counts (0 included:
    P(X >= 0) = 1) and of expected counts from 1e-3 to 1e5."""
    k, mu = np.meshgrid(np.arange(0, 2000), np.geomspace(1e-3, 1e5, 150))
    for observed, expected in zip(k.ravel()[::7], mu.ravel()[::7]):
        low, high = poisson_tails(int(observed), float(expected))
        assert low == stats.poisson.cdf(observed, expected) and high == stats.poisson.sf(observed - 1, expected)
    assert poisson_tails(0, 3.0) == (stats.poisson.cdf(0, 3.0), 1.0)


def test_normal_quantile_and_chi2_tail_equal_scipy_stats_bit_for_bit():
    q = np.concatenate([np.linspace(1e-9, 1 - 1e-9, 20001), 1 - np.geomspace(1e-15, 0.5, 300)])
    assert np.array_equal(ndtri(q), stats.norm.ppf(q))          # health's z = ndtri(1 - alpha / 2)
    rng = np.random.default_rng(15)
    for k in range(2, 40):
        r = cochran_q(rng.normal(0, 0.1, k), rng.uniform(1e-4, 1e-2, k))
        assert r.p_value == float(stats.chi2.sf(r.q, k - 1))


def _modules(stdout: str) -> tuple[set[str], str]:
    """The modules a child printed last (`MODULES a b ...`), and what it printed before them."""
    before, _, modules = stdout.rpartition("MODULES ")
    return set(modules.split()), before


def _loaded(code: str) -> set[str]:
    code += "\nimport sys; print('MODULES ' + ' '.join(sorted(sys.modules)))"
    return _modules(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)[0]


def test_the_pass_modules_load_no_analysis_library():
    """Importing the ingest, the state fold and the analysis pipeline loads neither pandas nor scipy:
    they load when a pass reads a frame or calls a test (so their import can overlap DuckDB's work)."""
    loaded = _loaded("import abproxy.cli, abproxy.jobs, abproxy.ingest, abproxy.state, abproxy.analysis")
    assert not {m for m in loaded if m.split(".")[0] in ("pandas", "scipy", "pyarrow", *HEAVY)}


RUN = ("import atexit, runpy, sys\natexit.register(lambda: print('MODULES ' + ' '.join(sorted(sys.modules))))\n"
       "sys.argv = ['abproxy', 'run', '--workspace', sys.argv[1], '--json']\n"
       "runpy.run_module('abproxy.cli', run_name='__main__')")


def _run_pass(root: Path) -> tuple[set[str], dict]:
    out = subprocess.run([sys.executable, "-c", RUN, str(root)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    modules, result = _modules(out.stdout)
    return modules, json.loads(result)


@pytest.mark.slow
def test_a_young_experiment_pass_loads_no_scipy_stats_nor_statsmodels(tmp_path):
    """Primary metrics and a guardrail, no segments, no secondary metrics, 3 days of exposures (too few
    for the novelty trend): `abproxy run` (full build), then again after a new events file (incremental),
    as real processes — neither loads scipy.stats or statsmodels."""
    from abproxy.simulate import ExperimentSpec, SimulationSpec, simulate

    today = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    root = tmp_path / "ws"
    simulate(root, SimulationSpec(experiments=(ExperimentSpec("young", units=2000, days=3),),
                                  start=today - dt.timedelta(days=20)))
    data = yaml.safe_load((root / "abproxy.yaml").read_text())
    data["experiments"]["young"] |= {"secondary": [], "segments": []}
    (root / "abproxy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    loaded, result = _run_pass(root)
    assert result["ok"] and result["experiments"][0]["status"] == "ok"
    assert {"pandas", "scipy.special"} <= loaded and not _heavy(loaded), _heavy(loaded)

    import duckdb

    events = root / "inbox" / "events"
    first = next(events.glob("*.parquet"))
    duckdb.execute(f"COPY (SELECT * REPLACE (occurred_at + INTERVAL 1 SECOND AS occurred_at, event_id || '-b' "
                   f"AS event_id) FROM read_parquet('{first}') LIMIT 500) TO '{events / 'more.parquet'}' (FORMAT parquet)")
    loaded, result = _run_pass(root)
    assert result["files_loaded"] == 1 and result["experiments"][0]["refresh"]["mode"] == "incremental"
    assert not _heavy(loaded), _heavy(loaded)
