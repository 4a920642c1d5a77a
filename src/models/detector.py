"""The paper's detector variants (Table 1/3 rows a-f) as torchvision ``FasterRCNN`` models.

One function, :func:`build_detector`, builds every row (the rows themselves, VARIANTS,
VariantSpec and resolve_variant, live in ``variants.py`` and are re-exported here). Anchors, the RoI
pooler's feature names and the box head are derived from the levels in use, and a variant
builds only the layers it uses (so DDP needs no ``find_unused_parameters``).
"""

from __future__ import annotations

import inspect
import os
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from src.models.backbones import BottomUp, build_backbone, check_backbone_options
from src.models.fpn import FeaturePyramid, pyramid_inputs
from src.models.rpn_gradient import detach_rpn_inputs
from src.models.rpn_sampling import CappedPositivesRPN
from src.models.stages import TASKS, check_task, strip_for_task
from src.models.variants import (
    ANCHOR_SIZES,
    ASPECT_RATIOS,
    PAPER_ROWS,
    VARIANTS,
    VariantSpec,
    anchor_sizes,
    resolve_variant,
)

# FasterRCNN arguments that build_detector sets itself from the variant.
_SET_BY_VARIANT = (
    "backbone",
    "num_classes",
    "min_size",
    "max_size",
    "image_mean",
    "image_std",
    "rpn_anchor_generator",
    "rpn_head",
    "box_roi_pool",
    "box_head",
    "box_predictor",
)


def _knob_names() -> tuple[str, ...]:
    names = [*inspect.signature(FasterRCNN.__init__).parameters]
    names += [*inspect.signature(GeneralizedRCNNTransform.__init__).parameters]
    skip = {"self", "kwargs", *_SET_BY_VARIANT}
    return tuple(sorted(n for n in dict.fromkeys(names) if n not in skip))


TORCHVISION_KNOBS = _knob_names()


