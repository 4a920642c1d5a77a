"""python -m src.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]: a sweep's tables beside the paper's.

Reads every job's results.json (written by src.train: task, variant, seed, metrics),
.hydra/config.yaml and per-epoch metrics.csv under one or several folders, pools the seeds of
each row (jobs of equal composed config, whichever sweep or session ran them;
``src.analysis.ablation``) and writes
report.md (one table per protocol: Table 1 for ``model.task=rpn``, Table 2 for ``fast_rcnn``,
Table 3 for ``faster_rcnn``, each cell mean ± std over seeds, the paper's number beside),
a table of each training loss term per row beside each protocol's table (where it starts and
ends: the mean of its first and last ``--loss-steps`` logged values; ``src.analysis.losses``),
report.csv (one line per job, its loss terms' start and end included), cells.csv (one line per
row: mean, std, n per metric), losses.csv (one line per row and loss term),
curves_<task>.png (per-epoch AP / AR / loss per row, the seed spread shaded) and
curves_<task>.csv (the figure's numbers, and each loss term's epoch means: mean, std, n per
row, curve and epoch).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from src.analysis.ablation import (
    TABLES,
    Cell,
    curve_table,
    fmt_stats,
    group,
    job_values,
    load_jobs,
    load_sweeps,
    plot_curves,
    table_markdown,
)
from src.analysis.losses import check_steps, loss_ends, loss_markdown, loss_rows, terms
from src.analysis.metrics import paper_columns
from src.analysis.paper import TABLE1

PROPOSALS = paper_columns("Table 1")  # AR100, AR1k, AR1k_s, AR1k_m, AR1k_l
DETECTION = paper_columns("Table 3")  # AP@0.5, AP, AP_s, AP_m, AP_l

__all__ = ["load_jobs", "load_sweeps", "main", "markdown", "write_report"]


def _proposals_of_joint_runs(cells: list[Cell]) -> str:
    """Faster R-CNN runs also measure their RPN's recall; the paper's is Table 1 (RPN alone)."""
    mine = [c for c in cells if c.task == "faster_rcnn" and c.stats("ar_1000") is not None]
    if not mine:
        return ""
    head = " | ".join(f"{m.paper} | paper" for m in PROPOSALS)
    lines = [
        "## Proposals of the Faster R-CNN runs (class-agnostic recall)",
        "",
        "Paper: Table 1, which trained the RPN alone (model.task=rpn); here the RPN was trained",
        "jointly with the heads, so compare trends, not digits.",
        "",
        f"| row | seeds | {head} |",
        "|---|---|" + "---:|---:|" * len(PROPOSALS),
    ]
    for cell in mine:
        theirs = TABLE1.get(cell.variant, {})
        parts = [f"{fmt_stats(cell.stats(m.key))} | {theirs.get(m.key, '-')}" for m in PROPOSALS]
        seeds = ",".join(str(s) for s in cell.seeds)
        lines.append(f"| {cell.name} | {seeds} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def markdown(
    cells: list[Cell], sweep: str, figures: dict[str, Path] | None = None, loss_steps: int = 10
) -> str:
    """report.md: the tables of the tasks present, each with its loss terms and figure, and
    the failed jobs."""
    parts = [f"# Ablation report: `{sweep}`\n"]
    for task in TABLES:
        text = table_markdown(cells, task)
        if text:
            parts.append(text)
            losses = loss_markdown(cells, task, loss_steps)
            if losses:
                parts.append(losses)
            if figures and task in figures:
                parts.append(f"![{task} curves]({figures[task].name})\n")
    joint = _proposals_of_joint_runs(cells)
    if joint:
        parts.append(joint)
    failed = [(c, j) for c in cells for j in c.jobs if j.get("status") != "ok"]
    if failed:
        lines = ["## Failed jobs", ""]
        for cell, job in failed:
            overrides = " ".join(job.get("overrides", [])) or "(defaults)"
            lines.append(f"- job {job['job']} ({cell.name}, `{overrides}`): {job.get('error', '')}")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _job_line(cell: Cell, job: dict[str, Any], columns: list[str], steps: int) -> dict[str, Any]:
    stage, values = job_values(job)
    line = {
        "job": job["job"], "task": cell.task, "variant": cell.variant, "row": cell.row,
        "group": cell.label, "seed": job.get("seed"), "backbone": job.get("backbone"),
        "status": job.get("status"), "stage": stage,
        "overrides": " ".join(job.get("overrides", [])),
    }  # fmt: skip
    line |= {m.key: values.get(m.key) for m in (*DETECTION, *PROPOSALS)}
    ends = loss_ends(job, steps)
    for column in columns:
        start, end, _ = ends.get(column, (None, None, 0))
        name = column.removeprefix("train/")
        line |= {f"{name}_start": start, f"{name}_end": end}
    return line


def write_report(
    sweep_dir: str | Path | list[str | Path],
    out_dir: str | Path | None = None,
    loss_steps: int = 10,
    by_machine: bool = False,
) -> dict[str, Path]:
    """Write report.md, report.csv, cells.csv, losses.csv and one curves PNG + CSV per task;
    returns the paths (``png`` is the first table's curves). Several sweep folders need
    ``out_dir``; ``loss_steps``: how many logged values each end of a loss term averages;
    ``by_machine``: a cell per machine (``group``), not one pooling the machines' runs."""
    check_steps(loss_steps)
    sweeps = [sweep_dir] if isinstance(sweep_dir, (str, Path)) else list(sweep_dir)
    if len(sweeps) > 1 and out_dir is None:
        raise ValueError(f"{len(sweeps)} sweep folders: name where the report goes (--out DIR)")
    cells = group(load_sweeps(sweeps), by_machine)
    title = " ".join(map(str, sweeps))
    out = Path(out_dir or sweeps[0])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "cells": out / "cells.csv",
             "losses": out / "losses.csv"}  # fmt: skip
    figures = {}
    for task in TABLES:
        figure = plot_curves(cells, task, out / f"curves_{task}.png")
        if figure is not None:
            figures[task] = figure
            paths.setdefault("png", figure)
            paths[f"curves_{task}"] = figure
            table = curve_table(cells, task)
            if table:
                paths[f"curves_{task}_csv"] = figure.with_suffix(".csv")
                with paths[f"curves_{task}_csv"].open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(table[0]))
                    writer.writeheader()
                    writer.writerows(table)
    paths["md"].write_text(markdown(cells, title, figures, loss_steps))
    columns = terms([j for c in cells for j in c.jobs])  # failed jobs' losses too
    lines = [_job_line(c, j, columns, loss_steps) for c in cells for j in c.jobs]
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    keys = [m.key for m in (*DETECTION, *PROPOSALS)]
    with paths["cells"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "variant", "row", "group", "seeds",
                         *(f"{k}_{s}" for k in keys for s in ("mean", "std", "n"))])  # fmt: skip
        for cell in cells:
            stats = [cell.stats(k) or (None, None, 0) for k in keys]
            writer.writerow([cell.task, cell.variant, cell.row, cell.label,
                             " ".join(map(str, cell.seeds)), *(v for s in stats for v in s)])  # fmt: skip
    rows = loss_rows(cells, loss_steps)
    with paths["losses"].open("w", newline="") as f:
        fields = ["task", "variant", "row", "group", "seeds", "term", "start_mean", "start_std",
                  "end_mean", "end_std", "n", "logged", "steps"]  # fmt: skip
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="+",
                        help="multirun folders (outputs/train/multiruns/DATE) or job folders")  # fmt: skip
    parser.add_argument("--out", default=None,
                        help="where to write (default: the sweep folder; required for several)")  # fmt: skip
    parser.add_argument("--loss-steps", type=int, default=10, metavar="N",
                        help="logged values averaged where each loss term starts and ends (default 10)")  # fmt: skip
    parser.add_argument("--by-machine", action="store_true",
                        help="split cells by the machine results.json records (CPU and its "
                             "instruction set, or GPUs) instead of pooling them")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, args.out, args.loss_steps, args.by_machine)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(paths["md"].read_text())
    print("written:", ", ".join(dict.fromkeys(str(p) for p in paths.values())))


if __name__ == "__main__":
    main()
