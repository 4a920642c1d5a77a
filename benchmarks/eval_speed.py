"""Where validation time goes, and what the proposal count and precision cost in accuracy.

    python benchmarks/eval_speed.py [--ckpt PATH] [--images 40] [--counts 1000 300]
    python benchmarks/eval_speed.py --ckpt PATH --accuracy      # also COCO AP per setting

Builds the CPU demo's detector (composed from conf/, or the one of ``--ckpt``) and times, per
image and alternating settings round by round in one process, the parts of inference that a
validation step runs: transform + backbone, RPN (head, decoding, NMS), RoIAlign of the kept
proposals, the box head, and post-processing, for each test-time proposal count
(``rpn_post_nms_top_n_test``) in fp32 and in bf16 + channels_last. Images are the first
``--images`` validation images of the synthetic set if it exists (``data/synthetic``), else
random ones.

With ``--accuracy`` (needs ``--ckpt``) it also evaluates the checkpoint on the whole validation
split for each setting (Lightning's test loop, the same metrics as training), so that a
speed-up is never chosen blind.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.models.inference import propose  # noqa: E402

PARTS = ("backbone", "rpn", "roi_align", "box_head", "postprocess")


def load_images(n: int, size: int = 256) -> list[torch.Tensor]:
    from src.data.image_io import decode_rgb

    files = sorted((REPO / "data" / "synthetic" / "val2017").glob("*.png"))[:n]
    if files:
        return [decode_rgb(f.read_bytes(), str(f)).float() / 255 for f in files]
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def build(ckpt: str | None):
    """The checkpoint's module (or None) and its detector, else an untrained demo detector."""
    if ckpt:
        from src.training.module import DetectionModule

        module = DetectionModule.from_checkpoint(ckpt)
        return module, module.model.eval()
    from train_speed import NUM_CLASSES, demo_kwargs

    from src.models.detector import build_detector

    torch.manual_seed(0)
    return None, build_detector(num_classes=NUM_CLASSES, **demo_kwargs([])).eval()


@torch.no_grad()
def time_parts(model, images, count: int, bf16: bool, batch: int) -> dict[str, float]:
    """Seconds per image of each part of one pass over ``images``."""
    model.rpn._post_nms_top_n["testing"] = count
    heads = model.roi_heads
    seconds = dict.fromkeys(PARTS, 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch):
            marks = [time.perf_counter()]
            image_list, _ = model.transform(images[i : i + batch])
            features = model.backbone(image_list.tensors)
            marks.append(time.perf_counter())
            proposals, _, _ = propose(model.rpn, image_list, features)
            marks.append(time.perf_counter())
            pooled = heads.box_roi_pool(features, proposals, image_list.image_sizes)
            marks.append(time.perf_counter())
            scores, deltas = heads.box_predictor(heads.box_head(pooled))
            marks.append(time.perf_counter())
            heads.postprocess_detections(scores, deltas, proposals, image_list.image_sizes)
            marks.append(time.perf_counter())
            for part, start, end in zip(PARTS, marks, marks[1:]):
                seconds[part] += end - start
    return {k: v / len(images) for k, v in seconds.items()}


def print_accuracy(module, ckpt: str, settings: list[tuple[int, bool]]) -> None:
    """COCO metrics of ``module`` on the whole validation split, per (count, bf16) setting;
    the data are read once, the module changes only its test-time proposal count."""
    import hydra
    from hydra import compose, initialize_config_dir

    from src.training.config import build_datamodule

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", f"paths.root_dir={REPO}",
                                         "paths.output_dir=/tmp"])  # fmt: skip
    datamodule = build_datamodule(cfg)
    print("\n| proposals | precision | AP | AP50 | AP75 | AP_s | AR100 (proposals) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for count, bf16 in settings:
        module.model.rpn._post_nms_top_n["testing"] = count
        precision = "bf16-mixed" if bf16 else "32-true"
        trainer = hydra.utils.instantiate(
            cfg.trainer, devices=1, strategy="auto", precision=precision,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        (m,) = trainer.test(module, datamodule=datamodule, verbose=False)
        cells = " | ".join(f"{100 * m[k]:.2f}" for k in ("test/map", "test/map_50",
                           "test/map_75", "test/map_small", "test/ar_100"))  # fmt: skip
        print(f"| {count} | {precision} | {cells} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a checkpoint (default: untrained demo)")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 300])
    parser.add_argument("--accuracy", action="store_true", help="COCO AP per setting (--ckpt)")
    args = parser.parse_args(argv)
    if args.accuracy and not args.ckpt:
        parser.error("--accuracy needs --ckpt: an untrained detector has no accuracy to keep")

    module, model = build(args.ckpt)
    images = load_images(args.images)
    settings = [(count, bf16) for count in args.counts for bf16 in (False, True)]
    samples: dict[tuple[int, bool], list[dict[str, float]]] = {s: [] for s in settings}
    for _ in range(args.rounds + 1):  # the first round warms up oneDNN and the allocator
        for count, bf16 in settings:
            model.to(memory_format=torch.channels_last if bf16 else torch.contiguous_format)
            model.backbone.channels_last = bf16
            samples[(count, bf16)].append(time_parts(model, images, count, bf16, args.batch))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(images)} images, "
          f"batch {args.batch}, {args.rounds} rounds (median), ms per image")  # fmt: skip
    print("| proposals | precision | " + " | ".join(PARTS) + " | total | x first |")
    print("|---:|---|" + "---:|" * (len(PARTS) + 2))
    first = None
    for count, bf16 in settings:
        parts = {p: statistics.median(r[p] for r in samples[(count, bf16)][1:]) for p in PARTS}
        total = sum(parts.values())
        first = first or total
        cells = " | ".join(f"{1000 * parts[p]:.1f}" for p in PARTS)
        name = "bf16 + channels_last" if bf16 else "fp32"
        print(f"| {count} | {name} | {cells} | {1000 * total:.1f} | {first / total:.2f} |")
    if args.accuracy:
        print_accuracy(module, args.ckpt, settings)


if __name__ == "__main__":
    main()
