"""One box painter with one palette: the data tour, the prediction panels and ``predict`` all
draw with :func:`draw_boxes`, so a category has the same colour everywhere.

Colours are keyed by the dataset's original category id (never by the contiguous label, which
depends on the dataset's category list), crowd regions are white.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

CROWD_COLOUR = (255, 255, 255)


@functools.cache
def _font_file() -> str | None:
    """A TrueType font that matplotlib (a dependency) ships, so labels can be sized; None if
    missing (PIL's small bitmap font is used then)."""
    try:
        from matplotlib import font_manager

        return font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    except Exception:
        return None


def label_size(height: int, width: int) -> int:
    """Font size in pixels that reads at the image's size: 3.5% of its shorter side, >= 11."""
    return max(11, round(0.035 * min(height, width)))


def _text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # black on light backgrounds, white on dark ones (Rec. 601 luma)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def category_colour(category_id: int) -> tuple[int, int, int]:
    """A fixed, well-spread RGB colour per category id (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((int(category_id) * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: Tensor,
    boxes: Tensor,
    category_ids: Sequence[int] | Tensor,
    names: Mapping[int, str],
    *,
    scores: Tensor | None = None,
    iscrowd: Sequence[int] | Tensor | None = None,
    width: int = 2,
) -> Tensor:
    """Draw boxes captioned ``name`` (or ``name 0.87`` with scores) on a copy of ``image``.

    Args:
        image: uint8 [3,H,W] (plain tensor or tv_tensors.Image).
        boxes: [N,4] xyxy in the image's pixels.
        category_ids: N original category ids; ``names`` maps them to class names.
        scores: optional [N] detection scores, shown after the name.
        iscrowd: optional N flags; crowd boxes are white and captioned ``"(crowd)"``.

    Returns:
        uint8 [3,H,W]; captions on a filled background in the box's colour, in black or white
        text whichever reads better, sized by :func:`label_size`.
    """
    image = torch.as_tensor(image).as_subclass(Tensor).to("cpu", torch.uint8)
    boxes = torch.as_tensor(boxes).as_subclass(Tensor).detach().to("cpu", torch.float32)
    ids = [int(c) for c in category_ids]
    if not ids:
        return image.clone()
    crowd = [bool(c) for c in iscrowd] if iscrowd is not None else [False] * len(ids)
    captions = [names.get(c, str(c)) for c in ids]
    if scores is not None:
        captions = [f"{n} {float(s):.2f}" for n, s in zip(captions, scores)]
    captions = [f"{n} (crowd)" if c else n for n, c in zip(captions, crowd)]
    colours = [CROWD_COLOUR if c else category_colour(i) for i, c in zip(ids, crowd)]
    font = _font_file()
    # captions on a filled box in the class colour: readable on snow, grass or grey
    return draw_bounding_boxes(
        image, boxes, captions, colors=colours, width=width, fill_labels=True,
        label_colors=[_text_colour(c) for c in colours], font=font,
        font_size=label_size(*image.shape[-2:]) if font else None,
    )  # fmt: skip


def side_by_side(pairs: Sequence[tuple[Tensor, Tensor]], pad: int = 4) -> Tensor:
    """Rows of (left, right) uint8 [3,H,W] images -> one uint8 grid, images padded to one size."""
    tiles = [img for pair in pairs for img in pair]
    h = max(t.shape[1] for t in tiles)
    w = max(t.shape[2] for t in tiles)
    padded = [torch.nn.functional.pad(t, (0, w - t.shape[2], 0, h - t.shape[1])) for t in tiles]
    return make_grid(torch.stack(padded), nrow=2, padding=pad, pad_value=255)
