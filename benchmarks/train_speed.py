"""The CPU demo's detector, step by step: which settings make it faster, and how far from the
machine's peak it runs.

    python benchmarks/train_speed.py [--rounds 6] [--batch 4] [--size 256] [--threads 2]

Builds the detector that ``python -m src.train`` trains (composed from conf/, so it follows
the demo's recipe) and torchvision's own FasterRCNN with the same sizes (ResNet-18 FPN,
d = 128, 512-wide head, the same anchors and sampling), then times, in one process and
alternating setting by setting in every round so that machine noise hits all alike:

- a training step (forward, backward, SGD) and an inference batch, on the same random
  images and boxes, for each setting: fp32 (the settings before issue 9), bf16 autocast,
  channels_last, both, both with RPN proposal counts sized for 256 px images, torchvision's
  detector, and torch.compile of the backbone (reported as failed if it fails);
- achieved GFLOP/s of the training step (``torch.utils.flop_counter``, fp32 count) against
  a 3x3-convolution peak measured here in the same precision.

Prints the median seconds, images/s and the ratio to those settings per setting.

With ``--epoch-images N`` it instead runs ``python -m src.train`` for one epoch on the first N
synthetic images of each split (training, then validation), once with the settings before
issue 9 and once with each ``--epoch-setting`` (Hydra overrides), alternately for ``--epoch-rounds``, and
prints the whole epoch's images/s (data loading and validation included) and its ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.models.detector import build_detector  # noqa: E402
from src.training.config import check, detector_kwargs  # noqa: E402

NUM_CLASSES = 9  # the synthetic set's 8 categories + background


def demo_kwargs(overrides: list[str]) -> dict:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp",
                                          *overrides])  # fmt: skip
    return detector_kwargs(cfg, check(cfg))


def torchvision_twin(kw: dict) -> torch.nn.Module:
    """torchvision's FasterRCNN with the demo's sizes: what we would be if we used theirs."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    backbone = resnet_fpn_backbone(
        backbone_name=kw["backbone"], weights=None, trainable_layers=5,
        norm_layer=torch.nn.BatchNorm2d,
    )  # fmt: skip
    d = kw["out_channels"]
    # torchvision's FPN is 256 wide; rebuild its extra layers at the demo's width
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    backbone.fpn = FeaturePyramidNetwork([64, 128, 256, 512], d, LastLevelMaxPool())
    backbone.out_channels = d
    scale = kw["anchor_scale"]
    sizes = tuple((int(s * scale),) for s in (32, 64, 128, 256, 512))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    knobs = {k: v for k, v in kw.items() if k.startswith(("rpn_", "box_"))}
    return FasterRCNN(
        backbone, num_classes=None, min_size=kw["min_size"], max_size=kw["max_size"],
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(d * 49, kw["representation_size"]),
        box_predictor=FastRCNNPredictor(kw["representation_size"], NUM_CLASSES),
        **knobs,
    )  # fmt: skip


