"""The definitions checked against the warehouse (`abproxy validate --data`, and every run).

Configuration validation proves that abproxy.yaml is well formed; these checks prove that it
matches the data: every metric's event has been loaded (with a did-you-mean), every column and
segment exists, every `where` compiles and matches some events in the metric's last window, a raw
SQL metric returns the columns it must, and the allocation matches what the exposures show.
Each problem carries its key path in abproxy.yaml and says what to do. The queries are small
aggregates over `events` and `exposures`; nothing is read into Python row by row.
"""
from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass

import duckdb

from .config import Config, EventSource, Metric
from .metrics import CORE_EXPOSURE, MetricSQLError, interval_days, literal, predicate, quote_ident
from .stats import srm_test

CORE_EVENT = {"unit_id", "event", "occurred_at", "event_id", "file_id", "loaded_at"}
BROKEN = ("metric_column", "metric_where", "metric_sql", "segment_column")  # the metric SQL cannot run


@dataclass(frozen=True)
class Problem:
    """One mismatch between abproxy.yaml and the warehouse."""

    check: str          # metric_event | metric_where | metric_column | metric_sql | segment_column | allocation
    status: str         # fail | warn
    key: str            # key path in abproxy.yaml
    message: str
    metric: str | None = None

    def line(self) -> str:
        return f"{self.key}: {self.message}"


# ------------------------------------------------------------------ what the warehouse holds


@dataclass(frozen=True)
class Warehouse:
    events: dict[str, int]                  # event name → rows
    event_columns: dict[str, str]           # column → type
    exposure_columns: dict[str, str]
    exposures: int
    failed_event_files: tuple[str, ...] = ()  # events files whose latest attempt failed

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> "Warehouse":
        events = _event_counts(con)
        failed = [path for (path,) in con.execute(
            "SELECT path FROM files WHERE kind = 'events' GROUP BY path "
            "HAVING arg_max(status, file_id) = 'failed' ORDER BY path").fetchall()]
        return cls(events, _columns(con, "events"), _columns(con, "exposures"),
                   con.execute("SELECT count(*) FROM exposures").fetchone()[0], tuple(failed))

    def follows(self) -> str:
        """What a missing event or column may follow from: events files that failed to load."""
        if not self.failed_event_files:
            return ""
        return (f" (this may follow from {_listed(self.failed_event_files, 3)}, which failed to load: "
                "fix that first, see the ingest summary)")


def _event_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per event name: from the load profile (rows per file and event; the analysis brings it
    up to date before its checks) and the rows without a file, when together they account for every
    stored row; else (a stale profile, rows changed outside ingest) by grouping the events."""
    loose = "SELECT event, count(*) AS n FROM events WHERE file_id IS NULL GROUP BY 1"
    rows = con.execute(f"""SELECT event, CAST(sum(n) AS BIGINT) FROM (
        SELECT event, rows AS n FROM load_profile WHERE kind = 'events' UNION ALL {loose}) GROUP BY 1""").fetchall()
    if sum(n for _, n in rows) == con.execute("SELECT count(*) FROM events").fetchone()[0]:
        return {e: n for e, n in rows if n}
    return dict(con.execute("SELECT event, count(*) FROM events GROUP BY 1").fetchall())


def _columns(con, table: str) -> dict[str, str]:
    return {name: ctype for name, ctype, *_ in con.execute(f"DESCRIBE {table}").fetchall()}


def did_you_mean(name: str, known: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def _listed(names, limit: int = 12) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (" …" if len(names) > limit else "") if names else "none"


# ------------------------------------------------------------------ engine errors in plain words


def explain_engine_error(exc: Exception, where: str, known_columns: set[str] | dict) -> str:
    """A DuckDB error raised by user SQL, said as: the column / function / syntax at fault and the
    known columns; never the engine's echo of the generated query."""
    text = str(exc)
    column = re.search(r'Referenced column "([^"]+)" not found', text)
    if column:
        name = column.group(1)
        known = sorted(set(known_columns))
        return f"column '{name}' does not exist{did_you_mean(name, known)} (known columns: {_listed(known, 30)})"
    function = re.search(r"Scalar Function with name (\w+) does not exist", text)
    if function:
        return f"function {function.group(1)}() does not exist in DuckDB SQL"
    first = text.split("\n", 1)[0]
    first = re.sub(r"^(Binder|Parser|Conversion|Catalog) Error: ", "", first.split(": ", 1)[-1] if
                   first.startswith(("BinderException", "ParserException")) else first)
    return f"{first.strip()} (in {where})"


# ------------------------------------------------------------------ metrics


def _sources(key: str, metric: Metric) -> list[tuple[str, EventSource]]:
    if metric.sql is not None:
        return []
    if metric.type == "ratio":
        return [(f"metrics.{key}.numerator", metric.numerator), (f"metrics.{key}.denominator", metric.denominator)]
    return [(f"metrics.{key}", metric.source())]


