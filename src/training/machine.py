"""Which machine and software ran a job, for results.json (``machine``).

Two runs of one config and seed agree bit for bit only on the same kernels: on CPU, PyTorch
picks them by the instruction set (``cpu_capability``: AVX2, AVX512...), so the study's
records say which one ran each job, and the report can tell a seed repeated on another machine
from one run twice.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import torch


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's ``model name`` (Linux), else what ``platform`` knows, else ``"unknown"``."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(gpu_ids: Sequence[int] | None = None) -> dict[str, object]:
    """``{cpu, cpu_capability, cpu_count, threads, gpus, python, torch, torchvision,
    pytorch_lightning}``. ``threads``: PyTorch's intra-op threads now (a CPU reduction's order
    depends on them); ``gpus``: the names of the CUDA devices ``gpu_ids`` the job ran on (``[]``:
    it ran on CPU; None: not known, as for a job that failed before its trainer ran). Only named
    devices are queried, so a CPU job never starts CUDA."""
    gpus: list[str] | None = None
    if gpu_ids is not None:
        gpus = []
        for index in gpu_ids:
            try:
                gpus.append(torch.cuda.get_device_name(index))
            except Exception:  # a record is no reason to fail a finished job
                gpus.append(f"cuda:{index} (name unreadable)")
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpus": gpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "pytorch_lightning": _version("pytorch-lightning"),
    }
