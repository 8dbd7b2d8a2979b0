"""Metric SQL from the configuration, checked with DuckDB's own parser before it reaches a query.

A `where` predicate must be one expression over the event's columns: it is parsed as the WHERE
clause of `SELECT 1 FROM events WHERE …` both as written and inside the brackets the builder puts
around it, and the two parses must give the same expression — so no quoting trick (`$$…$$`, a
comment, an unbalanced bracket) can close the brackets and escape the event and window conditions.
A predicate may not contain a subquery (which could read any table or table function) or a
comment (DuckDB's tokenizer finds them, inside or outside quotes as the parser would).

A raw `sql` metric must be a single SELECT (or set operation of SELECTs) that stays a single query
inside `FROM (…)`; it may read warehouse tables and `range`/`generate_series`/`unnest`, no other
table function (`read_csv`, `read_text`, `query`, …) and no file or URL in FROM.

These checks are the first wall; the second is the sealed connection the analysis runs on
(`warehouse.seal`: no file, network or extension access, configuration locked), so even SQL that passed here can neither write nor reach outside the warehouse.
"""
from __future__ import annotations

import json
import re
import threading
from typing import Any, Iterator

import duckdb

from .errors import UnsafeSQL

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_parser: duckdb.DuckDBPyConnection | None = None
_lock = threading.Lock()


def _parse(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of `sql` (json_serialize_sql on a private in-memory connection)."""
    global _parser
    with _lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:")
        text = _parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    return json.loads(text)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a parse tree, depth first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _shape(tree: Any) -> Any:
    """The tree without source positions, for comparing two parses of the same expression."""
    if isinstance(tree, dict):
        return {k: _shape(v) for k, v in tree.items() if not k.startswith("query_location")}
    if isinstance(tree, list):
        return [_shape(v) for v in tree]
    return tree


def _single_select(sql: str) -> dict[str, Any] | None:
    parsed = _parse(sql)
    if parsed.get("error") or len(parsed.get("statements", [])) != 1:
        return None
    return parsed["statements"][0]["node"]


def _where_of(sql: str) -> dict[str, Any] | None:
    """The WHERE expression of `SELECT 1 FROM events WHERE …`, or None unless that is all there is."""
    node = _single_select(sql)
    if node is None or node.get("type") != "SELECT_NODE" or node.get("where_clause") is None:
        return None
    rest = (node.get("modifiers"), node.get("group_expressions"), node.get("group_sets"),
            node.get("having"), node.get("qualify"), node.get("sample"), node.get("cte_map", {}).get("map"))
    if any(rest) or node.get("from_table", {}).get("table_name") != "events":
        return None
    return node["where_clause"]


def wrap_predicate(where: str) -> str:
    """How a predicate is embedded: in brackets, the closing one on its own line."""
    return f"({where}\n)"


def check_predicate(where: str, metric: str) -> str:
    """The predicate wrapped for embedding; raises UnsafeSQL unless it is one plain expression."""
    if any(kind == duckdb.token_type.comment for _, kind in duckdb.tokenize(where)):
        raise UnsafeSQL(f"metric '{metric}': 'where' must be one SQL condition without comments "
                        "(-- or /* */); put explanations in the metric's description")
    plain = _where_of(f"SELECT 1 FROM events WHERE {where}")
    wrapped = _where_of(f"SELECT 1 FROM events WHERE {wrap_predicate(where)}")
    if plain is None or wrapped is None or _shape(plain) != _shape(wrapped):
        raise UnsafeSQL(f"metric '{metric}': 'where' must be one SQL condition on event columns, e.g. "
                        "\"category = 'books' AND value > 10\" (DuckDB could not read it as a single "
                        "expression)")
    for node in _nodes(plain):
        if node.get("class") == "SUBQUERY":
            raise UnsafeSQL(f"metric '{metric}': 'where' may not contain a subquery (SELECT …); "
                            "use a raw 'sql' metric to combine tables")
    return wrap_predicate(where)


def wrap_query(sql: str) -> str:
    """How a raw metric query is embedded: `FROM (…)`, the closing bracket on its own line."""
    return f"({sql}\n)"


def check_query(sql: str, metric: str) -> str:
    """The raw metric query wrapped for embedding; raises UnsafeSQL unless it is one SELECT that
    reads only warehouse tables and the allowed table functions."""
    node = _single_select(sql)
    outer = _single_select(f"SELECT * FROM {wrap_query(sql)} AS raw")
    if node is None or outer is None or node.get("type") not in ("SELECT_NODE", "SET_OPERATION_NODE"):
        raise UnsafeSQL(f"metric '{metric}': 'sql' must be a single SELECT statement returning unit_id and "
                        "value (DuckDB could not read it as one)")
    for item in _nodes(node):
        kind = item.get("type")
        if kind == "TABLE_FUNCTION":
            name = str(item.get("function", {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise UnsafeSQL(f"metric '{metric}': 'sql' may not call the table function {name}() "
                                f"(allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}); metric SQL "
                                "reads warehouse tables only")
        elif kind == "BASE_TABLE" and not TABLE_NAME.fullmatch(str(item.get("table_name", ""))):
            raise UnsafeSQL(f"metric '{metric}': 'sql' may only read warehouse tables by name, not "
                            f"{item.get('table_name')!r} (files and URLs cannot be read)")
    return wrap_query(sql)
