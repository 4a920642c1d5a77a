"""Look at the data: ``python -m src.analysis.show ROOT --split val2017 --out DIR -n 8``.

Writes one PNG per image with its ground-truth boxes and class names (crowd boxes in
white, marked "(crowd)"), drawn by ``src.analysis.draw`` (the prediction panels' painter). Works on
real COCO (folders or zips) and on the synthetic set (``python -m src.data.synthetic``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch import Tensor

from src.analysis.draw import draw_boxes
from src.data.coco import CocoDetection
from src.data.image_io import write_png


def draw_sample(
    image: Tensor, target: dict, category_ids: list[int], category_names: list[str]
) -> Tensor:
    """uint8 [3,H,W] image with ``target``'s boxes (XYXY) drawn and named; returns uint8 [3,H,W].

    ``target``: ``boxes`` [N,4], ``labels`` [N] in 1..K (label ``l`` is category
    ``category_ids[l - 1]`` named ``category_names[l - 1]``) and optionally ``iscrowd`` [N].
    """
    ids = [category_ids[lab - 1] for lab in target["labels"].tolist()]
    return draw_boxes(
        image, target["boxes"], ids, dict(zip(category_ids, category_names)),
        iscrowd=target.get("iscrowd"),
    )  # fmt: skip


def sample_indices(num_images: int, n: int, seed: int | None) -> list[int]:
    """The first ``n`` images, or ``n`` drawn at random with ``seed``."""
    n = min(n, num_images)
    if seed is None:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(num_images, n, replace=False).tolist())


def write_samples(dataset: CocoDetection, out: Path, indices: list[int]) -> list[Path]:
    """One ``{split}_{image_id:012d}.png`` per index under ``out``; unreadable images skipped."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in indices:
        sample = dataset[i]
        if sample is None:
            continue
        image, target = sample
        path = out / f"{dataset.split}_{target['image_id']:012d}.png"
        write_png(draw_sample(image, target, dataset.category_ids, dataset.category_names), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="COCO root (folder or archive layout)")
    parser.add_argument("--split", default="val2017")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    parser.add_argument("-n", "--num-images", type=int, default=8)
    parser.add_argument(
        "--seed", type=int, default=None, help="random images (default: the first n)"
    )
    parser.add_argument("--cache-dir", default=None, help="index cache folder")
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f"-n {args.num_images}: need at least one image")
    dataset = CocoDetection(
        args.root, args.split, train=False, filter_empty=False, on_bad_image="skip",
        cache_dir=args.cache_dir,
    )  # fmt: skip
    written = write_samples(
        dataset, args.out, sample_indices(len(dataset), args.num_images, args.seed)
    )
    print(f"wrote {len(written)} images with their boxes to {args.out}")
    if dataset.num_skipped:
        print(f"skipped {dataset.num_skipped} unreadable images: ids {dataset.skipped_image_ids}")
    return written


if __name__ == "__main__":
    main()
