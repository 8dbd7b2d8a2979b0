"""What a metric computes on the warehouse, for the people who define metrics.

`preview` runs the metric's own per-unit query (the one the analysis runs, `experiment_sql`)
and one aggregate over it inside DuckDB (`previews`: for all the metrics of one experiment at once,
as the job publishes them): units, units with a non-zero value, share of zeros,
quantiles of the per-unit value before capping, the cap the current capping setting gives, the
coefficient of variation of the analysed (capped) values, the first per-unit rows and the SQL.
The MDE at the current traffic for 7/14/28 days comes from the pooled sufficient statistics,
scaled to the units those days would bring (fixed horizon, the experiment's alpha and power).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from .config import Config
from .dialect import DUCKDB
from .errors import PreviewError  # noqa: F401  (raised here, caught by the CLI)
from .metrics import experiment_sql, metric_sql
from .stats import JointMoments, Moments, power_analysis

HORIZONS = (7, 14, 28)
FIRST_ROWS = 10




@dataclass(frozen=True)
class MetricPreview:
    metric: str
    experiment: str
    as_of: str
    type: str
    units: int
    units_nonzero: int
    zero_share: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    cap: float | None
    cv: float | None
    units_per_day: float | None
    mde: dict[str, float | None] = field(default_factory=dict)   # "7" → relative MDE at 7 days
    rows: list[dict[str, Any]] = field(default_factory=list)
    sql: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        num = _fmt
        out = [f"{self.metric} ({self.type}) on the units of {self.experiment}, as of {self.as_of} UTC",
               f"  units {self.units:,}; with a non-zero value {self.units_nonzero:,} "
               f"(zeros {_share(self.zero_share)})",
               f"  per-unit value: p50 {num(self.p50)}, p90 {num(self.p90)}, p99 {num(self.p99)}, max {num(self.max)}",
               f"  cap from the capping setting: {num(self.cap) if self.cap is not None else 'none (no capping)'}",
               f"  coefficient of variation: {num(self.cv)}",
               "  MDE (relative, fixed horizon) at the current traffic "
               f"({num(self.units_per_day)} units/day): "
               + ", ".join(f"{d} days {_share(v)}" for d, v in self.mde.items())]
        if self.rows:
            keys = list(self.rows[0])
            out.append("  first units: " + " | ".join(keys))
            out += ["    " + " | ".join(_fmt(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys)
                    for r in self.rows]
        out += ["  SQL:"] + ["    " + line for line in self.sql.splitlines()]
        return out


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.4g}" if abs(x) < 1e6 else f"{x:,.0f}"


def _share(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _experiment_for(config: Config, metric: str, experiment: str | None) -> str:
    if metric not in config.metrics:
        known = ", ".join(config.metrics) or "none defined"
        raise PreviewError(f"unknown metric '{metric}' (known: {known})")
    if experiment is not None:
        if experiment not in config.experiments:
            raise PreviewError(f"unknown experiment '{experiment}' (known: {', '.join(config.experiments) or 'none'})")
        return experiment
    users = [k for k, e in config.experiments.items() if metric in e.roles()]
    if not users:
        raise PreviewError(f"metric '{metric}' is used by no experiment; name the experiment whose units to "
                           "use with --experiment KEY")
    return users[0]


def preview(con: duckdb.DuckDBPyConnection, config: Config, metric: str, experiment: str | None,
            as_of: dt.datetime) -> MetricPreview:
    return previews(con, config, _experiment_for(config, metric, experiment), [metric], as_of)[0]


def previews(con: duckdb.DuckDBPyConnection, config: Config, key: str, metrics: list[str],
             as_of: dt.datetime) -> list[MetricPreview]:
    """The previews of `metrics` on the units of experiment `key`: one per-unit query for all of
    them (`experiment_sql`), one aggregate of it before and one after capping, and one read of its
    first rows."""
    exp = config.experiments[key]
    extra = {m: config.metrics[m] for m in metrics if m not in exp.roles()}
    query = experiment_sql(config, key, as_of, keys=[m for m in metrics if m not in extra], extra=extra)
    cols = {c.key: c for c in query.columns}
    ctes = query.unit_sql[: query.unit_sql.rindex("SELECT * FROM capped")]
    parts = [_stats_sql(cols[m]) for m in metrics]
    stats = con.execute(f"""{ctes}
