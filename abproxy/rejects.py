"""Why a file's rows were rejected: the top reasons with counts, one example value and a fix each.

Computed with one grouped query over `rejected_rows` right after the file loaded; the ingest
summary carries one `FileRejects` per file with rejected rows, and the job fails (exit 1) when
a file's rejected share exceeds `ingest.max_rejected_fraction`.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

import duckdb

from .formats import ReadOptions, show_delimiter, suggest_format

TOP_REASONS = 3


@dataclass(frozen=True)
class RejectReason:
    reason: str
    rows: int
    row_number: int           # first row (1-based, in the file) with this reason
    column: str | None        # the column the reason is about
    example: str | None       # that row's value of the column
    fix: str | None = None


@dataclass(frozen=True)
class FileRejects:
    path: str
    kind: str
    rows_total: int
    rows_rejected: int
    reasons: tuple[RejectReason, ...]

    @property
    def fraction(self) -> float:
        return self.rows_rejected / self.rows_total if self.rows_total else 0.0

    def as_dict(self, limit: float) -> dict:
        return {"path": self.path, "kind": self.kind, "rows": self.rows_total,
                "rows_rejected": self.rows_rejected, "rejected_fraction": round(self.fraction, 6),
                "over_limit": self.fraction > limit, "reasons": [asdict(r) for r in self.reasons]}

    def lines(self) -> list[str]:
        """`path: N of M rows (x%) rejected` and one line per top reason."""
        out = [f"{self.path}: {self.rows_rejected:,} of {self.rows_total:,} rows ({self.fraction:.1%}) rejected"]
        for r in self.reasons:
            example = f" (e.g. row {r.row_number}: {r.column} {_shown(r.example)})" if r.column else \
                f" (e.g. row {r.row_number})"
            out.append(f"{r.rows:,} × {r.reason}{example}" + (f"; {r.fix}" if r.fix else ""))
        return out

    def over_limit_message(self, limit: float) -> str:
        """Why the file was refused, with its main reason, an example and the fix."""
        top = self.reasons[0] if self.reasons else None
        why = ""
        if top is not None:
            example = f", e.g. row {top.row_number}: {top.column} {_shown(top.example)}" if top.column else ""
            why = f"; mostly {top.reason} ({top.rows:,} rows{example})" + (f": {top.fix}" if top.fix else "")
        return (f"{self.path}: not loaded: {self.rows_rejected:,} of {self.rows_total:,} rows "
                f"({self.fraction:.1%}) were rejected, more than ingest.max_rejected_fraction = {limit:g}{why}. "
                "Nothing of the file was stored (its rejected rows are in rejected_rows); it is retried "
                "when the file or its ingest.formats options change")


def _column(reason: str, columns: list[str], timestamp: str) -> str | None:
    for name in sorted(columns, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", reason):
            return name
    if "timestamp" in reason:
        return timestamp
    return "value" if "value" in reason and "value" in columns else None


def _fix(con, reason: str, column: str | None, kind: str, opts: ReadOptions, rel: str,
         samples: list[str]) -> str | None:
    where = f"ingest.formats.'{opts.where(rel)}'"
    if "unparseable timestamp" in reason:
        guess = suggest_format(con, samples)
        example = guess or "%d/%m/%Y %H:%M"
        found = f"the values look like '{guess}'; " if guess else ""
        return (f"expected {opts.expected}; {found}set timestamp_format: '{example}' under {where} in "
                "abproxy.yaml (several formats may be listed; add timezone: for local times)")
    if reason.startswith("missing") and column:
        return f"fill in {column}, or map another column to it with columns: {{your_name: {column}}} under {where}"
    if "non-numeric" in reason:
        return (f"write plain numbers (a '.' decimal point); markers such as NA can be listed as null_values "
                f"under {where}")
    if "future" in reason:
        return "check the clock and time zone of the exporter (add timezone: under " + where + " for local times)"
    return None


def summarize(con: duckdb.DuckDBPyConnection, file_id: int, rel: str, kind: str, rows_total: int,
              rejected: int, columns: list[str], timestamp: str, opts: ReadOptions) -> FileRejects:
    """The file's top reject reasons, each with its count and first example (one grouped query)."""
    rows = con.execute(
        "SELECT reason, count(*) AS n, min(row_number) AS first, arg_min(raw, row_number) AS raw, "
        "list(raw ORDER BY row_number) FILTER (WHERE reason LIKE 'unparseable timestamp%')[1:100] AS sample "
        "FROM rejected_rows WHERE file_id = ? GROUP BY reason ORDER BY n DESC, reason LIMIT ?",
        [file_id, TOP_REASONS]).fetchall()
    reasons = []
    for reason, n, first, raw, sample in rows:
        column = _column(reason, columns, timestamp)
        example = _value(raw, column)
        samples = [v for v in (_value(s, column) for s in sample or []) if v is not None]
        reasons.append(RejectReason(reason, int(n), int(first), column, example,
                                    _fix(con, reason, column, kind, opts, rel, samples)))
    return FileRejects(rel, kind, rows_total, rejected, tuple(reasons))


def _value(raw: str | None, column: str | None) -> str | None:
    if raw is None or column is None:
        return None
    try:
        value = json.loads(raw).get(column)
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


def delimiter_hint(detected: str | None, configured: str, rel: str, opts: ReadOptions) -> str:
    """The end of the 'missing required columns' message of a CSV read as one column."""
    text = f"; is the delimiter '{show_delimiter(configured)}'?"
    if detected and detected != configured:
        text += (f" The file looks '{show_delimiter(detected)}'-separated: set delimiter: "
                 f"'{show_delimiter(detected)}' under ingest.formats.'{opts.where(rel)}' in abproxy.yaml")
    return text


def _shown(value) -> str:
    """'= 'abc'' for a value; 'empty' for a missing one (never 'None' to a reader)."""
    return "empty" if value is None or value == "" else f"= {value!r}"
