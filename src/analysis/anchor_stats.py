"""How many positive RPN anchors each ground-truth box gets, per COCO size, per variant.

    python -m src.analysis.anchor_stats data/synthetic --split train2017 --images 40 \
        --min-size 256 --max-size 256 --anchor-scale 0.5 --variants fpn p2_only

The RPN samples 256 anchors per image, half of them positive at most, uniformly from all
positives. When one object size gets many more positive anchors than another, the RPN trains
mostly on that size. FPN gives each size its own level and stride, so a box of any size meets
about the same number of anchors; on a single map (p2_only, c4, c5) a large box overlaps far
more anchor positions than a small one. ``--positives-per-box K`` measures the RPN with the
diagnostic cap of ``src.models.rpn_sampling`` (``model.rpn_positives_per_box=K``).

``--checkpoint CKPT`` instead reads a trained model (an RPN of Table 1 or a Faster R-CNN) and
says, per size, how its objectness scores the positive anchors it was trained on, and how many
negatives it scores as objects: which sizes the RPN has learned. It then counts the proposals
the RPN hands on per image once the pre-NMS top-n and NMS have run, at its training and its
test settings, and which boxes they cover: one map's top-n candidates can collapse under NMS
onto a few objects (``--pre-nms-top-n-train/-test`` try other counts on the same weights).

    python -m src.analysis.anchor_stats data/synthetic --split val2017 --images 40 \
        --checkpoint outputs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import box_area, box_iou

from src.data.coco import CocoDetection
from src.data.coco_index import OBJECT_SIZES as SIZES
from src.data.coco_index import object_sizes
from src.models.detector import VARIANTS, build_detector
from src.models.inference import to_float_images
from src.training.module import DetectionModule


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


def _resized_with_features(model, dataset: CocoDetection, num_images: int):
    """(ImageList, targets, backbone features) of each of the first images that has a box,
    resized as the model sees them; the model in eval mode."""
    model.eval()
    for i in range(min(num_images, len(dataset))):
        image, target = dataset[i]
        images, targets = model.transform(to_float_images([image]), [target])
        if len(targets[0]["boxes"]):
            yield images, targets, model.backbone(images.tensors)


@torch.no_grad()
def objectness_by_size(model, dataset: CocoDetection, num_images: int) -> dict[str, tuple]:
    """How a trained RPN scores its own training labels, over the first images.

    Returns:
        {size: (positive anchors, mean binary cross-entropy, share scored > 0.5)} for
        ``small``, ``medium``, ``large`` (each positive counted for the box it matched), and
        ``negative``: (negative anchors, mean cross-entropy, share scored > 0.5).
    """
    rows = {k: [0, 0.0, 0] for k in (*SIZES, "negative")}
    for images, targets, features in _resized_with_features(model, dataset, num_images):
        boxes = targets[0]["boxes"]
        maps = list(features.values())
        objectness, deltas = model.rpn.head(maps)
        objectness, _ = concat_box_prediction_layers(objectness, deltas)  # anchors' order
        anchors = model.rpn.anchor_generator(images, maps)[0]
        labels = model.rpn.assign_targets_to_anchors([anchors], targets)[0][0]
        owner = box_iou(boxes, anchors).argmax(dim=0)
        size = torch.as_tensor(object_sizes(box_area(boxes).numpy()))[owner]
        logits = objectness.flatten().float()
        for key, keep, label in [
            *[(s, (labels == 1) & (size == k), 1.0) for k, s in enumerate(SIZES)],
            ("negative", labels == 0, 0.0),
        ]:
            x = logits[keep]
            rows[key][0] += len(x)
            rows[key][1] += float(bce(x, torch.full_like(x, label), reduction="sum"))
            rows[key][2] += int((x > 0).sum())
    return {k: (n, total / max(n, 1), above / max(n, 1)) for k, (n, total, above) in rows.items()}


@torch.no_grad()
def proposals_kept(model, dataset: CocoDetection, num_images: int, counts: dict[str, tuple]):
    """What the RPN hands on per image, for each ``{name: (pre_nms, post_nms)}`` of ``counts``:
    ``pre_nms`` candidates a level before NMS, at most ``post_nms`` kept.

    The model runs in eval mode (batch-norm on its running statistics) with these counts put in
    place of its test-time ones, so its training counts give the proposals of a training step
    but for the features' batch statistics. The backbone runs once per image for all counts.

    Returns:
        {name: {"candidates": mean pre-NMS candidates per image (sum over levels of
        min(pre_nms, anchors of the level)), "kept": [proposals kept, per image], "covered":
        {size: (boxes, share of them with a proposal at IoU >= 0.5)}}}.
    """
    rpn = model.rpn
    saved = rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"]
    per_location = rpn.anchor_generator.num_anchors_per_location()
    stats = {
        name: {"candidates": [], "kept": [], "seen": dict.fromkeys(SIZES, 0),
               "hits": dict.fromkeys(SIZES, 0)}
        for name in counts
    }  # fmt: skip
    try:
        for images, targets, features in _resized_with_features(model, dataset, num_images):
            boxes = targets[0]["boxes"]
            sizes = [SIZES[k] for k in object_sizes(box_area(boxes).numpy())]
            anchors = [a * f.shape[-2] * f.shape[-1] for a, f in zip(per_location, features.values(), strict=True)]  # fmt: skip
            for name, (pre_nms, post_nms) in counts.items():
                rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"] = pre_nms, post_nms
                proposals = rpn(images, features)[0][0]
                row = stats[name]
                row["candidates"].append(sum(min(pre_nms, n) for n in anchors))
                row["kept"].append(len(proposals))
                best = box_iou(boxes, proposals).max(dim=1).values if len(proposals) else None
                for j, size in enumerate(sizes):
                    row["seen"][size] += 1
                    row["hits"][size] += int(best is not None and best[j] >= 0.5)
    finally:
        rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"] = saved
    return {
        name: {
            "candidates": sum(r["candidates"]) / max(len(r["candidates"]), 1),
            "kept": r["kept"],
            "covered": {s: (r["seen"][s], r["hits"][s] / max(r["seen"][s], 1)) for s in SIZES},
        }
        for name, r in stats.items()
    }


def print_proposals_kept(model, dataset, num_images: int, pre_nms_train=None, pre_nms_test=None):
    rpn = model.rpn
    counts = {
        setting: (pre or rpn._pre_nms_top_n[setting], rpn._post_nms_top_n[setting])
        for setting, pre in (("training", pre_nms_train), ("testing", pre_nms_test))
    }
    print(f"\nproposals per image after the pre-NMS top-n and NMS (IoU {rpn.nms_thresh})")
    print(
        "| setting | pre-NMS a level | kept at most | candidates | kept: mean (min-max) "
        f"| {' | '.join(f'{s} boxes covered' for s in SIZES)} |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for setting, stats in proposals_kept(model, dataset, num_images, counts).items():
        pre, post = counts[setting]
        kept = stats["kept"] or [0]
        cells = " | ".join(f"{share:.3f}" for _, share in stats["covered"].values())
        print(
            f"| {setting} | {pre} | {post} | {stats['candidates']:.0f} | "
            f"{sum(kept) / len(kept):.0f} ({min(kept)}-{max(kept)}) | {cells} |"
        )


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
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="a trained model: report how its RPN scores its positives per size instead",
    )  # fmt: skip
    for setting in ("train", "test"):
        parser.add_argument(
            f"--pre-nms-top-n-{setting}", type=int, default=None,
            help=f"with --checkpoint: candidates a level before NMS at {setting} time; "
            "default: the model's own",
        )  # fmt: skip
    args = parser.parse_args(argv)
    for flag in ("pre_nms_top_n_train", "pre_nms_top_n_test"):
        value = getattr(args, flag)
        if value is not None and (value < 1 or args.checkpoint is None):
            parser.error(f"--{flag.replace('_', '-')}={value}: give a positive count, "
                         "with --checkpoint")  # fmt: skip

    dataset = CocoDetection(args.root, args.split, train=False)
    if args.checkpoint is not None:
        model = DetectionModule.from_checkpoint(str(args.checkpoint)).model
        if model.rpn is None:
            raise SystemExit(f"{args.checkpoint}: a Fast R-CNN (Table 2) model has no RPN")
        stats = objectness_by_size(model, dataset, args.images)
        print(f"{args.checkpoint} on {args.root} {args.split}, first {args.images} images")
        print("| anchors | per image | mean BCE | scored > 0.5 |")
        print("|---|---:|---:|---:|")
        for key, (n, loss, above) in stats.items():
            name = "negative" if key == "negative" else f"positive, {key} box"
            print(f"| {name} | {n / args.images:.1f} | {loss:.3f} | {above:.3f} |")
        print_proposals_kept(
            model, dataset, args.images, args.pre_nms_top_n_train, args.pre_nms_top_n_test
        )
        return
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
