"""The charts of a run's metrics, declared once: title, the metrics.jsonl keys each draws and their series names,
colours, where it sits on the page. Pure data (no Gradio, no plotting library): the page's plots (ui/charts.py)
and the model card's loss curve (publishing/card.py) are drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chart:
    """One chart of a run's metrics: what it draws and where. The Train tab builds its plot from this
    (ui.charts.plot), the page's poll fills it (ui.charts.run_chart_values), in RUN_CHARTS order; the model card
    draws the loss chart's series in its colours. A new chart is one more entry here."""

    name: str  # its key in poll's values and in the page's State of built charts
    title: str
    y: str  # the value column of its frame
    metrics: dict[str, str]  # the metrics.jsonl key of each series -> the series' name ("" for a chart of one)
    elem_id: str
    group: str  # where it sits: a key of CHART_GROUPS
    colours: dict[str, str] = field(default_factory=dict)  # series -> colour, every series known from the start
    legend: tuple[str, ...] = ()  # the series the legend names (all when empty)
    height: int = 220
    y_title: str | None = None

    @property
    def has_series(self) -> bool:
        """Several lines, told apart by a series column (long format), rather than one."""
        return len(self.metrics) > 1 or bool(self.colours)


LOSS_COLOURS = {"train": "#2563eb", "validation": "#f97316", "warning": "#a16207"}
GPU_COLOURS = {"in use": "#2563eb", "peak": "#dc2626", "card": "#6b7280"}
RUN_CHARTS = (
    Chart("loss", "Loss", "loss", {"loss": "train", "eval_loss": "validation"}, "loss-chart", "main", LOSS_COLOURS,
          ("train", "validation"), height=320, y_title="loss"),
    Chart("learning_rate", "Learning rate", "learning_rate", {"learning_rate": ""}, "lr-chart", "optimizer"),
    Chart("grad_norm", "Gradient norm", "grad_norm", {"grad_norm": ""}, "grad-chart", "optimizer"),
    Chart("gpu_memory", "GPU memory (GiB): in use, peak, the card", "memory",
          {"gpu_memory_gib": "in use", "gpu_peak_gib": "peak", "gpu_card_gib": "card"}, "gpu-memory-chart", "gpu",
          GPU_COLOURS),
    Chart("gpu_utilization", "GPU utilisation (%)", "gpu_utilization", {"gpu_utilization": ""},
          "gpu-utilization-chart", "gpu"),
)  # fmt: skip
CHART_NAMES = tuple(chart.name for chart in RUN_CHARTS)
LOSS_CHART = next(chart for chart in RUN_CHARTS if chart.name == "loss")  # also the card's curve
# where the charts sit on the run panel, in this order: (accordion title or None for none, open, devices shown on:
# None = everywhere); a new group is one more entry here
CHART_GROUPS: dict[str, tuple[str | None, bool, tuple[str, ...] | None]] = {
    "main": (None, True, None),
    "optimizer": ("Learning rate and gradient norm", False, None),
    "gpu": ("GPU memory and utilisation", True, ("cuda", "zerogpu")),  # logged on a CUDA card only
}
# every metric a chart draws is written into metrics.jsonl by the training process (callbacks.RunDirCallback)
CHART_METRICS = tuple(dict.fromkeys(key for chart in RUN_CHARTS for key in chart.metrics))
