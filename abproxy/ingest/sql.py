"""What the ingest modules share: the columns each kind of file must have, SQL names and literals
(quoted through the DuckDB dialect), and ending a transaction that may already have ended."""
from __future__ import annotations

from datetime import datetime

import duckdb

from ..dialect import DUCKDB

KINDS = ("exposures", "events")
REQUIRED = {
    "exposures": ("unit_id", "experiment", "variant", "exposed_at"),
    "events": ("unit_id", "event", "occurred_at"),
}
OPTIONAL = {"exposures": (), "events": ("value", "event_id")}
TIMESTAMP_COLUMN = {"exposures": "exposed_at", "events": "occurred_at"}
SYSTEM_COLUMNS = ("file_id", "loaded_at")
INTERNAL_PREFIX = "__abp_"
MAX_NAME = 63
BLANKS = "' ' || chr(9) || chr(10) || chr(13)"
NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                 "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"}
# A text attribute becomes DOUBLE only when every non-blank value is a plain decimal number and
# none has a leading zero (zip codes, padded ids stay text).
PLAIN_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
LEADING_ZERO = r"^[+-]?0[0-9]"
# |value| above this overflows a double once squared (1e154² ≈ 1e308): every later sum of squares
# of the experiment would be infinite, so such rows are rejected with a reason instead
MAX_VALUE = 1e154


def q(name: str) -> str:
    return DUCKDB.ident(name)


def lit(text: str) -> str:
    return DUCKDB.literal(text)


def ts_lit(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ')}'"


def base_type(ctype: str) -> str:
    return ctype.upper().split("(", 1)[0].strip()


def rollback(con) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # a failed COMMIT has already ended the transaction
        pass
