"""Where each training loss term of a job starts and ends, pooled over a cell's seeds.

A row can fail because one head learns little while the others learn (Table 3 trains the RPN
and the RoI heads together), so the report shows every term the protocol trains, not only their
sum: ``train/loss`` and its parts as ``src.training.module`` logs them (``train/loss_objectness``,
``train/loss_rpn_box_reg`` for the RPN, ``train/loss_classifier``, ``train/loss_box_reg`` for
the RoI heads), read from each job's ``csv/metrics.csv`` in step order. A term *starts* at the
mean of its first ``steps`` logged values and *ends* at the mean of its last ``steps`` (one value
every ``trainer.log_every_n_steps`` optimizer steps); means, not single values, because one
logged value is one minibatch's loss.
"""

from __future__ import annotations

from typing import Any

from src.analysis.ablation import Cell, fmt_stats, is_loss_column, logged_values, mean_std

# the order a table shows the terms in: the sum, then the RPN's, then the RoI heads'
ORDER = ("train/loss", "train/loss_objectness", "train/loss_rpn_box_reg",
         "train/loss_classifier", "train/loss_box_reg")  # fmt: skip


def check_steps(steps: int) -> int:
    """``steps`` itself when it is a whole number >= 1; else ValueError naming it."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"loss steps must be a whole number of logged values >= 1, got {steps!r}")
    return steps


def logged_losses(job: dict[str, Any]) -> dict[str, list[float]]:
    """``{train/loss*: [value, ...]}`` of a job's ``csv/metrics.csv`` in step order, one value
    per step (the file's last line for a step logged twice); {} without the file. Epoch
    aggregates (``*_epoch`` columns) are left out: they are not logged values of one step."""
    out = {}
    for column, points in logged_values(job).items():
        if not is_loss_column(column):
            continue
        # {step (or, without one, its place in the file): value}: a later line for a step wins
        by_step = {
            (-1, i) if step is None else (step, 0): v for i, (_, step, v) in enumerate(points)
        }
        out[column] = [by_step[k] for k in sorted(by_step)]
    return out


def loss_ends(job: dict[str, Any], steps: int = 10) -> dict[str, tuple[float, float, int]]:
    """``{term: (start, end, values logged)}``: the mean of the term's first and of its last
    ``steps`` logged values (a job that logged fewer than ``2 * steps`` shares values between
    the two means)."""
    steps = check_steps(steps)
    return {
        column: (_mean(values[:steps]), _mean(values[-steps:]), len(values))
        for column, values in logged_losses(job).items()
        if values
    }


def terms(jobs: list[dict[str, Any]]) -> list[str]:
    """The loss columns any of ``jobs`` logged, in ``ORDER`` (others after it)."""
    seen = {c for job in jobs for c in logged_losses(job)}
    return [c for c in ORDER if c in seen] + sorted(seen - set(ORDER))


def cell_loss(cell: Cell, term: str, steps: int = 10) -> dict[str, Any] | None:
    """One term over a cell's finished seeds: ``start`` and ``end`` as (mean, sample std, n),
    ``seeds`` (those whose job logged the term: a job without ``metrics.csv`` or without
    the term drops out), ``logged`` (the fewest values one of them logged); None when no job
    logged it."""
    # (seed, its ends) per job: a cell may hold two jobs of one seed (a rerun)
    ends = [
        (int(job.get("seed", 0)), e[term])
        for job in cell.ok
        if term in (e := loss_ends(job, steps))
    ]
    if not ends:
        return None
    return {
        "start": mean_std([e[0] for _, e in ends]),
        "end": mean_std([e[1] for _, e in ends]),
        "seeds": sorted(seed for seed, _ in ends),
        "logged": min(e[2] for _, e in ends),
    }


def loss_rows(cells: list[Cell], steps: int = 10) -> list[dict[str, Any]]:
    """losses.csv: one dict per (cell, term): ``task``, ``variant``, ``row``, ``group``,
    ``seeds`` (those that logged the term), ``term``, ``start_mean``, ``start_std``,
    ``end_mean``, ``end_std``, ``n`` (seeds), ``logged`` (fewest values logged by one job),
    ``steps`` (values averaged at each end)."""
    rows = []
    for cell in cells:
        for term in terms(cell.ok):
            stats = cell_loss(cell, term, steps)
            if stats is None:
                continue
            (s_mean, s_std, n), (e_mean, e_std, _) = stats["start"], stats["end"]
            rows.append({"task": cell.task, "variant": cell.variant, "row": cell.row,
                         "group": cell.label, "seeds": " ".join(map(str, stats["seeds"])),
                         "term": term, "start_mean": s_mean, "start_std": s_std,
                         "end_mean": e_mean, "end_std": e_std, "n": n,
                         "logged": stats["logged"], "steps": steps})  # fmt: skip
    return rows


def loss_markdown(cells: list[Cell], task: str, steps: int = 10) -> str:
    """A table of the task's cells: each loss term as ``start → end`` (mean ± std over seeds)."""
    mine = [c for c in cells if c.task == task and c.ok]
    columns = terms([j for c in mine for j in c.ok])
    if not columns:
        return ""
    labels = {c.label for c in mine}
    lines = [
        f"Training losses: mean of the first → of the last {steps} logged values of each term "
        "(one value every `trainer.log_every_n_steps` steps), mean ± std over seeds; "
        "`(seeds …)`: those that logged the term, where not all did; `†`: a job logged fewer "
        f"than {2 * steps} values, so its two means share some.",
        "",
        "| row | seeds | " + " | ".join(c.removeprefix("train/") for c in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for cell in mine:
        parts = []
        for term in columns:
            stats = cell_loss(cell, term, steps)
            if stats is None:
                parts.append("-")
                continue
            text = f"{_fmt(stats['start'])} → {_fmt(stats['end'])}"
            if stats["seeds"] != cell.seeds:
                text += f" (seeds {','.join(map(str, stats['seeds']))})"
            parts.append(text + (" †" if stats["logged"] < 2 * steps else ""))
        name = cell.name + (f" `{cell.label}`" if len(labels) > 1 and cell.label else "")
        seeds = ",".join(map(str, cell.seeds))
        lines.append(f"| {name} | {seeds} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _fmt(stats: tuple[float, float, int]) -> str:
    return fmt_stats(stats, digits=2)
