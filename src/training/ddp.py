"""DDP children for Hydra multirun jobs.

Lightning starts DDP ranks 1..N-1 by re-running the command line with ``hydra.run.dir``
set. Under ``-m`` that command is the whole sweep, so each child would run every job
(lightning-hydra-template issue 393). For a multirun job we instead start the children on
the job's own saved config, in the job's own folder: each rank composes exactly the
config that rank 0 runs.

Launchers (``hydra/launcher=...``): the basic one and ``joblib`` run a job in a process of
this machine, and Lightning starts that job's ranks (as above); ``submitit_local`` does the
same in a process of its own; under ``submitit_slurm`` (``slurm``) srun starts one task per
rank and Lightning's SLURMEnvironment wires them from SLURM's variables. A launcher setting
that cannot give a job its ranks is refused before the first job (``LauncherCheck``, a Hydra
callback) and again in each job (``check_launcher``: a swept trainer key is known only there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from lightning_fabric.strategies.launchers import subprocess_script
from omegaconf import DictConfig, ListConfig
from pytorch_lightning.strategies.launchers import subprocess_script as pl_subprocess_script

from src.training.cli import EXIT_CONFIG_ERROR
from src.training.config import ConfigError

_lightning_hydra_cmd = subprocess_script._hydra_subprocess_cmd
# What Lightning's launcher writes into os.environ for the ranks it starts (and OMP_NUM_THREADS,
# with torch's thread count, split between them). Left there after a job, LOCAL_RANK tells the
# next job of a multirun in the same process that its ranks were started by someone else.
_RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
                   "OMP_NUM_THREADS")  # fmt: skip
_before_job: tuple[dict[str, str | None], int] | None = None


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
    """Make Lightning's subprocess launcher start multirun-job children the way above, and
    remember the rank variables as they are before the job (``release`` puts them back)."""
    global _before_job
    # pytorch_lightning's launcher imported the function by name: both bindings are replaced
    for module in (subprocess_script, pl_subprocess_script):
        module._hydra_subprocess_cmd = _job_subprocess_cmd
    _before_job = {k: os.environ.get(k) for k in _RANK_VARIABLES}, torch.get_num_threads()


def release() -> None:
    """After a job: the rank variables and thread count as they were before it, so that the
    next job in this process (basic launcher, a joblib worker) starts ranks of its own."""
    global _before_job
    if _before_job is None:
        return
    variables, threads = _before_job
    for key, value in variables.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.set_num_threads(threads)
    _before_job = None


# ---- which launcher settings can give a job its ranks ------------------------------------
def _devices(trainer: DictConfig) -> int | None:
    """Devices per node that ``trainer.devices`` asks for; None for all visible ("auto", -1)."""
    devices = trainer.get("devices")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, list | ListConfig):
        return len(devices)
    return devices if isinstance(devices, int) and devices != -1 else None


def launcher_problem(launcher: DictConfig, trainer: DictConfig) -> str | None:
    """Why ``hydra.launcher`` cannot run jobs of ``trainer``'s ranks, in one line; None if it can."""
    target = str(launcher.get("_target_", ""))
    gpu = str(trainer.get("accelerator", "auto")) != "cpu"
    devices, nodes = _devices(trainer), trainer.get("num_nodes", 1)
    asked = (
        f"trainer.accelerator={trainer.get('accelerator')} trainer.devices={trainer.get('devices')}"
    )
    if target.endswith("JoblibLauncher"):
        n_jobs = launcher.get("n_jobs", -1)
        if n_jobs != 1 and gpu and (devices is None or devices > 1):
            return (
                f"hydra/launcher=joblib runs hydra.launcher.n_jobs={n_jobs} jobs side by side, and "
                f"each job's DDP ranks would take the same GPUs ({asked}): use "
                "hydra.launcher.n_jobs=1, trainer.devices=1, or hydra/launcher=slurm"
            )
    elif target.endswith("LocalLauncher"):  # submitit_local
        tasks, gpus = launcher.get("tasks_per_node", 1), launcher.get("gpus_per_node") or 0
        if tasks != 1:
            return (
                f"hydra/launcher=submitit_local with hydra.launcher.tasks_per_node={tasks} would "
                "run each job that many times in one folder (outside SLURM nothing makes its "
                "tasks ranks of one run): keep tasks_per_node=1; Lightning starts the "
                "trainer.devices ranks itself"
            )
        if gpu and gpus < (devices or 1):
            return (
                f"hydra/launcher=submitit_local shows a job hydra.launcher.gpus_per_node={gpus} "
                f"GPUs (CUDA_VISIBLE_DEVICES) but {asked} needs {devices or 'at least 1'}: set "
                "hydra.launcher.gpus_per_node"
            )
    elif target.endswith("SlurmLauncher"):
        tasks, gpus = launcher.get("tasks_per_node", 1), launcher.get("gpus_per_node")
        ranks = devices if devices is not None else (gpus if gpu else 1)
        if tasks != ranks or launcher.get("nodes", 1) != nodes:
            return (
                f"hydra/launcher=slurm starts hydra.launcher.tasks_per_node={tasks} task(s) on "
                f"each of hydra.launcher.nodes={launcher.get('nodes', 1)} node(s), one per DDP "
                f"rank, so they must equal trainer.devices={trainer.get('devices')} (per node; "
                f"auto: hydra.launcher.gpus_per_node={gpus}) and trainer.num_nodes={nodes}; "
                "e.g. trainer=ddp"
            )
        if gpu and not (gpus or launcher.get("gres") or launcher.get("gpus_per_task")):
            return (
                f"hydra/launcher=slurm asks SLURM for no GPU (hydra.launcher.gpus_per_node={gpus}) "
                f"but {asked} trains on GPUs: set hydra.launcher.gpus_per_node"
            )
    return None


def check_launcher(trainer: DictConfig, launcher: DictConfig | None = None) -> None:
    """Raise ConfigError if this multirun's launcher cannot run ``trainer``'s ranks."""
    if launcher is None:
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        launcher = hc.launcher
    problem = launcher_problem(launcher, trainer)
    if problem is not None:
        raise ConfigError(problem)


class LauncherCheck(Callback):
    """Refuse a sweep whose launcher cannot run its jobs' ranks before any job starts (the jobs
    check again: a swept trainer key is only known to them)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        trainer = config.get("trainer")  # predict and proposals have no trainer
        problem = None if trainer is None else launcher_problem(config.hydra.launcher, trainer)
        if problem is not None:
            # as src.training.cli prints a ConfigError; Hydra turns a callback's exception
            # into a warning and goes on, so exit here
            sys.stderr.write(f"error: {problem}\n")
            sys.exit(EXIT_CONFIG_ERROR)
