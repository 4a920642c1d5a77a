"""DDP children for Hydra multirun jobs.

Lightning starts DDP ranks 1..N-1 by re-running the command line with ``hydra.run.dir``
set. Under ``-m`` that command is the whole sweep, so each child would run every job
(lightning-hydra-template issue 393). For a multirun job we instead start the children on
the job's own saved config, in the job's own folder: each rank composes exactly the
config that rank 0 runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from lightning_fabric.strategies.launchers import subprocess_script

_lightning_hydra_cmd = subprocess_script._hydra_subprocess_cmd


def _job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return _lightning_hydra_cmd(local_rank=local_rank)
    if not hc.output_subdir:
        raise RuntimeError("a multirun DDP job needs hydra.output_subdir to re-compose its config")
    job_dir = hc.runtime.output_dir
    command = [
        sys.executable, "-m", "src.train",
        "--config-path", f"{job_dir}/{hc.output_subdir}", "--config-name", "config",
        f"hydra.run.dir={job_dir}", "hydra.output_subdir=null",
        f"hydra.job.name={hc.job.name}_ddp_rank{local_rank}",
    ]  # fmt: skip
    return command, get_original_cwd()


def install() -> None:
    """Make Lightning's subprocess launcher start multirun-job children the way above."""
    subprocess_script._hydra_subprocess_cmd = _job_subprocess_cmd