class DetectorBackbone(nn.Module):
    """``body`` (a BottomUp) followed by an optional ``fpn``; what FasterRCNN calls ``backbone``.

    Attributes:
        out_channels: channels of every returned map (FasterRCNN reads it).
        channels_last: feed the convolutions NHWC tensors (oneDNN's and cuDNN's fast layout,
            above all in bf16); set by :func:`use_channels_last`.
    """

    def __init__(self, body: BottomUp, fpn: FeaturePyramid | None = None) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.channels_last = False
        if fpn is not None:
            self.out_channels = fpn.out_channels
        else:
            (self.out_channels,) = set(body.out_channels.values())

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """[B,3,H,W] -> ``{"p2": ..., "p6": ...}`` (pyramid) or ``{"c4": ...}`` / ``{"c5": ...}``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.body(x)
        return self.fpn(features) if self.fpn is not None else features


class Res5Head(nn.Module):
    """The C4 baseline's box head: res5 on 14x14 RoI features, then global average pooling.

    [R, C4, 14, 14] -> [R, C5] (res5's first block halves the size to 7x7).
    """

    def __init__(self, res5: nn.Module) -> None:
        super().__init__()
        self.res5 = res5

    def forward(self, x: Tensor) -> Tensor:
        return self.res5(x).mean(dim=(2, 3))


def _check_knobs(knobs: dict) -> None:
    for key in knobs:
        if key in _SET_BY_VARIANT:
            raise ValueError(
                f"{key} is set by build_detector from the variant; it cannot be passed"
            )
        if key not in TORCHVISION_KNOBS:
            raise ValueError(
                f"unknown detector knob {key!r}: allowed are {', '.join(TORCHVISION_KNOBS)}"
            )


def build_detector(
    variant: str,
    backbone: str,
    num_classes: int,
    *,
    lateral: bool | None = None,
    top_down: bool | None = None,
    levels: Sequence[str] | None = None,
    out_channels: int = 256,
    pretrained_path: str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    norm: str = "bn",
    widths: Sequence[int] | None = None,
    weights: str | None = None,
    anchor_scale: float = 1.0,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    representation_size: int = 1024,
    channels_last: bool = False,
    task: str = "faster_rcnn",
    rpn_positives_per_box: int | None = None,
    rpn_detach_features: bool | None = None,
    **torchvision_knobs,
) -> FasterRCNN:
    """Build one of the paper's detectors as a torchvision ``FasterRCNN``.

    Args:
        variant: one of VARIANTS (see :func:`resolve_variant` for the switches).
        backbone, pretrained_path, trainable_layers, norm, widths: see ``build_backbone``.
        weights: torchvision's ImageNet weights by name (``IMAGENET1K_V1``), see ``build_backbone``.
        num_classes: classes including background, as in torchvision.
        out_channels: pyramid channels d (pyramid variants only).
        anchor_scale: multiplies every anchor size {32..512} (e.g. 0.25 for ~200 px images).
        min_size, max_size, image_mean, image_std: torchvision's transform settings.
        representation_size: width of the two fc layers (fpn and c5 heads; c4's head is res5).
        channels_last: NHWC weights and inputs (speed only, see :func:`use_channels_last`).
        task: ``faster_rcnn`` (Table 3), ``rpn`` (Table 1: no RoI heads) or ``fast_rcnn``
            (Table 2: no RPN, fixed proposals); see ``src.models.stages``.
        rpn_positives_per_box: at most this many positive anchors per ground-truth box in the
            RPN's training (a diagnostic, see ``src.models.rpn_sampling``); None: torchvision's
            and the paper's rule.
        rpn_detach_features: True: the RPN's losses do not reach the backbone and pyramid (a
            diagnostic of one map carrying both tasks' gradients, see
            ``src.models.rpn_gradient``); None or False: they do, as in torchvision. Only with
            ``task="faster_rcnn"``: the RPN alone would train no features, Fast R-CNN has no RPN.
        **torchvision_knobs: any other FasterRCNN / transform argument (TORCHVISION_KNOBS),
            e.g. ``rpn_post_nms_top_n_test=1000``, ``box_score_thresh=0.05``.

    Returns:
        The model, with ``model.variant_spec`` (a VariantSpec) and ``model.task`` attached.
    """
    check_task(task)
    spec = resolve_variant(variant, lateral=lateral, top_down=top_down, levels=levels)
    check_backbone_options(backbone, trainable_layers=trainable_layers, norm=norm, widths=widths)
    _check_knobs(torchvision_knobs)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes!r} is not allowed: an int >= 2 (with background)"
        )
    if rpn_detach_features not in (None, False, True):
        raise ValueError(
            f"rpn_detach_features={rpn_detach_features!r} is not allowed: true, false or null"
        )
    if rpn_detach_features and task != "faster_rcnn":
        raise ValueError(
            f"rpn_detach_features=true is not allowed with task={task!r}: only with "
            "task=faster_rcnn (with rpn nothing would train the features; fast_rcnn has no RPN)"
        )
    if not anchor_scale > 0:
        raise ValueError(f"anchor_scale={anchor_scale!r} is not allowed: use a number > 0")
    bb = dict(
        pretrained_path=pretrained_path,
        trainable_layers=trainable_layers,
        norm=norm,
        widths=widths,
        weights=weights,
    )

    if spec.head == "fpn":
        in_levels = pyramid_inputs(spec.levels, lateral=spec.lateral, top_down=spec.top_down)
        body = build_backbone(backbone, levels=in_levels, **bb)
        fpn = FeaturePyramid(
            body.out_channels,
            out_channels,
            lateral=spec.lateral,
            top_down=spec.top_down,
            levels=spec.levels,
        )
        features = DetectorBackbone(body, fpn)
        roi_size = 7
        box_head = TwoMLPHead(features.out_channels * roi_size**2, representation_size)
        box_out = representation_size
    elif spec.head == "c5":
        features = DetectorBackbone(build_backbone(backbone, levels=("c5",), **bb))
        roi_size = 7
        box_head = TwoMLPHead(features.out_channels * roi_size**2, representation_size)
        box_out = representation_size
    else:  # c4: res5 moves from the backbone into the box head, keeping weights and freezing
        full = build_backbone(backbone, levels=("c4", "c5"), **bb)
        stages = OrderedDict(full.named_children())
        box_out = full.out_channels["c5"]
        box_head = Res5Head(stages.pop("c5"))
        features = DetectorBackbone(BottomUp(stages, levels=("c4",)))
        roi_size = 14

    sizes = anchor_sizes(spec.levels, anchor_scale)
    anchors = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    rpn_head = RPNHead(features.out_channels, anchors.num_anchors_per_location()[0])
    roi_pool = MultiScaleRoIAlign(
        featmap_names=[lv for lv in spec.levels if lv != "p6"],
        output_size=roi_size,
        sampling_ratio=2,
    )
    model = FasterRCNN(
        features,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        image_mean=image_mean,
        image_std=image_std,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_out, num_classes),
        **torchvision_knobs,
    )
    if rpn_positives_per_box is not None:
        model.rpn = CappedPositivesRPN.replacing(model.rpn, rpn_positives_per_box)
    if rpn_detach_features:
        detach_rpn_inputs(model.rpn.head)
    model.variant_spec = spec
    strip_for_task(model, task)
    keep_box_outputs_fp32(model)
    if channels_last:
        use_channels_last(model)
    return model


def _outputs_to_fp32(module: nn.Module, inputs, outputs):
    return tuple(
        [t.float() for t in out] if isinstance(out, list) else out.float() for out in outputs
    )


def keep_box_outputs_fp32(model: FasterRCNN) -> FasterRCNN:
    """Hand the RPN head's and the box predictor's outputs on in fp32 (in place; returns model).

    Under bf16 autocast those outputs are bf16, and torchvision's ``BoxCoder.decode`` then casts
    the anchors and proposals to the deltas' dtype: bf16 holds coordinates of 256-512 px only
    to 2 px, which costs small objects their localisation (measured on the CPU demo's checkpoint:
    AP75 22.9 in bf16 against 23.8 in fp32; 23.9 with this). A no-op in fp32; keys unchanged.
    """
    for head in (model.rpn.head if model.rpn else None,
                 model.roi_heads.box_predictor if model.roi_heads else None):  # fmt: skip
        if head is not None:
            head.register_forward_hook(_outputs_to_fp32)
    return model


def use_channels_last(model: FasterRCNN) -> FasterRCNN:
    """Store every 4-D weight NHWC and feed the backbone NHWC images (in place; returns model).

    The layout changes speed only: the weights' values and the detections stay the same.
    """
    model.to(memory_format=torch.channels_last)
    model.backbone.channels_last = True
    return model


_TV_RULES = (
    (
        re.compile(r"^backbone\.body\.(conv1|bn1)\.(.+)$"),
        lambda m: f"backbone.body.stem.{m[1]}.{m[2]}",
    ),
    (
        re.compile(r"^backbone\.body\.layer([1-4])\.(.+)$"),
        lambda m: f"backbone.body.c{int(m[1]) + 1}.{m[2]}",
    ),
    (
        re.compile(r"^backbone\.fpn\.inner_blocks\.([0-3])\.(?:0\.)?(weight|bias)$"),
        lambda m: f"backbone.fpn.lateral.c{int(m[1]) + 2}.{m[2]}",
    ),
    (
        re.compile(r"^backbone\.fpn\.layer_blocks\.([0-3])\.(?:0\.)?(weight|bias)$"),
        lambda m: f"backbone.fpn.output.p{int(m[1]) + 2}.{m[2]}",
    ),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), lambda m: f"rpn.head.conv.0.0.{m[1]}"),
    (re.compile(r"^(rpn|roi_heads)\.(.+)$"), lambda m: m[0]),
)


def convert_torchvision_state_dict(state_dict: dict) -> dict:
    """Map a torchvision ``fasterrcnn_resnet50_fpn`` state dict onto our ``fpn`` variant.

    Both torchvision key formats are understood (the COCO release's ``inner_blocks.0.weight``
    and ``rpn.head.conv.weight``, and today's ``inner_blocks.0.0.weight``, ``conv.0.0``).
    Load the result with ``model.load_state_dict(converted)`` into
    ``build_detector("fpn", "resnet50", num_classes=91, norm=...)``, with ``norm="frozen_bn"``
    for the released COCO weights.

    Raises:
        ValueError: a key that belongs to no part of that model (names the key).
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, rename in _TV_RULES:
            match = pattern.match(key)
            if match:
                out[rename(match)] = value
                break
        else:
            raise ValueError(
                f"state dict key {key!r} is not part of torchvision's fasterrcnn_resnet50_fpn"
            )
    return out


__all__ = [
    "ANCHOR_SIZES",
    "ASPECT_RATIOS",
    "PAPER_ROWS",
    "TASKS",
    "TORCHVISION_KNOBS",
    "VARIANTS",
    "DetectorBackbone",
    "Res5Head",
    "VariantSpec",
    "anchor_sizes",
    "build_detector",
    "convert_torchvision_state_dict",
    "keep_box_outputs_fp32",
    "resolve_variant",
    "use_channels_last",
]
