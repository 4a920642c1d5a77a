"""The paper's three protocols as passes over torchvision's parts (Section 5).

- ``faster_rcnn`` (Table 3): torchvision's ``FasterRCNN`` as it is, RPN and RoI heads on one
  backbone, trained jointly.
- ``rpn`` (Table 1): the region proposal network alone. The model has no RoI heads; training
  sees the RPN's two losses only; evaluation is class-agnostic proposal recall.
- ``fast_rcnn`` (Table 2): RoI heads on fixed proposals computed beforehand (by an ``rpn``
  model, ``src.proposals``). The model has no RPN.

Each pass mirrors ``GeneralizedRCNN.forward`` (same transform, same post-processing), so a
model of one task trains and evaluates exactly the parts torchvision's would.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes

TASKS = ("faster_rcnn", "rpn", "fast_rcnn")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not allowed: choose one of {', '.join(TASKS)}")


def strip_for_task(model: FasterRCNN, task: str) -> FasterRCNN:
    """Remove what ``task`` never runs (in place), so no parameter goes unused (DDP, optimizer).

    ``rpn``: no ``roi_heads`` (for C4 that includes res5); ``fast_rcnn``: no ``rpn``.
    Sets ``model.task``.
    """
    check_task(task)
    if task == "rpn":
        model.roi_heads = None
    elif task == "fast_rcnn":
        model.rpn = None
    model.task = task
    return model


def _features(model: FasterRCNN, images: ImageList) -> OrderedDict[str, Tensor]:
    features = model.backbone(images.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    return features


def propose(
    rpn: RegionProposalNetwork,
    images: ImageList,
    features: dict[str, Tensor],
    targets: list[dict[str, Tensor]] | None = None,
) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
    """``RegionProposalNetwork.forward`` that also returns the proposals' objectness.

    Returns:
        boxes: per image [P,4] xyxy in the transformed image's coordinates, best first
            (NMS order), P <= the RPN's post-NMS top-n for its mode.
        scores: per image [P] objectness probabilities (sigmoid of the logits).
        losses: ``loss_objectness``, ``loss_rpn_box_reg`` when training, else empty.
    """
    maps = list(features.values())
    objectness, deltas = rpn.head(maps)
    anchors = rpn.anchor_generator(images, maps)
    per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    boxes, scores = rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
    losses: dict[str, Tensor] = {}
    if rpn.training:
        if targets is None:
            raise ValueError("training the RPN needs targets")
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
        regression_targets = rpn.box_coder.encode(matched, anchors)
        loss_objectness, loss_box = rpn.compute_loss(objectness, deltas, labels, regression_targets)
        losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}
    return boxes, scores, losses


def rpn_losses(
    model: FasterRCNN, images: list[Tensor], targets: list[dict[str, Tensor]]
) -> dict[str, Tensor]:
    """Training step of the ``rpn`` task: ``{"loss_objectness", "loss_rpn_box_reg"}``.

    images: float [3,H,W] in [0, 1]; targets: ``boxes`` [N,4] xyxy, ``labels`` [N].
    """
    image_list, targets = model.transform(images, targets)
    _, _, losses = propose(model.rpn, image_list, _features(model, image_list), targets)
    return losses


@torch.no_grad()
def rpn_proposals(model: FasterRCNN, images: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Eval-mode proposals: per image [P,4] xyxy in original image coordinates (best first)
    and their [P] objectness probabilities."""
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    boxes, scores, _ = propose(model.rpn, image_list, _features(model, image_list))
    boxes = [
        resize_boxes(b, resized, original)
        for b, resized, original in zip(boxes, image_list.image_sizes, original_sizes)
    ]
    return boxes, scores


def _to_resized(
    proposals: list[Tensor], original_sizes: list[tuple[int, int]], image_list: ImageList
) -> list[Tensor]:
    return [
        resize_boxes(p.to(image_list.tensors.dtype), original, resized)
        for p, original, resized in zip(proposals, original_sizes, image_list.image_sizes)
    ]


def fast_rcnn_losses(
    model: FasterRCNN,
    images: list[Tensor],
    targets: list[dict[str, Tensor]],
    proposals: list[Tensor],
) -> dict[str, Tensor]:
    """Training step of the ``fast_rcnn`` task: ``{"loss_classifier", "loss_box_reg"}``.

    proposals: per image [P,4] xyxy in the coordinates of ``images`` (as augmented); the RoI
    heads add the ground-truth boxes to them and sample their minibatch, as in Faster R-CNN.
    """
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, targets = model.transform(images, targets)
    features = _features(model, image_list)
    proposals = _to_resized(proposals, original_sizes, image_list)
    _, losses = model.roi_heads(features, proposals, image_list.image_sizes, targets)
    return losses


@torch.no_grad()
def fast_rcnn_detect(
    model: FasterRCNN, images: list[Tensor], proposals: list[Tensor]
) -> list[dict[str, Tensor]]:
    """Eval-mode detections on given proposals (per image [P,4] xyxy, original coordinates):
    per image ``{"boxes": [N,4], "scores": [N], "labels": [N]}`` in original coordinates."""
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    features = _features(model, image_list)
    proposals = _to_resized(proposals, original_sizes, image_list)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    return model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
