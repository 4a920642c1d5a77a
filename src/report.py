"""python -m src.report MULTIRUN_DIR [--out DIR]: a sweep's ablation table beside the paper's.

Reads every job folder's results.json (written by src.train: the metrics, and the variant
the built model says it is) and writes report.md, report.csv and report.png (AP bars per
job, next to the paper's AP for the same variant).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from src.analysis.metrics import paper_columns
from src.analysis.paper import TABLE1, paper_detection

DETECTION = paper_columns("Table 3")  # AP@0.5, AP, AP_s, AP_m, AP_l
PROPOSALS = paper_columns("Table 1")  # AR100, AR1k, AR1k_s, AR1k_m, AR1k_l


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
        try:
            record = json.loads(f.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{f} is not valid JSON: {error}") from None
        record["job"] = f.parent.name
        jobs.append(record)
    return jobs


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def job_row(job: dict[str, Any]) -> dict[str, Any]:
    """One job: its variant and row as the built model said, and percent values keyed by our
    metric keys; test/* (best checkpoint) when present, else the last val/*."""
    metrics = job.get("metrics") or {}
    stage = "test" if any(k.startswith("test/") for k in metrics) else "val"

    def pick(key: str) -> float | None:
        v = metrics.get(f"{stage}/{key}")
        return None if v is None or v < 0 else 100 * v

    row = {
        "job": job["job"],
        "overrides": " ".join(job.get("overrides", [])) or "(defaults)",
        "variant": job.get("variant") or "?",
        "row": job.get("row"),
        "backbone": job.get("backbone", "?"),
        "status": job.get("status", "?"),
        "error": job.get("error", ""),
        "stage": stage,
    }
    row |= {m.key: pick(m.key) for m in (*DETECTION, *PROPOSALS)}
    return row


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _label(row: dict[str, Any]) -> str:
    return f"({row['row']}) {row['variant']}" if row["row"] else row["variant"]


def _cells(values: dict[str, float] | None, columns) -> str:
    return " | ".join(_fmt((values or {}).get(m.key)) for m in columns)


def markdown(rows: list[dict[str, Any]], sweep: str) -> str:
    det_head = " | ".join(m.paper for m in DETECTION)
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
        "|" + "---|" * (5 + 2 * len(DETECTION)),
    ]
    for r in rows:
        source, paper = paper_detection(r["variant"])
        lines.append(
            f"| {r['job']} | {_label(r)} | {r['backbone']} | `{r['overrides']}` | "
            f"{_cells(r, DETECTION)} | {source or '-'} | {_cells(paper, DETECTION)} |"
        )
    prop_head = " | ".join(m.paper for m in PROPOSALS)
    lines += [
        "",
        "## RPN proposals (class-agnostic recall; paper: Table 1)",
        "",
        f"| job | row | {prop_head} | paper {prop_head} |",
        "|" + "---|" * (2 + 2 * len(PROPOSALS)),
    ]
    for r in rows:
        paper = TABLE1.get(r["variant"])
        lines.append(
            f"| {r['job']} | {_label(r)} | {_cells(r, PROPOSALS)} | {_cells(paper, PROPOSALS)} |"
        )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {r['job']} (`{r['overrides']}`): {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['job']}: {_label(r)}" for r in rows]
    x = range(len(rows))
    papers = [paper_detection(r["variant"])[1] or {} for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 4), 4.5))
    for ax, title, values in (
        (left, "ours: AP and AP@0.5 (%)", rows),
        (right, "paper: AP and AP@0.5 (%)", papers),
    ):
        ax.bar([i - 0.2 for i in x], [v.get("map") or 0 for v in values], width=0.4, label="AP")
        ax.bar([i + 0.2 for i in x], [v.get("map_50") or 0 for v in values], width=0.4,
               label="AP@0.5")  # fmt: skip
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
    columns = (*DETECTION, *PROPOSALS)
    with paths["csv"].open("w", newline="") as f:
        fields = list(rows[0]) + [f"paper_{m.key}" for m in columns]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            paper = (paper_detection(r["variant"])[1] or {}) | TABLE1.get(r["variant"], {})
            writer.writerow(r | {f"paper_{m.key}": paper.get(m.key) for m in columns})
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
