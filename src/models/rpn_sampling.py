"""An RPN whose positive anchors are capped per ground-truth box: a diagnostic, not the paper's.

torchvision's RPN (as the paper's) labels every anchor at IoU >= 0.7 with a box positive, plus
each box's best anchor. On one map with all anchor sizes (row (f), P2 only) a large box then
overlaps tens of anchors per location pattern and a small box one or two (``src.analysis.
anchor_stats``: 76.5 against 2.2 per box on the synthetic data at 256 px), so the 256 sampled
anchors of an image are mostly large objects' and the RPN hardly learns small ones. A pyramid
gives every size about the same count (1.2-1.5 per box). Capping the positives per box at
``k`` (the ``k`` of highest IoU; the rest ignored, neither positive nor negative) equalises
the sizes on one map and leaves everything else as torchvision does, which makes the cap a
test of whether that imbalance is what row (f) lacks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou


def cap_positives_per_box(
    labels: Tensor, anchors: Tensor, gt_boxes: Tensor, max_per_box: int
) -> Tensor:
    """Keep at most ``max_per_box`` positive anchors for each ground-truth box.

    Args:
        labels: [A] torchvision's anchor labels (1 positive, 0 negative, -1 ignored).
        anchors: [A, 4] xyxy.
        gt_boxes: [G, 4] xyxy.
        max_per_box: k >= 1.

    Returns:
        [A] labels: a positive anchor is kept when it is among the k of highest IoU of the box
        it matched (the box of highest IoU, as torchvision's matcher assigns); the others
        become -1. Negatives and ignored anchors are unchanged.
    """
    if max_per_box < 1:
        raise ValueError(f"max_per_box={max_per_box!r} is not allowed: an int >= 1")
    positive = labels == 1
    if gt_boxes.numel() == 0 or not bool(positive.any()):
        return labels
    idx = positive.nonzero().squeeze(1)
    iou = box_iou(gt_boxes, anchors[idx])  # [G, P]
    best_iou, box = iou.max(dim=0)
    # Rank each positive within its box by IoU: sort by (box, -IoU), then count within a box.
    order = torch.argsort(box.double() * 2.0 - best_iou.double(), stable=True)
    sorted_box = box[order]
    first = torch.searchsorted(sorted_box, sorted_box, right=False)
    rank = torch.arange(len(order), device=labels.device) - first
    out = labels.clone()
    out[idx[order[rank >= max_per_box]]] = -1.0
    return out


class CappedPositivesRPN(RegionProposalNetwork):
    """``RegionProposalNetwork`` with at most ``max_positives_per_box`` positives per box."""

    def __init__(self, *args, max_positives_per_box: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(max_positives_per_box, bool) or max_positives_per_box < 1:
            raise ValueError(
                f"rpn_positives_per_box={max_positives_per_box!r} is not allowed: "
                "an int >= 1, or None for torchvision's rule"
            )
        self.max_positives_per_box = int(max_positives_per_box)

    @classmethod
    def replacing(cls, rpn: RegionProposalNetwork, max_positives_per_box: int):
        """The same RPN (same head and anchor generator modules, same settings), capped."""
        return cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
            max_positives_per_box=max_positives_per_box,
        )

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        labels = [
            cap_positives_per_box(lab, anc, t["boxes"], self.max_positives_per_box)
            for lab, anc, t in zip(labels, anchors, targets)
        ]
        return labels, matched_gt_boxes