def metric_problems(con: duckdb.DuckDBPyConnection, key: str, metric: Metric, as_of: dt.datetime,
                    wh: Warehouse, experiment: str | None = None) -> list[Problem]:
    if metric.sql is not None:
        return _raw_sql_problems(con, key, metric, as_of, experiment, wh)
    out = []
    for path, source in _sources(key, metric):
        out += _source_problems(con, key, path, source, metric, as_of, wh)
    return out


def _source_problems(con, key: str, path: str, source: EventSource, metric: Metric, as_of: dt.datetime,
                     wh: Warehouse) -> list[Problem]:
    reads_column = source.aggregate in ("sum", "max", "min", "avg")
    if reads_column and source.column not in wh.event_columns:
        return [Problem("metric_column", "fail", f"{path}.column",
                        f"metric '{key}': column '{source.column}' is not a column of the events"
                        f"{did_you_mean(source.column, wh.event_columns)} (known columns: "
                        f"{_listed(wh.event_columns, 30)}){wh.follows()}", key)]
    where = _where_problems(con, key, path, source, metric, as_of, wh)  # compiled even without events
    if any(p.status == "fail" for p in where):
        return where
    if source.event not in wh.events:
        if not wh.events:
            return [Problem("metric_event", "fail", f"{path}.event",
                            f"event '{source.event}' has never been loaded: no events at all yet; drop event "
                            f"files into inbox/events/ and run again{wh.follows()}", key)]
        return [Problem("metric_event", "fail", f"{path}.event",
                        f"event '{source.event}' has never been loaded; known events: {_listed(wh.events)}"
                        f"{did_you_mean(source.event, wh.events)}{wh.follows()}", key)]
    return where


def _where_problems(con, key: str, path: str, source: EventSource, metric: Metric, as_of: dt.datetime,
                    wh: Warehouse) -> list[Problem]:
    if not source.where:
        return []
    try:
        cond = predicate(source.where, key)
    except MetricSQLError as exc:
        return [Problem("metric_where", "fail", f"{path}.where", str(exc), key)]
    window = interval_days(metric.window_days)
    base = (f"FROM events e, (SELECT max(occurred_at) AS last FROM events WHERE event = {literal(source.event)} "
            f"AND occurred_at <= $as_of) w WHERE e.event = {literal(source.event)} AND e.occurred_at <= w.last "
            f"AND e.occurred_at > w.last - {window}")
    try:
        total, matched = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {cond}) {base}",
                                     {"as_of": as_of}).fetchone()
    except duckdb.Error as exc:
        reason = explain_engine_error(exc, f"{path}.where", wh.event_columns)
        return [Problem("metric_where", "fail", f"{path}.where",
                        f"metric '{key}': 'where' {source.where!r} cannot run: {reason}{wh.follows()}", key)]
    if matched or not total:  # no events of the kind at all: the event check says so
        return []
    hint = _value_hint(con, source, base, as_of, wh)
    return [Problem("metric_where", "warn", f"{path}.where",
                    f"metric '{key}': 'where' {source.where!r} matches none of the {total:,} '{source.event}' "
                    f"events of its last {metric.window_days:g}-day window, so the metric is 0 for every unit"
                    f"{hint}", key)]


def _value_hint(con, source: EventSource, base: str, as_of: dt.datetime, wh: Warehouse) -> str:
    """The values the text columns named in the `where` take in the window (typo'd literals)."""
    named = [c for c in wh.event_columns if c not in CORE_EVENT - {"event"} and wh.event_columns[c] == "VARCHAR"
             and re.search(rf"\b{re.escape(c)}\b", source.where)]
    literals = re.findall(r"'((?:[^']|'')*)'", source.where)
    parts = []
    for column in named[:3]:
        values = [v for (v,) in con.execute(
            f"SELECT {quote_ident(column)} FROM (SELECT {quote_ident(column)}, count(*) AS n {base} "
            f"AND {quote_ident(column)} IS NOT NULL GROUP BY 1 ORDER BY n DESC LIMIT 20)",
            {"as_of": as_of}).fetchall()]
        guess = next((did_you_mean(lit, values) for lit in literals if did_you_mean(lit, values)), "")
        parts.append(f"{column} there is one of {_listed([repr(v) for v in values], 8)}{guess}")
    return ("; " + "; ".join(parts)) if parts else "; check the values it compares with"


def _raw_sql_problems(con, key: str, metric: Metric, as_of: dt.datetime, experiment: str | None,
                      wh: Warehouse) -> list[Problem]:
    from .metrics import MetricColumns, _raw_sql

    need = ["unit_id", "value"] + (["denominator"] if metric.type == "ratio" else [])
    try:
        sql = _raw_sql(MetricColumns(key, "r", metric), experiment or "", as_of)
        names = [row[0] for row in con.execute(f"DESCRIBE ({sql})").fetchall()]
    except MetricSQLError as exc:
        return [Problem("metric_sql", "fail", f"metrics.{key}.sql", str(exc), key)]
    except duckdb.Error as exc:
        known = set(wh.event_columns) | set(wh.exposure_columns)
        return [Problem("metric_sql", "fail", f"metrics.{key}.sql",
                        f"metric '{key}': the query cannot run: {explain_engine_error(exc, f'metrics.{key}.sql', known)}",
                        key)]
    missing = [c for c in need if c not in names]
    if missing:
        return [Problem("metric_sql", "fail", f"metrics.{key}.sql",
                        f"metric '{key}': the query must return the columns {', '.join(need)}; it returns "
                        f"{', '.join(names)} (missing {', '.join(missing)}): alias them, e.g. SELECT user AS unit_id", key)]
    return []


