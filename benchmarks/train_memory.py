"""Memory of a training run per epoch: the main process and each DataLoader worker.

    python benchmarks/train_memory.py [--epochs 3] [--workers 2] [--max-images N] [overrides...]

Trains the CPU demo (``python -m src.train``'s defaults) with persistent workers and, at the
end of every training epoch, prints the RSS and PSS (proportional set size: shared pages
split between the processes that map them, so the sum is what the run really holds) of the
main process and of each worker. A leak shows as growth from epoch to epoch after the first
(which pays for imports, the allocator's pools and the first batches). The target: under
50 MiB per epoch after the first, for the main process and for each worker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import psutil
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MIB = 1 << 20
LIMIT_MIB = 50


def _memory(process: psutil.Process) -> tuple[float, float]:
    info = process.memory_full_info()
    return info.rss / MIB, getattr(info, "pss", info.rss) / MIB


class MemoryPerEpoch(pl.Callback):
    """Records ``{process name: (rss MiB, pss MiB)}`` at the end of every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, tuple[float, float]]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        main = psutil.Process()
        sample = {"main": _memory(main)}
        workers = sorted(main.children(recursive=False), key=lambda p: p.pid)
        for k, worker in enumerate(workers):
            sample[f"worker {k}"] = _memory(worker)
        self.epochs.append(sample)
        print(f"epoch {trainer.current_epoch}: " + ", ".join(
            f"{name} rss {rss:.0f} / pss {pss:.0f} MiB" for name, (rss, pss) in sample.items()
        ), flush=True)  # fmt: skip


MEMORY = MemoryPerEpoch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for the run")
    args = parser.parse_args(argv)

    from src.train import train

    out = Path(tempfile.mkdtemp(prefix="train_memory_"))
    overrides = [
        f"trainer.max_epochs={args.epochs}", f"data.num_workers={args.workers}",
        "data.persistent_workers=true", "test=false", "~callbacks.progress_bar",
        f"data.max_images={args.max_images or 'null'}",
        "+callbacks.memory._target_=__main__.memory_callback", *args.overrides,
    ]  # fmt: skip
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    train(cfg)

    names = list(MEMORY.epochs[-1])
    print(f"\n| process | {' | '.join(f'epoch {e} PSS MiB' for e in range(len(MEMORY.epochs)))} "
          f"| growth per epoch after the first (MiB) |")  # fmt: skip
    print("|---|" + "---:|" * (len(MEMORY.epochs) + 1))
    worst = 0.0
    for name in names:
        pss = [epoch.get(name, (0, 0))[1] for epoch in MEMORY.epochs]
        later = pss[1:]
        growth = (later[-1] - later[0]) / max(len(later) - 1, 1) if len(later) > 1 else 0.0
        worst = max(worst, growth)
        print(f"| {name} | {' | '.join(f'{v:.0f}' for v in pss)} | {growth:+.1f} |")
    total = sum(MEMORY.epochs[-1][n][1] for n in names)
    verdict = "within" if worst < LIMIT_MIB else "OVER"
    print(f"\nlast epoch: total PSS {total:.0f} MiB; worst growth {worst:+.1f} MiB/epoch "
          f"({verdict} the {LIMIT_MIB} MiB target); run folder {out}")  # fmt: skip
    return 0 if worst < LIMIT_MIB else 1


def memory_callback() -> MemoryPerEpoch:
    return MEMORY


if __name__ == "__main__":
    sys.exit(main())
