"""The package's imports point one way (read from the source with `ast`, so lazy imports inside
functions and `TYPE_CHECKING` imports count too).

Rules (README "Layout"): no import cycles between modules; `stats/` and `verdict.py` import nothing of
the project outside `stats/`; `report/` imports no writer (ingest, jobs, analysis, scheduler); the
ledger and the warehouse import no analysis (analysis, effects, robustness, health, quality, metrics);
`records` and `errors` sit at the bottom.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "abproxy"
WRITERS = {"abproxy.ingest", "abproxy.jobs", "abproxy.analysis", "abproxy.scheduler", "abproxy.service"}
ANALYSIS = {"abproxy.analysis", "abproxy.effects", "abproxy.robustness", "abproxy.health", "abproxy.quality",
            "abproxy.quality_scope", "abproxy.profile_checks",
            "abproxy.metrics"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    # `from . import health` names a module; `from .config import Config` names the module itself
    return [f"{base}.{a.name}" for a in node.names] + [base]


def imports() -> dict[str, set[str]]:
    """module → the project modules it imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                found |= set(_resolve(name, node, path.name == "__init__.py"))
        graph[name] = {m for m in found if m in files and m != name}
    return graph


GRAPH = imports()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _package_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing `abproxy.report.x` runs `abproxy/report/__init__.py`: a package's own imports count
    only for modules outside the package (inside it, Python handles the parent first)."""
    return graph


def test_the_graph_sees_the_package():
    assert {"abproxy.cli", "abproxy.stats.effects", "abproxy.report.data", "abproxy.records"} <= set(GRAPH)
    assert "abproxy.config" in GRAPH["abproxy.workspace"]


def test_no_import_cycles():
    graph = {m: {d for d in deps if not (m.startswith(d + ".") )} for m, deps in GRAPH.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("abproxy.stats") or m == "abproxy.verdict"))
def test_statistics_and_verdict_import_only_stats(module):
    outside = {d for d in GRAPH[module] if not d.startswith("abproxy.stats")}
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("abproxy.report")))
def test_report_imports_no_writer(module):
    writers = {d for d in GRAPH[module] if any(d == w or d.startswith(w + ".") for w in WRITERS)}  # ingest/ is a package
    assert not writers, f"{module} imports {sorted(writers)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.split(".")[:2] == ["abproxy", "ledger"])
                         + ["abproxy.warehouse"])
def test_ledger_and_warehouse_import_no_analysis(module):
    assert not GRAPH[module] & ANALYSIS, f"{module} imports {sorted(GRAPH[module] & ANALYSIS)}"


@pytest.mark.parametrize("module", ["abproxy.errors", "abproxy.records"])
def test_records_and_errors_sit_at_the_bottom(module):
    allowed = {"abproxy.stats", "abproxy.verdict"}
    assert all(any(d == a or d.startswith(a + ".") for a in allowed) for d in GRAPH[module]), GRAPH[module]


# ----------------------------------------------------------------------------- start-up (issue 15)
# What a fresh process loads before a command starts working, checked in `sys.modules` of a subprocess
# (the source graph above cannot see what third-party packages import).

ANALYSIS_STACK = ("pandas", "numpy", "scipy", "statsmodels", "pyarrow", "streamlit", "altair", "pyspark",
                  "mlflow", "formulaic", "patsy")
NOT_AT_START = ANALYSIS_STACK + ("apscheduler", "urllib.request", "abproxy.ingest", "abproxy.analysis",
                                 "abproxy.state", "abproxy.notify")


def _loaded(code: str, *args: str) -> set[str]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))", *args],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_help_and_the_parser_load_no_config_library_and_no_duckdb():
    loaded = _loaded("import abproxy.cli as c; c.parser().format_help()")
    heavy = loaded & {"pydantic", "yaml", "duckdb", "abproxy.config", *NOT_AT_START}
    assert not heavy, sorted(heavy)


def test_analyze_and_run_start_without_the_analysis_stack(tmp_path):
    """`abproxy analyze`/`run` up to the moment the job starts: the CLI, the job module and the
    validated workspace (abproxy.yaml with a schedule) — DuckDB loads when the warehouse opens, the
    analysis stack when a pass analyses."""
    from abproxy.workspace import init_workspace

    init_workspace(tmp_path / "ws")
    loaded = _loaded("import sys, abproxy.cli, abproxy.jobs\nfrom abproxy.workspace import Workspace\n"
                     "Workspace.open(sys.argv[1])", str(tmp_path / "ws"))
    assert {"pydantic", "abproxy.jobs", "abproxy.config"} <= loaded
    heavy = {m for m in loaded if m.split(".")[0] in ANALYSIS_STACK + ("duckdb", "_duckdb") or m in NOT_AT_START}
    assert not heavy, sorted(heavy)


def test_the_statistics_load_their_libraries_where_they_are_used():
    """`abproxy.stats` and the metric types import no scipy/statsmodels/pandas; an effect, a power
    analysis and the SRM test (what `validate --data` runs) need only scipy.special, not scipy.stats or
    statsmodels (which brings pandas and formulaic)."""
    modules = sorted(m for m in GRAPH if m.startswith("abproxy.stats")) + ["abproxy.metric_types"]
    loaded = _loaded(f"import {', '.join(modules)}")
    heavy = {m for m in loaded if m.split(".")[0] in ANALYSIS_STACK and m.split(".")[0] != "numpy"}
    assert not heavy, sorted(heavy)
    loaded = _loaded("from abproxy.stats import Moments, mean_effect, power_analysis, srm_test\n"
                     "e = mean_effect(Moments(100, 50.0, 60.0), Moments(100, 55.0, 70.0))\n"
                     "power_analysis(e, 100, 100)\nsrm_test({'c': 510, 't': 490}, {'c': 1, 't': 1})")
    assert "scipy.special" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in ("statsmodels", "pandas", "formulaic", "pyarrow")
             or m == "scipy.stats" or m.startswith("scipy.stats.")}
    assert not heavy, sorted(heavy)
