"""Draw boxes with class names (and scores) on uint8 images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

# A fixed palette so a class keeps its colour across images and epochs.
PALETTE = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
]  # fmt: skip


def draw_detections(
    image: Tensor,
    boxes: Tensor,
    labels: Sequence[int],
    names: dict[int, str],
    scores: Tensor | None = None,
    width: int = 2,
) -> Tensor:
    """Args: image uint8 [3,H,W]; boxes [N,4] xyxy; labels N category ids; names id -> name.

    Returns:
        uint8 [3,H,W] with one box per object, captioned ``name`` or ``name 0.87``.
    """
    image = image.as_subclass(Tensor).to("cpu", torch.uint8)
    boxes = boxes.as_subclass(Tensor).detach().to("cpu", torch.float32)
    labels = [int(lb) for lb in labels]
    if len(labels) == 0:
        return image
    captions = [names.get(lb, str(lb)) for lb in labels]
    if scores is not None:
        captions = [f"{c} {float(s):.2f}" for c, s in zip(captions, scores)]
    colors = [PALETTE[lb % len(PALETTE)] for lb in labels]
    return draw_bounding_boxes(image, boxes, captions, colors=colors, width=width)


def side_by_side(pairs: Sequence[tuple[Tensor, Tensor]], pad: int = 4) -> Tensor:
    """Rows of (left, right) uint8 [3,H,W] images -> one uint8 grid, images padded to one size."""
    tiles = [img for pair in pairs for img in pair]
    h = max(t.shape[1] for t in tiles)
    w = max(t.shape[2] for t in tiles)
    padded = [torch.nn.functional.pad(t, (0, w - t.shape[2], 0, h - t.shape[1])) for t in tiles]
    return make_grid(torch.stack(padded), nrow=2, padding=pad, pad_value=255)
