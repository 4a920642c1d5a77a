"""Index memory with DataLoader workers: our numpy index against a dataset holding pycocotools' COCO.

    nice python benchmarks/data_memory.py                 # COCO train size: 118,287 images, ~860k boxes
    python benchmarks/data_memory.py --images 5000        # a quick check

Writes a COCO-train-sized instances json (random boxes and polygons, COCO's field set) to a
temporary folder, then, each dataset in a fresh process: index build time, cached start time
(ours), and after ``--samples`` shuffled samples through ``--workers`` fork workers, every
worker's memory growth (USS) and the total PSS of main process plus workers. Samples are
targets only (the json's images do not exist), so the figures are those of the index.
Issue targets: worker growth < 50 MiB, total PSS >= 3.5x smaller, build no slower than COCO().
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import psutil
import torch
from torch.utils.data import DataLoader, RandomSampler

# imported by both variants, so that both processes carry the same libraries (torchvision too)
from src.data.coco import CocoDetection

MIB = 2**20
COCO_TRAIN_IMAGES = 118_287
BOXES_PER_IMAGE = 7.27  # 860,001 / 118,287
CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


# ---- the annotation file --------------------------------------------------------------------
def write_coco_json(path: Path, num_images: int, seed: int = 0) -> dict:
    """A COCO-train-like instances json: sizes, crowd share and polygon lengths as in COCO."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(600_000, num_images, replace=False)) + 1
    sizes = rng.choice(
        [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 512)], num_images
    )
    counts = np.minimum(rng.poisson(BOXES_PER_IMAGE, num_images), 60)
    ann_id, total = 1, 0
    with open(path, "wb") as f:
        images = [{"license": int(rng.integers(1, 8)), "file_name": f"{i:012d}.jpg",
                   "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
                   "height": int(h), "width": int(w), "date_captured": "2013-11-14 11:18:45",
                   "flickr_url": f"http://farm4.staticflickr.com/{i % 9999}/{i}_{i % 7777:x}_z.jpg",
                   "id": int(i)} for i, (w, h) in zip(ids, sizes)]  # fmt: skip
        f.write(b'{"info": {"description": "synthetic COCO-train-sized file"}, "images": ')
        f.write(orjson.dumps(images))
        f.write(b', "annotations": [')
        first = True
        for start in range(0, num_images, 5000):
            chunk = []
            for k in range(start, min(start + 5000, num_images)):
                w, h = sizes[k]
                for _ in range(counts[k]):
                    bw, bh = rng.uniform(2, w * 0.9), rng.uniform(2, h * 0.9)
                    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                    crowd = rng.random() < 0.009
                    if crowd:  # uncompressed RLE, as COCO stores crowd masks
                        seg = {
                            "counts": rng.integers(1, 400, rng.integers(20, 200)).tolist(),
                            "size": [int(h), int(w)],
                        }
                    else:
                        n = int(rng.integers(8, 48))
                        pts = np.stack([rng.uniform(x, x + bw, n), rng.uniform(y, y + bh, n)], 1)
                        seg = [np.round(pts.ravel(), 2).tolist()]
                    chunk.append({"segmentation": seg, "area": round(bw * bh * 0.6, 4), "iscrowd": int(crowd),
                                  "image_id": int(ids[k]), "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                                  "category_id": int(rng.choice(CATEGORY_IDS)), "id": ann_id})  # fmt: skip
                    ann_id += 1
            if chunk:
                body = orjson.dumps(chunk)[1:-1]
                f.write(body if first else b"," + body)
                first = False
            total += len(chunk)
        f.write(b'], "categories": ')
        f.write(
            orjson.dumps(
                [{"supercategory": "thing", "id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
            )
        )
        f.write(b"}")
    return {"images": num_images, "boxes": total, "mib": path.stat().st_size / MIB}


# ---- the two datasets -----------------------------------------------------------------------
class PycocotoolsDataset(torch.utils.data.Dataset):
    """What many projects do (torchvision's CocoDetection): hold ``COCO`` and ask it per sample."""

    def __init__(self, annotation_file: str) -> None:
        from pycocotools.coco import COCO

        self.coco = COCO(annotation_file)
        self.ids = sorted(self.coco.imgs)
        self.label_of = {c: i + 1 for i, c in enumerate(sorted(self.coco.cats))}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        image_id = self.ids[i]
        info = self.coco.imgs[image_id]
        anns = [
            a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]
        ]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, info["height"])
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        return {"boxes": boxes[keep], "labels": labels[keep], "image_id": image_id}


class TargetsOnly(torch.utils.data.Dataset):
    """Our CocoDetection's targets (built from the numpy index) without image decoding."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset.target(i)


def build(variant: str, root: Path, cache_dir: Path) -> tuple[torch.utils.data.Dataset, dict]:
    """The dataset and its start time: ``build_s`` from the json, or ``cached_start_s`` (ours,
    run after ``ours-build``: a later run, whose main process never held the parsed json)."""
    json_path = root / "annotations" / "instances_train2017.json"
    start = time.perf_counter()
    if variant == "pycocotools":
        dataset = PycocotoolsDataset(str(json_path))
        return dataset, {"build_s": time.perf_counter() - start}
    dataset = CocoDetection(root, "train2017", train=True, cache_dir=cache_dir)
    key = "build_s" if variant == "ours-build" else "cached_start_s"
    return TargetsOnly(dataset), {key: time.perf_counter() - start}


# ---- one variant, measured in its own process -----------------------------------------------
def _worker_init(slots):
    def init(worker_id: int) -> None:
        me = psutil.Process()
        slots[2 * worker_id] = me.pid
        slots[2 * worker_id + 1] = me.memory_full_info().uss

    return init


def measure(variant: str, root: Path, cache_dir: Path, samples: int, workers: int) -> dict:
    dataset, result = build(variant, root, cache_dir)
    if variant == "ours-build":
        return result
    slots = mp.get_context("fork").Array("d", 2 * workers, lock=False)
    loader = DataLoader(
        dataset, batch_size=16, num_workers=workers, multiprocessing_context="fork",
        sampler=RandomSampler(dataset, num_samples=samples, generator=torch.Generator().manual_seed(0)),
        collate_fn=len, worker_init_fn=_worker_init(slots),
    )  # fmt: skip
    it = iter(loader)
    start = time.perf_counter()
    seen = sum(next(it) for _ in range(len(loader)))  # workers stay alive for the reading below
    result["samples_per_s"] = seen / (time.perf_counter() - start)
    main = psutil.Process()
    result["main_pss_mib"] = main.memory_full_info().pss / MIB
    result["workers"] = []
    for w in range(workers):
        info = psutil.Process(int(slots[2 * w])).memory_full_info()
        result["workers"].append(
            {"growth_uss_mib": (info.uss - slots[2 * w + 1]) / MIB, "pss_mib": info.pss / MIB}
        )
    result["total_pss_mib"] = result["main_pss_mib"] + sum(w["pss_mib"] for w in result["workers"])
    del it
    return result


def run_variant(variant: str, root: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--root", str(root),
           "--samples", str(args.samples), "--workers", str(args.workers)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(stats: dict, ours: dict, theirs: dict, args: argparse.Namespace) -> None:
    print(f"annotation file: {stats['images']:,} images, {stats['boxes']:,} boxes, {stats['mib']:.0f} MiB "
          f"(written in {stats['write_s']:.0f} s); {args.samples:,} shuffled samples, {args.workers} fork workers")  # fmt: skip
    rows = [
        ("first index build (s)", f"{ours['build_s']:.1f}", f"{theirs['build_s']:.1f}  (COCO())"),
        ("start from the cache (s)", f"{ours['cached_start_s']:.2f}", "-"),
        ("worker growth, USS (MiB)", ", ".join(f"{w['growth_uss_mib']:.1f}" for w in ours["workers"]),
         ", ".join(f"{w['growth_uss_mib']:.0f}" for w in theirs["workers"])),
        ("main process PSS (MiB)", f"{ours['main_pss_mib']:.0f}", f"{theirs['main_pss_mib']:.0f}"),
        ("total PSS, main + workers (MiB)", f"{ours['total_pss_mib']:.0f}", f"{theirs['total_pss_mib']:.0f}"),
        ("samples/s through the loader", f"{ours['samples_per_s']:.0f}", f"{theirs['samples_per_s']:.0f}"),
    ]  # fmt: skip
    print(f"{'':34}{'numpy index (ours)':>22}{'pycocotools COCO':>24}")
    for name, a, b in rows:
        print(f"{name:34}{a:>22}{b:>24}")
    growth = max(w["growth_uss_mib"] for w in ours["workers"])
    ratio = theirs["total_pss_mib"] / ours["total_pss_mib"]
    speed = theirs["build_s"] / ours["build_s"]
    print(f"targets: worker growth {growth:.1f} MiB < 50 MiB: {'met' if growth < 50 else 'MISSED'}; "
          f"total PSS {ratio:.1f}x smaller >= 3.5x: {'met' if ratio >= 3.5 else 'MISSED'}; "
          f"build {speed:.1f}x the speed of COCO(): {'met' if speed >= 1 else 'MISSED'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--variant", choices=["ours-build", "ours", "pycocotools"], help=argparse.SUPPRESS
    )
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process: one dataset, printed as one json line
        print(
            json.dumps(
                measure(args.variant, args.root, args.root / "cache", args.samples, args.workers)
            )
        )
        return
    with tempfile.TemporaryDirectory(prefix="fpn_data_memory_") as tmp:
        root = Path(tmp)
        (root / "annotations").mkdir()
        (root / "train2017").mkdir()  # images are never read: targets only
        start = time.perf_counter()
        stats = write_coco_json(root / "annotations" / "instances_train2017.json", args.images)
        stats["write_s"] = time.perf_counter() - start
        ours = run_variant("ours-build", root, args) | run_variant("ours", root, args)
        theirs = run_variant("pycocotools", root, args)
        report(stats, ours, theirs, args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # workers each load torch; keep it quiet
    main()
