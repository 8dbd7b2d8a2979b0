"""Property columns (unit attributes, event properties): the type of a new column, widening a
column when a later file's values do not fit it, and counting values stored as NULL."""
from __future__ import annotations

from .sql import BLANKS, LEADING_ZERO, NUMERIC_TYPES, PLAIN_NUMBER, base_type, q
from .validate import blank, check_table_width


def property_targets(con, kind: str, rel: str, source: str, extras: list[tuple[str, str]], max_columns: int,
                     text: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """Add the file's new property columns to the table and cast into the existing ones. Returns the
    targets (table column, expression on alias c) and the notes for the ledger message."""
    table_columns = {name.lower(): (name, ctype) for name, ctype in con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' "
        "AND table_name = ?", [kind]).fetchall()}
    check_table_width(rel, kind, extras, table_columns, max_columns)
    new_types = infer_new_types(con, source, extras, table_columns, text=text)
    targets, notes, casts = [], [], []  # targets: (table column, expression on alias c)
    for name, ctype in extras:
        target_name, target_type = _target_column(con, kind, source, name, ctype, table_columns, new_types, notes)
        if ctype == target_type:
            targets.append((target_name, f"c.{q(name)}"))
        else:
            targets.append((target_name, f"TRY_CAST(c.{q(name)} AS {target_type})"))
            if name.lower() in table_columns:  # a new column's type fits its values by construction
                casts.append((name, ctype, target_type))
    notes += cast_losses(con, source, casts)
    return targets, notes


def _target_column(con, kind: str, source: str, name: str, ctype: str, table_columns: dict[str, tuple[str, str]],
                   new_types: dict[str, str], notes: list[str]) -> tuple[str, str]:
    """The table column (name, type) that takes the file's column `name`: added when new, widened
    when this file's values do not all fit its type (both noted in `notes`)."""
    if name.lower() not in table_columns:
        target_type = new_types[name]
        con.execute(f"ALTER TABLE {kind} ADD COLUMN {q(name)} {target_type}")
        notes.append(f"new column {name} {target_type}")
        return name, target_type
    target_name, target_type = table_columns[name.lower()]
    if ctype != target_type:
        wider = widened(con, source, name, ctype, target_type)
        if wider != target_type:
            con.execute(f"ALTER TABLE {kind} ALTER COLUMN {q(target_name)} SET DATA TYPE {wider}")
            notes.append(f"column {target_name} widened from {target_type} to {wider}: this file's values "
                         f"({ctype}) do not all fit {target_type}; stored values were converted")
            target_type = wider
    return target_name, target_type


def infer_new_types(con, source: str, extras: list[tuple[str, str]],
                    table_columns: dict[str, tuple[str, str]], text: bool) -> dict[str, str]:
    """Type of each new column: the Parquet type; for CSV/JSON, DOUBLE if every non-blank value is
    a plain number (without a leading zero: zip codes, padded ids stay text), else VARCHAR."""
    new = [(name, ctype) for name, ctype in extras if name.lower() not in table_columns]
    types = {name: ctype for name, ctype in new}
    text = [name for name, ctype in new if ctype == "VARCHAR"] if text else []
    if not text:
        return types
    # One grouped pass over the unpivoted cells: a few hundred per-column aggregates with regular
    # expressions cost seconds to plan, a single one costs nothing (a wide file stays cheap).
    listed = ", ".join(q(name) for name in text)
    counts = dict.fromkeys(text, (0, 0))
    counts.update({name: (nonblank, numeric) for name, nonblank, numeric in con.execute(f"""
        SELECT __abp_name, count_if(v <> ''),
               count_if(regexp_full_match(v, '{PLAIN_NUMBER}') AND NOT regexp_matches(v, '{LEADING_ZERO}'))
        FROM (SELECT __abp_name, trim(__abp_cell) AS v
              FROM (UNPIVOT (SELECT {listed} FROM ({source})) ON COLUMNS(*)
                    INTO NAME __abp_name VALUE __abp_cell))
        GROUP BY __abp_name""").fetchall()})
    for name in text:
        nonblank, numeric = counts[name]
        types[name] = "DOUBLE" if nonblank and nonblank == numeric else "VARCHAR"
    return types


def widened(con, source: str, name: str, ctype: str, target: str) -> str:
    """The column type that holds both the table's values (`target`) and this file's (`ctype`):
    numbers widen to DOUBLE (integers to BIGINT), anything else that does not cast without loss to
    VARCHAR. Values are never turned into NULL for not fitting."""
    source_base, target_base = base_type(ctype), base_type(target)
    if target_base == "VARCHAR":
        return target
    fractional = {"FLOAT", "DOUBLE", "DECIMAL"}
    if source_base in NUMERIC_TYPES | fractional and target_base in NUMERIC_TYPES | fractional:
        if target_base == "DOUBLE":
            return target
        if source_base in fractional or target_base in fractional:
            return "DOUBLE"
        return target if target_base in ("BIGINT", "HUGEINT") else "BIGINT"
    if source_base == "VARCHAR":
        lost = con.execute(f"SELECT count(*) FROM ({source}) WHERE NOT {blank(name, ctype)} "
                           f"AND TRY_CAST({q(name)} AS {target}) IS NULL").fetchone()[0]
        return target if lost == 0 else "VARCHAR"
    return "VARCHAR"


def cast_losses(con, source: str, casts: list[tuple[str, str, str]]) -> list[str]:
    """Count values that do not fit an existing column's type (they are stored as NULL). Text cells
    are counted in one grouped pass per target type (cheap for a wide file), typed ones per column."""
    groups: dict[tuple[bool, str], list[str]] = {}
    for name, ctype, target in casts:
        groups.setdefault((ctype == "VARCHAR", target), []).append(name)
    lost: dict[str, int] = {}
    for (is_text, target), names in groups.items():
        if is_text:
            lost.update(con.execute(f"""
                SELECT __abp_name, count_if(trim(__abp_cell, {BLANKS}) <> ''
                                            AND TRY_CAST(__abp_cell AS {target}) IS NULL)
                FROM (UNPIVOT (SELECT {', '.join(q(n) for n in names)} FROM ({source})) ON COLUMNS(*)
                      INTO NAME __abp_name VALUE __abp_cell)
                GROUP BY __abp_name""").fetchall())
        else:
            parts = [f"count_if({q(n)} IS NOT NULL AND TRY_CAST({q(n)} AS {target}) IS NULL)" for n in names]
            lost.update(zip(names, con.execute(f"SELECT {', '.join(parts)} FROM ({source})").fetchone()))
    return [f"{lost[name]} value(s) of column {name} are not {target} (the column's type) and were stored as NULL"
            for name, _, target in casts if lost.get(name)]


def join_notes(notes: list[str], keep: int = 8) -> str | None:
    """The ledger message: the first notes, then how many more (a wide file stays one line)."""
    shown = notes[:keep] + ([f"and {len(notes) - keep} more"] if len(notes) > keep else [])
    return "; ".join(shown) or None
