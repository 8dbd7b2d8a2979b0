"""Fixtures shared by the whole suite.

* `con`: a fresh, migrated warehouse per test (sqlite-utils' fresh database per test);
* `inbox`: an empty inbox beside it, for the ingest tests;
* `make_run`: a small, hand-made `AnalysisRun` (units, results, series), for checks that need a run
  but not a simulated workspace;
* `docs_out`: where the browser tests save the README's screenshots and the review example: a temp
  folder, so a test run leaves the checkout clean, or docs/ itself under `make docs`;
* `report_ws` (from `report_fixtures`, a plugin module): the simulated, analysed workspace shared
  read-only by the report, export and browser tests.

The package is imported as installed (`make install` installs it editable); no test edits `sys.path`.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Callable

import pytest

pytest_plugins = ("report_fixtures",)


@pytest.fixture(scope="session")
def docs_out(tmp_path_factory) -> Path:
    """docs/ when ABPROXY_WRITE_DOCS=1 (`make docs` refreshes the README's images), else a temp folder."""
    if os.environ.get("ABPROXY_WRITE_DOCS") == "1":
        return Path(__file__).resolve().parent.parent / "docs"
    return tmp_path_factory.mktemp("docs")


@pytest.fixture
def con(tmp_path: Path):
    from abproxy.warehouse import connect

    connection = connect(tmp_path / "data" / "warehouse.duckdb")
    yield connection
    connection.close()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """An empty inbox (exposures/ and events/) to write files into."""
    for kind in ("exposures", "events"):
        (tmp_path / "inbox" / kind).mkdir(parents=True)
    return tmp_path / "inbox"


@pytest.fixture
def make_run() -> Callable[..., Any]:
    """`make_run(units={'control': n, 'treatment': n}, results=[...], **fields)` → an `AnalysisRun`."""
    from abproxy.records import AnalysisRun

    def build(units: dict[str, int] | None = None, **fields: Any) -> AnalysisRun:
        as_of = fields.pop("as_of", dt.datetime(2026, 1, 20))
        run = AnalysisRun("run000000001", fields.pop("experiment", "exp"), as_of, as_of, **fields)
        run.units = dict(units or {"control": 5000, "treatment": 5000})
        return run

    return build
