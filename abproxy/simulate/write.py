"""Writing a simulated workspace: Parquet inbox files and its abproxy.yaml."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from ..config import CONFIG_FILE
from .spec import DUPLICATE_SHARE, SimulationSpec, config_text, validate_spec
from .sql import events_sql, exposures_sql, lit, uniform, units_sql

_TWO_53 = 9007199254740992.0


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE MACRO unif(k, s) AS ((hash(xor(k, s)) >> 11)::DOUBLE + 0.5) / {_TWO_53!r}")
    return con


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    con.execute(f"COPY ({query}) TO {lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    tmp.replace(path)


def simulate(out: Path, spec: SimulationSpec, *, write_config: bool = True) -> Path:
    """Write a synthetic workspace: out/inbox/exposures/sim-exposures-NNN.parquet,
    out/inbox/events/sim-events-NNN.parquet (plus sim-events-redelivery.parquet with
    `Injections.duplicate_batch`), out/abproxy.yaml (if `write_config`) and an empty out/data/.
    Files from an earlier simulation (names starting with 'sim-') are replaced; other inbox
    files are left alone. Returns `out`."""
    validate_spec(spec)
    out = Path(out)
    exposures_dir, events_dir = out / "inbox" / "exposures", out / "inbox" / "events"
    for folder in (exposures_dir, events_dir, out / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (exposures_dir, events_dir):
        for old in folder.glob("sim-*"):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    con = _connect()
    try:
        for i, e in enumerate(spec.experiments):
            verb = "CREATE TABLE units AS" if i == 0 else "INSERT INTO units"
            con.execute(f"{verb} {units_sql(spec, e)}")
        for part in range(spec.files_per_kind):
            _copy(con, exposures_sql(part, spec), exposures_dir / f"sim-exposures-{part:03d}.parquet")
            _copy(con, events_sql(spec, f"part = {part}"), events_dir / f"sim-events-{part:03d}.parquet")
        if spec.injections.duplicate_batch:
            _copy(con, events_sql(spec, "TRUE", f"{uniform('rk', 'duplicate')} < {DUPLICATE_SHARE}"),
                  events_dir / "sim-events-redelivery.parquet")
    finally:
        con.close()
    if write_config:
        (out / CONFIG_FILE).write_text(config_text(spec))
    return out
