"""A sweep's jobs grouped into the paper's tables: seeds pooled, mean ± std, the paper beside.

Each job folder holds ``results.json`` (``src.train``: task, variant, seed, metrics),
``csv/metrics.csv`` (per-epoch history) and ``.hydra/config.yaml`` (the composed config). Jobs
whose composed configs differ only in ``seed`` and bookkeeping (``_BOOKKEEPING``: tags, paths,
loggers, progress bar...) form one *cell*, whatever overrides composed them, so seeds run in
different sweeps or sessions pool; a job folder without ``config.yaml`` (older records) is
grouped by its overrides instead. The job's ``task`` picks the paper's table it belongs to:

- ``rpn`` -> Table 1 (class-agnostic AR of the proposals),
- ``fast_rcnn`` -> Table 2 (AP of Fast R-CNN on fixed proposals),
- ``faster_rcnn`` -> Table 3 (AP of Faster R-CNN; the paper has rows (a)-(c) only).

A row's difference from row (c) of the same table and settings is *marked* when it exceeds the
seed spread: ``|mean - mean_c| > std + std_c`` with at least two seeds on both sides. A row that
no (c) shares its settings with is named under its table, with the settings that differ from the
nearest (c), since it is never marked.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.analysis.metrics import METRICS, monitor_for, paper_columns
from src.analysis.paper import TABLE1, TABLE2, TABLE3

# task -> (the paper's table, its columns, the paper's rows)
TABLES: dict[str, tuple[str, tuple, dict[str, dict[str, float]]]] = {
    "rpn": ("Table 1", paper_columns("Table 1"), TABLE1),
    "fast_rcnn": ("Table 2", paper_columns("Table 2"), TABLE2),
    "faster_rcnn": ("Table 3", paper_columns("Table 3"), TABLE3),
}
PROTOCOLS = {
    "rpn": "the RPN alone, class-agnostic proposal recall (Section 5.1)",
    "fast_rcnn": "Fast R-CNN on a fixed set of proposals (Section 5.2.1)",
    "faster_rcnn": "Faster R-CNN, RPN and heads trained jointly on shared features",
}
# the per-epoch curves drawn for each task: (metric column in metrics.csv, title)
CURVES = {
    "rpn": (("val/ar_1000", "AR@1k"), ("val/ar_small", "AR@1k small"),
            ("val/ar_100", "AR@100"), ("train/loss", "training loss")),
    "fast_rcnn": (("val/map", "AP"), ("val/map_small", "AP small"),
                  ("val/mar_100", "AR@100 (detections)"), ("train/loss", "training loss")),
    "faster_rcnn": (("val/map", "AP"), ("val/map_small", "AP small"),
                    ("val/ar_1000", "AR@1k (proposals)"), ("train/loss", "training loss")),
}  # fmt: skip
# a run with fewer than 1000 test proposals logs no AR@1000 (src/training/module.py): draw its
# AR@100 in that panel rather than leave it empty
_FALLBACK = {"val/ar_1000": ("val/ar_100", "AR@100 (proposals)")}
# overrides that do not split a row into groups: the seed, and what the variant and task
# already name (a row is (task, variant) whichever override made it)
_NOT_GROUPING = re.compile(
    r"^(seed|experiment|\+sweep|hydra\.[\w.]+|model\.variant|model\.task|fpn\.lateral"
    r"|fpn\.top_down|fpn\.levels)="
)
# keys of the composed config that choose the row (the cell's task and variant name it)
_ROW_KEYS = re.compile(r"^(model\.variant|model\.task|fpn\.lateral|fpn\.top_down|fpn\.levels)$")
# keys of the composed config that do not change what is trained or measured: names, where
# files go, what is logged and shown, which checkpoints are kept besides the best (its monitor
# and mode choose the model tested, so they still group; runs from before the last_checkpoint
# callback had model_checkpoint.save_last instead, and pool with those after it)
_BOOKKEEPING = re.compile(
    r"^(seed|tags|run_name|task_name|paths|logger|hydra|callbacks\.(progress_bar|prediction_panel"
    r"|timer|lr_monitor|rng_state|last_checkpoint|model_checkpoint\.(save_last|dirpath|filename"
    r"|auto_insert_metric_name|enable_version_counter|verbose))"
    r"|trainer\.(default_root_dir|enable_progress_bar))(\.|$)"
)
# at most this many settings name a cell in tables and legends (the rest: "+N")
_LABEL_KEYS = 6


def load_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``sweep_dir`` (job folders, any depth), ordered by folder.

    Each record gains ``job`` (its folder, relative to ``sweep_dir``) and ``dir``.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{str(sweep)!r} is not a folder (give a multirun folder)")
    files = sorted(sweep.rglob("results.json"), key=lambda p: _job_key(p.parent, sweep))
    if not files:
        raise FileNotFoundError(
            f"no results.json in {str(sweep)!r} or its job folders: is it an outputs/.../multiruns/DATE folder?"
        )
    jobs = []
    for f in files:
        try:
            record = json.loads(f.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{f} is not valid JSON: {error}") from None
        record["job"] = str(f.parent.relative_to(sweep)) if f.parent != sweep else sweep.name
        record["dir"] = str(f.parent)
        jobs.append(record)
    return jobs


def load_sweeps(sweep_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """``load_jobs`` of each folder in turn; with several, each ``job`` is prefixed by its
    folder's name (``demo8/shapes_c_fpn_s2``). A folder named twice is refused."""
    folders = [Path(d) for d in sweep_dirs]
    if len({f.resolve() for f in folders}) < len(folders):
        raise ValueError(f"a sweep folder is named twice in {[str(f) for f in folders]}")
    jobs = []
    for folder in folders:
        for job in load_jobs(folder):
            if len(folders) > 1 and job["job"] != folder.name:
                job["job"] = f"{folder.name}/{job['job']}"
            jobs.append(job)
    return jobs


