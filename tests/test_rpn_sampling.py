"""The diagnostic cap on the RPN's positive anchors per box (row (f)'s anchor imbalance)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from src.models.detector import build_detector
from src.models.rpn_sampling import CappedPositivesRPN, cap_positives_per_box
from src.models.stages import _features

SMALL = {"widths": (8, 8, 16, 16, 32), "out_channels": 16, "representation_size": 32}


def test_cap_keeps_the_k_best_positives_of_each_box_and_leaves_the_rest_alone():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    # box 0: four positives at IoU 1, 0.81, 0.64, 0.49; box 1: one positive
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 9.0, 9.0],
            [0.0, 0.0, 8.0, 8.0],
            [0.0, 0.0, 7.0, 7.0],
            [50.0, 50.0, 59.0, 60.0],
            [100.0, 100.0, 110.0, 110.0],  # negative
            [30.0, 30.0, 40.0, 40.0],  # ignored
        ]
    )
    labels = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, -1.0])
    # shuffle, so the ranking cannot lean on the input order
    perm = torch.tensor([3, 5, 1, 6, 4, 0, 2])
    out = cap_positives_per_box(labels[perm], anchors[perm], gt, max_per_box=2)
    back = torch.empty_like(out)
    back[perm] = out
    assert back.tolist() == [1.0, 1.0, -1.0, -1.0, 1.0, 0.0, -1.0]
    assert cap_positives_per_box(labels, anchors, gt, 4).tolist() == labels.tolist()
    assert cap_positives_per_box(labels, anchors, gt[:0], 1).tolist() == labels.tolist()
    with pytest.raises(ValueError, match="max_per_box=0"):
        cap_positives_per_box(labels, anchors, gt, 0)


def _positives_per_box(model, image, boxes):
    model.train()
    images, targets = model.transform([image], [{"boxes": boxes, "labels": torch.ones(2).long()}])
    maps = list(_features(model, images).values())
    anchors = model.rpn.anchor_generator(images, maps)
    labels, _ = model.rpn.assign_targets_to_anchors(anchors, targets)
    positive = labels[0] == 1
    owner = box_iou(targets[0]["boxes"], anchors[0][positive]).argmax(0)
    return torch.bincount(owner, minlength=2).tolist()


def test_p2_only_detector_with_the_cap_trains_on_at_most_k_positives_per_box():
    torch.manual_seed(0)
    image = torch.rand(3, 128, 128)
    boxes = torch.tensor([[8.0, 8.0, 104.0, 100.0], [110.0, 110.0, 120.0, 121.0]])
    common = dict(min_size=128, max_size=128, anchor_scale=0.25, **SMALL)
    plain = build_detector("p2_only", "simple", 3, **common)
    capped = build_detector("p2_only", "simple", 3, rpn_positives_per_box=2, **common)
    assert type(plain.rpn) is not CappedPositivesRPN
    assert isinstance(capped.rpn, CappedPositivesRPN)
    assert (
        capped.rpn.fg_bg_sampler.batch_size_per_image
        == plain.rpn.fg_bg_sampler.batch_size_per_image
    )
    large, small = _positives_per_box(plain, image, boxes)
    assert large > 2 * small and large > 2  # the imbalance the cap removes
    assert _positives_per_box(capped, image, boxes) == [2, min(small, 2)]
    # it trains: the RPN's losses are finite and reach its head
    losses = capped([image], [{"boxes": boxes, "labels": torch.tensor([1, 2])}])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert capped.rpn.head.cls_logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0, -1, True])
def test_cap_refuses_a_count_below_one(bad):
    with pytest.raises(ValueError, match="rpn_positives_per_box"):
        build_detector("p2_only", "simple", 3, rpn_positives_per_box=bad, **SMALL)
