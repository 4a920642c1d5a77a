"""Every variant trains one step and predicts on small odd-sized images.

After one backward pass every trainable parameter must have a finite gradient and no frozen
one may have any: that is what lets DDP run without ``find_unused_parameters``.
"""

from __future__ import annotations

import math

import pytest
import torch

from src.models.detector import VARIANTS, build_detector

NUM_CLASSES = 4
SMALL_KNOBS = {
    "min_size": 96,
    "max_size": 160,
    "anchor_scale": 0.25,
    "size_divisible": 1,  # odd feature maps reach the pyramid, not padded to /32
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
    "representation_size": 64,
}
# resnet18 with 3 trainable stages (stem and c2 frozen); simple with group norm, all trainable
BACKBONES = {
    "resnet18": {"trainable_layers": 3},
    "simple": {"widths": (16, 16, 32, 32, 64), "norm": "gn", "out_channels": 32},
}


def batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 97, 131, generator=g), torch.rand(3, 143, 75, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 5.0, 125.0, 40.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    return images, targets


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_one_training_step_reaches_exactly_the_trainable_parameters(variant, backbone):
    torch.manual_seed(0)
    model = build_detector(
        variant, backbone, NUM_CLASSES, **BACKBONES[backbone], **SMALL_KNOBS
    ).train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"{variant}/{backbone}: unused trainable parameters {no_grad[:5]}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert all(p.grad is None for _, p in frozen)
    if backbone == "resnet18":
        assert {n.split(".")[2] for n, _ in frozen} == {"stem", "c2"}

    model.eval()
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for image, pred in zip(images, predictions):
        boxes = pred["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(pred["scores"]) == len(pred["labels"])
        assert (boxes[:, 2] <= image.shape[-1]).all() and (boxes[:, 3] <= image.shape[-2]).all()
        assert ((pred["labels"] >= 1) & (pred["labels"] < NUM_CLASSES)).all()
