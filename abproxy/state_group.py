"""Building the per-unit states of several experiments in one pass (`abproxy.state`).

Experiments that keep the same aggregates (the same metric windows) share the join of the events:
it runs once over the distinct (unit, first exposure) pairs of all of them, and each state takes
its units' rows from it. A unit whose first exposure differs between experiments has one pair per
time; the pairs are joined in layers (a unit at most once per layer), so each layer is grouped by
unit exactly as one experiment's build is. Experiments with the same units and first exposures
and the same data-quality scope get the same profile: it is built once and copied.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from .state_plan import Plan, aggregates_sql, exposed_sql, precomputed_rows_sql
from .state_profile import build_profile
from .warehouse import transaction


def grouped(plans: list[Plan]) -> list[list[Plan]]:
    """Plans by their aggregates (configuration order kept)."""
    by: dict[tuple[str, ...], list[Plan]] = {}
    for plan in plans:
        by.setdefault(tuple(a.key for a in plan.aggs), []).append(plan)
    return list(by.values())


def build_group(con, plans: list[Plan], as_of: dt.datetime, repeats: bool, save) -> None:
    """(Re)build the states of `plans` (same aggregates) in one transaction; `save(plan)` records each."""
    with transaction(con):
        for i, plan in enumerate(plans):
            con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_gx{i} AS {exposed_sql(plan, as_of)}")
        _shared_aggregates(con, plans, as_of)
        for i, plan in enumerate(plans):
            con.execute(f"CREATE OR REPLACE TABLE {plan.table} AS "
                        f"{precomputed_rows_sql(plan, f'__abp_gx{i}', '__abp_ga')}")
        built: list[int] = []
        for i, plan in enumerate(plans):
            same = next((j for j in built if _same_profile(con, plans[j], plan, j, i, as_of)), None)
            if same is None:
                build_profile(con, plan, as_of, repeats)
                built.append(i)
            else:
                for src, dst in ((plans[same].profile, plan.profile), (plans[same].ages, plan.ages)):
                    con.execute(f"CREATE OR REPLACE TABLE {dst} AS SELECT * FROM {src}")
            save(plan)
        for i in range(len(plans)):
            con.execute(f"DROP TABLE __abp_gx{i}")
        con.execute("DROP TABLE __abp_ga")


def _shared_aggregates(con, plans: list[Plan], as_of: dt.datetime) -> None:
    """`__abp_ga`: (exposed_at, unit_id, aggregates) for every distinct (unit, first exposure) of the plans."""
    pairs = " UNION ".join(f"SELECT unit_id, exposed_at FROM __abp_gx{i}" for i in range(len(plans)))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_gk AS SELECT unit_id, exposed_at,
                        row_number() OVER (PARTITION BY unit_id ORDER BY exposed_at) AS layer FROM ({pairs})""")
    layers = con.execute("SELECT coalesce(max(layer), 0) FROM __abp_gk").fetchone()[0]
    for layer in range(1, max(layers, 1) + 1):
        con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_gl AS SELECT unit_id, exposed_at FROM __abp_gk "
                    f"WHERE layer = {layer}")
        into = "CREATE OR REPLACE TEMP TABLE __abp_ga AS" if layer == 1 else "INSERT INTO __abp_ga"
        con.execute(f"""{into} SELECT l.exposed_at, a.* FROM __abp_gl l
                        JOIN ({aggregates_sql(plans[0], '__abp_gl', 'events', as_of)}) a USING (unit_id)""")
    con.execute("DROP TABLE __abp_gl")
    con.execute("DROP TABLE __abp_gk")


def _same_profile(con, a: Plan, b: Plan, i: int, j: int, as_of: dt.datetime) -> bool:
    """Whether b's data-quality profile is a's: the same scope and the same (unit, first exposure)s."""
    if not (a.profile and b.profile) or a.late_hours != b.late_hours:
        return False
    if dataclasses.replace(a.scope(as_of), key=b.key) != b.scope(as_of):
        return False
    return con.execute(f"""SELECT count(*) FROM __abp_gx{i} x FULL JOIN __abp_gx{j} y
                           ON x.unit_id = y.unit_id AND x.exposed_at = y.exposed_at
                           WHERE x.unit_id IS NULL OR y.unit_id IS NULL""").fetchone()[0] == 0