def make_batch(batch: int, size: int, seed: int = 0):
    """``batch`` random [3,size,size] images with 2..8 boxes of all sizes each."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g))
        n = int(torch.randint(2, 9, (1,), generator=g))
        wh = 8 + torch.rand(n, 2, generator=g) * size * 0.5
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, NUM_CLASSES, (n,), generator=g)})  # fmt: skip
    return images, targets


class Setting:
    """One way to run the detector: a model, a precision and a memory format."""

    def __init__(self, name: str, model: torch.nn.Module, *, bf16=False, channels_last=False):
        self.name, self.model, self.bf16 = name, model, bf16
        if channels_last:
            model.to(memory_format=torch.channels_last)
            backbone = model.backbone
            forward = backbone.forward
            backbone.forward = lambda x: forward(x.contiguous(memory_format=torch.channels_last))
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        self.train_s: list[float] = []
        self.infer_s: list[float] = []

    def autocast(self):
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, images, targets) -> None:
        self.model.train()
        with self.autocast():
            loss = sum(self.model(images, targets).values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def infer(self, images) -> None:
        self.model.eval()
        with self.autocast():
            self.model(images)


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def conv_peak_gflops(bf16: bool, seconds: float = 1.5) -> float:
    """Throughput of a 3x3 convolution shaped like the pyramid's on p2 (the densest work)."""
    x = torch.randn(4, 128, 64, 64)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    flops = 2 * x.shape[0] * 128 * 64 * 64 * 128 * 9
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        for _ in range(3):
            conv(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            n += 1
    return flops * n / (time.perf_counter() - start) / 1e9


def step_flops(setting: Setting, images, targets) -> int:
    with FlopCounterMode(display=False) as counter:
        setting.train_step(images, targets)
    return counter.get_total_flops()


# the demo's settings before issue 9 (2026-11-25), pinned so that this stays the baseline
BEFORE = ["trainer.precision=32-true", "model.channels_last=false", "data.num_workers=2",
         "model.rpn_pre_nms_top_n_train=2000", "model.rpn_post_nms_top_n_train=2000",
         "model.rpn_post_nms_top_n_test=1000"]  # fmt: skip
# today's defaults (fp32, NHWC, RPN counts sized for 256 px, no workers): no override
CHOSEN: list[str] = []


def epoch_seconds(overrides: list[str], images: int) -> tuple[float, float]:
    """Wall seconds of one `src.train` epoch (fit only) and of its validation, in a subprocess."""
    import json
    import subprocess
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="train_speed_"))
    command = [
        sys.executable, "-m", "src.train", f"data.max_images={images}", "trainer.max_epochs=1",
        "test=false", "~callbacks.progress_bar", "callbacks.prediction_panel.num_images=0",
        f"hydra.run.dir={out}",
        *overrides,
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{proc.stderr[-2000:]}")
    timing = json.loads((out / "results.json").read_text())["timing"]
    return timing["fit_s"], timing["validation_s"]


def print_epochs(candidates: list[list[str]], images: int, rounds: int) -> None:
    """Whole epochs (data loading and validation included), the settings before issue 9 against each."""
    runs = [BEFORE, *candidates]
    times: list[list[tuple[float, float]]] = [[] for _ in runs]
    for _ in range(rounds):
        for k, overrides in enumerate(runs):
            times[k].append(epoch_seconds(overrides, images))
    print(f"one epoch on the first {images} images of each split (training, then validation), "
          f"{rounds} round(s), median")  # fmt: skip
    print("| setting | fit s | validation s | validation share | images/s | x before |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(t[0] for t in times[0])
    for overrides, samples in zip(runs, times):
        fit = statistics.median(t[0] for t in samples)
        val = statistics.median(t[1] for t in samples)
        name = ("before: " + " ".join(BEFORE) if overrides is BEFORE
                else " ".join(overrides) or "defaults")  # fmt: skip
        print(f"| {name} | {fit:.1f} | {val:.1f} | {val / fit:.0%} | {images / fit:.2f} | "
              f"{base / fit:.2f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per setting")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=0,
        help="also time whole src.train epochs on this many images (0: off)",
    )
    parser.add_argument("--epoch-rounds", type=int, default=1)
    parser.add_argument(
        "--epoch-setting",
        action="append",
        default=None,
        metavar="OVERRIDES",
        help="space-separated overrides of a candidate (default: the chosen set)",
    )
    args = parser.parse_args(argv)
    if args.epoch_images:
        candidates = [c.split() for c in args.epoch_setting] if args.epoch_setting else [CHOSEN]
        print_epochs(candidates, args.epoch_images, args.epoch_rounds)
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    # the detector as it was before issue 9; the Settings below apply bf16 / NHWC themselves
    kw = demo_kwargs([o for o in BEFORE if o.startswith("model.")])
    small_rpn = demo_kwargs(["model.channels_last=false", "model.rpn_pre_nms_top_n_train=600",
                             "model.rpn_post_nms_top_n_train=300"])  # fmt: skip

    def ours(k=kw):
        torch.manual_seed(0)
        return build_detector(num_classes=NUM_CLASSES, **k)

    settings = [
        Setting("fp32 (before)", ours()),
        Setting("bf16 autocast", ours(), bf16=True),
        Setting("channels_last", ours(), channels_last=True),
        Setting("bf16 + channels_last", ours(), bf16=True, channels_last=True),
        Setting("bf16 + cl + RPN 600/300", ours(small_rpn), bf16=True, channels_last=True),
        Setting("torchvision twin: fp32", torchvision_twin(kw)),
        Setting("torchvision twin: bf16 + cl", torchvision_twin(kw), bf16=True,
                channels_last=True),
    ]  # fmt: skip
    if not args.no_compile:
        compiled = ours()
        try:
            compiled.backbone = torch.compile(compiled.backbone, dynamic=True)
            trial = Setting("bf16 + compile(backbone)", compiled, bf16=True)
            trial.train_step(*make_batch(args.batch, args.size, seed=9))
            settings.append(trial)
        except Exception as error:  # report, do not hide: it is one of the candidates
            print(f"torch.compile of the backbone failed: {type(error).__name__}: "
                  f"{str(error).splitlines()[0][:200]}")  # fmt: skip

    images, targets = make_batch(args.batch, args.size)
    for s in settings:  # warm-up: allocator pools, oneDNN kernels, autocast caches
        s.train_step(images, targets)
        s.infer(images)
    for _ in range(args.rounds):
        for s in settings:
            s.train_s.append(_timed(lambda s=s: s.train_step(images, targets)))
            s.infer_s.append(_timed(lambda s=s: s.infer(images)))

    peaks = {False: conv_peak_gflops(False), True: conv_peak_gflops(True)}
    flops = step_flops(settings[0], images, targets)
    base_train = statistics.median(settings[0].train_s)
    base_infer = statistics.median(settings[0].infer_s)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} of "
          f"{args.size}x{args.size}, {args.rounds} rounds; training step {flops / 1e9:.1f} GFLOP "
          f"(fp32 count); 3x3-conv peak here: fp32 {peaks[False]:.0f}, bf16 {peaks[True]:.0f} "
          "GFLOP/s")  # fmt: skip
    print("| setting | train s/step | images/s | x before | infer s/batch | x before | "
          "GFLOP/s | of peak |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in settings:
        t, i = statistics.median(s.train_s), statistics.median(s.infer_s)
        rate = flops / t / 1e9
        print(f"| {s.name} | {t:.3f} | {args.batch / t:.1f} | {base_train / t:.2f} | {i:.3f} | "
              f"{base_infer / i:.2f} | {rate:.0f} | {rate / peaks[s.bf16]:.0%} |")  # fmt: skip
    by_name = {s.name: statistics.median(s.train_s) for s in settings}
    for ours_name, theirs_name in (("fp32 (before)", "torchvision twin: fp32"),
                                   ("bf16 + channels_last", "torchvision twin: bf16 + cl")):  # fmt: skip
        print(f"ours / torchvision ({ours_name}): {by_name[ours_name] / by_name[theirs_name]:.2f}")


if __name__ == "__main__":
    main()
