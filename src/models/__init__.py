"""The detector: bottom-up pathways, the feature pyramid, and the paper's variants (a)-(f)."""

from src.models.backbones import BACKBONES, NORMS, BottomUp, build_backbone
from src.models.detector import (
    VARIANTS,
    VariantSpec,
    build_detector,
    convert_torchvision_state_dict,
    resolve_variant,
)
from src.models.fpn import PYRAMID_LEVELS, FeaturePyramid

__all__ = [
    "BACKBONES",
    "NORMS",
    "PYRAMID_LEVELS",
    "VARIANTS",
    "BottomUp",
    "FeaturePyramid",
    "VariantSpec",
    "build_backbone",
    "build_detector",
    "convert_torchvision_state_dict",
    "resolve_variant",
]