# ------------------------------------------------------------------ experiments


def experiment_problems(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                        wh: Warehouse, allocation: bool = True) -> list[Problem]:
    """Segments that are not exposure columns; with `allocation`, an allocation the exposures contradict."""
    exp = config.experiments[key]
    out = []
    attributes = set(wh.exposure_columns) - CORE_EXPOSURE
    if wh.exposures:
        for i, seg in enumerate(exp.segments):
            if seg not in wh.exposure_columns:
                out.append(Problem("segment_column", "fail", f"experiments.{key}.segments.{i}",
                                   f"segment '{seg}' is not a column of the exposures{did_you_mean(seg, attributes)}"
                                   f" (known attributes: {_listed(attributes)})"))
    if not allocation:
        return out
    counts = dict(con.execute("SELECT variant, count(DISTINCT unit_id) FROM exposures WHERE experiment = ? "
                              "AND exposed_at <= ? GROUP BY 1", [key, as_of]).fetchall())
    seen = {v: counts.get(v, 0) for v in exp.variants}
    if sum(seen.values()) >= 100:
        srm = srm_test(seen, exp.weights)
        if not srm.ok:
            observed = ", ".join(f"{v} {n / sum(seen.values()):.1%}" for v, n in seen.items())
            planned = ", ".join(f"{v} {w:.0%}" for v, w in exp.weights.items())
            out.append(Problem("allocation", "fail", f"experiments.{key}.allocation",
                               f"the exposures show {observed} of {sum(seen.values()):,} units, the allocation says "
                               f"{planned} (p = {srm.p_value:.2g}); fix the allocation or the assignment"))
    return out


def unknown_experiment_keys(con: duckdb.DuckDBPyConnection, config: Config, key: str) -> list[str]:
    """'3,000 exposures name 'checkout_v2', which is not configured — did you mean 'checkout-v2'?'"""
    rows = con.execute("SELECT experiment, count(*) AS n FROM exposures GROUP BY 1 ORDER BY n DESC").fetchall()
    out = []
    for name, n in rows:
        if name in config.experiments:
            continue
        if difflib.get_close_matches(name, [key], n=1, cutoff=0.6) or len(out) < 3:
            out.append(f"{n:,} exposures name '{name}', which is not configured{did_you_mean(name, list(config.experiments))}")
    return out


def rejected_exposures(con: duckdb.DuckDBPyConnection, limit: int = 3) -> list[str]:
    """The exposure files whose rows were rejected (or that were refused), with their main reason."""
    rows = con.execute("""
        SELECT f.path, f.status, r.reason, count(*) AS n, arg_min(r.raw, r.row_number) AS example
        FROM rejected_rows r JOIN files f USING (file_id) WHERE f.kind = 'exposures'
        GROUP BY ALL ORDER BY n DESC LIMIT ?""", [limit]).fetchall()
    out = [f"{path}: {n:,} rows rejected ({reason}){', the file was refused' if status == 'failed' else ''}"
           for path, status, reason, n, _ in rows]
    failed = con.execute("SELECT path, message FROM files WHERE kind = 'exposures' AND status = 'failed' "
                         "AND rows_rejected = 0 ORDER BY file_id DESC LIMIT ?", [limit]).fetchall()
    out += [message or f"{path} failed to load" for path, message in failed]
    return out


# ------------------------------------------------------------------ the whole workspace


def workspace_problems(con: duckdb.DuckDBPyConnection, config: Config, as_of: dt.datetime) -> list[Problem]:
    """Every problem of every metric and experiment (`abproxy validate --data`)."""
    wh = Warehouse.read(con)
    out = []
    for key, metric in config.metrics.items():
        users = [k for k, e in config.experiments.items() if key in e.roles()]
        out += metric_problems(con, key, metric, as_of, wh, users[0] if users else None)
    for key in config.experiments:
        out += experiment_problems(con, config, key, as_of, wh)
    return out


def experiment_checks(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                      wh: Warehouse | None = None, allocation: bool = True) -> list[Problem]:
    """The problems of one experiment and its metrics; a problem of a secondary metric only warns
    (`wh`: what the warehouse holds, read once for a pass of several experiments)."""
    wh = wh or Warehouse.read(con)
    exp = config.experiments[key]
    roles = exp.roles()
    out = []
    for metric in roles:
        for p in metric_problems(con, metric, config.metrics[metric], as_of, wh, key):
            soft = roles[metric] == "secondary" and p.check not in BROKEN
            out.append(Problem(p.check, "warn" if soft else p.status, p.key, p.message, metric))
    return out + experiment_problems(con, config, key, as_of, wh, allocation)
