"""Parameters and GFLOPs of every detector variant at one input size.

    python -m src.analysis.summary --backbone resnet50 --size 800 1216 [--num-classes 91]

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one eval-mode forward
of a single image: FLOPs = 2 x multiply-adds (convolutions, matmuls). The box head is
charged for a fixed number of RoIs (``--rois``, default 1000 = torchvision's
``rpn_post_nms_top_n_test``), since an untrained RPN keeps a data-dependent number after
NMS. RoIAlign, NMS and box decoding have no counter formula and are left out (negligible).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from src.models.detector import PAPER_ROWS, VARIANTS, build_detector

COLUMNS = (
    "variant",
    "row",
    "params (M)",
    "backbone+FPN GFLOPs",
    "RPN GFLOPs",
    "box head GFLOPs",
    "total GFLOPs",
)


def _flops(fn) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def _random_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([width, height]) * 0.8
    wh = torch.rand(n, 2, generator=generator) * torch.tensor([width, height]) * 0.5 + 8
    return torch.cat([xy, torch.minimum(xy + wh, torch.tensor([width, height]))], dim=1)


@torch.no_grad()
def measure(
    variant: str,
    backbone: str = "resnet50",
    size: tuple[int, int] = (800, 1216),
    num_classes: int = 91,
    rois: int = 1000,
    **detector_kwargs,
) -> dict[str, object]:
    """Build one variant and count its parameters and FLOPs on one ``size`` (H, W) image.

    The transform is told ``min_size=min(size)``, ``max_size=max(size)`` so the image is
    not resized. Returns a row keyed by COLUMNS (GFLOPs as floats).
    """
    height, width = size
    model = build_detector(
        variant,
        backbone,
        num_classes,
        min_size=min(size),
        max_size=max(size),
        **detector_kwargs,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, height, width, generator=generator)
    images, _ = model.transform([image])
    backbone_flops, features = _flops(lambda: model.backbone(images.tensors))
    rpn_flops, _ = _flops(lambda: model.rpn(images, features))
    height_in, width_in = images.image_sizes[0]
    boxes = [_random_boxes(rois, height_in, width_in, generator)]
    heads = model.roi_heads

    def box_head():
        pooled = heads.box_roi_pool(features, boxes, images.image_sizes)
        return heads.box_predictor(heads.box_head(pooled))

    head_flops, _ = _flops(box_head)
    total = backbone_flops + rpn_flops + head_flops
    return {
        "variant": variant,
        "row": f"({PAPER_ROWS[model.variant_spec.name]})",
        "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
        "backbone+FPN GFLOPs": backbone_flops / 1e9,
        "RPN GFLOPs": rpn_flops / 1e9,
        "box head GFLOPs": head_flops / 1e9,
        "total GFLOPs": total / 1e9,
    }


def summary_table(
    backbone: str = "resnet50",
    size: tuple[int, int] = (800, 1216),
    num_classes: int = 91,
    rois: int = 1000,
    variants: Sequence[str] = VARIANTS,
    **detector_kwargs,
) -> str:
    """A Markdown table of :func:`measure` for every variant, with a header saying what counts."""
    rows = [measure(v, backbone, size, num_classes, rois, **detector_kwargs) for v in variants]
    lines = [
        f"{backbone}, one {size[0]}x{size[1]} image, {num_classes} classes (with background), "
        f"box head on {rois} RoIs; GFLOPs = 2 x multiply-adds / 1e9 "
        f"(torch {torch.__version__} FlopCounterMode; RoIAlign and NMS not counted).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c not in ("variant", "row") else "---" for c in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
        cells[2] = f"{row['params (M)']:.2f}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=91)
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    print(
        summary_table(args.backbone, tuple(args.size), args.num_classes, args.rois, args.variants)
    )


if __name__ == "__main__":
    main()