def _job_key(folder: Path, sweep: Path) -> tuple:
    parts = folder.relative_to(sweep).parts if folder != sweep else ()
    return tuple((int(p), p) if p.isdigit() else (1 << 30, p) for p in parts)


def job_values(job: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """(stage, percent values by metric key): ``test/*`` (best checkpoint) when present, else
    the last ``val/*``; a metric COCO could not compute (-1) is left out."""
    metrics = job.get("metrics") or {}
    stage = "test" if any(k.startswith("test/") for k in metrics) else "val"
    values = {}
    for key, value in metrics.items():
        prefix, _, name = key.partition("/")
        if prefix == stage and value is not None and value >= 0:
            values[name] = 100 * float(value)
    return stage, values


def group_label(job: dict[str, Any]) -> str:
    """The job's overrides but the seed, hydra.* and those that choose the row (experiment,
    model.variant, model.task, fpn switches)."""
    kept = [o for o in job.get("overrides", []) if not _NOT_GROUPING.match(o)]
    return " ".join(kept)


def job_settings(job: dict[str, Any]) -> dict[str, str]:
    """What puts a job in its cell besides (task, variant): ``{dotted key: value}`` of its
    composed config (``.hydra/config.yaml``, interpolations unresolved) less the seed,
    bookkeeping and the row's keys; ``ckpt_path`` only when it is the model evaluated
    (``train=false``), not a run resumed; null settings are left out, as if not set.
    Without ``config.yaml``: the overrides that ``group_label`` keeps, less bookkeeping,
    ``{key: value}``."""
    path = Path(job.get("dir", "")) / ".hydra" / "config.yaml"
    if not path.is_file():
        pairs = (o.partition("=") for o in group_label(job).split())
        # ``~callbacks.progress_bar`` is bookkeeping as much as ``callbacks.progress_bar``
        return {k: v for k, _, v in pairs if not _BOOKKEEPING.match(k.lstrip("~+"))}
    from omegaconf import OmegaConf

    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # a broken file is named, not skipped: it would split a cell
        raise ValueError(f"{path} is not a readable Hydra config: {error}") from None
    flat = _flatten(config)
    if flat.get("train") == "true":  # a checkpoint resumed from, not the model measured
        flat.pop("ckpt_path", None)
    # a null setting is left out: a config written before the key existed (an option added
    # later, off by default) then matches one that has it at null
    return {
        k: v
        for k, v in flat.items()
        if v != "null" and not _BOOKKEEPING.match(k) and not _ROW_KEYS.match(k)
    }


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts to ``{"a.b": json value}``; lists stay one value."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: json.dumps(node, sort_keys=True)}


@dataclass
class Cell:
    """One row of one table: the jobs of a (task, variant, other overrides) over seeds."""

    task: str
    variant: str
    row: str | None
    label: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    # job_settings() of its jobs (all equal): what the reference row (c) must share
    settings: tuple = ()

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j.get("status") == "ok"]

    @property
    def seeds(self) -> list[int]:
        return sorted(int(j.get("seed", 0)) for j in self.ok)

    def stats(self, key: str) -> tuple[float, float, int] | None:
        """(mean, sample std (0 for one seed), n) of a metric in percent over finished seeds."""
        values = [v for j in self.ok if (v := job_values(j)[1].get(key)) is not None]
        return mean_std(values) if values else None

    @property
    def name(self) -> str:
        """``(c) fpn``: the paper's letter and our variant name."""
        return f"({self.row}) {self.variant}" if self.row else self.variant


