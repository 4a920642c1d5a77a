"""Training and evaluation transforms: torchvision.transforms.v2 on (Image, target dict).

Resizing to the shorter side is left to the detector's own transform, so evaluation
images stay untouched and predictions come back in original image coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

PER_BOX_KEYS = ("labels", "iscrowd", "area")


class RandomZoom(v2.Transform):
    """Scale jitter that keeps the canvas: resize by ``s ~ U(lo, hi)``, then crop (s > 1)
    or zero-pad (s < 1) back to the original size at a random offset.

    The detector resizes every image to its shorter side afterwards, so only a change of
    object size *relative to the canvas* survives; a plain resize would be undone.
    Boxes are clamped to the canvas; follow with ``SanitizeBoundingBoxes``.
    """

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range={scale_range!r}; allowed: 0 < lo <= hi")
        self.scale_range = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))

        def offset(new: int, old: int) -> int:
            low, high = min(0, new - old), max(0, new - old)  # negative offsets pad
            return int(torch.randint(low, high + 1, ()))

        return {
            "size": [new_h, new_w],
            "top": offset(new_h, height),
            "left": offset(new_w, width),
            "height": height,
            "width": width,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.resize, inpt, params["size"], antialias=True)
        out = self._call_kernel(
            F.crop, out, params["top"], params["left"], params["height"], params["width"]
        )
        return out


def _per_box_tensors(inputs: Any) -> tuple:
    """Every per-box tensor of the target, so that dropped boxes lose all their fields."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) else inputs
    return tuple(target[k] for k in PER_BOX_KEYS if k in target)


def train_transforms(
    hflip_prob: float = 0.5, scale_jitter: tuple[float, float] | None = None
) -> Callable | None:
    """Horizontal flip with ``hflip_prob`` and, if given, ``RandomZoom(scale_jitter)``.

    Returns ``f(image, target) -> (image, target)``, or None when there is nothing to do.
    """
    if not 0.0 <= float(hflip_prob) <= 1.0:
        raise ValueError(f"hflip_prob={hflip_prob!r}; allowed: a probability in [0, 1]")
    steps: list[v2.Transform] = []
    if hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=float(hflip_prob)))
    if scale_jitter is not None:
        if len(scale_jitter) != 2:
            raise ValueError(f"scale_jitter={scale_jitter!r}; allowed: (lo, hi) or None")
        steps += [
            RandomZoom(tuple(scale_jitter)),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_per_box_tensors),
        ]
    return v2.Compose(steps) if steps else None


def eval_transforms() -> Callable | None:
    """Evaluation sees the images as they are: the model resizes, predictions map back."""
    return None
