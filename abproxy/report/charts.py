"""Chart pieces shared by the report's pages: rendering an Altair spec, inline data, a time axis that
never collapses, and the colours and shapes of each verdict."""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd

def show_chart(chart: Any, alt_text: str, where: Any = None) -> None:
    """Render an Altair chart. The spec is built without JSON-schema validation (the charts are
    fixed code; validation would cost most of a page's time)."""
    import streamlit as st

    spec = chart.to_dict(validate=False)
    spec.setdefault("autosize", {"type": "fit-x", "contains": "padding"})   # the height is the plot's
    (where or st).vega_lite_chart(spec, width="stretch", alt=alt_text)


def _json_value(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date, pd.Timestamp)):
        return None if pd.isna(v) else v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()                         # numpy scalar → Python
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def time_scale(values: Any) -> Any:
    """A time axis that never collapses to one instant (a single run would read '.500 .500 …'): the
    domain spans the values, padded by an hour, at least a day wide."""
    import altair as alt

    stamps = [pd.Timestamp(v) for v in values if v is not None and not pd.isna(v)]
    if not stamps:
        return alt.Scale()
    lo, hi = min(stamps), max(stamps)
    pad = max(pd.Timedelta(hours=1), (pd.Timedelta(days=1) - (hi - lo)) / 2)
    def stamp(t: pd.Timestamp) -> Any:   # local-time fields, like the ISO strings of chart_data
        return alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour, minutes=t.minute)

    return alt.Scale(domain=[stamp(lo - pad), stamp(hi + pad)])


def chart_data(rows: Any) -> Any:
    """Inline Vega-Lite data from records or a DataFrame (JSON-safe values, no pandas round trip
    inside Altair)."""
    import altair as alt

    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    return alt.Data(values=[{k: _json_value(v) for k, v in r.items()} for r in records])


DECISION_COLOURS = {"SHIP": "#1a9850", "ROLLBACK": "#d73027", "KEEP_RUNNING": "#4575b4",
                    "NO_DETECTABLE_EFFECT": "#878787", "INVALID": "#f46d43", "FAILED": "#7f0000"}
DECISION_SHAPES = {"SHIP": "triangle-up", "ROLLBACK": "cross", "KEEP_RUNNING": "circle",
                   "NO_DETECTABLE_EFFECT": "square", "INVALID": "diamond", "FAILED": "triangle-down"}


def decision_encodings() -> tuple[Any, Any]:
    """Colour and shape channels for a `decision` field: the same verdict always looks the same,
    and shape tells the verdicts apart without colour."""
    import altair as alt

    colour = alt.Color("decision:N", title="verdict", scale=alt.Scale(domain=list(DECISION_COLOURS),
                                                                      range=list(DECISION_COLOURS.values())))
    shape = alt.Shape("decision:N", title="verdict", scale=alt.Scale(domain=list(DECISION_SHAPES),
                                                                     range=list(DECISION_SHAPES.values())))
    return colour, shape