def group(jobs: list[dict[str, Any]], by_machine: bool = False) -> list[Cell]:
    """Cells of equal (task, variant, ``job_settings``), ordered by table, row and label; a job
    without a task (older results) counts as faster_rcnn. A cell's ``label`` names the settings
    in which it differs from other cells of its table (``key=value``; ``key=-``: not set).
    ``by_machine``: ``machine_name`` is one more setting, so runs of one config on two machines
    are two cells (``machine=AMD EPYC 9B14, AVX512``), each compared with row (c) of its own
    machine, instead of one cell pooling both."""
    cells: dict[tuple, Cell] = {}
    for job in jobs:
        task = job.get("task") or "faster_rcnn"
        variant = job.get("variant") or "?"
        settings = job_settings(job)
        if by_machine:
            settings["machine"] = json.dumps(machine_name(job))
        settings = tuple(sorted(settings.items()))
        key = (task, variant, settings)
        if key not in cells:
            cells[key] = Cell(task, variant, job.get("row"), "", settings=settings)
        cells[key].jobs.append(job)
    for task in TABLES:
        _name_settings([c for c in cells.values() if c.task == task])
    order = {t: i for i, t in enumerate(TABLES)}
    return sorted(cells.values(), key=lambda c: (order.get(c.task, 9), c.row or "z", c.label))


def _name_settings(cells: list[Cell]) -> None:
    """Each cell's label: its values of the settings that are not the same in all ``cells``."""
    if not cells:
        return
    as_dicts = [dict(c.settings) for c in cells]
    keys = list(dict.fromkeys(k for d in as_dicts for k in d))
    differing = [k for k in keys if len({d.get(k) for d in as_dicts}) > 1]
    # a path written as an interpolation (``${paths.data_dir}/glyphs``) follows a plain
    # setting that differs too (``data.synthetic.kind``): name the plain one alone
    plain = [k for k in differing if not any("${" in str(d.get(k)) for d in as_dicts)]
    differing = plain or differing
    # settings that split the cells alike (the data set and the proposal files made for it)
    # name them once, by the one with the shortest values
    by_length = sorted(differing, key=lambda k: max(len(str(d.get(k))) for d in as_dicts))
    kept: dict[tuple[int, ...], str] = {}
    for key in by_length:
        values = [d.get(key) for d in as_dicts]
        kept.setdefault(tuple(values.index(v) for v in values), key)
    # the machine (``group(by_machine=True)``) is named even where a setting splits alike
    differing = [k for k in differing if k in kept.values() or k == "machine"]
    shown = {k: _distinct_parts([d.get(k) for d in as_dicts]) for k in differing}
    for i, cell in enumerate(cells):
        parts = [_setting(k, shown[k][i]) for k in differing[:_LABEL_KEYS]]
        if len(differing) > _LABEL_KEYS:
            parts.append(f"+{len(differing) - _LABEL_KEYS}")
        cell.label = " ".join(parts)


