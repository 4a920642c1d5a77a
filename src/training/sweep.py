"""A Hydra callback that makes a sweep's exit status say whether every job succeeded.

Under ``-m`` a failed job writes ``results.json`` with ``status: failed`` and the sweep goes
on with the next job (src.train); without this callback the sweep would then exit 0, and a
script running it would not notice.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
EXIT_JOBS_FAILED = 1


def failed_jobs(sweep_dir: str | Path) -> dict[str, str]:
    """``{job folder name: error}`` of every job under ``sweep_dir`` whose results.json says it
    failed (or is not valid JSON). Folders without one (sweeps of other tasks) are not judged."""
    failed = {}
    for path in sorted(Path(sweep_dir).glob("*/results.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            failed[path.parent.name] = "results.json is not readable JSON"
            continue
        if record.get("status") != "ok":
            failed[path.parent.name] = str(record.get("error", record.get("status")))
    return failed


class SweepExitStatus(Callback):
    """After every job of a multirun has run: exit non-zero if one of them failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        failed = failed_jobs(sweep_dir)
        if failed:
            jobs = "; ".join(f"job {k}: {v}" for k, v in failed.items())
            log.error("%d job(s) of the sweep in %s failed: %s", len(failed), sweep_dir, jobs)
            sys.exit(EXIT_JOBS_FAILED)
