"""Callbacks: a predictions-beside-ground-truth panel, RNG state kept in checkpoints, and
where a run's time goes."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from src.analysis.draw import draw_boxes, side_by_side
from src.data.image_io import write_png


class PredictionPanel(pl.Callback):
    """After each validation epoch, draws ground truth (left) beside predictions (right).

    The same first ``num_images`` validation images every epoch, so progress is visible.
    Saved as ``<log_dir>/predictions/epoch_NNN.png``; also sent to W&B and TensorBoard
    when those loggers are on.
    """

    def __init__(self, num_images: int = 4, score_threshold: float = 0.5) -> None:
        self.num_images = num_images
        self.score_threshold = score_threshold

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or self.num_images <= 0:
            return
        if getattr(module, "task", "faster_rcnn") == "rpn":  # proposals have no classes to draw
            return
        # trainer.log_dir is a broadcast under DDP: every rank must ask, or rank 0 hangs
        out = Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        if not trainer.is_global_zero:
            return
        dataset = trainer.datamodule.val_dataset
        names = {int(c["id"]): c["name"] for c in module.categories}
        pairs = []
        for i in range(min(self.num_images, len(dataset))):
            sample = dataset[i]
            if sample is None:  # unreadable image in skip mode
                continue
            image, target = sample
            gt_ids = module.category_ids.cpu()[target["labels"] - 1]
            fixed = [target["proposals"].to(module.device)] if "proposals" in target else None
            (pred,) = module([image.to(module.device)], fixed)
            keep = pred["scores"] >= self.score_threshold
            truth = draw_boxes(image, target["boxes"], gt_ids, names, iscrowd=target.get("iscrowd"))
            found = draw_boxes(
                image, pred["boxes"][keep], pred["labels"][keep], names,
                scores=pred["scores"][keep],
            )  # fmt: skip
            pairs.append((truth, found))
        if not pairs:
            return
        panel = side_by_side(pairs)
        out.mkdir(parents=True, exist_ok=True)
        write_png(panel, out / f"epoch_{trainer.current_epoch:03d}.png")
        caption = "left: ground truth, right: predictions"
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/predictions", [panel.permute(1, 2, 0).numpy()], caption=[caption]
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/predictions", panel, trainer.global_step)


class RngStateCheckpoint(pl.Callback):
    """Saves the RNG states with each checkpoint and puts them back when training resumes.

    Lightning restores weights, optimizer, scheduler and loop counters but not the random
    generators, so a resumed run would sample different RPN/RoI minibatches and flips than
    an uninterrupted one. States are put back as soon as the checkpoint is read, before the
    training iterator is built (Lightning builds it before ``on_train_start``), matching the
    uninterrupted run, where the checkpoint is written just before the next epoch's iterator.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # tensors and plain numbers only, so checkpoints load with torch.load(weights_only=True)
        return {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        }

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class EpochTimer(pl.Callback):
    """Wall time of fitting and of the validation inside it, for results.json (``timing``).

    ``validation_metrics_s`` is the part of validation spent computing COCO metrics
    (``DetectionModule.metric_seconds``), apart from inference.
    """

    def __init__(self) -> None:
        self.fit_s = 0.0
        self.validation_s = 0.0
        self._fit_start = self._val_start = None

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.fit_s += time.perf_counter() - self._fit_start

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._val_start = None if trainer.sanity_checking else time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self._val_start is not None:
            self.validation_s += time.perf_counter() - self._val_start

    def summary(self, module: pl.LightningModule) -> dict[str, float]:
        return {
            "fit_s": round(self.fit_s, 1),
            "validation_s": round(self.validation_s, 1),
            "validation_metrics_s": round(getattr(module, "metric_seconds", {}).get("val", 0.0), 1),
        }
