"""One eval-mode pass of a torchvision Faster R-CNN that also returns the RPN's proposals."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.transform import resize_boxes

from src.models.stages import propose


def to_float_images(images: list[Tensor]) -> list[Tensor]:
    """uint8 [3,H,W] (or tv_tensors.Image) -> plain float32 [3,H,W] in [0, 1]."""
    out = []
    for img in images:
        img = img.as_subclass(Tensor)
        out.append(img.float().div_(255) if img.dtype == torch.uint8 else img.float())
    return out


@torch.no_grad()
def detect_with_proposals(
    model: FasterRCNN, images: list[Tensor]
) -> tuple[list[dict[str, Tensor]], list[Tensor]]:
    """Run ``model`` in eval mode, keeping what ``GeneralizedRCNN.forward`` throws away.

    Mirrors ``GeneralizedRCNN.forward`` step by step (same transform, backbone, RPN and RoI
    heads, same post-processing) so detections are identical to ``model(images)``.

    Args:
        model: a FasterRCNN in eval mode.
        images: float [3,H,W] tensors in [0, 1], any sizes.

    Returns:
        detections: per image ``{"boxes": [N,4] xyxy, "scores": [N], "labels": [N]}`` in
            original image coordinates, labels contiguous 1..K.
        proposals: per image [P,4] xyxy RPN proposals in original image coordinates, sorted by
            objectness, best first (torchvision keeps NMS order), P <= rpn_post_nms_top_n_test.
    """
    if model.training:
        raise RuntimeError("detect_with_proposals needs the model in eval mode (model.eval())")
    if model.rpn is None or model.roi_heads is None:
        raise RuntimeError(
            f"detect_with_proposals needs a faster_rcnn model, not a {model.task} one "
            "(see src.models.stages)"
        )
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, _, _ = propose(model.rpn, image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
    proposals = [
        resize_boxes(p, resized, original)
        for p, resized, original in zip(proposals, image_list.image_sizes, original_sizes)
    ]
    return detections, proposals
