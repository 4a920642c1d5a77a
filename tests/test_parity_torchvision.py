"""Our ``fpn`` ResNet-50 detector is torchvision's ``fasterrcnn_resnet50_fpn``, number for number.

Same parameter count (trainable BatchNorm and FrozenBatchNorm2d builds), and with the
converted torchvision weights loaded: the same feature maps, the same detections in eval
mode and the same losses in train mode under one seed. Small images keep it fast; both
models get the same knobs.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from src.models.detector import build_detector, convert_torchvision_state_dict

KNOBS = {
    "min_size": 224,
    "max_size": 224,
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 200,
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    # an untrained head scores ~1/91 per class; keep every detection so they are compared
    "box_score_thresh": 0.0,
    "box_detections_per_img": 50,
}


def n_params(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **KNOBS)
    ours = build_detector("fpn", "resnet50", num_classes=91, **KNOBS)
    # randomise BatchNorm statistics so a mix-up of norm layers could not go unseen
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    ours.load_state_dict(convert_torchvision_state_dict(theirs.state_dict()), strict=True)
    return theirs, ours


def inputs():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 211, 187, generator=g), torch.rand(3, 173, 224, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 90.0, 120.0], [100.0, 30.0, 180.0, 200.0]]),
            "labels": torch.tensor([3, 17]),
        },
        {"boxes": torch.tensor([[40.0, 35.0, 210.0, 150.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


def test_parameter_count_equals_torchvision(pair):
    theirs, ours = pair
    assert n_params(theirs) == n_params(ours) == 41_808_406


def test_state_dict_keys_map_one_to_one(pair):
    theirs, ours = pair
    converted = convert_torchvision_state_dict(theirs.state_dict())
    assert set(converted) == set(ours.state_dict())
    assert len(converted) == len(theirs.state_dict())


def test_eval_features_and_detections_equal_torchvision(pair):
    theirs, ours = pair
    theirs.eval(), ours.eval()
    images, _ = inputs()
    with torch.no_grad():
        batched, _ = theirs.transform(images)
        f_theirs = theirs.backbone(batched.tensors)
        f_ours = ours.backbone(batched.tensors)
        det_theirs, det_ours = theirs(images), ours(images)
    assert list(f_ours) == ["p2", "p3", "p4", "p5", "p6"]
    for a, b in zip(f_theirs.values(), f_ours.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for a, b in zip(det_theirs, det_ours, strict=True):
        assert len(a["boxes"]) == KNOBS["box_detections_per_img"]
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


def test_train_losses_equal_torchvision_under_one_seed(pair):
    theirs, ours = pair
    theirs.train(), ours.train()
    images, targets = inputs()
    torch.manual_seed(123)
    loss_theirs = theirs(images, targets)
    torch.manual_seed(123)
    loss_ours = ours(images, targets)
    assert set(loss_theirs) == set(loss_ours)
    for key in loss_theirs:
        assert loss_theirs[key].item() > 0, key
        torch.testing.assert_close(loss_ours[key], loss_theirs[key], rtol=0, atol=1e-5)
    # a different seed samples different anchors and RoIs: the match is not luck
    torch.manual_seed(7)
    other = ours(images, targets)
    assert any(abs(other[k].item() - loss_theirs[k].item()) > 1e-6 for k in loss_theirs)


def test_frozen_batch_norm_build_equals_torchvision_pretrained_recipe():
    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    theirs = FasterRCNN(body, num_classes=91)
    ours = build_detector("fpn", "resnet50", num_classes=91, norm="frozen_bn", trainable_layers=3)
    assert n_params(theirs) == n_params(ours) == 41_755_286
    assert n_params(theirs, trainable_only=True) == n_params(ours, trainable_only=True)
    converted = convert_torchvision_state_dict(theirs.state_dict())
    assert set(converted) == set(ours.state_dict())
