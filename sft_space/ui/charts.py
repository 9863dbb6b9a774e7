"""Gradio plots that draw correctly from an empty start and follow live data; the run panel's charts are built and
filled from their declaration (sft_space/charts.py: RUN_CHARTS).

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

from ..charts import CHART_NAMES, RUN_CHARTS, Chart


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


def chart_frame(chart: Chart, records: list[dict], marker_step: int | None = None) -> pd.DataFrame:
    """The chart's typed frame from the run's metric lines: long format with a series column when it draws
    several (one placeholder row per series, see typed_frame), else step and value. marker_step: a vertical
    marker drawn from 0 to the highest value (the loss chart's first warning)."""
    series = chart.has_series
    rows = [
        {"step": r["step"], chart.y: r[key], **({"series": name} if series else {})}
        for r in records
        for key, name in chart.metrics.items()
        if finite(r.get(key))
    ]
    if marker_step is not None and "warning" in chart.colours:
        top = max((r[chart.y] for r in rows), default=1.0)
        rows += [{"step": marker_step, chart.y: value, "series": "warning"} for value in (0.0, top)]
    if not series:
        return typed_frame(rows, {"step": "int64", chart.y: "float64"})
    schema = {"step": "int64", chart.y: "float64", "series": "str"}
    return typed_frame(rows, schema, ("series", chart.colours or {name: None for name in chart.metrics.values()}))


def run_chart_values(records: list[dict], built, marker_step: int | None = None) -> dict[str, pd.DataFrame | None]:
    """Each run chart's value for the page: its frame, or None while it has nothing to draw and was never built.
    built: the names of the page's charts that have drawn data (a State, so untrusted: only known names count)."""
    built = {name for name in built if name in CHART_NAMES} if isinstance(built, list) else set()
    return {
        chart.name: drawable(chart_frame(chart, records, marker_step), chart.y, chart.name in built)
        for chart in RUN_CHARTS
    }


def plot(chart: Chart):
    """The chart's Gradio plot, empty until its first value."""
    import gradio as gr

    colour = dict(color="series", **({"color_map": chart.colours} if chart.colours else {})) if chart.has_series else {}
    legend = dict(colors_in_legend=list(chart.legend)) if chart.legend else {}
    titles = dict(x_title="step", y_title=chart.y_title) if chart.y_title else {}
    return gr.LinePlot(
        None, x="step", y=chart.y, title=chart.title, height=chart.height, elem_id=chart.elem_id,
        **colour, **legend, **titles,
    )  # fmt: skip
