"""What one analysis pass computes once for all its experiments (`analysis.analyze`).

Within `sharing_pass(con, config, keys, as_of)` the checks that would scan the whole `exposures`
table once per experiment (O(experiments²) for a pass) read what the pass grouped once:
  * `assignments`: every running experiment's single-variant units with their variant, numbered
    (the interaction checks' other experiments, `design_checks`), read from the per-unit states
    the pass put in place (O(units) each) and grouped from the exposures for the others;
  * `exposure_counts`: per experiment and variant, the exposures since an analysed experiment's
    first exposure (`quality.assignment_checks`), from one scan bucketed by the experiments' first
    exposures.
Each is built on first use, for the pass's connection and analysis time only; anything else (another
engine, another time) returns None and the caller runs its own query.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from .metrics import literal, timestamp_literal

EPOCH = dt.datetime(1, 1, 1)     # `since` of an experiment without exposures: all time


def others_sql(others: list[str], as_of: dt.datetime, d: Any) -> str:
    """Units of these experiments with one variant each (their first exposure's variant)."""
    names = ", ".join(literal(o) for o in others)
    return (f"SELECT experiment AS other, unit_id, {d.arg_min('variant', 'exposed_at')} AS other_variant FROM exposures "
            f"WHERE experiment IN ({names}) AND exposed_at <= {timestamp_literal(as_of)} "
            "GROUP BY experiment, unit_id HAVING count(DISTINCT variant) = 1")


@dataclass(frozen=True)
class Assignments:
    """The pass's assignments: `table` (h, oid, vid) — unit number, experiment, its variant — and
    `units` (unit_id, h); `others[oid]` and `variants[vid]` name them."""

    table: str
    units: str
    others: tuple[str, ...]
    variants: tuple[str | None, ...]


def position_case(column: str, values: list) -> str:
    """The position of `column`'s value in `values` (NULL stays NULL)."""
    return "CASE " + " ".join(f"WHEN {column} = {literal(v)} THEN {i}" for i, v in enumerate(values) if v is not None) \
        + " END"


class sharing_pass:
    """The block is one analysis pass of `keys` on `con` at `as_of` (see the module docstring)."""

    def __init__(self, con: Any, config: Any, keys: list[str], as_of: dt.datetime):
        self.con, self.keys, self.as_of = con, list(keys), as_of
        self.table = f"__abp_assign_{uuid.uuid4().hex[:8]}"
        self.running = [o for o, e in config.experiments.items() if e.status == "running"]
        self.made: Assignments | None = None
        self.counts: Any = None

    def _answers(self, engine: Any, as_of: dt.datetime) -> bool:
        return getattr(engine, "con", None) is self.con and as_of == self.as_of

    def assignments(self, engine: Any, others: list[str], as_of: dt.datetime) -> Assignments | None:
        """The pass's assignments (`others_sql` of every running experiment, numbered), if they cover
        these experiments."""
        if not self._answers(engine, as_of) or not set(others) <= set(self.running):
            return None
        if self.made is None:
            self.made = self._assign(engine)
        return self.made

    def _assign(self, engine: Any) -> Assignments:
        """Units numbered h, experiments oid and variants vid: the checks group and join on integers."""
        t, con = self.table, self.con
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t}_a AS {self._assignments_sql(engine)}")
        variants = [r[0] for r in con.execute(f"SELECT DISTINCT other_variant FROM {t}_a").fetchall()]
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_u AS SELECT unit_id, CAST(row_number() OVER () AS INTEGER) AS h
                        FROM (SELECT DISTINCT unit_id FROM {t}_a)""")
        oid, vid = position_case("other", self.running), position_case("other_variant", variants)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {t} AS SELECT m.h, CAST({oid} AS INTEGER) AS oid,
            CAST({vid} AS INTEGER) AS vid FROM {t}_a a JOIN {t}_u m USING (unit_id)""")
        con.execute(f"DROP TABLE {t}_a")
        return Assignments(t, f"{t}_u", tuple(self.running), tuple(variants))

    def _assignments_sql(self, engine: Any) -> str:
        """`others_sql` of the running experiments: read from the per-unit state where the pass put one
        in place (its rows are the units' first exposures; `multi`: more than one variant), else
        grouped from the exposures."""
        from .sources import active

        states = {o: s.table for o in self.running if (s := active(o, self.as_of)) is not None}
        parts = [f"SELECT {literal(o)} AS other, unit_id, variant AS other_variant FROM {table} WHERE NOT multi"
                 for o, table in states.items()]
        if rest := [o for o in self.running if o not in states]:
            parts.append(others_sql(rest, self.as_of, engine.dialect))
        return " UNION ALL ".join(parts)

    def exposure_counts(self, engine: Any, key: str, as_of: dt.datetime) -> Any:
        """(experiment, variant, n): the exposures up to `as_of` since `key`'s first exposure, for a key
        of the pass — the rows `quality.assignment_checks` groups."""
        if not self._answers(engine, as_of) or key not in self.keys:
            return None
        if self.counts is None:
            self.counts = self._bucketed(engine)
        since, frame = self.counts
        rows = frame[frame["b"] >= since[key]]
        return rows.groupby(["experiment", "variant"], as_index=False, dropna=False)["n"].sum()

    def _bucketed(self, engine: Any) -> tuple[dict[str, int], Any]:
        """One scan: exposure counts per experiment, variant and bucket b, where bucket b starts at the
        b-th distinct first exposure of the pass's experiments."""
        until = timestamp_literal(self.as_of)
        firsts = dict(self.con.execute(
            f"SELECT experiment, min(exposed_at) FROM exposures WHERE experiment IN "
            f"({', '.join(literal(k) for k in self.keys)}) AND exposed_at <= {until} GROUP BY 1").fetchall())
        starts = sorted({firsts.get(k) or EPOCH for k in self.keys})
        bucket = " ".join(f"WHEN exposed_at >= {timestamp_literal(t)} THEN {b}"
                          for b, t in reversed(list(enumerate(starts))))
        frame = engine.frame(f"""SELECT experiment, variant, CASE {bucket} END AS b, count(*) AS n FROM exposures
            WHERE exposed_at <= {until} AND exposed_at >= {timestamp_literal(starts[0])} GROUP BY ALL""")
        return {k: starts.index(firsts.get(k) or EPOCH) for k in self.keys}, frame

    def __enter__(self) -> "sharing_pass":
        self._token = _PASS.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _PASS.reset(self._token)
        if self.made is not None:
            self.con.execute(f"DROP TABLE IF EXISTS {self.made.table}")
            self.con.execute(f"DROP TABLE IF EXISTS {self.made.units}")


_PASS: contextvars.ContextVar[sharing_pass | None] = contextvars.ContextVar("abproxy_sharing", default=None)


def current() -> sharing_pass | None:
    """The pass in progress, if any."""
    return _PASS.get()
