"""What a resumed run keeps of the run it continues: the CSV rows and prediction panels that the
checkpoint covers.

Lightning's CSV writer deletes ``metrics.csv`` when it opens a folder that is not empty, so
resuming into the same run folder used to lose every row logged before the kill. Here the rows
up to the checkpoint are read first and written back, then the resumed run appends its own;
rows logged after the checkpoint (and before the kill) are dropped, because the resumed run
logs those steps again. ``train.log`` is appended to by Hydra's file handler, so it keeps its
history by itself.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class Position:
    """Where a checkpoint stands: ``epoch`` (0-based, the epoch it closed or is inside) and
    ``global_step`` (optimizer steps done)."""

    def __init__(self, epoch: int, global_step: int) -> None:
        self.epoch, self.global_step = int(epoch), int(global_step)

    def covers(self, row: dict[str, str]) -> bool:
        """A row logged by Lightning carries its epoch; others (the LR monitor) only a step."""
        step = int(float(row.get("step") or 0))
        if row.get("epoch") not in (None, ""):
            return int(float(row["epoch"])) <= self.epoch and step <= self.global_step
        return step < self.global_step


def covered_rows(metrics_csv: Path, position: Position) -> list[dict[str, str]]:
    """The rows of an existing ``metrics.csv`` that ``position`` covers (empty cells dropped)."""
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if v not in ("", None)} for r in rows if position.covers(r)]


class _HistoryWriter(ExperimentWriter):
    def __init__(self, log_dir: str, position: Position | None) -> None:
        kept = covered_rows(Path(log_dir) / self.NAME_METRICS_FILE, position) if position else []
        super().__init__(log_dir)  # deletes the old metrics.csv
        if kept:
            self.metrics = kept
            self.save()


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that, once told where a resumed checkpoint stands
    (:meth:`resume_from`), keeps the rows logged up to it."""

    _position: Position | None = None

    def resume_from(self, position: Position) -> None:
        """Call before anything is logged (the writer opens on the first log call)."""
        if self._experiment is not None:
            raise RuntimeError("resume_from must be called before the logger writes anything")
        self._position = position

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _HistoryWriter(self.log_dir, self._position)
        return self._experiment


def drop_panels_after(panel_dir: str | os.PathLike, epoch: int) -> list[Path]:
    """Delete ``epoch_NNN.png`` panels of epochs after ``epoch``: the resumed run draws them again."""
    removed = []
    for path in sorted(Path(panel_dir).glob("epoch_*.png")):
        number = path.stem.removeprefix("epoch_")
        if number.isdigit() and int(number) > epoch:
            path.unlink(missing_ok=True)  # another rank may have been first
            removed.append(path)
    return removed
