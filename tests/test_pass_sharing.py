"""What one pass of several experiments computes once for all of them (`abproxy.shared`) equals what
each experiment would compute alone.

The interaction checks' assignments are read from the per-unit states the pass put in place (their
rows are the units' first exposures, `multi` the units seen in two variants) instead of grouping the
whole exposures table; after every batch of random files (units switching variant, first exposures
moving earlier, late rows), the assignments equal `others_sql` over the exposures, row for row.
"""
from __future__ import annotations

import pytest
from test_many_experiments import config, deliver
from test_state import START, STEP, World

from abproxy import state
from abproxy.analysis import analyze
from abproxy.engines import DuckDBEngine
from abproxy.shared import others_sql, sharing_pass
from abproxy.sources import reading
from abproxy.warehouse import connect


def _rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT other, unit_id, other_variant FROM ({sql})").fetchall())


@pytest.mark.slow
def test_assignments_read_from_the_states_equal_the_grouped_exposures(tmp_path):
    world, cfg = World(tmp_path / "inbox", seed=11), config()
    keys = [k for k, e in cfg.experiments.items() if e.status == "running"]
    con = connect(tmp_path / "w.duckdb")
    try:
        for k in range(5):
            now = START + k * STEP
            deliver(world, con, now)
            analyze(con, cfg, list(cfg.experiments), now, record=False, full=(k == 3))
            engine = DuckDBEngine(con)
            expected = _rows(con, others_sql(keys, now, engine.dialect))
            states = state.current_sources(con, cfg, keys, now)
            assert set(states) == set(keys)
            for held in (states, {keys[0]: states[keys[0]]}, {}):      # all, some, none from a state
                with reading(held), sharing_pass(con, cfg, keys, now) as shared:
                    assert _rows(con, shared._assignments_sql(engine)) == expected, (k, sorted(held))
            assert any(v for _, _, v in expected)
        assert con.execute("SELECT count(*) FROM exposures e1 JOIN exposures e2 USING (experiment, unit_id) "
                           "WHERE e1.variant < e2.variant").fetchone()[0], "no unit switched variant"
    finally:
        con.close()
