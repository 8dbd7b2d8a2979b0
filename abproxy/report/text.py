"""Text for the report's Markdown: escaping user text, the shared number formats (`abproxy.format`,
the one formatting module of the CLI, the report and the export), relative times and tables.

Every string a user wrote (names, descriptions, reasons, paths) goes through `md()` before it is
put into Markdown; nothing here uses `unsafe_allow_html`.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterable, Sequence

import pandas as pd

from abproxy import format as fmt

_MD_ALWAYS = re.compile(r"([\\`*\[\]<>|$~])")          # code, emphasis, links/directives, HTML, tables, LaTeX
_MD_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")  # emphasis can only start/end at a word edge
_MD_COLON = re.compile(r":(?=[A-Za-z])")                   # :red[...] directives
_MD_EMOJI = re.compile(r":(?=[\w-]+:)")                     # :x: shortcodes (matched on the text, after escapes)
WORD_JOINER = "\u2060"                                      # invisible; breaks the shortcode pattern
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")                     # &lt; would render as <
_MD_LINE_START = re.compile(r"^(\s*)([#>+\-=]|\d+(?=[.)]))")  # headings, quotes, lists at the start



def md(value: Any) -> str:
    """Escape user text for Streamlit Markdown, so it shows literally: the characters that start
    Markdown, directive, emoji or LaTeX syntax are backslash-escaped (intraword underscores such as
    spend_per_user are left alone) and newlines become spaces (safe inside table cells)."""
    text = "" if value is None else str(value).replace("\r", " ").replace("\n", " ")
    text = _MD_ALWAYS.sub(r"\\\1", text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    text = _MD_EMOJI.sub(":" + WORD_JOINER, text)
    text = _MD_COLON.sub(r"\\:", text)
    text = _MD_ENTITY.sub(r"\\&", text)
    match = _MD_LINE_START.match(text)
    if match:
        lead, mark = match.groups()
        if mark[0].isdigit():        # "1. " / "1) " would start an ordered list
            end = match.end()
            text = text[:end] + "\\" + text[end:]
        else:
            text = f"{lead}\\{text[len(lead):]}"
    return text


# Numbers read the same everywhere: the formatting module decides (report, export and CLI).
finite = fmt.finite
pct = fmt.pct
pvalue = fmt.pvalue
count = fmt.count
when = fmt.when
size = fmt.size


def ci(lo: Any, hi: Any, unit: str = "rel") -> str:
    return fmt.interval(lo, hi, unit)


def lift(rel: Any, lo: Any, hi: Any, level: float = 0.95, unit: str = "rel") -> str:
    """'+4.6% (95% CI -1.9% to +11.1%)'."""
    return fmt.effect(rel, lo, hi, level, unit)


def num(x: Any, digits: int = 4) -> str:
    return fmt.number(x, significant=digits)


def ago(value: Any, now: dt.datetime | None = None) -> str:
    """'3 h ago' relative to now (UTC)."""
    if value is None:
        return ""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return ""
    if pd.isna(ts):
        return ""
    ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    seconds = (pd.Timestamp(now) - ts).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; cells must already be escaped (or be our own formatted numbers)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def freshness_caption(fresh: dict[str, Any]) -> str:
    parts = [f"Snapshot published {when(fresh.get('published_at'))} ({ago(fresh.get('published_at'))})"]
    if fresh.get("latest_event") is not None:
        parts.append(f"latest event analysed {when(fresh.get('latest_event'))}")
    if fresh.get("last_loaded_at") is not None:
        parts.append(f"last file loaded {when(fresh.get('last_loaded_at'))}")
    return " · ".join(parts)