SELECT * FROM (SELECT count(*), (SELECT min(exposed_at) FROM units), (SELECT max(exposed_at) FROM units),
                      {', '.join(b for b, _ in parts)} FROM unit_values u),
              (SELECT {', '.join(a for _, a in parts)} FROM capped c)""").fetchone()
    n, first, last = stats[:3]
    shown = list(dict.fromkeys(c for m in metrics for c in (cols[m].y, cols[m].x) if c))   # per-unit columns
    head = con.execute(f"{ctes}SELECT unit_id, variant, {', '.join(shown)} FROM capped "
                       f"ORDER BY unit_id LIMIT {FIRST_ROWS}").fetchall()
    rate = _units_per_day(n, first, last, as_of)
    out = []
    for i, m in enumerate(metrics):
        col = cols[m]
        picked = [r[:2] + tuple(r[2 + shown.index(c)] for c in (col.y, col.x) if c) for r in head]
        sql = metric_sql(config, m, key) if m not in extra else query.sql
        mine = (*stats[3 + 4 * i: 7 + 4 * i], stats[3 + 4 * len(metrics) + i])
        out.append(_preview(config, exp, col, key, as_of, n, rate, mine, picked, sql))
    return out


def _stats_sql(col) -> tuple[str, str]:
    """A metric's aggregates over the per-unit rows u before capping (non-zero units, quantiles, max,
    the cap) and over the rows c after capping (the sums its moments need); no join between them."""
    y, x = col.y, col.x
    cap_sql = col.cap_sql(f"u.{y}", DUCKDB) or "NULL"
    xs = f"fsum(c.{x}), fsum(c.{x} * c.{x}), fsum(c.{y} * c.{x})" if x else "0, 0, 0"
    before = (f"count(*) FILTER (WHERE u.{y} <> 0), quantile_cont(u.{y}, [0.5, 0.9, 0.99]), "
              f"max(u.{y}), {cap_sql}")
    return before, f"[fsum(c.{y}), fsum(c.{y} * c.{y}), {xs}]"


def _preview(config: Config, exp, col, key: str, as_of: dt.datetime, n: int, rate: float | None,
             stats: tuple, head: list[tuple], sql: str) -> MetricPreview:
    """One metric's preview from its aggregates (`_stats_sql`) and first rows."""
    nonzero, qs, top, cap_value, sums = stats
    metric, m, x = col.key, config.metrics[col.key], col.x
    names = ["unit_id", "variant", "value"] + (["denominator" if m.type == "ratio" else "pre_value"] if x else [])
    sy, syy, sx, sxx, sxy = sums
    moments = (JointMoments(n, sy or 0.0, syy or 0.0, sx or 0.0, sxx or 0.0, sxy or 0.0) if x
               else Moments(n, sy or 0.0, syy or 0.0)) if n else None
    qs = qs or [None, None, None]
    return MetricPreview(
        metric, key, as_of.isoformat(sep=" ", timespec="minutes"), m.type, int(n), int(nonzero or 0),
        (1 - nonzero / n) if n else None, qs[0], qs[1], qs[2], top, cap_value, _cv(moments),
        rate, _mdes(m, moments, rate, len(exp.variants), exp.decision.alpha, exp.decision.power),
        [dict(zip(names, r)) for r in head], sql)


def _units_per_day(n: int, first, last, as_of: dt.datetime) -> float | None:
    if not n or first is None:
        return None
    days = max((min(as_of, max(last, first)) - first).total_seconds() / 86400, 1.0)
    return n / days


def _cv(m) -> float | None:
    if m is None or m.n < 2:
        return None
    y = m.y if isinstance(m, JointMoments) else m  # a ratio's numerator
    return math.sqrt(max(y.var, 0)) / abs(y.mean) if y.mean else None


def _mdes(metric, moments, rate: float | None, arms: int, alpha: float, power: float) -> dict[str, float | None]:
    from .analysis import compute_effect

    out: dict[str, float | None] = {}
    for days in HORIZONS:
        if moments is None or not rate or moments.n < 2:
            out[str(days)] = None
            continue
        per_arm = rate * days / arms
        scaled = _scaled(moments, per_arm / moments.n)
        effect = compute_effect(metric, scaled, scaled, alpha)
        mde = power_analysis(effect, scaled.n, scaled.n, alpha, power).mde_rel
        out[str(days)] = mde if math.isfinite(mde) else None
    return out


def _scaled(m, factor: float):
    n = max(int(round(m.n * factor)), 2)
    f = n / m.n
    if isinstance(m, JointMoments):
        return JointMoments(n, m.sum_y * f, m.sum_sq_y * f, m.sum_x * f, m.sum_sq_x * f, m.sum_xy * f)
    return Moments(n, m.sum * f, m.sum_sq * f)


def previews_frame(con: duckdb.DuckDBPyConnection, config: Config, as_of: dt.datetime):
    """One row per metric used by an experiment: the preview as JSON, or why it could not be made
    (published into the report snapshot for the Metrics catalog page; never computed on page load)."""
    import json

    import pandas as pd

    from .datacheck import explain_engine_error

    first_user = {}
    for metric in config.metrics:
        users = [k for k, e in config.experiments.items() if metric in e.roles()]
        if users:
            first_user[metric] = users[0]
    done = {}
    for key in dict.fromkeys(first_user.values()):   # one query for all the metrics an experiment previews
        metrics = [m for m, k in first_user.items() if k == key]
        try:
            done |= {p.metric: p for p in previews(con, config, key, metrics, as_of)}
        except (duckdb.Error, ValueError):
            pass                                      # one at a time below: each metric gets its own error
    rows = []
    for metric, key in first_user.items():
        try:
            result = done[metric] if metric in done else preview(con, config, metric, key, as_of)
            rows.append({"metric": metric, "experiment": key, "preview": json.dumps(result.as_dict(), default=str),
                         "error": None})
        except (duckdb.Error, ValueError) as exc:
            error = explain_engine_error(exc, f"metrics.{metric}", {}) if isinstance(exc, duckdb.Error) else str(exc)
            rows.append({"metric": metric, "experiment": key, "preview": None, "error": error})
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS).astype(object)


PREVIEW_COLUMNS = ["metric", "experiment", "preview", "error"]


def empty_previews():
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype="object") for c in PREVIEW_COLUMNS})
