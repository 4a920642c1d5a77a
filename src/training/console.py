"""Terminal output: the final metrics table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

# the paper's columns first, then recall and proposal recall
ORDER = (
    "map_50", "map", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
    "mar_100", "mar_small", "mar_medium", "mar_large", "ar_100", "ar_1000", "ar_small",
    "ar_medium", "ar_large", "images",
)  # fmt: skip


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
