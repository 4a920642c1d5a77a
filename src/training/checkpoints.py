"""Read what a checkpoint was trained as, and refuse to resume it as something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from src.models.detector import resolve_variant

# detector arguments that change the set of weights
ARCHITECTURE_KEYS = ("backbone", "norm", "widths", "out_channels", "representation_size")


def load_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a DetectionModule saved in a Lightning checkpoint."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:
        raise ValueError(
            f"ckpt_path={str(ckpt_path)!r} is not a readable checkpoint: {error}"
        ) from error
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "detector" not in hparams or "categories" not in hparams:
        raise ValueError(
            f"ckpt_path={str(ckpt_path)!r} was not written by this framework's DetectionModule "
            "(no detector/categories hyperparameters)"
        )
    return hparams


def architecture(detector: dict[str, Any]) -> dict[str, Any]:
    """The weight-defining part of ``build_detector`` arguments, with the paper row resolved."""
    spec = resolve_variant(
        detector["variant"],
        lateral=detector.get("lateral"),
        top_down=detector.get("top_down"),
        levels=detector.get("levels"),
    )
    arch = {"variant": spec.name, "levels": list(spec.levels)}
    arch |= {k: detector.get(k) for k in ARCHITECTURE_KEYS}
    return arch


def check_resumable(ckpt_path: str | Path, detector: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError if ``ckpt_path`` holds another architecture than ``detector``."""
    hparams = load_hparams(ckpt_path)
    saved, wanted = architecture(hparams["detector"]), architecture(detector)
    diff = {k: (saved[k], wanted[k]) for k in saved if saved[k] != wanted[k]}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"ckpt_path={str(ckpt_path)!r} holds a different model ({lines}); "
            "resume with the settings it was trained with, or drop ckpt_path to start afresh"
        )
    return hparams