def _distinct_parts(values: list[str | None]) -> list[str | None]:
    """Paths shown by the folders that tell them apart: ``/study/shapes_det_b/p.npz`` among
    ``/study/glyphs_det/p.npz`` is ``…/shapes_det_b/…``; other values unchanged."""
    paths = [v for v in values if v is not None]
    if len(set(paths)) < 2 or not all("/" in v for v in paths):
        return values
    parts = [v.split("/") for v in paths]
    # keep at least one component of the shortest path between what is cut off either side
    room = min(map(len, parts)) - 1
    head = min(_shared_lead(parts), room)
    tail = min(_shared_lead([p[::-1] for p in parts]), room - head)
    shown = iter(
        "/".join(["…"] * (head > 0) + p[head : len(p) - tail] + ["…"] * (tail > 0)) for p in parts
    )
    return [None if v is None else next(shown) for v in values]


def _shared_lead(sequences: list[list[str]]) -> int:
    """How many leading items all ``sequences`` have in common."""
    same = itertools.takewhile(lambda items: len(set(items)) == 1, zip(*sequences))
    return sum(1 for _ in same)


def _setting(key: str, value: str | None) -> str:
    if value is None:
        return f"{key}=-"
    if value == "":  # an override without a value (``~callbacks.x``)
        return key
    return f"{key}={value.strip(chr(34))}"


# what else besides the CPU or GPU changes a run's bits, shown where two runs of a seed differ in it
_SOFTWARE = ("threads", "torch", "torchvision", "pytorch_lightning", "python")


def machine_name(job: dict[str, Any], also: tuple[str, ...] = ()) -> str:
    """What ran a job, from results.json's ``machine`` (src.training.machine): the GPUs it ran
    on, else its CPU with PyTorch's instruction set (``AMD EPYC, AVX512``), then the caps on
    the instruction set it ran under (``DNNL_MAX_CPU_ISA=AVX2``), then the fields of ``also``
    (``threads 2``); older records say "machine not recorded"."""
    machine = job.get("machine")
    if not isinstance(machine, dict):
        return "machine not recorded"
    if machine.get("gpus"):
        parts = [" + ".join(map(str, machine["gpus"]))]
    else:
        parts = [str(machine[k]) for k in ("cpu", "cpu_capability") if machine.get(k)]
    # a capped run rounds as the capped host does (study section 40): it is another machine
    caps = machine.get("isa_caps")
    parts += [f"{k}={v}" for k, v in caps.items()] if isinstance(caps, dict) else []
    parts += [f"{k} {machine.get(k, '-')}" for k in also]
    return ", ".join(parts) if parts else "machine not recorded"


def repeated_seeds(cell: Cell) -> dict[int, list[dict[str, Any]]]:
    """``{seed: its finished jobs}`` for each seed that ``cell`` holds more than once."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for job in cell.ok:
        by_seed.setdefault(int(job.get("seed", 0)), []).append(job)
    return {seed: jobs for seed, jobs in sorted(by_seed.items()) if len(jobs) > 1}


def _repeats_markdown(cells: list[Cell], key: str) -> list[str]:
    """Lines naming each seed a cell pools more than once, with each run's machine and value."""
    lines = []
    for cell in cells:
        for seed, jobs in repeated_seeds(cell).items():
            machines = [j.get("machine") or {} for j in jobs]
            also = tuple(k for k in _SOFTWARE if len({str(m.get(k)) for m in machines}) > 1)
            runs = "; ".join(
                f"`{j['job']}` ({machine_name(j, also)}): {_value(j, key)}" for j in jobs
            )
            lines.append(f"- {cell.name}, seed {seed} × {len(jobs)}: {runs}")
    if not lines:
        return []
    return [
        "",
        "Seeds run more than once in one cell; its mean ± std counts every run. A seed run twice",
        "is not an independent draw even on another machine (the same initial weights and data",
        "order; only rounding differs), and on one CPU machine with the same threads and software",
        "a rerun trains the same bits (`benchmarks/rerun_bits.py` compares runs): either way it",
        "narrows the spread more than a new seed would. `python -m src.report --by-machine`",
        "gives each machine its own cells.",
        "",
        *lines,
    ]


def _value(job: dict[str, Any], key: str) -> str:
    value = job_values(job)[1].get(key)
    name = next((m.paper for m in METRICS if m.key == key), key)
    return f"{name} -" if value is None else f"{name} {value:.1f}"


