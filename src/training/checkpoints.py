"""Read a checkpoint as data (never as code), and refuse to resume it as another model.

Every checkpoint the user names is read with ``torch.load(weights_only=True)``: tensors and
plain values only, so a file whose unpickling would call a function (``os.system``...) is
refused before anything in it runs. Our own checkpoints hold nothing else (a test checks).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from src.models.variants import VariantSpec

# detector arguments, besides the variant, that change the set of weights
ARCHITECTURE_KEYS = ("backbone", "norm", "widths", "out_channels", "representation_size")
# where DetectionModule.on_save_checkpoint puts what the built model says it is
SPEC_KEY = "variant_spec"


class CheckpointError(ValueError):
    """A file that is not a checkpoint of this framework, or not one that may be loaded."""


def load_checkpoint(path: str | Path, *, what: str = "ckpt_path") -> dict[str, Any]:
    """``torch.load`` of a file the user named, as data only.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a PyTorch file, or one that holds objects other than tensors and
            plain values (it could run code when unpickled); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such checkpoint file")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"{what}={str(path)!r} is not a PyTorch checkpoint (neither a torch.save zip "
            "archive nor a legacy pickle)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{what}={str(path)!r} holds objects other than tensors and plain values, so it is "
            f"not loaded (loading it could run code): {_offending_global(error)}"
        ) from None
    except Exception as error:
        raise CheckpointError(
            f"{what}={str(path)!r} is not a readable PyTorch checkpoint: {error}"
        ) from None


def _offending_global(error: Exception) -> str:
    """The line of torch's message naming what the file wanted to import (not its advice to
    load with weights_only=False, which is exactly what must not happen here)."""
    for line in str(error).splitlines():
        if "unsupported" in line.lower() or "WeightsUnpickler error" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ")
    return "torch.load(weights_only=True) refused it"


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive; older files are a pickle (protocol 2+ starts 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as f:
        return f.read(1) == b"\x80"


def load_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a DetectionModule saved in a Lightning checkpoint."""
    return _hparams(load_checkpoint(ckpt_path), ckpt_path)


def _hparams(ckpt: Any, ckpt_path: str | Path, *, needs: tuple[str, ...] = ()) -> dict[str, Any]:
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    missing = [k for k in needs if k not in ckpt] if isinstance(ckpt, dict) else list(needs)
    if not hparams or "detector" not in hparams or "categories" not in hparams or missing:
        raise CheckpointError(
            f"ckpt_path={str(ckpt_path)!r} was not written by this framework's DetectionModule "
            f"(no detector/categories hyperparameters{''.join(', no ' + k for k in missing)})"
        )
    return dict(hparams)


def architecture(spec: VariantSpec | dict[str, Any], detector: dict[str, Any]) -> dict[str, Any]:
    """What fixes the set of weights: the built model's variant spec and the ARCHITECTURE_KEYS."""
    spec = spec if isinstance(spec, dict) else spec.as_dict()
    return {**spec, **{k: detector.get(k) for k in ARCHITECTURE_KEYS}}


def check_resumable(
    ckpt_path: str | Path, spec: VariantSpec, detector: dict[str, Any]
) -> dict[str, Any]:
    """Raise CheckpointError if ``ckpt_path`` holds another model than the one built.

    Args:
        spec: the built model's ``variant_spec``; detector: its ``build_detector`` arguments.

    Returns:
        ``{"hparams": ..., "epoch": int, "global_step": int}`` of the checkpoint.
    """
    ckpt = load_checkpoint(ckpt_path)
    hparams = _hparams(ckpt, ckpt_path, needs=(SPEC_KEY,))
    saved, wanted = architecture(ckpt[SPEC_KEY], hparams["detector"]), architecture(spec, detector)
    diff = {k: (saved.get(k), wanted[k]) for k in wanted if saved.get(k) != wanted[k]}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"ckpt_path={str(ckpt_path)!r} holds a different model ({lines}); "
            "resume with the settings it was trained with, or drop ckpt_path to start afresh"
        )
    return {"hparams": hparams, "epoch": int(ckpt.get("epoch", 0)),
            "global_step": int(ckpt.get("global_step", 0))}  # fmt: skip
