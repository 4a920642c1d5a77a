"""Images/s of the data path per worker, beside what a training step consumes.

    python benchmarks/data_throughput.py [ROOT]      # ROOT or $FPN_COCO_TINY; real COCO JPEGs

1. Per worker: decode + training transform (flip; and with scale jitter) on one thread, as a
   DataLoader worker runs (torch uses one thread per worker).
2. Through a DataLoader with ``--workers`` processes (does it scale on this machine?).
3. Training consumption: images/s of a full training step (forward, backward, SGD) of
   ``build_detector(--variant, --backbone, 81, min_size=--min-size)`` on this machine's CPU,
   when ``src.models.detector`` is importable. Workers needed = consumption / per-worker rate.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch.utils.data import DataLoader

from src.data.coco import CocoDetection, collate_detection
from src.data.transforms import train_transforms

# Reference consumption, not measured here: Detectron2's R50-FPN 1x trains 16 images per
# 0.210 s on 8 V100 (DESIGN.md), i.e. about 9.5 images/s per GPU.
V100_R50_FPN_IMAGES_PER_S = 16 / 0.210 / 8


def per_worker_rate(dataset: CocoDetection, repeats: int) -> tuple[float, float]:
    """(images/s, mean megapixels) of ``dataset[i]`` on the current single thread."""
    dataset[0]  # warm-up: first decode initializes libjpeg
    pixels, start = 0, time.perf_counter()
    for _ in range(repeats):
        for i in range(len(dataset)):
            image, _ = dataset[i]
            pixels += image.shape[1] * image.shape[2]
    seconds = time.perf_counter() - start
    n = repeats * len(dataset)
    return n / seconds, pixels / n / 1e6


def loader_rate(dataset: CocoDetection, workers: int, repeats: int) -> float:
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=workers,
                        collate_fn=collate_detection, persistent_workers=workers > 0)  # fmt: skip
    next(iter(loader))  # start the workers before timing
    count, start = 0, time.perf_counter()
    for _ in range(repeats):
        for images, _ in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def training_rate(dataset: CocoDetection, args: argparse.Namespace) -> float | str:
    """Images/s of training steps on CPU, or the reason it could not be measured."""
    try:
        from src.models.detector import build_detector
    except ImportError as error:
        return f"src.models.detector is not importable ({error})"
    torch.manual_seed(0)
    model = build_detector(
        args.variant, args.backbone, 81, min_size=args.min_size, max_size=args.max_size
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    samples = [dataset[i] for i in range(args.batch_size * (args.steps + 1))]
    batches = [samples[k : k + args.batch_size] for k in range(0, len(samples), args.batch_size)]

    def step(batch) -> None:
        images = [image.float() / 255 for image, _ in batch]
        targets = [
            {"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for _, t in batch
        ]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    return args.batch_size * args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=os.environ.get("FPN_COCO_TINY"))
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variant", default="fpn")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--no-train", action="store_true", help="skip the training-step measurement"
    )
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    if not args.root:
        parser.error("give ROOT or set FPN_COCO_TINY")
    threads = torch.get_num_threads()

    def dataset(**kw) -> CocoDetection:
        return CocoDetection(args.root, args.split, train=True, cache_dir=args.cache_dir, **kw)

    print(
        f"{args.root} {args.split}: {len(dataset())} images; {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    torch.set_num_threads(1)  # a DataLoader worker's setting
    rows = []
    for name, tf in (("decode only", None), ("decode + flip (default train)", train_transforms(0.5)),
                     ("decode + flip + scale jitter (0.8, 1.25)", train_transforms(0.5, (0.8, 1.25)))):  # fmt: skip
        rate, mpix = per_worker_rate(dataset(transforms=tf), args.repeats)
        rows.append((name, rate))
        print(
            f"per worker, {name:42} {rate:7.1f} images/s  ({1000 / rate:5.1f} ms, {mpix:.2f} MPix/image)"
        )
    per_worker = rows[1][1]
    torch.set_num_threads(threads)
    if args.workers > 0:
        rate = loader_rate(dataset(transforms=train_transforms(0.5)), args.workers, args.repeats)
        print(f"DataLoader, {args.workers} workers, batch 2:{'':22}{rate:7.1f} images/s")
    if args.no_train:
        return
    consumed = training_rate(dataset(), args)
    what = f"{args.variant}/{args.backbone} at min_size {args.min_size}, batch {args.batch_size}"
    if isinstance(consumed, str):
        print(f"training consumption ({what}): not measured: {consumed}")
        return
    print(f"training consumption, {what}, CPU ({threads} threads): {consumed:.2f} images/s")
    print(
        f"workers to keep up: {math.ceil(consumed / per_worker)} on this CPU; "
        f"{math.ceil(V100_R50_FPN_IMAGES_PER_S / per_worker)} per GPU at Detectron2's R50-FPN speed on a "
        f"V100 ({V100_R50_FPN_IMAGES_PER_S:.1f} images/s, a reference, not measured here)"
    )


if __name__ == "__main__":
    main()
