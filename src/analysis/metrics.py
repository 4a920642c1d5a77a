"""One vocabulary of metrics: our key, torchmetrics' key, the paper's column and table.

Logged as ``{stage}/{key}`` (``val/map``, ``test/ar_1000``); the console, the report and the
paper's numbers all read this one table, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One logged value.

    Attributes:
        key: ours, logged as ``val/<key>`` and ``test/<key>``.
        source: ``"detections"`` (class-aware COCO AP/AR), ``"proposals"`` (the RPN's
            class-agnostic recall, at 1000 proposals for s/m/l as in Table 1) or ``"count"``.
        torchmetrics: the key of torchmetrics' ``MeanAveragePrecision`` result it comes from.
        paper: the paper's column name, or None when the paper reports no such column.
        tables: the paper's tables that have that column.
    """

    key: str
    source: str
    torchmetrics: str | None = None
    paper: str | None = None
    tables: tuple[str, ...] = ()


_DET = ("Table 2", "Table 3")
METRICS: tuple[Metric, ...] = (
    Metric("map_50", "detections", "map_50", "AP@0.5", _DET),
    Metric("map", "detections", "map", "AP", _DET),
    Metric("map_75", "detections", "map_75"),
    Metric("map_small", "detections", "map_small", "AP_s", _DET),
    Metric("map_medium", "detections", "map_medium", "AP_m", _DET),
    Metric("map_large", "detections", "map_large", "AP_l", _DET),
    Metric("mar_1", "detections", "mar_1"),
    Metric("mar_10", "detections", "mar_10"),
    Metric("mar_100", "detections", "mar_100"),
    Metric("mar_small", "detections", "mar_small"),
    Metric("mar_medium", "detections", "mar_medium"),
    Metric("mar_large", "detections", "mar_large"),
    Metric("ar_100", "proposals", "mar_100", "AR100", ("Table 1",)),
    Metric("ar_1000", "proposals", "mar_1000", "AR1k", ("Table 1",)),
    Metric("ar_small", "proposals", "mar_small", "AR1k_s", ("Table 1",)),
    Metric("ar_medium", "proposals", "mar_medium", "AR1k_m", ("Table 1",)),
    Metric("ar_large", "proposals", "mar_large", "AR1k_l", ("Table 1",)),
    Metric("images", "count"),
)
BY_KEY = {m.key: m for m in METRICS}
# checkpointing, the report and Optuna-style sweeps all select on this one
MONITOR = "val/map"
MONITOR_MODE = "max"
# the rpn task (Table 1) has no detections: it selects on proposal recall
RPN_MONITOR = "val/ar_1000"


def monitor_for(task: str) -> str:
    """The validation metric a run of ``task`` (src.models.stages.TASKS) selects on (max)."""
    return RPN_MONITOR if task == "rpn" else MONITOR


def from_source(source: str) -> tuple[Metric, ...]:
    """The metrics one evaluator produces, in table order."""
    return tuple(m for m in METRICS if m.source == source)


def paper_columns(table: str) -> tuple[Metric, ...]:
    """The metrics that are columns of one of the paper's tables, in the paper's order."""
    return tuple(m for m in METRICS if table in m.tables)
