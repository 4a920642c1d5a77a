"""Variant resolution and what each variant builds (anchors, pooler, heads, knobs)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from src.models.detector import (
    PAPER_ROWS,
    TORCHVISION_KNOBS,
    VARIANTS,
    Res5Head,
    VariantSpec,
    anchor_sizes,
    build_detector,
    resolve_variant,
)
from src.models.fpn import PYRAMID_LEVELS

SMALL = {"widths": (8, 8, 16, 16, 32), "out_channels": 16, "representation_size": 32}


@pytest.mark.parametrize(
    ("variant", "switches", "expect"),
    [
        ("fpn", {}, VariantSpec("fpn", "fpn", True, True, PYRAMID_LEVELS)),
        ("bottom_up", {}, VariantSpec("bottom_up", "fpn", True, False, PYRAMID_LEVELS)),
        ("no_lateral", {}, VariantSpec("no_lateral", "fpn", False, True, PYRAMID_LEVELS)),
        ("p2_only", {}, VariantSpec("p2_only", "fpn", True, True, ("p2",))),
        ("c4", {}, VariantSpec("c4", "c4", None, None, ("c4",))),
        ("c5", {}, VariantSpec("c5", "c5", None, None, ("c5",))),
        # the Hydra switches on variant fpn land on the paper's rows
        ("fpn", {"lateral": False}, VariantSpec("no_lateral", "fpn", False, True, PYRAMID_LEVELS)),
        ("fpn", {"top_down": False}, VariantSpec("bottom_up", "fpn", True, False, PYRAMID_LEVELS)),
        ("fpn", {"levels": ["p2"]}, VariantSpec("p2_only", "fpn", True, True, ("p2",))),
        ("bottom_up", {"top_down": True}, VariantSpec("fpn", "fpn", True, True, PYRAMID_LEVELS)),
        ("fpn", {"levels": "p2"}, VariantSpec("p2_only", "fpn", True, True, ("p2",))),
        # specs that are no paper row get a stable descriptive name
        (
            "no_lateral",
            {"levels": ["p4", "p2"]},
            VariantSpec("fpn-no_lateral-levels_p2_p4", "fpn", False, True, ("p2", "p4")),
        ),
        (
            "bottom_up",
            {"levels": ["p2"]},
            VariantSpec("fpn-no_top_down-levels_p2", "fpn", True, False, ("p2",)),
        ),
    ],
)
def test_resolve_variant(variant, switches, expect):
    spec = resolve_variant(variant, **switches)
    assert spec == expect
    assert spec.paper_row == PAPER_ROWS.get(expect.name)


@pytest.mark.parametrize(
    ("variant", "switches", "match"),
    [
        ("fpn3", {}, "variant='fpn3'.*fpn, c4, c5, bottom_up, no_lateral, p2_only"),
        ("c4", {"lateral": False}, "variant='c4' has no feature pyramid.*lateral"),
        ("c5", {"levels": ["p2"]}, "variant='c5' has no feature pyramid.*levels"),
        ("fpn", {"lateral": False, "top_down": False}, "lateral=False and top_down=False"),
        ("no_lateral", {"top_down": False}, "lateral=False and top_down=False"),
        ("fpn", {"levels": ["p1"]}, "p1.*p2, p3, p4, p5, p6"),
        ("fpn", {"levels": ["p6"]}, "p6 feeds only the RPN"),
    ],
)
def test_resolve_variant_errors(variant, switches, match):
    with pytest.raises(ValueError, match=match):
        resolve_variant(variant, **switches)


def test_anchor_sizes_are_derived_from_levels():
    assert anchor_sizes(PYRAMID_LEVELS) == ((32,), (64,), (128,), (256,), (512,))
    assert anchor_sizes(("p2",)) == ((32, 64, 128, 256, 512),)
    assert anchor_sizes(("c4",), 0.25) == ((8, 16, 32, 64, 128),)
    assert anchor_sizes(("p3", "p5"), 0.3) == ((64 * 0.3,), (256 * 0.3,))


def _anchors(model):
    return model.rpn.anchor_generator.sizes, model.rpn.anchor_generator.aspect_ratios


def test_fpn_variant_structure():
    model = build_detector("fpn", "simple", 3, anchor_scale=0.5, **SMALL)
    sizes, ratios = _anchors(model)
    assert sizes == ((16,), (32,), (64,), (128,), (256,))
    assert set(ratios) == {(0.5, 1.0, 2.0)}
    assert model.rpn.head.cls_logits.out_channels == 3
    assert model.roi_heads.box_roi_pool.featmap_names == ["p2", "p3", "p4", "p5"]
    assert isinstance(model.roi_heads.box_head, TwoMLPHead)
    assert model.roi_heads.box_head.fc6.in_features == 16 * 7 * 7
    assert model.roi_heads.box_head.fc6.out_features == 32
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    keys = set(model.state_dict())
    assert "backbone.fpn.lateral.c3.weight" in keys
    assert "backbone.fpn.output.p3.weight" in keys
    assert model.variant_spec.name == "fpn"


def test_p2_only_builds_no_coarser_outputs():
    model = build_detector("p2_only", "simple", 3, **SMALL)
    assert _anchors(model)[0] == ((32, 64, 128, 256, 512),)
    assert model.rpn.head.cls_logits.out_channels == 15
    assert model.roi_heads.box_roi_pool.featmap_names == ["p2"]
    assert list(model.backbone.fpn.output) == ["p2"]
    assert list(model.backbone.fpn.lateral) == ["c2", "c3", "c4", "c5"]


def test_no_lateral_backbone_returns_sizes_but_only_c5_has_a_lateral():
    model = build_detector("no_lateral", "simple", 3, **SMALL)
    assert list(model.backbone.fpn.lateral) == ["c5"]
    assert model.backbone.body.levels == ("c2", "c3", "c4", "c5")


def test_c5_variant_structure():
    model = build_detector("c5", "simple", 3, anchor_scale=0.25, **SMALL)
    assert _anchors(model)[0] == ((8, 16, 32, 64, 128),)
    assert model.rpn.head.conv[0][0].in_channels == 32
    assert model.roi_heads.box_roi_pool.featmap_names == ["c5"]
    assert model.roi_heads.box_roi_pool.output_size == (7, 7)
    assert model.roi_heads.box_head.fc6.in_features == 32 * 7 * 7
    assert model.backbone.fpn is None


def test_c4_variant_moves_res5_into_the_box_head(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(resnet.state_dict(), path)
    model = build_detector("c4", "resnet18", 3, pretrained_path=path, trainable_layers=2)
    assert [n for n, _ in model.backbone.body.named_children()] == ["stem", "c2", "c3", "c4"]
    assert model.backbone.out_channels == 256
    assert model.rpn.head.cls_logits.out_channels == 15
    assert model.roi_heads.box_roi_pool.featmap_names == ["c4"]
    assert model.roi_heads.box_roi_pool.output_size == (14, 14)
    head = model.roi_heads.box_head
    assert isinstance(head, Res5Head)
    for (name, a), b in zip(head.res5.state_dict().items(), resnet.layer4.state_dict().values()):
        assert torch.equal(a, b), name
    # trainable_layers=2: res5 and c4 train, the rest is frozen
    assert all(p.requires_grad for p in head.parameters())
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"c4"}
    assert model.roi_heads.box_predictor.cls_score.in_features == 512
    assert head(torch.rand(3, 256, 14, 14)).shape == (3, 512)


def test_torchvision_knobs_pass_through():
    model = build_detector(
        "fpn",
        "simple",
        3,
        min_size=123,
        max_size=456,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.2, 0.2, 0.2],
        rpn_pre_nms_top_n_test=11,
        rpn_post_nms_top_n_train=22,
        rpn_nms_thresh=0.6,
        rpn_batch_size_per_image=33,
        box_score_thresh=0.2,
        box_nms_thresh=0.4,
        box_detections_per_img=44,
        box_batch_size_per_image=55,
        size_divisible=1,
        **SMALL,
    )
    assert model.transform.min_size == (123,) and model.transform.max_size == 456
    assert model.transform.image_mean == [0.5, 0.5, 0.5]
    assert model.transform.size_divisible == 1
    assert model.rpn._pre_nms_top_n["testing"] == 11
    assert model.rpn._post_nms_top_n["training"] == 22
    assert model.rpn.nms_thresh == 0.6
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 33
    assert model.roi_heads.score_thresh == 0.2
    assert model.roi_heads.nms_thresh == 0.4
    assert model.roi_heads.detections_per_img == 44
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 55
    assert {"rpn_fg_iou_thresh", "box_positive_fraction", "bbox_reg_weights"} <= set(
        TORCHVISION_KNOBS
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("fpn", "vgg16", 3), {}, "backbone='vgg16'.*resnet18, resnet34, resnet50"),
        (("fpn", "simple", 3), {"rpn_nms_treshold": 0.5}, "'rpn_nms_treshold'.*rpn_nms_thresh"),
        (("fpn", "simple", 3), {"box_head": None}, "box_head is set by build_detector"),
        (("fpn", "simple", 1), {}, "num_classes=1"),
        (("fpn", "simple", 3), {"anchor_scale": 0}, "anchor_scale=0"),
        (("fpn", "simple", 3), {"trainable_layers": 7}, "trainable_layers=7.*0..5"),
        (("c4", "simple", 3), {"top_down": False}, "no feature pyramid"),
        (("zz", "simple", 3), {}, "variant='zz'"),
    ],
)
def test_build_detector_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_detector(*args, **kwargs)


def test_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.pth"):
        build_detector("fpn", "resnet18", 3, pretrained_path=tmp_path / "missing.pth")


def test_every_variant_is_listed():
    assert set(VARIANTS) == set(PAPER_ROWS)
    for variant in VARIANTS:
        assert resolve_variant(variant).name == variant


@pytest.mark.parametrize("task", ["faster_rcnn", "rpn", "fast_rcnn"])
def test_box_outputs_stay_fp32_under_bf16_autocast(task):
    """torchvision decodes boxes in the deltas' dtype: bf16 deltas would round proposals and
    detections to 2 px at 256-512 px. The heads hand their outputs on in fp32 instead."""
    from src.models.inference import detect_with_proposals

    torch.manual_seed(0)
    model = build_detector("fpn", "simple", 3, task=task, **SMALL).eval()
    images = [torch.rand(3, 300, 460)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.backbone(torch.rand(1, 3, 64, 64))
        maps = list(features.values())
        if model.rpn is not None:
            objectness, deltas = model.rpn.head(maps)
            assert {t.dtype for t in objectness + deltas} == {torch.float32}
        if model.roi_heads is not None:
            box_features = model.roi_heads.box_head(torch.rand(5, 16 * 7 * 7))
            scores, box_deltas = model.roi_heads.box_predictor(box_features)
            assert scores.dtype == box_deltas.dtype == torch.float32
        if task == "faster_rcnn":
            detections, proposals = detect_with_proposals(model, images)
            assert proposals[0].dtype == detections[0]["boxes"].dtype == torch.float32
