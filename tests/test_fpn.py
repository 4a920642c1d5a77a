"""The feature pyramid: shapes on odd sizes, the ablation switches, torchvision equivalence."""

from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from src.models import fpn as fpn_module
from src.models.fpn import PYRAMID_LEVELS, FeaturePyramid, pyramid_inputs

IN_CHANNELS = {"c2": 8, "c3": 16, "c4": 32, "c5": 64}
# the c2..c5 sizes of a 37x53 image through stride-2 convolutions (odd sizes round up)
SIZES = {"c2": (10, 14), "c3": (5, 7), "c4": (3, 4), "c5": (2, 2)}


def features(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (lv, torch.randn(2, IN_CHANNELS[lv], *SIZES[lv], generator=g)) for lv in IN_CHANNELS
    )


def changed_levels(pyramid: FeaturePyramid, perturbed: str) -> set[str]:
    """The p levels whose output changes when c-level ``perturbed`` alone changes."""
    x = features()
    y = OrderedDict(x)
    y[perturbed] = x[perturbed] + torch.randn_like(x[perturbed])
    with torch.no_grad():
        a, b = pyramid(x), pyramid(y)
    return {lv for lv in a if not torch.equal(a[lv], b[lv])}


def test_output_levels_match_the_input_sizes_on_odd_maps():
    out = FeaturePyramid(IN_CHANNELS, 16)(features())
    assert list(out) == list(PYRAMID_LEVELS)
    for k in (2, 3, 4, 5):
        assert out[f"p{k}"].shape == (2, 16, *SIZES[f"c{k}"])
    assert out["p6"].shape == (2, 16, 1, 1)
    torch.testing.assert_close(out["p6"], out["p5"][..., ::2, ::2])


def test_full_pyramid_is_top_down_with_laterals():
    pyramid = FeaturePyramid(IN_CHANNELS, 16)
    assert changed_levels(pyramid, "c2") == {"p2"}
    assert changed_levels(pyramid, "c3") == {"p2", "p3"}
    assert changed_levels(pyramid, "c5") == set(PYRAMID_LEVELS)


def test_lateral_off_uses_only_c5():
    pyramid = FeaturePyramid(IN_CHANNELS, 16, lateral=False)
    for level in ("c2", "c3", "c4"):
        assert changed_levels(pyramid, level) == set()
    assert changed_levels(pyramid, "c5") == set(PYRAMID_LEVELS)
    assert list(pyramid.lateral) == ["c5"]
    out = pyramid(features())
    assert [tuple(out[f"p{k}"].shape[-2:]) for k in (2, 3, 4, 5)] == list(SIZES.values())


def test_top_down_off_keeps_levels_apart():
    pyramid = FeaturePyramid(IN_CHANNELS, 16, top_down=False)
    assert changed_levels(pyramid, "c5") == {"p5", "p6"}
    assert changed_levels(pyramid, "c3") == {"p3"}
    assert changed_levels(pyramid, "c2") == {"p2"}


def test_both_switches_off_says_why():
    with pytest.raises(ValueError, match=r"lateral=False and top_down=False.*only c5"):
        FeaturePyramid(IN_CHANNELS, lateral=False, top_down=False)


def test_finest_level_only_builds_no_coarser_outputs():
    pyramid = FeaturePyramid(IN_CHANNELS, 16, levels=("p2",))
    assert list(pyramid.output) == ["p2"]
    assert list(pyramid.lateral) == ["c2", "c3", "c4", "c5"]
    assert list(pyramid(features())) == ["p2"]
    assert changed_levels(pyramid, "c5") == {"p2"}


def test_only_what_a_level_subset_needs_is_built():
    pyramid = FeaturePyramid(IN_CHANNELS, 16, levels=("p6", "p4"))
    assert pyramid.levels == ("p4", "p6")
    assert pyramid.in_levels == ("c4", "c5")
    assert list(pyramid.output) == ["p4", "p5"]  # p5's conv feeds p6
    assert list(pyramid({k: v for k, v in features().items() if k in ("c4", "c5")})) == [
        "p4",
        "p6",
    ]
    assert pyramid_inputs(("p3",), top_down=False) == ("c3",)
    assert pyramid_inputs(("p3", "p5"), lateral=False) == ("c3", "c4", "c5")


def test_state_dict_keys_are_named_by_level():
    keys = set(FeaturePyramid(IN_CHANNELS, 16).state_dict())
    assert keys == {f"lateral.c{k}.{w}" for k in (2, 3, 4, 5) for w in ("weight", "bias")} | {
        f"output.p{k}.{w}" for k in (2, 3, 4, 5) for w in ("weight", "bias")
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": ("p7",)}, "p7.*p2, p3, p4, p5, p6"),
        ({"levels": ()}, "non-empty"),
        ({"levels": ("p3", "p3")}, "without repeats"),
        ({"in_channels": {"c5": 64}}, "no c2, c3, c4.*reads c2, c3, c4, c5"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    kwargs = {"in_channels": IN_CHANNELS} | kwargs
    with pytest.raises(ValueError, match=match):
        FeaturePyramid(**kwargs)


def test_equals_torchvision_feature_pyramid_network():
    ours = FeaturePyramid(IN_CHANNELS, 16)
    theirs = FeaturePyramidNetwork(list(IN_CHANNELS.values()), 16, extra_blocks=LastLevelMaxPool())
    for i, k in enumerate((2, 3, 4, 5)):
        theirs.inner_blocks[i][0].load_state_dict(ours.lateral[f"c{k}"].state_dict())
        theirs.layer_blocks[i][0].load_state_dict(ours.output[f"p{k}"].state_dict())
    x = features(3)
    with torch.no_grad():
        a = list(ours(x).values())
        b = list(theirs(OrderedDict(x)).values())
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_gradients_reach_every_built_convolution():
    for lateral, top_down in ((True, True), (True, False), (False, True)):
        pyramid = FeaturePyramid(IN_CHANNELS, 8, lateral=lateral, top_down=top_down)
        sum(p.square().sum() for p in pyramid(features()).values()).backward()
        for name, param in pyramid.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fpn_module_imports_only_torch():
    tree = ast.parse(Path(fpn_module.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"torch", "__future__", "collections", "typing"}, roots
