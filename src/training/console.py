"""Terminal output: the final metrics table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from src.analysis.metrics import METRICS

ORDER = tuple(m.key for m in METRICS)  # the paper's columns first, then recall


def print_metrics(metrics: dict[str, float], title: str = "metrics") -> None:
    """One row per metric, one column per split (val, test); -1 (no such objects) shows '-'."""
    stages: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        stage, _, name = key.partition("/")
        if stage in ("val", "test") and name in ORDER:
            stages.setdefault(stage, {})[name] = value
    if not stages:
        return
    table = Table(title=title)
    table.add_column("metric")
    for stage in stages:
        table.add_column(stage, justify="right")
    for name in ORDER:
        if any(name in values for values in stages.values()):
            table.add_row(name, *(_fmt(values.get(name)) for values in stages.values()))
    Console().print(table)


def _fmt(v: float | None) -> str:
    if v is None or v < 0:
        return "-"
    return f"{v:.0f}" if float(v).is_integer() and v > 1 else f"{v:.3f}"
