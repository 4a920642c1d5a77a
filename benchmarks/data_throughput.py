"""Images/s of the data path per worker, beside what a training step consumes.

    python benchmarks/data_throughput.py [ROOT]      # ROOT or $FPN_COCO_TINY; real COCO JPEGs
    python benchmarks/data_throughput.py --decode-only   # just step 0

0. Decoders, per worker (one thread): images/s of torchvision.io's ``decode_image`` (the old,
   deprecated path; used here only) and of ``src.data.image_io.decode_rgb`` (TorchCodec) on
   the split's file bytes held in memory, in alternating rounds; medians and their ratio.
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
import statistics
import time
import warnings

import torch
from torch.utils.data import DataLoader

from src.data.coco import CocoDetection, collate_detection
from src.data.image_io import decode_rgb
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


def decoder_rates(dataset: CocoDetection, rounds: int) -> tuple[list[float], list[float]]:
    """Images/s per round of (torchvision.io, TorchCodec ``decode_rgb``), rounds alternating,
    on the current single thread, over every image's bytes (read once, before timing)."""
    from torchvision.io import ImageReadMode, decode_image  # the old path, benchmarks only

    files = [dataset._read(int(pos)) for pos in dataset._positions]

    def old(data: bytearray) -> torch.Tensor:
        return decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)

    def new(data: bytearray) -> torch.Tensor:
        return decode_rgb(data, "benchmark image")

    rates: dict = {old: [], new: []}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision's, once
        # warm-up, and a check: both decoders must give the same pixels
        assert all(torch.equal(old(d), new(d)) for d in files[:8]), "decoders disagree"
        for r in range(2 * rounds):  # old, new, new, old, old, new, ...: drifts cancel
            decode = ((old, new) if r // 2 % 2 == 0 else (new, old))[r % 2]
            start = time.perf_counter()
            for data in files:
                decode(data)
            rates[decode].append(len(files) / (time.perf_counter() - start))
    return rates[old], rates[new]


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
    parser.add_argument("--decode-rounds", type=int, default=6, help="rounds per decoder")
    parser.add_argument(
        "--decode-only", action="store_true", help="only the decoder comparison (step 0)"
    )
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
    old, new = decoder_rates(dataset(), args.decode_rounds)
    for name, rates in (("torchvision.io decode_image (old)", old),
                        ("TorchCodec decode_rgb (new)", new)):  # fmt: skip
        print(
            f"per worker, decode {name:35} {statistics.median(rates):7.1f} images/s "
            f"(median of {len(rates)} rounds, {min(rates):.1f}-{max(rates):.1f})"
        )
    ratio = statistics.median(n / o for o, n in zip(old, new))
    print(f"per worker, decode new/old: {ratio:.3f} (median of per-round-pair ratios)")
    if args.decode_only:
        return
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
