"""Do two runs of one command train the same bits? Their logged training losses, side by side.

    python benchmarks/rerun_bits.py RUN_DIR [RUN_DIR ...] [--key train/loss] [--steps 9,19,29]

Each RUN_DIR is a ``python -m src.train`` output folder (its ``csv/metrics.csv``). Prints a
Markdown table of ``--key`` at the steps every run logged (or at ``--steps``), exactly as the CSV
holds it (float32 printed in full, so equal strings are equal bits), then, per run, the first
step where it differs from the first run and the largest relative difference over those steps.

Used by the study (docs/results/study_2026-12-01.md) to tell run-to-run nondeterminism on one
machine from a change of machine: reruns of one command on one machine should print identical
columns; the same command where the CPU's vector instructions differ (another host, or
``ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41``) need not.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def logged(run_dir: Path, key: str) -> dict[int, str]:
    """{step: value string} of ``key`` in ``run_dir/csv/metrics.csv`` (rows that logged it)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; RUN_DIR must be a src.train output folder")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and key not in rows[0]:
        raise SystemExit(f"{path}: no column {key!r}; it has {sorted(rows[0])}")
    return {int(float(r["step"])): r[key] for r in rows if r.get(key)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--key", default="train/loss")
    parser.add_argument("--steps", default=None, help="comma-separated steps (default: all shared)")
    args = parser.parse_args(argv)

    series = [logged(run, args.key) for run in args.runs]
    shared = sorted(set.intersection(*(set(s) for s in series)))
    if args.steps:
        wanted = [int(s) for s in args.steps.split(",")]
        missing = [s for s in wanted if s not in shared]
        if missing:
            raise SystemExit(f"--steps {missing}: not logged by every run; shared: {shared}")
        shared = wanted
    if not shared:
        raise SystemExit(f"the runs share no logged step of {args.key!r}")

    print(f"| run | {' | '.join(f'step {s}' for s in shared)} |")
    print(f"|---|{'---:|' * len(shared)}")
    for run, s in zip(args.runs, series):
        print(f"| {run} | {' | '.join(s[step] for step in shared)} |")
    print()
    first = series[0]
    for run, s in zip(args.runs[1:], series[1:]):
        differ = [step for step in shared if s[step] != first[step]]
        if not differ:
            print(f"{run}: bit-identical to {args.runs[0]} at all {len(shared)} steps")
            continue
        # relative to the first run's value; an AR of exactly 0 must not divide by zero
        rel = max(
            abs(float(s[t]) - float(first[t])) / max(abs(float(first[t])), 1e-12) for t in differ
        )
        print(f"{run}: first differs at step {differ[0]}; largest relative difference {rel:.1e}")


if __name__ == "__main__":
    main(sys.argv[1:])
