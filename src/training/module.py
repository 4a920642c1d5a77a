"""DetectionModule: a torchvision Faster R-CNN on our FPN, trained and evaluated the COCO way."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import SumMetric
from torchmetrics.detection import MeanAveragePrecision

from src.analysis.metrics import from_source
from src.models.detector import VariantSpec, build_detector
from src.models.inference import detect_with_proposals, to_float_images
from src.models.stages import fast_rcnn_detect, fast_rcnn_losses, rpn_losses, rpn_proposals
from src.training.checkpoints import SPEC_KEY, load_hparams
from src.training.optim import build_sgd, scaled_lr, warmup_multistep

# faster_coco_eval prints its whole summary at INFO on every compute; we log the numbers ourselves
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """Training produced a non-finite (or too large) loss, or non-finite weights."""


class DetectionModule(pl.LightningModule):
    """Trains ``build_detector(**detector)`` and reports COCO metrics in original category ids.

    Batches are ``(images, targets)``: images uint8 [3,H,W]; targets dicts with ``boxes``
    [N,4] xyxy, ``labels`` [N] contiguous 1..K, and for evaluation ``iscrowd`` [N], ``area`` [N];
    for the ``fast_rcnn`` task also ``proposals`` [P,4] xyxy, best first (``src.data.proposals``).

    The detector's ``task`` (``src.models.stages``) decides what trains and what is measured:
    ``faster_rcnn`` detections and proposal recall, ``rpn`` proposal recall only (Table 1),
    ``fast_rcnn`` detections on the batch's fixed proposals (Table 2).

    Args:
        detector: keyword arguments of ``src.models.detector.build_detector`` except
            ``num_classes`` (variant, backbone, knobs); plain values, saved in checkpoints.
        categories: ``[{"id": original_id, "name": str}]``; label i+1 is ``categories[i]``.
        lr: fixed learning rate; ``None`` scales ``base_lr`` linearly from ``base_batch_size``
            to the effective batch (per-device batch x devices x accumulation).
        warmup_steps: linear warm-up length, capped at a tenth of the run for short runs.
        milestones: fractions of training where the rate drops by ``gamma``.
        max_loss: stop (``DivergedError``) when the summed training loss exceeds it; a
            non-finite loss always stops the run.
        proposal_recall: also measure the RPN's class-agnostic AR@100/1000 (Table 1).
    """

    def __init__(
        self,
        detector: dict[str, Any],
        categories: Sequence[dict[str, Any]],
        *,
        lr: float | None = None,
        base_lr: float = 0.02,
        base_batch_size: int = 16,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        norm_weight_decay: float = 0.0,
        bias_weight_decay: float = 0.0,
        warmup_steps: int = 500,
        warmup_factor: float = 0.001,
        milestones: Sequence[float] = (2 / 3, 8 / 9),
        gamma: float = 0.1,
        max_loss: float | None = None,
        proposal_recall: bool = True,
    ) -> None:
        super().__init__()
        if not categories:
            raise ValueError("categories is empty: the dataset defines no category")
        if "num_classes" in detector:
            raise ValueError("detector must not set num_classes: it comes from categories")
        self.save_hyperparameters()
        self.categories = [dict(c) for c in categories]
        self.model = build_detector(num_classes=len(self.categories) + 1, **detector)
        # label i+1 -> original COCO category id, on the model's device
        self.register_buffer(
            "category_ids", torch.tensor([int(c["id"]) for c in self.categories]), persistent=False
        )
        self.task: str = self.model.task
        # proposals per image the fast_rcnn task feeds its heads: the paper's 2000 / 1000
        self.proposals_per_image = {
            "train": int(detector.get("rpn_post_nms_top_n_train", 2000)),
            "eval": int(detector.get("rpn_post_nms_top_n_test", 1000)),
        }
        self.metrics = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            if self.task != "rpn":
                self.metrics[f"{stage}_det"] = MeanAveragePrecision(backend="faster_coco_eval")
            self.metrics[f"{stage}_images"] = SumMetric()
            # fixed proposals are the same every epoch: their recall is the proposal file's
            if self.task == "rpn" or (proposal_recall and self.task == "faster_rcnn"):
                self.metrics[f"{stage}_rpn"] = MeanAveragePrecision(
                    backend="faster_coco_eval", max_detection_thresholds=[10, 100, 1000]
                )
        # Table 1's AR@1000 (and its s/m/l) needs 1000 proposals per image; with fewer (the CPU
        # demo keeps 300 for its 256 px images) a detector logs AR@100 only. The rpn task selects
        # on AR@1000, so it keeps the columns and says that they hold AR@<kept>.
        kept = self.proposals_per_image["eval"]
        self.recall_keys = tuple(
            m.key for m in from_source("proposals")
            if m.key == "ar_100" or kept >= 1000 or self.task == "rpn"
        )  # fmt: skip
        if self.task == "rpn" and kept < 1000:
            log.warning(
                "rpn_post_nms_top_n_test=%d < 1000: val/ar_1000 and its s/m/l are recall at %d "
                "proposals per image, not Table 1's AR@1000", kept, kept,
            )  # fmt: skip
        # set to a list to collect COCO-format results (src.eval): one dict per detection
        self.coco_results: list[dict] | None = None
        # seconds spent computing COCO metrics per stage, apart from inference (EpochTimer)
        self.metric_seconds: dict[str, float] = {"val": 0.0, "test": 0.0}

    @classmethod
    def from_checkpoint(cls, ckpt_path: str, map_location: Any = "cpu") -> DetectionModule:
        """The module of a checkpoint (read with ``weights_only=True``), built without
        re-reading the ImageNet weights it started from: the checkpoint's own replace them."""
        detector = dict(load_hparams(ckpt_path)["detector"])
        detector.pop("weights", None)
        detector.pop("pretrained_path", None)
        return cls.load_from_checkpoint(
            ckpt_path, map_location=map_location, weights_only=True, detector=detector
        )

    @property
    def variant_spec(self) -> VariantSpec:
        """What the built model is (the paper's row, head, switches, levels)."""
        return self.model.variant_spec

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint is written only with finite weights, so last.ckpt and the best one stay
        # the last good state of a run that diverges (raising here stops the write).
        bad = [k for k, v in checkpoint["state_dict"].items()
               if v.is_floating_point() and not torch.isfinite(v).all()]  # fmt: skip
        if bad:
            raise DivergedError(
                f"training diverged by step {self.global_step}: non-finite weights in "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} ({len(bad)} tensors); "
                "not saving them over the last good checkpoint"
            )
        # read back by src.training.checkpoints.check_resumable: the model as built
        checkpoint[SPEC_KEY] = self.variant_spec.as_dict()

    def forward(
        self, images: list[Tensor], proposals: list[Tensor] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections in original image coordinates with original category ids as labels.

        ``fast_rcnn`` needs ``proposals`` (per image [P,4] xyxy, best first); ``rpn`` returns
        its proposals as ``{"boxes", "scores"}`` (objectness) without labels.
        """
        images = to_float_images(images)
        if self.task == "rpn":
            boxes, scores = rpn_proposals(self.model, images)
            return [{"boxes": b, "scores": s} for b, s in zip(boxes, scores)]
        if self.task == "fast_rcnn":
            if proposals is None:
                raise ValueError("a fast_rcnn model detects on given proposals: pass proposals")
            n = self.proposals_per_image["eval"]
            detections = fast_rcnn_detect(self.model, images, [_plain(p)[:n] for p in proposals])
        else:
            detections, _ = detect_with_proposals(self.model, images)
        return [self._to_category_ids(d) for d in detections]

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        images, targets = batch
        if not images:  # every image of the batch was skipped as unreadable
            return None
        plain = [{"boxes": _plain(t["boxes"]), "labels": t["labels"]} for t in targets]
        images = to_float_images(images)
        if self.task == "rpn":
            losses = rpn_losses(self.model, images, plain)
        elif self.task == "fast_rcnn":
            n = self.proposals_per_image["train"]
            proposals = [_plain(t["proposals"])[:n] for t in targets]
            losses = fast_rcnn_losses(self.model, images, plain, proposals)
        else:
            losses = self.model(images, plain)
        loss = sum(losses.values())
        self._check_loss(loss, losses)
        n = len(images)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def _check_loss(self, loss: Tensor, losses: dict[str, Tensor]) -> None:
        """Stop at the first non-finite (or too large) loss, naming the step and the terms.

        One host sync per step, as torchvision's detection reference does: training on past a
        NaN would only write NaN weights and a meaningless result.
        """
        too_large = self.hparams.max_loss is not None and loss > self.hparams.max_loss
        if bool(torch.isfinite(loss)) and not too_large:
            return
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        reason = (
            f"non-finite loss terms: {', '.join(bad)}"
            if bad
            else f"loss {float(loss):.4g} > optim.max_loss={self.hparams.max_loss}"
        )
        raise DivergedError(
            f"training diverged at step {self.global_step} (epoch {self.current_epoch}): "
            f"{reason} ({terms}); lower the learning rate (optim.lr / optim.base_lr) or clip "
            "gradients (trainer.gradient_clip_val)"
        )

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _eval_step(self, stage: str, batch) -> None:
        images, targets = batch
        if not images:
            return
        floats = to_float_images(images)
        detections, proposals = None, None
        if self.task == "rpn":
            proposals, _ = rpn_proposals(self.model, floats)
        elif self.task == "fast_rcnn":
            n = self.proposals_per_image["eval"]
            fixed = [_plain(t["proposals"])[:n] for t in targets]
            detections = fast_rcnn_detect(self.model, floats, fixed)
        else:
            detections, proposals = detect_with_proposals(self.model, floats)
        gts = [
            {
                "boxes": _plain(t["boxes"]),
                "labels": self.category_ids[t["labels"] - 1],
                "iscrowd": t["iscrowd"],
                "area": t["area"],
            }
            for t in targets
        ]
        if detections is not None:
            detections = [self._to_category_ids(d) for d in detections]
            self.metrics[f"{stage}_det"].update(detections, gts)
            if self.coco_results is not None:
                for det, target in zip(detections, targets):
                    self.coco_results.extend(coco_results(det, int(target["image_id"])))
        self.metrics[f"{stage}_images"].update(len(images))
        if f"{stage}_rpn" in self.metrics and proposals is not None:
            # Class-agnostic recall: one label for all; NMS order gives the ranking.
            props = [
                {
                    "boxes": p,
                    "scores": torch.linspace(1, 0, len(p), device=p.device),
                    "labels": torch.zeros(len(p), dtype=torch.long, device=p.device),
                }
                for p in proposals
            ]
            agnostic = [{**g, "labels": torch.zeros_like(g["labels"])} for g in gts]
            self.metrics[f"{stage}_rpn"].update(props, agnostic)

    def _log_eval(self, stage: str) -> None:
        start = time.perf_counter()
        values = {}
        if f"{stage}_det" in self.metrics:
            det = self.metrics[f"{stage}_det"].compute()
            values |= {f"{stage}/{m.key}": det[m.torchmetrics] for m in from_source("detections")}
            self.metrics[f"{stage}_det"].reset()
        if f"{stage}_rpn" in self.metrics:
            rpn = self.metrics[f"{stage}_rpn"].compute()
            values |= {
                f"{stage}/{m.key}": rpn[m.torchmetrics]
                for m in from_source("proposals") if m.key in self.recall_keys
            }  # fmt: skip
            self.metrics[f"{stage}_rpn"].reset()
        values[f"{stage}/images"] = self.metrics[f"{stage}_images"].compute()
        self.metrics[f"{stage}_images"].reset()
        self.metric_seconds[stage] += time.perf_counter() - start
        # computed metrics are already synced across ranks: no second reduction
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=False)

    def _to_category_ids(self, detections: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**detections, "labels": self.category_ids[detections["labels"] - 1]}

    # ---- optimization ---------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        lr = hp.lr
        if lr is None:
            per_device = getattr(self.trainer.datamodule, "batch_size", None)
            if per_device is None:
                raise ValueError("lr is null and the datamodule has no batch_size to scale it by")
            effective = per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches
            lr = scaled_lr(hp.base_lr, hp.base_batch_size, effective)
        optimizer = build_sgd(
            self.model, lr, hp.momentum, hp.weight_decay, hp.norm_weight_decay,
            hp.bias_weight_decay,
        )  # fmt: skip
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total // 10)
        schedule = warmup_multistep(total, warmup, hp.warmup_factor, hp.milestones, hp.gamma)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def coco_results(detections: dict[str, Tensor], image_id: int) -> list[dict[str, Any]]:
    """One image's detections (xyxy, original category ids) as COCO results (xywh)."""
    boxes = detections["boxes"].detach().cpu().double()
    boxes[:, 2:] -= boxes[:, :2]
    return [
        {"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
         "score": round(float(s), 5)}
        for b, c, s in zip(boxes, detections["labels"].tolist(), detections["scores"].tolist())
    ]  # fmt: skip


def _plain(t: Tensor) -> Tensor:
    """tv_tensors.BoundingBoxes -> plain Tensor, so torchvision ops see an ordinary tensor."""
    return t.as_subclass(Tensor)
