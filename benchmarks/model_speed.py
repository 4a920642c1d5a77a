"""Our FPN detector against torchvision's own ``fasterrcnn_resnet50_fpn``: step time, memory.

    python benchmarks/model_speed.py                          # CPU: 2 x 320 px, few steps
    python benchmarks/model_speed.py --device cuda --size 800 --max-size 1333 --batch 2 \
        --precision bf16 --steps 20

Both models are built with the same settings (trainable BatchNorm, random weights, the
torchvision state dict copied into ours, so the detections and the work per step match)
and timed alternately, round by round, on the same random images and boxes, so machine
noise hits both alike. Prints the median seconds per training step (forward, backward,
SGD) and per inference batch, the ratio ours / torchvision (1.00 = as fast), and on CUDA
the peak memory of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from src.models.detector import build_detector, convert_torchvision_state_dict


def make_batch(batch: int, height: int, width: int, device: torch.device, seed: int = 0):
    """``batch`` random images (3, H, W) in [0, 1] with 1..8 boxes each, xyxy in pixels."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=g).to(device))
        n = int(torch.randint(1, 9, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3])
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(1, 91, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, optimizer, images, targets, autocast) -> None:
    model.train()
    with autocast():
        losses = model(images, targets)
        loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def infer(model, images, autocast) -> None:
    model.eval()
    with autocast():
        model(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=320, help="model min_size (shorter side)")
    parser.add_argument("--max-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed rounds per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: keep)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    knobs = dict(min_size=args.size, max_size=args.max_size)
    reference = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, **knobs
    )
    # the torchvision builder freezes BN only with pretrained weights: trainable BN both sides
    ours = build_detector("fpn", "resnet50", num_classes=91, norm="bn", **knobs)
    ours.load_state_dict(convert_torchvision_state_dict(reference.state_dict()))
    models = {"torchvision": reference.to(device), "ours": ours.to(device)}
    optimizers = {
        name: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for name, m in models.items()
    }

    def autocast():
        return torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16")

    # 4:3 landscape like most COCO images; the model resizes to min_size itself
    images, targets = make_batch(args.batch, 480, 640, device)
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "infer": []} for n in models}
    peak: dict[str, float] = {}
    for round_ in range(args.warmup + args.steps):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            train_step(model, optimizers[name], images, targets, autocast)
            sync(device)
            t1 = time.perf_counter()
            infer(model, images, autocast)
            sync(device)
            t2 = time.perf_counter()
            if round_ >= args.warmup:
                times[name]["train"].append(t1 - t0)
                times[name]["infer"].append(t2 - t1)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device) / 2**30)

    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {label}, torch {torch.__version__}, batch {args.batch}, "
        f"min_size {args.size}, max_size {args.max_size}, {args.precision}, "
        f"{args.steps} timed rounds after {args.warmup} warm-up"
    )
    print(f"{'model':<12} {'train s/step':>12} {'img/s':>7} {'infer s/batch':>13} {'peak GiB':>9}")
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    for name in models:
        mem = f"{peak[name]:9.2f}" if name in peak else f"{'-':>9}"
        print(
            f"{name:<12} {med[name]['train']:12.4f} {args.batch / med[name]['train']:7.1f} "
            f"{med[name]['infer']:13.4f} {mem}"
        )
    ratio_train = med["ours"]["train"] / med["torchvision"]["train"]
    ratio_infer = med["ours"]["infer"] / med["torchvision"]["infer"]
    print(f"ratio ours/torchvision: train {ratio_train:.3f}, inference {ratio_infer:.3f}")


if __name__ == "__main__":
    main()