def common_overrides(cells: list[Cell]) -> str:
    """The overrides (less seed and row choice) that every job of ``cells`` was run with."""
    per_job = [group_label(j).split() for c in cells for j in c.jobs]
    if not per_job:
        return ""
    return " ".join(o for o in per_job[0] if all(o in others for others in per_job[1:]))


def beats_spread(cell: Cell, reference: Cell, key: str) -> bool | None:
    """Whether ``cell`` differs from ``reference`` by more than their seed spread on ``key``
    (None: fewer than two seeds on a side, or the metric missing)."""
    a, b = cell.stats(key), reference.stats(key)
    if a is None or b is None or a[2] < 2 or b[2] < 2:
        return None
    return abs(a[0] - b[0]) > a[1] + b[1]


def reference_cell(cells: list[Cell], cell: Cell) -> Cell | None:
    """Row (c) FPN of the same table and the same other overrides."""
    for c in cells:
        if c.task == cell.task and c.row == "c" and c.settings == cell.settings:
            return c
    return None


def differing_settings(cell: Cell, other: Cell) -> list[str]:
    """The settings (``job_settings`` keys) whose values differ between two cells, sorted."""
    a, b = dict(cell.settings), dict(other.settings)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _unmatched_markdown(cells: list[Cell], mine: list[Cell]) -> list[str]:
    """Lines naming each row of ``mine`` that no row (c) shares its settings with (with
    ``--by-machine`` the machine is one of them), so a missing ``*`` is not read as "within the
    spread", with the settings in which it differs from the nearest (c) (the fewest differing
    settings); or one line saying the table has no (c) at all."""
    fpns = [c for c in mine if c.row == "c"]
    if not fpns:
        return ["", "No row (c) in this table, so no row is compared with it or marked."]
    lines = []
    for cell in mine:
        if cell.row == "c" or reference_cell(cells, cell) is not None:
            continue
        # among (c)s that differ alike (say, one per machine), the one with most seeds
        nearest, keys = min(
            ((c, differing_settings(cell, c)) for c in fpns),
            key=lambda p: (len(p[1]), -len(p[0].ok)),
        )
        shown = ", ".join(f"`{k}`" for k in keys[:6])
        shown += f" and {len(keys) - 6} more" if len(keys) > 6 else ""
        label, nearest_label = (f" `{c.label}`" if c.label else "" for c in (cell, nearest))
        lines.append(
            f"- {cell.name}{label}: no row (c) ran with its settings; the nearest, "
            f"{nearest.name}{nearest_label}, differs in {shown}"
        )
    if not lines:
        return []
    return ["", "Rows not compared with (c), so never marked:", "", *lines]


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std (0 for one value), n) of a non-empty list."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0, len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), len(values)


def fmt_stats(stats: tuple[float, float, int] | None, digits: int = 1) -> str:
    if stats is None:
        return "-"
    mean, std, n = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def is_loss_column(column: str | None) -> bool:
    """A training loss term as logged per step (``train/loss``, ``train/loss_*``), not an epoch
    aggregate (``*_epoch``)."""
    return bool(column) and column.startswith("train/loss") and not column.endswith("_epoch")


