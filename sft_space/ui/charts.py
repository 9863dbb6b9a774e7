"""Gradio plots that draw correctly from an empty start and follow live data.

What Gradio's plot does, and what follows from it:
- It builds its Vega-Lite spec when it first gets a value and afterwards only
  swaps the data. Axis types come from the column dtypes of that first value,
  the colour domain from its series, and the layout (room for axis labels,
  titles and legend) from its numbers. So a plot starts with no value at all
  (None: an empty box) and gets one only once there is something to draw
  (`drawable`). A run-panel chart, once built, never gets None again (the Runs
  tab's comparison is emptied on purpose, below): a plot given None removes
  its chart while its resize observer still reads the chart's width (a page
  error on every new run). Another run with nothing logged yet gets the typed
  frame without points: the same axes, empty.
- Frames are typed, so numbers stay numbers (linear axes) whatever the rows.
- A plot whose series are known in advance carries one empty placeholder row
  per series, so its colour domain holds every series from the first build
  (the loss chart's validation curve, which starts later than the train one).
- A plot whose series change between clicks (runs to compare) is emptied
  first and then given its new value, so it is built afresh.
"""

from __future__ import annotations

import math

import pandas as pd


def typed_frame(rows: list[dict], schema: dict[str, str], placeholders: tuple[str, dict] | None = None) -> pd.DataFrame:
    """rows as a DataFrame with the given column dtypes, even when there are no rows.

    placeholders: (colour column, {series: ...}): one row per series with every other value empty, which the
    plot draws nowhere but counts into its colour domain (numeric columns become float to hold the gaps)."""
    if placeholders:
        column, series = placeholders
        rows = [*rows, *({name: (value if name == column else None) for name in schema} for value in series)]
    return pd.DataFrame(
        {
            name: pd.Series(
                [row[name] for row in rows], dtype=dtype if not placeholders or dtype == "str" else "float64"
            )
            for name, dtype in schema.items()
        }
    )


def drawable(frame: pd.DataFrame, y: str, built: bool = False) -> pd.DataFrame | None:
    """The frame, or None while it has no point to draw and the plot was never built (so it is built from real
    data, not from nothing); a plot built already keeps its value, emptied of points."""
    return frame if built or frame[y].notna().any() else None


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
