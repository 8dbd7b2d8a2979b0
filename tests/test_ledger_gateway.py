"""The ledger gateway (README "Layout"): only `abproxy/ledger/` holds SQL that names a ledger table, and
"the latest run" has one definition that the CLI, the report and the gate share."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from abproxy import ledger

PACKAGE = Path(__file__).resolve().parents[1] / "abproxy"
GATEWAY = PACKAGE / "ledger"
# a ledger table after an SQL keyword (upper case: SQL as this code base writes it, not English prose)
SQL = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|DESCRIBE)\s+(?:" + "|".join(ledger.LEDGER_TABLES) + r")\b")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, and the literal parts of f-strings joined (so 'FROM {x}' pieces count)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else " {} "
                                             for v in node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def offenders() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if GATEWAY in path.parents:
            continue
        for line, text in _strings(ast.parse(path.read_text(), str(path))):
            if SQL.search(text):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {SQL.search(text).group(0)}")
    return found


def test_only_the_gateway_names_ledger_tables_in_sql():
    assert offenders() == [], "SQL on a ledger table outside abproxy/ledger/ (add a ledger function):\n" + \
        "\n".join(offenders())


def test_the_check_sees_sql_in_strings_and_f_strings():
    tree = ast.parse('a = "SELECT * FROM runs"\nb = f"SELECT {c} FROM results WHERE x"\n'
                     'd = "built from health checks"\n')
    assert {line for line, t in _strings(tree) if SQL.search(t)} == {1, 2}


def test_the_gateway_itself_is_seen():
    inside = [p for p in GATEWAY.rglob("*.py") if any(SQL.search(t) for _, t in _strings(ast.parse(p.read_text())))]
    assert {p.name for p in inside} >= {"write.py", "reads.py", "frames.py"}


def test_one_latest_run_everywhere():
    assert ledger.LATEST_FIRST == "as_of DESC, started_at DESC, run_id DESC"
    assert ledger.OLDEST_FIRST == "as_of, started_at, run_id"
    assert ledger.latest_first("r") == "r.as_of DESC, r.started_at DESC, r.run_id DESC"
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py") if GATEWAY not in p.parents}
    spelled = [str(p) for p, text in sources.items() if re.search(r"as_of DESC|as_of, started_at", text)]
    assert spelled == [], f"an own 'latest run' order outside the gateway: {spelled}"


def test_one_set_of_run_columns(con):
    columns = [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    assert list(ledger.RUN_COLUMNS) == columns
    assert "definitions" not in ledger.RUN_BRIEF.split(", ")
    assert not any(re.search(r"\bRUN_COLUMNS\s*=", p.read_text()) for p in PACKAGE.rglob("*.py")
                   if GATEWAY not in p.parents)