def logged_values(job: dict[str, Any]) -> dict[str, list[tuple[int | None, int | None, float]]]:
    """A job's ``csv/metrics.csv``, ``{column: [(epoch, step, value), ...]}`` in file order
    (epoch or step None where the line has none); {} without the file."""
    path = Path(job["dir"]) / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    return _read_metrics(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_metrics(
    path: str, mtime_ns: int
) -> dict[str, list[tuple[int | None, int | None, float]]]:
    """logged_values() of one metrics.csv, read once per version of the file: the figures, the
    loss tables and report.csv all ask for every column of every job."""
    out: dict[str, list[tuple[int | None, int | None, float]]] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            for column, value in row.items():
                if column in ("epoch", "step", None) or value in ("", None):
                    continue
                try:
                    epoch, step = (
                        int(float(row[k])) if row.get(k) else None for k in ("epoch", "step")
                    )
                    out.setdefault(column, []).append((epoch, step, float(value)))
                except ValueError:
                    raise ValueError(
                        f"{path}, line {line}: column {column!r} (epoch {row.get('epoch')!r}, step "
                        f"{row.get('step')!r}) holds {value!r}; numbers are needed"
                    ) from None
    return out


def history(job: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """A job's per-epoch values from ``csv/metrics.csv``: ``{column: [(epoch, value)]}``;
    training losses averaged over each epoch's logged steps (lines without an epoch left out)."""
    out = {}
    for column, points in logged_values(job).items():
        per_epoch: dict[int, list[float]] = {}
        for epoch, _, value in points:
            if epoch is not None:
                per_epoch.setdefault(epoch, []).append(value)
        if per_epoch:
            out[column] = sorted((e, sum(v) / len(v)) for e, v in per_epoch.items())
    return out


def curves(cell: Cell, column: str) -> list[tuple[int, float, float, int]]:
    """``[(epoch, mean, std, n)]`` of one column over the cell's seeds (epochs all seeds have)."""
    per_epoch: dict[int, list[float]] = {}
    for job in cell.ok:
        for epoch, value in history(job).get(column, []):
            if value >= 0:
                per_epoch.setdefault(epoch, []).append(value)
    return [(epoch, *mean_std(per_epoch[epoch])) for epoch in sorted(per_epoch)]


def curve_panels(cells: list[Cell], task: str) -> list[tuple[str, str]]:
    """``[(metrics.csv column, title)]`` of the task's figure, with a fallback (``_FALLBACK``)
    in place of a column that none of ``cells`` logged."""
    panels = []
    for column, title in CURVES[task]:
        if column in _FALLBACK and not any(curves(cell, column) for cell in cells):
            column, title = _FALLBACK[column]
        panels.append((column, title))
    return panels


def curve_table(cells: list[Cell], task: str) -> list[dict[str, Any]]:
    """The numbers behind the task's figure, one dict per (row, curve, epoch): keys ``row``,
    ``variant``, ``group``, ``column``, ``epoch``, ``mean``, ``std``, ``n`` (the column's own
    unit: fractions for AP/AR, loss values for ``train/*``). Besides the figure's curves, each
    loss term the jobs logged (``train/loss_*``, epoch means), so a user can see which head
    stops learning when."""
    mine = [c for c in cells if c.task == task and c.ok]
    if not mine:
        return []
    columns = [column for column, _ in curve_panels(mine, task)]
    logged = {c for cell in mine for job in cell.ok for c in history(job)}
    columns += sorted(c for c in logged if is_loss_column(c) and c not in columns)
    return [
        {"row": cell.row, "variant": cell.variant, "group": cell.label, "column": column,
         "epoch": epoch, "mean": mean, "std": std, "n": n}
        for column in columns
        for cell in mine
        for epoch, mean, std, n in curves(cell, column)
    ]  # fmt: skip


_ROW_COLOURS = "abcdef"  # the paper's rows (a)-(f) take tab10's first six colours, in order
_DASHES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def curve_styles(cells: list[Cell]) -> dict[int, dict[str, Any]]:
    """A matplotlib style per cell, keyed by ``id(cell)``: its colour says the row, its line
    and marker say the settings (``cell.label``), so that every curve of a figure can be told
    apart (a colour cycle alone repeats after ten cells; up to 24 settings a row are told
    apart here) and one row's cells (e.g. on two data sets or hosts) share a hue.

    Returns ``{id(cell): {"color": "C0".."C9", "linestyle": str, "marker": str}}``; rows
    outside (a)-(f) take the colours after those, in order of appearance."""
    labels = sorted({c.label for c in cells})
    extra = [r for r in dict.fromkeys(c.row for c in cells) if r not in tuple(_ROW_COLOURS)]
    styles = {}
    for cell in cells:
        if cell.row is not None and cell.row in _ROW_COLOURS:
            colour = _ROW_COLOURS.index(cell.row)
        else:
            colour = len(_ROW_COLOURS) + extra.index(cell.row)
        k = labels.index(cell.label)
        # dashes and markers step together through len(_DASHES) * len(_MARKERS) pairs
        styles[id(cell)] = {
            "color": f"C{colour % 10}",
            "linestyle": _DASHES[k % len(_DASHES)],
            "marker": _MARKERS[(k + k // len(_DASHES)) % len(_MARKERS)],
        }
    return styles


def plot_curves(cells: list[Cell], task: str, path: Path) -> Path | None:
    """One figure per table: each curve of CURVES[task], a line per row, ±std shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [c for c in cells if c.task == task and c.ok]
    if not mine:
        return None
    panels = curve_panels(mine, task)

    def legend(cell: Cell) -> str:  # the label: where rows come from several settings
        return f"{cell.name} {cell.label}".strip()

    styles = curve_styles(mine)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (column, title) in zip(axes, panels):
        scale = 1.0 if column.startswith("train/") else 100.0
        for cell in mine:
            points = curves(cell, column)
            if not points:
                continue
            epochs = [p[0] for p in points]
            mean = [scale * p[1] for p in points]
            std = [scale * p[2] for p in points]
            n = max(p[3] for p in points)
            (line,) = ax.plot(epochs, mean, ms=3, label=f"{legend(cell)} (n={n})",
                              **styles[id(cell)])  # fmt: skip
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{TABLES[task][0]} protocol: {PROTOCOLS[task]} (mean ± std over seeds)")
    # below the panels, not over the first one: labels that name settings are long
    longest = max(map(len, labels), default=0)
    columns = max(1, min(4, len(labels), int(fig.get_figwidth() / (0.06 * (longest + 8)))))
    legend_rows = -(-len(labels) // columns)
    bottom = min(0.5, 0.02 + 0.045 * legend_rows)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    fig.set_figheight(fig.get_figheight() / (1 - bottom))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def table_markdown(cells: list[Cell], task: str) -> str:
    """One table in Markdown: ours mean ± std (n seeds) per column, the paper's value beside,
    ``*`` on a value that differs from row (c) by more than the seed spread."""
    table, columns, paper = TABLES[task]
    mine = [c for c in cells if c.task == task]
    if not mine:
        return ""
    head = " | ".join(f"{m.paper} | paper" for m in columns)
    labels = list(dict.fromkeys(c.label for c in mine))
    common = common_overrides(mine)
    lines = [
        f"## {table}: {PROTOCOLS[task]}",
        "",
        "Ours: mean ± std over seeds (percent; test split at the best checkpoint), `*` where the",
        "difference from row (c) of the same settings exceeds the seed spread (|Δ| > std + std_c,",
        "n ≥ 2 both).",
        f"Paper: ResNet-50 on COCO minival (Lin et al. 2017), {table}.",
        "",
        *([f"Overrides of every job: `{common}`", ""] if common else []),
        f"| row | seeds | {head} |",
        "|---|---|" + "---:|---:|" * len(columns),
    ]
    for cell in mine:
        ref = reference_cell(cells, cell)
        theirs = paper.get(cell.variant, {})
        parts = []
        for m in columns:
            text = fmt_stats(cell.stats(m.key))
            if ref is not None and ref is not cell and beats_spread(cell, ref, m.key):
                text += " *"
            parts.append(f"{text} | {theirs.get(m.key, '-')}")
        seeds = ",".join(str(s) for s in cell.seeds) or "-"
        name = cell.name + (f" `{cell.label}`" if len(labels) > 1 and cell.label else "")
        name += " (ours only)" if not theirs else ""
        lines.append(f"| {name} | {seeds} | " + " | ".join(parts) + " |")
    lines += _unmatched_markdown(cells, mine)
    # each repeated run shown by the metric its task selects checkpoints on (AP; AR1k for the RPN)
    lines += _repeats_markdown(mine, monitor_for(task).partition("/")[2])
    if task == "faster_rcnn":
        lines += [
            "",
            "The paper's Table 3 trains RPN and Fast R-CNN without sharing features, and has rows "
            "(a)-(c) only; ours are torchvision's joint training with shared features, and rows "
            "(d)-(f) are our extension.",
        ]
    if task == "fast_rcnn":
        sources = sorted({str((j.get("proposals") or {}).get("train")) for c in mine for j in c.ok})
        lines += ["", f"Fixed proposals (train): {', '.join(sources)}."]
    return "\n".join(lines) + "\n"
