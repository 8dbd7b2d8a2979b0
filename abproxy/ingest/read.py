"""Reading a file's columns and rows through DuckDB's own readers (CSV as text, Parquet typed,
JSON Lines as text), and putting a reader's error in words."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import IO

from .. import formats
from ..errors import BadFile
from ..formats import ReadOptions
from .discover import file_format
from .sql import lit, q


def source_columns(con, path: Path, rel: str, fmt: str, gz: bool, delimiter: str = ",") -> list[tuple[str, str]]:
    """The file's columns (name, DuckDB type) in file order; text formats are all VARCHAR."""
    if fmt == "csv":
        return [(name, "VARCHAR") for name in _csv_header(path, rel, gz, delimiter)]
    if fmt == "parquet":
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({lit(str(path))})").fetchall()
        return [(row[0], row[1]) for row in rows]
    json_format = "newline_delimited" if fmt == "jsonl" else "auto"
    rows = con.execute(f"DESCRIBE SELECT * FROM read_json({lit(str(path))}, format='{json_format}', "
                       f"records=true, sample_size=-1, {compression(gz)})").fetchall()
    return [(row[0], "VARCHAR") for row in rows]


def _csv_header(path: Path, rel: str, gz: bool, delimiter: str = ",") -> list[str]:
    try:
        raw: IO[bytes] = gzip.open(path, "rb") if gz else open(path, "rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            header = next(csv.reader(text, delimiter=delimiter, quotechar='"'), None)
    except UnicodeDecodeError:
        raise BadFile(f"{rel}: not a UTF-8 text CSV file (binary data or another encoding?); "
                      "export it as UTF-8 CSV") from None
    except (OSError, EOFError) as exc:
        if gz:
            raise BadFile(f"{rel}: not a readable gzip file (truncated or not compressed?): {exc}") from None
        raise
    except csv.Error as exc:
        raise BadFile(f"{rel}: the header row is not valid CSV ({exc})") from None
    if not header or all(not name.strip() for name in header):
        raise BadFile(f"{rel}: no header row; the first line must name the columns "
                      "(e.g. unit_id,event,occurred_at)")
    return header


def compression(gz: bool) -> str:
    return "compression='gzip'" if gz else "compression='none'"


def source_sql(path: Path, fmt: str, gz: bool, columns: list[tuple[str, str]],
               opts: ReadOptions | None = None) -> str:
    """SELECT of the file's columns (renamed as `opts` says) plus `__abp_row`, its 1-based row
    number in the file; the configured null markers are NULL."""
    opts = opts or ReadOptions()

    def out(name: str, ctype: str) -> str:
        value = formats.null_sql(q(name), opts) if fmt != "csv" and ctype == "VARCHAR" else q(name)
        return f"{value} AS {q(opts.rename(name))}"

    listed = ", ".join(out(name, ctype) for name, ctype in columns)
    path_lit = lit(str(path))
    if fmt == "parquet":
        if any(name.lower() == "file_row_number" for name, _ in columns):
            return f"SELECT row_number() OVER () AS __abp_row, {listed} FROM read_parquet({path_lit})"
        return (f"SELECT file_row_number + 1 AS __abp_row, {listed} "
                f"FROM read_parquet({path_lit}, file_row_number=true)")
    spec = "{" + ", ".join(f"{lit(name)}: 'VARCHAR'" for name, _ in columns) + "}"
    if fmt == "csv":
        reader = (f"read_csv({path_lit}, header=true, auto_detect=false, {formats.csv_options(opts)}, "
                  "quote='\"', escape='\"', "
                  f"comment='', skip=0, strict_mode=true, null_padding=false, columns={spec}, "
                  f"{compression(gz)})")
    else:
        json_format = "newline_delimited" if fmt == "jsonl" else "auto"
        reader = f"read_json({path_lit}, format='{json_format}', records=true, columns={spec}, {compression(gz)})"
    # Text readers scan in file order (insertion order is preserved), so row_number() is the row.
    return f"SELECT row_number() OVER () AS __abp_row, {listed} FROM {reader}"


def parquet_rows(con, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({lit(str(path))})").fetchone()[0]


def short(exc: BaseException, source: Path | None = None) -> str:
    """DuckDB's message without its fix-it hints and the echo of our SQL."""
    text = str(exc).strip()
    if source is not None:
        text = text.replace(str(source), "the file")
    for marker in ("\nPossible fixes", "\nPossible Solution", "\nLINE "):
        text = text.split(marker, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[:500]


def describe(exc: BaseException, path: Path, source: Path) -> str:
    text = short(exc, source)
    fmt, gz = file_format(path.name) or ("", False)
    if gz and "gzip" in text.lower():
        return f"not a readable gzip file (truncated or not compressed?): {text}"
    what = {"parquet": "not a readable Parquet file (truncated or corrupt?)",
            "csv": "not a valid comma-separated UTF-8 CSV file with a header row",
            "jsonl": "not valid JSON Lines (one JSON object per line)",
            "json": "not valid JSON (objects, one per line or in an array)"}.get(fmt, "cannot be read")
    return f"{what}: {text}"
