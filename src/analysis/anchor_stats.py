"""How many positive RPN anchors each ground-truth box gets, per COCO size, per variant.

    python -m src.analysis.anchor_stats data/synthetic --split train2017 --images 40 \
        --min-size 256 --max-size 256 --anchor-scale 0.5 --variants fpn p2_only

The RPN samples 256 anchors per image, half of them positive at most, uniformly from all
positives. When one object size gets many more positive anchors than another, the RPN trains
mostly on that size. FPN gives each size its own level and stride, so a box of any size meets
about the same number of anchors; on a single map (p2_only, c4, c5) a large box overlaps far
more anchor positions than a small one. ``--positives-per-box K`` measures the RPN with the
diagnostic cap of ``src.models.rpn_sampling`` (``model.rpn_positives_per_box=K``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.ops import box_iou

from src.data.coco import CocoDetection
from src.data.coco_index import OBJECT_SIZES as SIZES
from src.data.coco_index import object_sizes
from src.models.detector import VARIANTS, build_detector
from src.models.inference import to_float_images


@torch.no_grad()
def positives_per_box(
    model, dataset: CocoDetection, num_images: int
) -> dict[str, tuple[int, float]]:
    """{size: (number of boxes, mean positive anchors per box)} over the first images.

    Positives are the RPN's own training labels (IoU >= 0.7, or the best anchor of a box; at
    most k per box with ``rpn_positives_per_box=k``), each counted for the box it matched,
    measured in the model's resized image, where the anchors live.
    """
    model.eval()
    boxes_seen = dict.fromkeys(SIZES, 0)
    positives = dict.fromkeys(SIZES, 0)
    for i in range(min(num_images, len(dataset))):
        image, target = dataset[i]
        images, targets = model.transform(to_float_images([image]), [target])
        features = list(model.backbone(images.tensors).values())
        anchors = model.rpn.anchor_generator(images, features)[0]
        boxes = targets[0]["boxes"]
        if len(boxes) == 0:
            continue
        labels, _ = model.rpn.assign_targets_to_anchors([anchors], targets)
        owner = box_iou(boxes, anchors).argmax(dim=0)  # the box the matcher assigns
        matched = torch.where(labels[0] == 1, owner, -1)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for j, k in enumerate(object_sizes(areas.numpy())):
            size = SIZES[k]
            boxes_seen[size] += 1
            positives[size] += int((matched == j).sum())
    return {s: (boxes_seen[s], positives[s] / max(boxes_seen[s], 1)) for s in SIZES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="a COCO-layout dataset folder")
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--anchor-scale", type=float, default=1.0)
    parser.add_argument(
        "--positives-per-box", type=int, default=None,
        help="the RPN's diagnostic cap (model.rpn_positives_per_box); default: none",
    )  # fmt: skip
    args = parser.parse_args(argv)

    dataset = CocoDetection(args.root, args.split, train=False)
    num_classes = len(dataset.category_ids) + 1
    print(f"{args.root} {args.split}, first {args.images} images; positive anchors per box")
    print(f"| variant | {' | '.join(SIZES)} | large / small |")
    print("|---|---:|---:|---:|---:|")
    for variant in args.variants:
        model = build_detector(
            variant, args.backbone, num_classes, min_size=args.min_size,
            max_size=args.max_size, anchor_scale=args.anchor_scale,
            rpn_positives_per_box=args.positives_per_box,
        )  # fmt: skip
        stats = positives_per_box(model, dataset, args.images)
        cells = " | ".join(f"{stats[s][1]:.1f} ({stats[s][0]} boxes)" for s in SIZES)
        ratio = stats["large"][1] / max(stats["small"][1], 1e-9)
        print(f"| {variant} | {cells} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
