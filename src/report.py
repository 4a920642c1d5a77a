"""python -m src.report MULTIRUN_DIR [--out DIR]: a sweep's ablation table beside the paper's.

Reads every job folder's results.json (written by src.train) and writes report.md,
report.csv and report.png (AP bars per job, next to the paper's AP for the same row).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from src.analysis.paper import (
    DETECTION_COLUMNS,
    PROPOSAL_COLUMNS,
    TABLE1_RPN,
    paper_detection,
)
from src.models.variants import PAPER_ROWS

OUR_DETECTION = ("map_50", "map", "map_small", "map_medium", "map_large")
OUR_PROPOSAL = ("ar_100", "ar_1000", "ar_small", "ar_medium", "ar_large")


def load_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every ``*/results.json`` under ``sweep_dir`` (job folders), ordered by job number."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{str(sweep)!r} is not a folder (give a multirun folder)")
    files = sorted(sweep.glob("*/results.json"), key=lambda p: _job_key(p.parent.name))
    if not files and (sweep / "results.json").is_file():
        files = [sweep / "results.json"]  # a single run's folder works too
    if not files:
        raise FileNotFoundError(
            f"no results.json in {str(sweep)!r} or its job folders: is it an outputs/.../multiruns/DATE folder?"
        )
    jobs = []
    for f in files:
        record = json.loads(f.read_text())
        record["job"] = f.parent.name
        jobs.append(record)
    return jobs


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def job_row(job: dict[str, Any]) -> dict[str, Any]:
    """Percent values of one job; test/* (best checkpoint) when present, else the last val/*."""
    metrics = job.get("metrics", {})
    stage = "test" if any(k.startswith("test/") for k in metrics) else "val"

    def pick(key: str) -> float | None:
        v = metrics.get(f"{stage}/{key}")
        return None if v is None or v < 0 else 100 * v

    row = {
        "job": job["job"],
        "overrides": " ".join(job.get("overrides", [])) or "(defaults)",
        "row": job.get("row", job.get("variant", "?")),
        "backbone": job.get("backbone", "?"),
        "status": job.get("status", "?"),
        "error": job.get("error", ""),
        "stage": stage,
    }
    row |= {c: pick(k) for c, k in zip(DETECTION_COLUMNS, OUR_DETECTION)}
    row |= {c: pick(k) for c, k in zip(PROPOSAL_COLUMNS, OUR_PROPOSAL)}
    return row


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _label(row: str) -> str:
    return f"({PAPER_ROWS[row]}) {row}" if row in PAPER_ROWS else row


def markdown(rows: list[dict[str, Any]], sweep: str) -> str:
    det_head = " | ".join(DETECTION_COLUMNS)
    lines = [
        f"# Ablation report: `{sweep}`",
        "",
        "Ours: this sweep's jobs (percent; test split at the best `val/map` checkpoint).",
        "Paper: ResNet-50 on COCO minival (Lin et al. 2017): Table 3 for (a)-(c), Table 2",
        "(Fast R-CNN on fixed FPN proposals) for (d)-(f). Compare trends, not digits, unless",
        "the sweep ran the paper's recipe.",
        "",
        "## Detection",
        "",
        f"| job | row | backbone | overrides | {det_head} | paper | {det_head} |",
        "|" + "---|" * (5 + 2 * len(DETECTION_COLUMNS)),
    ]
    for r in rows:
        source, paper = paper_detection(r["row"])
        ours = " | ".join(_fmt(r[c]) for c in DETECTION_COLUMNS)
        theirs = (
            " | ".join(_fmt(v) for v in paper)
            if paper
            else " | ".join("-" * 1 for _ in DETECTION_COLUMNS)
        )
        lines.append(
            f"| {r['job']} | {_label(r['row'])} | {r['backbone']} | `{r['overrides']}` | {ours} | "
            f"{source or '-'} | {theirs} |"
        )
    prop_head = " | ".join(PROPOSAL_COLUMNS)
    lines += [
        "",
        "## RPN proposals (class-agnostic recall; paper: Table 1)",
        "",
        f"| job | row | {prop_head} | paper {prop_head} |",
        "|" + "---|" * (2 + 2 * len(PROPOSAL_COLUMNS)),
    ]
    for r in rows:
        ours = " | ".join(_fmt(r[c]) for c in PROPOSAL_COLUMNS)
        paper = TABLE1_RPN.get(r["row"])
        theirs = (
            " | ".join(_fmt(v) for v in paper)
            if paper
            else " | ".join("-" for _ in PROPOSAL_COLUMNS)
        )
        lines.append(f"| {r['job']} | {_label(r['row'])} | {ours} | {theirs} |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {r['job']} (`{r['overrides']}`): {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['job']}: {_label(r['row'])}" for r in rows]
    x = range(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 4), 4.5))
    for ax, title, values in (
        (left, "ours: AP and AP50 (%)", [(r["AP"], r["AP50"]) for r in rows]),
        (right, "paper: AP and AP50 (%)", [(p[1], p[0]) if p else (None, None)
                                           for p in (paper_detection(r["row"])[1] for r in rows)]),
    ):  # fmt: skip
        ap = [v[0] or 0 for v in values]
        ap50 = [v[1] or 0 for v in values]
        ax.bar([i - 0.2 for i in x], ap, width=0.4, label="AP")
        ax.bar([i + 0.2 for i in x], ap50, width=0.4, label="AP50")
        ax.set_xticks(list(x), labels, rotation=30, ha="right")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and report.png; returns their paths."""
    rows = [job_row(j) for j in load_jobs(sweep_dir)]
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "png": out / "report.png"}
    paths["md"].write_text(markdown(rows, str(sweep_dir)))
    with paths["csv"].open("w", newline="") as f:
        fields = list(rows[0]) + [f"paper_{c}" for c in DETECTION_COLUMNS + PROPOSAL_COLUMNS]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            _, det = paper_detection(r["row"])
            prop = TABLE1_RPN.get(r["row"])
            extra = {f"paper_{c}": v for c, v in zip(DETECTION_COLUMNS, det or ())}
            extra |= {f"paper_{c}": v for c, v in zip(PROPOSAL_COLUMNS, prop or ())}
            writer.writerow(r | extra)
    plot(rows, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun folder: outputs/train/multiruns/DATE")
    parser.add_argument("--out", default=None, help="where to write (default: the sweep folder)")
    args = parser.parse_args(argv)
    paths = write_report(args.sweep_dir, args.out)
    print(paths["md"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
