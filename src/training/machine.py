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


# caps on the vector instructions the kernels may use: a run replays one from another kind of
# host only under the same caps (study section 40: PyTorch's and oneDNN's both)
ISA_CAPS = (
    "ATEN_CPU_CAPABILITY",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)


def describe(gpu_ids: Sequence[int] | None = None) -> dict[str, object]:
    """``{cpu, cpu_capability, cpu_count, threads, gpus, isa_caps, python, torch, torchvision,
    pytorch_lightning}``. ``isa_caps``: those of ``ISA_CAPS`` set in the environment
    (``{"DNNL_MAX_CPU_ISA": "AVX2"}``; ``{}``: none). ``threads``: PyTorch's intra-op threads
    now (a CPU reduction's order depends on them); ``gpus``: the names of the CUDA devices
    ``gpu_ids`` the job ran on (``[]``: it ran on CPU; None: not known, as for a job that failed
    before its trainer ran). Only named devices are queried, so a CPU job never starts CUDA."""
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
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "pytorch_lightning": _version("pytorch-lightning"),
    }
