"""python -m src.proposals ckpt_path=RPN_CKPT split=SPLIT [data=...]: one split's proposals.

Runs the RPN of a checkpoint (task ``rpn`` or ``faster_rcnn``) over every image of a split and
writes them to one ``.npz`` file in Detectron2's proposal fields (``src.data.proposals``), the
fixed proposals that Table 2's Fast R-CNN trains and evaluates on:
``python -m src.train model.task=fast_rcnn data.proposals.train=... data.proposals.val=...``.
Per image it keeps the paper's counts unless told: 2000 on the training split, 1000 elsewhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from src.data.coco import collate_detection
from src.data.proposals import ProposalSet, objectness_logits, save_proposals
from src.eval import check_categories
from src.models.inference import to_float_images
from src.models.stages import rpn_proposals
from src.training import cli, quiet
from src.training.checkpoints import load_hparams
from src.training.config import build_datamodule
from src.training.module import DetectionModule

log = logging.getLogger(__name__)
PAPER_COUNTS = {"train": 2000, "eval": 1000}  # Section 5.2.1: proposals per image


def set_proposal_count(model: torch.nn.Module, per_image: int) -> None:
    """Make the eval-mode RPN keep ``per_image`` proposals after NMS (and at least as many
    candidates per level before it)."""
    rpn = model.rpn
    rpn._post_nms_top_n["testing"] = per_image
    rpn._pre_nms_top_n["testing"] = max(rpn._pre_nms_top_n["testing"], per_image)


@torch.no_grad()
def write_split(cfg: DictConfig) -> Path:
    """Compute and write the proposals of ``cfg.split``; returns the file."""
    hparams = load_hparams(cfg.ckpt_path)  # clear error for a missing or foreign file
    task = hparams["detector"].get("task", "faster_rcnn")
    if task == "fast_rcnn":
        raise ValueError(
            f"ckpt_path={cfg.ckpt_path!r} is a fast_rcnn model, which has no RPN: give an rpn "
            "(Table 1) or faster_rcnn checkpoint"
        )
    datamodule = build_datamodule(cfg)
    check_categories(cfg.ckpt_path, hparams["categories"], datamodule.categories)
    split = str(cfg.split)
    dataset = datamodule.eval_dataset(split)
    per_image = cfg.per_image
    if per_image is None:
        per_image = PAPER_COUNTS["train" if split == datamodule.train_split else "eval"]
    if per_image < 1:
        raise ValueError(f"per_image={per_image} is not allowed: a positive integer or null")
    module = DetectionModule.from_checkpoint(cfg.ckpt_path, map_location=cfg.device).eval()
    set_proposal_count(module.model, int(per_image))
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_detection,
    )
    ids, boxes, logits = [], [], []
    start = time.perf_counter()
    for images, targets in loader:
        if not images:
            continue
        images = to_float_images([img.to(cfg.device) for img in images])
        found, scores = rpn_proposals(module.model, images)
        ids += [int(t["image_id"]) for t in targets]
        boxes += [b.cpu() for b in found]
        logits += [objectness_logits(s).cpu() for s in scores]
    out = save_proposals(cfg.output, ids, boxes, logits, split=split, source=str(cfg.ckpt_path))
    counts = [len(b) for b in boxes]
    log.info(
        "%d images of %s: %.0f proposals per image (min %d, max %d), %.1f s -> %s",
        len(ids), split, sum(counts) / max(1, len(counts)), min(counts, default=0),
        max(counts, default=0), time.perf_counter() - start, out,
    )  # fmt: skip
    written = ProposalSet(out)
    written.check_covers(dataset.image_ids, split)  # what was written reads back
    # the file's own sha256 depends on the checkpoint's path (its source field); this does not
    log.info("content sha256 %s (ProposalSet.content_digest)", written.content_digest())
    print(f"{len(ids)} images, up to {per_image} proposals each, written to {out}")
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="proposals")
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    write_split(cfg)


if __name__ == "__main__":
    quiet.install()
    cli.run(main)
