"""Verdict, arm-status, health and job badges: a colour, a shape symbol and the words of the one
status vocabulary (`lineage.STATUS_WORDS`, which the CLI prints too)."""
from __future__ import annotations

from abproxy.lineage import STATUS_WORDS
from abproxy.report.text import md

# decision or arm status → (badge colour, symbol); the symbol differs in shape, not only colour
BADGES: dict[str, tuple[str, str]] = {
    "SHIP": ("green", "✔"), "ROLLBACK": ("red", "✖"), "KEEP_RUNNING": ("blue", "↻"),
    "NO_DETECTABLE_EFFECT": ("gray", "≈"), "INVALID": ("orange", "⚠"), "FAILED": ("red", "✖"),
    "NOT_ANALYSED": ("gray", "○"), "CONTROL": ("gray", "◼"), "NOT_SHIPPED": ("gray", "◻"),
}
# … with the plain words of the one status vocabulary (lineage.STATUS_WORDS, the CLI's words too)
VERDICTS: dict[str, tuple[str, str, str]] = {code: (*BADGES[code], STATUS_WORDS[code]) for code in BADGES}
# symbols from common text fonts (DejaVu), not colour emoji: they must render everywhere
HEALTH: dict[str, tuple[str, str]] = {"ok": ("green", "✔"), "warn": ("orange", "⚠"), "fail": ("red", "✖")}
JOB_STATUS: dict[str, tuple[str, str]] = {"ok": ("green", "✔"), "running": ("blue", "↻"), "failed": ("red", "✖"),
                                          "interrupted": ("orange", "⚠")}


def verdict_text(decision: str | None) -> str:
    """Plain text with a shape symbol: '✔ SHIP'."""
    code = decision or "NOT_ANALYSED"
    _, symbol, _ = VERDICTS.get(code, ("gray", "•", ""))
    return f"{symbol} {code}"


def verdict_badge(decision: str | None) -> str:
    """Markdown badge: coloured, with a symbol and the decision as text."""
    code = decision or "NOT_ANALYSED"
    colour, symbol, _ = VERDICTS.get(code, ("gray", "•", ""))
    return f":{colour}-badge[{symbol} {md(code)}]"


SHIPPED_MEANING = {"SHIP": "keep the shipped model", "ROLLBACK": "revert the shipped model",
                   "NO_DETECTABLE_EFFECT": "the shipped model's lift has faded",
                   "KEEP_RUNNING": "keep monitoring against the holdback"}


def verdict_meaning(decision: str | None, shipped: bool = False) -> str:
    """Plain words for a decision; a shipped model (holdback monitoring) is kept or reverted."""
    if shipped and decision in SHIPPED_MEANING:
        return SHIPPED_MEANING[decision]
    return VERDICTS.get(decision or "NOT_ANALYSED", ("", "", ""))[2]


def health_badge(status: str | None) -> str:
    colour, symbol = HEALTH.get((status or "").lower(), ("gray", "•"))
    return f":{colour}-badge[{symbol} {md((status or 'unknown').upper())}]"


def job_badge(status: str | None) -> str:
    colour, symbol = JOB_STATUS.get(status or "", ("gray", "•"))
    return f":{colour}-badge[{symbol} {md(status or 'unknown')}]"
