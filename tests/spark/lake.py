"""The data both Spark test files read: a simulated workspace ingested into DuckDB, and the warehouse's
own `exposures` and `events` written to Parquet (the "lake"), so DuckDB and Spark see the very same rows."""
from __future__ import annotations

from pathlib import Path

from abproxy.ingest import ingest
from abproxy.simulate import SimulationSpec, simulate
from abproxy.warehouse import connect


def simulated_lake(root: Path, spec: SimulationSpec):
    """Simulate `spec` into `root` and ingest it; write the lake under root/lake. Returns the open
    warehouse connection and the `source` setting that reads the lake."""
    simulate(root, spec, write_config=False)
    con = connect(root / "data" / "warehouse.duckdb")
    ingest(con, root / "inbox")
    source = {}
    for table in ("exposures", "events"):
        (root / "lake" / table).mkdir(parents=True)
        con.execute(f"COPY {table} TO '{root / 'lake' / table / 'part-0.parquet'}' (FORMAT parquet)")
        source[table] = str(root / "lake" / table)
    return con, source
